// SPDX-License-Identifier: GPL-2.0
/*
 * The join on its own, fed QEMU events and guest records by hand: the
 * fallback key (no header address) holds the drive once an exact match has
 * shown which QEMU drive serves the guest's disk. The end-to-end test is
 * qemu-test/test-host.py; this one sets up what a real run rarely shows,
 * the same sector in flight on two drives of one VM.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include "check.h"
#include "../host/correlate.h"

#define VM 100
#define BLK_A 0xa000
#define BLK_B 0xb000
#define DEV_1 ((253u << 20) | 0)
#define DEV_2 ((253u << 20) | 16)
#define US 1000ULL
#define IOV_OF(head) (0x7f0000000000ull + (head) * 0x100ull)	/* each request's data buffers */

static void submit(struct corr *c, uint64_t ts, uint64_t blk, uint64_t gpa, uint64_t sector, uint32_t head)
{
	struct iot_qemu_event e = { .ts = ts, .pid = VM, .tid = VM + 1, .type = IOT_QEV_SUBMIT, .op = IOT_OP_READ,
				    .nreqs = 1, .flags = IOT_QF_LAYOUT_OK, .blk = blk, .offset = sector * 512,
				    .bytes = 4096, .req = 0x5000 + head };

	e.reqs[0] = (struct iot_qemu_req){ .req = 0x5000 + head, .gpa = gpa, .sector = sector, .qiov_size = 4096,
					   .head = head, .type = 0 /* VIRTIO_BLK_T_IN */ };
	e.iov = IOV_OF(head);
	corr_qemu_event(c, &e);
}

/* A read QEMU's thread hands the host while the submit of `named` is the thread's latest. */
static void backend(struct corr *c, uint64_t ts, uint32_t named, uint64_t named_ts, uint64_t offset, uint64_t iov)
{
	struct iot_qemu_event e = { .ts = ts, .pid = VM, .tid = VM + 1, .type = IOT_QEV_BACKEND, .op = 0x1,
				    .offset = offset, .bytes = 4096, .req = 0x5000 + named, .req_ts = named_ts,
				    .fd = 0, .backend = IOT_QB_URING, .iov = iov };

	corr_qemu_event(c, &e);
}

static void guest_of(struct corr *c, int vm, uint64_t kick, uint32_t dev, uint64_t gpa, uint64_t sector)
{
	struct iot_record r = { .kind = IOT_KIND_SYSCALL, .op = IOT_OP_READ, .syscall = IOT_SYS_PREAD64,
				.driver = IOT_DRV_VIRTIO_BLK, .pid = 7, .tid = 7, .dev = dev, .sector = sector,
				.offset = sector * 512, .len = 4096, .bio_bytes = 4096, .nr_bios = 1, .result = 4096,
				.vq_gpa = gpa };

	memcpy(r.comm, "iowork", 7);
	r.ts[IOT_TS_SYSCALL_ENTER] = kick - 20 * US;
	r.ts[IOT_TS_RQ_ISSUE] = kick - 5 * US;
	r.ts[IOT_TS_DRIVER] = kick;
	r.ts[IOT_TS_IRQ] = kick + 200 * US;
	r.ts[IOT_TS_RQ_COMPLETE] = kick + 205 * US;
	r.ts[IOT_TS_SYSCALL_EXIT] = kick + 210 * US;
	corr_guest_record(c, vm, "qemu:vm", false, 0, &r);
}

static void guest(struct corr *c, uint64_t kick, uint32_t dev, uint64_t gpa, uint64_t sector)
{
	guest_of(c, VM, kick, dev, gpa, sector);
}

/* The "head" QEMU gave the request the guest record of this sector was joined to, or -1; its match key. */
static long head_of(const char *out, uint64_t sector, char *ret_match, size_t len)
{
	char key[64];
	const char *l = out;

	snprintf(key, sizeof(key), "\"sector\":%llu,", (unsigned long long)sector);
	for (; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		const char *end = strchr(l, '\n') ?: l + strlen(l), *h, *m;

		if (!strstr(l, "\"type\":\"io\"") || !(h = strstr(l, key)) || h > end)
			continue;
		m = strstr(l, "\"match\":\"");
		if (m && m < end)
			snprintf(ret_match, len, "%.*s", (int)strcspn(m + 9, "\""), m + 9);
		h = strstr(l, "\"qemu\":{\"head\":");
		return h && h < end ? atol(h + 15) : -1;
	}
	return -1;
}

