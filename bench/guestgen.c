// SPDX-License-Identifier: GPL-2.0
/*
 * A fake guest agent speaking the guest <-> host wire protocol
 * (docs/channel.md) to a real host agent: to measure how many records per
 * second the host takes in, and to check that the host ends a connection
 * that sends it what it must not accept.
 *
 * usage: guestgen ADDR MODE [--records N] [--batch B] [--pid P] [--rate R] [--linger S]
 *
 * ADDR is unix:PATH or tcp:HOST:PORT. MODE is one of:
 *
 *   stream           the preamble, a Hello, N records (default 1000000) in
 *                    RecordBatch frames of B records (default 128; seq from 1)
 *                    at R records/s (default 0: as fast as possible), a Stats
 *                    and a Goodbye, reading the host's replies meanwhile. Then
 *                    waits up to S seconds (default 10) for the last batch's
 *                    Ack. Prints {"sent":N,"batches":K,"acked_seq":X,"seconds":T}
 *                    with T the wall time of the send phase. Exits 0 when every
 *                    batch was acknowledged, 1 otherwise (also when the host
 *                    took nothing for S seconds while a batch waited).
 *
 * and the hostile modes, each of which sends what the host must refuse, then
 * waits up to S seconds (default 5) for the host to close the connection,
 * prints {"mode":MODE,"closed_by_host":true|false,"host_bytes":BYTES} and
 * exits 0 when the host closed it, 1 when it did not:
 *
 *   no-preamble      a valid Hello with no preamble in front
 *   garbage          the preamble, then 4096 bytes of 0xff
 *   oversized        preamble, Hello, a 64 MiB length prefix and 1 KiB of zeros
 *   truncated        preamble, Hello, a length prefix of 1000 and 10 bytes,
 *                    then shutdown(SHUT_WR): the stream ends inside a frame
 *   wrong-version    the preamble, then a Hello of protocol version 99
 *   not-hello        the preamble, then a Stats as the first frame
 *   unknown-message  preamble, Hello, then a Frame holding only field 30
 *   silent-reader    preamble, Hello, then batches like stream (for at most S
 *                    seconds, and N records only when --records is given)
 *                    with a small receive buffer and never a read: the host's
 *                    replies pile up until it gives up on us. host_bytes is
 *                    what waits unread in our receive buffer.
 *
 * Exits 2 on bad usage or when it cannot connect.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include "addr.h"
#include "frame.h"
#include "num.h"
#include "record_pb.h"

#define PREAMBLE "IOTRACE1"
#define PREAMBLE_LEN 8u
#define READ_CHUNK (64u << 10)
/* Reads per conn_read() call, so that a flooding host cannot starve our writes. */
#define READS_PER_CALL 16
/* A frame we send: at most the host's default limit (we cannot know a lower one in advance). */
#define FRAME_CAP (IOT_FRAME_HDR + IOT_FRAME_MAX_DEFAULT)
#define SILENT_RCVBUF 4096
/* silent-reader's default --records: more than any host takes in --linger seconds. */
#define RECORDS_UNBOUNDED (1ull << 40)

enum mode {
	MODE_STREAM,
	MODE_NO_PREAMBLE,
	MODE_GARBAGE,
	MODE_OVERSIZED,
	MODE_TRUNCATED,
	MODE_WRONG_VERSION,
	MODE_NOT_HELLO,
	MODE_UNKNOWN_MESSAGE,
	MODE_SILENT_READER,
	MODE_MAX,
};

static const char *const mode_names[MODE_MAX] = {
	[MODE_STREAM] = "stream",
	[MODE_NO_PREAMBLE] = "no-preamble",
	[MODE_GARBAGE] = "garbage",
	[MODE_OVERSIZED] = "oversized",
	[MODE_TRUNCATED] = "truncated",
	[MODE_WRONG_VERSION] = "wrong-version",
	[MODE_NOT_HELLO] = "not-hello",
	[MODE_UNKNOWN_MESSAGE] = "unknown-message",
	[MODE_SILENT_READER] = "silent-reader",
};

struct opts {
	enum mode mode;
	struct iot_addr addr;
	char addr_text[400];
	uint64_t records;
	size_t batch;
	uint32_t pid;
	double rate;		/* records/s, 0 = as fast as possible */
	double linger;		/* seconds */
};

