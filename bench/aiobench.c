// SPDX-License-Identifier: GPL-2.0
/*
 * aiobench: the same batches of reads and writes through three async I/O
 * interfaces, io_uring (liburing), Linux native AIO (libaio) and POSIX AIO
 * (glibc), so that their costs can be compared.
 *
 * One iteration is one operation on each of N files (operation j on file j,
 * at block iteration % K), in batches of up to B operations. Every batch goes
 * through three phases, each marked with a pair of USDT probes (provider
 * "aiobench") that `iotracer aio` attaches to, and timed here as well:
 *
 *   submit  prepare the batch's requests and hand them to the kernel
 *   poll    wait until every request of the batch has completed
 *   clear   release what the completed requests held
 *
 * Every byte read is checked: each block carries a header (file, block,
 * generation) and a pseudo-random stream derived from the three, and a read
 * must find the generation the last write left there. After each engine's
 * run every block of every file is read back with pread and checked too.
 *
 * Probes (engine: 0 io_uring, 1 libaio, 2 posix; flags: 1 sqpoll,
 * 2 registered files, 4 registered buffers, 8 O_DIRECT):
 *   run_start(int engine, int flags, long long nfiles, long long batch,
 *             long long bs, long long iterations)
 *   run_end(int engine, long long ios)
 *   submit_start/poll_start/clear_start(int engine, long long n)
 *   submit_end/poll_end/clear_end(int engine, long long n_done)
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <aio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/sdt.h>
#include <libaio.h>
#include <liburing.h>
#include "../common/num.h"	/* by path: common/aio.h would hide <aio.h> */

#define EXIT_RUNTIME		1
#define EXIT_USAGE		2

/* Bounds on what the options may ask for. */
#define MAX_FILES		(1u << 20)	/* the kernel's default nr_open */
#define MAX_BLOCKS_TOTAL	(1u << 24)	/* files * blocks: generation table */
#define MAX_BS			(1u << 20)
#define MAX_BATCH		32768u		/* io_uring's largest ring */
#define MAX_REG_BUFS		16384u		/* io_uring's registered buffer table */
#define MAX_BUF_MEM		(1ull << 30)	/* batch buffers, all slots */
#define MAX_ITERATIONS		1000000u
#define FD_HEADROOM		64u		/* descriptors beside the files */
#define SQ_THREAD_IDLE_MS	2000u
#define STALL_TIMEOUT_S		60u	/* a wait that sees no completion this long fails */
#define RETRY_MAX		5000u	/* refused submissions, retried 1 ms apart */
#define ATTACH_TIMEOUT_S	600u
#define BUF_ALIGN		4096u

/* Every block starts with this header; the rest is a stream derived from it. */
struct blk_hdr {
	uint32_t magic;
	uint32_t file;
	uint32_t block;
	uint32_t gen;
};

#define BLK_MAGIC		0x626f6961u	/* "aiob" */
#define MIN_BS			((unsigned int)sizeof(struct blk_hdr))
#define READ_POISON		0xa5		/* read buffers hold this before the read */

enum engine_id { ENG_URING, ENG_LIBAIO, ENG_POSIX, NR_ENGINES };

static const char *const engine_names[NR_ENGINES] = { "io_uring", "libaio", "posix" };

/* run_start's flags. */
#define RF_SQPOLL		1
#define RF_REG_FILES		2
#define RF_REG_BUFS		4
#define RF_DIRECT		8

enum phase { PH_SUBMIT, PH_POLL, PH_CLEAR, NR_PHASES };

enum rw_mode { RW_READ, RW_WRITE, RW_MIX };

static const char *const rw_names[] = { "read", "write", "mix" };

struct cfg {
	int engines[NR_ENGINES];	/* in the order to run them */
	int nr_engines;
	const char *dir;
	bool keep, direct, sqpoll, reg_files, reg_bufs, json, wait_attach;
	unsigned int files, blocks, bs, batch, iterations, write_pct;
	enum rw_mode rw;
	uint64_t seed;
};

/* What one slot of the current batch does. */
struct op {
	uint32_t file;
	uint32_t block;
	uint32_t gen;		/* the generation written, or expected by a read */
	bool write;
	bool done;		/* its completion was seen */
};

/* The files, buffers and expected contents every engine shares. */
struct bench {
	const struct cfg *cfg;
	char dir[PATH_MAX];
	bool made_dir;		/* mkdtemp'd: removed at exit unless --keep */
	int dirfd;
	int *fds;
	unsigned int nfds;	/* files created (and open) so far */
	uint32_t *gen;		/* files * blocks: the generation each block holds */
	uint32_t gen_base;	/* generations written by the runs before this one */
	unsigned int slots;	/* buffers: min(batch, files) */
	size_t stride;		/* bytes between two slots' buffers */
	unsigned char *bufs;
	unsigned char *expect;	/* one block: what a check compares with */
	unsigned char *rbuf;	/* one block: pre-fill and read-back */
	struct op *ops;		/* slots */
};

struct stats {
	uint64_t calls[NR_PHASES];
	uint64_t ns[NR_PHASES];
	uint64_t ios;
	uint64_t verified;
};

/* One engine's run: the shared bench and the engine's own state. */
struct run {
	struct bench *b;
	int id;
	unsigned int inflight;	/* submitted, completion not yet reaped */
	struct stats st;
	uint64_t rng;		/* --rw mix choices */

	/* io_uring */
	struct io_uring ring;
	bool ring_ok;
	struct io_uring_cqe **cqes;
	unsigned int cq_pending;	/* peeked in poll, advanced in clear */

	/* libaio */
	io_context_t ctx;
	bool ctx_ok;
	struct iocb *iocbs;	/* the batch's iocbs, allocated in submit */
	struct iocb **iocbp;
	struct io_event *events;

	/* posix */
	struct aiocb *acbs;
	const struct aiocb **alist;
	bool *busy;		/* submitted, aio_return not yet called */
};

struct engine {
	int (*setup)(struct run *r);
	/* Each phase sets *ret_n to the requests it handled, even on error. */
	int (*submit)(struct run *r, unsigned int n, unsigned int *ret_n);
	int (*poll)(struct run *r, unsigned int n, unsigned int *ret_n);
	int (*clear)(struct run *r, unsigned int n, unsigned int *ret_n);
	/* Waits for what is still in flight and frees; safe after a failed setup. */
	void (*teardown)(struct run *r);
};

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* 1 ms pause between retries of a refused submission. */
static void retry_pause(void)
{
	struct timespec ts = { .tv_nsec = 1000000 };

	nanosleep(&ts, NULL);
}

/*
 * A submission call that took nothing (ret 0 or -errno): 0 after a pause when
 * it is worth another try (the queue is full, a signal came), else the error
 * to return, said with what was in.
 */
static int submit_refused(int ret, unsigned int *tries, const char *call, unsigned int done, unsigned int n)
{
	if (ret == -EINTR && stop_requested)
		return -EINTR;
	if ((ret == 0 || ret == -EAGAIN || ret == -EBUSY || ret == -EINTR) && ++*tries < RETRY_MAX) {
		retry_pause();
		return 0;
	}
	if (ret >= 0)
		ret = -EAGAIN;
	fprintf(stderr, "aiobench: %s: %u of %u requests in: %s\n", call, done, n, strerror(-ret));
	return ret;
}

/* ---------- block contents ---------- */

/* A 64-bit finalizer (splitmix64's): spreads small inputs over all bits. */
static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

/* A nonzero xorshift state from any 64-bit value. */
static uint64_t rng_seed(uint64_t v)
{
	uint64_t s = mix64(v);

	return s ? s : 0x2545f4914f6cdd1dull;
}

