"""Errors the harness reports to the user as one clear line."""

from __future__ import annotations


class HarnessError(Exception):
    """A failure the user can act on; printed as ``harness: <stage>: <message>``.

    ``exit_code`` lets callers such as bisect tell an infrastructure fault
    (``INFRA``) from a verdict about the kernel under test.
    """

    INFRA = 2

    def __init__(self, stage: str, message: str, *, detail: str = "", exit_code: int = 1):
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message
        self.detail = detail
        self.exit_code = exit_code


class SourceError(HarnessError):
    def __init__(self, message: str, *, detail: str = ""):
        super().__init__("source", message, detail=detail)


class PatchError(HarnessError):
    def __init__(self, message: str, *, detail: str = ""):
        super().__init__("patches", message, detail=detail)


class ConfigError(HarnessError):
    def __init__(self, message: str, *, detail: str = ""):
        super().__init__("config", message, detail=detail)


class BuildError(HarnessError):
    def __init__(self, message: str, *, detail: str = ""):
        super().__init__("build", message, detail=detail)


class ToolMissing(HarnessError):
    """A host program the harness needs is not installed."""

    def __init__(self, stage: str, program: str, package: str):
        super().__init__(
            stage,
            f"{program} not found; install the Debian package {package} (make setup does)",
            exit_code=HarnessError.INFRA,
        )


class GuestTimeout(HarnessError):
    """A named timeout fired while talking to the guest."""

    def __init__(self, which: str, seconds: float, console_tail: str, *, waiting_for: str = ""):
        what = f" waiting for {waiting_for}" if waiting_for else ""
        super().__init__(
            "qemu",
            f"{which} timeout after {seconds:.1f}s{what}",
            detail="last console lines:\n" + console_tail,
        )
        self.which = which
        self.seconds = seconds
        self.console_tail = console_tail


class GuestCrashed(HarnessError):
    """The guest console showed an oops, panic, BUG or WARNING."""

    def __init__(self, marker: str, console_tail: str):
        super().__init__("qemu", f"guest kernel reported {marker!r}", detail="last console lines:\n" + console_tail)
        self.marker = marker
