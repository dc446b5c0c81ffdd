// SPDX-License-Identifier: GPL-2.0
/*
 * Joins guest records, QEMU's requests and the host kernel's I/O (see
 * correlate.h for the keys). Memory is fixed: windows of QEMU requests,
 * backend calls and waiting guest records, each a ring whose oldest entry
 * is reused, and counted when it leaves unclaimed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include "correlate.h"
#include "hist.h"
#include "mem.h"
#include "names.h"
#include "sbuf.h"

/*
 * Windows: at 12,000 guest requests/s, 16,384 QEMU requests are over a
 * second, where a guest record arrives within tens of milliseconds of its
 * completion; held guest records wait at most hold_ns. Sized so that the
 * agent stays within its memory budget (docs/benchmarks.md).
 */
#define QR_MAX (1u << 14)		/* QEMU requests in the window */
#define BK_MAX (1u << 14)		/* backend calls in the window */
#define HOLD_MAX (1u << 13)		/* guest records waiting */
#define HB_BITS 14
#define HB_MAX (1u << HB_BITS)		/* hash buckets per index */
#define DRIVES_MAX 128			/* (VM, guest disk) -> QEMU drive pairs remembered */
#define DRAIN_SLACK_NS 2000000ULL	/* ring buffer records committed out of order, clock error */
#define GROUP_BACK_MAX 8		/* backend calls one submit may make (qcow2 splits at clusters) */
#define FDCACHE_MAX 256
#define UNRESOLVED_MAX 1024		/* native backend calls whose disk sector is not known yet */
#define PENDING_HOST_MAX 1024		/* host records that came before their backend call was read */
#define IMAGES_MAX 64			/* files QEMU's backend calls were seen on */
#define LEAN_VMS_MAX 64			/* QEMUs traced without backend probes (the host agent's VMs) */
#define NO_IDX (-1)

/* VIRTIO_BLK_T_* */
#define VBLK_IN 0
#define VBLK_OUT 1
#define VBLK_FLUSH 4
/* QEMU_AIO_* (block/raw-aio.h) */
#define QAIO_READ 0x1
#define QAIO_WRITE 0x2
#define QAIO_FLUSH 0x8

enum { IX_GPA, IX_SECTOR, IX_BUF, IX_Q };	/* IX_BUF: a lean submit's first request, by its buffer */
#define RECENT_MAX 64			/* latest submits a backend call is looked up among */

/* One host kernel I/O, reduced to what the joined record shows. */
struct hio {
	uint16_t kind, syscall;
	uint8_t uring_opcode;
	uint32_t tid, len;
	uint32_t dev;
	uint64_t start, end, dev_issue, dev_complete;
	uint64_t offset, sector;
	int64_t result;
};

struct qreq {
	uint32_t gen;
	bool used, matched;
	uint32_t pid, tid;		/* tid: the QEMU thread that submitted it */
	uint32_t op, head;
	uint64_t gpa, sector, len, submit_ts;
	uint64_t blk;			/* the BlockBackend: which of the VM's drives */
	uint64_t buf;			/* lean (IOT_QF_NO_BACKEND) submit's first request: its first data buffer */
	bool lean;			/* its QEMU's backend calls are not probed */
	bool kernel;			/* seen on the kernel route: submit_ts is the host kernel's */
	bool served;			/* lean: its host I/O was found */
	int32_t group;			/* the submit's first request (self for the first) */
	uint32_t group_gen;
	int32_t back[GROUP_BACK_MAX];	/* on the first request: its backend calls */
	uint32_t back_gen[GROUP_BACK_MAX];
	int nback;
	/*
	 * The key chains are singly linked, newest first, each link carrying the
	 * generation it was made with: the window is reused oldest first, so a
	 * link to a reused entry ends the chain (all behind it is older still).
	 * No unlink: a new request costs a bucket head per key and no other
	 * entry's cache line.
	 */
	int32_t nx[IX_Q];
	uint32_t nxgen[IX_Q];
};

struct qlink {
	int32_t i;
	uint32_t gen;
};

struct back {
	uint32_t gen;
	bool used, linked;
	bool indexed;			/* in the key index (bhead) */
	uint8_t link;			/* enum back_link: how it was tied to its request */
	uint32_t pid;
	uint32_t kind, op;
	uint64_t ino;
	uint32_t dev;			/* kdev of the file's disk */
	uint64_t offset, bytes, ts;
	uint64_t host_sector;		/* native: where the offset lies on the disk, or UNKNOWN */
	int fd;
	int32_t q;
	uint32_t qgen;
	struct hio h;
	int32_t nx, pv;
};

/*
 * How a backend call (or, for a lean QEMU, the host I/O standing in for
 * one) was tied to its QEMU request.
 */
enum back_link {
	LINK_THREAD,		/* the submit under way on the calling thread */
	LINK_BUFFERS,		/* the submit whose data buffers it carries */
	LINK_ORDER,		/* lean flush: the oldest flush of the process not yet served */
};

static const char *const link_names[] = { "thread", "buffers", "order" };

struct held {
	uint64_t arrival;
	uint32_t pid;
	char guest[64];
	bool guest_clock;
	uint64_t unc;
	int32_t q;
	uint32_t qgen;
	enum corr_reason reason;	/* once decided */
	bool decided;
	struct iot_record r;
};

struct fdent {
	uint32_t pid;
	int fd;
	uint64_t ino;
	uint32_t disk;			/* kdev of the whole disk */
	uint64_t part_start;		/* sectors */
	int own_fd;			/* our descriptor of the same file, for FIEMAP */
	bool valid;
};

/* VS_KICK_HOST: on the kernel route, no stamp inside QEMU splits the kick to the host's submit. */
enum vseg { VS_GUEST_ISSUE, VS_KICK_QEMU, VS_QEMU_HOST, VS_KICK_HOST, VS_HOST_IO, VS_HOST_DEVICE, VS_HOST_GUEST_IRQ,
	    VS_GUEST_DONE, VS_TOTAL, VS_MAX };
static const char *const vseg_names[VS_MAX] = {
	"guest_issue", "kick_to_qemu", "qemu_to_host", "kick_to_host", "host_io", "host_device", "host_to_guest_irq",
	"guest_completion", "total",
};

/* What a VM's runs have shown: key -> value per QEMU pid, bounded, the oldest entry reused. */
struct pairs {
	struct {
		uint32_t pid;
		uint64_t key, val;
	} e[DRIVES_MAX];
	int n, evict;
};

/* The value learned for (pid, key), 0 when none. */
static uint64_t pairs_get(const struct pairs *p, uint32_t pid, uint64_t key)
{
	for (int i = 0; i < p->n; i++)
		if (p->e[i].pid == pid && p->e[i].key == key)
			return p->e[i].val;
	return 0;
}

/* The latest says (a restarted VM may say otherwise: it wins). */
static void pairs_set(struct pairs *p, uint32_t pid, uint64_t key, uint64_t val)
{
	int i;

	for (i = 0; i < p->n; i++)
		if (p->e[i].pid == pid && p->e[i].key == key)
			break;
	if (i == p->n)
		i = p->n < DRIVES_MAX ? p->n++ : p->evict++ % DRIVES_MAX;
	p->e[i].pid = pid;
	p->e[i].key = key;
	p->e[i].val = val;
}

