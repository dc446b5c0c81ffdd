/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * The per-request record shared by the BPF programs and user space.
 *
 * The kernel side assembles one record per completed request and emits it
 * once. Fixed-width fields only, widest first, so both sides (and the guest
 * wire format) agree on the layout.
 */
#ifndef IOTRACER_RECORD_H
#define IOTRACER_RECORD_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define IOT_COMM_LEN 16

/*
 * One timestamp per place a request can pass, in the order a request passes
 * them. 0 means "did not pass here" (or the layer was off). CLOCK_MONOTONIC ns.
 */
enum iot_ts {
	IOT_TS_SYSCALL_ENTER,	/* system call entry */
	IOT_TS_URING_SUBMIT,	/* io_uring: SQE turned into a request */
	IOT_TS_URING_ASYNC,	/* io_uring: punted to an io-wq worker */
	IOT_TS_URING_POLL,	/* io_uring: poll armed, waits for readiness */
	IOT_TS_FS,		/* file system entry (VFS / fs tracepoint) */
	IOT_TS_PAGECACHE,	/* first page-cache lookup, miss or dirtying */
	IOT_TS_BIO_QUEUE,	/* first bio queued to the block layer */
	IOT_TS_RQ_INSERT,	/* request inserted in the I/O scheduler */
	IOT_TS_RQ_ISSUE,	/* request issued to the driver */
	IOT_TS_DRIVER,		/* driver handed it to the device (virtio kick, nvme cmd, scsi dispatch) */
	IOT_TS_IRQ,		/* device completion interrupt */
	IOT_TS_RQ_COMPLETE,	/* block request completed */
	IOT_TS_BIO_END,		/* bio ended (bio-based devices) */
	IOT_TS_URING_TASKWORK,	/* io_uring: completion task work queued */
	IOT_TS_URING_COMPLETE,	/* io_uring: CQE posted */
	IOT_TS_SYSCALL_EXIT,	/* system call return */
	IOT_TS_MAX,
};

/* What a record describes. */
enum iot_kind {
	IOT_KIND_SYSCALL = 1,	/* a synchronous I/O system call and the block I/O it waited for */
	IOT_KIND_URING = 2,	/* one io_uring request, submission to CQE */
	IOT_KIND_AIO = 3,	/* one block I/O submitted by io_submit (Linux native AIO) */
	IOT_KIND_BIO = 4,	/* block I/O with no live owner (writeback, readahead, io-wq, kernel) */
	/*
	 * Not a request: the program advanced an io_uring ring's CQ head, i.e.
	 * reaped the CQEs before it (uring_ctx, cqe_seq = the new head, offset =
	 * the head seen before, ts[IOT_TS_URING_COMPLETE] = when it was seen).
	 * Only emitted for --perfetto (tracer_opts.uring_reap).
	 */
	IOT_KIND_URING_REAP = 5,
};

enum iot_op {
	IOT_OP_NONE = 0,
	IOT_OP_READ = 1,
	IOT_OP_WRITE = 2,
	IOT_OP_FLUSH = 3,	/* cache flush (empty preflush write) */
	IOT_OP_DISCARD = 4,
	IOT_OP_FSYNC = 5,	/* fsync, fdatasync, sync_file_range */
	IOT_OP_SUBMIT = 6,	/* io_submit, io_uring_enter submitting */
	IOT_OP_REAP = 7,	/* io_getevents, io_uring_enter waiting */
	IOT_OP_OTHER = 8,
	IOT_OP_MAX,
};

/* The system calls of the syscall layer; values are stable (JSON, wire). */
enum iot_syscall {
	IOT_SYS_NONE = 0,
	IOT_SYS_READ, IOT_SYS_WRITE, IOT_SYS_PREAD64, IOT_SYS_PWRITE64,
	IOT_SYS_READV, IOT_SYS_WRITEV, IOT_SYS_PREADV, IOT_SYS_PWRITEV,
	IOT_SYS_PREADV2, IOT_SYS_PWRITEV2, IOT_SYS_FSYNC, IOT_SYS_FDATASYNC,
	IOT_SYS_SYNC_FILE_RANGE, IOT_SYS_IO_SUBMIT, IOT_SYS_IO_GETEVENTS,
	IOT_SYS_IO_URING_ENTER,
	IOT_SYS_MAX,
};

