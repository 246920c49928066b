"""Kernel configuration from fragments, verified symbol by symbol.

Fragments are plain ``CONFIG_FOO=value`` files in ``harness/fragments``. The
harness merges them into ``allnoconfig`` (``KCONFIG_ALLCONFIG``) and runs
``olddefconfig``; then kconfiglib loads the tree's real Kconfig and checks that
every symbol a fragment asked for has the value asked for. Kconfig silently
drops a request whose dependencies are unmet; here that is an error naming
the symbol, the wanted and the actual value, and the unmet dependency.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .arch import DEFAULT as DEFAULT_ARCH
from .arch import Arch
from .errors import ConfigError
from .runner import Runner
from .source import release_from_makefile

_LINE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_NOT_SET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


@dataclass(frozen=True)
class Request:
    symbol: str  # without the CONFIG_ prefix
    value: str  # "y", "m", "n", a number, or a string without quotes
    origin: str  # fragment:line
    quoted: bool = False  # written as "..." in the fragment: a string even if it looks like a number
    # After a "# harness: if-present" line: only checked when the tree's Kconfig has the symbol
    # (test support added late in the series, absent from the kernels bisect builds before it).
    if_present: bool = False


@dataclass(frozen=True)
class Mismatch:
    request: Request
    got: str | None  # None: the symbol does not exist in this Kconfig tree
    reason: str

    def __str__(self) -> str:
        if self.got is None:
            return f"CONFIG_{self.request.symbol} ({self.request.origin}): {self.reason}"
        return (f"CONFIG_{self.request.symbol} ({self.request.origin}): wanted {self.request.value!r}, "
                f"got {self.got!r}: {self.reason}")


IF_PRESENT = "# harness: if-present"


def parse_fragment(path: Path) -> list[Request]:
    requests = []
    if_present = False
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        origin = f"{path.name}:{lineno}"
        m = _NOT_SET.match(line)
        if m:
            requests.append(Request(m.group(1)[7:], "n", origin, if_present=if_present))
            if_present = False
            continue
        if line == IF_PRESENT:
            if_present = True
            continue
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise ConfigError(f"{path}:{lineno}: not a CONFIG_FOO=value line: {line!r}")
        value = m.group(2)
        quoted = len(value) >= 2 and value[0] == value[-1] == '"'
        if quoted:
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        requests.append(Request(m.group(1)[7:], value, origin, quoted, if_present))
        if_present = False
    return requests


def merge_requests(fragments: list[Path]) -> list[Request]:
    """Later fragments override earlier ones, as merge_config.sh does."""
    merged: dict[str, Request] = {}
    for path in fragments:
        if not path.is_file():
            raise ConfigError(f"fragment {path} does not exist")
        for req in parse_fragment(path):
            merged.pop(req.symbol, None)
            merged[req.symbol] = req
    return list(merged.values())


def render_allconfig(requests: list[Request]) -> str:
    out = []
    for r in requests:
        if r.value == "n" and not r.quoted:
            out.append(f"# CONFIG_{r.symbol} is not set")
        elif r.quoted:
            escaped = r.value.replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'CONFIG_{r.symbol}="{escaped}"')
        elif r.value in ("y", "m") or re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", r.value):
            out.append(f"CONFIG_{r.symbol}={r.value}")
        else:
            escaped = r.value.replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'CONFIG_{r.symbol}="{escaped}"')
    return "\n".join(out) + "\n"


@contextmanager
def _kconfig_env(env: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _unmet_terms(kconfiglib, expr) -> list[str]:
    """The conjuncts of a dependency expression that evaluate to n."""
    if isinstance(expr, tuple) and expr[0] == kconfiglib.AND:
        return _unmet_terms(kconfiglib, expr[1]) + _unmet_terms(kconfiglib, expr[2])
    if kconfiglib.expr_value(expr) == 0:
        return [kconfiglib.expr_str(expr)]
    return []


def _explain(kconfiglib, sym, want: str) -> str:
    if want == "n" or (want == "m" and sym.tri_value == 2):
        if kconfiglib.expr_value(sym.rev_dep):
            return f"selected by {kconfiglib.expr_str(sym.rev_dep)}"
        if kconfiglib.expr_value(sym.weak_rev_dep):
            return f"implied by {kconfiglib.expr_str(sym.weak_rev_dep)}"
        return "set by a default or another fragment"
    unmet = _unmet_terms(kconfiglib, sym.direct_dep)
    if unmet:
        return "unmet dependency " + " && ".join(unmet)
    if sym.choice is not None and sym.choice.selection is not sym:
        sel = sym.choice.selection
        return f"another choice is selected: {sel.name if sel else 'none'}"
    if not sym.nodes or all(node.prompt is None for node in sym.nodes):
        return "symbol has no prompt; it can only be selected or defaulted"
    if sym.type in (kconfiglib.INT, kconfiglib.HEX) and _number(kconfiglib, sym, want) is None:
        return f"{want!r} is not a valid {kconfiglib.TYPE_TO_STR[sym.type]} value"
    if sym.type in (kconfiglib.INT, kconfiglib.HEX) and sym.ranges:
        return "value outside the allowed range"
    return f"visibility {kconfiglib.TRI_TO_STR[sym.visibility]}, assignable {sym.assignable}"


def _number(kconfiglib, sym, value: str) -> int | None:
    """An int or hex symbol's value as Kconfig reads it: hex may lack the 0x prefix."""
    try:
        return int(value, 16 if sym.type == kconfiglib.HEX else 10)
    except ValueError:
        return None


