/* SPDX-License-Identifier: GPL-2.0 */
/* Host mode: accept guest agents and write out what they trace. */
#ifndef IOTRACER_HOST_H
#define IOTRACER_HOST_H

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include "addr.h"
#include "output.h"
#include "perfetto.h"

#define HOST_LISTEN_MAX 32

struct host_opts {
	struct iot_addr listen[HOST_LISTEN_MAX];
	int nlisten;
	bool json;
	struct output *out;	/* records and the summary */
	FILE *of;		/* where events go, next to the records */
	struct perfetto *pf;	/* --perfetto: every guest request (and QEMU's own I/O); NULL: off */
	double duration_s;	/* 0: until stop */
	volatile sig_atomic_t *stop;
	/* The qemu layer and the host kernel beneath QEMU (needs root). */
	bool trace_qemu;
	bool summary;		/* the guest-to-host segments at exit */
	bool summary_only;	/* --summary without --requests: no record is printed */
	/*
	 * Host kernel layers under QEMU (enum iot_layer bits); 0: what the join
	 * uses (system calls, io_uring, AIO, block and device). layers_explicit:
	 * the ones the user named, which must work.
	 */
	uint32_t layers, layers_explicit;
	/*
	 * --qemu-route kernel: a VM whose drives are all raw images under
	 * aio=io_uring is traced without a probe in QEMU (qemu_vm_kernel_route()).
	 */
	bool kernel_route;
	int qemu_pids[16];	/* --qemu-pid: these must be traced, or the agent stops */
	int nqemu_pids;
	bool verbose;
};

/* 0 on a clean stop, else -errno (reason printed). */
int host_run(const struct host_opts *o);

#endif