/* A join writing JSON into memory. */
struct fixture {
	char *buf;
	size_t len;
	FILE *f;
	struct output *out;
	struct corr *c;
};

static struct corr *fixture_open(struct fixture *x)
{
	struct output_opts oo = { .sz = sizeof(oo), .format = OUT_JSON, .per_request = true };
	struct corr_opts co = { .json = true, .hold_ns = 1000 * US };

	memset(x, 0, sizeof(*x));
	x->f = oo.out = co.of = open_memstream(&x->buf, &x->len);
	x->out = co.out = x->f ? output__new(&oo) : NULL;
	x->c = x->out ? corr_new(&co) : NULL;
	CHECK(x->c, "setup");
	return x->c;
}

/* The output so far, flushed. */
static const char *fixture_text(struct fixture *x)
{
	corr_flush(x->c);
	fflush(x->f);
	return x->buf;
}

static void fixture_close(struct fixture *x)
{
	corr_free(x->c);
	output__free(x->out);
	if (x->f)
		fclose(x->f);
	if (failures && x->buf)
		fprintf(stderr, "%s", x->buf);
	free(x->buf);
}

/*
 * The QEMU request window is reused oldest first. A guest record whose QEMU
 * request left the window is unmatched, and one matched before its request's
 * slot was reused shows no QEMU request rather than the slot's new one.
 */
static void test_window_reuse(void)
{
	struct fixture x;
	struct corr *c = fixture_open(&x);
	char match[16] = "";
	const char *buf;
	uint64_t t = 5000000 * US;
	long head;

	if (!c)
		return;
	submit(c, t + 10 * US, BLK_A, 0x7700, 40, 2);	/* X: its guest record comes late */
	submit(c, t + 20 * US, BLK_A, 0x7800, 48, 3);	/* Y: matched at once */
	guest(c, t + 15 * US, DEV_1, 0x7800, 48);
	corr_tick(c, t + 300 * US);
	/* A window's worth of other requests, each on its own header address. */
	for (uint32_t k = 0; k < 20000; k++)
		submit(c, t + 400 * US + k, BLK_A, 0x100000 + k * 0x100ull, 1000000 + k * 8ull, 100 + k % 60000);
	guest(c, t + 5 * US, DEV_1, 0x7700, 40);
	corr_tick(c, t + 100000 * US);
	buf = fixture_text(&x);
	head = head_of(buf, 40, match, sizeof(match));
	CHECK(head == -1 && !strcmp(match, "none"), "request that left the window: head %ld (%s)", head, match);
	head = head_of(buf, 48, match, sizeof(match));
	CHECK(head == -1, "matched before its slot was reused: shows the slot's new request, head %ld", head);
	fixture_close(&x);
}

/*
 * A backend call made in a later turn of QEMU's main loop (a qcow2 request
 * resumed once its metadata is read) while another request's submit is the
 * thread's latest: its data buffers name the request it serves. One whose
 * buffers are no request's stays with the submit the probe named.
 */
static void test_backend_relink(void)
{
	struct fixture x;
	struct corr *c = fixture_open(&x);
	struct corr_stats st;
	uint64_t t = 9000000 * US;

	if (!c)
		return;
	submit(c, t + 10 * US, BLK_A, 0x7000, 80, 4);		/* A */
	backend(c, t + 11 * US, 4, t + 10 * US, 1 << 20, 0xdead0000);	/* A's metadata read: no request's buffers */
	submit(c, t + 20 * US, BLK_A, 0x7100, 96, 5);		/* B, now the thread's latest */
	backend(c, t + 21 * US, 5, t + 20 * US, 96 * 512, IOV_OF(5));	/* B's data, during B's submit */
	backend(c, t + 90 * US, 5, t + 20 * US, 2 << 20, IOV_OF(4));	/* A's data, resumed later */
	/* (The links go no further here: there is no process 100 whose file the calls are on.) */
	corr_get_stats(c, &st);
	CHECK(st.backends == 3, "backends %llu", (unsigned long long)st.backends);
	CHECK(st.backends_by_iov == 2 && st.backends_relinked == 1, "by buffers %llu, relinked %llu (want 2, 1)",
	      (unsigned long long)st.backends_by_iov, (unsigned long long)st.backends_relinked);
	fixture_close(&x);
}

