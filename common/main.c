// SPDX-License-Identifier: GPL-2.0
/*
 * iotracer: follows each I/O request through the storage stack and tells
 * where its time went.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <bpf/libbpf.h>
#include "addr.h"
#include "aio.h"
#include "disks.h"
#include "names.h"
#include "num.h"
#include "output.h"
#include "perfetto.h"
#include "tracer.h"
#include "../guest/guest.h"
#include "../host/host.h"

#define EXIT_USAGE 2

static volatile sig_atomic_t stop;
static bool verbose;

struct cli {
	const char *mode;
	struct tracer_opts topts;
	bool json, summary, tree, status, list_layers, summary_only;
	double duration_s, interval_s;
	const char *output_path;
	const char *perfetto_path;
	bool has_connect, has_filter;
	struct iot_addr connect;
	struct iot_addr listen[HOST_LISTEN_MAX];
	int nlisten;
	size_t queue_bytes;
	int qemu_pids[16];
	int nqemu_pids;
	bool no_qemu;
	bool kernel_route;	/* --qemu-route kernel */
	bool layers_given;	/* -L was given (host mode takes only that among the tracing options) */
};

static const char usage_text[] =
"Usage: iotracer [--mode standalone] [OPTIONS]\n"
"       iotracer --mode guest [--connect ADDR] [FILTERS] [--queue-kb KB]\n"
"       iotracer --mode host [--listen ADDR]... [OUTPUT OPTIONS]\n"
"       iotracer aio [--json] (--pid PID | -- aiobench ARGS...)\n"
"Trace every I/O request on this machine from the system call through the file\n"
"system, page cache, block layer and driver, and show where its time went.\n"
"\n"
"Modes:\n"
"  --mode standalone   trace this machine's kernel and print the requests\n"
"                      (the default)\n"
"  --mode guest        trace this machine (a VM) and stream every request to\n"
"                      a host agent; records wait in a bounded queue while the\n"
"                      host is away, and what is dropped is counted\n"
"  --mode host         accept guest agents (many at once), trace every QEMU\n"
"                      process (its USDT probes where it has them, uprobes\n"
"                      otherwise) and the host kernel beneath it, and\n"
"                      print each guest request joined to the QEMU request\n"
"                      and host I/O that served it, on this machine's clock\n"
"  aio (--mode aio)    measure an aiobench run through its USDT probes: submit,\n"
"                      poll and clear cost per async I/O interface, and what\n"
"                      the kernel did for it (iotracer aio --help)\n"
"\n"
"Guest and host (docs/channel.md):\n"
"      --connect ADDR     guest: where the host agent is (default vsock:2:5470)\n"
"      --listen ADDR      host: where guests connect (repeatable; default\n"
"                         vsock:2:5470, i.e. port 5470 for every guest CID)\n"
"      --queue-kb KB      guest: bound of the unacknowledged send queue\n"
"                         (default 2048)\n"
"      --qemu-pid PID     host: trace this QEMU process (repeatable; default:\n"
"                         every qemu-system-* running, and those that start);\n"
"                         one that cannot be traced is an error\n"
"      --no-qemu          host: only receive guests, trace nothing here (needs\n"
"                         no privileges)\n"
"      --qemu-route R     host: how QEMU's reads and writes are seen. probes\n"
"                         (default): its USDT probes or uprobes, one trap in\n"
"                         QEMU per request. kernel: a VM whose drives are all\n"
"                         raw images (format=raw) under aio=io_uring or\n"
"                         native is seen from the host kernel's io_uring and\n"
"                         io_submit calls alone, no trap; its split has no\n"
"                         stamp inside QEMU (kick_to_host instead of\n"
"                         kick_to_qemu and qemu_to_host). Other VMs keep\n"
"                         their probes\n"
"                         ADDR: vsock:CID:PORT, serial:PATH (in the guest the\n"
"                         virtio-serial port, on the host the unix socket QEMU\n"
"                         serves for it), unix:PATH or tcp:HOST:PORT\n"
"\n"
"Filters (applied in the kernel, before anything is copied):\n"
"  -p, --pid PID          only requests of this process (writeback it caused included)\n"
"  -t, --tid TID          only this thread\n"
"  -c, --comm NAME        only tasks with this command name\n"
"      --cgroup PATH      only tasks in this cgroup v2 directory\n"
"  -d, --dev DEV          only this block device (MAJ:MIN or /dev/NAME)\n"
"      --file PATH        only I/O on this file\n"
"      --dir PATH         only I/O on files below this directory (8 levels)\n"
"  -m, --min-latency US   only requests that took at least US microseconds\n"
"      --sample N         trace one request in N\n"
"  -L, --layers LIST      comma-separated layers to trace (default: all available;\n"
"                         in guest mode all but sched, which hooks every\n"
"                         context switch): syscall,fs,pagecache,sched,block,\n"
"                         nvme,scsi,virtio,io_uring,aio, or all; a layer named\n"
"                         here that the kernel cannot serve is an error. In\n"
"                         host mode, the host kernel layers under QEMU\n"
"                         (default: those the join reads: syscall,block,\n"
"                         io_uring,aio; syscall there means QEMU's positional\n"
"                         calls)\n"
"\n"
"Output:\n"
"  -j, --json             JSON lines (schema in docs/json-schema.md)\n"
"  -s, --summary          per-layer histograms and p50/p90/p99/max at exit;\n"
"                         without -r they are kept in the kernel and no\n"
"                         request is copied out (the cheapest way to run)\n"
"  -r, --requests         print each request even with --summary\n"
"  -i, --interval SEC     with --summary: print and reset every SEC seconds\n"
"  -D, --duration SEC     stop after SEC seconds (default: until Ctrl-C)\n"
"  -o, --output FILE      write records to FILE instead of standard output\n"
"      --perfetto FILE    also write every request to FILE as a Perfetto trace\n"
"                         (protobuf, for ui.perfetto.dev and trace_processor),\n"
"                         written as requests complete: a slice per layer each\n"
"                         request passed, joined by one flow per request; host\n"
"                         mode adds the QEMU and host I/O slices of each guest\n"
"                         request (docs/perfetto.md); in guest mode the guest's\n"
"                         own trace, beside what it streams. With --summary,\n"
"                         requests are copied out of the kernel for it but not\n"
"                         printed\n"
"  -v, --verbose          a tree per request; libbpf and verifier messages\n"
"      --no-status        no live status line on a terminal's stderr\n"
"      --no-fentry        never attach through fentry/fexit (use kprobes or\n"
"                         tracepoints; for kernels where fentry misbehaves)\n"
"      --no-kprobe        never attach through kprobes\n"
"      --list-layers      print how each layer would be traced here, then exit\n"
"      --ringbuf-kb KB    kernel-to-user ring buffer size (power of 2, default 128)\n"
"  -h, --help             this text\n"
"  -V, --version          version\n"
"\n"
"Ctrl-C flushes everything collected and exits 0. Records the ring buffer had no\n"
"room for are counted in the kernel and reported; nothing is lost silently.\n";

