// SPDX-License-Identifier: GPL-2.0
/*
 * The Perfetto writer. Each request becomes, on its machine's tracks:
 *  - an instant on the track of the thread it is attributed to;
 *  - one slice per segment of its latency split, on the track of that
 *    segment's layer, all linked by one flow (docs/perfetto.md).
 *
 * Requests overlap (many in flight on one disk), and a Perfetto track
 * only holds slices that nest, so each layer of a machine is a set of
 * lanes: a slice goes on the first lane whose last slice ended by the time
 * it begins. Packets go to a fixed buffer, whole, and the buffer to the
 * file whole: the file is a valid Trace at every write.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "names.h"
#include "output.h"
#include "perfetto.h"
#include "perfetto_trace.pb-c.h"

#define BUF_BYTES (256 * 1024)
#define PACKET_MAX 4096			/* a packet here is a few hundred bytes */
#define SEQ_ID 1			/* trusted_packet_sequence_id of every packet */
#define SEEN_BITS 12
#define SEEN_MAX (1u << SEEN_BITS)	/* tracks remembered as described */
#define MACHINES_MAX 16
#define LANES_MAX 64			/* lanes per layer per machine */
#define ANN_MAX 20
#define SLICES_MAX (IOT_TS_MAX + 2 + PERFETTO_HOST_IO_MAX)

typedef Perfetto__Protos__TracePacket Packet;
typedef Perfetto__Protos__TrackEvent Event;
typedef Perfetto__Protos__TrackDescriptor Desc;
typedef Perfetto__Protos__DebugAnnotation Ann;

enum player { PL_SYSCALL, PL_FS, PL_BLOCK, PL_DEVICE, PL_VIRTIO, PL_QEMU, PL_HOST_IO, PL_MAX };
static const char *const player_names[PL_MAX] = {
	"syscall", "fs", "block", "device", "virtio", "qemu", "host_io",
};

struct machine {
	char name[64];
	uint64_t uuid;
	bool local;			/* this machine: processes get Perfetto's own process tracks */
	uint8_t nlanes[PL_MAX];
	uint64_t lane_end[PL_MAX][LANES_MAX];
};

struct perfetto {
	struct perfetto_opts opts;
	char local[64];
	uint8_t *buf;
	size_t len;
	int err;
	bool started;
	uint64_t next_flow;
	uint64_t seen[SEEN_MAX];
	struct machine m[MACHINES_MAX];
	int nm, evict, last;
	struct perfetto_stats st;
};

struct anns {
	int n;
	Ann a[ANN_MAX];
	Ann *pa[ANN_MAX];
};

struct slice {
	int layer;
	const char *name;
	uint64_t begin, end;
	struct anns *ann;
	struct machine *m;
};

struct perfetto *perfetto__new(const struct perfetto_opts *opts)
{
	struct perfetto *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	memcpy(&p->opts, opts, opts->sz < sizeof(p->opts) ? opts->sz : sizeof(p->opts));
	snprintf(p->local, sizeof(p->local), "%s", p->opts.machine ?: "this machine");
	p->opts.machine = p->local;
	p->buf = malloc(BUF_BYTES);
	if (!p->buf) {
		free(p);
		errno = ENOMEM;
		return NULL;
	}
	return p;
}

void perfetto__free(struct perfetto *p)
{
	if (!p)
		return;
	perfetto__flush(p);
	free(p->buf);
	free(p);
}

void perfetto__stats(const struct perfetto *p, struct perfetto_stats *ret)
{
	*ret = p->st;
}

int perfetto__flush(struct perfetto *p)
{
	size_t off = 0;

	while (!p->err && off < p->len) {
		ssize_t n = write(p->opts.fd, p->buf + off, p->len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* A trace cut here still ends on a whole packet, unless the disk took part of one. */
			p->err = n < 0 ? -errno : -EIO;
			break;
		}
		off += n;
		p->st.bytes += n;
	}
	p->len = 0;
	return p->err;
}

static size_t put_varint(uint8_t *o, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		o[n++] = (uint8_t)v | 0x80;
		v >>= 7;
	}
	o[n++] = (uint8_t)v;
	return n;
}