/* The contents of (file, block) at generation gen. */
static void fill_block(unsigned char *buf, unsigned int bs, uint32_t file, uint32_t block,
		       uint32_t gen)
{
	struct blk_hdr h = { BLK_MAGIC, file, block, gen };
	uint64_t s = rng_seed(mix64((uint64_t)file << 32 | block) ^ gen);
	size_t off = sizeof(h);
	uint64_t v;

	memcpy(buf, &h, sizeof(h));
	for (; off + sizeof(v) <= bs; off += sizeof(v)) {
		v = xorshift64(&s);
		memcpy(buf + off, &v, sizeof(v));
	}
	if (off < bs) {
		v = xorshift64(&s);
		memcpy(buf + off, &v, bs - off);
	}
}

/*
 * Checks that buf holds (file, block) at generation gen; otherwise says what
 * it holds instead. what names the check ("read", "read-back").
 */
static int verify_block(struct bench *b, const char *engine, const char *what,
			const unsigned char *buf, uint32_t file, uint32_t block, uint32_t gen)
{
	unsigned int bs = b->cfg->bs;
	struct blk_hdr h;
	char found[128];
	size_t off;

	fill_block(b->expect, bs, file, block, gen);
	if (!memcmp(buf, b->expect, bs))
		return 0;
	for (off = 0; off < bs && buf[off] == b->expect[off]; off++)
		;
	memcpy(&h, buf, sizeof(h));
	if (h.magic != BLK_MAGIC)
		snprintf(found, sizeof(found), "found no aiobench block header");
	else if (h.file != file || h.block != block)
		snprintf(found, sizeof(found), "found generation %u of file %u block %u",
			 h.gen, h.file, h.block);
	else if (h.gen != gen)
		snprintf(found, sizeof(found), "found generation %u", h.gen);
	else
		snprintf(found, sizeof(found), "found generation %u with a damaged body", h.gen);
	fprintf(stderr,
		"aiobench: %s: %s verification failed: file %u block %u: expected generation %u, %s (first wrong byte at offset %zu)\n",
		engine, what, file, block, gen, found, off);
	return -EIO;
}

static unsigned char *slot_buf(struct bench *b, unsigned int slot)
{
	return b->bufs + (size_t)slot * b->stride;
}

static uint32_t *gen_of(struct bench *b, uint32_t file, uint32_t block)
{
	return &b->gen[(size_t)file * b->cfg->blocks + block];
}

/* Checks one request's result: a whole block, or an error naming the request. */
static int check_result(struct run *r, unsigned int slot, long long res)
{
	const struct cfg *c = r->b->cfg;
	const struct op *op = &r->b->ops[slot];
	const char *name = engine_names[r->id];
	const char *kind = op->write ? "write" : "read";

	if (res == (long long)c->bs)
		return 0;
	if (res < 0) {
		fprintf(stderr, "aiobench: %s: %s of file %u block %u failed: %s%s\n", name, kind,
			op->file, op->block, strerror((int)-res),
			res == -EINVAL && c->direct ?
			" (with --direct, --bs must suit the device's O_DIRECT alignment)" : "");
		return (int)res;
	}
	fprintf(stderr, "aiobench: %s: %s of file %u block %u returned %lld, expected %u\n", name,
		kind, op->file, op->block, res, c->bs);
	return -EIO;
}

/* A completion the kernel handed back: a slot of this batch, seen once. */
static int check_completion(struct run *r, uint64_t slot, unsigned int n, long long res)
{
	struct op *op;

	if (slot >= n) {
		fprintf(stderr, "aiobench: %s: completion for unknown request %" PRIu64 "\n",
			engine_names[r->id], slot);
		return -EIO;
	}
	op = &r->b->ops[slot];
	if (op->done) {
		fprintf(stderr, "aiobench: %s: second completion for the %s of file %u block %u\n",
			engine_names[r->id], op->write ? "write" : "read", op->file, op->block);
		return -EIO;
	}
	op->done = true;
	return check_result(r, (unsigned int)slot, res);
}

/* ---------- io_uring ---------- */

static const char *uring_hint(int err)
{
	switch (err) {
	case -EPERM:
		return " (io_uring is disabled or not allowed here: see /proc/sys/kernel/io_uring_disabled)";
	case -ENOSYS:
		return " (this kernel has no io_uring)";
	case -ENOMEM:
		return " (out of memory, or RLIMIT_MEMLOCK too low)";
	default:
		return "";
	}
}

static int uring_setup(struct run *r)
{
	struct bench *b = r->b;
	const struct cfg *c = b->cfg;
	struct io_uring_params p = {};
	struct iovec *iov;
	unsigned int i;
	int err;

	r->cqes = calloc(b->slots, sizeof(*r->cqes));
	if (!r->cqes) {
		fprintf(stderr, "aiobench: io_uring: out of memory\n");
		return -ENOMEM;
	}
	if (c->sqpoll) {
		p.flags |= IORING_SETUP_SQPOLL;
		p.sq_thread_idle = SQ_THREAD_IDLE_MS;
	}
	/* batch SQ entries; the CQ gets twice as many, as by default. */
	err = io_uring_queue_init_params(c->batch, &r->ring, &p);
	if (err) {
		fprintf(stderr, "aiobench: io_uring: creating a ring of %u entries%s: %s%s\n",
			c->batch, c->sqpoll ? " with SQPOLL" : "", strerror(-err), uring_hint(err));
		return err;
	}
	r->ring_ok = true;
	if (c->reg_files) {
		err = io_uring_register_files(&r->ring, b->fds, c->files);
		if (err) {
			fprintf(stderr, "aiobench: io_uring: registering %u files: %s%s\n", c->files,
				strerror(-err), uring_hint(err));
			return err;
		}
	}
	if (c->reg_bufs) {
		iov = calloc(b->slots, sizeof(*iov));
		if (!iov) {
			fprintf(stderr, "aiobench: io_uring: out of memory\n");
			return -ENOMEM;
		}
		for (i = 0; i < b->slots; i++) {
			iov[i].iov_base = slot_buf(b, i);
			iov[i].iov_len = c->bs;
		}
		err = io_uring_register_buffers(&r->ring, iov, b->slots);
		free(iov);
		if (err) {
			fprintf(stderr, "aiobench: io_uring: registering %u buffers: %s%s\n", b->slots,
				strerror(-err), uring_hint(err));
			return err;
		}
	}
	return 0;
}

/*
 * A free SQE; with SQPOLL the kernel thread may still be consuming the ring.
 * IORING_ENTER_SQ_WAIT judges the ring by the tail last submitted, not by
 * the SQEs of this batch filled since: it can return at once while the ring
 * is still full here. So it is asked again until the thread has made room
 * (for at most a second).
 */
#define SQ_WAIT_MAX_NS 1000000000ull
static struct io_uring_sqe *uring_sqe(struct run *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
	uint64_t deadline = 0;

	while (!sqe && r->b->cfg->sqpoll) {
		if (io_uring_sqring_wait(&r->ring) < 0)
			break;
		sqe = io_uring_get_sqe(&r->ring);
		if (sqe)
			break;
		if (!deadline)
			deadline = now_ns() + SQ_WAIT_MAX_NS;
		else if (now_ns() > deadline)
			break;
	}
	return sqe;
}