static void usage(FILE *f)
{
	fputs(usage_text, f);
}

static void die_usage(const char *fmt, ...)
{
	va_list ap;

	fputs("iotracer: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'iotracer --help'.\n", stderr);
	exit(EXIT_USAGE);
}

static uint64_t parse_u64(const char *opt, const char *s, uint64_t max)
{
	uint64_t v;

	if (iot_parse_u64(s, 0, max, &v))
		die_usage("%s: '%s' is not a number between 0 and %" PRIu64, opt, s, max);
	return v;
}

static double parse_seconds(const char *opt, const char *s)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || v <= 0 || v > 1e7)
		die_usage("%s: '%s' is not a positive number of seconds", opt, s);
	return v;
}

static void stat_path(const char *opt, const char *path, bool want_dir, uint64_t *ret_ino, uint32_t *ret_dev)
{
	struct stat st;

	if (stat(path, &st))
		die_usage("%s: cannot stat '%s': %s", opt, path, strerror(errno));
	if (want_dir != !!S_ISDIR(st.st_mode))
		die_usage("%s: '%s' is %sa directory", opt, path, want_dir ? "not " : "");
	*ret_ino = st.st_ino;
	*ret_dev = iot_kdev(major(st.st_dev), minor(st.st_dev));
}

enum { OPT_CGROUP = 256, OPT_FILE, OPT_DIR, OPT_SAMPLE, OPT_NO_STATUS, OPT_LIST, OPT_RB, OPT_MODE,
       OPT_NO_FENTRY, OPT_NO_KPROBE, OPT_CONNECT, OPT_LISTEN, OPT_QUEUE, OPT_QEMU_PID, OPT_NO_QEMU, OPT_QEMU_ROUTE,
       OPT_PERFETTO };