/* A submit of a QEMU whose backend calls are not probed: it carries its first data buffer. */
static void lean_submit(struct corr *c, uint64_t ts, uint16_t op, uint64_t gpa, uint64_t sector, uint32_t head,
			uint64_t buf)
{
	struct iot_qemu_event e = { .ts = ts, .pid = VM, .tid = VM + 1, .type = IOT_QEV_SUBMIT, .op = op,
				    .nreqs = 1, .flags = IOT_QF_LAYOUT_OK | IOT_QF_NO_BACKEND, .blk = BLK_A,
				    .offset = sector * 512, .bytes = op == IOT_OP_FLUSH ? 0 : 4096, .req = 0x5000 + head,
				    .buf = op == IOT_OP_FLUSH ? 0 : buf };

	e.reqs[0] = (struct iot_qemu_req){ .req = 0x5000 + head, .gpa = gpa, .sector = op == IOT_OP_FLUSH ? 0 : sector,
					   .qiov_size = op == IOT_OP_FLUSH ? 0 : 4096, .head = head,
					   .type = op == IOT_OP_FLUSH ? 4 : 0 };
	e.iov = op == IOT_OP_FLUSH ? 0 : IOV_OF(head);
	corr_qemu_event(c, &e);
}

/* The host kernel's record of an io_uring request QEMU made (op IOT_OP_FSYNC: its flush). */
static void host_io(struct corr *c, uint64_t start, uint16_t op, uint64_t offset, uint64_t ubuf)
{
	struct iot_record r = { .kind = IOT_KIND_URING, .op = op, .uring_opcode = op == IOT_OP_FSYNC ? 3 : 1,
				.pid = VM, .tid = VM + 1, .actor_tid = VM + 1, .dev = DEV_2, .inode = 77,
				.offset = op == IOT_OP_FSYNC ? IOT_UNKNOWN_U64 : offset, .sector = IOT_UNKNOWN_U64,
				.len = op == IOT_OP_FSYNC ? 0 : 4096, .result = op == IOT_OP_FSYNC ? 0 : 4096,
				.ubuf = ubuf };

	r.ts[IOT_TS_URING_SUBMIT] = start;
	r.ts[IOT_TS_URING_COMPLETE] = start + 50 * US;
	corr_host_record(c, &r);
}

/* The offset of the host I/O joined to the guest record of this sector ("" if none) and how it was tied. */
static void host_io_of(const char *out, uint64_t sector, char *ret, size_t len)
{
	char key[64];
	const char *l = out;

	snprintf(ret, len, "none");
	snprintf(key, sizeof(key), "\"sector\":%llu,", (unsigned long long)sector);
	for (; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		const char *end = strchr(l, '\n') ?: l + strlen(l), *h, *o, *b;

		if (!strstr(l, "\"type\":\"io\"") || !(h = strstr(l, key)) || h > end)
			continue;
		h = strstr(l, "\"host_io\":[{");
		if (!h || h > end)
			return;
		b = strstr(h, "\"linked_by\":\"");
		o = strstr(h, "\"offset\":");
		if (b && o && o < end)
			snprintf(ret, len, "%.*s@%ld", (int)strcspn(b + 13, "\""), b + 13, atol(o + 9));
		return;
	}
}

/*
 * A QEMU with only raw images has no backend call probed: its host I/O
 * names its request by the first data buffer both carry. The buffers of a
 * request are reused by a later one once it is done, and the host's record
 * of the first can be read after the second's submit: the newest submit
 * from before the I/O began is its own. Offset and operation must agree.
 * Its flush takes the oldest flush not yet served.
 */