static int uring_submit(struct run *r, unsigned int n, unsigned int *ret_n)
{
	struct bench *b = r->b;
	const struct cfg *c = b->cfg;
	unsigned int k, done = 0, tries = 0;
	int ret;

	*ret_n = 0;
	for (k = 0; k < n; k++) {
		const struct op *op = &b->ops[k];
		struct io_uring_sqe *sqe = uring_sqe(r);
		unsigned char *buf = slot_buf(b, k);
		uint64_t off = (uint64_t)op->block * c->bs;
		int fd = c->reg_files ? (int)op->file : b->fds[op->file];

		if (!sqe) {
			fprintf(stderr, "aiobench: io_uring: no free submission queue entry%s\n",
				c->sqpoll ? " (the SQ thread made none free for 1 s)" : "");
			return -EBUSY;
		}
		if (c->reg_bufs && op->write)
			io_uring_prep_write_fixed(sqe, fd, buf, c->bs, off, (int)k);
		else if (c->reg_bufs)
			io_uring_prep_read_fixed(sqe, fd, buf, c->bs, off, (int)k);
		else if (op->write)
			io_uring_prep_write(sqe, fd, buf, c->bs, off);
		else
			io_uring_prep_read(sqe, fd, buf, c->bs, off);
		if (c->reg_files)
			io_uring_sqe_set_flags(sqe, IOSQE_FIXED_FILE);
		io_uring_sqe_set_data64(sqe, k);
	}
	/* One io_uring_submit normally takes all; it is called again for any left. */
	while (done < n) {
		ret = io_uring_submit(&r->ring);
		if (ret > 0) {
			done += ret;
			r->inflight += ret;
			*ret_n = done;
			continue;
		}
		ret = submit_refused(ret, &tries, "io_uring: io_uring_submit", done, n);
		if (ret)
			return ret;
	}
	return 0;
}

/*
 * Waits until n CQEs are ready, then looks at them without consuming them:
 * clear advances the CQ ring past them.
 */
static int uring_poll(struct run *r, unsigned int n, unsigned int *ret_n)
{
	struct __kernel_timespec ts = { .tv_sec = 1 };
	struct io_uring_cqe *cqe;
	unsigned int ready, last = 0, idle = 0, got, k;
	int ret;

	*ret_n = 0;
	while ((ready = io_uring_cq_ready(&r->ring)) < n) {
		if (ready != last) {
			last = ready;
			idle = 0;
		}
		ret = io_uring_wait_cqes(&r->ring, &cqe, n, &ts, NULL);
		if (ret == -ETIME && ++idle >= STALL_TIMEOUT_S) {
			fprintf(stderr, "aiobench: io_uring: no completion for %u s (%u of %u done)\n",
				STALL_TIMEOUT_S, ready, n);
			return -ETIMEDOUT;
		}
		if (ret == -EINTR && stop_requested)
			return -EINTR;
		if (ret && ret != -ETIME && ret != -EINTR && ret != -EAGAIN) {
			fprintf(stderr, "aiobench: io_uring: waiting for completions: %s\n",
				strerror(-ret));
			return ret;
		}
	}
	got = io_uring_peek_batch_cqe(&r->ring, r->cqes, n);
	r->cq_pending = got;
	r->inflight -= got;
	*ret_n = got;
	for (k = 0; k < got; k++) {
		ret = check_completion(r, r->cqes[k]->user_data, n, r->cqes[k]->res);
		if (ret)
			return ret;
	}
	if (got != n) {
		fprintf(stderr, "aiobench: io_uring: %u completions ready but %u peeked\n", n, got);
		return -EIO;
	}
	return 0;
}

static int uring_clear(struct run *r, unsigned int n, unsigned int *ret_n)
{
	(void)n;
	io_uring_cq_advance(&r->ring, r->cq_pending);
	*ret_n = r->cq_pending;
	r->cq_pending = 0;
	return 0;
}

static void uring_teardown(struct run *r)
{
	struct __kernel_timespec ts = { .tv_sec = 1 };
	struct io_uring_cqe *cqe;
	unsigned int idle = 0, ready;

	if (r->ring_ok) {
		/* After a failure: let what is in flight finish before the buffers go. */
		io_uring_cq_advance(&r->ring, r->cq_pending);
		r->cq_pending = 0;
		while (r->inflight && idle < STALL_TIMEOUT_S) {
			/* Each failed or timed-out wait counts: at most about a minute. */
			if (io_uring_wait_cqes(&r->ring, &cqe, r->inflight, &ts, NULL))
				idle++;
			ready = io_uring_cq_ready(&r->ring);
			if (ready > r->inflight)
				ready = r->inflight;
			io_uring_cq_advance(&r->ring, ready);
			r->inflight -= ready;
		}
		io_uring_queue_exit(&r->ring);
		r->ring_ok = false;
	}
	free(r->cqes);
	r->cqes = NULL;
}

/* ---------- libaio ---------- */

static int libaio_setup(struct run *r)
{
	const struct cfg *c = r->b->cfg;
	int err;

	r->events = calloc(r->b->slots, sizeof(*r->events));
	if (!r->events) {
		fprintf(stderr, "aiobench: libaio: out of memory\n");
		return -ENOMEM;
	}
	r->ctx = 0;
	err = io_setup((int)c->batch, &r->ctx);
	if (err) {
		fprintf(stderr, "aiobench: libaio: io_setup(%u): %s%s\n", c->batch, strerror(-err),
			err == -EAGAIN ? " (/proc/sys/fs/aio-max-nr is too low)" :
			err == -ENOSYS ? " (this kernel has no native AIO)" : "");
		return err;
	}
	r->ctx_ok = true;
	return 0;
}

/* Allocates and fills the batch's iocbs, then io_submit until all are in. */
static int libaio_submit(struct run *r, unsigned int n, unsigned int *ret_n)
{
	struct bench *b = r->b;
	const struct cfg *c = b->cfg;
	unsigned int k, done = 0, tries = 0;
	int ret;

	*ret_n = 0;
	r->iocbs = malloc(n * (sizeof(struct iocb) + sizeof(struct iocb *)));
	if (!r->iocbs) {
		fprintf(stderr, "aiobench: libaio: out of memory\n");
		return -ENOMEM;
	}
	r->iocbp = (struct iocb **)(r->iocbs + n);
	for (k = 0; k < n; k++) {
		const struct op *op = &b->ops[k];
		long long off = (long long)op->block * c->bs;

		if (op->write)
			io_prep_pwrite(&r->iocbs[k], b->fds[op->file], slot_buf(b, k), c->bs, off);
		else
			io_prep_pread(&r->iocbs[k], b->fds[op->file], slot_buf(b, k), c->bs, off);
		r->iocbs[k].data = (void *)(uintptr_t)k;
		r->iocbp[k] = &r->iocbs[k];
	}
	while (done < n) {
		ret = io_submit(r->ctx, (long)(n - done), r->iocbp + done);
		if (ret > 0) {
			done += ret;
			r->inflight += ret;
			*ret_n = done;
			continue;
		}
		ret = submit_refused(ret, &tries, "libaio: io_submit", done, n);
		if (ret)
			return ret;
	}
	return 0;
}

static int libaio_poll(struct run *r, unsigned int n, unsigned int *ret_n)
{
	struct timespec ts = { .tv_sec = 1 };
	unsigned int got = 0, idle = 0, k;
	int ret;

	*ret_n = 0;
	while (got < n) {
		ret = io_getevents(r->ctx, n - got, n - got, r->events + got, &ts);
		if (ret < 0) {
			if (ret == -EINTR && !stop_requested)
				continue;
			fprintf(stderr, "aiobench: libaio: io_getevents: %s\n", strerror(-ret));
			return ret;
		}
		if (!ret) {
			if (++idle >= STALL_TIMEOUT_S) {
				fprintf(stderr, "aiobench: libaio: no completion for %u s (%u of %u done)\n",
					STALL_TIMEOUT_S, got, n);
				return -ETIMEDOUT;
			}
			continue;
		}
		idle = 0;
		r->inflight -= ret;
		for (k = got; k < got + (unsigned int)ret; k++) {
			int err = check_completion(r, (uintptr_t)r->events[k].data, n,
						   (long)r->events[k].res);

			if (err) {
				*ret_n = got + ret;
				return err;
			}
		}
		got += ret;
		*ret_n = got;
	}
	return 0;
}

