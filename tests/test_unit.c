// SPDX-License-Identifier: GPL-2.0
/*
 * Unit tests of the pure parts: latency split, histograms and percentiles,
 * layer parsing, text/JSON formatting, the protobuf record round trip and
 * its checks on hostile input. No privileges, no kernel.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "disks.h"
#include "hist.h"
#include "names.h"
#include "output.h"
#include "record_pb.h"
#include "sbuf.h"
#include "srec.h"

#include "check.h"

static struct iot_record sample_record(void)
{
	struct iot_record r = {};

	r.kind = IOT_KIND_SYSCALL;
	r.syscall = IOT_SYS_PREAD64;
	r.op = IOT_OP_READ;
	r.pid = 42;
	r.tid = 43;
	r.actor_tid = 43;
	r.dev = iot_kdev(7, 0);
	r.inode = 12;
	r.offset = 8192;
	r.sector = 16;
	r.len = 4096;
	r.bio_bytes = 4096;
	r.nr_bios = 1;
	r.result = 4096;
	r.flags = IOT_F_DIRECT;
	memcpy(r.comm, "fio\"x\\y", 7);
	r.ts[IOT_TS_SYSCALL_ENTER] = 1000;
	r.ts[IOT_TS_FS] = 1500;
	r.ts[IOT_TS_BIO_QUEUE] = 2000;
	r.ts[IOT_TS_RQ_INSERT] = 2100;
	r.ts[IOT_TS_RQ_ISSUE] = 2300;
	r.ts[IOT_TS_RQ_COMPLETE] = 9300;
	r.ts[IOT_TS_SYSCALL_EXIT] = 10000;
	return r;
}

static void test_split(void)
{
	struct iot_record r = sample_record();
	struct iot_split s;
	uint64_t sum = 0;

	iot_record_split(&r, &s);
	CHECK(s.n == 6, "n=%d", s.n);
	CHECK(s.total_ns == 9000, "total=%llu", (unsigned long long)s.total_ns);
	for (int i = 0; i < s.n; i++)
		sum += s.ns[i];
	CHECK(sum == s.total_ns, "split sums to %llu", (unsigned long long)sum);
	CHECK(s.ordered, "ordered");
	CHECK(!strcmp(s.name[0], "syscall") && s.ns[0] == 500, "%s %llu", s.name[0], (unsigned long long)s.ns[0]);
	CHECK(!strcmp(s.name[1], "fs") && s.ns[1] == 500, "%s", s.name[1]);
	CHECK(!strcmp(s.name[2], "block") && s.ns[2] == 100, "%s", s.name[2]);
	CHECK(!strcmp(s.name[3], "iosched") && s.ns[3] == 200, "%s", s.name[3]);
	/* No driver stamp: issue to completion is all device time. */
	CHECK(!strcmp(s.name[4], "device") && s.ns[4] == 7000, "%s", s.name[4]);
	CHECK(!strcmp(s.name[5], "completion") && s.ns[5] == 700, "%s", s.name[5]);

	r.ts[IOT_TS_DRIVER] = 2400;
	iot_record_split(&r, &s);
	CHECK(!strcmp(s.name[4], "driver") && s.ns[4] == 100, "%s", s.name[4]);

	/* A timestamp that goes backwards is reported, not hidden. */
	r.ts[IOT_TS_RQ_INSERT] = 5000;
	iot_record_split(&r, &s);
	CHECK(!s.ordered, "disorder detected");

	memset(&r, 0, sizeof(r));
	iot_record_split(&r, &s);
	CHECK(s.n == 0 && s.total_ns == 0, "empty record");
}

