// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include "output.h"
#include "sbuf.h"

struct output {
	struct output_opts opts;
	uint64_t records;
	uint64_t by_kind[8];
	struct hist total;
	struct hist offcpu;
	struct hist seg[IOT_SEGMENT_COUNT];
};

struct output *output__new(const struct output_opts *opts)
{
	struct output *o = calloc(1, sizeof(*o));

	if (!o)
		return NULL;
	memcpy(&o->opts, opts, opts->sz < sizeof(o->opts) ? opts->sz : sizeof(o->opts));
	if (!o->opts.out)
		o->opts.out = stdout;
	return o;
}

void output__free(struct output *o)
{
	free(o);
}

uint64_t output__records(const struct output *o)
{
	return o->records;
}

/* A kernel dev_t as MAJ:MIN. */
static void sb_kdev(struct sbuf *b, uint32_t kdev)
{
	sb_u64(b, kdev >> 20);
	SB_LIT(b, ":");
	sb_u64(b, kdev & ((1u << 20) - 1));
}

void format_kdev(uint32_t kdev, char *buf, size_t len)
{
	char tmp[24];	/* "4095:1048575" at most */
	struct sbuf b = { tmp, sizeof(tmp), 0 };

	if (!len)
		return;
	sb_kdev(&b, kdev);
	b.w = b.w < len ? b.w : len - 1;
	memcpy(buf, tmp, b.w);
	buf[b.w] = 0;
}

size_t json_escape(const char *s, size_t n, char *buf, size_t len)
{
	size_t w = 0;

	if (!len)
		return 0;
	for (size_t i = 0; i < n && s[i]; i++) {
		unsigned char c = s[i];
		char tmp[8];
		size_t tl;

		if (c == '"' || c == '\\') {
			tmp[0] = '\\';
			tmp[1] = c;
			tl = 2;
		} else if (c < 0x20 || c >= 0x7f) {
			tl = snprintf(tmp, sizeof(tmp), "\\u%04x", c);
		} else {
			tmp[0] = c;
			tl = 1;
		}
		if (w + tl >= len)
			break;
		memcpy(buf + w, tmp, tl);
		w += tl;
	}
	buf[w] = 0;
	return w;
}

static void flag_names(const struct iot_record *r, struct sbuf *b, bool json)
{
	static const struct { uint32_t f; const char *n; } tab[] = {
		{ IOT_F_DIRECT, "direct" }, { IOT_F_SPLIT, "split" }, { IOT_F_MERGED, "merged" },
		{ IOT_F_REMAP, "remap" }, { IOT_F_REQUEUED, "requeued" }, { IOT_F_ERROR, "error" },
		{ IOT_F_OWNER_GONE, "owner-gone" }, { IOT_F_URING_PUNTED, "io-wq" },
		{ IOT_F_URING_POLLED, "polled" }, { IOT_F_URING_INLINE, "inline" },
		{ IOT_F_SYNC, "sync" }, { IOT_F_FUA, "fua" }, { IOT_F_PREFLUSH, "preflush" },
		{ IOT_F_RQ_UNKNOWN, "no-request" }, { IOT_F_SAMPLED, "sampled" },
	};
	bool first = true;

	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		if (!(r->flags & tab[i].f))
			continue;
		if (!first)
			sb_put(b, ",", 1);
		if (json)
			sb_put(b, "\"", 1);
		sb_str(b, tab[i].n);
		if (json)
			sb_put(b, "\"", 1);
		first = false;
	}
}