static void test_lean(void)
{
	struct fixture x;
	struct corr *c = fixture_open(&x);
	struct corr_stats st;
	char got[64];
	const char *buf;
	uint64_t t = 20000000 * US, b1 = 0x7f1234560000ull;

	if (!c)
		return;
	corr_vm_lean(c, VM, true);
	lean_submit(c, t + 10 * US, IOT_OP_READ, 0x8000, 200, 30, b1);		/* A */
	lean_submit(c, t + 100 * US, IOT_OP_READ, 0x8100, 208, 31, b1);		/* C: A's buffers again */
	host_io(c, t + 105 * US, IOT_OP_READ, 300 * 512, b1);			/* another offset: no one's */
	host_io(c, t + 12 * US, IOT_OP_READ, 200 * 512, b1);			/* A's, read after C's submit */
	host_io(c, t + 102 * US, IOT_OP_READ, 208 * 512, b1);			/* C's */
	lean_submit(c, t + 200 * US, IOT_OP_FLUSH, 0x8200, 0, 32, 0);		/* F */
	host_io(c, t + 203 * US, IOT_OP_FSYNC, 0, 0);
	guest(c, t + 5 * US, DEV_1, 0x8000, 200);
	guest(c, t + 95 * US, DEV_1, 0x8100, 208);
	corr_tick(c, t + 100000 * US);
	corr_get_stats(c, &st);
	buf = fixture_text(&x);
	host_io_of(buf, 200, got, sizeof(got));
	CHECK(!strcmp(got, "buffers@102400"), "A's host I/O: %s (want buffers@102400)", got);
	host_io_of(buf, 208, got, sizeof(got));
	CHECK(!strcmp(got, "buffers@106496"), "C's host I/O: %s (want buffers@106496)", got);
	CHECK(st.host_by_buffers == 2 && st.host_flush_by_order == 1 && st.host_linked == 3,
	      "tied by buffers %llu, flushes by order %llu, linked %llu (want 2, 1, 3)",
	      (unsigned long long)st.host_by_buffers, (unsigned long long)st.host_flush_by_order,
	      (unsigned long long)st.host_linked);
	fixture_close(&x);
}

/*
 * QEMU flushes every drive as it exits, long after the thread's latest
 * submit, a read: a read makes no flush, so the call is tied to nothing.
 */
static void test_stale_thread(void)
{
	struct fixture x;
	struct corr *c = fixture_open(&x);
	struct corr_stats st;
	/* This process, whose descriptor 0 the call's file is: only the rule can leave it untied. */
	uint32_t me = getpid();
	struct iot_qemu_event q = { .ts = 30000010 * US, .pid = me, .tid = me, .type = IOT_QEV_SUBMIT,
				    .op = IOT_OP_READ, .nreqs = 1, .flags = IOT_QF_LAYOUT_OK, .blk = BLK_A,
				    .offset = 80 * 512, .bytes = 4096, .req = 0x5000 + 40, .iov = IOV_OF(40) };
	struct iot_qemu_event e = { .pid = me, .tid = me, .type = IOT_QEV_BACKEND, .op = 0x8 /* QEMU_AIO_FLUSH */,
				    .fd = 0, .backend = IOT_QB_THREADS };
	uint64_t t = 30000000 * US;

	if (!c)
		return;
	q.reqs[0] = (struct iot_qemu_req){ .req = 0x5000 + 40, .gpa = 0x7000, .sector = 80, .qiov_size = 4096,
					   .head = 40, .type = 0 };
	corr_qemu_event(c, &q);
	e.ts = t + 900000 * US;
	e.req = 0x5000 + 40;
	e.req_ts = t + 10 * US;
	corr_qemu_event(c, &e);
	corr_get_stats(c, &st);
	CHECK(st.backends == 1 && st.backends_unlinked == 1, "a flush named to a read: %llu of %llu unlinked",
	      (unsigned long long)st.backends_unlinked, (unsigned long long)st.backends);
	fixture_close(&x);
}

/*
 * Guest records whose QEMU request never comes each wait hold_ns from when
 * they arrived, together, not one after the other from when each reaches the
 * head of the waiting list: a run of them must not hold up everything
 * behind for hold_ns apiece (and then push records out of a full list).
 */
