// SPDX-License-Identifier: GPL-2.0
/* QEMU processes, their VMs' identity, the per-version layout table and the qemu layer's uprobes. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <gelf.h>
#include <libelf.h>
#include "procinfo.h"
#include "qemu.h"
#include "qemu.skel.h"

/*
 * Layouts per QEMU version (major.minor). Each entry was checked against a
 * real binary of that version by reading requests back while a guest did
 * known I/O (docs/qemu-layer.md): every offset and argument position below
 * was seen to agree with the guest's own view of the same requests.
 */
static const struct {
	const char *version;
	struct iot_qemu_layout l;
} layouts[] = {
	{ "7.2", {
		/* VirtQueueElement: index, len, ndescs, out_num, in_num, in_addr, out_addr, in_sg, out_sg */
		.elem_index = 0, .elem_out_num = 12, .elem_out_addr = 32,
		/* VirtIOBlockReq: elem (56 bytes), sector_num, dev, vq, 2 undo records, in, out, qiov, in_len, next, mr_next */
		.req_sector_num = 56, .req_out_type = 136, .req_out_sector = 144, .req_qiov = 152, .req_mr_next = 208,
		/* QEMUIOVector: iov, niov, union { nalloc + local_iov, size at local_iov.iov_len } */
		.qiov_iov = 0, .qiov_size = 32,
		/* MultiReqBuffer: reqs[32], num_reqs, is_write */
		.mrb_reqs = 0,
		/* RawPosixAIOData: bs, aio_type, aio_fildes, aio_offset, aio_nbytes, io.iov */
		.rawaio_type = 8, .rawaio_fd = 12, .rawaio_offset = 16, .rawaio_nbytes = 24, .rawaio_iov = 32,
		/* thread_pool_submit_aio(pool, func, arg, cb, opaque) */
		.tp_arg = 2,
		/* luring_co_submit(bs, s, fd, offset, qiov, type) */
		.luring_fd = 2, .luring_off = 3, .luring_qiov = 4, .luring_type = 5,
		/* laio_co_submit(bs, s, fd, offset, qiov, type, dev_max_batch) */
		.laio_fd = 2, .laio_off = 3, .laio_qiov = 4, .laio_type = 5,
		/* LuringAIOCB: co, sqeq (struct io_uring_sqe, 64 bytes), ret, qiov, is_read, ... */
		.luringcb_sqe = 8, .luringcb_qiov = 80,
		/* qemu_laiocb: co, ctx, iocb (struct iocb, 64 bytes), ret, nbytes, qiov, ... */
		.laiocb_iocb = 16, .laiocb_qiov = 96,
	} },
};

const char *qemu_known_versions(void)
{
	static char buf[128];

	if (!buf[0])
		for (size_t i = 0; i < sizeof(layouts) / sizeof(layouts[0]); i++)
			snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%s", i ? ", " : "",
				 layouts[i].version);
	return buf;
}

const struct iot_qemu_layout *qemu_layout_for(const char *version, char *err, size_t errlen)
{
	char mm[32];
	const char *dot = strchr(version, '.');
	size_t n;

	/* major.minor: micro releases are bug fixes and keep the structures. */
	n = dot ? strcspn(dot + 1, ".") + (dot + 1 - version) : strlen(version);
	snprintf(mm, sizeof(mm), "%.*s", (int)n, version);
	for (size_t i = 0; i < sizeof(layouts) / sizeof(layouts[0]); i++)
		if (!strcmp(layouts[i].version, mm))
			return &layouts[i].l;
	snprintf(err, errlen, "QEMU %s is not in the layout table (known: %s): its structures would be misread, "
		 "so its requests are not traced", version, qemu_known_versions());
	return NULL;
}

int qemu_binary_version(const char *exe, char *ret_ver, size_t len)
{
	static const char banner[] = "QEMU emulator version ";
	struct stat st;
	const char *p, *end;
	void *m;
	int fd, r = -ENOENT;

	fd = open(exe, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) || !st.st_size) {
		close(fd);
		return -EINVAL;
	}
	m = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return -errno;
	end = (const char *)m + st.st_size;
	p = memmem(m, st.st_size, banner, sizeof(banner) - 1);
	if (p) {
		size_t n = 0;

		p += sizeof(banner) - 1;
		while (p + n < end && (isdigit((unsigned char)p[n]) || p[n] == '.') && n + 1 < len)
			n++;
		if (n && isdigit((unsigned char)p[0])) {
			memcpy(ret_ver, p, n);
			ret_ver[n] = 0;
			r = 0;
		}
	}
	munmap(m, st.st_size);
	return r;
}

bool qemu_is_qemu(int pid)
{
	return proc_is_qemu(pid);
}

