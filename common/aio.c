// SPDX-License-Identifier: GPL-2.0
/*
 * `iotracer aio`: attaches to aiobench's USDT probes (a running process, or
 * one it launches) and reports, per async I/O interface and configuration,
 * the total cost and the share of it spent submitting, polling for
 * completions and clearing them, beside what the kernel did for the same
 * requests (io_uring inline / io-wq / poll, AIO iocbs, system calls).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "aio.h"
#include "num.h"
#include "tracer.h"
#include "aio.skel.h"

#define EXIT_USAGE 2

static const char aio_usage_text[] =
"Usage: iotracer aio [OPTIONS] -- COMMAND [ARGS...]\n"
"       iotracer aio [OPTIONS] --pid PID\n"
"Measure an aiobench run from the outside: per async I/O interface (io_uring,\n"
"Linux native AIO, POSIX AIO) and configuration, the total cost of its batches\n"
"and the share spent in submit, poll and clear (from aiobench's USDT probes),\n"
"and what the kernel did for them: io_uring requests issued inline, punted to\n"
"io-wq or armed for poll, AIO iocbs, and system calls per I/O.\n"
"(`iotracer --mode aio ...` is the same command.)\n"
"\n"
"  -p, --pid PID        attach to this running aiobench; it is sent SIGUSR1 once\n"
"                       the probes are in (aiobench --wait-attach waits for it)\n"
"  -- COMMAND ARGS      launch aiobench (or a program with its probes) and\n"
"                       attach before it runs; the report follows its exit,\n"
"                       and its exit status becomes ours when it failed\n"
"  -j, --json           one JSON object per configuration\n"
"  -o, --output FILE    write the report to FILE (default standard output)\n"
"  -D, --duration SEC   report after SEC seconds instead of at the process's exit\n"
"  -v, --verbose        libbpf messages\n"
"  -h, --help           this text\n"
"\n"
"Ctrl-C reports what was collected so far. Costs are the time between each\n"
"phase's start and end probe, summed over every batch of the run; the shares\n"
"add up to the total. docs/aio.md explains the columns.\n";

static volatile sig_atomic_t aio_stop;
static bool aio_verbose;

static void aio_on_signal(int sig)
{
	aio_stop = 1;
}

static int aio_print(enum libbpf_print_level level, const char *fmt, va_list args)
{
	return aio_verbose ? vfprintf(stderr, fmt, args) : 0;
}

static const char *const engine_names[IOT_AIO_ENGINES] = { "io_uring", "libaio", "posix" };

static const char *const phase_probes[IOT_AIO_PHASES][2] = {
	{ "submit_start", "submit_end" },
	{ "poll_start", "poll_end" },
	{ "clear_start", "clear_end" },
};

/* x86_64 system call names the three engines make; others print by number. */
static const struct { int nr; const char *name; } sys_names[] = {
	{ 0, "read" }, { 1, "write" }, { 3, "close" }, { 7, "poll" }, { 9, "mmap" },
	{ 10, "mprotect" }, { 11, "munmap" }, { 12, "brk" }, { 13, "rt_sigaction" }, { 14, "rt_sigprocmask" },
	{ 17, "pread64" }, { 18, "pwrite64" }, { 19, "readv" }, { 20, "writev" },
	{ 24, "sched_yield" }, { 35, "nanosleep" }, { 56, "clone" }, { 60, "exit" },
	{ 74, "fsync" }, { 75, "fdatasync" }, { 186, "gettid" }, { 202, "futex" },
	{ 208, "io_getevents" }, { 209, "io_submit" }, { 228, "clock_gettime" },
	{ 230, "clock_nanosleep" }, { 231, "exit_group" }, { 257, "openat" },
	{ 273, "set_robust_list" }, { 295, "preadv" }, { 296, "pwritev" },
	{ 327, "preadv2" }, { 328, "pwritev2" }, { 333, "io_pgetevents" }, { 334, "rseq" },
	{ 426, "io_uring_enter" }, { 435, "clone3" },
};

static const char *sys_name(int nr, char *buf, size_t len)
{
	for (size_t i = 0; i < sizeof(sys_names) / sizeof(sys_names[0]); i++)
		if (sys_names[i].nr == nr)
			return sys_names[i].name;
	snprintf(buf, len, "syscall_%d", nr);
	return buf;
}