enum iot_driver {
	IOT_DRV_NONE = 0,
	IOT_DRV_VIRTIO_BLK = 1,
	IOT_DRV_NVME = 2,
	IOT_DRV_SCSI = 3,
	IOT_DRV_OTHER = 4,	/* loop, zram, dm, ... */
};

/* Record flags. */
#define IOT_F_DIRECT		(1u << 0)	/* O_DIRECT / bypassed the page cache */
#define IOT_F_SPLIT		(1u << 1)	/* a bio was split */
#define IOT_F_MERGED		(1u << 2)	/* a bio was merged into another request */
#define IOT_F_REMAP		(1u << 3)	/* remapped (partition, dm) */
#define IOT_F_REQUEUED		(1u << 4)	/* the driver requeued the request */
#define IOT_F_ERROR		(1u << 5)	/* block layer reported an error */
#define IOT_F_ATTR_WRITEBACK	(1u << 6)	/* attributed to the task that dirtied the inode */
#define IOT_F_ATTR_IOWQ		(1u << 7)	/* issued by an io_uring io-wq worker of this process */
#define IOT_F_ATTR_NONE		(1u << 8)	/* kernel work with no link to a user task */
#define IOT_F_OWNER_GONE	(1u << 9)	/* owner finished before this I/O completed */
#define IOT_F_URING_PUNTED	(1u << 10)	/* io_uring request went to io-wq */
#define IOT_F_URING_POLLED	(1u << 11)	/* io_uring request armed a poll */
#define IOT_F_URING_INLINE	(1u << 12)	/* io_uring request issued inline at submit */
#define IOT_F_SYNC		(1u << 13)	/* REQ_SYNC */
#define IOT_F_FUA		(1u << 14)	/* REQ_FUA */
#define IOT_F_PREFLUSH		(1u << 15)	/* REQ_PREFLUSH */
#define IOT_F_RQ_UNKNOWN	(1u << 16)	/* block request timestamps not found for some bio */
#define IOT_F_SAMPLED		(1u << 17)	/* --sample was on: this record stands for several */
#define IOT_F_URING_LINK	(1u << 18)	/* io_uring: a linked request follows this one (IOSQE_IO_LINK) */

/* Sentinel for "not known" in offset and sector. */
#define IOT_UNKNOWN_U64 (~0ULL)

struct iot_record {
	__u64 ts[IOT_TS_MAX];
	__u64 cgroup_id;
	__u64 inode;		/* inode number, 0 when unknown */
	__u64 offset;		/* file offset, IOT_UNKNOWN_U64 when unknown */
	__u64 sector;		/* first 512-byte sector, IOT_UNKNOWN_U64 when no block I/O */
	__u64 offcpu_ns;	/* time the issuing thread was blocked during the request */
	__u64 user_data;	/* io_uring user_data */
	__u64 vq_gpa;		/* virtio-blk: guest-physical address of the (first) request's
				 * struct virtio_blk_outhdr, the key QEMU sees; 0 when unknown */
	__u64 uring_ctx;	/* io_uring: the ring (struct io_ring_ctx address), 0 otherwise */
	__u64 uring_req;	/* io_uring: the request (io_kiocb address, unique while in flight) */
	__u64 uring_link;	/* io_uring: the request it was linked after, 0 when none */
	__u64 ubuf;		/* the first data buffer's address in the issuing process (the first
				 * iovec's base for vectored I/O): host mode ties QEMU's I/O to its
				 * request by it; 0 when not asked for (tracer_opts.ubuf) or unknown */
	__s64 result;		/* syscall return, CQE res, or -errno from the block layer */
	__u32 pid;		/* process the request is attributed to */
	__u32 tid;
	__u32 actor_tid;	/* thread that actually submitted the block I/O (kworker, io-wq) */
	__u32 dev;		/* kernel dev_t: major << 20 | minor */
	__u32 len;		/* bytes: requested/transferred by the syscall, or the bio size */
	__u32 bio_bytes;	/* bytes of block I/O this request caused */
	__u32 flags;		/* IOT_F_* */
	__u32 cqe_seq;		/* io_uring: the ring's CQ tail once its CQE was posted: reaped
				 * when the CQ head reaches it */
	__u16 nr_bios;
	__u16 pc_pages;		/* pages looked up in the page cache */
	__u16 pc_misses;	/* pages added to the page cache (misses, readahead) */
	__u16 pc_dirtied;	/* pages dirtied */
	__u16 kind;		/* enum iot_kind */
	__u16 op;		/* enum iot_op */
	__u16 syscall;		/* enum iot_syscall */
	__u8 uring_opcode;	/* IORING_OP_* */
	__u8 driver;		/* enum iot_driver */
	char comm[IOT_COMM_LEN];
};