/* Frees the iocb array submit allocated. */
static int libaio_clear(struct run *r, unsigned int n, unsigned int *ret_n)
{
	free(r->iocbs);
	r->iocbs = NULL;
	r->iocbp = NULL;
	*ret_n = n;
	return 0;
}

static void libaio_teardown(struct run *r)
{
	/* io_destroy waits for whatever is still in flight. */
	if (r->ctx_ok) {
		io_destroy(r->ctx);
		r->ctx_ok = false;
	}
	free(r->iocbs);
	r->iocbs = NULL;
	free(r->events);
	r->events = NULL;
}

/* ---------- POSIX AIO ---------- */

static int posix_setup(struct run *r)
{
	unsigned int slots = r->b->slots;

	r->acbs = calloc(slots, sizeof(*r->acbs));
	r->alist = calloc(slots, sizeof(*r->alist));
	r->busy = calloc(slots, sizeof(*r->busy));
	if (!r->acbs || !r->alist || !r->busy) {
		fprintf(stderr, "aiobench: posix: out of memory\n");
		return -ENOMEM;
	}
	return 0;
}

/* Fills the batch's aiocbs (reset by clear) and queues each one. */
static int posix_submit(struct run *r, unsigned int n, unsigned int *ret_n)
{
	struct bench *b = r->b;
	const struct cfg *c = b->cfg;
	unsigned int k, tries = 0;
	int ret;

	*ret_n = 0;
	for (k = 0; k < n; k++) {
		const struct op *op = &b->ops[k];
		struct aiocb *a = &r->acbs[k];

		a->aio_fildes = b->fds[op->file];
		a->aio_offset = (off_t)op->block * c->bs;
		a->aio_buf = slot_buf(b, k);
		a->aio_nbytes = c->bs;
		a->aio_sigevent.sigev_notify = SIGEV_NONE;
		for (;;) {
			ret = op->write ? aio_write(a) : aio_read(a);
			if (!ret)
				break;
			if (errno == EAGAIN && ++tries < RETRY_MAX && !stop_requested) {
				retry_pause();
				continue;
			}
			ret = -errno;
			fprintf(stderr, "aiobench: posix: %s of file %u: %s\n",
				op->write ? "aio_write" : "aio_read", op->file, strerror(-ret));
			return ret;
		}
		r->busy[k] = true;
		r->inflight++;
		*ret_n = k + 1;
	}
	return 0;
}

/*
 * Checks the outstanding requests with aio_error and sleeps in aio_suspend on
 * those still in progress, until none is.
 */
static int posix_poll(struct run *r, unsigned int n, unsigned int *ret_n)
{
	const struct timespec ts = { .tv_sec = 1 };
	unsigned int left = n, kept, i, idle = 0;
	int e;

	*ret_n = 0;
	for (i = 0; i < n; i++)
		r->alist[i] = &r->acbs[i];
	for (;;) {
		kept = 0;
		for (i = 0; i < left; i++) {
			const struct aiocb *a = r->alist[i];
			unsigned int slot = (unsigned int)(a - r->acbs);

			e = aio_error(a);
			if (e == EINPROGRESS) {
				r->alist[kept++] = a;
				continue;
			}
			if (e < 0)
				e = errno;
			r->inflight--;
			(*ret_n)++;
			if (e)
				return check_result(r, slot, -(long long)e);
		}
		if (kept < left)
			idle = 0;
		left = kept;
		if (!left)
			return 0;
		if (!aio_suspend(r->alist, (int)left, &ts))
			continue;
		if (errno == EINTR && stop_requested)
			return -EINTR;
		if (errno == EAGAIN && ++idle >= STALL_TIMEOUT_S) {
			fprintf(stderr, "aiobench: posix: no completion for %u s (%u of %u done)\n",
				STALL_TIMEOUT_S, n - left, n);
			return -ETIMEDOUT;
		}
		if (errno != EAGAIN && errno != EINTR) {
			e = errno;
			fprintf(stderr, "aiobench: posix: aio_suspend: %s\n", strerror(e));
			return -e;
		}
	}
}

/* aio_return for each request, checking its byte count, and resets its aiocb. */
static int posix_clear(struct run *r, unsigned int n, unsigned int *ret_n)
{
	unsigned int k;
	ssize_t res;
	int err = 0, ret;

	*ret_n = 0;
	for (k = 0; k < n; k++) {
		/* poll saw aio_error() == 0 for each; a failure here has only errno. */
		errno = 0;
		res = aio_return(&r->acbs[k]);
		r->busy[k] = false;
		memset(&r->acbs[k], 0, sizeof(r->acbs[k]));
		(*ret_n)++;
		ret = check_result(r, k, res < 0 ? -(long long)(errno ? errno : EIO) : (long long)res);
		if (ret && !err)
			err = ret;
	}
	return err;
}

static void posix_teardown(struct run *r)
{
	const struct timespec ts = { .tv_sec = 1 };
	unsigned int k, idle = 0;

	/* After a failure: cancel or wait for what is in flight, then aio_return it. */
	for (k = 0; r->busy && k < r->b->slots; k++) {
		const struct aiocb *one[1] = { &r->acbs[k] };

		if (!r->busy[k])
			continue;
		aio_cancel(r->acbs[k].aio_fildes, &r->acbs[k]);
		while (aio_error(&r->acbs[k]) == EINPROGRESS && idle < STALL_TIMEOUT_S) {
			if (aio_suspend(one, 1, &ts) && errno == EAGAIN)
				idle++;
		}
		aio_return(&r->acbs[k]);
		r->busy[k] = false;
	}
	free(r->acbs);
	free(r->alist);
	free(r->busy);
	r->acbs = NULL;
	r->alist = NULL;
	r->busy = NULL;
}

static const struct engine engines[NR_ENGINES] = {
	[ENG_URING] = { uring_setup, uring_submit, uring_poll, uring_clear, uring_teardown },
	[ENG_LIBAIO] = { libaio_setup, libaio_submit, libaio_poll, libaio_clear, libaio_teardown },
	[ENG_POSIX] = { posix_setup, posix_submit, posix_poll, posix_clear, posix_teardown },
};

/* ---------- the workload ---------- */

static int run_flags(const struct cfg *c, int id)
{
	int flags = c->direct ? RF_DIRECT : 0;

	if (id == ENG_URING)
		flags |= (c->sqpoll ? RF_SQPOLL : 0) | (c->reg_files ? RF_REG_FILES : 0) |
			 (c->reg_bufs ? RF_REG_BUFS : 0);
	return flags;
}

/*
 * Decides what each slot of the batch does and readies its buffer: the
 * pattern to write, or poison for a read to overwrite. Not timed.
 */
static void prepare_batch(struct run *r, unsigned int first, unsigned int n, uint32_t block,
			  uint32_t wgen)
{
	struct bench *b = r->b;
	const struct cfg *c = b->cfg;
	unsigned int k;

	for (k = 0; k < n; k++) {
		struct op *op = &b->ops[k];

		op->file = first + k;
		op->block = block;
		op->done = false;
		if (c->rw == RW_MIX)
			op->write = xorshift64(&r->rng) % 100 < c->write_pct;
		else
			op->write = c->rw == RW_WRITE;
		if (op->write) {
			op->gen = wgen;
			fill_block(slot_buf(b, k), c->bs, op->file, block, wgen);
		} else {
			op->gen = *gen_of(b, op->file, block);
			memset(slot_buf(b, k), READ_POISON, c->bs);
		}
	}
}

