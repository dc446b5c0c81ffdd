// SPDX-License-Identifier: GPL-2.0
/*
 * Where the qemu layer puts its uprobes (common/qemu.c, qemu_probe_plan):
 * at blk_aio_*'s first push when their code is the one checked, at the entry
 * otherwise (and said to be single-stepped), never guessed. Checked on this
 * test's own functions, built with each kind of lead, and on the machine's
 * QEMU when it has one.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/sdt.h>
#include "qemu.h"

#include "check.h"

/*
 * Stand-ins named like QEMU's functions, in this executable's symbol table:
 *  blk_aio_pwritev: byte for byte Debian 7.2's lead (push %r9 at +13);
 *  blk_aio_preadv: the same shape with another displacement: not the code checked;
 *  blk_aio_flush: begins with a push (emulated at the entry);
 *  luring_co_submit: begins with a mov (single-stepped at the entry).
 */
__asm__(".text\n"
	".globl blk_aio_pwritev\n.type blk_aio_pwritev,@function\nblk_aio_pwritev:\n"
	"  .byte 0x48,0x83,0xec,0x08, 0x48,0x8b,0x42,0x20, 0x48,0x85,0xc0, 0x78,0x1e, 0x41,0x51\n"
	"  pop %r9\n  add $8,%rsp\n  ret\n  .fill 32,1,0x90\n.size blk_aio_pwritev,.-blk_aio_pwritev\n"
	".globl blk_aio_preadv\n.type blk_aio_preadv,@function\nblk_aio_preadv:\n"
	"  .byte 0x48,0x83,0xec,0x08, 0x48,0x8b,0x42,0x28, 0x48,0x85,0xc0, 0x78,0x1e, 0x41,0x51\n"
	"  pop %r9\n  add $8,%rsp\n  ret\n  .fill 32,1,0x90\n.size blk_aio_preadv,.-blk_aio_preadv\n"
	".globl blk_aio_flush\n.type blk_aio_flush,@function\nblk_aio_flush:\n"
	"  push %r15\n  pop %r15\n  ret\n  .fill 32,1,0x90\n.size blk_aio_flush,.-blk_aio_flush\n"
	".globl luring_co_submit\n.type luring_co_submit,@function\nluring_co_submit:\n"
	"  mov %rdi,%rax\n  ret\n  .fill 32,1,0x90\n.size luring_co_submit,.-luring_co_submit\n");

/* The USDT probes a QEMU built with the dtrace backend has, here as this executable's own. */
void usdt_sites(void *vdev, void *req, unsigned long long sector, unsigned long n);
void usdt_sites(void *vdev, void *req, unsigned long long sector, unsigned long n)
{
	DTRACE_PROBE4(qemu, virtio_blk_handle_read, vdev, req, sector, n);
	DTRACE_PROBE4(qemu, virtio_blk_handle_write, vdev, req, sector, n);
	DTRACE_PROBE7(qemu, virtio_blk_submit_multireq, vdev, req, 0, 2, sector, n, 0);
}

static const struct qemu_probe *find(const struct qemu_probe *p, int n, const char *func)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(p[i].func, func))
			return &p[i];
	return NULL;
}

static void expect(const struct qemu_probe *p, int n, const char *func, bool found, unsigned off, bool stepped)
{
	const struct qemu_probe *q = find(p, n, func);

	CHECK(q, "%s: not in the plan", func);
	if (!q)
		return;
	CHECK(q->found == found && q->off == off && q->stepped == stepped,
	      "%s: found %d off %u stepped %d, expected found %d off %u stepped %d", func, q->found, q->off,
	      q->stepped, found, off, stepped);
}

static struct qemu_drive drive(const char *format, bool given, const char *aio)
{
	struct qemu_drive d = { .format_given = given };

	snprintf(d.format, sizeof(d.format), "%s", format);
	snprintf(d.aio, sizeof(d.aio), "%s", aio);
	return d;
}

/* Which VMs keep their backend calls probed: any drive not a raw image under threads or io_uring. */
static void test_needs_backend(void)
{
	struct qemu_vm vm = { .ndrives = 2 };

	vm.drives[0] = drive("raw", true, "threads");
	vm.drives[1] = drive("raw", true, "io_uring");
	CHECK(!qemu_vm_needs_backend(&vm), "raw images under threads and io_uring need backend probes");
	vm.drives[1] = drive("qcow2", true, "io_uring");
	CHECK(qemu_vm_needs_backend(&vm), "a qcow2 image does not");
	vm.drives[1] = drive("raw", true, "native");
	CHECK(qemu_vm_needs_backend(&vm), "aio=native does not");
	vm.drives[1] = drive("raw", false, "io_uring");
	CHECK(qemu_vm_needs_backend(&vm), "a format left to QEMU's probe does not");
	vm.drives[1] = drive("raw", true, "io_uring");
	vm.other_drives = true;
	CHECK(qemu_vm_needs_backend(&vm), "a -blockdev node iotracer does not read does not");
	vm = (struct qemu_vm){ 0 };
	CHECK(!qemu_vm_needs_backend(&vm), "a VM without drives needs backend probes");
}

