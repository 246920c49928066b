"""The QMP client against a fake QEMU on a unix socket."""

from __future__ import annotations

import json
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.qmp import QmpClient, QmpError

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}


class FakeQemu:
    """Accepts one client, greets, and answers each command with handler(message) -> list of replies."""

    def __init__(self, path: Path, handler, greeting: dict = GREETING):
        self.received: list[dict] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.handler = handler
        self.greeting = greeting
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            conn.sendall(json.dumps(self.greeting).encode() + b"\r\n")
            buffer = b""
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    message = json.loads(line)
                    self.received.append(message)
                    for reply in self.handler(message):
                        conn.sendall(json.dumps(reply).encode() + b"\r\n")

    def close(self) -> None:
        self.server.close()
        self.thread.join(timeout=5)


@pytest.fixture
def sock_path() -> Iterator[Path]:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="qmp-") as d:
        yield Path(d) / "qmp.sock"


def qemu_like(message: dict) -> list[dict]:
    if message["execute"] == "qmp_capabilities":
        return [{"return": {}}]
    if message["execute"] == "dump-guest-memory":
        return [{"event": "STOP", "data": {}}, {"event": "RESUME", "data": {}}, {"return": {}}]
    if message["execute"] == "query-status":
        return [{"return": {"status": "running", "running": True}}]
    return [{"error": {"class": "CommandNotFound", "desc": f"The command {message['execute']} has not been found"}}]


def test_negotiates_and_returns_results(sock_path):
    fake = FakeQemu(sock_path, qemu_like)
    with QmpClient.connect(sock_path, timeout=5) as qmp:
        assert qmp.greeting["QMP"]["version"]["qemu"]["major"] == 7
        assert qmp.execute("query-status") == {"status": "running", "running": True}
        args = {"paging": False, "protocol": "file:/tmp/x", "detach": False}
        assert qmp.execute("dump-guest-memory", args) == {}
        assert [e["event"] for e in qmp.events] == ["STOP", "RESUME"]
    fake.close()
    assert fake.received[0] == {"execute": "qmp_capabilities"}
    assert fake.received[2] == {"execute": "dump-guest-memory", "arguments": args}


def test_a_qmp_error_is_a_harness_error(sock_path):
    fake = FakeQemu(sock_path, qemu_like)
    with QmpClient.connect(sock_path, timeout=5) as qmp, pytest.raises(QmpError, match="CommandNotFound"):
        qmp.execute("no-such-command")
    fake.close()


def test_no_reply_times_out(sock_path):
    fake = FakeQemu(sock_path, lambda m: [{"return": {}}] if m["execute"] == "qmp_capabilities" else [])
    with QmpClient.connect(sock_path, timeout=5) as qmp, pytest.raises(QmpError, match="no reply"):
        qmp.execute("dump-guest-memory", timeout=0.3)
    fake.close()


def test_not_qmp_is_refused(sock_path):
    fake = FakeQemu(sock_path, qemu_like, greeting={"hello": 1})
    with pytest.raises(QmpError, match="did not greet"):
        QmpClient.connect(sock_path, timeout=5)
    fake.close()


def test_missing_socket(sock_path):
    with pytest.raises(QmpError, match="cannot connect"):
        QmpClient.connect(sock_path, timeout=1, wait=0.3)


def unplugs(message: dict) -> list[dict]:
    """device_del returns at once; the guest's eject comes later as DEVICE_DELETED events."""
    if message["execute"] == "device_del":
        path = f"/machine/peripheral/{message['arguments']['id']}"
        return [{"return": {}},
                {"event": "DEVICE_DELETED", "data": {"path": f"{path}/virtio-backend"}},
                {"event": "DEVICE_DELETED", "data": {"device": message["arguments"]["id"], "path": path}}]
    return qemu_like(message)


def test_wait_event_matches_name_and_data(sock_path):
    fake = FakeQemu(sock_path, unplugs)
    with QmpClient.connect(sock_path, timeout=5) as qmp:
        assert qmp.execute("device_del", {"id": "vdisk3"}) == {}
        event = qmp.wait_event("DEVICE_DELETED", 5, device="vdisk3")
        assert event["data"]["path"] == "/machine/peripheral/vdisk3"
        with pytest.raises(QmpError, match="no DEVICE_DELETED event"):
            qmp.wait_event("DEVICE_DELETED", 0.3, device="vdisk4")
    fake.close()
