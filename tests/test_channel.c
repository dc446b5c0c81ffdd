// SPDX-License-Identifier: GPL-2.0
/*
 * Unit tests of the guest/host channel's pure parts: the clock
 * synchronisation estimate against simulated clocks with a known offset,
 * drift and asymmetric delays, and strict parsing of channel addresses.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "addr.h"
#include "channel.h"
#include "clocksync.h"

#include "check.h"

/* The simulated host clock: true time plus an offset and a drift. */
#define OFFSET_NS 123456789012LL
#define DRIFT_PPM 50.0
#define T0 1000000000000ULL

static uint64_t host_clock(uint64_t t)
{
	return t + OFFSET_NS + (int64_t)((double)(t - T0) * DRIFT_PPM * 1e-6);
}

static uint64_t lcg(uint64_t *state)
{
	*state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
	return *state >> 33;
}

/* One exchange sent at true time t with one-way delays d1 (to host) and d2 (back). */
static struct clock_sample exchange(uint64_t t, uint64_t d1, uint64_t d2)
{
	struct clock_sample s;

	s.t1 = t;			/* the guest clock is true time */
	s.t2 = host_clock(t + d1);
	s.t3 = host_clock(t + d1 + 5000);
	s.t4 = t + d1 + 5000 + d2;
	return s;
}

static void test_clocksync(void)
{
	struct clocksync cs;
	struct clock_estimate est;
	uint64_t rng = 42, t = T0, now;
	struct clock_sample bad;

	clocksync_init(&cs);
	CHECK(clocksync_estimate(&cs, T0, &est) == -EAGAIN, "no sample, no estimate");

	/* Ten seconds of probes every 150 ms with delays of 20 us to 2 ms, some very asymmetric. */
	for (int i = 0; i < 64; i++) {
		uint64_t d1 = 20000 + lcg(&rng) % 2000000, d2 = 20000 + lcg(&rng) % 2000000;
		struct clock_sample s;

		if (i % 9 == 0)
			d1 = d2 = 20000;	/* now and then the path is quiet */
		s = exchange(t, d1, d2);
		CHECK(clocksync_add(&cs, &s) == 0, "sample %d accepted", i);
		t += 150000000;
	}
	now = t;
	CHECK(clocksync_estimate(&cs, now, &est) == 0, "estimate");
	{
		int64_t true_off = (int64_t)(host_clock(now) - now);
		int64_t est_off = (int64_t)(clocksync_to_host(&est, now) - now);
		uint64_t err = llabs(true_off - est_off);

		CHECK(err <= est.uncertainty_ns, "error %" PRIu64 " ns beyond the stated uncertainty %" PRIu64, err,
		      est.uncertainty_ns);
		CHECK(est.uncertainty_ns < 200000, "uncertainty %" PRIu64 " ns: the quiet samples bound it to ~20 us",
		      est.uncertainty_ns);
		CHECK(fabs(est.drift_ppm - DRIFT_PPM) < 5.0, "drift %.2f ppm, true %.1f", est.drift_ppm, DRIFT_PPM);
	}
	/* Timestamps of the past converted too. */
	{
		uint64_t g = T0 + 3000000000ULL;
		int64_t err = (int64_t)(clocksync_to_host(&est, g) - host_clock(g));

		CHECK(llabs(err) <= (int64_t)est.uncertainty_ns, "past timestamp off by %" PRId64 " ns", err);
	}
	/* Impossible exchanges are refused and counted. */
	bad = exchange(t, 1000, 1000);
	bad.t4 = bad.t1 - 1;
	CHECK(clocksync_add(&cs, &bad) == -EINVAL, "reply before probe");
	bad = exchange(t, 1000, 1000);
	bad.t3 = bad.t2 - 1;
	CHECK(clocksync_add(&cs, &bad) == -EINVAL, "host replied before receiving");
	bad = exchange(t, 1000, 1000);
	bad.t3 = bad.t2 + 10000000;	/* host held it longer than the round trip */
	CHECK(clocksync_add(&cs, &bad) == -EINVAL, "negative delay");
	CHECK(cs.rejected == 3 && cs.accepted == 64, "counts %" PRIu64 "/%" PRIu64, cs.accepted, cs.rejected);

	/* The window keeps the latest samples only. */
	for (int i = 0; i < 200; i++) {
		struct clock_sample s = exchange(t, 500000, 500000);

		clocksync_add(&cs, &s);
		t += 1000000;
	}
	CHECK(cs.n == CLOCKSYNC_WINDOW, "window of %u", cs.n);
	/* Uncertainty grows with the age of the best sample. */
	{
		struct clock_estimate later;

		clocksync_estimate(&cs, t, &est);
		clocksync_estimate(&cs, t + 60000000000ULL, &later);
		CHECK(later.uncertainty_ns > est.uncertainty_ns, "a minute later the estimate is less certain");
	}

	/*
	 * Half a second of probes with 100 us of jitter: too short to tell a
	 * 50 ppm drift from noise. No drift is claimed, and the stated
	 * uncertainty still covers the true offset seconds later.
	 */
	clocksync_init(&cs);
	t = T0;
	for (int i = 0; i < 10; i++) {
		struct clock_sample s = exchange(t, 30000 + lcg(&rng) % 100000, 30000 + lcg(&rng) % 100000);

		clocksync_add(&cs, &s);
		t += 50000000;
	}
	for (uint64_t later = 0; later <= 10000000000ULL; later += 2500000000ULL) {
		uint64_t g = t + later;
		int64_t err;

		CHECK(clocksync_estimate(&cs, g, &est) == 0 && est.drift_ppm == 0.0, "short span: drift %.1f ppm claimed",
		      est.drift_ppm);
		err = (int64_t)(clocksync_to_host(&est, g) - host_clock(g));
		CHECK((uint64_t)llabs(err) <= est.uncertainty_ns, "short span, %.1f s later: off by %" PRId64
		      " ns, uncertainty %" PRIu64, later / 1e9, err, est.uncertainty_ns);
	}
}

