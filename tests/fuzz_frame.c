// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the wire decoder: what a hostile guest can send.
 *
 * The first byte of the input is not part of the stream: its value is where
 * the rest is split in two feeds, so frames and prefixes get cut at
 * fuzzer-chosen places (a stream's own first byte is the top of a length
 * prefix, 0 in any frame under the limit, so it could not serve). Every decoded frame
 * goes through what the host does with it (hello check, batch decode), and
 * is encoded again: decoding that encoding must give the same bytes once
 * more, or fail only on the memory budget (the first encoding may have been
 * padded, e.g. with over-long varints, to earn a larger budget). The same
 * input through a decoder without the fast batch path must give the same
 * frames and the same end. Frames that
 * carry unknown fields are exempt from the "must decode" part: protobuf-c
 * 1.4 accepts a field number 0 written as an over-long varint, keeps it as
 * unknown, and then writes it in a form it refuses itself.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Icommon
 *        -I<dir of iotracer.pb-c.h> tests/fuzz_frame.c common/frame.c
 *        common/record_pb.c <iotracer.pb-c.c> -lprotobuf-c
 * Seeds: test_frame --write-seeds DIR
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "frame.h"

/* Small enough that the fuzzer reaches the limit, large enough for real batches. */
#define FUZZ_MAX_FRAME (64u << 10)

#define FUZZ_ASSERT(cond)                                                       \
	do {                                                                    \
		if (!(cond)) {                                                  \
			fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                \
		}                                                               \
	} while (0)

struct fuzz_ctx {
	struct frame_decoder *d;
	bool strict;		/* end the connection unless the first frame is a valid hello */
	unsigned int frames;
	uint8_t *again;		/* the re-encoding being checked, in the nested decode */
	size_t again_len;
	bool again_seen;
};

static int count_record(void *ctx, const struct iot_record *r)
{
	size_t *n = ctx;

	/* record_from_pb() promised these. */
	FUZZ_ASSERT(r->kind <= IOT_KIND_BIO && r->op < IOT_OP_MAX && r->syscall < IOT_SYS_MAX &&
		    r->driver <= IOT_DRV_OTHER);
	(*n)++;
	return 0;
}

static void check_batch(const Iotracer__RecordBatch *b)
{
	struct iot_record recs[64];
	size_t valid = 0, n = 0;
	int invalid, r;

	invalid = frame_batch_foreach(b, count_record, &valid);
	FUZZ_ASSERT(invalid >= 0 && (size_t)invalid + valid == b->n_records);
	r = frame_batch_decode(b, recs, 64, &n);
	if (b->n_records > 64) {
		FUZZ_ASSERT(r == -ENOBUFS);
	} else {
		FUZZ_ASSERT(r == invalid && n == valid);
	}
}

/* Inner decode of our own re-encoding: the same bytes must come out. */
static int again_cb(void *ctx, const Iotracer__Frame *f)
{
	struct fuzz_ctx *c = ctx;
	size_t len = iotracer__frame__get_packed_size(f);
	uint8_t *buf;

	FUZZ_ASSERT(!c->again_seen);
	c->again_seen = true;
	FUZZ_ASSERT(len + IOT_FRAME_HDR == c->again_len);
	buf = malloc(len);
	FUZZ_ASSERT(buf);
	FUZZ_ASSERT(iotracer__frame__pack(f, buf) == len);
	FUZZ_ASSERT(!memcmp(buf, c->again + IOT_FRAME_HDR, len));
	free(buf);
	return 0;
}

static bool has_unknown(const ProtobufCMessage *m)
{
	return m && m->n_unknown_fields;
}

/* Unknown fields anywhere in the frame: the messages of our schema, walked by hand. */
static bool frame_has_unknown(const Iotracer__Frame *f)
{
	if (has_unknown(&f->base) || has_unknown(&f->hello->base))
		return true;
	if (f->msg_case == IOTRACER__FRAME__MSG_HELLO)
		for (size_t i = 0; i < f->hello->n_disks; i++)
			if (has_unknown(&f->hello->disks[i]->base))
				return true;
	if (f->msg_case == IOTRACER__FRAME__MSG_BATCH) {
		if (f->batch->clock && has_unknown(&f->batch->clock->base))
			return true;
		for (size_t i = 0; i < f->batch->n_records; i++)
			if (has_unknown(&f->batch->records[i]->base))
				return true;
	}
	return false;
}

static void check_reencode(const Iotracer__Frame *f)
{
	struct frame_decoder d2;
	struct fuzz_ctx c2 = { .d = &d2 };
	size_t cap = iotracer__frame__get_packed_size(f) + IOT_FRAME_HDR, len = 0;
	uint8_t *buf = malloc(cap);
	int r;

	FUZZ_ASSERT(buf);
	FUZZ_ASSERT(frame_encode(f, buf, cap - 1, &len) == -EMSGSIZE);
	FUZZ_ASSERT(frame_encode(f, buf, cap, &len) == 0 && len == cap);
	c2.again = buf;
	c2.again_len = len;
	FUZZ_ASSERT(frame_decoder__init(&d2, IOT_FRAME_MAX_LIMIT) == 0);
	r = frame_decoder__feed(&d2, buf, len, again_cb, &c2);
	if (r == 0) {
		FUZZ_ASSERT(c2.again_seen && frame_decoder__finish(&d2) == 0);
	} else {
		bool ok = r == -EMSGSIZE || (r == -EBADMSG && frame_has_unknown(f));

		if (!ok)
			fprintf(stderr, "re-encoded %s frame refused: %s\n", frame_msg_name(f->msg_case),
				frame_decoder__error(&d2));
		FUZZ_ASSERT(ok && !c2.again_seen);
	}
	frame_decoder__fini(&d2);
	free(buf);
}