/* Appends one Trace.packet field (tag, length, TracePacket). */
static void put_packet(struct perfetto *p, Packet *pk, uint64_t ts)
{
	size_t n, hdr;
	uint8_t *o;

	pk->has_timestamp = 1;
	pk->timestamp = ts;
	pk->has_trusted_packet_sequence_id = 1;
	pk->trusted_packet_sequence_id = SEQ_ID;
	if (!p->started) {
		/* Nothing on this sequence depends on earlier state: say so once, up front. */
		pk->has_sequence_flags = 1;
		pk->sequence_flags = PERFETTO__PROTOS__TRACE_PACKET__SEQUENCE_FLAGS__SEQ_INCREMENTAL_STATE_CLEARED;
	}
	n = perfetto__protos__trace_packet__get_packed_size(pk);
	if (n > PACKET_MAX) {
		p->st.too_big++;
		return;
	}
	if (p->len + 1 + 10 + n > BUF_BYTES)
		perfetto__flush(p);
	o = p->buf + p->len;
	o[0] = (1 << 3) | 2;	/* Trace.packet, length-delimited */
	hdr = 1 + put_varint(o + 1, n);
	perfetto__protos__trace_packet__pack(pk, o + hdr);
	p->len += hdr + n;
	p->started = true;
	p->st.packets++;
}

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

static uint64_t track_uuid(uint64_t parent, char kind, uint64_t a, uint64_t b)
{
	uint64_t u = mix64(parent ^ mix64(((uint64_t)(unsigned char)kind << 56) ^ a ^ mix64(b + 1)));

	return u ?: 1;
}

/* True when the track was described before (and still remembered); marks it described. */
static bool seen(struct perfetto *p, uint64_t uuid)
{
	uint32_t s = (uuid * 0x9e3779b97f4a7c15ULL) >> (64 - SEEN_BITS);

	if (p->seen[s] == uuid)
		return true;
	p->seen[s] = uuid;
	return false;
}

static void describe(struct perfetto *p, Desc *d, uint64_t ts)
{
	Packet pk = PERFETTO__PROTOS__TRACE_PACKET__INIT;

	pk.track_descriptor = d;
	put_packet(p, &pk, ts);
}

static void machine_track(struct perfetto *p, struct machine *m, uint64_t ts)
{
	Desc d = PERFETTO__PROTOS__TRACK_DESCRIPTOR__INIT;

	if (seen(p, m->uuid))
		return;
	d.has_uuid = 1;
	d.uuid = m->uuid;
	d.name = m->name;
	describe(p, &d, ts);
}

static struct machine *machine_get(struct perfetto *p, const char *name)
{
	struct machine *m;
	uint64_t h = 0xcbf29ce484222325ULL;

	if (!name)
		name = p->local;
	if (p->nm && !strcmp(p->m[p->last].name, name))
		return &p->m[p->last];
	for (int i = 0; i < p->nm; i++) {
		if (!strcmp(p->m[i].name, name)) {
			p->last = i;
			return &p->m[i];
		}
	}
	/*
	 * A new machine. Past the bound one starts over (its tracks keep their
	 * ids), never the one just returned: a request may use two machines.
	 */
	if (p->nm < MACHINES_MAX) {
		p->last = p->nm++;
	} else {
		if (p->evict % MACHINES_MAX == p->last)
			p->evict++;
		p->last = p->evict++ % MACHINES_MAX;
	}
	m = &p->m[p->last];
	memset(m, 0, sizeof(*m));
	snprintf(m->name, sizeof(m->name), "%s", name);
	for (const char *c = m->name; *c; c++)
		h = (h ^ (unsigned char)*c) * 0x100000001b3ULL;
	m->uuid = mix64(h) ?: 1;
	m->local = !strcmp(m->name, p->local);
	return m;
}

static uint64_t layer_track(struct perfetto *p, struct machine *m, int layer, int lane, uint64_t ts)
{
	uint64_t uuid = track_uuid(m->uuid, 'L', layer, lane);
	Desc d = PERFETTO__PROTOS__TRACK_DESCRIPTOR__INIT;
	char name[32];

	machine_track(p, m, ts);
	if (seen(p, uuid))
		return uuid;
	if (lane)
		snprintf(name, sizeof(name), "%s #%d", player_names[layer], lane + 1);
	else
		snprintf(name, sizeof(name), "%s", player_names[layer]);
	d.has_uuid = 1;
	d.uuid = uuid;
	d.name = name;
	d.has_parent_uuid = 1;
	d.parent_uuid = m->uuid;
	describe(p, &d, ts);
	return uuid;
}

