// SPDX-License-Identifier: GPL-2.0
/*
 * The pid-set filter (tracer_opts.pid_set, what host mode uses to trace only
 * the QEMU processes) on the running kernel, with the real BPF programs.
 *
 * Two child processes do O_DIRECT preads on a file of the root file system,
 * each at offsets of its own, in two rounds. In the first round only child A
 * is in the set: every one of its reads must be reported, and nothing else.
 * Then A leaves the set and B joins it: in the second round only B's reads
 * may arrive. Last, the set holds 256 processes and refuses one more.
 *
 * Exit 0 pass, 1 fail, 77 skip (not root, or a kernel without BTF).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "tracer.h"
#include "check.h"

#define SKIP 77
#define NREADS 8
#define BLK 4096
#define STRIDE (2 * BLK)	/* a hole between reads: no two merge */
#define FILE_BYTES (1 << 20)
#define MAX_SEEN 4096
#define SET_MAX 256		/* max_entries of the pid_set map */

struct child {
	pid_t pid;
	int go;		/* parent writes a byte: do a round */
	int done;	/* child writes a byte: round done */
};

struct seen {
	int n;
	struct iot_record r[MAX_SEEN];
};

static void on_record(void *ctx, const struct iot_record *r)
{
	struct seen *s = ctx;

	if (s->n < MAX_SEEN)
		s->r[s->n] = *r;
	s->n++;
}

static off_t offset_of(int child, int round, int i)
{
	return (off_t)((child * 2 + round) * NREADS + i) * STRIDE;
}

/* A directory on the root file system: /var/tmp unless it is mounted apart. */
static const char *root_fs_dir(void)
{
	struct stat root, vt;

	if (stat("/", &root) == 0 && stat("/var/tmp", &vt) == 0 && vt.st_dev == root.st_dev)
		return "/var/tmp";
	return "/";
}

static int make_file(char *path, size_t len)
{
	char *buf;
	int fd, err = 0;

	snprintf(path, len, "%s/iotracer-pidset-XXXXXX", root_fs_dir());
	fd = mkstemp(path);
	if (fd < 0)
		return -errno;
	buf = calloc(1, FILE_BYTES);
	if (!buf)
		err = -ENOMEM;
	else if (write(fd, buf, FILE_BYTES) != FILE_BYTES || fsync(fd))
		err = -EIO;
	free(buf);
	close(fd);
	return err;
}

static void child_main(int idx, const char *path, int go, int done)
{
	void *buf;
	char c;
	int fd = open(path, O_RDONLY | O_DIRECT);

	if (fd < 0 || posix_memalign(&buf, BLK, BLK))
		_exit(2);
	for (int round = 0; round < 2; round++) {
		if (read(go, &c, 1) != 1)
			_exit(3);
		for (int i = 0; i < NREADS; i++)
			if (pread(fd, buf, BLK, offset_of(idx, round, i)) != BLK)
				_exit(4);
		if (write(done, &c, 1) != 1)
			_exit(5);
	}
	_exit(0);
}

static int start_child(int idx, const char *path, struct child *ret)
{
	int go[2], done[2];
	pid_t pid;

	if (pipe(go) || pipe(done))
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		close(go[1]);
		close(done[0]);
		child_main(idx, path, go[0], done[1]);
	}
	close(go[0]);
	close(done[1]);
	ret->pid = pid;
	ret->go = go[1];
	ret->done = done[0];
	return 0;
}

/* Both children do one round; false if one failed. */
static bool round_trip(struct child *c)
{
	char x = 'g';

	for (int k = 0; k < 2; k++)
		if (write(c[k].go, &x, 1) != 1)
			return false;
	for (int k = 0; k < 2; k++)
		if (read(c[k].done, &x, 1) != 1)
			return false;
	return true;
}

/* Records [from, to) hold exactly the NREADS preads of child idx in this round, and nothing else. */
static void check_round(const struct seen *s, int from, const struct child *c, int idx, int round)
{
	int found[NREADS] = {};

	CHECK(s->n <= MAX_SEEN, "%d records, more than kept", s->n);
	for (int k = from; k < s->n && k < MAX_SEEN; k++) {
		const struct iot_record *r = &s->r[k];
		bool mine = false;

		CHECK((pid_t)r->pid == c[idx].pid, "round %d: a record of pid %u (%s, kind %u), only %d is in the set",
		      round, r->pid, r->comm, r->kind, c[idx].pid);
		if ((pid_t)r->pid != c[idx].pid || r->kind != IOT_KIND_SYSCALL || r->syscall != IOT_SYS_PREAD64)
			continue;
		for (int i = 0; i < NREADS; i++) {
			if (r->offset != (uint64_t)offset_of(idx, round, i))
				continue;
			found[i]++;
			mine = true;
			CHECK(r->result == BLK && r->nr_bios >= 1 && (r->flags & IOT_F_DIRECT),
			      "round %d: pread at %llu: result %lld, %u bios, flags %#x", round,
			      (unsigned long long)r->offset, (long long)r->result, r->nr_bios, r->flags);
		}
		CHECK(mine, "round %d: pread at %llu is none of child %d's", round, (unsigned long long)r->offset, idx);
	}
	for (int i = 0; i < NREADS; i++)
		CHECK(found[i] == 1, "round %d: child %d's pread at %lld reported %d times", round, idx,
		      (long long)offset_of(idx, round, i), found[i]);
}

