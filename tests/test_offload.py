"""Tests for squall.offload: bounded pools (threads and processes) with
timeouts, back-pressure and cancellation, the RequestHandler mixin over real
connections, and Celery with a real worker on a real Redis."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from squall import offload
from squall.httpserver import HTTPServer
from squall.testing import bind_unused_port
from squall.web import Application, HTTPError, RequestHandler

# Every wait in these tests is bounded by this (seconds).
WAIT = 10.0


class Gate:
    """A blocking function's start and release, seen from the test."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls: list[Any] = []

    def work(self, value: Any = None) -> Any:
        self.calls.append(value)
        self.started.set()
        assert self.release.wait(WAIT), "the test never released the work"
        return value


async def _until(predicate: Any) -> None:
    for _ in range(int(WAIT / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


# -- Pool and run ------------------------------------------------------------


def test_run_does_not_block_the_loop() -> None:
    async def main() -> None:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.ensure_future(ticker())
        thread_name = await offload.run(lambda: (time.sleep(0.2), threading.current_thread().name)[1])
        ticking.cancel()
        assert thread_name != threading.current_thread().name
        # The loop kept turning while the work slept on a worker thread.
        assert ticks >= 5

    asyncio.run(main())


def test_arguments_results_and_exceptions() -> None:
    def combine(a: int, b: int, *, sep: str) -> str:
        return f"{a}{sep}{b}"

    def fail() -> None:
        raise KeyError("boom")

    async def main() -> None:
        assert await offload.run(combine, 1, 2, sep="-") == "1-2"
        # fn's own "fn" keyword is not taken by run (fn is positional-only).
        assert await offload.run(lambda fn: fn * 2, fn=21) == 42
        with pytest.raises(KeyError, match="boom"):
            await offload.run(fail)
        # fn's own "timeout" keyword goes through functools.partial.
        assert await offload.run(functools.partial(lambda timeout: timeout + 1, timeout=2)) == 3

    asyncio.run(main())


def test_max_workers_bounds_concurrency_and_callers_wait_in_order() -> None:
    pool = offload.Pool(2, max_pending=10)
    lock = threading.Lock()
    active = peak = 0
    order: list[int] = []

    def work(i: int) -> int:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
            order.append(i)
        time.sleep(0.05)
        with lock:
            active -= 1
        return i * i

    async def main() -> None:
        calls = [asyncio.ensure_future(pool.run(work, i)) for i in range(6)]
        await _until(lambda: pool.running == 2)
        assert pool.waiting == 4 and pool.pending == 6
        assert await asyncio.gather(*calls) == [i * i for i in range(6)]
        assert pool.pending == 0

    try:
        asyncio.run(main())
    finally:
        pool.close()
    assert peak == 2
    assert order[2:] == [2, 3, 4, 5]


def test_max_pending_raises_pool_full_at_once() -> None:
    gate = Gate()
    pool = offload.Pool(1, max_pending=2, name="db")

    async def main() -> None:
        first = asyncio.ensure_future(pool.run(gate.work, 1))
        second = asyncio.ensure_future(pool.run(gate.work, 2))
        await _until(lambda: pool.pending == 2)
        with pytest.raises(offload.PoolFull) as info:
            await pool.run(gate.work, 3)
        error = info.value
        assert isinstance(error, HTTPError) and error.status_code == 503
        assert "offload pool db is full: 2 calls pending (max_pending=2)" in str(error)
        gate.release.set()
        assert await asyncio.gather(first, second) == [1, 2]

    try:
        asyncio.run(main())
    finally:
        gate.release.set()
        pool.close()
    assert gate.calls == [1, 2]


def test_timeout_while_waiting_drops_the_work() -> None:
    gate = Gate()
    never = Gate()
    pool = offload.Pool(1)

    async def main() -> None:
        busy = asyncio.ensure_future(pool.run(gate.work, "busy"))
        await _until(gate.started.is_set)
        with pytest.raises(asyncio.TimeoutError, match="did not finish within 0.05s"):
            await pool.run(never.work, "late", timeout=0.05)
        assert pool.waiting == 0
        gate.release.set()
        assert await busy == "busy"
        # The worker is free again, and the dropped call never ran.
        assert await pool.run(len, "abc") == 3

    try:
        asyncio.run(main())
    finally:
        gate.release.set()
        never.release.set()
        pool.close()
    assert never.calls == []


def test_timeout_while_running_discards_the_result_and_keeps_the_worker_counted() -> None:
    gate = Gate()
    pool = offload.Pool(1, timeout=0.05)

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await pool.run(gate.work, "slow")
        # The thread cannot be stopped: it still holds the only worker.
        assert pool.running == 1
        queued = asyncio.ensure_future(pool.run(len, "ab", timeout=WAIT))
        await asyncio.sleep(0.05)
        assert not queued.done()
        gate.release.set()
        assert await queued == 2
        assert pool.pending == 0

    try:
        asyncio.run(main())
    finally:
        gate.release.set()
        pool.close()


def test_cancelled_while_waiting_never_runs() -> None:
    gate = Gate()
    never = Gate()
    pool = offload.Pool(1)

    async def main() -> None:
        busy = asyncio.ensure_future(pool.run(gate.work, "busy"))
        await _until(gate.started.is_set)
        queued = asyncio.ensure_future(pool.run(never.work, "queued"))
        await _until(lambda: pool.waiting == 1)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert pool.waiting == 0
        gate.release.set()
        await busy
        assert await pool.run(len, "x") == 1

    try:
        asyncio.run(main())
    finally:
        gate.release.set()
        never.release.set()
        pool.close()
    assert never.calls == []


def test_close_fails_waiting_calls_and_refuses_new_ones() -> None:
    gate = Gate()
    pool = offload.Pool(1, name="closing")

    async def main() -> None:
        busy = asyncio.ensure_future(pool.run(gate.work, "busy"))
        await _until(gate.started.is_set)
        queued = asyncio.ensure_future(pool.run(gate.work, "queued"))
        await _until(lambda: pool.waiting == 1)
        # Closed while "busy" still holds the only worker: "queued" cannot
        # have started, whatever the machine's scheduling.
        closing = asyncio.get_running_loop().run_in_executor(None, pool.close)
        with pytest.raises(RuntimeError, match="offload pool closing is closed"):
            await queued
        gate.release.set()
        await closing
        assert await busy == "busy"
        with pytest.raises(RuntimeError, match="is closed"):
            await pool.run(len, "x")

    asyncio.run(main())
    assert gate.calls == ["busy"]


def test_a_pool_serves_several_loops() -> None:
    pool = offload.Pool(1)
    results: list[int] = []

    def in_thread(i: int) -> None:
        async def main() -> None:
            results.append(await pool.run(lambda: (time.sleep(0.02), i)[1], timeout=WAIT))

        asyncio.run(main())

    threads = [threading.Thread(target=in_thread, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    pool.close()
    assert sorted(results) == [0, 1, 2, 3]


def _pid_and_square(x: int) -> tuple[int, int]:
    return os.getpid(), x * x


def test_process_pool_runs_in_another_process() -> None:
    pool = offload.Pool(1, kind="process")

    async def main() -> None:
        pid, square = await pool.run(_pid_and_square, 7, timeout=60)
        assert square == 49 and pid != os.getpid()

    try:
        asyncio.run(main())
    finally:
        pool.close()


def test_default_pools() -> None:
    async def main() -> None:
        assert await offload.run(len, "abcd", executor="thread") == 4
        mine = offload.Pool(1)
        try:
            assert await offload.run(len, "ab", executor=mine) == 2
        finally:
            mine.close()

    asyncio.run(main())
    assert offload.default_pool() is offload.default_pool("thread")
    assert offload.default_pool("process").kind == "process"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "fiber"}, "kind must be 'thread' or 'process', got 'fiber'"),
        ({"max_workers": 0}, "max_workers must be a positive int, got 0"),
        ({"max_workers": 4, "max_pending": 3}, r"max_pending must be an int of at least max_workers \(4\), got 3"),
        ({"timeout": -1}, "timeout must be a positive number of seconds or None, got -1"),
        ({"mp_context": object()}, "mp_context is only for kind='process'"),
    ],
)
def test_bad_pool_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        offload.Pool(**kwargs)


