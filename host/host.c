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
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
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
#include "correlate.h"
#include "disks.h"
#include "host.h"
#include "qemu.h"
#include "tracer.h"

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
	uint64_t frames, records, dups, invalid, unsynced;
	int vm_pid;			/* the QEMU serving this guest, when the transport tells */
};

#define VMS_MAX 64
#define QEMU_BINARIES_MAX 8
#define COMM_CACHE 256			/* QEMU threads' command names remembered */
#define VM_SCAN_NS (1000ull * 1000000)

struct vm_ent {
	struct qemu_vm vm;
	struct qemu_tracer *qt;
	char version[32];
	bool refused;		/* seen, not traced (reason logged once) */
	bool backend;		/* its backend calls are probed (qemu_vm_needs_backend()) */
	bool kernel;		/* its reads and writes on the kernel route, no probe in QEMU */
};

struct host {
	const struct host_opts *o;
	/* The qemu layer: one uprobe set per QEMU binary, the host kernel filtered to QEMU processes. */
	struct tracer *kt;
	struct qemu_tracer *qt[QEMU_BINARIES_MAX];
	int nqt;
	struct vm_ent vms[VMS_MAX];
	int nvms;
	struct corr *corr;
	uint64_t next_scan_ns;
	struct endpoint ep[HOST_LISTEN_MAX];
	struct conn *conns;
	struct session sessions[SESSIONS_MAX];
	uint64_t session_clock;
	uint8_t *hello;			/* preamble + our Hello */
	size_t hello_len;
	uint64_t guests, records, dups, invalid, unsynced, refused;
	/* Command names of QEMU threads, for the Perfetto tracks of their own I/O (compact records carry none). */
	struct {
		uint32_t tid;
		char comm[IOT_COMM_LEN];
	} comms[COMM_CACHE];
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
	Iotracer__Hello m = IOTRACER__HELLO__INIT;
	struct utsname u;

	uname(&u);
	m.protocol_version = IOT_PROTO_VERSION;
	m.hostname = u.nodename;
	m.kernel = u.release;
	m.max_frame_bytes = IOT_FRAME_MAX_DEFAULT;
	return chan_hello_bytes(&m, &h->hello, &h->hello_len);
}

/* ---- the qemu layer: QEMU processes, their uprobes, the host kernel beneath them ---- */

/* The first line of a /proc file into comm (IOT_COMM_LEN bytes, zeroed first); 0 or -errno. */
static int read_comm(const char *path, char *comm)
{
	ssize_t n;
	int fd;

	memset(comm, 0, IOT_COMM_LEN);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, comm, IOT_COMM_LEN - 1);
	close(fd);
	if (n <= 0)
		return n < 0 ? -errno : -ENODATA;
	if (comm[n - 1] == '\n')
		comm[n - 1] = 0;
	return 0;
}

/*
 * A QEMU thread's command name, read from /proc once per thread (while it
 * keeps its slot). A thread already gone (a worker's flush as QEMU exits)
 * is named by its process: QEMU names no thread unless debug-threads=on.
 */
static void thread_comm(struct host *h, uint32_t pid, uint32_t tid, char *comm)
{
	unsigned int i = tid % COMM_CACHE;
	char path[64];

	if (h->comms[i].tid != tid) {
		snprintf(path, sizeof(path), "/proc/%u/task/%u/comm", pid, tid);
		if (read_comm(path, h->comms[i].comm) < 0) {
			snprintf(path, sizeof(path), "/proc/%u/comm", pid);
			if (read_comm(path, h->comms[i].comm) < 0)
				snprintf(h->comms[i].comm, IOT_COMM_LEN, "qemu:%u", pid);
		}
		h->comms[i].tid = tid;
	}
	memcpy(comm, h->comms[i].comm, IOT_COMM_LEN);
}

static void on_kernel_record(void *ctx, const struct iot_record *r)
{
	struct host *h = ctx;

	corr_host_record(h->corr, r);
	/* QEMU's own I/O, traced here: on the host's tracks as requests of their own. */
	if (h->o->pf) {
		struct iot_record named = *r;

		if (!named.comm[0])
			thread_comm(h, r->pid, r->tid, named.comm);
		perfetto__record(h->o->pf, &named, NULL, false);
	}
}

