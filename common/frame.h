/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Framing of the guest <-> host wire: each frame is a 4-byte big-endian
 * length followed by one serialized iotracer.Frame message.
 *
 * A guest is untrusted input. The decoder therefore rejects a frame on its
 * length prefix alone before buffering anything, never buffers more than one
 * frame (at most max_frame bytes), bounds what protobuf-c may allocate to
 * decode a frame, and after any error refuses further input: the connection
 * must end. Each connection has its own decoder, so one bad guest cannot
 * disturb another.
 */
#ifndef IOTRACER_FRAME_H
#define IOTRACER_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "iotracer.pb-c.h"
#include "record.h"

/* Bumped on any change a peer of the previous version would misread. */
#define IOT_PROTO_VERSION 1

/* Bytes of the length prefix in front of every frame. */
#define IOT_FRAME_HDR 4u
/* Default limit on one frame's message (prefix not included). */
#define IOT_FRAME_MAX_DEFAULT (1u << 20)
/* No decoder accepts a limit above this: it bounds the decode budget below. */
#define IOT_FRAME_MAX_LIMIT (1u << 24)

/*
 * protobuf-c allocates far more than the wire size for some inputs (an empty
 * Record costs 2 bytes on the wire and ~200 bytes decoded). A frame may use
 * at most IOT_FRAME_ALLOC_FACTOR times its size plus IOT_FRAME_ALLOC_BASE
 * bytes of live memory while it is decoded. The densest frame our own
 * encoder writes (records with every timestamp 0) needs about 19 times its
 * size, so 32 leaves room without letting a guest multiply its frame 100-fold;
 * the base covers the fixed cost of the smallest frames (a one-record batch
 * takes under 2 KiB).
 */
#define IOT_FRAME_ALLOC_FACTOR 32u
#define IOT_FRAME_ALLOC_BASE (4u << 10)

/*
 * Called once per decoded frame. f and everything it points to are freed
 * when the callback returns: copy what you keep. Return 0 to go on, or a
 * negative errno to end the connection; the decoder then keeps that error
 * (call frame_decoder__fail() first for a precise reason). The callback must
 * not feed the same decoder.
 */
typedef int (*frame_cb)(void *ctx, const Iotracer__Frame *f);

/* One per connection. The fields are private; the struct is public so it can be embedded. */
struct frame_decoder {
	uint8_t hdr[IOT_FRAME_HDR];	/* the length prefix being received */
	uint32_t hdr_len;		/* bytes of hdr received */
	uint32_t max_frame;
	uint32_t frame_len;		/* message bytes of the current frame, once hdr is complete */
	uint8_t *buf;			/* message bytes of a frame split across feeds */
	size_t len;			/* bytes in buf */
	size_t cap;			/* allocated size of buf, never above max_frame */
	uint8_t *arena;			/* where a frame's message is unpacked (IOT_FRAME_ARENA bytes) */
	size_t arena_used;
	uint64_t frames;		/* frames decoded and handed to the callback */
	uint64_t fast_frames;		/* of which batches decoded by decode_batch_fast() */
	bool no_fast;			/* every frame through protobuf-c (tests compare the two) */
	int err;			/* 0, or the error that ended the stream */
	char errmsg[160];
};

/* 0, or -EINVAL when max_frame is 0 or above IOT_FRAME_MAX_LIMIT. */
int frame_decoder__init(struct frame_decoder *d, uint32_t max_frame);
/* Frees the buffer; accepts NULL. The decoder may be initialised again. */
void frame_decoder__fini(struct frame_decoder *d);
/*
 * Consumes len bytes of the stream, calling cb for each complete frame.
 * 0, or a negative errno that stays (every later call returns it):
 *   -EMSGSIZE  a length prefix above max_frame, or a frame that would need
 *              more memory to decode than its budget
 *   -EBADMSG   a zero length prefix, or bytes that are no Frame message
 *   -EPROTO    a Frame with no message set (or only one we do not know)
 *   -ENOMEM    out of memory buffering a frame
 *   whatever cb returned
 */