/* Checks what the batch read and records what it wrote. Not timed. */
static int finish_batch(struct run *r, unsigned int n)
{
	struct bench *b = r->b;
	unsigned int k;
	int err;

	for (k = 0; k < n; k++) {
		const struct op *op = &b->ops[k];

		if (op->write) {
			*gen_of(b, op->file, op->block) = op->gen;
			continue;
		}
		err = verify_block(b, engine_names[r->id], "read", slot_buf(b, k), op->file,
				   op->block, op->gen);
		if (err)
			return err;
		r->st.verified += b->cfg->bs;
	}
	return 0;
}

static int run_iterations(struct run *r)
{
	struct bench *b = r->b;
	const struct cfg *c = b->cfg;
	const struct engine *e = &engines[r->id];
	unsigned int it, first, n, done;
	uint64_t t0, t1;
	int err;

	for (it = 0; it < c->iterations; it++) {
		uint32_t wgen = b->gen_base + it + 1;

		for (first = 0; first < c->files; first += n) {
			n = c->files - first < c->batch ? c->files - first : c->batch;
			if (stop_requested)
				return -EINTR;
			prepare_batch(r, first, n, it % c->blocks, wgen);

			DTRACE_PROBE2(aiobench, submit_start, r->id, (long long)n);
			t0 = now_ns();
			err = e->submit(r, n, &done);
			t1 = now_ns();
			DTRACE_PROBE2(aiobench, submit_end, r->id, (long long)done);
			r->st.calls[PH_SUBMIT]++;
			r->st.ns[PH_SUBMIT] += t1 - t0;
			if (err)
				return err;

			DTRACE_PROBE2(aiobench, poll_start, r->id, (long long)n);
			t0 = now_ns();
			err = e->poll(r, n, &done);
			t1 = now_ns();
			DTRACE_PROBE2(aiobench, poll_end, r->id, (long long)done);
			r->st.calls[PH_POLL]++;
			r->st.ns[PH_POLL] += t1 - t0;
			if (err)
				return err;

			DTRACE_PROBE2(aiobench, clear_start, r->id, (long long)n);
			t0 = now_ns();
			err = e->clear(r, n, &done);
			t1 = now_ns();
			DTRACE_PROBE2(aiobench, clear_end, r->id, (long long)done);
			r->st.calls[PH_CLEAR]++;
			r->st.ns[PH_CLEAR] += t1 - t0;
			if (err)
				return err;
			r->st.ios += done;

			err = finish_batch(r, n);
			if (err)
				return err;
		}
	}
	return 0;
}

/* pread of a whole block; a short file is an error. */
static int pread_block(int fd, unsigned char *buf, size_t len, off_t off)
{
	size_t got = 0;
	ssize_t ret;

	while (got < len) {
		ret = pread(fd, buf + got, len - got, off + (off_t)got);
		if (ret < 0 && errno == EINTR)
			continue;
		if (ret < 0)
			return -errno;
		if (!ret)
			return -ENODATA;
		got += ret;
	}
	return 0;
}

static int pwrite_block(int fd, const unsigned char *buf, size_t len, off_t off)
{
	size_t put = 0;
	ssize_t ret;

	while (put < len) {
		ret = pwrite(fd, buf + put, len - put, off + (off_t)put);
		if (ret < 0 && errno == EINTR)
			continue;
		if (ret < 0)
			return -errno;
		if (!ret)
			return -EIO;
		put += ret;
	}
	return 0;
}

/* Every block of every file, read with pread and checked. Not timed. */
static int read_back(struct run *r)
{
	struct bench *b = r->b;
	const struct cfg *c = b->cfg;
	unsigned int f, k;
	int err;

	for (f = 0; f < c->files; f++) {
		for (k = 0; k < c->blocks; k++) {
			err = pread_block(b->fds[f], b->rbuf, c->bs, (off_t)k * c->bs);
			if (err) {
				fprintf(stderr, "aiobench: %s: read-back of file %u block %u: %s\n",
					engine_names[r->id], f, k, strerror(-err));
				return err;
			}
			err = verify_block(b, engine_names[r->id], "read-back", b->rbuf, f, k,
					   *gen_of(b, f, k));
			if (err)
				return err;
			r->st.verified += c->bs;
		}
	}
	return 0;
}

/*
 * --wait-attach: a tracer attaches to our pid, then sends SIGUSR1. SIGUSR1 is
 * blocked from the start, so one sent early waits here as pending.
 */
static int wait_for_attach(void)
{
	uint64_t deadline = now_ns() + ATTACH_TIMEOUT_S * 1000000000ull, now;
	struct timespec ts;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	fprintf(stderr, "aiobench: pid %d waiting for SIGUSR1\n", (int)getpid());
	fflush(stderr);
	while ((now = now_ns()) < deadline) {
		ts.tv_sec = (deadline - now) / 1000000000ull;
		ts.tv_nsec = (deadline - now) % 1000000000ull;
		if (sigtimedwait(&set, NULL, &ts) == SIGUSR1)
			return 0;
		if (errno == EINTR && stop_requested)
			return -EINTR;
		if (errno != EINTR && errno != EAGAIN) {
			int err = -errno;

			fprintf(stderr, "aiobench: sigtimedwait: %s\n", strerror(-err));
			return err;
		}
	}
	fprintf(stderr, "aiobench: no SIGUSR1 within %u s\n", ATTACH_TIMEOUT_S);
	return -ETIMEDOUT;
}

static double share(uint64_t part, uint64_t total)
{
	return total ? (double)part / (double)total : 0.0;
}

static int print_result(const struct run *r)
{
	const struct cfg *c = r->b->cfg;
	const struct stats *s = &r->st;
	uint64_t total = s->ns[PH_SUBMIT] + s->ns[PH_POLL] + s->ns[PH_CLEAR];
	bool uring = r->id == ENG_URING;
	char knobs[128] = "", rw[32], blocks[32] = "";

	if (c->json) {
		printf("{\"engine\":\"%s\",\"sqpoll\":%s,\"reg_files\":%s,\"reg_bufs\":%s,\"direct\":%s,"
		       "\"rw\":\"%s\",\"files\":%u,\"batch\":%u,\"bs\":%u,\"blocks\":%u,\"iterations\":%u,"
		       "\"submit_calls\":%" PRIu64 ",\"poll_calls\":%" PRIu64 ",\"clear_calls\":%" PRIu64 ","
		       "\"ios\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"verified_bytes\":%" PRIu64 ","
		       "\"total_ns\":%" PRIu64 ",\"submit_ns\":%" PRIu64 ",\"poll_ns\":%" PRIu64
		       ",\"clear_ns\":%" PRIu64 ",\"pid\":%d}\n",
		       engine_names[r->id], uring && c->sqpoll ? "true" : "false",
		       uring && c->reg_files ? "true" : "false", uring && c->reg_bufs ? "true" : "false",
		       c->direct ? "true" : "false", rw_names[c->rw], c->files, c->batch, c->bs,
		       c->blocks, c->iterations, s->calls[PH_SUBMIT], s->calls[PH_POLL],
		       s->calls[PH_CLEAR], s->ios, s->ios * c->bs, s->verified, total,
		       s->ns[PH_SUBMIT], s->ns[PH_POLL], s->ns[PH_CLEAR], (int)getpid());
		return fflush(stdout) ? -errno : 0;
	}
	if (uring)
		snprintf(knobs, sizeof(knobs), "sqpoll %s, registered files %s, registered buffers %s, ",
			 c->sqpoll ? "on" : "off", c->reg_files ? "on" : "off",
			 c->reg_bufs ? "on" : "off");
	if (c->rw == RW_MIX)
		snprintf(rw, sizeof(rw), "mix %u%% writes", c->write_pct);
	else
		snprintf(rw, sizeof(rw), "%s", rw_names[c->rw]);
	if (c->blocks > 1)
		snprintf(blocks, sizeof(blocks), " of %u blocks", c->blocks);
	printf("%s (%s%s, %s, %u file%s%s, batch %u, bs %u, %u iteration%s)\n", engine_names[r->id],
	       knobs, c->direct ? "O_DIRECT" : "buffered", rw, c->files, c->files == 1 ? "" : "s",
	       blocks, c->batch, c->bs, c->iterations, c->iterations == 1 ? "" : "s");
	printf("%20s%14s%12s%13s\n", "total cost(us)", "submit cost", "poll cost", "clear cost");
	printf("%20.2f%14.2f%12.2f%13.2f\n", total / 1e3, share(s->ns[PH_SUBMIT], total),
	       share(s->ns[PH_POLL], total), share(s->ns[PH_CLEAR], total));
	printf("  per iteration(us)%14.2f\n", total / 1e3 / c->iterations);
	printf("  calls: submit %" PRIu64 "  poll %" PRIu64 "  clear %" PRIu64 "   ios %" PRIu64
	       "   bytes %" PRIu64 "   verified %" PRIu64 "\n\n",
	       s->calls[PH_SUBMIT], s->calls[PH_POLL], s->calls[PH_CLEAR], s->ios, s->ios * c->bs,
	       s->verified);
	return fflush(stdout) ? -errno : 0;
}

