// SPDX-License-Identifier: GPL-2.0
/*
 * Route selection, load and attach of the BPF side.
 *
 * Each layer has a preferred attach route and fallbacks; the running kernel
 * is probed with real loads and attaches (never guessed from its version),
 * the programs of routes not taken get autoload off, and every layer ends
 * up on, off by request, or unavailable with a reason.
 */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include "srec.h"
#include "tracer.h"
#include "disks.h"
#include "names.h"
#include "iotracer.skel.h"
#include "probe.skel.h"

#define TRACEFS "/sys/kernel/tracing"
#define MAX_LINKS 128

struct tracer {
	struct tracer_opts opts;
	struct iotracer_bpf *skel;
	struct ring_buffer *rb;
	struct bpf_link *links[MAX_LINKS];
	int prog_layer[MAX_LINKS];	/* layer of each enabled program, by enable order */
	struct bpf_program *progs[MAX_LINKS];
	int nprogs, nlinks;
	struct layer_status layers[IOT_LAYER_MAX];
	struct disk_set disks;
	bool fentry_ok, kprobe_ok, tp_btf_ok, use_btf;
	uint64_t undecodable;		/* records that did not read back (counted as lost) */
	char err[256];
};

static const char *const fs_funcs[] = {
	"vfs_read", "vfs_write", "vfs_iter_read", "vfs_iter_write", "vfs_fsync_range", NULL };
static const char *const fs_tps[] = {
	"iomap_dio_rw_begin", "ext4_da_write_begin", "ext4_write_begin", "ext4_sync_file_enter",
	"xfs_file_buffered_read", "xfs_file_buffered_write", "xfs_file_direct_read",
	"xfs_file_direct_write", NULL };
static const char *const pagecache_tps[] = {
	"mm_filemap_get_pages", "mm_filemap_add_to_page_cache", "writeback_dirty_folio",
	"writeback_single_inode_start", "writeback_single_inode", NULL };
/* Lookups (mm_filemap_get_pages, 6.x) and inode writeback are welcome, not required. */
static const char *const pagecache_required[] = {
	"mm_filemap_add_to_page_cache", "writeback_dirty_folio", NULL };
static const char *const sched_tps[] = { "sched_switch", NULL };
static const char *const block_tps[] = {
	"block_bio_queue", "block_bio_backmerge", "block_bio_frontmerge", "block_bio_remap",
	"block_split", "block_rq_insert", "block_rq_issue", "block_rq_requeue", "block_rq_error",
	"block_rq_complete", "block_bio_complete", NULL };
/* Only block_bio_queue, block_rq_issue and block_rq_complete are essential. */
static const char *const block_required[] = {
	"block_bio_queue", "block_rq_issue", "block_rq_complete", NULL };
static const char *const uring_tps[] = {
	"io_uring_queue_async_work", "io_uring_poll_arm", "io_uring_task_add", "io_uring_complete",
	"io_uring_link", "io_uring_cqring_wait", NULL };
static const char *const syscalls_sync[] = {
	"read", "write", "pread64", "pwrite64", "readv", "writev", "preadv", "pwritev",
	"preadv2", "pwritev2", "fsync", "fdatasync", "sync_file_range", NULL };
static const char *const syscalls_positional[] = {
	"pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2", "fsync", "fdatasync",
	"sync_file_range", NULL };
static const char *const syscalls_aio[] = { "io_submit", NULL };
static const char *const syscalls_uring[] = { "io_uring_enter", NULL };

static void set_err(struct tracer *t, const char *fmt, ...)
{
	va_list ap;

	if (t->err[0])
		return;
	va_start(ap, fmt);
	vsnprintf(t->err, sizeof(t->err), fmt, ap);
	va_end(ap);
}

static void layer_set(struct tracer *t, int l, enum layer_state st, const char *fmt, ...)
{
	va_list ap;

	t->layers[l].state = st;
	va_start(ap, fmt);
	vsnprintf(t->layers[l].route, sizeof(t->layers[l].route), fmt, ap);
	va_end(ap);
}

static bool tp_exists(const char *name)
{
	char pat[PATH_MAX];
	glob_t g;
	bool found;

	snprintf(pat, sizeof(pat), TRACEFS "/events/*/%s", name);
	found = glob(pat, GLOB_NOSORT, NULL, &g) == 0 && g.gl_pathc > 0;
	globfree(&g);
	return found;
}