static void test_hist(void)
{
	struct hist *h = calloc(1, sizeof(*h));
	uint64_t slots[64];

	for (uint64_t v = 0; v < 100000; v += 7)
		CHECK(hist_bucket_upper(hist_bucket(v)) >= v, "upper edge below value %llu", (unsigned long long)v);
	for (int i = 1; i <= 1000; i++)
		hist_add(h, i * 1000ULL);	/* 1..1000 us */
	CHECK(h->count == 1000 && h->max == 1000000 && h->min == 1000, "count/max/min");
	/* Log-linear buckets: within 1/16 above the true value. */
	CHECK(hist_percentile(h, 50) >= 500000 && hist_percentile(h, 50) <= 500000 * 17 / 16, "p50=%llu",
	      (unsigned long long)hist_percentile(h, 50));
	CHECK(hist_percentile(h, 99) >= 990000 && hist_percentile(h, 99) <= 1000000, "p99=%llu",
	      (unsigned long long)hist_percentile(h, 99));
	CHECK(hist_percentile(h, 100) == 1000000, "p100 is max");
	hist_log2(h, slots);
	{
		uint64_t total = 0;

		for (int k = 0; k < 64; k++)
			total += slots[k];
		CHECK(total == 1000, "log2 view keeps every value: %llu", (unsigned long long)total);
		CHECK(slots[9] == 1 && slots[19] == 1000 - 524, "slots 9=%llu 19=%llu", (unsigned long long)slots[9],
		      (unsigned long long)slots[19]);
	}
	hist_add(h, UINT64_MAX);
	CHECK(h->max == UINT64_MAX, "huge value clamps into the last bucket");
	hist_reset(h);
	CHECK(h->count == 0 && hist_percentile(h, 50) == 0, "reset");
	free(h);
}

static void test_layers(void)
{
	uint32_t mask = 0;
	const char *bad = NULL;

	CHECK(iot_layers_parse("block,io_uring", &mask, &bad) == 0, "parse");
	CHECK(mask == ((1u << IOT_LAYER_BLOCK) | (1u << IOT_LAYER_IO_URING)), "mask %x", mask);
	CHECK(iot_layers_parse("all", &mask, &bad) == 0 && mask == (1u << IOT_LAYER_MAX) - 1, "all");
	CHECK(iot_layers_parse("block,bogus", &mask, &bad) == -EINVAL && !strcmp(bad, "bogus"), "bad=%s", bad);
	CHECK(iot_layers_parse("block,,fs", &mask, &bad) == -EINVAL, "empty word");
	CHECK(iot_layers_parse("", &mask, &bad) == -EINVAL, "empty list");
	for (int l = 0; l < IOT_LAYER_MAX; l++)
		CHECK(iot_layer_parse(iot_layer_name(l)) == l, "name round trip %d", l);
}

static void test_parse_dev(void)
{
	uint32_t d = 0;

	CHECK(iot_parse_dev("7:3", &d) == 0 && d == iot_kdev(7, 3), "7:3 -> %x", d);
	CHECK(iot_parse_dev("259:1048575", &d) == 0 && iot_kdev_minor(d) == 1048575, "max minor");
	CHECK(iot_parse_dev("7:3x", &d) != 0, "trailing junk");
	CHECK(iot_parse_dev("/nonexistent-dev", &d) == -ENOENT, "missing path");
	CHECK(iot_parse_dev("/", &d) == -ENOTBLK, "a directory is not a block device");
}

static void test_output(void)
{
	struct iot_record r = sample_record();
	char buf[4096];
	int n;

	n = output_format_json(&r, buf, sizeof(buf));
	CHECK(n > 0, "json formatted");
	CHECK(strstr(buf, "\"comm\":\"fio\\\"x\\\\y\"") != NULL, "comm escaped: %s", buf);
	CHECK(strstr(buf, "\"sector\":16") && strstr(buf, "\"dev\":\"7:0\""), "fields: %s", buf);
	CHECK(strstr(buf, "\"total_ns\":9000"), "total: %s", buf);
	CHECK(strstr(buf, "\"flags\":[\"direct\"]"), "flags: %s", buf);
	CHECK(buf[n - 1] == '}', "closed object");
	CHECK(output_format_json(&r, buf, 64) == -ENOSPC, "short buffer reported, not overrun");

	r.sector = IOT_UNKNOWN_U64;
	r.offset = IOT_UNKNOWN_U64;
	output_format_json(&r, buf, sizeof(buf));
	CHECK(strstr(buf, "\"sector\":null") && strstr(buf, "\"offset\":null"), "unknowns are null: %s", buf);

	r = sample_record();
	n = output_format_text(NULL, &r, buf, sizeof(buf));
	CHECK(n > 0 && strstr(buf, "pread64") && strstr(buf, "sector 16") && strstr(buf, "lat 9.0us"),
	      "text: %s", buf);
	CHECK(strstr(buf, "[syscall 0.5 fs 0.5 block 0.1 iosched 0.2 device 7.0 completion 0.7]"), "split: %s", buf);

	{
		char esc[16];

		json_escape("a\nb", 3, esc, sizeof(esc));
		CHECK(!strcmp(esc, "a\\u000ab"), "control char escaped: %s", esc);
		json_escape("0123456789abcdef", 16, esc, 8);
		CHECK(strlen(esc) == 7, "escape truncates within the buffer");
	}
}

