/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Guest/host channel addresses: vsock:CID:PORT, serial:PATH, unix:PATH,
 * tcp:HOST:PORT. Parsed strictly: a typo is an error, never a default.
 */
#ifndef IOTRACER_ADDR_H
#define IOTRACER_ADDR_H

#include <stdint.h>

#define IOT_DEFAULT_PORT 5470
#define IOT_VSOCK_HOST_CID 2

enum iot_addr_kind { IOT_ADDR_VSOCK = 1, IOT_ADDR_SERIAL, IOT_ADDR_UNIX, IOT_ADDR_TCP };

struct iot_addr {
	enum iot_addr_kind kind;
	uint32_t cid;		/* vsock */
	uint16_t port;		/* vsock, tcp */
	char path[108];		/* serial, unix: fits sockaddr_un.sun_path with its NUL */
	char host[256];		/* tcp */
};

/* 0, or -EINVAL with a reason in err. */
int iot_addr_parse(const char *s, struct iot_addr *ret_addr, char *err, size_t errlen);
/* Canonical text form, for logs. */
void iot_addr_format(const struct iot_addr *a, char *buf, size_t len);

#endif
