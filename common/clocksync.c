// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <string.h>
#include "clocksync.h"

/* Clocks of a guest and its host drift by ppm; bound what we believe. */
#define MAX_DRIFT_PPM 500.0
/* A sample counts as good when its delay is within this factor of the best. */
#define GOOD_DELAY_FACTOR 1.5
/* Good samples must span this much guest time before a drift is estimated. */
#define DRIFT_MIN_SPAN_NS (5ull * 1000000000)
/* Error allowed for an estimated drift, and the drift assumed possible when none is estimated yet. */
#define KNOWN_DRIFT_SLACK_PPM 20.0
#define UNKNOWN_DRIFT_PPM 200.0

void clocksync_init(struct clocksync *cs)
{
	memset(cs, 0, sizeof(*cs));
}

static int64_t sample_offset(const struct clock_sample *s)
{
	/* Halve each difference first: the sum of two 64-bit differences may overflow. */
	return ((int64_t)(s->t2 - s->t1)) / 2 + ((int64_t)(s->t3 - s->t4)) / 2;
}

static uint64_t sample_delay(const struct clock_sample *s)
{
	return (s->t4 - s->t1) - (s->t3 - s->t2);
}

int clocksync_add(struct clocksync *cs, const struct clock_sample *smp)
{
	/* The reply cannot come back before the probe left, nor leave before it arrived. */
	if (smp->t4 < smp->t1 || smp->t3 < smp->t2 || smp->t4 - smp->t1 < smp->t3 - smp->t2) {
		cs->rejected++;
		return -EINVAL;
	}
	cs->s[cs->head] = *smp;
	cs->head = (cs->head + 1) % CLOCKSYNC_WINDOW;
	if (cs->n < CLOCKSYNC_WINDOW)
		cs->n++;
	cs->accepted++;
	return 0;
}

int clocksync_estimate(const struct clocksync *cs, uint64_t guest_now, struct clock_estimate *ret)
{
	const struct clock_sample *best = NULL, *ref = NULL;
	double sx = 0, sy = 0, sxx = 0, sxy = 0, drift = 0, slack, ref_unc = 0;
	uint64_t best_delay = UINT64_MAX, x0, tmin = UINT64_MAX, tmax = 0;
	unsigned int good = 0;
	struct clock_estimate est = {};

	if (!cs->n)
		return -EAGAIN;
	for (unsigned int i = 0; i < cs->n; i++) {
		uint64_t d = sample_delay(&cs->s[i]);

		/* Among equally good samples the newest is the most relevant. */
		if (!best || d < best_delay || (d == best_delay && cs->s[i].t1 > best->t1)) {
			best_delay = d;
			best = &cs->s[i];
		}
	}
	/* Drift: least-squares slope of the good samples' offsets against guest time. */
	x0 = best->t1;
	for (unsigned int i = 0; i < cs->n; i++) {
		const struct clock_sample *s = &cs->s[i];
		double x, y;

		if ((double)sample_delay(s) > GOOD_DELAY_FACTOR * (double)best_delay + 1000.0)
			continue;
		x = (double)(int64_t)(s->t1 - x0);
		y = (double)(sample_offset(s) - sample_offset(best));
		sx += x;
		sy += y;
		sxx += x * x;
		sxy += x * y;
		good++;
		tmin = s->t1 < tmin ? s->t1 : tmin;
		tmax = s->t1 > tmax ? s->t1 : tmax;
	}
	/*
	 * Over a short span the slope is mostly the delays' jitter (100 us over
	 * 0.2 s reads as 500 ppm): below DRIFT_MIN_SPAN_NS no drift is applied,
	 * and the uncertainty allows for any plausible one instead.
	 */
	if (good >= 2 && tmax - tmin >= DRIFT_MIN_SPAN_NS && good * sxx - sx * sx > 0) {
		drift = (good * sxy - sx * sy) / (good * sxx - sx * sx);
		if (drift > MAX_DRIFT_PPM * 1e-6)
			drift = MAX_DRIFT_PPM * 1e-6;
		if (drift < -MAX_DRIFT_PPM * 1e-6)
			drift = -MAX_DRIFT_PPM * 1e-6;
		slack = KNOWN_DRIFT_SLACK_PPM * 1e-6;
	} else {
		drift = 0;
		slack = UNKNOWN_DRIFT_PPM * 1e-6;
	}
	/*
	 * The reference is the sample that bounds the offset now the tightest:
	 * half its round trip plus what the drift's error can add since.
	 */
	for (unsigned int i = 0; i < cs->n; i++) {
		const struct clock_sample *s = &cs->s[i];
		uint64_t mid = s->t1 + (s->t4 - s->t1) / 2;
		double u = sample_delay(s) / 2.0;

		if (guest_now > mid)
			u += (double)(guest_now - mid) * slack;
		if (!ref || u < ref_unc) {
			ref = s;
			ref_unc = u;
		}
	}
	est.offset_ns = sample_offset(ref);
	est.ref_guest_ns = ref->t1 + (ref->t4 - ref->t1) / 2;
	est.drift_ppm = drift * 1e6;
	est.samples = good;
	est.uncertainty_ns = (uint64_t)ref_unc;
	*ret = est;
	return 0;
}

uint64_t clocksync_to_host(const struct clock_estimate *est, uint64_t guest_ns)
{
	double since = (double)(int64_t)(guest_ns - est->ref_guest_ns);

	return guest_ns + est->offset_ns + (int64_t)(since * est->drift_ppm * 1e-6);
}
