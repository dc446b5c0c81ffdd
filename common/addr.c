// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "addr.h"
#include "num.h"

static int parse_u32(const char *s, uint32_t max, uint32_t *ret)
{
	uint64_t v;

	if (iot_parse_u64(s, 0, max, &v))
		return -EINVAL;
	*ret = v;
	return 0;
}

static int fail(char *err, size_t errlen, const char *fmt, const char *what)
{
	snprintf(err, errlen, fmt, what);
	return -EINVAL;
}

int iot_addr_parse(const char *s, struct iot_addr *ret, char *err, size_t errlen)
{
	struct iot_addr a = {};
	const char *rest = strchr(s, ':');
	uint32_t v;

	if (!rest)
		return fail(err, errlen, "'%s': want vsock:CID:PORT, serial:PATH, unix:PATH or tcp:HOST:PORT", s);
	rest++;
	if (!strncmp(s, "vsock:", 6)) {
		const char *colon = strchr(rest, ':');
		char cid[16];

		a.kind = IOT_ADDR_VSOCK;
		if (!colon || (size_t)(colon - rest) >= sizeof(cid))
			return fail(err, errlen, "'%s': vsock address is vsock:CID:PORT", s);
		memcpy(cid, rest, colon - rest);
		cid[colon - rest] = 0;
		if (parse_u32(cid, UINT32_MAX, &a.cid))
			return fail(err, errlen, "'%s': bad vsock CID", s);
		if (parse_u32(colon + 1, 65535, &v) || !v)
			return fail(err, errlen, "'%s': bad port (1-65535)", s);
		a.port = v;
	} else if (!strncmp(s, "serial:", 7) || !strncmp(s, "unix:", 5)) {
		a.kind = s[0] == 's' ? IOT_ADDR_SERIAL : IOT_ADDR_UNIX;
		if (!*rest)
			return fail(err, errlen, "'%s': empty path", s);
		if (strlen(rest) >= sizeof(a.path))
			return fail(err, errlen, "'%s': path longer than a unix socket allows (107 bytes)", s);
		strcpy(a.path, rest);
	} else if (!strncmp(s, "tcp:", 4)) {
		/* The port follows the last colon, so that [v6::addr]:port works. */
		const char *colon = strrchr(rest, ':');
		size_t hl;

		a.kind = IOT_ADDR_TCP;
		if (!colon)
			return fail(err, errlen, "'%s': tcp address is tcp:HOST:PORT", s);
		hl = colon - rest;
		if (hl >= 2 && rest[0] == '[' && rest[hl - 1] == ']') {
			rest++;
			hl -= 2;
		}
		if (!hl || hl >= sizeof(a.host))
			return fail(err, errlen, "'%s': bad host", s);
		memcpy(a.host, rest, hl);
		a.host[hl] = 0;
		if (parse_u32(colon + 1, 65535, &v) || !v)
			return fail(err, errlen, "'%s': bad port (1-65535)", s);
		a.port = v;
	} else {
		return fail(err, errlen, "'%s': unknown transport (vsock, serial, unix, tcp)", s);
	}
	*ret = a;
	return 0;
}

void iot_addr_format(const struct iot_addr *a, char *buf, size_t len)
{
	switch (a->kind) {
	case IOT_ADDR_VSOCK:
		snprintf(buf, len, "vsock:%u:%u", a->cid, a->port);
		break;
	case IOT_ADDR_SERIAL:
		snprintf(buf, len, "serial:%s", a->path);
		break;
	case IOT_ADDR_UNIX:
		snprintf(buf, len, "unix:%s", a->path);
		break;
	case IOT_ADDR_TCP:
		snprintf(buf, len, strchr(a->host, ':') ? "tcp:[%s]:%u" : "tcp:%s:%u", a->host, a->port);
		break;
	default:
		snprintf(buf, len, "?");
	}
}