static int format_text(const struct output *o, const struct iot_record *r, const struct iot_split *sp,
		       char *buf, size_t len)
{
	struct sbuf b = { buf, len, 0 };
	const struct iot_split *s = sp;
	char dev[32], wbuf[24], comm[IOT_COMM_LEN + 1];
	uint64_t t0 = o ? o->opts.t0_ns : 0;
	bool tree = o && o->opts.tree;

	format_kdev(r->dev, dev, sizeof(dev));
	memcpy(comm, r->comm, IOT_COMM_LEN);
	comm[IOT_COMM_LEN] = 0;
	sb_printf(&b, "%12.6f %-15s %7u %7u %-15s %c %-7s",
		  s->first_ns >= t0 ? (s->first_ns - t0) / 1e9 : 0.0, comm, r->pid, r->tid,
		  iot_record_what(r, wbuf, sizeof(wbuf)), iot_op_letter(r->op), r->dev ? dev : "-");
	if (r->sector != IOT_UNKNOWN_U64)
		sb_printf(&b, " sector %-10" PRIu64, (uint64_t)r->sector);
	else
		sb_printf(&b, " sector %-10s", "-");
	sb_printf(&b, " len %-7u", r->len);
	if (r->offset != IOT_UNKNOWN_U64 && r->kind != IOT_KIND_BIO && r->kind != IOT_KIND_AIO)
		sb_printf(&b, " off %" PRIu64, (uint64_t)r->offset);
	sb_printf(&b, " res %" PRId64 " lat %.1fus", (int64_t)r->result, s->total_ns / 1e3);
	if (!tree) {
		sb_printf(&b, " [");
		for (int i = 0; i < s->n; i++)
			sb_printf(&b, "%s%s %.1f", i ? " " : "", s->name[i], s->ns[i] / 1e3);
		sb_printf(&b, "]");
	}
	if (r->offcpu_ns)
		sb_printf(&b, " offcpu %.1fus", r->offcpu_ns / 1e3);
	if (r->nr_bios > 1)
		sb_printf(&b, " bios %u", r->nr_bios);
	if (r->pc_pages || r->pc_misses || r->pc_dirtied)
		sb_printf(&b, " pc %u/%u/%u", r->pc_pages, r->pc_misses, r->pc_dirtied);
	if (r->flags & (IOT_F_ATTR_WRITEBACK | IOT_F_ATTR_IOWQ | IOT_F_ATTR_NONE))
		sb_printf(&b, " by %s(tid %u)", iot_attribution(r), r->actor_tid);
	if (r->flags & ~(IOT_F_ATTR_WRITEBACK | IOT_F_ATTR_IOWQ | IOT_F_ATTR_NONE)) {
		sb_printf(&b, " {");
		flag_names(r, &b, false);
		sb_printf(&b, "}");
	}
	if (tree) {
		for (int i = 0; i < s->n; i++)
			sb_printf(&b, "\n    %s %-12s %10.1fus  (%s)", i + 1 < s->n ? "├─" : "└─", s->name[i],
				  s->ns[i] / 1e3, iot_ts_name(s->from_ts[i]));
	}
	return b.w < len ? (int)b.w : -ENOSPC;
}

