/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The guest <-> host connection below the frames: opening sockets for an
 * address, naming a peer by what the transport proves, the preamble that
 * starts every connection, and bounded non-blocking output.
 */
#ifndef IOTRACER_CHANNEL_H
#define IOTRACER_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "addr.h"
#include "frame.h"

#define IOT_CHAN_MAGIC "IOTRACE1"
#define IOT_CHAN_MAGIC_LEN 8u
/* Bytes a serial reader skips looking for the preamble before it gives up. */
#define IOT_CHAN_SCAN_MAX (4u << 20)

/* A listening socket for a unix, tcp or vsock address. fd, or -errno with err set. */
int chan_listen(const struct iot_addr *a, char *err, size_t errlen);
/*
 * Starts connecting to a unix, tcp or vsock address, or opens a serial port
 * (a virtio-serial device in the guest; on the host, the unix socket QEMU
 * serves for it). The fd is non-blocking; *in_progress tells that a socket
 * connect is still under way (wait for POLLOUT, then chan_connect_result()).
 * fd or -errno with err set.
 */
int chan_connect(const struct iot_addr *a, bool *in_progress, char *err, size_t errlen);
/* 0 once a connect in progress succeeded, or its -errno. */
int chan_connect_result(int fd);
/*
 * The peer's identity as the transport proves it (see docs/channel.md):
 * vsock:CID, qemu:PID[/NAME], unix:PID, tcp:IP:PORT. peer/peerlen are what
 * accept() returned (NULL for a connected serial socket).
 */
void chan_peer_name(int fd, enum iot_addr_kind kind, const void *peer, size_t peerlen,
		    char *buf, size_t len);

/* Receiving side of one connection: the preamble, then frames. */
struct chan_rx {
	struct frame_decoder dec;
	bool scan;		/* may skip bytes before the preamble (serial) */
	bool synced;		/* the preamble was seen */
	uint32_t matched;	/* bytes of the preamble matched so far */
	uint64_t skipped;	/* bytes skipped looking for it */
};

int chan_rx_init(struct chan_rx *rx, uint32_t max_frame, bool scan);
void chan_rx_fini(struct chan_rx *rx);
/* Like frame_decoder__feed(); an error is kept and explained by chan_rx_error(). */
int chan_rx_feed(struct chan_rx *rx, const uint8_t *buf, size_t len, frame_cb cb, void *ctx);
const char *chan_rx_error(const struct chan_rx *rx);

/* Bytes waiting to be written, bounded. */
struct chan_tx {
	uint8_t *buf;
	size_t len, off, cap, limit;
};

void chan_tx_init(struct chan_tx *tx, size_t limit);
void chan_tx_fini(struct chan_tx *tx);
void chan_tx_clear(struct chan_tx *tx);
static inline size_t chan_tx_pending(const struct chan_tx *tx) { return tx->len - tx->off; }
/* Appends n bytes: 0, or -ENOBUFS when the limit would be passed (nothing appended). */
int chan_tx_put(struct chan_tx *tx, const void *p, size_t n);
/* Appends one frame: 0, -ENOBUFS, or frame_encode()'s errors. */
int chan_tx_frame(struct chan_tx *tx, const Iotracer__Frame *f);
/* Writes what the fd takes now: 0 (all or part written, or EAGAIN) or -errno. */
int chan_tx_flush(struct chan_tx *tx, int fd);

/*
 * What each side sends first on every connection: the preamble and its
 * Hello frame, in a buffer to free(). 0 or -errno.
 */
int chan_hello_bytes(Iotracer__Hello *h, uint8_t **ret, size_t *ret_len);

/* CLOCK_MONOTONIC in ns: the clock bpf_ktime_get_ns() reads. */
uint64_t chan_now_ns(void);

#endif
