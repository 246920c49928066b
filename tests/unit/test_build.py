from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import build
from harness.errors import BuildError, ToolMissing
from harness.runner import Runner

SAMPLE_LOG = """\
make[1]: Entering directory '/build/linux'
  SYNC    include/config/auto.conf
  CC      kernel/livedump.o
  CC      lib/errseq.o
kernel/livedump.c: In function 'livedump_start':
kernel/livedump.c:42:9: warning: unused variable 'flags' [-Wunused-variable]
kernel/livedump.c:57:17: error: implicit declaration of function 'wp_begin' [-Werror=implicit-function-declaration]
   57 |         ret = wp_begin(mm);
      |               ^~~~~~~~
cc1: some warnings being treated as errors
make[3]: *** [scripts/Makefile.build:250: kernel/livedump.o] Error 1
In file included from mm/livedump.c:3:
include/linux/livedump.h:9:10: fatal error: asm/wp.h: No such file or directory
ld: vmlinux.o: in function `crash_save_cpu': undefined reference to `livedump_regs'
make[2]: *** No rule to make target 'arch/x86/mm/wp.o', needed by 'arch/x86/mm/built-in.a'.  Stop.
make[1]: Leaving directory '/build/linux'
"""


def test_first_errors_picks_error_lines():
    assert build.first_errors(SAMPLE_LOG) == [
        "kernel/livedump.c:57:17: error: implicit declaration of function 'wp_begin' "
        "[-Werror=implicit-function-declaration]",
        "make[3]: *** [scripts/Makefile.build:250: kernel/livedump.o] Error 1",
        "include/linux/livedump.h:9:10: fatal error: asm/wp.h: No such file or directory",
        "ld: vmlinux.o: in function `crash_save_cpu': undefined reference to `livedump_regs'",
        "make[2]: *** No rule to make target 'arch/x86/mm/wp.o', needed by 'arch/x86/mm/built-in.a'.  Stop.",
    ]


def test_first_errors_limit():
    log = "".join(f"f.c:{i}:1: error: e{i}\n" for i in range(30))
    picked = build.first_errors(log, limit=5)
    assert picked == [f"f.c:{i}:1: error: e{i}" for i in range(5)]


def test_first_errors_without_error_lines_gives_the_tail():
    log = "".join(f"line {i}\n" for i in range(40))
    assert build.first_errors(log, limit=3) == ["line 37", "line 38", "line 39"]


@pytest.fixture
def config(tmp_path) -> Path:
    p = tmp_path / ".config"
    p.write_text("CONFIG_LIVEDUMP=y\n")
    return p


def test_build_key_is_stable(config):
    mv = {"CC": "gcc", "LOCALVERSION": ""}
    assert build.build_key("abc", "s1", config, mv) == build.build_key("abc", "s1", config, dict(reversed(mv.items())))


@pytest.mark.parametrize("change", ["identity", "series", "config", "mvars", "env"])
def test_build_key_changes_with_every_input(config, monkeypatch, change):
    args = dict(source_identity="abc", series_digest="s1", config=config, mvars={"CC": "gcc", "LOCALVERSION": ""})
    before = build.build_key(**args)
    if change == "identity":
        args["source_identity"] = "abc+0123456789abcdef"
    elif change == "series":
        args["series_digest"] = "s2"
    elif change == "config":
        config.write_text("CONFIG_LIVEDUMP=y\nCONFIG_KASAN=y\n")
    elif change == "mvars":
        args["mvars"] = {"CC": "ccache gcc", "LOCALVERSION": ""}
    else:
        monkeypatch.setattr(build, "REPRODUCIBLE_ENV", {**build.REPRODUCIBLE_ENV, "KBUILD_BUILD_HOST": "other"})
    assert build.build_key(**args) != before


def test_build_key_fields_do_not_run_together(config):
    mv = {"CC": "gcc"}
    assert build.build_key("ab", "c", config, mv) != build.build_key("a", "bc", config, mv)


# -- build() with a fake make -------------------------------------------------------------

FAKE_MAKE_OK = """#!/bin/sh
echo "make $*" >> "$CALLS"
for a in "$@"; do case "$a" in O=*) out="${a#O=}";; esac; done
mkdir -p "$out/arch/x86/boot" "$out/include/config" "$out/usr/include"
echo bzimage > "$out/arch/x86/boot/bzImage"
echo vmlinux > "$out/vmlinux"
echo 6.1.192 > "$out/include/config/kernel.release"
echo "  LD      vmlinux"
echo "build date: $KBUILD_BUILD_TIMESTAMP"
"""

