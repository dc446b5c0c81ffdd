/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * What the QEMU probes (bpf/qemu.bpf.c) tell user space, and the layout of
 * the QEMU structures they read (per QEMU version: common/qemu.c).
 */
#ifndef IOTRACER_QEMU_EVENT_H
#define IOTRACER_QEMU_EVENT_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Guest requests QEMU merged into one block-layer call that are reported with it. */
#define IOT_QEMU_CHAIN_MAX 16

/*
 * Offsets inside QEMU's structures and argument positions of the functions
 * probed. Never guessed: taken from a table of QEMU versions checked against
 * their binaries.
 */
struct iot_qemu_layout {
	/* VirtQueueElement */
	__u32 elem_index, elem_out_num, elem_out_addr;
	/* VirtIOBlockReq (its VirtQueueElement is at offset 0) */
	__u32 req_sector_num, req_out_type, req_out_sector, req_qiov, req_mr_next;
	/* QEMUIOVector */
	__u32 qiov_iov, qiov_size;
	/* virtio-blk's MultiReqBuffer: its array of request pointers (USDT virtio_blk_submit_multireq) */
	__u32 mrb_reqs;
	/*
	 * LuringAIOCB, file-posix's io_uring request (the SQE's user_data): the
	 * copy of the SQE it keeps, and its QEMUIOVector pointer (kernel route)
	 */
	__u32 luringcb_sqe, luringcb_qiov;
	/* qemu_laiocb, file-posix's Linux AIO request: its struct iocb and QEMUIOVector pointer (kernel route) */
	__u32 laiocb_iocb, laiocb_qiov;
	/* RawPosixAIOData, the argument file-posix hands its thread pool */
	__u32 rawaio_type, rawaio_fd, rawaio_offset, rawaio_nbytes, rawaio_iov;
	/* argument positions, 0-based */
	__u8 tp_arg;				/* thread_pool_submit_aio: the RawPosixAIOData */
	__u8 luring_fd, luring_off, luring_qiov, luring_type;
	__u8 laio_fd, laio_off, laio_qiov, laio_type;
	__u8 pad[3];
	/*
	 * Not in the table: the bytes of a VirtIOBlockReq, a QEMUIOVector and a
	 * RawPosixAIOData the probes copy at once (through the last field
	 * read; at most 256, 64 and 64), and of a LuringAIOCB or a qemu_laiocb
	 * (at most 128).
	 */
	__u32 req_read, qiov_read, rawaio_read, luringcb_read, laiocb_read;
};

/* The qemu_pids map's values: how a traced QEMU process is probed. */
#define IOT_QPID_TRACED		1
#define IOT_QPID_NO_BACKEND	2	/* its backend calls are not probed: submits carry their buffer */
/*
 * The kernel route: its reads and writes are not probed in QEMU at all.
 * Every drive is a raw image under aio=io_uring or native, and the host
 * kernel's io_uring_submit_req and io_submit tracepoints, on QEMU's own
 * thread, read the request from the LuringAIOCB an SQE names or the
 * qemu_laiocb around an iocb (IOT_QF_KERNEL). A SUBMIT of the route
 * carries the host I/O it is (backend, fd; offset is the file's).
 */
#define IOT_QPID_KERNEL		4

#define IOT_QEMU_REQ_READ_MAX 256
/*
 * The submit probe copies this much more of a request where it can: QEMU
 * allocates the element's address and iovec arrays right after the
 * VirtIOBlockReq (virtqueue_alloc_element()), so the copy usually holds the
 * header's guest address and the first data buffer too, two reads fewer.
 */
#define IOT_QEMU_REQ_TAIL 128
#define IOT_QEMU_HEAD_READ_MAX 64	/* of a QEMUIOVector or a RawPosixAIOData */
#define IOT_QEMU_CB_READ_MAX 128	/* of a LuringAIOCB */

enum iot_qemu_ev {
	IOT_QEV_SUBMIT = 1,	/* blk_aio_preadv/pwritev/flush: virtio-blk hands requests to the block layer */
	IOT_QEV_BACKEND = 2,	/* file-posix hands one I/O to the host: thread pool, io_uring or Linux AIO */
	/*
	 * A QEMU built with USDT probes reports each read and write as its own
	 * SUBMIT when virtio-blk takes it (virtio_blk_handle_read/write), before
	 * it may merge neighbours into one block-layer call: MERGE names the
	 * requests (reqs[].req, the first one first) that went down together,
	 * as offset/bytes, with the merged I/O vector (iov).
	 */
	IOT_QEV_MERGE = 3,
};

