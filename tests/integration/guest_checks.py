"""Checks on a guest's /dev/livedump that more than one test module makes."""

from __future__ import annotations

import errno

from harness import dump as dump_mod


def state(console) -> str:
    """The dump's state as ``livedump status`` reports it."""
    return dump_mod.status(console)["state"]


def expect_errno(console, command: str, code: int, state_after: str):
    """``command`` fails with the documented errno ``code`` and leaves the dump in ``state_after``; its result."""
    result = console.run(command)
    assert result.status == code, f"`{command}` exited {result.status}, wanted {errno.errorcode[code]}: " \
                                  f"{result.output}"
    assert state(console) == state_after
    return result


def read_back(pipeline, taken, image, crash_dir, *, apart: tuple[str, ...] = ()):
    """Every check make test-qemu makes of a dump (drgn against the markers and counters the guest saw,
    crash with the extension), asserted to pass for the dump ``taken`` left in ``image``; the verdict.

    ``apart``: names of checks a caller asserts on its own (a known failure it marks xfail)."""
    from harness import dumpcheck

    kernel = pipeline.build()
    saw = dumpcheck.GuestSaw.of(taken, kernel.release, pipeline.options.smp)
    verdict = dumpcheck.check_dump(image, kernel.vmlinux, saw, crash_dir=crash_dir)
    failed = [str(c) for c in verdict.checks if not c.ok and not c.name.startswith(apart)]
    assert failed == [], failed  # not a test module: pytest does not rewrite this assert
    assert verdict.crash is not None and verdict.named("crash: `kmem -i`"), "crash did not run"
    return verdict


def dump_disks_in(pipeline, name: str):
    """A run subdirectory ``name`` with the usual guest disks for this guest's RAM: (directory, disks, dump
    image on the host)."""
    directory = pipeline.run.directory / name
    directory.mkdir(parents=True, exist_ok=True)
    disks = dump_mod.dump_disks(directory, dump_mod.memory_bytes(pipeline.options.memory))
    return directory, disks, dump_mod.dump_image(disks)
