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

/*
 * The fast path of the one frame a busy guest sends all the time: a
 * RecordBatch decoded by hand into the same protobuf-c structures, in the
 * decoder's arena, with nothing to free. protobuf-c's generic unpack of a
 * batch (a field table walk per field, a scanned-member slab per record of
 * more than 16 fields, then a free per block) was a fifth of the host
 * agent's CPU.
 *
 * It takes only the shape our guests write: a Frame holding just a batch,
 * whose fields are seq, clock (once) and records, and records of known
 * fields in their wire types, ts packed once, comm within IOT_COMM_LEN.
 * Anything else, and any frame whose protobuf-c decode could come near the
 * memory budget, returns NULL and goes to protobuf-c, which then decides:
 * what is accepted here is exactly what protobuf-c would make of it (the
 * fuzzer compares the two on every input).
 */
struct rd {
	const uint8_t *p, *end;
};

static bool rd_varint(struct rd *r, uint64_t *ret)
{
	uint64_t v = 0;

	for (unsigned int i = 0; i < 10 && r->p < r->end; i++) {
		uint8_t b = *r->p++;

		v |= (uint64_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80)) {
			*ret = v;
			return true;
		}
	}
	return false;
}

/* A field's tag, minimally encoded (one or two bytes: our field numbers are below 2048). */
static bool rd_tag(struct rd *r, uint32_t *field, uint32_t *wire)
{
	const uint8_t *start = r->p;
	uint64_t v;

	if (!rd_varint(r, &v) || r->p - start > 2 || (r->p - start == 2 && !r->p[-1]) || !(v >> 3))
		return false;
	*field = (uint32_t)(v >> 3);
	*wire = (uint32_t)(v & 7);
	return true;
}

/* A length-delimited field's bytes. */
static bool rd_len(struct rd *r, struct rd *ret)
{
	const uint8_t *start = r->p;
	uint64_t n;

	if (!rd_varint(r, &n) || r->p - start > 5 || n > (uint64_t)(r->end - r->p))
		return false;
	ret->p = r->p;
	ret->end = r->p + n;
	r->p += n;
	return true;
}

/* sint64 on the wire. */
static int64_t unzigzag(uint64_t v)
{
	return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

/* An upper bound of what protobuf-c allocates for a message of nfields fields (its slabs included). */
#define PC_MSG_BOUND(size, nfields) ((((size) + 15) & ~(size_t)15) + 64 * (size_t)(nfields) + 48)

struct fast {
	struct frame_decoder *d;
	size_t bound;		/* protobuf-c's allocations for the same frame, at most */
};

static void *fast_take(struct fast *f, size_t size)
{
	size_t need = (size + 15) & ~(size_t)15;
	void *p;

	if (need > IOT_FRAME_ARENA - f->d->arena_used)
		return NULL;
	p = f->d->arena + f->d->arena_used;
	f->d->arena_used += need;
	return p;
}

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2 };