/* One connection to the host and what it sent us. */
struct conn {
	int fd;
	bool strict;		/* stream mode: the host's bytes must be the protocol */
	bool closed;		/* the host ended the connection (EOF, reset, broken pipe) */
	int err;		/* strict: the host's bytes were not the protocol */
	char errmsg[200];
	uint64_t host_bytes;
	size_t preamble_got;
	struct frame_decoder dec;
	uint64_t frames;
	uint64_t acked;		/* highest Ack.seq */
};

/*
 * Makes the records of one batch at a time; record i differs only in sector,
 * offset and timestamps. Encoded here rather than with frame_batch__encode(),
 * which sends only the offset and uncertainty of a batch's clock.
 */
struct gen {
	struct iot_record tmpl;
	struct iot_record *recs;
	Iotracer__Record *pb;
	Iotracer__Record **ptrs;
	uint64_t *ts;
	size_t batch;
	uint64_t base_ns;
	uint8_t *buf;		/* one encoded frame */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static uint64_t secs_to_ns(double s)
{
	return s >= 1e9 ? (uint64_t)1e18 : (uint64_t)(s * 1e9);
}

static int on_host_frame(void *ctx, const Iotracer__Frame *f)
{
	struct conn *c = ctx;
	char why[160];

	if (c->frames++ == 0 && c->strict && frame_check_hello(f, why, sizeof(why)))
		return frame_decoder__fail(&c->dec, -EPROTO, "%s", why);
	switch (f->msg_case) {
	case IOTRACER__FRAME__MSG_ACK:
		if (f->ack && f->ack->seq > c->acked)
			c->acked = f->ack->seq;
		break;
	case IOTRACER__FRAME__MSG_GOODBYE:
		if (c->strict)
			fprintf(stderr, "guestgen: the host says goodbye: %s\n",
				f->goodbye && f->goodbye->reason ? f->goodbye->reason : "");
		break;
	default:		/* its hello, clock replies: nothing to do */
		break;
	}
	return 0;
}

/* Takes in bytes from the host: its preamble, then frames. */
static void conn_parse(struct conn *c, const uint8_t *p, size_t len)
{
	int err;

	if (c->err)
		return;
	while (len && c->preamble_got < PREAMBLE_LEN) {
		if (*p != (uint8_t)PREAMBLE[c->preamble_got]) {
			c->err = -EPROTO;
			snprintf(c->errmsg, sizeof(c->errmsg), "no " PREAMBLE " preamble from the host");
			return;
		}
		c->preamble_got++;
		p++;
		len--;
	}
	if (!len)
		return;
	err = frame_decoder__feed(&c->dec, p, len, on_host_frame, c);
	if (err) {
		c->err = err;
		snprintf(c->errmsg, sizeof(c->errmsg), "%s", frame_decoder__error(&c->dec) ?: strerror(-err));
	}
}

/*
 * Reads what the host has sent so far without waiting. 0, or -errno of a
 * failure other than the host ending the connection.
 */
static int conn_read(struct conn *c)
{
	uint8_t buf[READ_CHUNK];

	for (int i = 0; i < READS_PER_CALL && !c->closed; i++) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			if (errno == ECONNRESET || errno == EPIPE) {
				c->closed = true;
				return 0;
			}
			return -errno;
		}
		if (n == 0) {
			c->closed = true;
			return 0;
		}
		c->host_bytes += n;
		conn_parse(c, buf, n);
	}
	return 0;
}

/* Once the host has closed: takes in what it sent before, which a failed write left unread. */
static void conn_drain(struct conn *c)
{
	uint8_t buf[READ_CHUNK];
	ssize_t n;

	while ((n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0 || (n < 0 && errno == EINTR)) {
		if (n > 0) {
			c->host_bytes += n;
			conn_parse(c, buf, n);
		}
	}
}

/*
 * Waits until deadline for events on the connection; takes in the host's
 * bytes when read is set. 0 when something happened (the caller looks at
 * what), -ETIMEDOUT at the deadline, -EPIPE when the host ended the
 * connection, -EPROTO (strict) when it sent something else than the
 * protocol, or another -errno.
 */
static int conn_wait(struct conn *c, short events, uint64_t deadline, bool read)
{
	struct pollfd pfd = { .fd = c->fd, .events = events | POLLRDHUP };
	uint64_t now = now_ns(), ms;
	int err, n;

	if (c->closed)
		return -EPIPE;
	if (now >= deadline)
		return -ETIMEDOUT;
	ms = (deadline - now + 999999) / 1000000;
	n = poll(&pfd, 1, ms > INT_MAX ? INT_MAX : (int)ms);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	if (!n)
		return now_ns() >= deadline ? -ETIMEDOUT : 0;
	if (read && (pfd.revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR))) {
		err = conn_read(c);
		if (err)
			return err;
	} else if (!read && (pfd.revents & (POLLHUP | POLLRDHUP | POLLERR))) {
		/* Not reading: a hang-up or a reset is all we learn of the host closing. */
		c->closed = true;
	}
	if (c->closed)
		return -EPIPE;
	if (c->strict && c->err)
		return -EPROTO;
	return 0;
}