int frame_decoder__feed(struct frame_decoder *d, const void *buf, size_t len,
			frame_cb cb, void *ctx);
/*
 * At the end of the stream: 0, or -EPIPE when it ended inside a frame (the
 * error stays, like any other), or the error the stream already had.
 */
int frame_decoder__finish(struct frame_decoder *d);
/* Bytes received of a frame not yet complete (length prefix included). */
size_t frame_decoder__pending(const struct frame_decoder *d);
/* Why the stream ended, or NULL while it has no error. */
const char *frame_decoder__error(const struct frame_decoder *d);
/*
 * Puts the decoder in error state with err (negative errno) and a reason;
 * for callbacks that reject a frame. Returns err. An earlier error is kept.
 */
int frame_decoder__fail(struct frame_decoder *d, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* "hello", "batch", ...; "none" or "unknown" for other values. */
const char *frame_msg_name(Iotracer__Frame__MsgCase c);

/*
 * Checks the first frame of a connection: 0 for a Hello of our protocol
 * version, -EPROTONOSUPPORT for another version, -EPROTO for anything else.
 * On error writes the reason into err (when errlen > 0).
 */
int frame_check_hello(const Iotracer__Frame *f, char *err, size_t errlen);

/*
 * Writes f as one frame (prefix + message) into buf. 0 and *ret_len, or
 * -EMSGSIZE when it does not fit in cap bytes (pass cap <= IOT_FRAME_HDR +
 * the peer's max_frame_bytes to respect its limit), -EINVAL for a Frame with
 * no message, which no decoder would accept.
 */
int frame_encode(const Iotracer__Frame *f, uint8_t *buf, size_t cap, size_t *ret_len);

/*
 * Accumulates records for one RecordBatch frame. All memory is taken by
 * frame_batch__new(); adding a record allocates nothing.
 */
struct frame_batch;

/* Upper bound on max_records, so the one allocation stays reasonable. */
#define IOT_BATCH_RECORDS_LIMIT 65536u
/* Frame bytes besides the records: prefix, Frame tag and length, seq, clock. */
#define IOT_BATCH_OVERHEAD 64u

/*
 * A batch of at most max_records records whose encoded frame (prefix
 * included) stays within max_bytes. NULL and errno (EINVAL, ENOMEM) on error.
 */
struct frame_batch *frame_batch__new(size_t max_records, size_t max_bytes);
void frame_batch__free(struct frame_batch *b);
/*
 * Copies r into the batch. 0; -ENOSPC when the batch is full (encode and
 * reset it, then add again); -EMSGSIZE when r alone would not fit the byte
 * budget; -EINVAL when r would not pass record_from_pb() on the other side.
 */
int frame_batch__add(struct frame_batch *b, const struct iot_record *r);
size_t frame_batch__count(const struct frame_batch *b);
/* Upper bound of the frame frame_batch__encode() would write now. */
size_t frame_batch__bytes(const struct frame_batch *b);
/* Empties the batch (after its frame was sent). */
void frame_batch__reset(struct frame_batch *b);
/*
 * Encodes the batch as one RecordBatch frame with seq and, when clock is
 * not NULL, the clock sync. Does not empty the batch. Errors as frame_encode().
 */
int frame_batch__encode(const struct frame_batch *b, uint64_t seq,
			const Iotracer__ClockSync *clock,
			uint8_t *buf, size_t cap, size_t *ret_len);

/*
 * Decodes the records of a received batch into ret_recs (cap entries),
 * skipping those record_from_pb() rejects. Returns how many were invalid
 * (>= 0) and sets *ret_n to how many were stored; -ENOBUFS (nothing stored)
 * when the batch holds more than cap records.
 */
int frame_batch_decode(const Iotracer__RecordBatch *b, struct iot_record *ret_recs,
		       size_t cap, size_t *ret_n);
/*
 * The same without an array: cb for each valid record, in order. Returns how
 * many were invalid, or the first negative value cb returned.
 */
int frame_batch_foreach(const Iotracer__RecordBatch *b,
			int (*cb)(void *ctx, const struct iot_record *r), void *ctx);

#endif
