"""Tests for squall.ioloop and squall.platform.asyncio."""

import asyncio
import datetime
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from squall import gen
from squall.ioloop import IOLoop, PeriodicCallback, new_asyncio_loop
from squall.platform.asyncio import AsyncIOLoop, AsyncIOMainLoop, BaseAsyncIOLoop


@pytest.fixture
def io_loop():
    loop = IOLoop(make_current=False)
    yield loop
    loop.close(all_fds=True)


def test_new_loop_is_asyncio_loop_wrapper(io_loop):
    assert isinstance(io_loop, AsyncIOLoop)
    assert isinstance(io_loop.asyncio_loop, asyncio.AbstractEventLoop)
    assert IOLoop._ioloop_for_asyncio[io_loop.asyncio_loop] is io_loop
    with pytest.raises(RuntimeError, match="already associated"):
        IOLoop(asyncio_loop=io_loop.asyncio_loop, make_current=False)


def test_current_finds_wrapper_of_running_loop(io_loop):
    async def main():
        return IOLoop.current()

    assert io_loop.run_sync(main) is io_loop
    # Outside the loop, with nothing set as current, there is no IOLoop.
    assert IOLoop.current(instance=False) is None


def test_current_wraps_foreign_asyncio_loop():
    async def main():
        first = IOLoop.current()
        assert IOLoop.current() is first
        return first

    loop = asyncio.new_event_loop()
    try:
        wrapper = loop.run_until_complete(main())
        assert isinstance(wrapper, AsyncIOMainLoop)
        assert wrapper.asyncio_loop is loop
    finally:
        wrapper.close()


def test_run_sync_results_errors_and_timeout(io_loop):
    async def value():
        await asyncio.sleep(0)
        return 42

    assert io_loop.run_sync(value) == 42
    with pytest.raises(ZeroDivisionError):
        io_loop.run_sync(lambda: 1 / 0)
    with pytest.raises(gen.BadYieldError):
        io_loop.run_sync(lambda: 42)
    assert io_loop.run_sync(lambda: None) is None

    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    started = time.monotonic()
    with pytest.raises(gen.TimeoutError, match="0.05"):
        io_loop.run_sync(slow, timeout=0.05)
    assert time.monotonic() - started < 5
    assert cancelled == [True]
    with pytest.raises(ValueError, match="-1"):
        io_loop.run_sync(value, timeout=-1)


def test_run_sync_stopped_early(io_loop):
    async def stop_then_hang():
        IOLoop.current().stop()
        await asyncio.sleep(10)

    with pytest.raises(RuntimeError, match="Event loop stopped"):
        io_loop.run_sync(stop_then_hang)
    assert not asyncio.all_tasks(io_loop.asyncio_loop)


def test_timeouts_and_callbacks(io_loop):
    results = []

    def record(x, y=None):
        results.append((x, y))

    async def main():
        loop = IOLoop.current()
        loop.add_callback(record, 1, y="kw")
        loop.add_timeout(loop.time(), record, 2)
        loop.add_timeout(datetime.timedelta(milliseconds=1), record, 3)
        loop.call_at(loop.time() + 0.001, record, 4)
        loop.call_later(0.001, record, 5)
        cancelled = loop.call_later(0.001, record, 6)
        loop.remove_timeout(cancelled)
        loop.spawn_callback(record, 7)
        await asyncio.sleep(0.05)

    io_loop.run_sync(main)
    assert sorted(x for x, _ in results) == [1, 2, 3, 4, 5, 7]
    assert (1, "kw") in results
    with pytest.raises(TypeError, match="Unsupported deadline"):
        io_loop.add_timeout("soon", record)


def test_add_callback_from_other_thread_wakes_loop(io_loop):
    def other_thread():
        time.sleep(0.01)
        io_loop.add_callback(io_loop.stop)

    thread = threading.Thread(target=other_thread)
    io_loop.add_callback(thread.start)
    started = time.monotonic()
    io_loop.start()
    thread.join()
    assert time.monotonic() - started < 2


