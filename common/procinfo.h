/* SPDX-License-Identifier: GPL-2.0 */
/* What /proc says about a process. */
#ifndef IOTRACER_PROCINFO_H
#define IOTRACER_PROCINFO_H

#include <stdbool.h>

/* Is pid running a qemu-system-* (or qemu-kvm) binary? */
bool proc_is_qemu(int pid);

#endif