/*
 * How a record crosses the ring buffer: sparse. A 32-byte header, then the
 * stamps it has (bit i of ts_mask: ts[i]) in slot order, then the fields
 * that are not at their default (bit j of f_mask: enum iot_sfield j) in
 * that order, 8 bytes each (the command name 16). Writing into the ring
 * costs by the byte, mostly cache lines the reader on the other CPU held
 * last (measured: 299 ns per io_uring completion at 288 bytes, 144 at 96),
 * and a request passes 6 to 8 of the 16 places: a direct read is 160
 * bytes or so instead of an iot_record's 288. The reader expands it back
 * (tracer.c). In compact form (tracer_opts.compact) only the stamps and
 * fields host mode's join reads are written: IOT_SREC_COMPACT_*.
 */
enum iot_sfield {
	IOT_SF_CGROUP,		/* cgroup_id */
	IOT_SF_INODE,
	IOT_SF_OFFSET,		/* default IOT_UNKNOWN_U64 */
	IOT_SF_SECTOR,		/* default IOT_UNKNOWN_U64 */
	IOT_SF_OFFCPU,
	IOT_SF_USER_DATA,
	IOT_SF_VQ_GPA,
	IOT_SF_URING_CTX,
	IOT_SF_URING_REQ,
	IOT_SF_URING_LINK,
	IOT_SF_UBUF,
	IOT_SF_RESULT,
	IOT_SF_ACTOR,		/* actor_tid (default: tid) | bio_bytes << 32 */
	IOT_SF_COUNTS,		/* nr_bios | pc_pages << 16 | pc_misses << 32 | pc_dirtied << 48 */
	IOT_SF_CQE_SEQ,		/* cqe_seq | driver << 32 */
	IOT_SF_COMM,		/* comm, two words */
	IOT_SF_MAX,
};

struct iot_srec {
	__u16 ts_mask;
	__u16 f_mask;
	__u8 kind, op, syscall, uring_opcode;
	__u32 pid, tid, dev, len, flags;
	__u32 pad;
	__u64 w[];
};

/* What host mode's join reads (the stamps: the first, the last, the first bio's queueing, issue, end). */
#define IOT_SREC_COMPACT_FIELDS \
	(1u << IOT_SF_INODE | 1u << IOT_SF_OFFSET | 1u << IOT_SF_SECTOR | 1u << IOT_SF_UBUF | 1u << IOT_SF_RESULT)

/*
 * Where the io_uring_complete tracepoint passes the request's result (the
 * BPF side's uring_cqe_abi, read by user space from the kernel's BTF).
 */
enum iot_uring_cqe_abi {
	IOT_UCQE_REQ,	/* not known: read it from the request */
	IOT_UCQE_ARGS,	/* (ctx, req, user_data, res, cflags, extra1, extra2): 6.1's */
	IOT_UCQE_PTR,	/* (ctx, req, cqe): later kernels' (6.18's) */
};

/* Counters kept by the kernel side, per CPU; index into the counters map. */
enum iot_counter {
	IOT_CNT_EMITTED,	/* records written to the ring buffer */
	IOT_CNT_LOST,		/* records dropped: ring buffer full */
	IOT_CNT_STATE_FULL,	/* in-flight state not created: a map was full */
	IOT_CNT_BIO_UNWALKED,	/* bios of a request beyond the walk bound */
	IOT_CNT_FILTERED,	/* requests skipped by in-kernel filters */
	IOT_CNT_REQ_SYSCALL,	/* completed requests by kind (after --min-latency) */
	IOT_CNT_REQ_URING,
	IOT_CNT_REQ_AIO,
	IOT_CNT_REQ_BIO,
	IOT_CNT_CALL_IO_SUBMIT,	/* control system calls: counted, not records */
	IOT_CNT_CALL_IO_GETEVENTS,
	IOT_CNT_CALL_IO_URING_ENTER,
	IOT_CNT_NS_IO_SUBMIT,	/* time spent in them */
	IOT_CNT_NS_IO_URING_ENTER,
	IOT_CNT_MAX,
};

/*
 * Latency split segments, named by the layer a request was in between two
 * stamps; also the index of the in-kernel histograms (plus total, off-CPU).
 */
