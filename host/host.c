// SPDX-License-Identifier: GPL-2.0
/*
 * The host agent: listens (and, for virtio-serial ports, connects to the
 * unix sockets QEMU serves), accepts any number of guests, answers their
 * clock probes, acknowledges their batches and writes every record with its
 * times on this machine's clock. Each connection has its own decoder and a
 * bounded output; whatever one guest sends ends that guest's connection at
 * worst, with a line saying why.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include "channel.h"
#include "clocksync.h"
#include "disks.h"
#include "host.h"

/* A guest that lets this much of our replies pile up does not read them. */
#define CONN_TX_LIMIT (64u << 10)
#define SESSIONS_MAX 1024
#define SERIAL_BACKOFF_MIN_MS 100u
#define SERIAL_BACKOFF_MAX_MS 2000u
/* Close after the guest's goodbye, or when we leave, once our replies are out or after this. */
#define CLOSE_LINGER_NS (500ull * 1000000)

/* Per guest session: the newest batch seen, so that batches resent after a reconnection count once. */
struct session {
	char id[160];
	uint64_t session;
	uint64_t last_seq;
	uint64_t used;		/* for replacement: the oldest goes first */
};

struct endpoint {
	struct iot_addr addr;
	char name[300];
	int lfd;			/* listening socket, or -1 for a serial endpoint */
	struct conn *serial_conn;	/* serial: the one connection to QEMU's socket */
	uint64_t next_try_ns, backoff_ms;
	char last_err[400];
};

struct conn {
	struct conn *next;
	struct endpoint *ep;
	int fd;
	char id[160];
	struct chan_rx rx;
	struct chan_tx tx;
	bool hello;
	bool closing;			/* flush tx, then close */
	uint64_t close_by_ns;
	char close_reason[200];
	struct session *sess;
	struct clock_estimate est;
	bool have_est;
	uint64_t rx_ns;
	uint64_t frames, batches, records, dups, invalid, unsynced;
};

struct host {
	const struct host_opts *o;
	struct endpoint ep[HOST_LISTEN_MAX];
	struct conn *conns;
	struct session sessions[SESSIONS_MAX];
	uint64_t session_clock;
	uint8_t *hello;			/* preamble + our Hello */
	size_t hello_len;
	uint64_t guests, records, dups, invalid, unsynced, refused;
};

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
	va_list ap;

	fputs("iotracer: host: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void jstr(FILE *f, const char *key, const char *v)
{
	char esc[1024];

	json_escape(v ? v : "", v ? strlen(v) : 0, esc, sizeof(esc));
	fprintf(f, ",\"%s\":\"%s\"", key, esc);
}

/* {"type":"guest","event":E,"guest":ID  -- the caller closes the object. */
static FILE *event_open(struct host *h, const struct conn *c, const char *event)
{
	FILE *f = h->o->of;

	fprintf(f, "{\"type\":\"guest\",\"event\":\"%s\"", event);
	jstr(f, "guest", c->id);
	return f;
}

static void event_close(FILE *f)
{
	fputs("}\n", f);
	fflush(f);
}

static int build_hello(struct host *h)
{
	Iotracer__Frame f = IOTRACER__FRAME__INIT;
	Iotracer__Hello m = IOTRACER__HELLO__INIT;
	struct utsname u;
	size_t n;
	int r;

	uname(&u);
	m.protocol_version = IOT_PROTO_VERSION;
	m.hostname = u.nodename;
	m.kernel = u.release;
	m.max_frame_bytes = IOT_FRAME_MAX_DEFAULT;
	f.msg_case = IOTRACER__FRAME__MSG_HELLO;
	f.hello = &m;
	n = IOT_CHAN_MAGIC_LEN + IOT_FRAME_HDR + iotracer__frame__get_packed_size(&f);
	h->hello = malloc(n);
	if (!h->hello)
		return -ENOMEM;
	memcpy(h->hello, IOT_CHAN_MAGIC, IOT_CHAN_MAGIC_LEN);
	r = frame_encode(&f, h->hello + IOT_CHAN_MAGIC_LEN, n - IOT_CHAN_MAGIC_LEN, &n);
	h->hello_len = n + IOT_CHAN_MAGIC_LEN;
	return r;
}

static struct conn *conn_new(struct host *h, struct endpoint *ep, int fd, const char *id)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c) {
		logf_("out of memory accepting a guest: refused");
		close(fd);
		return NULL;
	}
	c->fd = fd;
	c->ep = ep;
	snprintf(c->id, sizeof(c->id), "%s", id);
	chan_rx_init(&c->rx, IOT_FRAME_MAX_DEFAULT, ep->addr.kind == IOT_ADDR_SERIAL);
	chan_tx_init(&c->tx, CONN_TX_LIMIT);
	chan_tx_put(&c->tx, h->hello, h->hello_len);
	c->next = h->conns;
	h->conns = c;
	h->guests++;
	logf_("guest %s connected on %s", c->id, ep->name);
	if (h->o->json) {
		FILE *f = event_open(h, c, "connected");

		jstr(f, "addr", ep->name);
		event_close(f);
	}
	return c;
}

