/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NTP-style clock synchronisation between a guest and its host.
 *
 * The guest sends a probe at t1 (its clock), the host receives it at t2 and
 * replies at t3 (host clock), the guest receives the reply at t4. Then
 *   offset = ((t2 - t1) + (t3 - t4)) / 2     (host minus guest)
 *   delay  = (t4 - t1) - (t3 - t2)
 * and the true offset lies within offset ± delay / 2 whatever the asymmetry
 * of the path. Samples with the smallest delay bound the offset tightest, so
 * the estimate comes from them; the drift between the clocks is the slope of
 * those good samples' offsets over time.
 */
#ifndef IOTRACER_CLOCKSYNC_H
#define IOTRACER_CLOCKSYNC_H

#include <stdint.h>

#define CLOCKSYNC_WINDOW 64

struct clock_sample {
	uint64_t t1, t2, t3, t4;
};

struct clocksync {
	struct clock_sample s[CLOCKSYNC_WINDOW];	/* ring of the latest samples */
	unsigned int n, head;
	uint64_t accepted, rejected;
};

struct clock_estimate {
	int64_t offset_ns;		/* host = guest + offset (at ref_guest_ns) */
	uint64_t uncertainty_ns;	/* the true offset is within offset ± this */
	double drift_ppm;		/* host clock runs this much faster than the guest's */
	uint64_t ref_guest_ns;		/* guest time the offset refers to */
	unsigned int samples;		/* samples the estimate rests on */
};

void clocksync_init(struct clocksync *cs);
/* Add one exchange; -EINVAL for an impossible one (reply before probe, negative delay). */
int clocksync_add(struct clocksync *cs, const struct clock_sample *smp);
/* -EAGAIN until there is a sample. Uncertainty grows with the age of the best sample. */
int clocksync_estimate(const struct clocksync *cs, uint64_t guest_now_ns, struct clock_estimate *ret_est);
/* A guest timestamp on the host's clock, using an estimate. */
uint64_t clocksync_to_host(const struct clock_estimate *est, uint64_t guest_ns);

#endif
