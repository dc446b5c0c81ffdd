// SPDX-License-Identifier: GPL-2.0
/*
 * Unit tests of the guest <-> host framing: round trips of every message,
 * a stream cut at every byte and at random places, and every way a hostile
 * or broken peer can get a frame wrong. No privileges.
 *
 * `test_frame --write-seeds DIR` writes valid streams into DIR as a seed
 * corpus for tests/fuzz_frame.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "frame.h"
#include "record_pb.h"

#include "check.h"

#define MAX_CAPTURE 64

/* What a callback saw: each frame packed again, since the decoder frees it. */
struct capture {
	int n;
	Iotracer__Frame__MsgCase cases[MAX_CAPTURE];
	uint8_t *packed[MAX_CAPTURE];
	size_t packed_len[MAX_CAPTURE];
};

static int capture_cb(void *ctx, const Iotracer__Frame *f)
{
	struct capture *c = ctx;
	size_t len;

	if (c->n == MAX_CAPTURE)
		return -ENOSPC;
	len = iotracer__frame__get_packed_size(f);
	c->packed[c->n] = malloc(len ? len : 1);
	if (!c->packed[c->n])
		return -ENOMEM;
	c->packed_len[c->n] = iotracer__frame__pack(f, c->packed[c->n]);
	c->cases[c->n] = f->msg_case;
	c->n++;
	return 0;
}

static void capture_free(struct capture *c)
{
	for (int i = 0; i < c->n; i++)
		free(c->packed[i]);
	memset(c, 0, sizeof(*c));
}