/* The kernel route: every drive a raw image (format given) under io_uring, and no drive of another kind. */
static void test_kernel_route(void)
{
	struct qemu_vm vm = { .ndrives = 2 };

	vm.drives[0] = drive("raw", true, "io_uring");
	vm.drives[1] = drive("raw", true, "io_uring");
	CHECK(qemu_vm_kernel_route(&vm), "raw images under io_uring are not on the kernel route");
	vm.drives[1] = drive("raw", true, "native");
	CHECK(qemu_vm_kernel_route(&vm), "a raw image under aio=native is not on the kernel route");
	vm.drives[1] = drive("raw", true, "threads");
	CHECK(!qemu_vm_kernel_route(&vm), "a drive under aio=threads is on the kernel route");
	vm.drives[1] = drive("qcow2", true, "io_uring");
	CHECK(!qemu_vm_kernel_route(&vm), "a qcow2 image is on the kernel route");
	vm.drives[1] = drive("raw", false, "io_uring");
	CHECK(!qemu_vm_kernel_route(&vm), "a format left to QEMU's probe is on the kernel route");
	vm.drives[1] = drive("raw", true, "io_uring");
	vm.null_drives = 1;
	CHECK(!qemu_vm_kernel_route(&vm), "a VM with a null-co drive (no host I/O to see it by) is on the kernel route");
	vm.null_drives = 0;
	vm.other_drives = true;
	CHECK(!qemu_vm_kernel_route(&vm), "a -blockdev node iotracer does not read is on the kernel route");
	vm = (struct qemu_vm){ 0 };
	CHECK(!qemu_vm_kernel_route(&vm), "a VM without drives is on the kernel route");
}

int main(void)
{
	struct qemu_probe p[16];
	char ver[32];
	int n;

	test_needs_backend();
	test_kernel_route();
	/* This executable: each kind of lead. */
	n = qemu_probe_plan("/proc/self/exe", p, 16);
	CHECK(n > 0, "plan of /proc/self/exe: %d", n);
	if (n > 0) {
		expect(p, n, "blk_aio_pwritev", true, 13, false);
		expect(p, n, "blk_aio_preadv", true, 0, true);
		expect(p, n, "blk_aio_flush", true, 0, false);
		expect(p, n, "luring_co_submit", true, 0, true);
		/* Not here at all: left to the attach, which then fails with its own message. */
		expect(p, n, "laio_co_submit", false, 0, false);
	}
	/* Not an ELF file: an error, not a plan. */
	n = qemu_probe_plan("/proc/self/cmdline", p, 16);
	CHECK(n < 0, "a file that is not ELF gave a plan (%d)", n);
	CHECK(qemu_probe_plan("/proc/self/exe", p, 2) < 0, "a too small plan array was accepted");

	/* USDT: this executable has the three; a file that is not ELF has none. */
	CHECK(qemu_has_usdt("/proc/self/exe"), "the USDT probes of this executable were not found");
	CHECK(!qemu_has_usdt("/proc/self/cmdline"), "USDT probes found in a file that is not ELF");
	if (access("/usr/bin/qemu-system-x86_64", R_OK) == 0)
		CHECK(!qemu_has_usdt("/usr/bin/qemu-system-x86_64"), "USDT probes found in Debian's QEMU, built without");

	/* The machine's QEMU: Debian 12's 7.2 is the build the table was checked on. */
	if (access("/usr/bin/qemu-system-x86_64", R_OK) == 0 &&
	    qemu_binary_version("/usr/bin/qemu-system-x86_64", ver, sizeof(ver)) == 0 && !strncmp(ver, "7.2.", 4)) {
		n = qemu_probe_plan("/usr/bin/qemu-system-x86_64", p, 16);
		CHECK(n > 0, "plan of QEMU: %d", n);
		if (n > 0) {
			expect(p, n, "blk_aio_preadv", true, 13, false);
			expect(p, n, "blk_aio_pwritev", true, 13, false);
			expect(p, n, "blk_aio_flush", true, 16, false);
			expect(p, n, "thread_pool_submit_aio", true, 0, false);
			expect(p, n, "luring_co_submit", true, 0, false);
			expect(p, n, "laio_co_submit", true, 0, false);
		}
		printf("QEMU %s: blk_aio_* probed at their first push\n", ver);
	} else {
		printf("no QEMU 7.2 at /usr/bin/qemu-system-x86_64: only the stand-ins checked\n");
	}
	printf("%d checks, %d failed\n", checks, failures);
	return failures ? 1 : 0;
}