static void conn_free(struct host *h, struct conn *c)
{
	struct conn **pp;

	for (pp = &h->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	if (c->ep->serial_conn == c) {
		c->ep->serial_conn = NULL;
		c->ep->next_try_ns = chan_now_ns() + c->ep->backoff_ms * 1000000ull;
	}
	close(c->fd);
	chan_rx_fini(&c->rx);
	chan_tx_fini(&c->tx);
	free(c);
}

/* Ends a connection now, saying why, with what it brought. */
static void conn_end(struct host *h, struct conn *c, const char *reason)
{
	logf_("guest %s: connection ended: %s (%" PRIu64 " records, %" PRIu64 " resent duplicates, %" PRIu64
	      " invalid)", c->id, reason, c->records, c->dups, c->invalid);
	if (h->o->json) {
		FILE *f = event_open(h, c, "closed");

		jstr(f, "reason", reason);
		fprintf(f, ",\"frames\":%" PRIu64 ",\"records\":%" PRIu64 ",\"duplicates\":%" PRIu64
			",\"invalid\":%" PRIu64 ",\"unsynced\":%" PRIu64, c->frames, c->records, c->dups,
			c->invalid, c->unsynced);
		event_close(f);
	}
	conn_free(h, c);
}

static struct session *session_get(struct host *h, const char *id, uint64_t session)
{
	struct session *oldest = &h->sessions[0];

	for (int i = 0; i < SESSIONS_MAX; i++) {
		struct session *s = &h->sessions[i];

		if (s->used && s->session == session && !strcmp(s->id, id)) {
			s->used = ++h->session_clock;
			return s;
		}
		if (s->used < oldest->used)
			oldest = s;
	}
	memset(oldest, 0, sizeof(*oldest));
	snprintf(oldest->id, sizeof(oldest->id), "%s", id);
	oldest->session = session;
	oldest->used = ++h->session_clock;
	return oldest;
}

static int reply(struct conn *c, Iotracer__Frame *f)
{
	int r = chan_tx_frame(&c->tx, f);

	if (r == -ENOBUFS)
		return frame_decoder__fail(&c->rx.dec, -ENOBUFS,
					   "the guest does not read the host's replies (%u bytes waiting)",
					   CONN_TX_LIMIT);
	return r ? frame_decoder__fail(&c->rx.dec, r, "cannot encode a reply: %s", strerror(-r)) : 0;
}

struct batch_ctx {
	struct host *h;
	struct conn *c;
};

static int on_record(void *ctx, const struct iot_record *r0)
{
	struct batch_ctx *b = ctx;
	struct iot_record r = *r0;

	if (b->c->have_est) {
		for (int i = 0; i < IOT_TS_MAX; i++)
			if (r.ts[i])
				r.ts[i] = clocksync_to_host(&b->c->est, r.ts[i]);
	} else {
		b->c->unsynced++;
		b->h->unsynced++;
	}
	output__record_src(b->h->o->out, &r, b->c->id, !b->c->have_est);
	b->c->records++;
	b->h->records++;
	return 0;
}

static void on_hello(struct host *h, struct conn *c, const Iotracer__Hello *m)
{
	FILE *f;

	c->hello = true;
	c->sess = session_get(h, c->id, m->session);
	logf_("guest %s: hello: claims hostname '%s', kernel %s, %zu disks", c->id, m->hostname, m->kernel,
	      m->n_disks);
	if (!h->o->json)
		return;
	f = event_open(h, c, "hello");
	jstr(f, "hostname", m->hostname);
	jstr(f, "machine_id", m->machine_id);
	jstr(f, "kernel", m->kernel);
	fprintf(f, ",\"session\":%" PRIu64 ",\"disks\":[", m->session);
	for (size_t i = 0; i < m->n_disks; i++) {
		const Iotracer__Disk *d = m->disks[i];
		char dev[32];

		format_kdev(d->dev, dev, sizeof(dev));
		fprintf(f, "%s{", i ? "," : "");
		fprintf(f, "\"dev\":\"%s\"", dev);
		jstr(f, "name", d->name);
		jstr(f, "serial", d->serial);
		fprintf(f, ",\"capacity_bytes\":%" PRIu64 ",\"queues\":%u}", d->capacity_bytes, d->queues);
	}
	fputc(']', f);
	event_close(f);
}

static void on_stats(struct host *h, struct conn *c, const Iotracer__Stats *s)
{
	FILE *f;

	if (!h->o->json)
		return;
	f = event_open(h, c, "stats");
	fprintf(f, ",\"records_traced\":%" PRIu64 ",\"records_sent\":%" PRIu64 ",\"records_acked\":%" PRIu64
		",\"lost_kernel\":%" PRIu64 ",\"lost_wire\":%" PRIu64 ",\"reconnects\":%" PRIu64
		",\"received\":%" PRIu64 ",\"duplicates\":%" PRIu64 ",\"invalid\":%" PRIu64,
		s->records_traced, s->records_sent, s->records_acked, s->lost_kernel, s->lost_wire,
		s->reconnects, c->records, c->dups, c->invalid);
	event_close(f);
	if (c->have_est) {
		f = event_open(h, c, "clock");
		fprintf(f, ",\"offset_ns\":%" PRId64 ",\"uncertainty_ns\":%" PRIu64 ",\"drift_ppm\":%.3f"
			",\"samples\":%u", c->est.offset_ns, c->est.uncertainty_ns, c->est.drift_ppm,
			c->est.samples);
		event_close(f);
	}
}

static int on_batch(struct host *h, struct conn *c, const Iotracer__RecordBatch *b)
{
	Iotracer__Frame f = IOTRACER__FRAME__INIT;
	Iotracer__Ack ack = IOTRACER__ACK__INIT;
	struct batch_ctx bc = { h, c };
	int bad;

	c->batches++;
	if (b->seq && b->seq <= c->sess->last_seq) {
		/* Sent again after a reconnection; we have it. */
		c->dups += b->n_records;
		h->dups += b->n_records;
	} else {
		if (b->clock && b->clock->samples) {
			c->est.offset_ns = b->clock->offset_ns;
			c->est.uncertainty_ns = b->clock->uncertainty_ns;
			c->est.drift_ppm = b->clock->drift_ppm;
			c->est.ref_guest_ns = b->clock->ref_guest_ns;
			c->est.samples = b->clock->samples;
			/* A drift beyond any real clock's is a lie or a bug: not applied. */
			if (c->est.drift_ppm > 1000 || c->est.drift_ppm < -1000 || c->est.drift_ppm != c->est.drift_ppm)
				c->est.drift_ppm = 0;
			c->have_est = true;
		}
		bad = frame_batch_foreach(b, on_record, &bc);
		if (bad > 0) {
			c->invalid += bad;
			h->invalid += bad;
		}
		if (b->seq)
			c->sess->last_seq = b->seq;
	}
	ack.seq = b->seq;
	f.msg_case = IOTRACER__FRAME__MSG_ACK;
	f.ack = &ack;
	return reply(c, &f);
}

struct frame_ctx {
	struct host *h;
	struct conn *c;
};

static int on_frame(void *ctx, const Iotracer__Frame *f)
{
	struct frame_ctx *fc = ctx;
	struct host *h = fc->h;
	struct conn *c = fc->c;
	char err[200];
	int r;

	c->frames++;
	if (!c->hello) {
		r = frame_check_hello(f, err, sizeof(err));
		if (r)
			return frame_decoder__fail(&c->rx.dec, r, "%s", err);
		on_hello(h, c, f->hello);
		return 0;
	}
	switch (f->msg_case) {
	case IOTRACER__FRAME__MSG_BATCH:
		return on_batch(h, c, f->batch);
	case IOTRACER__FRAME__MSG_CLOCK_PROBE: {
		Iotracer__Frame rf = IOTRACER__FRAME__INIT;
		Iotracer__ClockReply cr = IOTRACER__CLOCK_REPLY__INIT;

		cr.id = f->clock_probe->id;
		cr.guest_send_ns = f->clock_probe->guest_send_ns;
		cr.host_recv_ns = c->rx_ns;
		rf.msg_case = IOTRACER__FRAME__MSG_CLOCK_REPLY;
		rf.clock_reply = &cr;
		cr.host_send_ns = chan_now_ns();
		return reply(c, &rf);
	}
	case IOTRACER__FRAME__MSG_STATS:
		on_stats(h, c, f->stats);
		return 0;
	case IOTRACER__FRAME__MSG_GOODBYE:
		logf_("guest %s said goodbye: %s", c->id, f->goodbye->reason);
		if (h->o->json) {
			FILE *ef = event_open(h, c, "goodbye");

			jstr(ef, "reason", f->goodbye->reason);
			event_close(ef);
		}
		c->closing = true;
		c->close_by_ns = chan_now_ns() + CLOSE_LINGER_NS;
		snprintf(c->close_reason, sizeof(c->close_reason), "goodbye");
		return frame_decoder__fail(&c->rx.dec, -ESHUTDOWN, "goodbye");
	default:
		return frame_decoder__fail(&c->rx.dec, -EPROTO, "a %s frame is not for the host",
					   frame_msg_name(f->msg_case));
	}
}

/* Reads and handles what the guest sent; false when the connection was ended. */
static bool conn_read(struct host *h, struct conn *c)
{
	struct frame_ctx fc = { h, c };
	uint8_t buf[65536];
	char reason[300];

	/* Bounded per turn, so that one busy guest cannot starve the others. */
	for (int i = 0; i < 16 && !c->closing; i++) {
		ssize_t n = read(c->fd, buf, sizeof(buf));
		int r;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return true;
			snprintf(reason, sizeof(reason), "read: %s", strerror(errno));
			conn_end(h, c, reason);
			return false;
		}
		if (n == 0) {
			r = frame_decoder__finish(&c->rx.dec);
			snprintf(reason, sizeof(reason), "%s", r ? chan_rx_error(&c->rx) :
				 c->hello ? "the guest closed the connection" : "closed before a hello");
			conn_end(h, c, reason);
			return false;
		}
		c->rx_ns = chan_now_ns();
		r = chan_rx_feed(&c->rx, buf, n, on_frame, &fc);
		if (r == -ESHUTDOWN && c->closing)
			return true;
		if (r) {
			snprintf(reason, sizeof(reason), "%s", chan_rx_error(&c->rx));
			if (!c->hello)
				h->refused++;
			conn_end(h, c, reason);
			return false;
		}
	}
	return true;
}

