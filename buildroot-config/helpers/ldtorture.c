// SPDX-License-Identifier: GPL-2.0
/*
 * ldtorture ANON_ADDR SHARED_ADDR PAGES
 *
 * A user-space torture writer for livedump's consistency checker
 * (harness/consistency.py): maps PAGES pages of anonymous memory at
 * ANON_ADDR and PAGES pages of a MAP_SHARED memfd (shmem, page cache) at
 * SHARED_ADDR (both hex, fixed so that a dump can be read without asking
 * the process), prints "ldtorture ready" once both are written, then sweeps
 * a generation through them forever: generation g is written to every
 * 8-byte word of the anonymous region, in order, then of the shared one,
 * then it sleeps as long as that took (at least MIN_PAUSE_US): the
 * kernel's torture writers (lib/test_livedump.c) share the CPUs with it,
 * and their own controls need them to run.
 *
 * At any one instant, the words of the anonymous region followed by those
 * of the shared region read g, ..., g, g - 1, ..., g - 1: never increasing,
 * at most one step down, of one.  A dump that copied them at different
 * times breaks that.  The addresses are far apart (different top-level
 * page table entries) so that each region is protected on its own.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE_WORDS	(4096 / sizeof(uint64_t))
#define MIN_PAUSE_US	1000

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000ULL + ts.tv_nsec / 1000;
}

static volatile uint64_t *map_at(unsigned long addr, size_t len, int fd)
{
	int flags = MAP_FIXED_NOREPLACE | (fd < 0 ? MAP_PRIVATE | MAP_ANONYMOUS : MAP_SHARED);
	void *p = mmap((void *)addr, len, PROT_READ | PROT_WRITE, flags, fd, 0);

	if (p == MAP_FAILED || p != (void *)addr) {
		fprintf(stderr, "ldtorture: mmap at %#lx: %s\n", addr,
			p == MAP_FAILED ? strerror(errno) : "mapped elsewhere");
		exit(1);
	}
	return p;
}

static void sweep(volatile uint64_t *words, size_t n, uint64_t gen)
{
	size_t i;

	for (i = 0; i < n; i++)
		words[i] = gen;
}

int main(int argc, char **argv)
{
	volatile uint64_t *anon, *shared;
	unsigned long anon_addr, shared_addr, pages;
	size_t len, n;
	uint64_t gen, t0, took;
	int fd;

	if (argc != 4) {
		fprintf(stderr, "usage: ldtorture ANON_ADDR SHARED_ADDR PAGES\n");
		return 2;
	}
	anon_addr = strtoul(argv[1], NULL, 16);
	shared_addr = strtoul(argv[2], NULL, 16);
	pages = strtoul(argv[3], NULL, 0);
	if (!pages || pages > (1UL << 20)) {
		fprintf(stderr, "ldtorture: PAGES must be 1 to 2^20\n");
		return 2;
	}
	len = pages * 4096;
	n = pages * PAGE_WORDS;
	fd = memfd_create("ldtorture", 0);
	if (fd < 0 || ftruncate(fd, len)) {
		perror("ldtorture: memfd");
		return 1;
	}
	anon = map_at(anon_addr, len, -1);
	shared = map_at(shared_addr, len, fd);
	/* Generation 1 everywhere first: no page left unwritten (zero, or merged). */
	sweep(anon, n, 1);
	sweep(shared, n, 1);
	printf("ldtorture ready\n");
	fflush(stdout);
	for (gen = 2;; gen++) {
		t0 = now_us();
		sweep(anon, n, gen);
		sweep(shared, n, gen);
		took = now_us() - t0;
		usleep(took > MIN_PAUSE_US ? took : MIN_PAUSE_US);
	}
	return 0;
}