def test_add_callback_after_close_is_dropped():
    loop = IOLoop(make_current=False)
    loop.close()
    loop.add_callback(lambda: None)


def test_callback_exceptions_are_logged(io_loop, caplog):
    async def failing_coroutine():
        raise ValueError("from a coroutine")

    def main():
        loop = IOLoop.current()
        loop.add_callback(lambda: 1 / 0)
        loop.add_callback(failing_coroutine)
        return gen.sleep(0.02)

    with caplog.at_level(logging.ERROR, logger="squall.application"):
        io_loop.run_sync(main)
    messages = [r for r in caplog.records if r.name == "squall.application"]
    assert len(messages) == 2
    assert all(r.getMessage().startswith("Exception in callback") for r in messages)
    assert {r.exc_info[0] for r in messages} == {ZeroDivisionError, ValueError}


def test_handlers_on_fd_and_file_object(io_loop):
    a, b = socket.socketpair()
    try:
        seen = []

        def on_ready(fd, events):
            seen.append((fd, events))
            fd.recv(100)
            io_loop.stop()

        io_loop.add_handler(a, on_ready, IOLoop.READ)
        with pytest.raises(ValueError, match="added twice"):
            io_loop.add_handler(a.fileno(), on_ready, IOLoop.READ)
        io_loop.add_callback(b.send, b"x")
        io_loop.start()
        assert seen == [(a, IOLoop.READ)]

        writes = []

        def on_write(fd, events):
            writes.append(events)
            io_loop.update_handler(fd, IOLoop.READ)
            io_loop.stop()

        io_loop.remove_handler(a)
        io_loop.remove_handler(a)  # harmless
        io_loop.add_handler(a.fileno(), on_write, IOLoop.WRITE)
        io_loop.start()
        assert writes == [IOLoop.WRITE]
        assert a.fileno() in io_loop.readers and a.fileno() not in io_loop.writers
        io_loop.remove_handler(a.fileno())
    finally:
        a.close()
        b.close()


def test_close_while_running_is_refused(io_loop):
    def close_now():
        with pytest.raises(RuntimeError, match="while it is running"):
            io_loop.close()

    io_loop.run_sync(close_now)
    assert not io_loop.asyncio_loop.is_closed()


def test_close_all_fds_closes_file_objects():
    loop = IOLoop(make_current=False)
    a, b = socket.socketpair()
    loop.add_handler(a, lambda fd, events: None, IOLoop.READ)
    loop.close(all_fds=True)
    b.close()
    assert a.fileno() == -1


def test_run_in_executor_and_default_executor(io_loop):
    from concurrent.futures import ThreadPoolExecutor

    submitted = []

    class CountingExecutor(ThreadPoolExecutor):
        def submit(self, fn, *args):
            submitted.append(fn)
            return super().submit(fn, *args)

    executor = CountingExecutor(1)
    io_loop.set_default_executor(executor)

    async def main():
        return await IOLoop.current().run_in_executor(None, threading.get_ident)

    try:
        assert io_loop.run_sync(main) != threading.get_ident()
        assert submitted == [threading.get_ident]
    finally:
        executor.shutdown()


def test_add_future_accepts_concurrent_futures(io_loop):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        got = []
        io_loop.add_future(pool.submit(lambda: 7), lambda f: (got.append(f.result()), io_loop.stop()))
        io_loop.start()
        assert got == [7]
    with pytest.raises(TypeError):
        io_loop.add_future(object(), print)


def test_periodic_callback_runs_and_stops(io_loop):
    calls = []

    def tick():
        calls.append(io_loop.time())
        if len(calls) == 3:
            pc.stop()
            io_loop.stop()

    pc = PeriodicCallback(tick, datetime.timedelta(milliseconds=10))
    assert pc.callback_time == 10
    io_loop.add_callback(pc.start)
    io_loop.start()
    assert len(calls) == 3 and not pc.is_running()
    with pytest.raises(ValueError, match="callback_time"):
        PeriodicCallback(tick, 0)


