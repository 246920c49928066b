// SPDX-License-Identifier: GPL-2.0
/*
 * ldload spin|fork|write [DIR]|anon MIB
 *
 * Background load for livedump tests, under one recognisable task name
 * ("ldload") so a dump's task list can be checked for it:
 *   spin   burn a CPU in user space
 *   fork   fork and reap short-lived children forever
 *   write  rewrite and fsync a file in DIR (default /tmp) forever
 *   anon   hold MIB MiB of anonymous memory, every page written (not
 *          zero, so that nothing merges it), print "anon ready" once
 *          done and sleep forever: user pages for a dump to leave out
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static int spin(void)
{
	volatile unsigned long n = 0;

	for (;;)
		n++;
	return 0;
}

static int fork_forever(void)
{
	for (;;) {
		pid_t pid = fork();

		if (pid == 0)
			_exit(0);
		if (pid > 0)
			waitpid(pid, NULL, 0);
		else
			usleep(10000);
	}
	return 0;
}

static int write_forever(const char *dir)
{
	char path[256], buf[4096];
	unsigned long gen = 0;

	snprintf(path, sizeof(path), "%s/ldload.%d", dir, (int)getpid());
	for (;;) {
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		if (fd < 0) {
			perror(path);
			return 1;
		}
		memset(buf, (int)(gen++ & 0xff), sizeof(buf));
		for (int i = 0; i < 16; i++)
			if (write(fd, buf, sizeof(buf)) < 0)
				break;
		fsync(fd);
		close(fd);
	}
	return 0;
}

static int hold_anon(unsigned long mib)
{
	size_t len = mib << 20;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (!mib || p == MAP_FAILED) {
		perror("ldload anon");
		return 1;
	}
	for (size_t off = 0; off < len; off += 4096)
		memset(p + off, 0x5a ^ (int)(off >> 12), 4096);
	printf("anon ready %lu MiB\n", mib);
	fflush(stdout);
	for (;;)
		pause();
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "spin"))
		return spin();
	if (argc >= 2 && !strcmp(argv[1], "fork"))
		return fork_forever();
	if (argc >= 2 && !strcmp(argv[1], "write"))
		return write_forever(argc >= 3 ? argv[2] : "/tmp");
	if (argc >= 3 && !strcmp(argv[1], "anon"))
		return hold_anon(strtoul(argv[2], NULL, 0));
	fprintf(stderr, "usage: ldload spin|fork|write [DIR]|anon MIB\n");
	return 2;
}