static void test_record_pb(void)
{
	struct iot_record r = sample_record(), back;
	Iotracer__Record m, *dec;
	uint64_t ts[IOT_TS_MAX];
	uint8_t buf[1024];
	size_t len;

	record_to_pb(&r, &m, ts);
	len = iotracer__record__get_packed_size(&m);
	CHECK(len < sizeof(buf), "packed size %zu", len);
	iotracer__record__pack(&m, buf);
	dec = iotracer__record__unpack(NULL, len, buf);
	CHECK(dec != NULL, "unpack");
	if (!dec)
		return;
	CHECK(record_from_pb(dec, &back) == 0, "valid record accepted");
	CHECK(!memcmp(&r, &back, sizeof(r)), "round trip is exact");

	/* Hostile values are refused, never copied. */
	dec->n_ts = IOT_TS_MAX + 1;
	CHECK(record_from_pb(dec, &back) == -EINVAL, "too many timestamps");
	dec->n_ts = IOT_TS_MAX;
	dec->comm.len = IOT_COMM_LEN + 1;
	CHECK(record_from_pb(dec, &back) == -EINVAL, "comm too long");
	dec->comm.len = 3;
	dec->kind = 99;
	CHECK(record_from_pb(dec, &back) == -EINVAL, "unknown kind");
	iotracer__record__free_unpacked(dec, NULL);

	/* Truncated input fails to decode rather than reading past the end. */
	CHECK(iotracer__record__unpack(NULL, len / 2, buf) == NULL, "truncated frame");
}

/* The JSON number writer against printf, at every digit count and the edges. */
static void test_sb_u64(void)
{
	char got[32], want[32];
	uint64_t v = 1;
	int bad = 0;

	for (int digits = 0; digits < 64 * 4; digits++) {
		uint64_t vals[] = { v - 1, v, v + 1, v * 7 + 3, UINT64_MAX - digits };

		for (unsigned int i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
			struct sbuf b = { got, sizeof(got), 0 };

			sb_u64(&b, vals[i]);
			got[b.w] = 0;
			snprintf(want, sizeof(want), "%llu", (unsigned long long)vals[i]);
			bad += strcmp(got, want) != 0;
		}
		v = digits % 4 == 3 ? v * 10 + 1 : v * 3;	/* wraps around: as good a value as any */
	}
	CHECK(!bad, "sb_u64 differs from printf %d times", bad);
	{
		char small[4];
		struct sbuf b = { small, sizeof(small), 0 };

		sb_u64(&b, 123456);
		CHECK(b.w == 6, "a cut number still counts its length: %zu", b.w);
	}
	{
		char dev[32] = "", small[3] = "";

		format_kdev(253u << 20 | 16, dev, sizeof(dev));
		format_kdev(253u << 20 | 16, small, sizeof(small));
		CHECK(!strcmp(dev, "253:16") && !strcmp(small, "25"), "devices: '%s', cut '%s'", dev, small);
	}
}

/*
 * The sparse ring-buffer form as the BPF side writes it (emit_sparse()), by
 * hand: every stamp and non-default field, words in order.
 */