int qemu_scan(int *ret_pids, int max)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	int n = 0;

	if (!d)
		return 0;
	while ((de = readdir(d)) && n < max) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);

		if (*end || pid <= 0)
			continue;
		if (qemu_is_qemu(pid))
			ret_pids[n++] = pid;
	}
	closedir(d);
	return n;
}

/* The value of key= in a QEMU option string "a,key=value,b=c" (",," is a literal comma). */
static bool opt_get(const char *opts, const char *key, char *buf, size_t len)
{
	size_t kl = strlen(key);
	const char *p = opts;

	while (p && *p) {
		if (!strncmp(p, key, kl) && p[kl] == '=') {
			size_t n = 0;

			p += kl + 1;
			while (*p && n + 1 < len) {
				if (*p == ',') {
					if (p[1] != ',')
						break;
					p++;
				}
				buf[n++] = *p++;
			}
			buf[n] = 0;
			return true;
		}
		/* next option, skipping doubled commas */
		while (*p) {
			if (*p == ',' && p[1] == ',') {
				p += 2;
				continue;
			}
			if (*p++ == ',')
				break;
		}
	}
	return false;
}

static struct qemu_drive *drive_by_id(struct qemu_vm *vm, const char *id)
{
	for (int i = 0; i < vm->ndrives; i++)
		if (!strcmp(vm->drives[i].id, id))
			return &vm->drives[i];
	return NULL;
}

int qemu_vm_read(int pid, struct qemu_vm *vm)
{
	char path[64], *cmd;
	ssize_t n, cap = 1 << 16, got = 0;
	int fd;

	memset(vm, 0, sizeof(*vm));
	vm->pid = pid;
	if (!qemu_is_qemu(pid))
		return -ESRCH;
	snprintf(path, sizeof(path), "/proc/%d/exe", pid);
	n = readlink(path, vm->exe, sizeof(vm->exe) - 1);
	if (n <= 0)
		return -ESRCH;
	snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESRCH : -errno;
	cmd = malloc(cap + 1);
	if (!cmd) {
		close(fd);
		return -ENOMEM;
	}
	while (got < cap && (n = read(fd, cmd + got, cap - got)) > 0)
		got += n;
	close(fd);
	cmd[got] = 0;
	/* First -drive/-blockdev and -chardev, then the -device lines that refer to them. */
	for (int pass = 0; pass < 2; pass++) {
		for (char *p = cmd; p < cmd + got; p += strlen(p) + 1) {
			char *v = p + strlen(p) + 1;
			char val[256];

			if (v >= cmd + got)
				break;
			if (pass == 0 && !strcmp(p, "-name")) {
				snprintf(vm->name, sizeof(vm->name), "%s", v);
				if (opt_get(v, "guest", val, sizeof(val)))
					snprintf(vm->name, sizeof(vm->name), "%.63s", val);
				else
					vm->name[strcspn(vm->name, ",")] = 0;
			} else if (pass == 0 && !strcmp(p, "-blockdev")) {
				/* QEMU's null drivers issue no host I/O; any other node is not read here. */
				if (!opt_get(v, "driver", val, sizeof(val)) ||
				    (strcmp(val, "null-co") && strcmp(val, "null-aio")))
					vm->other_drives = true;
				else
					vm->null_drives++;
			} else if (pass == 0 && (!strcmp(p, "-hda") || !strcmp(p, "-hdb") ||
						 !strcmp(p, "-hdc") || !strcmp(p, "-hdd") || !strcmp(p, "-cdrom") ||
						 !strcmp(p, "-sd") || !strcmp(p, "-pflash") || !strcmp(p, "-snapshot") ||
						 (!strcmp(p, "-drive") && vm->ndrives == QEMU_DRIVES_MAX))) {
				vm->other_drives = true;
			} else if (pass == 0 && !strcmp(p, "-drive") && vm->ndrives < QEMU_DRIVES_MAX) {
				struct qemu_drive *d = &vm->drives[vm->ndrives++];

				opt_get(v, "id", d->id, sizeof(d->id));
				opt_get(v, "file", d->file, sizeof(d->file));
				d->format_given = opt_get(v, "format", d->format, sizeof(d->format));
				if (!d->format_given)
					snprintf(d->format, sizeof(d->format), "raw");	/* probed by QEMU */
				if (!opt_get(v, "aio", d->aio, sizeof(d->aio)))
					snprintf(d->aio, sizeof(d->aio), "threads");
				if (!opt_get(v, "cache", d->cache, sizeof(d->cache)))
					snprintf(d->cache, sizeof(d->cache), "writeback");
				opt_get(v, "serial", d->serial, sizeof(d->serial));
				/* snapshot=on puts a temporary qcow2 overlay over the image. */
				if (opt_get(v, "snapshot", val, sizeof(val)) && strcmp(val, "off"))
					vm->other_drives = true;
				if (opt_get(v, "if", val, sizeof(val)) && strcmp(val, "none"))
					snprintf(d->device, sizeof(d->device), "%.*s", (int)sizeof(d->device) - 1, val);
			} else if (pass == 0 && !strcmp(p, "-chardev") && vm->nserial < QEMU_SERIALS_MAX &&
				   !strncmp(v, "socket,", 7) && opt_get(v, "path", val, sizeof(val))) {
				snprintf(vm->serial_socket[vm->nserial++], sizeof(vm->serial_socket[0]), "%.107s", val);
			} else if (pass == 1 && !strcmp(p, "-device")) {
				struct qemu_drive *d;

				if (opt_get(v, "guest-cid", val, sizeof(val)))
					vm->vsock_cid = strtoul(val, NULL, 10);
				if (opt_get(v, "drive", val, sizeof(val)) && (d = drive_by_id(vm, val))) {
					snprintf(d->device, sizeof(d->device), "%.*s", (int)strcspn(v, ","), v);
					opt_get(v, "serial", d->serial, sizeof(d->serial));
				}
			}
		}
	}
	free(cmd);
	return 0;
}