struct corr {
	struct corr_opts o;
	struct qreq *q;
	uint32_t qnext;
	struct qlink qhead[IX_Q][HB_MAX];
	/* Each submit's first request, newest last: its backend calls are made during the submit. */
	struct {
		uint32_t pid;
		int32_t i;
		uint32_t gen;
		uint64_t reqptr, ts, iov;
	} recent[RECENT_MAX];
	uint32_t nrecent;
	struct back *b;
	uint32_t bnext;
	int32_t bhead[HB_MAX];
	struct held *h;
	uint32_t hfirst, hcount;
	/*
	 * The newest hnew held records have no arrival time yet: the next tick
	 * gives them its own. Each waits hold_ns from then, not from when it
	 * reached the head of the list (a stuck head would delay each behind it
	 * by hold_ns more).
	 */
	uint32_t hnew;
	struct fdent fds[FDCACHE_MAX];
	struct {
		uint32_t pid;
		uint64_t ino;
	} images[IMAGES_MAX];
	int nimages;
	struct iot_record *pending;	/* PENDING_HOST_MAX */
	uint64_t pending_since[PENDING_HOST_MAX];
	int npending;
	int32_t unresolved[UNRESOLVED_MAX];
	uint32_t unresolved_gen[UNRESOLVED_MAX];
	int nunresolved;
	struct corr_stats st;
	struct hist seg[VS_MAX];
	uint64_t drained_ns;		/* every QEMU event and host record from before this is in */
	/* Which QEMU drive (BlockBackend) serves which guest disk, learned from exact-key matches. */
	struct pairs drives;
	/* Lean QEMUs: which image file each drive's I/O was seen on (checks its flushes). */
	struct pairs drive_files;
	uint32_t lean_pids[LEAN_VMS_MAX];	/* QEMUs traced without backend probes (corr_vm_lean()) */
	int nlean_pids;
};

static uint32_t mix(uint64_t a, uint64_t b, uint64_t c)
{
	uint64_t x = a * 0x9e3779b97f4a7c15ULL ^ (b + 0x632be59bd9b4e019ULL) * 0xbf58476d1ce4e5b9ULL ^
		     (c + 0x94d049bb133111ebULL) * 0x94d049bb133111ebULL;

	x ^= x >> 31;
	x *= 0xd6e8feb86659fd93ULL;
	x ^= x >> 32;
	return (uint32_t)x & (HB_MAX - 1);
}

static uint32_t qbucket(const struct corr *c, const struct qreq *q, int ix)
{
	switch (ix) {
	case IX_GPA:
		return mix(q->pid, q->gpa, 1);
	case IX_BUF:
		return mix(q->pid, q->buf, 3);
	default:
		return mix(q->pid, q->sector, q->op << 1 | 2);
	}
}

static void qlink(struct corr *c, int32_t i, int ix, uint32_t bucket)
{
	struct qreq *q = &c->q[i];
	struct qlink *head = &c->qhead[ix][bucket];

	q->nx[ix] = head->i;
	q->nxgen[ix] = head->gen;
	head->i = i;
	head->gen = q->gen;
}

/* The first request of a key chain, or NO_IDX. */
static int32_t qfirst(const struct corr *c, const struct qreq *key, int ix)
{
	const struct qlink *head = &c->qhead[ix][qbucket(c, key, ix)];

	return head->i != NO_IDX && c->q[head->i].gen == head->gen ? head->i : NO_IDX;
}

/* The next (older) request of i's key chain, or NO_IDX. */
static int32_t qnext(const struct corr *c, int32_t i, int ix)
{
	int32_t n = c->q[i].nx[ix];

	return n != NO_IDX && c->q[n].gen == c->q[i].nxgen[ix] ? n : NO_IDX;
}

static uint32_t bbucket(const struct back *b)
{
	if (b->kind == IOT_QB_NATIVE)
		return mix(b->dev, b->host_sector, 5);
	return mix(b->pid, b->ino, b->offset ^ ((uint64_t)b->op << 56));
}

static void blink(struct corr *c, int32_t i)
{
	struct back *b = &c->b[i];
	int32_t *head = &c->bhead[bbucket(b)];

	b->indexed = true;
	b->nx = *head;
	b->pv = NO_IDX;
	if (*head != NO_IDX)
		c->b[*head].pv = i;
	*head = i;
}

static void bunlink(struct corr *c, int32_t i)
{
	struct back *b = &c->b[i];

	if (!b->indexed)
		return;
	b->indexed = false;
	if (b->pv != NO_IDX)
		c->b[b->pv].nx = b->nx;
	else
		c->bhead[bbucket(b)] = b->nx;
	if (b->nx != NO_IDX)
		c->b[b->nx].pv = b->pv;
}

struct corr *corr_new(const struct corr_opts *o)
{
	struct corr *c = iot_calloc_resident(1, sizeof(*c));

	if (!c)
		return NULL;
	c->o = *o;
	if (!c->o.hold_ns)
		c->o.hold_ns = 1000000000ULL;
	c->q = iot_calloc_resident(QR_MAX, sizeof(*c->q));
	c->b = iot_calloc_resident(BK_MAX, sizeof(*c->b));
	c->h = iot_calloc_resident(HOLD_MAX, sizeof(*c->h));
	c->pending = calloc(PENDING_HOST_MAX, sizeof(*c->pending));
	if (!c->q || !c->b || !c->h || !c->pending) {
		corr_free(c);
		return NULL;
	}
	for (int ix = 0; ix < IX_Q; ix++)
		for (uint32_t k = 0; k < HB_MAX; k++)
			c->qhead[ix][k].i = NO_IDX;
	memset(c->bhead, 0xff, sizeof(c->bhead));
	for (int i = 0; i < VS_MAX; i++)
		hist_reset(&c->seg[i]);
	return c;
}

void corr_free(struct corr *c)
{
	if (!c)
		return;
	for (int i = 0; i < FDCACHE_MAX; i++)
		if (c->fds[i].valid && c->fds[i].own_fd >= 0)
			close(c->fds[i].own_fd);
	free(c->q);
	free(c->b);
	free(c->h);
	free(c->pending);
	free(c);
}

const char *corr_reason_name(enum corr_reason r)
{
	static const char *const names[CORR_REASON_MAX] = {
		"gpa", "sector", "not_virtio", "no_vm", "no_qemu_request", "key_disagrees", "hold_full",
	};

	return r < CORR_REASON_MAX ? names[r] : "?";
}

static const char *reason_text(enum corr_reason r)
{
	switch (r) {
	case CORR_MATCHED_GPA:
		return "matched on the request header's guest-physical address";
	case CORR_MATCHED_SECTOR:
		return "matched on sector, length and operation (the guest gave no header address)";
	case CORR_NOT_VIRTIO:
		return "no virtio-blk request behind this record";
	case CORR_NO_VM:
		return "the guest's QEMU process is not known or not traced";
	case CORR_NO_QEMU_REQ:
		return "no QEMU request with this key";
	case CORR_KEY_DISAGREES:
		return "the header address matched a QEMU request of another sector, length or operation";
	case CORR_HOLD_FULL:
		return "too many guest requests waiting for their host side";
	default:
		return "?";
	}
}

/* ---- QEMU side ---- */