/*
 * One engine: setup, the iterations between run_start and run_end, teardown,
 * then the read-back of every block and the report.
 */
static int run_engine(struct bench *b, int id, bool first)
{
	const struct cfg *c = b->cfg;
	const struct engine *e = &engines[id];
	struct run *r;
	int err;

	/* struct run is large (the ring); keep it off the stack. */
	r = calloc(1, sizeof(*r));
	if (!r) {
		fprintf(stderr, "aiobench: out of memory\n");
		return -ENOMEM;
	}
	r->b = b;
	r->id = id;
	r->rng = rng_seed(c->seed);	/* the same mix choices for every engine */
	err = e->setup(r);
	if (!err && first && c->wait_attach)
		err = wait_for_attach();
	if (!err) {
		DTRACE_PROBE6(aiobench, run_start, id, run_flags(c, id), (long long)c->files,
			      (long long)c->batch, (long long)c->bs, (long long)c->iterations);
		err = run_iterations(r);
		DTRACE_PROBE2(aiobench, run_end, id, (long long)r->st.ios);
	}
	e->teardown(r);
	b->gen_base += c->iterations;
	if (err == -EINTR && stop_requested)
		fprintf(stderr, "aiobench: %s: interrupted\n", engine_names[id]);
	if (!err)
		err = read_back(r);
	/*
	 * Buffered writes leave dirty pages: write them back now, untimed, so
	 * that the next engine's run does not pay for this one's.
	 */
	if (!err && syncfs(b->dirfd)) {
		err = -errno;
		fprintf(stderr, "aiobench: syncfs %s: %s\n", b->dir, strerror(-err));
	}
	if (!err) {
		err = print_result(r);
		if (err)
			fprintf(stderr, "aiobench: writing the report: %s\n", strerror(-err));
	}
	free(r);
	return err;
}

/* ---------- files ---------- */

static int raise_nofile(unsigned int files)
{
	rlim_t need = (rlim_t)files + FD_HEADROOM;
	struct rlimit rl;
	int err;

	if (getrlimit(RLIMIT_NOFILE, &rl)) {
		err = -errno;
		fprintf(stderr, "aiobench: getrlimit(RLIMIT_NOFILE): %s\n", strerror(-err));
		return err;
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
		return 0;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
		fprintf(stderr,
			"aiobench: %u files need %llu open file descriptors but the hard RLIMIT_NOFILE is %llu (raise it, e.g. ulimit -Hn %llu, or use fewer --files)\n",
			files, (unsigned long long)need, (unsigned long long)rl.rlim_max,
			(unsigned long long)need);
		return -EMFILE;
	}
	rl.rlim_cur = need;
	if (setrlimit(RLIMIT_NOFILE, &rl)) {
		err = -errno;
		fprintf(stderr, "aiobench: raising RLIMIT_NOFILE to %llu: %s\n",
			(unsigned long long)need, strerror(-err));
		return err;
	}
	return 0;
}

static void file_name(char *buf, size_t len, unsigned int i)
{
	snprintf(buf, len, "aiobench.%07u", i);
}

