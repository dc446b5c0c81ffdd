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
#include <stdarg.h>
#include <inttypes.h>
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
#define RINGS_MAX 16			/* io_uring rings with lanes remembered */
#define RING_WORKERS 8			/* io-worker tracks per ring */
#define REAP_IDS 256			/* reap flows ended per packet */
#define REAP_MAX 4096			/* CQEs one reap record may end flows for */
#define LINKS_BITS 8			/* linked requests awaiting their successor's record */
#define TLANES_MAX 32			/* per-thread lane sets remembered (QEMU threads) */
#define SLICES_MAX (IOT_TS_MAX + 2 + PERFETTO_HOST_IO_MAX)

typedef Perfetto__Protos__TracePacket Packet;
typedef Perfetto__Protos__TrackEvent Event;
typedef Perfetto__Protos__TrackDescriptor Desc;
typedef Perfetto__Protos__DebugAnnotation Ann;
typedef Perfetto__Protos__InternedData Interned;
typedef Perfetto__Protos__EventName EvName;
typedef Perfetto__Protos__DebugAnnotationName AnnName;
typedef Perfetto__Protos__InternedString IStr;

/*
 * Interning: event and annotation names are sent once, in an InternedData
 * packet, then referred to by iid. The tables are bounded; a name that does
 * not fit (table full, or too long) is written inline as before.
 */
#define INTERN_SLOTS 512
#define INTERN_NAME 48
#define PENDING_MAX (ANN_MAX + 2)

struct intern_table {
	struct {
		uint64_t iid;		/* 0: free */
		char name[INTERN_NAME];
	} e[INTERN_SLOTS];
	uint64_t next;
	int used;
};

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

/* A set of lanes: tracks under one parent that slices spread over so that they nest. */
struct lanes {
	uint8_t n;
	uint64_t end[LANES_MAX];
};

/*
 * An io_uring ring, as a track group under its process: lanes of requests
 * (submission to CQE), one track per io-worker that ran its requests, and
 * a track of the moments the program reaped its CQEs.
 */