enum iot_seg {
	IOT_SEG_SYSCALL, IOT_SEG_URING_SUBMIT, IOT_SEG_IOWQ, IOT_SEG_POLL, IOT_SEG_FS,
	IOT_SEG_PAGECACHE, IOT_SEG_BLOCK, IOT_SEG_IOSCHED, IOT_SEG_DRIVER, IOT_SEG_DEVICE,
	IOT_SEG_IRQ, IOT_SEG_COMPLETION, IOT_SEG_TASKWORK, IOT_SEG_RETURN,
	IOT_SEG_TOTAL, IOT_SEG_OFFCPU,
	IOT_SEG_MAX,
};

/*
 * The segment (enum iot_seg) that starts at stamp ts, given which stamps the
 * record has; -1 for no stamp. One mapping for the in-kernel histograms and
 * user space's split.
 */
static inline __attribute__((always_inline)) int iot_seg_of(const struct iot_record *r, int ts)
{
	switch (ts) {
	case IOT_TS_SYSCALL_ENTER: return IOT_SEG_SYSCALL;
	case IOT_TS_URING_SUBMIT: return IOT_SEG_URING_SUBMIT;
	case IOT_TS_URING_ASYNC: return IOT_SEG_IOWQ;
	case IOT_TS_URING_POLL: return IOT_SEG_POLL;
	case IOT_TS_FS: return IOT_SEG_FS;
	case IOT_TS_PAGECACHE: return IOT_SEG_PAGECACHE;
	case IOT_TS_BIO_QUEUE: return IOT_SEG_BLOCK;
	case IOT_TS_RQ_INSERT: return IOT_SEG_IOSCHED;
	/* From issue to the driver's hand-off is driver time; without a driver stamp it is all device. */
	case IOT_TS_RQ_ISSUE: return r->ts[IOT_TS_DRIVER] ? IOT_SEG_DRIVER : IOT_SEG_DEVICE;
	case IOT_TS_DRIVER: return IOT_SEG_DEVICE;
	case IOT_TS_IRQ: return IOT_SEG_IRQ;
	case IOT_TS_RQ_COMPLETE:
	case IOT_TS_BIO_END: return IOT_SEG_COMPLETION;
	case IOT_TS_URING_TASKWORK: return IOT_SEG_TASKWORK;
	case IOT_TS_URING_COMPLETE:
	case IOT_TS_SYSCALL_EXIT: return IOT_SEG_RETURN;
	default: return -1;
	}
}

/* The slot (enum iot_ts) of a record's first and of its last stamp; -1 when it has none. */
static inline __attribute__((always_inline)) int iot_first_slot(const struct iot_record *r)
{
	for (int i = 0; i < IOT_TS_MAX; i++)
		if (r->ts[i])
			return i;
	return -1;
}

static inline __attribute__((always_inline)) int iot_last_slot(const struct iot_record *r)
{
	for (int i = IOT_TS_MAX - 1; i >= 0; i--)
		if (r->ts[i])
			return i;
	return -1;
}

/* The stamp in slot i, 0 for none (i < 0). */
static inline __attribute__((always_inline)) __u64 iot_ts_at(const struct iot_record *r, int i)
{
	return i >= 0 && i < IOT_TS_MAX ? r->ts[i] : 0;
}

/* Log-linear histogram buckets, shared by the kernel side and user space. */
#define IOT_HIST_SUB_BITS 4
#define IOT_HIST_SUB (1u << IOT_HIST_SUB_BITS)
#define IOT_HIST_BUCKETS (64 * IOT_HIST_SUB)

struct iot_khist {
	__u64 count;
	__u64 sum;
	__u64 max;
	__u64 pad;
	__u64 b[IOT_HIST_BUCKETS];
};

/* The layers a user selects with --layers. */
enum iot_layer {
	IOT_LAYER_SYSCALL,
	IOT_LAYER_FS,
	IOT_LAYER_PAGECACHE,
	IOT_LAYER_SCHED,
	IOT_LAYER_BLOCK,
	IOT_LAYER_NVME,
	IOT_LAYER_SCSI,
	IOT_LAYER_VIRTIO,
	IOT_LAYER_IO_URING,
	IOT_LAYER_AIO,
	IOT_LAYER_MAX,
};

/* Per-disk facts user space hands the kernel side (map key: kernel dev_t). */
struct iot_disk {
	__u64 last_irq_ns;	/* written by the irq handler program */
	__u32 driver;		/* enum iot_driver */
	__u32 pad;
};

#endif /* IOTRACER_RECORD_H */