static bool syscall_tp_exists(const char *name)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), TRACEFS "/events/syscalls/sys_enter_%s", name);
	return access(path, F_OK) == 0;
}

static int print_quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	return 0;
}

/* Load and attach one tiny program to learn whether a route works here. */
static bool probe_route(const char *prog_name, const char *target)
{
	libbpf_print_fn_t old = libbpf_set_print(print_quiet);
	struct probe_bpf *p = probe_bpf__open();
	struct bpf_program *prog, *want = NULL;
	struct bpf_link *link = NULL;
	bool ok = false;

	if (!p)
		goto out_restore;
	bpf_object__for_each_program(prog, p->obj) {
		bool me = !strcmp(bpf_program__name(prog), prog_name);

		bpf_program__set_autoload(prog, me);
		if (me)
			want = prog;
	}
	if (!want)
		goto out_destroy;
	if (target && bpf_program__type(want) == BPF_PROG_TYPE_TRACING &&
	    bpf_program__set_attach_target(want, 0, target))
		goto out_destroy;
	if (probe_bpf__load(p))
		goto out_destroy;
	link = bpf_program__attach(want);
	ok = link != NULL;
	bpf_link__destroy(link);
out_destroy:
	probe_bpf__destroy(p);
out_restore:
	libbpf_set_print(old);
	return ok;
}

static bool kprobes_present(void)
{
	return access("/sys/bus/event_source/devices/kprobe/type", F_OK) == 0 ||
	       access(TRACEFS "/kprobe_events", F_OK) == 0;
}

static int enable_prog(struct tracer *t, const char *name, int layer)
{
	struct bpf_program *prog = bpf_object__find_program_by_name(t->skel->obj, name);

	if (!prog || t->nprogs >= MAX_LINKS)
		return -ENOENT;
	bpf_program__set_autoload(prog, true);
	t->progs[t->nprogs] = prog;
	t->prog_layer[t->nprogs] = layer;
	t->nprogs++;
	return 0;
}

/* Enable the tp_btf or raw_tp program of each tracepoint that exists; count them. */
/* The programs of the tracepoints named that exist here, on the route taken (tp_btf or raw_tp), but skip. */
static int enable_tps(struct tracer *t, const char *const *tps, int layer, const char *skip)
{
	char name[128];
	int n = 0;

	for (; *tps; tps++) {
		if ((skip && !strcmp(*tps, skip)) || !tp_exists(*tps))
			continue;
		snprintf(name, sizeof(name), "%s%s", t->use_btf ? "btf_" : "raw_", *tps);
		if (enable_prog(t, name, layer) == 0)
			n++;
	}
	return n;
}

static int enable_syscalls(struct tracer *t, const char *const *names, int layer)
{
	char name[128];
	int n = 0;

	for (; *names; names++) {
		if (!syscall_tp_exists(*names))
			continue;
		snprintf(name, sizeof(name), "sys_enter_%s", *names);
		if (enable_prog(t, name, layer))
			continue;
		snprintf(name, sizeof(name), "sys_exit_%s", *names);
		enable_prog(t, name, layer);
		n++;
	}
	return n;
}

static const char *tp_route(const struct tracer *t)
{
	return t->use_btf ? "tp_btf" : "raw_tp";
}

static bool want(const struct tracer *t, int l)
{
	return t->opts.layers & (1u << l);
}

static bool all_exist(const char *const *tps)
{
	for (; *tps; tps++)
		if (!tp_exists(*tps))
			return false;
	return true;
}

/* nvme, scsi: one module tracepoint where the driver hands a request to the device. */
static bool driver_layer(struct tracer *t, int layer, bool block_on, const char *tp, const char *why_missing,
			 bool with_irq)
{
	char prog[96];

	if (!want(t, layer))
		return false;
	if (!block_on) {
		layer_set(t, layer, LAYER_UNAVAILABLE, "needs the block layer");
		return false;
	}
	if (!tp_exists(tp)) {
		layer_set(t, layer, LAYER_UNAVAILABLE, "no %s tracepoint (%s)", tp, why_missing);
		return false;
	}
	snprintf(prog, sizeof(prog), "raw_%s", tp);
	enable_prog(t, prog, layer);
	layer_set(t, layer, LAYER_ON, "raw_tp %s%s", tp, with_irq ? " + irq" : "");
	return with_irq;
}