def test_bad_call_arguments() -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match="fn must be callable, got 3"):
            await offload.run(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="executor must be 'thread', 'process' or a Pool, got 'gpu'"):
            await offload.run(len, "x", executor="gpu")
        with pytest.raises(ValueError, match="timeout must be a positive number"):
            await offload.run(len, "x", timeout=0)
        with pytest.raises(ValueError, match="kind must be"):
            offload.default_pool("fiber")
        with pytest.raises(TypeError, match="task must be a Celery task"):
            await offload.celery(len)
        with pytest.raises(TypeError, match="result must be a Celery AsyncResult"):
            await offload.wait_celery("not a result")

    asyncio.run(main())


# -- OffloadMixin over real connections -------------------------------------


class _Work:
    """The blocking functions of the handler tests, and what they saw."""

    def __init__(self) -> None:
        self.blocker = Gate()
        self.target = Gate()
        self.pool = offload.Pool(1, max_pending=2, name="handlers")


class OffloadHandler(offload.OffloadMixin, RequestHandler):
    def initialize(self, work: _Work) -> None:
        self.work = work
        self.offload_executor = work.pool

    async def get(self, which: str) -> None:
        gate = self.work.blocker if which == "blocker" else self.work.target
        value = await self.offload(gate.work, which, timeout=WAIT)
        self.write(f"done {value}")