static void test_hold_from_arrival(void)
{
	struct fixture x;
	struct corr *c = fixture_open(&x);
	struct corr_stats st;
	uint64_t t = 9000000 * US;

	if (!c)
		return;
	for (uint32_t k = 0; k < 5; k++)
		guest(c, t + k * US, DEV_1, 0x8000 + k * 0x100ull, 200 + k * 8ull);	/* no QEMU request */
	submit(c, t + 20 * US, BLK_A, 0x9900, 400, 5);
	guest(c, t + 10 * US, DEV_1, 0x9900, 400);
	corr_tick(c, t + 300 * US);
	corr_get_stats(c, &st);
	CHECK(st.guest[CORR_NO_QEMU_REQ] == 0, "decided before hold_ns: %llu",
	      (unsigned long long)st.guest[CORR_NO_QEMU_REQ]);
	/* hold_ns (1 ms here) after they arrived: all five out, and the matched one behind them. */
	corr_tick(c, t + 1400 * US);
	corr_get_stats(c, &st);
	CHECK(st.guest[CORR_NO_QEMU_REQ] == 5 && st.guest[CORR_MATCHED_GPA] == 1,
	      "one hold_ns after arrival: %llu unmatched, %llu matched (want 5, 1)",
	      (unsigned long long)st.guest[CORR_NO_QEMU_REQ], (unsigned long long)st.guest[CORR_MATCHED_GPA]);
	fixture_close(&x);
}

/*
 * A device already working through the ring takes a request without a kick;
 * the guest's next kick can come milliseconds later. The request QEMU took
 * between the guest's issue and that late kick is still this record's.
 */
static void test_taken_before_kick(void)
{
	struct fixture x;
	struct corr *c = fixture_open(&x);
	struct iot_record r = { .kind = IOT_KIND_AIO, .op = IOT_OP_READ, .driver = IOT_DRV_VIRTIO_BLK, .pid = 7,
				.tid = 7, .dev = DEV_1, .sector = 640, .offset = IOT_UNKNOWN_U64, .len = 4096,
				.bio_bytes = 4096, .nr_bios = 1, .vq_gpa = 0xa100 };
	char match[16] = "";
	uint64_t t = 12000000 * US;
	long head;

	if (!c)
		return;
	r.ts[IOT_TS_SYSCALL_ENTER] = t;
	r.ts[IOT_TS_BIO_QUEUE] = t + 5 * US;
	r.ts[IOT_TS_RQ_ISSUE] = t + 10 * US;
	r.ts[IOT_TS_DRIVER] = t + 4200 * US;	/* a later batch's kick */
	r.ts[IOT_TS_IRQ] = t + 7900 * US;
	r.ts[IOT_TS_RQ_COMPLETE] = t + 7910 * US;
	submit(c, t + 60 * US, BLK_A, 0xa100, 640, 21);
	corr_guest_record(c, VM, "qemu:100/vm", false, 400 * US, &r);
	corr_tick(c, t + 20000 * US);
	head = head_of(fixture_text(&x), 640, match, sizeof(match));
	CHECK(head == 21 && !strcmp(match, "gpa"), "taken before the kick: head %ld (%s)", head, match);
	fixture_close(&x);
}

/*
 * aio=native on qcow2: QEMU zero-fills a new cluster with fallocate, which
 * leaves it allocated but unwritten, then writes the data into it. The
 * blocks are placed: the Linux AIO bio lands on them and must be tied to
 * the backend call, however long the file system takes to mark the extent
 * written after the I/O.
 */
