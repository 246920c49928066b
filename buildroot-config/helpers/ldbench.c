// SPDX-License-Identifier: GPL-2.0
/*
 * ldbench fork MS
 * ldbench poll INTERVAL_MS MAX_MS NEEDLE CMD [ARG...]
 * ldbench time CMD [ARG...]
 * ldbench exit
 *
 * Guest-side timing for `python -m harness bench`, on CLOCK_MONOTONIC:
 *   fork  for MS milliseconds, fork a child that execs "ldbench exit" and
 *         reap it; prints "ops=N elapsed_ns=T" (a kernel-bound rate)
 *   poll  run CMD every INTERVAL_MS while its output contains NEEDLE, for
 *         at most MAX_MS (0: no limit); prints "polls=N elapsed_ns=T
 *         needle_seen_last=0|1", T from start to the first output without
 *         NEEDLE (or to MAX_MS)
 *   time  run CMD; prints "status=S elapsed_ns=T" on stdout
 *         after its output; exits with its status
 *   exit  exit 0 at once (what fork execs)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int do_fork(long ms)
{
	uint64_t start = now_ns(), end = start + (uint64_t)ms * 1000000ull, t;
	unsigned long ops = 0;
	char *const child_argv[] = { "ldbench", "exit", NULL };

	do {
		pid_t pid = fork();

		if (pid == 0) {
			execv("/proc/self/exe", child_argv);
			_exit(127);
		}
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (waitpid(pid, NULL, 0) == pid)
			ops++;
		t = now_ns();
	} while (t < end);
	printf("ops=%lu elapsed_ns=%llu\n", ops, (unsigned long long)(t - start));
	return 0;
}

/* Run argv with its stdout in buf (NUL-terminated, truncated); return the exit status. */
static int capture(char **argv, char *buf, size_t len)
{
	int fds[2], status = 0;
	size_t used = 0;
	ssize_t n;
	pid_t pid;

	if (pipe(fds))
		return -1;
	pid = fork();
	if (pid == 0) {
		dup2(fds[1], 1);
		close(fds[0]);
		close(fds[1]);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(fds[1]);
	while ((n = read(fds[0], buf + used, len - 1 - used)) > 0)
		used += (size_t)n;
	buf[used] = '\0';
	close(fds[0]);
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static int do_poll(long interval_ms, long max_ms, const char *needle, char **argv)
{
	uint64_t start = now_ns(), t;
	unsigned long polls = 0;
	char buf[4096];
	int seen;

	for (;;) {
		if (capture(argv, buf, sizeof(buf)) < 0) {
			perror(argv[0]);
			return 1;
		}
		polls++;
		t = now_ns();
		seen = strstr(buf, needle) != NULL;
		if (!seen || (max_ms > 0 && t - start >= (uint64_t)max_ms * 1000000ull))
			break;
		usleep((useconds_t)interval_ms * 1000);
	}
	printf("polls=%lu elapsed_ns=%llu needle_seen_last=%d\n", polls, (unsigned long long)(t - start), seen);
	return 0;
}

static int do_time(char **argv)
{
	uint64_t start = now_ns();
	int status = 0, rc;
	pid_t pid = fork();

	if (pid == 0) {
		execvp(argv[0], argv);
		perror(argv[0]);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid) {
		perror("ldbench time");
		return 1;
	}
	rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
	fflush(stdout);
	printf("status=%d elapsed_ns=%llu\n", rc, (unsigned long long)(now_ns() - start));
	return rc;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "exit"))
		return 0;
	if (argc == 3 && !strcmp(argv[1], "fork"))
		return do_fork(atol(argv[2]));
	if (argc >= 6 && !strcmp(argv[1], "poll"))
		return do_poll(atol(argv[2]), atol(argv[3]), argv[4], argv + 5);
	if (argc >= 3 && !strcmp(argv[1], "time"))
		return do_time(argv + 2);
	fprintf(stderr, "usage: ldbench fork MS | poll INTERVAL_MS MAX_MS NEEDLE CMD [ARG...] | time CMD [ARG...]\n");
	return 2;
}
