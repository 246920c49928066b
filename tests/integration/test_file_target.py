"""A dump to a regular file on ext4 (kernel patch 0043), and the targets a file system cannot take.

One guest with two ext4 disks made on the host: one big enough for a dump of its RAM, one of 64 MiB. Under
the e2e load, ``livedump dump /mnt/big/live.vmcore`` creates and writes out the file, the kernel writes its
blocks directly, and the file ends as long as the ELF it holds. The image is read on the host after the
guest is gone (debugfs, no mount): drgn finds marker A and not marker B, and crash with the extension reads
it, as make test-qemu checks a dump to a block device. The xfs path is not tested: the test kernel does not
build xfs (build time), though the kernel accepts it.

Refusals must come before anything is protected and leave no trace: a file on tmpfs (the memory being
dumped) and a file system too small. A file too short handed straight to INIT is the kernel's own ENOSPC.
"""

from __future__ import annotations

import errno
import re
from dataclasses import replace

import pytest
from guest_checks import read_back, state

from harness import bench, elfcore, fsimage
from harness import dump as dump_mod

pytestmark = pytest.mark.qemu

BIG, SMALL = "/mnt/big", "/mnt/small"
DUMP_FILE = f"{BIG}/live.vmcore"
SMALL_FS_BYTES = 64 << 20


@pytest.fixture(scope="module")
def guest(pipeline):
    """The guest, its disks (scratch, raw target, big ext4, small ext4), both file systems mounted."""
    run_dir = pipeline.run.path("file-target")
    memory = dump_mod.memory_bytes(pipeline.options.memory)
    raw = dump_mod.dump_disks(run_dir, memory)
    disks = (*raw, replace(raw[1], path=run_dir / "ext4-big.img", size=memory + (256 << 20), filesystem="ext4"),
             replace(raw[1], path=run_dir / "ext4-small.img", size=SMALL_FS_BYTES, filesystem="ext4"))
    with pipeline.boot(disks, tag="file-target") as console:
        console.run(f"mkdir -p {BIG} {SMALL} && mount -t ext4 /dev/vdc {BIG} && mount -t ext4 /dev/vdd {SMALL}",
                    check=True)
        yield console, disks
    for disk in disks:
        disk.path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def filed(pipeline, guest, show):
    """The dump to a file under load, and its copy read out of the image on the host."""
    console, disks = guest
    dump_mod.start_load(console)
    taken = dump_mod.dump_with_markers(console, DUMP_FILE, reason="file target")
    dump_mod.stop_load(console)
    mapped = console.run("dmesg | grep 'livedump: target file:' | tail -n 1", check=True).output
    size = int(console.run(f"stat -c %s {DUMP_FILE}", check=True).output.strip().splitlines()[-1])
    # Unmounted, the file system's metadata is in place on the image, not only in its journal, which
    # debugfs does not replay.
    console.run(f"umount {BIG}", check=True)
    copy = fsimage.copy_out(disks[2].path, "/live.vmcore", pipeline.run.path("file-target") / "live.vmcore")
    console.run(f"mount -t ext4 /dev/vdc {BIG}", check=True)
    show(f"file target: {mapped.strip()}")
    return {"taken": taken, "size_in_guest": size, "copy": copy, "mapped": mapped}


def test_the_dump_to_a_file_completes(filed):
    taken = filed["taken"]
    assert taken.result.status == 0, taken.result.output[-1500:]
    assert taken.status["state"] == "done" and taken.status["error"] == "0", taken.status
    assert re.search(rf"^livedump: writing out {DUMP_FILE}: \d+ MiB$", taken.result.output, re.M), \
        taken.result.output[-1500:]


def test_init_says_what_mapping_the_file_cost(filed):
    """The kernel logs the file's size, its extents and how long bmap() took, at INIT (outside the stop)."""
    m = re.search(r"target file: (\d+) MiB in (\d+) extents, mapped in (\d+) ms", filed["mapped"])
    assert m, filed["mapped"]
    assert int(m.group(1)) == int(filed["taken"].status["target_bytes"]) >> 20
    assert int(m.group(2)) >= 1


