// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include "record_pb.h"

void record_to_pb(const struct iot_record *r, Iotracer__Record *m, uint64_t *ts_buf)
{
	iotracer__record__init(m);
	memcpy(ts_buf, r->ts, sizeof(r->ts));
	m->n_ts = IOT_TS_MAX;
	m->ts = ts_buf;
	m->cgroup_id = r->cgroup_id;
	m->inode = r->inode;
	m->offset = r->offset;
	m->sector = r->sector;
	m->offcpu_ns = r->offcpu_ns;
	m->user_data = r->user_data;
	m->virtio_hdr_gpa = r->vq_gpa;
	m->uring_ctx = r->uring_ctx;
	m->uring_req = r->uring_req;
	m->uring_link = r->uring_link;
	m->cqe_seq = r->cqe_seq;
	m->result = r->result;
	m->pid = r->pid;
	m->tid = r->tid;
	m->actor_tid = r->actor_tid;
	m->dev = r->dev;
	m->len = r->len;
	m->bio_bytes = r->bio_bytes;
	m->flags = r->flags;
	m->nr_bios = r->nr_bios;
	m->pc_pages = r->pc_pages;
	m->pc_misses = r->pc_misses;
	m->pc_dirtied = r->pc_dirtied;
	m->kind = r->kind;
	m->op = r->op;
	m->syscall = r->syscall;
	m->uring_opcode = r->uring_opcode;
	m->driver = r->driver;
	m->comm.data = (uint8_t *)r->comm;
	m->comm.len = strnlen(r->comm, IOT_COMM_LEN);
}

/* The enumerations a receiver checks; the other fields are checked by their width. */
static bool enums_ok(uint32_t kind, uint32_t op, uint32_t syscall, uint32_t driver)
{
	return kind <= IOT_KIND_BIO && op < IOT_OP_MAX && syscall < IOT_SYS_MAX && driver <= IOT_DRV_OTHER;
}

int record_check(const struct iot_record *r)
{
	return enums_ok(r->kind, r->op, r->syscall, r->driver) ? 0 : -EINVAL;
}

int record_from_pb(const Iotracer__Record *m, struct iot_record *ret)
{
	struct iot_record r = {};

	/* Values a guest sends are checked, never trusted. */
	if (m->n_ts > IOT_TS_MAX || m->comm.len > IOT_COMM_LEN || m->nr_bios > UINT16_MAX ||
	    m->pc_pages > UINT16_MAX || m->pc_misses > UINT16_MAX || m->pc_dirtied > UINT16_MAX ||
	    m->uring_opcode > UINT8_MAX || !enums_ok(m->kind, m->op, m->syscall, m->driver))
		return -EINVAL;
	if (m->n_ts)
		memcpy(r.ts, m->ts, m->n_ts * sizeof(uint64_t));
	r.cgroup_id = m->cgroup_id;
	r.inode = m->inode;
	r.offset = m->offset;
	r.sector = m->sector;
	r.offcpu_ns = m->offcpu_ns;
	r.user_data = m->user_data;
	r.vq_gpa = m->virtio_hdr_gpa;
	r.uring_ctx = m->uring_ctx;
	r.uring_req = m->uring_req;
	r.uring_link = m->uring_link;
	r.cqe_seq = m->cqe_seq;
	r.result = m->result;
	r.pid = m->pid;
	r.tid = m->tid;
	r.actor_tid = m->actor_tid;
	r.dev = m->dev;
	r.len = m->len;
	r.bio_bytes = m->bio_bytes;
	r.flags = m->flags;
	r.nr_bios = m->nr_bios;
	r.pc_pages = m->pc_pages;
	r.pc_misses = m->pc_misses;
	r.pc_dirtied = m->pc_dirtied;
	r.kind = m->kind;
	r.op = m->op;
	r.syscall = m->syscall;
	r.uring_opcode = m->uring_opcode;
	r.driver = m->driver;
	if (m->comm.len)
		memcpy(r.comm, m->comm.data, m->comm.len);
	*ret = r;
	return 0;
}
