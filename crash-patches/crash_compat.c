// SPDX-License-Identifier: GPL-2.0
/*
 * crash_compat.c - make crash 8.0.2 read 6.1 LTS dumps it misreads.
 *
 * Debian bookworm ships crash 8.0.2; its 6.1 kernel (and ours) has two
 * changes that crash only learnt about later. Both break what a kernel
 * developer needs first from a dump (ps, bt -a) and both can be repaired
 * from an extension, because crash keeps its type sizes, its task table and
 * its exception stack layout in globals it exports to extensions:
 *
 *  - struct pid ends in a flexible array since "pid: Replace struct pid
 *    1-element array with flex-array" (in 6.1.y stable). crash reads
 *    SIZE(pid) bytes of each pid in the pid xarray and then pid.numbers[0],
 *    which now lies just past what it read: no pid matches init_pid_ns, and
 *    the task table holds only the idle and active tasks. crash 8.0.3 reads
 *    sizeof(struct upid) more; we do the same and rebuild the task table.
 *
 *  - the #MC and #VC exception stacks: crash 8.0.2 sizes only the DF, NMI
 *    and DB stacks of struct cea_exception_stacks and takes the others as 0
 *    bytes at their top address, a guard page. Every bt of an active task
 *    then tries to read 0 bytes there and fails with "read of stack at
 *    fffffe00000... failed". We size the stacks from the kernel's own type
 *    and drop those that are not mapped (#VC without AMD_MEM_ENCRYPT).
 *
 * One more is livedump's own: crash starts the backtrace of an active task
 * from its NT_PRSTATUS registers only for the panic task (or with the DWARF
 * unwinder). A livedump has no panic task; every CPU's registers were saved
 * at the same instant, in the stop_machine callback. Without help, `bt` of
 * an active task starts from the task's last context switch, a stale frame
 * (__schedule) that the CPU left long ago. We hand crash the saved rip/rsp
 * of the CPU for the task that was running there, when rsp lies on that
 * task's stack, and leave every other case to crash.
 *
 * Each repair checks for the exact condition first, so a crash that already
 * gets it right is left alone, and says on loading what it changed.
 */
#include "defs.h"

#include "crash_compat.h"
#include "livedump_note.h"

#ifdef X86_64
static void (*crash_get_stack_frame)(struct bt_info *, ulong *, ulong *);
static struct ld_cpu *stop_regs;	/* per CPU, from the NT_PRSTATUS notes */
static unsigned int nr_stop_regs;
#endif

static int pid_size_too_small(void)
{
	if (!VALID_STRUCT(pid) || !VALID_STRUCT(upid) || INVALID_MEMBER(pid_numbers))
		return 0;
	return SIZE(pid) < OFFSET(pid_numbers) + SIZE(upid);
}

/*
 * task_init() read the task table once, with the short struct pid; on a
 * dump crash never refreshes it again (TASK_INIT_DONE). Clear the flag for
 * one refresh, then sort and restore the context as task_init() does.
 */
static void rebuild_task_table(FILE *out)
{
	ulong curtask = CURRENT_TASK();
	ulong before = RUNNING_TASKS();
	ulong saved = tt->flags;

	ASSIGN_SIZE(pid) = OFFSET(pid_numbers) + SIZE(upid);

	tt->flags &= ~TASK_INIT_DONE;
	tt->flags |= TASK_REFRESH;
	tt->refresh_task_table();
	tt->flags = (tt->flags & ~TASK_REFRESH) | (saved & (TASK_INIT_DONE | TASK_REFRESH));

	sort_context_array();
	sort_tgid_array();
	if (!set_context(curtask, NO_PID))
		set_context(tt->this_task, NO_PID);

	fprintf(out, "livedump: struct pid has a flexible numbers[] array: crash read %ld bytes of each pid, "
		"now %ld; task table rebuilt (%lu -> %lu tasks)\n",
		OFFSET(pid_numbers), SIZE(pid), before, RUNNING_TASKS());
}

