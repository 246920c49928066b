// SPDX-License-Identifier: GPL-2.0
/*
 * Reading the ELF headers and notes of a livedump vmcore: see livedump_note.h.
 *
 * Everything is read with pread() from an fd of our own, so this works the
 * same on a vmcore file, a raw disk image with trailing bytes after the ELF
 * data, and the block device the kernel wrote the dump to.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>

#include "livedump_note.h"

#define EHDR_SIZE	64
#define PHDR_SIZE	56
#define PT_LOAD_	1
#define PT_NOTE_	4
#define ET_CORE_	4
#define EM_X86_64_	62
#define PN_XNUM_	0xffff
#define NT_PRSTATUS_	1
/* struct elf_prstatus on x86-64: pr_pid at 32, pr_reg (27 longs) at 112. */
#define PRSTATUS_SIZE	336
#define PRSTATUS_PID	32
#define PRSTATUS_REGS	112
#define REG_RIP		16
#define REG_RSP		19
#define LD_NOTE_SIZE	208		/* sizeof(struct livedump_note) v1 */
#define LD_COSTS_SIZE	296		/* what version 2 adds */
#define LD_CLASSES_SIZE	144		/* what version 3 adds */
#define LD_ALIASES_SIZE	8		/* what version 4 adds */
#define LD_USER_SIZE	16		/* what version 5 adds */
#define MAX_HEADERS	(64ULL << 20)	/* sanity limit for phdrs and notes */

_Static_assert(sizeof(struct ld_note) == LD_NOTE_SIZE, "struct ld_note must match struct livedump_note");
_Static_assert(sizeof(struct ld_costs) == LD_COSTS_SIZE, "struct ld_costs must match struct livedump_note v2");
_Static_assert(sizeof(struct ld_classes) == LD_CLASSES_SIZE, "struct ld_classes must match struct livedump_note v3");

/* enum livedump_page_class, in order. */
static const char *const ld_class_names[LD_NR_CLASSES] = {
	"kernel", "cache", "cache-private", "user", "free", "own", "unknown",
};

static void seterr(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!err || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

/* Read exactly len bytes at off; 0, or -1 with errno (EIO for a short read). */
static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {
			errno = ENODATA;
			return -1;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static uint16_t get16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return le16toh(v); }
static uint32_t get32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return le32toh(v); }
static uint64_t get64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return le64toh(v); }

static uint64_t align4(uint64_t n)
{
	return (n + 3) & ~3ULL;
}

