// SPDX-License-Identifier: GPL-2.0
/*
 * `iotracer aio`: the cost of each async I/O interface, from the outside.
 *
 * aiobench's USDT probes bracket every batch's submit, poll and clear phase;
 * this side times them. Meanwhile it counts what the kernel did for the same
 * process: io_uring requests issued inline, punted to io-wq or parked on a
 * poll, Linux AIO iocbs and events, and every system call its threads made.
 * All of it is kept per run configuration (engine and flags), in per-CPU
 * counters that user space sums.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/usdt.bpf.h>
#include "aio.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 targ_tgid = 0;

/* The configuration running now (slot), or -1 between runs. */
__s32 cur_slot = -1;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IOT_AIO_SLOTS);
	__type(key, __u32);
	__type(value, struct iot_aio_stats);
} stats SEC(".maps");

/* Phase start per thread: key tid << 2 | phase. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} phase_start SEC(".maps");

/* io_uring rings (struct io_ring_ctx *) the process submitted to. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} rings SEC(".maps");

/* io_submit in progress per thread: entry time. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} in_submit SEC(".maps");

static __always_inline struct iot_aio_stats *cur_stats(void)
{
	__s32 slot = cur_slot;
	__u32 key;

	if (slot < 0 || slot >= IOT_AIO_SLOTS)
		return NULL;
	key = slot;
	return bpf_map_lookup_elem(&stats, &key);
}

static __always_inline bool is_target(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == targ_tgid;
}

SEC("usdt")
int BPF_USDT(run_start, int engine, int flags, long long nfiles, long long batch, long long bs,
	     long long iterations)
{
	struct iot_aio_stats *s;
	__u32 key;

	if (!is_target() || engine < 0 || engine >= IOT_AIO_ENGINES || flags < 0 ||
	    flags >= IOT_AIO_FLAGS)
		return 0;
	key = engine * IOT_AIO_FLAGS + flags;
	s = bpf_map_lookup_elem(&stats, &key);
	if (!s)
		return 0;
	s->runs++;
	s->run_ns -= bpf_ktime_get_ns();	/* run_end adds its time: the sum over CPUs is the span */
	s->nfiles = nfiles;
	s->batch = batch;
	s->bs = bs;
	s->iterations = iterations;
	cur_slot = key;
	return 0;
}

SEC("usdt")
int BPF_USDT(run_end, int engine, long long ios)
{
	struct iot_aio_stats *s;

	if (!is_target())
		return 0;
	s = cur_stats();
	if (s) {
		s->run_ns += bpf_ktime_get_ns();
		s->ios += ios;
	}
	cur_slot = -1;
	return 0;
}

static __always_inline void add_phase(struct iot_aio_stats *s, const int phase, __u64 ns, __u64 n)
{
	s->phase_calls[phase]++;
	s->phase_ns[phase] += ns;
	s->phase_items[phase] += n;
}

/* All six phase probes; the cookie says which (IOT_AIO_COOKIE). */
SEC("usdt")
int BPF_USDT(phase, int engine, long long n)
{
	__u64 cookie = bpf_usdt_cookie(ctx), now = bpf_ktime_get_ns(), *t0;
	__u32 phase = cookie >> 1;
	__u64 key = bpf_get_current_pid_tgid() << 2 | (phase & 3);
	struct iot_aio_stats *s;

	if (!is_target() || phase >= IOT_AIO_PHASES)
		return 0;
	if (!(cookie & 1)) {
		bpf_map_update_elem(&phase_start, &key, &now, BPF_ANY);
		return 0;
	}
	s = cur_stats();
	t0 = bpf_map_lookup_elem(&phase_start, &key);
	if (!s) {
		if (t0)
			bpf_map_delete_elem(&phase_start, &key);
		return 0;
	}
	if (!t0) {
		s->phase_unpaired++;
		return 0;
	}
	/* Constant indexes: the verifier cannot follow a bounded variable one through the compiler here. */
	if (phase == IOT_AIO_SUBMIT)
		add_phase(s, IOT_AIO_SUBMIT, now - *t0, n);
	else if (phase == IOT_AIO_POLL)
		add_phase(s, IOT_AIO_POLL, now - *t0, n);
	else
		add_phase(s, IOT_AIO_CLEAR, now - *t0, n);
	bpf_map_delete_elem(&phase_start, &key);
	return 0;
}

/* ---------- io_uring: requests on this process's rings ---------- */