static int32_t qalloc(struct corr *c)
{
	int32_t i = c->qnext++ & (QR_MAX - 1);
	struct qreq *q = &c->q[i];
	uint32_t gen;

	if (q->used && !q->matched)
		c->st.qemu_dropped++;
	gen = q->gen;
	memset(q, 0, offsetof(struct qreq, nx));
	q->gen = (gen + 2) | 1;	/* odd, never the 0 of an empty chain head; kept across the reset */
	q->used = true;
	return i;
}

static uint32_t vblk_op(uint32_t type)
{
	return type == VBLK_IN ? IOT_OP_READ : type == VBLK_OUT ? IOT_OP_WRITE : type == VBLK_FLUSH ? IOT_OP_FLUSH
									: IOT_OP_OTHER;
}

static bool is_lean(const struct corr *c, uint32_t pid)
{
	for (int i = 0; i < c->nlean_pids; i++)
		if (c->lean_pids[i] == pid)
			return true;
	return false;
}

void corr_vm_lean(struct corr *c, uint32_t pid, bool lean)
{
	for (int i = 0; i < c->nlean_pids; i++)
		if (c->lean_pids[i] == pid) {
			if (!lean)
				c->lean_pids[i] = c->lean_pids[--c->nlean_pids];
			return;
		}
	if (lean && c->nlean_pids < LEAN_VMS_MAX)
		c->lean_pids[c->nlean_pids++] = pid;
}

static void on_backend(struct corr *c, const struct iot_qemu_event *e);

static void on_submit(struct corr *c, const struct iot_qemu_event *e)
{
	uint32_t bucket[IOT_QEMU_CHAIN_MAX][IX_BUF];
	int32_t first = NO_IDX;
	uint64_t rest = 0;

	if (!(e->flags & IOT_QF_LAYOUT_OK)) {
		c->st.qemu_layout_bad++;
		return;
	}
	c->st.qemu_submits++;
	if (e->flags & IOT_QF_USDT)
		c->st.qemu_usdt_submits++;
	if (e->flags & IOT_QF_KERNEL)
		c->st.qemu_kernel_submits++;
	/*
	 * The window slots and index buckets this submit writes are cold (a
	 * profile put a sixth of the agent on the stalls): ask for them first.
	 */
	for (int i = 0; i < e->nreqs && i < IOT_QEMU_CHAIN_MAX; i++) {
		struct qreq key = { .pid = e->pid, .gpa = e->reqs[i].gpa, .sector = e->reqs[i].sector,
				    .op = vblk_op(e->reqs[i].type) };
		struct qreq *slot = &c->q[(c->qnext + i) & (QR_MAX - 1)];

		for (int ix = 0; ix < IX_BUF; ix++) {
			bucket[i][ix] = qbucket(c, &key, ix);
			__builtin_prefetch(&c->qhead[ix][bucket[i][ix]], 1);
		}
		__builtin_prefetch(slot, 1);
		__builtin_prefetch(&slot->nx, 1);
	}
	for (int i = 1; i < e->nreqs && i < IOT_QEMU_CHAIN_MAX; i++)
		rest += e->reqs[i].qiov_size;
	for (int i = 0; i < e->nreqs && i < IOT_QEMU_CHAIN_MAX; i++) {
		const struct iot_qemu_req *r = &e->reqs[i];
		int32_t k = qalloc(c);
		struct qreq *q = &c->q[k];

		q->pid = e->pid;
		q->tid = e->tid;
		q->op = vblk_op(r->type);
		q->head = r->head;
		q->gpa = r->gpa;
		q->sector = r->sector;
		/*
		 * The first request's I/O vector was rebuilt to hold the whole
		 * merged call: its own share is what the others leave.
		 */
		q->len = i == 0 ? (e->nreqs > 1 ? e->bytes - rest : e->bytes) : r->qiov_size;
		q->submit_ts = e->ts;
		q->blk = e->blk;
		q->lean = e->flags & IOT_QF_NO_BACKEND;
		q->kernel = e->flags & IOT_QF_KERNEL;
		if (first == NO_IDX) {
			uint32_t n = c->nrecent++ % RECENT_MAX;

			first = k;
			c->recent[n].pid = e->pid;
			c->recent[n].i = k;
			c->recent[n].gen = q->gen;
			c->recent[n].reqptr = r->req;
			c->recent[n].ts = e->ts;
			c->recent[n].iov = e->iov;
		}
		q->group = first;
		q->group_gen = c->q[first].gen;
		for (int ix = 0; ix < IX_BUF; ix++)
			qlink(c, k, ix, bucket[i][ix]);
		/* The submit's I/O starts with its first request's buffers. */
		if (i == 0 && q->lean && e->buf && q->op != IOT_OP_FLUSH) {
			q->buf = e->buf;
			qlink(c, k, IX_BUF, qbucket(c, q, IX_BUF));
		}
		c->st.qemu_reqs++;
	}
	/*
	 * The kernel route in a VM whose host I/O does not name its request
	 * by buffers (Linux AIO, seen per bio): the submission is the backend
	 * call too, and is tied as one (by its buffers, the submit's own).
	 */
	if ((e->flags & IOT_QF_KERNEL) && !(e->flags & IOT_QF_NO_BACKEND) && e->backend && e->nreqs) {
		struct iot_qemu_event b = { .ts = e->ts, .pid = e->pid, .tid = e->tid, .type = IOT_QEV_BACKEND,
					    .op = e->op == IOT_OP_WRITE ? QAIO_WRITE : QAIO_READ, .offset = e->offset,
					    .bytes = e->bytes, .req = e->reqs[0].req, .req_ts = e->ts, .fd = e->fd,
					    .backend = e->backend, .iov = e->iov };

		on_backend(c, &b);
	}
}

static struct fdent *fd_info(struct corr *c, uint32_t pid, int fd)
{
	struct fdent *f = &c->fds[(unsigned int)(pid * 31 + fd) % FDCACHE_MAX];
	char path[64], sys[128], buf[64];
	struct stat st;
	FILE *sf;

	if (f->valid && f->pid == pid && f->fd == fd)
		return f;
	if (f->valid && f->own_fd >= 0)
		close(f->own_fd);
	memset(f, 0, sizeof(*f));
	f->own_fd = -1;
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", pid, fd);
	if (stat(path, &st))
		return NULL;
	f->pid = pid;
	f->fd = fd;
	f->ino = st.st_ino;
	f->disk = (major(st.st_dev) << 20) | minor(st.st_dev);
	/* A file system on a partition: bios are counted from the start of the whole disk. */
	snprintf(sys, sizeof(sys), "/sys/dev/block/%u:%u/start", major(st.st_dev), minor(st.st_dev));
	sf = fopen(sys, "re");
	if (sf) {
		if (fgets(buf, sizeof(buf), sf))
			f->part_start = strtoull(buf, NULL, 10);
		fclose(sf);
		snprintf(sys, sizeof(sys), "/sys/dev/block/%u:%u/../dev", major(st.st_dev), minor(st.st_dev));
		sf = fopen(sys, "re");
		if (sf) {
			unsigned int ma, mi;

			if (fscanf(sf, "%u:%u", &ma, &mi) == 2)
				f->disk = ma << 20 | mi;
			fclose(sf);
		}
	}
	f->valid = true;
	return f;
}

/*
 * Where a file offset lies on the disk (sector), or IOT_UNKNOWN_U64 (a hole,
 * delayed allocation, or no FIEMAP). An unwritten extent is placed: QEMU
 * zero-fills a new qcow2 cluster with fallocate and writes its data into
 * it, and the file system marks it written only after the I/O, maybe long
 * after (tests/test_correlate.c, test_native_unwritten).
 */
