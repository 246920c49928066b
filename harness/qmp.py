"""A minimal QMP client over QEMU's unix socket (standard library only).

QMP speaks one JSON object per line: a greeting, then for each command either
``{"return": ...}`` or ``{"error": {...}}``, with asynchronous ``{"event": ...}``
objects in between, which this client collects and otherwise ignores.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import HarnessError


class QmpError(HarnessError):
    def __init__(self, message: str, *, detail: str = ""):
        super().__init__("qmp", message, detail=detail, exit_code=HarnessError.INFRA)


@dataclass
class QmpClient:
    path: Path
    timeout: float = 30.0
    events: list[dict[str, Any]] = field(default_factory=list)
    greeting: dict[str, Any] = field(default_factory=dict)
    _sock: socket.socket | None = None
    _buffer: bytes = b""

    @classmethod
    def connect(cls, path: Path, *, timeout: float = 30.0, wait: float = 10.0) -> QmpClient:
        """Connect (retrying for up to ``wait`` seconds while QEMU creates the socket) and negotiate."""
        client = cls(path=path, timeout=timeout)
        deadline = time.monotonic() + wait
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                break
            except OSError as e:
                sock.close()
                if time.monotonic() >= deadline:
                    raise QmpError(f"cannot connect to {path}: {e}") from None
                time.sleep(0.2)
        client._sock = sock
        client.greeting = client._read_message(timeout)
        if "QMP" not in client.greeting:
            client.close()
            raise QmpError(f"{path} did not greet with QMP", detail=json.dumps(client.greeting))
        client.execute("qmp_capabilities")
        return client

    def _read_message(self, timeout: float) -> dict[str, Any]:
        assert self._sock is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QmpError(f"no reply from QEMU within {timeout:.0f}s")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise QmpError("QEMU closed the QMP connection")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except json.JSONDecodeError as e:
            raise QmpError(f"bad QMP message: {e}", detail=line.decode(errors="replace")) from None

    def execute(self, command: str, arguments: dict[str, Any] | None = None, *,
                timeout: float | None = None) -> Any:
        """Send one command and return its ``return`` value; a QMP error raises QmpError."""
        if self._sock is None:
            raise QmpError("not connected")
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self._sock.sendall(json.dumps(message).encode() + b"\n")
        while True:
            reply = self._read_message(self.timeout if timeout is None else timeout)
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                err = reply["error"]
                raise QmpError(f"{command}: {err.get('class', 'error')}: {err.get('desc', '')}")
            if "return" in reply:
                return reply["return"]

    def wait_event(self, name: str, timeout: float, **data: Any) -> dict[str, Any]:
        """The first event called name whose data holds data's items (one already received counts)."""
        def matches(event: dict[str, Any]) -> bool:
            return event.get("event") == name and all(event.get("data", {}).get(k) == v for k, v in data.items())

        for event in self.events:
            if matches(event):
                return event
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QmpError(f"no {name} event {data or ''} within {timeout:.0f}s")
            try:
                message = self._read_message(left)
            except QmpError:
                if time.monotonic() < deadline:
                    raise  # QEMU went away or sent garbage
                continue
            if "event" in message:
                self.events.append(message)
                if matches(message):
                    return message

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> QmpClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