enum iot_qemu_backend {
	IOT_QB_THREADS = 1,
	IOT_QB_URING = 2,
	IOT_QB_NATIVE = 3,
};

/* SUBMIT flags */
#define IOT_QF_LAYOUT_OK	(1u << 0)	/* the request read back agrees with the call's own arguments */
#define IOT_QF_CHAIN_TRUNC	(1u << 1)	/* more merged requests than IOT_QEMU_CHAIN_MAX */
/*
 * The process's backend calls are not probed (all its drives are raw files
 * under aio=threads or io_uring): its host I/O names the request by buf.
 */
#define IOT_QF_NO_BACKEND	(1u << 2)
#define IOT_QF_USDT		(1u << 3)	/* reported by a USDT probe (SUBMIT: at virtio-blk's parse) */
/*
 * Reported by the host kernel's io_uring_submit_req tracepoint (the kernel
 * route): ts is when QEMU's io_uring submission reached the host kernel,
 * not when virtio-blk handed the request to QEMU's block layer.
 */
#define IOT_QF_KERNEL		(1u << 4)

/* One guest request as QEMU holds it. */
struct iot_qemu_req {
	__u64 req;		/* VirtIOBlockReq address in QEMU */
	__u64 gpa;		/* guest-physical address of the request header (first out descriptor) */
	__u64 sector;		/* from the header */
	__u64 qiov_size;	/* data bytes of this request (see the merge note in qemu.c) */
	__u32 head;		/* virtqueue head index */
	__u32 type;		/* VIRTIO_BLK_T_* from the header */
};

struct iot_qemu_event {
	__u64 ts;
	__u32 pid, tid;
	__u16 type;		/* enum iot_qemu_ev */
	__u16 op;		/* SUBMIT: enum iot_op; BACKEND: QEMU_AIO_* type */
	__u16 nreqs;		/* SUBMIT: entries in reqs */
	__u16 flags;
	__u64 blk;		/* SUBMIT: BlockBackend; BACKEND: 0 */
	__u64 offset, bytes;	/* SUBMIT: guest-visible; BACKEND: in the host file */
	__u64 req;		/* BACKEND: the first request of the submit under way on this thread, 0 if none */
	__u64 req_ts;		/* BACKEND: when that submit began */
	__s32 fd;		/* BACKEND */
	__u32 backend;		/* BACKEND: enum iot_qemu_backend */
	/*
	 * The data buffers (the struct iovec array of a QEMUIOVector): SUBMIT,
	 * its first request's; BACKEND, those of the I/O handed to the host.
	 * A format that passes the guest's buffers down (raw, and qcow2 within
	 * a cluster) hands the same array, which names the submit a backend
	 * call serves even when it is made later, from another request's turn.
	 */
	__u64 iov;
	/*
	 * SUBMIT with IOT_QF_NO_BACKEND: the first data buffer (iov[0].iov_base),
	 * the address a raw image's host I/O carries as its buffer; 0 otherwise.
	 */
	__u64 buf;
	struct iot_qemu_req reqs[IOT_QEMU_CHAIN_MAX];
};

/* BACKEND events carry no reqs[]. */
#define IOT_QEMU_EVENT_BACKEND_SIZE ((unsigned long)&((struct iot_qemu_event *)0)->reqs)

enum iot_qemu_counter {
	IOT_QCNT_HITS,		/* uprobe hits, every QEMU process */
	IOT_QCNT_SUBMITS,
	IOT_QCNT_BACKENDS,
	IOT_QCNT_LOST,		/* events the ring buffer had no room for */
	IOT_QCNT_KSUBMITS,	/* kernel route: QEMU io_uring submissions read back as a virtio-blk request */
	IOT_QCNT_KFOREIGN,	/* kernel route: io_uring submissions of a traced QEMU that are not (flushes, resubmits) */
	IOT_QCNT_MAX,
};

#endif