static uint64_t file_sector(struct fdent *f, uint64_t offset, uint64_t len)
{
	struct {
		struct fiemap fm;
		struct fiemap_extent fe[1];
	} m = {};
	char path[64];

	if (f->own_fd < 0) {
		snprintf(path, sizeof(path), "/proc/%d/fd/%d", f->pid, f->fd);
		f->own_fd = open(path, O_RDONLY | O_CLOEXEC);
		if (f->own_fd < 0)
			return IOT_UNKNOWN_U64;
	}
	m.fm.fm_start = offset;
	m.fm.fm_length = len ? len : 1;
	m.fm.fm_extent_count = 1;
	if (ioctl(f->own_fd, FS_IOC_FIEMAP, &m.fm) || m.fm.fm_mapped_extents < 1)
		return IOT_UNKNOWN_U64;
	if (m.fe[0].fe_logical > offset || (m.fe[0].fe_flags & (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC)))
		return IOT_UNKNOWN_U64;
	return (m.fe[0].fe_physical + (offset - m.fe[0].fe_logical)) / 512 + f->part_start;
}

static uint32_t backend_op(uint32_t type)
{
	return type & QAIO_READ ? IOT_OP_READ : type & QAIO_WRITE ? IOT_OP_WRITE
		: type & QAIO_FLUSH ? IOT_OP_FSYNC : IOT_OP_OTHER;
}

/* Remembers a file QEMU does its block I/O on. */
static void note_image(struct corr *c, uint32_t pid, uint64_t ino)
{
	for (int i = 0; i < c->nimages; i++)
		if (c->images[i].pid == pid && c->images[i].ino == ino)
			return;
	if (c->nimages < IMAGES_MAX) {
		c->images[c->nimages].pid = pid;
		c->images[c->nimages++].ino = ino;
	}
}

/* A fresh backend call entry (the window's oldest reused), zeroed, not indexed. */
static int32_t back_alloc(struct corr *c)
{
	int32_t bi = c->bnext++ & (BK_MAX - 1);
	struct back *b = &c->b[bi];
	uint32_t gen;

	if (b->used)
		bunlink(c, bi);
	gen = b->gen;
	memset(b, 0, offsetof(struct back, nx));
	b->gen = (gen + 2) | 1;
	b->used = true;
	return bi;
}

/* Hangs backend call bi on the submit whose first request is qi (which has room for it). */
static void back_hang(struct corr *c, int32_t bi, int32_t qi)
{
	struct qreq *g = &c->q[qi];
	struct back *b = &c->b[bi];

	b->q = qi;
	b->qgen = g->gen;
	g->back[g->nback] = bi;
	g->back_gen[g->nback++] = b->gen;
}

static void on_backend(struct corr *c, const struct iot_qemu_event *e)
{
	int32_t qi, bi, named = NO_IDX, by_iov = NO_IDX;
	struct qreq *g;
	struct back *b;
	struct fdent *f;

	c->st.backends++;
	/*
	 * The submit this call serves. The probe names the thread's latest
	 * (request and time): right for a call made during the submit, which
	 * is among the latest few read. A call made later, when the main loop
	 * resumes a request's coroutine (qcow2 reading its metadata first),
	 * comes from another request's turn: the data buffers it hands down,
	 * when they are some recent submit's, name the submit it serves. A
	 * call whose buffers are no submit's (qcow2's own metadata I/O) stays
	 * with the one the probe named.
	 */
	for (uint32_t k = 0; k < RECENT_MAX && k < c->nrecent; k++) {
		uint32_t n = (c->nrecent - 1 - k) % RECENT_MAX;

		if (c->recent[n].pid != e->pid || c->q[c->recent[n].i].gen != c->recent[n].gen)
			continue;
		if (named == NO_IDX && e->req && c->recent[n].reqptr == e->req && c->recent[n].ts == e->req_ts)
			named = c->recent[n].i;
		if (e->iov && c->recent[n].iov == e->iov) {
			by_iov = c->recent[n].i;
			break;
		}
	}
	/*
	 * The thread's latest submit may be long done (QEMU flushing every
	 * drive as it exits): a call it cannot have made is not its. A read
	 * makes reads only (qcow2 metadata and data); a flush, writes
	 * (metadata written back) and the sync.
	 */
	if (named != NO_IDX && by_iov == NO_IDX &&
	    (c->q[named].op == IOT_OP_READ ? backend_op(e->op) != IOT_OP_READ
					   : c->q[named].op == IOT_OP_FLUSH && backend_op(e->op) == IOT_OP_READ))
		named = NO_IDX;
	qi = by_iov != NO_IDX ? by_iov : named;
	if (by_iov != NO_IDX) {
		c->st.backends_by_iov++;
		if (by_iov != named)
			c->st.backends_relinked++;
	}
	if (qi == NO_IDX || backend_op(e->op) == IOT_OP_OTHER) {
		c->st.backends_unlinked++;
		return;
	}
	g = &c->q[qi];
	if (g->nback == GROUP_BACK_MAX)
		return;
	f = fd_info(c, e->pid, e->fd);
	if (!f) {
		c->st.backends_unlinked++;
		return;
	}
	bi = back_alloc(c);
	b = &c->b[bi];
	b->pid = e->pid;
	b->kind = e->backend;
	b->op = backend_op(e->op);
	b->ino = f->ino;
	b->dev = f->disk;
	note_image(c, e->pid, f->ino);
	b->offset = b->op == IOT_OP_FSYNC ? 0 : e->offset;
	b->bytes = e->bytes;
	b->ts = e->ts;
	b->host_sector = IOT_UNKNOWN_U64;
	b->fd = e->fd;
	b->link = by_iov != NO_IDX ? LINK_BUFFERS : LINK_THREAD;
	if (b->kind == IOT_QB_NATIVE && b->op != IOT_OP_FSYNC) {
		/* Linux AIO is seen per bio on the disk: key it by where the file offset lies. */
		b->host_sector = file_sector(f, e->offset, e->bytes);
		if (b->host_sector == IOT_UNKNOWN_U64) {
			/*
			 * Not on the disk yet (delayed allocation: the direct I/O
			 * itself makes the file system place it) or a hole: look
			 * again when Linux AIO bios arrive that nothing claims.
			 */
			if (c->nunresolved < UNRESOLVED_MAX) {
				c->unresolved[c->nunresolved] = bi;
				c->unresolved_gen[c->nunresolved++] = b->gen;
			}
		}
	}
	back_hang(c, bi, qi);
	if (b->kind != IOT_QB_NATIVE || b->host_sector != IOT_UNKNOWN_U64 || b->op == IOT_OP_FSYNC)
		blink(c, bi);
}

/*
 * A QEMU probed through USDT reports each read and write as its own submit
 * when virtio-blk takes it; requests it then merges into one block-layer
 * call become one submit with several, as blk_aio_* shows them: the first
 * one's host I/O is theirs too. The first one is the thread's submit from
 * now on (backend calls are named by it) and carries the merged I/O vector.
 */
