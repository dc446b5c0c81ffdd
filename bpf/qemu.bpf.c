// SPDX-License-Identifier: GPL-2.0
/*
 * The qemu layer: uprobes on QEMU's exported functions (Debian and Ubuntu
 * build QEMU without USDT probes).
 *
 * Per guest request two probes fire: blk_aio_preadv/pwritev/flush, where
 * virtio-blk hands the guest's request (possibly merged with neighbours) to
 * QEMU's block layer, and the file-posix backend call that hands it to the
 * host kernel (thread_pool_submit_aio, luring_co_submit or laio_co_submit).
 * Everything else about the request's host side comes from host kernel
 * tracepoints, which cost far less than a uprobe.
 *
 * The VirtIOBlockReq read at blk_aio_* gives the exact key the guest also
 * has: the guest-physical address of the request's virtio-blk header (the
 * element's first out descriptor), and the virtqueue head index. Offsets
 * come from user space's per-version table (struct iot_qemu_layout), and
 * each read is checked against the call's own arguments (IOT_QF_LAYOUT_OK).
 *
 * A QEMU built with USDT probes (the dtrace trace backend, as Fedora and
 * RHEL build it) is probed at its trace points instead where they say the
 * same: virtio_blk_handle_read/write for each request as virtio-blk takes
 * it, and virtio_blk_submit_multireq for requests it merges. A USDT site is
 * a nop, emulated in the one trap whatever the compiler made of the code
 * around it. Flushes and backend calls have no trace point that carries
 * what the join needs, and keep their uprobes.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/usdt.bpf.h>
#include "record.h"
#include "qemu_event.h"

char LICENSE[] SEC("license") = "GPL";

const volatile struct iot_qemu_layout L = {};

/* QEMU processes being traced: tgid -> IOT_QPID_* bits. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} qemu_pids SEC(".maps");

/* The submit under way on a QEMU thread: its backend calls follow on the same thread. */
struct cur_submit {
	__u64 req;
	__u64 ts;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct cur_submit);
} cur_req SEC(".maps");

#define QEVENTS_BYTES (512 * 1024)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, QEVENTS_BYTES);
} qevents SEC(".maps");

/*
 * Wake the reader only once a batch waits: a wakeup per request costs the
 * host agent more than the event itself. It reads at least every 50 ms anyway.
 */
static __always_inline __u64 wakeup_flag(void)
{
	return bpf_ringbuf_query(&qevents, BPF_RB_AVAIL_DATA) >= QEVENTS_BYTES / 8 ? BPF_RB_FORCE_WAKEUP
										     : BPF_RB_NO_WAKEUP;
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IOT_QCNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} qcounters SEC(".maps");

static __always_inline void count(__u32 c)
{
	__u64 *v = bpf_map_lookup_elem(&qcounters, &c);

	if (v)
		(*v)++;
}

static __always_inline __u64 arg(struct pt_regs *ctx, __u8 n)
{
	/*
	 * Copied out first: the verifier refuses a context access at a
	 * computed offset, which is what a switch on n compiles to (and what
	 * the compiler makes of r[n] unless each load is pinned). n comes from
	 * read-only data, so r[n] is a fixed stack slot to the verifier.
	 * x86_64 order: di, si, dx, cx, r8, r9 (libbpf 1.1 has no PT_REGS_PARM6).
	 */
	__u64 r[6] = { ctx->di, ctx->si, ctx->dx, ctx->cx, ctx->r8, ctx->r9 };

	/* Each load happens here, at its own fixed offset: the compiler may not fold the choice into the address. */
	for (int i = 0; i < 6; i++)
		asm volatile("" : "+r"(r[i]));
	return n < 6 ? r[n] : 0;
}

static __always_inline __u64 read_u64(__u64 addr)
{
	__u64 v = 0;

	bpf_probe_read_user(&v, sizeof(v), (void *)addr);
	return v;
}

/* How the current process is traced (IOT_QPID_*), 0 if it is not a traced QEMU. */
static __always_inline __u8 traced_how(__u32 *ret_pid, __u32 *ret_tid)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;
	__u8 *v;

	*ret_pid = pid;
	*ret_tid = (__u32)id;
	v = bpf_map_lookup_elem(&qemu_pids, &pid);
	return v ? *v | IOT_QPID_TRACED : 0;
}

