// SPDX-License-Identifier: GPL-2.0
#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include "disks.h"
#include "record.h"

static uint32_t driver_of(const char *disk)
{
	char path[PATH_MAX], link[PATH_MAX];
	ssize_t n;

	if (!strncmp(disk, "nvme", 4))
		return IOT_DRV_NVME;
	snprintf(path, sizeof(path), "/sys/block/%s/device/driver", disk);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return IOT_DRV_OTHER;
	link[n] = 0;
	if (strstr(link, "virtio_blk"))
		return IOT_DRV_VIRTIO_BLK;
	if (!strcmp(basename(link), "sd"))
		return IOT_DRV_SCSI;
	return IOT_DRV_OTHER;
}

/* The prefix the disk's interrupts carry in /proc/interrupts ("virtio1-req", "nvme0q"). */
static int irq_prefix(const struct disk_info *d, char *buf, size_t len)
{
	char path[PATH_MAX], link[PATH_MAX];
	ssize_t n;

	if (d->driver == IOT_DRV_NVME) {
		int ctrl;

		if (sscanf(d->name, "nvme%d", &ctrl) != 1)
			return -EINVAL;
		snprintf(buf, len, "nvme%dq", ctrl);
		return 0;
	}
	if (d->driver != IOT_DRV_VIRTIO_BLK)
		return -ENOENT;
	snprintf(path, sizeof(path), "/sys/block/%s/device", d->name);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return -errno;
	link[n] = 0;
	snprintf(buf, len, "%s-req", basename(link));
	return 0;
}

static void scan_irqs(struct disk_set *s)
{
	FILE *f = fopen("/proc/interrupts", "re");
	char line[1024];

	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned int irq;
		char *name;
		size_t l;

		if (sscanf(line, " %u:", &irq) != 1)
			continue;
		l = strlen(line);
		while (l && (line[l - 1] == '\n' || line[l - 1] == ' '))
			line[--l] = 0;
		name = strrchr(line, ' ');
		if (!name)
			continue;
		name++;
		for (int i = 0; i < s->n; i++) {
			struct disk_info *d = &s->d[i];
			char prefix[64];

			if (irq_prefix(d, prefix, sizeof(prefix)))
				continue;
			if (!strncmp(name, prefix, strlen(prefix)) && d->nirqs < DISK_IRQS_MAX)
				d->irqs[d->nirqs++] = irq;
		}
	}
	fclose(f);
}

int disks_scan(struct disk_set *s)
{
	DIR *dir = opendir("/sys/block");
	struct dirent *de;

	if (!dir)
		return -errno;
	s->n = 0;
	while ((de = readdir(dir)) && s->n < DISKS_MAX) {
		char path[PATH_MAX];
		unsigned int maj, min;
		struct disk_info *d;
		FILE *f;
		int ok;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/block/%s/dev", de->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		ok = fscanf(f, "%u:%u", &maj, &min) == 2;
		fclose(f);
		if (!ok)
			continue;
		d = &s->d[s->n++];
		memset(d, 0, sizeof(*d));
		snprintf(d->name, sizeof(d->name), "%.63s", de->d_name);
		d->kdev = iot_kdev(maj, min);
		d->driver = driver_of(d->name);
	}
	closedir(dir);
	scan_irqs(s);
	return 0;
}

const char *disks_first_of(const struct disk_set *s, uint32_t driver)
{
	for (int i = 0; i < s->n; i++)
		if (s->d[i].driver == driver)
			return s->d[i].name;
	return NULL;
}

const struct disk_info *disks_by_kdev(const struct disk_set *s, uint32_t kdev)
{
	for (int i = 0; i < s->n; i++)
		if (s->d[i].kdev == kdev)
			return &s->d[i];
	return NULL;
}

bool disks_kallsyms_has(const char *sym)
{
	FILE *f = fopen("/proc/kallsyms", "re");
	char line[512];
	size_t n = strlen(sym);
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char *name = strchr(line, ' ');

		if (!name || !(name = strchr(name + 1, ' ')))
			continue;
		name++;
		found = !strncmp(name, sym, n) && (name[n] == '\n' || name[n] == '\t' || name[n] == ' ');
	}
	fclose(f);
	return found;
}

int iot_parse_dev(const char *s, uint32_t *ret_kdev)
{
	unsigned int maj, min;
	char tail;
	struct stat st;

	if (sscanf(s, "%u:%u%c", &maj, &min, &tail) == 2) {
		if (maj >= (1u << 12) || min >= (1u << 20))
			return -ERANGE;
		*ret_kdev = iot_kdev(maj, min);
		return 0;
	}
	if (stat(s, &st))
		return -errno;
	if (!S_ISBLK(st.st_mode))
		return -ENOTBLK;
	*ret_kdev = iot_kdev(major(st.st_rdev), minor(st.st_rdev));
	return 0;
}
