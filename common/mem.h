/* SPDX-License-Identifier: GPL-2.0 */
/* Memory an agent uses on every request, made resident when it is allocated. */
#ifndef IOTRACER_MEM_H
#define IOTRACER_MEM_H

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

/*
 * calloc() whose pages are all written now. The join's windows are
 * megabytes that a run first touches page by page, one fault each, in the
 * middle of the work (a fault costs several microseconds in a VM); this
 * takes them at start, once. They are the agent's working set: its peak
 * resident memory is the same either way.
 */
static inline void *iot_calloc_resident(size_t n, size_t size)
{
	size_t bytes, page = (size_t)sysconf(_SC_PAGESIZE);
	volatile char *p;

	if (__builtin_mul_overflow(n, size, &bytes)) {
		errno = ENOMEM;
		return NULL;
	}
	p = calloc(1, bytes);
	if (p)
		for (size_t off = 0; off < bytes; off += page)
			p[off] = 0;
	return (void *)p;
}

#endif