/* The same for a uprobe or USDT program: counts the hit (each is a trap) either way. */
static __always_inline __u8 traced(__u32 *ret_pid, __u32 *ret_tid)
{
	count(IOT_QCNT_HITS);
	return traced_how(ret_pid, ret_tid);
}

/* A VirtIOBlockReq's first L.req_read bytes and usually the arrays after it, copied in one read. */
#define REQ_COPY_MAX (IOT_QEMU_REQ_READ_MAX + IOT_QEMU_REQ_TAIL)
struct req_bytes {
	__u8 b[REQ_COPY_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct req_bytes);
} reqbuf SEC(".maps");

/* Fields out of a copy of n bytes; offsets come from read-only data, checked against n. */
static __always_inline __u64 get_u64(const __u8 *b, __u32 n, __u32 off)
{
	__u64 v = 0;

	if (off <= n - sizeof(v))
		__builtin_memcpy(&v, b + off, sizeof(v));
	return v;
}

static __always_inline __u32 get_u32(const __u8 *b, __u32 n, __u32 off)
{
	__u32 v = 0;

	if (off <= n - sizeof(v))
		__builtin_memcpy(&v, b + off, sizeof(v));
	return v;
}

/* A submit event is built here, then only its header and the requests it holds are output. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct iot_qemu_event);
} scratch SEC(".maps");

/* The u64 at user address addr: from the copy of n bytes at base when it holds it, else read. */
static __always_inline __u64 copied_u64(const __u8 *b, __u32 n, __u64 base, __u64 addr)
{
	__u64 off = addr - base;

	if (addr >= base && off <= REQ_COPY_MAX - 8 && off + 8 <= n)
		return get_u64(b, REQ_COPY_MAX, off);
	return read_u64(addr);
}

/* The submit under way on this thread, for the backend calls that follow: set in place, not reinserted. */
static __always_inline void cur_set(__u8 how, __u32 tid, const struct cur_submit *cur)
{
	struct cur_submit *slot;

	/* Only backend calls look it up. */
	if (how & IOT_QPID_NO_BACKEND)
		return;
	slot = bpf_map_lookup_elem(&cur_req, &tid);
	if (slot)
		*slot = *cur;
	else
		bpf_map_update_elem(&cur_req, &tid, cur, BPF_ANY);
}

/* A submit or merge event out: its header and the nreqs requests it holds (most hold one: 112 bytes, not 712). */
static __always_inline void output_reqs(struct iot_qemu_event *e)
{
	__u64 size = IOT_QEMU_EVENT_BACKEND_SIZE + (__u64)e->nreqs * sizeof(struct iot_qemu_req);

	if (size > sizeof(*e))
		size = sizeof(*e);
	if (bpf_ringbuf_output(&qevents, e, size, wakeup_flag()))
		count(IOT_QCNT_LOST);
}

/*
 * A submit: virtio-blk's request at opaque (and those merged with it) goes
 * down as one call of offset and qiov. want_iov, when not 0, is the I/O
 * vector the call is known to carry (the kernel route's SQE): the request
 * read back must hold it too.
 */
