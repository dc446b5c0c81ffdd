// SPDX-License-Identifier: GPL-2.0
/*
 * bench/uprobecost's probe: the same first steps the qemu layer's programs
 * take (is this a traced process? count the hit), so that a hit's measured
 * cost is the trap plus what every qemu-layer program pays before its work.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u8);
} pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

SEC("uprobe")
int ucost_hit(struct pt_regs *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32, zero = 0;
	__u64 *v = bpf_map_lookup_elem(&hits, &zero);

	if (v)
		(*v)++;
	bpf_map_lookup_elem(&pids, &pid);
	return 0;
}