/*
 * virtio: requests entering virtio_queue_rq/virtio_queue_rqs are stamped at
 * the next virtqueue_notify (the kick). Returns the route name or NULL.
 */
static const char *virtio_route(struct tracer *t)
{
	static const char *const funcs[] = { "virtio_queue_rq", "virtio_queue_rqs", "virtqueue_notify" };
	const char *kind = NULL;
	char name[64];

	if (!disks_kallsyms_has("virtio_queue_rq") || !disks_kallsyms_has("virtqueue_notify"))
		return NULL;
	if (t->fentry_ok && probe_route("probe_fentry", "virtio_queue_rq") &&
	    probe_route("probe_fentry", "virtqueue_notify"))
		kind = "fentry";
	else if (t->kprobe_ok)
		kind = "kprobe";
	else
		return NULL;
	for (size_t i = 0; i < sizeof(funcs) / sizeof(funcs[0]); i++) {
		if (i == 1 && !disks_kallsyms_has(funcs[i]))
			continue;	/* virtio_queue_rqs: 5.18+ */
		snprintf(name, sizeof(name), "%s_%s", kind, funcs[i]);
		enable_prog(t, name, IOT_LAYER_VIRTIO);
	}
	return kind;
}

/* The address of a kernel symbol in /proc/kallsyms; -ENOENT if absent or hidden (shown as 0). */
static int kallsyms_addr(const char *sym, uint64_t *ret_addr)
{
	FILE *f = fopen("/proc/kallsyms", "re");
	char line[512], name[256];
	unsigned long long addr;
	char type;
	int err = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%llx %c %255s", &addr, &type, name) != 3 || strcmp(name, sym))
			continue;
		if (addr) {
			*ret_addr = addr;
			err = 0;
		}
		break;
	}
	fclose(f);
	return err;
}

/*
 * The virtio header GPA of each request (the key QEMU knows it by) is its
 * direct-map address minus page_offset_base (x86_64, KASLR-randomised). Its
 * address, where kallsyms exports it (CONFIG_KALLSYMS_ALL), goes to the BPF
 * side, which reads it once; elsewhere the BPF side takes the base from the
 * virtio ring driver, or the key stays 0.
 */
static void virtio_key(struct tracer *t)
{
#if defined(__x86_64__)
	uint64_t addr = 0;

	t->skel->rodata->vq_key_on = 1;
	if (kallsyms_addr("page_offset_base", &addr) == 0)
		t->skel->rodata->page_offset_base_addr = addr;
#endif
}

/*
 * Where io_uring_complete passes the request's result, read from the
 * tracepoint's prototype in the kernel's BTF: (ctx, req, user_data, res,
 * cflags, extra1, extra2) in 6.1, (ctx, req, cqe) in later kernels (6.18).
 * Any other, the BPF side reads it from the request.
 */
static enum iot_uring_cqe_abi uring_cqe_abi(void)
{
	struct btf *btf = btf__load_vmlinux_btf();
	enum iot_uring_cqe_abi abi = IOT_UCQE_REQ;
	const struct btf_type *tt;
	const struct btf_param *p;
	int id;

	if (!btf)
		return abi;
	id = btf__find_by_name_kind(btf, "btf_trace_io_uring_complete", BTF_KIND_TYPEDEF);
	tt = id > 0 ? btf__type_by_id(btf, id) : NULL;
	tt = tt ? btf__type_by_id(btf, tt->type) : NULL;		/* the pointer */
	tt = tt && btf_is_ptr(tt) ? btf__type_by_id(btf, tt->type) : NULL;	/* the prototype */
	if (tt && btf_is_func_proto(tt)) {
		/* The first parameter is the tracepoint's own data pointer. */
		p = btf_params(tt);
		if (btf_vlen(tt) == 8)
			abi = IOT_UCQE_ARGS;
		else if (btf_vlen(tt) == 4 && btf_is_ptr(btf__type_by_id(btf, p[3].type)))
			abi = IOT_UCQE_PTR;
	}
	btf__free(btf);
	return abi;
}

