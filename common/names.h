/* SPDX-License-Identifier: GPL-2.0 */
/* Names of layers, timestamps, operations, used by every output and by parsing. */
#ifndef IOTRACER_NAMES_H
#define IOTRACER_NAMES_H

#include <stdint.h>
#include "record.h"

const char *iot_layer_name(int layer);
int iot_layer_parse(const char *name);		/* -1 when unknown */
/* Parse "block,io_uring" or "all" into a bitmask; -EINVAL with ret_bad set to the bad word. */
int iot_layers_parse(const char *list, uint32_t *ret_mask, const char **ret_bad);
const char *iot_ts_name(int ts);
const char *iot_kind_name(int kind);
const char *iot_op_name(int op);
char iot_op_letter(int op);
const char *iot_syscall_name(int sys);
const char *iot_driver_name(int drv);
const char *iot_counter_name(int cnt);
const char *iot_attribution(const struct iot_record *r);

/* The latency split: segment i runs from one present timestamp to the next. */
#define IOT_SEG_MAX IOT_TS_MAX
struct iot_split {
	int n;
	const char *name[IOT_SEG_MAX];
	int seg[IOT_SEG_MAX];		/* enum iot_seg of each, -1 when it has none */
	int from_ts[IOT_SEG_MAX];	/* enum iot_ts the segment starts at */
	uint64_t ns[IOT_SEG_MAX];
	uint64_t total_ns;
	uint64_t first_ns, last_ns;
	int ordered;			/* 1 when the present timestamps never go backwards */
};
void iot_record_split(const struct iot_record *r, struct iot_split *ret);

/* Segment names every histogram knows, in display order. */
extern const char *const iot_segment_names[];
#define IOT_SEGMENT_COUNT IOT_SEG_TOTAL

/* What a record is, in a word: the system call, "uring:OPCODE", or the kind. */
const char *iot_record_what(const struct iot_record *r, char *buf, size_t len);

#endif
