"""Seed scenario: a Django project served through WSGIContainer and
FallbackHandler beside native squall handlers and a StaticFileHandler
(examples/wsgi_django). A slow Django view does not hold up the rest."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("django")

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "examples" / "wsgi_django" / "server.py"
# Bounds every wait; the server is a fresh interpreter importing Django.
TIMEOUT = 30.0


async def fetch(port: int, path: str, method: str = "GET", body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request over a fresh connection, read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = f"{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n"
        if body:
            head += f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"\r\n" + body)
        raw = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
    head_bytes, _, content = raw.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, content


@pytest.fixture
def server_port() -> Iterator[int]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--port=0", "--logging=warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None and proc.stderr is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True)
    reader.start()
    try:
        try:
            first = lines.get(timeout=TIMEOUT)
        except queue.Empty:
            pytest.fail("the example server did not start")
        assert first.startswith("listening on http://127.0.0.1:"), first
        yield int(first.rstrip().rstrip("/").rsplit(":", 1)[1])
    finally:
        proc.kill()
        proc.wait(timeout=TIMEOUT)
        reader.join(TIMEOUT)
        errors = proc.stderr.read()
        stdout.close()
        proc.stderr.close()
    # Only the 404 is worth a warning (from Django and the access log).
    assert [line for line in errors.splitlines() if "/no-such-page" not in line] == []


def test_django_beside_native_handlers(server_port: int) -> None:
    async def scenario() -> None:
        port = server_port
        started = time.monotonic()
        slow = asyncio.ensure_future(fetch(port, "/slow"))
        # Give the slow request time to reach its view (it then sleeps 1 s).
        await asyncio.sleep(0.2)

        code, headers, body = await fetch(port, "/native")
        native_done = time.monotonic()
        assert (code, json.loads(body)) == (200, {"served_by": "squall"})
        assert not slow.done(), "the native handler waited for the slow Django view"

        code, _, body = await fetch(port, "/")
        assert (code, body) == (200, b"Hello from Django")
        assert not slow.done()

        code, headers, body = await fetch(port, "/static/hello.txt")
        assert (code, body) == (200, b"static file served by squall\n")
        assert headers["content-type"] == "text/plain"

        code, _, body = await slow
        slow_done = time.monotonic()
        assert (code, body) == (200, b"slow Django view done")
        assert slow_done - started >= 1.0
        assert native_done < slow_done

        code, _, body = await fetch(port, "/echo?q=1", "POST", b"name=caf%C3%A9")
        assert code == 200
        assert json.loads(body) == {"method": "POST", "form": {"name": "café"}, "query": {"q": "1"}}

        code, _, body = await fetch(port, "/stream")
        assert (code, body) == (200, b"line 0\nline 1\nline 2\n")

        code, _, _ = await fetch(port, "/no-such-page")
        assert code == 404

    asyncio.run(scenario())