def test_the_file_ends_as_long_as_its_elf(filed):
    """Written out to all of RAM first, cut by the tool to the size STATUS.dump_bytes gives once DONE; the
    copy on the host is the same."""
    core = elfcore.read(filed["copy"])
    elf_end = max(s.offset + s.filesz for s in core.loads)
    assert int(filed["taken"].status["dump_bytes"]) == elf_end, filed["taken"].status
    assert filed["size_in_guest"] == elf_end == filed["copy"].stat().st_size, (filed["size_in_guest"], elf_end)
    assert elf_end < int(filed["taken"].status["target_bytes"]), "nothing was left out: the cut is not shown"


def test_drgn_and_crash_read_the_file_copied_out(pipeline, filed):
    read_back(pipeline, filed["taken"], filed["copy"], pipeline.run.path("file-target") / "crash")


def test_the_file_is_unpinned_and_a_second_dump_reuses_it(guest, filed):
    """After the dump, the file is an ordinary file again (S_SWAPFILE cleared: unlink would say EPERM);
    a second dump writes the same path out again and completes."""
    console, _ = guest
    again = dump_mod.dump(console, DUMP_FILE, reason="same file again")
    assert again.result.status == 0, again.result.output[-1500:]
    console.run(f"rm {DUMP_FILE}", check=True)
    assert state(console) == "idle"


def refused(console, command: str, code: int) -> str:
    """``command`` fails with ``code`` before anything is protected: the device is idle, the direct map is
    as it was; its output."""
    before = bench.meminfo(console)
    result = console.run(command)
    assert result.status == code, f"`{command}` exited {result.status}, wanted {errno.errorcode[code]}: " \
                                  f"{result.output}"
    assert state(console) == "idle"
    assert bench.meminfo(console) == before
    return result.output


def test_a_file_on_tmpfs_is_refused_before_a_byte_is_written(guest):
    console, _ = guest
    used = console.run("df -k /tmp | tail -n 1", check=True).output
    out = refused(console, "livedump dump /tmp/live.vmcore", errno.EOPNOTSUPP)
    assert "ext4 or xfs" in out, out
    assert console.run("test -e /tmp/live.vmcore").status != 0, "the refused file was left behind"
    assert console.run("df -k /tmp | tail -n 1", check=True).output == used


def test_a_file_system_too_small_is_refused_and_left_as_it_was(guest):
    console, _ = guest
    free = console.run(f"df -k {SMALL} | tail -n 1", check=True).output
    out = refused(console, f"livedump dump {SMALL}/live.vmcore", errno.ENOSPC)
    assert re.search(r"no room for the dump, which needs \d+ MiB \(\d+ MiB were free\)", out), out
    assert console.run(f"test -e {SMALL}/live.vmcore").status != 0, "the refused file was left behind"
    assert console.run(f"sync; df -k {SMALL} | tail -n 1", check=True).output == free


def test_init_refuses_a_file_too_short_with_enospc(guest):
    """The kernel's own check, without the tool writing the file out: a 1 MiB file straight to INIT."""
    console, _ = guest
    console.run(f"dd if=/dev/zero of={SMALL}/short bs=1M count=1 2>/dev/null", check=True)
    out = console.run(f"ldharden init-size 152 152 {SMALL}/short", check=True).output
    assert re.search(rf"ret=-1 errno={errno.ENOSPC}\b", out), out
    assert state(console) == "idle"
    # Not pinned by the refusal: it can go.
    console.run(f"rm {SMALL}/short", check=True)


def test_status_says_what_a_target_needs_when_idle(pipeline, guest):
    """target_bytes (STATUS v3) in IDLE: more than the RAM the kernel manages, less than the guest's RAM
    and a few MiB of headers."""
    console, _ = guest
    need = int(dump_mod.status(console)["target_bytes"])
    ram_kb = int(re.search(r"MemTotal:\s+(\d+)", console.run("cat /proc/meminfo", check=True).output).group(1))
    assert ram_kb * 1024 < need < dump_mod.memory_bytes(pipeline.options.memory) + (8 << 20), need
