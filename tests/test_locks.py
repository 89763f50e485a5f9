"""Tests for squall.locks: Condition, Event, Semaphore, BoundedSemaphore, Lock."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from squall import gen, locks
from squall.ioloop import IOLoop
from squall.util import TimeoutError

SHORT = datetime.timedelta(seconds=0.01)
LONG = datetime.timedelta(seconds=10)


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        return await coro_fn()

    return asyncio.run(main())


async def _tick(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_timeout_error_is_asyncio_timeout() -> None:
    assert TimeoutError is asyncio.TimeoutError


# --- Condition --------------------------------------------------------------


def test_condition_notify_wakes_in_fifo_order() -> None:
    async def main() -> list[int]:
        c = locks.Condition()
        woken: list[int] = []
        waits = [c.wait() for _ in range(4)]
        for i, w in enumerate(waits):
            w.add_done_callback(lambda f, i=i: woken.append(i))  # type: ignore[attr-defined]
        assert "waiters[4]" in repr(c)
        c.notify(1)
        await _tick()
        assert woken == [0]
        c.notify(2)
        await _tick()
        assert woken == [0, 1, 2]
        c.notify_all()
        await _tick()
        assert repr(c) == "<Condition>"
        assert [await w for w in waits] == [True] * 4
        return woken

    assert run(main) == [0, 1, 2, 3]


def test_condition_timeout_resolves_false_and_does_not_use_up_notify() -> None:
    async def main() -> None:
        c = locks.Condition()
        first = c.wait()
        timed = c.wait(SHORT)
        last = c.wait()
        assert await timed is False
        c.notify(2)
        assert await first is True and await last is True

    run(main)


def test_condition_deadline_is_on_the_ioloop_clock() -> None:
    async def main() -> None:
        c = locks.Condition()
        assert await c.wait(IOLoop.current().time() + 0.01) is False
        waiting = c.wait(IOLoop.current().time() + 10)
        c.notify()
        assert await waiting is True

    run(main)


def test_condition_reentrant_notify_loses_nothing() -> None:
    async def main() -> None:
        c = locks.Condition()
        futures = [c.wait() for _ in range(3)]
        futures[1].add_done_callback(lambda _: c.notify())  # type: ignore[attr-defined]
        c.notify(2)
        await _tick()
        assert all(f.done() for f in futures)  # type: ignore[attr-defined]

    run(main)


def test_condition_sweeps_timed_out_and_cancelled_waiters() -> None:
    async def main() -> None:
        c = locks.Condition()
        # 41 time out and 60 are cancelled: the 101st abandoned waiter
        # triggers a sweep.
        for _ in range(41):
            c.wait(SHORT)
        cancelled = [c.wait() for _ in range(60)]
        survivor = c.wait()
        for f in cancelled:
            f.cancel()  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
        assert len(c._waiters) == 1
        c.notify()
        assert await survivor is True

    run(main)


def test_condition_wait_outside_a_coroutine() -> None:
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        c = locks.Condition()
        waiter = c.wait()
        c.notify()
        assert loop.run_until_complete(waiter) is True
    finally:
        asyncio.set_event_loop(None)
        loop.close()


# --- Event -------------------------------------------------------------------


def test_event_set_clear_wait() -> None:
    async def main() -> None:
        e = locks.Event()
        assert "clear" in repr(e) and not e.is_set()
        before = e.wait()
        e.set()
        e.set()
        assert e.is_set() and "set" in repr(e)
        assert before.done()  # type: ignore[attr-defined]
        assert e.wait().done()  # type: ignore[attr-defined]
        e.clear()
        after = asyncio.ensure_future(e.wait())
        await _tick()
        assert not after.done()
        e.set()
        await after

    run(main)


def test_event_wait_timeout() -> None:
    async def main() -> None:
        e = locks.Event()
        with pytest.raises(TimeoutError):
            await e.wait(SHORT)
        assert e._waiters == set()
        IOLoop.current().call_later(0.01, e.set)
        await e.wait(LONG)

    run(main)


# --- Semaphore ---------------------------------------------------------------


def test_semaphore_rejects_negative_value() -> None:
    with pytest.raises(ValueError, match="-1"):
        locks.Semaphore(-1)


def test_semaphore_acquire_release_fifo_and_repr() -> None:
    async def main() -> None:
        sem = locks.Semaphore(1)
        assert "unlocked,value:1" in repr(sem)
        first = sem.acquire()
        assert first.done()  # type: ignore[attr-defined]
        assert "[locked]" in repr(sem)
        second, third = sem.acquire(), sem.acquire()
        assert "waiters:2" in repr(sem)
        sem.release()
        assert second.done() and not third.done()  # type: ignore[attr-defined]
        sem.release()
        assert third.done()  # type: ignore[attr-defined]
        sem.release()
        assert sem.acquire().done()  # type: ignore[attr-defined]

    run(main)


def test_semaphore_unbounded_release_raises_counter() -> None:
    async def main() -> None:
        sem = locks.Semaphore()
        sem.release()
        sem.release()
        assert all(sem.acquire().done() for _ in range(3))  # type: ignore[attr-defined]
        assert not sem.acquire().done()  # type: ignore[attr-defined]

    run(main)


def test_semaphore_timeout_takes_no_slot() -> None:
    async def main() -> None:
        sem = locks.Semaphore(0)
        with pytest.raises(TimeoutError):
            await sem.acquire(SHORT)
        sem.release()
        # The timed-out waiter is skipped: the slot is still free.
        assert sem.acquire().done()  # type: ignore[attr-defined]

    run(main)


def test_semaphore_cancelled_waiter_is_skipped() -> None:
    async def main() -> None:
        sem = locks.Semaphore(0)
        cancelled = sem.acquire()
        waiting = sem.acquire()
        cancelled.cancel()  # type: ignore[attr-defined]
        sem.release()
        assert waiting.done()  # type: ignore[attr-defined]

    run(main)


def test_semaphore_sweeps_timed_out_waiters() -> None:
    async def main() -> None:
        sem = locks.Semaphore(0)
        timed = [sem.acquire(SHORT) for _ in range(101)]
        survivor = sem.acquire()
        assert len(sem._waiters) == 102
        await asyncio.sleep(0.05)
        assert len(sem._waiters) == 1
        for f in timed:
            with pytest.raises(TimeoutError):
                f.result()  # type: ignore[attr-defined]
        sem.release()
        assert survivor.done()  # type: ignore[attr-defined]

    run(main)


def test_semaphore_async_with_and_yield_with() -> None:
    history: list[str] = []

    async def main() -> None:
        sem = locks.Semaphore()

        async def native(i: int) -> None:
            async with sem:
                history.append(f"in {i}")
                await asyncio.sleep(0.001)
                history.append(f"out {i}")

        @gen.coroutine
        def decorated(i: int) -> Any:
            with (yield sem.acquire()) as value:
                assert value is None
                history.append(f"in {i}")
                yield gen.sleep(0.001)
                history.append(f"out {i}")

        await asyncio.gather(native(0), decorated(1), native(2))
        with pytest.raises(ZeroDivisionError):
            with await sem.acquire():
                1 / 0  # noqa: B018
        assert sem.acquire().done()  # type: ignore[attr-defined]

    run(main)
    # gen.coroutine starts running when called, so decorated(1) goes first;
    # what matters is that the holders never overlap.
    assert history == ["in 1", "out 1", "in 0", "out 0", "in 2", "out 2"]


def test_plain_with_is_a_runtime_error() -> None:
    for primitive in (locks.Semaphore(), locks.BoundedSemaphore(), locks.Lock()):
        with pytest.raises(RuntimeError, match="async with"):
            with primitive:  # type: ignore[attr-defined]
                pass


def test_bounded_semaphore_rejects_extra_release() -> None:
    async def main() -> None:
        sem = locks.BoundedSemaphore()
        with pytest.raises(ValueError, match="released too many times"):
            sem.release()
        sem.acquire()
        waiting = sem.acquire()
        sem.release()
        assert waiting.done()  # type: ignore[attr-defined]
        sem.release()
        with pytest.raises(ValueError):
            sem.release()

    run(main)


# --- Lock --------------------------------------------------------------------


def test_lock_is_fifo_and_exclusive() -> None:
    async def main() -> list[int]:
        lock = locks.Lock()
        order: list[int] = []
        inside = 0

        async def worker(i: int) -> None:
            nonlocal inside
            async with lock:
                inside += 1
                assert inside == 1
                order.append(i)
                await asyncio.sleep(0)
                inside -= 1

        await lock.acquire()
        tasks = [asyncio.ensure_future(worker(i)) for i in range(5)]
        await _tick()
        assert order == []
        assert "locked" in repr(lock)
        lock.release()
        await asyncio.gather(*tasks)
        return order

    assert run(main) == [0, 1, 2, 3, 4]


def test_lock_timeout_and_bad_release() -> None:
    async def main() -> None:
        lock = locks.Lock()
        with pytest.raises(RuntimeError, match="release unlocked lock"):
            lock.release()
        await lock.acquire()
        with pytest.raises(TimeoutError):
            await lock.acquire(timeout=SHORT)
        assert not asyncio.ensure_future(lock.acquire()).done()
        lock.release()

    run(main)


def test_yielding_a_lock_itself_is_an_error() -> None:
    @gen.coroutine
    def misuse() -> Any:
        with (yield locks.Lock()):
            pass

    async def main() -> None:
        with pytest.raises(gen.BadYieldError):
            await misuse()

    run(main)
