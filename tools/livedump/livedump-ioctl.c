// SPDX-License-Identifier: GPL-2.0-only
/*
 * livedump-ioctl - drive /dev/livedump.
 *
 *   livedump-ioctl dump TARGET [REASON [RESERVE_PAGES [FLAG...]]]
 *   livedump-ioctl init TARGET [REASON [RESERVE_PAGES [FLAG...]]]
 *   livedump-ioctl start | sweep | release | status
 *
 * "dump" takes a whole dump through one open file: INIT, START, SWEEP,
 * progress (on a terminal one line rewritten in place with the rate, COW
 * faults, reserve use and time left; otherwise "livedump: N/TOTAL pages"
 * whenever it moved), the final status as "livedump: key=value" lines,
 * and UNINIT.  FLAG "quiet" leaves only errors.  If the process is
 * killed, closing the file releases the dump (a sweep under way runs to
 * its end first); SIGINT and SIGTERM abort it at once.
 *
 * The others issue one ioctl each.  "init" asks the kernel to keep the
 * dump after this process exits (LIVEDUMP_INIT_KEEP), for step-by-step use:
 * release it with "release".
 *
 * FLAG is "test-no-wrprotect" (LIVEDUMP_INIT_TEST_NO_WRPROTECT: a sweep
 * without write protection, for testing only; the kernel needs
 * CONFIG_TEST_LIVEDUMP), "test-hold", "exclude=CLASSES" (a comma-separated
 * list of page classes to leave out, "none", "default", or a number as
 * makedumpfile -d takes it) or "include-user" (user pages in the dump).
 * init and dump print the classes left out as "livedump: exclude=LIST".
 *
 * "release" with nothing set up says so and exits 0.  An INIT refused with
 * EBUSY says which state the dump that holds the device is in.
 *
 * "status" prints the dump status as key=value lines.  On failure the
 * error is printed on stderr and the exit status is the errno value.
 * The device is $LIVEDUMP_DEV, /dev/livedump by default.
 */
#define _GNU_SOURCE	/* O_DIRECT */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <linux/livedump.h>

/* "quiet": errors only (dump), the exit status tells the rest. */
static int quiet;
/*
 * Where progress and counters go: standard output, but standard error
 * when standard output carries the dump itself ("dump -").
 */
static FILE *out;

/* Older uapi headers lack it; the kernel then refuses it with EINVAL. */
#ifndef LIVEDUMP_INIT_TEST_NO_WRPROTECT
#define LIVEDUMP_INIT_TEST_NO_WRPROTECT	(1U << 31)
#endif
#ifndef LIVEDUMP_INIT_TEST_HOLD
#define LIVEDUMP_INIT_TEST_HOLD	(1U << 30)
#endif
/* Kernels from before it keep every dump until UNINIT anyway. */
#ifndef LIVEDUMP_INIT_KEEP
#define LIVEDUMP_INIT_KEEP	0
#endif

#ifdef LIVEDUMP_INIT_EXCLUDE
/* Page classes by their bit in livedump_init::exclude. */
static const char *const class_names[] = {
	[LIVEDUMP_CLASS_CACHE]		= "cache",
	[LIVEDUMP_CLASS_CACHE_PRIVATE]	= "cache-private",
	[LIVEDUMP_CLASS_USER]		= "user",
	[LIVEDUMP_CLASS_FREE]		= "free",
	[LIVEDUMP_CLASS_OWN]		= "own",
};
#endif

static const char *const state_names[] = {
	[LIVEDUMP_STATE_IDLE]		= "idle",
	[LIVEDUMP_STATE_READY]		= "ready",
	[LIVEDUMP_STATE_STARTED]	= "started",
	[LIVEDUMP_STATE_SWEEPING]	= "sweeping",
	[LIVEDUMP_STATE_DONE]		= "done",
	[LIVEDUMP_STATE_FAILED]		= "failed",
};

/*
 * Bit masks whose bits have names (page classes, triggers): @names[bit],
 * NULL for a bit without one.  A comma-separated list of names into bits:
 * 0, or -1 if one is unknown.
 */