/* Writes all of buf, waiting for room until deadline. 0, or as conn_wait(). */
static int send_all(struct conn *c, const void *buf, size_t len, uint64_t deadline, bool read)
{
	const uint8_t *p = buf;
	int err;

	while (len) {
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			p += n;
			len -= n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			if (errno == EPIPE || errno == ECONNRESET) {
				c->closed = true;
				return -EPIPE;
			}
			return -errno;
		}
		err = conn_wait(c, POLLOUT | (read ? POLLIN : 0), deadline, read);
		if (err)
			return err;
	}
	return 0;
}

static int encode_hello(uint32_t version, uint8_t *buf, size_t cap, size_t *ret_len)
{
	Iotracer__Hello h = IOTRACER__HELLO__INIT;
	Iotracer__Frame f = IOTRACER__FRAME__INIT;
	uint64_t session = 0;

	if (getrandom(&session, sizeof(session), 0) != sizeof(session))
		return errno ? -errno : -EIO;
	h.protocol_version = version;
	h.hostname = (char *)"guestgen";
	h.kernel = (char *)"none";
	h.max_frame_bytes = IOT_FRAME_MAX_DEFAULT;
	h.session = session;
	f.msg_case = IOTRACER__FRAME__MSG_HELLO;
	f.hello = &h;
	return frame_encode(&f, buf, cap, ret_len);
}

static int encode_stats(uint64_t records, uint8_t *buf, size_t cap, size_t *ret_len)
{
	Iotracer__Stats s = IOTRACER__STATS__INIT;
	Iotracer__Frame f = IOTRACER__FRAME__INIT;

	s.records_sent = records;
	s.records_traced = records;
	f.msg_case = IOTRACER__FRAME__MSG_STATS;
	f.stats = &s;
	return frame_encode(&f, buf, cap, ret_len);
}

static int encode_goodbye(const char *reason, uint8_t *buf, size_t cap, size_t *ret_len)
{
	Iotracer__Goodbye g = IOTRACER__GOODBYE__INIT;
	Iotracer__Frame f = IOTRACER__FRAME__INIT;

	g.reason = (char *)reason;
	f.msg_case = IOTRACER__FRAME__MSG_GOODBYE;
	f.goodbye = &g;
	return frame_encode(&f, buf, cap, ret_len);
}

static void gen_free(struct gen *g)
{
	if (!g)
		return;
	free(g->recs);
	free(g->pb);
	free(g->ptrs);
	free(g->ts);
	free(g->buf);
	free(g);
}

/* A pread64 of 4 KiB at sector i * 8 of dev 253:0, by pid. NULL and errno on error. */
static struct gen *gen_new(size_t batch, uint32_t pid)
{
	struct gen *g = calloc(1, sizeof(*g));
	struct iot_record *r;

	if (!g)
		return NULL;
	g->batch = batch;
	g->recs = calloc(batch, sizeof(*g->recs));
	g->pb = calloc(batch, sizeof(*g->pb));
	g->ptrs = calloc(batch, sizeof(*g->ptrs));
	g->ts = calloc(batch * IOT_TS_MAX, sizeof(*g->ts));
	g->buf = malloc(FRAME_CAP);
	if (!g->recs || !g->pb || !g->ptrs || !g->ts || !g->buf) {
		gen_free(g);
		errno = ENOMEM;
		return NULL;
	}
	for (size_t k = 0; k < batch; k++)
		g->ptrs[k] = &g->pb[k];
	g->base_ns = now_ns();
	r = &g->tmpl;
	r->kind = IOT_KIND_SYSCALL;
	r->op = IOT_OP_READ;
	r->syscall = IOT_SYS_PREAD64;
	r->pid = pid;
	r->tid = pid;
	r->dev = 253u << 20 | 0;
	r->len = 4096;
	r->result = 4096;
	memcpy(r->comm, "guestgen", 8);
	return g;
}

