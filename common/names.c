// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "names.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define NAME_OR(tab, i, dflt) ((i) >= 0 && (size_t)(i) < ARRAY_SIZE(tab) && (tab)[i] ? (tab)[i] : (dflt))

static const char *const layer_names[IOT_LAYER_MAX] = {
	[IOT_LAYER_SYSCALL] = "syscall", [IOT_LAYER_FS] = "fs",
	[IOT_LAYER_PAGECACHE] = "pagecache", [IOT_LAYER_SCHED] = "sched",
	[IOT_LAYER_BLOCK] = "block", [IOT_LAYER_NVME] = "nvme",
	[IOT_LAYER_SCSI] = "scsi", [IOT_LAYER_VIRTIO] = "virtio",
	[IOT_LAYER_IO_URING] = "io_uring", [IOT_LAYER_AIO] = "aio",
};

const char *iot_layer_name(int layer) { return NAME_OR(layer_names, layer, "?"); }

int iot_layer_parse(const char *name)
{
	for (int i = 0; i < IOT_LAYER_MAX; i++)
		if (!strcmp(name, layer_names[i]))
			return i;
	if (!strcmp(name, "uring"))
		return IOT_LAYER_IO_URING;
	return -1;
}

int iot_layers_parse(const char *list, uint32_t *ret_mask, const char **ret_bad)
{
	static char bad[64];
	uint32_t mask = 0;
	const char *p = list;

	while (*p) {
		size_t n = strcspn(p, ",");
		char word[64];
		int l;

		if (n == 0 || n >= sizeof(word)) {
			snprintf(bad, sizeof(bad), "%.*s", (int)(n < sizeof(bad) - 1 ? n : sizeof(bad) - 1), p);
			*ret_bad = bad;
			return -EINVAL;
		}
		memcpy(word, p, n);
		word[n] = 0;
		if (!strcmp(word, "all")) {
			mask |= (1u << IOT_LAYER_MAX) - 1;
		} else if ((l = iot_layer_parse(word)) >= 0) {
			mask |= 1u << l;
		} else {
			snprintf(bad, sizeof(bad), "%s", word);
			*ret_bad = bad;
			return -EINVAL;
		}
		p += n;
		if (*p == ',')
			p++;
	}
	if (!mask) {
		*ret_bad = "";
		return -EINVAL;
	}
	*ret_mask = mask;
	return 0;
}

static const char *const ts_names[IOT_TS_MAX] = {
	[IOT_TS_SYSCALL_ENTER] = "syscall_enter", [IOT_TS_URING_SUBMIT] = "uring_submit",
	[IOT_TS_URING_ASYNC] = "uring_async", [IOT_TS_URING_POLL] = "uring_poll",
	[IOT_TS_FS] = "fs", [IOT_TS_PAGECACHE] = "pagecache",
	[IOT_TS_BIO_QUEUE] = "bio_queue", [IOT_TS_RQ_INSERT] = "rq_insert",
	[IOT_TS_RQ_ISSUE] = "rq_issue", [IOT_TS_DRIVER] = "driver",
	[IOT_TS_IRQ] = "irq", [IOT_TS_RQ_COMPLETE] = "rq_complete",
	[IOT_TS_BIO_END] = "bio_end", [IOT_TS_URING_TASKWORK] = "uring_taskwork",
	[IOT_TS_URING_COMPLETE] = "uring_complete", [IOT_TS_SYSCALL_EXIT] = "syscall_exit",
};

const char *iot_ts_name(int ts) { return NAME_OR(ts_names, ts, "?"); }

static const char *const kind_names[] = {
	[IOT_KIND_SYSCALL] = "syscall", [IOT_KIND_URING] = "io_uring",
	[IOT_KIND_AIO] = "aio", [IOT_KIND_BIO] = "bio",
};

const char *iot_kind_name(int kind) { return NAME_OR(kind_names, kind, "unknown"); }

static const char *const op_names[IOT_OP_MAX] = {
	[IOT_OP_NONE] = "none", [IOT_OP_READ] = "read", [IOT_OP_WRITE] = "write",
	[IOT_OP_FLUSH] = "flush", [IOT_OP_DISCARD] = "discard", [IOT_OP_FSYNC] = "fsync",
	[IOT_OP_SUBMIT] = "submit", [IOT_OP_REAP] = "reap", [IOT_OP_OTHER] = "other",
};

const char *iot_op_name(int op) { return NAME_OR(op_names, op, "other"); }

char iot_op_letter(int op)
{
	static const char letters[IOT_OP_MAX] = "-RWFDSsrO";

	return op >= 0 && op < IOT_OP_MAX ? letters[op] : '?';
}