static void on_qemu_event(void *ctx, const struct iot_qemu_event *e)
{
	struct host *h = ctx;

	corr_qemu_event(h->corr, e);
}

static struct vm_ent *vm_find(struct host *h, int pid)
{
	for (int i = 0; i < h->nvms; i++)
		if (h->vms[i].vm.pid == pid)
			return &h->vms[i];
	return NULL;
}

static void vm_event(struct host *h, const struct vm_ent *v, const char *event, const char *reason)
{
	FILE *f = h->o->of;

	if (!h->o->json)
		return;
	fprintf(f, "{\"type\":\"vm\",\"event\":\"%s\",\"qemu_pid\":%d", event, v->vm.pid);
	jstr(f, "name", v->vm.name);
	jstr(f, "exe", v->vm.exe);
	jstr(f, "version", v->version);
	if (reason)
		jstr(f, "reason", reason);
	if (v->vm.vsock_cid)
		fprintf(f, ",\"vsock_cid\":%u", v->vm.vsock_cid);
	fputs(",\"serial_sockets\":[", f);
	for (int i = 0; i < v->vm.nserial; i++) {
		char esc[256];

		json_escape(v->vm.serial_socket[i], strlen(v->vm.serial_socket[i]), esc, sizeof(esc));
		fprintf(f, "%s\"%s\"", i ? "," : "", esc);
	}
	fputs("],\"drives\":[", f);
	for (int i = 0; i < v->vm.ndrives; i++) {
		const struct qemu_drive *d = &v->vm.drives[i];

		fputs(i ? ",{" : "{", f);
		fprintf(f, "\"index\":%d", i);
		jstr(f, "id", d->id);
		jstr(f, "file", d->file);
		jstr(f, "format", d->format);
		jstr(f, "aio", d->aio);
		jstr(f, "cache", d->cache);
		jstr(f, "device", d->device);
		jstr(f, "serial", d->serial);
		fputc('}', f);
	}
	fputc(']', f);
	if (!v->refused && !reason) {
		fprintf(f, ",\"backend_probes\":%s", v->backend && !v->kernel ? "true" : "false");
		fprintf(f, ",\"qemu_probes\":\"%s\"", v->kernel ? "kernel" :
			v->qt && qemu_tracer__usdt(v->qt) ? "usdt" : "uprobes");
	}
	fputs("}\n", f);
	fflush(f);
}

