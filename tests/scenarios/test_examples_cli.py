"""Scenario: the examples, served by ``squall run`` and run as scripts.

Each example starts in a subprocess on a port the OS picks, is spoken to
over real sockets, and is stopped with SIGTERM (which must end it cleanly).
"""

from __future__ import annotations

import asyncio
import http.client
import importlib
import json
import os
import re
import selectors
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import squall
from squall.iostream import StreamClosedError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SRC = str(Path(squall.__file__).resolve().parent.parent)
# Bounds for a loaded machine; the loops end as soon as their condition holds.
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
# The fan-out page asks three backends that each take this long.
BACKEND_DELAY = 0.4


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Process:
    """A subprocess whose stderr and stdout are read together."""

    def __init__(self, *argv: str, cwd: Path = ROOT) -> None:
        self.proc = subprocess.Popen(
            list(argv), cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)
        self.output = b""

    def wait_for(self, pattern: bytes, timeout: float = STARTUP_TIMEOUT) -> re.Match[bytes]:
        """Wait until the output matches ``pattern``; return the match."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.output)
            if match is not None:
                return match
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None and not self._selector.select(0):
                self.kill()
                raise AssertionError(f"no {pattern!r} in the output:\n{self.output.decode(errors='replace')}")
            if self._selector.select(min(remaining, 0.2)):
                self.output += self.proc.stdout.read() or b""

    def port(self) -> int:
        return int(self.wait_for(rb"(?:127\.0\.0\.1):(\d+)").group(1))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self._selector.close()
            self.proc.stdout.close()


def squall_run(target: str, *args: str) -> Process:
    return Process(sys.executable, "-m", "squall", "run", "--port", "0", target, *args)


def script(path: Path, *args: str) -> Process:
    return Process(sys.executable, str(path), "--port=0", *args)


def http_get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --- hello -------------------------------------------------------------------


def test_hello_with_squall_run() -> None:
    server = squall_run("examples/hello/app.py:make_app")
    try:
        assert http_get(server.port(), "/") == (200, b"Hello, world")
    finally:
        assert server.stop() == 0


# --- push_tcp ----------------------------------------------------------------


@pytest.fixture
def push_modules() -> Iterator[tuple[ModuleType, ModuleType]]:
    """The example's ``pushproto`` and ``client`` modules, imported here."""
    sys.path.insert(0, str(EXAMPLES / "push_tcp"))
    try:
        yield importlib.import_module("pushproto"), importlib.import_module("client")
    finally:
        sys.path.remove(str(EXAMPLES / "push_tcp"))
        sys.modules.pop("pushproto", None)
        sys.modules.pop("client", None)


async def _push_conversation(port: int, proto: ModuleType, client_module: ModuleType) -> None:
    PushClient = client_module.PushClient
    alice = await PushClient.connect("127.0.0.1", port)
    bob = await PushClient.connect("127.0.0.1", port)
    sender = await PushClient.connect("127.0.0.1", port)
    try:
        await alice.register("alice")
        await bob.register("bob")
        assert await sender.push("alice", b"hello alice") is True
        assert await sender.push("bob", b"\x00binary\xff") is True
        assert await sender.push("nobody", b"lost") is False
        assert await alice.receive() == b"hello alice"
        assert await bob.receive() == b"\x00binary\xff"
        # A message pushed while alice waits for a reply is kept for later.
        assert await alice.push("alice", b"to myself") is True
        await alice.ping()
        assert await alice.receive() == b"to myself"

        # alice reconnects: the id moves, the old connection is closed.
        alice_again = await PushClient.connect("127.0.0.1", port)
        try:
            await alice_again.register("alice")
            with pytest.raises(StreamClosedError):
                await alice.receive()
            assert await sender.push("alice", b"on the new connection") is True
            assert await alice_again.receive() == b"on the new connection"
        finally:
            alice_again.close()

        # A frame claiming more than MAX_FRAME bytes gets an ERROR and a close.
        await sender.stream.write(struct.pack(">IB", proto.MAX_FRAME + 1, proto.PUSH))
        with pytest.raises(proto.ProtocolError, match="frame length"):
            await sender.receive()
    finally:
        for client in (alice, bob, sender):
            client.close()


def test_push_tcp_with_squall_run(push_modules: tuple[ModuleType, ModuleType]) -> None:
    proto, client_module = push_modules
    server = squall_run("examples/push_tcp/app.py:make_server")
    try:
        asyncio.run(_push_conversation(server.port(), proto, client_module))
    finally:
        assert server.stop() == 0


def test_push_tcp_as_a_script_with_its_client() -> None:
    server = script(EXAMPLES / "push_tcp" / "app.py")
    listener = None
    try:
        port = server.port()
        client = str(EXAMPLES / "push_tcp" / "client.py")
        listener = Process(sys.executable, client, "--port", str(port), "listen", "carol")
        listener.wait_for(rb"registered as carol\n")
        sent = subprocess.run(
            [sys.executable, client, "--port", str(port), "send", "carol", "hi carol"],
            env=_env(),
            capture_output=True,
            timeout=STARTUP_TIMEOUT,
        )
        assert (sent.returncode, sent.stdout) == (0, b"delivered\n")
        listener.wait_for(rb"hi carol\n")
        offline = subprocess.run(
            [sys.executable, client, "--port", str(port), "send", "dave", "anyone?"],
            env=_env(),
            capture_output=True,
            timeout=STARTUP_TIMEOUT,
        )
        assert (offline.returncode, offline.stdout) == (1, b"offline\n")
    finally:
        if listener is not None:
            listener.kill()
        server.stop()


# --- fanout ------------------------------------------------------------------


def _page(port: int) -> dict:
    query = "&".join(f"{name}={BACKEND_DELAY}" for name in ("users", "orders", "recommendations"))
    started = time.monotonic()
    status, body = http_get(port, f"/?{query}")
    elapsed = time.monotonic() - started
    assert status == 200, body
    page = json.loads(body)
    assert set(page["parts"]) == {"users", "orders", "recommendations"}
    # In parallel: the page takes about one backend's time, well under the
    # three backends' sum (and never less than one of them).
    assert BACKEND_DELAY <= page["total_seconds"] < 2.5 * BACKEND_DELAY, page
    assert elapsed < 2.5 * BACKEND_DELAY
    assert page["sum_seconds"] >= 3 * BACKEND_DELAY
    return page


def test_fanout_with_squall_run() -> None:
    server = squall_run("examples/fanout/app.py:make_app")
    try:
        port = server.port()
        first = _page(port)
        second = _page(port)
        # The second page reuses the first page's pooled connections.
        ports = {part["client_port"] for part in first["parts"].values()}
        assert {part["client_port"] for part in second["parts"].values()} <= ports
        status, body = http_get(port, "/?orders=soon")
        assert status == 400
    finally:
        assert server.stop() == 0


def test_fanout_as_a_script() -> None:
    server = script(EXAMPLES / "fanout" / "app.py")
    try:
        _page(server.port())
    finally:
        server.stop()