def _kconfig_class(kconfiglib):
    """kconfiglib 14.1 predates the bare ``modules`` keyword (Linux 5.13+).

    It already treats MODULES as the modules symbol, so reading the keyword
    as the older ``option modules`` spelling changes nothing else.
    """

    class KernelKconfig(kconfiglib.Kconfig):
        def _open(self, filename, mode):
            f = super()._open(filename, mode)
            if mode != "r" or "Kconfig" not in os.path.basename(filename):
                return f
            with f:
                text = f.read()
            return io.StringIO(_BARE_MODULES.sub(r"\1option modules", text))

    return KernelKconfig


_BARE_MODULES = re.compile(r"^([ \t]+)modules[ \t]*$", re.M)


def verify(kconfig: Path, config: Path, requests: list[Request], env: Mapping[str, str]) -> list[Mismatch]:
    """Load ``kconfig`` with kconfiglib and compare ``config`` against the requests."""
    import kconfiglib

    with _kconfig_env(env), tempfile.TemporaryDirectory(prefix="kconfiglib-") as cwd:
        old_cwd = os.getcwd()
        os.chdir(cwd)  # $(cc-option) makes scratch directories in the cwd
        try:
            kconf = _kconfig_class(kconfiglib)(str(kconfig), warn=False, suppress_traceback=False)
            kconf.load_config(str(config), replace=True)
        except kconfiglib.KconfigError as e:
            raise ConfigError(f"kconfiglib cannot load {kconfig}: {e}") from None
        finally:
            os.chdir(old_cwd)
        mismatches = []
        for req in requests:
            sym = kconf.syms.get(req.symbol)
            if sym is None or not sym.nodes:
                if req.if_present:
                    continue
                mismatches.append(Mismatch(req, None, "no such symbol in this Kconfig tree"))
                continue
            got = sym.str_value
            if sym.type in (kconfiglib.BOOL, kconfiglib.TRISTATE):
                ok = got == req.value
            elif sym.type in (kconfiglib.INT, kconfiglib.HEX):
                want = _number(kconfiglib, sym, req.value)
                ok = want is not None and _number(kconfiglib, sym, got) == want
            else:
                ok = got == req.value
            if not ok:
                mismatches.append(Mismatch(req, got, _explain(kconfiglib, sym, req.value)))
        return mismatches


@dataclass(frozen=True)
class ConfigResult:
    config: Path
    changed: bool


def kconfig_env(src: Path, make_vars: Mapping[str, str], kernel_version: str,
                arch: Arch = DEFAULT_ARCH) -> dict[str, str]:
    """The environment the kernel's Makefile gives Kconfig for ``arch``: its ARCH and SRCARCH, and the
    compiler and binutils make uses, for $(cc-option) and friends."""
    cc = make_vars.get("CC", arch.helper_cc)
    version_text = subprocess.run(f"{cc} --version", shell=True, capture_output=True, text=True).stdout
    env = {
        "srctree": str(src),
        "ARCH": arch.kernel_arch,
        "SRCARCH": arch.srcarch,
        "KERNELVERSION": kernel_version,
        "CC": cc,
        "LD": make_vars.get("LD", f"{arch.cross_compile}ld"),
        "HOSTCC": "gcc",
        "HOSTCXX": "g++",
        "CC_VERSION_TEXT": version_text.splitlines()[0] if version_text else "",
        "RUSTC": "rustc",
        "BINDGEN": "bindgen",
        "PAHOLE": "pahole",
    }
    if arch.cross:
        # TOOLS_SUPPORT_RELR asks these: arm64's relocatable kernel uses RELR when the cross binutils can.
        env["NM"] = make_vars.get("NM", f"{arch.cross_compile}nm")
        env["OBJCOPY"] = make_vars.get("OBJCOPY", f"{arch.cross_compile}objcopy")
    return env


def configure(src: Path, build_dir: Path, fragments: list[Path], make_vars: Mapping[str, str],
              runner: Runner, log: Path | None = None, arch: Arch = DEFAULT_ARCH) -> ConfigResult:
    """Write ``build_dir/.config`` from the fragments; verify; replace only on change."""
    requests = merge_requests(fragments)
    build_dir.mkdir(parents=True, exist_ok=True)
    allconfig = build_dir / "livedump-allconfig"
    allconfig.write_text(render_allconfig(requests))
    candidate = build_dir / ".config.candidate"
    candidate.unlink(missing_ok=True)
    make = ["make", "-s", "-C", str(src), f"O={build_dir}", *(f"{k}={v}" for k, v in make_vars.items())]
    env = {"KCONFIG_CONFIG": str(candidate)}
    for target, extra in (("allnoconfig", {"KCONFIG_ALLCONFIG": str(allconfig)}), ("olddefconfig", {})):
        r = runner.run([*make, target], env={**env, **extra}, check=False, capture=True)
        if log is not None:
            with open(log, "a") as f:
                f.write((r.stdout or "") + (r.stderr or ""))
        if r.returncode != 0:
            raise ConfigError(f"make {target} failed", detail=((r.stdout or "") + (r.stderr or "")).strip())
    config = build_dir / ".config"
    if runner.dry_run:
        return ConfigResult(config, False)
    version = release_from_makefile((src / "Makefile").read_text()) or ""
    mismatches = verify(src / "Kconfig", candidate, requests, kconfig_env(src, make_vars, version, arch))
    if mismatches:
        candidate.unlink(missing_ok=True)
        first = mismatches[0]
        more = f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
        raise ConfigError(f"{first}{more}", detail="\n".join(str(m) for m in mismatches))
    if config.is_file() and config.read_bytes() == candidate.read_bytes():
        candidate.unlink()
        return ConfigResult(config, False)
    candidate.replace(config)
    return ConfigResult(config, True)

