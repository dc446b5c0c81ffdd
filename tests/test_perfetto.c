// SPDX-License-Identifier: GPL-2.0
/*
 * The Perfetto writer on its own: requests in, the file read back as a
 * Trace with protobuf-c. Overlapping requests on separate lanes, one flow
 * per request, the file valid at every flush, a joined host-mode request
 * crossing machines in time order.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include "perfetto.h"
#include "perfetto_trace.pb-c.h"

#include "check.h"

typedef Perfetto__Protos__TrackEvent Event;

static struct iot_record req(uint64_t t0, uint32_t tid, uint64_t sector)
{
	struct iot_record r = {};

	r.kind = IOT_KIND_SYSCALL;
	r.syscall = IOT_SYS_PREAD64;
	r.op = IOT_OP_READ;
	r.pid = 100;
	r.tid = tid;
	r.len = 4096;
	r.offset = sector * 512;
	r.sector = sector;
	r.result = 4096;
	r.driver = IOT_DRV_VIRTIO_BLK;
	memcpy(r.comm, "fio", 3);
	r.ts[IOT_TS_SYSCALL_ENTER] = t0;
	r.ts[IOT_TS_BIO_QUEUE] = t0 + 100;
	r.ts[IOT_TS_RQ_ISSUE] = t0 + 200;
	r.ts[IOT_TS_DRIVER] = t0 + 300;
	r.ts[IOT_TS_IRQ] = t0 + 5000;
	r.ts[IOT_TS_RQ_COMPLETE] = t0 + 5100;
	r.ts[IOT_TS_SYSCALL_EXIT] = t0 + 5300;
	return r;
}

static Perfetto__Protos__Trace *read_back(int fd)
{
	off_t n = lseek(fd, 0, SEEK_END);
	uint8_t *buf = malloc(n ?: 1);
	Perfetto__Protos__Trace *t;

	if (pread(fd, buf, n, 0) != n) {
		free(buf);
		return NULL;
	}
	t = perfetto__protos__trace__unpack(NULL, n, buf);
	free(buf);
	return t;
}

/* Interned names of the trace last read (pointing into it), by iid. */
#define IIDS 1024
static const char *ev_iid[IIDS], *ann_iid[IIDS];
static bool str_iid[IIDS];

/*
 * Reads the interned names in file order; each name used must have been
 * defined earlier on the sequence, by a packet before the one using it.
 */
static void resolve_interned(const Perfetto__Protos__Trace *t)
{
	memset(ev_iid, 0, sizeof(ev_iid));
	memset(ann_iid, 0, sizeof(ann_iid));
	memset(str_iid, 0, sizeof(str_iid));
	for (size_t i = 0; i < t->n_packet; i++) {
		const Perfetto__Protos__TracePacket *pk = t->packet[i];
		const Perfetto__Protos__InternedData *id = pk->interned_data;
		const Event *e = pk->track_event;

		if (id) {
			for (size_t k = 0; k < id->n_event_names; k++)
				if (id->event_names[k]->iid < IIDS)
					ev_iid[id->event_names[k]->iid] = id->event_names[k]->name;
			for (size_t k = 0; k < id->n_debug_annotation_names; k++)
				if (id->debug_annotation_names[k]->iid < IIDS)
					ann_iid[id->debug_annotation_names[k]->iid] = id->debug_annotation_names[k]->name;
			for (size_t k = 0; k < id->n_debug_annotation_string_values; k++)
				if (id->debug_annotation_string_values[k]->iid < IIDS)
					str_iid[id->debug_annotation_string_values[k]->iid] = true;
		}
		if (!e)
			continue;
		if (e->has_name_iid) {
			CHECK(e->name_iid < IIDS && ev_iid[e->name_iid], "event name iid %llu used before it was defined",
			      (unsigned long long)e->name_iid);
			CHECK(pk->sequence_flags & 2, "a packet using interned names does not say it needs them");
		}
		for (size_t k = 0; k < e->n_debug_annotations; k++)
			if (e->debug_annotations[k]->has_name_iid)
				CHECK(e->debug_annotations[k]->name_iid < IIDS && ann_iid[e->debug_annotations[k]->name_iid],
				      "annotation name iid used before it was defined");
		for (size_t k = 0; k < e->n_debug_annotations; k++)
			if (e->debug_annotations[k]->value_case ==
			    PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_STRING_VALUE_IID)
				CHECK(e->debug_annotations[k]->string_value_iid < IIDS &&
				      str_iid[e->debug_annotations[k]->string_value_iid],
				      "string value iid used before it was defined");
	}
}

