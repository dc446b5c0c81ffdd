/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * `iotracer aio`: what the kernel side (bpf/aio.bpf.c) counts while an
 * aiobench process runs, and the user side that attaches and reports.
 *
 * aiobench marks every batch's submit, poll and clear phase with USDT probes
 * (provider "aiobench"); the kernel side times them and counts, per run, what
 * the io_uring tracepoints and the system calls of the process saw.
 */
#ifndef IOTRACER_AIO_H
#define IOTRACER_AIO_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* aiobench's engine numbers (its run_start probe's first argument). */
enum iot_aio_engine {
	IOT_AIO_URING = 0,
	IOT_AIO_LIBAIO = 1,
	IOT_AIO_POSIX = 2,
	IOT_AIO_ENGINES,
};

/* aiobench's run flags (run_start's second argument). */
#define IOT_AIO_F_SQPOLL	1u
#define IOT_AIO_F_REG_FILES	2u
#define IOT_AIO_F_REG_BUFS	4u
#define IOT_AIO_F_DIRECT	8u
#define IOT_AIO_FLAGS		16u

/* One slot per (engine, flags): a run of aiobench with one configuration. */
#define IOT_AIO_SLOTS		(IOT_AIO_ENGINES * IOT_AIO_FLAGS)

enum iot_aio_phase {
	IOT_AIO_SUBMIT,
	IOT_AIO_POLL,
	IOT_AIO_CLEAR,
	IOT_AIO_PHASES,
};

/* USDT cookie of the phase probes: phase << 1 | (1 for *_end). */
#define IOT_AIO_COOKIE(phase, end)	((__u64)(phase) << 1 | (end))

/* System call numbers counted per slot (x86_64 numbers fit below this). */
#define IOT_AIO_NR_MAX		512

struct iot_aio_stats {
	__u64 runs;			/* run_start probes seen */
	__u64 run_ns;			/* run_start to run_end, summed */
	__u64 ios;			/* run_end's count of completed operations */
	__u64 nfiles, batch, bs, iterations;	/* from the last run_start */
	__u64 phase_calls[IOT_AIO_PHASES];	/* *_end probes that closed a phase */
	__u64 phase_ns[IOT_AIO_PHASES];		/* time between *_start and *_end */
	__u64 phase_items[IOT_AIO_PHASES];	/* *_end's count: submitted, reaped, cleared */
	__u64 phase_unpaired;			/* *_end without its *_start (attached mid-phase) */
	/* io_uring tracepoints, for requests on rings this process submitted to. */
	__u64 uring_submitted;		/* io_uring_submit_req */
	__u64 uring_sq_thread;		/* ... of which the SQPOLL thread submitted */
	__u64 uring_punted;		/* io_uring_queue_async_work */
	__u64 uring_poll_armed;		/* io_uring_poll_arm */
	__u64 uring_task_work;		/* io_uring_task_add */
	__u64 uring_completed;		/* io_uring_complete */
	__u64 uring_cqring_waits;	/* io_uring_cqring_wait: the program slept for CQEs */
	/* Linux AIO: from io_submit / io_getevents themselves. */
	__u64 aio_iocbs;		/* iocbs io_submit accepted */
	__u64 aio_events;		/* events io_getevents returned */
	__u64 aio_submit_ns;		/* time inside io_submit */
	/* Every system call of the process (all its threads) during runs. */
	__u64 syscalls;
	__u64 sys_nr[IOT_AIO_NR_MAX];
};

#ifndef __VMLINUX_H__
#include <stdbool.h>
#include <stdio.h>

struct aio_opts {
	int pid;		/* trace this running process (0: launch argv) */
	char *const *argv;	/* command to launch, NULL-terminated */
	bool json;
	bool verbose;
	double duration_s;	/* 0: until the process exits or Ctrl-C */
	FILE *out;
};

/* `iotracer aio ...`: parses its own arguments; returns the exit status. */
int aio_main(int argc, char **argv);

#endif

#endif /* IOTRACER_AIO_H */