static __attribute__((unused)) int parse_names(const char *arg, const char *const *names, unsigned int n,
					       uint32_t *mask)
{
	char buf[256], *tok, *save;
	unsigned int i;

	if (strlen(arg) >= sizeof(buf))
		return -1;
	strcpy(buf, arg);
	*mask = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		for (i = 0; i < n && !(names[i] && !strcmp(tok, names[i])); i++)
			;
		if (i == n)
			return -1;
		*mask |= 1U << i;
	}
	return 0;
}

/* The names of the bits set in @mask, separated by commas, or "none"; a newline. */
static __attribute__((unused)) void print_names(FILE *f, const char *const *names, unsigned int n, uint32_t mask)
{
	const char *sep = "";
	unsigned int i;

	for (i = 0; i < n; i++)
		if ((mask & (1U << i)) && names[i]) {
			fprintf(f, "%s%s", sep, names[i]);
			sep = ",";
		}
	fprintf(f, "%s\n", *sep ? "" : "none");
}

#ifdef LIVEDUMP_INIT_TRIGGER
/* Triggers by their bit in livedump_init::triggers. */
static const char *const trigger_names[] = { "warn", "sysrq", "call" };
#define NR_TRIGGER_NAMES (sizeof(trigger_names) / sizeof(trigger_names[0]))
#define print_triggers(f, mask) print_names((f), trigger_names, NR_TRIGGER_NAMES, (mask))
#endif

static int fail(const char *what)
{
	int err = errno;

	fprintf(stderr, "livedump-ioctl: %s: %s\n", what, strerror(err));
	return err ? err : 1;
}

static int usage(void)
{
	fprintf(stderr,
		"usage: livedump-ioctl dump|init TARGET [REASON [RESERVE_PAGES [FLAG...]]]\n"
		"       livedump-ioctl arm TARGET REASON RESERVE_PAGES on=TRIGGERS [FLAG...]\n"
		"       livedump-ioctl start|sweep|release|status|disarm\n"
		"FLAG: test-no-wrprotect, test-hold, exclude=CLASSES, include-user, quiet\n"
		"CLASSES: none, default, a number, or a list of cache,cache-private,user,free,own\n");
	return 2;
}

#ifdef LIVEDUMP_INIT_EXCLUDE
/* "none", "default", a number, or names of classes separated by commas. */
static int parse_exclude(const char *arg, uint32_t *mask)
{
	char *end;

	if (!strcmp(arg, "none")) {
		*mask = 0;
		return 0;
	}
	if (!strcmp(arg, "default")) {
		*mask = LIVEDUMP_EXCLUDE_DEFAULT;
		return 0;
	}
	*mask = strtoul(arg, &end, 0);
	if (*arg && !*end)
		return *mask & ~LIVEDUMP_EXCLUDE_ALL ? -1 : 0;
	return parse_names(arg, class_names, LIVEDUMP_NR_CLASSES, mask);
}

/* livedump.protect_aliases, read by INIT; a kernel without it protects none. */
#define PROTECT_ALIASES	"/sys/module/livedump/parameters/protect_aliases"
#define PROTECT_USER	"/sys/module/livedump/parameters/protect_user"

/* Is the boolean module parameter @path Y?  -1: no such parameter. */
static int param_on(const char *path)
{
	FILE *f = fopen(path, "r");
	int c = f ? fgetc(f) : EOF;

	if (f)
		fclose(f);
	return f ? c == 'Y' : -1;
}

static void print_protection(void)
{
	int aliases = param_on(PROTECT_ALIASES), user = param_on(PROTECT_USER);

#ifdef __aarch64__
	/* arm64's write protection has neither, whatever the parameters say. */
	fprintf(out, "livedump: note: on arm64 only the linear map and the kernel's data are write-protected: what is written through vmalloc, module and user mappings is dumped as found, it may be torn\n");
	return;
#endif
	if (aliases != 1)
		fprintf(out, "livedump: note: vmalloc and module mappings are not write-protected (%s): what is written through them is dumped as found, it may be torn\n",
			aliases ? "a kernel without " PROTECT_ALIASES : PROTECT_ALIASES " is N");
	if (user != 1)
		fprintf(out, "livedump: note: user mappings are not write-protected (%s): what processes write to page cache, shmem and user pages is dumped as found, it may be torn\n",
			user ? "a kernel without " PROTECT_USER : PROTECT_USER " is N");
}

