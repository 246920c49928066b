// SPDX-License-Identifier: GPL-2.0
/*
 * ldfuzz CALLS TARGET [SEED]
 *
 * ioctl fuzzer for /dev/livedump: 2 processes x 2 threads issue CALLS
 * random ioctls in all, each thread through its own open file, which it
 * closes and reopens now and then (so a dump is released by its owner's
 * close, mid-sweep too).  Commands: all five, plus unknown numbers and
 * the known ones with other argument sizes; arguments: valid structures,
 * NULL, unmapped and kernel pointers, random sizes, flags and fds, the
 * real TARGET or /dev/null.  Every call must return 0 or an errno the
 * documentation lists; anything else is printed and counted.  Prints
 * "calls=N unexpected=M" per process; exits 1 if M > 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* Helpers are built for kernels without the series too (bisect). */
#if __has_include(<linux/livedump.h>)
#include <linux/livedump.h>
#ifndef LIVEDUMP_INIT_KEEP
#define LIVEDUMP_INIT_KEEP 0
#endif

#define THREADS 2

static const char *target;
static long calls_per_thread;
static volatile long unexpected;

static const int documented[] = {
	0, EINVAL, EBUSY, E2BIG, EFAULT, EBADF, ENOTBLK, EROFS, ENOSPC,
	ENOMEM, ENOTTY, EPERM, EAGAIN, EOPNOTSUPP, EINTR,
};

static uint32_t next_rand(uint32_t *s)
{
	uint32_t x = *s;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *s = x;
}

static void *pointer(uint32_t *rnd, void *valid)
{
	switch (next_rand(rnd) % 8) {
	case 0:
		return NULL;
	case 1:
		return (void *)0x10;			/* unmapped */
	case 2:
		return (void *)0xffffffff81000000UL;	/* kernel text */
	case 3:
		return (char *)valid + 4090;		/* runs off the buffer */
	default:
		return valid;
	}
}

static unsigned long command(uint32_t *rnd)
{
	unsigned int size = next_rand(rnd) % 8 ? 0 : next_rand(rnd) % 16384;

	switch (next_rand(rnd) % 16) {
	case 0: case 1: case 2:
		return size ? _IOC(_IOC_WRITE, LIVEDUMP_IOC_MAGIC, 1, size) : LIVEDUMP_IOC_INIT;
	case 3: case 4:
		return size ? _IOC(_IOC_NONE, LIVEDUMP_IOC_MAGIC, 2, size) : LIVEDUMP_IOC_START;
	case 5: case 6:
		return LIVEDUMP_IOC_SWEEP;
	case 7: case 8:
		return LIVEDUMP_IOC_UNINIT;
	case 9: case 10: case 11: case 12:
		return size ? _IOC(_IOC_READ, LIVEDUMP_IOC_MAGIC, 5, size) : LIVEDUMP_IOC_STATUS;
	default:
		return _IOC(next_rand(rnd) % 4, LIVEDUMP_IOC_MAGIC, next_rand(rnd) % 16, size);
	}
}

static void *fuzz(void *arg)
{
	uint32_t rnd = (uint32_t)(uintptr_t)arg | 1;
	static __thread unsigned char buf[16384 + 4096];
	struct livedump_init *init = (struct livedump_init *)buf;
	int dev = open("/dev/livedump", O_RDWR), tfd = open(target, O_WRONLY);
	int nul = open("/dev/null", O_WRONLY);
	long i;
	size_t k;

	if (dev < 0 || tfd < 0 || nul < 0) {
		perror("ldfuzz: open");
		exit(2);
	}
	for (i = 0; i < calls_per_thread; i++) {
		unsigned long cmd = command(&rnd);
		int ret, err;

		memset(buf, 0, sizeof(buf));
		init->size = next_rand(&rnd) % 4 ? sizeof(*init) : next_rand(&rnd) % 5000;
		init->flags = next_rand(&rnd) % 8 ? (next_rand(&rnd) % 2) * LIVEDUMP_INIT_KEEP : next_rand(&rnd);
		init->fd = next_rand(&rnd) % 8 ? tfd : (next_rand(&rnd) % 2 ? nul : (int)next_rand(&rnd));
		/* Small reserves keep INIT cheap; sometimes a hostile one. */
		init->reserve_pages = next_rand(&rnd) % 8 ? 1024 + next_rand(&rnd) % 1024 : next_rand(&rnd);
#ifdef LIVEDUMP_INIT_EXCLUDE
		/* Page classes: mostly valid ones with the flag, sometimes anything. */
		if (next_rand(&rnd) % 4 == 0) {
			init->flags |= LIVEDUMP_INIT_EXCLUDE;
			init->exclude = next_rand(&rnd) % 4 ? next_rand(&rnd) % 64 : (__u32)next_rand(&rnd);
		}
#endif
		ret = ioctl(dev, cmd, pointer(&rnd, buf));
		err = ret ? errno : 0;
		for (k = 0; k < sizeof(documented) / sizeof(documented[0]); k++)
			if (documented[k] == err)
				break;
		if (k == sizeof(documented) / sizeof(documented[0]) || (ret && ret != -1)) {
			fprintf(stderr, "ldfuzz: cmd %#lx returned %d errno %d\n", cmd, ret, err);
			__atomic_add_fetch(&unexpected, 1, __ATOMIC_RELAXED);
		}
		if (next_rand(&rnd) % 64 == 0) {	/* close mid-whatever, reopen */
			close(dev);
			dev = open("/dev/livedump", O_RDWR);
			if (dev < 0) {
				perror("ldfuzz: reopen");
				exit(2);
			}
		}
	}
	close(dev);
	return NULL;
}

static int one_process(unsigned int seed)
{
	pthread_t t[THREADS];
	int i;

	for (i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, fuzz, (void *)(uintptr_t)(seed * 7919 + i * 104729 + 1));
	for (i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	printf("calls=%ld unexpected=%ld\n", calls_per_thread * THREADS, unexpected);
	return unexpected ? 1 : 0;
}

int main(int argc, char **argv)
{
	unsigned int seed;
	int status, ret = 0, p;
	pid_t pid;

	if (argc < 3) {
		fprintf(stderr, "usage: ldfuzz CALLS TARGET [SEED]\n");
		return 2;
	}
	calls_per_thread = strtol(argv[1], NULL, 0) / (2 * THREADS);
	target = argv[2];
	seed = argc > 3 ? strtoul(argv[3], NULL, 0) : (unsigned int)getpid();
	printf("seed=%u\n", seed);
	fflush(stdout);
	for (p = 0; p < 2; p++) {
		pid = fork();
		if (pid == 0)
			return one_process(seed + p);
	}
	while (wait(&status) > 0)
		if (!WIFEXITED(status) || WEXITSTATUS(status))
			ret = 1;
	return ret;
}
#else
int main(void)
{
	fprintf(stderr, "ldfuzz: built without linux/livedump.h\n");
	return 2;
}
#endif
