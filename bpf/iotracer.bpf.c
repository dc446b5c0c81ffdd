// SPDX-License-Identifier: GPL-2.0
/*
 * iotracer kernel side: follows each I/O request through the syscall, file
 * system, page cache, block layer, driver, io_uring and AIO, keeps its state
 * in maps keyed by thread and by kernel pointer, and emits one record per
 * completed request.
 *
 * Every handler body is shared by its attach routes (tp_btf and raw_tp, or
 * fentry and kprobe): user space picks the route that works on the running
 * kernel and turns the others' autoload off.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "record.h"

char LICENSE[] SEC("license") = "GPL";

#define MAX_THREADS	16384
#define MAX_BIOS	32768
#define MAX_URING	16384
#define MAX_DIRTIERS	8192
#define RQ_BIO_WALK	16
#define DIR_WALK	8

#define S_IFMT  00170000
#define S_IFREG 0100000
#define S_IFBLK 0060000

/* Filters and knobs, set by user space before load. */
const volatile __u32 filter_pid = 0;
const volatile __u8 pid_set_on = 0;		/* only the processes in the pid_set map */
const volatile __u32 filter_tid = 0;
const volatile __u32 self_pid = 0;		/* never trace ourselves */
const volatile __u8 filter_comm_on = 0;
const volatile char filter_comm[IOT_COMM_LEN] = {};
const volatile __u64 filter_cgroup = 0;
const volatile __u32 filter_dev = 0;		/* kernel dev_t, 0 = any */
const volatile __u64 filter_ino = 0;		/* --file */
const volatile __u32 filter_ino_dev = 0;
const volatile __u64 filter_dir_ino = 0;	/* --dir */
const volatile __u32 filter_dir_dev = 0;
const volatile __u64 min_ns = 0;
const volatile __u32 sample_n = 0;		/* 1 in N requests, 0/1 = all */
const volatile __u64 wakeup_bytes = 64 * 1024;
const volatile __u8 virtio_derived = 0;		/* stamp DRIVER at rq_issue on virtio disks */
const volatile __u8 irq_on = 0;
const volatile __u8 emit_records = 1;		/* per-request records to user space */
const volatile __u8 kernel_hist = 0;		/* or: aggregate into histograms here */
const volatile __u8 uring_on = 0;		/* io_uring layer: look up the current request */
const volatile __u8 uring_reap_on = 0;		/* emit IOT_KIND_URING_REAP when a CQ head moves */
const volatile __u8 wb_on = 0;			/* pagecache layer: writeback attribution */
const volatile __u8 vq_key_on = 0;		/* virtio: note each request's virtio header GPA */
const volatile __u8 ubuf_on = 0;		/* fill iot_record.ubuf */
const volatile __u8 compact_on = 0;		/* records go out as struct iot_crec */
const volatile __u8 uring_cqe_abi = IOT_UCQE_REQ;	/* where io_uring_complete has the result */
const volatile __u8 uring_enter_on = 1;		/* io_uring_enter's entry is hooked: stamp it on requests */
/*
 * The tracepoint programs are the tp_btf ones (tracer.c picks one route for
 * all): their arguments are typed kernel pointers, read with plain loads
 * the verifier guards, not a bpf_probe_read_kernel() call per field. The
 * raw_tp programs, loaded when this is 0, keep BPF_CORE_READ: the verifier
 * knows this constant and never walks the branch they cannot take.
 */
const volatile __u8 btf_args = 0;

/*
 * BPF_CORE_READ(src, a, ...) for code run only by tracepoint programs of
 * the tp_btf/raw_tp pairs, and only on pointers they got from their
 * arguments (never a key cast back to a pointer).
 */
#define TP_READ(src, a, ...) (btf_args ? ___arrow(src, a, ##__VA_ARGS__) : BPF_CORE_READ(src, a, ##__VA_ARGS__))
const volatile __u64 page_offset_base_addr = 0;	/* &page_offset_base from kallsyms, 0 = not exported */

/* The direct map's base (x86_64 page_offset_base), once known; 0 until then. */
__u64 direct_map_base = 0;

/* Per-thread state for a synchronous system call in flight. */
struct iot_thread {
	struct iot_record rec;
	__u64 offcpu_start;
	__u64 seq;			/* enter ts: identifies this syscall for its bios */
};

/* How a bio is linked to whoever caused it. */
enum owner_kind { OWN_NONE, OWN_SYSCALL, OWN_URING, OWN_AIO };
enum rq_ts { RQ_INSERT, RQ_ISSUE, RQ_DRIVER, RQ_IRQ, RQ_TS_MAX };
#define DRIVER_AT_ISSUE 1	/* the driver saw the request before its issue: stamp it there */

struct iot_bio {
	__u64 key;			/* the bio pointer, as a plain number */
	__u64 ts_queue;
	__u64 ts_fs;			/* owner's fs stamp, for records emitted per bio */
	__u64 ts_enter;			/* owner's syscall enter (AIO) */
	__u64 owner_key;		/* tid (syscall, AIO) or io_kiocb pointer (uring) */
	__u64 owner_seq;
	__u64 cgroup_id;
	__u64 inode;
	__u64 sector;
	__u64 rq_ts[RQ_TS_MAX];		/* the request's stamps, kept in its head bio */
	__u64 vq_gpa;			/* and its virtio header's guest-physical address */
	__u64 ts_complete;
	__s64 result;
	__u32 pid, tid, actor_tid;
	__u32 dev;
	__u32 len;
	__u32 flags;
	__u16 op;
	__u8 owner_kind;
	__u8 driver;
	char comm[IOT_COMM_LEN];
};

/* Who dirtied an inode's pages, for attributing its writeback. */
struct iot_dirtier_key {
	__u64 ino;
	__u32 dev;
	__u32 pad;
};

struct iot_dirtier {
	__u64 cgroup_id;
	__u32 pid, tid;
	char comm[IOT_COMM_LEN];
};

struct iot_wb {
	__u64 ino;
	__u32 dev;
	__u32 pad;
};

/*
 * Per-thread state. An entry outlives its system call (seq = 0 marks it idle)
 * so that the next call reuses it in place instead of inserting and deleting
 * a hash element each time; LRU evicts the entries of threads long gone.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_THREADS);
	__type(key, __u32);
	__type(value, struct iot_thread);
} threads SEC(".maps");

/* The thread's state while it is in a traced system call, else NULL. */
static __always_inline struct iot_thread *thread_active(__u32 tid)
{
	struct iot_thread *t = bpf_map_lookup_elem(&threads, &tid);

	return t && t->seq ? t : NULL;
}

/*
 * The io_uring request a thread is issuing right now (inline issue), 0 for
 * none. A thread keeps its entry and has it set in place (cur_req_set()):
 * an insert and a delete per io_uring_enter cost more than the lookups;
 * LRU evicts the entries of threads long gone.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_THREADS);
	__type(key, __u32);
	__type(value, __u64);
} cur_req SEC(".maps");

static __always_inline void cur_req_set(__u32 tid, __u64 req)
{
	__u64 *v = bpf_map_lookup_elem(&cur_req, &tid);

	if (v)
		*v = req;
	else if (req)
		bpf_map_update_elem(&cur_req, &tid, &req, BPF_ANY);
}

/*
 * In-flight bios and io_uring requests, keyed by their kernel address. An
 * entry is not deleted when its request ends but marked free (its key field
 * 0), and the next bio or request at that address, which the kernel's caches
 * hand out again within microseconds, takes it over in place: a hash insert
 * and a delete cost 100-200 ns each (a bucket lock with interrupts off), a
 * lookup about 5. LRU evicts the entries of addresses no longer used.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_BIOS);
	__type(key, __u64);
	__type(value, struct iot_bio);
} bios SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_URING);
	__type(key, __u64);
	__type(value, struct iot_record);
} urings SEC(".maps");

/* The bio in flight at key, or NULL (none, or a free entry). */
static __always_inline struct iot_bio *bio_get(__u64 key)
{
	struct iot_bio *b = bpf_map_lookup_elem(&bios, &key);

	return b && b->key ? b : NULL;
}

/* The io_uring request in flight at key (its io_kiocb), or NULL. */
static __always_inline struct iot_record *uring_get(__u64 key)
{
	struct iot_record *r = bpf_map_lookup_elem(&urings, &key);

	return r && r->uring_req ? r : NULL;
}

/* The state of the bio at key becomes *b: in place when the address had an entry. 0 or -errno. */
static __always_inline int bio_put(__u64 key, const struct iot_bio *b)
{
	struct iot_bio *old = bpf_map_lookup_elem(&bios, &key);

	if (old) {
		__builtin_memcpy(old, b, sizeof(*b));
		return 0;
	}
	return bpf_map_update_elem(&bios, &key, b, BPF_NOEXIST);
}

/* Rings of traced processes: the CQ head last seen, for reap records. */
struct ring_head {
	__u32 head;
	__u32 pid;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, struct ring_head);
} ring_heads SEC(".maps");

/*
 * Link chains: head -> newest member, and member -> head. The tracepoint
 * names the chain's head on some kernels and its last member on others;
 * these turn either into "the one before".
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u64);
} link_last SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u64);
} link_head SEC(".maps");

/* Link chains: member -> the member after it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u64);
} link_next SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_DIRTIERS);
	__type(key, struct iot_dirtier_key);
	__type(value, struct iot_dirtier);
} dirtiers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct iot_wb);
} wb_threads SEC(".maps");

/* Filled by user space: disk dev_t -> driver, and irq number -> disk dev_t. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct iot_disk);
} disks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} irq_disk SEC(".maps");

/* The processes (tgid) traced when pid_set_on: filled and emptied by user space while tracing. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} pid_set SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IOT_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* One per-CPU value and its getter: scratch space too big for the BPF stack. */
#define PERCPU_SLOT(map, vtype, getter)					\
struct {								\
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);			\
	__uint(max_entries, 1);						\
	__type(key, __u32);						\
	__type(value, vtype);						\
} map SEC(".maps");							\
static __always_inline vtype *getter(void)				\
{									\
	__u32 zero = 0;							\
									\
	return bpf_map_lookup_elem(&map, &zero);			\
}