static void accept_all(struct host *h, struct endpoint *ep)
{
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		char id[160];
		int fd = accept4(ep->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				logf_("accept on %s: %s", ep->name, strerror(errno));
			return;
		}
		chan_peer_name(fd, ep->addr.kind, &ss, sl, id, sizeof(id));
		conn_new(h, ep, fd, id);
	}
}

/* A serial endpoint: (re)connect to the socket QEMU serves for the port. */
static void serial_try(struct host *h, struct endpoint *ep)
{
	char err[400], id[160];
	bool in_progress;
	int fd;

	fd = chan_connect(&ep->addr, &in_progress, err, sizeof(err));
	if (fd < 0) {
		if (strcmp(err, ep->last_err)) {
			logf_("%s; retrying", err);
			snprintf(ep->last_err, sizeof(ep->last_err), "%s", err);
		}
		ep->next_try_ns = chan_now_ns() + ep->backoff_ms * 1000000ull;
		ep->backoff_ms = ep->backoff_ms * 2 > SERIAL_BACKOFF_MAX_MS ? SERIAL_BACKOFF_MAX_MS : ep->backoff_ms * 2;
		return;
	}
	ep->last_err[0] = 0;
	ep->backoff_ms = SERIAL_BACKOFF_MIN_MS;
	chan_peer_name(fd, IOT_ADDR_SERIAL, NULL, 0, id, sizeof(id));
	ep->serial_conn = conn_new(h, ep, fd, id);
}