static void test_native_unwritten(bool kernel)
{
	struct {
		struct fiemap fm;
		struct fiemap_extent fe[1];
	} m = { .fm = { .fm_start = 0, .fm_length = 1 << 20, .fm_extent_count = 1 } };
	char path[] = "test-native-XXXXXX", sys[128], got[64];
	uint32_t me = getpid();
	uint64_t t = 40000000 * US, part = 0, sector;
	struct iot_qemu_event q = { .ts = t + 10 * US, .pid = me, .tid = me, .type = IOT_QEV_SUBMIT,
				    .op = IOT_OP_READ, .nreqs = 1, .flags = IOT_QF_LAYOUT_OK, .blk = BLK_A,
				    .offset = 80 * 512, .bytes = 4096, .req = 0x5000 + 50, .iov = IOV_OF(50) };
	struct iot_qemu_event e = { .ts = t + 11 * US, .pid = me, .tid = me, .type = IOT_QEV_BACKEND,
				    .op = 0x1 /* QEMU_AIO_READ */, .offset = 64 << 10, .bytes = 4096,
				    .req = 0x5000 + 50, .req_ts = t + 10 * US, .backend = IOT_QB_NATIVE,
				    .iov = IOV_OF(50) };
	struct iot_record r = { .kind = IOT_KIND_AIO, .op = IOT_OP_READ, .pid = me, .tid = me, .len = 4096,
				.result = 4096, .offset = IOT_UNKNOWN_U64, .nr_bios = 1, .bio_bytes = 4096 };
	struct corr_stats st;
	struct fixture x;
	struct stat sb;
	struct corr *c;
	FILE *sf;
	int fd = mkstemp(path);

	if (fd < 0 || fallocate(fd, 0, 0, 1 << 20) || ioctl(fd, FS_IOC_FIEMAP, &m.fm) ||
	    m.fm.fm_mapped_extents < 1 || !(m.fe[0].fe_flags & FIEMAP_EXTENT_UNWRITTEN) || fstat(fd, &sb)) {
		printf("SKIP test_native_unwritten: no unwritten extent from fallocate on this file system\n");
		if (fd >= 0) {
			close(fd);
			unlink(path);
		}
		return;
	}
	unlink(path);
	snprintf(sys, sizeof(sys), "/sys/dev/block/%u:%u/start", major(sb.st_dev), minor(sb.st_dev));
	sf = fopen(sys, "re");
	if (sf) {
		if (fscanf(sf, "%llu", (unsigned long long *)&part) != 1)
			part = 0;
		fclose(sf);
	}
	sector = (m.fe[0].fe_physical + (64 << 10)) / 512 + part;
	c = fixture_open(&x);
	if (!c) {
		close(fd);
		return;
	}
	q.reqs[0] = (struct iot_qemu_req){ .req = 0x5000 + 50, .gpa = 0x7400, .sector = 80, .qiov_size = 4096,
					   .head = 50, .type = 0 };
	e.fd = fd;
	if (kernel) {
		/* The kernel route: the io_submit is both; a raw image's file offset is the guest's. */
		q.flags |= IOT_QF_KERNEL;
		q.backend = IOT_QB_NATIVE;
		q.fd = fd;
		q.offset = 64 << 10;
		q.reqs[0].sector = q.offset / 512;
	}
	corr_qemu_event(c, &q);
	if (!kernel)
		corr_qemu_event(c, &e);
	r.dev = (major(sb.st_dev) << 20) | minor(sb.st_dev);
	r.sector = sector;
	r.ts[IOT_TS_BIO_QUEUE] = t + 12 * US;
	r.ts[IOT_TS_RQ_ISSUE] = t + 13 * US;
	r.ts[IOT_TS_RQ_COMPLETE] = t + 80 * US;
	corr_host_record(c, &r);		/* the extent is still unwritten */
	guest_of(c, me, t, DEV_1, 0x7400, q.reqs[0].sector);
	corr_tick(c, t + 100000 * US);
	corr_get_stats(c, &st);
	host_io_of(fixture_text(&x), q.reqs[0].sector, got, sizeof(got));
	CHECK(st.host_linked == 1 && strcmp(got, "none"), "Linux AIO into an unwritten extent%s: %s, %llu linked",
	      kernel ? ", on the kernel route" : "", got, (unsigned long long)st.host_linked);
	CHECK(!kernel || !strncmp(got, "buffers@", 8), "on the kernel route the io_submit is tied as %s", got);
	fixture_close(&x);
	close(fd);
}

/*
 * A QEMU probed through USDT reports each request when virtio-blk takes it,
 * then the requests it merged into one call: both are then one submit, the
 * merged call's host I/O theirs. A merge naming a request the join never saw
 * is counted, not guessed.
 */
