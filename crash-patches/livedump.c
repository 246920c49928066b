// SPDX-License-Identifier: GPL-2.0
/*
 * livedump.c - crash extension: the `livedump` command.
 *
 * Shows the LIVEDUMP note of a dump written by the kernel's livedump
 * (struct livedump_note, include/uapi/linux/livedump.h) and the CPUs whose
 * registers the dump holds, and checks that the dump is complete.
 *
 * crash keeps no pointer to ELF notes it does not know, so this opens
 * pc->dumpfile itself and reads the ELF headers (livedump_note.c).
 *
 * Build: make (see Makefile), load: crash -x ./livedump.so ... or
 * `extend /path/livedump.so` at the crash prompt.
 */
#include "defs.h"

#include <fcntl.h>

#include "crash_compat.h"
#include "livedump_note.h"

void livedump_init(void);
void livedump_fini(void);
static void cmd_livedump(void);

static char *help_livedump[] = {
	"livedump",
	"show the LIVEDUMP note of a livedump vmcore, or check the dump",
	"[-c] [-e]",
	"  Without options, prints what the kernel recorded in the dump's LIVEDUMP",
	"  ELF note: the note version, the reason given to the livedump tool, the",
	"  time all CPUs were stopped (UTC and ns since the epoch), how long they",
	"  were stopped, the page counters, the failed (inconsistent) pages as",
	"  coalesced pfn ranges, and the CPUs whose registers were captured in",
	"  NT_PRSTATUS notes (pid, rip, rsp, task and symbol).",
	"",
	"    -c  check the dump: every PT_LOAD segment lies within the file or block",
	"        device (size >= p_offset + p_filesz) and can be read, the note agrees",
	"        with the ELF headers, and no page is marked inconsistent. Problems",
	"        are listed and the command fails.",
	"    -e  on failure (not a livedump, a problem found by -c), exit crash with",
	"        status 1 instead of only failing the command: for scripted sessions.",
	"",
	"  On a dump that is not a livedump (no LIVEDUMP note: kdump, QEMU",
	"  dump-guest-memory) or on a live system the command fails with an error.",
	"\nEXAMPLE",
	"    crash> livedump",
	"    LIVEDUMP note version 1",
	"      reason:            before upgrade",
	"      start time:        2026-11-25 22:30:01.123456789 UTC (1795645801123456789 ns)",
	"      pause:             812345 ns (0.812 ms, all CPUs stopped)",
	"      ...",
	"    crash> livedump -c",
	"    livedump check:",
	"      block device: 805306368 bytes; the ELF data needs 536883200 bytes",
	"      PT_LOAD: all 3 segments present and readable",
	"      inconsistent pages: none",
	"      result: OK",
	NULL
};

static struct command_table_entry command_table[] = {
	{ "livedump", cmd_livedump, help_livedump, 0 },
	{ NULL }
};

void __attribute__((constructor))
livedump_init(void)
{
	struct ld_dump d;
	char err[256];
	int fd = -1, is_livedump = 0;

	register_extension(command_table);

	if (!ACTIVE() && pc->dumpfile)
		fd = open(pc->dumpfile, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		is_livedump = !ld_read(fd, &d, err, sizeof(err)) && d.has_note;
		close(fd);
	}
	ld_crash_compat(fp, is_livedump ? &d : NULL);
	if (is_livedump)
		ld_free(&d);
}

void __attribute__((destructor))
livedump_fini(void)
{
	ld_crash_compat_undo();
}

/* The task and the symbol of rip for one captured CPU. */
static void annotate_cpu(unsigned int cpu, const struct ld_cpu *c, char *buf, size_t len, void *arg)
{
	struct task_context *tc, *t;
	char sym[BUFSIZE];
	const char *name = NULL;

	tc = pid_to_context((ulong)c->pid);
	/* pid 0 is one idle task per CPU: take this CPU's. */
	for (t = tc; t; t = t->tc_next)
		if (t->pid == (ulong)c->pid && t->processor == (int)cpu) {
			tc = t;
			break;
		}
	if (tc)
		name = tc->comm;
	sym[0] = '\0';
	if (c->rip && in_ksymbol_range(c->rip))
		value_to_symstr(c->rip, sym, 0);
	snprintf(buf, len, "%s%s%s%s", name ? name : "", name && sym[0] ? " " : "", sym[0] ? "at " : "", sym);
}

static void livedump_fail(int exit_crash, const char *fmt, const char *a, const char *b)
{
	if (exit_crash) {
		error(INFO, (char *)fmt, a, b);
		fflush(fp);
		clean_exit(1);
	}
	error(FATAL, (char *)fmt, a, b);
}

static void cmd_livedump(void)
{
	int c, check = 0, exit_crash = 0, fd, problems, is_blockdev;
	struct ld_dump d;
	char err[256];
	uint64_t size;

	while ((c = getopt(argcnt, args, "ce")) != EOF) {
		switch (c) {
		case 'c':
			check = 1;
			break;
		case 'e':
			exit_crash = 1;
			break;
		default:
			argerrs++;
			break;
		}
	}
	if (argerrs || args[optind])
		cmd_usage(pc->curcmd, SYNOPSIS);

	if (ACTIVE() || !pc->dumpfile)
		livedump_fail(exit_crash, "this is a live system, not a dump: there is no LIVEDUMP note%s%s\n", "", "");

	fd = open(pc->dumpfile, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, sizeof(err), "%s", strerror(errno));
		livedump_fail(exit_crash, "cannot open %s: %s\n", pc->dumpfile, err);
	}
	if (ld_read(fd, &d, err, sizeof(err))) {
		close(fd);
		livedump_fail(exit_crash, "%s is not a livedump: %s\n", pc->dumpfile, err);
	}
	if (!d.has_note) {
		const char *kind = ld_kind(&d);

		ld_free(&d);
		close(fd);
		livedump_fail(exit_crash, "%s is not a livedump: no LIVEDUMP note (%s)\n", pc->dumpfile, kind);
	}

	if (!check) {
		ld_print(fp, &d, annotate_cpu, NULL);
		ld_free(&d);
		close(fd);
		return;
	}

	if (ld_source_size(fd, &size, &is_blockdev, err, sizeof(err))) {
		ld_free(&d);
		close(fd);
		livedump_fail(exit_crash, "%s: %s\n", pc->dumpfile, err);
	}
	problems = ld_check(fp, fd, &d, size, is_blockdev);
	ld_free(&d);
	close(fd);
	if (problems) {
		snprintf(err, sizeof(err), "%d", problems);
		livedump_fail(exit_crash, "check of %s failed: %s problem(s)\n", pc->dumpfile, err);
	}
}
