// SPDX-License-Identifier: GPL-2.0
/*
 * test-livedump-note: the parser of the crash extension without crash.
 *
 *   test-livedump-note [-c] FILE
 *
 * Prints what `livedump` (or with -c, `livedump -c`) prints in crash.
 * Exit status: 0 fine, 1 not a livedump or the check found problems,
 * 2 usage, cannot open or not an ELF core.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "livedump_note.h"

int main(int argc, char **argv)
{
	int check = 0, fd, ret = 0, is_blockdev, opt;
	struct ld_dump d;
	char err[256];
	uint64_t size;

	while ((opt = getopt(argc, argv, "c")) != -1) {
		if (opt != 'c') {
			fprintf(stderr, "usage: %s [-c] FILE\n", argv[0]);
			return 2;
		}
		check = 1;
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: %s [-c] FILE\n", argv[0]);
		return 2;
	}
	fd = open(argv[optind], O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "livedump: cannot open %s: %m\n", argv[optind]);
		return 2;
	}
	if (ld_read(fd, &d, err, sizeof(err))) {
		fprintf(stderr, "livedump: %s: %s\n", argv[optind], err);
		close(fd);
		return 2;
	}
	if (!d.has_note) {
		fprintf(stderr, "livedump: %s is not a livedump: no LIVEDUMP note (%s)\n", argv[optind], ld_kind(&d));
		ret = 1;
	} else if (!check) {
		ld_print(stdout, &d, NULL, NULL);
	}
	if (check && d.has_note) {
		if (ld_source_size(fd, &size, &is_blockdev, err, sizeof(err))) {
			fprintf(stderr, "livedump: %s: %s\n", argv[optind], err);
			ret = 2;
		} else if (ld_check(stdout, fd, &d, size, is_blockdev)) {
			fprintf(stderr, "livedump: check failed\n");
			ret = 1;
		}
	}
	ld_free(&d);
	close(fd);
	return ret;
}