static void parse_args(int argc, char **argv, struct cli *c)
{
	static const struct option longopts[] = {
		{ "mode", required_argument, NULL, OPT_MODE },
		{ "pid", required_argument, NULL, 'p' },
		{ "tid", required_argument, NULL, 't' },
		{ "comm", required_argument, NULL, 'c' },
		{ "cgroup", required_argument, NULL, OPT_CGROUP },
		{ "dev", required_argument, NULL, 'd' },
		{ "file", required_argument, NULL, OPT_FILE },
		{ "dir", required_argument, NULL, OPT_DIR },
		{ "min-latency", required_argument, NULL, 'm' },
		{ "sample", required_argument, NULL, OPT_SAMPLE },
		{ "layers", required_argument, NULL, 'L' },
		{ "json", no_argument, NULL, 'j' },
		{ "summary", no_argument, NULL, 's' },
		{ "requests", no_argument, NULL, 'r' },
		{ "interval", required_argument, NULL, 'i' },
		{ "duration", required_argument, NULL, 'D' },
		{ "output", required_argument, NULL, 'o' },
		{ "perfetto", required_argument, NULL, OPT_PERFETTO },
		{ "verbose", no_argument, NULL, 'v' },
		{ "no-status", no_argument, NULL, OPT_NO_STATUS },
		{ "no-fentry", no_argument, NULL, OPT_NO_FENTRY },
		{ "no-kprobe", no_argument, NULL, OPT_NO_KPROBE },
		{ "list-layers", no_argument, NULL, OPT_LIST },
		{ "ringbuf-kb", required_argument, NULL, OPT_RB },
		{ "connect", required_argument, NULL, OPT_CONNECT },
		{ "listen", required_argument, NULL, OPT_LISTEN },
		{ "queue-kb", required_argument, NULL, OPT_QUEUE },
		{ "qemu-pid", required_argument, NULL, OPT_QEMU_PID },
		{ "qemu-route", required_argument, NULL, OPT_QEMU_ROUTE },
		{ "no-qemu", no_argument, NULL, OPT_NO_QEMU },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{}
	};
	bool requests = false, has_queue = false, has_route = false, tracing_opts;
	char aerr[300];
	const char *bad;
	uint32_t mask;
	int opt, err;

	c->mode = "standalone";
	c->status = true;
	c->topts.sz = sizeof(c->topts);
	c->topts.layers = (1u << IOT_LAYER_MAX) - 1;
	while ((opt = getopt_long(argc, argv, "p:t:c:d:m:L:jsri:D:o:vhV", longopts, NULL)) != -1) {
		switch (opt) {
		case OPT_MODE:
			c->mode = optarg;
			break;
		case 'p':
			c->topts.pid = parse_u64("--pid", optarg, INT_MAX);
			if (!c->topts.pid)
				die_usage("--pid: 0 is not a process");
			break;
		case 't':
			c->topts.tid = parse_u64("--tid", optarg, INT_MAX);
			if (!c->topts.tid)
				die_usage("--tid: 0 is not a thread");
			break;
		case 'c':
			if (strlen(optarg) >= IOT_COMM_LEN)
				die_usage("--comm: '%s' is longer than the kernel's %d-character command name",
					  optarg, IOT_COMM_LEN - 1);
			c->topts.comm = optarg;
			break;
		case OPT_CGROUP: {
			uint32_t dev;

			stat_path("--cgroup", optarg, true, &c->topts.cgroup_id, &dev);
			break;
		}
		case 'd':
			err = iot_parse_dev(optarg, &c->topts.dev);
			if (err)
				die_usage("--dev: '%s' is neither MAJ:MIN nor a block device: %s", optarg,
					  strerror(-err));
			break;
		case OPT_FILE:
			stat_path("--file", optarg, false, &c->topts.ino, &c->topts.ino_dev);
			break;
		case OPT_DIR:
			stat_path("--dir", optarg, true, &c->topts.dir_ino, &c->topts.dir_dev);
			break;
		case 'm':
			c->topts.min_ns = parse_u64("--min-latency", optarg, UINT64_MAX / 1000) * 1000;
			break;
		case OPT_SAMPLE:
			c->topts.sample_n = parse_u64("--sample", optarg, 1u << 30);
			if (!c->topts.sample_n)
				die_usage("--sample: N must be at least 1");
			break;
		case 'L':
			if (iot_layers_parse(optarg, &mask, &bad))
				die_usage("--layers: unknown layer '%s' (known: syscall, fs, pagecache, sched, block, "
					  "nvme, scsi, virtio, io_uring, aio, all)", bad);
			c->topts.layers = mask;
			c->layers_given = true;
			/* Naming 'all' asks for whatever is available; naming a layer demands it. */
			if (strcmp(optarg, "all"))
				c->topts.layers_explicit = mask;
			break;
		case 'j':
			c->json = true;
			break;
		case 's':
			c->summary = true;
			break;
		case 'r':
			requests = true;
			break;
		case 'i':
			c->interval_s = parse_seconds("--interval", optarg);
			break;
		case 'D':
			c->duration_s = parse_seconds("--duration", optarg);
			break;
		case 'o':
			c->output_path = optarg;
			break;
		case OPT_PERFETTO:
			c->perfetto_path = optarg;
			break;
		case 'v':
			verbose = true;
			c->tree = true;
			break;
		case OPT_NO_STATUS:
			c->status = false;
			break;
		case OPT_NO_FENTRY:
			c->topts.no_fentry = 1;
			break;
		case OPT_NO_KPROBE:
			c->topts.no_kprobe = 1;
			break;
		case OPT_LIST:
			c->list_layers = true;
			break;
		case OPT_RB: {
			uint64_t kb = parse_u64("--ringbuf-kb", optarg, 1u << 20);

			if (kb < 4 || (kb & (kb - 1)))
				die_usage("--ringbuf-kb: %s is not a power of two of at least 4", optarg);
			c->topts.ringbuf_bytes = kb * 1024;
			break;
		}
		case OPT_CONNECT:
			if (iot_addr_parse(optarg, &c->connect, aerr, sizeof(aerr)))
				die_usage("--connect: %s", aerr);
			c->has_connect = true;
			break;
		case OPT_LISTEN:
			if (c->nlisten == HOST_LISTEN_MAX)
				die_usage("--listen: at most %d addresses", HOST_LISTEN_MAX);
			if (iot_addr_parse(optarg, &c->listen[c->nlisten], aerr, sizeof(aerr)))
				die_usage("--listen: %s", aerr);
			c->nlisten++;
			break;
		case OPT_QUEUE: {
			uint64_t kb = parse_u64("--queue-kb", optarg, 1u << 20);

			if (kb < 64)
				die_usage("--queue-kb: %s is less than one batch (64 KiB at least)", optarg);
			c->queue_bytes = kb * 1024;
			has_queue = true;
			break;
		}
		case OPT_QEMU_PID:
			if (c->nqemu_pids == 16)
				die_usage("--qemu-pid: at most 16");
			c->qemu_pids[c->nqemu_pids] = parse_u64("--qemu-pid", optarg, INT_MAX);
			if (!c->qemu_pids[c->nqemu_pids++])
				die_usage("--qemu-pid: 0 is not a process");
			break;
		case OPT_NO_QEMU:
			c->no_qemu = true;
			break;
		case OPT_QEMU_ROUTE:
			if (!strcmp(optarg, "kernel"))
				c->kernel_route = true;
			else if (!strcmp(optarg, "probes"))
				c->kernel_route = false;
			else
				die_usage("--qemu-route: unknown route '%s' (probes, kernel)", optarg);
			has_route = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case 'V':
			printf("iotracer %s\n", IOTRACER_VERSION);
			exit(0);
		default:
			fputs("Try 'iotracer --help'.\n", stderr);
			exit(EXIT_USAGE);
		}
	}
	if (optind < argc)
		die_usage("unexpected argument '%s'", argv[optind]);
	if (!strcmp(c->mode, "aio"))
		die_usage("--mode aio has options of its own and comes first: iotracer aio --help");
	if (strcmp(c->mode, "standalone") && strcmp(c->mode, "guest") && strcmp(c->mode, "host"))
		die_usage("--mode: unknown mode '%s' (standalone, guest, host)", c->mode);
	/* Options of the tracing itself (host mode takes only --layers among them). */
	tracing_opts = c->topts.pid || c->topts.tid || c->topts.comm || c->topts.cgroup_id || c->topts.dev ||
		       c->topts.ino || c->topts.dir_ino || c->topts.min_ns || c->topts.sample_n ||
		       c->topts.no_fentry || c->topts.no_kprobe || c->topts.ringbuf_bytes || c->list_layers;
	c->has_filter = tracing_opts || c->topts.layers_explicit;
	if (c->has_connect && strcmp(c->mode, "guest"))
		die_usage("--connect is for --mode guest");
	if (has_queue && strcmp(c->mode, "guest"))
		die_usage("--queue-kb is for --mode guest");
	if (c->nlisten && strcmp(c->mode, "host"))
		die_usage("--listen is for --mode host");
	if ((c->nqemu_pids || c->no_qemu || has_route) && strcmp(c->mode, "host"))
		die_usage("--qemu-pid, --qemu-route and --no-qemu are for --mode host");
	if (has_route && c->no_qemu)
		die_usage("--qemu-route and --no-qemu contradict each other");
	if (c->nqemu_pids && c->no_qemu)
		die_usage("--qemu-pid and --no-qemu contradict each other");
	if (!strcmp(c->mode, "guest")) {
		if (c->summary || requests || c->interval_s || c->tree || c->output_path)
			die_usage("--mode guest sends its records to the host: --summary, --requests, --interval, "
				  "--verbose and --output belong to the host agent");
		/*
		 * The sched layer runs on every context switch of the whole VM, a
		 * third of the guest's BPF time, for an off-CPU time the host's
		 * join does not use: named with --layers, it is traced.
		 */
		if (!c->layers_given)
			c->topts.layers &= ~(1u << IOT_LAYER_SCHED);
		if (!c->has_connect)
			c->connect = (struct iot_addr){ .kind = IOT_ADDR_VSOCK, .cid = IOT_VSOCK_HOST_CID,
							.port = IOT_DEFAULT_PORT };
		if (!c->queue_bytes)
			c->queue_bytes = 2048 * 1024;
	}
	if (!strcmp(c->mode, "host")) {
		/* --layers picks the host kernel layers under QEMU; filters belong to the guests. */
		if (tracing_opts)
			die_usage("--mode host: filters apply where the tracing happens; give them to the guest "
				  "agents (--layers picks the host kernel layers under QEMU)");
		if (c->no_qemu && c->layers_given)
			die_usage("--layers picks what is traced under QEMU: not with --no-qemu");
		if (!c->nlisten) {
			c->listen[0] = (struct iot_addr){ .kind = IOT_ADDR_VSOCK, .cid = IOT_VSOCK_HOST_CID,
							  .port = IOT_DEFAULT_PORT };
			c->nlisten = 1;
		}
	}
	if (c->interval_s && !c->summary)
		die_usage("--interval needs --summary");
	/* --summary alone prints no per-request lines. */
	c->summary_only = c->summary && !requests;
	/* Nothing to write per request: aggregate in the kernel, copy nothing out. */
	c->topts.kernel_summary = c->summary_only && !c->perfetto_path;
}

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (!verbose)
		return 0;
	return vfprintf(stderr, fmt, args);
}