static void test_addr(void)
{
	struct iot_addr a;
	char err[256], buf[300];

	CHECK(iot_addr_parse("vsock:2:5470", &a, err, sizeof(err)) == 0 && a.kind == IOT_ADDR_VSOCK && a.cid == 2 &&
	      a.port == 5470, "vsock");
	CHECK(iot_addr_parse("unix:/run/iotracer.sock", &a, err, sizeof(err)) == 0 && a.kind == IOT_ADDR_UNIX &&
	      !strcmp(a.path, "/run/iotracer.sock"), "unix");
	CHECK(iot_addr_parse("serial:/dev/virtio-ports/org.iotracer.0", &a, err, sizeof(err)) == 0 &&
	      a.kind == IOT_ADDR_SERIAL, "serial");
	CHECK(iot_addr_parse("tcp:127.0.0.1:9000", &a, err, sizeof(err)) == 0 && a.kind == IOT_ADDR_TCP &&
	      !strcmp(a.host, "127.0.0.1") && a.port == 9000, "tcp v4");
	CHECK(iot_addr_parse("tcp:[::1]:9000", &a, err, sizeof(err)) == 0 && !strcmp(a.host, "::1"), "tcp v6");
	iot_addr_format(&a, buf, sizeof(buf));
	CHECK(!strcmp(buf, "tcp:[::1]:9000"), "format %s", buf);

	static const char *const bad[] = {
		"", "vsock", "vsock:2", "vsock:x:1", "vsock:2:0", "vsock:2:65536", "vsock:-1:5", "vsock:2:5x",
		"unix:", "serial:", "tcp:host", "tcp::80", "tcp:host:", "tcp:host:99999", "udp:h:1", "file:/x",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		CHECK(iot_addr_parse(bad[i], &a, err, sizeof(err)) == -EINVAL && err[0], "'%s' must be refused", bad[i]);
	}
	{
		char longpath[200] = "unix:/";

		memset(longpath + 6, 'a', 150);
		longpath[156] = 0;
		CHECK(iot_addr_parse(longpath, &a, err, sizeof(err)) == -EINVAL && strstr(err, "107"),
		      "a path too long for sun_path: %s", err);
	}
}