/*
 * The track of the thread a request is attributed to, under its process.
 * This machine's processes are Perfetto process and thread tracks; a
 * guest's are named tracks under the guest, so that its pids never merge
 * with the host's.
 */
static uint64_t thread_track(struct perfetto *p, struct machine *m, const struct iot_record *r, uint64_t ts)
{
	Perfetto__Protos__ProcessDescriptor pd = PERFETTO__PROTOS__PROCESS_DESCRIPTOR__INIT;
	Perfetto__Protos__ThreadDescriptor td = PERFETTO__PROTOS__THREAD_DESCRIPTOR__INIT;
	uint64_t puuid = track_uuid(m->uuid, 'P', r->pid, 0), tuuid = track_uuid(m->uuid, 'T', r->tid, r->pid);
	bool native = m->local && r->pid;
	char comm[IOT_COMM_LEN + 1], name[IOT_COMM_LEN + 32];
	Desc d = PERFETTO__PROTOS__TRACK_DESCRIPTOR__INIT;

	if (seen(p, tuuid))
		return tuuid;
	memcpy(comm, r->comm, IOT_COMM_LEN);
	comm[IOT_COMM_LEN] = 0;
	if (!native)
		machine_track(p, m, ts);
	/* The process track, always re-described with its thread: cheaper than remembering it too. */
	d.has_uuid = 1;
	d.uuid = puuid;
	if (native) {
		pd.has_pid = 1;
		pd.pid = r->pid;
		pd.process_name = comm;
		d.process = &pd;
	} else {
		snprintf(name, sizeof(name), "%s %u", r->pid ? comm : "kernel", r->pid);
		d.name = name;
		d.has_parent_uuid = 1;
		d.parent_uuid = m->uuid;
	}
	describe(p, &d, ts);
	d = (Desc)PERFETTO__PROTOS__TRACK_DESCRIPTOR__INIT;
	d.has_uuid = 1;
	d.uuid = tuuid;
	d.has_parent_uuid = 1;
	d.parent_uuid = puuid;
	if (native) {
		td.has_pid = 1;
		td.pid = r->pid;
		td.has_tid = 1;
		td.tid = r->tid;
		td.thread_name = comm;
		d.thread = &td;
	} else {
		snprintf(name, sizeof(name), "%s %u", comm, r->tid);
		d.name = name;
	}
	describe(p, &d, ts);
	return tuuid;
}

/* The first lane of the layer free at begin; a new one if none is. */
static int lane_pick(struct perfetto *p, struct machine *m, int layer, uint64_t begin, uint64_t end)
{
	uint64_t *e = m->lane_end[layer];
	int best = 0;

	for (int i = 0; i < m->nlanes[layer]; i++) {
		if (e[i] <= begin) {
			e[i] = end;
			return i;
		}
		if (e[i] < e[best])
			best = i;
	}
	if (m->nlanes[layer] < LANES_MAX) {
		e[m->nlanes[layer]] = end;
		return m->nlanes[layer]++;
	}
	p->st.lane_full++;
	if (end > e[best])
		e[best] = end;
	return best;
}

static Ann *ann_add(struct anns *a, const char *name)
{
	Ann *x;

	if (a->n == ANN_MAX)
		return NULL;
	x = &a->a[a->n];
	*x = (Ann)PERFETTO__PROTOS__DEBUG_ANNOTATION__INIT;
	x->name = (char *)name;
	a->pa[a->n++] = x;
	return x;
}

static void ann_u64(struct anns *a, const char *name, uint64_t v)
{
	Ann *x = ann_add(a, name);

	if (x) {
		x->value_case = PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_UINT_VALUE;
		x->uint_value = v;
	}
}

static void ann_i64(struct anns *a, const char *name, int64_t v)
{
	Ann *x = ann_add(a, name);

	if (x) {
		x->value_case = PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_INT_VALUE;
		x->int_value = v;
	}
}

static void ann_str(struct anns *a, const char *name, const char *v)
{
	Ann *x = ann_add(a, name);

	if (x) {
		x->value_case = PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_STRING_VALUE;
		x->string_value = (char *)v;
	}
}