static void print_exclude(uint32_t mask)
{
	fprintf(out, "livedump: exclude=");
	print_names(out, class_names, LIVEDUMP_NR_CLASSES, mask);
	print_protection();
	fflush(out);
}
#else
/* Kernels from before page classes dump all of RAM and refuse these. */
#define LIVEDUMP_EXCLUDE_DEFAULT	0
static int parse_exclude(const char *arg, uint32_t *mask)
{
	return -1;
}

static void print_exclude(uint32_t mask)
{
}
#endif

static int get_status(int dev, struct livedump_status *st)
{
	memset(st, 0, sizeof(*st));
	return ioctl(dev, LIVEDUMP_IOC_STATUS, st);
}

static const char *state_name(unsigned int state)
{
	return state < sizeof(state_names) / sizeof(state_names[0]) ? state_names[state] : "unknown";
}

/* INIT said EBUSY: say what holds what, and what to do about it. */
static void explain_busy(int dev, const char *target)
{
	struct livedump_status st;

	if (get_status(dev, &st))
		return;
	if (st.state == LIVEDUMP_STATE_IDLE) {
		fprintf(stderr, "livedump: %s is in use (mounted, or held open exclusively), or a system sleep is "
			"being prepared\n", target);
		return;
	}
	fprintf(stderr, "livedump: a dump is already set up, state %s (%" PRIu64 "/%" PRIu64 " pages written)",
		state_name(st.state), (uint64_t)st.pages_dumped, (uint64_t)st.pages_total);
	if (st.state == LIVEDUMP_STATE_SWEEPING)
		fprintf(stderr, ": wait for it to end, or stop the \"livedump dump\" that drives it\n");
	else
		fprintf(stderr, ": \"livedump release\" drops it (\"livedump status\" shows it first)\n");
}

/* The classes the dump set up leaves out, as the kernel says, or @asked. */
static uint32_t dump_exclude(int dev, uint32_t asked)
{
#ifdef LIVEDUMP_STATUS_SIZE_VER2
	struct livedump_status st;

	if (!get_status(dev, &st) && st.size >= LIVEDUMP_STATUS_SIZE_VER2)
		return st.exclude;
#endif
	return asked;
}

/*
 * A regular file as the target: the kernel writes its sectors directly and
 * needs every block of the first target_bytes allocated and written.
 */
struct file_target {
	int is_file;
	int created;		/* by us: removed if the dump is refused */
	off_t old_size;		/* given back if the dump is refused */
};

/* What a target must hold, from STATUS; 0 if this kernel does not say. */
static uint64_t target_bytes(int dev)
{
#ifdef LIVEDUMP_STATUS_SIZE_VER3
	struct livedump_status st;

	if (!get_status(dev, &st) && st.size >= LIVEDUMP_STATUS_SIZE_VER3)
		return st.target_bytes;
#else
	(void)dev;
#endif
	return 0;
}

static int open_target(const char *path, struct file_target *ft)
{
	struct stat sb;
	int fd;

	memset(ft, 0, sizeof(*ft));
	if (stat(path, &sb) && errno == ENOENT) {
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
		ft->is_file = ft->created = fd >= 0;
		return fd;
	}
	fd = open(path, O_WRONLY);
	if (fd >= 0 && !fstat(fd, &sb) && S_ISREG(sb.st_mode)) {
		ft->is_file = 1;
		ft->old_size = sb.st_size;
	}
	return fd;
}

/* The dump was refused: leave the file as it was. */
static void undo_target(const char *path, int fd, const struct file_target *ft)
{
	int err = errno;

	if (ft->created)
		unlink(path);
	else if (ft->is_file && ftruncate(fd, ft->old_size))
		fprintf(stderr, "livedump: %s: cannot give it back its size: %s\n", path, strerror(errno));
	errno = err;
}

/*
 * Write zeros from the end of @fd's written part up to @bytes, through
 * O_DIRECT where the file system has it so that the page cache of the host
 * being dumped is left alone.  Returns 0 or an errno.
 */