static const char *const sys_names[IOT_SYS_MAX] = {
	[IOT_SYS_NONE] = "", [IOT_SYS_READ] = "read", [IOT_SYS_WRITE] = "write",
	[IOT_SYS_PREAD64] = "pread64", [IOT_SYS_PWRITE64] = "pwrite64",
	[IOT_SYS_READV] = "readv", [IOT_SYS_WRITEV] = "writev",
	[IOT_SYS_PREADV] = "preadv", [IOT_SYS_PWRITEV] = "pwritev",
	[IOT_SYS_PREADV2] = "preadv2", [IOT_SYS_PWRITEV2] = "pwritev2",
	[IOT_SYS_FSYNC] = "fsync", [IOT_SYS_FDATASYNC] = "fdatasync",
	[IOT_SYS_SYNC_FILE_RANGE] = "sync_file_range", [IOT_SYS_IO_SUBMIT] = "io_submit",
	[IOT_SYS_IO_GETEVENTS] = "io_getevents", [IOT_SYS_IO_URING_ENTER] = "io_uring_enter",
};

const char *iot_syscall_name(int sys) { return NAME_OR(sys_names, sys, "?"); }

static const char *const drv_names[] = {
	[IOT_DRV_NONE] = "", [IOT_DRV_VIRTIO_BLK] = "virtio-blk", [IOT_DRV_NVME] = "nvme",
	[IOT_DRV_SCSI] = "scsi", [IOT_DRV_OTHER] = "other",
};

const char *iot_driver_name(int drv) { return NAME_OR(drv_names, drv, "?"); }

static const char *const cnt_names[IOT_CNT_MAX] = {
	[IOT_CNT_EMITTED] = "emitted", [IOT_CNT_LOST] = "lost",
	[IOT_CNT_STATE_FULL] = "state_full", [IOT_CNT_BIO_UNWALKED] = "bio_unwalked",
	[IOT_CNT_FILTERED] = "filtered",
	[IOT_CNT_REQ_SYSCALL] = "req_syscall", [IOT_CNT_REQ_URING] = "req_io_uring",
	[IOT_CNT_REQ_AIO] = "req_aio", [IOT_CNT_REQ_BIO] = "req_bio",
	[IOT_CNT_CALL_IO_SUBMIT] = "calls_io_submit", [IOT_CNT_CALL_IO_GETEVENTS] = "calls_io_getevents",
	[IOT_CNT_CALL_IO_URING_ENTER] = "calls_io_uring_enter",
	[IOT_CNT_NS_IO_SUBMIT] = "ns_io_submit", [IOT_CNT_NS_IO_URING_ENTER] = "ns_io_uring_enter",
};

const char *iot_counter_name(int cnt) { return NAME_OR(cnt_names, cnt, "?"); }

const char *iot_attribution(const struct iot_record *r)
{
	if (r->flags & IOT_F_ATTR_WRITEBACK)
		return "writeback-dirtier";
	if (r->flags & IOT_F_ATTR_IOWQ)
		return "io-wq-process";
	if (r->flags & IOT_F_ATTR_NONE)
		return "none";
	return "self";
}

/* Order of enum iot_seg. */
const char *const iot_segment_names[IOT_SEGMENT_COUNT] = {
	"syscall", "uring-submit", "io-wq", "poll", "fs", "pagecache", "block",
	"iosched", "driver", "device", "irq", "completion", "task-work", "return",
};

void iot_record_split(const struct iot_record *r, struct iot_split *ret)
{
	int prev = -1;

	memset(ret, 0, sizeof(*ret));
	ret->ordered = 1;
	for (int i = 0; i < IOT_TS_MAX; i++) {
		if (!r->ts[i])
			continue;
		if (prev < 0) {
			ret->first_ns = r->ts[i];
		} else {
			uint64_t d = 0;

			if (r->ts[i] >= r->ts[prev])
				d = r->ts[i] - r->ts[prev];
			else
				ret->ordered = 0;
			ret->seg[ret->n] = iot_seg_of(r, prev);
			ret->name[ret->n] = ret->seg[ret->n] >= 0 ? iot_segment_names[ret->seg[ret->n]] : "?";
			ret->from_ts[ret->n] = prev;
			ret->ns[ret->n] = d;
			ret->n++;
		}
		prev = i;
		if (r->ts[i] > ret->last_ns)
			ret->last_ns = r->ts[i];
	}
	if (prev >= 0 && ret->last_ns >= ret->first_ns)
		ret->total_ns = ret->last_ns - ret->first_ns;
}

const char *iot_record_what(const struct iot_record *r, char *buf, size_t len)
{
	switch (r->kind) {
	case IOT_KIND_SYSCALL:
		return iot_syscall_name(r->syscall);
	case IOT_KIND_URING:
		snprintf(buf, len, "uring:%u", r->uring_opcode);
		return buf;
	default:
		return iot_kind_name(r->kind);
	}
}
