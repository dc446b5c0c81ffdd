// SPDX-License-Identifier: GPL-2.0
/*
 * What one uprobe hit costs on this machine, by the kind of instruction
 * probed: the kernel emulates some (push, jumps, calls, nops) in one trap,
 * and single-steps the rest out of line, a second trap; kernels from 6.18
 * on turn a probe on a 5-byte nop into a call past the trap. The qemu layer's
 * probe placement (common/qemu.c) rests on this difference.
 *
 * usage: uprobecost [--calls N] [--out FILE]
 *
 * Each target is a tiny function called N times (default 2,000,000) in a
 * loop, unprobed, then with a uprobe whose program does what every
 * qemu-layer program does first (bpf/ucost.bpf.c); the difference per call
 * is the hit's cost. Three rounds, medians. Writes a Markdown table to FILE
 * (default: standard output). Needs root.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/utsname.h>
#include <bpf/libbpf.h>
#include "ucost.skel.h"

/* The first instruction decides: sub (single-stepped), push (emulated), jcc (emulated). */
int ucost_sub(int x);
int ucost_push(int x);
int ucost_jcc(int x);
int ucost_nop5(int x);
int ucost_nop1(int x);
__asm__(".text\n"
	".globl ucost_sub\n.type ucost_sub,@function\nucost_sub:\n"
	"  sub $8,%rsp\n  lea 1(%rdi),%eax\n  add $8,%rsp\n  ret\n.size ucost_sub,.-ucost_sub\n"
	".globl ucost_push\n.type ucost_push,@function\nucost_push:\n"
	"  push %r15\n  lea 1(%rdi),%eax\n  pop %r15\n  ret\n.size ucost_push,.-ucost_push\n"
	".globl ucost_jcc\n.type ucost_jcc,@function\nucost_jcc:\n"
	"  test %edi,%edi\n  js 1f\n1:\n  lea 1(%rdi),%eax\n  ret\n.size ucost_jcc,.-ucost_jcc\n"
	".globl ucost_nop5\n.type ucost_nop5,@function\nucost_nop5:\n"
	"  .byte 0x0f,0x1f,0x44,0x00,0x00\n  lea 1(%rdi),%eax\n  ret\n.size ucost_nop5,.-ucost_nop5\n"
	".globl ucost_nop1\n.type ucost_nop1,@function\nucost_nop1:\n"
	"  nop\n  lea 1(%rdi),%eax\n  ret\n.size ucost_nop1,.-ucost_nop1\n");

static const struct {
	const char *func;
	int (*fn)(int);
	unsigned long off;	/* where the probe goes */
	const char *insn;
} targets[] = {
	{ "ucost_sub", ucost_sub, 0, "sub $8,%rsp (single-stepped: blk_aio_* entry)" },
	{ "ucost_push", ucost_push, 0, "push %r15 (emulated: luring_co_submit entry)" },
	{ "ucost_jcc", ucost_jcc, 2, "js (emulated)" },
	{ "ucost_nop1", ucost_nop1, 0, "nop (1 byte: a USDT site of Debian 12's sys/sdt.h)" },
	{ "ucost_nop5", ucost_nop5, 0, "nopl 0(%rax,%rax) (5-byte nop: optimized where the kernel can)" },
};

static double ns_per_call(int (*fn)(int), long n)
{
	struct timespec a, b;
	volatile int sink;
	int s = 0;

	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++)
		s = fn(s);
	clock_gettime(CLOCK_MONOTONIC, &b);
	sink = s;
	(void)sink;
	return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int libbpf_quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	return level == LIBBPF_WARN ? vfprintf(stderr, fmt, ap) : 0;
}

int main(int argc, char **argv)
{
	const char *out = NULL;
	long calls = 2000000;
	struct ucost_bpf *skel;
	struct utsname u;
	FILE *f = stdout;
	int err = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--calls") && i + 1 < argc) {
			calls = strtol(argv[++i], NULL, 10);
		} else if (!strcmp(argv[i], "--out") && i + 1 < argc) {
			out = argv[++i];
		} else {
			fprintf(stderr, "usage: uprobecost [--calls N] [--out FILE]\n");
			return 2;
		}
	}
	if (calls <= 0) {
		fprintf(stderr, "uprobecost: --calls must be a positive number\n");
		return 2;
	}
	libbpf_set_print(libbpf_quiet);
	skel = ucost_bpf__open_and_load();
	if (!skel) {
		fprintf(stderr, "uprobecost: cannot load the BPF program: %s (root needed)\n", strerror(errno));
		return 1;
	}
	if (out && !(f = fopen(out, "w"))) {
		fprintf(stderr, "uprobecost: %s: %s\n", out, strerror(errno));
		err = 1;
		goto out_free;
	}
	uname(&u);
	fprintf(f, "# Uprobe hit cost\n\nWritten by `bench/uprobecost` on %s %s. %ld calls per measurement, "
		"3 rounds, medians. Explained in docs/benchmarks.md and docs/qemu-layer.md.\n\n",
		u.sysname, u.release, calls);
	fprintf(f, "| instruction probed | unprobed ns/call | probed ns/call | cost per hit (us) |\n|---|---|---|---|\n");
	for (size_t t = 0; t < sizeof(targets) / sizeof(targets[0]); t++) {
		LIBBPF_OPTS(bpf_uprobe_opts, uo, .func_name = targets[t].func);
		double base[3], hit[3];
		struct bpf_link *l;

		for (int r = 0; r < 3; r++)
			base[r] = ns_per_call(targets[t].fn, calls);
		l = bpf_program__attach_uprobe_opts(skel->progs.ucost_hit, getpid(), "/proc/self/exe",
						    targets[t].off, &uo);
		if (!l) {
			fprintf(stderr, "uprobecost: cannot attach a uprobe on %s: %s\n", targets[t].func,
				strerror(errno));
			err = 1;
			break;
		}
		for (int r = 0; r < 3; r++)
			hit[r] = ns_per_call(targets[t].fn, calls);
		bpf_link__destroy(l);
		qsort(base, 3, sizeof(double), cmp_double);
		qsort(hit, 3, sizeof(double), cmp_double);
		fprintf(f, "| %s | %.1f | %.1f | **%.2f** |\n", targets[t].insn, base[1], hit[1],
			(hit[1] - base[1]) / 1000);
	}
	if (out)
		fclose(f);
out_free:
	ucost_bpf__destroy(skel);
	return err;
}