static int format_json(const struct iot_record *r, const struct iot_split *sp, char *buf, size_t len)
{
	struct sbuf b = { buf, len, 0 };
	const struct iot_split *s = sp;
	char comm[IOT_COMM_LEN * 6 + 1];
	bool first;

	json_escape(r->comm, IOT_COMM_LEN, comm, sizeof(comm));
	SB_LIT(&b, "{\"type\":\"io\"");
	sb_kv_str(&b, "kind", iot_kind_name(r->kind));
	if (r->syscall)
		sb_kv_str(&b, "syscall", iot_syscall_name(r->syscall));
	sb_kv_str(&b, "op", iot_op_name(r->op));
	sb_kv_u64(&b, "pid", r->pid);
	sb_kv_u64(&b, "tid", r->tid);
	sb_kv_u64(&b, "actor_tid", r->actor_tid);
	sb_kv_str(&b, "comm", comm);
	sb_kv_u64(&b, "cgroup", r->cgroup_id);
	sb_kv_str(&b, "attribution", iot_attribution(r));
	/* Appended, not snprintf'd: this runs for every record. */
	SB_LIT(&b, ",\"dev\":\"");
	if (r->dev)
		sb_kdev(&b, r->dev);
	SB_LIT(&b, "\"");
	sb_kv_u64(&b, "inode", r->inode);
	if (r->offset != IOT_UNKNOWN_U64)
		sb_kv_u64(&b, "offset", r->offset);
	else
		SB_LIT(&b, ",\"offset\":null");
	if (r->sector != IOT_UNKNOWN_U64)
		sb_kv_u64(&b, "sector", r->sector);
	else
		SB_LIT(&b, ",\"sector\":null");
	sb_kv_u64(&b, "len", r->len);
	sb_kv_u64(&b, "bio_bytes", r->bio_bytes);
	sb_kv_u64(&b, "nr_bios", r->nr_bios);
	SB_LIT(&b, ",\"result\":");
	sb_i64(&b, r->result);
	if (r->driver)
		sb_kv_str(&b, "driver", iot_driver_name(r->driver));
	if (r->vq_gpa)
		sb_kv_u64(&b, "virtio_hdr_gpa", r->vq_gpa);
	if (r->kind == IOT_KIND_URING) {
		SB_LIT(&b, ",\"uring\":{\"opcode\":");
		sb_u64(&b, r->uring_opcode);
		sb_kv_u64(&b, "user_data", r->user_data);
		SB_LIT(&b, "}");
	}
	SB_LIT(&b, ",\"pagecache\":{\"pages\":");
	sb_u64(&b, r->pc_pages);
	sb_kv_u64(&b, "misses", r->pc_misses);
	sb_kv_u64(&b, "dirtied", r->pc_dirtied);
	SB_LIT(&b, "},\"flags\":[");
	flag_names(r, &b, true);
	SB_LIT(&b, "],\"ts_ns\":{");
	first = true;
	for (int i = 0; i < IOT_TS_MAX; i++) {
		if (!r->ts[i])
			continue;
		if (!first)
			SB_LIT(&b, ",");
		SB_LIT(&b, "\"");
		sb_str(&b, iot_ts_name(i));
		SB_LIT(&b, "\":");
		sb_u64(&b, r->ts[i]);
		first = false;
	}
	SB_LIT(&b, "},\"split_ns\":[");
	for (int i = 0; i < s->n; i++) {
		if (i)
			SB_LIT(&b, ",");
		SB_LIT(&b, "{\"layer\":\"");
		sb_str(&b, s->name[i]);
		SB_LIT(&b, "\",\"from\":\"");
		sb_str(&b, iot_ts_name(s->from_ts[i]));
		SB_LIT(&b, "\",\"ns\":");
		sb_u64(&b, s->ns[i]);
		SB_LIT(&b, "}");
	}
	SB_LIT(&b, "],\"total_ns\":");
	sb_u64(&b, s->total_ns);
	sb_kv_u64(&b, "offcpu_ns", r->offcpu_ns);
	SB_LIT(&b, "}");
	if (b.w >= len)
		return -ENOSPC;
	buf[b.w] = 0;
	return (int)b.w;
}

/* The split of one record serves both the summary and the line printed. */
int output_format_text(const struct output *o, const struct iot_record *r, char *buf, size_t len)
{
	struct iot_split s;

	iot_record_split(r, &s);
	return format_text(o, r, &s, buf, len);
}

int output_format_json(const struct iot_record *r, char *buf, size_t len)
{
	struct iot_split s;

	iot_record_split(r, &s);
	return format_json(r, &s, buf, len);
}

static void account(struct output *o, const struct iot_record *r, const struct iot_split *sp)
{
	const struct iot_split *s = sp;

	o->records++;
	if (r->kind < 8)
		o->by_kind[r->kind]++;
	hist_add(&o->total, s->total_ns);
	if (r->offcpu_ns)
		hist_add(&o->offcpu, r->offcpu_ns);
	for (int i = 0; i < s->n; i++)
		if (s->seg[i] >= 0)
			hist_add(&o->seg[s->seg[i]], s->ns[i]);
}

void output__record(struct output *o, const struct iot_record *r)
{
	output__record_src_ext(o, r, NULL, false, NULL, NULL);
}