static __always_inline int on_submit(__u8 how, __u32 pid, __u32 tid, __u16 op, __u64 blk, __u64 offset, __u64 qiov,
				     __u64 opaque, __u16 flags, __u64 want_iov, __u32 backend, __s32 fd)
{
	struct iot_qemu_event *e;
	struct cur_submit cur;
	__u32 zero = 0, read_len = L.req_read, copied = 0;
	__u64 req = opaque, sector_num = 0;
	struct req_bytes *rb;

	if (!how)
		return 0;
	cur.req = opaque;
	cur.ts = bpf_ktime_get_ns();
	if (!(how & IOT_QPID_KERNEL))
		cur_set(how, tid, &cur);
	e = bpf_map_lookup_elem(&scratch, &zero);
	if (!e)
		return 0;
	e->ts = cur.ts;
	e->pid = pid;
	e->tid = tid;
	e->type = IOT_QEV_SUBMIT;
	e->op = op;
	e->flags = flags;
	e->blk = blk;
	e->offset = offset;
	e->req = opaque;
	e->req_ts = 0;
	/* The kernel route: the host I/O this submission is, which the probe routes learn from a backend call. */
	e->fd = fd;
	e->backend = backend;
	e->iov = 0;
	e->buf = 0;
	e->nreqs = 0;
	rb = bpf_map_lookup_elem(&reqbuf, &zero);
	if (!rb || !read_len || read_len > IOT_QEMU_REQ_READ_MAX)
		return 0;
	for (int i = 0; i < IOT_QEMU_CHAIN_MAX; i++) {
		struct iot_qemu_req *q = &e->reqs[i];
		__u64 out_addr, next;

		/*
		 * One copy of the request's first bytes, then every field from it:
		 * a read each cost 40 ns. The arrays after it may end within the
		 * tail's reach of an unmapped page: then the request alone. A
		 * failed copy leaves zeros, which end the chain and fail the
		 * layout check below (counted by user space).
		 */
		copied = read_len + IOT_QEMU_REQ_TAIL;
		if (bpf_probe_read_user(rb->b, copied, (void *)req)) {
			copied = read_len;
			bpf_probe_read_user(rb->b, read_len, (void *)req);
		}
		q->req = req;
		q->head = get_u32(rb->b, IOT_QEMU_REQ_READ_MAX, L.elem_index);
		out_addr = get_u64(rb->b, IOT_QEMU_REQ_READ_MAX, L.elem_out_addr);
		q->gpa = out_addr ? copied_u64(rb->b, copied, req, out_addr) : 0;
		q->type = get_u32(rb->b, IOT_QEMU_REQ_READ_MAX, L.req_out_type);
		q->sector = get_u64(rb->b, IOT_QEMU_REQ_READ_MAX, L.req_out_sector);
		q->qiov_size = get_u64(rb->b, IOT_QEMU_REQ_READ_MAX, L.req_qiov + L.qiov_size);
		if (i == 0) {
			sector_num = get_u64(rb->b, IOT_QEMU_REQ_READ_MAX, L.req_sector_num);
			e->iov = get_u64(rb->b, IOT_QEMU_REQ_READ_MAX, L.req_qiov + L.qiov_iov);
		}
		e->nreqs = i + 1;
		if (op == IOT_OP_FLUSH)
			break;
		/* Requests virtio-blk merged into this call are chained through mr_next. */
		next = get_u64(rb->b, IOT_QEMU_REQ_READ_MAX, L.req_mr_next);
		if (!next || next == req)
			break;
		if (i == IOT_QEMU_CHAIN_MAX - 1)
			e->flags |= IOT_QF_CHAIN_TRUNC;
		req = next;
	}
	/* virtio-blk hands down its first request's own I/O vector, whose size the copy already holds. */
	if (qiov && qiov == opaque + L.req_qiov)
		e->bytes = e->reqs[0].qiov_size;
	else
		e->bytes = qiov ? read_u64(qiov + L.qiov_size) : 0;
	/*
	 * The layout check: what we read must agree with what QEMU passed.
	 * Another device's request (nvme, scsi emulation also call blk_aio_*)
	 * fails it too, and is ignored by user space.
	 */
	if (op == IOT_OP_FLUSH) {
		if (e->reqs[0].type == 4 /* VIRTIO_BLK_T_FLUSH */ && e->reqs[0].gpa)
			e->flags |= IOT_QF_LAYOUT_OK;
	} else if (e->reqs[0].gpa && sector_num == e->reqs[0].sector && sector_num * 512 == offset &&
		   e->reqs[0].type == (op == IOT_OP_WRITE ? 1 : 0) && (!want_iov || e->iov == want_iov)) {
		e->flags |= IOT_QF_LAYOUT_OK;
	}
	if (how & IOT_QPID_NO_BACKEND) {
		e->flags |= IOT_QF_NO_BACKEND;
		/* iov[0].iov_base; the copy holds the last request of a chain, the iovecs are the first's. */
		if (e->iov)
			e->buf = e->nreqs == 1 ? copied_u64(rb->b, copied, opaque, e->iov) : read_u64(e->iov);
	}
	count(IOT_QCNT_SUBMITS);
	output_reqs(e);
	return 0;
}