static void gen_record(const struct gen *g, uint64_t i, struct iot_record *r)
{
	*r = g->tmpl;
	r->offset = i * 4096;
	r->sector = i * 8;
	r->ts[IOT_TS_SYSCALL_ENTER] = g->base_ns + i * 1000;
	r->ts[IOT_TS_SYSCALL_EXIT] = r->ts[IOT_TS_SYSCALL_ENTER] + 500;
}

/*
 * 0 when the record passes record_from_pb() on the host, as then every one
 * does: they differ in nothing it checks.
 */
static int gen_check(const struct gen *g)
{
	struct iot_record r, back;
	Iotracer__Record m;
	uint64_t ts[IOT_TS_MAX];

	gen_record(g, 0, &r);
	record_to_pb(&r, &m, ts);
	return record_from_pb(&m, &back);
}

/* Encodes records first..first+n-1 as the batch seq into g->buf. 0, or as frame_encode(). */
static int gen_batch(struct gen *g, uint64_t first, size_t n, uint64_t seq, size_t *ret_len)
{
	Iotracer__RecordBatch b = IOTRACER__RECORD_BATCH__INIT;
	Iotracer__ClockSync cs = IOTRACER__CLOCK_SYNC__INIT;
	Iotracer__Frame f = IOTRACER__FRAME__INIT;

	for (size_t k = 0; k < n; k++) {
		gen_record(g, first + k, &g->recs[k]);
		record_to_pb(&g->recs[k], &g->pb[k], &g->ts[k * IOT_TS_MAX]);
	}
	/* The host and we share CLOCK_MONOTONIC: the offset is 0. */
	cs.offset_ns = 0;
	cs.uncertainty_ns = 1000;
	cs.samples = 1;
	cs.ref_guest_ns = g->recs[0].ts[IOT_TS_SYSCALL_ENTER];
	b.seq = seq;
	b.n_records = n;
	b.records = g->ptrs;
	b.clock = &cs;
	f.msg_case = IOTRACER__FRAME__MSG_BATCH;
	f.batch = &b;
	return frame_encode(&f, g->buf, FRAME_CAP, ret_len);
}

/* Connects to a (unix or tcp), blocking. The fd, or -errno with the reason in err. */
static int connect_addr(const struct iot_addr *a, int rcvbuf, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res, *ai;
	char port[8];
	int fd, r, e = ECONNREFUSED;

	if (a->kind == IOT_ADDR_UNIX) {
		struct sockaddr_un sun = { .sun_family = AF_UNIX };

		strcpy(sun.sun_path, a->path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			goto err_errno;
		if (rcvbuf)
			setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
		if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
			e = errno;
			close(fd);
			errno = e;
			goto err_errno;
		}
		return fd;
	}
	if (a->kind != IOT_ADDR_TCP) {
		snprintf(err, errlen, "only unix:PATH and tcp:HOST:PORT are supported");
		return -EAFNOSUPPORT;
	}
	snprintf(port, sizeof(port), "%u", a->port);
	r = getaddrinfo(a->host, port, &hints, &res);
	if (r) {
		snprintf(err, errlen, "%s", gai_strerror(r));
		return -EHOSTUNREACH;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			e = errno;
			continue;
		}
		/* Before connect, so that the advertised TCP window is small from the start. */
		if (rcvbuf)
			setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
		if (!connect(fd, ai->ai_addr, ai->ai_addrlen)) {
			freeaddrinfo(res);
			return fd;
		}
		e = errno;
		close(fd);
	}
	freeaddrinfo(res);
	errno = e;
err_errno:
	snprintf(err, errlen, "%s", strerror(errno));
	return -errno;
}

