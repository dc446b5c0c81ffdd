/* SPDX-License-Identifier: GPL-2.0 */
/* Rendering of records: text lines, trees, JSON lines, and the summary. */
#ifndef IOTRACER_OUTPUT_H
#define IOTRACER_OUTPUT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "hist.h"
#include "names.h"
#include "record.h"

enum output_format { OUT_TEXT, OUT_JSON };

struct output_opts {
	size_t sz;
	enum output_format format;
	bool tree;		/* text: a tree per request (--verbose) */
	bool per_request;	/* print each request (off with --summary alone) */
	uint64_t t0_ns;		/* CLOCK_MONOTONIC origin for text times */
	FILE *out;
};
#define output_opts__last_field out

struct output;

struct output *output__new(const struct output_opts *opts);
void output__free(struct output *o);
void output__record(struct output *o, const struct iot_record *r);
/*
 * A record from a guest named src; guest_clock when its times could not be
 * put on this machine's clock (no synchronisation yet).
 */
void output__record_src(struct output *o, const struct iot_record *r, const char *src, bool guest_clock);
/*
 * The same with more: json_extra ("key":value,...) goes inside the JSON
 * object, text_extra at the end of the text line (either may be NULL).
 */
void output__record_src_ext(struct output *o, const struct iot_record *r, const char *src, bool guest_clock,
			    const char *json_extra, const char *text_extra);
/* One line (text) or object (JSON) describing each layer's state. */
void output__layer(struct output *o, const char *layer, const char *state, const char *route);
void output__stats(struct output *o, const uint64_t counts[IOT_CNT_MAX], uint64_t user_dropped);
void output__summary(struct output *o, FILE *f);
void output__summary_json(struct output *o);
void output__reset_summary(struct output *o);
/* Summary from in-kernel aggregation: histograms per segment and counts per kind. */
void output__merge_khist(struct output *o, int seg, const struct iot_khist *k);
void output__set_kind_counts(struct output *o, const uint64_t counts[IOT_CNT_MAX]);
uint64_t output__records(const struct output *o);

/* Building blocks, exposed for tests. */
int output_format_text(const struct output *o, const struct iot_record *r, char *buf, size_t len);
int output_format_json(const struct iot_record *r, char *buf, size_t len);
size_t json_escape(const char *s, size_t n, char *buf, size_t len);
void format_kdev(uint32_t kdev, char *buf, size_t len);

#endif
