/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The tracer core shared by standalone and guest modes: chooses an attach
 * route per layer on the running kernel, loads and attaches the BPF side,
 * and hands each completed request record to a callback.
 */
#ifndef IOTRACER_TRACER_H
#define IOTRACER_TRACER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include "record.h"

typedef void (*tracer_record_fn)(void *ctx, const struct iot_record *rec);

struct tracer_opts {
	size_t sz;
	uint32_t layers;		/* bit per enum iot_layer wanted */
	uint32_t layers_explicit;	/* the subset the user named: failing one is an error */
	uint32_t pid, tid;
	const char *comm;
	uint64_t cgroup_id;
	uint32_t dev;		/* kernel dev_t */
	uint64_t ino;		/* --file */
	uint32_t ino_dev;
	uint64_t dir_ino;		/* --dir */
	uint32_t dir_dev;
	uint64_t min_ns;
	uint32_t sample_n;
	size_t ringbuf_bytes;
	int kernel_summary;	/* aggregate into in-kernel histograms; no per-request records */
	int no_fentry;		/* never take fentry/fexit routes */
	int no_kprobe;		/* never take kprobe routes */
	tracer_record_fn on_record;
	void *ctx;
	/*
	 * Trace only the processes added with tracer__add_pid(), as --pid traces
	 * one: their threads, io-wq workers and the writeback they caused.
	 */
	int pid_set;
	/* Also emit IOT_KIND_URING_REAP records: when programs reaped their CQEs (for --perfetto). */
	int uring_reap;
	/*
	 * The syscall layer hooks only the calls that carry their own file
	 * position (pread/pwrite, preadv/pwritev and their v2 forms) and the
	 * syncs: all QEMU's file backends issue. Its read/write/readv/writev
	 * go to eventfds and sockets, and would each cost a hook for nothing.
	 */
	int positional_only;
	/*
	 * The block layer without block_rq_insert: a join reads each request's
	 * issue and completion, not its time in the I/O scheduler, and every
	 * hook is a program run per request.
	 */
	int no_rq_insert;
	/* Fill iot_record.ubuf for system calls and io_uring requests (one user read more for vectored I/O). */
	int ubuf;
	/*
	 * io_uring_enter hooked at its exit only, to end the window in which
	 * block I/O of the thread is its last request's: no enter hook, so no
	 * system call entry time on io_uring records and no io_uring_enter
	 * counts. Two program runs per call become one small one.
	 */
	int uring_enter_exit_only;
	/*
	 * Records cross the ring buffer in their compact form (struct
	 * iot_srec with IOT_SREC_COMPACT_*): on_record gets only the stamps
	 * and fields host mode's join reads, the rest at their defaults.
	 */
	int compact;
};
#define tracer_opts__last_field compact

enum layer_state {
	LAYER_OFF,		/* not asked for */
	LAYER_ON,
	LAYER_UNAVAILABLE,	/* asked for, the kernel cannot serve it */
};

struct layer_status {
	enum layer_state state;
	char route[96];		/* how it is served, or why not */
};

struct tracer;

/* Allocates a tracer for these options. NULL + errno on failure. */
struct tracer *tracer__new(const struct tracer_opts *opts);
/* Probes the kernel's attach routes, picks one per layer, loads. 0 or -errno (see tracer__error). */
int tracer__load(struct tracer *t);
int tracer__attach(struct tracer *t);
/*
 * With opts.pid_set, add or remove a process (tgid) of the traced set, at
 * any time after tracer__load(). 0 or -errno: -EINVAL without pid_set or
 * before load, -E2BIG when the set (256) is full, -ENOENT removing a stranger.
 * Requests in flight when a process leaves the set may still be reported.
 */
int tracer__add_pid(struct tracer *t, uint32_t tgid);
int tracer__del_pid(struct tracer *t, uint32_t tgid);
/* Consume records; returns number consumed or -errno (-EINTR is a clean stop). */
int tracer__poll(struct tracer *t, int timeout_ms);
/* A descriptor that polls readable when records are waiting (then tracer__flush()), or -1. */
int tracer__fd(const struct tracer *t);
/* Drain everything the kernel has emitted so far. */
int tracer__flush(struct tracer *t);
int tracer__counters(struct tracer *t, uint64_t ret_counts[IOT_CNT_MAX]);
/* Sum of the per-CPU in-kernel histogram of segment seg (enum iot_seg). */
int tracer__khist(struct tracer *t, int seg, struct iot_khist *ret_hist);
/* Zero the in-kernel histograms (for --interval). */
int tracer__khist_reset(struct tracer *t);
const struct layer_status *tracer__layer(const struct tracer *t, enum iot_layer l);
/* The first error message worth showing the user (layer failure etc.). */
const char *tracer__error(const struct tracer *t);
void tracer__free(struct tracer *t);

/* Environment preparation: tracefs, memlock. Return 0 or -errno. */
int tracer_prepare_env(char *errbuf, size_t errlen);

#endif
