// SPDX-License-Identifier: GPL-2.0
/*
 * iowork: issues a known I/O pattern for the integration tests and prints,
 * as JSON lines, exactly what it issued (operation, offset, length, and the
 * physical sector where it can be known), so a test can hold iotracer's
 * records against it request by request.
 *
 * It prints {"pid":N}, waits for a line on stdin (the tracer is attached by
 * then), does the work, prints one line per request and {"done":true}.
 *
 *   iowork direct   PATH COUNT   O_DIRECT pread/pwrite of distinct sizes
 *   iowork buffered PATH COUNT   buffered 4 KiB writes, then fsync
 *   iowork dirty    PATH COUNT   buffered 4 KiB writes, no sync (writeback later)
 *   iowork uring    PATH COUNT   io_uring O_DIRECT reads, 4 in flight
 *   iowork uring-async PATH COUNT   the same, forced to io-wq workers (IOSQE_ASYNC)
 *   iowork aio      PATH COUNT   libaio O_DIRECT reads, 4 in flight
 *   iowork aio-adjacent PATH COUNT   libaio O_DIRECT 4 KiB reads, each batch of 4
 *                                 submitted at once on adjacent blocks (with the
 *                                 guest's merging off, the device may merge them)
 */
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <liburing.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#define ALIGN 4096
#define QD 4

static bool is_blockdev;