static void on_merge(struct corr *c, const struct iot_qemu_event *e)
{
	int32_t idx[IOT_QEMU_CHAIN_MAX];
	uint32_t slot0 = 0;

	c->st.qemu_merges++;
	for (int i = 0; i < e->nreqs && i < IOT_QEMU_CHAIN_MAX; i++) {
		idx[i] = NO_IDX;
		for (uint32_t k = 0; k < RECENT_MAX && k < c->nrecent; k++) {
			uint32_t n = (c->nrecent - 1 - k) % RECENT_MAX;

			if (c->recent[n].pid == e->pid && c->recent[n].reqptr == e->reqs[i].req &&
			    c->q[c->recent[n].i].gen == c->recent[n].gen) {
				idx[i] = c->recent[n].i;
				if (!i)
					slot0 = n;
				break;
			}
		}
		if (idx[i] == NO_IDX) {
			c->st.qemu_merge_unknown++;
			if (!i)
				return;
		}
	}
	c->recent[slot0].ts = e->ts;
	c->recent[slot0].iov = e->iov;
	for (int i = 1; i < e->nreqs && i < IOT_QEMU_CHAIN_MAX; i++) {
		if (idx[i] == NO_IDX)
			continue;
		c->q[idx[i]].group = idx[0];
		c->q[idx[i]].group_gen = c->q[idx[0]].gen;
	}
}

void corr_qemu_event(struct corr *c, const struct iot_qemu_event *e)
{
	if (e->type == IOT_QEV_SUBMIT)
		on_submit(c, e);
	else if (e->type == IOT_QEV_BACKEND)
		on_backend(c, e);
	else if (e->type == IOT_QEV_MERGE)
		on_merge(c, e);
}

/* ---- host kernel side ---- */

static uint64_t first_ts(const struct iot_record *r)
{
	return iot_ts_at(r, iot_first_slot(r));
}

static uint64_t last_ts(const struct iot_record *r)
{
	return iot_ts_at(r, iot_last_slot(r));
}

/* Native backend calls whose sector was unknown: those placed on the disk since join the index. */
static void resolve_native(struct corr *c)
{
	int k = 0;

	for (int i = 0; i < c->nunresolved; i++) {
		struct back *b = &c->b[c->unresolved[i]];
		struct fdent *f;

		if (b->gen != c->unresolved_gen[i] || b->linked)
			continue;
		f = fd_info(c, b->pid, b->fd);
		b->host_sector = f ? file_sector(f, b->offset, b->bytes) : IOT_UNKNOWN_U64;
		if (b->host_sector != IOT_UNKNOWN_U64) {
			blink(c, c->unresolved[i]);
			continue;
		}
		c->unresolved[k] = c->unresolved[i];
		c->unresolved_gen[k++] = c->unresolved_gen[i];
	}
	c->nunresolved = k;
}

static bool link_host_record(struct corr *c, const struct iot_record *r);
static bool link_by_buffers(struct corr *c, const struct iot_record *r);
static bool link_flush(struct corr *c, const struct iot_record *r);

/* Could r be I/O on an image QEMU's backend calls use? (Its console log, say, is not.) */
static bool on_an_image(const struct corr *c, const struct iot_record *r)
{
	if (r->kind == IOT_KIND_AIO)
		return true;
	if (r->op != IOT_OP_READ && r->op != IOT_OP_WRITE && r->op != IOT_OP_FSYNC)
		return false;
	for (int i = 0; i < c->nimages; i++)
		if (c->images[i].pid == r->pid && c->images[i].ino == r->inode)
			return true;
	return false;
}

/* A host record a lean QEMU's request may claim directly. */
static bool lean_candidate(const struct corr *c, const struct iot_record *r)
{
	if (r->kind != IOT_KIND_SYSCALL && r->kind != IOT_KIND_URING)
		return false;
	if (r->op == IOT_OP_FSYNC)
		return is_lean(c, r->pid);
	return r->ubuf && (r->op == IOT_OP_READ || r->op == IOT_OP_WRITE) && is_lean(c, r->pid);
}

static bool try_link(struct corr *c, const struct iot_record *r)
{
	if (lean_candidate(c, r))
		return r->op == IOT_OP_FSYNC ? link_flush(c, r) : link_by_buffers(c, r);
	if (link_host_record(c, r))
		return true;
	if (r->kind == IOT_KIND_AIO && c->nunresolved) {
		resolve_native(c);
		return link_host_record(c, r);
	}
	return false;
}

void corr_host_record(struct corr *c, const struct iot_record *r)
{
	c->st.host_records++;
	if (try_link(c, r))
		return;
	/*
	 * The QEMU events are read before the host kernel's, but a fast I/O
	 * can complete between the two reads: its backend call is then read
	 * on the next round. Such records wait for it (bounded).
	 */
	if ((on_an_image(c, r) || lean_candidate(c, r)) && c->npending < PENDING_HOST_MAX) {
		c->pending[c->npending] = *r;
		c->pending_since[c->npending++] = 0;
	}
}

/* Retries the waiting host records; those that waited hold_ns are given up. */
static void retry_pending(struct corr *c, uint64_t now)
{
	int k = 0;

	for (int i = 0; i < c->npending; i++) {
		if (!c->pending_since[i])
			c->pending_since[i] = now;
		if (try_link(c, &c->pending[i]) || now - c->pending_since[i] >= c->o.hold_ns)
			continue;
		if (k != i) {
			c->pending[k] = c->pending[i];
			c->pending_since[k] = c->pending_since[i];
		}
		k++;
	}
	c->npending = k;
}

static void hio_fill(struct hio *h, const struct iot_record *r)
{
	h->kind = r->kind;
	h->syscall = r->syscall;
	h->uring_opcode = r->uring_opcode;
	h->tid = r->tid;
	h->len = r->len;
	h->dev = r->dev;
	h->start = first_ts(r);
	h->end = last_ts(r);
	h->dev_issue = r->ts[IOT_TS_RQ_ISSUE];
	h->dev_complete = r->ts[IOT_TS_RQ_COMPLETE] ? r->ts[IOT_TS_RQ_COMPLETE] : r->ts[IOT_TS_BIO_END];
	h->offset = r->offset;
	h->sector = r->sector;
	h->result = r->result;
}

/* Hangs host I/O r on lean request qi as if a backend call had carried it. */
static void lean_attach(struct corr *c, int32_t qi, const struct iot_record *r, enum back_link how)
{
	struct qreq *g = &c->q[qi];
	struct back *b;
	int32_t bi;

	g->served = true;
	if (g->nback == GROUP_BACK_MAX)
		return;
	bi = back_alloc(c);
	b = &c->b[bi];
	b->pid = r->pid;
	b->kind = r->kind == IOT_KIND_URING ? IOT_QB_URING : IOT_QB_THREADS;
	b->op = r->op;
	b->ino = r->inode;
	b->dev = r->dev;
	b->offset = r->op == IOT_OP_FSYNC ? 0 : r->offset;
	b->bytes = r->len;
	b->ts = first_ts(r);
	b->host_sector = IOT_UNKNOWN_U64;
	b->fd = -1;
	b->link = how;
	b->linked = true;
	hio_fill(&b->h, r);
	back_hang(c, bi, qi);
	note_image(c, r->pid, r->inode);
	if (g->blk && r->inode)
		pairs_set(&c->drive_files, r->pid, g->blk, r->inode);
}

/*
 * A lean QEMU's read or write: the newest submit of the same first buffer
 * made before the I/O began (a buffer is reused only once its request is
 * done), at the same offset (a raw image's offset is the guest's) and
 * operation, not served yet. On the kernel route the submit is stamped
 * inside the I/O itself (its io_uring submission, after io_uring_enter
 * began): before the I/O ended, then.
 */
