// SPDX-License-Identifier: GPL-2.0
/*
 * How many records per second one core turns from wire bytes back into
 * struct iot_record: the host agent's cost per guest record.
 *
 * Encodes N records (default 2,000,000) as RecordBatch frames of B records
 * (default 64) into memory, then times, after the encode, feeding that
 * stream through frame_decoder__feed() in 64 KiB reads (as from a socket)
 * and each batch through record_from_pb(). Best of R runs (default 5)
 * is reported, with the CPU time so a busy machine shows up.
 *
 * usage: frame_decode [N [B [R]]]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "frame.h"

#define READ_CHUNK (64u << 10)

struct totals {
	uint64_t records;
	uint64_t invalid;
	uint64_t frames;
	uint64_t sum;		/* keeps the decoded values live */
};

static int sum_record(void *ctx, const struct iot_record *r)
{
	struct totals *t = ctx;

	t->records++;
	t->sum += r->ts[IOT_TS_SYSCALL_EXIT] - r->ts[IOT_TS_SYSCALL_ENTER] + r->sector + r->len;
	return 0;
}

static int on_frame(void *ctx, const Iotracer__Frame *f)
{
	struct totals *t = ctx;
	int r;

	t->frames++;
	if (f->msg_case != IOTRACER__FRAME__MSG_BATCH)
		return -EPROTO;
	r = frame_batch_foreach(f->batch, sum_record, t);
	if (r < 0)
		return r;
	t->invalid += r;
	return 0;
}

/* A record like the kernel side emits for a direct read through a virtio disk. */
static void make_record(struct iot_record *r, uint64_t i, uint64_t *now)
{
	memset(r, 0, sizeof(*r));
	*now += 1000 + i % 7919;
	r->kind = IOT_KIND_SYSCALL;
	r->op = i % 3 ? IOT_OP_READ : IOT_OP_WRITE;
	r->syscall = i % 3 ? IOT_SYS_PREAD64 : IOT_SYS_PWRITE64;
	r->driver = IOT_DRV_VIRTIO_BLK;
	r->pid = 4000 + i % 16;
	r->tid = r->pid + i % 4;
	r->actor_tid = r->tid;
	r->dev = 253u << 20;
	r->cgroup_id = 0x2f3a;
	r->inode = 131073 + i % 64;
	r->offset = (i * 4096) % (1ull << 34);
	r->sector = r->offset / 512 + 2048;
	r->len = 4096;
	r->bio_bytes = 4096;
	r->nr_bios = 1;
	r->result = 4096;
	r->flags = IOT_F_DIRECT;
	r->offcpu_ns = 50000 + i % 1000;
	memcpy(r->comm, "fio", 3);
	r->ts[IOT_TS_SYSCALL_ENTER] = *now;
	r->ts[IOT_TS_FS] = *now + 800;
	r->ts[IOT_TS_BIO_QUEUE] = *now + 2100;
	r->ts[IOT_TS_RQ_INSERT] = *now + 2600;
	r->ts[IOT_TS_RQ_ISSUE] = *now + 3100;
	r->ts[IOT_TS_DRIVER] = *now + 3900;
	r->ts[IOT_TS_IRQ] = *now + 45000 + i % 5000;
	r->ts[IOT_TS_RQ_COMPLETE] = *now + 46000 + i % 5000;
	r->ts[IOT_TS_SYSCALL_EXIT] = *now + 52000 + i % 5000;
}