int main(void)
{
	static struct seen seen;
	struct tracer_opts opts = {
		.sz = sizeof(opts),
		.layers = (1u << IOT_LAYER_MAX) - 1,
		.pid_set = 1,
		.on_record = on_record,
		.ctx = &seen,
	};
	struct child c[2] = {};
	struct tracer *t = NULL;
	char path[128] = "", errbuf[256];
	int err, n, before, added;

	if (geteuid() != 0) {
		printf("SKIP: loading BPF programs needs root, and this test runs as uid %d\n", geteuid());
		return SKIP;
	}
	if (access("/sys/kernel/btf/vmlinux", R_OK)) {
		printf("SKIP: this kernel has no BTF\n");
		return SKIP;
	}
	err = tracer_prepare_env(errbuf, sizeof(errbuf));
	if (err) {
		fprintf(stderr, "FAIL: %s\n", errbuf);
		return 1;
	}
	err = make_file(path, sizeof(path));
	if (err) {
		fprintf(stderr, "FAIL: cannot make a test file in %s: %s\n", root_fs_dir(), strerror(-err));
		return 1;
	}
	for (int k = 0; k < 2; k++) {
		err = start_child(k, path, &c[k]);
		if (err) {
			fprintf(stderr, "FAIL: cannot start a child: %s\n", strerror(-err));
			goto out;
		}
	}

	t = tracer__new(&opts);
	if (!t) {
		fprintf(stderr, "FAIL: tracer__new: %s\n", strerror(errno));
		goto out;
	}
	CHECK(tracer__add_pid(t, c[0].pid) == -EINVAL, "tracer__add_pid before load");
	err = tracer__load(t);
	if (!err)
		err = tracer__attach(t);
	if (err) {
		fprintf(stderr, "FAIL: %s\n", tracer__error(t) ? tracer__error(t) : strerror(-err));
		failures++;
		goto out;
	}
	CHECK(tracer__layer(t, IOT_LAYER_SYSCALL)->state == LAYER_ON, "syscall layer: %s",
	      tracer__layer(t, IOT_LAYER_SYSCALL)->route);
	CHECK(tracer__add_pid(t, 0) == -EINVAL, "pid 0 accepted");

	/* Round 0: only A. */
	CHECK((err = tracer__add_pid(t, c[0].pid)) == 0, "add A: %s", strerror(-err));
	CHECK(round_trip(c), "a child failed in round 0");
	tracer__flush(t);
	check_round(&seen, 0, c, 0, 0);

	/* Round 1: A leaves, B joins. */
	CHECK((err = tracer__del_pid(t, c[0].pid)) == 0, "del A: %s", strerror(-err));
	CHECK(tracer__del_pid(t, c[0].pid) == -ENOENT, "del A twice");
	CHECK((err = tracer__add_pid(t, c[1].pid)) == 0, "add B: %s", strerror(-err));
	before = seen.n;
	CHECK(round_trip(c), "a child failed in round 1");
	tracer__flush(t);
	check_round(&seen, before, c, 1, 1);

	/* The set is bounded: B and 255 others fill it. */
	for (added = 0; added < SET_MAX; added++) {
		err = tracer__add_pid(t, 0x40000000u + added);
		if (err)
			break;
	}
	CHECK(added == SET_MAX - 1 && err == -E2BIG, "the set took %d more besides B (%s), want %d then E2BIG",
	      added, strerror(-err), SET_MAX - 1);
	for (int i = 0; i < added; i++)
		CHECK(tracer__del_pid(t, 0x40000000u + i) == 0, "del %d", i);

out:
	for (int k = 0; k < 2; k++) {
		int status;

		if (c[k].pid <= 0)
			continue;
		close(c[k].go);
		close(c[k].done);
		if (waitpid(c[k].pid, &status, 0) == c[k].pid)
			CHECK(WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 3),
			      "child %d exited with status %#x", k, status);
	}
	n = seen.n;
	tracer__free(t);
	if (path[0])
		unlink(path);
	if (failures || !t) {
		fprintf(stderr, "FAIL: %d of %d checks failed\n", failures, checks);
		return 1;
	}
	printf("PASS: %d checks; %d records, all of the process in the set\n", checks, n);
	return 0;
}