/* Exited: no such process, or a zombie its parent has not reaped yet. */
static bool process_gone(int pid)
{
	char path[64], buf[256], *close_paren;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT || errno == ESRCH;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return true;
	buf[n] = '\0';
	/* "pid (comm) S ...": the state follows the last ')' (comm may hold one). */
	close_paren = strrchr(buf, ')');
	return close_paren && close_paren[1] == ' ' && (close_paren[2] == 'Z' || close_paren[2] == 'X');
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* Sums the per-CPU copies of one slot. */
static int read_slot(struct aio_bpf *skel, __u32 slot, int ncpu, struct iot_aio_stats *ret)
{
	struct iot_aio_stats *v = calloc(ncpu, sizeof(*v));
	int err;

	if (!v)
		return -ENOMEM;
	err = bpf_map_lookup_elem(bpf_map__fd(skel->maps.stats), &slot, v);
	if (err) {
		err = -errno;
		free(v);
		return err;
	}
	memset(ret, 0, sizeof(*ret));
	for (int c = 0; c < ncpu; c++) {
		const __u64 *src = (const __u64 *)&v[c];
		__u64 *dst = (__u64 *)ret;

		/* Configuration fields are set, not summed: keep the one that was written. */
		for (size_t i = 0; i < sizeof(*ret) / sizeof(__u64); i++)
			dst[i] += src[i];
		if (v[c].nfiles) {
			ret->nfiles = v[c].nfiles;
			ret->batch = v[c].batch;
			ret->bs = v[c].bs;
			ret->iterations = v[c].iterations;
		}
	}
	free(v);
	return 0;
}

static void config_text(unsigned int slot, char *buf, size_t len)
{
	unsigned int engine = slot / IOT_AIO_FLAGS, flags = slot % IOT_AIO_FLAGS;
	const char *io = flags & IOT_AIO_F_DIRECT ? "O_DIRECT" : "buffered";

	if (engine == IOT_AIO_URING)
		snprintf(buf, len, "%s (sqpoll %s, registered files %s, registered buffers %s, %s)",
			 engine_names[engine], flags & IOT_AIO_F_SQPOLL ? "on" : "off",
			 flags & IOT_AIO_F_REG_FILES ? "on" : "off", flags & IOT_AIO_F_REG_BUFS ? "on" : "off", io);
	else
		snprintf(buf, len, "%s (%s)", engine_names[engine], io);
}

/* The system calls a slot made, most frequent first (at most max). */
static int top_syscalls(const struct iot_aio_stats *s, int *nrs, int max)
{
	int n = 0;

	for (int nr = 0; nr < IOT_AIO_NR_MAX; nr++) {
		int i;

		if (!s->sys_nr[nr])
			continue;
		for (i = n; i > 0 && s->sys_nr[nrs[i - 1]] < s->sys_nr[nr]; i--)
			if (i < max)
				nrs[i] = nrs[i - 1];
		if (i < max) {
			nrs[i] = nr;
			if (n < max)
				n++;
		}
	}
	return n;
}

static double share(uint64_t part, uint64_t total)
{
	return total ? (double)part / total : 0;
}

static void report_text(FILE *f, unsigned int slot, const struct iot_aio_stats *s)
{
	uint64_t total = s->phase_ns[IOT_AIO_SUBMIT] + s->phase_ns[IOT_AIO_POLL] + s->phase_ns[IOT_AIO_CLEAR];
	uint64_t ios = s->ios ? s->ios : s->phase_items[IOT_AIO_SUBMIT];
	char cfg[160], nbuf[24];
	int nrs[8], n;

	config_text(slot, cfg, sizeof(cfg));
	fprintf(f, "%s: %" PRIu64 " run%s, %" PRIu64 " files, batch %" PRIu64 ", bs %" PRIu64 ", %" PRIu64
		" iterations\n", cfg, (uint64_t)s->runs, s->runs == 1 ? "" : "s", (uint64_t)s->nfiles,
		(uint64_t)s->batch, (uint64_t)s->bs, (uint64_t)s->iterations);
	fprintf(f, "      total cost(us)   submit cost   poll cost   clear cost\n");
	fprintf(f, "%20.2f %13.2f %11.2f %12.2f\n", total / 1e3, share(s->phase_ns[IOT_AIO_SUBMIT], total),
		share(s->phase_ns[IOT_AIO_POLL], total), share(s->phase_ns[IOT_AIO_CLEAR], total));
	if (s->iterations && s->runs)
		fprintf(f, "  per iteration(us) %12.2f\n", total / 1e3 / (s->iterations * s->runs));
	fprintf(f, "  calls      submit %" PRIu64 ", poll %" PRIu64 ", clear %" PRIu64 "; %" PRIu64
		" I/Os (%.2f us each)\n", (uint64_t)s->phase_calls[IOT_AIO_SUBMIT],
		(uint64_t)s->phase_calls[IOT_AIO_POLL], (uint64_t)s->phase_calls[IOT_AIO_CLEAR], ios,
		ios ? total / 1e3 / ios : 0.0);
	if (s->phase_unpaired)
		fprintf(f, "  note       %" PRIu64 " phase ends had no start (attached mid-phase); not counted\n",
			(uint64_t)s->phase_unpaired);
	if (s->uring_submitted) {
		uint64_t async = s->uring_punted + s->uring_poll_armed;
		uint64_t inl = s->uring_submitted > async ? s->uring_submitted - async : 0;

		fprintf(f, "  io_uring   %" PRIu64 " requests: %" PRIu64 " inline, %" PRIu64 " punted to io-wq, %"
			PRIu64 " armed a poll; %" PRIu64 " submitted by the SQPOLL thread; %" PRIu64
			" completed; %" PRIu64 " waits for CQEs\n", (uint64_t)s->uring_submitted, inl,
			(uint64_t)s->uring_punted, (uint64_t)s->uring_poll_armed, (uint64_t)s->uring_sq_thread,
			(uint64_t)s->uring_completed, (uint64_t)s->uring_cqring_waits);
	}
	if (s->aio_iocbs || s->aio_events)
		fprintf(f, "  aio        %" PRIu64 " iocbs submitted (%.2f us each inside io_submit), %" PRIu64
			" events reaped\n", (uint64_t)s->aio_iocbs,
			s->aio_iocbs ? s->aio_submit_ns / 1e3 / s->aio_iocbs : 0.0, (uint64_t)s->aio_events);
	fprintf(f, "  syscalls   %" PRIu64 " (%.4f per I/O)", (uint64_t)s->syscalls,
		ios ? (double)s->syscalls / ios : 0.0);
	n = top_syscalls(s, nrs, 6);
	for (int i = 0; i < n; i++)
		fprintf(f, "%s %s %" PRIu64, i ? "," : ":", sys_name(nrs[i], nbuf, sizeof(nbuf)),
			(uint64_t)s->sys_nr[nrs[i]]);
	fputc('\n', f);
}

static void report_json(FILE *f, unsigned int slot, const struct iot_aio_stats *s, int pid)
{
	unsigned int engine = slot / IOT_AIO_FLAGS, flags = slot % IOT_AIO_FLAGS;
	uint64_t total = s->phase_ns[IOT_AIO_SUBMIT] + s->phase_ns[IOT_AIO_POLL] + s->phase_ns[IOT_AIO_CLEAR];
	char nbuf[24];
	int nrs[IOT_AIO_NR_MAX], n;

	fprintf(f, "{\"type\":\"aio\",\"pid\":%d,\"engine\":\"%s\",\"sqpoll\":%s,\"reg_files\":%s,\"reg_bufs\":%s,"
		"\"direct\":%s,\"runs\":%" PRIu64 ",\"files\":%" PRIu64 ",\"batch\":%" PRIu64 ",\"bs\":%" PRIu64
		",\"iterations\":%" PRIu64 ",\"ios\":%" PRIu64 ",\"run_ns\":%" PRIu64, pid, engine_names[engine],
		flags & IOT_AIO_F_SQPOLL ? "true" : "false", flags & IOT_AIO_F_REG_FILES ? "true" : "false",
		flags & IOT_AIO_F_REG_BUFS ? "true" : "false", flags & IOT_AIO_F_DIRECT ? "true" : "false",
		(uint64_t)s->runs, (uint64_t)s->nfiles, (uint64_t)s->batch, (uint64_t)s->bs,
		(uint64_t)s->iterations, (uint64_t)s->ios, (uint64_t)s->run_ns);
	fprintf(f, ",\"total_ns\":%" PRIu64, total);
	for (int p = 0; p < IOT_AIO_PHASES; p++) {
		static const char *const pn[] = { "submit", "poll", "clear" };

		fprintf(f, ",\"%s_calls\":%" PRIu64 ",\"%s_ns\":%" PRIu64 ",\"%s_items\":%" PRIu64
			",\"%s_share\":%.6f", pn[p], (uint64_t)s->phase_calls[p], pn[p], (uint64_t)s->phase_ns[p],
			pn[p], (uint64_t)s->phase_items[p], pn[p], share(s->phase_ns[p], total));
	}
	fprintf(f, ",\"unpaired\":%" PRIu64 ",\"uring\":{\"submitted\":%" PRIu64 ",\"sq_thread\":%" PRIu64
		",\"punted\":%" PRIu64 ",\"poll_armed\":%" PRIu64 ",\"task_work\":%" PRIu64 ",\"completed\":%" PRIu64
		",\"cqring_waits\":%" PRIu64 "},\"aio\":{\"iocbs\":%" PRIu64 ",\"events\":%" PRIu64
		",\"submit_ns\":%" PRIu64 "},\"syscalls\":%" PRIu64 ",\"syscall_counts\":{",
		(uint64_t)s->phase_unpaired, (uint64_t)s->uring_submitted, (uint64_t)s->uring_sq_thread,
		(uint64_t)s->uring_punted, (uint64_t)s->uring_poll_armed, (uint64_t)s->uring_task_work,
		(uint64_t)s->uring_completed, (uint64_t)s->uring_cqring_waits, (uint64_t)s->aio_iocbs,
		(uint64_t)s->aio_events, (uint64_t)s->aio_submit_ns, (uint64_t)s->syscalls);
	n = top_syscalls(s, nrs, IOT_AIO_NR_MAX);
	for (int i = 0; i < n; i++)
		fprintf(f, "%s\"%s\":%" PRIu64, i ? "," : "", sys_name(nrs[i], nbuf, sizeof(nbuf)),
			(uint64_t)s->sys_nr[nrs[i]]);
	fprintf(f, "}}\n");
}

/* Prints every configuration that ran; -errno when the counters could not be read. */
static int report(struct aio_bpf *skel, const struct aio_opts *o, int pid)
{
	int ncpu = libbpf_num_possible_cpus(), shown = 0, err;
	struct iot_aio_stats *s = malloc(sizeof(*s));

	if (ncpu < 0)
		return ncpu;
	if (!s)
		return -ENOMEM;
	for (unsigned int slot = 0; slot < IOT_AIO_SLOTS; slot++) {
		err = read_slot(skel, slot, ncpu, s);
		if (err) {
			free(s);
			return err;
		}
		if (!s->runs)
			continue;
		/* A run still going: its span so far. */
		if ((int)slot == skel->data->cur_slot)
			s->run_ns += mono_ns();
		if (o->json)
			report_json(o->out, slot, s, pid);
		else
			report_text(o->out, slot, s);
		shown++;
	}
	free(s);
	if (!shown)
		fprintf(stderr, "iotracer: aio: no aiobench run started while attached (no run_start probe fired)\n");
	fflush(o->out);
	return 0;
}

/* PATH lookup as execvp does it; the result (ret_path: PATH_MAX bytes) is what the probes are attached to. */
static int resolve_command(const char *cmd, char *ret_path)
{
	const char *path = getenv("PATH");
	char buf[PATH_MAX];

	if (strchr(cmd, '/')) {
		if (!realpath(cmd, ret_path))
			return -errno;
		return 0;
	}
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	while (*path) {
		const char *end = strchrnul(path, ':');
		int n = snprintf(buf, sizeof(buf), "%.*s/%s", (int)(end - path), path, cmd);

		if (n > 0 && (size_t)n < sizeof(buf) && !access(buf, X_OK) && realpath(buf, ret_path))
			return 0;
		path = *end ? end + 1 : end;
	}
	return -ENOENT;
}

#define AIO_LINKS (2 + 2 * IOT_AIO_PHASES)

/* Attaches the eight probes; the links go in ret_links (freed by the caller, also on failure). */
static int attach_probes(struct aio_bpf *skel, int pid, const char *binary, struct bpf_link **ret_links)
{
	LIBBPF_OPTS(bpf_usdt_opts, uo);
	int n = 0;

	ret_links[n] = bpf_program__attach_usdt(skel->progs.run_start, pid, binary, "aiobench", "run_start", NULL);
	if (!ret_links[n++])
		return -errno;
	ret_links[n] = bpf_program__attach_usdt(skel->progs.run_end, pid, binary, "aiobench", "run_end", NULL);
	if (!ret_links[n++])
		return -errno;
	for (int p = 0; p < IOT_AIO_PHASES; p++)
		for (int end = 0; end < 2; end++) {
			uo.usdt_cookie = IOT_AIO_COOKIE(p, end);
			ret_links[n] = bpf_program__attach_usdt(skel->progs.phase, pid, binary, "aiobench",
								phase_probes[p][end], &uo);
			if (!ret_links[n++])
				return -errno;
		}
	return 0;
}

int aio_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "pid", required_argument, NULL, 'p' },
		{ "json", no_argument, NULL, 'j' },
		{ "output", required_argument, NULL, 'o' },
		{ "duration", required_argument, NULL, 'D' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	struct aio_opts o = { .out = stdout };
	const char *output_path = NULL;
	char binary[PATH_MAX], exe[64], errbuf[256];
	struct aio_bpf *skel = NULL;
	struct bpf_link *links[AIO_LINKS] = {};
	int opt, err, pid, status = 0, gate[2] = { -1, -1 }, ret = 1;
	bool launched, exited = false;
	uint64_t deadline = 0, v;
	char *end;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "+p:jo:D:vh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'p':
			if (iot_parse_u64(optarg, 1, INT_MAX, &v)) {
				fprintf(stderr, "iotracer: aio: --pid: not a process id: '%s'\n", optarg);
				return EXIT_USAGE;
			}
			o.pid = v;
			break;
		case 'j':
			o.json = true;
			break;
		case 'o':
			output_path = optarg;
			break;
		case 'D':
			o.duration_s = strtod(optarg, &end);
			if (*end || !(o.duration_s > 0)) {
				fprintf(stderr, "iotracer: aio: --duration: not a positive number of seconds: '%s'\n", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'v':
			o.verbose = aio_verbose = true;
			break;
		case 'h':
			fputs(aio_usage_text, stdout);
			return 0;
		default:
			fputs(aio_usage_text, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind < argc)
		o.argv = argv + optind;
	if (!o.pid == !o.argv) {
		fprintf(stderr, "iotracer: aio: give either --pid PID or -- COMMAND (one of them)\n");
		return EXIT_USAGE;
	}
	launched = o.argv;
	if (launched) {
		err = resolve_command(o.argv[0], binary);
		if (err) {
			fprintf(stderr, "iotracer: aio: cannot find '%s': %s\n", o.argv[0], strerror(-err));
			return 1;
		}
	} else {
		ssize_t n;

		snprintf(exe, sizeof(exe), "/proc/%d/exe", o.pid);
		n = readlink(exe, binary, sizeof(binary) - 1);
		if (n < 0) {
			fprintf(stderr, "iotracer: aio: process %d: %s\n", o.pid,
				errno == ENOENT ? "no such process" : strerror(errno));
			return 1;
		}
		binary[n] = '\0';
		/* Attach through /proc so a binary replaced on disk since still resolves. */
		snprintf(binary, sizeof(binary), "/proc/%d/exe", o.pid);
	}
	libbpf_set_print(aio_print);
	err = tracer_prepare_env(errbuf, sizeof(errbuf));
	if (err) {
		fprintf(stderr, "iotracer: %s\n", errbuf);
		return 1;
	}
	if (output_path) {
		o.out = fopen(output_path, "we");
		if (!o.out) {
			fprintf(stderr, "iotracer: aio: cannot open '%s': %s\n", output_path, strerror(errno));
			return 1;
		}
	}
	signal(SIGINT, aio_on_signal);
	signal(SIGTERM, aio_on_signal);
	pid = o.pid;
	if (launched) {
		/* The child waits at the gate until the probes are in, then execs. */
		if (pipe2(gate, O_CLOEXEC)) {
			fprintf(stderr, "iotracer: aio: pipe: %s\n", strerror(errno));
			goto out;
		}
		pid = fork();
		if (pid < 0) {
			fprintf(stderr, "iotracer: aio: fork: %s\n", strerror(errno));
			goto out;
		}
		if (pid == 0) {
			char go;

			close(gate[1]);
			signal(SIGINT, SIG_DFL);
			signal(SIGTERM, SIG_DFL);
			if (read(gate[0], &go, 1) != 1)
				_exit(127);
			execvp(o.argv[0], o.argv);
			fprintf(stderr, "iotracer: aio: cannot run '%s': %s\n", o.argv[0], strerror(errno));
			_exit(127);
		}
		close(gate[0]);
		gate[0] = -1;
	}
	skel = aio_bpf__open();
	if (!skel) {
		fprintf(stderr, "iotracer: aio: opening the BPF object: %s\n", strerror(errno));
		goto out;
	}
	skel->rodata->targ_tgid = pid;
	err = aio_bpf__load(skel);
	if (err) {
		fprintf(stderr, "iotracer: aio: loading the BPF programs: %s (run with -v for the verifier's log)\n",
			strerror(-err));
		goto out;
	}
	err = aio_bpf__attach(skel);
	if (err) {
		fprintf(stderr, "iotracer: aio: attaching the io_uring and syscall tracepoints: %s\n", strerror(-err));
		goto out;
	}
	/* Launched: probe every process of the binary (the child is not running it yet); BPF keeps the child's. */
	err = attach_probes(skel, launched ? -1 : pid, binary, links);
	if (err) {
		fprintf(stderr, "iotracer: aio: attaching to the aiobench USDT probes in '%s': %s%s\n", binary,
			strerror(-err), err == -ENOENT ? " (the binary has no aiobench:run_start probe: is it aiobench?)" : "");
		goto out;
	}
	if (launched) {
		if (write(gate[1], "g", 1) != 1) {
			fprintf(stderr, "iotracer: aio: starting the command: %s\n", strerror(errno));
			goto out;
		}
		close(gate[1]);
		gate[1] = -1;
	} else if (kill(pid, SIGUSR1) && errno == ESRCH) {
		fprintf(stderr, "iotracer: aio: process %d exited before the probes were in\n", pid);
		goto out;
	}
	if (o.duration_s)
		deadline = mono_ns() + (uint64_t)(o.duration_s * 1e9);
	while (!aio_stop && (!deadline || mono_ns() < deadline)) {
		if (launched) {
			int w = waitpid(pid, &status, WNOHANG);

			if (w == pid) {
				exited = true;
				break;
			}
		} else if (process_gone(pid)) {
			break;
		}
		usleep(50 * 1000);
	}
	if (launched && !exited && aio_stop) {
		/* Ctrl-C reached the child too (same process group); collect it. */
		if (waitpid(pid, &status, 0) == pid)
			exited = true;
	}
	err = report(skel, &o, pid);
	if (err) {
		fprintf(stderr, "iotracer: aio: reading the counters: %s\n", strerror(-err));
		goto out;
	}
	ret = 0;
	if (exited && WIFEXITED(status) && WEXITSTATUS(status)) {
		fprintf(stderr, "iotracer: aio: '%s' exited with status %d\n", o.argv[0], WEXITSTATUS(status));
		ret = WEXITSTATUS(status);
	} else if (exited && WIFSIGNALED(status) && WTERMSIG(status) != SIGINT) {
		fprintf(stderr, "iotracer: aio: '%s' was killed by signal %d\n", o.argv[0], WTERMSIG(status));
		ret = 1;
	}
out:
	if (launched && pid > 0 && !exited && ret) {
		/* We failed before the command could run: it must not run untraced. */
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	if (gate[1] >= 0)
		close(gate[1]);
	for (int i = 0; i < AIO_LINKS; i++)
		bpf_link__destroy(links[i]);
	aio_bpf__destroy(skel);
	if (o.out && o.out != stdout && fclose(o.out) && !ret) {
		fprintf(stderr, "iotracer: aio: writing '%s': %s\n", output_path, strerror(errno));
		ret = 1;
	}
	return ret;
}