/* Decide a route for every layer and enable its programs. */
static void choose_routes(struct tracer *t)
{
	struct bpf_program *prog;
	char name[128];
	int n;

	t->nprogs = 0;
	memset(t->layers, 0, sizeof(t->layers));
	bpf_object__for_each_program(prog, t->skel->obj)
		bpf_program__set_autoload(prog, false);

	for (int l = 0; l < IOT_LAYER_MAX; l++)
		if (!want(t, l))
			layer_set(t, l, LAYER_OFF, "off");

	if (want(t, IOT_LAYER_SYSCALL)) {
		bool pos = t->opts.positional_only;

		n = enable_syscalls(t, pos ? syscalls_positional : syscalls_sync, IOT_LAYER_SYSCALL);
		if (n)
			layer_set(t, IOT_LAYER_SYSCALL, LAYER_ON, "tracepoint syscalls:sys_{enter,exit}_* (%d %scalls)", n,
				  pos ? "positional " : "");
		else
			layer_set(t, IOT_LAYER_SYSCALL, LAYER_UNAVAILABLE, "no syscall tracepoints (CONFIG_FTRACE_SYSCALLS off)");
	}
	if (want(t, IOT_LAYER_AIO)) {
		n = enable_syscalls(t, syscalls_aio, IOT_LAYER_AIO);
		if (n == 1 && syscall_tp_exists("io_getevents") &&
		    enable_prog(t, "sys_exit_io_getevents", IOT_LAYER_AIO) == 0)
			layer_set(t, IOT_LAYER_AIO, LAYER_ON, "tracepoint syscalls:io_submit,io_getevents + block");
		else
			layer_set(t, IOT_LAYER_AIO, LAYER_UNAVAILABLE, "no io_submit/io_getevents tracepoints");
	}
	if (want(t, IOT_LAYER_FS)) {
		bool all_funcs = t->fentry_ok || t->kprobe_ok;

		for (const char *const *f = fs_funcs; all_funcs && *f; f++)
			if (!disks_kallsyms_has(*f))
				all_funcs = false;
		if (t->fentry_ok && all_funcs) {
			for (const char *const *f = fs_funcs; *f; f++) {
				snprintf(name, sizeof(name), "fentry_%s", *f);
				enable_prog(t, name, IOT_LAYER_FS);
			}
			layer_set(t, IOT_LAYER_FS, LAYER_ON, "fentry vfs_read/vfs_write/vfs_iter_*/vfs_fsync_range");
		} else if (t->kprobe_ok && all_funcs) {
			for (const char *const *f = fs_funcs; *f; f++) {
				snprintf(name, sizeof(name), "kprobe_%s", *f);
				enable_prog(t, name, IOT_LAYER_FS);
			}
			layer_set(t, IOT_LAYER_FS, LAYER_ON, "kprobe vfs_read/vfs_write/vfs_iter_*/vfs_fsync_range");
		} else if ((n = enable_tps(t, fs_tps, IOT_LAYER_FS, NULL)) > 0) {
			layer_set(t, IOT_LAYER_FS, LAYER_ON, "%s iomap/ext4/xfs entry tracepoints (%d; no fentry/kprobe here)",
				  tp_route(t), n);
		} else {
			layer_set(t, IOT_LAYER_FS, LAYER_UNAVAILABLE, "no fentry, kprobe or fs tracepoint");
		}
	}
	if (want(t, IOT_LAYER_PAGECACHE)) {
		if (all_exist(pagecache_required) && enable_tps(t, pagecache_tps, IOT_LAYER_PAGECACHE, NULL))
			layer_set(t, IOT_LAYER_PAGECACHE, LAYER_ON, "%s filemap + writeback tracepoints", tp_route(t));
		else
			layer_set(t, IOT_LAYER_PAGECACHE, LAYER_UNAVAILABLE, "filemap/writeback tracepoints missing");
	}
	if (want(t, IOT_LAYER_SCHED)) {
		if (!want(t, IOT_LAYER_SYSCALL) && !want(t, IOT_LAYER_AIO))
			layer_set(t, IOT_LAYER_SCHED, LAYER_UNAVAILABLE, "needs the syscall layer (off-CPU time of a syscall)");
		else if (enable_tps(t, sched_tps, IOT_LAYER_SCHED, NULL))
			layer_set(t, IOT_LAYER_SCHED, LAYER_ON, "%s sched_switch", tp_route(t));
		else
			layer_set(t, IOT_LAYER_SCHED, LAYER_UNAVAILABLE, "no sched_switch tracepoint");
	}
	if (want(t, IOT_LAYER_BLOCK)) {
		if (all_exist(block_required) &&
		    (n = enable_tps(t, block_tps, IOT_LAYER_BLOCK, t->opts.no_rq_insert ? "block_rq_insert" : NULL)))
			layer_set(t, IOT_LAYER_BLOCK, LAYER_ON, "%s block tracepoints (%d)", tp_route(t), n);
		else
			layer_set(t, IOT_LAYER_BLOCK, LAYER_UNAVAILABLE, "block_bio_queue/rq_issue/rq_complete tracepoints missing");
	}
	bool block_on = t->layers[IOT_LAYER_BLOCK].state == LAYER_ON;
	bool irq_needed = false;
	const char *r;

	/* Interrupts are mapped to disks for virtio-blk and nvme; scsi hosts share theirs. */
	irq_needed |= driver_layer(t, IOT_LAYER_NVME, block_on, "nvme_setup_cmd", "nvme driver not loaded", true);
	driver_layer(t, IOT_LAYER_SCSI, block_on, "scsi_dispatch_cmd_start", "scsi_mod not loaded", false);
	if (want(t, IOT_LAYER_VIRTIO)) {
		const char *vd = disks_first_of(&t->disks, IOT_DRV_VIRTIO_BLK);

		if (!block_on)
			layer_set(t, IOT_LAYER_VIRTIO, LAYER_UNAVAILABLE, "needs the block layer");
		else if (!vd)
			layer_set(t, IOT_LAYER_VIRTIO, LAYER_UNAVAILABLE, "no virtio-blk disk on this machine");
		else if ((r = virtio_route(t))) {
			layer_set(t, IOT_LAYER_VIRTIO, LAYER_ON, "%s virtio_queue_rq{,s} + virtqueue_notify + irq (%s)",
				  r, vd);
			irq_needed = true;
		} else {
			t->skel->rodata->virtio_derived = 1;
			layer_set(t, IOT_LAYER_VIRTIO, LAYER_ON,
				  "derived: block_rq_issue on virtio-blk + irq_handler_entry (%s; no fentry/kprobe)", vd);
			irq_needed = true;
		}
		if (t->layers[IOT_LAYER_VIRTIO].state == LAYER_ON)
			virtio_key(t);
	}
	if (irq_needed && tp_exists("irq_handler_entry")) {
		snprintf(name, sizeof(name), "%sirq_handler_entry", t->use_btf ? "btf_" : "raw_");
		enable_prog(t, name, IOT_LAYER_BLOCK);
		t->skel->rodata->irq_on = 1;
	}
	if (want(t, IOT_LAYER_IO_URING)) {
		/* io_uring_submit_req was io_uring_submit_sqe before 6.2. */
		const char *submit = tp_exists("io_uring_submit_req") ? "io_uring_submit_req" :
				     tp_exists("io_uring_submit_sqe") ? "io_uring_submit_sqe" : NULL;
		const char *const submit_tps[] = { submit, NULL };

		if (submit && all_exist(uring_tps) && enable_tps(t, uring_tps, IOT_LAYER_IO_URING, NULL) &&
		    enable_tps(t, submit_tps, IOT_LAYER_IO_URING, NULL)) {
			if (!t->opts.uring_enter_exit_only)
				enable_syscalls(t, syscalls_uring, IOT_LAYER_IO_URING);
			else if (syscall_tp_exists("io_uring_enter"))
				enable_prog(t, "sys_exit_io_uring_enter_only", IOT_LAYER_IO_URING);
			if (tp_exists("iomap_dio_rw_begin"))
				enable_prog(t, t->use_btf ? "btf_uring_dio_begin" : "raw_uring_dio_begin", IOT_LAYER_IO_URING);
			layer_set(t, IOT_LAYER_IO_URING, LAYER_ON, "%s io_uring tracepoints", tp_route(t));
		} else {
			layer_set(t, IOT_LAYER_IO_URING, LAYER_UNAVAILABLE, "io_uring tracepoints missing (io_uring disabled?)");
		}
	}
}