static int write_out(const char *path, int fd, uint64_t bytes)
{
	const size_t chunk = 1 << 20;
	struct statvfs vfs;
	struct stat sb;
	uint64_t start, pos;
	void *zeros;
	int dfd, err = 0;

	if (fstat(fd, &sb))
		return errno;
	if (posix_memalign(&zeros, 4096, chunk))
		return ENOMEM;
	memset(zeros, 0, chunk);
	dfd = open(path, O_WRONLY | O_DIRECT);
	if (dfd < 0)
		dfd = dup(fd);
	if (!quiet)
		fprintf(out, "livedump: writing out %s: %" PRIu64 " MiB\n", path, bytes >> 20);
	start = (uint64_t)sb.st_size & ~(uint64_t)4095;
	for (pos = start; pos < bytes && !err;) {
		size_t n = bytes - pos < chunk ? bytes - pos : chunk;
		ssize_t done = pwrite(dfd, zeros, n, pos);

		if (done < 0)
			err = errno;
		else if (done == 0)
			err = ENOSPC;
		else
			pos += done;
	}
	if (!err && fdatasync(dfd))
		err = errno;
	close(dfd);
	free(zeros);
	if (err == ENOSPC || err == EDQUOT) {
		fprintf(stderr, "livedump: %s: no room for the dump, which needs %" PRIu64 " MiB", path,
			bytes >> 20);
		if (!fstatvfs(fd, &vfs))
			fprintf(stderr, " (%" PRIu64 " MiB were free)",
				((uint64_t)vfs.f_bavail * vfs.f_frsize + pos - start) >> 20);
		fprintf(stderr, "\n");
	} else if (err) {
		fprintf(stderr, "livedump: %s: writing it out: %s\n", path, strerror(err));
	}
	return err;
}

/*
 * A complete dump in a file: the kernel wrote it out to target_bytes and
 * leaves cutting it to the ELF file's own size to us.
 */
static void cut_to_dump(const char *path, const struct livedump_status *st)
{
#ifdef LIVEDUMP_STATUS_SIZE_VER3
	struct stat sb;

	if (st->size < LIVEDUMP_STATUS_SIZE_VER3 || !st->dump_bytes ||
	    stat(path, &sb) || !S_ISREG(sb.st_mode))
		return;
	if (truncate(path, st->dump_bytes))
		fprintf(stderr, "livedump: %s: cannot cut it to the dump's %" PRIu64 " bytes: %s\n", path,
			(uint64_t)st->dump_bytes, strerror(errno));
#else
	(void)path;
	(void)st;
#endif
}

/* INIT refused a file target: say why in its terms. */
static void explain_file(int err, const char *path)
{
	if (err == EOPNOTSUPP)
		fprintf(stderr, "livedump: %s: a dump goes to a file on ext4 or xfs only (not tmpfs, btrfs or a "
			"network file system, not encrypted or DAX), or to a block device\n", path);
	else if (err == EINVAL)
		fprintf(stderr, "livedump: if %s is sparse or was made with fallocate, remove it: livedump "
			"writes out a file it creates\n", path);
	else if (err == EBUSY)
		fprintf(stderr, "livedump: %s may be a swap file\n", path);
}

/* "-": the dump goes to standard output, read from the kernel. */
static int is_stream(const char *target)
{
	return !strcmp(target, "-");
}