static void on_signal(int sig)
{
	stop = 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

struct sinks {
	struct output *out;
	struct perfetto *pf;	/* NULL without --perfetto */
	struct guest *guest;	/* guest mode: records go to the host */
};

/* Guest mode with --perfetto: each record to the host, and to this machine's own trace. */
static void on_record_guest(void *ctx, const struct iot_record *rec)
{
	struct sinks *s = ctx;

	if (rec->kind != IOT_KIND_URING_REAP)
		guest_on_record(s->guest, rec);
	perfetto__record(s->pf, rec, NULL, false);
}

static void on_record(void *ctx, const struct iot_record *rec)
{
	struct sinks *s = ctx;

	/* A reap is not a request: only the trace draws it. */
	if (rec->kind != IOT_KIND_URING_REAP)
		output__record(s->out, rec);
	if (s->pf)
		perfetto__record(s->pf, rec, NULL, false);
}

/* --perfetto FILE: the writer, named after this machine; NULL (reason printed) on failure. */
static struct perfetto *perfetto_open(const char *path, const char *machine, int *ret_fd)
{
	struct perfetto_opts popts = { .sz = sizeof(popts), .machine = machine };
	struct utsname u;
	struct perfetto *pf;

	if (!machine && !uname(&u))
		popts.machine = u.nodename;
	popts.fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (popts.fd < 0) {
		fprintf(stderr, "iotracer: cannot open '%s': %s\n", path, strerror(errno));
		return NULL;
	}
	pf = perfetto__new(&popts);
	if (!pf) {
		fprintf(stderr, "iotracer: %s\n", strerror(errno));
		close(popts.fd);
		return NULL;
	}
	*ret_fd = popts.fd;
	return pf;
}

/* Flushes and closes the trace; 0, or -errno (reason printed) when some of it was not written. */
static int perfetto_close(struct perfetto *pf, int fd, const char *path)
{
	struct perfetto_stats st;
	int err;

	if (!pf)
		return 0;
	err = perfetto__flush(pf);
	perfetto__stats(pf, &st);
	if (err)
		fprintf(stderr, "iotracer: writing the Perfetto trace '%s' failed: %s\n", path, strerror(-err));
	if (st.lane_full)
		fprintf(stderr, "iotracer: perfetto: %" PRIu64 " slices on a busy lane (more than 64 requests in "
			"one layer at once); they may show nested wrongly\n", st.lane_full);
	perfetto__free(pf);
	if (close(fd) && !err) {
		err = -errno;
		fprintf(stderr, "iotracer: closing '%s': %s\n", path, strerror(-err));
	}
	return err;
}

static const char *state_name(enum layer_state s)
{
	return s == LAYER_ON ? "on" : s == LAYER_OFF ? "off" : "unavailable";
}

static void report_layers(struct tracer *t, struct output *out, bool json)
{
	for (int l = 0; l < IOT_LAYER_MAX; l++) {
		const struct layer_status *ls = tracer__layer(t, l);

		if (json)
			output__layer(out, iot_layer_name(l), state_name(ls->state), ls->route);
		fprintf(stderr, "iotracer: layer %-9s %-11s %s\n", iot_layer_name(l), state_name(ls->state),
				ls->state == LAYER_OFF ? "" : ls->route);
	}
}

/* In kernel-summary mode the histograms and counts live in the kernel: fetch them. */
static void fetch_summary(struct tracer *t, struct output *out, const uint64_t counts[IOT_CNT_MAX])
{
	struct iot_khist *k = malloc(sizeof(*k));

	if (!k)
		return;
	for (int seg = 0; seg < IOT_SEG_MAX; seg++)
		if (!tracer__khist(t, seg, k))
			output__merge_khist(out, seg, k);
	output__set_kind_counts(out, counts);
	free(k);
}

static void print_summary(struct cli *c, struct tracer *t, struct output *out, FILE *of, bool reset)
{
	/* Kernel counters only grow: an interval reports what came since the last one. */
	static uint64_t prev[IOT_CNT_MAX];
	uint64_t counts[IOT_CNT_MAX] = {}, now[IOT_CNT_MAX] = {};

	tracer__counters(t, now);
	for (int i = 0; i < IOT_CNT_MAX; i++)
		counts[i] = now[i] - prev[i];
	if (c->topts.kernel_summary) {
		output__reset_summary(out);
		fetch_summary(t, out, counts);
	}
	if (c->json)
		output__summary_json(out);
	else
		output__summary(out, of);
	if (counts[IOT_CNT_CALL_IO_SUBMIT] || counts[IOT_CNT_CALL_IO_URING_ENTER] || counts[IOT_CNT_CALL_IO_GETEVENTS])
		fprintf(c->json ? stderr : of, "control calls: io_submit %" PRIu64 " (%.1f us), io_getevents %" PRIu64
			", io_uring_enter %" PRIu64 " (%.1f us)\n", counts[IOT_CNT_CALL_IO_SUBMIT],
			counts[IOT_CNT_NS_IO_SUBMIT] / 1e3, counts[IOT_CNT_CALL_IO_GETEVENTS],
			counts[IOT_CNT_CALL_IO_URING_ENTER], counts[IOT_CNT_NS_IO_URING_ENTER] / 1e3);
	if (reset) {
		output__reset_summary(out);
		if (c->topts.kernel_summary)
			tracer__khist_reset(t);
		memcpy(prev, now, sizeof(prev));
	}
}

static void report_loss(const uint64_t c[IOT_CNT_MAX])
{
	if (c[IOT_CNT_LOST])
		fprintf(stderr, "iotracer: %" PRIu64 " records lost: the ring buffer was full (try --ringbuf-kb)\n",
			c[IOT_CNT_LOST]);
	if (c[IOT_CNT_STATE_FULL])
		fprintf(stderr, "iotracer: %" PRIu64 " requests not followed: in-flight state maps were full\n",
			c[IOT_CNT_STATE_FULL]);
	if (c[IOT_CNT_BIO_UNWALKED])
		fprintf(stderr, "iotracer: %" PRIu64 " requests had more bios than followed per request\n",
			c[IOT_CNT_BIO_UNWALKED]);
}

/* The -o file, fully buffered: the loops flush whenever they have read a batch. NULL (said) on failure. */
static FILE *open_output(const char *path)
{
	FILE *f = fopen(path, "we");

	if (!f) {
		fprintf(stderr, "iotracer: cannot open '%s': %s\n", path, strerror(errno));
		return NULL;
	}
	setvbuf(f, NULL, _IOFBF, 256 << 10);
	return f;
}

static int run_host(struct cli *c)
{
	struct output_opts oopts = { .sz = sizeof(oopts) };
	struct host_opts h = { .nlisten = c->nlisten, .json = c->json, .duration_s = c->duration_s,
			       .stop = &stop, .trace_qemu = !c->no_qemu, .summary = c->summary,
			       .summary_only = c->summary_only,
			       .layers = c->layers_given ? c->topts.layers : 0,
			       .layers_explicit = c->topts.layers_explicit,
			       .nqemu_pids = c->nqemu_pids, .kernel_route = c->kernel_route, .verbose = verbose };
	FILE *of = stdout;
	int err, pfd = -1;

	if (c->output_path) {
		of = open_output(c->output_path);
		if (!of)
			return 1;
	}
	/* On the host's tracks: "host"; each guest's under its own id. */
	if (c->perfetto_path) {
		h.pf = perfetto_open(c->perfetto_path, "host", &pfd);
		if (!h.pf) {
			if (of != stdout)
				fclose(of);
			return 1;
		}
	}
	memcpy(h.listen, c->listen, sizeof(h.listen));
	memcpy(h.qemu_pids, c->qemu_pids, sizeof(h.qemu_pids));
	if (h.trace_qemu)
		libbpf_set_print(libbpf_print);
	oopts.format = c->json ? OUT_JSON : OUT_TEXT;
	oopts.tree = c->tree;
	oopts.per_request = !c->summary_only;
	oopts.out = of;
	oopts.t0_ns = now_ns();
	h.out = output__new(&oopts);
	h.of = of;
	if (!h.out) {
		fprintf(stderr, "iotracer: %s\n", strerror(errno));
		perfetto_close(h.pf, pfd, c->perfetto_path);
		return 1;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	err = host_run(&h);
	if (!err && c->summary) {
		if (c->json)
			output__summary_json(h.out);
		else
			output__summary(h.out, of);
	}
	fflush(of);
	if (perfetto_close(h.pf, pfd, c->perfetto_path))
		err = err ?: -EIO;
	output__free(h.out);
	if (of != stdout)
		fclose(of);
	return err ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct cli c = {};
	struct output_opts oopts = { .sz = sizeof(oopts) };
	struct output *out = NULL;
	struct sinks sinks = {};
	struct tracer *t = NULL;
	struct guest *guest = NULL;
	uint64_t counts[IOT_CNT_MAX] = {}, start, next_status, next_interval = 0, last_records = 0;
	char errbuf[256];
	FILE *of = stdout;
	bool tty;
	int err, pfd = -1;

	/* The async I/O report has options of its own. */
	if (argc > 1 && !strcmp(argv[1], "aio"))
		return aio_main(argc - 1, argv + 1);
	if (argc > 2 && !strcmp(argv[1], "--mode") && !strcmp(argv[2], "aio"))
		return aio_main(argc - 2, argv + 2);
	if (argc > 1 && !strcmp(argv[1], "--mode=aio"))
		return aio_main(argc - 1, argv + 1);
	parse_args(argc, argv, &c);
	/* A peer gone away shows up as an error from write(), not as a signal. */
	signal(SIGPIPE, SIG_IGN);
	if (!strcmp(c.mode, "host"))
		return run_host(&c);
	if (!strcmp(c.mode, "guest")) {
		struct guest_opts gopts = { .addr = c.connect, .queue_bytes = c.queue_bytes,
					    .duration_s = c.duration_s, .json = c.json, .out = stdout,
					    .stop = &stop };

		guest = guest_new(&gopts, errbuf, sizeof(errbuf));
		if (!guest) {
			fprintf(stderr, "iotracer: %s\n", errbuf);
			return 1;
		}
		c.duration_s = 0;
	}
	libbpf_set_print(libbpf_print);
	err = tracer_prepare_env(errbuf, sizeof(errbuf));
	if (err) {
		fprintf(stderr, "iotracer: %s\n", errbuf);
		return 1;
	}
	if (c.output_path) {
		of = open_output(c.output_path);
		if (!of)
			return 1;
	}
	oopts.format = c.json ? OUT_JSON : OUT_TEXT;
	oopts.tree = c.tree;
	oopts.per_request = !c.summary_only;
	oopts.out = of;
	oopts.t0_ns = now_ns();
	out = output__new(&oopts);
	if (c.perfetto_path && !c.list_layers) {
		c.topts.uring_reap = 1;
		sinks.pf = perfetto_open(c.perfetto_path, NULL, &pfd);
		if (!sinks.pf) {
			err = -EIO;
			goto out_free;
		}
	}
	sinks.out = out;
	sinks.guest = guest;
	if (guest && sinks.pf) {
		c.topts.on_record = on_record_guest;
		c.topts.ctx = &sinks;
	} else {
		c.topts.on_record = guest ? guest_on_record : on_record;
		c.topts.ctx = guest ? (void *)guest : (void *)&sinks;
	}
	t = out ? tracer__new(&c.topts) : NULL;
	if (!t) {
		err = -errno;
		fprintf(stderr, "iotracer: %s\n", strerror(-err));
		goto out_free;
	}
	err = tracer__load(t);
	if (c.list_layers || err)
		report_layers(t, out, false);
	if (err) {
		fprintf(stderr, "iotracer: %s\n", tracer__error(t) ?: strerror(-err));
		goto out_free;
	}
	if (c.list_layers)
		goto out_free;
	err = tracer__attach(t);
	report_layers(t, out, c.json);
	/* Whoever reads us (a pipe, a test) learns at once that tracing is live. */
	fflush(of);
	if (err) {
		fprintf(stderr, "iotracer: %s\n", tracer__error(t) ?: strerror(-err));
		goto out_free;
	}
	/* libbpf's parse of the kernel BTF is done: give that memory back. */
	malloc_trim(0);

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (guest) {
		err = guest_run(guest, t);
		goto out_free;
	}
	tty = c.status && isatty(STDERR_FILENO);
	start = now_ns();
	next_status = start + 1000000000ULL;
	if (c.interval_s)
		next_interval = start + (uint64_t)(c.interval_s * 1e9);
	if (!c.json && !c.summary_only)
		fprintf(stderr, "iotracer: tracing%s; Ctrl-C to stop\n", c.duration_s ? " for the given duration" : "");
	while (!stop) {
		uint64_t now;

		err = tracer__poll(t, 100);
		if (err == -EINTR) {
			err = 0;
			break;
		}
		if (err < 0) {
			fprintf(stderr, "iotracer: reading the ring buffer failed: %s\n", strerror(-err));
			break;
		}
		if (err > 0) {
			fflush(of);
			if (sinks.pf)
				perfetto__flush(sinks.pf);
		}
		err = 0;
		now = now_ns();
		if (c.duration_s && now - start >= (uint64_t)(c.duration_s * 1e9))
			break;
		if (tty && now >= next_status) {
			tracer__counters(t, counts);
			/* The kernel counts requests in both modes (records or in-kernel summary). */
			uint64_t reqs = counts[IOT_CNT_REQ_SYSCALL] + counts[IOT_CNT_REQ_URING] +
					counts[IOT_CNT_REQ_AIO] + counts[IOT_CNT_REQ_BIO];

			fprintf(stderr, "\r\033[K%" PRIu64 " req/s, %" PRIu64 " lost", reqs - last_records,
				counts[IOT_CNT_LOST]);
			last_records = reqs;
			next_status = now + 1000000000ULL;
		}
		if (next_interval && now >= next_interval) {
			print_summary(&c, t, out, of, true);
			next_interval = now + (uint64_t)(c.interval_s * 1e9);
		}
	}
	if (tty)
		fprintf(stderr, "\r\033[K");
	tracer__flush(t);
	if (!tracer__counters(t, counts)) {
		output__stats(out, counts, 0);
		report_loss(counts);
	}
	if (c.summary)
		print_summary(&c, t, out, of, false);
	fflush(of);
out_free:
	tracer__free(t);
	if (perfetto_close(sinks.pf, pfd, c.perfetto_path))
		err = err ?: -EIO;
	guest_free(guest);
	output__free(out);
	if (of != stdout)
		fclose(of);
	return err ? 1 : 0;
}