static bool link_by_buffers(struct corr *c, const struct iot_record *r)
{
	struct qreq key = { .pid = r->pid, .buf = r->ubuf };
	uint64_t start = first_ts(r), end = last_ts(r);

	for (int32_t i = qfirst(c, &key, IX_BUF); i != NO_IDX; i = qnext(c, i, IX_BUF)) {
		const struct qreq *q = &c->q[i];

		if (q->pid != r->pid || q->buf != r->ubuf || q->submit_ts > (q->kernel ? end : start) || q->served ||
		    q->op != r->op ||
		    (r->offset != IOT_UNKNOWN_U64 && r->offset != q->sector * 512))
			continue;
		lean_attach(c, i, r, LINK_BUFFERS);
		c->st.host_by_buffers++;
		c->st.host_linked++;
		return true;
	}
	return false;
}

/*
 * A lean QEMU's sync: the oldest flush of that process among the latest
 * submits, made before it and not served, on a drive not seen on another
 * file.
 */
static bool link_flush(struct corr *c, const struct iot_record *r)
{
	uint64_t start = first_ts(r);

	for (uint32_t k = c->nrecent > RECENT_MAX ? c->nrecent - RECENT_MAX : 0; k < c->nrecent; k++) {
		uint32_t n = k % RECENT_MAX;
		const struct qreq *q = &c->q[c->recent[n].i];
		uint64_t ino;

		if (c->recent[n].pid != r->pid || q->gen != c->recent[n].gen || !q->lean || q->op != IOT_OP_FLUSH ||
		    q->served || q->submit_ts > start)
			continue;
		ino = pairs_get(&c->drive_files, r->pid, q->blk);
		if (ino && r->inode && ino != r->inode)
			continue;
		lean_attach(c, c->recent[n].i, r, LINK_ORDER);
		c->st.host_flush_by_order++;
		c->st.host_linked++;
		return true;
	}
	return false;
}

static bool link_host_record(struct corr *c, const struct iot_record *r)
{
	struct back key = { .pid = r->pid, .ino = r->inode, .op = r->op };
	uint32_t op = r->op;
	int32_t best = NO_IDX;

	if (r->kind == IOT_KIND_AIO) {
		if (r->sector == IOT_UNKNOWN_U64)
			return false;
		key.kind = IOT_QB_NATIVE;
		key.dev = r->dev;
		key.host_sector = r->sector;
	} else if (r->kind == IOT_KIND_SYSCALL || r->kind == IOT_KIND_URING) {
		if (!r->inode)
			return false;
		key.offset = op == IOT_OP_FSYNC ? 0 : r->offset;
	} else {
		return false;
	}
	/* The oldest backend call with this key not yet served. */
	for (int32_t i = c->bhead[bbucket(&key)]; i != NO_IDX; i = c->b[i].nx) {
		struct back *b = &c->b[i];

		if (b->linked || b->pid != r->pid || b->op != op)
			continue;
		if (key.kind == IOT_QB_NATIVE ? (b->kind != IOT_QB_NATIVE || b->dev != r->dev ||
						b->host_sector != r->sector)
					      : (b->kind == IOT_QB_NATIVE || b->ino != r->inode || b->offset != key.offset))
			continue;
		if (best == NO_IDX || b->ts < c->b[best].ts)
			best = i;
	}
	if (best == NO_IDX)
		return false;
	hio_fill(&c->b[best].h, r);
	c->b[best].linked = true;
	bunlink(c, best);
	c->st.host_linked++;
	return true;
}

/* ---- guest side ---- */

static bool is_virtio_request(const struct iot_record *r)
{
	return r->driver == IOT_DRV_VIRTIO_BLK && r->sector != IOT_UNKNOWN_U64 &&
	       (r->nr_bios > 0 || r->kind == IOT_KIND_BIO || r->kind == IOT_KIND_AIO);
}

/* Bytes of the guest's first request: the record's own I/O when it is one request. */
static uint64_t guest_req_len(const struct iot_record *r)
{
	if (r->kind == IOT_KIND_BIO || r->kind == IOT_KIND_AIO)
		return r->len;
	return r->nr_bios == 1 ? r->bio_bytes : 0;	/* 0: several requests, length not checked */
}

static uint64_t guest_kick(const struct iot_record *r)
{
	return r->ts[IOT_TS_DRIVER] ? r->ts[IOT_TS_DRIVER] : r->ts[IOT_TS_RQ_ISSUE] ? r->ts[IOT_TS_RQ_ISSUE]
								: first_ts(r);
}

static bool cross_check(const struct qreq *q, const struct iot_record *r)
{
	uint64_t len = guest_req_len(r);

	return q->op == r->op && (q->op == IOT_OP_FLUSH || q->sector == r->sector) && (!len || q->len == len);
}

/*
 * The earliest QEMU can have taken the request: virtio_queue_rq() adds it to
 * the ring right after its issue, and a device already working through the
 * ring takes it then, with no kick (the kick of a later batch can come
 * milliseconds after).
 */
static uint64_t guest_avail(const struct iot_record *r)
{
	return r->ts[IOT_TS_RQ_ISSUE] ? r->ts[IOT_TS_RQ_ISSUE] : guest_kick(r);
}

/* The QEMU request of a guest record: earliest unclaimed with the key, taken after the guest issued it. */
static enum corr_reason find_qreq(struct corr *c, struct held *h, int32_t *ret)
{
	const struct iot_record *r = &h->r;
	uint64_t tol = h->unc + 2000000, avail = guest_avail(r), end = last_ts(r);
	bool by_gpa = r->vq_gpa != 0, disagree = false;
	/* The fallback key holds the drive too, where an exact match has shown which one it is. */
	uint64_t drive = by_gpa ? 0 : pairs_get(&c->drives, h->pid, r->dev);
	struct qreq key = { .pid = h->pid, .gpa = r->vq_gpa, .sector = r->sector, .op = r->op };
	int ix = by_gpa ? IX_GPA : IX_SECTOR;
	int32_t best = NO_IDX;

	/*
	 * Chains are newest first. A header address is reused by every request
	 * of the same slot, so a chain holds the window's history of it: stop
	 * at the first of this VM's requests taken before the guest issued it.
	 */
	for (int32_t i = qfirst(c, &key, ix); i != NO_IDX; i = qnext(c, i, ix)) {
		struct qreq *q = &c->q[i];

		if (q->pid != h->pid)
			continue;
		if (!h->guest_clock && q->submit_ts + tol < avail)
			break;
		if (q->matched)
			continue;
		if (by_gpa ? q->gpa != r->vq_gpa : (q->sector != r->sector || q->op != r->op))
			continue;
		/* Time only orders reuse of a key: the request QEMU took after this issue and before the end. */
		if (!h->guest_clock && (q->submit_ts + tol < avail || q->submit_ts > end + tol))
			continue;
		if (!cross_check(q, r) || (drive && q->blk != drive)) {
			disagree = true;
			continue;
		}
		if (best == NO_IDX || q->submit_ts < c->q[best].submit_ts)
			best = i;
	}
	if (best == NO_IDX)
		return disagree ? CORR_KEY_DISAGREES : CORR_NO_QEMU_REQ;
	*ret = best;
	return by_gpa ? CORR_MATCHED_GPA : CORR_MATCHED_SECTOR;
}