static int count_cb(void *ctx, const Iotracer__Frame *f)
{
	(*(int *)ctx) += f->msg_case == IOTRACER__FRAME__MSG_ACK;
	return 0;
}

/* A stream of the preamble and n Ack frames, after `junk` bytes of junk. */
static size_t make_stream(uint8_t *buf, size_t cap, size_t junk, int n)
{
	Iotracer__Frame f = IOTRACER__FRAME__INIT;
	Iotracer__Ack a = IOTRACER__ACK__INIT;
	size_t len = 0, k;

	for (size_t i = 0; i < junk; i++)
		buf[len++] = i % 3 ? 'I' : 'O';	/* near misses of the preamble */
	memcpy(buf + len, IOT_CHAN_MAGIC, IOT_CHAN_MAGIC_LEN);
	len += IOT_CHAN_MAGIC_LEN;
	f.msg_case = IOTRACER__FRAME__MSG_ACK;
	f.ack = &a;
	for (int i = 0; i < n; i++) {
		a.seq = i + 1;
		if (frame_encode(&f, buf + len, cap - len, &k))
			return 0;
		len += k;
	}
	return len;
}

static void test_preamble(void)
{
	static uint8_t buf[1 << 16];
	struct chan_rx rx;
	size_t len;
	int acks = 0, r;

	/* A socket peer must start with the preamble. */
	len = make_stream(buf, sizeof(buf), 0, 3);
	chan_rx_init(&rx, 1024, false);
	CHECK(chan_rx_feed(&rx, buf, len, count_cb, &acks) == 0 && acks == 3, "clean stream: %d acks", acks);
	chan_rx_fini(&rx);
	len = make_stream(buf, sizeof(buf), 5, 3);
	chan_rx_init(&rx, 1024, false);
	r = chan_rx_feed(&rx, buf, len, count_cb, &acks);
	CHECK(r == -EPROTO && strstr(chan_rx_error(&rx), "preamble"), "junk first on a socket: %d", r);
	chan_rx_fini(&rx);

	/* A serial reader skips the tail of an earlier connection, fed a byte at a time too. */
	for (int step = 1; step <= 7; step += 6) {
		acks = 0;
		len = make_stream(buf, sizeof(buf), 1000, 4);
		chan_rx_init(&rx, 1024, true);
		for (size_t i = 0; i < len; i += step)
			chan_rx_feed(&rx, buf + i, len - i < (size_t)step ? len - i : (size_t)step, count_cb, &acks);
		CHECK(acks == 4 && rx.skipped == 1000 && !chan_rx_error(&rx), "serial resync (step %d): %d acks, %llu skipped",
		      step, acks, (unsigned long long)rx.skipped);
		chan_rx_fini(&rx);
	}

	/* ... but not forever. */
	chan_rx_init(&rx, 1024, true);
	memset(buf, 'x', sizeof(buf));
	r = 0;
	for (int i = 0; i < 100 && !r; i++)
		r = chan_rx_feed(&rx, buf, sizeof(buf), count_cb, &acks);
	CHECK(r == -EPROTO && rx.skipped <= IOT_CHAN_SCAN_MAX + sizeof(buf), "endless junk: %d after %llu", r,
	      (unsigned long long)rx.skipped);
	chan_rx_fini(&rx);
}

static void test_tx_bound(void)
{
	struct chan_tx tx;
	uint8_t b[1000] = {};

	chan_tx_init(&tx, 2500);
	CHECK(chan_tx_put(&tx, b, 1000) == 0 && chan_tx_put(&tx, b, 1000) == 0, "within the bound");
	CHECK(chan_tx_put(&tx, b, 1000) == -ENOBUFS && chan_tx_pending(&tx) == 2000, "over the bound refused whole");
	tx.off = 1500;	/* as if written */
	CHECK(chan_tx_put(&tx, b, 1000) == 0 && chan_tx_pending(&tx) == 1500, "room again once written");
	chan_tx_fini(&tx);
}

int main(void)
{
	test_clocksync();
	test_addr();
	test_preamble();
	test_tx_bound();
	printf("%d checks, %d failed\n", checks, failures);
	return failures ? 1 : 0;
}