static int check_explicit(struct tracer *t)
{
	for (int l = 0; l < IOT_LAYER_MAX; l++) {
		if ((t->opts.layers_explicit & (1u << l)) && t->layers[l].state != LAYER_ON) {
			set_err(t, "layer '%s' cannot be served on this kernel: %s", iot_layer_name(l),
				t->layers[l].route);
			return -EOPNOTSUPP;
		}
	}
	return 0;
}

static int configure(struct tracer *t)
{
	struct iotracer_bpf *s = t->skel;
	const struct tracer_opts *o = &t->opts;
	/*
	 * The ring buffer is mapped twice into our address space and all of it
	 * counts as resident: 128 KiB (~40 ms of records at 12k requests/s;
	 * the reader is woken at an eighth) by default, one page when the
	 * kernel aggregates and sends nothing. Loss, if any, is counted and
	 * reported, and --ringbuf-kb buys more room.
	 */
	size_t rb = o->ringbuf_bytes ? o->ringbuf_bytes : o->kernel_summary ? 4096 : 128 * 1024;

	s->rodata->self_pid = getpid();
	s->rodata->filter_pid = o->pid;
	s->rodata->pid_set_on = !!o->pid_set;
	s->rodata->filter_tid = o->tid;
	if (o->comm) {
		s->rodata->filter_comm_on = 1;
		strncpy((char *)s->rodata->filter_comm, o->comm, IOT_COMM_LEN - 1);
	}
	s->rodata->filter_cgroup = o->cgroup_id;
	s->rodata->filter_dev = o->dev;
	s->rodata->filter_ino = o->ino;
	s->rodata->filter_ino_dev = o->ino_dev;
	s->rodata->filter_dir_ino = o->dir_ino;
	s->rodata->filter_dir_dev = o->dir_dev;
	s->rodata->min_ns = o->min_ns;
	s->rodata->sample_n = o->sample_n;
	s->rodata->wakeup_bytes = rb / 8;
	s->rodata->emit_records = !o->kernel_summary;
	s->rodata->kernel_hist = !!o->kernel_summary;
	s->rodata->uring_on = !!(o->layers & (1u << IOT_LAYER_IO_URING));
	s->rodata->uring_reap_on = s->rodata->uring_on && o->uring_reap;
	s->rodata->wb_on = !!(o->layers & (1u << IOT_LAYER_PAGECACHE));
	s->rodata->ubuf_on = !!o->ubuf;
	s->rodata->compact_on = !!o->compact;
	s->rodata->btf_args = t->use_btf;
	if (s->rodata->uring_on)
		s->rodata->uring_cqe_abi = uring_cqe_abi();
	s->rodata->uring_enter_on = !o->uring_enter_exit_only;
	return bpf_map__set_max_entries(s->maps.events, rb);
}

