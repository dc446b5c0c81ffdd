/* SPDX-License-Identifier: GPL-2.0 */
/* The machine's disks, their drivers and interrupts, read from sysfs and procfs. */
#ifndef IOTRACER_DISKS_H
#define IOTRACER_DISKS_H

#include <stdbool.h>
#include <stdint.h>

#define DISKS_MAX 64
#define DISK_IRQS_MAX 16

struct disk_info {
	char name[64];
	uint32_t kdev;		/* kernel dev_t: major << 20 | minor */
	uint32_t driver;	/* enum iot_driver */
	int nirqs;
	uint32_t irqs[DISK_IRQS_MAX];
};

struct disk_set {
	int n;
	struct disk_info d[DISKS_MAX];
};

int disks_scan(struct disk_set *ret_set);
const char *disks_first_of(const struct disk_set *s, uint32_t driver);
const struct disk_info *disks_by_kdev(const struct disk_set *s, uint32_t kdev);
bool disks_kallsyms_has(const char *sym);

static inline uint32_t iot_kdev(uint32_t major, uint32_t minor) { return major << 20 | minor; }
static inline uint32_t iot_kdev_major(uint32_t kdev) { return kdev >> 20; }
static inline uint32_t iot_kdev_minor(uint32_t kdev) { return kdev & ((1u << 20) - 1); }

/*
 * Parse "MAJ:MIN" or a block device path into a kernel dev_t. For a regular
 * file path, ret_is_file is set and the file system's device returned.
 */
int iot_parse_dev(const char *s, uint32_t *ret_kdev);

#endif
