/* SPDX-License-Identifier: GPL-2.0 */
/*
 * QEMU processes: finding them, what their command line says about each VM,
 * which QEMU version a binary is (and so the layout of the structures the
 * probes read), and the qemu layer's uprobes on one QEMU binary.
 */
#ifndef IOTRACER_QEMU_H
#define IOTRACER_QEMU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "qemu_event.h"

#define QEMU_DRIVES_MAX 32
#define QEMU_SERIALS_MAX 8

struct qemu_drive {
	char id[64];		/* -drive id= (or -blockdev node-name=) */
	char file[256];		/* the image file */
	char format[16];	/* raw, qcow2, ... */
	bool format_given;	/* format= was on the command line (else QEMU probes it) */
	char aio[16];		/* threads, native, io_uring */
	char cache[16];
	char device[32];	/* the -device it backs: virtio-blk-pci, nvme, scsi-hd, ... */
	char serial[64];	/* that device's serial= (what the guest sees) */
};

struct qemu_vm {
	int pid;
	char exe[256];		/* /proc/PID/exe */
	char name[64];		/* -name */
	uint32_t vsock_cid;	/* vhost-vsock guest-cid, 0 if none */
	int nserial;
	char serial_socket[QEMU_SERIALS_MAX][108];	/* unix sockets of its chardevs */
	int ndrives;
	struct qemu_drive drives[QEMU_DRIVES_MAX];
	int null_drives;	/* -blockdev null-co/null-aio: no host I/O, seen by probes in QEMU only */
	bool other_drives;	/* drives not described in drives[] (-blockdev other than null-co, -hda,
				 * snapshot overlays, too many) */
};

/* Is pid a running qemu-system-* (or qemu-kvm)? */
bool qemu_is_qemu(int pid);
/* Up to max QEMU pids from /proc; returns how many. */
int qemu_scan(int *ret_pids, int max);
/* Reads a VM's identity from /proc/PID. 0, -ESRCH (gone or not QEMU), -errno. */
int qemu_vm_read(int pid, struct qemu_vm *ret_vm);
/*
 * Must the VM's backend calls be probed to tie its host I/O to its requests?
 * Not when every drive is a raw image (format=raw given) under aio=threads
 * or io_uring: QEMU hands the guest's own buffers to the host kernel, and
 * the host I/O names its request by them. Other formats issue I/O of their
 * own (metadata, copy on write) and Linux AIO is seen per bio, by sector.
 */
bool qemu_vm_needs_backend(const struct qemu_vm *vm);
/*
 * Can the VM's reads and writes be traced on the kernel route, with no
 * probe in QEMU? When every drive is a raw image (format=raw given) under
 * aio=io_uring or native: its io_uring and Linux AIO submissions name
 * QEMU's request (bpf/qemu.bpf.c).
 */
bool qemu_vm_kernel_route(const struct qemu_vm *vm);

/*
 * The version of a QEMU binary, from the banner it prints for --version
 * ("QEMU emulator version 7.2.22 (Debian ...)"), found in the file without
 * running it. 0, or -ENOENT when the file has no such banner.
 */
int qemu_binary_version(const char *exe, char *ret_ver, size_t len);
/*
 * The structure layout for a QEMU version, or NULL with the reason in err
 * (an unknown version is refused, never guessed).
 */
const struct iot_qemu_layout *qemu_layout_for(const char *version, char *err, size_t errlen);
/* The versions in the table, for messages: "7.2". */
const char *qemu_known_versions(void);

/*
 * Where the qemu layer probes each function of a QEMU binary: the offset of
 * an instruction the kernel emulates where the code is the one checked
 * (common/qemu.c, probe_sites), else 0; stepped when that entry instruction
 * must be single-stepped. Fills up to max entries; returns how many, or
 * -errno when the file cannot be read as ELF.
 */
struct qemu_probe {
	const char *func;
	const char *prog;
	uint32_t off;
	bool found;		/* the symbol is in the binary */
	bool stepped;
	bool backend;		/* a file-posix backend call (thread pool, io_uring, Linux AIO) */
	bool usdt_replaced;	/* not probed where the binary has the USDT probes (qemu_has_usdt) */
};
int qemu_probe_plan(const char *exe, struct qemu_probe *ret, size_t max);
/*
 * Does the QEMU binary exe have the USDT probes (dtrace trace backend) that
 * report virtio-blk's reads and writes: virtio_blk_handle_read/write and
 * virtio_blk_submit_multireq? Then they are used instead of the
 * blk_aio_preadv/pwritev uprobes.
 */
bool qemu_has_usdt(const char *exe);

/*
 * The qemu layer on one QEMU binary (only added pids report). kernel_route:
 * also load the kernel route's program, where this kernel can run it.
 */
typedef void (*qemu_event_fn)(void *ctx, const struct iot_qemu_event *e);
struct qemu_tracer;
struct qemu_tracer *qemu_tracer__new(const char *exe, const struct iot_qemu_layout *layout, bool kernel_route,
				     qemu_event_fn fn, void *ctx, char *err, size_t errlen);
const char *qemu_tracer__exe(const struct qemu_tracer *q);
/* NULL when the kernel route is open to this binary's processes; else why not. */
const char *qemu_tracer__kernel_route(const struct qemu_tracer *q);
/* Are reads and writes probed through the binary's USDT probes? */
bool qemu_tracer__usdt(const struct qemu_tracer *q);
/*
 * The functions whose code differs from what iotracer checked, so that
 * their probe is single-stepped (several times dearer per hit): "" if none.
 */
const char *qemu_tracer__stepped(const struct qemu_tracer *q);
/*
 * Traces process pid. backend: probe its backend calls too (uprobes of its
 * own); without them its submits carry their first data buffer, which its
 * raw images' host I/O also carries (qemu_vm_needs_backend()). kernel: its
 * reads and writes on the kernel route, not probed in QEMU
 * (qemu_vm_kernel_route()); no backend call is probed then, each
 * submission standing for its own (backend: the host I/O needs one, Linux AIO).
 */
int qemu_tracer__add_pid(struct qemu_tracer *q, uint32_t pid, bool backend, bool kernel, char *err,
			 size_t errlen);
int qemu_tracer__del_pid(struct qemu_tracer *q, uint32_t pid);
/* Pollable for events; then qemu_tracer__consume(). */
int qemu_tracer__fd(const struct qemu_tracer *q);
int qemu_tracer__consume(struct qemu_tracer *q);
int qemu_tracer__counters(const struct qemu_tracer *q, uint64_t ret[IOT_QCNT_MAX]);
void qemu_tracer__free(struct qemu_tracer *q);

#endif