/* blk_aio_preadv/pwritev(BlockBackend *blk, int64_t offset, QEMUIOVector *qiov, flags, cb, void *opaque) */
SEC("uprobe")
int qemu_blk_aio_preadv(struct pt_regs *ctx)
{
	__u32 pid, tid;
	__u8 how = traced(&pid, &tid);

	return on_submit(how, pid, tid, IOT_OP_READ, arg(ctx, 0), arg(ctx, 1), arg(ctx, 2), arg(ctx, 5), 0, 0, 0, -1);
}

SEC("uprobe")
int qemu_blk_aio_pwritev(struct pt_regs *ctx)
{
	__u32 pid, tid;
	__u8 how = traced(&pid, &tid);

	return on_submit(how, pid, tid, IOT_OP_WRITE, arg(ctx, 0), arg(ctx, 1), arg(ctx, 2), arg(ctx, 5), 0, 0, 0, -1);
}

/* blk_aio_flush(BlockBackend *blk, cb, void *opaque) */
SEC("uprobe")
int qemu_blk_aio_flush(struct pt_regs *ctx)
{
	__u32 pid, tid;
	__u8 how = traced(&pid, &tid);

	return on_submit(how, pid, tid, IOT_OP_FLUSH, arg(ctx, 0), 0, 0, arg(ctx, 2), 0, 0, 0, -1);
}

/* The LuringAIOCB an SQE names, copied in one read. */
struct cb_bytes {
	__u8 b[IOT_QEMU_CB_READ_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cb_bytes);
} cbbuf SEC(".maps");

/* struct io_uring_sqe, the kernel's ABI: where its fields are. */
#define SQE_OPCODE	0
#define SQE_FD		4
#define SQE_OFF		8
#define SQE_ADDR	16
#define SQE_LEN		24
#define SQE_USER_DATA	32
#define SQE_SIZE	64

/*
 * The kernel route: no probe in QEMU. QEMU's io_uring backend submits
 * each read and write with its LuringAIOCB as the SQE's user_data, and
 * that LuringAIOCB keeps the SQE it was made from and the QEMUIOVector it
 * carries, which for a raw image is the VirtIOBlockReq's own (merged
 * requests chained through mr_next, as at blk_aio_*). The tracepoint fires
 * on the submitting QEMU thread, so QEMU's memory is the current one.
 *
 * Checked per submission against the running binary: the copy of the SQE
 * must name its own LuringAIOCB and agree with the request the kernel
 * took (opcode, file offset, I/O vector), and the VirtIOBlockReq read
 * through it must hold that I/O vector, sector and operation. Anything
 * else (a flush, a short read resubmitted, a request QEMU bounced through
 * its own buffer) is counted and left out.
 */
SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(qemu_uring_submit, struct io_kiocb *ioreq)
{
	__u32 pid, tid, zero = 0, n = L.luringcb_read, s = L.luringcb_sqe;
	__u8 how = traced_how(&pid, &tid), opcode;
	__u64 cb, qiov, addr, off;
	struct cb_bytes *b;
	__s32 fd;
	__u16 op;

	if (!(how & IOT_QPID_KERNEL))
		return 0;
	opcode = ioreq->opcode;
	cb = ioreq->cqe.user_data;
	if (opcode == IORING_OP_READV)
		op = IOT_OP_READ;
	else if (opcode == IORING_OP_WRITEV)
		op = IOT_OP_WRITE;
	else
		goto foreign;
	b = bpf_map_lookup_elem(&cbbuf, &zero);
	if (!b || !n || n > IOT_QEMU_CB_READ_MAX || s > IOT_QEMU_CB_READ_MAX - SQE_SIZE ||
	    bpf_probe_read_user(b->b, n, (void *)cb))
		goto foreign;
	addr = get_u64(b->b, IOT_QEMU_CB_READ_MAX, s + SQE_ADDR);
	off = get_u64(b->b, IOT_QEMU_CB_READ_MAX, s + SQE_OFF);
	qiov = get_u64(b->b, IOT_QEMU_CB_READ_MAX, L.luringcb_qiov);
	if (get_u64(b->b, IOT_QEMU_CB_READ_MAX, s + SQE_USER_DATA) != cb ||
	    b->b[s & (IOT_QEMU_CB_READ_MAX - 1)] != opcode || !qiov || !addr ||
	    off != (__u64)BPF_CORE_READ((struct io_rw *)ioreq, kiocb.ki_pos))
		goto foreign;
	count(IOT_QCNT_KSUBMITS);
	/* The drive: the image's descriptor in this QEMU (the top bit keeps it apart from a BlockBackend). */
	fd = (__s32)get_u32(b->b, IOT_QEMU_CB_READ_MAX, s + SQE_FD);
	return on_submit(how, pid, tid, op, 1ULL << 63 | (__u32)fd, off, qiov, qiov - L.req_qiov, IOT_QF_KERNEL, addr,
			 IOT_QB_URING, fd);
foreign:
	count(IOT_QCNT_KFOREIGN);
	return 0;
}

