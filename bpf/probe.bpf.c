// SPDX-License-Identifier: GPL-2.0
/*
 * Tiny programs that user space loads and attaches one at a time to learn
 * which attach routes the running kernel accepts (the target is set at run
 * time with bpf_program__set_attach_target()).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("fentry/vfs_read")
int BPF_PROG(probe_fentry) { return 0; }

SEC("tp_btf/sched_switch")
int BPF_PROG(probe_tp_btf) { return 0; }
