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

/* Decimal digits of v. */
static inline int sb_digits(uint64_t v)
{
	int n = 1;

	while (v >= 10000) {
		v /= 10000;
		n += 4;
	}
	return n + (v >= 10) + (v >= 100) + (v >= 1000);
}

/*
 * Two digits at a time, straight into the buffer: a record is mostly
 * nanosecond stamps of 13 to 16 digits, and a copy through a scratch
 * array was a library call per number.
 */
static inline void sb_u64(struct sbuf *b, uint64_t v)
{
	static const char pairs[201] =
		"00010203040506070809101112131415161718192021222324"
		"25262728293031323334353637383940414243444546474849"
		"50515253545556575859606162636465666768697071727374"
		"75767778798081828384858687888990919293949596979899";
	int n = sb_digits(v);
	char tmp[20], *end;

	end = b->w + n < b->len ? b->p + b->w + n : tmp + n;
	while (v >= 100) {
		unsigned int r = v % 100;

		v /= 100;
		end -= 2;
		memcpy(end, pairs + 2 * r, 2);
	}
	if (v >= 10) {
		end -= 2;
		memcpy(end, pairs + 2 * v, 2);
	} else {
		*--end = '0' + v;
	}
	b->w += n;
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