static const char *ev_name(const Event *e)
{
	if (e->has_name_iid)
		return e->name_iid < IIDS && ev_iid[e->name_iid] ? ev_iid[e->name_iid] : "?";
	return e->name ?: "?";
}

static const char *ann_name(const Perfetto__Protos__DebugAnnotation *a)
{
	if (a->has_name_iid)
		return a->name_iid < IIDS && ann_iid[a->name_iid] ? ann_iid[a->name_iid] : "?";
	return a->name ?: "?";
}

/* The uint annotation called name, or -1. */
static long long ann(const Event *e, const char *name)
{
	for (size_t i = 0; i < e->n_debug_annotations; i++)
		if (!strcmp(ann_name(e->debug_annotations[i]), name) &&
		    e->debug_annotations[i]->value_case == PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_UINT_VALUE)
			return e->debug_annotations[i]->uint_value;
	return -1;
}

static void test_overlap(void)
{
	int fd = memfd_create("pf", 0);
	struct perfetto_opts o = { .sz = sizeof(o), .fd = fd, .machine = "m" };
	struct perfetto *p = perfetto__new(&o);
	Perfetto__Protos__Trace *t;
	uint64_t described[64], flows[8] = {}, begin_track[8][16];
	int nd = 0, nslices[8] = {}, ends = 0;

	CHECK(p, "perfetto__new");
	if (!p)
		return;
	/* Three requests in flight at once: completion order differs from start order. */
	struct iot_record a = req(10000, 1, 8), b = req(10050, 2, 16), c = req(10500, 3, 24);

	b.ts[IOT_TS_SYSCALL_EXIT] = b.ts[IOT_TS_RQ_COMPLETE] + 10;
	perfetto__record(p, &b, NULL, false);
	CHECK(perfetto__flush(p) == 0, "flush");
	t = read_back(fd);
	CHECK(t && t->n_packet > 0, "not a Trace after the first flush");
	perfetto__protos__trace__free_unpacked(t, NULL);
	perfetto__record(p, &a, NULL, false);
	perfetto__record(p, &c, NULL, false);
	perfetto__free(p);

	t = read_back(fd);
	CHECK(t, "the file is not a Trace");
	if (!t)
		return;
	CHECK(t->packet[0]->has_sequence_flags && (t->packet[0]->sequence_flags & 1), "first packet flags");
	resolve_interned(t);
	for (size_t i = 0; i < t->n_packet; i++) {
		Perfetto__Protos__TracePacket *pk = t->packet[i];
		const Event *e = pk->track_event;
		bool known = false;

		CHECK(pk->has_trusted_packet_sequence_id && pk->trusted_packet_sequence_id == 1, "sequence id");
		if (pk->track_descriptor && nd < 64)
			described[nd++] = pk->track_descriptor->uuid;
		if (!e)
			continue;
		for (int k = 0; k < nd; k++)
			known |= described[k] == e->track_uuid;
		CHECK(known, "event %zu on an undescribed track", i);
		if (e->type == PERFETTO__PROTOS__TRACK_EVENT__TYPE__TYPE_SLICE_BEGIN) {
			long long sector = ann(e, "sector");
			int r = sector / 8 - 1;
			uint64_t f = e->n_flow_ids ? e->flow_ids[0] : e->n_terminating_flow_ids ? e->terminating_flow_ids[0] : 0;

			CHECK(r >= 0 && r < 3, "sector annotation %lld", sector);
			if (r < 0 || r >= 3)
				continue;
			CHECK(f && (!flows[r] || flows[r] == f), "request %d: flow %llu after %llu", r,
			      (unsigned long long)f, (unsigned long long)flows[r]);
			flows[r] = f;
			if (nslices[r] < 16)
				begin_track[r][nslices[r]] = e->track_uuid;
			nslices[r]++;
			CHECK(ann(e, "len") == 4096 && ann(e, "pid") == 100, "annotations");
		} else if (e->type == PERFETTO__PROTOS__TRACK_EVENT__TYPE__TYPE_SLICE_END) {
			ends++;
		}
	}
	CHECK(flows[0] && flows[1] && flows[2] && flows[0] != flows[1] && flows[1] != flows[2] &&
	      flows[0] != flows[2], "one distinct flow per request");
	for (int r = 0; r < 3; r++)
		CHECK(nslices[r] == 6, "request %d: %d slices, want one per segment (6)", r, nslices[r]);
	CHECK(ends == nslices[0] + nslices[1] + nslices[2], "%d ends", ends);
	/* a and b overlap throughout: no slice of one shares a track with the other's. */
	for (int i = 0; i < 6; i++)
		for (int j = 0; j < 6; j++)
			CHECK(begin_track[0][i] != begin_track[1][j], "overlapping requests share a lane");
	perfetto__protos__trace__free_unpacked(t, NULL);
	close(fd);
}