void output__record_src(struct output *o, const struct iot_record *r, const char *src, bool guest_clock)
{
	output__record_src_ext(o, r, src, guest_clock, NULL, NULL);
}

void output__record_src_ext(struct output *o, const struct iot_record *r, const char *src, bool guest_clock,
			    const char *json_extra, const char *text_extra)
{
	struct iot_split s;
	char buf[4096], esc[512];
	int n;

	iot_record_split(r, &s);
	account(o, r, &s);
	if (!o->opts.per_request)
		return;
	if (o->opts.format == OUT_JSON)
		n = format_json(r, &s, buf, sizeof(buf));
	else
		n = format_text(o, r, &s, buf, sizeof(buf));
	if (n <= 0)
		return;
	if (o->opts.format == OUT_JSON) {
		/* {"type":"io" then the guest, then the rest of the object, then the extra fields. */
		static const char head[] = "{\"type\":\"io\"";

		if (json_extra && n > 0 && buf[n - 1] == '}')
			buf[--n] = 0;
		/* Plain puts: this runs for every joined guest request, and printf would rescan each string. */
		if (src) {
			json_escape(src, strlen(src), esc, sizeof(esc));
			fputs(head, o->opts.out);
			fputs(",\"guest\":\"", o->opts.out);
			fputs(esc, o->opts.out);
			fputs(guest_clock ? "\",\"clock\":\"guest\"" : "\"", o->opts.out);
			fputs(buf + sizeof(head) - 1, o->opts.out);
		} else {
			fputs(buf, o->opts.out);
		}
		if (json_extra) {
			fputc(',', o->opts.out);
			fputs(json_extra, o->opts.out);
			fputc('}', o->opts.out);
		}
		fputc('\n', o->opts.out);
	} else {
		if (src)
			fprintf(o->opts.out, "[%s%s] ", src, guest_clock ? " guest clock" : "");
		fputs(buf, o->opts.out);
		if (text_extra)
			fprintf(o->opts.out, " %s", text_extra);
		fputc('\n', o->opts.out);
	}
}

void output__layer(struct output *o, const char *layer, const char *state, const char *route)
{
	char esc[256];

	if (o->opts.format == OUT_JSON) {
		json_escape(route, strlen(route), esc, sizeof(esc));
		fprintf(o->opts.out, "{\"type\":\"layer\",\"layer\":\"%s\",\"state\":\"%s\",\"route\":\"%s\"}\n",
			layer, state, esc);
	}
}

void output__stats(struct output *o, const uint64_t c[IOT_CNT_MAX], uint64_t user_dropped)
{
	if (o->opts.format != OUT_JSON)
		return;
	fprintf(o->opts.out, "{\"type\":\"stats\",\"records\":%" PRIu64, o->records);
	for (int i = 0; i < IOT_CNT_MAX; i++)
		fprintf(o->opts.out, ",\"%s\":%" PRIu64, iot_counter_name(i), c[i]);
	fprintf(o->opts.out, ",\"user_dropped\":%" PRIu64 "}\n", user_dropped);
	fflush(o->opts.out);
}

static void pct_line(FILE *f, const char *name, const struct hist *h)
{
	fprintf(f, "  %-13s %9" PRIu64 " %10.1f %10.1f %10.1f %10.1f %10.1f\n", name, h->count,
		h->count ? (double)h->sum / h->count / 1e3 : 0.0, hist_percentile(h, 50) / 1e3,
		hist_percentile(h, 90) / 1e3, hist_percentile(h, 99) / 1e3, h->max / 1e3);
}