def _raw_request(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith((b"done blocker", b"done target")) and b" 503 " not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def work() -> Iterator[_Work]:
    work = _Work()
    yield work
    work.blocker.release.set()
    work.target.release.set()
    work.pool.close()


async def _serve(work: _Work) -> tuple[HTTPServer, int]:
    app = Application([(r"/(\w+)", OffloadHandler, {"work": work})])
    server = HTTPServer(app)
    sock, port = bind_unused_port()
    server.add_sockets([sock])
    return server, port


def test_handler_offload_answers(work: _Work) -> None:
    async def main() -> None:
        server, port = await _serve(work)
        try:
            work.target.release.set()
            sock = await asyncio.to_thread(_raw_request, port, "/target")
            response = await asyncio.to_thread(_read_response, sock)
            sock.close()
            assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"done target")
        finally:
            server.stop()
            await server.close_all_connections()

    asyncio.run(main())


def test_client_gone_while_queued_drops_the_work(work: _Work, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        server, port = await _serve(work)
        try:
            busy = await asyncio.to_thread(_raw_request, port, "/blocker")
            await _until(work.blocker.started.is_set)
            queued = await asyncio.to_thread(_raw_request, port, "/target")
            await _until(lambda: work.pool.waiting == 1)
            queued.close()
            # The server notices the close and the queued call leaves the pool.
            await _until(lambda: work.pool.waiting == 0)
            work.blocker.release.set()
            response = await asyncio.to_thread(_read_response, busy)
            busy.close()
            assert response.endswith(b"done blocker")
            await _until(lambda: work.pool.pending == 0)
        finally:
            server.stop()
            await server.close_all_connections()

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert work.target.calls == []
    assert [r for r in caplog.records if r.name == "squall.application"] == []


def test_client_gone_while_running_discards_the_result(work: _Work) -> None:
    async def main() -> None:
        server, port = await _serve(work)
        try:
            running = await asyncio.to_thread(_raw_request, port, "/target")
            await _until(work.target.started.is_set)
            running.close()
            # The handler stops waiting at once; the thread runs on to the end.
            await asyncio.sleep(0.1)
            assert work.pool.running == 1
            work.target.release.set()
            await _until(lambda: work.pool.pending == 0)
            # The pool is usable again for the next request.
            work.blocker.release.set()
            sock = await asyncio.to_thread(_raw_request, port, "/blocker")
            response = await asyncio.to_thread(_read_response, sock)
            sock.close()
            assert response.endswith(b"done blocker")
        finally:
            server.stop()
            await server.close_all_connections()

    asyncio.run(main())
    assert work.target.calls == ["target"]


def test_pool_full_in_a_handler_is_a_503(work: _Work, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        server, port = await _serve(work)
        socks = []
        try:
            socks.append(await asyncio.to_thread(_raw_request, port, "/blocker"))
            await _until(work.blocker.started.is_set)
            socks.append(await asyncio.to_thread(_raw_request, port, "/blocker"))
            await _until(lambda: work.pool.pending == 2)
            sock = await asyncio.to_thread(_raw_request, port, "/target")
            socks.append(sock)
            response = await asyncio.to_thread(_read_response, sock)
            assert response.startswith(b"HTTP/1.1 503 ")
            work.blocker.release.set()
        finally:
            for sock in socks:
                sock.close()
            server.stop()
            await server.close_all_connections()

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    assert any("offload pool handlers is full" in r.getMessage() for r in caplog.records)
    assert work.target.calls == []


def test_offload_outside_a_task_is_refused() -> None:
    async def main() -> str:
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[str] = loop.create_future()

        def callback() -> None:
            # A coroutine driven by hand from a plain callback has no task.
            coro = offload.OffloadMixin().offload(len, "x")
            try:
                coro.send(None)
            except RuntimeError as e:
                outcome.set_result(str(e))

        loop.call_soon(callback)
        return await outcome

    assert "must be awaited from a task" in asyncio.run(main())


# -- Celery, with a real worker and a real Redis -----------------------------


@pytest.fixture(scope="module")
def tasks(redis_server: tuple[str, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The tests' Celery tasks, served by a real worker on the test Redis."""
    if importlib.util.find_spec("celery") is None:
        if os.environ.get("CI"):
            pytest.fail("celery is not installed (it is in the test extra)")
        pytest.skip("celery is not installed (pip install -e '.[test]')")
    import celery_tasks

    host, port = redis_server
    url = f"redis://{host}:{port}/1"
    files = tmp_path_factory.mktemp("celery-results")
    celery_tasks.configure(url, url, str(files))
    env = {"SQUALL_CELERY_BROKER": url, "SQUALL_CELERY_BACKEND": url, "SQUALL_CELERY_FILES": str(files)}
    log = tmp_path_factory.mktemp("celery-worker") / "worker.log"
    here = Path(celery_tasks.__file__).parent
    with celery_tasks.worker("celery_tasks", here, env, lambda: celery_tasks.add.delay(0, 0), log):
        yield celery_tasks


def test_celery_result_through_pubsub(tasks: Any) -> None:
    async def main() -> None:
        assert tasks.add.app.backend.is_async
        assert await offload.celery(tasks.add, 2, 3, timeout=WAIT) == 5
        assert await offload.celery(tasks.add, x=4, y=5, timeout=WAIT) == 9

    asyncio.run(main())


def test_celery_wait_does_not_block_the_loop(tasks: Any) -> None:
    async def main() -> None:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.ensure_future(ticker())
        assert await offload.celery(tasks.slow_add, 1, 2, 0.3, timeout=WAIT) == 3
        ticking.cancel()
        assert ticks >= 10

    asyncio.run(main())


def test_celery_task_error_propagates(tasks: Any) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="no such user"):
            await offload.celery(tasks.fail, "no such user", timeout=WAIT)

    asyncio.run(main())


def test_celery_timeout_then_next_call_works(tasks: Any) -> None:
    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError, match="within 0.1s"):
            await offload.celery(tasks.slow_add, 1, 1, 0.5, timeout=0.1)
        # The abandoned result is dropped; the next call (queued behind the
        # slow task on the one solo worker) is answered.
        assert await offload.celery(tasks.add, 1, 1, timeout=WAIT) == 2
        # ...and the threads listening for results stop watching the abandoned one.
        drainers = list(offload._drainers.values())
        assert drainers
        await _until(lambda: not any(drainer._watched for drainer in drainers))

    asyncio.run(main())


def test_celery_many_concurrent_waits(tasks: Any) -> None:
    async def main() -> None:
        results = await asyncio.gather(*(offload.celery(tasks.add, i, i, timeout=WAIT) for i in range(25)))
        assert results == [2 * i for i in range(25)]

    asyncio.run(main())


def test_wait_celery_on_a_result_that_is_already_done(tasks: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sent = await loop.run_in_executor(None, tasks.add.delay, 20, 22)
        await loop.run_in_executor(None, functools.partial(sent.get, timeout=WAIT))
        # A new AsyncResult for the finished task: no message will ever come
        # for it, so the state must be read once.
        fresh = tasks.app.AsyncResult(sent.id)
        assert await offload.wait_celery(fresh, timeout=WAIT) == 42

    asyncio.run(main())


def test_celery_backend_without_pubsub_is_polled(tasks: Any) -> None:
    async def main() -> None:
        assert not tasks.file_add.backend.is_async
        assert await offload.celery(tasks.file_add, 6, 7, timeout=WAIT) == 13

    asyncio.run(main())


def test_celery_eager_results(tasks: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        eager = await loop.run_in_executor(None, tasks.add.apply, (1, 2))
        assert await offload.wait_celery(eager) == 3

    asyncio.run(main())
