// SPDX-License-Identifier: GPL-2.0
/*
 * ldharden - guest side of the hardening tests of /dev/livedump.
 *
 *   ldharden threads
 *       Forever: set up and tear down an io_uring with an SQPOLL thread and
 *       push a request to an io-wq worker (both created by
 *       create_io_thread(), not kernel_clone()), and start and join threads
 *       that reap themselves on exit.  A dump must survive all of it.
 *   ldharden poison
 *       Fill an anonymous page with "LDPOISON", mark it as having an
 *       uncorrectable memory error (MADV_HWPOISON) and print "pfn=N".
 *   ldharden status-size SIZE
 *       LIVEDUMP_IOC_STATUS with SIZE encoded in the ioctl number; prints
 *       "ret= errno= size= state= tail_zero=" (tail_zero: every byte of
 *       the buffer past the size the kernel reports is zero).
 *   ldharden init-size IOCSIZE MEMBERSIZE TARGET
 *       LIVEDUMP_IOC_INIT with IOCSIZE in the ioctl number and MEMBERSIZE in
 *       the structure's size member; prints "ret= errno= state=" (the state
 *       right after, before the file that set the dump up is closed).
 *   ldharden hold TARGET
 *       INIT and START through one open file (not kept after close), print
 *       "held", then wait to be killed.
 *   ldharden orphan TARGET
 *       INIT, START and SWEEP through one open file, then exit at once.
 *   ldharden lockdown TARGET
 *       Through one open file of /dev/livedump: INIT, START and SWEEP,
 *       then raise lockdown to confidentiality, wait for the sweep to end
 *       and print "sweep_state= sweep_error=", UNINIT, then INIT again:
 *       "ret= errno=".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BUF_SIZE 8192

/* Helpers are built for kernels without the series too (bisect). */
#if __has_include(<linux/livedump.h>)
#include <linux/livedump.h>
#define HAVE_LIVEDUMP 1
#else
#define HAVE_LIVEDUMP 0
#endif

static void *thread_exits(void *arg)
{
	return arg;
}

/* One io_uring with an SQPOLL thread, and one request forced to io-wq. */
static void io_threads_once(void)
{
	struct io_uring_params p;
	struct io_uring_sqe *sqes;
	unsigned int *sq_array, *tail;
	void *sq;
	size_t sq_len;
	int fd;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SQPOLL;
	p.sq_thread_idle = 1;
	fd = syscall(__NR_io_uring_setup, 4, &p);
	if (fd < 0) {
		perror("ldharden: io_uring_setup");
		exit(1);
	}
	sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned int);
	sq = mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, IORING_OFF_SQ_RING);
	sqes = mmap(NULL, p.sq_entries * sizeof(*sqes), PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		    IORING_OFF_SQES);
	if (sq != MAP_FAILED && sqes != MAP_FAILED) {
		tail = (unsigned int *)((char *)sq + p.sq_off.tail);
		sq_array = (unsigned int *)((char *)sq + p.sq_off.array);
		memset(&sqes[0], 0, sizeof(sqes[0]));
		sqes[0].opcode = IORING_OP_NOP;
		sqes[0].flags = IOSQE_ASYNC;	/* punted to an io-wq worker */
		sq_array[*tail & (p.sq_entries - 1)] = 0;
		__atomic_store_n(tail, *tail + 1, __ATOMIC_RELEASE);
		syscall(__NR_io_uring_enter, fd, 1, 1, IORING_ENTER_SQ_WAKEUP | IORING_ENTER_GETEVENTS,
			NULL, 0);
	}
	if (sqes != MAP_FAILED)
		munmap(sqes, p.sq_entries * sizeof(*sqes));
	if (sq != MAP_FAILED)
		munmap(sq, sq_len);
	close(fd);
}

static int threads(void)
{
	pthread_t t[4];
	int i;

	for (;;) {
		io_threads_once();
		for (i = 0; i < 4; i++)
			if (pthread_create(&t[i], NULL, thread_exits, NULL))
				t[i] = 0;
		for (i = 0; i < 4; i++)
			if (t[i])
				pthread_join(t[i], NULL);
	}
	return 0;
}

static int poison(void)
{
	long psize = sysconf(_SC_PAGESIZE);
	uint64_t entry;
	char *page;
	int fd, i;

	page = mmap(NULL, psize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED) {
		perror("ldharden: mmap");
		return 1;
	}
	for (i = 0; i + 8 <= psize; i += 8)
		memcpy(page + i, "LDPOISON", 8);
	fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0 || pread(fd, &entry, sizeof(entry), (uintptr_t)page / psize * sizeof(entry)) != sizeof(entry)) {
		perror("ldharden: pagemap");
		return 1;
	}
	if (!(entry >> 63) || !(entry & ((1ULL << 55) - 1))) {
		fprintf(stderr, "ldharden: page not present or pfn hidden: %#llx\n", (unsigned long long)entry);
		return 1;
	}
	if (madvise(page, psize, MADV_HWPOISON)) {
		perror("ldharden: madvise(MADV_HWPOISON)");
		return 1;
	}
	printf("pfn=%llu\n", (unsigned long long)(entry & ((1ULL << 55) - 1)));
	return 0;
}

#if HAVE_LIVEDUMP
static int open_livedump(void)
{
	int fd = open("/dev/livedump", O_RDWR);

	if (fd < 0) {
		perror("ldharden: /dev/livedump");
		exit(1);
	}
	return fd;
}

