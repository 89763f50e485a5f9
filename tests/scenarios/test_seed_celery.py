"""Seed scenario (Tornado + Celery to keep blocking database work off the
loop): examples/celery_offload with a real Redis and a real Celery worker. A
slow "MySQL query" handed to Celery does not hold up the trivial endpoint."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "celery_offload"
# Bounds every wait: fresh interpreters importing Celery on a loaded machine.
TIMEOUT = 30.0
# How long the example's query pretends to take (its SLOW_QUERY_SECONDS).
QUERY_SECONDS = 1.0


async def fetch(port: int, path: str) -> tuple[int, bytes]:
    """One GET over a fresh connection, read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.fixture
def example_env(redis_server: tuple[str, int]) -> dict[str, str]:
    if importlib.util.find_spec("celery") is None:
        if os.environ.get("CI"):
            pytest.fail("celery is not installed (it is in the test extra)")
        pytest.skip("celery is not installed (pip install -e '.[test]')")
    host, port = redis_server
    url = f"redis://{host}:{port}/2"
    return {
        "CELERY_BROKER_URL": url,
        "CELERY_RESULT_BACKEND": url,
        "SLOW_QUERY_SECONDS": str(QUERY_SECONDS),
    }


@pytest.fixture
def worker(example_env: dict[str, str], tmp_path: Path) -> Iterator[None]:
    from celery import Celery

    import celery_tasks

    url = example_env["CELERY_BROKER_URL"]
    probe = Celery("probe", broker=url, backend=url)
    try:
        ping = lambda: probe.send_task("celery.accumulate", args=(1,))  # noqa: E731
        with celery_tasks.worker("tasks", EXAMPLE, example_env, ping, tmp_path / "worker.log"):
            yield
    finally:
        probe.close()


@pytest.fixture
def server_port(example_env: dict[str, str], worker: None) -> Iterator[int]:
    env = dict(
        os.environ,
        **example_env,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
    )
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE / "server.py"), "--port=0", "--logging=warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
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
    assert errors == ""


def test_slow_query_on_celery_does_not_hold_up_other_requests(server_port: int) -> None:
    async def scenario() -> None:
        port = server_port
        started = time.monotonic()
        slow = asyncio.ensure_future(fetch(port, "/mysql_query/1"))
        # Let the query reach the worker (it then takes QUERY_SECONDS).
        await asyncio.sleep(0.2)
        for _ in range(3):
            code, body = await fetch(port, "/i_want_you_now")
            assert (code, body) == (200, b"i want you, right now!")
            assert not slow.done(), "the trivial endpoint waited for the Celery query"
        now_done = time.monotonic()

        code, body = await slow
        slow_done = time.monotonic()
        assert code == 200
        assert json.loads(body) == {"rows": [{"id": 1, "name": "ada"}, {"id": 3, "name": "linus"}], "via": "celery"}
        assert slow_done - started >= QUERY_SECONDS
        assert now_done < slow_done

        # The same query on squall's own thread pool, beside the trivial endpoint.
        local = asyncio.ensure_future(fetch(port, "/local_query/2"))
        await asyncio.sleep(0.2)
        assert await fetch(port, "/i_want_you_now") == (200, b"i want you, right now!")
        assert not local.done()
        code, body = await local
        assert code == 200
        assert json.loads(body) == {
            "rows": [{"id": 2, "name": "grace"}, {"id": 4, "name": "barbara"}], "via": "thread pool"
        }

    asyncio.run(scenario())