/* A record, with room for thread state. */
PERCPU_SLOT(scratch, struct iot_thread, scratch_thread)

/* Per-segment latency histograms, when aggregating in the kernel (--summary). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IOT_SEG_MAX);
	__type(key, __u32);
	__type(value, struct iot_khist);
} khists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);	/* resized by user space */
} events SEC(".maps");

static __always_inline void count_add(__u32 idx, __u64 v)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &idx);

	if (c)
		*c += v;
}

static __always_inline void count(__u32 idx)
{
	count_add(idx, 1);
}

static __always_inline __u32 kdev(__u32 major, __u32 minor)
{
	return (major << 20) | minor;
}

/* ---------- filters ---------- */

static __always_inline bool comm_matches(const char *comm)
{
	if (!filter_comm_on)
		return true;
	for (int i = 0; i < IOT_COMM_LEN; i++) {
		if (comm[i] != filter_comm[i])
			return false;
		if (!comm[i])
			break;
	}
	return true;
}

/* --pid, and the set of processes user space maintains (host mode: the QEMU processes). */
static __always_inline bool pid_matches(__u32 pid)
{
	if (filter_pid && pid != filter_pid)
		return false;
	if (pid_set_on && !bpf_map_lookup_elem(&pid_set, &pid))
		return false;
	return true;
}

/* The filters on a task besides its process (callers check pid_matches() first). */
static __always_inline bool thread_matches(__u32 tid, const char *comm, __u64 cgid)
{
	if (filter_tid && tid != filter_tid)
		return false;
	if (filter_cgroup && cgid != filter_cgroup)
		return false;
	return comm_matches(comm);
}

static __always_inline bool task_matches(__u32 pid, __u32 tid, const char *comm, __u64 cgid)
{
	return pid_matches(pid) && thread_matches(tid, comm, cgid);
}

static __always_inline bool sampled_out(void)
{
	return sample_n > 1 && (bpf_get_prandom_u32() % sample_n) != 0;
}

static __always_inline bool dir_matches(struct dentry *d)
{
	if (!filter_dir_ino)
		return true;
	for (int i = 0; i < DIR_WALK; i++) {
		struct dentry *parent = BPF_CORE_READ(d, d_parent);

		if (!parent || parent == d)
			return false;
		d = parent;
		if (BPF_CORE_READ(d, d_inode, i_ino) == filter_dir_ino &&
		    BPF_CORE_READ(d, d_sb, s_dev) == filter_dir_dev)
			return true;
	}
	return false;
}

/* ---------- record emission ---------- */

static __always_inline __u32 msb64(__u64 v)
{
	__u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) r += 1;
	return r;
}

/* Same buckets as user space's hist_bucket(): 16 per power of two. */
static __always_inline void khist_add(__u32 idx, __u64 v)
{
	struct iot_khist *h = bpf_map_lookup_elem(&khists, &idx);
	__u32 b, shift;

	if (!h)
		return;
	if (v < IOT_HIST_SUB) {
		b = v;
	} else {
		shift = msb64(v) - IOT_HIST_SUB_BITS;
		b = (shift + 1) * IOT_HIST_SUB + ((v >> shift) & (IOT_HIST_SUB - 1));
	}
	h->b[b & (IOT_HIST_BUCKETS - 1)]++;
	h->count++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
}

static __always_inline void khist_record(const struct iot_record *r, __u64 first, __u64 last)
{
	int prev = -1;

	for (int i = 0; i < IOT_TS_MAX; i++) {
		if (!r->ts[i])
			continue;
		if (prev >= 0 && r->ts[i] >= r->ts[prev]) {
			int seg = iot_seg_of(r, prev);

			if (seg >= 0)
				khist_add(seg, r->ts[i] - r->ts[prev]);
		}
		prev = i;
	}
	khist_add(IOT_SEG_TOTAL, last - first);
	if (r->offcpu_ns)
		khist_add(IOT_SEG_OFFCPU, r->offcpu_ns);
}

/* A record's sparse form is built here, then only its used words are output. */
#define SREC_WORDS 64
struct srec_buf {
	__u64 h[sizeof(struct iot_srec) / sizeof(__u64)];	/* struct iot_srec, its words in w */
	__u64 w[SREC_WORDS];
};

PERCPU_SLOT(srec, struct srec_buf, srec_get)

/* Field j of the sparse form, when v is not its default. */
#define SREC_FIELD(j, v, dflt)					\
	do {							\
		if ((fields & (1u << (j))) && (v) != (dflt)) {	\
			s->w[n & (SREC_WORDS - 1)] = (v);	\
			n++;					\
			fm |= 1u << (j);			\
		}						\
	} while (0)

/*
 * Write r to the ring buffer in its sparse form (struct iot_srec); 0 or
 * -errno. A global function: the verifier checks it once, not once per
 * path of every caller (each present stamp or field is a branch).
 */
__noinline int emit_sparse(const struct iot_record *r, __u64 flags)
{
	struct srec_buf *s = srec_get();
	struct iot_srec *h;
	__u32 fields = compact_on ? IOT_SREC_COMPACT_FIELDS : ~0u, keep = 0xffff, n = 0, fm = 0, tm = 0;
	__u64 size;

	if (!s || !r)
		return -1;
	if (compact_on) {
		int first = iot_first_slot(r), last = iot_last_slot(r);

		keep = 1u << IOT_TS_BIO_QUEUE | 1u << IOT_TS_RQ_ISSUE |
		       1u << (r->ts[IOT_TS_RQ_COMPLETE] ? IOT_TS_RQ_COMPLETE : IOT_TS_BIO_END);
		if (first >= 0)
			keep |= 1u << first | 1u << last;
	}
	for (int i = 0; i < IOT_TS_MAX; i++) {
		if (!r->ts[i] || !(keep & (1u << i)))
			continue;
		s->w[n & (SREC_WORDS - 1)] = r->ts[i];
		n++;
		tm |= 1u << i;
	}
	SREC_FIELD(IOT_SF_CGROUP, r->cgroup_id, 0);
	SREC_FIELD(IOT_SF_INODE, r->inode, 0);
	SREC_FIELD(IOT_SF_OFFSET, r->offset, IOT_UNKNOWN_U64);
	SREC_FIELD(IOT_SF_SECTOR, r->sector, IOT_UNKNOWN_U64);
	SREC_FIELD(IOT_SF_OFFCPU, r->offcpu_ns, 0);
	SREC_FIELD(IOT_SF_USER_DATA, r->user_data, 0);
	SREC_FIELD(IOT_SF_VQ_GPA, r->vq_gpa, 0);
	SREC_FIELD(IOT_SF_URING_CTX, r->uring_ctx, 0);
	SREC_FIELD(IOT_SF_URING_REQ, r->uring_req, 0);
	SREC_FIELD(IOT_SF_URING_LINK, r->uring_link, 0);
	SREC_FIELD(IOT_SF_UBUF, r->ubuf, 0);
	SREC_FIELD(IOT_SF_RESULT, (__u64)r->result, 0);
	SREC_FIELD(IOT_SF_ACTOR, (__u64)r->bio_bytes << 32 | r->actor_tid, r->tid);
	SREC_FIELD(IOT_SF_COUNTS, (__u64)r->pc_dirtied << 48 | (__u64)r->pc_misses << 32 |
				  (__u64)r->pc_pages << 16 | r->nr_bios, 0);
	SREC_FIELD(IOT_SF_CQE_SEQ, (__u64)r->driver << 32 | r->cqe_seq, 0);
	if (!compact_on) {
		__u32 k = n & (SREC_WORDS - 1);

		if (k <= SREC_WORDS - 2) {
			__builtin_memcpy(&s->w[k], r->comm, IOT_COMM_LEN);
			n = k + 2;
			fm |= 1u << IOT_SF_COMM;
		}
	}
	h = (struct iot_srec *)s->h;
	h->ts_mask = tm;
	h->f_mask = fm;
	h->kind = r->kind;
	h->op = r->op;
	h->syscall = r->syscall;
	h->uring_opcode = r->uring_opcode;
	h->pid = r->pid;
	h->tid = r->tid;
	h->dev = r->dev;
	h->len = r->len;
	h->flags = r->flags;
	h->pad = 0;
	size = sizeof(s->h) + (__u64)n * sizeof(__u64);
	if (size > sizeof(*s))
		return -1;
	return bpf_ringbuf_output(&events, s, size, flags);
}

static __always_inline void emit(struct iot_record *r)
{
	__u64 flags, first = 0, last = 0;

	/* The span is needed only to filter or to aggregate: records carry their stamps. */
	if (min_ns || kernel_hist) {
		first = iot_ts_at(r, iot_first_slot(r));
		last = iot_ts_at(r, iot_last_slot(r));
	}
	if (min_ns && last - first < min_ns)
		return;
	if (r->kind >= IOT_KIND_SYSCALL && r->kind <= IOT_KIND_BIO)
		count(IOT_CNT_REQ_SYSCALL + r->kind - IOT_KIND_SYSCALL);
	if (kernel_hist)
		khist_record(r, first, last);
	if (!emit_records)
		return;
	if (sample_n > 1)
		r->flags |= IOT_F_SAMPLED;
	/* Wake the reader only once a batch is waiting: a wakeup per record costs more than the record. */
	flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ?
		BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	if (emit_sparse(r, flags))
		count(IOT_CNT_LOST);
	else
		count(IOT_CNT_EMITTED);
}

static __always_inline void set_min(__u64 *slot, __u64 v)
{
	if (v && (!*slot || v < *slot))
		*slot = v;
}

static __always_inline void set_max(__u64 *slot, __u64 v)
{
	if (v > *slot)
		*slot = v;
}