static void force_oldest(struct corr *c, enum corr_reason why);

void corr_guest_record(struct corr *c, int vm_pid, const char *guest, bool guest_clock, uint64_t unc_ns,
		       const struct iot_record *r)
{
	struct held *h;
	size_t n;

	if (c->hcount == HOLD_MAX) {
		/* The oldest waits no longer. */
		force_oldest(c, CORR_HOLD_FULL);
	}
	h = &c->h[(c->hfirst + c->hcount++) & (HOLD_MAX - 1)];
	memset(h, 0, sizeof(*h));
	h->arrival = 0;
	c->hnew++;
	h->pid = vm_pid;
	/* Not snprintf: a record's worth of formatting, per record, showed in a profile. */
	n = strnlen(guest, sizeof(h->guest) - 1);
	memcpy(h->guest, guest, n);	/* h was zeroed: terminated */
	h->guest_clock = guest_clock;
	h->unc = unc_ns;
	h->q = NO_IDX;
	h->r = *r;
	if (!is_virtio_request(r)) {
		h->decided = true;
		h->reason = CORR_NOT_VIRTIO;
	} else if (!vm_pid) {
		h->decided = true;
		h->reason = CORR_NO_VM;
	}
}

/* Appends printf output to a growing buffer. */
struct sb {
	char *p;
	size_t len, cap;
	bool off;		/* the output format does not want this one: build nothing */
};

static void sbf(struct sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sbf(struct sb *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->off || b->len >= b->cap)
		return;
	va_start(ap, fmt);
	n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	b->len = n < 0 ? b->cap : b->len + n >= b->cap ? b->cap : b->len + n;
}

/* The call a host I/O was: a system call's name, "io_uring", or its kind. */
static const char *hio_what(const struct hio *h)
{
	if (h->kind == IOT_KIND_SYSCALL)
		return iot_syscall_name(h->syscall);
	return h->kind == IOT_KIND_URING ? "io_uring" : iot_kind_name(h->kind);
}

static void seg_add(struct corr *c, struct sbuf *js, struct sb *tx, int s, uint64_t from, uint64_t to)
{
	int64_t ns;

	if (!from || !to)
		return;
	ns = (int64_t)(to - from);
	hist_add(&c->seg[s], ns > 0 ? ns : 0);
	if (js) {
		if (js->w && js->w <= js->len && js->p[js->w - 1] != '[')
			SB_LIT(js, ",");
		SB_LIT(js, "{\"seg\":\"");
		sb_str(js, vseg_names[s]);
		SB_LIT(js, "\",\"ns\":");
		sb_i64(js, ns);
		SB_LIT(js, "}");
	}
	sbf(tx, " %s %.1f", vseg_names[s], ns / 1e3);
}

static const char *const backend_names[] = {
	[IOT_QB_THREADS] = "threads", [IOT_QB_URING] = "io_uring", [IOT_QB_NATIVE] = "native",
};

/*
 * One guest record, joined: written as the guest's record plus a "host"
 * object (JSON, built with plain appends: this runs for every guest request)
 * or a "| host: ..." tail (text).
 */
static void emit(struct corr *c, struct held *h)
{
	static char jbuf[8192], tbuf[2048];
	struct sbuf jb = { jbuf, sizeof(jbuf), 0 };
	struct sbuf *js = c->o.json && !c->o.summary_only ? &jb : NULL;
	struct sb tx = { tbuf, 0, sizeof(tbuf), c->o.json || c->o.summary_only };
	const struct iot_record *r = &h->r;
	enum corr_reason why = h->reason;
	bool matched = why == CORR_MATCHED_GPA || why == CORR_MATCHED_SECTOR;
	struct perfetto_host px = { .machine = "host", .qemu_pid = h->pid };
	bool joined = false;

	c->st.guest[why]++;
	if (js) {
		SB_LIT(js, "\"host\":{\"match\":\"");
		sb_str(js, matched ? corr_reason_name(why) : "none");
		SB_LIT(js, "\"");
		if (!matched)
			sb_kv_str(js, "reason", corr_reason_name(why));
		if (h->pid)
			sb_kv_u64(js, "qemu_pid", h->pid);
	}
	if (!matched && why != CORR_NOT_VIRTIO)
		sbf(&tx, "| host: unmatched (%s)", reason_text(why));
	if (matched && h->q != NO_IDX && c->q[h->q].gen == h->qgen) {
		const struct qreq *q = &c->q[h->q];
		const struct qreq *g = &c->q[q->group];
		uint64_t hs = 0, he = 0, ds = 0, de = 0;
		int nh = 0;

		joined = true;
		px.match = corr_reason_name(why);
		px.gpa = q->gpa;
		px.kick_ns = guest_kick(r);
		px.submit_ns = q->submit_ts;
		px.kernel = q->kernel;
		px.qemu_tid = q->tid;
		if (js) {
			SB_LIT(js, ",\"qemu\":{\"head\":");
			sb_u64(js, q->head);
			sb_kv_u64(js, "gpa", q->gpa);
			sb_kv_u64(js, "sector", q->sector);
			sb_kv_u64(js, "len", q->len);
			sb_kv_str(js, "op", iot_op_name(q->op));
			sb_kv_u64(js, "submit_ns", q->submit_ts);
			/* Where QEMU's request was seen: its probes, or the host kernel's io_uring submission. */
			sb_kv_str(js, "seen_at", q->kernel ? "host_submit" : "qemu");
			SB_LIT(js, "},\"host_io\":[");
		}
		if (g->gen == q->group_gen) {
			for (int i = 0; i < g->nback; i++) {
				const struct back *b = &c->b[g->back[i]];
				const char *what;

				if (b->gen != g->back_gen[i] || !b->h.start)
					continue;
				what = hio_what(&b->h);
				if (px.nio < PERFETTO_HOST_IO_MAX)
					px.io[px.nio++] = (struct perfetto_host_io){
						.start_ns = b->h.start, .end_ns = b->h.end, .offset = b->offset,
						.len = b->bytes, .sector = b->h.sector, .tid = b->h.tid, .call = what };
				if (js) {
					if (nh)
						SB_LIT(js, ",");
					SB_LIT(js, "{\"kind\":\"");
					sb_str(js, iot_kind_name(b->h.kind));
					SB_LIT(js, "\"");
					sb_kv_str(js, "call", what);
					sb_kv_str(js, "backend", b->kind < sizeof(backend_names) / sizeof(backend_names[0]) &&
						  backend_names[b->kind] ? backend_names[b->kind] : "native");
					/* How the backend call was tied to this QEMU request. */
					sb_kv_str(js, "linked_by", link_names[b->link]);
					sb_kv_u64(js, "tid", b->h.tid);
					sb_kv_u64(js, "inode", b->ino);
					sb_kv_u64(js, "offset", b->offset);
					sb_kv_u64(js, "len", b->bytes);
					sb_kv_u64(js, "start_ns", b->h.start);
					sb_kv_u64(js, "end_ns", b->h.end);
					if (b->h.sector != IOT_UNKNOWN_U64)
						sb_kv_u64(js, "sector", b->h.sector);
					if (b->h.dev_issue && b->h.dev_complete)
						sb_kv_u64(js, "device_ns", b->h.dev_complete - b->h.dev_issue);
					SB_LIT(js, "}");
				}
				if (!nh++)
					sbf(&tx, "| host:");
				sbf(&tx, " %s@%" PRIu64 "+%" PRIu64, what, b->offset, b->bytes);
				hs = !hs || b->h.start < hs ? b->h.start : hs;
				he = b->h.end > he ? b->h.end : he;
				if (b->h.dev_issue && (!ds || b->h.dev_issue < ds))
					ds = b->h.dev_issue;
				de = b->h.dev_complete > de ? b->h.dev_complete : de;
			}
		}
		if (js)
			SB_LIT(js, "],\"split_ns\":[");
		if (nh)
			c->st.with_host_io++;
		else
			sbf(&tx, "| host: matched (%s), no host I/O seen", corr_reason_name(why));
		seg_add(c, js, &tx, VS_GUEST_ISSUE, first_ts(r), guest_kick(r));
		if (q->kernel) {
			seg_add(c, js, &tx, VS_KICK_HOST, guest_kick(r), hs);
		} else {
			seg_add(c, js, &tx, VS_KICK_QEMU, guest_kick(r), q->submit_ts);
			seg_add(c, js, &tx, VS_QEMU_HOST, q->submit_ts, hs);
		}
		seg_add(c, js, &tx, VS_HOST_IO, hs, he);
		if (ds && de)
			seg_add(c, js, &tx, VS_HOST_DEVICE, ds, de);
		seg_add(c, js, &tx, VS_HOST_GUEST_IRQ, he, r->ts[IOT_TS_IRQ] ? r->ts[IOT_TS_IRQ] : r->ts[IOT_TS_RQ_COMPLETE]);
		seg_add(c, js, &tx, VS_GUEST_DONE, r->ts[IOT_TS_IRQ] ? r->ts[IOT_TS_IRQ] : r->ts[IOT_TS_RQ_COMPLETE],
			last_ts(r));
		hist_add(&c->seg[VS_TOTAL], last_ts(r) - first_ts(r));
		if (js)
			SB_LIT(js, "]");
	}
	if (js) {
		sb_kv_u64(js, "clock_uncertainty_ns", h->unc);
		SB_LIT(js, "}");
		/* Bounded by the backend calls a request can have: never cut here, and never overrun. */
		jbuf[js->w < sizeof(jbuf) ? js->w : sizeof(jbuf) - 1] = 0;
	}
	output__record_src_ext(c->o.out, r, h->guest, h->guest_clock, js ? jbuf : NULL, tx.len ? tbuf : NULL);
	if (c->o.pf) {
		if (joined)
			perfetto__record_host(c->o.pf, r, h->guest, h->guest_clock, &px);
		else
			perfetto__record(c->o.pf, r, h->guest, h->guest_clock);
	}
}