static int do_init(int dev, int argc, char **argv, unsigned int flags)
{
	struct livedump_init init;
	struct file_target ft;
	uint64_t need;
	uint32_t exclude = LIVEDUMP_EXCLUDE_DEFAULT;
	int fd, ret, i, exclude_user = 1;

	if (argc < 3)
		return usage();
	memset(&init, 0, sizeof(init));
	init.size = sizeof(init);
	init.flags = flags;
	if (argc > 3)
		strncpy(init.reason, argv[3], sizeof(init.reason) - 1);
	if (argc > 4)
		init.reserve_pages = strtoul(argv[4], NULL, 0);
	for (i = 5; i < argc; i++) {
		if (!strcmp(argv[i], "test-no-wrprotect"))
			init.flags |= LIVEDUMP_INIT_TEST_NO_WRPROTECT;
		else if (!strcmp(argv[i], "test-hold"))
			init.flags |= LIVEDUMP_INIT_TEST_HOLD;
		else if (!strncmp(argv[i], "exclude=", 8)) {
			if (parse_exclude(argv[i] + 8, &exclude)) {
				fprintf(stderr, "livedump-ioctl: unknown page classes: %s\n",
					argv[i] + 8);
				return usage();
			}
#ifdef LIVEDUMP_INIT_EXCLUDE
			init.flags |= LIVEDUMP_INIT_EXCLUDE;
#endif
		} else if (!strcmp(argv[i], "include-user"))
			exclude_user = 0;
		else if (!strcmp(argv[i], "quiet"))
			quiet = 1;
#ifdef LIVEDUMP_INIT_TRIGGER
		else if (!strncmp(argv[i], "on=", 3) && (flags & LIVEDUMP_INIT_TRIGGER)) {
			if (parse_names(argv[i] + 3, trigger_names, NR_TRIGGER_NAMES, &init.triggers) ||
			    !init.triggers) {
				fprintf(stderr, "livedump: unknown triggers: %s (warn, sysrq, call)\n", argv[i] + 3);
				return usage();
			}
		}
#endif
		else
			return usage();
	}
#ifdef LIVEDUMP_INIT_EXCLUDE
	/* Whatever the order of the flags, include-user wins. */
	if (!exclude_user) {
		exclude &= ~LIVEDUMP_EXCLUDE_USER;
		init.flags |= LIVEDUMP_INIT_EXCLUDE;
	}
	/* Without the flag the kernel's default applies, and exclude is 0. */
	if (init.flags & LIVEDUMP_INIT_EXCLUDE)
		init.exclude = exclude;
#else
	if (!exclude_user)
		return usage();
#endif

	if (is_stream(argv[2])) {
#ifdef LIVEDUMP_INIT_STREAM
		if (flags & LIVEDUMP_INIT_KEEP) {
			fprintf(stderr, "livedump: a stream is read by the process that sets it up: "
				"use \"livedump dump -\"\n");
			return EINVAL;
		}
		init.flags |= LIVEDUMP_INIT_STREAM;
		init.fd = -1;
		if (ioctl(dev, LIVEDUMP_IOC_INIT, &init))
			return fail("init");
		if (!quiet)
			print_exclude(dump_exclude(dev, exclude));
		return 0;
#else
		fprintf(stderr, "livedump: this tool was built without stream support\n");
		return EINVAL;
#endif
	}
	/* The kernel takes its own reference to the block device or file. */
	fd = open_target(argv[2], &ft);
	if (fd < 0)
		return fail(argv[2]);
	init.fd = fd;
	ret = ioctl(dev, LIVEDUMP_IOC_INIT, &init);
	/*
	 * A file too short: the kernel checked the file system first, so a
	 * file on tmpfs was refused before a byte was written to it.
	 */
	if (ret && errno == ENOSPC && ft.is_file && (need = target_bytes(dev))) {
		ret = write_out(argv[2], fd, need);
		if (ret)
			goto refused;
		ret = ioctl(dev, LIVEDUMP_IOC_INIT, &init);
	}
	if (ret)
		ret = fail("init");
	if (ret == EBUSY)
		explain_busy(dev, argv[2]);
	if (ret && ft.is_file)
		explain_file(ret, argv[2]);
refused:
	if (ret)
		undo_target(argv[2], fd, &ft);
	close(fd);
	if (!ret && !quiet)
		print_exclude(dump_exclude(dev, exclude));
	if ((init.flags & LIVEDUMP_INIT_TEST_HOLD) && ret == EINVAL)
		fprintf(stderr, "livedump: --test-hold needs a kernel with CONFIG_TEST_LIVEDUMP\n");
	if (init.flags & LIVEDUMP_INIT_TEST_NO_WRPROTECT) {
		if (ret == EINVAL)
			fprintf(stderr, "livedump: --test-no-wrprotect needs a kernel with CONFIG_TEST_LIVEDUMP\n");
		else if (!ret)
			fprintf(stderr, "livedump: test mode: memory is not write-protected, the dump will not be consistent\n");
	}
	return ret;
}