/* Fold one finished bio into the record of the request that caused it. */
static __always_inline void fold_bio(struct iot_record *r, const struct iot_bio *b)
{
	/* A record of several requests is keyed by the first one issued. */
	if (b->vq_gpa && (!r->vq_gpa || b->rq_ts[RQ_ISSUE] < r->ts[IOT_TS_RQ_ISSUE]))
		r->vq_gpa = b->vq_gpa;
	set_min(&r->ts[IOT_TS_BIO_QUEUE], b->ts_queue);
	/* A page-cache stamp taken while this I/O was under way is not on the way to it (see stamp_pc). */
	if (r->ts[IOT_TS_BIO_QUEUE] && r->ts[IOT_TS_PAGECACHE] > r->ts[IOT_TS_BIO_QUEUE])
		r->ts[IOT_TS_PAGECACHE] = 0;
	set_min(&r->ts[IOT_TS_RQ_INSERT], b->rq_ts[RQ_INSERT]);
	set_min(&r->ts[IOT_TS_RQ_ISSUE], b->rq_ts[RQ_ISSUE]);
	set_min(&r->ts[IOT_TS_DRIVER], b->rq_ts[RQ_DRIVER]);
	set_max(&r->ts[IOT_TS_IRQ], b->rq_ts[RQ_IRQ]);
	if (b->flags & IOT_F_RQ_UNKNOWN)
		set_max(&r->ts[IOT_TS_BIO_END], b->ts_complete);
	else
		set_max(&r->ts[IOT_TS_RQ_COMPLETE], b->ts_complete);
	if (r->sector == IOT_UNKNOWN_U64 || b->sector < r->sector)
		r->sector = b->sector;
	if (!r->dev)
		r->dev = b->dev;
	r->nr_bios++;
	r->bio_bytes += b->len;
	r->flags |= b->flags & (IOT_F_SPLIT | IOT_F_MERGED | IOT_F_REMAP | IOT_F_REQUEUED |
				IOT_F_ERROR | IOT_F_SYNC | IOT_F_FUA | IOT_F_PREFLUSH | IOT_F_RQ_UNKNOWN);
	if (b->driver)
		r->driver = b->driver;
	if (b->result && !r->result)
		r->result = b->result;
	if (b->actor_tid != r->tid)
		r->actor_tid = b->actor_tid;
}

static __always_inline struct iot_record *scratch_rec(void)
{
	struct iot_thread *t = scratch_thread();

	return t ? &t->rec : NULL;
}

/* Emit a record for a bio whose owner is not (or no longer) there. */
static __always_inline void emit_bio(const struct iot_bio *b, __u16 kind, __u32 extra_flags)
{
	struct iot_record *r = scratch_rec();

	if (!r)
		return;
	__builtin_memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->sector = IOT_UNKNOWN_U64;
	r->offset = IOT_UNKNOWN_U64;
	r->pid = b->pid;
	r->tid = b->tid;
	r->actor_tid = b->actor_tid;
	r->cgroup_id = b->cgroup_id;
	r->inode = b->inode;
	r->op = b->op;
	r->len = b->len;
	r->flags = b->flags | extra_flags;
	r->ts[IOT_TS_SYSCALL_ENTER] = b->ts_enter;
	r->ts[IOT_TS_FS] = b->ts_fs;
	__builtin_memcpy(r->comm, b->comm, IOT_COMM_LEN);
	fold_bio(r, b);
	emit(r);
}

/*
 * Hand a finished bio to its owner, or emit it on its own. A global function:
 * the verifier checks it once, not once per bio of every request walk.
 */
__noinline int finish_bio(__u64 bio_key)
{
	struct iot_bio *b = bio_get(bio_key);
	struct iot_thread *t;
	struct iot_record *u;
	__u32 tid;

	if (!b)
		return 0;
	switch (b->owner_kind) {
	case OWN_SYSCALL:
		tid = b->owner_key;
		t = thread_active(tid);
		if (t && t->seq == b->owner_seq) {
			fold_bio(&t->rec, b);
			break;
		}
		emit_bio(b, IOT_KIND_BIO, IOT_F_OWNER_GONE);
		break;
	case OWN_URING:
		u = uring_get(b->owner_key);
		if (u) {
			fold_bio(u, b);
			break;
		}
		emit_bio(b, IOT_KIND_BIO, IOT_F_OWNER_GONE);
		break;
	case OWN_AIO:
		emit_bio(b, IOT_KIND_AIO, 0);
		break;
	default:
		emit_bio(b, IOT_KIND_BIO, 0);
	}
	b->key = 0;	/* free, for the next bio at this address */
	return 0;
}

/* ---------- syscall layer ---------- */

static __always_inline struct file *fd_file(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *f = NULL;

	if (!fdt || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_core_read(&f, sizeof(f), &fds[fd]);
	return f;
}

/* The first data buffer of an I/O: buf itself, or the base of the first of the iovecs at buf. */
static __always_inline __u64 first_buf(__u64 buf, bool vec)
{
	__u64 base = 0;

	if (!ubuf_on || !buf)
		return 0;
	if (!vec)
		return buf;
	bpf_probe_read_user(&base, sizeof(base), (void *)buf);	/* struct iovec: iov_base first */
	return base;
}

static __always_inline void sys_enter(__u16 sys, __u16 op, long fd, __u64 pos, __u64 len, bool has_fd,
				      __u64 buf, bool vec)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32, tid = (__u32)id;
	struct iot_thread *t;
	struct iot_record *r;
	char comm[IOT_COMM_LEN];
	__u64 cgid, ino = 0, offset = pos;
	__u32 dev = 0, flags = 0;

	if (pid == self_pid)
		return;
	if (!pid_matches(pid))
		return;
	if (filter_tid && tid != filter_tid)
		return;
	if (has_fd) {
		struct file *f = fd_file(fd);
		struct inode *inode;
		__u32 mode;

		if (!f)
			return;
		inode = BPF_CORE_READ(f, f_inode);
		mode = BPF_CORE_READ(inode, i_mode) & S_IFMT;
		/* Storage only: pipes, sockets and ttys are not our business. */
		if (mode == S_IFREG)
			dev = BPF_CORE_READ(inode, i_sb, s_dev);
		else if (mode == S_IFBLK)
			dev = BPF_CORE_READ(inode, i_rdev);
		else
			return;
		ino = BPF_CORE_READ(inode, i_ino);
		if (filter_dev && dev != filter_dev)
			return;
		if (filter_ino && (ino != filter_ino || dev != filter_ino_dev))
			return;
		if (filter_dir_ino && !dir_matches(BPF_CORE_READ(f, f_path.dentry)))
			return;
		if (pos == IOT_UNKNOWN_U64)
			offset = BPF_CORE_READ(f, f_pos);
		if (BPF_CORE_READ(f, f_flags) & 040000 /* O_DIRECT */)
			flags |= IOT_F_DIRECT;
	} else if (filter_ino || filter_dir_ino || filter_dev) {
		/* io_submit / io_getevents / io_uring_enter: no file to check here. */
		if (sys != IOT_SYS_IO_SUBMIT && sys != IOT_SYS_IO_URING_ENTER)
			return;
	}
	bpf_get_current_comm(comm, sizeof(comm));
	cgid = bpf_get_current_cgroup_id();
	if (!thread_matches(tid, comm, cgid)) {
		count(IOT_CNT_FILTERED);
		return;
	}
	if (sampled_out())
		return;

	t = bpf_map_lookup_elem(&threads, &tid);
	if (!t) {
		struct iot_thread *z = scratch_thread();

		if (!z)
			return;
		__builtin_memset(z, 0, sizeof(*z));
		bpf_map_update_elem(&threads, &tid, z, BPF_NOEXIST);
		t = bpf_map_lookup_elem(&threads, &tid);
		if (!t) {
			count(IOT_CNT_STATE_FULL);
			return;
		}
	}
	__builtin_memset(&t->rec, 0, sizeof(t->rec));
	t->offcpu_start = 0;
	r = &t->rec;
	r->kind = IOT_KIND_SYSCALL;
	r->syscall = sys;
	r->op = op;
	r->pid = pid;
	r->tid = tid;
	r->actor_tid = tid;
	r->cgroup_id = cgid;
	r->dev = dev;
	r->inode = ino;
	r->offset = offset;
	r->sector = IOT_UNKNOWN_U64;
	r->len = len;
	r->flags = flags;
	r->ubuf = first_buf(buf, vec);
	r->ts[IOT_TS_SYSCALL_ENTER] = bpf_ktime_get_ns();
	__builtin_memcpy(r->comm, comm, IOT_COMM_LEN);
	t->seq = r->ts[IOT_TS_SYSCALL_ENTER];
}

static __always_inline void sys_exit(long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct iot_thread *t = thread_active(tid);

	if (!t)
		return;
	t->rec.ts[IOT_TS_SYSCALL_EXIT] = bpf_ktime_get_ns();
	t->rec.result = ret;
	switch (t->rec.syscall) {
	case IOT_SYS_IO_URING_ENTER:
		/* Control calls are counted and timed; their requests are the records. */
		if (uring_on)
			cur_req_set(tid, 0);
		count(IOT_CNT_CALL_IO_URING_ENTER);
		count_add(IOT_CNT_NS_IO_URING_ENTER, t->rec.ts[IOT_TS_SYSCALL_EXIT] - t->seq);
		break;
	case IOT_SYS_IO_SUBMIT:
		count(IOT_CNT_CALL_IO_SUBMIT);
		count_add(IOT_CNT_NS_IO_SUBMIT, t->rec.ts[IOT_TS_SYSCALL_EXIT] - t->seq);
		break;
	default:
		if (ret > 0)
			t->rec.len = ret;
		emit(&t->rec);
	}
	t->seq = 0;
}