/* The directory, free space for the files, and the files filled with generation 0. */
static int setup_files(struct bench *b)
{
	const struct cfg *c = b->cfg;
	int oflags = O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW | (c->direct ? O_DIRECT : 0);
	unsigned long long need, file_bytes;
	struct statvfs vfs;
	unsigned int f, k;
	char name[32];
	int fd, err;

	if (c->dir) {
		if (strlen(c->dir) >= sizeof(b->dir)) {
			fprintf(stderr, "aiobench: --dir is too long\n");
			return -ENAMETOOLONG;
		}
		strcpy(b->dir, c->dir);
	} else {
		strcpy(b->dir, "/var/tmp/aiobench.XXXXXX");
		if (!mkdtemp(b->dir)) {
			err = -errno;
			fprintf(stderr, "aiobench: creating a directory under /var/tmp: %s\n",
				strerror(-err));
			return err;
		}
		b->made_dir = true;
	}
	b->dirfd = open(b->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (b->dirfd < 0) {
		err = -errno;
		fprintf(stderr, "aiobench: %s: %s\n", b->dir, strerror(-err));
		return err;
	}
	if (fstatvfs(b->dirfd, &vfs)) {
		err = -errno;
		fprintf(stderr, "aiobench: statvfs %s: %s\n", b->dir, strerror(-err));
		return err;
	}
	file_bytes = (unsigned long long)c->blocks * c->bs;
	if (vfs.f_frsize)
		file_bytes = (file_bytes + vfs.f_frsize - 1) / vfs.f_frsize * vfs.f_frsize;
	need = file_bytes * c->files;
	if ((unsigned long long)vfs.f_bavail * vfs.f_frsize < need ||
	    (vfs.f_files && vfs.f_favail < c->files)) {
		fprintf(stderr, "aiobench: %s has room for fewer than %u files of %llu bytes\n",
			b->dir, c->files, file_bytes);
		return -ENOSPC;
	}

	for (f = 0; f < c->files; f++) {
		file_name(name, sizeof(name), f);
		fd = openat(b->dirfd, name, oflags, 0644);
		if (fd < 0) {
			err = -errno;
			fprintf(stderr, "aiobench: creating %s/%s: %s%s\n", b->dir, name, strerror(-err),
				err == -EINVAL && c->direct ?
				" (does this file system support O_DIRECT?)" : "");
			return err;
		}
		b->fds[f] = fd;
		b->nfds = f + 1;
		for (k = 0; k < c->blocks; k++) {
			fill_block(b->rbuf, c->bs, f, k, 0);
			err = pwrite_block(fd, b->rbuf, c->bs, (off_t)k * c->bs);
			if (err) {
				fprintf(stderr, "aiobench: filling %s/%s: %s%s\n", b->dir, name,
					strerror(-err), err == -EINVAL && c->direct ?
					" (with --direct, --bs must suit the device's O_DIRECT alignment)" :
					"");
				return err;
			}
		}
	}
	/*
	 * On disk before any measurement. One syncfs commits the file system's
	 * journal once; an fsync per file would commit it once per file (about
	 * 1 ms each here) for the same result.
	 */
	if (syncfs(b->dirfd)) {
		err = -errno;
		fprintf(stderr, "aiobench: syncfs %s: %s\n", b->dir, strerror(-err));
		return err;
	}
	return 0;
}

static int alloc_bench(struct bench *b)
{
	const struct cfg *c = b->cfg;
	size_t one = (c->bs + BUF_ALIGN - 1) / BUF_ALIGN * BUF_ALIGN;

	b->slots = c->batch < c->files ? c->batch : c->files;
	/* 512-byte steps keep every slot aligned for O_DIRECT. */
	b->stride = (c->bs + 511u) & ~(size_t)511u;
	b->fds = calloc(c->files, sizeof(*b->fds));
	b->gen = calloc((size_t)c->files * c->blocks, sizeof(*b->gen));
	b->ops = calloc(b->slots, sizeof(*b->ops));
	if (!b->fds || !b->gen || !b->ops ||
	    posix_memalign((void **)&b->bufs, BUF_ALIGN, (size_t)b->slots * b->stride) ||
	    posix_memalign((void **)&b->expect, BUF_ALIGN, one) ||
	    posix_memalign((void **)&b->rbuf, BUF_ALIGN, one)) {
		fprintf(stderr, "aiobench: out of memory\n");
		return -ENOMEM;
	}
	return 0;
}

/* Closes the files and, unless --keep, removes them (and the mkdtemp directory). */
static int cleanup(struct bench *b)
{
	const struct cfg *c = b->cfg;
	unsigned int f;
	char name[32];
	int err = 0;

	for (f = 0; f < b->nfds; f++)
		close(b->fds[f]);
	if (b->dirfd >= 0 && !c->keep) {
		for (f = 0; f < b->nfds; f++) {
			file_name(name, sizeof(name), f);
			if (unlinkat(b->dirfd, name, 0) && errno != ENOENT && !err) {
				err = -errno;
				fprintf(stderr, "aiobench: removing %s/%s: %s\n", b->dir, name,
					strerror(-err));
			}
		}
	}
	if (b->dirfd >= 0)
		close(b->dirfd);
	if (b->made_dir && !c->keep && rmdir(b->dir) && !err) {
		err = -errno;
		fprintf(stderr, "aiobench: removing %s: %s\n", b->dir, strerror(-err));
	}
	if (b->made_dir && c->keep)
		fprintf(stderr, "aiobench: files kept in %s\n", b->dir);
	free(b->fds);
	free(b->gen);
	free(b->ops);
	free(b->bufs);
	free(b->expect);
	free(b->rbuf);
	return err;
}

/* ---------- options ---------- */

static const char usage_text[] =
"Usage: aiobench [OPTIONS]\n"
"Performs the same batches of reads or writes through io_uring (liburing),\n"
"Linux native AIO (libaio) and POSIX AIO (glibc), checks every byte, and\n"
"reports the time each engine spent submitting, polling for completions and\n"
"clearing them. USDT probes (provider aiobench) mark every phase for\n"
"`iotracer aio`.\n"
"\n"
"One iteration is one operation on each file (file j, block iteration %% K),\n"
"in batches of up to B; each batch is submitted, polled until all of it has\n"
"completed, and cleared.\n"
"\n"
"  --engine LIST      io_uring, libaio, posix or all (default all: in that\n"
"                     order); a comma list or repeated; each engine runs once,\n"
"                     in the order first named, with the same workload\n"
"  --dir DIR          create the files (aiobench.NNNNNNN, overwritten if there)\n"
"                     in DIR, an existing directory (default a new directory\n"
"                     under /var/tmp); they are removed at exit\n"
"  --keep             keep the files (and the directory made under /var/tmp)\n"
"  --files N          files, all open at once (default 2048, at most %u)\n"
"  --blocks K         blocks per file (default 1; files x blocks at most %u)\n"
"  --bs BYTES         block size (default 1024; %u to %u, a multiple of 512\n"
"                     with --direct)\n"
"  --batch B          operations per batch (default 1024, at most %u)\n"
"  --iterations I     iterations per engine (default 16, at most %u)\n"
"  --direct           open the files with O_DIRECT (default buffered)\n"
"  --rw MODE          read, write or mix (default write)\n"
"  --write-pct P      with --rw mix: percent of operations that write\n"
"                     (default 50; ignored otherwise)\n"
"  --seed S           seed of the --rw mix choices (default 1); every engine\n"
"                     makes the same choices\n"
"  --sqpoll           io_uring only: a kernel thread polls the submission queue\n"
"                     (idle after %u ms)\n"
"  --reg-files        io_uring only: register the files, submit by index\n"
"  --reg-bufs         io_uring only: register one buffer per batch slot (at\n"
"                     most %u), use read_fixed / write_fixed\n"
"                     (these three are an error if --engine leaves out io_uring)\n"
"  --json             one JSON object per line per engine run instead of text\n"
"  --wait-attach      before the first run, print our pid on stderr and wait\n"
"                     (at most %u s) for SIGUSR1, so a tracer can attach first\n"
"  -h, --help         this text\n"
"\n"
"Files are filled before any measurement; the times cover only the submit,\n"
"poll and clear phases. Reads are checked against what was last written, and\n"
"after each engine every block is read back with pread and checked.\n"
"SIGUSR1 never ends aiobench (a tracer may send it); SIGINT and SIGTERM end\n"
"the run between batches, and the files are still removed.\n"
"Exit status: 0 success, 1 I/O, verification or setup error, 2 usage error.\n";

static void usage(FILE *f)
{
	fprintf(f, usage_text, MAX_FILES, MAX_BLOCKS_TOTAL, MIN_BS, MAX_BS, MAX_BATCH, MAX_ITERATIONS,
		SQ_THREAD_IDLE_MS, MAX_REG_BUFS, ATTACH_TIMEOUT_S);
}

/* An option's number, or -EINVAL after saying which values it takes. */
static int opt_u64(const char *name, const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
	if (!iot_parse_u64(s, min, max, ret))
		return 0;
	fprintf(stderr, "aiobench: --%s: '%s' is not a whole number from %" PRIu64 " to %" PRIu64 "\n",
		name, s, min, max);
	return -EINVAL;
}

/* Adds each engine of a comma list, once, in the order given. */
static int parse_engines(const char *arg, struct cfg *c)
{
	char buf[128], *tok, *save = NULL;
	int id, i, j;

	/* Empty items (",", "a,,b") are mistakes, not "nothing". */
	if (!*arg || strlen(arg) >= sizeof(buf) || strstr(arg, ",,") || arg[0] == ',' ||
	    arg[strlen(arg) - 1] == ',')
		return -EINVAL;
	strcpy(buf, arg);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int add[NR_ENGINES], nadd = 0;

		if (!strcmp(tok, "all")) {
			for (id = 0; id < NR_ENGINES; id++)
				add[nadd++] = id;
		} else {
			for (id = 0; id < NR_ENGINES && strcmp(tok, engine_names[id]); id++)
				;
			if (id == NR_ENGINES)
				return -EINVAL;
			add[nadd++] = id;
		}
		for (i = 0; i < nadd; i++) {
			for (j = 0; j < c->nr_engines && c->engines[j] != add[i]; j++)
				;
			if (j == c->nr_engines)
				c->engines[c->nr_engines++] = add[i];
		}
	}
	return 0;
}