static void print_status(const struct livedump_status *st, const char *p)
{
	fprintf(out, "%sstate=%s\n", p, state_name(st->state));
	fprintf(out, "%spages_total=%" PRIu64 "\n", p, (uint64_t)st->pages_total);
	fprintf(out, "%spages_dumped=%" PRIu64 "\n", p, (uint64_t)st->pages_dumped);
	fprintf(out, "%scow_faults=%" PRIu64 "\n", p, (uint64_t)st->cow_faults);
	fprintf(out, "%sfailed_pages=%" PRIu64 "\n", p, (uint64_t)st->failed_pages);
	fprintf(out, "%spause_ns=%" PRIu64 "\n", p, (uint64_t)st->pause_ns);
	fprintf(out, "%sbytes_written=%" PRIu64 "\n", p, (uint64_t)st->bytes_written);
	fprintf(out, "%serror=%d\n", p, st->error);
#ifdef LIVEDUMP_STATUS_SIZE_VER3
	if (st->size >= LIVEDUMP_STATUS_SIZE_VER3) {
		fprintf(out, "%starget_bytes=%" PRIu64 "\n", p, (uint64_t)st->target_bytes);
		fprintf(out, "%sdump_bytes=%" PRIu64 "\n", p, (uint64_t)st->dump_bytes);
	}
#endif
#ifdef LIVEDUMP_STATUS_SIZE_VER4
	if (st->size >= LIVEDUMP_STATUS_SIZE_VER4) {
		fprintf(out, "%striggers=", p);
		print_triggers(out, st->triggers);
		fprintf(out, "%sfired=", p);
		print_triggers(out, st->fired);
	}
#endif
	if (st->error)
		fprintf(out, "%serror_text=%s\n", p, strerror(-st->error));
#ifdef LIVEDUMP_FAULT_HIST
	/* Kernels with large-page protection report what the dump costs. */
	fprintf(out, "%sreserve_pages=%" PRIu64 "\n", p, (uint64_t)st->reserve_pages);
	fprintf(out, "%sreserve_used_max=%" PRIu64 "\n", p, (uint64_t)st->reserve_used_max);
	fprintf(out, "%stable_pages=%" PRIu64 "\n", p, (uint64_t)st->table_pages);
	fprintf(out, "%stables_used=%" PRIu64 "\n", p, (uint64_t)st->tables_used);
	fprintf(out, "%sprotected_entries=%" PRIu64 "\n", p, (uint64_t)st->protected_entries);
	fprintf(out, "%sfault_max_ns=%" PRIu64 "\n", p, (uint64_t)st->fault_max_ns);
	fprintf(out, "%sfault_ns_log2=", p);
	for (int i = 0; i < LIVEDUMP_FAULT_HIST; i++)
		fprintf(out, "%s%" PRIu64, i ? "," : "", (uint64_t)st->fault_ns_log2[i]);
	fprintf(out, "\n");
#endif
}


static int do_status(int dev)
{
	struct livedump_status st;

	if (get_status(dev, &st))
		return fail("status");
	print_status(&st, "");
	return 0;
}

static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
	stop_signal = sig;
}

/*
 * Progress of a sweep: on a terminal one line, rewritten in place, with
 * the rate, the COW faults, the most of the reserve used and an estimate
 * of the time left; otherwise a plain line whenever pages were written.
 */