/* What args[1] of a call is: */
#define BUF_NONE 0	/* not a data buffer */
#define BUF_FLAT 1	/* the buffer */
#define BUF_IOV 2	/* an iovec array */
#define SYS_TP_B(name, sys, op, fdarg, posarg, lenarg, hasfd, buf)			\
SEC("tracepoint/syscalls/sys_enter_" #name)						\
int sys_enter_##name(struct trace_event_raw_sys_enter *ctx)				\
{											\
	sys_enter(sys, op, (long)ctx->args[fdarg], posarg, lenarg, hasfd,		\
		  (buf) != BUF_NONE ? ctx->args[1] : 0, (buf) == BUF_IOV);		\
	return 0;									\
}											\
SEC("tracepoint/syscalls/sys_exit_" #name)						\
int sys_exit_##name(struct trace_event_raw_sys_exit *ctx)				\
{											\
	sys_exit(ctx->ret);								\
	return 0;									\
}

#define SYS_TP(name, sys, op, fdarg, posarg, lenarg, hasfd) SYS_TP_B(name, sys, op, fdarg, posarg, lenarg, hasfd, BUF_NONE)
#define POS_F IOT_UNKNOWN_U64	/* position comes from the file */
SYS_TP_B(read, IOT_SYS_READ, IOT_OP_READ, 0, POS_F, ctx->args[2], true, BUF_FLAT)
SYS_TP_B(write, IOT_SYS_WRITE, IOT_OP_WRITE, 0, POS_F, ctx->args[2], true, BUF_FLAT)
SYS_TP_B(pread64, IOT_SYS_PREAD64, IOT_OP_READ, 0, ctx->args[3], ctx->args[2], true, BUF_FLAT)
SYS_TP_B(pwrite64, IOT_SYS_PWRITE64, IOT_OP_WRITE, 0, ctx->args[3], ctx->args[2], true, BUF_FLAT)
SYS_TP_B(readv, IOT_SYS_READV, IOT_OP_READ, 0, POS_F, 0, true, BUF_IOV)
SYS_TP_B(writev, IOT_SYS_WRITEV, IOT_OP_WRITE, 0, POS_F, 0, true, BUF_IOV)
SYS_TP_B(preadv, IOT_SYS_PREADV, IOT_OP_READ, 0, ctx->args[3], 0, true, BUF_IOV)
SYS_TP_B(pwritev, IOT_SYS_PWRITEV, IOT_OP_WRITE, 0, ctx->args[3], 0, true, BUF_IOV)
SYS_TP_B(preadv2, IOT_SYS_PREADV2, IOT_OP_READ, 0, ((long)ctx->args[3] == -1 ? POS_F : ctx->args[3]), 0, true, BUF_IOV)
SYS_TP_B(pwritev2, IOT_SYS_PWRITEV2, IOT_OP_WRITE, 0, ((long)ctx->args[3] == -1 ? POS_F : ctx->args[3]), 0, true, BUF_IOV)
SYS_TP(fsync, IOT_SYS_FSYNC, IOT_OP_FSYNC, 0, 0, 0, true)
SYS_TP(fdatasync, IOT_SYS_FDATASYNC, IOT_OP_FSYNC, 0, 0, 0, true)
SYS_TP(sync_file_range, IOT_SYS_SYNC_FILE_RANGE, IOT_OP_FSYNC, 0, ctx->args[1], ctx->args[2], true)
/* aio layer */
SYS_TP(io_submit, IOT_SYS_IO_SUBMIT, IOT_OP_SUBMIT, 0, 0, ctx->args[1], false)
/* io_getevents only reaps: counted at exit, no state. */
SEC("tracepoint/syscalls/sys_exit_io_getevents")
int sys_exit_io_getevents(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	char comm[IOT_COMM_LEN];

	if (!pid_matches(id >> 32))
		return 0;
	if (filter_tid && (__u32)id != filter_tid)
		return 0;
	bpf_get_current_comm(comm, sizeof(comm));
	if (!thread_matches((__u32)id, comm, filter_cgroup ? bpf_get_current_cgroup_id() : 0))
		return 0;
	count(IOT_CNT_CALL_IO_GETEVENTS);
	return 0;
}
/* io_uring layer */
SYS_TP(io_uring_enter, IOT_SYS_IO_URING_ENTER, IOT_OP_SUBMIT, 0, 0, ctx->args[1], false)
/* Or (tracer_opts.uring_enter_exit_only) only this: the thread's block I/O is no longer its last request's. */
SEC("tracepoint/syscalls/sys_exit_io_uring_enter")
int sys_exit_io_uring_enter_only(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	cur_req_set(tid, 0);
	return 0;
}

/* ---------- owner lookup shared by fs, page cache and block ---------- */

/* The record that the current thread is working for, if any. */
static __always_inline struct iot_record *current_owner_rec(__u32 tid, __u64 **ret_req)
{
	struct iot_thread *t;
	__u64 *req = uring_on ? bpf_map_lookup_elem(&cur_req, &tid) : NULL;

	if (req && *req) {
		struct iot_record *u = uring_get(*req);

		if (u) {
			*ret_req = req;
			return u;
		}
	}
	t = thread_active(tid);
	if (t && t->rec.syscall != IOT_SYS_IO_URING_ENTER)
		return &t->rec;
	return NULL;
}

/* ---------- fs and page cache layers ---------- */

static __always_inline void stamp_fs(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *req = NULL;
	struct iot_record *r = current_owner_rec(tid, &req);

	if (r && !r->ts[IOT_TS_FS])
		r->ts[IOT_TS_FS] = bpf_ktime_get_ns();
}

enum pc_event { PC_LOOKUP, PC_MISS, PC_DIRTY };

static __always_inline void stamp_pc(int ev, __u32 pages)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *req = NULL;
	struct iot_record *r = current_owner_rec(tid, &req);

	if (!r)
		return;
	/*
	 * The stamp marks the page cache on the way to the device. A lookup
	 * after the request's block I/O began (a direct write invalidating
	 * cached pages, a fallback to buffered I/O) is counted, not stamped:
	 * it would put the page cache after the device in the request's path.
	 */
	if (!r->ts[IOT_TS_PAGECACHE] && !r->ts[IOT_TS_BIO_QUEUE])
		r->ts[IOT_TS_PAGECACHE] = bpf_ktime_get_ns();
	if (ev == PC_LOOKUP)
		r->pc_pages += pages;
	else if (ev == PC_MISS)
		r->pc_misses += pages;
	else
		r->pc_dirtied += pages;
}

/* fs: fentry, or kprobe, on the VFS entry points, where the kernel allows them. */
#define VFS_ENTRY(fn)								\
SEC("fentry/" #fn) int BPF_PROG(fentry_##fn) { stamp_fs(); return 0; }	\
SEC("kprobe/" #fn) int BPF_KPROBE(kprobe_##fn) { stamp_fs(); return 0; }

VFS_ENTRY(vfs_read)
VFS_ENTRY(vfs_write)
VFS_ENTRY(vfs_iter_read)
VFS_ENTRY(vfs_iter_write)
VFS_ENTRY(vfs_fsync_range)

/* Two routes for one tracepoint body: tp_btf first, raw_tp where BTF attach is refused. */
#define TP2(tp, call, ...)							\
SEC("tp_btf/" #tp) int BPF_PROG(btf_##tp, ##__VA_ARGS__) { call; return 0; }	\
SEC("raw_tp/" #tp) int BPF_PROG(raw_##tp, ##__VA_ARGS__) { call; return 0; }

/* The same, for hooks whose first pointer argument the kernel may pass as NULL. */
#define TP2_NN(tp, ptr, call, ...)							\
SEC("tp_btf/" #tp) int BPF_PROG(btf_##tp, ##__VA_ARGS__) { if (ptr) call; return 0; }	\
SEC("raw_tp/" #tp) int BPF_PROG(raw_##tp, ##__VA_ARGS__) { if (ptr) call; return 0; }

/* fs: tracepoints at the file system entry where no VFS probe is possible. */
TP2(iomap_dio_rw_begin, stamp_fs(), struct kiocb *iocb)
TP2(ext4_da_write_begin, stamp_fs(), struct inode *inode)
TP2(ext4_write_begin, stamp_fs(), struct inode *inode)
TP2(ext4_sync_file_enter, stamp_fs(), struct file *file)
TP2(xfs_file_buffered_read, stamp_fs(), struct kiocb *iocb)
TP2(xfs_file_buffered_write, stamp_fs(), struct kiocb *iocb)
TP2(xfs_file_direct_read, stamp_fs(), struct kiocb *iocb)
TP2(xfs_file_direct_write, stamp_fs(), struct kiocb *iocb)

/* pagecache */
static __always_inline void on_get_pages(unsigned long index, unsigned long last)
{
	stamp_pc(PC_LOOKUP, last >= index ? last - index + 1 : 1);
}

static __always_inline void on_dirty_folio(struct address_space *mapping)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct iot_thread *t = thread_active(tid);
	struct inode *host;
	struct iot_dirtier_key k = {};
	struct iot_dirtier d = {}, *old;

	stamp_pc(PC_DIRTY, 1);
	/*
	 * Only a traced syscall (which passed the filters) becomes an inode's
	 * dirtier; and iotracer itself, so that the writeback of its own output
	 * is not traced (it would feed itself).
	 */
	if (!t && (id >> 32) != self_pid)
		return;
	host = BPF_CORE_READ(mapping, host);
	k.ino = BPF_CORE_READ(host, i_ino);
	k.dev = BPF_CORE_READ(host, i_sb, s_dev);
	old = bpf_map_lookup_elem(&dirtiers, &k);
	if (old && old->tid == tid)
		return;
	d.pid = id >> 32;
	d.tid = tid;
	if (t) {
		d.cgroup_id = t->rec.cgroup_id;
		__builtin_memcpy(d.comm, t->rec.comm, IOT_COMM_LEN);
	}
	bpf_map_update_elem(&dirtiers, &k, &d, BPF_ANY);
}

TP2(mm_filemap_get_pages, on_get_pages(index, last), struct address_space *m, unsigned long index, unsigned long last)
TP2(mm_filemap_add_to_page_cache, stamp_pc(PC_MISS, 1), struct folio *folio)
TP2_NN(writeback_dirty_folio, mapping, on_dirty_folio(mapping), struct folio *folio, struct address_space *mapping)

/* Writeback of one inode: the bios issued meanwhile belong to its dirtier. */
static __always_inline void on_wb_start(struct inode *inode)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct iot_wb w = {};

	w.ino = BPF_CORE_READ(inode, i_ino);
	w.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	bpf_map_update_elem(&wb_threads, &tid, &w, BPF_ANY);
}

static __always_inline void on_wb_end(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	bpf_map_delete_elem(&wb_threads, &tid);
}

TP2_NN(writeback_single_inode_start, inode, on_wb_start(inode), struct inode *inode)
TP2(writeback_single_inode, on_wb_end(), struct inode *inode)

/* ---------- sched layer: off-CPU time of threads waiting for their I/O ---------- */

/*
 * Only waits for I/O count (io_schedule() sets in_iowait), which also spares
 * the map lookups on the many switches of threads that wait for nothing of ours.
 */
static __always_inline void on_switch(struct task_struct *prev, struct task_struct *next, __u32 prev_state,
				      bool prev_iowait, bool next_iowait)
{
	struct iot_thread *t;
	__u64 now = 0;

	if (prev_state && prev_iowait) {
		t = thread_active(BPF_CORE_READ(prev, pid));
		if (t) {
			now = bpf_ktime_get_ns();
			t->offcpu_start = now;
		}
	}
	if (!next_iowait)
		return;
	t = thread_active(BPF_CORE_READ(next, pid));
	if (t && t->offcpu_start) {
		if (!now)
			now = bpf_ktime_get_ns();
		t->rec.offcpu_ns += now - t->offcpu_start;
		t->offcpu_start = 0;
	}
}

/* Runs on every context switch: tp_btf reads the task fields directly, without helper calls. */
SEC("tp_btf/sched_switch")
int BPF_PROG(btf_sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	if (prev && next)
		on_switch(prev, next, prev_state, prev_state && BPF_CORE_READ_BITFIELD(prev, in_iowait),
			  BPF_CORE_READ_BITFIELD(next, in_iowait));
	return 0;
}

SEC("raw_tp/sched_switch")
int BPF_PROG(raw_sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	on_switch(prev, next, prev_state, prev_state && BPF_CORE_READ_BITFIELD_PROBED(prev, in_iowait),
		  BPF_CORE_READ_BITFIELD_PROBED(next, in_iowait));
	return 0;
}

/* ---------- block layer ---------- */

static __always_inline __u16 bio_op(__u32 opf, __u32 *flags)
{
	__u32 op = opf & 0xff;

	if (opf & (1u << bpf_core_enum_value(enum req_flag_bits, __REQ_SYNC)))
		*flags |= IOT_F_SYNC;
	if (opf & (1u << bpf_core_enum_value(enum req_flag_bits, __REQ_FUA)))
		*flags |= IOT_F_FUA;
	if (opf & (1u << bpf_core_enum_value(enum req_flag_bits, __REQ_PREFLUSH)))
		*flags |= IOT_F_PREFLUSH;
	switch (op) {
	case 0: return IOT_OP_READ;
	case 1: return IOT_OP_WRITE;
	case 2: return IOT_OP_FLUSH;
	case 3: return IOT_OP_DISCARD;
	default: return IOT_OP_OTHER;
	}
}

static __always_inline bool is_kthread(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	return BPF_CORE_READ(task, flags) & 0x00200000; /* PF_KTHREAD */
}

static __always_inline void on_bio_queue(struct bio *bio)
{
	__u64 id = bpf_get_current_pid_tgid(), key = (__u64)bio;
	__u32 tid = (__u32)id, dev;
	struct iot_bio b = {};
	struct iot_record *r;
	struct iot_wb *w;
	__u64 *req = NULL;

	/* The key, not the pointer: a helper reading it scrubs its stack slot to a number. */
	barrier_var(key);
	dev = TP_READ(bio, bi_bdev, bd_dev);
	if (filter_dev && dev != filter_dev)
		return;
	b.key = key;
	b.ts_queue = bpf_ktime_get_ns();
	b.dev = dev;
	b.sector = TP_READ(bio, bi_iter.bi_sector);
	b.len = TP_READ(bio, bi_iter.bi_size);
	b.op = bio_op(TP_READ(bio, bi_opf), &b.flags);
	b.actor_tid = tid;

	r = current_owner_rec(tid, &req);
	if (r) {
		b.owner_kind = req ? OWN_URING : (r->syscall == IOT_SYS_IO_SUBMIT ? OWN_AIO : OWN_SYSCALL);
		b.owner_key = req ? *req : tid;
		if (b.owner_kind == OWN_SYSCALL || b.owner_kind == OWN_AIO) {
			struct iot_thread *t = (struct iot_thread *)r;

			b.owner_seq = t->seq;
		}
		b.pid = r->pid;
		b.tid = r->tid;
		b.cgroup_id = r->cgroup_id;
		b.inode = r->inode;
		b.ts_fs = r->ts[IOT_TS_FS];
		b.ts_enter = r->ts[IOT_TS_SYSCALL_ENTER];
		__builtin_memcpy(b.comm, r->comm, IOT_COMM_LEN);
	} else {
		struct iot_dirtier *d = NULL;
		struct iot_dirtier_key k = {};

		w = wb_on ? bpf_map_lookup_elem(&wb_threads, &tid) : NULL;
		if (w) {
			k.ino = w->ino;
			k.dev = w->dev;
			d = bpf_map_lookup_elem(&dirtiers, &k);
		}
		if (d && d->pid == self_pid)
			return;
		/* A dirtier passed the filters when it dirtied; a process since taken out of the set is not traced. */
		if (d && pid_set_on && !pid_matches(d->pid))
			return;
		if (d) {
			b.pid = d->pid;
			b.tid = d->tid;
			b.cgroup_id = d->cgroup_id;
			b.inode = k.ino;
			b.flags |= IOT_F_ATTR_WRITEBACK;
			__builtin_memcpy(b.comm, d->comm, IOT_COMM_LEN);
		} else {
			if (filter_ino || filter_dir_ino)
				return;	/* no file known for this bio */
			b.pid = id >> 32;
			b.tid = tid;
			b.cgroup_id = bpf_get_current_cgroup_id();
			bpf_get_current_comm(b.comm, sizeof(b.comm));
			if (b.pid == self_pid)
				return;
			if (w)
				b.inode = w->ino;
			if (is_kthread())
				b.flags |= IOT_F_ATTR_NONE;
			else if (b.comm[0] == 'i' && b.comm[1] == 'o' && b.comm[2] == 'u' && b.comm[3] == '-')
				b.flags |= IOT_F_ATTR_IOWQ;	/* iou-wrk-N: a thread of the ring's process */
			if (!task_matches(b.pid, b.tid, b.comm, b.cgroup_id)) {
				count(IOT_CNT_FILTERED);
				return;
			}
			if (sampled_out())
				return;
		}
	}
	if (bio_put(key, &b))
		count(IOT_CNT_STATE_FULL);
}

static __always_inline void bio_flag(struct bio *bio, __u32 flag)
{
	struct iot_bio *b = bio_get((__u64)bio);

	if (b)
		b->flags |= flag;
}

/* A split bio is the front part of its parent; it inherits the parent's owner. */
static __always_inline void on_split(struct bio *split)
{
	__u64 parent = (__u64)BPF_CORE_READ(split, bi_private), key = (__u64)split;
	struct iot_bio *p = bio_get(parent);
	struct iot_bio b;

	if (!p)
		return;
	p->flags |= IOT_F_SPLIT;
	__builtin_memcpy(&b, p, sizeof(b));
	b.key = key;
	b.sector = BPF_CORE_READ(split, bi_iter.bi_sector);
	b.len = BPF_CORE_READ(split, bi_iter.bi_size);
	/* The parent continues with what is left after the split. */
	p->sector = b.sector + (b.len >> 9);
	p->len = p->len > b.len ? p->len - b.len : 0;
	if (bio_put(key, &b))
		count(IOT_CNT_STATE_FULL);
}

static __always_inline __u32 rq_dev(struct request *rq)
{
	struct gendisk *disk = TP_READ(rq, q, disk);

	return kdev(TP_READ(disk, major), TP_READ(disk, first_minor));
}

/*
 * A request's own stamps live in the state of the bio at its head: no
 * per-request map, one lookup per hook. Requests without a tracked head bio
 * are not ours.
 */
static __always_inline struct iot_bio *rq_head(struct request *rq)
{
	__u64 key = (__u64)BPF_CORE_READ(rq, bio);

	return key ? bio_get(key) : NULL;
}

/* rq_head() for the block tracepoints' own request. */
static __always_inline struct iot_bio *tp_rq_head(struct request *rq)
{
	__u64 key = (__u64)TP_READ(rq, bio);

	return key ? bio_get(key) : NULL;
}

static __always_inline void on_rq_insert(struct request *rq)
{
	struct iot_bio *b = tp_rq_head(rq);

	if (b && !b->rq_ts[RQ_INSERT])
		b->rq_ts[RQ_INSERT] = bpf_ktime_get_ns();
}

/*
 * The key of a virtio-blk request on both sides of the VM boundary: QEMU pops
 * it as a virtqueue element whose first "out" descriptor is the guest-physical
 * address of its struct virtio_blk_outhdr, the first member of struct
 * virtblk_req, which is the request's blk-mq pdu (blk_mq_rq_to_pdu(): right
 * after struct request). The direct map turns its address into the GPA.
 */

/* Before 6.18, which generalised the DMA mapping of virtio rings to "map" ops, the flag was use_dma_api. */
struct vring_virtqueue___dma {
	bool use_dma_api;
} __attribute__((preserve_access_index));

#define DIRECT_MAP_NONE 1	/* direct_map_base: tried, not to be known here */

/*
 * Where page_offset_base is not exported (no CONFIG_KALLSYMS_ALL): a
 * virtqueue the ring driver maps without the DMA API lives in the direct map
 * and the driver keeps its physical address, handed to the device; the two
 * differ by the base.
 */
static __always_inline __u64 vring_direct_map_base(struct request *rq)
{
	struct virtio_blk *vblk;
	struct vring_virtqueue *vvq;
	struct virtqueue *vq;
	__u64 va, pa;
	bool mapped;

	if (!bpf_core_type_exists(struct virtio_blk) || !bpf_core_type_exists(struct vring_virtqueue))
		return 0;
	vblk = BPF_CORE_READ(rq, q, queuedata);
	if (!vblk)
		return 0;
	vq = BPF_CORE_READ(vblk, vqs, vq);
	if (!vq)
		return 0;
	vvq = (void *)vq - bpf_core_field_offset(struct vring_virtqueue, vq);
	if (bpf_core_field_exists(vvq->use_map_api))
		mapped = BPF_CORE_READ(vvq, use_map_api);
	else if (bpf_core_field_exists(((struct vring_virtqueue___dma *)vvq)->use_dma_api))
		mapped = BPF_CORE_READ((struct vring_virtqueue___dma *)vvq, use_dma_api);
	else
		return 0;
	if (mapped)
		return 0;	/* DMA addresses, not physical ones (IOMMU, confidential guest) */
	if (BPF_CORE_READ(vvq, packed_ring)) {
		va = (__u64)BPF_CORE_READ(vvq, packed.vring.desc);
		pa = BPF_CORE_READ(vvq, packed.ring_dma_addr);
	} else {
		va = (__u64)BPF_CORE_READ(vvq, split.vring.desc);
		pa = BPF_CORE_READ(vvq, split.queue_dma_addr);
	}
	return va - pa;
}

static __always_inline __u64 virtio_hdr_gpa(struct request *rq)
{
	__u64 base = direct_map_base, hdr;

	if (!base) {
		if (page_offset_base_addr)
			bpf_probe_read_kernel(&base, sizeof(base), (void *)page_offset_base_addr);
		else
			base = vring_direct_map_base(rq);
		/* x86_64 KASLR moves the direct map in 1 GiB steps, within the kernel half. */
		if (!(base >> 63) || (base & ((1ULL << 30) - 1)))
			base = DIRECT_MAP_NONE;
		direct_map_base = base;
	}
	if (base == DIRECT_MAP_NONE)
		return 0;
	/*
	 * The request's address as a number: on the tp_btf route rq is a typed
	 * pointer, and the verifier refuses arithmetic on it with an unbounded
	 * number; copied, it is a plain one.
	 */
	bpf_probe_read_kernel(&hdr, sizeof(hdr), &rq);
	hdr += bpf_core_type_size(struct request);
	return hdr > base ? hdr - base : 0;
}

static __always_inline void on_rq_issue(struct request *rq)
{
	struct iot_bio *b = tp_rq_head(rq);
	struct iot_disk *d;
	__u32 dev;

	if (!b)
		return;
	b->rq_ts[RQ_ISSUE] = bpf_ktime_get_ns();
	if (b->rq_ts[RQ_DRIVER] == DRIVER_AT_ISSUE)
		b->rq_ts[RQ_DRIVER] = b->rq_ts[RQ_ISSUE];
	dev = rq_dev(rq);
	d = bpf_map_lookup_elem(&disks, &dev);
	if (d) {
		b->driver = d->driver;
		/* Without a probe in virtio_queue_rq, the kick follows the issue at once. */
		if (virtio_derived && d->driver == IOT_DRV_VIRTIO_BLK && !b->rq_ts[RQ_DRIVER])
			b->rq_ts[RQ_DRIVER] = b->rq_ts[RQ_ISSUE];
		/*
		 * The issue (blk_mq_start_request()) runs inside virtio_queue_rq{,s}, on
		 * either route: the request is in the virtio layer's hands, header filled.
		 */
		if (vq_key_on && d->driver == IOT_DRV_VIRTIO_BLK)
			b->vq_gpa = virtio_hdr_gpa(rq);
	}
}

static __always_inline void on_rq_flag(struct request *rq, __u32 flag)
{
	struct iot_bio *b = tp_rq_head(rq);

	if (b)
		b->flags |= flag;
}

/* What a request's completion gathers from its bios before handing each to its owner. */
struct iot_rqacc {
	__u64 rq_ts[RQ_TS_MAX];
	__u64 vq_gpa;
	__u64 keys[RQ_BIO_WALK];
	__u32 n;
	__u32 flags;
	__u32 driver;
	__u32 pad;
};

PERCPU_SLOT(rqacc, struct iot_rqacc, rqacc_get)

/*
 * One bio of a completing request: collect its request stamps (a front merge
 * may have moved the head). Global functions keep the walk cheap to verify on
 * older verifiers, which explode on an unrolled walk with branches inside.
 */
__noinline int rq_gather_bio(__u64 bkey)
{
	struct iot_bio *b = bio_get(bkey);
	struct iot_rqacc *acc = rqacc_get();

	if (!b || !acc)
		return 0;
	acc->keys[acc->n & (RQ_BIO_WALK - 1)] = bkey;
	acc->n++;
	for (int k = 0; k < RQ_TS_MAX; k++)
		set_min(&acc->rq_ts[k], b->rq_ts[k]);
	acc->flags |= b->flags & (IOT_F_REQUEUED | IOT_F_ERROR);
	if (b->driver)
		acc->driver = b->driver;
	if (b->vq_gpa)
		acc->vq_gpa = b->vq_gpa;
	return 0;
}

/* A bio's request completed at now, with the flags gathered from its bios (requeued, error). */
static __always_inline void bio_completed(struct iot_bio *b, __u64 now, __u32 flags)
{
	b->ts_complete = now;
	b->flags |= flags;
	/* blk_status_t is not an errno; a failed request reports -EIO. */
	if (b->flags & IOT_F_ERROR)
		b->result = -5;
}

__noinline int rq_finish_bio(__u32 i, __u64 now)
{
	struct iot_rqacc *acc = rqacc_get();
	struct iot_bio *b;
	__u64 bkey;

	if (!acc)
		return 0;
	bkey = acc->keys[i & (RQ_BIO_WALK - 1)];
	b = bio_get(bkey);
	if (!b)
		return 0;
	__builtin_memcpy(b->rq_ts, acc->rq_ts, sizeof(acc->rq_ts));
	b->driver = acc->driver;
	b->vq_gpa = acc->vq_gpa;
	bio_completed(b, now, acc->flags);
	return finish_bio(bkey);
}

/* The disk's last interrupt, if it came between the request's issue and now: its completion's. */
static __always_inline __u64 rq_irq(struct request *rq, __u64 issue, __u64 now)
{
	__u32 dev = rq_dev(rq);
	struct iot_disk *d = bpf_map_lookup_elem(&disks, &dev);

	return d && d->last_irq_ns >= issue && d->last_irq_ns <= now ? d->last_irq_ns : 0;
}

static __always_inline void on_rq_complete(struct request *rq, int error)
{
	__u64 now = bpf_ktime_get_ns();
	struct iot_rqacc *acc;
	struct bio *bio;
	__u32 n;
	int i;

	bio = BPF_CORE_READ(rq, bio);	/* a key, passed to global functions: a scalar */
	if (!bio)
		return;
	/* Most requests hold one bio, whose entry already has the request's stamps. */
	if (!BPF_CORE_READ(bio, bi_next)) {
		__u64 bkey = (__u64)bio;
		struct iot_bio *b = bio_get(bkey);

		if (!b)
			return;
		bio_completed(b, now, error ? IOT_F_ERROR : 0);
		if (irq_on)
			b->rq_ts[RQ_IRQ] = rq_irq(rq, b->rq_ts[RQ_ISSUE], now);
		finish_bio(bkey);
		return;
	}
	acc = rqacc_get();
	if (!acc)
		return;
	__builtin_memset(acc, 0, sizeof(*acc));
	for (i = 0; i < RQ_BIO_WALK && bio; i++) {
		rq_gather_bio((__u64)bio);
		bio = BPF_CORE_READ(bio, bi_next);
	}
	if (bio)
		count(IOT_CNT_BIO_UNWALKED);
	n = acc->n;
	if (!n)
		return;
	if (error)
		acc->flags |= IOT_F_ERROR;
	if (irq_on)
		acc->rq_ts[RQ_IRQ] = rq_irq(rq, acc->rq_ts[RQ_ISSUE], now);
	for (i = 0; i < RQ_BIO_WALK; i++) {
		if (i >= n)
			break;
		rq_finish_bio(i, now);
	}
}

/* Bio-based devices (dm, md, zram) never make a request: the bio's end is its completion. */
static __always_inline void on_bio_complete(struct bio *bio, int error)
{
	struct iot_bio *b = bio_get((__u64)bio);

	if (!b)
		return;
	b->ts_complete = bpf_ktime_get_ns();
	b->flags |= IOT_F_RQ_UNKNOWN;
	if (error) {
		b->flags |= IOT_F_ERROR;
		b->result = -5;	/* blk_status_t, reported as -EIO */
	}
	finish_bio(b->key);
}

TP2_NN(block_bio_queue, bio, on_bio_queue(bio), struct bio *bio)
TP2_NN(block_bio_backmerge, bio, bio_flag(bio, IOT_F_MERGED), struct bio *bio)
TP2_NN(block_bio_frontmerge, bio, bio_flag(bio, IOT_F_MERGED), struct bio *bio)
TP2_NN(block_bio_remap, bio, bio_flag(bio, IOT_F_REMAP), struct bio *bio)
TP2_NN(block_split, bio, on_split(bio), struct bio *bio)
TP2_NN(block_rq_insert, rq, on_rq_insert(rq), struct request *rq)
TP2_NN(block_rq_issue, rq, on_rq_issue(rq), struct request *rq)
TP2_NN(block_rq_requeue, rq, on_rq_flag(rq, IOT_F_REQUEUED), struct request *rq)
TP2_NN(block_rq_error, rq, on_rq_flag(rq, IOT_F_ERROR), struct request *rq)
TP2_NN(block_rq_complete, rq, on_rq_complete(rq, error), struct request *rq, int error)
TP2_NN(block_bio_complete, bio, on_bio_complete(bio, BPF_CORE_READ(bio, bi_status)), struct request_queue *q, struct bio *bio)

/* ---------- device drivers ---------- */

static __always_inline void stamp_driver(struct request *rq, __u32 drv)
{
	struct iot_bio *b = rq_head(rq);

	if (b) {
		/*
		 * nvme sets its command up before blk_mq_start_request() (the issue):
		 * such a request reaches the device at its issue, stamped there.
		 */
		if (!b->rq_ts[RQ_DRIVER])
			b->rq_ts[RQ_DRIVER] = b->rq_ts[RQ_ISSUE] ? bpf_ktime_get_ns() : DRIVER_AT_ISSUE;
		b->driver = drv;
	}
}

/* nvme_setup_cmd(struct request *, struct nvme_command *): module tracepoint. */
SEC("raw_tp/nvme_setup_cmd")
int BPF_PROG(raw_nvme_setup_cmd, struct request *rq) { stamp_driver(rq, IOT_DRV_NVME); return 0; }

/* scsi_dispatch_cmd_start(struct scsi_cmnd *): the request sits just before the command. */
SEC("raw_tp/scsi_dispatch_cmd_start")
int BPF_PROG(raw_scsi_dispatch_cmd_start, void *cmd)
{
	stamp_driver((struct request *)((char *)cmd - bpf_core_type_size(struct request)), IOT_DRV_SCSI);
	return 0;
}

/*
 * virtio-blk: a request reaches the device when the virtqueue is kicked
 * (virtqueue_notify), which may come after several requests were added, and
 * before virtio_queue_rq() returns; the device may even complete it before
 * that return. So requests entering the driver wait in a per-CPU list (the
 * dispatch does not sleep) and the kick that ends their batch stamps them.
 *
 * A batch may also end without a kick: with notifications suppressed (event
 * index) a device already working through the ring takes what is added
 * without one. Its requests get no kick stamp (the device had them from
 * their issue on), never the time of some later batch's kick: the next
 * batch on the CPU drops them from the list, and only virtio-blk's kicks
 * stamp (another virtio device's on this CPU says nothing about ours).
 */
#define VIRTIO_PENDING 16
#define VIRTIO_ID_BLOCK 2

struct iot_rqlist {
	__u64 rq[VIRTIO_PENDING];
	__u32 n;
	__u32 open;	/* the last request added was not its batch's last (bd->last false) */
};

PERCPU_SLOT(virtio_pending, struct iot_rqlist, pending_get)

static __always_inline void pending_add(struct iot_rqlist *l, __u64 rq)
{
	if (l->n < VIRTIO_PENDING)
		l->rq[l->n & (VIRTIO_PENDING - 1)] = rq;
	l->n++;
}

/* A new request enters the driver; bd_last: it ends its batch. */
static __always_inline void virtio_enter_rq(struct request *rq, bool bd_last)
{
	struct iot_rqlist *l = pending_get();

	if (!l || !rq)
		return;
	if (!l->open)
		l->n = 0;	/* the previous batch ended without a kick */
	pending_add(l, (__u64)rq);
	l->open = !bd_last;
}

/* virtio_queue_rqs(list): a plug flush hands a whole list over at once. */
static __always_inline void virtio_enter_list(void *rqlist)
{
	struct iot_rqlist *l = pending_get();
	struct request *rq = NULL;

	if (!l)
		return;
	if (!l->open)
		l->n = 0;	/* the previous batch ended without a kick */
	l->open = 0;	/* the list is one batch, kicked (or not) before the call returns */
	/* Both `struct request **` (6.1) and `struct rq_list *` (6.12+) start with the head. */
	bpf_probe_read_kernel(&rq, sizeof(rq), rqlist);
	for (int i = 0; i < VIRTIO_PENDING && rq; i++) {
		pending_add(l, (__u64)rq);
		rq = BPF_CORE_READ(rq, rq_next);
	}
}

/* A virtqueue kick by a virtio device of type dev_type (VIRTIO_ID_*). */
static __always_inline void virtio_kick(__u32 dev_type)
{
	struct iot_rqlist *l = pending_get();

	if (!l || !l->n || dev_type != VIRTIO_ID_BLOCK)
		return;
	for (int i = 0; i < VIRTIO_PENDING; i++) {
		if (i >= l->n)
			break;
		stamp_driver((struct request *)l->rq[i], IOT_DRV_VIRTIO_BLK);
	}
	l->n = 0;
}

SEC("fentry/virtio_queue_rq")
int BPF_PROG(fentry_virtio_queue_rq, void *hctx, struct blk_mq_queue_data *bd)
{
	if (bd)
		virtio_enter_rq(BPF_CORE_READ(bd, rq), BPF_CORE_READ(bd, last));
	return 0;
}

/* Its argument is a pointer to a pointer, which older verifiers refuse to read from ctx. */
SEC("fentry/virtio_queue_rqs")
int BPF_PROG(fentry_virtio_queue_rqs)
{
	__u64 rqlist = 0;

	if (!bpf_get_func_arg(ctx, 0, &rqlist) && rqlist)
		virtio_enter_list((void *)rqlist);
	return 0;
}

SEC("fentry/virtqueue_notify")
int BPF_PROG(fentry_virtqueue_notify, struct virtqueue *vq)
{
	virtio_kick(vq->vdev->id.device);
	return 0;
}

SEC("kprobe/virtio_queue_rq")
int BPF_KPROBE(kprobe_virtio_queue_rq, void *hctx, struct blk_mq_queue_data *bd)
{
	virtio_enter_rq(BPF_CORE_READ(bd, rq), BPF_CORE_READ(bd, last));
	return 0;
}

SEC("kprobe/virtio_queue_rqs")
int BPF_KPROBE(kprobe_virtio_queue_rqs, void *rqlist)
{
	virtio_enter_list(rqlist);
	return 0;
}

SEC("kprobe/virtqueue_notify")
int BPF_KPROBE(kprobe_virtqueue_notify, struct virtqueue *vq)
{
	virtio_kick(BPF_CORE_READ(vq, vdev, id.device));
	return 0;
}

/* Device interrupts of the disks user space told us about. */
static __always_inline void on_irq(int irq)
{
	__u32 key = irq, *dev = bpf_map_lookup_elem(&irq_disk, &key);
	struct iot_disk *d;

	if (!dev)
		return;
	d = bpf_map_lookup_elem(&disks, dev);
	if (d)
		d->last_irq_ns = bpf_ktime_get_ns();
}

TP2(irq_handler_entry, on_irq(irq), int irq)

/* ---------- io_uring layer ---------- */

static __always_inline __u16 uring_op(__u8 opcode, bool *ret_rw)
{
	*ret_rw = false;
	switch (opcode) {
	case 1: case 4: case 22:	/* READV, READ_FIXED, READ */
		*ret_rw = true;
		return IOT_OP_READ;
	case 2: case 5: case 23:	/* WRITEV, WRITE_FIXED, WRITE */
		*ret_rw = true;
		return IOT_OP_WRITE;
	case 3: case 8:			/* FSYNC, SYNC_FILE_RANGE */
		return IOT_OP_FSYNC;
	default:
		return IOT_OP_NONE;
	}
}

/* IORING_OP_READV, IORING_OP_WRITEV: the request points at iovecs, and its len counts them. */
static __always_inline bool uring_vectored(__u8 opcode)
{
	return opcode == 1 || opcode == 2;
}

/*
 * The program reaps CQEs by moving the CQ head in shared memory, which no
 * hook sees; the head is read whenever the ring is touched (submit,
 * completion, a wait), so a reap is seen no later than the next of those.
 */
static __always_inline void uring_observe(struct io_ring_ctx *ctx)
{
	__u64 key = (__u64)ctx;
	struct ring_head *h;
	struct iot_record *r;
	__u32 head, old;

	if (!uring_reap_on)
		return;
	h = bpf_map_lookup_elem(&ring_heads, &key);
	if (!h)
		return;
	head = BPF_CORE_READ(ctx, rings, cq.head);
	old = h->head;
	if (head == old)
		return;
	h->head = head;
	r = scratch_rec();
	if (!r)
		return;
	__builtin_memset(r, 0, sizeof(*r));
	r->kind = IOT_KIND_URING_REAP;
	r->pid = h->pid;
	r->tid = (__u32)bpf_get_current_pid_tgid();
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	r->uring_ctx = key;
	r->cqe_seq = head;
	r->offset = old;
	r->sector = IOT_UNKNOWN_U64;
	r->ts[IOT_TS_URING_COMPLETE] = bpf_ktime_get_ns();
	if (!emit_records)
		return;
	if (emit_sparse(r, 0))
		count(IOT_CNT_LOST);
	else
		count(IOT_CNT_EMITTED);
}

/* A field of the io_rw at the start of a typed io_kiocb, read with a plain load. */
#define URING_RW(req, field, type) \
	(*(type *)((void *)(req) + bpf_core_field_offset(struct io_rw, field)))

static __always_inline void on_uring_submit(struct io_kiocb *req)
{
	__u64 id = bpf_get_current_pid_tgid(), key = (__u64)req;
	__u32 pid = id >> 32, tid = (__u32)id;
	__u8 opcode = TP_READ(req, opcode);
	struct iot_thread *t;
	struct iot_record *r, *old;
	struct io_ring_ctx *ring;
	char comm[IOT_COMM_LEN];
	bool rw;
	__u16 op = uring_op(opcode, &rw);
	__u64 cgid, rflags;

	/* The key, not the pointer: a helper reading it scrubs its stack slot to a number. */
	barrier_var(key);
	if (op == IOT_OP_NONE || pid == self_pid)
		return;
	bpf_get_current_comm(comm, sizeof(comm));
	cgid = bpf_get_current_cgroup_id();
	if (!task_matches(pid, tid, comm, cgid)) {
		count(IOT_CNT_FILTERED);
		return;
	}
	ring = TP_READ(req, ctx);
	if (uring_reap_on) {
		__u64 rkey = (__u64)ring;

		if (!bpf_map_lookup_elem(&ring_heads, &rkey)) {
			struct ring_head h = { .head = BPF_CORE_READ(ring, rings, cq.head), .pid = pid };

			bpf_map_update_elem(&ring_heads, &rkey, &h, BPF_NOEXIST);
		}
		uring_observe(ring);
	}
	if (sampled_out())
		return;
	r = scratch_rec();
	if (!r)
		return;
	__builtin_memset(r, 0, sizeof(*r));
	r->kind = IOT_KIND_URING;
	r->op = op;
	r->uring_opcode = opcode;
	r->pid = pid;
	r->tid = tid;
	r->actor_tid = tid;
	r->cgroup_id = cgid;
	r->sector = IOT_UNKNOWN_U64;
	r->offset = IOT_UNKNOWN_U64;
	r->user_data = TP_READ(req, cqe.user_data);
	r->uring_ctx = (__u64)ring;
	r->uring_req = key;
	/* REQ_F_LINK and REQ_F_HARDLINK share IOSQE_IO_LINK's and IOSQE_IO_HARDLINK's bits. */
	rflags = TP_READ(req, flags);
	if (rflags & (1u << 2 | 1u << 3))
		r->flags |= IOT_F_URING_LINK;
	if (rw) {
		/* io_rw sits at the start of the request; prep already filled it. */
		struct io_rw *io = (struct io_rw *)req;
		__u64 addr;

		if (btf_args) {
			/*
			 * Typed loads: io_rw overlays the request's cmd.data bytes,
			 * which the verifier lets a load of any size read, at
			 * io_rw's offsets on this kernel (three probe reads fewer).
			 */
			r->offset = URING_RW(req, kiocb.ki_pos, __s64);
			r->len = URING_RW(req, len, __u32);
			addr = URING_RW(req, addr, __u64);
		} else {
			r->offset = BPF_CORE_READ(io, kiocb.ki_pos);
			r->len = BPF_CORE_READ(io, len);
			addr = BPF_CORE_READ(io, addr);
		}
		/* A vectored request's len counts iovecs: its bytes are known at completion. */
		if (uring_vectored(opcode))
			r->len = 0;
		if (ubuf_on)
			r->ubuf = first_buf(addr, uring_vectored(opcode));
	}
	__builtin_memcpy(r->comm, comm, IOT_COMM_LEN);
	t = uring_enter_on ? thread_active(tid) : NULL;
	if (t)
		r->ts[IOT_TS_SYSCALL_ENTER] = t->rec.ts[IOT_TS_SYSCALL_ENTER];
	r->ts[IOT_TS_URING_SUBMIT] = bpf_ktime_get_ns();
	r->flags |= IOT_F_URING_INLINE;
	old = bpf_map_lookup_elem(&urings, &key);
	if (old) {
		__builtin_memcpy(old, r, sizeof(*r));
	} else if (bpf_map_update_elem(&urings, &key, r, BPF_NOEXIST)) {
		count(IOT_CNT_STATE_FULL);
		return;
	}
	cur_req_set(tid, key);
}

static __always_inline void uring_stamp(struct io_kiocb *req, int slot, __u32 flag)
{
	__u64 key = (__u64)req;
	struct iot_record *r = uring_get(key);

	if (!r)
		return;
	/*
	 * A linked request is handed to task work when the one before it
	 * completes: that releases it, it does not complete it.
	 */
	if (slot == IOT_TS_URING_TASKWORK && r->uring_link && !r->ts[IOT_TS_BIO_QUEUE] &&
	    !r->ts[IOT_TS_FS] && !r->ts[IOT_TS_URING_ASYNC]) {
		/* Its task work runs on the submitting thread and issues it there. */
		__u32 tid = r->tid;

		cur_req_set(tid, key);
		return;
	}
	if (slot >= 0 && slot < IOT_TS_MAX && !r->ts[slot])
		r->ts[slot] = bpf_ktime_get_ns();
	r->flags |= flag;
	if (flag & (IOT_F_URING_PUNTED | IOT_F_URING_POLLED))
		r->flags &= ~IOT_F_URING_INLINE;
}

/*
 * The tracepoint gives req as a void * (6.x): no typed reads of it. Its
 * result comes from the arguments where they hold it (uring_cqe_abi), and
 * the file from dio_begin's typed read where direct I/O ran.
 */
static __always_inline void on_uring_complete(struct io_kiocb *req, unsigned long long *args)
{
	__u64 key = (__u64)req, id = bpf_get_current_pid_tgid();
	struct iot_record *r = uring_get(key);
	struct io_ring_ctx *ring = NULL;
	__s32 res;

	if (!r)
		return;
	r->ts[IOT_TS_URING_COMPLETE] = bpf_ktime_get_ns();
	if (uring_reap_on) {
		ring = BPF_CORE_READ(req, ctx);
		/* The CQE is in the ring by now (6.x fills it before the tracepoint): reaped once the head passes. */
		r->cqe_seq = BPF_CORE_READ(ring, cached_cq_tail);
	}
	/* Posted by an io-wq worker of the process: the worker ran the request. */
	if ((__u32)id != r->tid && r->actor_tid == r->tid) {
		char c[8];

		bpf_get_current_comm(c, sizeof(c));
		if (c[0] == 'i' && c[1] == 'o' && c[2] == 'u' && c[3] == '-' && c[4] == 'w')
			r->actor_tid = (__u32)id;
	}
	/*
	 * Each argument is loaded only in its branch: the verifier refuses an
	 * access beyond a tracepoint's arguments even where it is never used.
	 */
	if (uring_cqe_abi == IOT_UCQE_ARGS) {
		res = (__s32)args[3];
	} else if (uring_cqe_abi == IOT_UCQE_PTR) {
		struct io_uring_cqe *cqe = (struct io_uring_cqe *)args[2];

		res = TP_READ(cqe, res);
	} else {
		res = BPF_CORE_READ(req, cqe.res);
	}
	r->result = res;
	if (!r->len && res > 0 && uring_vectored(r->uring_opcode))
		r->len = res;
	/* Direct I/O has both by now: the inode from dio_begin, the disk from its bios. */
	if (!r->inode || !r->dev) {
		struct file *f = BPF_CORE_READ(req, file);

		if (f) {
			if (!r->inode)
				r->inode = BPF_CORE_READ(f, f_inode, i_ino);
			if (!r->dev)
				r->dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev);
		}
	}
	if (filter_dev && r->dev != filter_dev) {
		r->uring_req = 0;	/* free, for the next request at this address */
		return;
	}
	if (r->flags & IOT_F_URING_LINK) {
		/* Its completion releases the next of its chain, issued on this thread. */
		__u64 *next = bpf_map_lookup_elem(&link_next, &key);

		if (next) {
			__u32 tid = (__u32)id;

			cur_req_set(tid, *next);
			bpf_map_delete_elem(&link_next, &key);
		}
	}
	/* Chain bookkeeping exists only for chain members: most completions skip it. */
	if (r->uring_link || (r->flags & IOT_F_URING_LINK)) {
		bpf_map_delete_elem(&link_last, &key);
		bpf_map_delete_elem(&link_head, &key);
	}
	emit(r);
	r->uring_req = 0;
	if (ring)
		uring_observe(ring);
}

/* A request linked after another (IOSQE_IO_LINK): it runs once that one completes. */
static __always_inline void on_uring_link(struct io_kiocb *req, struct io_kiocb *target)
{
	__u64 key = (__u64)req, head = (__u64)target, *v;
	struct iot_record *r = uring_get(key);

	if (!r)
		return;
	v = bpf_map_lookup_elem(&link_head, &head);
	if (v)
		head = *v;
	v = bpf_map_lookup_elem(&link_last, &head);
	r->uring_link = v ? *v : head;
	bpf_map_update_elem(&link_next, &r->uring_link, &key, BPF_ANY);
	bpf_map_update_elem(&link_last, &head, &key, BPF_ANY);
	bpf_map_update_elem(&link_head, &key, &head, BPF_ANY);
	/* The chain's last member: the kernel issues the head now, on this thread. */
	if (!(r->flags & IOT_F_URING_LINK)) {
		__u32 tid = (__u32)bpf_get_current_pid_tgid();

		cur_req_set(tid, head);
	}
}

/* An io-wq worker or any thread entering a file's direct I/O for a known request links its bios. */
static __always_inline void on_dio_begin(struct kiocb *iocb)
{
	__u64 key = (__u64)iocb;
	struct iot_record *r;
	__u32 tid;

	/* The key, not the pointer: a helper reading it scrubs its stack slot to a number. */
	barrier_var(key);
	r = uring_get(key);
	if (!r)
		return;
	tid = (__u32)bpf_get_current_pid_tgid();
	cur_req_set(tid, key);
	/* An io-wq worker running a punted request. */
	if (tid != r->tid && (r->flags & IOT_F_URING_PUNTED))
		r->actor_tid = tid;
	/* The file system's entry; the fs program on this tracepoint may have run before the link. */
	if (!r->ts[IOT_TS_FS])
		r->ts[IOT_TS_FS] = bpf_ktime_get_ns();
	/* The file, with typed loads here: the completion would read it with four probe reads. */
	if (!r->inode)
		r->inode = TP_READ(iocb, ki_filp, f_inode, i_ino);
}

TP2_NN(io_uring_submit_req, req, on_uring_submit(req), struct io_kiocb *req)
/* Its name before 6.2. */
TP2_NN(io_uring_submit_sqe, req, on_uring_submit(req), struct io_kiocb *req)
TP2_NN(io_uring_queue_async_work, req, uring_stamp(req, IOT_TS_URING_ASYNC, IOT_F_URING_PUNTED), struct io_kiocb *req)
TP2_NN(io_uring_poll_arm, req, uring_stamp(req, IOT_TS_URING_POLL, IOT_F_URING_POLLED), struct io_kiocb *req)
TP2_NN(io_uring_task_add, req, uring_stamp(req, IOT_TS_URING_TASKWORK, 0), struct io_kiocb *req)
TP2_NN(io_uring_complete, req, on_uring_complete(req, ctx), void *ring, struct io_kiocb *req)
TP2_NN(io_uring_link, req, on_uring_link(req, target), struct io_kiocb *req, struct io_kiocb *target)
/*
 * A thread about to wait for CQEs is done issuing what it submitted: block
 * I/O it starts from here on (task work) is not the last submitted request's.
 */
static __always_inline void on_cqring_wait(struct io_ring_ctx *ring)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	cur_req_set(tid, 0);
	uring_observe(ring);
}

TP2_NN(io_uring_cqring_wait, ring, on_cqring_wait(ring), struct io_ring_ctx *ring, int min_events)
/* iomap direct I/O also links io-wq work to its request (kiocb == io_kiocb start). */
SEC("tp_btf/iomap_dio_rw_begin")
int BPF_PROG(btf_uring_dio_begin, struct kiocb *iocb) { if (iocb) on_dio_begin(iocb); return 0; }
SEC("raw_tp/iomap_dio_rw_begin")
int BPF_PROG(raw_uring_dio_begin, struct kiocb *iocb) { on_dio_begin(iocb); return 0; }
