// SPDX-License-Identifier: GPL-2.0
/*
 * The guest agent: every record the tracer reads goes into a batch; sealed
 * batches wait in a bounded queue until the host acknowledges them, and are
 * sent again after a reconnection. One thread, one poll loop: the kernel's
 * ring buffer and the connection. The guest's own I/O never waits on the
 * host: a slow or absent host fills the queue, and what does not fit is
 * counted as lost on the wire.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/utsname.h>
#include "channel.h"
#include "clocksync.h"
#include "disks.h"
#include "guest.h"
#include "output.h"

/*
 * A batch is sealed at this size or this age, whichever comes first. Each
 * batch costs the host agent a wakeup, a read and an acknowledgement: 32
 * KiB holds about 200 records (161 bytes each), 60 batches a second at
 * 12,000 requests/s where 5 ms made 200.
 */
#define BATCH_SEAL_BYTES (32u << 10)
#define BATCH_SEAL_NS (20ull * 1000000)
#define BATCH_MAX_BYTES (64u << 10)
#define BATCH_MAX_RECORDS 1024u
#define BACKOFF_MIN_MS 100u
#define BACKOFF_MAX_MS 5000u
#define CONNECT_TIMEOUT_NS (5ull * 1000000000)
#define PROBE_FAST_NS (20ull * 1000000)
#define PROBE_FAST_COUNT 10u
#define PROBE_SLOW_NS (500ull * 1000000)
#define STATS_NS (1000ull * 1000000)
#define LINGER_NS (2000ull * 1000000)
/* The host's replies are small; a host whose Hello allows less is refused. */
#define PEER_MIN_FRAME (64u << 10)
#define CTL_LIMIT (256u << 10)

/* A sealed batch, encoded, waiting for its acknowledgement. */
struct qframe {
	struct qframe *next;
	uint64_t seq;
	uint32_t nrec;
	uint32_t len;
	size_t cost;		/* bytes it holds of the queue's bound */
	uint8_t data[];
};

enum link_state { LINK_DOWN, LINK_CONNECTING, LINK_HELLO, LINK_READY };

struct guest {
	struct guest_opts o;
	char addr_name[300];
	bool serial;
	struct tracer *t;

	struct frame_batch *batch;
	uint64_t batch_first_ns;
	uint64_t next_seq;

	/* The queue: head..send sent and unacknowledged, send.. not yet sent. */
	struct qframe *head, *tail, *send;
	size_t send_off;
	bool sending;		/* inside send's bytes: nothing else may be written */
	size_t qbytes;

	struct chan_tx ctl;	/* preamble, hello, probes, stats, goodbye: whole frames */
	uint8_t *hello;		/* preamble + our Hello frame, built once */
	size_t hello_len;

	int fd;
	enum link_state st;
	struct chan_rx rx;
	bool rx_live;
	uint64_t conn_start_ns, next_try_ns, backoff_ms, rx_ns;
	bool ever_ready, down_logged;
	char down_reason[200];

	struct clocksync cs;
	uint64_t probe_id, next_probe_ns, next_stats_ns;
	unsigned int probes;

	uint64_t traced, sent, acked, lost_wire, reconnects;
};

