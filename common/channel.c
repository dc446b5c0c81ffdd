// SPDX-License-Identifier: GPL-2.0
/* Sockets, peer identity, the connection preamble and bounded output for the guest <-> host channel. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include "channel.h"
#include "procinfo.h"

uint64_t chan_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static int fail(char *err, size_t errlen, int e, const char *fmt, const char *what)
{
	char msg[512];

	snprintf(msg, sizeof(msg), fmt, what);
	snprintf(err, errlen, "%s: %s", msg, strerror(e));
	return -e;
}

static void unix_sa(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	/* iot_addr_parse() bounds the path to what sun_path holds. */
	snprintf(sa->sun_path, sizeof(sa->sun_path), "%s", path);
}

/* Resolves a tcp address; *ret must be freed with freeaddrinfo(). */
static int tcp_resolve(const struct iot_addr *a, bool passive, struct addrinfo **ret, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0 };
	char port[8];
	int r;

	snprintf(port, sizeof(port), "%u", a->port);
	r = getaddrinfo(a->host, port, &hints, ret);
	if (r) {
		snprintf(err, errlen, "cannot resolve '%s': %s", a->host, gai_strerror(r));
		return -EHOSTUNREACH;
	}
	return 0;
}

/*
 * The socket address of a unix, vsock or tcp address (a listener binds
 * vsock to any CID and tcp passively). 0, or -errno with err set.
 */
static int sock_addr(const struct iot_addr *a, bool listener, struct sockaddr_storage *ss, socklen_t *sl,
		     int *family, char *err, size_t errlen)
{
	struct addrinfo *ai = NULL;
	int r;

	memset(ss, 0, sizeof(*ss));
	switch (a->kind) {
	case IOT_ADDR_UNIX:
	case IOT_ADDR_SERIAL:
		unix_sa(a->path, (void *)ss);
		*sl = sizeof(struct sockaddr_un);
		*family = AF_UNIX;
		return 0;
	case IOT_ADDR_VSOCK: {
		struct sockaddr_vm *sa = (void *)ss;

		sa->svm_family = AF_VSOCK;
		sa->svm_cid = listener ? VMADDR_CID_ANY : a->cid;
		sa->svm_port = a->port;
		*sl = sizeof(*sa);
		*family = AF_VSOCK;
		return 0;
	}
	case IOT_ADDR_TCP:
		r = tcp_resolve(a, listener, &ai, err, errlen);
		if (r)
			return r;
		memcpy(ss, ai->ai_addr, ai->ai_addrlen);
		*sl = ai->ai_addrlen;
		*family = ai->ai_family;
		freeaddrinfo(ai);
		return 0;
	default:
		snprintf(err, errlen, "bad address kind");
		return -EINVAL;
	}
}

int chan_listen(const struct iot_addr *a, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd, family, one = 1, r;
	char name[300];
	struct stat st;

	iot_addr_format(a, name, sizeof(name));
	if (a->kind == IOT_ADDR_SERIAL) {
		snprintf(err, errlen, "cannot listen on %s: a serial port is connected to, not listened on", name);
		return -EINVAL;
	}
	r = sock_addr(a, true, &ss, &sl, &family, err, errlen);
	if (r)
		return r;
	/* A socket left by an earlier run is replaced; any other file is not ours to remove. */
	if (a->kind == IOT_ADDR_UNIX && !lstat(a->path, &st)) {
		if (!S_ISSOCK(st.st_mode))
			return fail(err, errlen, EEXIST, "cannot listen on %s: the path exists and is no socket", name);
		unlink(a->path);
	}
	fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = errno;
		if (family == AF_VSOCK && (r == EAFNOSUPPORT || r == ENODEV))
			return fail(err, errlen, r, "cannot listen on %s: this kernel has no vsock transport "
				    "(load vhost_vsock, or use serial:, unix: or tcp:)", name);
		return fail(err, errlen, r, "cannot listen on %s: socket", name);
	}
	if (family != AF_UNIX && family != AF_VSOCK)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) || listen(fd, 64)) {
		r = errno;
		close(fd);
		if (family == AF_VSOCK && r == EADDRNOTAVAIL)
			return fail(err, errlen, r, "cannot listen on %s: no vsock transport for guests on this host "
				    "(load vhost_vsock, or use serial:, unix: or tcp:)", name);
		return fail(err, errlen, r, "cannot listen on %s", name);
	}
	return fd;
}