/* Sends N records in batches; 0 when each batch was acknowledged, 1 otherwise. */
static int run_stream(struct conn *c, struct gen *g, const struct opts *o)
{
	uint8_t head[PREAMBLE_LEN + 512];
	uint64_t linger = secs_to_ns(o->linger), sent = 0, seq = 0, t0, t_send, deadline;
	size_t len, hlen;
	bool ok;
	int err;

	t0 = now_ns();
	memcpy(head, PREAMBLE, PREAMBLE_LEN);
	err = encode_hello(IOT_PROTO_VERSION, head + PREAMBLE_LEN, sizeof(head) - PREAMBLE_LEN, &hlen);
	if (!err)
		err = send_all(c, head, PREAMBLE_LEN + hlen, t0 + linger, true);
	while (!err && sent < o->records) {
		size_t n = o->records - sent < g->batch ? o->records - sent : g->batch;

		if (o->rate > 0) {
			uint64_t due = t0 + (uint64_t)(sent / o->rate * 1e9);

			while (!err && now_ns() < due)
				err = conn_wait(c, POLLIN, due, true);
			if (err == -ETIMEDOUT)
				err = 0;
			if (err)
				break;
		}
		err = gen_batch(g, sent, n, seq + 1, &len);
		if (!err)
			err = send_all(c, g->buf, len, now_ns() + linger, true);
		if (err)
			break;
		seq++;
		sent += n;
		err = conn_read(c);
		if (!err && c->closed)
			err = -EPIPE;
		if (!err && c->err)
			err = -EPROTO;
	}
	if (!err) {
		err = encode_stats(sent, head, sizeof(head), &len);
		if (!err)
			err = encode_goodbye("done", head + len, sizeof(head) - len, &hlen);
		if (!err)
			err = send_all(c, head, len + hlen, now_ns() + linger, true);
	}
	t_send = now_ns();
	deadline = t_send + linger;
	while (!err && c->acked < seq)
		err = conn_wait(c, POLLIN, deadline, true);

	/* The host may well close the connection once it has acknowledged everything. */
	ok = !c->err && sent == o->records && c->acked >= seq;
	if (c->err)
		fprintf(stderr, "guestgen: bad bytes from the host: %s\n", c->errmsg);
	else if (!ok && err == -EPIPE)
		fprintf(stderr, "guestgen: the host closed the connection (acked seq %llu of %llu)\n",
			(unsigned long long)c->acked, (unsigned long long)seq);
	else if (!ok && err == -ETIMEDOUT)
		fprintf(stderr, "guestgen: the host did not answer for %g s (acked seq %llu of %llu)\n",
			o->linger, (unsigned long long)c->acked, (unsigned long long)seq);
	else if (!ok)
		fprintf(stderr, "guestgen: %s\n", strerror(-err));
	printf("{\"sent\": %llu, \"batches\": %llu, \"acked_seq\": %llu, \"seconds\": %.6f}\n",
	       (unsigned long long)sent, (unsigned long long)seq, (unsigned long long)c->acked,
	       (t_send - t0) / 1e9);
	return ok ? 0 : 1;
}

/*
 * silent-reader: batches as in stream mode until the host gives up on us or
 * the time is out, never reading. 0, -EPIPE when the host closed, or -errno.
 */
static int send_silently(struct conn *c, struct gen *g, const struct opts *o, uint64_t deadline)
{
	uint64_t sent = 0, seq = 0;
	size_t len;
	int err = 0;

	while (!err && sent < o->records) {
		size_t n = o->records - sent < g->batch ? o->records - sent : g->batch;

		if (o->rate > 0) {
			uint64_t due = g->base_ns + (uint64_t)(sent / o->rate * 1e9);

			if (due > deadline)
				break;
			while (!err && now_ns() < due)
				err = conn_wait(c, 0, due, false);
			if (err == -ETIMEDOUT)
				err = 0;
			if (err)
				break;
		}
		err = gen_batch(g, sent, n, ++seq, &len);
		if (!err)
			err = send_all(c, g->buf, len, deadline, false);
		sent += n;
	}
	return err;
}

