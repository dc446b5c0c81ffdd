/* SPDX-License-Identifier: GPL-2.0 */
/*
 * --perfetto: every request as a native Perfetto trace (protobuf), written
 * while tracing. Track layout and how to read it: docs/perfetto.md.
 *
 * The file is a Trace message whose packets are appended one whole packet
 * at a time (field 1, length, TracePacket), so it is a valid trace at every
 * write, however the program ends.
 */
#ifndef IOTRACER_PERFETTO_H
#define IOTRACER_PERFETTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "record.h"

struct perfetto_opts {
	size_t sz;
	int fd;			/* where the trace goes (not closed by the writer) */
	const char *machine;	/* the machine a record without a source comes from */
};
#define perfetto_opts__last_field machine

/* One host kernel I/O QEMU made for a guest request. */
struct perfetto_host_io {
	uint64_t start_ns, end_ns;
	uint64_t offset, len;
	uint64_t sector;	/* IOT_UNKNOWN_U64 when not known */
	uint32_t tid;
	const char *call;	/* "pwritev", "io_uring", ... */
};

#define PERFETTO_HOST_IO_MAX 8

/* The host side of a guest request the correlator matched (host mode). */
struct perfetto_host {
	const char *machine;	/* the host's machine track ("host") */
	const char *match;	/* the key that matched: "gpa" or "sector" */
	uint32_t qemu_pid;
	uint32_t qemu_tid;	/* the QEMU thread that submitted it; 0 when unknown */
	uint64_t gpa;		/* virtio-blk request header address (the key), 0 when unknown */
	uint64_t kick_ns;	/* the guest handed the request to the device */
	uint64_t submit_ns;	/* QEMU submitted it to its backend */
	bool kernel;		/* seen on the kernel route: submit_ns is the host's, one kick_to_host slice */
	int nio;
	struct perfetto_host_io io[PERFETTO_HOST_IO_MAX];
};

struct perfetto_stats {
	uint64_t requests;	/* requests written */
	uint64_t packets;
	uint64_t bytes;		/* written to the file */
	uint64_t lane_full;	/* slices put on a lane that was still busy (may nest wrongly) */
	uint64_t too_big;	/* packets over the size bound, not written */
};

struct perfetto;

/* NULL with errno set on failure. */
struct perfetto *perfetto__new(const struct perfetto_opts *opts);
/* Flushes what is buffered; accepts NULL. */
void perfetto__free(struct perfetto *p);
/*
 * One request. src names the machine it was traced on (NULL: this one);
 * guest_clock when its times are the guest's own (not on this clock).
 */
void perfetto__record(struct perfetto *p, const struct iot_record *r, const char *src, bool guest_clock);
/* A guest request joined to the QEMU request and host I/O that served it. */
void perfetto__record_host(struct perfetto *p, const struct iot_record *r, const char *src, bool guest_clock,
			   const struct perfetto_host *host);
/* Writes out whole packets buffered so far: 0, or the first write error (-errno). */
int perfetto__flush(struct perfetto *p);
void perfetto__stats(const struct perfetto *p, struct perfetto_stats *ret);

#endif