int chan_connect(const struct iot_addr *a, bool *in_progress, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd, family, r;
	char name[300];

	*in_progress = false;
	iot_addr_format(a, name, sizeof(name));
	if (a->kind == IOT_ADDR_SERIAL) {
		struct stat st;

		/* In a guest a character device; on the host the unix socket QEMU serves. */
		if (stat(a->path, &st))
			return fail(err, errlen, errno, "cannot open %s", name);
		if (!S_ISSOCK(st.st_mode)) {
			fd = open(a->path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
			if (fd < 0)
				return fail(err, errlen, errno, "cannot open %s", name);
			return fd;
		}
		/* A socket path: connected to like unix:. */
	}
	r = sock_addr(a, false, &ss, &sl, &family, err, errlen);
	if (r)
		return r;
	fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = errno;
		if (family == AF_VSOCK)
			return fail(err, errlen, r, "cannot connect to %s: no vsock in this kernel "
				    "(is the VM given a vhost-vsock device? else use serial:)", name);
		return fail(err, errlen, r, "cannot connect to %s: socket", name);
	}
	if (family != AF_UNIX && family != AF_VSOCK) {
		int one = 1;

		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	if (connect(fd, (struct sockaddr *)&ss, sl)) {
		r = errno;
		if (r == EINPROGRESS) {
			*in_progress = true;
			return fd;
		}
		close(fd);
		return fail(err, errlen, r, "cannot connect to %s", name);
	}
	return fd;
}

int chan_connect_result(int fd)
{
	int e = 0;
	socklen_t l = sizeof(e);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l))
		return -errno;
	return -e;
}

/* The -name of a QEMU process, from its command line; "" when it has none. */
static void qemu_name(int pid, char *buf, size_t len)
{
	char path[64], cmd[8192];
	ssize_t n;
	int fd;

	buf[0] = 0;
	snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = read(fd, cmd, sizeof(cmd) - 1);
	close(fd);
	if (n <= 0)
		return;
	cmd[n] = 0;
	for (char *p = cmd; p < cmd + n; p += strlen(p) + 1) {
		char *v = p + strlen(p) + 1;

		if (strcmp(p, "-name") || v >= cmd + n)
			continue;
		/* -name NAME or -name guest=NAME,... */
		if (!strncmp(v, "guest=", 6))
			v += 6;
		snprintf(buf, len, "%.*s", (int)strcspn(v, ","), v);
		return;
	}
}

void chan_peer_name(int fd, enum iot_addr_kind kind, const void *peer, size_t peerlen,
		    char *buf, size_t len)
{
	const struct sockaddr *sa = peer;

	if (kind == IOT_ADDR_VSOCK && sa && peerlen >= sizeof(struct sockaddr_vm)) {
		snprintf(buf, len, "vsock:%u", ((const struct sockaddr_vm *)peer)->svm_cid);
	} else if (kind == IOT_ADDR_TCP && sa) {
		char host[INET6_ADDRSTRLEN] = "?";
		unsigned int port = 0;

		if (sa->sa_family == AF_INET) {
			const struct sockaddr_in *in = peer;

			inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
			port = ntohs(in->sin_port);
			snprintf(buf, len, "tcp:%s:%u", host, port);
		} else if (sa->sa_family == AF_INET6) {
			const struct sockaddr_in6 *in6 = peer;

			inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
			port = ntohs(in6->sin6_port);
			snprintf(buf, len, "tcp:[%s]:%u", host, port);
		} else {
			snprintf(buf, len, "tcp:?");
		}
	} else {
		/* unix or serial: the kernel's record of the peer process. */
		struct ucred cred = {};
		socklen_t cl = sizeof(cred);
		char name[128];

		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) || cred.pid <= 0) {
			snprintf(buf, len, "%s:unknown", kind == IOT_ADDR_SERIAL ? "serial" : "unix");
			return;
		}
		if (proc_is_qemu(cred.pid)) {
			qemu_name(cred.pid, name, sizeof(name));
			snprintf(buf, len, "qemu:%d%s%s", cred.pid, name[0] ? "/" : "", name);
		} else {
			snprintf(buf, len, "unix:%d", cred.pid);
		}
	}
}

int chan_rx_init(struct chan_rx *rx, uint32_t max_frame, bool scan)
{
	memset(rx, 0, sizeof(*rx));
	rx->scan = scan;
	return frame_decoder__init(&rx->dec, max_frame);
}

void chan_rx_fini(struct chan_rx *rx)
{
	frame_decoder__fini(&rx->dec);
}

const char *chan_rx_error(const struct chan_rx *rx)
{
	return frame_decoder__error(&rx->dec);
}