static void die(const char *what)
{
	fprintf(stderr, "iowork: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Physical sector of a file offset (FIEMAP), or the offset itself on a block device. */
static long long phys_sector(int fd, off_t off)
{
	struct {
		struct fiemap fm;
		struct fiemap_extent ext[1];
	} q = {};

	if (is_blockdev)
		return off / 512;
	q.fm.fm_start = off;
	q.fm.fm_length = 1;
	q.fm.fm_extent_count = 1;
	if (ioctl(fd, FS_IOC_FIEMAP, &q.fm) || q.fm.fm_mapped_extents != 1)
		return -1;
	return (q.ext[0].fe_physical + (off - q.ext[0].fe_logical)) / 512;
}

static void report(const char *op, int fd, off_t off, size_t len, long long sector)
{
	printf("{\"op\":\"%s\",\"offset\":%lld,\"len\":%zu,\"sector\":%lld}\n", op, (long long)off, len,
	       sector == -2 ? phys_sector(fd, off) : sector);
}

static void *abuf(size_t len)
{
	void *p;

	if (posix_memalign(&p, ALIGN, len))
		die("posix_memalign");
	memset(p, 0x5a, len);
	return p;
}

/* Distinct sizes and offsets so that no two requests look alike. */
static size_t size_of(int i) { return ALIGN * (1 + i % 4); }
static off_t offset_of(int i) { return (off_t)ALIGN * 32 * (i + 1); }

static void do_direct(int fd, int count)
{
	char *buf = abuf(ALIGN * 4);

	for (int i = 0; i < count; i++) {
		size_t len = size_of(i);
		off_t off = offset_of(i);
		bool wr = i % 3 == 2;
		ssize_t n = wr ? pwrite(fd, buf, len, off) : pread(fd, buf, len, off);

		if (n != (ssize_t)len)
			die(wr ? "pwrite" : "pread");
		report(wr ? "write" : "read", fd, off, len, -2);
	}
	free(buf);
}

static void do_buffered(int fd, int count, bool sync)
{
	char *buf = abuf(ALIGN);

	for (int i = 0; i < count; i++) {
		if (pwrite(fd, buf, ALIGN, (off_t)i * ALIGN) != ALIGN)
			die("pwrite");
		report("write", fd, (off_t)i * ALIGN, ALIGN, -1);
	}
	if (sync && fsync(fd))
		die("fsync");
	if (sync)
		report("fsync", fd, 0, 0, -1);
	free(buf);
}

/* async: IOSQE_ASYNC (every request punted to io-wq); link: each batch one IOSQE_IO_LINK chain. */
static void do_uring(int fd, int count, bool async, bool link)
{
	struct io_uring ring;
	char *bufs[QD];
	int inflight = 0, done = 0, next = 0, err;

	err = io_uring_queue_init(QD * 2, &ring, 0);
	if (err) {
		errno = -err;
		die("io_uring_queue_init");
	}
	for (int i = 0; i < QD; i++)
		bufs[i] = abuf(ALIGN * 4);
	while (done < count) {
		struct io_uring_cqe *cqe;

		while (inflight < QD && next < count) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

			io_uring_prep_read(sqe, fd, bufs[next % QD], size_of(next), offset_of(next));
			io_uring_sqe_set_data64(sqe, next);
			if (async)
				io_uring_sqe_set_flags(sqe, IOSQE_ASYNC);
			else if (link && inflight + 1 < QD && next + 1 < count)
				io_uring_sqe_set_flags(sqe, IOSQE_IO_LINK);
			next++;
			inflight++;
		}
		err = io_uring_submit_and_wait(&ring, 1);
		if (err < 0) {
			errno = -err;
			die("io_uring_submit_and_wait");
		}
		while (io_uring_peek_cqe(&ring, &cqe) == 0) {
			int i = cqe->user_data;

			if (cqe->res != (int)size_of(i)) {
				errno = cqe->res < 0 ? -cqe->res : EIO;
				die("io_uring read");
			}
			report("read", fd, offset_of(i), size_of(i), -2);
			io_uring_cqe_seen(&ring, cqe);
			inflight--;
			done++;
		}
	}
	io_uring_queue_exit(&ring);
	for (int i = 0; i < QD; i++)
		free(bufs[i]);
}

static void do_aio(int fd, int count, bool adjacent)
{
	io_context_t ctx = 0;
	struct iocb cbs[QD], *cbp[QD];
	struct io_event ev[QD];
	char *bufs[QD];
	int err, next = 0;

	err = io_setup(QD, &ctx);
	if (err) {
		errno = -err;
		die("io_setup");
	}
	for (int i = 0; i < QD; i++)
		bufs[i] = abuf(ALIGN * 4);
	while (next < count) {
		int n = 0, got;

		for (; n < QD && next + n < count; n++) {
			int i = next + n;

			if (adjacent)
				io_prep_pread(&cbs[n], fd, bufs[n], ALIGN, (off_t)ALIGN * (64 * (next / QD + 1) + n));
			else
				io_prep_pread(&cbs[n], fd, bufs[n], size_of(i), offset_of(i));
			cbs[n].data = (void *)(intptr_t)i;
			cbp[n] = &cbs[n];
		}
		err = io_submit(ctx, n, cbp);
		if (err != n) {
			errno = err < 0 ? -err : EIO;
			die("io_submit");
		}
		for (got = 0; got < n;) {
			int r = io_getevents(ctx, 1, n - got, ev, NULL);

			if (r < 0) {
				errno = -r;
				die("io_getevents");
			}
			for (int k = 0; k < r; k++) {
				int i = (intptr_t)ev[k].data;
				size_t len = adjacent ? ALIGN : size_of(i);
				off_t off = adjacent ? (off_t)ALIGN * (64 * (i / QD + 1) + i % QD) : offset_of(i);

				if ((long)ev[k].res != (long)len) {
					errno = EIO;
					die("aio read");
				}
				report("read", fd, off, len, -2);
			}
			got += r;
		}
		next += n;
	}
	io_destroy(ctx);
	for (int i = 0; i < QD; i++)
		free(bufs[i]);
}

int main(int argc, char **argv)
{
	const char *mode, *path;
	struct stat st;
	char line[64];
	int count, fd, flags = O_RDWR;

	if (argc != 4) {
		fprintf(stderr, "usage: iowork direct|buffered|dirty|uring|uring-async|uring-link|aio|aio-adjacent "
			"PATH COUNT\n");
		return 2;
	}
	mode = argv[1];
	path = argv[2];
	count = atoi(argv[3]);
	if (count <= 0 || count > 100000) {
		fprintf(stderr, "iowork: COUNT must be 1..100000\n");
		return 2;
	}
	if (strcmp(mode, "buffered") && strcmp(mode, "dirty"))
		flags |= O_DIRECT;
	fd = open(path, flags | O_CREAT, 0644);
	if (fd < 0)
		die("open");
	if (fstat(fd, &st))
		die("fstat");
	is_blockdev = S_ISBLK(st.st_mode);
	printf("{\"pid\":%d}\n", getpid());
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	if (!strcmp(mode, "direct"))
		do_direct(fd, count);
	else if (!strcmp(mode, "buffered"))
		do_buffered(fd, count, true);
	else if (!strcmp(mode, "dirty"))
		do_buffered(fd, count, false);
	else if (!strcmp(mode, "uring"))
		do_uring(fd, count, false, false);
	else if (!strcmp(mode, "uring-async"))
		do_uring(fd, count, true, false);
	else if (!strcmp(mode, "uring-link"))
		do_uring(fd, count, false, true);
	else if (!strcmp(mode, "aio"))
		do_aio(fd, count, false);
	else if (!strcmp(mode, "aio-adjacent"))
		do_aio(fd, count, true);
	else {
		fprintf(stderr, "iowork: unknown mode '%s'\n", mode);
		return 2;
	}
	close(fd);
	printf("{\"done\":true}\n");
	return 0;
}