static void test_usdt_merge(void)
{
	struct fixture x;
	struct corr *c = fixture_open(&x);
	struct iot_qemu_event m = { .pid = VM, .tid = VM + 1, .type = IOT_QEV_MERGE, .op = IOT_OP_READ, .nreqs = 2,
				    .flags = IOT_QF_USDT, .blk = BLK_A, .offset = 300 * 512, .bytes = 8192,
				    .iov = 0x7f5500000000ull };
	struct corr_stats st;
	uint64_t t = 50000000 * US, b1 = 0x7f4400000000ull;
	char got[64];
	const char *buf;

	if (!c)
		return;
	corr_vm_lean(c, VM, true);
	lean_submit(c, t + 10 * US, IOT_OP_READ, 0x9100, 300, 60, b1);
	lean_submit(c, t + 11 * US, IOT_OP_READ, 0x9200, 308, 61, b1 + 4096);
	m.ts = t + 12 * US;
	m.reqs[0].req = 0x5000 + 60;
	m.reqs[1].req = 0x5000 + 61;
	corr_qemu_event(c, &m);
	host_io(c, t + 13 * US, IOT_OP_READ, 300 * 512, b1);	/* the merged call's one read */
	guest(c, t + 5 * US, DEV_1, 0x9100, 300);
	guest(c, t + 6 * US, DEV_1, 0x9200, 308);
	m.reqs[0].req = 0x5000 + 60;
	m.reqs[1].req = 0xdead;				/* never reported */
	corr_qemu_event(c, &m);
	corr_tick(c, t + 100000 * US);
	corr_get_stats(c, &st);
	buf = fixture_text(&x);
	host_io_of(buf, 300, got, sizeof(got));
	CHECK(!strcmp(got, "buffers@153600"), "the first merged request's host I/O: %s", got);
	host_io_of(buf, 308, got, sizeof(got));
	CHECK(!strcmp(got, "buffers@153600"), "the second merged request's host I/O: %s (want the merged call's)", got);
	CHECK(st.qemu_merges == 2 && st.qemu_merge_unknown == 1, "merges %llu, unknown %llu (want 2, 1)",
	      (unsigned long long)st.qemu_merges, (unsigned long long)st.qemu_merge_unknown);
	fixture_close(&x);
}

/*
 * The kernel route: QEMU's request is stamped at its io_uring submission,
 * inside the host I/O (after io_uring_enter began). It is still that I/O's,
 * and a later read of the same block into the same buffer, submitted once
 * the first was done, is not: each host I/O goes to its own request, and
 * the split has one kick_to_host segment.
 */
static void kernel_submit(struct corr *c, uint64_t ts, uint64_t gpa, uint64_t sector, uint32_t head, uint64_t buf)
{
	struct iot_qemu_event e = { .ts = ts, .pid = VM, .tid = VM + 1, .type = IOT_QEV_SUBMIT, .op = IOT_OP_READ,
				    .nreqs = 1, .flags = IOT_QF_LAYOUT_OK | IOT_QF_NO_BACKEND | IOT_QF_KERNEL,
				    .blk = 1ULL << 63 | 5, .offset = sector * 512, .bytes = 4096, .req = 0x5000 + head,
				    .buf = buf, .iov = IOV_OF(head) };

	e.reqs[0] = (struct iot_qemu_req){ .req = 0x5000 + head, .gpa = gpa, .sector = sector, .qiov_size = 4096,
					   .head = head, .type = 0 };
	corr_qemu_event(c, &e);
}

/* The host I/O start of the guest record joined to QEMU head h, 0 if none; its line's split in ret. */
static uint64_t host_start_of_head(const char *out, uint32_t h, char *ret, size_t len)
{
	char key[64];

	snprintf(key, sizeof(key), "\"qemu\":{\"head\":%u,", h);
	for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		const char *end = strchr(l, '\n') ?: l + strlen(l), *k = strstr(l, key), *st, *sp;

		if (!k || k > end)
			continue;
		sp = strstr(k, "\"split_ns\":[");
		snprintf(ret, len, "%.*s", sp && sp < end ? (int)(end - sp) : 0, sp ? sp : "");
		st = strstr(l, "\"start_ns\":");
		return st && st < end ? strtoull(st + 11, NULL, 10) : 0;
	}
	return 0;
}