/* Sends what the host must refuse, then waits for it to close the connection. */
static int run_hostile(struct conn *c, struct gen *g, const struct opts *o)
{
	static const uint8_t unknown[] = { 0, 0, 0, 3, 0xf0, 0x01, 0x01 };
	uint64_t linger = secs_to_ns(o->linger), deadline;
	size_t cap = PREAMBLE_LEN + 512 + 4096, len = 0, flen;
	uint8_t *buf = calloc(1, cap);
	int err = 0, avail = 0;
	bool reads = o->mode != MODE_SILENT_READER;

	if (!buf) {
		fprintf(stderr, "guestgen: %s\n", strerror(ENOMEM));
		return 1;
	}
	if (o->mode != MODE_NO_PREAMBLE) {
		memcpy(buf, PREAMBLE, PREAMBLE_LEN);
		len = PREAMBLE_LEN;
	}
	switch (o->mode) {
	case MODE_NO_PREAMBLE:
	case MODE_OVERSIZED:
	case MODE_TRUNCATED:
	case MODE_UNKNOWN_MESSAGE:
	case MODE_SILENT_READER:
		err = encode_hello(IOT_PROTO_VERSION, buf + len, cap - len, &flen);
		break;
	case MODE_WRONG_VERSION:
		err = encode_hello(99, buf + len, cap - len, &flen);
		break;
	case MODE_NOT_HELLO:
		err = encode_stats(0, buf + len, cap - len, &flen);
		break;
	default:
		flen = 0;
		break;
	}
	if (err) {
		fprintf(stderr, "guestgen: encoding the first frame: %s\n", strerror(-err));
		free(buf);
		return 1;
	}
	len += flen;
	switch (o->mode) {
	case MODE_GARBAGE:
		memset(buf + len, 0xff, 4096);
		len += 4096;
		break;
	case MODE_OVERSIZED:
		/* 64 MiB, big-endian; the 1 KiB of zeros after it are already there (calloc). */
		buf[len] = 0x04;
		len += 4 + 1024;
		break;
	case MODE_TRUNCATED:
		buf[len + 2] = 1000 >> 8;
		buf[len + 3] = 1000 & 0xff;
		len += 4 + 10;
		break;
	case MODE_UNKNOWN_MESSAGE:
		memcpy(buf + len, unknown, sizeof(unknown));
		len += sizeof(unknown);
		break;
	default:
		break;
	}

	deadline = now_ns() + linger;
	err = send_all(c, buf, len, deadline, reads);
	free(buf);
	if (!err && o->mode == MODE_SILENT_READER)
		err = send_silently(c, g, o, deadline);
	if (!err && o->mode == MODE_TRUNCATED && shutdown(c->fd, SHUT_WR) < 0)
		err = -errno;
	if (err && err != -EPIPE && err != -ETIMEDOUT)
		fprintf(stderr, "guestgen: %s\n", strerror(-err));
	if (o->mode != MODE_SILENT_READER)
		deadline = now_ns() + linger;
	while (!c->closed && !conn_wait(c, reads ? POLLIN : 0, deadline, reads))
		;
	if (reads && c->closed) {
		conn_drain(c);
	} else if (!reads && !ioctl(c->fd, FIONREAD, &avail) && avail > 0) {
		c->host_bytes = avail;
	}
	printf("{\"mode\": \"%s\", \"closed_by_host\": %s, \"host_bytes\": %llu}\n", mode_names[o->mode],
	       c->closed ? "true" : "false", (unsigned long long)c->host_bytes);
	return c->closed ? 0 : 1;
}

static void usage(FILE *f, const char *argv0)
{
	fprintf(f,
		"usage: %s ADDR MODE [--records N] [--batch B] [--pid P] [--rate R] [--linger S]\n"
		"  ADDR  unix:PATH or tcp:HOST:PORT\n"
		"  MODE  stream, or a hostile one: no-preamble, garbage, oversized, truncated,\n"
		"        wrong-version, not-hello, unknown-message, silent-reader\n"
		"  --records N  records to send (default 1000000; silent-reader: until the end)\n"
		"  --batch B    records per batch (default 128, at most %u)\n"
		"  --pid P      pid and tid of the records (default ours)\n"
		"  --rate R     records/s (default 0: as fast as possible)\n"
		"  --linger S   seconds to wait for the host (default 10 for stream, 5 otherwise)\n",
		argv0, IOT_BATCH_RECORDS_LIMIT);
}

static int parse_double(const char *s, double *ret)
{
	char *end;
	double v;

	if (!*s)
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || !isfinite(v) || v < 0)
		return -EINVAL;
	*ret = v;
	return 0;
}