/* Starts tracing a QEMU process. 0, or -errno with the reason logged (and the VM remembered as refused). */
static int vm_add(struct host *h, int pid)
{
	struct vm_ent *v = vm_find(h, pid);
	const struct iot_qemu_layout *layout;
	char err[400];
	int r;

	if (v)
		return v->refused ? -EPERM : 0;
	if (h->nvms == VMS_MAX) {
		logf_("qemu pid %d: more than %d VMs, not traced", pid, VMS_MAX);
		return -ENOSPC;
	}
	v = &h->vms[h->nvms];
	memset(v, 0, sizeof(*v));
	r = qemu_vm_read(pid, &v->vm);
	if (r) {
		logf_("qemu pid %d: %s", pid, r == -ESRCH ? "not a running QEMU" : strerror(-r));
		return r;
	}
	h->nvms++;
	if (qemu_binary_version(v->vm.exe, v->version, sizeof(v->version))) {
		snprintf(err, sizeof(err), "%s has no QEMU version banner: not a QEMU we know", v->vm.exe);
		goto refuse;
	}
	layout = qemu_layout_for(v->version, err, sizeof(err));
	if (!layout)
		goto refuse;
	for (int i = 0; i < h->nqt; i++)
		if (!strcmp(qemu_tracer__exe(h->qt[i]), v->vm.exe))
			v->qt = h->qt[i];
	if (!v->qt) {
		if (h->nqt == QEMU_BINARIES_MAX) {
			snprintf(err, sizeof(err), "more than %d QEMU binaries", QEMU_BINARIES_MAX);
			goto refuse;
		}
		v->qt = qemu_tracer__new(v->vm.exe, layout, h->o->kernel_route, on_qemu_event, h, err, sizeof(err));
		if (!v->qt)
			goto refuse;
		h->qt[h->nqt++] = v->qt;
		if (qemu_tracer__stepped(v->qt)[0])
			logf_("%s: %s probed where each hit is single-stepped (the code is not the one "
			      "iotracer checked), several times dearer", v->vm.exe,
			      qemu_tracer__stepped(v->qt));
	}
	v->backend = qemu_vm_needs_backend(&v->vm);
	if (h->o->kernel_route) {
		const char *why = qemu_tracer__kernel_route(v->qt);

		v->kernel = !why && qemu_vm_kernel_route(&v->vm);
		if (why)
			logf_("qemu pid %d: --qemu-route kernel is not open to %s: %s; its probes are used", pid,
			      v->vm.exe, why);
		else if (!v->kernel)
			logf_("qemu pid %d: not on the kernel route (a drive is not a raw image under aio=io_uring "
			      "or native, or is not given with -drive): its probes are used", pid);
	}
	if (qemu_tracer__add_pid(v->qt, pid, v->backend, v->kernel, err, sizeof(err)))
		goto refuse;
	if ((r = tracer__add_pid(h->kt, pid))) {
		snprintf(err, sizeof(err), "cannot add it to the traced processes: %s", strerror(-r));
		qemu_tracer__del_pid(v->qt, pid);
		goto refuse;
	}
	if (h->corr)
		corr_vm_lean(h->corr, pid, !v->backend);
	/* libbpf's parse of the kernel BTF for the load is done: give that memory back. */
	malloc_trim(0);
	logf_("tracing qemu pid %d%s%s (QEMU %s, %d drives%s; %s; %s)", pid, v->vm.name[0] ? " " : "", v->vm.name,
	      v->version, v->vm.ndrives, v->vm.vsock_cid ? ", vsock" : "",
	      v->kernel ? "reads and writes from the host kernel's io_uring submissions, no probe in QEMU" :
	      qemu_tracer__usdt(v->qt) ? "reads and writes through its USDT probes" : "uprobes on its functions",
	      v->kernel && v->backend ? "each submission is its own backend call" :
	      v->backend ? "backend calls probed" : "raw images: host I/O tied by its buffers, backend calls not probed");
	vm_event(h, v, "traced", NULL);
	return 0;
refuse:
	v->refused = true;
	v->qt = NULL;
	logf_("qemu pid %d (%s): %s", pid, v->vm.exe, err);
	vm_event(h, v, "refused", err);
	return -EPERM;
}

static void vm_gone(struct host *h, int i)
{
	struct vm_ent *v = &h->vms[i];

	if (!v->refused) {
		qemu_tracer__del_pid(v->qt, v->vm.pid);
		tracer__del_pid(h->kt, v->vm.pid);
		if (h->corr)
			corr_vm_lean(h->corr, v->vm.pid, false);
		logf_("qemu pid %d%s%s exited", v->vm.pid, v->vm.name[0] ? " " : "", v->vm.name);
	}
	vm_event(h, v, "gone", NULL);
	h->vms[i] = h->vms[--h->nvms];
}

/* Every QEMU running now is traced; those gone are forgotten. */
static void vm_scan(struct host *h)
{
	int pids[VMS_MAX], n = qemu_scan(pids, VMS_MAX);

	for (int i = h->nvms - 1; i >= 0; i--) {
		bool alive = false;

		for (int k = 0; k < n; k++)
			alive |= pids[k] == h->vms[i].vm.pid;
		if (!alive)
			vm_gone(h, i);
	}
	for (int k = 0; k < n; k++)
		vm_add(h, pids[k]);
}

