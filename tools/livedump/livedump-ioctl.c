// SPDX-License-Identifier: GPL-2.0-only
/*
 * livedump-ioctl - issue one /dev/livedump ioctl.
 *
 *   livedump-ioctl init TARGET [REASON [RESERVE_PAGES [FLAG...]]]
 *   livedump-ioctl start | sweep | release | status
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
		"usage: livedump-ioctl init TARGET [REASON [RESERVE_PAGES [FLAG...]]]\n"
		"       livedump-ioctl start|sweep|release|status\n"
		"FLAG: test-no-wrprotect\n");
	return 2;
}

static int do_init(int dev, int argc, char **argv)
{
	struct livedump_init init;
	int fd, ret, i;

	if (argc < 3)
		return usage();
	memset(&init, 0, sizeof(init));
	init.size = sizeof(init);
	if (argc > 3)
		strncpy(init.reason, argv[3], sizeof(init.reason) - 1);
	if (argc > 4)
		init.reserve_pages = strtoul(argv[4], NULL, 0);
	for (i = 5; i < argc; i++) {
		if (!strcmp(argv[i], "test-no-wrprotect"))
			init.flags |= LIVEDUMP_INIT_TEST_NO_WRPROTECT;
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
	return ret;
}

static int do_status(int dev)
{
	struct livedump_status st;

	memset(&st, 0, sizeof(st));
	if (ioctl(dev, LIVEDUMP_IOC_STATUS, &st))
		return fail("status");
	printf("state=%s\n", st.state < sizeof(state_names) /
	       sizeof(state_names[0]) ? state_names[st.state] : "unknown");
	printf("pages_total=%" PRIu64 "\n", (uint64_t)st.pages_total);
	printf("pages_dumped=%" PRIu64 "\n", (uint64_t)st.pages_dumped);
	printf("cow_faults=%" PRIu64 "\n", (uint64_t)st.cow_faults);
	printf("failed_pages=%" PRIu64 "\n", (uint64_t)st.failed_pages);
	printf("pause_ns=%" PRIu64 "\n", (uint64_t)st.pause_ns);
	printf("bytes_written=%" PRIu64 "\n", (uint64_t)st.bytes_written);
	printf("error=%d\n", st.error);
	if (st.error)
		printf("error_text=%s\n", strerror(-st.error));
#ifdef LIVEDUMP_FAULT_HIST
	/* Kernels with large-page protection report what the dump costs. */
	printf("reserve_pages=%" PRIu64 "\n", (uint64_t)st.reserve_pages);
	printf("reserve_used_max=%" PRIu64 "\n", (uint64_t)st.reserve_used_max);
	printf("table_pages=%" PRIu64 "\n", (uint64_t)st.table_pages);
	printf("tables_used=%" PRIu64 "\n", (uint64_t)st.tables_used);
	printf("protected_entries=%" PRIu64 "\n", (uint64_t)st.protected_entries);
	printf("fault_max_ns=%" PRIu64 "\n", (uint64_t)st.fault_max_ns);
	printf("fault_ns_log2=");
	for (int i = 0; i < LIVEDUMP_FAULT_HIST; i++)
		printf("%s%" PRIu64, i ? "," : "", (uint64_t)st.fault_ns_log2[i]);
	printf("\n");
#endif
	return 0;
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
	else if (!strcmp(argv[1], "init") || !strcmp(argv[1], "status"))
		cmd = 0;
	else
		return usage();

	dev = open(path, O_RDONLY);
	if (dev < 0)
		return fail(path);
	if (!strcmp(argv[1], "init"))
		return do_init(dev, argc, argv);
	if (!strcmp(argv[1], "status"))
		return do_status(dev);
	if (ioctl(dev, cmd))
		return fail(argv[1]);
	return 0;
}