#define PID_PROBES_MAX 8	/* a process's own: its reads and writes (2, or 3 USDT), its backend calls (3) */
#define QEMU_PIDS_MAX 256	/* the qemu_pids map's size */

struct qemu_tracer {
	struct qemu_bpf *skel;
	struct ring_buffer *rb;
	struct bpf_link *links[12];
	int nlinks;
	struct qemu_probe plan[8];
	int nplan;
	/*
	 * The probes each traced process has for itself alone: its reads and
	 * writes (none on the kernel route), its backend calls where needed. A
	 * uprobe attached for one process traps in that process only.
	 */
	struct pid_links {
		uint32_t pid;
		int n;
		struct bpf_link *l[PID_PROBES_MAX];
	} pids[QEMU_PIDS_MAX];
	int npids;
	char exe[256];
	char notes[160];	/* functions probed at a single-stepped entry */
	bool usdt;		/* reads and writes through the binary's USDT probes */
	struct bpf_link *kernel_link;	/* the kernel route's io_uring_submit_req program, if on */
	struct bpf_link *kernel_aio_link;	/* and its io_submit one */
	char kernel_why[160];		/* why not, when it was asked for */
	qemu_event_fn fn;
	void *ctx;
};

static int on_qevent(void *ctx, void *data, size_t len)
{
	struct qemu_tracer *q = ctx;
	const struct iot_qemu_event *e = data;

	if (len < IOT_QEMU_EVENT_BACKEND_SIZE)
		return 0;
	/* A backend event is its header; a submit or a merge, its header and the nreqs requests it holds. */
	if ((e->type == IOT_QEV_SUBMIT || e->type == IOT_QEV_MERGE) &&
	    (!e->nreqs || e->nreqs > IOT_QEMU_CHAIN_MAX ||
	     len < IOT_QEMU_EVENT_BACKEND_SIZE + e->nreqs * sizeof(struct iot_qemu_req)))
		return 0;
	q->fn(q->ctx, e);
	return 0;
}

/*
 * Where each probe goes. A uprobe on an instruction the kernel emulates
 * (push, a jump, a call, a nop) costs one trap; on any other it is also
 * single-stepped out of line, a second trap: on this project's machines
 * 0.21 us against 2.7 us per hit (bench-uprobe, docs/qemu-layer.md). blk_aio_* begin with
 * "sub $8,%rsp", so they are probed at the first emulated instruction
 * instead, where the arguments the program reads are still in place. The
 * instructions up to it are given byte for byte: a build whose code differs
 * is probed at its entry, correct but dearer, and said so.
 */
struct probe_site {
	const char *func;
	const char *prog;
	const uint8_t *lead;	/* the function's first bytes, through the instruction probed; NULL: entry */
	uint8_t lead_len;
	uint8_t off;		/* where that instruction starts */
	bool backend;		/* a backend call: probed only in processes that need it */
	bool usdt_replaced;	/* not probed in a binary with the USDT probes (usdt_sites) */
};

/* sub $8,%rsp; mov 0x20(%rdx),%rax; test %rax,%rax; js; push %r9 */
static const uint8_t lead_blk_aio_rw[] = { 0x48, 0x83, 0xec, 0x08, 0x48, 0x8b, 0x42, 0x20,
					   0x48, 0x85, 0xc0, 0x78, 0x1e, 0x41, 0x51 };
