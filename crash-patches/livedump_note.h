/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Reading the ELF headers and notes of a livedump vmcore.
 *
 * Shared by the crash extension (livedump.c) and the standalone
 * test-livedump-note program; no crash headers here. The layout of the
 * LIVEDUMP note mirrors struct livedump_note of
 * include/uapi/linux/livedump.h (kernel-patches/0002).
 */
#ifndef LIVEDUMP_NOTE_H
#define LIVEDUMP_NOTE_H

#include <stdint.h>
#include <stdio.h>

#define LD_NOTE_NAME		"LIVEDUMP"
#define LD_NT_LIVEDUMP		0x4c440001
#define LD_NOTE_VERSION		5	/* newest known; 1 lacks the costs, 2 the classes, 3 the aliases, 4 the user part */
#define LD_NOTE_USER_PROTECTED	(1U << 0)	/* livedump_note::flags: user mappings protected */
#define LD_FAULT_HIST		32
#define LD_REASON_LEN		128
/* A stream ends with its final LIVEDUMP note: the note, its size, this. */
#define LD_TRAILER_MAGIC	0x4c494152544c444cULL	/* "LDLTRAIL" */
#define LD_PAGE_SIZE		((uint64_t)4096)
/* struct livedump_trigger_note: what started an armed dump. */
#define LD_NT_TRIGGER		0x4c440002
#define LD_TRIGGER_SIZE		(32 + LD_REASON_LEN + 27 * 8)

/* struct livedump_note, version 1, little-endian on disk. */
struct ld_note {
	uint32_t version;
	uint32_t nr_cpus;
	int64_t start_time_ns;
	uint64_t pause_ns;
	uint64_t pages_total;
	uint64_t cow_faults;
	uint64_t stop_copied;
	uint64_t zero_pages;
	uint64_t protected_entries;
	uint64_t failed_pages;
	uint64_t nr_listed;
	char reason[LD_REASON_LEN];
};

/* What version 2 adds after the version 1 struct: what the dump cost. */
struct ld_costs {
	uint64_t reserve_pages;
	uint64_t reserve_used_max;
	uint64_t table_pages;
	uint64_t tables_used;
	uint64_t fault_max_ns;
	uint64_t fault_ns_log2[LD_FAULT_HIST];
};

/* What version 3 adds after the costs: page classes, as enum livedump_page_class. */
#define LD_NR_CLASSES		7	/* classes this reader names */
#define LD_NOTE_CLASSES		16	/* room in the note */
struct ld_classes {
	uint32_t exclude;		/* bit (1 << class): left out of the dump */
	uint32_t nr_classes;		/* of class_pages[] used */
	uint64_t excluded_pages;	/* pages of RAM in no PT_LOAD segment */
	uint64_t class_pages[LD_NOTE_CLASSES];	/* RAM at the stop, by class */
};

struct ld_phdr {
	uint32_t type;
	uint32_t flags;
	uint64_t offset;
	uint64_t vaddr;
	uint64_t paddr;
	uint64_t filesz;
	uint64_t memsz;
	uint64_t align;
};

/* One NT_PRSTATUS note: the registers of one CPU at the instant of the dump. */
struct ld_cpu {
	int32_t pid;
	uint64_t rip;
	uint64_t rsp;
};

struct ld_trigger {
	uint32_t event;			/* bit 0 warn, 1 sysrq, 2 call */
	int32_t cpu;
	int32_t pid;
	uint32_t has_regs;
	int64_t time_ns;
	uint64_t delay_ns;		/* from the event to the stop */
	char where[LD_REASON_LEN];
	uint64_t rip, rsp;		/* at the event, if has_regs */
};

struct ld_dump {
	uint16_t e_type;
	uint16_t e_machine;
	unsigned int nphdr;
	struct ld_phdr *phdr;
	unsigned int nloads;		/* PT_LOAD segments */
	unsigned int nnotes;		/* notes in all PT_NOTE segments */
	unsigned int ncpus;		/* NT_PRSTATUS notes, in file order */
	struct ld_cpu *cpus;
	unsigned int bad_prstatus;	/* NT_PRSTATUS of the wrong size */
	int has_vmcoreinfo;
	int has_qemu_note;		/* a "QEMU" note: dump-guest-memory */
	int has_note;			/* a LIVEDUMP note was found */
	int from_trailer;		/* ... in a stream's trailer, final */
	struct ld_note note;
	int has_costs;			/* note version 2 or later */
	struct ld_costs costs;
	int has_classes;		/* note version 3 or later */
	struct ld_classes classes;
	int has_aliases;		/* note version 4 or later */
	uint64_t alias_entries;		/* of protected_entries, vmalloc and modules */
	int has_user;			/* note version 5 or later */
	uint32_t flags;			/* LD_NOTE_USER_PROTECTED */
	uint64_t user_entries;		/* user page table entries write-protected */
	uint64_t note_descsz;
	uint64_t *pfns;			/* the nr_listed failed pfns */
	int has_trigger;		/* an NT_LIVEDUMP_TRIGGER note */
	struct ld_trigger trigger;
	uint64_t headers_end;		/* end of ELF header, phdrs and notes */
};

/*
 * Read the ELF header, program headers and every PT_NOTE of fd. Trailing
 * bytes after the ELF data (a raw disk) are ignored. Returns 0, or -1 with
 * a one-line reason in err when fd does not hold a usable ELF64 core.
 * A core without a LIVEDUMP note is not an error here: see has_note.
 */
int ld_read(int fd, struct ld_dump *d, char *err, size_t errlen);
void ld_free(struct ld_dump *d);

/* Size of the file or block device behind fd (BLKGETSIZE64). */
int ld_source_size(int fd, uint64_t *size, int *is_blockdev, char *err, size_t errlen);

/* What kind of core this is, for the "not a livedump" message. */
const char *ld_kind(const struct ld_dump *d);

/*
 * Optional per-CPU annotation (crash fills in the task and the symbol of
 * rip); buf is empty when there is nothing to add.
 */
typedef void (*ld_annotate_fn)(unsigned int cpu, const struct ld_cpu *c, char *buf, size_t len, void *arg);

/* Print the LIVEDUMP note and the captured CPUs (has_note must be set). */
void ld_print(FILE *fp, const struct ld_dump *d, ld_annotate_fn annotate, void *arg);

/*
 * `livedump -c`: every PT_LOAD lies within size bytes of the file and can be
 * read, the counters agree with the headers, no page is marked inconsistent.
 * Prints what it checked; returns the number of problems found.
 */
int ld_check(FILE *fp, int fd, const struct ld_dump *d, uint64_t size, int is_blockdev);

/*
 * Sort and coalesce pfns into ranges, print them as "0x1-0x3 0x7" lines of
 * at most per_line ranges, each line prefixed by indent. Returns the number
 * of ranges. pfns is sorted in place.
 */
uint64_t ld_print_pfn_ranges(FILE *fp, uint64_t *pfns, uint64_t n, const char *indent, unsigned int per_line);

#endif /* LIVEDUMP_NOTE_H */