/* The i-th captured frame, unpacked again (free with iotracer__frame__free_unpacked). */
static Iotracer__Frame *captured(const struct capture *c, int i)
{
	if (i >= c->n)
		return NULL;
	return iotracer__frame__unpack(NULL, c->packed_len[i], c->packed[i]);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
	/* xorshift64*: reproducible chunk sizes without libc's rand() state. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

/* Varied, valid records; memset first so padding compares equal. */
static void make_record(struct iot_record *r, unsigned int i)
{
	static const char *comms[] = { "fio", "postgres", "kworker/u8:2", "0123456789abcdef" };

	memset(r, 0, sizeof(*r));
	r->kind = 1 + i % 4;
	r->op = i % IOT_OP_MAX;
	r->syscall = i % IOT_SYS_MAX;
	r->driver = i % (IOT_DRV_OTHER + 1);
	r->uring_opcode = i * 7;
	r->pid = 1000 + i;
	r->tid = 2000 + i;
	r->actor_tid = i % 3 ? r->tid : 0;
	r->dev = 253u << 20 | i;
	r->cgroup_id = 0x100000000ull + i;
	r->inode = i * 1234567ull;
	r->offset = i % 5 ? i * 4096ull : IOT_UNKNOWN_U64;
	r->sector = i * 8ull;
	r->offcpu_ns = i * 333ull;
	r->user_data = ~0ull - i;
	r->result = i % 2 ? -5 : 4096;
	r->len = 4096 << (i % 4);
	r->bio_bytes = r->len;
	r->flags = i * 0x1111u & 0x3ffff;
	r->nr_bios = i % 65536;
	r->pc_pages = 65535;
	r->pc_misses = i;
	r->pc_dirtied = i / 2;
	/* comms[3] fills all 16 bytes: no terminating NUL on either side. */
	memcpy(r->comm, comms[i % 4], strnlen(comms[i % 4], IOT_COMM_LEN));
	for (unsigned int t = 0; t < IOT_TS_MAX; t++)
		r->ts[t] = (t + i) % 3 ? 1700000000000000000ull + i * 1000 + t * 17 : 0;
}

static int encode(const Iotracer__Frame *f, uint8_t *buf, size_t cap, size_t *ret_len)
{
	int r = frame_encode(f, buf, cap, ret_len);

	CHECK(r == 0, "frame_encode of a %s frame: %d", frame_msg_name(f->msg_case), r);
	return r;
}

/* Writes one of each message into buf; returns the length and the frames' ends in ends[]. */
static size_t build_stream(uint8_t *buf, size_t cap, size_t ends[6], struct iot_record recs[5])
{
	Iotracer__Disk d0 = IOTRACER__DISK__INIT, d1 = IOTRACER__DISK__INIT;
	Iotracer__Disk *disks[] = { &d0, &d1 };
	Iotracer__Hello hello = IOTRACER__HELLO__INIT;
	Iotracer__ClockProbe probe = IOTRACER__CLOCK_PROBE__INIT;
	Iotracer__ClockReply reply = IOTRACER__CLOCK_REPLY__INIT;
	Iotracer__Stats stats = IOTRACER__STATS__INIT;
	Iotracer__Goodbye bye = IOTRACER__GOODBYE__INIT;
	Iotracer__ClockSync cs = { .offset_ns = -123456789, .uncertainty_ns = 4242, .drift_ppm = -12.5,
				   .ref_guest_ns = 987654321, .samples = 7 };
	Iotracer__Frame f = IOTRACER__FRAME__INIT;
	struct frame_batch *b;
	size_t len = 0, n;

	d0.name = "vda";
	d0.serial = "disk-0";
	d0.capacity_bytes = 10ull << 30;
	d0.queues = 2;
	d0.dev = 253u << 20;
	d1.name = "nvme0n1";
	d1.dev = 259u << 20 | 1;
	hello.protocol_version = IOT_PROTO_VERSION;
	hello.hostname = "guest-1";
	hello.machine_id = "0123456789abcdef0123456789abcdef";
	hello.kernel = "6.1.0-13-amd64";
	hello.n_disks = 2;
	hello.disks = disks;
	hello.max_frame_bytes = IOT_FRAME_MAX_DEFAULT;
	f.msg_case = IOTRACER__FRAME__MSG_HELLO;
	f.hello = &hello;
	if (encode(&f, buf + len, cap - len, &n))
		return 0;
	len += n;
	ends[0] = len;

	b = frame_batch__new(64, 64 << 10);
	CHECK(b, "frame_batch__new: %m");
	if (!b)
		return 0;
	for (unsigned int i = 0; i < 5; i++) {
		make_record(&recs[i], i);
		CHECK(frame_batch__add(b, &recs[i]) == 0, "add record %u", i);
	}
	CHECK(frame_batch__count(b) == 5, "count %zu", frame_batch__count(b));
	CHECK(frame_batch__encode(b, 77, &cs, buf + len, cap - len, &n) == 0, "encode batch");
	CHECK(n <= frame_batch__bytes(b), "batch of %zu bytes over its bound %zu", n, frame_batch__bytes(b));
	frame_batch__free(b);
	len += n;
	ends[1] = len;

	probe.id = 9;
	probe.guest_send_ns = 111;
	f.msg_case = IOTRACER__FRAME__MSG_CLOCK_PROBE;
	f.clock_probe = &probe;
	if (encode(&f, buf + len, cap - len, &n))
		return 0;
	len += n;
	ends[2] = len;

	reply.id = 9;
	reply.guest_send_ns = 111;
	reply.host_recv_ns = 222;
	reply.host_send_ns = 333;
	f.msg_case = IOTRACER__FRAME__MSG_CLOCK_REPLY;
	f.clock_reply = &reply;
	if (encode(&f, buf + len, cap - len, &n))
		return 0;
	len += n;
	ends[3] = len;

	stats.records_sent = 5;
	stats.lost_kernel = 1;
	stats.lost_wire = 2;
	f.msg_case = IOTRACER__FRAME__MSG_STATS;
	f.stats = &stats;
	if (encode(&f, buf + len, cap - len, &n))
		return 0;
	len += n;
	ends[4] = len;

	bye.reason = "shutting down";
	f.msg_case = IOTRACER__FRAME__MSG_GOODBYE;
	f.goodbye = &bye;
	if (encode(&f, buf + len, cap - len, &n))
		return 0;
	len += n;
	ends[5] = len;
	return len;
}

static void check_stream_contents(const struct capture *c, const struct iot_record recs[5])
{
	static const Iotracer__Frame__MsgCase want[6] = {
		IOTRACER__FRAME__MSG_HELLO, IOTRACER__FRAME__MSG_BATCH,
		IOTRACER__FRAME__MSG_CLOCK_PROBE, IOTRACER__FRAME__MSG_CLOCK_REPLY,
		IOTRACER__FRAME__MSG_STATS, IOTRACER__FRAME__MSG_GOODBYE,
	};
	struct iot_record out[8];
	Iotracer__Frame *f;
	size_t n = 0;
	int r;

	CHECK(c->n == 6, "%d frames decoded, want 6", c->n);
	for (int i = 0; i < c->n && i < 6; i++)
		CHECK(c->cases[i] == want[i], "frame %d is %s, want %s", i,
		      frame_msg_name(c->cases[i]), frame_msg_name(want[i]));
	if (c->n != 6)
		return;

	f = captured(c, 0);
	CHECK(frame_check_hello(f, NULL, 0) == 0, "hello accepted");
	if (f) {
		Iotracer__Hello *h = f->hello;

		CHECK(!strcmp(h->hostname, "guest-1") && !strcmp(h->kernel, "6.1.0-13-amd64") &&
		      !strcmp(h->machine_id, "0123456789abcdef0123456789abcdef") &&
		      h->max_frame_bytes == IOT_FRAME_MAX_DEFAULT, "hello fields");
		CHECK(h->n_disks == 2 && !strcmp(h->disks[0]->name, "vda") &&
		      !strcmp(h->disks[0]->serial, "disk-0") && h->disks[0]->capacity_bytes == 10ull << 30 &&
		      h->disks[0]->queues == 2 && h->disks[0]->dev == 253u << 20 &&
		      !strcmp(h->disks[1]->name, "nvme0n1") && h->disks[1]->dev == (259u << 20 | 1),
		      "hello disks");
		iotracer__frame__free_unpacked(f, NULL);
	}

	f = captured(c, 1);
	if (f) {
		Iotracer__RecordBatch *b = f->batch;

		CHECK(b->seq == 77, "seq %llu", (unsigned long long)b->seq);
		CHECK(b->clock && b->clock->offset_ns == -123456789 && b->clock->uncertainty_ns == 4242 &&
		      b->clock->drift_ppm == -12.5 && b->clock->ref_guest_ns == 987654321 && b->clock->samples == 7,
		      "clock sync");
		memset(out, 0xa5, sizeof(out));
		r = frame_batch_decode(b, out, 8, &n);
		CHECK(r == 0 && n == 5, "batch decode: %d invalid, %zu records", r, n);
		for (size_t i = 0; i < n && i < 5; i++)
			CHECK(!memcmp(&out[i], &recs[i], sizeof(recs[i])), "record %zu differs", i);
		iotracer__frame__free_unpacked(f, NULL);
	}

	f = captured(c, 2);
	if (f) {
		CHECK(f->clock_probe->id == 9 && f->clock_probe->guest_send_ns == 111, "clock probe");
		iotracer__frame__free_unpacked(f, NULL);
	}
	f = captured(c, 3);
	if (f) {
		Iotracer__ClockReply *cr = f->clock_reply;

		CHECK(cr->id == 9 && cr->guest_send_ns == 111 && cr->host_recv_ns == 222 &&
		      cr->host_send_ns == 333, "clock reply");
		iotracer__frame__free_unpacked(f, NULL);
	}
	f = captured(c, 4);
	if (f) {
		CHECK(f->stats->records_sent == 5 && f->stats->lost_kernel == 1 &&
		      f->stats->lost_wire == 2, "stats");
		iotracer__frame__free_unpacked(f, NULL);
	}
	f = captured(c, 5);
	if (f) {
		CHECK(!strcmp(f->goodbye->reason, "shutting down"), "goodbye '%s'", f->goodbye->reason);
		iotracer__frame__free_unpacked(f, NULL);
	}
}

static bool same_capture(const struct capture *a, const struct capture *b)
{
	if (a->n != b->n)
		return false;
	for (int i = 0; i < a->n; i++)
		if (a->packed_len[i] != b->packed_len[i] ||
		    memcmp(a->packed[i], b->packed[i], a->packed_len[i]))
			return false;
	return true;
}

static void test_round_trip_and_chunks(void)
{
	static uint8_t buf[1 << 16];
	struct capture whole = {}, c = {};
	struct iot_record recs[5];
	struct frame_decoder d;
	size_t ends[6], len;
	int r;

	len = build_stream(buf, sizeof(buf), ends, recs);
	CHECK(len > 0, "stream built");
	if (!len)
		return;

	/* In one piece. */
	CHECK(frame_decoder__init(&d, IOT_FRAME_MAX_DEFAULT) == 0, "init");
	r = frame_decoder__feed(&d, buf, len, capture_cb, &whole);
	CHECK(r == 0, "feed whole: %d %s", r, frame_decoder__error(&d));
	CHECK(frame_decoder__pending(&d) == 0, "pending %zu", frame_decoder__pending(&d));
	CHECK(frame_decoder__finish(&d) == 0, "finish clean");
	CHECK(frame_decoder__error(&d) == NULL, "no error string");
	CHECK(d.buf == NULL, "nothing buffered when frames arrive whole");
	frame_decoder__fini(&d);
	check_stream_contents(&whole, recs);

	/* One byte at a time: every split point of every frame and prefix. */
	frame_decoder__init(&d, IOT_FRAME_MAX_DEFAULT);
	for (size_t i = 0; i < len; i++) {
		r = frame_decoder__feed(&d, buf + i, 1, capture_cb, &c);
		if (r)
			break;
		for (int k = 0; k < 6; k++)
			if (i + 1 == ends[k])
				CHECK(c.n == k + 1 && frame_decoder__pending(&d) == 0,
				      "frame %d complete after its last byte (%d seen)", k, c.n);
	}
	CHECK(r == 0, "byte by byte: %d %s", r, frame_decoder__error(&d));
	CHECK(frame_decoder__finish(&d) == 0, "finish after bytes");
	CHECK(same_capture(&whole, &c), "byte by byte decodes the same frames");
	frame_decoder__fini(&d);
	capture_free(&c);

	/* Random chunks, several seeds, from 1 byte to more than a frame. */
	for (int round = 0; round < 200; round++) {
		size_t off = 0;

		frame_decoder__init(&d, IOT_FRAME_MAX_DEFAULT);
		r = 0;
		while (off < len && !r) {
			size_t n = 1 + rng() % (round % 2 ? 8 : 2 * (ends[1] - ends[0]));

			if (n > len - off)
				n = len - off;
			r = frame_decoder__feed(&d, buf + off, n, capture_cb, &c);
			off += n;
		}
		CHECK(r == 0 && frame_decoder__finish(&d) == 0, "round %d: %d", round, r);
		CHECK(same_capture(&whole, &c), "round %d decodes the same frames", round);
		CHECK(d.cap <= d.max_frame, "round %d: buffer %zu over the limit", round, d.cap);
		frame_decoder__fini(&d);
		capture_free(&c);
	}

	/* Empty feeds are harmless. */
	frame_decoder__init(&d, 64);
	CHECK(frame_decoder__feed(&d, NULL, 0, capture_cb, &c) == 0, "empty feed");
	CHECK(frame_decoder__feed(&d, buf, 0, capture_cb, &c) == 0 && c.n == 0, "zero-length feed");
	frame_decoder__fini(&d);
	frame_decoder__fini(NULL);
	capture_free(&whole);
}

/* Feeds bytes and expects an error, its reason, and that it stays. */
static void expect_error(const char *what, uint32_t max, const uint8_t *data, size_t len,
			 int want, const char *reason)
{
	struct capture c = {};
	struct frame_decoder d;
	const char *msg;
	int r;

	frame_decoder__init(&d, max);
	r = frame_decoder__feed(&d, data, len, capture_cb, &c);
	msg = frame_decoder__error(&d);
	CHECK(r == want, "%s: got %d (%s), want %d", what, r, msg, want);
	CHECK(msg && strstr(msg, reason), "%s: reason '%s' lacks '%s'", what, msg, reason);
	CHECK(c.n == 0, "%s: %d frames reached the callback", what, c.n);
	/* The connection is over: valid bytes change nothing. */
	CHECK(frame_decoder__feed(&d, "\0\0\0\2\x2a\0", 6, capture_cb, &c) == want && c.n == 0,
	      "%s: error not sticky", what);
	CHECK(frame_decoder__finish(&d) == want, "%s: finish", what);
	frame_decoder__fini(&d);
	capture_free(&c);
}

static void test_malformed(void)
{
	static const uint8_t zero[] = { 0, 0, 0, 0, 0x2a, 0 };
	static const uint8_t garbage[] = { 0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	/* Field 2 (batch) of Frame with a length running past the frame's end. */
	static const uint8_t short_sub[] = { 0, 0, 0, 3, 0x12, 0x05, 0x08 };
	/* A frame holding only field 30 (a varint): from a newer peer, or nonsense. */
	static const uint8_t unknown[] = { 0, 0, 0, 3, 0xf0, 0x01, 0x01 };
	static const uint8_t huge[] = { 0xff, 0xff, 0xff, 0xff };
	static const uint8_t http[] = "GET / HTTP/1.1\r\n\r\n";
	uint8_t over[4] = { 0, 0, 0x04, 0x01 };	/* 1025 */
	struct capture c = {};
	struct frame_decoder d;
	int r;

	expect_error("zero length", 1024, zero, sizeof(zero), -EBADMSG, "length 0");
	expect_error("garbage", 1024, garbage, sizeof(garbage), -EBADMSG, "not a valid Frame");
	expect_error("submessage past the end", 1024, short_sub, sizeof(short_sub), -EBADMSG,
		     "not a valid Frame");
	expect_error("no message", 1024, unknown, sizeof(unknown), -EPROTO, "no message we know");
	expect_error("huge length", 1024, huge, sizeof(huge), -EMSGSIZE, "over the 1024 byte limit");
	expect_error("one over", 1024, over, sizeof(over), -EMSGSIZE, "1025 bytes");
	expect_error("http", IOT_FRAME_MAX_DEFAULT, http, sizeof(http) - 1, -EMSGSIZE, "over the");

	/* Rejected on the prefix alone: nothing is allocated, no body is waited for. */
	frame_decoder__init(&d, 1024);
	r = frame_decoder__feed(&d, huge, sizeof(huge), capture_cb, &c);
	CHECK(r == -EMSGSIZE && d.buf == NULL && d.cap == 0, "oversized: %d, buffer %zu", r, d.cap);
	frame_decoder__fini(&d);

	/* At the limit is fine; memory follows the bytes that arrived, not the prefix. */
	frame_decoder__init(&d, IOT_FRAME_MAX_DEFAULT);
	{
		uint8_t hdr[14] = { 0, 0x10, 0, 0 };	/* exactly 1 MiB */

		r = frame_decoder__feed(&d, hdr, sizeof(hdr), capture_cb, &c);
		CHECK(r == 0 && frame_decoder__pending(&d) == sizeof(hdr), "prefix at the limit: %d", r);
		CHECK(d.cap <= 4096, "a 10-byte start of a 1 MiB frame took %zu bytes", d.cap);
		r = frame_decoder__finish(&d);
		CHECK(r == -EPIPE && strstr(frame_decoder__error(&d), "10 of 1048576"),
		      "truncated body: %d %s", r, frame_decoder__error(&d));
	}
	frame_decoder__fini(&d);

	/* Truncated at EOF: inside the prefix, and inside the message. */
	frame_decoder__init(&d, 1024);
	CHECK(frame_decoder__feed(&d, unknown, 2, capture_cb, &c) == 0, "half a prefix");
	CHECK(frame_decoder__pending(&d) == 2, "pending %zu", frame_decoder__pending(&d));
	r = frame_decoder__finish(&d);
	CHECK(r == -EPIPE && strstr(frame_decoder__error(&d), "length prefix"), "finish: %d %s",
	      r, frame_decoder__error(&d));
	CHECK(frame_decoder__feed(&d, unknown, 4, capture_cb, &c) == -EPIPE, "closed after EPIPE");
	frame_decoder__fini(&d);

	{
		static uint8_t buf[1 << 16];
		struct iot_record recs[5];
		size_t ends[6];

		build_stream(buf, sizeof(buf), ends, recs);
		frame_decoder__init(&d, 1024);
		r = frame_decoder__feed(&d, buf, ends[0] - 1, capture_cb, &c);
		CHECK(r == 0 && c.n == 0 && frame_decoder__pending(&d) == ends[0] - 1,
		      "hello less its last byte: %d, %d frames", r, c.n);
		r = frame_decoder__finish(&d);
		CHECK(r == -EPIPE && strstr(frame_decoder__error(&d), "ended inside frame 1"),
		      "finish: %d %s", r, frame_decoder__error(&d));
		frame_decoder__fini(&d);
	}

	/* Invalid limits. */
	CHECK(frame_decoder__init(&d, 0) == -EINVAL, "max 0");
	CHECK(frame_decoder__init(&d, IOT_FRAME_MAX_LIMIT + 1) == -EINVAL, "max over the limit");
	capture_free(&c);
}

struct session {
	struct frame_decoder *d;
	int frames;
};

/* What the host does with a connection's frames: a hello first, of our version. */
static int session_cb(void *ctx, const Iotracer__Frame *f)
{
	struct session *s = ctx;
	char err[128];
	int r;

	if (s->frames++ == 0) {
		r = frame_check_hello(f, err, sizeof(err));
		if (r)
			return frame_decoder__fail(s->d, r, "%s", err);
	}
	return 0;
}

static void test_hello(void)
{
	Iotracer__Hello hello = IOTRACER__HELLO__INIT;
	Iotracer__Stats stats = IOTRACER__STATS__INIT;
	Iotracer__Frame f = IOTRACER__FRAME__INIT;
	struct frame_decoder d;
	struct session s = { .d = &d };
	uint8_t buf[256];
	char err[128];
	size_t len;
	int r;

	hello.protocol_version = 2;
	f.msg_case = IOTRACER__FRAME__MSG_HELLO;
	f.hello = &hello;
	encode(&f, buf, sizeof(buf), &len);
	frame_decoder__init(&d, 1024);
	r = frame_decoder__feed(&d, buf, len, session_cb, &s);
	CHECK(r == -EPROTONOSUPPORT, "version 2: %d", r);
	CHECK(frame_decoder__error(&d) &&
	      !strcmp(frame_decoder__error(&d), "protocol version 2 not supported (want 1)"),
	      "reason '%s'", frame_decoder__error(&d));
	frame_decoder__fini(&d);

	stats.records_sent = 1;
	f.msg_case = IOTRACER__FRAME__MSG_STATS;
	f.stats = &stats;
	encode(&f, buf, sizeof(buf), &len);
	s.frames = 0;
	frame_decoder__init(&d, 1024);
	r = frame_decoder__feed(&d, buf, len, session_cb, &s);
	CHECK(r == -EPROTO, "stats first: %d", r);
	CHECK(frame_decoder__error(&d) && strstr(frame_decoder__error(&d), "not a hello"),
	      "reason '%s'", frame_decoder__error(&d));
	frame_decoder__fini(&d);

	CHECK(frame_check_hello(NULL, err, sizeof(err)) == -EPROTO, "no frame");
	hello.protocol_version = IOT_PROTO_VERSION;
	f.msg_case = IOTRACER__FRAME__MSG_HELLO;
	f.hello = &hello;
	CHECK(frame_check_hello(&f, err, sizeof(err)) == 0, "version 1");
	hello.protocol_version = 0;
	r = frame_check_hello(&f, err, sizeof(err));
	CHECK(r == -EPROTONOSUPPORT && !strcmp(err, "protocol version 0 not supported (want 1)"),
	      "version 0 (proto3 default when the field is missing): %d %s", r, err);
}

static int reject_cb(void *ctx, const Iotracer__Frame *f)
{
	return -ECONNRESET;
}

static void test_callback_error(void)
{
	static const uint8_t two[] = { 0, 0, 0, 2, 0x2a, 0, 0, 0, 0, 2, 0x2a, 0 };
	struct frame_decoder d;
	int r;

	frame_decoder__init(&d, 64);
	r = frame_decoder__feed(&d, two, sizeof(two), reject_cb, NULL);
	CHECK(r == -ECONNRESET && d.frames == 1, "callback error: %d after %llu frames", r,
	      (unsigned long long)d.frames);
	CHECK(frame_decoder__error(&d) && strstr(frame_decoder__error(&d), "frame 1 (stats) rejected"),
	      "reason '%s'", frame_decoder__error(&d));
	frame_decoder__fini(&d);

	/* Without a callback frames are checked and dropped. */
	frame_decoder__init(&d, 64);
	CHECK(frame_decoder__feed(&d, two, sizeof(two), NULL, NULL) == 0 && d.frames == 2, "no callback");
	frame_decoder__fini(&d);
}

/* A batch built by hand, as a hostile or buggy guest could send it. */
static void test_invalid_records(void)
{
	Iotracer__Record pb[4];
	Iotracer__Record *ptrs[4] = { &pb[0], &pb[1], &pb[2], &pb[3] };
	Iotracer__RecordBatch batch = IOTRACER__RECORD_BATCH__INIT;
	Iotracer__Frame f = IOTRACER__FRAME__INIT;
	uint64_t ts[4][IOT_TS_MAX + 1];
	struct iot_record recs[4], out[4];
	struct capture c = {};
	struct frame_decoder d;
	static uint8_t buf[8192];
	Iotracer__Frame *got;
	size_t len, n = 0;
	int r;

	for (int i = 0; i < 4; i++) {
		make_record(&recs[i], i + 10);
		record_to_pb(&recs[i], &pb[i], ts[i]);
	}
	ts[1][IOT_TS_MAX] = 5;
	pb[1].n_ts = IOT_TS_MAX + 1;	/* one timestamp too many */
	pb[3].kind = 99;		/* no such kind */
	batch.seq = 1;
	batch.n_records = 4;
	batch.records = ptrs;
	f.msg_case = IOTRACER__FRAME__MSG_BATCH;
	f.batch = &batch;
	encode(&f, buf, sizeof(buf), &len);

	frame_decoder__init(&d, 8192);
	r = frame_decoder__feed(&d, buf, len, capture_cb, &c);
	CHECK(r == 0 && c.n == 1, "hostile batch is still a frame: %d", r);
	got = captured(&c, 0);
	if (got) {
		memset(out, 0, sizeof(out));
		r = frame_batch_decode(got->batch, out, 4, &n);
		CHECK(r == 2 && n == 2, "2 invalid, 2 kept: %d %zu", r, n);
		CHECK(!memcmp(&out[0], &recs[0], sizeof(out[0])) && !memcmp(&out[1], &recs[2], sizeof(out[1])),
		      "the valid records are kept in order");
		n = 99;
		r = frame_batch_decode(got->batch, out, 3, &n);
		CHECK(r == -ENOBUFS && n == 99, "more records than room: %d", r);
		iotracer__frame__free_unpacked(got, NULL);
	}
	frame_decoder__fini(&d);
	capture_free(&c);
}

static void test_batch_builder(void)
{
	Iotracer__Frame f = IOTRACER__FRAME__INIT;
	struct iot_record r, bad;
	struct frame_batch *b;
	static uint8_t buf[1 << 16];
	size_t len, n;
	int err;

	errno = 0;
	CHECK(!frame_batch__new(0, 4096) && errno == EINVAL, "0 records");
	CHECK(!frame_batch__new(8, IOT_BATCH_OVERHEAD) && errno == EINVAL, "no room for records");
	frame_batch__free(NULL);

	/* Count bound. */
	b = frame_batch__new(3, sizeof(buf));
	make_record(&r, 1);
	for (int i = 0; i < 3; i++)
		CHECK(frame_batch__add(b, &r) == 0, "add %d", i);
	CHECK(frame_batch__add(b, &r) == -ENOSPC, "fourth record");
	bad = r;
	bad.kind = 77;
	frame_batch__reset(b);
	CHECK(frame_batch__add(b, &bad) == -EINVAL && frame_batch__count(b) == 0, "invalid record refused");
	/* An empty batch is a valid frame (a heartbeat with a clock sync). */
	CHECK(frame_batch__encode(b, 5, NULL, buf, sizeof(buf), &len) == 0, "empty batch");
	frame_batch__free(b);

	/* Byte bound: records are added until the next would overflow, and the frame fits. */
	b = frame_batch__new(1000, 1024);
	for (n = 0; (err = frame_batch__add(b, &r)) == 0; n++)
		;
	CHECK(err == -ENOSPC && n > 1 && frame_batch__bytes(b) <= 1024, "byte budget: %d after %zu", err, n);
	err = frame_batch__encode(b, 1, &(Iotracer__ClockSync){ .offset_ns = INT64_MIN, .uncertainty_ns = UINT64_MAX },
				  buf, 1024, &len);
	CHECK(err == 0 && len <= 1024, "full batch fits its budget: %d, %zu bytes", err, len);
	CHECK(frame_batch__encode(b, 1, NULL, buf, len - 1 - 24, &n) == -EMSGSIZE, "encode into too small a buffer");
	frame_batch__free(b);

	b = frame_batch__new(4, IOT_BATCH_OVERHEAD + 8);
	CHECK(frame_batch__add(b, &r) == -EMSGSIZE, "record larger than any batch");
	frame_batch__free(b);

	/* frame_encode: exact fit, one byte short, nothing to send. */
	{
		Iotracer__Stats st = IOTRACER__STATS__INIT;

		st.records_sent = 300;
		f.msg_case = IOTRACER__FRAME__MSG_STATS;
		f.stats = &st;
		CHECK(frame_encode(&f, buf, sizeof(buf), &len) == 0 && len == 4 + 5, "stats frame: %zu", len);
		CHECK(frame_encode(&f, buf, len, &n) == 0 && n == len, "exact fit");
		n = 12345;
		CHECK(frame_encode(&f, buf, len - 1, &n) == -EMSGSIZE && n == 12345, "one short, ret_len untouched");
		CHECK(frame_encode(&f, buf, 3, &n) == -EMSGSIZE, "smaller than a prefix");
		f.msg_case = IOTRACER__FRAME__MSG__NOT_SET;
		CHECK(frame_encode(&f, buf, sizeof(buf), &n) == -EINVAL, "no message");
	}
}

/*
 * The batch frame is assembled from records packed as they were added; it
 * must be what protobuf-c makes of the same batch: the same length, and the
 * same fields once protobuf-c has unpacked and packed it again.
 */
static void test_batch_matches_protobuf_c(void)
{
	static uint8_t ours[1 << 16], theirs[1 << 16];
	Iotracer__ClockSync cs = IOTRACER__CLOCK_SYNC__INIT;
	struct iot_record recs[40], back;
	struct frame_batch *b = frame_batch__new(64, sizeof(ours));
	Iotracer__Frame *f = NULL, *g = NULL;
	size_t len, len2;

	CHECK(b, "frame_batch__new: %m");
	if (!b)
		return;
	cs.offset_ns = -123456789;
	cs.uncertainty_ns = 4567;
	cs.drift_ppm = -1.25;
	cs.ref_guest_ns = 1700000000000000000ull;
	cs.samples = 17;
	for (unsigned int i = 0; i < 40; i++) {
		make_record(&recs[i], i * 7 + 3);
		CHECK(frame_batch__add(b, &recs[i]) == 0, "add %u", i);
	}
	CHECK(frame_batch__encode(b, 1ull << 40, &cs, ours, sizeof(ours), &len) == 0, "encode");
	f = iotracer__frame__unpack(NULL, len - IOT_FRAME_HDR, ours + IOT_FRAME_HDR);
	CHECK(f && f->msg_case == IOTRACER__FRAME__MSG_BATCH && f->batch, "protobuf-c unpacks our frame");
	CHECK(((size_t)ours[0] << 24 | ours[1] << 16 | ours[2] << 8 | ours[3]) == len - IOT_FRAME_HDR,
	      "length prefix");
	if (f && f->batch) {
		CHECK(frame_encode(f, theirs, sizeof(theirs), &len2) == 0 && len2 == len,
		      "protobuf-c packs the same batch in %zu bytes, ours %zu", len2, len);
		CHECK(f->batch->seq == 1ull << 40 && f->batch->n_records == 40, "seq and count");
		CHECK(f->batch->clock && f->batch->clock->offset_ns == cs.offset_ns &&
		      f->batch->clock->uncertainty_ns == cs.uncertainty_ns && f->batch->clock->drift_ppm == cs.drift_ppm &&
		      f->batch->clock->ref_guest_ns == cs.ref_guest_ns && f->batch->clock->samples == cs.samples,
		      "clock sync");
		g = iotracer__frame__unpack(NULL, len2 - IOT_FRAME_HDR, theirs + IOT_FRAME_HDR);
		for (size_t i = 0; g && g->batch && i < g->batch->n_records && i < 40; i++)
			CHECK(record_from_pb(g->batch->records[i], &back) == 0 &&
			      !memcmp(&back, &recs[i], sizeof(back)), "record %zu after both encoders", i);
		CHECK(g && g->batch && g->batch->n_records == 40, "repacked batch");
	}
	if (f)
		iotracer__frame__free_unpacked(f, NULL);
	if (g)
		iotracer__frame__free_unpacked(g, NULL);
	frame_batch__free(b);
}

/* One frame through a decoder with the fast batch path on; what it made of it, packed by protobuf-c. */
static bool decode_fast(const uint8_t *buf, size_t len, struct capture *c, uint64_t *ret_fast)
{
	struct frame_decoder d;
	int r;

	memset(c, 0, sizeof(*c));
	frame_decoder__init(&d, IOT_FRAME_MAX_DEFAULT);
	r = frame_decoder__feed(&d, buf, len, capture_cb, c);
	*ret_fast = d.fast_frames;
	frame_decoder__fini(&d);
	return r == 0 && c->n == 1;
}

/*
 * Our guests' batches, and the same batch as protobuf-c packs it, take the
 * fast path and come out as protobuf-c would decode them; a batch of
 * another shape (an unknown field in a record) is left to protobuf-c.
 */
static void test_fast_batch(void)
{
	static uint8_t ours[1 << 16], theirs[1 << 16];
	Iotracer__ClockSync cs = IOTRACER__CLOCK_SYNC__INIT;
	Iotracer__RecordBatch batch = IOTRACER__RECORD_BATCH__INIT;
	Iotracer__Frame fr = IOTRACER__FRAME__INIT;
	Iotracer__Record pbs[20], *ptrs[20];
	uint64_t ts[20][IOT_TS_MAX], nfast;
	struct iot_record recs[20], back;
	struct frame_batch *b = frame_batch__new(64, sizeof(ours));
	struct capture c1, c2;
	Iotracer__Frame *f;
	size_t len, len2;

	cs.offset_ns = -5;
	cs.uncertainty_ns = 7;
	cs.drift_ppm = 0.5;
	cs.samples = 3;
	for (unsigned int i = 0; i < 20; i++) {
		make_record(&recs[i], i * 5 + 1);
		CHECK(frame_batch__add(b, &recs[i]) == 0, "add %u", i);
		record_to_pb(&recs[i], &pbs[i], ts[i]);
		ptrs[i] = &pbs[i];
	}
	CHECK(frame_batch__encode(b, 42, &cs, ours, sizeof(ours), &len) == 0, "encode ours");
	frame_batch__free(b);
	batch.seq = 42;
	batch.n_records = 20;
	batch.records = ptrs;
	batch.clock = &cs;
	fr.msg_case = IOTRACER__FRAME__MSG_BATCH;
	fr.batch = &batch;
	CHECK(frame_encode(&fr, theirs, sizeof(theirs), &len2) == 0 && len2 == len, "encode theirs");

	CHECK(decode_fast(ours, len, &c1, &nfast) && nfast == 1, "our batch: fast path %llu",
	      (unsigned long long)nfast);
	CHECK(decode_fast(theirs, len2, &c2, &nfast) && nfast == 1, "protobuf-c's batch: fast path %llu",
	      (unsigned long long)nfast);
	CHECK(c1.n == 1 && c2.n == 1 && c1.packed_len[0] == len2 - IOT_FRAME_HDR &&
	      !memcmp(c1.packed[0], theirs + IOT_FRAME_HDR, len2 - IOT_FRAME_HDR) &&
	      c2.packed_len[0] == c1.packed_len[0] && !memcmp(c2.packed[0], c1.packed[0], c1.packed_len[0]),
	      "both decode to the batch protobuf-c packs");
	f = captured(&c1, 0);
	for (unsigned int i = 0; f && i < 20; i++)
		CHECK(record_from_pb(f->batch->records[i], &back) == 0 && !memcmp(&back, &recs[i], sizeof(back)),
		      "record %u", i);
	if (f)
		iotracer__frame__free_unpacked(f, NULL);
	capture_free(&c1);
	capture_free(&c2);

	/* A record with a field this schema does not have (99, varint): protobuf-c keeps it as unknown. */
	{
		static const uint8_t odd[] = { 0, 0, 0, 10, 0x12, 8, 0x12, 6, 0x98, 0x06, 0x01, 0xa0, 0x01, 0x03 };

		CHECK(decode_fast(odd, sizeof(odd), &c1, &nfast) && nfast == 0, "odd batch: fast path %llu",
		      (unsigned long long)nfast);
		f = captured(&c1, 0);
		CHECK(f && f->batch && f->batch->n_records == 1 && f->batch->records[0]->kind == 3 &&
		      f->batch->records[0]->base.n_unknown_fields == 1, "odd batch decoded by protobuf-c");
		if (f)
			iotracer__frame__free_unpacked(f, NULL);
		capture_free(&c1);
	}
}

/* Appends a raw Frame{batch{records: count x {}}} with the given body. */
static size_t raw_empty_records(uint8_t *buf, size_t count)
{
	size_t body = 2 * count, len = 4, inner;

	/* Frame.batch tag + varint(len(body)) + body */
	inner = body;
	buf[len++] = 0x12;
	while (inner >= 0x80) {
		buf[len++] = (inner & 0x7f) | 0x80;
		inner >>= 7;
	}
	buf[len++] = inner;
	for (size_t i = 0; i < count; i++) {
		buf[len++] = 0x12;	/* RecordBatch.records */
		buf[len++] = 0;		/* an empty Record */
	}
	buf[0] = (len - 4) >> 24;
	buf[1] = (len - 4) >> 16;
	buf[2] = (len - 4) >> 8;
	buf[3] = len - 4;
	return len;
}

static int count_records_cb(void *ctx, const Iotracer__Frame *f)
{
	size_t *n = ctx;

	if (f->msg_case == IOTRACER__FRAME__MSG_BATCH)
		*n += f->batch->n_records;
	return 0;
}

/* A small frame must not be able to make protobuf-c allocate without bound. */
static void test_decode_budget(void)
{
	struct iot_record zero;
	struct frame_decoder d;
	struct frame_batch *b;
	uint8_t *buf;
	size_t len, n = 0, added = 0;
	int r;

	buf = malloc(IOT_FRAME_MAX_DEFAULT + 16);
	if (!buf)
		return;

	/* 2-byte records that each decode to ~200 bytes: refused, with the reason. */
	len = raw_empty_records(buf, 200000);
	frame_decoder__init(&d, IOT_FRAME_MAX_DEFAULT);
	r = frame_decoder__feed(&d, buf, len, count_records_cb, &n);
	CHECK(r == -EMSGSIZE && n == 0, "empty-record flood: %d", r);
	CHECK(frame_decoder__error(&d) && strstr(frame_decoder__error(&d), "of memory to decode"),
	      "reason '%s'", frame_decoder__error(&d));
	frame_decoder__fini(&d);

	/* The densest batch our own encoder writes (all-zero records) still decodes. */
	memset(&zero, 0, sizeof(zero));
	b = frame_batch__new(IOT_BATCH_RECORDS_LIMIT, IOT_FRAME_HDR + IOT_FRAME_MAX_DEFAULT);
	CHECK(b != NULL, "big batch");
	if (b) {
		while (frame_batch__add(b, &zero) == 0)
			added++;
		r = frame_batch__encode(b, 1, NULL, buf, IOT_FRAME_HDR + IOT_FRAME_MAX_DEFAULT, &len);
		CHECK(r == 0, "encode %zu zero records: %d", added, r);
		frame_decoder__init(&d, IOT_FRAME_MAX_DEFAULT);
		n = 0;
		r = frame_decoder__feed(&d, buf, len, count_records_cb, &n);
		CHECK(r == 0 && n == added, "dense batch of %zu records (%zu bytes): %d %s", added, len, r,
		      frame_decoder__error(&d));
		frame_decoder__fini(&d);
		frame_batch__free(b);
	}

	/* A few empty records pass: the budget is a ratio plus a base, not a cap on count. */
	len = raw_empty_records(buf, 10);
	frame_decoder__init(&d, IOT_FRAME_MAX_DEFAULT);
	n = 0;
	r = frame_decoder__feed(&d, buf, len, count_records_cb, &n);
	CHECK(r == 0 && n == 10, "10 empty records: %d %s", r, frame_decoder__error(&d));
	frame_decoder__fini(&d);

	/* The smallest batches, one record each, live on the base. */
	for (int i = 0; i < 2; i++) {
		b = frame_batch__new(1, 4096);
		if (i)
			make_record(&zero, 3);
		r = b ? frame_batch__add(b, &zero) : -ENOMEM;
		if (!r)
			r = frame_batch__encode(b, 1, &(Iotracer__ClockSync){ .offset_ns = 1 }, buf, 4096, &len);
		frame_decoder__init(&d, IOT_FRAME_MAX_DEFAULT);
		n = 0;
		if (!r)
			r = frame_decoder__feed(&d, buf, len, count_records_cb, &n);
		CHECK(r == 0 && n == 1, "one-record batch %d: %d %s", i, r, frame_decoder__error(&d));
		frame_decoder__fini(&d);
		frame_batch__free(b);
	}
	free(buf);
}

/* Each connection has its own decoder: garbage on one leaves the other whole. */
static void test_two_decoders(void)
{
	static uint8_t good[1 << 16];
	static const uint8_t bad[] = "\0\0\0\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
				     "\xde\xad\xbe\xef";
	struct frame_decoder a, b;
	struct capture ca = {}, cb = {};
	struct iot_record recs[5];
	size_t ends[6], len, off = 0, boff = 0;
	int ra = 0, rb = 0;

	len = build_stream(good, sizeof(good), ends, recs);
	frame_decoder__init(&a, IOT_FRAME_MAX_DEFAULT);
	frame_decoder__init(&b, IOT_FRAME_MAX_DEFAULT);
	/* Interleaved, as a poll loop would serve them. */
	while (off < len) {
		size_t n = 1 + rng() % 40;

		if (n > len - off)
			n = len - off;
		if (boff < sizeof(bad) - 1) {
			ra = frame_decoder__feed(&a, bad + boff, 1, capture_cb, &ca);
			boff++;
		}
		rb = frame_decoder__feed(&b, good + off, n, capture_cb, &cb);
		off += n;
		CHECK(rb == 0, "good connection failed: %d %s", rb, frame_decoder__error(&b));
	}
	CHECK(ra == -EBADMSG && ca.n == 0, "bad connection: %d", ra);
	CHECK(frame_decoder__finish(&b) == 0, "good connection ends cleanly");
	check_stream_contents(&cb, recs);
	frame_decoder__fini(&a);
	frame_decoder__fini(&b);
	capture_free(&ca);
	capture_free(&cb);
}

/* Large frames split across feeds: buffer bounded, and given back afterwards. */
static void test_buffer_bound(void)
{
	struct frame_batch *b;
	struct frame_decoder d;
	struct iot_record r;
	uint8_t *buf;
	size_t len, off = 0, n = 0, maxcap = 0;
	int err = 0;

	buf = malloc(1 << 20);
	b = frame_batch__new(4096, 250 << 10);
	if (!buf || !b)
		goto out;
	for (unsigned int i = 0; ; i++) {
		make_record(&r, i);
		if (frame_batch__add(b, &r))
			break;
	}
	err = frame_batch__encode(b, 3, NULL, buf, 1 << 20, &len);
	CHECK(err == 0 && len > (200 << 10), "big batch: %d, %zu bytes", err, len);
	frame_decoder__init(&d, 256 << 10);
	while (off < len && !err) {
		size_t k = 1 + rng() % 5000;

		if (k > len - off)
			k = len - off;
		err = frame_decoder__feed(&d, buf + off, k, count_records_cb, &n);
		if (d.cap > maxcap)
			maxcap = d.cap;
		off += k;
	}
	CHECK(err == 0 && n == frame_batch__count(b), "big frame in pieces: %d, %zu records", err, n);
	CHECK(maxcap <= len - 4 && maxcap <= d.max_frame, "buffer peaked at %zu for a %zu-byte frame",
	      maxcap, len - 4);
	CHECK(d.buf == NULL && d.cap == 0, "large buffer given back after the frame");
	frame_decoder__fini(&d);
out:
	frame_batch__free(b);
	free(buf);
}

static int write_file(const char *dir, const char *name, const void *data, size_t len)
{
	char path[4096];
	FILE *f;
	int err = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	if (!f)
		return -errno;
	if (fwrite(data, 1, len, f) != len)
		err = -EIO;
	if (fclose(f) && !err)
		err = -errno;
	return err;
}

/* Valid streams, whole and per frame, for the fuzzer to start from. */
static int write_seeds(const char *dir)
{
	static uint8_t buf[1 << 16], one[1 << 16];
	static const char *names[6] = { "hello", "batch", "clock_probe", "clock_reply", "stats", "goodbye" };
	struct iot_record recs[5];
	size_t ends[6], len, start = 0;
	char name[64];
	int err = 0;

	if (mkdir(dir, 0755) && errno != EEXIST)
		return -errno;
	/* buf[0] is the fuzzer's split point, the stream follows. */
	len = build_stream(buf + 1, sizeof(buf) - 1, ends, recs);
	if (!len)
		return -EINVAL;
	for (int split = 0; split < 256 && !err; split += 51) {
		buf[0] = split;
		snprintf(name, sizeof(name), "stream-split%d", split);
		err = write_file(dir, name, buf, len + 1);
	}
	for (int i = 0; i < 6 && !err; i++) {
		size_t flen = ends[i] - start;

		/* Each frame alone, cut in its middle. */
		one[0] = flen / 2;
		memcpy(one + 1, buf + 1 + start, flen);
		snprintf(name, sizeof(name), "frame-%s", names[i]);
		err = write_file(dir, name, one, flen + 1);
		start = ends[i];
	}
	/* Past the decode budget: a run of empty records the fuzzer would not build by itself. */
	if (!err) {
		one[0] = 0;
		len = raw_empty_records(one + 1, 3000);
		err = write_file(dir, "flood", one, len + 1);
	}
	return err;
}

/* The host's acknowledgement, and the guest's session number in its hello. */
static void test_ack_and_session(void)
{
	Iotracer__Frame f = IOTRACER__FRAME__INIT, *g;
	Iotracer__Ack ack = IOTRACER__ACK__INIT;
	Iotracer__Hello h = IOTRACER__HELLO__INIT;
	struct capture c = {};
	struct frame_decoder d;
	uint8_t buf[256];
	size_t n, m;

	ack.seq = 1ull << 40;
	f.msg_case = IOTRACER__FRAME__MSG_ACK;
	f.ack = &ack;
	CHECK(frame_encode(&f, buf, sizeof(buf), &n) == 0, "encode ack");
	h.protocol_version = IOT_PROTO_VERSION;
	h.session = 0xfedcba9876543210ull;
	f.msg_case = IOTRACER__FRAME__MSG_HELLO;
	f.hello = &h;
	CHECK(frame_encode(&f, buf + n, sizeof(buf) - n, &m) == 0, "encode hello");
	frame_decoder__init(&d, 1024);
	CHECK(frame_decoder__feed(&d, buf, n + m, capture_cb, &c) == 0 && c.n == 2, "decode ack + hello");
	g = captured(&c, 0);
	if (g) {
		CHECK(g->msg_case == IOTRACER__FRAME__MSG_ACK && g->ack->seq == 1ull << 40, "ack seq");
		CHECK(!strcmp(frame_msg_name(g->msg_case), "ack"), "ack name");
		iotracer__frame__free_unpacked(g, NULL);
	}
	g = captured(&c, 1);
	if (g) {
		CHECK(g->hello->session == 0xfedcba9876543210ull, "hello session");
		iotracer__frame__free_unpacked(g, NULL);
	}
	frame_decoder__fini(&d);
	capture_free(&c);
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--write-seeds")) {
		int err = write_seeds(argv[2]);

		if (err)
			fprintf(stderr, "writing seeds into %s: %s\n", argv[2], strerror(-err));
		return err ? 1 : 0;
	}
	if (argc != 1) {
		fprintf(stderr, "usage: %s [--write-seeds DIR]\n", argv[0]);
		return 2;
	}

	test_round_trip_and_chunks();
	test_malformed();
	test_hello();
	test_callback_error();
	test_invalid_records();
	test_batch_builder();
	test_batch_matches_protobuf_c();
	test_fast_batch();
	test_decode_budget();
	test_two_decoders();
	test_buffer_bound();
	test_ack_and_session();
	printf("%d checks, %d failed\n", checks, failures);
	return failures ? 1 : 0;
}