static int open_skel(struct tracer *t)
{
	int err;

	t->skel = iotracer_bpf__open();
	if (!t->skel) {
		err = -errno;
		set_err(t, "cannot open the BPF object: %s", strerror(-err));
		return err;
	}
	err = configure(t);
	if (err) {
		set_err(t, "ring buffer size must be a power of two multiple of the page size");
		return err;
	}
	choose_routes(t);
	return 0;
}

struct tracer *tracer__new(const struct tracer_opts *opts)
{
	struct tracer *t;

	if (!opts || !opts->on_record) {
		errno = EINVAL;
		return NULL;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	memcpy(&t->opts, opts, opts->sz < sizeof(t->opts) ? opts->sz : sizeof(t->opts));
	return t;
}

/* Probe the kernel's attach routes, open the object and pick a route per layer. */
static int prepare(struct tracer *t)
{
	int err;

	err = disks_scan(&t->disks);
	if (err) {
		set_err(t, "cannot read /sys/block: %s", strerror(-err));
		return err;
	}
	t->tp_btf_ok = probe_route("probe_tp_btf", NULL);
	t->fentry_ok = !t->opts.no_fentry && probe_route("probe_fentry", "vfs_read");
	t->kprobe_ok = !t->opts.no_kprobe && kprobes_present();
	t->use_btf = t->tp_btf_ok;
	err = open_skel(t);
	if (err)
		return err;
	return check_explicit(t);
}

static int fill_disk_maps(struct tracer *t)
{
	int disks_fd = bpf_map__fd(t->skel->maps.disks);
	int irq_fd = bpf_map__fd(t->skel->maps.irq_disk);

	for (int i = 0; i < t->disks.n; i++) {
		const struct disk_info *d = &t->disks.d[i];
		struct iot_disk v = { .driver = d->driver };

		if (bpf_map_update_elem(disks_fd, &d->kdev, &v, BPF_ANY))
			return -errno;
		for (int j = 0; j < d->nirqs; j++)
			if (bpf_map_update_elem(irq_fd, &d->irqs[j], &d->kdev, BPF_ANY))
				return -errno;
	}
	return 0;
}

/*
 * The BPF object is embedded in our binary; once the kernel has the programs
 * its pages are dead weight in our resident set: let the kernel drop them
 * (they are file-backed and read-only, so nothing is lost).
 */
static void drop_elf_pages(void)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t sz = 0;
	uintptr_t start, end;
	const void *elf = iotracer_bpf__elf_bytes(&sz);