void output__summary(struct output *o, FILE *f)
{
	fprintf(f, "\n%" PRIu64 " requests (syscall %" PRIu64 ", io_uring %" PRIu64 ", aio %" PRIu64
		", bio %" PRIu64 ")\n", o->records, o->by_kind[IOT_KIND_SYSCALL], o->by_kind[IOT_KIND_URING],
		o->by_kind[IOT_KIND_AIO], o->by_kind[IOT_KIND_BIO]);
	fprintf(f, "  %-13s %9s %10s %10s %10s %10s %10s\n", "layer (us)", "count", "avg", "p50", "p90", "p99", "max");
	pct_line(f, "total", &o->total);
	for (int i = 0; i < IOT_SEGMENT_COUNT; i++)
		if (o->seg[i].count)
			pct_line(f, iot_segment_names[i], &o->seg[i]);
	if (o->offcpu.count)
		pct_line(f, "off-cpu", &o->offcpu);
	fprintf(f, "\n");
	hist_print_log2(&o->total, f, "total latency");
	for (int i = 0; i < IOT_SEGMENT_COUNT; i++) {
		char title[64];

		if (!o->seg[i].count)
			continue;
		snprintf(title, sizeof(title), "layer %s", iot_segment_names[i]);
		fprintf(f, "\n");
		hist_print_log2(&o->seg[i], f, title);
	}
	fflush(f);
}

static void json_hist(FILE *f, const char *name, const struct hist *h, bool first)
{
	uint64_t slots[64];
	bool fs = true;

	hist_log2(h, slots);
	fprintf(f, "%s\"%s\":{\"count\":%" PRIu64 ",\"sum_ns\":%" PRIu64 ",\"p50_ns\":%" PRIu64 ",\"p90_ns\":%" PRIu64
		",\"p99_ns\":%" PRIu64 ",\"max_ns\":%" PRIu64 ",\"log2_ns\":{", first ? "" : ",", name, h->count, h->sum,
		hist_percentile(h, 50), hist_percentile(h, 90), hist_percentile(h, 99), h->max);
	for (int k = 0; k < 64; k++) {
		if (!slots[k])
			continue;
		fprintf(f, "%s\"%d\":%" PRIu64, fs ? "" : ",", k, slots[k]);
		fs = false;
	}
	fprintf(f, "}}");
}

void output__summary_json(struct output *o)
{
	FILE *f = o->opts.out;

	fprintf(f, "{\"type\":\"summary\",\"records\":%" PRIu64 ",\"layers\":{", o->records);
	json_hist(f, "total", &o->total, true);
	for (int i = 0; i < IOT_SEGMENT_COUNT; i++)
		if (o->seg[i].count)
			json_hist(f, iot_segment_names[i], &o->seg[i], false);
	if (o->offcpu.count)
		json_hist(f, "off-cpu", &o->offcpu, false);
	fprintf(f, "}}\n");
	fflush(f);
}

void output__merge_khist(struct output *o, int seg, const struct iot_khist *k)
{
	if (seg == IOT_SEG_TOTAL)
		hist_merge_k(&o->total, k);
	else if (seg == IOT_SEG_OFFCPU)
		hist_merge_k(&o->offcpu, k);
	else if (seg >= 0 && seg < IOT_SEGMENT_COUNT)
		hist_merge_k(&o->seg[seg], k);
}

void output__set_kind_counts(struct output *o, const uint64_t c[IOT_CNT_MAX])
{
	o->by_kind[IOT_KIND_SYSCALL] = c[IOT_CNT_REQ_SYSCALL];
	o->by_kind[IOT_KIND_URING] = c[IOT_CNT_REQ_URING];
	o->by_kind[IOT_KIND_AIO] = c[IOT_CNT_REQ_AIO];
	o->by_kind[IOT_KIND_BIO] = c[IOT_CNT_REQ_BIO];
	o->records = c[IOT_CNT_REQ_SYSCALL] + c[IOT_CNT_REQ_URING] + c[IOT_CNT_REQ_AIO] + c[IOT_CNT_REQ_BIO];
}

void output__reset_summary(struct output *o)
{
	hist_reset(&o->total);
	hist_reset(&o->offcpu);
	for (int i = 0; i < IOT_SEGMENT_COUNT; i++)
		hist_reset(&o->seg[i]);
	memset(o->by_kind, 0, sizeof(o->by_kind));
	o->records = 0;
}