static bool fast_record(struct fast *f, struct rd r, Iotracer__Record **ret)
{
	Iotracer__Record *m = fast_take(f, sizeof(*m));
	uint32_t field, wire, nfields = 0;
	uint64_t v;
	struct rd sub;

	if (!m)
		return false;
	iotracer__record__init(m);
	while (r.p < r.end) {
		if (!rd_tag(&r, &field, &wire))
			return false;
		nfields++;
		if (field == 1 || field == 25) {
			if (wire != WT_LEN || !rd_len(&r, &sub))
				return false;
			if (field == 25) {
				size_t n = sub.end - sub.p;

				if (n > IOT_COMM_LEN)
					return false;
				m->comm.data = NULL;
				m->comm.len = 0;
				if (n && !(m->comm.data = fast_take(f, n)))
					return false;
				if (n)
					memcpy(m->comm.data, sub.p, n);
				m->comm.len = n;
				f->bound += (n + 15) & ~(size_t)15;
				continue;
			}
			if (m->ts)	/* packed twice: protobuf-c concatenates; leave it to it */
				return false;
			m->ts = fast_take(f, IOT_TS_MAX * sizeof(uint64_t));
			if (!m->ts)
				return false;
			while (sub.p < sub.end) {
				if (m->n_ts == IOT_TS_MAX || !rd_varint(&sub, &v))
					return false;
				m->ts[m->n_ts++] = v;
			}
			f->bound += (m->n_ts * sizeof(uint64_t) + 15) & ~(size_t)15;
			continue;
		}
		if (wire != WT_VARINT || !rd_varint(&r, &v))
			return false;
		switch (field) {
		case 2: m->cgroup_id = v; break;
		case 3: m->inode = v; break;
		case 4: m->offset = v; break;
		case 5: m->sector = v; break;
		case 6: m->offcpu_ns = v; break;
		case 7: m->user_data = v; break;
		case 8: m->result = unzigzag(v); break;
		case 9: m->pid = (uint32_t)v; break;
		case 10: m->tid = (uint32_t)v; break;
		case 11: m->actor_tid = (uint32_t)v; break;
		case 12: m->dev = (uint32_t)v; break;
		case 13: m->len = (uint32_t)v; break;
		case 14: m->bio_bytes = (uint32_t)v; break;
		case 15: m->flags = (uint32_t)v; break;
		case 16: m->nr_bios = (uint32_t)v; break;
		case 17: m->pc_pages = (uint32_t)v; break;
		case 18: m->pc_misses = (uint32_t)v; break;
		case 19: m->pc_dirtied = (uint32_t)v; break;
		case 20: m->kind = (uint32_t)v; break;
		case 21: m->op = (uint32_t)v; break;
		case 22: m->syscall = (uint32_t)v; break;
		case 23: m->uring_opcode = (uint32_t)v; break;
		case 24: m->driver = (uint32_t)v; break;
		case 26: m->virtio_hdr_gpa = v; break;
		case 27: m->uring_ctx = v; break;
		case 28: m->uring_req = v; break;
		case 29: m->uring_link = v; break;
		case 30: m->cqe_seq = (uint32_t)v; break;
		default: return false;
		}
	}
	f->bound += PC_MSG_BOUND(sizeof(*m), nfields);
	*ret = m;
	return true;
}

static bool fast_clock(struct fast *f, struct rd r, Iotracer__ClockSync **ret)
{
	Iotracer__ClockSync *m = fast_take(f, sizeof(*m));
	uint32_t field, wire, nfields = 0;
	uint64_t v;

	if (!m)
		return false;
	iotracer__clock_sync__init(m);
	while (r.p < r.end) {
		if (!rd_tag(&r, &field, &wire))
			return false;
		nfields++;
		if (field == 3) {
			if (wire != WT_I64 || r.end - r.p < 8)
				return false;
			v = 0;
			for (int i = 7; i >= 0; i--)
				v = v << 8 | r.p[i];	/* little-endian on the wire */
			memcpy(&m->drift_ppm, &v, sizeof(v));
			r.p += 8;
			continue;
		}
		if (wire != WT_VARINT || !rd_varint(&r, &v))
			return false;
		switch (field) {
		case 1: m->offset_ns = unzigzag(v); break;
		case 2: m->uncertainty_ns = v; break;
		case 4: m->ref_guest_ns = v; break;
		case 5: m->samples = (uint32_t)v; break;
		default: return false;
		}
	}
	f->bound += PC_MSG_BOUND(sizeof(*m), nfields);
	*ret = m;
	return true;
}