def test_periodic_callback_skips_missed_runs():
    pc = PeriodicCallback(lambda: None, 10000)
    pc._next_timeout = 1000
    schedule = []
    now = 1000
    for duration in [0, 25, 0]:
        pc._update_next(now)
        schedule.append(pc._next_timeout)
        now = pc._next_timeout + duration
    assert schedule == [1010, 1020, 1050]


def test_periodic_callback_waits_for_async_callback(io_loop):
    active = []
    overlaps = []

    async def tick():
        overlaps.append(len(active))
        active.append(1)
        await asyncio.sleep(0.02)
        active.pop()
        if len(overlaps) == 3:
            pc.stop()
            io_loop.stop()

    pc = PeriodicCallback(tick, 5)
    io_loop.add_callback(pc.start)
    io_loop.start()
    assert overlaps == [0, 0, 0]


def test_configure_only_accepts_asyncio_loops():
    with pytest.raises(RuntimeError):
        IOLoop.configure(dict)
    assert issubclass(IOLoop.configured_class(), BaseAsyncIOLoop)


def _python(code, **env):
    full_env = {k: v for k, v in os.environ.items() if k != "SQUALL_LOOP"}
    full_env.update(PYTHONPATH=os.pathsep.join(sys.path), **env)
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True, text=True, env=full_env, timeout=60,
    )


def test_loop_selection_by_environment():
    code = (
        "from squall.ioloop import IOLoop\n"
        "loop = IOLoop(make_current=False)\n"
        "print(type(loop).__name__, type(loop.asyncio_loop).__module__)\n"
        "loop.close()\n"
    )
    stock = _python(code, SQUALL_LOOP="asyncio")
    assert stock.returncode == 0, stock.stderr
    assert stock.stdout.split()[0] == "AsyncIOLoop"
    assert stock.stdout.split()[1].startswith("asyncio")
    try:
        import uvloop  # noqa: F401
    except ImportError:
        pytest.skip("uvloop not installed")
    fast = _python(code)
    assert fast.returncode == 0, fast.stderr
    assert fast.stdout.split()[1].startswith("uvloop")
    bad = _python(code, SQUALL_LOOP="tokio")
    assert bad.returncode != 0 and "tokio" in bad.stderr


def test_uvloop_requested_but_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("SQUALL_LOOP", "uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", None)
    with pytest.raises(RuntimeError, match="uvloop is not installed"):
        new_asyncio_loop()


def test_current_in_fresh_process_is_main_loop():
    result = _python(
        "from squall.ioloop import IOLoop\n"
        "loop = IOLoop.current()\n"
        "print(type(loop).__name__, IOLoop.current() is loop)\n"
        "loop.close()\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["AsyncIOMainLoop", "True"]


def test_deprecated_current_management_warns(io_loop):
    with pytest.warns(DeprecationWarning, match="make_current"):
        io_loop.make_current()
    assert IOLoop.current() is io_loop
    with pytest.warns(DeprecationWarning, match="clear_current"):
        IOLoop.clear_current()
    assert IOLoop.current(instance=False) is None


def test_close_with_leaked_transports_does_not_hang_under_warnings_as_errors():
    # uvloop's close() used to spin forever when the ResourceWarnings it
    # raises for still-open transports were turned into errors.
    result = _python(
        "import asyncio, socket\n"
        "from squall.ioloop import IOLoop\n"
        "loop = IOLoop(make_current=False)\n"
        "async def leak():\n"
        "    server = await asyncio.get_running_loop().create_server(asyncio.Protocol, '127.0.0.1', 0)\n"
        "    port = server.sockets[0].getsockname()[1]\n"
        "    await asyncio.get_running_loop().create_connection(asyncio.Protocol, '127.0.0.1', port)\n"
        "    await asyncio.sleep(0.05)\n"
        "loop.run_sync(leak)\n"
        "loop.close()\n"
        "print('closed')\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "closed"