int chan_rx_feed(struct chan_rx *rx, const uint8_t *buf, size_t len, frame_cb cb, void *ctx)
{
	size_t i = 0;

	if (rx->dec.err)
		return rx->dec.err;
	while (!rx->synced && i < len) {
		if (buf[i] == (uint8_t)IOT_CHAN_MAGIC[rx->matched]) {
			i++;
			if (++rx->matched == IOT_CHAN_MAGIC_LEN)
				rx->synced = true;
			continue;
		}
		if (!rx->scan)
			return frame_decoder__fail(&rx->dec, -EPROTO,
						   "no IOTRACE1 preamble: not an iotracer peer");
		/* Restart the match; the byte may itself begin the preamble. */
		rx->skipped += rx->matched ? rx->matched : 1;
		if (rx->matched)
			rx->matched = 0;
		else
			i++;
		if (rx->skipped > IOT_CHAN_SCAN_MAX)
			return frame_decoder__fail(&rx->dec, -EPROTO,
						   "no IOTRACE1 preamble in the first %u bytes", IOT_CHAN_SCAN_MAX);
	}
	if (i == len)
		return 0;
	return frame_decoder__feed(&rx->dec, buf + i, len - i, cb, ctx);
}

void chan_tx_init(struct chan_tx *tx, size_t limit)
{
	memset(tx, 0, sizeof(*tx));
	tx->limit = limit;
}

void chan_tx_fini(struct chan_tx *tx)
{
	free(tx->buf);
	memset(tx, 0, sizeof(*tx));
}

void chan_tx_clear(struct chan_tx *tx)
{
	tx->len = tx->off = 0;
}

static int tx_reserve(struct chan_tx *tx, size_t n)
{
	size_t cap;
	uint8_t *b;

	if (tx->off && tx->off == tx->len)
		tx->len = tx->off = 0;
	if (tx->len - tx->off + n > tx->limit)
		return -ENOBUFS;
	if (tx->off && tx->len + n > tx->cap) {
		memmove(tx->buf, tx->buf + tx->off, tx->len - tx->off);
		tx->len -= tx->off;
		tx->off = 0;
	}
	if (tx->len + n <= tx->cap)
		return 0;
	cap = tx->cap ? tx->cap : 4096;
	while (cap < tx->len + n)
		cap *= 2;
	b = realloc(tx->buf, cap);
	if (!b)
		return -ENOMEM;
	tx->buf = b;
	tx->cap = cap;
	return 0;
}

int chan_tx_put(struct chan_tx *tx, const void *p, size_t n)
{
	int r = tx_reserve(tx, n);

	if (r)
		return r;
	memcpy(tx->buf + tx->len, p, n);
	tx->len += n;
	return 0;
}

int chan_tx_frame(struct chan_tx *tx, const Iotracer__Frame *f)
{
	size_t n = iotracer__frame__get_packed_size(f) + IOT_FRAME_HDR, got;
	int r = tx_reserve(tx, n);

	if (r)
		return r;
	r = frame_encode(f, tx->buf + tx->len, n, &got);
	if (r)
		return r;
	tx->len += got;
	return 0;
}

int chan_tx_flush(struct chan_tx *tx, int fd)
{
	while (tx->off < tx->len) {
		ssize_t n = write(fd, tx->buf + tx->off, tx->len - tx->off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 0;
			return -errno;
		}
		if (n == 0)
			return -EPIPE;
		tx->off += n;
	}
	tx->len = tx->off = 0;
	return 0;
}

int chan_hello_bytes(Iotracer__Hello *h, uint8_t **ret, size_t *ret_len)
{
	Iotracer__Frame f = IOTRACER__FRAME__INIT;
	size_t n, got;
	uint8_t *b;
	int r;

	f.msg_case = IOTRACER__FRAME__MSG_HELLO;
	f.hello = h;
	n = IOT_CHAN_MAGIC_LEN + IOT_FRAME_HDR + iotracer__frame__get_packed_size(&f);
	b = malloc(n);
	if (!b)
		return -ENOMEM;
	memcpy(b, IOT_CHAN_MAGIC, IOT_CHAN_MAGIC_LEN);
	r = frame_encode(&f, b + IOT_CHAN_MAGIC_LEN, n - IOT_CHAN_MAGIC_LEN, &got);
	if (r) {
		free(b);
		return r;
	}
	*ret = b;
	*ret_len = IOT_CHAN_MAGIC_LEN + got;
	return 0;
}