static Iotracer__Frame *decode_batch_fast(struct frame_decoder *d, const uint8_t *data, size_t len,
					  size_t limit)
{
	struct fast f = { .d = d };
	struct rd r = { data, data + len }, body, sub;
	Iotracer__Frame *fr;
	Iotracer__RecordBatch *b;
	Iotracer__Record **recs;
	uint32_t field, wire, nfields = 0;
	size_t n = 0;

	/* A Frame of one field, its batch. */
	if (!rd_tag(&r, &field, &wire) || field != 2 || wire != WT_LEN || !rd_len(&r, &body) || r.p != r.end)
		return NULL;
	/* The records, counted first: their pointer array is one block. */
	for (r = body; r.p < r.end; nfields++) {
		if (!rd_tag(&r, &field, &wire))
			return NULL;
		if (field == 1 && wire == WT_VARINT) {
			uint64_t v;

			if (!rd_varint(&r, &v))
				return NULL;
		} else if ((field == 2 || field == 3) && wire == WT_LEN) {
			if (!rd_len(&r, &sub))
				return NULL;
			n += field == 2;
		} else {
			return NULL;
		}
	}
	if (!d->arena && !(d->arena = malloc(IOT_FRAME_ARENA)))
		return NULL;
	fr = fast_take(&f, sizeof(*fr));
	b = fast_take(&f, sizeof(*b));
	recs = n ? fast_take(&f, n * sizeof(*recs)) : NULL;
	if (!fr || !b || (n && !recs))
		return NULL;
	iotracer__frame__init(fr);
	iotracer__record_batch__init(b);
	b->records = recs;
	f.bound = PC_MSG_BOUND(sizeof(*fr), 1) + PC_MSG_BOUND(sizeof(*b), nfields) +
		  ((n * sizeof(*recs) + 15) & ~(size_t)15);
	for (r = body; r.p < r.end;) {
		rd_tag(&r, &field, &wire);	/* checked by the count */
		if (field == 1) {
			rd_varint(&r, &b->seq);
			continue;
		}
		rd_len(&r, &sub);
		if (field == 2) {
			if (!fast_record(&f, sub, &b->records[b->n_records]))
				return NULL;
			b->n_records++;
		} else if (b->clock || !fast_clock(&f, sub, &b->clock)) {
			return NULL;	/* a second clock is merged by protobuf-c */
		}
	}
	/* Where protobuf-c could run out of budget, it says so itself. */
	if (f.bound > limit)
		return NULL;
	fr->msg_case = IOTRACER__FRAME__MSG_BATCH;
	fr->batch = b;
	return fr;
}

/* Why protobuf-c returned NULL: the allocator tells, protobuf-c says only "NULL". */
static int unpack_failed(struct frame_decoder *d, const struct frame_alloc *a, size_t len)
{
	if (a->over)
		return frame_decoder__fail(d, -EMSGSIZE,
			"frame %llu of %zu bytes needs more than %zu bytes of memory to decode",
			(unsigned long long)d->frames + 1, len, a->limit);
	if (a->oom)
		return frame_decoder__fail(d, -ENOMEM, "out of memory decoding frame %llu",
					   (unsigned long long)d->frames + 1);
	return frame_decoder__fail(d, -EBADMSG, "frame %llu (%zu bytes) is not a valid Frame message",
				   (unsigned long long)d->frames + 1, len);
}

static bool known_msg(const Iotracer__Frame *f)
{
	switch (f->msg_case) {
	case IOTRACER__FRAME__MSG_HELLO:
	case IOTRACER__FRAME__MSG_BATCH:
	case IOTRACER__FRAME__MSG_CLOCK_PROBE:
	case IOTRACER__FRAME__MSG_CLOCK_REPLY:
	case IOTRACER__FRAME__MSG_STATS:
	case IOTRACER__FRAME__MSG_GOODBYE:
	case IOTRACER__FRAME__MSG_ACK:
		return f->hello;	/* any member: they share the union */
	default:
		return false;
	}
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
	bool fast;
	int r;

	d->arena_used = 0;
	f = d->no_fast ? NULL : decode_batch_fast(d, data, len, a.limit);
	fast = f;
	if (fast) {
		d->fast_frames++;
	} else {
		d->arena_used = 0;
		f = iotracer__frame__unpack(&pa, len, data);
		if (!f)
			return unpack_failed(d, &a, len);
		/*
		 * Frame.msg is a oneof: a frame from a newer peer with a message we do
		 * not know decodes with nothing set (its field is kept as unknown).
		 */
		if (!known_msg(f)) {
			iotracer__frame__free_unpacked(f, &pa);
			return frame_decoder__fail(d, -EPROTO, "frame %llu carries no message we know",
						   (unsigned long long)d->frames + 1);
		}
	}
	d->frames++;
	name = frame_msg_name(f->msg_case);
	r = cb ? cb(ctx, f) : 0;
	/* The fast path's frame is all in the arena: nothing to free. */
	if (!fast)
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