/* The QEMU behind a guest connection, by what the transport proved: 0 when none. */
static int vm_of_guest(struct host *h, const char *id)
{
	if (!h->corr)
		return 0;
	if (!strncmp(id, "qemu:", 5)) {
		int pid = atoi(id + 5);

		if (pid > 0 && !vm_add(h, pid))
			return pid;
	} else if (!strncmp(id, "vsock:", 6)) {
		uint32_t cid = strtoul(id + 6, NULL, 10);

		for (int i = 0; i < h->nvms; i++)
			if (!h->vms[i].refused && h->vms[i].vm.vsock_cid == cid)
				return h->vms[i].vm.pid;
	}
	return 0;
}

static int qemu_layer_start(struct host *h)
{
	struct tracer_opts topts = { .sz = sizeof(topts) };
	struct corr_opts copts = { .out = h->o->out, .of = h->o->of, .json = h->o->json, .pf = h->o->pf,
				   .summary_only = h->o->summary_only };
	char errbuf[256];
	int r;

	r = tracer_prepare_env(errbuf, sizeof(errbuf));
	if (r) {
		fprintf(stderr, "iotracer: host: %s (host mode traces QEMU and the host kernel; --no-qemu only "
			"receives guests)\n", errbuf);
		return r;
	}
	h->corr = corr_new(&copts);
	if (!h->corr)
		return -ENOMEM;
	/*
	 * By default only what the join reads, since each hook is a program run
	 * per event of QEMU's: not the file system, page cache and scheduler
	 * layers, nor the device drivers' stamps (the host device time is the
	 * block layer's issue to completion; the virtio and nvme layers would
	 * add a hook on every interrupt), nor the I/O scheduler's insert. Nor
	 * QEMU's read/write calls, on eventfds and sockets: its file backends
	 * use positional calls only.
	 */
	topts.layers = h->o->layers ?: (1u << IOT_LAYER_SYSCALL | 1u << IOT_LAYER_BLOCK | 1u << IOT_LAYER_IO_URING |
					 1u << IOT_LAYER_AIO);
	topts.layers_explicit = h->o->layers_explicit;
	topts.positional_only = 1;
	topts.no_rq_insert = !h->o->layers;
	/* Raw images' host I/O names its QEMU request by the guest's buffers (qemu_vm_needs_backend()). */
	topts.ubuf = 1;
	/* The join reads io_uring requests' own submit times, not io_uring_enter's. */
	topts.uring_enter_exit_only = 1;
	/*
	 * The join reads a few stamps and fields of each host record: its span,
	 * its block queueing and time at the device, the file, offset and
	 * buffer; so does the Perfetto trace's track of QEMU's own I/O. Layers
	 * asked for by name are for their stamps: then the whole record.
	 */
	topts.compact = !h->o->layers;
	/*
	 * The host kernel's records of every traced QEMU share one ring: room
	 * for about 1,500 full records (a fifth of a second of 4 busy guests)
	 * while the agent shares the CPUs with them; 128 KiB lost records in
	 * that case. Compact, 256 KiB holds 2,300, and costs half the memory
	 * (the ring is mapped twice).
	 */
	topts.ringbuf_bytes = (topts.compact ? 256 : 512) << 10;
	topts.pid_set = 1;
	topts.on_record = on_kernel_record;
	topts.ctx = h;
	h->kt = tracer__new(&topts);
	if (!h->kt)
		return -errno;
	r = tracer__load(h->kt);
	if (!r)
		r = tracer__attach(h->kt);
	if (r) {
		fprintf(stderr, "iotracer: host: the host kernel layers: %s\n", tracer__error(h->kt) ?: strerror(-r));
		return r;
	}
	for (int l = 0; l < IOT_LAYER_MAX; l++) {
		const struct layer_status *ls = tracer__layer(h->kt, l);

		if (h->o->verbose || ls->state != LAYER_ON)
			logf_("host kernel layer %-9s %s %s", iot_layer_name(l),
			      ls->state == LAYER_ON ? "on" : ls->state == LAYER_OFF ? "off" : "unavailable", ls->route);
	}
	for (int i = 0; i < h->o->nqemu_pids; i++) {
		r = vm_add(h, h->o->qemu_pids[i]);
		if (r) {
			fprintf(stderr, "iotracer: host: --qemu-pid %d cannot be traced (see above)\n", h->o->qemu_pids[i]);
			return r;
		}
	}
	malloc_trim(0);
	/* Without --qemu-pid every QEMU is traced, and those started later. */
	if (!h->o->nqemu_pids)
		vm_scan(h);
	h->next_scan_ns = chan_now_ns() + VM_SCAN_NS;
	return 0;
}

