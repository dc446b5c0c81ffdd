// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <string.h>
#include "clocksync.h"

/* Clocks of a guest and its host drift by ppm; bound what we believe. */
#define MAX_DRIFT_PPM 500.0
/* A sample counts as good when its delay is within this factor of the best. */
#define GOOD_DELAY_FACTOR 1.5

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
	const struct clock_sample *best = NULL;
	double sx = 0, sy = 0, sxx = 0, sxy = 0, drift = 0;
	uint64_t best_delay = UINT64_MAX, x0;
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
	}
	if (good >= 2 && good * sxx - sx * sx > 0) {
		drift = (good * sxy - sx * sy) / (good * sxx - sx * sx);
		if (drift > MAX_DRIFT_PPM * 1e-6)
			drift = MAX_DRIFT_PPM * 1e-6;
		if (drift < -MAX_DRIFT_PPM * 1e-6)
			drift = -MAX_DRIFT_PPM * 1e-6;
	}
	est.offset_ns = sample_offset(best);
	est.ref_guest_ns = best->t1 + (best->t4 - best->t1) / 2;
	est.drift_ppm = drift * 1e6;
	est.samples = good;
	/* Half the round trip, plus what an unknown drift can add since the best sample. */
	est.uncertainty_ns = best_delay / 2;
	if (guest_now > est.ref_guest_ns) {
		double age = (double)(guest_now - est.ref_guest_ns);
		double slack = good >= 2 ? 20e-6 : MAX_DRIFT_PPM * 1e-6;

		est.uncertainty_ns += (uint64_t)(age * slack);
	}
	*ret = est;
	return 0;
}

uint64_t clocksync_to_host(const struct clock_estimate *est, uint64_t guest_ns)
{
	double since = (double)(int64_t)(guest_ns - est->ref_guest_ns);

	return guest_ns + est->offset_ns + (int64_t)(since * est->drift_ppm * 1e-6);
}
