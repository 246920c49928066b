"""The pinned kernel source: find the tarball, verify it, extract it once.

The lock file (``kernel.lock.json``) names a Debian package version and the
sha256 of the source tarball it ships. The tarball is taken from
``/usr/src`` when the installed package is exactly that version, otherwise
``apt-get download`` fetches the pinned .deb into the cache. Extraction goes
to a temporary directory that is renamed into place, so an interrupted run
never leaves a half tree that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import SourceError, ToolMissing
from .runner import Runner
from .settings import Paths

STAMP = ".livedump-source"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Lock:
    package: str
    version: str
    kernel_release: str
    tarball: str
    sha256: str

    @property
    def name(self) -> str:
        return f"{self.package}_{self.version}"

    @property
    def deb_name(self) -> str:
        # apt-get download names files with ':' escaped as '%3a'.
        return f"{self.package}_{self.version.replace(':', '%3a')}_all.deb"


def load_lock(path: Path) -> Lock:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SourceError(f"lock file {path} is missing") from None
    except json.JSONDecodeError as e:
        raise SourceError(f"lock file {path} is not valid JSON: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SourceError(f"lock file {path} cannot be read: {e}") from None
    if not isinstance(data, dict):
        raise SourceError(f"lock file {path} is not a JSON object")
    fields = Lock.__dataclass_fields__
    missing = [f for f in fields if not isinstance(data.get(f), str) or not data.get(f)]
    if missing:
        raise SourceError(f"lock file {path} lacks {', '.join(missing)}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SourceError(f"lock file {path} has unknown keys {', '.join(unknown)}")
    lock = Lock(**{f: data[f] for f in fields})
    if not _SHA256.match(lock.sha256):
        raise SourceError(f"lock file {path}: sha256 {lock.sha256!r} is not 64 lowercase hex digits")
    return lock


def write_lock(path: Path, lock: Lock) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(lock), indent=2) + "\n")
    tmp.replace(path)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_tarball(path: Path, lock: Lock) -> None:
    if not path.is_file():
        raise SourceError(f"tarball {path} does not exist")
    got = sha256_file(path)
    if got != lock.sha256:
        raise SourceError(
            f"tarball {path} is corrupt or not the pinned one: sha256 {got}, lock wants {lock.sha256}"
        )


def installed_version(package: str, runner: Runner) -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    r = runner.run(["dpkg-query", "-W", "-f=${Version} ${db:Status-Status}", package],
                   check=False, capture=True, mutates=False)
    if r.returncode != 0:
        return None
    version, _, status = r.stdout.strip().partition(" ")
    return version if status == "installed" else None


def _tarball_from_deb(deb: Path, lock: Lock, work: Path, runner: Runner) -> Path:
    if shutil.which("dpkg-deb") is None:
        raise ToolMissing("source", "dpkg-deb", "dpkg")
    out = work / "deb"
    runner.run(["dpkg-deb", "-x", deb, out])
    tarball = out / "usr" / "src" / lock.tarball
    if not tarball.is_file() and not runner.dry_run:
        raise SourceError(f"{deb} does not contain usr/src/{lock.tarball}")
    return tarball


def download_deb(lock: Lock, paths: Paths, runner: Runner) -> Path:
    """Fetch the pinned .deb with apt-get download into the cache."""
    deb = paths.downloads / lock.deb_name
    if deb.is_file():
        return deb
    if shutil.which("apt-get") is None:
        raise ToolMissing("source", "apt-get", "apt")
    paths.downloads.mkdir(parents=True, exist_ok=True)
    r = runner.run(["apt-get", "download", f"{lock.package}={lock.version}"], cwd=paths.downloads,
                   check=False, capture=True)
    if r.returncode != 0:
        newest = newest_version(lock.package, runner)
        hint = f" (the archive has {newest})" if newest else ""
        raise SourceError(
            f"pinned {lock.package} {lock.version} cannot be downloaded{hint}; "
            "run `python -m harness source --repin` to pin the newest 6.1 package",
            detail=(r.stderr or "").strip(),
        )
    if not deb.is_file() and not runner.dry_run:
        found = sorted(paths.downloads.glob(f"{lock.package}_*.deb"))
        raise SourceError(f"apt-get download did not produce {deb.name} (found {[p.name for p in found]})")
    return deb


def newest_version(package: str, runner: Runner) -> str | None:
    if shutil.which("apt-cache") is None:
        return None
    r = runner.run(["apt-cache", "madison", package], check=False, capture=True, mutates=False)
    versions = [line.split("|")[1].strip() for line in r.stdout.splitlines() if line.count("|") >= 2]
    if not versions:
        return None
    return max(versions, key=_debian_version_key)


def _debian_version_key(version: str) -> list:
    # Good enough for linux-source-6.1 versions such as 6.1.192-2 or 6.1.76-1~deb12u1.
    parts = re.split(r"[.\-+~]", version.split(":")[-1])
    return [(0, int(p)) if p.isdigit() else (1, p) for p in parts]


def extract(tarball: Path, dest: Path, sha256: str, runner: Runner) -> Path:
    """Extract tarball's single top directory to dest atomically."""
    if (dest / STAMP).is_file() and (dest / STAMP).read_text().strip() == sha256:
        return dest
    if dest.exists():
        raise SourceError(f"{dest} exists but is not an extraction of the pinned tarball; remove it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
    try:
        r = runner.run(["tar", "-xf", tarball, "-C", tmp], check=False, capture=True)
        if r.returncode != 0:
            raise SourceError(f"cannot extract {tarball}: tar exited {r.returncode}", detail=(r.stderr or "").strip())
        if runner.dry_run:
            return dest
        tops = [p for p in tmp.iterdir()]
        if len(tops) != 1 or not tops[0].is_dir():
            raise SourceError(f"{tarball} does not hold exactly one top directory: {[p.name for p in tops]}")
        (tops[0] / STAMP).write_text(sha256 + "\n")
        tops[0].rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def obtain(lock: Lock, paths: Paths, runner: Runner, *, system_src: Path = Path("/usr/src")) -> Path:
    """Return the extracted pristine source of the pinned package."""
    dest = paths.sources / lock.name
    if (dest / STAMP).is_file() and (dest / STAMP).read_text().strip() == lock.sha256:
        return dest
    with tempfile.TemporaryDirectory(prefix="livedump-deb-") as work:
        if installed_version(lock.package, runner) == lock.version and (system_src / lock.tarball).is_file():
            tarball = system_src / lock.tarball
        else:
            tarball = _tarball_from_deb(download_deb(lock, paths, runner), lock, Path(work), runner)
        if not runner.dry_run:
            verify_tarball(tarball, lock)
        return extract(tarball, dest, lock.sha256, runner)


def repin(lock_path: Path, paths: Paths, runner: Runner, check_series) -> Lock:
    """Pin the newest linux-source-6.1 in the archive, if the series applies to it.

    ``check_series(source_dir)`` raises a HarnessError when the series does not apply.
    """
    old = load_lock(lock_path)
    version = newest_version(old.package, runner)
    if version is None:
        raise SourceError(f"apt-cache knows no version of {old.package}; run apt-get update")
    candidate = Lock(old.package, version, old.kernel_release, old.tarball, "0" * 64)
    deb = download_deb(candidate, paths, runner)
    with tempfile.TemporaryDirectory(prefix="livedump-deb-") as work:
        tarball = _tarball_from_deb(deb, candidate, Path(work), runner)
        sha = sha256_file(tarball)
        src = extract(tarball, paths.sources / f"{old.package}_{version}", sha, runner)
    release = release_from_makefile((src / "Makefile").read_text())
    if release is None or not release.startswith("6.1."):
        raise SourceError(f"{old.package} {version} holds kernel {release}, not 6.1")
    new = Lock(old.package, version, release, old.tarball, sha)
    check_series(src)
    write_lock(lock_path, new)
    return new


def release_from_makefile(text: str) -> str | None:
    values = {}
    for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL"):
        m = re.search(rf"^{key}\s*=\s*(\d+)\s*$", text, re.M)
        if not m:
            return None
        values[key] = m.group(1)
    return "{VERSION}.{PATCHLEVEL}.{SUBLEVEL}".format(**values)
