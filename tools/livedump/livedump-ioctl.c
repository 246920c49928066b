// SPDX-License-Identifier: GPL-2.0-only
/*
 * livedump-ioctl - drive /dev/livedump.
 *
 *   livedump-ioctl dump TARGET [REASON [RESERVE_PAGES [FLAG...]]]
 *   livedump-ioctl init TARGET [REASON [RESERVE_PAGES [FLAG...]]]
 *   livedump-ioctl start | sweep | release | status
 *
 * "dump" takes a whole dump through one open file: INIT, START, SWEEP, a
 * progress line ("livedump: N/TOTAL pages") whenever it moved, the final
 * status as "livedump: key=value" lines, and UNINIT.  If the process is
 * killed, closing the file releases the dump (a sweep under way runs to
 * its end first); SIGINT and SIGTERM abort it at once.
 *
 * The others issue one ioctl each.  "init" asks the kernel to keep the
 * dump after this process exits (LIVEDUMP_INIT_KEEP), for step-by-step use:
 * release it with "release".
 *
 * FLAG is "test-no-wrprotect" (LIVEDUMP_INIT_TEST_NO_WRPROTECT: a sweep
 * without write protection, for testing only; the kernel needs
 * CONFIG_TEST_LIVEDUMP).
 *
 * "status" prints the dump status as key=value lines.  On failure the
 * error is printed on stderr and the exit status is the errno value.
 * The device is $LIVEDUMP_DEV, /dev/livedump by default.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/livedump.h>

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

static const char *const state_names[] = {
	[LIVEDUMP_STATE_IDLE]		= "idle",
	[LIVEDUMP_STATE_READY]		= "ready",
	[LIVEDUMP_STATE_STARTED]	= "started",
	[LIVEDUMP_STATE_SWEEPING]	= "sweeping",
	[LIVEDUMP_STATE_DONE]		= "done",
	[LIVEDUMP_STATE_FAILED]		= "failed",
};

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
		"       livedump-ioctl start|sweep|release|status\n"
		"FLAG: test-no-wrprotect, test-hold\n");
	return 2;
}

static int do_init(int dev, int argc, char **argv, unsigned int flags)
{
	struct livedump_init init;
	int fd, ret, i;

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
		else
			return usage();
	}

	/* The kernel takes its own reference to the block device. */
	fd = open(argv[2], O_WRONLY);
	if (fd < 0)
		return fail(argv[2]);
	init.fd = fd;
	ret = ioctl(dev, LIVEDUMP_IOC_INIT, &init);
	if (ret)
		ret = fail("init");
	close(fd);
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
	printf("%sstate=%s\n", p, st->state < sizeof(state_names) /
	       sizeof(state_names[0]) ? state_names[st->state] : "unknown");
	printf("%spages_total=%" PRIu64 "\n", p, (uint64_t)st->pages_total);
	printf("%spages_dumped=%" PRIu64 "\n", p, (uint64_t)st->pages_dumped);
	printf("%scow_faults=%" PRIu64 "\n", p, (uint64_t)st->cow_faults);
	printf("%sfailed_pages=%" PRIu64 "\n", p, (uint64_t)st->failed_pages);
	printf("%spause_ns=%" PRIu64 "\n", p, (uint64_t)st->pause_ns);
	printf("%sbytes_written=%" PRIu64 "\n", p, (uint64_t)st->bytes_written);
	printf("%serror=%d\n", p, st->error);
	if (st->error)
		printf("%serror_text=%s\n", p, strerror(-st->error));
#ifdef LIVEDUMP_FAULT_HIST
	/* Kernels with large-page protection report what the dump costs. */
	printf("%sreserve_pages=%" PRIu64 "\n", p, (uint64_t)st->reserve_pages);
	printf("%sreserve_used_max=%" PRIu64 "\n", p, (uint64_t)st->reserve_used_max);
	printf("%stable_pages=%" PRIu64 "\n", p, (uint64_t)st->table_pages);
	printf("%stables_used=%" PRIu64 "\n", p, (uint64_t)st->tables_used);
	printf("%sprotected_entries=%" PRIu64 "\n", p, (uint64_t)st->protected_entries);
	printf("%sfault_max_ns=%" PRIu64 "\n", p, (uint64_t)st->fault_max_ns);
	printf("%sfault_ns_log2=", p);
	for (int i = 0; i < LIVEDUMP_FAULT_HIST; i++)
		printf("%s%" PRIu64, i ? "," : "", (uint64_t)st->fault_ns_log2[i]);
	printf("\n");
#endif
}

static int get_status(int dev, struct livedump_status *st)
{
	memset(st, 0, sizeof(*st));
	return ioctl(dev, LIVEDUMP_IOC_STATUS, st);
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

/* INIT, START, SWEEP, wait, UNINIT, all through the one open file @dev. */
static int do_dump(int dev, int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_stop_signal };
	struct livedump_status st;
	uint64_t last = UINT64_MAX;
	int ret;

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
	for (;;) {
		if (get_status(dev, &st)) {
			ret = fail("status");
			goto out;
		}
		if (st.pages_dumped != last) {
			printf("livedump: %" PRIu64 "/%" PRIu64 " pages\n",
			       (uint64_t)st.pages_dumped, (uint64_t)st.pages_total);
			fflush(stdout);
			last = st.pages_dumped;
		}
		if (st.state != LIVEDUMP_STATE_SWEEPING)
			break;
		if (stop_signal) {
			fprintf(stderr, "livedump: interrupted, dump aborted\n");
			ret = 128 + stop_signal;
			goto out;
		}
		sleep(1);
	}
	print_status(&st, "livedump: ");
	if (st.state != LIVEDUMP_STATE_DONE) {
		fprintf(stderr, "livedump: dump failed: %s\n", strerror(-st.error));
		ret = 1;
		goto out;
	}
	printf("livedump: dump of %" PRIu64 " pages written to %s\n",
	       (uint64_t)st.pages_total, argv[2]);
out:
	if (ioctl(dev, LIVEDUMP_IOC_UNINIT) && !ret)
		ret = fail("release");
	return ret;
}

int main(int argc, char **argv)
{
	const char *path = getenv("LIVEDUMP_DEV");
	unsigned long cmd;
	int dev;

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
		 !strcmp(argv[1], "dump"))
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
	if (ioctl(dev, cmd)) {
		if (errno == EBUSY)
			fprintf(stderr, "livedump-ioctl: the dump belongs to another process's open /dev/livedump "
				"(a running \"livedump dump\"?): stop that process, its exit releases the dump\n");
		return fail(argv[1]);
	}
	return 0;
}