static void test_kernel_route(void)
{
	struct fixture x;
	struct corr *c = fixture_open(&x);
	struct corr_stats st;
	uint64_t t = 60000000 * US, b1 = 0x7f6600000000ull;
	char split[512];
	const char *buf;

	if (!c)
		return;
	corr_vm_lean(c, VM, true);
	kernel_submit(c, t + 12 * US, 0xa000, 400, 70, b1);	/* A: in its I/O, which began at +10 */
	kernel_submit(c, t + 70 * US, 0xa100, 400, 71, b1);	/* B: the same block and buffer, after A ended */
	host_io(c, t + 10 * US, IOT_OP_READ, 400 * 512, b1);	/* A's: +10 to +60 */
	host_io(c, t + 68 * US, IOT_OP_READ, 400 * 512, b1);	/* B's */
	guest(c, t + 5 * US, DEV_1, 0xa000, 400);
	guest(c, t + 65 * US, DEV_1, 0xa100, 400);
	corr_tick(c, t + 100000 * US);
	corr_get_stats(c, &st);
	buf = fixture_text(&x);
	CHECK(host_start_of_head(buf, 70, split, sizeof(split)) == t + 10 * US,
	      "A's host I/O starts at %llu (want its own, %llu)",
	      (unsigned long long)host_start_of_head(buf, 70, split, sizeof(split)), (unsigned long long)(t + 10 * US));
	CHECK(strstr(split, "kick_to_host") && !strstr(split, "kick_to_qemu") && !strstr(split, "qemu_to_host"),
	      "A's split on the kernel route: %s", split);
	CHECK(strstr(buf, "\"seen_at\":\"host_submit\""), "no record says its QEMU request was seen at the host's submit");
	CHECK(host_start_of_head(buf, 71, split, sizeof(split)) == t + 68 * US,
	      "B's host I/O starts at %llu (want its own, %llu)",
	      (unsigned long long)host_start_of_head(buf, 71, split, sizeof(split)), (unsigned long long)(t + 68 * US));
	CHECK(st.qemu_kernel_submits == 2 && st.host_by_buffers == 2 && st.guest[CORR_MATCHED_GPA] == 2,
	      "kernel submits %llu, tied by buffers %llu, matched %llu (want 2, 2, 2)",
	      (unsigned long long)st.qemu_kernel_submits, (unsigned long long)st.host_by_buffers,
	      (unsigned long long)st.guest[CORR_MATCHED_GPA]);
	fixture_close(&x);
}

int main(void)
{
	struct fixture x;
	struct corr *c = fixture_open(&x);
	char match[16] = "";
	const char *buf;
	uint64_t t = 1000000 * US;

	if (!c)
		return 1;
	/* 1. An exact match: disk 1 is drive A. */
	submit(c, t + 10 * US, BLK_A, 0x7000, 8, 1);
	guest(c, t, DEV_1, 0x7000, 8);
	/* 2. Disk 1 again, no header address, sector 16: drive B took a sector 16 first, then drive A. */
	t += 1000 * US;
	submit(c, t + 10 * US, BLK_B, 0x9000, 16, 9);
	submit(c, t + 20 * US, BLK_A, 0x7000, 16, 7);
	guest(c, t, DEV_1, 0, 16);
	/* 3. Disk 2, never matched exactly: its drive is not known, the fallback key alone decides. */
	t += 1000 * US;
	submit(c, t + 10 * US, BLK_B, 0x9100, 24, 11);
	guest(c, t, DEV_2, 0, 24);
	corr_tick(c, t + 10000 * US);
	buf = fixture_text(&x);

	CHECK(head_of(buf, 8, match, sizeof(match)) == 1 && !strcmp(match, "gpa"), "exact match: head %ld, %s",
	      head_of(buf, 8, match, sizeof(match)), match);
	CHECK(head_of(buf, 16, match, sizeof(match)) == 7 && !strcmp(match, "sector"),
	      "fallback on disk 1 joined head %ld (%s): drive B's request, not its own drive A's",
	      head_of(buf, 16, match, sizeof(match)), match);
	CHECK(head_of(buf, 24, match, sizeof(match)) == 11 && !strcmp(match, "sector"),
	      "fallback on disk 2: head %ld (%s)", head_of(buf, 24, match, sizeof(match)), match);
	fixture_close(&x);
	test_window_reuse();
	test_backend_relink();
	test_lean();
	test_stale_thread();
	test_hold_from_arrival();
	test_taken_before_kick();
	test_native_unwritten(false);
	test_native_unwritten(true);
	test_usdt_merge();
	test_kernel_route();
	printf("%d checks, %d failed\n", checks, failures);
	return failures ? 1 : 0;
}
