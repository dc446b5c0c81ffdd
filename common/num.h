/* SPDX-License-Identifier: GPL-2.0 */
/* Numbers from the command line and addresses: decimal, unsigned, whole string, in range. */
#ifndef IOTRACER_NUM_H
#define IOTRACER_NUM_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

/* s as a decimal number from min to max into *ret: 0, or -EINVAL (a sign, a space, junk, overflow, range). */
static inline int iot_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
	unsigned long long v;
	char *end;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

#endif
