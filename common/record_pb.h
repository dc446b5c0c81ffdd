/* SPDX-License-Identifier: GPL-2.0 */
/* struct iot_record <-> protobuf-c Record, for the guest/host wire. */
#ifndef IOTRACER_RECORD_PB_H
#define IOTRACER_RECORD_PB_H

#include "iotracer.pb-c.h"
#include "record.h"

/* Fill msg (initialised here) from r; ts_buf must hold IOT_TS_MAX values and outlive msg. */
void record_to_pb(const struct iot_record *r, Iotracer__Record *msg, uint64_t *ts_buf);
/*
 * 0, or -EINVAL when r holds a value record_from_pb() refuses (an unknown
 * kind, op, syscall or driver): what a sender checks before it sends.
 */
int record_check(const struct iot_record *r);
/* 0, or -EINVAL when msg does not describe a valid record. */
int record_from_pb(const Iotracer__Record *msg, struct iot_record *ret_r);

#endif