static void parse_livedump_note(struct ld_dump *d, const unsigned char *desc, uint64_t descsz)
{
	struct ld_note *n = &d->note;
	uint64_t pfn_off, i;

	d->note_descsz = descsz;
	n->version = get32(desc);
	n->nr_cpus = get32(desc + 4);
	n->start_time_ns = (int64_t)get64(desc + 8);
	n->pause_ns = get64(desc + 16);
	n->pages_total = get64(desc + 24);
	n->cow_faults = get64(desc + 32);
	n->stop_copied = get64(desc + 40);
	n->zero_pages = get64(desc + 48);
	n->protected_entries = get64(desc + 56);
	n->failed_pages = get64(desc + 64);
	n->nr_listed = get64(desc + 72);
	memcpy(n->reason, desc + 80, LD_REASON_LEN);
	n->reason[LD_REASON_LEN - 1] = '\0';

	/* Version 2 adds what the dump cost right after the version 1 struct. */
	d->has_costs = n->version >= 2 && descsz >= LD_NOTE_SIZE + LD_COSTS_SIZE;
	if (d->has_costs) {
		d->costs.reserve_pages = get64(desc + LD_NOTE_SIZE);
		d->costs.reserve_used_max = get64(desc + LD_NOTE_SIZE + 8);
		d->costs.table_pages = get64(desc + LD_NOTE_SIZE + 16);
		d->costs.tables_used = get64(desc + LD_NOTE_SIZE + 24);
		d->costs.fault_max_ns = get64(desc + LD_NOTE_SIZE + 32);
		for (i = 0; i < LD_FAULT_HIST; i++)
			d->costs.fault_ns_log2[i] = get64(desc + LD_NOTE_SIZE + 40 + i * 8);
	}
	/* Version 3 adds the page classes right after the costs. */
	d->has_classes = d->has_costs && n->version >= 3 &&
			 descsz >= LD_NOTE_SIZE + LD_COSTS_SIZE + LD_CLASSES_SIZE;
	if (d->has_classes) {
		const unsigned char *k = desc + LD_NOTE_SIZE + LD_COSTS_SIZE;

		d->classes.exclude = get32(k);
		d->classes.nr_classes = get32(k + 4);
		if (d->classes.nr_classes > LD_NOTE_CLASSES)
			d->classes.nr_classes = LD_NOTE_CLASSES;
		d->classes.excluded_pages = get64(k + 8);
		for (i = 0; i < LD_NOTE_CLASSES; i++)
			d->classes.class_pages[i] = get64(k + 16 + i * 8);
	}
	/* Version 4 adds the alias entries right after the classes. */
	d->has_aliases = d->has_classes && n->version >= 4 &&
			 descsz >= LD_NOTE_SIZE + LD_COSTS_SIZE + LD_CLASSES_SIZE + LD_ALIASES_SIZE;
	d->alias_entries = d->has_aliases ? get64(desc + LD_NOTE_SIZE + LD_COSTS_SIZE + LD_CLASSES_SIZE) : 0;
	/* Version 5 adds the flags and the user entries right after them. */
	d->has_user = d->has_aliases && n->version >= 5 &&
		      descsz >= LD_NOTE_SIZE + LD_COSTS_SIZE + LD_CLASSES_SIZE + LD_ALIASES_SIZE + LD_USER_SIZE;
	if (d->has_user) {
		const unsigned char *u = desc + LD_NOTE_SIZE + LD_COSTS_SIZE + LD_CLASSES_SIZE + LD_ALIASES_SIZE;

		d->flags = get32(u);
		d->user_entries = get64(u + 8);
	} else {
		d->flags = 0;
		d->user_entries = 0;
	}

	/*
	 * The pfns are the tail of the descriptor (right after the struct of
	 * the note's version; a later version that grows the struct keeps
	 * them last).  A count that does not fit is clamped to what the
	 * note holds.
	 */
	if (n->nr_listed > (descsz - LD_NOTE_SIZE) / 8)
		n->nr_listed = (descsz - LD_NOTE_SIZE) / 8;
	pfn_off = descsz - n->nr_listed * 8;
	if (n->version == 1)
		pfn_off = LD_NOTE_SIZE;
	else if (n->version == 2 && d->has_costs)
		pfn_off = LD_NOTE_SIZE + LD_COSTS_SIZE;
	else if (n->version == 3 && d->has_classes)
		pfn_off = LD_NOTE_SIZE + LD_COSTS_SIZE + LD_CLASSES_SIZE;
	else if (n->version == 4 && d->has_aliases)
		pfn_off = LD_NOTE_SIZE + LD_COSTS_SIZE + LD_CLASSES_SIZE + LD_ALIASES_SIZE;
	else if (n->version == LD_NOTE_VERSION && d->has_user)
		pfn_off = LD_NOTE_SIZE + LD_COSTS_SIZE + LD_CLASSES_SIZE + LD_ALIASES_SIZE + LD_USER_SIZE;
	free(d->pfns);
	d->pfns = NULL;
	if (!n->nr_listed)
		return;
	d->pfns = malloc(n->nr_listed * sizeof(uint64_t));
	if (!d->pfns) {
		n->nr_listed = 0;
		return;
	}
	for (i = 0; i < n->nr_listed; i++)
		d->pfns[i] = get64(desc + pfn_off + i * 8);
}

