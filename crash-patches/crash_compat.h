/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Repairs crash 8.0.2 needs to read 6.1 LTS dumps (crash_compat.c).
 */
#ifndef LIVEDUMP_CRASH_COMPAT_H
#define LIVEDUMP_CRASH_COMPAT_H

#include <stdio.h>

struct ld_dump;

/*
 * On a dump: repair what this crash misreads, one line on @out per repair.
 * @livedump: the dump's headers when it is a livedump (has_note), or NULL.
 */
void ld_crash_compat(FILE *out, const struct ld_dump *livedump);
/* Give crash back what ld_crash_compat() took over (extend -u). */
void ld_crash_compat_undo(void);

#endif