/* The layer track a segment is drawn on, by the stamp it starts at. */
static int seg_layer(const struct iot_record *r, int from_ts)
{
	switch (from_ts) {
	case IOT_TS_FS:
	case IOT_TS_PAGECACHE:
		return PL_FS;
	case IOT_TS_BIO_QUEUE:
	case IOT_TS_RQ_INSERT:
	case IOT_TS_IRQ:
	case IOT_TS_RQ_COMPLETE:
	case IOT_TS_BIO_END:
		return PL_BLOCK;
	case IOT_TS_RQ_ISSUE:
	case IOT_TS_DRIVER:
		return r->driver == IOT_DRV_VIRTIO_BLK ? PL_VIRTIO : PL_DEVICE;
	default:
		return PL_SYSCALL;
	}
}

static void slice_add(struct slice *s, int *n, int layer, const char *name, uint64_t begin, uint64_t end,
		      struct anns *ann, struct machine *m)
{
	if (*n == SLICES_MAX || !begin)
		return;
	s[(*n)++] = (struct slice){ layer, name, begin, end < begin ? begin : end, ann, m };
}

static void emit(struct perfetto *p, const struct iot_record *r, const char *src, bool guest_clock,
		 const struct perfetto_host *hx)
{
	static struct anns ra, ha, ia[PERFETTO_HOST_IO_MAX];
	char wbuf[24], dev[32], comm[IOT_COMM_LEN + 1];
	struct machine *m = machine_get(p, src), *hm = NULL;
	struct slice sl[SLICES_MAX];
	struct iot_split sp;
	uint64_t prev_end = 0, flow, first;
	const char *w = iot_record_what(r, wbuf, sizeof(wbuf));
	int n = 0;

	iot_record_split(r, &sp);
	first = sp.first_ns;
	if (!first)
		return;
	memcpy(comm, r->comm, IOT_COMM_LEN);
	comm[IOT_COMM_LEN] = 0;
	format_kdev(r->dev, dev, sizeof(dev));

	ra.n = 0;
	ann_u64(&ra, "pid", r->pid);
	ann_u64(&ra, "tid", r->tid);
	ann_str(&ra, "comm", comm);
	ann_str(&ra, "call", w);
	ann_str(&ra, "op", iot_op_name(r->op));
	ann_str(&ra, "dev", dev);
	if (r->inode)
		ann_u64(&ra, "inode", r->inode);
	if (r->offset != IOT_UNKNOWN_U64)
		ann_u64(&ra, "offset", r->offset);
	if (r->sector != IOT_UNKNOWN_U64)
		ann_u64(&ra, "sector", r->sector);
	ann_u64(&ra, "len", r->len);
	ann_i64(&ra, "result", r->result);
	if (guest_clock)
		ann_str(&ra, "clock", "guest");

	/* The segments, kept in time order even where the stamps are not (the flow runs forward). */
	for (int i = 0; i < sp.n; i++) {
		uint64_t b = r->ts[sp.from_ts[i]];

		if (b < prev_end)
			b = prev_end;
		slice_add(sl, &n, seg_layer(r, sp.from_ts[i]), sp.name[i], b, b + sp.ns[i], &ra, m);
		prev_end = b + sp.ns[i];
	}

	if (hx) {
		uint64_t hs = 0;

		hm = machine_get(p, hx->machine);
		if (hx->gpa)
			ann_u64(&ra, "gpa", hx->gpa);
		ann_u64(&ra, "qemu_pid", hx->qemu_pid);
		ann_str(&ra, "match", hx->match);
		ha.n = 0;
		ann_u64(&ha, "qemu_pid", hx->qemu_pid);
		if (hx->gpa)
			ann_u64(&ha, "gpa", hx->gpa);
		ann_str(&ha, "match", hx->match);
		ann_str(&ha, "guest", m->name);
		ann_str(&ha, "op", iot_op_name(r->op));
		if (r->sector != IOT_UNKNOWN_U64)
			ann_u64(&ha, "sector", r->sector);
		ann_u64(&ha, "len", r->len);
		if (guest_clock)
			ann_str(&ha, "clock", "guest");
		for (int i = 0; i < hx->nio && i < PERFETTO_HOST_IO_MAX; i++) {
			const struct perfetto_host_io *io = &hx->io[i];
			struct anns *a = &ia[i];

			a->n = 0;
			ann_u64(a, "qemu_pid", hx->qemu_pid);
			ann_u64(a, "tid", io->tid);
			ann_str(a, "call", io->call ?: "?");
			ann_u64(a, "offset", io->offset);
			ann_u64(a, "len", io->len);
			if (io->sector != IOT_UNKNOWN_U64)
				ann_u64(a, "sector", io->sector);
			if (hx->gpa)
				ann_u64(a, "gpa", hx->gpa);
			slice_add(sl, &n, PL_HOST_IO, "host_io", io->start_ns, io->end_ns, a, hm);
			if (io->start_ns && (!hs || io->start_ns < hs))
				hs = io->start_ns;
		}
		if (hx->kick_ns && hx->submit_ns)
			slice_add(sl, &n, PL_QEMU, "kick_to_qemu", hx->kick_ns, hx->submit_ns, &ha, hm);
		if (hx->submit_ns && hs)
			slice_add(sl, &n, PL_QEMU, "qemu_to_host", hx->submit_ns, hs, &ha, hm);
		/* Time order, stable: at a tie the guest's slice (added first) comes first. */
		for (int i = 1; i < n; i++) {
			struct slice t = sl[i];
			int j = i;

			for (; j > 0 && sl[j - 1].begin > t.begin; j--)
				sl[j] = sl[j - 1];
			sl[j] = t;
		}
	}

	/* Who asked: an instant on the thread's track. */
	{
		Packet pk = PERFETTO__PROTOS__TRACE_PACKET__INIT;
		Event ev = PERFETTO__PROTOS__TRACK_EVENT__INIT;

		ev.has_type = 1;
		ev.type = PERFETTO__PROTOS__TRACK_EVENT__TYPE__TYPE_INSTANT;
		ev.has_track_uuid = 1;
		ev.track_uuid = thread_track(p, m, r, first);
		ev.name = (char *)w;
		ev.n_debug_annotations = ra.n;
		ev.debug_annotations = ra.pa;
		pk.track_event = &ev;
		put_packet(p, &pk, first);
	}

	flow = ++p->next_flow;
	for (int i = 0; i < n; i++) {
		const struct slice *s = &sl[i];
		Packet pk = PERFETTO__PROTOS__TRACE_PACKET__INIT;
		Event ev = PERFETTO__PROTOS__TRACK_EVENT__INIT;
		int lane = lane_pick(p, s->m, s->layer, s->begin, s->end);
		uint64_t track = layer_track(p, s->m, s->layer, lane, s->begin);

		ev.has_type = 1;
		ev.type = PERFETTO__PROTOS__TRACK_EVENT__TYPE__TYPE_SLICE_BEGIN;
		ev.has_track_uuid = 1;
		ev.track_uuid = track;
		ev.name = (char *)s->name;
		ev.n_debug_annotations = s->ann->n;
		ev.debug_annotations = s->ann->pa;
		if (i + 1 < n) {
			ev.n_flow_ids = 1;
			ev.flow_ids = &flow;
		} else {
			ev.n_terminating_flow_ids = 1;
			ev.terminating_flow_ids = &flow;
		}
		pk.track_event = &ev;
		put_packet(p, &pk, s->begin);

		pk = (Packet)PERFETTO__PROTOS__TRACE_PACKET__INIT;
		ev = (Event)PERFETTO__PROTOS__TRACK_EVENT__INIT;
		ev.has_type = 1;
		ev.type = PERFETTO__PROTOS__TRACK_EVENT__TYPE__TYPE_SLICE_END;
		ev.has_track_uuid = 1;
		ev.track_uuid = track;
		pk.track_event = &ev;
		put_packet(p, &pk, s->end);
	}
	p->st.requests++;
}

void perfetto__record(struct perfetto *p, const struct iot_record *r, const char *src, bool guest_clock)
{
	emit(p, r, src, guest_clock, NULL);
}

void perfetto__record_host(struct perfetto *p, const struct iot_record *r, const char *src, bool guest_clock,
			   const struct perfetto_host *host)
{
	emit(p, r, src, guest_clock, host);
}