static int parse_notes(struct ld_dump *d, const unsigned char *buf, uint64_t size, char *err, size_t errlen)
{
	uint64_t pos = 0;

	while (pos + 12 <= size) {
		uint32_t namesz = get32(buf + pos);
		uint32_t descsz = get32(buf + pos + 4);
		uint32_t type = get32(buf + pos + 8);
		const char *name = (const char *)buf + pos + 12;
		const unsigned char *desc;
		uint64_t desc_off;
		size_t nlen;

		if (!namesz && !descsz && !type)
			break;
		desc_off = pos + 12 + align4(namesz);
		if (desc_off > size || descsz > size - desc_off) {
			seterr(err, errlen, "truncated ELF note at offset %" PRIu64 " of the PT_NOTE segment", pos);
			return -1;
		}
		desc = buf + desc_off;
		nlen = strnlen(name, namesz);
		d->nnotes++;

		if (nlen == 4 && !memcmp(name, "CORE", 4) && type == NT_PRSTATUS_) {
			struct ld_cpu *c;

			if (descsz != PRSTATUS_SIZE) {
				d->bad_prstatus++;
			} else {
				c = realloc(d->cpus, (d->ncpus + 1) * sizeof(*c));
				if (!c) {
					seterr(err, errlen, "out of memory");
					return -1;
				}
				d->cpus = c;
				c += d->ncpus++;
				c->pid = (int32_t)get32(desc + PRSTATUS_PID);
				c->rip = get64(desc + PRSTATUS_REGS + REG_RIP * 8);
				c->rsp = get64(desc + PRSTATUS_REGS + REG_RSP * 8);
			}
		} else if (nlen == 10 && !memcmp(name, "VMCOREINFO", 10)) {
			d->has_vmcoreinfo = 1;
		} else if (nlen == 4 && !memcmp(name, "QEMU", 4)) {
			d->has_qemu_note = 1;
		} else if (nlen == strlen(LD_NOTE_NAME) && !memcmp(name, LD_NOTE_NAME, nlen) &&
			   type == LD_NT_TRIGGER) {
			struct ld_trigger *t = &d->trigger;

			if (descsz < LD_TRIGGER_SIZE) {
				seterr(err, errlen, "trigger note is %" PRIu32 " bytes, expected %d", descsz,
				       LD_TRIGGER_SIZE);
				return -1;
			}
			d->has_trigger = 1;
			t->event = get32(desc);
			t->cpu = (int32_t)get32(desc + 4);
			t->pid = (int32_t)get32(desc + 8);
			t->has_regs = get32(desc + 12);
			t->time_ns = (int64_t)get64(desc + 16);
			t->delay_ns = get64(desc + 24);
			memcpy(t->where, desc + 32, LD_REASON_LEN);
			t->where[LD_REASON_LEN - 1] = '\0';
			t->rip = get64(desc + 32 + LD_REASON_LEN + REG_RIP * 8);
			t->rsp = get64(desc + 32 + LD_REASON_LEN + REG_RSP * 8);
		} else if (nlen == strlen(LD_NOTE_NAME) && !memcmp(name, LD_NOTE_NAME, nlen) &&
			   type == LD_NT_LIVEDUMP && !d->has_note) {
			if (descsz < LD_NOTE_SIZE) {
				seterr(err, errlen, "LIVEDUMP note is %" PRIu32 " bytes, expected at least %d",
				       descsz, LD_NOTE_SIZE);
				return -1;
			}
			d->has_note = 1;
			parse_livedump_note(d, desc, descsz);
		}
		pos = desc_off + align4(descsz);
	}
	return 0;
}

/*
 * A stream's final LIVEDUMP note follows the last segment, in none: the
 * ELF note, then its size and LD_TRAILER_MAGIC, the last 16 bytes of the
 * file.  It replaces the note in the headers, which is as of the start of
 * the sweep.
 */
static int read_trailer(int fd, struct ld_dump *d, char *err, size_t errlen)
{
	unsigned char footer[16], *buf;
	uint64_t end = 0, size, len;
	int had_note = d->has_note;
	unsigned int i;
	off_t o;

	for (i = 0; i < d->nphdr; i++)
		if (d->phdr[i].offset + d->phdr[i].filesz > end)
			end = d->phdr[i].offset + d->phdr[i].filesz;
	o = lseek(fd, 0, SEEK_END);
	if (o < 0 || (uint64_t)o < end + sizeof(footer))
		return 0;
	size = (uint64_t)o;
	if (pread_full(fd, footer, sizeof(footer), size - sizeof(footer)) ||
	    get64(footer + 8) != LD_TRAILER_MAGIC)
		return 0;
	len = get64(footer);
	if (len > size - sizeof(footer) - end || len > MAX_HEADERS) {
		seterr(err, errlen, "the trailer claims %" PRIu64 " bytes, only %" PRIu64 " follow the segments",
		       len, size - sizeof(footer) - end);
		return -1;
	}
	buf = malloc(len ? len : 1);
	if (!buf) {
		seterr(err, errlen, "out of memory");
		return -1;
	}
	if (pread_full(fd, buf, len, size - sizeof(footer) - len)) {
		seterr(err, errlen, "cannot read the trailer: %s", strerror(errno));
		free(buf);
		return -1;
	}
	d->has_note = 0;
	if (parse_notes(d, buf, len, err, errlen)) {
		free(buf);
		return -1;
	}
	free(buf);
	d->from_trailer = d->has_note;
	if (!d->has_note)
		d->has_note = had_note;
	return 0;
}