/*
 * The kernel route under aio=native: file-posix's Linux AIO backend hands
 * io_submit the struct iocb inside each request's qemu_laiocb, which also
 * holds the QEMUIOVector (for a raw image the VirtIOBlockReq's own). So
 * each iocb of the call is read back to its request at the system call's
 * entry, on the submitting QEMU thread. Checked as on io_uring: a
 * preadv/pwritev whose vector is the QEMUIOVector's, and the request must
 * hold that vector, sector and operation.
 */
struct aio_walk {
	__u64 iocbpp;
	__u32 nr, pid, tid;
	__u8 how;
};

/* struct iocb, the kernel's ABI (and libaio's): where its fields are. */
#define IOCB_OPCODE	16
#define IOCB_FD		20
#define IOCB_BUF	24
#define IOCB_NBYTES	32
#define IOCB_OFFSET	40
#define IOCB_SIZE	64
#define IOCB_CMD_PREADV	7
#define IOCB_CMD_PWRITEV 8
#define AIO_WALK_MAX	256	/* iocbs read back per io_submit (QEMU batches up to 32 by default); the rest counted */

static long aio_one(__u32 i, void *data)
{
	struct aio_walk *w = data;
	__u32 zero = 0, n = L.laiocb_read, o = L.laiocb_iocb;
	__u64 iocb = 0, cb, qiov, buf;
	struct cb_bytes *b;
	__u16 opcode, op;
	__s32 fd;

	if (i >= w->nr)
		return 1;
	b = bpf_map_lookup_elem(&cbbuf, &zero);
	if (!b || !n || n > IOT_QEMU_CB_READ_MAX || o > IOT_QEMU_CB_READ_MAX - IOCB_SIZE ||
	    bpf_probe_read_user(&iocb, sizeof(iocb), (void *)(w->iocbpp + (__u64)i * 8)) || iocb < o)
		goto foreign;
	cb = iocb - o;
	if (bpf_probe_read_user(b->b, n, (void *)cb))
		goto foreign;
	opcode = *(__u16 *)&b->b[(o + IOCB_OPCODE) & (IOT_QEMU_CB_READ_MAX - 2)];
	if (opcode == IOCB_CMD_PREADV)
		op = IOT_OP_READ;
	else if (opcode == IOCB_CMD_PWRITEV)
		op = IOT_OP_WRITE;
	else
		goto foreign;
	buf = get_u64(b->b, IOT_QEMU_CB_READ_MAX, o + IOCB_BUF);
	qiov = get_u64(b->b, IOT_QEMU_CB_READ_MAX, L.laiocb_qiov);
	if (!qiov || !buf)
		goto foreign;
	count(IOT_QCNT_KSUBMITS);
	fd = (__s32)get_u32(b->b, IOT_QEMU_CB_READ_MAX, o + IOCB_FD);
	on_submit(w->how, w->pid, w->tid, op, 1ULL << 63 | (__u32)fd,
		  get_u64(b->b, IOT_QEMU_CB_READ_MAX, o + IOCB_OFFSET), qiov, qiov - L.req_qiov, IOT_QF_KERNEL, buf,
		  IOT_QB_NATIVE, fd);
	return 0;
foreign:
	count(IOT_QCNT_KFOREIGN);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_io_submit")
int qemu_aio_submit(struct trace_event_raw_sys_enter *ctx)
{
	struct aio_walk w = {};
	long nr = (long)ctx->args[1];

	w.how = traced_how(&w.pid, &w.tid);
	if (!(w.how & IOT_QPID_KERNEL) || nr <= 0)
		return 0;
	w.iocbpp = ctx->args[2];
	w.nr = nr > AIO_WALK_MAX ? AIO_WALK_MAX : nr;
	bpf_loop(w.nr, aio_one, &w, 0);
	if (nr > AIO_WALK_MAX) {
		__u32 c = IOT_QCNT_KFOREIGN;
		__u64 *v = bpf_map_lookup_elem(&qcounters, &c);

		if (v)
			*v += nr - AIO_WALK_MAX;
	}
	return 0;
}

/*
 * USDT virtio_blk_handle_read/write(void *vdev, void *req, uint64_t sector,
 * size_t nsectors): the request as virtio-blk takes it, its own I/O vector
 * at req + L.req_qiov. The drive is named by its VirtIODevice (one per
 * BlockBackend for virtio-blk).
 */
SEC("usdt")
int BPF_USDT(qemu_usdt_read, void *vdev, void *req, __u64 sector, __u64 nsectors)
{
	__u32 pid, tid;
	__u8 how = traced(&pid, &tid);

	return on_submit(how, pid, tid, IOT_OP_READ, (__u64)vdev, sector * 512, (__u64)req + L.req_qiov, (__u64)req,
			 IOT_QF_USDT, 0, 0, -1);
}

SEC("usdt")
int BPF_USDT(qemu_usdt_write, void *vdev, void *req, __u64 sector, __u64 nsectors)
{
	__u32 pid, tid;
	__u8 how = traced(&pid, &tid);

	return on_submit(how, pid, tid, IOT_OP_WRITE, (__u64)vdev, sector * 512, (__u64)req + L.req_qiov, (__u64)req,
			 IOT_QF_USDT, 0, 0, -1);
}

/*
 * USDT virtio_blk_submit_multireq(void *vdev, void *mrb, int start,
 * int num_reqs, uint64_t offset, size_t size, bool is_write): requests
 * mrb->reqs[start..start + num_reqs) go down as one call, with the first
 * one's I/O vector rebuilt to hold them all. The backend calls follow on
 * this thread: the first request is the thread's submit from here.
 */
#define VIRTIO_BLK_MAX_MERGE_REQS 32	/* QEMU's: MultiReqBuffer.reqs[] */

SEC("usdt")
int BPF_USDT(qemu_usdt_merge, void *vdev, void *mrb, int start, int num_reqs, __u64 offset, __u64 size,
	     int is_write)
{
	struct cur_submit cur;
	struct iot_qemu_event *e;
	__u32 pid, tid, zero = 0, n;
	__u64 base;
	__u8 how = traced(&pid, &tid);

	if (!how || num_reqs < 2 || start < 0 || start + num_reqs > VIRTIO_BLK_MAX_MERGE_REQS)
		return 0;
	e = bpf_map_lookup_elem(&scratch, &zero);
	if (!e)
		return 0;
	__builtin_memset(e, 0, IOT_QEMU_EVENT_BACKEND_SIZE);
	e->ts = bpf_ktime_get_ns();
	e->pid = pid;
	e->tid = tid;
	e->type = IOT_QEV_MERGE;
	e->op = is_write ? IOT_OP_WRITE : IOT_OP_READ;
	e->flags = IOT_QF_USDT;
	e->blk = (__u64)vdev;
	e->offset = offset;
	e->bytes = size;
	e->fd = -1;
	n = num_reqs > IOT_QEMU_CHAIN_MAX ? IOT_QEMU_CHAIN_MAX : num_reqs;
	if (num_reqs > IOT_QEMU_CHAIN_MAX)
		e->flags |= IOT_QF_CHAIN_TRUNC;
	base = (__u64)mrb + L.mrb_reqs + (__u64)start * 8;
	for (__u32 i = 0; i < IOT_QEMU_CHAIN_MAX; i++) {
		if (i >= n)
			break;
		__builtin_memset(&e->reqs[i], 0, sizeof(e->reqs[i]));
		e->reqs[i].req = read_u64(base + i * 8);
	}
	e->nreqs = n;
	e->req = e->reqs[0].req;
	if (e->req)
		e->iov = read_u64(e->req + L.req_qiov + L.qiov_iov);
	cur.req = e->req;
	cur.ts = e->ts;
	cur_set(how, tid, &cur);
	output_reqs(e);
	return 0;
}

static __always_inline int on_backend(__u32 backend, __s32 fd, __u64 offset, __u64 bytes, __u16 type,
				      __u64 iov)
{
	struct iot_qemu_event *e;
	struct cur_submit *cur;
	__u32 pid, tid;
	__u8 how = traced(&pid, &tid);

	/* Not probed for this process (its host I/O names its request itself): ignore it. */
	if (!how || (how & IOT_QPID_NO_BACKEND))
		return 0;
	e = bpf_ringbuf_reserve(&qevents, IOT_QEMU_EVENT_BACKEND_SIZE, 0);
	if (!e) {
		count(IOT_QCNT_LOST);
		return 0;
	}
	cur = bpf_map_lookup_elem(&cur_req, &tid);
	e->ts = bpf_ktime_get_ns();
	e->pid = pid;
	e->tid = tid;
	e->type = IOT_QEV_BACKEND;
	e->op = type;
	e->nreqs = 0;
	e->flags = 0;
	e->blk = 0;
	e->offset = offset;
	e->bytes = bytes;
	e->req = cur ? cur->req : 0;
	e->req_ts = cur ? cur->ts : 0;
	e->fd = fd;
	e->backend = backend;
	e->iov = iov;
	e->buf = 0;
	count(IOT_QCNT_BACKENDS);
	bpf_ringbuf_submit(e, wakeup_flag());
	return 0;
}

/* The first bytes of a QEMU structure, copied in one read: a read each costs about 40 ns. */
#define HEAD_BYTES IOT_QEMU_HEAD_READ_MAX

static __always_inline void read_head(__u8 *b, __u64 addr, __u32 n)
{
	__builtin_memset(b, 0, HEAD_BYTES);
	if (addr && n && n <= HEAD_BYTES && bpf_probe_read_user(b, n, (void *)addr))
		__builtin_memset(b, 0, HEAD_BYTES);
}

SEC("uprobe")
int qemu_thread_pool_submit(struct pt_regs *ctx)
{
	__u8 b[HEAD_BYTES];

	/* Other thread-pool users pass other data; user space keeps only what matches a submit. */
	read_head(b, arg(ctx, L.tp_arg), L.rawaio_read);
	return on_backend(IOT_QB_THREADS, (__s32)get_u32(b, HEAD_BYTES, L.rawaio_fd),
			  get_u64(b, HEAD_BYTES, L.rawaio_offset), get_u64(b, HEAD_BYTES, L.rawaio_nbytes),
			  get_u32(b, HEAD_BYTES, L.rawaio_type), get_u64(b, HEAD_BYTES, L.rawaio_iov));
}

/* luring_co_submit and laio_co_submit: (bs, s, fd, offset, QEMUIOVector *qiov, type, ...) */
static __always_inline int co_submit(struct pt_regs *ctx, __u32 backend, __u8 fd, __u8 off, __u8 qiov,
				     __u8 type)
{
	__u8 b[HEAD_BYTES];

	read_head(b, arg(ctx, qiov), L.qiov_read);
	return on_backend(backend, (__s32)arg(ctx, fd), arg(ctx, off), get_u64(b, HEAD_BYTES, L.qiov_size),
			  (__u16)arg(ctx, type), get_u64(b, HEAD_BYTES, L.qiov_iov));
}

SEC("uprobe")
int qemu_luring_submit(struct pt_regs *ctx)
{
	return co_submit(ctx, IOT_QB_URING, L.luring_fd, L.luring_off, L.luring_qiov, L.luring_type);
}

SEC("uprobe")
int qemu_laio_submit(struct pt_regs *ctx)
{
	return co_submit(ctx, IOT_QB_NATIVE, L.laio_fd, L.laio_off, L.laio_qiov, L.laio_type);
}
