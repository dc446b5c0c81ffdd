/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Appending to a fixed buffer without overrunning it; the would-be length is
 * tracked, so a caller can tell the output was cut (w >= len).
 *
 * JSON is the format programs read at full rate, so it is built with these
 * plain appends: a printf per field cost more than everything the kernel
 * side does for a request.
 */
#ifndef IOTRACER_SBUF_H
#define IOTRACER_SBUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

struct sbuf {
	char *p;
	size_t len, w;
};

static inline void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(b->w < b->len ? b->p + b->w : NULL, b->w < b->len ? b->len - b->w : 0, fmt, ap);
	va_end(ap);
	if (n > 0)
		b->w += n;
}

static inline void sb_put(struct sbuf *b, const char *s, size_t n)
{
	if (b->w + n < b->len)
		memcpy(b->p + b->w, s, n);
	b->w += n;
}

static inline void sb_str(struct sbuf *b, const char *s)
{
	sb_put(b, s, strlen(s));
}

#define SB_LIT(b, lit) sb_put(b, lit, sizeof(lit) - 1)

static inline void sb_u64(struct sbuf *b, uint64_t v)
{
	char tmp[20];
	int n = 0;

	do {
		tmp[sizeof(tmp) - 1 - n++] = '0' + v % 10;
		v /= 10;
	} while (v);
	sb_put(b, tmp + sizeof(tmp) - n, n);
}

static inline void sb_i64(struct sbuf *b, int64_t v)
{
	if (v < 0) {
		SB_LIT(b, "-");
		sb_u64(b, -(uint64_t)v);
	} else {
		sb_u64(b, v);
	}
}

/* ,"key":value */
static inline void sb_kv_u64(struct sbuf *b, const char *key, uint64_t v)
{
	SB_LIT(b, ",\"");
	sb_str(b, key);
	SB_LIT(b, "\":");
	sb_u64(b, v);
}

static inline void sb_kv_i64(struct sbuf *b, const char *key, int64_t v)
{
	SB_LIT(b, ",\"");
	sb_str(b, key);
	SB_LIT(b, "\":");
	sb_i64(b, v);
}

/* ,"key":"value" (value not escaped: names from the program's own tables) */
static inline void sb_kv_str(struct sbuf *b, const char *key, const char *v)
{
	SB_LIT(b, ",\"");
	sb_str(b, key);
	SB_LIT(b, "\":\"");
	sb_str(b, v);
	SB_LIT(b, "\"");
}

#endif /* IOTRACER_SBUF_H */