int ld_read(int fd, struct ld_dump *d, char *err, size_t errlen)
{
	unsigned char ehdr[EHDR_SIZE], *raw = NULL, *notes;
	uint64_t phoff, nphdr, i;
	uint16_t phentsize;

	memset(d, 0, sizeof(*d));
	if (pread_full(fd, ehdr, sizeof(ehdr), 0)) {
		seterr(err, errlen, "cannot read an ELF header: %s",
		       errno == ENODATA ? "file too short" : strerror(errno));
		return -1;
	}
	if (memcmp(ehdr, "\177ELF", 4)) {
		seterr(err, errlen, "does not start with an ELF header (no \\177ELF magic)");
		return -1;
	}
	if (ehdr[4] != 2 || ehdr[5] != 1) {
		seterr(err, errlen, "not a little-endian ELF64 file");
		return -1;
	}
	d->e_type = get16(ehdr + 16);
	d->e_machine = get16(ehdr + 18);
	if (d->e_type != ET_CORE_) {
		seterr(err, errlen, "ELF file of type %u, not a core dump (ET_CORE)", d->e_type);
		return -1;
	}
	if (d->e_machine != EM_X86_64_) {
		seterr(err, errlen, "ELF core for machine %u, not x86-64", d->e_machine);
		return -1;
	}
	phoff = get64(ehdr + 0x20);
	phentsize = get16(ehdr + 0x36);
	nphdr = get16(ehdr + 0x38);
	if (nphdr == PN_XNUM_) {
		/* The real count is sh_info of section header 0. */
		unsigned char shdr[64];
		uint64_t shoff = get64(ehdr + 0x28);

		if (!shoff || pread_full(fd, shdr, sizeof(shdr), shoff)) {
			seterr(err, errlen, "e_phnum is PN_XNUM but section header 0 cannot be read");
			return -1;
		}
		nphdr = get32(shdr + 44);
	}
	if (phentsize != PHDR_SIZE || nphdr == 0 || nphdr * PHDR_SIZE > MAX_HEADERS) {
		seterr(err, errlen, "unexpected program headers (%" PRIu64 " of %u bytes)", nphdr, phentsize);
		return -1;
	}
	raw = malloc(nphdr * PHDR_SIZE);
	d->phdr = calloc(nphdr, sizeof(*d->phdr));
	if (!raw || !d->phdr) {
		seterr(err, errlen, "out of memory");
		goto fail;
	}
	if (pread_full(fd, raw, nphdr * PHDR_SIZE, phoff)) {
		seterr(err, errlen, "cannot read %" PRIu64 " program headers at offset %" PRIu64 ": %s", nphdr, phoff,
		       errno == ENODATA ? "file too short" : strerror(errno));
		goto fail;
	}
	d->nphdr = (unsigned int)nphdr;
	d->headers_end = phoff + nphdr * PHDR_SIZE;
	if (d->headers_end < EHDR_SIZE)
		d->headers_end = EHDR_SIZE;
	for (i = 0; i < nphdr; i++) {
		const unsigned char *p = raw + i * PHDR_SIZE;
		struct ld_phdr *ph = &d->phdr[i];

		ph->type = get32(p);
		ph->flags = get32(p + 4);
		ph->offset = get64(p + 8);
		ph->vaddr = get64(p + 16);
		ph->paddr = get64(p + 24);
		ph->filesz = get64(p + 32);
		ph->memsz = get64(p + 40);
		ph->align = get64(p + 48);
		if (ph->type == PT_LOAD_)
			d->nloads++;
	}
	free(raw);
	raw = NULL;

	for (i = 0; i < nphdr; i++) {
		const struct ld_phdr *ph = &d->phdr[i];

		if (ph->type != PT_NOTE_ || !ph->filesz)
			continue;
		if (ph->filesz > MAX_HEADERS) {
			seterr(err, errlen, "PT_NOTE segment of %" PRIu64 " bytes is implausibly large", ph->filesz);
			goto fail;
		}
		notes = malloc(ph->filesz);
		if (!notes) {
			seterr(err, errlen, "out of memory");
			goto fail;
		}
		if (pread_full(fd, notes, ph->filesz, ph->offset)) {
			seterr(err, errlen, "cannot read the PT_NOTE segment at offset %" PRIu64 ": %s", ph->offset,
			       errno == ENODATA ? "file too short" : strerror(errno));
			free(notes);
			goto fail;
		}
		if (parse_notes(d, notes, ph->filesz, err, errlen)) {
			free(notes);
			goto fail;
		}
		free(notes);
		if (ph->offset + ph->filesz > d->headers_end)
			d->headers_end = ph->offset + ph->filesz;
	}
	if (read_trailer(fd, d, err, errlen))
		goto fail;
	return 0;
fail:
	free(raw);
	ld_free(d);
	return -1;
}