enum {
	OPT_ENGINE = 256, OPT_DIR, OPT_KEEP, OPT_FILES, OPT_BLOCKS, OPT_BS, OPT_BATCH,
	OPT_ITERATIONS, OPT_DIRECT, OPT_RW, OPT_WRITE_PCT, OPT_SEED, OPT_SQPOLL, OPT_REG_FILES,
	OPT_REG_BUFS, OPT_JSON, OPT_WAIT_ATTACH,
};

/* 0, 1 after --help, or -EINVAL after saying what is wrong. */
static int parse_args(int argc, char **argv, struct cfg *c)
{
	static const struct option longopts[] = {
		{ "engine", required_argument, NULL, OPT_ENGINE },
		{ "dir", required_argument, NULL, OPT_DIR },
		{ "keep", no_argument, NULL, OPT_KEEP },
		{ "files", required_argument, NULL, OPT_FILES },
		{ "blocks", required_argument, NULL, OPT_BLOCKS },
		{ "bs", required_argument, NULL, OPT_BS },
		{ "batch", required_argument, NULL, OPT_BATCH },
		{ "iterations", required_argument, NULL, OPT_ITERATIONS },
		{ "direct", no_argument, NULL, OPT_DIRECT },
		{ "rw", required_argument, NULL, OPT_RW },
		{ "write-pct", required_argument, NULL, OPT_WRITE_PCT },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "sqpoll", no_argument, NULL, OPT_SQPOLL },
		{ "reg-files", no_argument, NULL, OPT_REG_FILES },
		{ "reg-bufs", no_argument, NULL, OPT_REG_BUFS },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "wait-attach", no_argument, NULL, OPT_WAIT_ATTACH },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	uint64_t v;
	int opt, i, li = 0;

	c->files = 2048;
	c->blocks = 1;
	c->bs = 1024;
	c->batch = 1024;
	c->iterations = 16;
	c->rw = RW_WRITE;
	c->write_pct = 50;
	c->seed = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":h", longopts, &li)) != -1) {
		switch (opt) {
		case OPT_ENGINE:
			if (parse_engines(optarg, c)) {
				fprintf(stderr, "aiobench: --engine: '%s' is not a list of io_uring, libaio, posix, all\n",
					optarg);
				return -EINVAL;
			}
			break;
		case OPT_DIR:
			if (!*optarg) {
				fprintf(stderr, "aiobench: --dir: empty path\n");
				return -EINVAL;
			}
			c->dir = optarg;
			break;
		case OPT_KEEP:
			c->keep = true;
			break;
		case OPT_FILES:
			if (opt_u64(longopts[li].name, optarg, 1, MAX_FILES, &v))
				return -EINVAL;
			c->files = v;
			break;
		case OPT_BLOCKS:
			if (opt_u64(longopts[li].name, optarg, 1, MAX_BLOCKS_TOTAL, &v))
				return -EINVAL;
			c->blocks = v;
			break;
		case OPT_BS:
			if (opt_u64(longopts[li].name, optarg, MIN_BS, MAX_BS, &v))
				return -EINVAL;
			c->bs = v;
			break;
		case OPT_BATCH:
			if (opt_u64(longopts[li].name, optarg, 1, MAX_BATCH, &v))
				return -EINVAL;
			c->batch = v;
			break;
		case OPT_ITERATIONS:
			if (opt_u64(longopts[li].name, optarg, 1, MAX_ITERATIONS, &v))
				return -EINVAL;
			c->iterations = v;
			break;
		case OPT_DIRECT:
			c->direct = true;
			break;
		case OPT_RW:
			for (i = 0; i < 3 && strcmp(optarg, rw_names[i]); i++)
				;
			if (i == 3) {
				fprintf(stderr, "aiobench: --rw: '%s' is not read, write or mix\n", optarg);
				return -EINVAL;
			}
			c->rw = i;
			break;
		case OPT_WRITE_PCT:
			if (opt_u64(longopts[li].name, optarg, 0, 100, &v))
				return -EINVAL;
			c->write_pct = v;
			break;
		case OPT_SEED:
			if (opt_u64(longopts[li].name, optarg, 0, UINT64_MAX, &v))
				return -EINVAL;
			c->seed = v;
			break;
		case OPT_SQPOLL:
			c->sqpoll = true;
			break;
		case OPT_REG_FILES:
			c->reg_files = true;
			break;
		case OPT_REG_BUFS:
			c->reg_bufs = true;
			break;
		case OPT_JSON:
			c->json = true;
			break;
		case OPT_WAIT_ATTACH:
			c->wait_attach = true;
			break;
		case 'h':
			usage(stdout);
			return 1;
		case ':':
			fprintf(stderr, "aiobench: %s needs a value\n", argv[optind - 1]);
			return -EINVAL;
		default:
			fprintf(stderr, "aiobench: unknown option '%s'\n", argv[optind - 1]);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "aiobench: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	if (!c->nr_engines)
		parse_engines("all", c);

	if (c->direct && c->bs % 512) {
		fprintf(stderr, "aiobench: --bs %u: with --direct it must be a multiple of 512\n",
			c->bs);
		return -EINVAL;
	}
	if ((uint64_t)c->files * c->blocks > MAX_BLOCKS_TOTAL) {
		fprintf(stderr, "aiobench: --files x --blocks is %llu, at most %u\n",
			(unsigned long long)c->files * c->blocks, MAX_BLOCKS_TOTAL);
		return -EINVAL;
	}
	v = c->batch < c->files ? c->batch : c->files;
	if (v * ((c->bs + 511u) & ~511u) > MAX_BUF_MEM) {
		fprintf(stderr, "aiobench: --batch x --bs needs more than %llu MiB of buffers\n",
			MAX_BUF_MEM >> 20);
		return -EINVAL;
	}
	if (c->reg_bufs && v > MAX_REG_BUFS) {
		fprintf(stderr, "aiobench: --reg-bufs registers one buffer per batch slot: at most %u, not %llu\n",
			MAX_REG_BUFS, (unsigned long long)v);
		return -EINVAL;
	}
	if (c->sqpoll || c->reg_files || c->reg_bufs) {
		for (i = 0; i < c->nr_engines && c->engines[i] != ENG_URING; i++)
			;
		if (i == c->nr_engines) {
			fprintf(stderr, "aiobench: --sqpoll, --reg-files and --reg-bufs apply to io_uring only, which --engine leaves out\n");
			return -EINVAL;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct cfg c = {};
	struct bench b = { .cfg = &c, .dirfd = -1 };
	struct sigaction sa = { .sa_handler = on_stop_signal };
	sigset_t usr1;
	int err, i;

	err = parse_args(argc, argv, &c);
	if (err > 0)
		return 0;
	if (err) {
		fprintf(stderr, "Try 'aiobench --help'.\n");
		return EXIT_USAGE;
	}

	/*
	 * A tracer sends SIGUSR1 once it has attached (iotracer aio --pid does so
	 * even without --wait-attach): blocked, it never kills us, and with
	 * --wait-attach one sent early is still pending when we wait for it.
	 */
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, NULL);
	/* Ctrl-C ends the run between batches, so the files are still removed. */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	err = raise_nofile(c.files);
	if (!err)
		err = alloc_bench(&b);
	if (!err)
		err = setup_files(&b);
	for (i = 0; !err && i < c.nr_engines; i++)
		err = run_engine(&b, c.engines[i], i == 0);
	if (cleanup(&b) && !err)
		err = -EIO;
	if (!err && (fflush(stdout) || ferror(stdout))) {
		fprintf(stderr, "aiobench: writing the report failed\n");
		err = -EIO;
	}
	return err ? EXIT_RUNTIME : 0;
}