static __always_inline struct iot_aio_stats *ring_stats(void *ctx_ptr)
{
	__u64 key = (__u64)ctx_ptr;

	if (!bpf_map_lookup_elem(&rings, &key))
		return NULL;
	return cur_stats();
}

SEC("tracepoint/io_uring/io_uring_submit_req")
int tp_submit_req(struct trace_event_raw_io_uring_submit_req *tp)
{
	__u64 key = (__u64)BPF_CORE_READ(tp, ctx);
	struct iot_aio_stats *s;
	__u8 one = 1;

	if (!is_target())
		return 0;
	s = cur_stats();
	if (!s)
		return 0;
	bpf_map_update_elem(&rings, &key, &one, BPF_ANY);
	s->uring_submitted++;
	if (bpf_core_field_exists(tp->sq_thread) && BPF_CORE_READ(tp, sq_thread))
		s->uring_sq_thread++;
	return 0;
}

SEC("tracepoint/io_uring/io_uring_queue_async_work")
int tp_async_work(struct trace_event_raw_io_uring_queue_async_work *tp)
{
	struct iot_aio_stats *s = ring_stats(BPF_CORE_READ(tp, ctx));

	if (s)
		s->uring_punted++;
	return 0;
}

SEC("tracepoint/io_uring/io_uring_poll_arm")
int tp_poll_arm(struct trace_event_raw_io_uring_poll_arm *tp)
{
	struct iot_aio_stats *s = ring_stats(BPF_CORE_READ(tp, ctx));

	if (s)
		s->uring_poll_armed++;
	return 0;
}

SEC("tracepoint/io_uring/io_uring_task_add")
int tp_task_add(struct trace_event_raw_io_uring_task_add *tp)
{
	struct iot_aio_stats *s = ring_stats(BPF_CORE_READ(tp, ctx));

	if (s)
		s->uring_task_work++;
	return 0;
}

SEC("tracepoint/io_uring/io_uring_complete")
int tp_complete(struct trace_event_raw_io_uring_complete *tp)
{
	struct iot_aio_stats *s = ring_stats(BPF_CORE_READ(tp, ctx));

	if (s)
		s->uring_completed++;
	return 0;
}

SEC("tracepoint/io_uring/io_uring_cqring_wait")
int tp_cqring_wait(struct trace_event_raw_io_uring_cqring_wait *tp)
{
	struct iot_aio_stats *s = ring_stats(BPF_CORE_READ(tp, ctx));

	if (s)
		s->uring_cqring_waits++;
	return 0;
}

/* ---------- system calls of the process ---------- */

#define NR_IO_SUBMIT	209	/* x86_64 */
#define NR_IO_GETEVENTS	208

SEC("tracepoint/raw_syscalls/sys_enter")
int tp_sys_enter(struct trace_event_raw_sys_enter *tp)
{
	struct iot_aio_stats *s;
	long nr;

	if (!is_target())
		return 0;
	s = cur_stats();
	if (!s)
		return 0;
	nr = BPF_CORE_READ(tp, id);
	s->syscalls++;
	if (nr >= 0 && nr < IOT_AIO_NR_MAX)
		s->sys_nr[nr]++;
	if (nr == NR_IO_SUBMIT) {
		__u32 tid = (__u32)bpf_get_current_pid_tgid();
		__u64 now = bpf_ktime_get_ns();

		bpf_map_update_elem(&in_submit, &tid, &now, BPF_ANY);
	}
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_exit")
int tp_sys_exit(struct trace_event_raw_sys_exit *tp)
{
	struct iot_aio_stats *s;
	__u32 tid;
	__u64 *t0;
	long nr, ret;

	if (!is_target())
		return 0;
	nr = BPF_CORE_READ(tp, id);
	if (nr != NR_IO_SUBMIT && nr != NR_IO_GETEVENTS)
		return 0;
	s = cur_stats();
	ret = BPF_CORE_READ(tp, ret);
	tid = (__u32)bpf_get_current_pid_tgid();
	if (nr == NR_IO_SUBMIT) {
		t0 = bpf_map_lookup_elem(&in_submit, &tid);
		if (t0) {
			if (s)
				s->aio_submit_ns += bpf_ktime_get_ns() - *t0;
			bpf_map_delete_elem(&in_submit, &tid);
		}
		if (s && ret > 0)
			s->aio_iocbs += ret;
	} else if (s && ret > 0) {
		s->aio_events += ret;
	}
	return 0;
}