struct progress {
	int tty;
	double t_last;
	uint64_t bytes_last, pages_last;
	double mib_s;		/* smoothed */
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void progress_start(struct progress *pr)
{
	memset(pr, 0, sizeof(*pr));
	pr->tty = isatty(fileno(out));
	pr->t_last = now_s();
	pr->pages_last = UINT64_MAX;
}

static void progress_show(struct progress *pr, const struct livedump_status *st)
{
	double t = now_s(), dt = t - pr->t_last, left;
	uint64_t total = st->pages_total ? st->pages_total : 1;

	if (quiet || st->pages_dumped == pr->pages_last)
		return;
	if (dt > 0 && pr->pages_last != UINT64_MAX) {
		double rate = (st->bytes_written - pr->bytes_last) / dt / (1 << 20);

		pr->mib_s = pr->mib_s ? 0.7 * pr->mib_s + 0.3 * rate : rate;
	}
	pr->t_last = t;
	pr->bytes_last = st->bytes_written;
	pr->pages_last = st->pages_dumped;
	if (!pr->tty) {
		fprintf(out, "livedump: %" PRIu64 "/%" PRIu64 " pages\n",
		       (uint64_t)st->pages_dumped, (uint64_t)st->pages_total);
		fflush(out);
		return;
	}
	fprintf(out, "\rlivedump: %3.0f%% %" PRIu64 "/%" PRIu64 " pages, %.1f MiB/s, %" PRIu64 " COW faults",
	       100.0 * st->pages_dumped / total, (uint64_t)st->pages_dumped, (uint64_t)st->pages_total,
	       pr->mib_s, (uint64_t)st->cow_faults);
#ifdef LIVEDUMP_FAULT_HIST
	if (st->reserve_pages)
		fprintf(out, ", reserve %.0f%% at most", 100.0 * st->reserve_used_max / st->reserve_pages);
#endif
	if (pr->mib_s > 0 && st->pages_dumped < st->pages_total) {
		left = (st->pages_total - st->pages_dumped) * 4096.0 / (1 << 20) / pr->mib_s;
		fprintf(out, ", %d:%02d left", (int)left / 60, (int)left % 60);
	}
	fprintf(out, "\033[K");
	fflush(out);
}

static void progress_end(struct progress *pr)
{
	if (!quiet && pr->tty && pr->pages_last != UINT64_MAX) {
		fprintf(out, "\n");
		fflush(out);
	}
}

/*
 * Copy a stream to standard output until its end, showing progress on
 * standard error.  Returns 0, an errno, or -1 when the reader of our
 * output went away: the dump is then left to fail (EPIPE) on close.
 */
static int copy_stream(int dev, struct progress *pr, struct livedump_status *st)
{
	static char buf[1 << 20];
	double last = 0;
	ssize_t n, w, done;

	for (;;) {
		n = read(dev, buf, sizeof(buf));
		if (n < 0 && errno == EINTR && !stop_signal)
			continue;
		if (n < 0 && errno == EINTR)
			return 128 + stop_signal;
		if (n < 0)
			return fail("read");
		for (done = 0; done < n; done += w) {
			w = write(STDOUT_FILENO, buf + done, n - done);
			if (w < 0 && errno == EINTR && !stop_signal) {
				w = 0;
				continue;
			}
			if (w < 0) {
				fprintf(stderr, "livedump: writing the dump out: %s: dump abandoned\n",
					strerror(errno));
				return -1;
			}
		}
		if (n == 0 || now_s() - last >= 1.0) {
			if (get_status(dev, st))
				return fail("status");
			progress_show(pr, st);
			last = now_s();
		}
		if (n == 0)
			return 0;
	}
}

/* INIT, START, SWEEP, wait, UNINIT, all through the one open file @dev. */
static int do_dump(int dev, int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_stop_signal };
	struct livedump_status st;
	struct progress pr;
	int ret;

	if (is_stream(argv[2])) {
		out = stderr;
		/* A reader gone is EPIPE from write(), not death. */
		signal(SIGPIPE, SIG_IGN);
	}
	ret = do_init(dev, argc, argv, 0);
	if (ret)
		return ret;
	/* No SA_RESTART: a signal cuts the sleep between two polls short. */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (ioctl(dev, LIVEDUMP_IOC_START)) {
		ret = fail("start");
		goto out;
	}
	if (ioctl(dev, LIVEDUMP_IOC_SWEEP)) {
		ret = fail("sweep");
		goto out;
	}
	progress_start(&pr);
	if (is_stream(argv[2])) {
		ret = copy_stream(dev, &pr, &st);
		if (ret < 0)
			return 1;	/* closing the file fails the dump */
		if (ret)
			goto out;
		goto end;
	}
	for (;;) {
		if (get_status(dev, &st)) {
			ret = fail("status");
			goto out;
		}
		progress_show(&pr, &st);
		if (st.state != LIVEDUMP_STATE_SWEEPING)
			break;
		if (stop_signal) {
			fprintf(stderr, "livedump: interrupted, dump aborted\n");
			ret = 128 + stop_signal;
			goto out;
		}
		sleep(1);
	}
end:
	progress_end(&pr);
	if (!quiet)
		print_status(&st, "livedump: ");
	if (st.state != LIVEDUMP_STATE_DONE) {
		fprintf(stderr, "livedump: dump failed: %s\n", strerror(-st.error));
		ret = 1;
		goto out;
	}
	cut_to_dump(argv[2], &st);
	if (!quiet)
		fprintf(out, "livedump: dump of %" PRIu64 " pages written to %s\n",
			(uint64_t)st.pages_total, is_stream(argv[2]) ? "standard output" : argv[2]);
out:
	if (ioctl(dev, LIVEDUMP_IOC_UNINIT) && !ret)
		ret = fail("release");
	return ret;
}