/* 0, or 2 after telling what is wrong. */
static int parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{ "records", required_argument, NULL, 'n' },
		{ "batch", required_argument, NULL, 'b' },
		{ "pid", required_argument, NULL, 'p' },
		{ "rate", required_argument, NULL, 'r' },
		{ "linger", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	char err[300];
	bool linger_set = false, records_set = false;
	uint64_t v;
	int c, m;

	o->records = 1000000;
	o->batch = 128;
	o->pid = getpid();
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			if (iot_parse_u64(optarg, 0, UINT64_MAX / 8, &o->records))
				goto bad_value;
			records_set = true;
			break;
		case 'b':
			if (iot_parse_u64(optarg, 0, IOT_BATCH_RECORDS_LIMIT, &v) || !v)
				goto bad_value;
			o->batch = v;
			break;
		case 'p':
			if (iot_parse_u64(optarg, 0, UINT32_MAX, &v))
				goto bad_value;
			o->pid = v;
			break;
		case 'r':
			if (parse_double(optarg, &o->rate))
				goto bad_value;
			break;
		case 'l':
			if (parse_double(optarg, &o->linger))
				goto bad_value;
			linger_set = true;
			break;
		case 'h':
			usage(stdout, argv[0]);
			exit(0);
		default:
			usage(stderr, argv[0]);
			return 2;
		}
	}
	if (argc - optind != 2) {
		usage(stderr, argv[0]);
		return 2;
	}
	if (iot_addr_parse(argv[optind], &o->addr, err, sizeof(err))) {
		fprintf(stderr, "guestgen: %s\n", err);
		return 2;
	}
	if (o->addr.kind != IOT_ADDR_UNIX && o->addr.kind != IOT_ADDR_TCP) {
		fprintf(stderr, "guestgen: '%s': only unix:PATH and tcp:HOST:PORT are supported\n", argv[optind]);
		return 2;
	}
	iot_addr_format(&o->addr, o->addr_text, sizeof(o->addr_text));
	for (m = 0; m < MODE_MAX && strcmp(argv[optind + 1], mode_names[m]); m++)
		;
	if (m == MODE_MAX) {
		fprintf(stderr, "guestgen: unknown mode '%s'\n", argv[optind + 1]);
		usage(stderr, argv[0]);
		return 2;
	}
	o->mode = m;
	if (!linger_set)
		o->linger = o->mode == MODE_STREAM ? 10 : 5;
	/* Unbounded, so that only the host or the time ends it: small replies take long to pile up. */
	if (o->mode == MODE_SILENT_READER && !records_set)
		o->records = RECORDS_UNBOUNDED;
	return 0;

bad_value:
	fprintf(stderr, "guestgen: bad value '%s' for --%s\n", optarg,
		c == 'n' ? "records" : c == 'b' ? "batch" : c == 'p' ? "pid" : c == 'r' ? "rate" : "linger");
	return 2;
}

int main(int argc, char **argv)
{
	struct opts o = {};
	struct conn c = {};
	struct gen *g;
	char err[300];
	size_t len;
	int r;

	r = parse_args(argc, argv, &o);
	if (r)
		return r;
	g = gen_new(o.batch, o.pid);
	if (!g) {
		fprintf(stderr, "guestgen: %s\n", strerror(errno));
		return 1;
	}
	if (gen_check(g)) {
		fprintf(stderr, "guestgen: internal error: the records would not pass record_from_pb()\n");
		gen_free(g);
		return 1;
	}
	/* The largest batch we will send (the last records have the longest varints) must fit a frame. */
	if (gen_batch(g, o.records > o.batch ? o.records - o.batch : 0, o.batch, UINT64_MAX, &len)) {
		fprintf(stderr, "guestgen: a batch of %zu records does not fit in a %u-byte frame; use a smaller --batch\n",
			o.batch, IOT_FRAME_MAX_DEFAULT);
		gen_free(g);
		return 2;
	}

	c.strict = o.mode == MODE_STREAM;
	r = frame_decoder__init(&c.dec, IOT_FRAME_MAX_DEFAULT);
	if (r) {
		fprintf(stderr, "guestgen: frame_decoder__init: %s\n", strerror(-r));
		gen_free(g);
		return 1;
	}
	c.fd = connect_addr(&o.addr, o.mode == MODE_SILENT_READER ? SILENT_RCVBUF : 0, err, sizeof(err));
	if (c.fd < 0) {
		fprintf(stderr, "guestgen: cannot connect to %s: %s\n", o.addr_text, err);
		frame_decoder__fini(&c.dec);
		gen_free(g);
		return 2;
	}
	if (fcntl(c.fd, F_SETFL, fcntl(c.fd, F_GETFL) | O_NONBLOCK) < 0) {
		fprintf(stderr, "guestgen: fcntl: %s\n", strerror(errno));
		r = 1;
	} else {
		g->base_ns = now_ns();
		r = o.mode == MODE_STREAM ? run_stream(&c, g, &o) : run_hostile(&c, g, &o);
	}
	close(c.fd);
	frame_decoder__fini(&c.dec);
	gen_free(g);
	return r;
}