static int fuzz_cb(void *ctx, const Iotracer__Frame *f)
{
	struct fuzz_ctx *c = ctx;
	char err[128];
	int r;

	FUZZ_ASSERT(f && f->msg_case >= IOTRACER__FRAME__MSG_HELLO &&
		    f->msg_case <= IOTRACER__FRAME__MSG_ACK && f->hello);
	if (c->frames++ == 0) {
		r = frame_check_hello(f, err, sizeof(err));
		FUZZ_ASSERT(r == 0 || r == -EPROTO || r == -EPROTONOSUPPORT);
		if (r && c->strict)
			return frame_decoder__fail(c->d, r, "%s", err);
	}
	if (f->msg_case == IOTRACER__FRAME__MSG_BATCH)
		check_batch(f->batch);
	check_reencode(f);
	return 0;
}

/* What a decoder handed over, frame by frame, packed again by protobuf-c. */
struct trace {
	uint8_t *buf;
	size_t len, cap;
};

static int trace_cb(void *ctx, const Iotracer__Frame *f)
{
	struct trace *t = ctx;
	size_t n = iotracer__frame__get_packed_size(f) + 1;

	if (t->cap - t->len < n) {
		t->cap = (t->len + n) * 2;
		t->buf = realloc(t->buf, t->cap);
		FUZZ_ASSERT(t->buf);
	}
	t->buf[t->len++] = (uint8_t)f->msg_case;
	t->len += iotracer__frame__pack(f, t->buf + t->len);
	return 0;
}

/* The whole input through one decoder, the fast batch path on or off: its trace and how it ended. */
static int decode_all(const uint8_t *data, size_t size, size_t split, bool no_fast, struct trace *t,
		      uint64_t *ret_fast)
{
	struct frame_decoder d;
	int r;

	FUZZ_ASSERT(frame_decoder__init(&d, FUZZ_MAX_FRAME) == 0);
	d.no_fast = no_fast;
	r = frame_decoder__feed(&d, data, split, trace_cb, t);
	if (!r)
		r = frame_decoder__feed(&d, data + split, size - split, trace_cb, t);
	if (!r)
		r = frame_decoder__finish(&d);
	*ret_fast = d.fast_frames;
	frame_decoder__fini(&d);
	return r;
}

/*
 * The fast batch path must make of every input exactly what protobuf-c
 * makes of it: the same frames, the same end.
 */
static void check_fast_path(const uint8_t *data, size_t size, size_t split)
{
	struct trace fast = {}, slow = {};
	uint64_t nfast, nslow;
	int rf, rs;

	rf = decode_all(data, size, split, false, &fast, &nfast);
	rs = decode_all(data, size, split, true, &slow, &nslow);
	FUZZ_ASSERT(nslow == 0);
	if (rf != rs || fast.len != slow.len || (fast.len && memcmp(fast.buf, slow.buf, fast.len)))
		fprintf(stderr, "fast path: %d, %zu bytes of frames; protobuf-c: %d, %zu bytes\n",
			rf, fast.len, rs, slow.len);
	FUZZ_ASSERT(rf == rs && fast.len == slow.len && (!fast.len || !memcmp(fast.buf, slow.buf, fast.len)));
	free(fast.buf);
	free(slow.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct frame_decoder d;
	struct fuzz_ctx c = { .d = &d };
	size_t split, pending;
	int r;

	if (size == 0)
		return 0;
	split = data[0];
	data++;
	size--;
	if (split > size)
		split = size;
	c.strict = size && (data[size - 1] & 1);
	check_fast_path(data, size, split);
	FUZZ_ASSERT(frame_decoder__init(&d, FUZZ_MAX_FRAME) == 0);
	r = frame_decoder__feed(&d, data, split, fuzz_cb, &c);
	FUZZ_ASSERT(d.cap <= d.max_frame);
	if (!r)
		r = frame_decoder__feed(&d, data + split, size - split, fuzz_cb, &c);
	FUZZ_ASSERT(d.cap <= d.max_frame);
	pending = frame_decoder__pending(&d);
	FUZZ_ASSERT(pending <= IOT_FRAME_HDR + FUZZ_MAX_FRAME);
	if (!r) {
		FUZZ_ASSERT(!frame_decoder__error(&d));
		r = frame_decoder__finish(&d);
		FUZZ_ASSERT(pending ? r == -EPIPE : r == 0);
	}
	if (r) {
		/* An error is explained, and it ends the stream for good. */
		FUZZ_ASSERT(r < 0 && frame_decoder__error(&d) && frame_decoder__error(&d)[0]);
		FUZZ_ASSERT(frame_decoder__feed(&d, data, size, fuzz_cb, &c) == r);
		FUZZ_ASSERT(frame_decoder__finish(&d) == r);
	}
	frame_decoder__fini(&d);
	return 0;
}