struct ring {
	uint64_t ctx;			/* struct io_ring_ctx address: the ring's identity */
	uint64_t uuid;			/* the group's track */
	uint64_t puuid;			/* its process's track */
	struct lanes req;
	int nw;
	uint32_t wtid[RING_WORKERS];
	struct lanes w[RING_WORKERS];
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
	struct ring rings[RINGS_MAX];
	int nrings, ring_evict;
	/* Lanes of per-thread tracks (a QEMU thread's qemu and host I/O slices), by their first lane's uuid. */
	struct { uint64_t uuid; struct lanes l; } tl[TLANES_MAX];
	int ntl, tl_evict;
	struct intern_table ev_names, ann_names, str_values;
	/* Names interned for the event being written, sent just before it. */
	EvName pend_ev[PENDING_MAX];
	AnnName pend_ann[PENDING_MAX];
	IStr pend_str[PENDING_MAX];
	int npend_ev, npend_ann, npend_str;
	/* Where each link arrow leaves: (ring, request) -> begin of that request's last slice. */
	struct { uint64_t ctx, req, ts; } links[1u << LINKS_BITS];
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
	struct ring *ring;		/* on this ring's tracks instead of a layer's */
	int worker;			/* ... on this io-worker's (index), -1: the request lanes */
	uint64_t proc;			/* or on lanes of thread tid under this process track */
	uint32_t tid;
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

static void put_packet(struct perfetto *p, Packet *pk, uint64_t ts);

enum intern_kind { IK_EVENT, IK_ANN, IK_STR };

/* The iid of name in t, queuing its definition when new; 0 when it is not interned. */
static uint64_t intern(struct perfetto *p, struct intern_table *t, const char *name, enum intern_kind kind)
{
	int *npend = kind == IK_EVENT ? &p->npend_ev : kind == IK_ANN ? &p->npend_ann : &p->npend_str;
	uint64_t h = 0xcbf29ce484222325ULL;
	size_t len = strlen(name);
	uint32_t i;

	if (len >= INTERN_NAME)
		return 0;
	for (const char *c = name; *c; c++)
		h = (h ^ (unsigned char)*c) * 0x100000001b3ULL;
	for (i = h % INTERN_SLOTS; t->e[i].iid; i = (i + 1) % INTERN_SLOTS)
		if (!strcmp(t->e[i].name, name))
			return t->e[i].iid;
	/* Kept below three quarters full, so that a lookup ends soon. */
	if (t->used >= INTERN_SLOTS * 3 / 4 || *npend == PENDING_MAX)
		return 0;
	memcpy(t->e[i].name, name, len + 1);
	t->e[i].iid = ++t->next;
	t->used++;
	if (kind == IK_EVENT) {
		EvName *n = &p->pend_ev[(*npend)++];

		*n = (EvName)PERFETTO__PROTOS__EVENT_NAME__INIT;
		n->has_iid = 1;
		n->iid = t->e[i].iid;
		n->name = t->e[i].name;
	} else if (kind == IK_ANN) {
		AnnName *n = &p->pend_ann[(*npend)++];

		*n = (AnnName)PERFETTO__PROTOS__DEBUG_ANNOTATION_NAME__INIT;
		n->has_iid = 1;
		n->iid = t->e[i].iid;
		n->name = t->e[i].name;
	} else {
		IStr *n = &p->pend_str[(*npend)++];

		*n = (IStr)PERFETTO__PROTOS__INTERNED_STRING__INIT;
		n->has_iid = 1;
		n->iid = t->e[i].iid;
		n->has_str = 1;
		n->str.data = (uint8_t *)t->e[i].name;
		n->str.len = len;
	}
	return t->e[i].iid;
}

/* Replaces an event's names by iids (annotations are shared by a request's slices: once). */
static void intern_event(struct perfetto *p, Event *ev)
{
	uint64_t iid;

	if (ev->name && (iid = intern(p, &p->ev_names, ev->name, IK_EVENT))) {
		ev->has_name_iid = 1;
		ev->name_iid = iid;
		ev->name = NULL;
	}
	for (size_t i = 0; i < ev->n_debug_annotations; i++) {
		Ann *a = ev->debug_annotations[i];

		if (a->name && (iid = intern(p, &p->ann_names, a->name, IK_ANN))) {
			a->has_name_iid = 1;
			a->name_iid = iid;
			a->name = NULL;
		}
		/* String values repeat too (command names, calls, devices, machines). */
		if (a->value_case == PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_STRING_VALUE &&
		    (iid = intern(p, &p->str_values, a->string_value, IK_STR))) {
			a->value_case = PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_STRING_VALUE_IID;
			a->string_value_iid = iid;
		}
	}
}

/* A track event: its new names first, in a packet of their own (a packet may be dropped as too big). */
static void put_event(struct perfetto *p, Packet *pk, uint64_t ts)
{
	intern_event(p, pk->track_event);
	if (p->npend_ev || p->npend_ann || p->npend_str) {
		Packet ip = PERFETTO__PROTOS__TRACE_PACKET__INIT;
		Interned id = PERFETTO__PROTOS__INTERNED_DATA__INIT;
		EvName *pe[PENDING_MAX];
		AnnName *pa[PENDING_MAX];
		IStr *ps[PENDING_MAX];

		for (int i = 0; i < p->npend_ev; i++)
			pe[i] = &p->pend_ev[i];
		for (int i = 0; i < p->npend_ann; i++)
			pa[i] = &p->pend_ann[i];
		for (int i = 0; i < p->npend_str; i++)
			ps[i] = &p->pend_str[i];
		id.n_event_names = p->npend_ev;
		id.event_names = pe;
		id.n_debug_annotation_names = p->npend_ann;
		id.debug_annotation_names = pa;
		id.n_debug_annotation_string_values = p->npend_str;
		id.debug_annotation_string_values = ps;
		ip.interned_data = &id;
		put_packet(p, &ip, ts);
		p->npend_ev = p->npend_ann = p->npend_str = 0;
	}
	pk->has_sequence_flags = 1;
	pk->sequence_flags = PERFETTO__PROTOS__TRACE_PACKET__SEQUENCE_FLAGS__SEQ_NEEDS_INCREMENTAL_STATE;
	put_packet(p, pk, ts);
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
		pk->sequence_flags |= PERFETTO__PROTOS__TRACE_PACKET__SEQUENCE_FLAGS__SEQ_INCREMENTAL_STATE_CLEARED;
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

/* The first of n lanes (ends e) free at begin; a new one if none is. */
static int lanes_pick(struct perfetto *p, uint64_t *e, uint8_t *n, uint64_t begin, uint64_t end)
{
	int best = 0;

	for (int i = 0; i < *n; i++) {
		if (e[i] <= begin) {
			e[i] = end;
			return i;
		}
		if (e[i] < e[best])
			best = i;
	}
	if (*n < LANES_MAX) {
		e[*n] = end;
		return (*n)++;
	}
	p->st.lane_full++;
	if (end > e[best])
		e[best] = end;
	return best;
}

static int lane_pick(struct perfetto *p, struct machine *m, int layer, uint64_t begin, uint64_t end)
{
	return lanes_pick(p, m->lane_end[layer], &m->nlanes[layer], begin, end);
}

/* A named child track of parent, described once: the name is only formatted then. */
static uint64_t child_track(struct perfetto *p, uint64_t parent, char kind, uint64_t a, uint64_t b, uint64_t ts,
			    const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static uint64_t child_track(struct perfetto *p, uint64_t parent, char kind, uint64_t a, uint64_t b, uint64_t ts,
			    const char *fmt, ...)
{
	uint64_t uuid = track_uuid(parent, kind, a, b);
	Desc d = PERFETTO__PROTOS__TRACK_DESCRIPTOR__INIT;
	char name[64];
	va_list ap;

	if (seen(p, uuid))
		return uuid;
	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	d.has_uuid = 1;
	d.uuid = uuid;
	d.name = name;
	d.has_parent_uuid = 1;
	d.parent_uuid = parent;
	describe(p, &d, ts);
	return uuid;
}

/* The ring's group track under its process (described by thread_track() first). */
static struct ring *ring_get(struct perfetto *p, struct machine *m, uint32_t pid, uint64_t ctx, uint64_t ts)
{
	uint64_t puuid = track_uuid(m->uuid, 'P', pid, 0);
	struct ring *rg;
	int i;

	for (i = 0; i < p->nrings; i++)
		if (p->rings[i].ctx == ctx && p->rings[i].puuid == puuid)
			break;
	if (i == p->nrings) {
		/* Past the bound a ring starts over: its tracks keep their ids, its lanes restart. */
		i = p->nrings < RINGS_MAX ? p->nrings++ : p->ring_evict++ % RINGS_MAX;
		rg = &p->rings[i];
		memset(rg, 0, sizeof(*rg));
		rg->ctx = ctx;
		rg->puuid = puuid;
		rg->uuid = track_uuid(puuid, 'R', ctx, 0);
	}
	rg = &p->rings[i];
	child_track(p, puuid, 'R', ctx, 0, ts, "io_uring ring %06" PRIx64, (ctx >> 6) & 0xffffff);
	return rg;
}

static int ring_worker(struct ring *rg, uint32_t tid)
{
	for (int i = 0; i < rg->nw; i++)
		if (rg->wtid[i] == tid)
			return i;
	if (rg->nw == RING_WORKERS)
		return -1;
	rg->wtid[rg->nw] = tid;
	return rg->nw++;
}

/* The track a ring slice goes on: a request lane, or a lane of the io-worker that ran it. */
static uint64_t ring_track(struct perfetto *p, const struct slice *s)
{
	struct ring *rg = s->ring;
	int lane;

	if (s->worker >= 0) {
		lane = lanes_pick(p, rg->w[s->worker].end, &rg->w[s->worker].n, s->begin, s->end);
		return child_track(p, rg->uuid, 'W', rg->wtid[s->worker], lane, s->begin,
				   lane ? "iou-wrk-%u #%d" : "iou-wrk-%u", rg->wtid[s->worker], lane + 1);
	}
	lane = lanes_pick(p, rg->req.end, &rg->req.n, s->begin, s->end);
	return child_track(p, rg->uuid, 'Q', lane, 0, s->begin, lane ? "requests #%d" : "requests", lane + 1);
}

/* A process's track on machine m, described if need be (a QEMU process may have no record of its own). */
static uint64_t process_track(struct perfetto *p, struct machine *m, uint32_t pid, uint64_t ts)
{
	Perfetto__Protos__ProcessDescriptor pd = PERFETTO__PROTOS__PROCESS_DESCRIPTOR__INIT;
	uint64_t uuid = track_uuid(m->uuid, 'P', pid, 0);
	Desc d = PERFETTO__PROTOS__TRACK_DESCRIPTOR__INIT;
	char name[32];

	machine_track(p, m, ts);
	if (seen(p, uuid))
		return uuid;
	d.has_uuid = 1;
	d.uuid = uuid;
	if (m->local) {
		pd.has_pid = 1;
		pd.pid = pid;
		d.process = &pd;
	} else {
		snprintf(name, sizeof(name), "process %u", pid);
		d.name = name;
		d.has_parent_uuid = 1;
		d.parent_uuid = m->uuid;
	}
	describe(p, &d, ts);
	return uuid;
}

/* A lane of thread tid's tracks of one kind under a process: "<what> <tid>", "<what> <tid> #2", ... */
static uint64_t thread_lane(struct perfetto *p, uint64_t proc, char kind, uint32_t tid, const char *what,
			    uint64_t begin, uint64_t end)
{
	uint64_t first = track_uuid(proc, kind, tid, 0);
	int i, lane;

	for (i = 0; i < p->ntl && p->tl[i].uuid != first; i++)
		;
	if (i == p->ntl) {
		i = p->ntl < TLANES_MAX ? p->ntl++ : p->tl_evict++ % TLANES_MAX;
		memset(&p->tl[i], 0, sizeof(p->tl[i]));
		p->tl[i].uuid = first;
	}
	lane = lanes_pick(p, p->tl[i].l.end, &p->tl[i].l.n, begin, end);
	return child_track(p, proc, kind, tid, lane, begin, lane ? "%s %u #%d" : "%s %u", what, tid, lane + 1);
}

/* Flow ids between io_uring events, derived so that both ends compute them alone; the high bit
 * keeps them apart from the requests' own flow ids (a counter). */
static uint64_t ring_flow(char kind, uint64_t ctx, uint64_t v)
{
	return mix64(mix64(ctx) ^ v ^ ((uint64_t)(unsigned char)kind << 48)) | 1ULL << 63;
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

static struct slice *slice_add(struct slice *s, int *n, int layer, const char *name, uint64_t begin,
				uint64_t end, struct anns *ann, struct machine *m)
{
	if (*n == SLICES_MAX || !begin)
		return NULL;
	s[*n] = (struct slice){ layer, name, begin, end < begin ? begin : end, ann, m, NULL, -1, 0, 0 };
	return &s[(*n)++];
}

/* io_uring's own stamps: drawn on the request's ring instead of the syscall layer. */
static bool uring_stamp(int ts)
{
	return ts == IOT_TS_URING_SUBMIT || ts == IOT_TS_URING_ASYNC || ts == IOT_TS_URING_POLL ||
	       ts == IOT_TS_URING_TASKWORK || ts == IOT_TS_URING_COMPLETE;
}

static void emit(struct perfetto *p, const struct iot_record *r, const char *src, bool guest_clock,
		 const struct perfetto_host *hx)
{
	static struct anns ra, ha, ia[PERFETTO_HOST_IO_MAX];
	char wbuf[24], dev[32], comm[IOT_COMM_LEN + 1];
	struct machine *m = machine_get(p, src), *hm = NULL;
	struct slice sl[SLICES_MAX];
	struct iot_split sp;
	uint64_t prev_end = 0, flow, first, out_ids[2], in_ids[2];
	const char *w = iot_record_what(r, wbuf, sizeof(wbuf));
	struct ring *rg = NULL;
	int n = 0, worker = -1, link_in = -1;

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

	if (r->kind == IOT_KIND_URING && r->uring_ctx) {
		/* The thread's process track first: the ring's group hangs under it. */
		thread_track(p, m, r, first);
		rg = ring_get(p, m, r->pid, r->uring_ctx, first);
		if (r->actor_tid && r->actor_tid != r->tid)
			worker = ring_worker(rg, r->actor_tid);
		ann_u64(&ra, "user_data", r->user_data);
		if (r->uring_link)
			ann_str(&ra, "linked", "after the previous request of its chain");
		if (worker >= 0)
			ann_u64(&ra, "io_worker", r->actor_tid);
	}

	/* The segments, kept in time order even where the stamps are not (the flow runs forward). */
	for (int i = 0; i < sp.n; i++) {
		uint64_t b = r->ts[sp.from_ts[i]];
		struct slice *x;

		if (b < prev_end)
			b = prev_end;
		x = slice_add(sl, &n, seg_layer(r, sp.from_ts[i]), sp.name[i], b, b + sp.ns[i], &ra, m);
		if (x && rg && uring_stamp(sp.from_ts[i])) {
			x->ring = rg;
			x->worker = sp.from_ts[i] == IOT_TS_URING_ASYNC ? worker : -1;
		}
		prev_end = b + sp.ns[i];
	}
	/*
	 * A linked request: the arrow from the one before it lands on its first
	 * slice that begins once that one's last slice has (it was released there).
	 */
	if (rg && r->uring_link && n) {
		uint32_t h = mix64(r->uring_ctx ^ mix64(r->uring_link)) >> (64 - LINKS_BITS);
		uint64_t t = p->links[h].ctx == r->uring_ctx && p->links[h].req == r->uring_link ?
			     p->links[h].ts : 0;

		for (link_in = 0; link_in < n && sl[link_in].begin < t; link_in++)
			;
		/* No arrow when the one before was not written, or no slice of this one follows it. */
		if (!t || link_in == n)
			link_in = -1;
	}
	if (rg && (r->flags & IOT_F_URING_LINK) && n) {
		uint32_t h = mix64(r->uring_ctx ^ mix64(r->uring_req)) >> (64 - LINKS_BITS);

		p->links[h].ctx = r->uring_ctx;
		p->links[h].req = r->uring_req;
		p->links[h].ts = sl[n - 1].begin;
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
			struct slice *x;

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
			x = slice_add(sl, &n, PL_HOST_IO, "host_io", io->start_ns, io->end_ns, a, hm);
			if (x && hx->qemu_pid && io->tid) {
				x->proc = process_track(p, hm, hx->qemu_pid, io->start_ns);
				x->tid = io->tid;
			}
			if (io->start_ns && (!hs || io->start_ns < hs))
				hs = io->start_ns;
		}
		{
			struct slice *k = NULL, *q = NULL;

			if (hx->kernel) {
				if (hx->kick_ns && hs)
					k = slice_add(sl, &n, PL_QEMU, "kick_to_host", hx->kick_ns, hs, &ha, hm);
			} else {
				if (hx->kick_ns && hx->submit_ns)
					k = slice_add(sl, &n, PL_QEMU, "kick_to_qemu", hx->kick_ns, hx->submit_ns, &ha,
						      hm);
				if (hx->submit_ns && hs)
					q = slice_add(sl, &n, PL_QEMU, "qemu_to_host", hx->submit_ns, hs, &ha, hm);
			}
			/* On the QEMU thread that submitted it: its I/O thread, or the main loop. */
			if (hx->qemu_pid && hx->qemu_tid) {
				uint64_t proc = process_track(p, hm, hx->qemu_pid, hx->kick_ns ?: hx->submit_ns);

				if (k) {
					k->proc = proc;
					k->tid = hx->qemu_tid;
				}
				if (q) {
					q->proc = proc;
					q->tid = hx->qemu_tid;
				}
			}
		}
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
		put_event(p, &pk, first);
	}

	flow = ++p->next_flow;
	for (int i = 0; i < n; i++) {
		const struct slice *s = &sl[i];
		Packet pk = PERFETTO__PROTOS__TRACE_PACKET__INIT;
		Event ev = PERFETTO__PROTOS__TRACK_EVENT__INIT;
		uint64_t track;

		if (s->ring) {
			track = ring_track(p, s);
		} else if (s->proc) {
			track = thread_lane(p, s->proc, s->layer == PL_QEMU ? 'q' : 'h', s->tid,
					    s->layer == PL_QEMU ? "qemu thread" : "host I/O thread", s->begin, s->end);
		} else {
			int lane = lane_pick(p, s->m, s->layer, s->begin, s->end);

			track = layer_track(p, s->m, s->layer, lane, s->begin);
		}
		ev.has_type = 1;
		ev.type = PERFETTO__PROTOS__TRACK_EVENT__TYPE__TYPE_SLICE_BEGIN;
		ev.has_track_uuid = 1;
		ev.track_uuid = track;
		ev.name = (char *)s->name;
		ev.n_debug_annotations = s->ann->n;
		ev.debug_annotations = s->ann->pa;
		ev.n_flow_ids = 0;
		ev.flow_ids = out_ids;
		ev.n_terminating_flow_ids = 0;
		ev.terminating_flow_ids = in_ids;
		if (i + 1 < n)
			out_ids[ev.n_flow_ids++] = flow;
		else
			in_ids[ev.n_terminating_flow_ids++] = flow;
		if (rg) {
			/*
			 * A linked request: an arrow from the one before it in its chain, into
			 * its first slice after the wait for that one (its submission slice
			 * holds the wait).
			 */
			if (i == link_in && r->uring_link)
				in_ids[ev.n_terminating_flow_ids++] = ring_flow('K', r->uring_ctx, r->uring_link);
			/* Its end: to the next of its chain, and to the moment the program reaped its CQE. */
			if (i + 1 == n) {
				if (r->flags & IOT_F_URING_LINK)
					out_ids[ev.n_flow_ids++] = ring_flow('K', r->uring_ctx, r->uring_req);
				if (r->cqe_seq && ev.n_flow_ids < 2)
					out_ids[ev.n_flow_ids++] = ring_flow('C', r->uring_ctx, r->cqe_seq);
			}
		}
		pk.track_event = &ev;
		put_event(p, &pk, s->begin);

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

/*
 * The program moved a ring's CQ head from offset to cqe_seq: an instant on
 * the ring's "reaped" track that ends the flow from each of those CQEs.
 */
static void emit_reap(struct perfetto *p, const struct iot_record *r, const char *src)
{
	static uint64_t ids[REAP_IDS];
	struct machine *m = machine_get(p, src);
	uint64_t ts = r->ts[IOT_TS_URING_COMPLETE], from = (uint32_t)r->offset, to = r->cqe_seq, track;
	uint32_t count = (uint32_t)(to - from);	/* the head is a u32 that wraps */
	struct anns a = { 0 };
	struct ring *rg;

	if (!ts || !count)
		return;
	rg = ring_get(p, m, r->pid, r->uring_ctx, ts);
	track = child_track(p, rg->uuid, 'H', 0, 0, ts, "reaped");
	ann_u64(&a, "cq_head_from", from);
	ann_u64(&a, "cq_head_to", to);
	ann_u64(&a, "cqes", count);
	ann_u64(&a, "seen_by_tid", r->tid);
	if (count > REAP_MAX)
		count = REAP_MAX;
	/* CQE k is reaped when the head passes k: its flow id is the tail after it (k + 1). */
	for (uint32_t done = 0; done < count;) {
		Packet pk = PERFETTO__PROTOS__TRACE_PACKET__INIT;
		Event ev = PERFETTO__PROTOS__TRACK_EVENT__INIT;
		uint32_t k = 0;

		for (; k < REAP_IDS && done < count; k++, done++)
			ids[k] = ring_flow('C', r->uring_ctx, (uint32_t)(to - count + done + 1));
		ev.has_type = 1;
		ev.type = PERFETTO__PROTOS__TRACK_EVENT__TYPE__TYPE_INSTANT;
		ev.has_track_uuid = 1;
		ev.track_uuid = track;
		ev.name = "reap";
		ev.n_debug_annotations = a.n;
		ev.debug_annotations = a.pa;
		ev.n_terminating_flow_ids = k;
		ev.terminating_flow_ids = ids;
		pk.track_event = &ev;
		put_event(p, &pk, ts);
	}
}

void perfetto__record(struct perfetto *p, const struct iot_record *r, const char *src, bool guest_clock)
{
	if (r->kind == IOT_KIND_URING_REAP) {
		if (r->uring_ctx && !guest_clock)
			emit_reap(p, r, src);
		return;
	}
	emit(p, r, src, guest_clock, NULL);
}

void perfetto__record_host(struct perfetto *p, const struct iot_record *r, const char *src, bool guest_clock,
			   const struct perfetto_host *host)
{
	emit(p, r, src, guest_clock, host);
}
