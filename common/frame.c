// SPDX-License-Identifier: GPL-2.0
/* Length-prefixed Frame messages: a bounded stream decoder, an encoder and a record batcher. */
#include <errno.h>
#include <malloc.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "frame.h"
#include "record_pb.h"

/*
 * A buffer grown for one large frame is dropped once that frame is decoded
 * above this size, so an idle connection does not keep max_frame bytes.
 */
#define FRAME_BUF_KEEP (64u << 10)
/* First allocation for a split frame, unless the frame is smaller. */
#define FRAME_BUF_MIN 4096u

int frame_decoder__fail(struct frame_decoder *d, int err, const char *fmt, ...)
{
	va_list ap;

	if (d->err)
		return d->err;
	d->err = err < 0 ? err : -EPROTO;
	va_start(ap, fmt);
	vsnprintf(d->errmsg, sizeof(d->errmsg), fmt, ap);
	va_end(ap);
	return d->err;
}

int frame_decoder__init(struct frame_decoder *d, uint32_t max_frame)
{
	if (max_frame == 0 || max_frame > IOT_FRAME_MAX_LIMIT)
		return -EINVAL;
	memset(d, 0, sizeof(*d));
	d->max_frame = max_frame;
	return 0;
}

void frame_decoder__fini(struct frame_decoder *d)
{
	if (!d)
		return;
	free(d->buf);
	d->buf = NULL;
	d->cap = d->len = 0;
	free(d->arena);
	d->arena = NULL;
	d->arena_used = 0;
}

size_t frame_decoder__pending(const struct frame_decoder *d)
{
	return d->hdr_len + d->len;
}

const char *frame_decoder__error(const struct frame_decoder *d)
{
	return d->err ? d->errmsg : NULL;
}

const char *frame_msg_name(Iotracer__Frame__MsgCase c)
{
	switch (c) {
	case IOTRACER__FRAME__MSG__NOT_SET:
		return "none";
	case IOTRACER__FRAME__MSG_HELLO:
		return "hello";
	case IOTRACER__FRAME__MSG_BATCH:
		return "batch";
	case IOTRACER__FRAME__MSG_CLOCK_PROBE:
		return "clock_probe";
	case IOTRACER__FRAME__MSG_CLOCK_REPLY:
		return "clock_reply";
	case IOTRACER__FRAME__MSG_STATS:
		return "stats";
	case IOTRACER__FRAME__MSG_GOODBYE:
		return "goodbye";
	case IOTRACER__FRAME__MSG_ACK:
		return "ack";
	default:
		return "unknown";
	}
}

/*
 * Allocator handed to protobuf-c. A frame's message is unpacked into the
 * decoder's arena, reset for each frame: a batch of records is a few hundred
 * small blocks, which malloc and free cost more than the decoding itself.
 * What does not fit comes from malloc. Live bytes are counted either way and
 * refused past the frame's budget.
 */
#define IOT_FRAME_ARENA (128u << 10)

struct frame_alloc {
	struct frame_decoder *d;
	size_t used;
	size_t limit;
	bool over;	/* refused: the frame's budget is spent */
	bool oom;	/* malloc failed */
};

static bool in_arena(const struct frame_decoder *d, const void *p)
{
	return d->arena && (const uint8_t *)p >= d->arena && (const uint8_t *)p < d->arena + IOT_FRAME_ARENA;
}

static void *frame_alloc(void *data, size_t size)
{
	struct frame_alloc *a = data;
	struct frame_decoder *d = a->d;
	size_t need = (size + 15) & ~(size_t)15;
	void *p;

	/* used may pass limit by malloc's rounding of the last block. */
	if (a->used >= a->limit || size > a->limit - a->used) {
		a->over = true;
		return NULL;
	}
	if (!d->arena)
		d->arena = malloc(IOT_FRAME_ARENA);
	if (d->arena && need >= size && need <= IOT_FRAME_ARENA - d->arena_used) {
		p = d->arena + d->arena_used;
		d->arena_used += need;
		a->used += need;
		return p;
	}
	p = malloc(size);
	if (!p) {
		a->oom = true;
		return NULL;
	}
	a->used += malloc_usable_size(p);
	return p;
}

/* Arena blocks go when the frame is done with; only malloc's are freed one by one. */
static void frame_free(void *data, void *ptr)
{
	struct frame_alloc *a = data;

	if (!ptr || in_arena(a->d, ptr))
		return;
	a->used -= malloc_usable_size(ptr);
	free(ptr);
}

