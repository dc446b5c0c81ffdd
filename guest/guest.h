/* SPDX-License-Identifier: GPL-2.0 */
/* Guest mode: trace this machine and stream the records to a host agent. */
#ifndef IOTRACER_GUEST_H
#define IOTRACER_GUEST_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include "addr.h"
#include "tracer.h"

struct guest_opts {
	struct iot_addr addr;
	size_t queue_bytes;		/* send queue bound */
	double duration_s;		/* 0: until stop */
	bool json;			/* link events and final stats as JSON lines on out */
	FILE *out;
	volatile sig_atomic_t *stop;
};

/*
 * Runs the guest agent on a loaded and attached tracer whose record
 * callback is guest_on_record() with the guest as context: guest_new()
 * before tracer__new(), guest_run() after tracer__attach().
 */
struct guest;
struct guest *guest_new(const struct guest_opts *o, char *err, size_t errlen);
void guest_on_record(void *ctx, const struct iot_record *r);
/* 0 when it ran and ended cleanly, else -errno (reason printed). */
int guest_run(struct guest *g, struct tracer *t);
void guest_free(struct guest *g);

#endif
