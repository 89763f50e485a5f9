"""Tests for squall.concurrent."""

import asyncio
import logging
import threading
from concurrent import futures

import pytest

from squall.concurrent import (
    FUTURES,
    DummyExecutor,
    Future,
    chain_future,
    dummy_executor,
    future_add_done_callback,
    future_set_exc_info,
    future_set_exception_unless_cancelled,
    future_set_result_unless_cancelled,
    is_future,
    run_on_executor,
)


def run(coro):
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def test_future_is_asyncio_future():
    assert Future is asyncio.Future
    assert FUTURES == (asyncio.Future, futures.Future)
    assert is_future(futures.Future())
    assert not is_future(object())


def test_chain_asyncio_to_asyncio_and_cancel():
    async def main():
        a, b = Future(), Future()
        chain_future(a, b)
        a.set_result(42)
        assert await b == 42
        c, d = Future(), Future()
        chain_future(c, d)
        c.cancel()
        with pytest.raises(asyncio.CancelledError):
            await d
        e, f = Future(), Future()
        chain_future(e, f)
        e.set_exception(KeyError("k"))
        with pytest.raises(KeyError):
            await f

    run(main())


def test_chain_concurrent_future_completed_on_a_thread():
    async def main():
        with futures.ThreadPoolExecutor(1) as pool:
            started = threading.Event()

            def work():
                started.wait(5)
                return threading.get_ident()

            target = Future()
            chain_future(pool.submit(work), target)
            started.set()
            ident = await asyncio.wait_for(target, 5)
            assert ident != threading.get_ident()

    run(main())


def test_chain_concurrent_cancel_propagates():
    async def main():
        a, b = futures.Future(), futures.Future()
        c = Future()
        chain_future(a, b)
        chain_future(b, c)
        a.cancel()
        with pytest.raises(asyncio.CancelledError):
            await c
        assert b.cancelled()

    run(main())


class Worker:
    def __init__(self):
        self.executor = futures.ThreadPoolExecutor(1)
        self._other = futures.ThreadPoolExecutor(1)

    @run_on_executor
    def where(self, offset):
        return threading.get_ident() + offset

    @run_on_executor(executor="_other")
    def fail(self):
        raise ValueError("from the pool")


def test_run_on_executor_forms():
    worker = Worker()

    async def main():
        assert await worker.where(0) != threading.get_ident()
        with pytest.raises(ValueError, match="from the pool"):
            await worker.fail()

    try:
        run(main())
    finally:
        worker.executor.shutdown()
        worker._other.shutdown()
    with pytest.raises(ValueError):
        run_on_executor(lambda: 1, lambda: 2)


def test_set_helpers_respect_cancellation(caplog):
    async def main():
        fut = Future()
        fut.cancel()
        future_set_result_unless_cancelled(fut, 1)
        with caplog.at_level(logging.ERROR, logger="squall.application"):
            future_set_exception_unless_cancelled(fut, RuntimeError("late"))
        assert "Exception after Future was cancelled" in caplog.text
        ok = Future()
        try:
            raise KeyError("x")
        except KeyError:
            import sys

            future_set_exc_info(ok, sys.exc_info())
        with pytest.raises(KeyError):
            ok.result()
        with pytest.raises(Exception, match="no exception"):
            future_set_exc_info(Future(), (None, None, None))

    run(main())


def test_future_add_done_callback_runs_at_once_when_done():
    calls = []
    done = futures.Future()
    done.set_result(1)
    future_add_done_callback(done, calls.append)
    assert calls == [done]
    pending = futures.Future()
    future_add_done_callback(pending, calls.append)
    assert len(calls) == 1
    pending.set_result(2)
    assert calls == [done, pending]


def test_dummy_executor_runs_inline():
    assert isinstance(dummy_executor, DummyExecutor)
    fut = dummy_executor.submit(lambda x: threading.get_ident() + x, 0)
    assert fut.result() == threading.get_ident()
    failed = dummy_executor.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failed.result()
    dummy_executor.shutdown()