	start = ((uintptr_t)elf + page - 1) & ~(uintptr_t)(page - 1);
	end = ((uintptr_t)elf + sz) & ~(uintptr_t)(page - 1);
	if (end > start)
		madvise((void *)start, end - start, MADV_DONTNEED);
}

int tracer__load(struct tracer *t)
{
	int err;

	err = prepare(t);
	if (err)
		return err;
	err = iotracer_bpf__load(t->skel);
	if (err && t->use_btf) {
		/* Some tp_btf target was refused: take the raw_tp route for every tracepoint. */
		iotracer_bpf__destroy(t->skel);
		t->skel = NULL;
		t->use_btf = false;
		err = open_skel(t);
		if (!err)
			err = check_explicit(t);
		if (!err)
			err = iotracer_bpf__load(t->skel);
	}
	if (err) {
		set_err(t, "the kernel refused the BPF programs: %s (run with --verbose for the verifier log)",
			strerror(-err));
		return err;
	}
	err = fill_disk_maps(t);
	if (err) {
		set_err(t, "cannot fill the disk maps: %s", strerror(-err));
		return err;
	}
	drop_elf_pages();
	return 0;
}

static int on_sample(void *ctx, void *data, size_t size)
{
	struct tracer *t = ctx;
	struct iot_record r;

	/* Our own programs wrote it: a record that does not read back is a bug, counted as lost. */
	if (iot_srec_expand(data, size, &r)) {
		t->undecodable++;
		return 0;
	}
	t->opts.on_record(t->opts.ctx, &r);
	return 0;
}

int tracer__attach(struct tracer *t)
{
	int err;

	for (int i = 0; i < t->nprogs; i++) {
		struct bpf_link *link = bpf_program__attach(t->progs[i]);
		int l = t->prog_layer[i];

		if (!link) {
			err = -errno;
			/* A layer losing one hook says so; the rest goes on. */
			if (t->layers[l].state == LAYER_ON)
				layer_set(t, l, LAYER_UNAVAILABLE, "attach of %s failed: %s",
					  bpf_program__name(t->progs[i]), strerror(-err));
			if (t->opts.layers_explicit & (1u << l)) {
				set_err(t, "layer '%s': %s", iot_layer_name(l), t->layers[l].route);
				return err;
			}
			continue;
		}
		t->links[t->nlinks++] = link;
	}
	t->rb = ring_buffer__new(bpf_map__fd(t->skel->maps.events), on_sample, t, NULL);
	if (!t->rb) {
		err = -errno;
		set_err(t, "cannot map the ring buffer: %s", strerror(-err));
		return err;
	}
	return 0;
}

int tracer__add_pid(struct tracer *t, uint32_t tgid)
{
	__u8 one = 1;

	if (!t->opts.pid_set || !t->skel || bpf_map__fd(t->skel->maps.pid_set) < 0 || !tgid)
		return -EINVAL;
	return bpf_map__update_elem(t->skel->maps.pid_set, &tgid, sizeof(tgid), &one, sizeof(one), BPF_ANY);
}

int tracer__del_pid(struct tracer *t, uint32_t tgid)
{
	if (!t->opts.pid_set || !t->skel || bpf_map__fd(t->skel->maps.pid_set) < 0)
		return -EINVAL;
	return bpf_map__delete_elem(t->skel->maps.pid_set, &tgid, sizeof(tgid), 0);
}

int tracer__poll(struct tracer *t, int timeout_ms)
{
	int n = ring_buffer__poll(t->rb, timeout_ms), more;

	if (n < 0)
		return n;
	/*
	 * The kernel wakes us only once a batch of records is waiting (see
	 * wakeup_bytes); after the timeout, take whatever came meanwhile so
	 * that a quiet system's records still show up within timeout_ms.
	 */
	more = ring_buffer__consume(t->rb);
	return more < 0 ? more : n + more;
}

