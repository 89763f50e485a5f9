"""Tests for squall.watchdog: a handler that blocks the loop is named in a
warning with how long it blocked; a healthy loop is never reported."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from squall import watchdog
from squall.httpclient import AsyncHTTPClient
from squall.httpserver import HTTPServer
from squall.testing import bind_unused_port
from squall.web import Application, RequestHandler

# The stall the blocking handler causes, and the shortest reported stall:
# far enough apart, and the threshold long enough, that a loaded machine
# (which can starve a thread for tens of milliseconds) cannot blur them.
BLOCK = 0.5
THRESHOLD = 0.2
# A healthy loop is never held up for this long, however loaded the machine.
HEALTHY_THRESHOLD = 0.5


class BlockingHandler(RequestHandler):
    def get(self) -> None:
        time.sleep(BLOCK)
        self.write("slept")


class AsyncBlockingHandler(RequestHandler):
    async def get(self) -> None:
        await asyncio.sleep(0)
        time.sleep(BLOCK)
        self.write("slept too")


class QuickHandler(RequestHandler):
    async def get(self) -> None:
        await asyncio.sleep(0.01)
        self.write("quick")


async def _serve_and_fetch(paths: list[str]) -> list[bytes]:
    app = Application([
        ("/block", BlockingHandler),
        ("/ablock", AsyncBlockingHandler),
        ("/quick", QuickHandler),
    ])
    server = HTTPServer(app)
    sock, port = bind_unused_port()
    server.add_sockets([sock])
    client = AsyncHTTPClient(force_instance=True)
    try:
        bodies = []
        for path in paths:
            response = await client.fetch(f"http://127.0.0.1:{port}{path}")
            bodies.append(response.body)
        return bodies
    finally:
        client.close()
        server.stop()
        await server.close_all_connections()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "squall.application" and r.levelno == logging.WARNING]


@pytest.mark.parametrize(("path", "handler"), [("/block", "BlockingHandler"), ("/ablock", "AsyncBlockingHandler")])
def test_blocking_handler_is_named_with_duration(
    caplog: pytest.LogCaptureFixture, path: str, handler: str
) -> None:
    async def main() -> watchdog.Watchdog:
        dog = watchdog.start(threshold=THRESHOLD, interval=0.02)
        try:
            assert await _serve_and_fetch([path]) in ([b"slept"], [b"slept too"])
            # The report is logged once the loop answers the monitor again.
            for _ in range(100):
                if dog.count:
                    break
                await asyncio.sleep(0.02)
        finally:
            dog.stop()
        return dog

    with caplog.at_level(logging.WARNING, logger="squall.application"):
        dog = asyncio.run(main())
    # The handler's stall is the longest (the loop may also have been
    # starved briefly by a loaded machine).
    assert dog.count >= 1
    named = [r.getMessage() for r in _warnings(caplog) if f"by {handler} (GET {path})" in r.getMessage()]
    assert len(named) == 1
    assert f"blocked for {dog.longest:.3f}s" in named[0]
    assert "time.sleep(BLOCK)" in named[0]
    # Timed from the first unanswered ping: at most one interval (plus
    # scheduling noise) short of the real stall, never longer than the
    # whole request took.
    assert BLOCK - 0.1 <= dog.longest < BLOCK + 1.0
    assert dog.total >= dog.longest
    if dog.count == 1:
        assert dog.last == watchdog.Stall(dog.longest, handler, f"GET {path}", dog.last.stack)


def test_healthy_loop_reports_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> watchdog.Watchdog:
        dog = watchdog.start(threshold=HEALTHY_THRESHOLD, interval=0.02)
        try:
            bodies = await _serve_and_fetch(["/quick"] * 20)
            assert bodies == [b"quick"] * 20
            await asyncio.sleep(0.2)
            assert dog.running
        finally:
            dog.stop()
        return dog

    with caplog.at_level(logging.WARNING, logger="squall.application"):
        dog = asyncio.run(main())
    assert dog.summary() == {"count": 0, "total": 0.0, "longest": 0.0, "threshold": HEALTHY_THRESHOLD}
    assert dog.last is None
    assert _warnings(caplog) == []


def test_blocking_outside_a_handler_shows_the_stack(caplog: pytest.LogCaptureFixture) -> None:
    def crunch() -> None:
        time.sleep(BLOCK)

    async def main() -> watchdog.Watchdog:
        dog = watchdog.start(threshold=THRESHOLD, interval=0.02)
        try:
            await asyncio.sleep(0.05)
            crunch()
            for _ in range(100):
                if dog.count:
                    break
                await asyncio.sleep(0.02)
        finally:
            dog.stop()
        return dog

    with caplog.at_level(logging.WARNING, logger="squall.application"):
        dog = asyncio.run(main())
    assert dog.count >= 1
    (message,) = [r.getMessage() for r in _warnings(caplog) if "in crunch" in r.getMessage()]
    assert message.startswith(f"event loop blocked for {dog.longest:.3f}s; loop thread stack:")
    if dog.count == 1:
        assert dog.last is not None and dog.last.handler is None and dog.last.request is None
        assert "in crunch" in dog.last.stack


def test_a_stopped_loop_is_not_a_stall(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        dog = watchdog.Watchdog(threshold=THRESHOLD, interval=0.01, loop=loop)
        dog.start()
        loop.run_until_complete(asyncio.sleep(0.05))
        # The loop is idle but not running: pings wait, nothing is reported.
        time.sleep(3 * THRESHOLD)
        loop.run_until_complete(asyncio.sleep(0.05))
        dog.stop()
        assert not dog.running
        assert dog.count == 0
    finally:
        loop.close()
    assert _warnings(caplog) == []


def test_closing_the_loop_ends_the_watch() -> None:
    loop = asyncio.new_event_loop()
    dog = watchdog.Watchdog(threshold=0.05, interval=0.01, loop=loop)
    dog.start()
    loop.run_until_complete(asyncio.sleep(0.03))
    loop.close()
    for _ in range(200):
        if not dog.running:
            break
        time.sleep(0.01)
    assert not dog.running


def test_one_watchdog_per_loop() -> None:
    async def main() -> None:
        dog = watchdog.start(threshold=THRESHOLD)
        try:
            assert watchdog.current() is dog
            with pytest.raises(RuntimeError, match="already watches"):
                watchdog.start()
        finally:
            watchdog.stop()
        assert watchdog.current() is None
        assert not dog.running
        # Stopping twice, or a loop without a watchdog, is harmless.
        dog.stop()
        watchdog.stop()

    asyncio.run(main())


@pytest.mark.parametrize("bad", [0, -1, "0.1", True, float("nan")])
def test_bad_threshold_is_refused(bad: object) -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="threshold must be a positive number"):
            watchdog.Watchdog(threshold=bad, loop=loop)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="interval must be a positive number"):
            watchdog.Watchdog(threshold=0.1, interval=bad, loop=loop)  # type: ignore[arg-type]
    finally:
        loop.close()


def test_start_outside_a_loop_needs_one() -> None:
    with pytest.raises(RuntimeError):
        watchdog.start()
