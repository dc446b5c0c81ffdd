// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <string.h>
#include "srec.h"

int iot_srec_expand(const void *data, size_t size, struct iot_record *ret)
{
	const struct iot_srec *s = data;
	const __u64 *w;
	unsigned int fm, words, k = 0;
	__u64 v;

	if (size < sizeof(*s) || (size - sizeof(*s)) % sizeof(__u64))
		return -EINVAL;
	fm = s->f_mask;
	words = __builtin_popcount(s->ts_mask) + __builtin_popcount(fm) + !!(fm & 1u << IOT_SF_COMM);
	if (fm >> IOT_SF_MAX || words != (size - sizeof(*s)) / sizeof(__u64))
		return -EINVAL;
	w = s->w;
	memset(ret, 0, sizeof(*ret));
	for (int i = 0; i < IOT_TS_MAX; i++)
		if (s->ts_mask & 1u << i)
			ret->ts[i] = w[k++];
	ret->offset = IOT_UNKNOWN_U64;
	ret->sector = IOT_UNKNOWN_U64;
	ret->actor_tid = s->tid;
	for (int j = 0; j < IOT_SF_MAX; j++) {
		if (!(fm & 1u << j))
			continue;
		if (j == IOT_SF_COMM) {
			memcpy(ret->comm, &w[k], IOT_COMM_LEN);
			ret->comm[IOT_COMM_LEN - 1] = 0;
			k += 2;
			continue;
		}
		v = w[k++];
		switch (j) {
		case IOT_SF_CGROUP: ret->cgroup_id = v; break;
		case IOT_SF_INODE: ret->inode = v; break;
		case IOT_SF_OFFSET: ret->offset = v; break;
		case IOT_SF_SECTOR: ret->sector = v; break;
		case IOT_SF_OFFCPU: ret->offcpu_ns = v; break;
		case IOT_SF_USER_DATA: ret->user_data = v; break;
		case IOT_SF_VQ_GPA: ret->vq_gpa = v; break;
		case IOT_SF_URING_CTX: ret->uring_ctx = v; break;
		case IOT_SF_URING_REQ: ret->uring_req = v; break;
		case IOT_SF_URING_LINK: ret->uring_link = v; break;
		case IOT_SF_UBUF: ret->ubuf = v; break;
		case IOT_SF_RESULT: ret->result = (__s64)v; break;
		case IOT_SF_ACTOR:
			ret->actor_tid = (__u32)v;
			ret->bio_bytes = v >> 32;
			break;
		case IOT_SF_COUNTS:
			ret->nr_bios = (__u16)v;
			ret->pc_pages = (__u16)(v >> 16);
			ret->pc_misses = (__u16)(v >> 32);
			ret->pc_dirtied = (__u16)(v >> 48);
			break;
		case IOT_SF_CQE_SEQ:
			ret->cqe_seq = (__u32)v;
			ret->driver = (__u8)(v >> 32);
			break;
		}
	}
	ret->pid = s->pid;
	ret->tid = s->tid;
	ret->dev = s->dev;
	ret->len = s->len;
	ret->flags = s->flags;
	ret->kind = s->kind;
	ret->op = s->op;
	ret->syscall = s->syscall;
	ret->uring_opcode = s->uring_opcode;
	return 0;
}

_Static_assert(sizeof(struct iot_srec) == 32 && sizeof(struct iot_srec) % sizeof(__u64) == 0,
	       "the BPF side builds the header in whole words");