void ld_free(struct ld_dump *d)
{
	free(d->phdr);
	free(d->cpus);
	free(d->pfns);
	memset(d, 0, sizeof(*d));
}

int ld_source_size(int fd, uint64_t *size, int *is_blockdev, char *err, size_t errlen)
{
	struct stat st;

	*is_blockdev = 0;
	if (fstat(fd, &st)) {
		seterr(err, errlen, "fstat: %s", strerror(errno));
		return -1;
	}
	if (S_ISBLK(st.st_mode)) {
		*is_blockdev = 1;
		if (ioctl(fd, BLKGETSIZE64, size)) {
			seterr(err, errlen, "BLKGETSIZE64: %s", strerror(errno));
			return -1;
		}
		return 0;
	}
	if (!S_ISREG(st.st_mode)) {
		seterr(err, errlen, "neither a regular file nor a block device");
		return -1;
	}
	*size = (uint64_t)st.st_size;
	return 0;
}

const char *ld_kind(const struct ld_dump *d)
{
	if (d->has_note)
		return "livedump vmcore";
	if (d->has_qemu_note)
		return "QEMU dump-guest-memory vmcore";
	if (d->has_vmcoreinfo)
		return "kernel vmcore (kdump or similar)";
	if (d->nloads)
		return "ELF core without VMCOREINFO";
	return "ELF core file";
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

uint64_t ld_print_pfn_ranges(FILE *fp, uint64_t *pfns, uint64_t n, const char *indent, unsigned int per_line)
{
	uint64_t i = 0, ranges = 0;
	unsigned int on_line = 0;

	qsort(pfns, n, sizeof(*pfns), cmp_u64);
	while (i < n) {
		uint64_t first = pfns[i], last = pfns[i];

		while (++i < n && (pfns[i] == last || pfns[i] == last + 1))
			last = pfns[i];
		fprintf(fp, "%s", on_line ? " " : indent);
		if (first == last)
			fprintf(fp, "0x%" PRIx64, first);
		else
			fprintf(fp, "0x%" PRIx64 "-0x%" PRIx64, first, last);
		ranges++;
		if (++on_line == per_line) {
			fputc('\n', fp);
			on_line = 0;
		}
	}
	if (on_line)
		fputc('\n', fp);
	return ranges;
}

static void format_time(int64_t ns, char *buf, size_t len)
{
	int64_t sec = ns / 1000000000, frac = ns % 1000000000;
	struct tm tm;
	time_t t;

	if (frac < 0) {
		frac += 1000000000;
		sec--;
	}
	t = (time_t)sec;
	if (!gmtime_r(&t, &tm)) {
		snprintf(buf, len, "?");
		return;
	}
	snprintf(buf, len, "%04d-%02d-%02d %02d:%02d:%02d.%09" PRId64 " UTC", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

static uint64_t load_pages(const struct ld_dump *d)
{
	uint64_t pages = 0;
	unsigned int i;

	for (i = 0; i < d->nphdr; i++)
		if (d->phdr[i].type == PT_LOAD_)
			pages += d->phdr[i].filesz / LD_PAGE_SIZE;
	return pages;
}

void ld_print(FILE *fp, const struct ld_dump *d, ld_annotate_fn annotate, void *arg)
{
	const struct ld_note *n = &d->note;
	char when[64], extra[256];
	unsigned int i;

	format_time(n->start_time_ns, when, sizeof(when));
	fprintf(fp, "LIVEDUMP note version %" PRIu32 "%s\n", n->version,
		n->version >= 1 && n->version <= LD_NOTE_VERSION ? "" :
		" (unknown version: fields read as version 5)");
	if (d->from_trailer)
		fprintf(fp, "  (final, from the stream's trailer; its headers hold it as of the start of the sweep)\n");
	fprintf(fp, "  reason:            %s\n", n->reason);
	fprintf(fp, "  start time:        %s (%" PRId64 " ns)\n", when, n->start_time_ns);
	fprintf(fp, "  pause:             %" PRIu64 " ns (%.3f ms, all CPUs stopped)\n", n->pause_ns,
		n->pause_ns / 1e6);
	fprintf(fp, "  pages total:       %" PRIu64 " (%.1f MiB in %u PT_LOAD segments)\n", n->pages_total,
		n->pages_total * (double)LD_PAGE_SIZE / (1 << 20), d->nloads);
	fprintf(fp, "  COW faults:        %" PRIu64 " (pages saved on a write fault)\n", n->cow_faults);
	fprintf(fp, "  stop copied:       %" PRIu64 " (pages copied during the stop)\n", n->stop_copied);
	fprintf(fp, "  zero pages:        %" PRIu64 " (free, livedump's own or short gaps, written as zeros)\n",
		n->zero_pages);
	fprintf(fp, "  protected entries: %" PRIu64 " (mapping entries write-protected)\n", n->protected_entries);
	if (d->has_aliases && d->alias_entries)
		fprintf(fp, "  alias entries:     %" PRIu64 " (of those, vmalloc and module mappings)\n",
			d->alias_entries);
	else if (d->has_aliases)
		fprintf(fp, "  alias entries:     0 (vmalloc and module mappings NOT protected: written through them, "
			"pages may be torn)\n");
	if (d->has_user && (d->flags & LD_NOTE_USER_PROTECTED))
		fprintf(fp, "  user entries:      %" PRIu64 " (user page table entries write-protected)\n",
			d->user_entries);
	else if (d->has_user)
		fprintf(fp, "  user entries:      user mappings NOT protected: written through them, pages may be torn\n");
	fprintf(fp, "  failed pages:      %" PRIu64 "%s\n", n->failed_pages,
		n->failed_pages ? " (INCONSISTENT: not the content at the instant of the dump)" : "");
	if (d->has_costs) {
		const struct ld_costs *c = &d->costs;

		fprintf(fp, "  reserve:           %" PRIu64 " pages, at most %" PRIu64 " in use at once\n",
			c->reserve_pages, c->reserve_used_max);
		fprintf(fp, "  page table pages:  %" PRIu64 " to split large mappings, %" PRIu64 " used\n",
			c->table_pages, c->tables_used);
		fprintf(fp, "  slowest fault:     %" PRIu64 " ns\n", c->fault_max_ns);
	}
	if (d->has_classes) {
		const struct ld_classes *k = &d->classes;
		const char *sep = "";

		fprintf(fp, "  left out:          ");
		for (i = 0; i < 32; i++) {
			if (k->exclude & (1U << i)) {
				if (i < LD_NR_CLASSES)
					fprintf(fp, "%s%s", sep, ld_class_names[i]);
				else
					fprintf(fp, "%sclass %u", sep, i);
				sep = ",";
			}
		}
		fprintf(fp, "%s (%" PRIu64 " pages in no PT_LOAD segment)\n", *sep ? "" : "nothing",
			k->excluded_pages);
		fprintf(fp, "  RAM by class:     ");
		for (i = 0; i < k->nr_classes; i++) {
			if (i < LD_NR_CLASSES)
				fprintf(fp, " %s %" PRIu64, ld_class_names[i], k->class_pages[i]);
			else
				fprintf(fp, " class %u %" PRIu64, i, k->class_pages[i]);
		}
		fprintf(fp, " (pages at the stop)\n");
	}
	if (n->nr_listed) {
		uint64_t *copy = malloc(n->nr_listed * sizeof(uint64_t));
		uint64_t ranges;

		fprintf(fp, "  failed pfns:\n");
		if (copy) {
			memcpy(copy, d->pfns, n->nr_listed * sizeof(uint64_t));
			ranges = ld_print_pfn_ranges(fp, copy, n->nr_listed, "    ", 6);
			free(copy);
			fprintf(fp, "    (%" PRIu64 " listed in %" PRIu64 " range%s", n->nr_listed, ranges,
				ranges == 1 ? "" : "s");
			if (n->failed_pages > n->nr_listed)
				fprintf(fp, "; %" PRIu64 " more not listed", n->failed_pages - n->nr_listed);
			fprintf(fp, ")\n");
		}
	} else if (n->failed_pages) {
		fprintf(fp, "  failed pfns:       none listed in the note\n");
	}
	if (d->has_trigger) {
		const struct ld_trigger *t = &d->trigger;
		static const char *const events[] = { "warn", "sysrq", "call" };
		unsigned int e;

		fprintf(fp, "  trigger:           ");
		for (e = 0; e < 3 && !(t->event & (1U << e)); e++)
			;
		fprintf(fp, "%s on CPU %" PRId32 ", task %" PRId32 ", %.3f ms before the stop: %s\n",
			e < 3 ? events[e] : "unknown", t->cpu, t->pid, t->delay_ns / 1e6, t->where);
		if (t->has_regs)
			fprintf(fp, "  trigger registers: rip %016" PRIx64 "  rsp %016" PRIx64 " (at the event)\n",
				t->rip, t->rsp);
	}
	fprintf(fp, "  CPUs captured:     %u NT_PRSTATUS note%s", d->ncpus, d->ncpus == 1 ? "" : "s");
	if (n->nr_cpus != d->ncpus)
		fprintf(fp, " (MISMATCH: the LIVEDUMP note says %" PRIu32 ")", n->nr_cpus);
	if (d->bad_prstatus)
		fprintf(fp, " (+%u of the wrong size, ignored)", d->bad_prstatus);
	fputc('\n', fp);
	if (!d->ncpus)
		return;
	fprintf(fp, "    CPU      PID  RIP               RSP\n");
	for (i = 0; i < d->ncpus; i++) {
		const struct ld_cpu *c = &d->cpus[i];

		extra[0] = '\0';
		if (annotate)
			annotate(i, c, extra, sizeof(extra), arg);
		fprintf(fp, "    %3u %8" PRId32 "  %016" PRIx64 "  %016" PRIx64 "%s%s\n", i, c->pid, c->rip, c->rsp,
			extra[0] ? "  " : "", extra);
	}
}

static const struct ld_phdr *load_of_pfn(const struct ld_dump *d, uint64_t pfn, unsigned int *index)
{
	uint64_t addr = pfn * LD_PAGE_SIZE;
	unsigned int i;

	for (i = 0; i < d->nphdr; i++) {
		const struct ld_phdr *ph = &d->phdr[i];

		if (ph->type == PT_LOAD_ && addr >= ph->paddr && addr - ph->paddr < ph->memsz) {
			*index = i;
			return ph;
		}
	}
	return NULL;
}

/* The listed failed pfns, coalesced, with the PT_LOAD segment and file offset of each range. */
static void print_failed_ranges(FILE *fp, const struct ld_dump *d)
{
	uint64_t n = d->note.nr_listed, i = 0, *pfns, shown = 0;

	pfns = malloc(n * sizeof(*pfns) + 1);
	if (!pfns)
		return;
	memcpy(pfns, d->pfns, n * sizeof(*pfns));
	qsort(pfns, n, sizeof(*pfns), cmp_u64);
	while (i < n) {
		uint64_t first = pfns[i], last = pfns[i];
		const struct ld_phdr *ph;
		unsigned int idx;

		while (++i < n && (pfns[i] == last || pfns[i] == last + 1))
			last = pfns[i];
		if (++shown > 64)
			continue;
		fprintf(fp, "    pfn 0x%" PRIx64, first);
		if (last != first)
			fprintf(fp, "-0x%" PRIx64, last);
		ph = load_of_pfn(d, first, &idx);
		if (ph)
			fprintf(fp, ": PT_LOAD #%u, file offset 0x%" PRIx64 "\n", idx,
				ph->offset + first * LD_PAGE_SIZE - ph->paddr);
		else
			fprintf(fp, ": not in any PT_LOAD segment\n");
	}
	if (shown > 64)
		fprintf(fp, "    ... %" PRIu64 " more ranges\n", shown - 64);
	free(pfns);
}

/*
 * Note version 3: RAM by class is what the PT_LOAD segments hold plus what
 * was left out, and no more was left out than the classes left out hold.
 */
static int check_classes(FILE *fp, const struct ld_dump *d)
{
	const struct ld_classes *k = &d->classes;
	uint64_t ram = 0, left = 0;
	unsigned int i;
	int problems = 0;

	for (i = 0; i < k->nr_classes; i++) {
		ram += k->class_pages[i];
		if (k->exclude & (1U << i))
			left += k->class_pages[i];
	}
	if (ram != d->note.pages_total + k->excluded_pages) {
		fprintf(fp, "  PROBLEM: RAM by class is %" PRIu64 " pages, not the %" PRIu64 " dumped + %" PRIu64
			" left out\n", ram, d->note.pages_total, k->excluded_pages);
		problems++;
	}
	if (k->excluded_pages > left) {
		fprintf(fp, "  PROBLEM: %" PRIu64 " pages left out, the classes left out hold %" PRIu64 "\n",
			k->excluded_pages, left);
		problems++;
	}
	if (!problems)
		fprintf(fp, "  page classes: %" PRIu64 " pages of RAM, %" PRIu64 " dumped, %" PRIu64 " left out\n",
			ram, d->note.pages_total, k->excluded_pages);
	return problems;
}

int ld_check(FILE *fp, int fd, const struct ld_dump *d, uint64_t size, int is_blockdev)
{
	const struct ld_note *n = &d->note;
	uint64_t end = 0, first_data = UINT64_MAX, pages;
	unsigned int i, missing = 0, unreadable = 0;
	int problems = 0;
	unsigned char byte;

	fprintf(fp, "livedump check:\n");
	for (i = 0; i < d->nphdr; i++) {
		const struct ld_phdr *ph = &d->phdr[i];

		if (ph->type != PT_LOAD_)
			continue;
		if (ph->offset + ph->filesz > end)
			end = ph->offset + ph->filesz;
		if (ph->filesz && ph->offset < first_data)
			first_data = ph->offset;
	}
	fprintf(fp, "  %s: %" PRIu64 " bytes; the ELF data needs %" PRIu64 " bytes\n",
		is_blockdev ? "block device" : "file", size, end);
	for (i = 0; i < d->nphdr; i++) {
		const struct ld_phdr *ph = &d->phdr[i];

		if (ph->type != PT_LOAD_ || !ph->filesz)
			continue;
		if (ph->offset > size || ph->filesz > size - ph->offset) {
			fprintf(fp, "  PROBLEM: PT_LOAD #%u (paddr 0x%" PRIx64 "-0x%" PRIx64 ") needs file bytes up to %#"
				PRIx64 ", the %s ends at 0x%" PRIx64 "\n", i, ph->paddr, ph->paddr + ph->filesz - 1,
				ph->offset + ph->filesz, is_blockdev ? "device" : "file", size);
			missing++;
			continue;
		}
		/* The size says it is there; make sure it can be read too. */
		if (fd >= 0 && pread_full(fd, &byte, 1, ph->offset + ph->filesz - 1)) {
			fprintf(fp, "  PROBLEM: PT_LOAD #%u: cannot read its last byte at 0x%" PRIx64 ": %s\n", i,
				ph->offset + ph->filesz - 1, strerror(errno));
			unreadable++;
		}
	}
	if (missing || unreadable)
		problems += (int)(missing + unreadable);
	else
		fprintf(fp, "  PT_LOAD: all %u segments present and readable\n", d->nloads);
	if (first_data != UINT64_MAX && d->headers_end > first_data) {
		fprintf(fp, "  PROBLEM: headers and notes end at 0x%" PRIx64 ", after the first PT_LOAD data at %#"
			PRIx64 "\n", d->headers_end, first_data);
		problems++;
	}
	if (!d->has_note) {
		fprintf(fp, "  PROBLEM: no LIVEDUMP note: this is not a livedump (%s)\n", ld_kind(d));
		problems++;
		goto out;
	}
	pages = load_pages(d);
	if (pages != n->pages_total) {
		fprintf(fp, "  PROBLEM: the note counts %" PRIu64 " pages, the PT_LOAD segments hold %" PRIu64 "\n",
			n->pages_total, pages);
		problems++;
	}
	if (n->nr_cpus != d->ncpus || d->bad_prstatus) {
		fprintf(fp, "  PROBLEM: the note says %" PRIu32 " CPUs, the dump has %u NT_PRSTATUS notes (%u bad)\n",
			n->nr_cpus, d->ncpus, d->bad_prstatus);
		problems++;
	}
	if (!d->has_vmcoreinfo) {
		fprintf(fp, "  PROBLEM: no VMCOREINFO note\n");
		problems++;
	}
	if (d->has_classes)
		problems += check_classes(fp, d);
	if (n->failed_pages) {
		fprintf(fp, "  PROBLEM: %" PRIu64 " page%s marked inconsistent (content not from the instant of the dump)\n",
			n->failed_pages, n->failed_pages == 1 ? "" : "s");
		print_failed_ranges(fp, d);
		if (n->failed_pages > n->nr_listed)
			fprintf(fp, "    %" PRIu64 " not listed in the note\n", n->failed_pages - n->nr_listed);
		problems++;
	} else {
		fprintf(fp, "  inconsistent pages: none\n");
	}
out:
	fprintf(fp, "  result: %s", problems ? "FAILED" : "OK");
	if (problems)
		fprintf(fp, " (%d problem%s)", problems, problems == 1 ? "" : "s");
	fputc('\n', fp);
	return problems;
}