/* sub $8,%rsp; xor %r9d,%r9d; lea cb(%rip),%r8; xor %ecx,%ecx; push %rdx */
static const uint8_t lead_blk_aio_flush[] = { 0x48, 0x83, 0xec, 0x08, 0x45, 0x31, 0xc9, 0x4c, 0x8d,
					      0x05, 0x72, 0x08, 0x00, 0x00, 0x31, 0xc9, 0x52 };
#define LEAD(a) a, sizeof(a)

static const struct probe_site probe_sites[] = {
	/* QEMU 7.2, Debian 12: rdi, rsi, rdx and r9, the arguments read, untouched before the push. */
	{ "blk_aio_preadv", "qemu_blk_aio_preadv", LEAD(lead_blk_aio_rw), 13, false, true },
	{ "blk_aio_pwritev", "qemu_blk_aio_pwritev", LEAD(lead_blk_aio_rw), 13, false, true },
	/* rdi and rdx untouched before the push. */
	{ "blk_aio_flush", "qemu_blk_aio_flush", LEAD(lead_blk_aio_flush), 16 },
	/* These begin with a push. */
	{ "thread_pool_submit_aio", "qemu_thread_pool_submit", NULL, 0, 0, true },
	{ "luring_co_submit", "qemu_luring_submit", NULL, 0, 0, true },
	{ "laio_co_submit", "qemu_laio_submit", NULL, 0, 0, true },
};

#define PROBES_N (sizeof(probe_sites) / sizeof(probe_sites[0]))
#define LEAD_MAX 32

/* Does the instruction at p need no single step: push %reg (with REX.B too), nop? */
static bool insn_emulated(const uint8_t *p)
{
	if (p[0] >= 0x50 && p[0] <= 0x57)
		return true;
	if (p[0] == 0x41 && p[1] >= 0x50 && p[1] <= 0x57)
		return true;
	return p[0] == 0x90;
}

/*
 * The first LEAD_MAX bytes of each probed function in the ELF file exe
 * (dynamic symbols, then the full table if present). ret_found[i] is set
 * for those found.
 */