static void test_host(void)
{
	int fd = memfd_create("pf", 0);
	struct perfetto_opts o = { .sz = sizeof(o), .fd = fd, .machine = "host" };
	struct perfetto *p = perfetto__new(&o);
	struct iot_record g = req(10000, 1, 8);
	struct perfetto_host hx = { .machine = "host", .match = "gpa", .qemu_pid = 777, .gpa = 0x1234,
				    .kick_ns = 10300, .submit_ns = 10800, .nio = 1,
				    .io = { { .start_ns = 11000, .end_ns = 14000, .offset = 4096, .len = 4096,
					      .sector = IOT_UNKNOWN_U64, .tid = 9, .call = "pwritev" } } };
	Perfetto__Protos__Trace *t;
	/* The guest's device segment and QEMU's first begin together at the kick: guest first. */
	const char *want[] = { "syscall", "block", "driver", "device", "kick_to_qemu", "qemu_to_host", "host_io",
			       "irq", "completion" };
	uint64_t last = 0;
	int n = 0, term = 0;

	perfetto__record_host(p, &g, "guest1", false, &hx);
	perfetto__free(p);
	t = read_back(fd);
	CHECK(t, "not a Trace");
	if (!t)
		return;
	resolve_interned(t);
	for (size_t i = 0; i < t->n_packet; i++) {
		const Event *e = t->packet[i]->track_event;

		if (!e || e->type != PERFETTO__PROTOS__TRACK_EVENT__TYPE__TYPE_SLICE_BEGIN)
			continue;
		CHECK(t->packet[i]->timestamp >= last, "flow goes back in time at %s", ev_name(e));
		last = t->packet[i]->timestamp;
		if (n < 9)
			CHECK(!strcmp(ev_name(e), want[n]), "slice %d is %s, want %s", n, ev_name(e), want[n]);
		CHECK(ann(e, "qemu_pid") == 777 && ann(e, "gpa") == 0x1234, "slice %s lacks the match key", ev_name(e));
		term += e->n_terminating_flow_ids;
		n++;
	}
	CHECK(n == 9, "%d slices", n);
	CHECK(term == 1, "%d terminating", term);
	perfetto__protos__trace__free_unpacked(t, NULL);
	close(fd);
}

int main(void)
{
	test_overlap();
	test_host();
	printf("%d checks, %d failed\n", checks, failures);
	return failures ? 1 : 0;
}