/* Unpacks one complete message and hands it to cb; frees it afterwards whatever cb did. */
static int decode_one(struct frame_decoder *d, const uint8_t *data, size_t len,
		      frame_cb cb, void *ctx)
{
	struct frame_alloc a = {
		.d = d,
		.limit = (size_t)IOT_FRAME_ALLOC_FACTOR * len + IOT_FRAME_ALLOC_BASE,
	};
	ProtobufCAllocator pa = {
		.alloc = frame_alloc,
		.free = frame_free,
		.allocator_data = &a,
	};
	Iotracer__Frame *f;
	const char *name;
	int r;

	d->arena_used = 0;
	f = iotracer__frame__unpack(&pa, len, data);
	if (!f) {
		if (a.over)
			return frame_decoder__fail(d, -EMSGSIZE,
				"frame %llu of %zu bytes needs more than %zu bytes of memory to decode",
				(unsigned long long)d->frames + 1, len, a.limit);
		/* protobuf-c says only "NULL": the allocator tells why. */
		if (a.oom)
			return frame_decoder__fail(d, -ENOMEM, "out of memory decoding frame %llu",
						   (unsigned long long)d->frames + 1);
		return frame_decoder__fail(d, -EBADMSG, "frame %llu (%zu bytes) is not a valid Frame message",
					   (unsigned long long)d->frames + 1, len);
	}

	/*
	 * Frame.msg is a oneof: a frame from a newer peer with a message we do
	 * not know decodes with nothing set (its field is kept as unknown).
	 */
	switch (f->msg_case) {
	case IOTRACER__FRAME__MSG_HELLO:
	case IOTRACER__FRAME__MSG_BATCH:
	case IOTRACER__FRAME__MSG_CLOCK_PROBE:
	case IOTRACER__FRAME__MSG_CLOCK_REPLY:
	case IOTRACER__FRAME__MSG_STATS:
	case IOTRACER__FRAME__MSG_GOODBYE:
	case IOTRACER__FRAME__MSG_ACK:
		if (f->hello)	/* any member: they share the union */
			break;
		/* fall through */
	default:
		iotracer__frame__free_unpacked(f, &pa);
		return frame_decoder__fail(d, -EPROTO, "frame %llu carries no message we know",
					   (unsigned long long)d->frames + 1);
	}

	d->frames++;
	name = frame_msg_name(f->msg_case);
	r = cb ? cb(ctx, f) : 0;
	iotracer__frame__free_unpacked(f, &pa);
	if (r < 0)
		return frame_decoder__fail(d, r, "frame %llu (%s) rejected: %s",
					   (unsigned long long)d->frames, name, strerror(-r));
	return 0;
}

/* The length prefix is complete: judge it before buffering a single byte of the message. */
static int start_frame(struct frame_decoder *d)
{
	uint32_t n = (uint32_t)d->hdr[0] << 24 | (uint32_t)d->hdr[1] << 16 |
		     (uint32_t)d->hdr[2] << 8 | d->hdr[3];

	if (n == 0)
		return frame_decoder__fail(d, -EBADMSG, "frame %llu has length 0",
					   (unsigned long long)d->frames + 1);
	if (n > d->max_frame)
		return frame_decoder__fail(d, -EMSGSIZE, "frame %llu of %u bytes is over the %u byte limit",
					   (unsigned long long)d->frames + 1, n, d->max_frame);
	d->frame_len = n;
	d->len = 0;
	return 0;
}

/* Room for need bytes of the current frame; geometric growth, never past the frame's length. */
static int reserve(struct frame_decoder *d, size_t need)
{
	size_t cap;
	uint8_t *p;

	if (need <= d->cap)
		return 0;
	cap = d->cap ? d->cap * 2 : FRAME_BUF_MIN;
	if (cap < need)
		cap = need;
	if (cap > d->frame_len)
		cap = d->frame_len;
	p = realloc(d->buf, cap);
	if (!p)
		return frame_decoder__fail(d, -ENOMEM, "out of memory buffering a frame of %u bytes",
					   d->frame_len);
	d->buf = p;
	d->cap = cap;
	return 0;
}

static void end_frame(struct frame_decoder *d)
{
	d->hdr_len = 0;
	d->len = 0;
	d->frame_len = 0;
	if (d->cap > FRAME_BUF_KEEP) {
		free(d->buf);
		d->buf = NULL;
		d->cap = 0;
	}
}

int frame_decoder__feed(struct frame_decoder *d, const void *buf, size_t len,
			frame_cb cb, void *ctx)
{
	const uint8_t *p = buf;
	size_t n;
	int r;

	if (d->err)
		return d->err;
	if (!p && len)
		return -EINVAL;

	while (len) {
		if (d->hdr_len < IOT_FRAME_HDR) {
			n = IOT_FRAME_HDR - d->hdr_len;
			if (n > len)
				n = len;
			memcpy(d->hdr + d->hdr_len, p, n);
			d->hdr_len += n;
			p += n;
			len -= n;
			if (d->hdr_len < IOT_FRAME_HDR)
				break;
			r = start_frame(d);
			if (r)
				return r;
			/* The whole message is in the caller's buffer: decode it there, no copy. */
			if (len >= d->frame_len) {
				n = d->frame_len;
				end_frame(d);
				r = decode_one(d, p, n, cb, ctx);
				if (r)
					return r;
				p += n;
				len -= n;
				continue;
			}
			if (!len)
				break;
		}

		n = d->frame_len - d->len;
		if (n > len)
			n = len;
		r = reserve(d, d->len + n);
		if (r)
			return r;
		memcpy(d->buf + d->len, p, n);
		d->len += n;
		p += n;
		len -= n;
		if (d->len == d->frame_len) {
			r = decode_one(d, d->buf, d->len, cb, ctx);
			end_frame(d);
			if (r)
				return r;
		}
	}
	return 0;
}