static void logf_(struct guest *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(struct guest *g, const char *fmt, ...)
{
	va_list ap;

	fputs("iotracer: guest: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void link_event(struct guest *g, const char *event, const char *reason)
{
	if (!g->o.json)
		return;
	fprintf(g->o.out, "{\"type\":\"link\",\"event\":\"%s\",\"addr\":\"%s\"", event, g->addr_name);
	if (reason) {
		char esc[512];

		json_escape(reason, strlen(reason), esc, sizeof(esc));
		fprintf(g->o.out, ",\"reason\":\"%s\"", esc);
	}
	fputs("}\n", g->o.out);
	fflush(g->o.out);
}

static void read_attr(const char *disk, const char *attr, char *buf, size_t len)
{
	char path[256];
	FILE *f;

	buf[0] = 0;
	snprintf(path, sizeof(path), "/sys/block/%s/%s", disk, attr);
	f = fopen(path, "re");
	if (!f)
		return;
	if (fgets(buf, len, f))
		buf[strcspn(buf, "\n")] = 0;
	fclose(f);
}

static uint32_t count_queues(const char *disk)
{
	char path[256];
	struct dirent *de;
	uint32_t n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/sys/block/%s/mq", disk);
	d = opendir(path);
	if (!d)
		return 0;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Our Hello, preceded by the preamble: built once, sent on every connection. */
static int build_hello(struct guest *g)
{
	Iotracer__Hello h = IOTRACER__HELLO__INIT;
	static struct disk_set ds;
	Iotracer__Disk disks[DISKS_MAX], *dp[DISKS_MAX];
	char serial[DISKS_MAX][64], machine_id[64] = "", size[32];
	struct utsname u;
	uint64_t session = 0;
	FILE *mf;

	uname(&u);
	mf = fopen("/etc/machine-id", "re");
	if (mf) {
		if (fgets(machine_id, sizeof(machine_id), mf))
			machine_id[strcspn(machine_id, "\n")] = 0;
		fclose(mf);
	}
	if (getrandom(&session, sizeof(session), 0) != sizeof(session))
		session = chan_now_ns() ^ ((uint64_t)getpid() << 32);
	h.protocol_version = IOT_PROTO_VERSION;
	h.hostname = u.nodename;
	h.kernel = u.release;
	h.machine_id = machine_id;
	h.max_frame_bytes = IOT_FRAME_MAX_DEFAULT;
	h.session = session;
	if (disks_scan(&ds))
		ds.n = 0;
	for (int i = 0; i < ds.n; i++) {
		iotracer__disk__init(&disks[i]);
		read_attr(ds.d[i].name, "serial", serial[i], sizeof(serial[i]));
		if (!serial[i][0])
			read_attr(ds.d[i].name, "device/serial", serial[i], sizeof(serial[i]));
		read_attr(ds.d[i].name, "size", size, sizeof(size));
		disks[i].name = ds.d[i].name;
		disks[i].serial = serial[i];
		disks[i].capacity_bytes = strtoull(size, NULL, 10) * 512;
		disks[i].queues = count_queues(ds.d[i].name);
		disks[i].dev = ds.d[i].kdev;
		dp[i] = &disks[i];
	}
	h.n_disks = ds.n;
	h.disks = dp;
	return chan_hello_bytes(&h, &g->hello, &g->hello_len);
}

struct guest *guest_new(const struct guest_opts *o, char *err, size_t errlen)
{
	struct guest *g = calloc(1, sizeof(*g));
	int r;

	if (!g) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	g->o = *o;
	g->fd = -1;
	g->next_seq = 1;
	g->backoff_ms = BACKOFF_MIN_MS;
	g->serial = o->addr.kind == IOT_ADDR_SERIAL;
	iot_addr_format(&o->addr, g->addr_name, sizeof(g->addr_name));
	clocksync_init(&g->cs);
	chan_tx_init(&g->ctl, CTL_LIMIT);
	g->batch = frame_batch__new(BATCH_MAX_RECORDS, BATCH_MAX_BYTES);
	r = g->batch ? build_hello(g) : -ENOMEM;
	if (r) {
		snprintf(err, errlen, "cannot prepare the guest agent: %s", strerror(-r));
		guest_free(g);
		return NULL;
	}
	if (g->serial) {
		bool in_progress;

		/* The port exists for the life of the VM: a missing one is a configuration error. */
		g->fd = chan_connect(&o->addr, &in_progress, err, errlen);
		if (g->fd < 0) {
			guest_free(g);
			return NULL;
		}
	}
	return g;
}

void guest_free(struct guest *g)
{
	struct qframe *q, *n;

	if (!g)
		return;
	for (q = g->head; q; q = n) {
		n = q->next;
		free(q);
	}
	if (g->fd >= 0)
		close(g->fd);
	if (g->rx_live)
		chan_rx_fini(&g->rx);
	chan_tx_fini(&g->ctl);
	frame_batch__free(g->batch);
	free(g->hello);
	free(g);
}

static void seal(struct guest *g)
{
	Iotracer__ClockSync cs = IOTRACER__CLOCK_SYNC__INIT;
	struct clock_estimate est;
	size_t n = frame_batch__count(g->batch), bound, len;
	struct qframe *q;
	int r;

	if (!n)
		return;
	if (!clocksync_estimate(&g->cs, chan_now_ns(), &est)) {
		cs.offset_ns = est.offset_ns;
		cs.uncertainty_ns = est.uncertainty_ns;
		cs.drift_ppm = est.drift_ppm;
		cs.ref_guest_ns = est.ref_guest_ns;
		cs.samples = est.samples;
	}
	bound = frame_batch__bytes(g->batch);
	q = g->qbytes + bound <= g->o.queue_bytes ? malloc(sizeof(*q) + bound) : NULL;
	r = q ? frame_batch__encode(g->batch, g->next_seq, cs.samples ? &cs : NULL, q->data, bound, &len)
	      : -ENOBUFS;
	if (r) {
		/* The queue is full (a slow or absent host): this batch is dropped, and said so. */
		free(q);
		g->lost_wire += n;
		frame_batch__reset(g->batch);
		return;
	}
	q->next = NULL;
	q->seq = g->next_seq++;
	q->nrec = n;
	q->len = len;
	q->cost = sizeof(*q) + bound;
	if (g->tail)
		g->tail->next = q;
	else
		g->head = q;
	g->tail = q;
	if (!g->send)
		g->send = q;
	g->qbytes += q->cost;
	g->sent += n;
	frame_batch__reset(g->batch);
}

void guest_on_record(void *ctx, const struct iot_record *r)
{
	struct guest *g = ctx;
	int e;

	g->traced++;
	if (!frame_batch__count(g->batch))
		g->batch_first_ns = chan_now_ns();
	e = frame_batch__add(g->batch, r);
	if (e == -ENOSPC) {
		seal(g);
		g->batch_first_ns = chan_now_ns();
		e = frame_batch__add(g->batch, r);
	}
	if (e) {
		/* A record our own encoder cannot carry: counted, not hidden. */
		g->lost_wire++;
		return;
	}
	if (frame_batch__bytes(g->batch) >= BATCH_SEAL_BYTES)
		seal(g);
}

static void put_frame(struct guest *g, Iotracer__Frame *f)
{
	/* Control frames are small and few; a full buffer means the link is stuck and will be reset. */
	chan_tx_frame(&g->ctl, f);
}

static void send_probe(struct guest *g)
{
	Iotracer__Frame f = IOTRACER__FRAME__INIT;
	Iotracer__ClockProbe p = IOTRACER__CLOCK_PROBE__INIT;

	p.id = ++g->probe_id;
	f.msg_case = IOTRACER__FRAME__MSG_CLOCK_PROBE;
	f.clock_probe = &p;
	/* Stamped as late as possible: after everything queued before it is out, ideally. */
	p.guest_send_ns = chan_now_ns();
	put_frame(g, &f);
	g->probes++;
}

static uint64_t lost_kernel(struct guest *g)
{
	uint64_t c[IOT_CNT_MAX] = {};

	if (g->t)
		tracer__counters(g->t, c);
	return c[IOT_CNT_LOST];
}

static void send_stats(struct guest *g)
{
	Iotracer__Frame f = IOTRACER__FRAME__INIT;
	Iotracer__Stats s = IOTRACER__STATS__INIT;

	s.records_traced = g->traced;
	s.records_sent = g->sent;
	s.records_acked = g->acked;
	s.lost_kernel = lost_kernel(g);
	s.lost_wire = g->lost_wire;
	s.reconnects = g->reconnects;
	f.msg_case = IOTRACER__FRAME__MSG_STATS;
	f.stats = &s;
	put_frame(g, &f);
}

static void send_goodbye(struct guest *g, const char *reason)
{
	Iotracer__Frame f = IOTRACER__FRAME__INIT;
	Iotracer__Goodbye b = IOTRACER__GOODBYE__INIT;

	b.reason = (char *)reason;
	f.msg_case = IOTRACER__FRAME__MSG_GOODBYE;
	f.goodbye = &b;
	put_frame(g, &f);
}

static void link_down(struct guest *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void link_down(struct guest *g, const char *fmt, ...)
{
	char reason[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (g->st >= LINK_HELLO)
		logf_(g, "connection to %s ended: %s; reconnecting", g->addr_name, reason);
	else if (!g->down_logged || strcmp(reason, g->down_reason))
		logf_(g, "cannot reach the host at %s: %s; retrying with backoff", g->addr_name, reason);
	g->down_logged = true;
	snprintf(g->down_reason, sizeof(g->down_reason), "%s", reason);
	if (g->st >= LINK_HELLO)
		link_event(g, "disconnected", reason);
	if (!g->serial && g->fd >= 0) {
		close(g->fd);
		g->fd = -1;
	}
	if (g->rx_live) {
		chan_rx_fini(&g->rx);
		g->rx_live = false;
	}
	chan_tx_clear(&g->ctl);
	/* Everything not acknowledged goes again, from the start of a frame. */
	g->send = g->head;
	g->send_off = 0;
	g->sending = false;
	g->st = LINK_DOWN;
	g->next_try_ns = chan_now_ns() + g->backoff_ms * 1000000ull;
	g->backoff_ms = g->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : g->backoff_ms * 2;
}

static void start_session(struct guest *g)
{
	chan_rx_init(&g->rx, IOT_FRAME_MAX_DEFAULT, g->serial);
	g->rx_live = true;
	chan_tx_clear(&g->ctl);
	chan_tx_put(&g->ctl, g->hello, g->hello_len);
	g->st = LINK_HELLO;
	g->conn_start_ns = chan_now_ns();
}

static void try_connect(struct guest *g)
{
	char err[400];
	bool in_progress;

	if (g->serial) {
		struct pollfd p = { .fd = g->fd, .events = POLLOUT };

		/* A virtio-serial port reports POLLHUP while no host has the other end open. */
		if (poll(&p, 1, 0) < 0 || (p.revents & (POLLHUP | POLLERR))) {
			char junk[4096];

			/* Bytes of an earlier host connection are of no use to the next. */
			while (read(g->fd, junk, sizeof(junk)) > 0)
				;
			if (!g->down_logged) {
				logf_(g, "waiting for the host on %s", g->addr_name);
				g->down_logged = true;
				snprintf(g->down_reason, sizeof(g->down_reason), "no host on the port");
			}
			g->next_try_ns = chan_now_ns() + g->backoff_ms * 1000000ull;
			g->backoff_ms = g->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : g->backoff_ms * 2;
			return;
		}
		start_session(g);
		return;
	}
	g->fd = chan_connect(&g->o.addr, &in_progress, err, sizeof(err));
	if (g->fd < 0) {
		link_down(g, "%s", err);
		return;
	}
	if (in_progress) {
		g->st = LINK_CONNECTING;
		g->conn_start_ns = chan_now_ns();
		return;
	}
	start_session(g);
}

static void pop_acked(struct guest *g, uint64_t seq)
{
	while (g->head && g->head != g->send && g->head->seq <= seq) {
		struct qframe *q = g->head;

		g->head = q->next;
		if (!g->head)
			g->tail = NULL;
		g->acked += q->nrec;
		g->qbytes -= q->cost;
		free(q);
	}
}

static int on_frame(void *ctx, const Iotracer__Frame *f)
{
	struct guest *g = ctx;
	char err[200];
	int r;

	if (g->st == LINK_HELLO) {
		r = frame_check_hello(f, err, sizeof(err));
		if (r)
			return frame_decoder__fail(&g->rx.dec, r, "host: %s", err);
		if (f->hello->max_frame_bytes && f->hello->max_frame_bytes < PEER_MIN_FRAME)
			return frame_decoder__fail(&g->rx.dec, -EPROTO, "host accepts frames of only %u bytes",
						   f->hello->max_frame_bytes);
		if (g->ever_ready)
			g->reconnects++;
		g->ever_ready = true;
		g->down_logged = false;
		g->st = LINK_READY;
		g->probes = 0;
		g->next_probe_ns = 0;
		g->next_stats_ns = chan_now_ns() + STATS_NS;
		logf_(g, "connected to the host at %s (%s)", g->addr_name, f->hello->hostname);
		link_event(g, "ready", NULL);
		return 0;
	}
	switch (f->msg_case) {
	case IOTRACER__FRAME__MSG_ACK:
		pop_acked(g, f->ack->seq);
		/* The host takes our data: the next outage starts with a short wait again. */
		g->backoff_ms = BACKOFF_MIN_MS;
		return 0;
	case IOTRACER__FRAME__MSG_CLOCK_REPLY: {
		struct clock_sample s = {
			.t1 = f->clock_reply->guest_send_ns,
			.t2 = f->clock_reply->host_recv_ns,
			.t3 = f->clock_reply->host_send_ns,
			.t4 = g->rx_ns,
		};

		/* An impossible sample (a reply to nothing we sent) is ignored by clocksync. */
		if (s.t1 <= s.t4)
			clocksync_add(&g->cs, &s);
		return 0;
	}
	case IOTRACER__FRAME__MSG_GOODBYE:
		return frame_decoder__fail(&g->rx.dec, -ECONNRESET, "the host said goodbye: %s",
					   f->goodbye->reason);
	default:
		return frame_decoder__fail(&g->rx.dec, -EPROTO, "unexpected %s frame from the host",
					   frame_msg_name(f->msg_case));
	}
}

/* Reads what the host sent. 0, or -1 when the link went down. */
static int do_read(struct guest *g)
{
	uint8_t buf[16384];

	for (;;) {
		ssize_t n = read(g->fd, buf, sizeof(buf));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 0;
			link_down(g, "read: %s", strerror(errno));
			return -1;
		}
		if (n == 0) {
			link_down(g, g->serial ? "the host closed the port" : "the host closed the connection");
			return -1;
		}
		g->rx_ns = chan_now_ns();
		if (chan_rx_feed(&g->rx, buf, n, on_frame, g)) {
			link_down(g, "%s", chan_rx_error(&g->rx));
			return -1;
		}
		if (g->st == LINK_DOWN)
			return -1;
	}
}

/* Writes what the link takes: control frames and batches, never interleaved within a frame. */
static int do_write(struct guest *g)
{
	for (;;) {
		if (g->sending) {
			struct qframe *q = g->send;
			ssize_t n = write(g->fd, q->data + g->send_off, q->len - g->send_off);

			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN)
					return 0;
				link_down(g, "write: %s", strerror(errno));
				return -1;
			}
			g->send_off += n;
			if (g->send_off < q->len)
				continue;
			g->send = q->next;
			g->send_off = 0;
			g->sending = false;
		} else if (chan_tx_pending(&g->ctl)) {
			int r = chan_tx_flush(&g->ctl, g->fd);

			if (r) {
				link_down(g, "write: %s", strerror(-r));
				return -1;
			}
			if (chan_tx_pending(&g->ctl))
				return 0;
		} else if (g->st == LINK_READY && g->send) {
			g->sending = true;
		} else {
			return 0;
		}
	}
}

static bool want_write(const struct guest *g)
{
	return g->sending || chan_tx_pending(&g->ctl) || (g->st == LINK_READY && g->send);
}

static void timers(struct guest *g, uint64_t now)
{
	if (frame_batch__count(g->batch) && now - g->batch_first_ns >= BATCH_SEAL_NS)
		seal(g);
	if (g->st == LINK_CONNECTING && now - g->conn_start_ns > CONNECT_TIMEOUT_NS)
		link_down(g, "connect timed out");
	if (g->st == LINK_DOWN && now >= g->next_try_ns)
		try_connect(g);
	if (g->st == LINK_READY && now >= g->next_probe_ns) {
		send_probe(g);
		g->next_probe_ns = now + (g->probes < PROBE_FAST_COUNT ? PROBE_FAST_NS : PROBE_SLOW_NS);
	}
	if (g->st == LINK_READY && now >= g->next_stats_ns) {
		send_stats(g);
		g->next_stats_ns = now + STATS_NS;
	}
}

/* One round of the loop: wait at most timeout_ms, then serve the ring buffer and the link. */
static void step(struct guest *g, int timeout_ms)
{
	struct pollfd p[2] = { { .fd = tracer__fd(g->t), .events = POLLIN }, { .fd = -1 } };
	uint64_t now;

	if (g->st != LINK_DOWN) {
		p[1].fd = g->fd;
		p[1].events = g->st == LINK_CONNECTING ? POLLOUT : POLLIN | (want_write(g) ? POLLOUT : 0);
	}
	if (poll(p, 2, timeout_ms) < 0)
		p[0].revents = p[1].revents = 0;
	/* The kernel wakes us only for a batch of records; a quiet system's are taken every round. */
	tracer__flush(g->t);
	if (p[1].fd >= 0 && p[1].revents) {
		if (g->st == LINK_CONNECTING) {
			int r = chan_connect_result(g->fd);

			if (r)
				link_down(g, "%s", strerror(-r));
			else
				start_session(g);
		} else if (g->serial && (p[1].revents & POLLHUP) && !(p[1].revents & POLLIN)) {
			link_down(g, "the host closed the port");
		} else {
			if (p[1].revents & (POLLIN | POLLHUP | POLLERR))
				do_read(g);
		}
	}
	now = chan_now_ns();
	timers(g, now);
	if (g->st >= LINK_HELLO && want_write(g))
		do_write(g);
}

static uint64_t queued_records(const struct guest *g)
{
	uint64_t n = 0;

	for (const struct qframe *q = g->head; q; q = q->next)
		n += q->nrec;
	return n;
}

int guest_run(struct guest *g, struct tracer *t)
{
	uint64_t start = chan_now_ns(), end, unacked, lk;

	g->t = t;
	logf_(g, "streaming to %s", g->addr_name);
	link_event(g, "connecting", NULL);
	try_connect(g);
	while (!*g->o.stop) {
		if (g->o.duration_s && chan_now_ns() - start >= (uint64_t)(g->o.duration_s * 1e9))
			break;
		step(g, 20);
	}
	/* Drain the kernel, seal the last batch, and give the host a moment to take it all. */
	tracer__flush(t);
	seal(g);
	end = chan_now_ns() + LINGER_NS;
	if (g->st == LINK_READY)
		send_stats(g);
	while (g->st == LINK_READY && g->head && chan_now_ns() < end)
		step(g, 20);
	if (g->st == LINK_READY) {
		send_stats(g);
		send_goodbye(g, *g->o.stop ? "interrupted" : "duration reached");
		while (g->st == LINK_READY && chan_tx_pending(&g->ctl) && chan_now_ns() < end)
			step(g, 20);
	}
	unacked = queued_records(g);
	lk = lost_kernel(g);
	logf_(g, "%" PRIu64 " records traced, %" PRIu64 " sent, %" PRIu64 " acknowledged by the host; lost: %"
	      PRIu64 " in the kernel, %" PRIu64 " on the wire (queue full), %" PRIu64 " never acknowledged; %"
	      PRIu64 " reconnections", g->traced, g->sent, g->acked, lk, g->lost_wire, unacked, g->reconnects);
	if (g->o.json) {
		fprintf(g->o.out, "{\"type\":\"guest_stats\",\"records_traced\":%" PRIu64 ",\"records_sent\":%" PRIu64
			",\"records_acked\":%" PRIu64 ",\"lost_kernel\":%" PRIu64 ",\"lost_wire\":%" PRIu64
			",\"unacked\":%" PRIu64 ",\"reconnects\":%" PRIu64 "}\n", g->traced, g->sent, g->acked, lk,
			g->lost_wire, unacked, g->reconnects);
		fflush(g->o.out);
	}
	return 0;
}
