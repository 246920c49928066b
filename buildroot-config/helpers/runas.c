// SPDX-License-Identifier: GPL-2.0
/*
 * runas UID[:GID] COMMAND [ARG...]
 *
 * Drops to an unprivileged uid/gid (and no supplementary groups) and execs
 * COMMAND. busybox-static has no setpriv or chpst; the guest tests need it to
 * show that /dev/livedump refuses unprivileged callers.
 */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char *end;
	unsigned long uid, gid;

	if (argc < 3) {
		fprintf(stderr, "usage: runas UID[:GID] COMMAND [ARG...]\n");
		return 2;
	}
	uid = strtoul(argv[1], &end, 10);
	gid = uid;
	if (*end == ':')
		gid = strtoul(end + 1, &end, 10);
	if (*end != '\0') {
		fprintf(stderr, "runas: bad UID[:GID] '%s'\n", argv[1]);
		return 2;
	}
	if (setgroups(0, NULL) || setgid(gid) || setuid(uid)) {
		fprintf(stderr, "runas: cannot drop to %lu:%lu: %s\n", uid, gid, strerror(errno));
		return 126;
	}
	execvp(argv[2], argv + 2);
	fprintf(stderr, "runas: %s: %s\n", argv[2], strerror(errno));
	return 127;
}