static double ts_sec(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Appends the batch as one frame to the growing stream buffer. */
static int flush(struct frame_batch *b, uint64_t *seq, const Iotracer__ClockSync *cs,
		 uint8_t **buf, size_t *cap, size_t *len)
{
	size_t flen;
	int err;

	if (*cap - *len < frame_batch__bytes(b)) {
		size_t ncap = *cap ? *cap * 2 : 1 << 24;
		uint8_t *p = realloc(*buf, ncap);

		if (!p)
			return -ENOMEM;
		*buf = p;
		*cap = ncap;
	}
	err = frame_batch__encode(b, (*seq)++, cs, *buf + *len, *cap - *len, &flen);
	if (err)
		return err;
	*len += flen;
	frame_batch__reset(b);
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 0) : 2000000;
	size_t per_batch = argc > 2 ? strtoul(argv[2], NULL, 0) : 64;
	int runs = argc > 3 ? atoi(argv[3]) : 5;
	size_t cap = 0, len = 0;
	uint64_t seq = 0, now = 1700000000000000000ull;
	Iotracer__ClockSync cs = { .offset_ns = -1234567, .uncertainty_ns = 25000 };
	struct frame_batch *b;
	struct iot_record rec;
	double wall[64], cpu[64];
	uint8_t *buf = NULL;
	int err = 0;

	if (!n || !per_batch || per_batch > IOT_BATCH_RECORDS_LIMIT || runs < 1 || runs > 64) {
		fprintf(stderr, "usage: %s [records [records-per-batch [runs <= 64]]]\n", argv[0]);
		return 2;
	}
	b = frame_batch__new(per_batch, IOT_FRAME_HDR + IOT_FRAME_MAX_DEFAULT);
	if (!b) {
		fprintf(stderr, "frame_batch__new: %m\n");
		return 1;
	}

	for (uint64_t i = 0; i < n && !err; i++) {
		make_record(&rec, i, &now);
		err = frame_batch__add(b, &rec);
		if (err == -ENOSPC) {	/* the byte budget, before per_batch */
			err = flush(b, &seq, &cs, &buf, &cap, &len);
			if (!err)
				err = frame_batch__add(b, &rec);
		}
		if (!err && frame_batch__count(b) == per_batch)
			err = flush(b, &seq, &cs, &buf, &cap, &len);
	}
	if (!err && frame_batch__count(b))
		err = flush(b, &seq, &cs, &buf, &cap, &len);
	if (err) {
		fprintf(stderr, "encode: %s\n", strerror(-err));
		return 1;
	}
	frame_batch__free(b);
	printf("encoded %llu records in %llu frames, %.1f MiB, %.1f bytes/record\n",
	       (unsigned long long)n, (unsigned long long)seq, len / 1048576.0, (double)len / n);

	for (int run = 0; run < runs; run++) {
		struct totals t = {};
		struct frame_decoder d;
		double w0, c0;
		size_t off;

		frame_decoder__init(&d, IOT_FRAME_MAX_DEFAULT);
		w0 = ts_sec(CLOCK_MONOTONIC);
		c0 = ts_sec(CLOCK_THREAD_CPUTIME_ID);
		for (off = 0; off < len && !err; off += READ_CHUNK)
			err = frame_decoder__feed(&d, buf + off, len - off < READ_CHUNK ? len - off : READ_CHUNK,
						  on_frame, &t);
		if (!err)
			err = frame_decoder__finish(&d);
		wall[run] = ts_sec(CLOCK_MONOTONIC) - w0;
		cpu[run] = ts_sec(CLOCK_THREAD_CPUTIME_ID) - c0;
		if (err || t.records != n || t.invalid || t.frames != seq) {
			fprintf(stderr, "decode: %s (%s); %llu records, %llu invalid, %llu frames\n",
				strerror(-err), frame_decoder__error(&d) ?: "", (unsigned long long)t.records,
				(unsigned long long)t.invalid, (unsigned long long)t.frames);
			frame_decoder__fini(&d);
			return 1;
		}
		frame_decoder__fini(&d);
		printf("run %d: %.3f s wall, %.3f s cpu, %.0f records/s (checksum %llx)\n", run + 1,
		       wall[run], cpu[run], n / wall[run], (unsigned long long)t.sum);
	}
	qsort(wall, runs, sizeof(wall[0]), cmp_double);
	qsort(cpu, runs, sizeof(cpu[0]), cmp_double);
	printf("decode: %.0f records/s (best of %d; median %.0f records/s, %.1f ns/record, %.0f MiB/s)\n",
	       n / wall[0], runs, n / wall[runs / 2], wall[0] * 1e9 / n, len / wall[0] / 1048576.0);
	free(buf);
	return 0;
}