/* Has every backend call of the request's submit found its host I/O? */
static bool host_side_done(const struct corr *c, const struct held *h)
{
	const struct qreq *q = &c->q[h->q];
	const struct qreq *g = &c->q[q->group];

	if (q->gen != h->qgen || g->gen != q->group_gen)
		return false;
	/*
	 * No backend call: QEMU makes them before it completes the request, so
	 * once every event from before the guest saw it complete has been read,
	 * there is none to wait for (a null-co drive, an emulated error).
	 */
	if (!g->nback)
		return !h->guest_clock && c->drained_ns > last_ts(&h->r) + h->unc + DRAIN_SLACK_NS;
	for (int i = 0; i < g->nback; i++)
		if (c->b[g->back[i]].gen != g->back_gen[i] || !c->b[g->back[i]].linked)
			return false;
	return true;
}

/* Decides a held record if it can be; true when it can be written out now. */
static bool resolve(struct corr *c, struct held *h, uint64_t now)
{
	bool timed_out;

	if (!h->arrival)
		h->arrival = now;
	timed_out = now - h->arrival >= c->o.hold_ns;
	if (!h->decided) {
		int32_t qi = NO_IDX;
		enum corr_reason why = find_qreq(c, h, &qi);

		if (why == CORR_MATCHED_GPA || why == CORR_MATCHED_SECTOR) {
			if (why == CORR_MATCHED_GPA && c->q[qi].blk)
				pairs_set(&c->drives, h->pid, h->r.dev, c->q[qi].blk);	/* which drive serves the disk */
			c->q[qi].matched = true;
			h->q = qi;
			h->qgen = c->q[qi].gen;
		} else if (!timed_out) {
			return false;
		}
		h->reason = why;
		h->decided = true;
	}
	return h->q == NO_IDX || timed_out || host_side_done(c, h);
}

static void pop_held(struct corr *c)
{
	emit(c, &c->h[c->hfirst]);
	c->hfirst = (c->hfirst + 1) & (HOLD_MAX - 1);
	c->hcount--;
	if (c->hnew > c->hcount)
		c->hnew = c->hcount;
}

/*
 * Writes out the oldest held record now, decided with what is known; one
 * still without its QEMU request is unmatched for the reason given.
 */
static void force_oldest(struct corr *c, enum corr_reason why)
{
	struct held *h = &c->h[c->hfirst];

	if (!h->arrival)
		h->arrival = 1;
	resolve(c, h, UINT64_MAX - 1);
	if (h->reason == CORR_NO_QEMU_REQ)
		h->reason = why;
	pop_held(c);
}

void corr_drained(struct corr *c, uint64_t ts)
{
	c->drained_ns = ts;
}

void corr_tick(struct corr *c, uint64_t now)
{
	if (c->npending)
		retry_pending(c, now);
	for (uint32_t k = c->hcount - c->hnew; k < c->hcount; k++)
		c->h[(c->hfirst + k) & (HOLD_MAX - 1)].arrival = now;
	c->hnew = 0;
	while (c->hcount && resolve(c, &c->h[c->hfirst], now))
		pop_held(c);
}

void corr_flush(struct corr *c)
{
	while (c->hcount)
		force_oldest(c, CORR_NO_QEMU_REQ);
}

void corr_get_stats(const struct corr *c, struct corr_stats *ret)
{
	*ret = c->st;
}

void corr_summary(const struct corr *c, FILE *f, bool json)
{
	if (json) {
		fprintf(f, "{\"type\":\"vm_summary\",\"segments\":{");
		for (int i = 0; i < VS_MAX; i++) {
			const struct hist *h = &c->seg[i];

			fprintf(f, "%s\"%s\":{\"count\":%" PRIu64 ",\"p50_ns\":%" PRIu64 ",\"p90_ns\":%" PRIu64
				",\"p99_ns\":%" PRIu64 ",\"max_ns\":%" PRIu64 "}", i ? "," : "", vseg_names[i], h->count,
				hist_percentile(h, 50), hist_percentile(h, 90), hist_percentile(h, 99), h->max);
		}
		fprintf(f, "}}\n");
		return;
	}
	fprintf(f, "\nguest requests through QEMU and the host (us)\n  %-18s %9s %10s %10s %10s %10s\n", "segment",
		"count", "p50", "p90", "p99", "max");
	for (int i = 0; i < VS_MAX; i++) {
		const struct hist *h = &c->seg[i];

		if (h->count)
			fprintf(f, "  %-18s %9" PRIu64 " %10.1f %10.1f %10.1f %10.1f\n", vseg_names[i], h->count,
				hist_percentile(h, 50) / 1e3, hist_percentile(h, 90) / 1e3, hist_percentile(h, 99) / 1e3,
				h->max / 1e3);
	}
}