#ifdef X86_64
/* enum exception_stack_ordering of arch/x86/include/asm/cpu_entry_area.h */
static const char *const estack_names[] = { "DF", "NMI", "DB", "MCE", "VC", "VC2" };

static int stack_mapped(ulong addr)
{
	char byte;

	return readmem(addr, KVADDR, &byte, 1, "exception stack", RETURN_ON_ERROR | QUIET);
}

static void repair_exception_stacks(FILE *out)
{
	struct x86_64_stkinfo *si = &machdep->machspec->stkinfo;
	char member[32];
	long size;
	int i, cpu, sized = 0, dropped = 0;

	for (i = 0; i < MAX_EXCEPTION_STACKS && i < (int)(sizeof(estack_names) / sizeof(estack_names[0])); i++) {
		if (si->esize[i] > 0)
			continue;
		for (cpu = 0; cpu < kt->cpus; cpu++)
			if (si->ebase[cpu][i])
				break;
		if (cpu == kt->cpus)
			continue;

		snprintf(member, sizeof(member), "%s_stack", estack_names[i]);
		size = MEMBER_SIZE("cea_exception_stacks", member);
		/* crash recorded the top of the stack (its ist entry) as the base */
		if (size > 0 && stack_mapped(si->ebase[0][i] - size)) {
			si->esize[i] = size;
			for (cpu = 0; cpu < kt->cpus; cpu++)
				if (si->ebase[cpu][i])
					si->ebase[cpu][i] -= size;
			sized++;
		} else {
			for (cpu = 0; cpu < kt->cpus; cpu++) {
				si->ebase[cpu][i] = 0;
				si->available[cpu][i] = 0;
			}
			dropped++;
		}
	}
	if (sized || dropped)
		fprintf(out, "livedump: exception stacks crash could not size: %d sized from struct "
			"cea_exception_stacks, %d not mapped and ignored\n", sized, dropped);
}

static void stop_instant_stack_frame(struct bt_info *bt, ulong *pcp, ulong *spp)
{
	struct task_context *tc = bt->tc;
	const struct ld_cpu *regs;

	if (tc && tc->processor >= 0 && (unsigned int)tc->processor < nr_stop_regs &&
	    is_task_active(bt->task)) {
		regs = &stop_regs[tc->processor];
		if (regs->pid == (int32_t)tc->pid && regs->rip && is_kernel_text(regs->rip) &&
		    regs->rsp >= bt->stackbase && regs->rsp < bt->stacktop) {
			*pcp = regs->rip;
			*spp = regs->rsp;
			return;
		}
	}
	crash_get_stack_frame(bt, pcp, spp);
}

static void use_stop_registers(FILE *out, const struct ld_dump *d)
{
	if (!d->ncpus || crash_get_stack_frame)
		return;
	stop_regs = calloc(d->ncpus, sizeof(*stop_regs));
	if (!stop_regs)
		return;
	memcpy(stop_regs, d->cpus, d->ncpus * sizeof(*stop_regs));
	nr_stop_regs = d->ncpus;
	crash_get_stack_frame = machdep->get_stack_frame;
	machdep->get_stack_frame = stop_instant_stack_frame;
	fprintf(out, "livedump: bt of the task active on each of the %u CPUs starts from its "
		"NT_PRSTATUS registers (the stop instant)\n", nr_stop_regs);
}
#endif

void ld_crash_compat(FILE *out, const struct ld_dump *livedump)
{
	if (ACTIVE() || !DUMPFILE())
		return;
	if (pid_size_too_small())
		rebuild_task_table(out);
#ifdef X86_64
	if (machine_type("X86_64")) {
		repair_exception_stacks(out);
		if (livedump && livedump->has_note)
			use_stop_registers(out, livedump);
	}
#endif
}

void ld_crash_compat_undo(void)
{
#ifdef X86_64
	if (crash_get_stack_frame) {
		machdep->get_stack_frame = crash_get_stack_frame;
		crash_get_stack_frame = NULL;
	}
	free(stop_regs);
	stop_regs = NULL;
	nr_stop_regs = 0;
#endif
}