static void print_totals(struct host *h)
{
	logf_("%" PRIu64 " guest connections, %" PRIu64 " records (%" PRIu64 " on guest time: no clock yet), %"
	      PRIu64 " resent duplicates dropped, %" PRIu64 " invalid records, %" PRIu64 " connections refused",
	      h->guests, h->records, h->unsynced, h->dups, h->invalid, h->refused);
	if (h->o->json) {
		fprintf(h->o->of, "{\"type\":\"host_stats\",\"connections\":%" PRIu64 ",\"records\":%" PRIu64
			",\"unsynced\":%" PRIu64 ",\"duplicates\":%" PRIu64 ",\"invalid\":%" PRIu64
			",\"refused\":%" PRIu64 "}\n", h->guests, h->records, h->unsynced, h->dups, h->invalid,
			h->refused);
		fflush(h->o->of);
	}
}

int host_run(const struct host_opts *o)
{
	struct host *h = calloc(1, sizeof(*h));
	struct pollfd *pfd = NULL;
	struct conn **pconn = NULL;
	size_t pcap = 0;
	uint64_t start = chan_now_ns();
	char err[400];
	int ret = 0;

	if (!h || build_hello(h)) {
		fprintf(stderr, "iotracer: host: out of memory\n");
		free(h);
		return -ENOMEM;
	}
	h->o = o;
	for (int i = 0; i < o->nlisten; i++) {
		struct endpoint *ep = &h->ep[i];

		ep->addr = o->listen[i];
		ep->lfd = -1;
		ep->backoff_ms = SERIAL_BACKOFF_MIN_MS;
		iot_addr_format(&ep->addr, ep->name, sizeof(ep->name));
		if (ep->addr.kind == IOT_ADDR_SERIAL) {
			struct stat st;

			/* On the host the port is QEMU's unix socket; it may not exist yet, but nothing else will do. */
			if (!stat(ep->addr.path, &st) && !S_ISSOCK(st.st_mode)) {
				fprintf(stderr, "iotracer: %s: not a socket; on the host give the unix socket QEMU serves "
					"for the port (-chardev socket,path=PATH,server=on,wait=off)\n", ep->name);
				ret = -ENOTSOCK;
				goto out;
			}
		} else {
			ep->lfd = chan_listen(&ep->addr, err, sizeof(err));
			if (ep->lfd < 0) {
				fprintf(stderr, "iotracer: %s\n", err);
				ret = ep->lfd;
				goto out;
			}
		}
	}
	for (int i = 0; i < o->nlisten; i++) {
		logf_("%s %s", h->ep[i].lfd >= 0 ? "listening on" : "connecting to QEMU's socket for",
		      h->ep[i].name);
		if (o->json) {
			fprintf(o->of, "{\"type\":\"listening\"");
			jstr(o->of, "addr", h->ep[i].name);
			fputs("}\n", o->of);
		}
	}
	fflush(o->of);

	while (!*o->stop) {
		uint64_t now = chan_now_ns(), next = now + 100000000ull;
		size_t n = 0, nconn = 0, k;
		int timeout;

		if (o->duration_s && now - start >= (uint64_t)(o->duration_s * 1e9))
			break;
		for (int i = 0; i < o->nlisten; i++) {
			struct endpoint *ep = &h->ep[i];

			if (ep->lfd < 0 && !ep->serial_conn) {
				if (now >= ep->next_try_ns)
					serial_try(h, ep);
				if (!ep->serial_conn && ep->next_try_ns < next)
					next = ep->next_try_ns;
			}
		}
		for (struct conn *c = h->conns; c; c = c->next)
			nconn++;
		if (pcap < (size_t)o->nlisten + nconn) {
			pcap = (o->nlisten + nconn) * 2;
			pfd = realloc(pfd, pcap * sizeof(*pfd));
			pconn = realloc(pconn, pcap * sizeof(*pconn));
			if (!pfd || !pconn) {
				fprintf(stderr, "iotracer: host: out of memory\n");
				ret = -ENOMEM;
				break;
			}
		}
		for (int i = 0; i < o->nlisten; i++)
			if (h->ep[i].lfd >= 0) {
				pfd[n] = (struct pollfd){ .fd = h->ep[i].lfd, .events = POLLIN };
				pconn[n++] = NULL;
			}
		k = n;
		for (struct conn *c = h->conns; c; c = c->next) {
			pfd[n] = (struct pollfd){ .fd = c->fd,
				.events = (c->closing ? 0 : POLLIN) | (chan_tx_pending(&c->tx) ? POLLOUT : 0) };
			pconn[n++] = c;
			if (c->closing && c->close_by_ns < next)
				next = c->close_by_ns;
		}
		timeout = next > now ? (int)((next - now + 999999) / 1000000) : 0;
		if (poll(pfd, n, timeout) < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "iotracer: host: poll: %s\n", strerror(errno));
			ret = -errno;
			break;
		}
		for (size_t i = 0, e = 0; i < k; i++, e++) {
			while (h->ep[e].lfd < 0)
				e++;
			if (pfd[i].revents)
				accept_all(h, &h->ep[e]);
		}
		for (size_t i = k; i < n; i++) {
			struct conn *c = pconn[i];
			int r;

			/* Connections accepted during this round are not in pfd; a freed one is not visited again. */
			if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
				if (c->closing) {
					conn_end(h, c, c->close_reason);
					continue;
				}
				if (!conn_read(h, c))
					continue;
			}
			if (chan_tx_pending(&c->tx)) {
				r = chan_tx_flush(&c->tx, c->fd);
				if (r) {
					snprintf(err, sizeof(err), "write: %s", strerror(-r));
					conn_end(h, c, err);
					continue;
				}
			}
			if (c->closing && (!chan_tx_pending(&c->tx) || chan_now_ns() >= c->close_by_ns))
				conn_end(h, c, c->close_reason);
		}
	}
	/* Leaving: tell every guest, so that it reconnects to our successor rather than wonder. */
	while (h->conns) {
		struct conn *c = h->conns;
		Iotracer__Frame f = IOTRACER__FRAME__INIT;
		Iotracer__Goodbye b = IOTRACER__GOODBYE__INIT;

		if (c->hello && !c->closing) {
			b.reason = "host exiting";
			f.msg_case = IOTRACER__FRAME__MSG_GOODBYE;
			f.goodbye = &b;
			chan_tx_frame(&c->tx, &f);
		}
		chan_tx_flush(&c->tx, c->fd);
		conn_end(h, c, c->closing ? c->close_reason : "host exiting");
	}
	print_totals(h);
out:
	for (int i = 0; i < o->nlisten; i++) {
		if (h->ep[i].lfd >= 0) {
			close(h->ep[i].lfd);
			if (h->ep[i].addr.kind == IOT_ADDR_UNIX)
				unlink(h->ep[i].addr.path);
		}
	}
	free(pfd);
	free(pconn);
	free(h->hello);
	free(h);
	return ret;
}