/* Reads what the probes and the host kernel reported, QEMU's side first (a backend call precedes its I/O). */
static void qemu_layer_pump(struct host *h, uint64_t now)
{
	uint64_t t0 = chan_now_ns();

	/* What the last round wrote goes out now (the output file is fully buffered). */
	fflush(h->o->of);
	if (!h->corr)
		return;
	for (int i = 0; i < h->nqt; i++)
		qemu_tracer__consume(h->qt[i]);
	tracer__flush(h->kt);
	corr_drained(h->corr, t0);
	corr_tick(h->corr, now);
	if (h->o->pf)
		perfetto__flush(h->o->pf);
	if (!h->o->nqemu_pids && now >= h->next_scan_ns) {
		vm_scan(h);
		h->next_scan_ns = now + VM_SCAN_NS;
	}
}

static void qemu_layer_stop(struct host *h)
{
	struct corr_stats st;
	uint64_t hits = 0, qlost = 0, kforeign = 0, qc[IOT_QCNT_MAX], kc[IOT_CNT_MAX] = { 0 };

	if (!h->corr)
		return;
	for (int i = 0; i < h->nqt; i++)
		qemu_tracer__consume(h->qt[i]);
	if (h->kt)
		tracer__flush(h->kt);
	corr_flush(h->corr);
	if (h->o->pf)
		perfetto__flush(h->o->pf);
	corr_get_stats(h->corr, &st);
	for (int i = 0; i < h->nqt; i++)
		if (!qemu_tracer__counters(h->qt[i], qc)) {
			hits += qc[IOT_QCNT_HITS];
			qlost += qc[IOT_QCNT_LOST];
			kforeign += qc[IOT_QCNT_KFOREIGN];
		}
	if (h->kt)
		tracer__counters(h->kt, kc);
	/* Lost on the way in: a guest request they belonged to ends unmatched or without its host I/O. */
	if (qlost || kc[IOT_CNT_LOST] || kc[IOT_CNT_STATE_FULL])
		logf_("lost before the join: %" PRIu64 " QEMU events and %" PRIu64 " host kernel records (ring "
		      "buffers full: the agent was not reading fast enough), %" PRIu64 " host requests not "
		      "tracked (in-flight state full)", qlost, kc[IOT_CNT_LOST], kc[IOT_CNT_STATE_FULL]);
	logf_("guest requests: %" PRIu64 " matched on the header address, %" PRIu64 " on sector/length/op, %" PRIu64
	      " unmatched (no QEMU request %" PRIu64 ", key disagrees %" PRIu64 ", no traced VM %" PRIu64 "); %" PRIu64
	      " with host I/O; QEMU requests never claimed %" PRIu64 "; uprobe hits %" PRIu64,
	      st.guest[CORR_MATCHED_GPA], st.guest[CORR_MATCHED_SECTOR],
	      st.guest[CORR_NO_QEMU_REQ] + st.guest[CORR_KEY_DISAGREES] + st.guest[CORR_NO_VM] + st.guest[CORR_HOLD_FULL],
	      st.guest[CORR_NO_QEMU_REQ], st.guest[CORR_KEY_DISAGREES], st.guest[CORR_NO_VM], st.with_host_io,
	      st.qemu_dropped, hits);
	if (h->o->json) {
		fprintf(h->o->of, "{\"type\":\"correlation\"");
		for (int r = 0; r < CORR_REASON_MAX; r++)
			fprintf(h->o->of, ",\"%s\":%" PRIu64, corr_reason_name(r), st.guest[r]);
		fprintf(h->o->of, ",\"with_host_io\":%" PRIu64 ",\"qemu_submits\":%" PRIu64 ",\"qemu_requests\":%" PRIu64
			",\"qemu_not_virtio\":%" PRIu64 ",\"qemu_unclaimed\":%" PRIu64 ",\"backends\":%" PRIu64
			",\"backends_unlinked\":%" PRIu64 ",\"backends_by_iov\":%" PRIu64 ",\"backends_relinked\":%" PRIu64
			",\"host_records\":%" PRIu64 ",\"host_linked\":%" PRIu64 ",\"host_by_buffers\":%" PRIu64
			",\"host_flush_by_order\":%" PRIu64 ",\"uprobe_hits\":%" PRIu64 ",\"qemu_events_lost\":%" PRIu64 ",\"host_records_lost\":%" PRIu64
			",\"host_state_full\":%" PRIu64 ",\"qemu_merges\":%" PRIu64 ",\"qemu_merge_unknown\":%" PRIu64
			",\"qemu_usdt_submits\":%" PRIu64 ",\"qemu_kernel_submits\":%" PRIu64
			",\"qemu_kernel_other\":%" PRIu64 "}\n", st.with_host_io, st.qemu_submits, st.qemu_reqs,
			st.qemu_layout_bad, st.qemu_dropped, st.backends, st.backends_unlinked, st.backends_by_iov,
			st.backends_relinked, st.host_records, st.host_linked, st.host_by_buffers, st.host_flush_by_order, hits, qlost, kc[IOT_CNT_LOST],
			kc[IOT_CNT_STATE_FULL], st.qemu_merges, st.qemu_merge_unknown, st.qemu_usdt_submits,
			st.qemu_kernel_submits, kforeign);
	}
	if (h->o->summary)
		corr_summary(h->corr, h->o->of, h->o->json);
	fflush(h->o->of);
}

