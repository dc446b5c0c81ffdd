/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Latency histograms: log-linear buckets (16 per power of two) so that
 * percentiles are within ~6% while memory stays fixed; printed as the log2
 * histograms users of biolatency know.
 */
#ifndef IOTRACER_HIST_H
#define IOTRACER_HIST_H

#include <stdint.h>
#include <stdio.h>
#include "record.h"

#define HIST_SUB_BITS IOT_HIST_SUB_BITS
#define HIST_SUB IOT_HIST_SUB
#define HIST_BUCKETS IOT_HIST_BUCKETS

struct hist {
	uint64_t count;
	uint64_t sum;
	uint64_t max;
	uint64_t min;
	uint64_t b[HIST_BUCKETS];
};

void hist_reset(struct hist *h);
/* Add a histogram kept by the kernel side (same buckets) into h. */
void hist_merge_k(struct hist *h, const struct iot_khist *k);
void hist_add(struct hist *h, uint64_t v);
/* Value at percentile p (0..100): the upper edge of the bucket holding it, capped at max. */
uint64_t hist_percentile(const struct hist *h, double p);
unsigned int hist_bucket(uint64_t v);
uint64_t hist_bucket_upper(unsigned int b);
/* log2 view: slot k counts values in [2^k, 2^(k+1)) (slot 0 also holds 0). */
void hist_log2(const struct hist *h, uint64_t ret_slots[64]);
/* Print a log2 histogram of values in ns, shown in usecs. */
void hist_print_log2(const struct hist *h, FILE *f, const char *title);

#endif