int frame_decoder__finish(struct frame_decoder *d)
{
	if (d->err)
		return d->err;
	if (d->hdr_len == 0)
		return 0;
	if (d->hdr_len < IOT_FRAME_HDR)
		return frame_decoder__fail(d, -EPIPE,
			"stream ended inside the length prefix of frame %llu (%u of %u bytes)",
			(unsigned long long)d->frames + 1, d->hdr_len, IOT_FRAME_HDR);
	return frame_decoder__fail(d, -EPIPE, "stream ended inside frame %llu (%zu of %u bytes)",
				   (unsigned long long)d->frames + 1, d->len, d->frame_len);
}

int frame_check_hello(const Iotracer__Frame *f, char *err, size_t errlen)
{
	if (!f || f->msg_case != IOTRACER__FRAME__MSG_HELLO || !f->hello) {
		if (errlen)
			snprintf(err, errlen, "first frame is a %s message, not a hello",
				 f ? frame_msg_name(f->msg_case) : "missing");
		return -EPROTO;
	}
	if (f->hello->protocol_version != IOT_PROTO_VERSION) {
		if (errlen)
			snprintf(err, errlen, "protocol version %u not supported (want %u)",
				 f->hello->protocol_version, IOT_PROTO_VERSION);
		return -EPROTONOSUPPORT;
	}
	return 0;
}

/* The length prefix of a message of size bytes, -EMSGSIZE when the frame would not fit in cap. */
static int put_prefix(uint8_t *buf, size_t cap, size_t size)
{
	if (size > UINT32_MAX || cap < IOT_FRAME_HDR || size > cap - IOT_FRAME_HDR)
		return -EMSGSIZE;
	buf[0] = size >> 24;
	buf[1] = size >> 16;
	buf[2] = size >> 8;
	buf[3] = size;
	return 0;
}

int frame_encode(const Iotracer__Frame *f, uint8_t *buf, size_t cap, size_t *ret_len)
{
	size_t size;

	if (f->msg_case == IOTRACER__FRAME__MSG__NOT_SET || !f->hello)
		return -EINVAL;
	size = iotracer__frame__get_packed_size(f);
	if (put_prefix(buf, cap, size))
		return -EMSGSIZE;
	if (iotracer__frame__pack(f, buf + IOT_FRAME_HDR) != size)
		return -EIO;	/* protobuf-c disagreeing with itself: should not happen */
	*ret_len = IOT_FRAME_HDR + size;
	return 0;
}

/*
 * Records are packed once, as they are added, into RecordBatch.records
 * entries (field tag, length, Record): the frame is then the batch's other
 * fields packed by protobuf-c with these entries after them. Letting
 * protobuf-c pack the whole batch instead sized every record three times
 * (here for the budget, then the frame, then each entry as it packs it):
 * a third of the guest agent's CPU.
 */
#define RECORDS_TAG 0x12	/* RecordBatch.records: field 2, length-delimited */

struct frame_batch {
	size_t n;
	size_t max_records;
	size_t max_bytes;
	size_t bytes;			/* encoded size of the records field entries so far */
	uint8_t *entries;		/* those entries, max_bytes - IOT_BATCH_OVERHEAD at most */
	uint8_t scratch[1024];		/* one packed Record, longer than any can be */
};

_Static_assert(IOT_TS_MAX * 10 + 30 * 12 + IOT_COMM_LEN + 8 <= 1024, "Record scratch too small");

struct frame_batch *frame_batch__new(size_t max_records, size_t max_bytes)
{
	struct frame_batch *b;

	if (max_records == 0 || max_records > IOT_BATCH_RECORDS_LIMIT ||
	    max_bytes <= IOT_BATCH_OVERHEAD ||
	    max_bytes > (size_t)IOT_FRAME_HDR + IOT_FRAME_MAX_LIMIT) {
		errno = EINVAL;
		return NULL;
	}
	b = calloc(1, sizeof(*b) + max_bytes - IOT_BATCH_OVERHEAD);
	if (!b)
		return NULL;
	b->max_records = max_records;
	b->max_bytes = max_bytes;
	b->entries = (uint8_t *)(b + 1);
	return b;
}

