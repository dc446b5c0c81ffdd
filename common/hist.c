// SPDX-License-Identifier: GPL-2.0
#include <string.h>
#include "hist.h"

void hist_reset(struct hist *h)
{
	memset(h, 0, sizeof(*h));
}

unsigned int hist_bucket(uint64_t v)
{
	unsigned int msb, shift;

	if (v < HIST_SUB)
		return v;
	msb = 63 - __builtin_clzll(v);
	shift = msb - HIST_SUB_BITS;
	/* (msb - SUB_BITS + 1) groups of SUB buckets precede, then the sub-bucket. */
	return (shift + 1) * HIST_SUB + ((v >> shift) & (HIST_SUB - 1));
}

uint64_t hist_bucket_upper(unsigned int b)
{
	unsigned int group = b / HIST_SUB, sub = b % HIST_SUB, shift;

	if (group == 0)
		return b;
	shift = group - 1;
	if (shift + HIST_SUB_BITS >= 63)
		return UINT64_MAX;
	return (((uint64_t)(HIST_SUB + sub + 1)) << shift) - 1;
}

void hist_add(struct hist *h, uint64_t v)
{
	unsigned int b = hist_bucket(v);

	if (b >= HIST_BUCKETS)
		b = HIST_BUCKETS - 1;
	h->b[b]++;
	if (!h->count || v < h->min)
		h->min = v;
	h->count++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
}

uint64_t hist_percentile(const struct hist *h, double p)
{
	uint64_t rank, seen = 0;

	if (!h->count)
		return 0;
	if (p >= 100.0)
		return h->max;
	rank = (uint64_t)(p / 100.0 * h->count);
	if (rank >= h->count)
		rank = h->count - 1;
	for (unsigned int b = 0; b < HIST_BUCKETS; b++) {
		seen += h->b[b];
		if (seen > rank) {
			uint64_t up = hist_bucket_upper(b);

			return up < h->max ? up : h->max;
		}
	}
	return h->max;
}

void hist_log2(const struct hist *h, uint64_t slots[64])
{
	memset(slots, 0, 64 * sizeof(slots[0]));
	for (unsigned int b = 0; b < HIST_BUCKETS; b++) {
		uint64_t lo;
		unsigned int k;

		if (!h->b[b])
			continue;
		/* Every value of a bucket shares its power of two, so the lower edge decides. */
		lo = b < HIST_SUB ? b : hist_bucket_upper(b - 1) + 1;
		k = lo ? 63 - __builtin_clzll(lo) : 0;
		slots[k] += h->b[b];
	}
}

void hist_print_log2(const struct hist *h, FILE *f, const char *title)
{
	uint64_t slots[64], us[64] = { 0 }, peak = 0;
	int lo = -1, hi = -1;

	/* Regroup ns slots into usec slots: 2^k ns -> usec slot k-10 (1024 ns ~ 1 us). */
	hist_log2(h, slots);
	for (int k = 0; k < 64; k++) {
		int u = k >= 10 ? k - 10 + 1 : 0;

		if (u > 63)
			u = 63;
		us[u] += slots[k];
	}
	for (int k = 0; k < 64; k++) {
		if (!us[k])
			continue;
		if (lo < 0)
			lo = k;
		hi = k;
		if (us[k] > peak)
			peak = us[k];
	}
	fprintf(f, "%s: count %llu\n", title, (unsigned long long)h->count);
	if (lo < 0)
		return;
	fprintf(f, "%20s : %-10s %s\n", "usecs", "count", "distribution");
	for (int k = lo; k <= hi; k++) {
		unsigned long long a = k ? 1ULL << (k - 1) : 0, b = (1ULL << k) - 1;
		int stars = peak ? (int)(us[k] * 40 / peak) : 0;
		char bar[41];

		memset(bar, '*', stars);
		bar[stars] = 0;
		fprintf(f, "%9llu -> %-8llu : %-10llu |%-40s|\n", a, b, (unsigned long long)us[k], bar);
	}
}

void hist_merge_k(struct hist *h, const struct iot_khist *k)
{
	if (!k->count)
		return;
	for (unsigned int b = 0; b < HIST_BUCKETS; b++) {
		if (!k->b[b])
			continue;
		/* The kernel keeps no minimum: the lowest filled bucket's lower edge stands in. */
		if (!h->count || (b ? hist_bucket_upper(b - 1) + 1 : 0) < h->min)
			h->min = b ? hist_bucket_upper(b - 1) + 1 : 0;
		break;
	}
	for (unsigned int b = 0; b < HIST_BUCKETS; b++)
		h->b[b] += k->b[b];
	h->count += k->count;
	h->sum += k->sum;
	if (k->max > h->max)
		h->max = k->max;
}
