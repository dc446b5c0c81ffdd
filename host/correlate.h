/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The correlator: each guest request is matched to the QEMU request that
 * served it, and that to the host kernel I/O QEMU issued for it.
 *
 * Keys, never time alone:
 *  - guest -> QEMU: the guest-physical address of the virtio-blk request
 *    header (the guest computes it at queue time, QEMU sees it as the
 *    element's first out descriptor), cross-checked against sector, length
 *    and operation; where the guest could not give it, (sector, length,
 *    operation). Time only orders reuse of the same key.
 *  - QEMU -> its backend call: the VirtIOBlockReq the backend call was made
 *    for (same thread, during the submit).
 *  - backend call -> host kernel I/O: (QEMU pid, file, offset, operation)
 *    for system calls and io_uring; (device, sector) for Linux AIO, the
 *    file offset mapped to the device through FIEMAP.
 *  - a QEMU whose drives are all raw images under aio=threads or io_uring
 *    has no backend call probed: its host I/O carries the guest's first
 *    data buffer, as the submit does, and names the request by it (the
 *    newest submit of that buffer before the I/O began, at the same offset
 *    and operation). Its flushes take the oldest flush not yet served.
 */
#ifndef IOTRACER_CORRELATE_H
#define IOTRACER_CORRELATE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "output.h"
#include "perfetto.h"
#include "qemu_event.h"
#include "record.h"

struct corr_opts {
	struct output *out;	/* where the joined records go */
	FILE *of;		/* events and the summary */
	struct perfetto *pf;	/* joined records as Perfetto slices too; NULL: off */
	bool json;
	bool summary_only;	/* nothing per request is printed: join and count, format nothing */
	uint64_t hold_ns;	/* how long a guest request waits for its host side */
};

enum corr_reason {
	CORR_MATCHED_GPA,	/* exact key */
	CORR_MATCHED_SECTOR,	/* fallback key: the guest gave no header address */
	CORR_NOT_VIRTIO,	/* no virtio-blk request behind it (page cache, another driver) */
	CORR_NO_VM,		/* the guest's QEMU is not known or not traced */
	CORR_NO_QEMU_REQ,	/* no QEMU request with this key in time */
	CORR_KEY_DISAGREES,	/* the header address matched a request with another sector/length/op */
	CORR_HOLD_FULL,		/* too many guest requests waiting: given up on */
	CORR_REASON_MAX,
};

struct corr_stats {
	uint64_t guest[CORR_REASON_MAX];	/* guest records by outcome */
	uint64_t qemu_submits;			/* virtio-blk submits seen */
	uint64_t qemu_layout_bad;		/* blk_aio calls whose request did not read back (not virtio-blk) */
	uint64_t qemu_reqs;			/* guest requests QEMU handled */
	uint64_t qemu_dropped;			/* QEMU requests no guest record claimed, dropped from the window */
	uint64_t backends, backends_unlinked;	/* backend calls; those without a submit under way */
	uint64_t backends_by_iov;		/* linked to a submit whose data buffers they carry */
	uint64_t backends_relinked;		/* of those, not the submit the probe named: made in a later turn */
	uint64_t host_records, host_linked;	/* host kernel records of QEMU; those tied to a request */
	/*
	 * Host records of a QEMU whose backend calls are not probed (raw images
	 * only), tied straight to their request: by the data buffers, and
	 * flushes by order (the oldest flush of that process not yet served).
	 * Both are counted in host_linked too.
	 */
	uint64_t host_by_buffers, host_flush_by_order;
	uint64_t with_host_io;			/* matched guest requests whose host I/O was found */
	/*
	 * A QEMU probed through USDT: its merged calls, and the requests of
	 * such a call that had left the window of recent submits (they keep
	 * their own, and no host I/O).
	 */
	uint64_t qemu_merges, qemu_merge_unknown;
	uint64_t qemu_usdt_submits;		/* reads and writes reported by USDT probes */
	uint64_t qemu_kernel_submits;		/* reads and writes seen on the kernel route */
};

struct corr;

struct corr *corr_new(const struct corr_opts *o);
void corr_free(struct corr *c);
void corr_qemu_event(struct corr *c, const struct iot_qemu_event *e);
/*
 * QEMU process pid is traced without backend probes (lean) or no longer: its
 * host I/O is tied to its requests directly (qemu_vm_needs_backend()).
 */
void corr_vm_lean(struct corr *c, uint32_t pid, bool lean);
/* A host kernel record of a traced QEMU process. */
void corr_host_record(struct corr *c, const struct iot_record *r);
/*
 * A guest's record, its times already on the host clock (unless
 * guest_clock). vm_pid is the QEMU serving that guest, 0 if unknown.
 */
void corr_guest_record(struct corr *c, int vm_pid, const char *guest, bool guest_clock, uint64_t unc_ns,
		       const struct iot_record *r);
/* Every QEMU event and host kernel record from before ts (CLOCK_MONOTONIC) has been passed in. */
void corr_drained(struct corr *c, uint64_t ts);
/* Writes out the guest records that are resolved, or waited long enough. */
void corr_tick(struct corr *c, uint64_t now_ns);
/* At exit: writes out everything held. */
void corr_flush(struct corr *c);
void corr_get_stats(const struct corr *c, struct corr_stats *ret);
const char *corr_reason_name(enum corr_reason r);
/* Per-segment latency of matched requests (guest and host side by side). */
void corr_summary(const struct corr *c, FILE *f, bool json);

#endif
