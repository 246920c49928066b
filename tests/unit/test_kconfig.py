from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from harness import kconfig
from harness.errors import ConfigError
from harness.kconfig import Mismatch, Request, merge_requests, parse_fragment, render_allconfig, verify

# -- fragments -----------------------------------------------------------------------


def fragment(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_parse_fragment(tmp_path):
    p = fragment(tmp_path, "base.config", (
        "# a comment\n"
        "\n"
        "CONFIG_A=y\n"
        "# CONFIG_B is not set\n"
        "  CONFIG_C=m  \n"
        "CONFIG_NR=64\n"
        "CONFIG_ADDR=0x1000\n"
        'CONFIG_CMDLINE="console=ttyS0 quiet"\n'
        'CONFIG_EMPTY=""\n'
    ))
    reqs = parse_fragment(p)
    assert [(r.symbol, r.value, r.origin) for r in reqs] == [
        ("A", "y", "base.config:3"),
        ("B", "n", "base.config:4"),
        ("C", "m", "base.config:5"),
        ("NR", "64", "base.config:6"),
        ("ADDR", "0x1000", "base.config:7"),
        ("CMDLINE", "console=ttyS0 quiet", "base.config:8"),
        ("EMPTY", "", "base.config:9"),
    ]


def test_parse_fragment_unescapes_quotes(tmp_path):
    p = fragment(tmp_path, "s.config", 'CONFIG_S="say \\"hi\\" C:\\\\dir"\n')
    assert parse_fragment(p)[0].value == 'say "hi" C:\\dir'


def test_parse_fragment_rejects_garbage(tmp_path):
    p = fragment(tmp_path, "bad.config", "CONFIG_A=y\nA=y\n")
    with pytest.raises(ConfigError) as ei:
        parse_fragment(p)
    assert str(ei.value) == f"config: {p}:2: not a CONFIG_FOO=value line: 'A=y'"


def test_merge_requests_later_fragment_wins(tmp_path):
    base = fragment(tmp_path, "base.config", "CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\n")
    extra = fragment(tmp_path, "extra.config", "# CONFIG_A is not set\nCONFIG_D=m\n")
    merged = merge_requests([base, extra])
    assert [(r.symbol, r.value, r.origin) for r in merged] == [
        ("B", "y", "base.config:2"),
        ("C", "y", "base.config:3"),
        ("A", "n", "extra.config:1"),
        ("D", "m", "extra.config:2"),
    ]
    # The other way round, base wins.
    assert {r.symbol: r.value for r in merge_requests([extra, base])}["A"] == "y"


def test_merge_requests_same_fragment_last_line_wins(tmp_path):
    p = fragment(tmp_path, "f.config", "CONFIG_A=y\nCONFIG_A=m\n")
    assert [(r.value, r.origin) for r in merge_requests([p])] == [("m", "f.config:2")]


def test_merge_requests_missing_fragment(tmp_path):
    with pytest.raises(ConfigError) as ei:
        merge_requests([tmp_path / "nope.config"])
    assert str(ei.value) == f"config: fragment {tmp_path / 'nope.config'} does not exist"


def test_render_allconfig():
    reqs = [Request("A", "y", "f:1"), Request("B", "n", "f:2"), Request("C", "m", "f:3"),
            Request("NR", "64", "f:4"), Request("NEG", "-1", "f:5"), Request("ADDR", "0xfF00", "f:6"),
            Request("S", 'a "b" \\c', "f:7"), Request("E", "", "f:8")]
    assert render_allconfig(reqs) == (
        "CONFIG_A=y\n"
        "# CONFIG_B is not set\n"
        "CONFIG_C=m\n"
        "CONFIG_NR=64\n"
        "CONFIG_NEG=-1\n"
        "CONFIG_ADDR=0xfF00\n"
        'CONFIG_S="a \\"b\\" \\\\c"\n'
        'CONFIG_E=""\n'
    )


def test_render_allconfig_keeps_numeric_looking_strings_quoted(tmp_path):
    """A string symbol whose value looks like a number must stay quoted: Kconfig ignores an unquoted string."""
    text = 'CONFIG_LOCALVERSION="123"\nCONFIG_DEFAULT_HOSTNAME="y"\nCONFIG_NR=8\n'
    assert render_allconfig(parse_fragment(fragment(tmp_path, "s.config", text))) == text


def test_fragment_render_parse_round_trip(tmp_path):
    """Every short string over the characters Kconfig escapes survives render -> parse."""
    values = ["".join(t) for n in range(1, 5) for t in itertools.product('a\\"', repeat=n)]
    reqs = [Request(f"S{i}", v, "x") for i, v in enumerate(values)]
    p = fragment(tmp_path, "rt.config", render_allconfig(reqs))
    back = parse_fragment(p)
    bad = [(r.value, b.value) for r, b in zip(reqs, back, strict=True) if r.value != b.value]
    assert bad == []


def test_repo_fragments_parse():
    from harness.pipeline import DEFAULT_FRAGMENTS
    from harness.settings import FRAGMENTS_DIR

    reqs = merge_requests([FRAGMENTS_DIR / f"{n}.config" for n in DEFAULT_FRAGMENTS])
    assert reqs and all(r.symbol and not r.symbol.startswith("CONFIG_") for r in reqs)


# -- verify against a tiny Kconfig tree ------------------------------------------------

TINY_KCONFIG = """\
mainmenu "Tiny Kconfig"

config MODULES
	bool "Enable loadable module support"
	modules
	help
		Like Linux 6.1: the bare "modules" keyword.

config BLOCK
	bool "Block layer"
	default y

config PCI
	bool "PCI support"

config VIRTIO
	bool "Virtio"
	depends on PCI

config VIRTIO_BLK
	tristate "Virtio block driver"
	depends on VIRTIO && BLOCK

config CRASH_CORE
	bool "Crash core"

config LIVEDUMP
	bool "Live dump"
	select CRASH_CORE

config NR_CPUS
	int "Maximum number of CPUs"
	range 2 64
	default 8

config PHYS_START
	hex "Physical start"
	default 0x1000000

config CMDLINE
	string "Built-in command line"
	default ""

config HIDDEN
	bool
	default y

choice
	prompt "Preemption model"
	default PREEMPT_NONE

config PREEMPT_NONE
	bool "No forced preemption"

config PREEMPT
	bool "Preemptible kernel"

endchoice

source "mm/Kconfig"
"""

MM_KCONFIG = """\
config SWAP
	bool "Swap"
	depends on BLOCK
"""

# What olddefconfig would write for this tree with PCI off and LIVEDUMP on.
TINY_CONFIG = """\
CONFIG_MODULES=y
CONFIG_BLOCK=y
# CONFIG_PCI is not set
CONFIG_CRASH_CORE=y
CONFIG_LIVEDUMP=y
CONFIG_NR_CPUS=8
CONFIG_PHYS_START=0x1000000
CONFIG_CMDLINE="console=ttyS0 quiet"
CONFIG_HIDDEN=y
CONFIG_PREEMPT_NONE=y
# CONFIG_PREEMPT is not set
CONFIG_SWAP=y
"""


@pytest.fixture
def ktree(tmp_path) -> Path:
    root = tmp_path / "ksrc"
    (root / "mm").mkdir(parents=True)
    (root / "Kconfig").write_text(TINY_KCONFIG)
    (root / "mm" / "Kconfig").write_text(MM_KCONFIG)
    (root / ".config").write_text(TINY_CONFIG)
    return root


def check(ktree: Path, *reqs: tuple[str, str]) -> list[Mismatch]:
    requests = [Request(sym, value, f"test.config:{i}") for i, (sym, value) in enumerate(reqs, 1)]
    return verify(ktree / "Kconfig", ktree / ".config", requests, {"srctree": str(ktree)})


def test_verify_correct_config(ktree):
    assert check(ktree, ("MODULES", "y"), ("BLOCK", "y"), ("PCI", "n"), ("VIRTIO", "n"), ("LIVEDUMP", "y"),
                 ("NR_CPUS", "8"), ("PHYS_START", "0x1000000"),
                 ("CMDLINE", "console=ttyS0 quiet"), ("PREEMPT_NONE", "y"), ("PREEMPT", "n"),
                 ("SWAP", "y")) == []


def test_verify_unmet_dependency(ktree):
    [m] = check(ktree, ("BLOCK", "y"), ("VIRTIO_BLK", "y"))
    assert m.request.symbol == "VIRTIO_BLK"
    assert m.got == "n"
    assert m.reason == "unmet dependency VIRTIO"  # BLOCK is met, so it is not named
    assert str(m) == "CONFIG_VIRTIO_BLK (test.config:2): wanted 'y', got 'n': unmet dependency VIRTIO"


def test_verify_unmet_dependency_names_every_unmet_term(ktree):
    cfg = ktree / ".config"
    cfg.write_text(cfg.read_text().replace("CONFIG_BLOCK=y", "# CONFIG_BLOCK is not set")
                   .replace("CONFIG_SWAP=y\n", ""))
    [blk, swap] = check(ktree, ("VIRTIO_BLK", "m"), ("SWAP", "y"))
    assert blk.reason == "unmet dependency VIRTIO && BLOCK"
    assert "wanted 'm', got 'n'" in str(blk)
    assert swap.reason == "unmet dependency BLOCK"  # from the source'd mm/Kconfig


def test_verify_selected_symbol_names_selector(ktree):
    [m] = check(ktree, ("CRASH_CORE", "n"))
    assert m.got == "y"
    assert m.reason == "selected by LIVEDUMP"
    assert "CONFIG_CRASH_CORE (test.config:1): wanted 'n', got 'y': selected by LIVEDUMP" == str(m)


def test_verify_unknown_symbol(ktree):
    [m] = check(ktree, ("NO_SUCH_THING", "y"))
    assert m.got is None
    assert str(m) == "CONFIG_NO_SUCH_THING (test.config:1): no such symbol in this Kconfig tree"


def test_if_present_symbol_is_checked_only_where_it_exists(ktree, tmp_path):
    frag = tmp_path / "t.config"
    frag.write_text("CONFIG_BLOCK=y\n# harness: if-present\nCONFIG_NO_SUCH_THING=y\nCONFIG_OTHER_MISSING=y\n"
                    "# harness: if-present\nCONFIG_VIRTIO_BLK=y\n")
    block, optional, other, present = parse_fragment(frag)
    assert (block.if_present, optional.if_present, other.if_present, present.if_present) == (False, True, False, True)
    env = {"srctree": str(ktree)}
    # Absent and if-present: skipped. Absent and not: reported. Present and if-present: checked as usual.
    mismatches = verify(ktree / "Kconfig", ktree / ".config", [block, optional, other, present], env)
    assert [(m.request.symbol, m.got) for m in mismatches] == [("OTHER_MISSING", None), ("VIRTIO_BLK", "n")]


def test_verify_choice(ktree):
    [m] = check(ktree, ("PREEMPT", "y"))
    assert m.got == "n"
    assert m.reason == "another choice is selected: PREEMPT_NONE"


def test_verify_promptless_symbol(ktree):
    [m] = check(ktree, ("HIDDEN", "n"))
    assert m.got == "y"
    # Not selected: it is a default; the reason says so rather than blaming a selector.
    assert m.reason == "set by a default or another fragment"


def test_verify_int_string_and_range(ktree):
    cfg = ktree / ".config"
    cfg.write_text(cfg.read_text().replace("CONFIG_NR_CPUS=8", "CONFIG_NR_CPUS=200"))  # clamped by range
    nr, cmd = check(ktree, ("NR_CPUS", "200"), ("CMDLINE", "console=ttyS1"))
    assert nr.got == "8" and nr.reason == "value outside the allowed range"
    assert cmd.got == "console=ttyS0 quiet" and "wanted 'console=ttyS1'" in str(cmd)


def test_verify_hex_without_prefix(ktree):
    """Kconfig accepts hex values without 0x; comparing them must not crash."""
    assert check(ktree, ("PHYS_START", "1000000")) == []
    # Hex is hex even without the prefix: 16777216 decimal is not 0x16777216.
    [m] = check(ktree, ("PHYS_START", "16777216"))
    assert m.got == "0x1000000"


def test_verify_bad_number_is_a_mismatch_not_a_crash(ktree):
    [m] = check(ktree, ("NR_CPUS", "eight"))
    assert m.got == "8"
    assert "wanted 'eight'" in str(m)
    assert m.reason == "'eight' is not a valid int value"


def test_verify_modules_keyword_makes_modules_symbol(ktree):
    """With MODULES=y a tristate can be m; without the bare-keyword shim it could not."""
    cfg = ktree / ".config"
    cfg.write_text(cfg.read_text().replace("# CONFIG_PCI is not set", "CONFIG_PCI=y\nCONFIG_VIRTIO=y")
                   + "CONFIG_VIRTIO_BLK=m\n")
    assert check(ktree, ("VIRTIO_BLK", "m"), ("PCI", "y")) == []
    cfg.write_text(cfg.read_text().replace("CONFIG_MODULES=y", "# CONFIG_MODULES is not set"))
    [m] = check(ktree, ("VIRTIO_BLK", "m"))
    assert m.got == "y"  # m is promoted to y without modules


def test_verify_broken_kconfig_is_config_error(ktree):
    (ktree / "Kconfig").write_text(TINY_KCONFIG + 'source "missing/Kconfig"\n')
    with pytest.raises(ConfigError) as ei:
        check(ktree, ("BLOCK", "y"))
    assert "kconfiglib cannot load" in str(ei.value)


def test_verify_restores_environment_and_cwd(ktree, monkeypatch):
    monkeypatch.delenv("srctree", raising=False)
    monkeypatch.setenv("ARCH", "arm64")
    cwd = os.getcwd()
    verify(ktree / "Kconfig", ktree / ".config", [], {"srctree": str(ktree), "ARCH": "x86_64"})
    assert "srctree" not in os.environ
    assert os.environ["ARCH"] == "arm64"
    assert os.getcwd() == cwd


def test_bare_modules_rewrite_only_touches_the_keyword():
    text = "config MODULES\n\tbool \"m\"\n\tmodules\n\thelp\n\t  modules are nice\nconfig X\n\tbool\n"
    out = kconfig._BARE_MODULES.sub(r"\1option modules", text)
    assert out == text.replace("\tmodules\n", "\toption modules\n", 1)