static size_t srec_encode(const struct iot_record *r, __u64 *buf)
{
	struct iot_srec *h = (struct iot_srec *)buf;
	__u64 *w = h->w;
	uint64_t f[IOT_SF_MAX];
	uint64_t dflt[IOT_SF_MAX] = { [IOT_SF_OFFSET] = IOT_UNKNOWN_U64, [IOT_SF_SECTOR] = IOT_UNKNOWN_U64,
				      [IOT_SF_ACTOR] = r->tid };
	size_t n = 0;

	memset(h, 0, sizeof(*h));
	for (int i = 0; i < IOT_TS_MAX; i++)
		if (r->ts[i]) {
			w[n++] = r->ts[i];
			h->ts_mask |= 1u << i;
		}
	f[IOT_SF_CGROUP] = r->cgroup_id;
	f[IOT_SF_INODE] = r->inode;
	f[IOT_SF_OFFSET] = r->offset;
	f[IOT_SF_SECTOR] = r->sector;
	f[IOT_SF_OFFCPU] = r->offcpu_ns;
	f[IOT_SF_USER_DATA] = r->user_data;
	f[IOT_SF_VQ_GPA] = r->vq_gpa;
	f[IOT_SF_URING_CTX] = r->uring_ctx;
	f[IOT_SF_URING_REQ] = r->uring_req;
	f[IOT_SF_URING_LINK] = r->uring_link;
	f[IOT_SF_UBUF] = r->ubuf;
	f[IOT_SF_RESULT] = (uint64_t)r->result;
	f[IOT_SF_ACTOR] = (uint64_t)r->bio_bytes << 32 | r->actor_tid;
	f[IOT_SF_COUNTS] = (uint64_t)r->pc_dirtied << 48 | (uint64_t)r->pc_misses << 32 |
			   (uint64_t)r->pc_pages << 16 | r->nr_bios;
	f[IOT_SF_CQE_SEQ] = (uint64_t)r->driver << 32 | r->cqe_seq;
	for (int j = 0; j < IOT_SF_COMM; j++)
		if (f[j] != dflt[j]) {
			w[n++] = f[j];
			h->f_mask |= 1u << j;
		}
	memcpy(&w[n], r->comm, IOT_COMM_LEN);
	n += 2;
	h->f_mask |= 1u << IOT_SF_COMM;
	h->kind = r->kind;
	h->op = r->op;
	h->syscall = r->syscall;
	h->uring_opcode = r->uring_opcode;
	h->pid = r->pid;
	h->tid = r->tid;
	h->dev = r->dev;
	h->len = r->len;
	h->flags = r->flags;
	return sizeof(*h) + n * sizeof(uint64_t);
}

static void test_srec(void)
{
	struct iot_record r = sample_record(), back;
	__u64 buf[64];
	struct iot_srec *h = (struct iot_srec *)buf;
	size_t size;

	CHECK(sizeof(struct iot_srec) == 32, "header %zu bytes", sizeof(struct iot_srec));
	size = srec_encode(&r, buf);
	CHECK(size < sizeof(r), "a direct read is %zu bytes sparse, %zu whole", size, sizeof(r));
	CHECK(iot_srec_expand(buf, size, &back) == 0 && !memcmp(&r, &back, sizeof(r)), "round trip is exact");

	/* Defaults: unknown offset and sector, the actor the thread itself; a negative result; no comm. */
	r.offset = r.sector = IOT_UNKNOWN_U64;
	r.actor_tid = r.tid;
	r.result = -5;
	r.vq_gpa = 0x12345000;
	r.driver = IOT_DRV_VIRTIO_BLK;
	size = srec_encode(&r, buf);
	CHECK(iot_srec_expand(buf, size, &back) == 0 && !memcmp(&r, &back, sizeof(r)), "defaults round trip");

	/* A size that does not match its masks is refused, the record untouched. */
	memset(&back, 0x5a, sizeof(back));
	CHECK(iot_srec_expand(buf, size - 8, &back) == -EINVAL, "a word short");
	CHECK(iot_srec_expand(buf, size + 8, &back) == -EINVAL, "a word more");
	CHECK(iot_srec_expand(buf, size - 3, &back) == -EINVAL, "not whole words");
	CHECK(iot_srec_expand(buf, 16, &back) == -EINVAL, "shorter than the header");
	h->f_mask |= 1u << IOT_SF_MAX;
	CHECK(iot_srec_expand(buf, size + 8, &back) == -EINVAL, "an unknown field");
	CHECK(back.pid == 0x5a5a5a5a, "left untouched on failure");
}

int main(void)
{
	test_sb_u64();
	test_split();
	test_hist();
	test_layers();
	test_parse_dev();
	test_output();
	test_record_pb();
	test_srec();
	printf("%d checks, %d failed\n", checks, failures);
	return failures ? 1 : 0;
}