int tracer__fd(const struct tracer *t)
{
	return t->rb ? ring_buffer__epoll_fd(t->rb) : -1;
}

int tracer__flush(struct tracer *t)
{
	return t->rb ? ring_buffer__consume(t->rb) : 0;
}

int tracer__counters(struct tracer *t, uint64_t ret_counts[IOT_CNT_MAX])
{
	int ncpu = libbpf_num_possible_cpus(), fd;
	__u64 *vals;

	if (ncpu < 0)
		return ncpu;
	vals = calloc(ncpu, sizeof(*vals));
	if (!vals)
		return -ENOMEM;
	fd = bpf_map__fd(t->skel->maps.counters);
	for (__u32 k = 0; k < IOT_CNT_MAX; k++) {
		__u64 sum = 0;

		if (bpf_map_lookup_elem(fd, &k, vals)) {
			int err = -errno;

			free(vals);
			return err;
		}
		for (int c = 0; c < ncpu; c++)
			sum += vals[c];
		ret_counts[k] = sum;
	}
	ret_counts[IOT_CNT_LOST] += t->undecodable;
	free(vals);
	return 0;
}

int tracer__khist(struct tracer *t, int seg, struct iot_khist *ret)
{
	int ncpu = libbpf_num_possible_cpus(), err = 0;
	struct iot_khist *vals;
	__u32 key = seg;

	if (ncpu < 0)
		return ncpu;
	if (seg < 0 || seg >= IOT_SEG_MAX)
		return -EINVAL;
	vals = calloc(ncpu, sizeof(*vals));
	if (!vals)
		return -ENOMEM;
	if (bpf_map_lookup_elem(bpf_map__fd(t->skel->maps.khists), &key, vals)) {
		err = -errno;
		goto out_free;
	}
	memset(ret, 0, sizeof(*ret));
	for (int c = 0; c < ncpu; c++) {
		ret->count += vals[c].count;
		ret->sum += vals[c].sum;
		if (vals[c].max > ret->max)
			ret->max = vals[c].max;
		for (unsigned int b = 0; b < IOT_HIST_BUCKETS; b++)
			ret->b[b] += vals[c].b[b];
	}
out_free:
	free(vals);
	return err;
}

int tracer__khist_reset(struct tracer *t)
{
	int ncpu = libbpf_num_possible_cpus(), err = 0;
	struct iot_khist *zero;

	if (ncpu < 0)
		return ncpu;
	zero = calloc(ncpu, sizeof(*zero));
	if (!zero)
		return -ENOMEM;
	for (__u32 k = 0; k < IOT_SEG_MAX && !err; k++)
		if (bpf_map_update_elem(bpf_map__fd(t->skel->maps.khists), &k, zero, BPF_ANY))
			err = -errno;
	free(zero);
	return err;
}

const struct layer_status *tracer__layer(const struct tracer *t, enum iot_layer l)
{
	return &t->layers[l];
}

const char *tracer__error(const struct tracer *t)
{
	return t->err[0] ? t->err : NULL;
}

void tracer__free(struct tracer *t)
{
	if (!t)
		return;
	ring_buffer__free(t->rb);
	for (int i = 0; i < t->nlinks; i++)
		bpf_link__destroy(t->links[i]);
	iotracer_bpf__destroy(t->skel);
	free(t);
}

int tracer_prepare_env(char *errbuf, size_t errlen)
{
	struct rlimit rl = { RLIM_INFINITY, RLIM_INFINITY };

	if (geteuid() != 0) {
		snprintf(errbuf, errlen, "iotracer needs root (CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN) to load BPF programs");
		return -EPERM;
	}
	if (access("/sys/kernel/btf/vmlinux", R_OK)) {
		snprintf(errbuf, errlen, "this kernel has no BTF (/sys/kernel/btf/vmlinux missing; needs CONFIG_DEBUG_INFO_BTF=y)");
		return -ENOTSUP;
	}
	if (access(TRACEFS "/events", F_OK) &&
	    mount("nodev", TRACEFS, "tracefs", 0, NULL) && errno != EBUSY) {
		snprintf(errbuf, errlen, "tracefs is not mounted and mounting it on " TRACEFS " failed: %s",
			 strerror(errno));
		return -errno;
	}
	/* Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK. */
	setrlimit(RLIMIT_MEMLOCK, &rl);
	return 0;
}