static void qemu_layer_free(struct host *h)
{
	for (int i = 0; i < h->nqt; i++)
		qemu_tracer__free(h->qt[i]);
	tracer__free(h->kt);
	corr_free(h->corr);
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
	if (b->h->corr && b->c->vm_pid)
		corr_guest_record(b->h->corr, b->c->vm_pid, b->c->id, !b->c->have_est, b->c->est.uncertainty_ns, &r);
	else
		output__record_src(b->h->o->out, &r, b->c->id, !b->c->have_est);
	if (b->h->o->pf && !(b->h->corr && b->c->vm_pid))
		perfetto__record(b->h->o->pf, &r, b->c->id, !b->c->have_est);
	b->c->records++;
	b->h->records++;
	return 0;
}

static void on_hello(struct host *h, struct conn *c, const Iotracer__Hello *m)
{
	FILE *f;

	c->hello = true;
	c->sess = session_get(h, c->id, m->session);
	c->vm_pid = vm_of_guest(h, c->id);
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
		if (h->o->pf)
			perfetto__flush(h->o->pf);
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
	uint64_t start;
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
	/* The probes are in place before anyone is told we listen. */
	if (o->trace_qemu) {
		ret = qemu_layer_start(h);
		if (ret)
			goto out;
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

	/* --duration counts from here: loading the probes may take longer than a short run. */
	start = chan_now_ns();
	while (!*o->stop) {
		uint64_t now = chan_now_ns(), next = now + 100000000ull;
		size_t n = 0, nconn = 0, k, nc;
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
		if (pcap < (size_t)o->nlisten + nconn + QEMU_BINARIES_MAX + 1) {
			pcap = (o->nlisten + nconn + QEMU_BINARIES_MAX + 1) * 2;
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
		nc = n;
		if (h->corr) {
			/* Wake for the probes' and the host kernel's reports; held guest records are looked at often. */
			for (int i = 0; i < h->nqt; i++)
				pfd[n++] = (struct pollfd){ .fd = qemu_tracer__fd(h->qt[i]), .events = POLLIN };
			pfd[n++] = (struct pollfd){ .fd = tracer__fd(h->kt), .events = POLLIN };
			if (now + 50000000ull < next)
				next = now + 50000000ull;
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
		/* QEMU's and the host kernel's side first: guest records may be waiting for them. */
		qemu_layer_pump(h, chan_now_ns());
		for (size_t i = k; i < nc; i++) {
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
	qemu_layer_stop(h);
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
	qemu_layer_free(h);
	free(h->hello);
	free(h);
	return ret;
}