/* START, SWEEP or UNINIT of a dump set up by "init"; @what names it. */
static int drive(int dev, unsigned long cmd, const char *what)
{
	int err;

	if (!ioctl(dev, cmd))
		return 0;
	err = errno;
	if (err == EBUSY)
		fprintf(stderr, "livedump-ioctl: the dump belongs to another process's open /dev/livedump "
			"(a running \"livedump dump\"?): stop that process, its exit releases the dump\n");
	errno = err;	/* for fail() */
	return fail(what);
}

#ifdef LIVEDUMP_INIT_TRIGGER
/* INIT, kept and armed: the kernel starts the dump on the first event. */
static int do_arm(int dev, int argc, char **argv)
{
	struct livedump_status st;
	int ret, i, on = 0;

	for (i = 3; i < argc; i++)
		on |= !strncmp(argv[i], "on=", 3);
	if (!on) {
		fprintf(stderr, "livedump: arm needs --on warn,sysrq,call (one or more)\n");
		return EINVAL;
	}
	ret = do_init(dev, argc, argv, LIVEDUMP_INIT_KEEP | LIVEDUMP_INIT_TRIGGER);
	if (ret)
		return ret;
	if (!get_status(dev, &st) && st.size >= LIVEDUMP_STATUS_SIZE_VER4 && !quiet) {
		fprintf(out, "livedump: armed for ");
		print_triggers(out, st.triggers);
		fprintf(out, "livedump: \"livedump status\" shows when it fired, \"livedump disarm\" releases it\n");
	}
	return 0;
}

/* Release an armed dump that has not fired; anything else stays. */
static int do_disarm(int dev)
{
	struct livedump_status st;

	if (get_status(dev, &st))
		return fail("status");
	if (st.size < LIVEDUMP_STATUS_SIZE_VER4 || st.state != LIVEDUMP_STATE_READY || !st.triggers) {
		fprintf(out, "livedump: nothing armed (state %s%s)\n", state_name(st.state),
			st.size >= LIVEDUMP_STATUS_SIZE_VER4 && st.fired ? ", a trigger fired" : "");
		return 0;
	}
	if (drive(dev, LIVEDUMP_IOC_UNINIT, "disarm"))
		return errno ? errno : 1;
	fprintf(out, "livedump: disarmed and released\n");
	return 0;
}
#endif

/* UNINIT, but nothing to release is not an error for the tool. */
static int do_release(int dev)
{
	struct livedump_status st;

	if (!get_status(dev, &st) && st.state == LIVEDUMP_STATE_IDLE) {
		fprintf(out, "livedump: nothing to release\n");
		return 0;
	}
	return drive(dev, LIVEDUMP_IOC_UNINIT, "release");
}

int main(int argc, char **argv)
{
	const char *path = getenv("LIVEDUMP_DEV");
	unsigned long cmd;
	int dev;

	out = stdout;
	if (argc < 2)
		return usage();
	if (!path)
		path = "/dev/livedump";

	if (!strcmp(argv[1], "start"))
		cmd = LIVEDUMP_IOC_START;
	else if (!strcmp(argv[1], "sweep"))
		cmd = LIVEDUMP_IOC_SWEEP;
	else if (!strcmp(argv[1], "release"))
		cmd = LIVEDUMP_IOC_UNINIT;
	else if (!strcmp(argv[1], "init") || !strcmp(argv[1], "status") ||
		 !strcmp(argv[1], "dump") || !strcmp(argv[1], "arm") ||
		 !strcmp(argv[1], "disarm"))
		cmd = 0;
	else
		return usage();

	dev = open(path, O_RDONLY);
	if (dev < 0)
		return fail(path);
	if (!strcmp(argv[1], "dump"))
		return do_dump(dev, argc, argv);
	if (!strcmp(argv[1], "init"))
		return do_init(dev, argc, argv, LIVEDUMP_INIT_KEEP);
	if (!strcmp(argv[1], "status"))
		return do_status(dev);
#ifdef LIVEDUMP_INIT_TRIGGER
	if (!strcmp(argv[1], "arm"))
		return do_arm(dev, argc, argv);
	if (!strcmp(argv[1], "disarm"))
		return do_disarm(dev);
#else
	if (!strcmp(argv[1], "arm") || !strcmp(argv[1], "disarm")) {
		fprintf(stderr, "livedump: this tool was built without triggers\n");
		return EINVAL;
	}
#endif
	if (!strcmp(argv[1], "release"))
		return do_release(dev);
	return drive(dev, cmd, argv[1]);
}
