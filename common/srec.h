/* SPDX-License-Identifier: GPL-2.0 */
/* A record's sparse ring-buffer form (struct iot_srec, record.h) back in full. */
#ifndef IOTRACER_SREC_H
#define IOTRACER_SREC_H

#include <stddef.h>
#include "record.h"

/*
 * The sparse record of size bytes at data into *ret: every stamp and field
 * it does not carry at its default (0; offset and sector IOT_UNKNOWN_U64;
 * actor_tid the tid). 0, or -EINVAL when size does not match its masks
 * (*ret untouched).
 */
int iot_srec_expand(const void *data, size_t size, struct iot_record *ret);

#endif