static int status_size(unsigned int size)
{
	static unsigned char buf[BUF_SIZE];
	struct livedump_status *st = (struct livedump_status *)buf;
	int fd = open_livedump(), ret, tail_zero = 1;
	unsigned int i;

	if (size > BUF_SIZE)
		return 2;
	memset(buf, 0xff, sizeof(buf));
	ret = ioctl(fd, _IOC(_IOC_READ, LIVEDUMP_IOC_MAGIC, 5, size), buf);
	if (ret == 0) {
		for (i = st->size; i < size; i++)
			tail_zero &= buf[i] == 0;
	}
	printf("ret=%d errno=%d size=%u state=%u tail_zero=%d\n", ret, ret ? errno : 0,
	       ret ? 0 : st->size, ret ? 0 : st->state, tail_zero);
	return 0;
}

static int init_with(int fd, unsigned int iocsize, unsigned int membersize, const char *target)
{
	static unsigned char buf[BUF_SIZE];
	struct livedump_init *args = (struct livedump_init *)buf;
	int tfd = open(target, O_WRONLY), ret;
	struct livedump_status st;

	if (tfd < 0 || iocsize > BUF_SIZE) {
		perror("ldharden: target");
		return 1;
	}
	memset(buf, 0, sizeof(buf));
	args->size = membersize;
	args->fd = tfd;
	strcpy(args->reason, "ldharden");
	ret = ioctl(fd, _IOC(_IOC_WRITE, LIVEDUMP_IOC_MAGIC, 1, iocsize), buf);
	printf("ret=%d errno=%d", ret, ret ? errno : 0);
	/* Before this file is closed, which releases the dump it set up. */
	memset(&st, 0, sizeof(st));
	if (!ioctl(fd, LIVEDUMP_IOC_STATUS, &st))
		printf(" state=%u", st.state);
	printf("\n");
	return 0;
}

/* INIT (not LIVEDUMP_INIT_KEEP), START and, with @sweep, SWEEP. */
static int set_up(const char *target, int sweep)
{
	int fd = open_livedump();
	int tfd = open(target, O_WRONLY);
	struct livedump_init args;

	if (tfd < 0) {
		perror("ldharden: target");
		return -1;
	}
	memset(&args, 0, sizeof(args));
	args.size = sizeof(args);
	args.fd = tfd;
	strcpy(args.reason, "ldharden");
	if (ioctl(fd, LIVEDUMP_IOC_INIT, &args) || ioctl(fd, LIVEDUMP_IOC_START) ||
	    (sweep && ioctl(fd, LIVEDUMP_IOC_SWEEP))) {
		perror("ldharden: setting up the dump");
		return -1;
	}
	close(tfd);
	return fd;
}

static int hold(const char *target)
{
	if (set_up(target, 0) < 0)
		return 1;
	printf("held\n");
	fflush(stdout);
	for (;;)
		pause();
	return 0;
}

static int orphan(const char *target)
{
	return set_up(target, 1) < 0;
}

static int lockdown(const char *target)
{
	struct livedump_status st;
	int fd = set_up(target, 1), lfd;

	if (fd < 0)
		return 1;
	lfd = open("/sys/kernel/security/lockdown", O_WRONLY);
	if (lfd < 0 || write(lfd, "confidentiality", 15) != 15) {
		perror("ldharden: raising lockdown");
		return 1;
	}
	close(lfd);
	do {
		usleep(100000);
		memset(&st, 0, sizeof(st));
		if (ioctl(fd, LIVEDUMP_IOC_STATUS, &st)) {
			perror("ldharden: status");
			return 1;
		}
	} while (st.state == LIVEDUMP_STATE_SWEEPING);
	printf("sweep_state=%u sweep_error=%d pages_dumped=%llu pages_total=%llu\n", st.state, st.error,
	       (unsigned long long)st.pages_dumped, (unsigned long long)st.pages_total);
	if (ioctl(fd, LIVEDUMP_IOC_UNINIT)) {
		perror("ldharden: uninit");
		return 1;
	}
	return init_with(fd, sizeof(struct livedump_init), sizeof(struct livedump_init), target);
}

#else
static int no_livedump(void)
{
	fprintf(stderr, "ldharden: built without linux/livedump.h\n");
	return 2;
}
#define open_livedump() 0
#define status_size(size) no_livedump()
#define init_with(fd, iocsize, membersize, target) no_livedump()
#define lockdown(target) no_livedump()
#define hold(target) no_livedump()
#define orphan(target) no_livedump()
#endif

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "threads"))
		return threads();
	if (argc == 2 && !strcmp(argv[1], "poison"))
		return poison();
	if (argc == 3 && !strcmp(argv[1], "status-size"))
		return status_size(strtoul(argv[2], NULL, 0));
	if (argc == 5 && !strcmp(argv[1], "init-size"))
		return init_with(open_livedump(), strtoul(argv[2], NULL, 0), strtoul(argv[3], NULL, 0), argv[4]);
	if (argc == 3 && !strcmp(argv[1], "hold"))
		return hold(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "orphan"))
		return orphan(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "lockdown"))
		return lockdown(argv[2]);
	fprintf(stderr, "usage: ldharden threads | poison | status-size SIZE | init-size IOCSIZE MEMBERSIZE TARGET | "
		"hold|orphan|lockdown TARGET\n");
	return 2;
}