void frame_batch__free(struct frame_batch *b)
{
	free(b);
}

static size_t varint_size(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

int frame_batch__add(struct frame_batch *b, const struct iot_record *r)
{
	uint64_t ts[IOT_TS_MAX];
	Iotracer__Record pb;
	size_t size, entry;
	uint8_t *p;

	if (b->n == b->max_records)
		return -ENOSPC;
	/* What the receiver would reject is refused here, where it can still be counted as ours. */
	if (record_check(r))
		return -EINVAL;
	record_to_pb(r, &pb, ts);
	size = iotracer__record__pack(&pb, b->scratch);
	entry = 1 + varint_size(size) + size;	/* tag of RecordBatch.records, length, message */
	if (IOT_BATCH_OVERHEAD + entry > b->max_bytes)
		return -EMSGSIZE;
	if (IOT_BATCH_OVERHEAD + b->bytes + entry > b->max_bytes)
		return -ENOSPC;
	p = b->entries + b->bytes;
	*p++ = RECORDS_TAG;
	p += put_varint(p, size);
	memcpy(p, b->scratch, size);
	b->bytes += entry;
	b->n++;
	return 0;
}

size_t frame_batch__count(const struct frame_batch *b)
{
	return b->n;
}

size_t frame_batch__bytes(const struct frame_batch *b)
{
	return IOT_BATCH_OVERHEAD + b->bytes;
}

void frame_batch__reset(struct frame_batch *b)
{
	b->n = 0;
	b->bytes = 0;
}

int frame_batch__encode(const struct frame_batch *b, uint64_t seq,
			const Iotracer__ClockSync *clock,
			uint8_t *buf, size_t cap, size_t *ret_len)
{
	Iotracer__RecordBatch batch = IOTRACER__RECORD_BATCH__INIT;
	Iotracer__ClockSync cs = IOTRACER__CLOCK_SYNC__INIT;
	uint8_t head[IOT_BATCH_OVERHEAD];
	size_t head_len, body, size, n;

	batch.seq = seq;
	if (clock) {
		/* A copy with its own descriptor: the caller's may be a bare struct. */
		cs.offset_ns = clock->offset_ns;
		cs.uncertainty_ns = clock->uncertainty_ns;
		cs.drift_ppm = clock->drift_ppm;
		cs.ref_guest_ns = clock->ref_guest_ns;
		cs.samples = clock->samples;
		batch.clock = &cs;
	}
	/* seq and clock by protobuf-c, the records' entries after them (any field order is valid protobuf). */
	head_len = iotracer__record_batch__get_packed_size(&batch);
	if (head_len > sizeof(head))
		return -EIO;	/* cannot be: seq and clock are bounded */
	iotracer__record_batch__pack(&batch, head);
	body = head_len + b->bytes;
	size = 1 + varint_size(body) + body;	/* Frame.batch: tag, length, RecordBatch */
	if (put_prefix(buf, cap, size))
		return -EMSGSIZE;
	n = IOT_FRAME_HDR;
	buf[n++] = 0x12;	/* Frame.batch: field 2, length-delimited */
	n += put_varint(buf + n, body);
	memcpy(buf + n, head, head_len);
	memcpy(buf + n + head_len, b->entries, b->bytes);
	*ret_len = IOT_FRAME_HDR + size;
	return 0;
}

int frame_batch_foreach(const Iotracer__RecordBatch *b,
			int (*cb)(void *ctx, const struct iot_record *r), void *ctx)
{
	struct iot_record rec;
	int invalid = 0;
	size_t i;
	int r;

	if (b->n_records && !b->records)
		return -EINVAL;
	for (i = 0; i < b->n_records; i++) {
		const Iotracer__Record *m = b->records[i];

		if (!m || (m->n_ts && !m->ts) || (m->comm.len && !m->comm.data) ||
		    record_from_pb(m, &rec)) {
			if (invalid < INT32_MAX)
				invalid++;
			continue;
		}
		r = cb(ctx, &rec);
		if (r < 0)
			return r;
	}
	return invalid;
}

struct decode_ctx {
	struct iot_record *recs;
	size_t n;
};

static int store_record(void *ctx, const struct iot_record *r)
{
	struct decode_ctx *c = ctx;

	c->recs[c->n++] = *r;
	return 0;
}

int frame_batch_decode(const Iotracer__RecordBatch *b, struct iot_record *ret_recs,
		       size_t cap, size_t *ret_n)
{
	struct decode_ctx c = { .recs = ret_recs };
	int r;

	/* Checked first, so store_record() can never write past cap. */
	if (b->n_records > cap)
		return -ENOBUFS;
	r = frame_batch_foreach(b, store_record, &c);
	if (r < 0)
		return r;
	*ret_n = c.n;
	return r;
}