static int read_func_leads(const char *exe, uint8_t ret_lead[PROBES_N][LEAD_MAX], bool ret_found[PROBES_N])
{
	uint64_t addr[PROBES_N] = { 0 };
	Elf_Scn *scn = NULL;
	size_t nfound = 0;
	Elf *e;
	int fd;

	if (elf_version(EV_CURRENT) == EV_NONE)
		return -EINVAL;
	fd = open(exe, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	e = elf_begin(fd, ELF_C_READ, NULL);
	if (!e || elf_kind(e) != ELF_K_ELF) {
		elf_end(e);
		close(fd);
		return -ENOEXEC;
	}
	while ((scn = elf_nextscn(e, scn)) && nfound < PROBES_N) {
		Elf_Data *data;
		GElf_Shdr sh;

		if (!gelf_getshdr(scn, &sh) || (sh.sh_type != SHT_DYNSYM && sh.sh_type != SHT_SYMTAB) ||
		    !sh.sh_entsize || !(data = elf_getdata(scn, NULL)))
			continue;
		for (size_t k = 0; k < sh.sh_size / sh.sh_entsize && nfound < PROBES_N; k++) {
			const char *name;
			GElf_Sym sym;

			if (!gelf_getsym(data, k, &sym) || GELF_ST_TYPE(sym.st_info) != STT_FUNC || !sym.st_value)
				continue;
			name = elf_strptr(e, sh.sh_link, sym.st_name);
			for (size_t i = 0; name && i < PROBES_N; i++)
				if (!addr[i] && !strcmp(name, probe_sites[i].func)) {
					addr[i] = sym.st_value;
					nfound++;
				}
		}
	}
	for (size_t i = 0; i < PROBES_N; i++) {
		scn = NULL;
		while (addr[i] && (scn = elf_nextscn(e, scn))) {
			GElf_Shdr sh;

			if (!gelf_getshdr(scn, &sh) || sh.sh_type != SHT_PROGBITS || addr[i] < sh.sh_addr ||
			    addr[i] + LEAD_MAX > sh.sh_addr + sh.sh_size)
				continue;
			ret_found[i] = pread(fd, ret_lead[i], LEAD_MAX, sh.sh_offset + addr[i] - sh.sh_addr) == LEAD_MAX;
			break;
		}
	}
	elf_end(e);
	close(fd);
	return 0;
}

/*
 * The offset into func at which to probe: the known emulated instruction
 * when the code leading to it is exactly the one checked; 0 otherwise, with
 * *ret_stepped telling whether that entry instruction is single-stepped.
 */
static uint32_t probe_offset(const struct probe_site *s, const uint8_t lead[LEAD_MAX], bool found, bool *ret_stepped)
{
	*ret_stepped = false;
	if (!found)
		return 0;
	if (s->lead && s->lead_len <= LEAD_MAX && !memcmp(s->lead, lead, s->lead_len) && insn_emulated(lead + s->off))
		return s->off;
	*ret_stepped = !insn_emulated(lead);
	return 0;
}

/* The USDT probes that replace the blk_aio_preadv/pwritev uprobes, all needed. */
static const struct {
	const char *name;
	const char *prog;
} usdt_sites[] = {
	{ "virtio_blk_handle_read", "qemu_usdt_read" },
	{ "virtio_blk_handle_write", "qemu_usdt_write" },
	{ "virtio_blk_submit_multireq", "qemu_usdt_merge" },
};

#define USDT_N (sizeof(usdt_sites) / sizeof(usdt_sites[0]))

bool qemu_has_usdt(const char *exe)
{
	bool have[USDT_N] = { false };
	Elf_Scn *scn = NULL;
	size_t nhave = 0, shstrndx;
	Elf *e;
	int fd;

	if (elf_version(EV_CURRENT) == EV_NONE)
		return false;
	fd = open(exe, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	e = elf_begin(fd, ELF_C_READ, NULL);
	if (!e || elf_kind(e) != ELF_K_ELF || elf_getshdrstrndx(e, &shstrndx)) {
		elf_end(e);
		close(fd);
		return false;
	}
	while ((scn = elf_nextscn(e, scn))) {
		const char *sname;
		Elf_Data *data;
		GElf_Nhdr nh;
		GElf_Shdr sh;
		size_t off = 0, name_off, desc_off;

		if (!gelf_getshdr(scn, &sh) || sh.sh_type != SHT_NOTE ||
		    !(sname = elf_strptr(e, shstrndx, sh.sh_name)) || strcmp(sname, ".note.stapsdt") ||
		    !(data = elf_getdata(scn, NULL)))
			continue;
		/* Each note: "stapsdt", type 3; pc, base, semaphore; then provider, name, arguments. */
		while ((off = gelf_getnote(data, off, &nh, &name_off, &desc_off)) > 0) {
			const char *d = (const char *)data->d_buf + desc_off, *prov, *name;
			size_t plen;

			if (nh.n_type != 3 || nh.n_descsz < 3 * 8 + 4 || desc_off + nh.n_descsz > data->d_size ||
			    memcmp((const char *)data->d_buf + name_off, "stapsdt", 8))
				continue;
			prov = d + 3 * 8;
			plen = strnlen(prov, nh.n_descsz - 3 * 8);
			if (plen + 1 >= nh.n_descsz - 3 * 8 || strcmp(prov, "qemu"))
				continue;
			name = prov + plen + 1;
			if (!memchr(name, 0, nh.n_descsz - 3 * 8 - plen - 1))
				continue;
			for (size_t i = 0; i < USDT_N; i++)
				if (!have[i] && !strcmp(name, usdt_sites[i].name)) {
					have[i] = true;
					nhave++;
				}
		}
	}
	elf_end(e);
	close(fd);
	return nhave == USDT_N;
}

int qemu_probe_plan(const char *exe, struct qemu_probe *ret, size_t max)
{
	uint8_t lead[PROBES_N][LEAD_MAX];
	bool found[PROBES_N] = { false };
	int r;

	if (max < PROBES_N)
		return -ENOSPC;
	r = read_func_leads(exe, lead, found);
	if (r)
		return r;
	for (size_t i = 0; i < PROBES_N; i++) {
		ret[i].func = probe_sites[i].func;
		ret[i].prog = probe_sites[i].prog;
		ret[i].found = found[i];
		ret[i].backend = probe_sites[i].backend;
		ret[i].usdt_replaced = probe_sites[i].usdt_replaced;
		ret[i].off = probe_offset(&probe_sites[i], lead[i], found[i], &ret[i].stepped);
	}
	return PROBES_N;
}

/* How much of a structure a probe copies: through the end of the last field it reads. */
static uint32_t read_len(const uint32_t *ends, size_t n)
{
	uint32_t len = 0;

	for (size_t i = 0; i < n; i++)
		len = ends[i] > len ? ends[i] : len;
	return len;
}

#define READ_LEN(...) read_len((const uint32_t[]){ __VA_ARGS__ }, sizeof((const uint32_t[]){ __VA_ARGS__ }) / 4)

/* Does the running kernel have the io_uring_submit_req tracepoint, typed (tp_btf)? */
static bool kernel_has_uring_submit_tp(void)
{
	struct btf *btf = btf__load_vmlinux_btf();
	bool have = btf && btf__find_by_name_kind(btf, "btf_trace_io_uring_submit_req", BTF_KIND_TYPEDEF) > 0;

	btf__free(btf);
	return have;
}

struct qemu_tracer *qemu_tracer__new(const char *exe, const struct iot_qemu_layout *layout, bool kernel_route,
				     qemu_event_fn fn, void *ctx, char *err, size_t errlen)
{
	struct qemu_probe plan[PROBES_N];
	struct qemu_tracer *q = calloc(1, sizeof(*q));
	bool kernel = false;
	int r;

	if (!q) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	snprintf(q->exe, sizeof(q->exe), "%s", exe);
	q->fn = fn;
	q->ctx = ctx;
	q->skel = qemu_bpf__open();
	if (!q->skel) {
		snprintf(err, errlen, "cannot open the qemu layer's BPF object: %s", strerror(errno));
		goto fail;
	}
	q->skel->rodata->L = *layout;
	q->skel->rodata->L.req_read = READ_LEN(layout->elem_index + 4, layout->elem_out_addr + 8,
					       layout->req_sector_num + 8, layout->req_out_type + 4,
					       layout->req_out_sector + 8, layout->req_qiov + layout->qiov_size + 8,
					       layout->req_qiov + layout->qiov_iov + 8, layout->req_mr_next + 8);
	q->skel->rodata->L.qiov_read = READ_LEN(layout->qiov_iov + 8, layout->qiov_size + 8);
	q->skel->rodata->L.rawaio_read = READ_LEN(layout->rawaio_type + 4, layout->rawaio_fd + 4,
						  layout->rawaio_offset + 8, layout->rawaio_nbytes + 8,
						  layout->rawaio_iov + 8);
	q->skel->rodata->L.luringcb_read = READ_LEN(layout->luringcb_sqe + 64, layout->luringcb_qiov + 8);
	q->skel->rodata->L.laiocb_read = READ_LEN(layout->laiocb_iocb + 64, layout->laiocb_qiov + 8);
	if (q->skel->rodata->L.req_read > IOT_QEMU_REQ_READ_MAX ||
	    q->skel->rodata->L.qiov_read > IOT_QEMU_HEAD_READ_MAX ||
	    q->skel->rodata->L.rawaio_read > IOT_QEMU_HEAD_READ_MAX ||
	    q->skel->rodata->L.luringcb_read > IOT_QEMU_CB_READ_MAX ||
	    q->skel->rodata->L.laiocb_read > IOT_QEMU_CB_READ_MAX) {
		snprintf(err, errlen, "the layout reads past what the probes copy (VirtIOBlockReq %u of %u, "
			 "QEMUIOVector %u and RawPosixAIOData %u of %u, LuringAIOCB %u and qemu_laiocb %u of %u bytes)",
			 q->skel->rodata->L.req_read, IOT_QEMU_REQ_READ_MAX, q->skel->rodata->L.qiov_read,
			 q->skel->rodata->L.rawaio_read, IOT_QEMU_HEAD_READ_MAX, q->skel->rodata->L.luringcb_read,
			 q->skel->rodata->L.laiocb_read, IOT_QEMU_CB_READ_MAX);
		goto fail;
	}
	/* The kernel route's program, loaded only when asked for and the kernel can run it. */
	if (kernel_route) {
		kernel = kernel_has_uring_submit_tp();
		if (!kernel)
			snprintf(q->kernel_why, sizeof(q->kernel_why), "this kernel has no typed (BTF) "
				 "io_uring_submit_req tracepoint");
	}
	bpf_program__set_autoload(q->skel->progs.qemu_uring_submit, kernel);
	bpf_program__set_autoload(q->skel->progs.qemu_aio_submit, kernel);
	r = qemu_bpf__load(q->skel);
	if (r) {
		snprintf(err, errlen, "cannot load the qemu layer's BPF programs: %s", strerror(-r));
		goto fail;
	}
	r = qemu_probe_plan(exe, plan, PROBES_N);
	if (r < 0) {
		snprintf(err, errlen, "%s: cannot read its symbols: %s", exe, strerror(-r));
		goto fail;
	}
	_Static_assert(PROBES_N <= sizeof(q->plan) / sizeof(q->plan[0]), "probe plan");
	_Static_assert(PROBES_N + USDT_N <= sizeof(q->links) / sizeof(q->links[0]), "links");
	memcpy(q->plan, plan, sizeof(plan));
	q->nplan = PROBES_N;
	q->usdt = qemu_has_usdt(exe);
	if (kernel) {
		q->kernel_link = bpf_program__attach(q->skel->progs.qemu_uring_submit);
		q->kernel_aio_link = q->kernel_link ? bpf_program__attach(q->skel->progs.qemu_aio_submit) : NULL;
		if (!q->kernel_link || !q->kernel_aio_link) {
			snprintf(q->kernel_why, sizeof(q->kernel_why), "its program on %s did not attach: %s",
				 q->kernel_link ? "io_submit" : "io_uring_submit_req", strerror(errno));
			bpf_link__destroy(q->kernel_link);
			q->kernel_link = NULL;
		}
	}
	for (size_t i = 0; i < PROBES_N; i++) {
		const struct qemu_probe *pp = &plan[i];
		LIBBPF_OPTS(bpf_uprobe_opts, uo, .func_name = pp->func);
		struct bpf_program *p;
		struct bpf_link *l;

		if (pp->stepped && !(q->usdt && pp->usdt_replaced))
			snprintf(q->notes + strlen(q->notes), sizeof(q->notes) - strlen(q->notes), "%s%s",
				 q->notes[0] ? ", " : "", pp->func);
		/*
		 * Reads and writes, and backend calls, are probed in the processes
		 * that need them (qemu_tracer__add_pid): flushes here, for all.
		 */
		if (pp->backend || pp->usdt_replaced)
			continue;
		p = bpf_object__find_program_by_name(q->skel->obj, pp->prog);
		l = p ? bpf_program__attach_uprobe_opts(p, -1, exe, pp->off, &uo) : NULL;
		if (!l) {
			snprintf(err, errlen, "%s: cannot attach a uprobe on %s: %s (is it a QEMU with exported "
				 "symbols?)", exe, pp->func, strerror(errno));
			goto fail;
		}
		q->links[q->nlinks++] = l;
	}
	q->rb = ring_buffer__new(bpf_map__fd(q->skel->maps.qevents), on_qevent, q, NULL);
	if (!q->rb) {
		snprintf(err, errlen, "cannot map the qemu layer's ring buffer: %s", strerror(errno));
		goto fail;
	}
	return q;
fail:
	qemu_tracer__free(q);
	return NULL;
}

const char *qemu_tracer__stepped(const struct qemu_tracer *q)
{
	return q->notes;
}

bool qemu_tracer__usdt(const struct qemu_tracer *q)
{
	return q->usdt;
}

const char *qemu_tracer__exe(const struct qemu_tracer *q)
{
	return q->exe;
}

const char *qemu_tracer__kernel_route(const struct qemu_tracer *q)
{
	return q->kernel_link ? NULL : q->kernel_why[0] ? q->kernel_why : "it was not asked for";
}

static void pid_links_free(struct qemu_tracer *q, int i)
{
	for (int k = 0; k < q->pids[i].n; k++)
		bpf_link__destroy(q->pids[i].l[k]);
	q->pids[i] = q->pids[--q->npids];
}

/* One probe of process pid, attached for it alone: 0 or -errno, with err said. */
static int pid_link(struct qemu_tracer *q, struct pid_links *pl, const char *prog, const char *func, uint32_t off,
		    bool usdt, char *err, size_t errlen)
{
	struct bpf_program *p = bpf_object__find_program_by_name(q->skel->obj, prog);
	LIBBPF_OPTS(bpf_uprobe_opts, uo, .func_name = func);
	struct bpf_link *l;

	if (pl->n == PID_PROBES_MAX) {
		snprintf(err, errlen, "more than %d probes in pid %u", PID_PROBES_MAX, pl->pid);
		return -ENOSPC;
	}
	if (!p)
		l = NULL, errno = ENOENT;
	else if (usdt)
		l = bpf_program__attach_usdt(p, pl->pid, q->exe, "qemu", func, NULL);
	else
		l = bpf_program__attach_uprobe_opts(p, pl->pid, q->exe, off, &uo);
	if (!l) {
		int r = -errno;

		snprintf(err, errlen, "%s: cannot attach %s %s%s in pid %u: %s", q->exe, usdt ? "to its USDT probe" :
			 "a uprobe on", usdt ? "qemu:" : "", func, pl->pid, strerror(errno));
		return r ? r : -EINVAL;
	}
	pl->l[pl->n++] = l;
	return 0;
}

/*
 * The probes of process pid, attached for it alone: its reads and writes
 * (the USDT probes where the binary has them; none on the kernel route)
 * and, where needed, its backend calls.
 */
static int pid_links_attach(struct qemu_tracer *q, uint32_t pid, bool backend, bool kernel, char *err,
			    size_t errlen)
{
	struct pid_links *pl;
	int r = 0;

	if (q->npids == QEMU_PIDS_MAX) {
		snprintf(err, errlen, "more than %d QEMU processes", QEMU_PIDS_MAX);
		return -ENOSPC;
	}
	pl = &q->pids[q->npids++];
	memset(pl, 0, sizeof(*pl));
	pl->pid = pid;
	for (size_t i = 0; !kernel && q->usdt && !r && i < USDT_N; i++)
		r = pid_link(q, pl, usdt_sites[i].prog, usdt_sites[i].name, 0, true, err, errlen);
	for (int i = 0; !r && i < q->nplan; i++) {
		const struct qemu_probe *pp = &q->plan[i];

		if ((pp->backend && backend) || (pp->usdt_replaced && !q->usdt && !kernel))
			r = pid_link(q, pl, pp->prog, pp->func, pp->off, false, err, errlen);
	}
	if (r)
		pid_links_free(q, q->npids - 1);
	return r;
}

static void pid_links_drop(struct qemu_tracer *q, uint32_t pid)
{
	for (int i = 0; i < q->npids; i++)
		if (q->pids[i].pid == pid) {
			pid_links_free(q, i);
			return;
		}
}

int qemu_tracer__add_pid(struct qemu_tracer *q, uint32_t pid, bool backend, bool kernel, char *err,
			 size_t errlen)
{
	uint8_t how = backend ? IOT_QPID_TRACED : IOT_QPID_TRACED | IOT_QPID_NO_BACKEND;
	int r;

	/*
	 * On the kernel route a submit is its own host I/O's backend call: lean
	 * (NO_BACKEND, above) only if that I/O names it; KERNEL added below.
	 */
	if (kernel && !q->kernel_link) {
		snprintf(err, errlen, "the kernel route is not open to pid %u", pid);
		return -EINVAL;
	}
	if (kernel)
		how |= IOT_QPID_KERNEL;
	pid_links_drop(q, pid);
	if ((r = pid_links_attach(q, pid, backend && !kernel, kernel, err, errlen)))
		return r;
	r = bpf_map__update_elem(q->skel->maps.qemu_pids, &pid, sizeof(pid), &how, sizeof(how), BPF_ANY);
	if (r) {
		snprintf(err, errlen, "cannot add it to the traced processes: %s", strerror(-r));
		qemu_tracer__del_pid(q, pid);
	}
	return r;
}

int qemu_tracer__del_pid(struct qemu_tracer *q, uint32_t pid)
{
	pid_links_drop(q, pid);
	return bpf_map__delete_elem(q->skel->maps.qemu_pids, &pid, sizeof(pid), 0);
}

bool qemu_vm_needs_backend(const struct qemu_vm *vm)
{
	/* Drives not given with -drive (-blockdev, hot-plugged) are not known here. */
	if (vm->other_drives)
		return true;
	for (int i = 0; i < vm->ndrives; i++) {
		const struct qemu_drive *d = &vm->drives[i];

		if (!d->format_given || strcmp(d->format, "raw") ||
		    (strcmp(d->aio, "threads") && strcmp(d->aio, "io_uring")))
			return true;
	}
	return false;
}

bool qemu_vm_kernel_route(const struct qemu_vm *vm)
{
	if (vm->other_drives || vm->null_drives || !vm->ndrives)
		return false;
	for (int i = 0; i < vm->ndrives; i++) {
		const struct qemu_drive *d = &vm->drives[i];

		if (!d->format_given || strcmp(d->format, "raw") || (strcmp(d->aio, "io_uring") && strcmp(d->aio, "native")))
			return false;
	}
	return true;
}

int qemu_tracer__fd(const struct qemu_tracer *q)
{
	return ring_buffer__epoll_fd(q->rb);
}

int qemu_tracer__consume(struct qemu_tracer *q)
{
	return ring_buffer__consume(q->rb);
}

int qemu_tracer__counters(const struct qemu_tracer *q, uint64_t ret[IOT_QCNT_MAX])
{
	int ncpu = libbpf_num_possible_cpus();
	uint64_t *v;

	if (ncpu <= 0)
		return -EINVAL;
	v = calloc(ncpu, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (uint32_t c = 0; c < IOT_QCNT_MAX; c++) {
		ret[c] = 0;
		if (bpf_map__lookup_elem(q->skel->maps.qcounters, &c, sizeof(c), v, ncpu * sizeof(*v), 0))
			continue;
		for (int i = 0; i < ncpu; i++)
			ret[c] += v[i];
	}
	free(v);
	return 0;
}

void qemu_tracer__free(struct qemu_tracer *q)
{
	if (!q)
		return;
	ring_buffer__free(q->rb);
	while (q->npids)
		pid_links_free(q, 0);
	for (int i = 0; i < q->nlinks; i++)
		bpf_link__destroy(q->links[i]);
	bpf_link__destroy(q->kernel_link);
	bpf_link__destroy(q->kernel_aio_link);
	qemu_bpf__destroy(q->skel);
	free(q);
}