FAKE_MAKE_FAIL = """#!/bin/sh
echo "make $*" >> "$CALLS"
echo "  CC      kernel/livedump.o"
echo "kernel/livedump.c:57:17: error: 'x' undeclared" >&2
echo "make[3]: *** [scripts/Makefile.build:250: kernel/livedump.o] Error 1" >&2
exit 2
"""


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    """A PATH whose make is a script; the other required tools are stubs."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    for tool in build.REQUIRED_TOOLS:
        p = bindir / tool
        p.write_text("#!/bin/sh\nexit 0\n")
        p.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    monkeypatch.setenv("CALLS", str(tmp_path / "make-calls"))

    def set_make(text: str) -> Path:
        (bindir / "make").write_text(text)
        return tmp_path / "make-calls"

    return set_make


def make_calls(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_build_then_up_to_date(tmp_path, fake_tools, runner):
    calls = fake_tools(FAKE_MAKE_OK)
    out = tmp_path / "out"
    log = tmp_path / "run" / "build.log"
    r = build.build(tmp_path / "src", out, "key1", runner, log, jobs=3, mvars={"CC": "gcc", "LOCALVERSION": ""})
    assert (r.release, r.rebuilt) == ("6.1.192", True)
    assert r.bzimage == out / "arch/x86/boot/bzImage" and r.bzimage.is_file()
    assert make_calls(calls) == [f"make -C {tmp_path / 'src'} O={out} -j3 CC=gcc LOCALVERSION= bzImage headers modules"]
    assert "build date: Thu Jan  1 00:00:00 UTC 2024" in log.read_text()
    assert (out / "last-build.log").read_text() == log.read_text()
    assert (out / build.STAMP).read_text().strip() == "key1"

    again = build.build(tmp_path / "src", out, "key1", runner, log, mvars={"CC": "gcc"})
    assert (again.release, again.rebuilt) == ("6.1.192", False)
    assert len(make_calls(calls)) == 1

    changed = build.build(tmp_path / "src", out, "key2", runner, log, mvars={"CC": "gcc"})
    assert changed.rebuilt
    assert len(make_calls(calls)) == 2


def test_build_failure(tmp_path, fake_tools, runner):
    fake_tools(FAKE_MAKE_FAIL)
    out = tmp_path / "out"
    out.mkdir()
    (out / build.STAMP).write_text("old-key\n")
    log = tmp_path / "run" / "build.log"
    with pytest.raises(BuildError) as ei:
        build.build(tmp_path / "src", out, "key1", runner, log, mvars={"CC": "gcc"})
    e = ei.value
    assert e.stage == "build"
    assert e.message.startswith("make failed (exit 2) after ")
    assert e.message.endswith(f"full log: {log}")
    assert e.detail.splitlines() == ["kernel/livedump.c:57:17: error: 'x' undeclared",
                                     "make[3]: *** [scripts/Makefile.build:250: kernel/livedump.o] Error 1"]
    assert not (out / build.STAMP).exists()  # a failed build is never "up to date"
    assert "error: 'x' undeclared" in (out / "last-build.log").read_text()


def test_build_missing_tool(tmp_path, monkeypatch, runner):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ToolMissing) as ei:
        build.build(tmp_path / "src", tmp_path / "out", "k", runner, tmp_path / "build.log")
    assert ei.value.message.startswith("make not found; install the Debian package make")
    assert ei.value.exit_code == 2


def test_build_dry_run_runs_nothing(tmp_path, fake_tools):
    import io

    calls = fake_tools(FAKE_MAKE_OK)
    dry = Runner(log_path=tmp_path / "c.sh", dry_run=True, echo=io.StringIO())
    r = build.build(tmp_path / "src", tmp_path / "out", "k", dry, tmp_path / "build.log", mvars={"CC": "gcc"})
    assert not r.rebuilt
    assert make_calls(calls) == []
    assert "bzImage headers" in (tmp_path / "c.sh").read_text()
    assert not (tmp_path / "out" / build.STAMP).exists()


def test_make_vars_uses_ccache_when_present(monkeypatch):
    monkeypatch.setattr(build.shutil, "which", lambda name: "/usr/bin/ccache" if name == "ccache" else None)
    assert build.make_vars() == {"CC": "ccache gcc", "LOCALVERSION": ""}
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    assert build.make_vars()["CC"] == "gcc"



FAKE_MAKE_SLOW = """#!/bin/sh
for a in "$@"; do case "$a" in O=*) out="${a#O=}";; esac; done
for i in 1 2 3 4 5 6 7 8; do
    echo "  CC      kernel/f$i.o"
    sleep 0.1
done
mkdir -p "$out/arch/x86/boot" "$out/include/config"
echo bzimage > "$out/arch/x86/boot/bzImage"
echo vmlinux > "$out/vmlinux"
"""


def test_a_long_build_is_announced_and_reports_progress(tmp_path, fake_tools, runner, caplog):
    """A make that takes a while: the announcement names release, estimate and log; progress lines follow
    while it runs, each with the last target make named; the next build is estimated from this one."""
    caplog.set_level("INFO", logger="harness")
    fake_tools(FAKE_MAKE_SLOW)
    src, out, log = tmp_path / "src", tmp_path / "out", tmp_path / "run" / "build.log"
    src.mkdir()
    (src / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\nEXTRAVERSION =\n")
    out.mkdir()
    (out / ".config").write_text('CONFIG_LOCALVERSION="-livedump"\n')
    build.build(src, out, "key1", runner, log, jobs=2, progress_every=0.25)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == (f"building 6.1.192-livedump (a first build, {build.FIRST_BUILD_ESTIMATE}, make -j2), "
                           f"log: {log}")
    ticks = messages[1:-1]
    assert len(ticks) >= 2, messages
    counts = []
    for tick in ticks:
        m = re.fullmatch(r"building 6\.1\.192-livedump: 0s, (\d+) lines of make output, last: CC kernel/f(\d)\.o",
                         tick)
        assert m, tick
        assert int(m[1]) == int(m[2])  # the count and the last target read from the same log
        counts.append(int(m[1]))
    assert counts == sorted(counts) and counts[0] < counts[-1]  # it moves
    assert re.fullmatch(r"built 6\.1\.192-livedump in \ds", messages[-1])

    caplog.clear()
    build.build(src, out, "key2", runner, log, jobs=2, progress_every=10)
    assert re.search(r"\(the last build here took \ds, make -j2\)", caplog.records[0].getMessage())


def test_release_of_a_tree_without_a_kernel_makefile_is_its_name(tmp_path):
    assert build.release_of(tmp_path / "mytree", tmp_path / ".config") == "mytree"
