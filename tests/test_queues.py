"""Tests for squall.queues: Queue, PriorityQueue, LifoQueue."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from squall import gen, queues
from squall.ioloop import IOLoop
from squall.util import TimeoutError

SHORT = datetime.timedelta(seconds=0.01)
LONG = datetime.timedelta(seconds=10)


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        return await coro_fn()

    return asyncio.run(main())


def test_maxsize_validation_and_state() -> None:
    with pytest.raises(TypeError):
        queues.Queue(maxsize=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="-1"):
        queues.Queue(maxsize=-1)

    async def main() -> None:
        q: queues.Queue[int] = queues.Queue(maxsize=2)
        assert q.maxsize == 2 and q.empty() and not q.full()
        assert q.put(0).done() and q.put(1).done()
        assert q.full() and q.qsize() == 2
        blocked = q.put(2)
        assert not blocked.done()
        assert await q.get() == 0
        assert blocked.done() and q.full()
        unbounded: queues.Queue[int] = queues.Queue()
        for i in range(1000):
            unbounded.put_nowait(i)
        assert not unbounded.full()

    run(main)


def test_nowait_errors() -> None:
    async def main() -> None:
        q: queues.Queue[int] = queues.Queue(1)
        with pytest.raises(queues.QueueEmpty):
            q.get_nowait()
        q.put_nowait(1)
        with pytest.raises(queues.QueueFull):
            q.put_nowait(2)
        assert q.get_nowait() == 1

    run(main)


def test_float_maxsize_is_a_real_bound() -> None:
    async def main() -> None:
        q: queues.Queue[int] = queues.Queue(maxsize=1.3)  # type: ignore[arg-type]
        q.put_nowait(0)
        q.put_nowait(1)
        assert q.full()
        with pytest.raises(queues.QueueFull):
            q.put_nowait(2)

    run(main)


def test_repr_and_str() -> None:
    async def main() -> None:
        q: queues.Queue[None] = queues.Queue(maxsize=1)
        assert hex(id(q)) in repr(q) and hex(id(q)) not in str(q)
        q.get()
        assert str(q) == "<Queue maxsize=1 getters[1]>"
        q.put(None)
        q.put(None)
        q.put(None)
        text = str(q)
        assert "queue=deque([None])" in text and "putters[1]" in text and "tasks=2" in text
        assert "getters" not in text

    run(main)


def test_get_waits_and_put_hands_over_in_fifo_order() -> None:
    async def main() -> None:
        q: queues.Queue[int] = queues.Queue()
        first, second = q.get(), q.get()
        q.put_nowait(1)
        q.put_nowait(2)
        assert await first == 1 and await second == 2
        IOLoop.current().call_later(0.01, q.put_nowait, 3)
        assert await q.get(timeout=LONG) == 3

    run(main)


def test_get_and_put_timeouts() -> None:
    async def main() -> None:
        q: queues.Queue[int] = queues.Queue(1)
        with pytest.raises(TimeoutError):
            await q.get(timeout=SHORT)
        with pytest.raises(TimeoutError):
            await q.get(timeout=0)  # a deadline already passed
        with pytest.raises(TimeoutError):
            await q.get(timeout=IOLoop.current().time() + 0.01)
        q.put_nowait(0)
        timed_put = q.put(1, timeout=SHORT)
        waiting_put = q.put(2)
        with pytest.raises(TimeoutError):
            await timed_put
        assert q.get_nowait() == 0
        # The timed-out item was never added; the waiting one was.
        assert await q.get() == 2
        await waiting_put

    run(main)


def test_timeout_preempted_by_data() -> None:
    async def main() -> None:
        q: queues.Queue[int] = queues.Queue()
        get = q.get(timeout=SHORT)
        q.put(0)
        await asyncio.sleep(0.03)
        assert await get == 0

    run(main)


def test_timed_out_waiters_are_dropped_at_the_front() -> None:
    async def main() -> None:
        q: queues.Queue[int] = queues.Queue(1)
        putters = [q.put(i, SHORT) for i in range(10)]
        last_put = q.put(10)
        assert len(q._putters) == 10
        await asyncio.sleep(0.03)
        assert not last_put.done()
        assert await q.get() == 0
        assert len(q._putters) == 0 and last_put.done()
        for putter in putters[1:]:
            with pytest.raises(TimeoutError):
                putter.result()

    run(main)


def test_abandoned_waiters_are_swept_behind_a_blocked_one() -> None:
    async def main() -> None:
        q: queues.Queue[int] = queues.Queue()
        blocked = q.get()
        timed = [q.get(SHORT) for _ in range(60)]
        cancelled = [q.get() for _ in range(41)]
        for f in cancelled:
            f.cancel()
        await asyncio.sleep(0.05)
        assert len(q._getters) == 1
        q.put_nowait(5)
        assert await blocked == 5
        for f in timed:
            with pytest.raises(TimeoutError):
                f.result()

    run(main)


def test_cancelled_getter_does_not_lose_an_item() -> None:
    async def main() -> None:
        q: queues.Queue[int] = queues.Queue()
        getter = q.get()
        getter.cancel()
        q.put_nowait(7)
        assert q.get_nowait() == 7

    run(main)


def test_task_done_and_join() -> None:
    async def main() -> None:
        q: queues.Queue[int] = queues.Queue()
        with pytest.raises(ValueError, match="too many times"):
            q.task_done()
        await q.join()
        q.put_nowait(0)
        join = asyncio.ensure_future(q.join())
        await q.get()
        await asyncio.sleep(0)
        assert not join.done()
        q.task_done()
        await join
        q.put_nowait(1)
        with pytest.raises(TimeoutError):
            await q.join(timeout=SHORT)

    run(main)


def test_producer_consumer_with_gen_coroutines() -> None:
    async def main() -> list[int]:
        q: queues.Queue[int] = queues.Queue(maxsize=3)
        history: list[int] = []

        @gen.coroutine
        def consumer() -> Any:
            while True:
                history.append((yield q.get()))
                q.task_done()

        @gen.coroutine
        def producer() -> Any:
            for item in range(10):
                yield q.put(item)

        task = consumer()
        await producer()
        await q.join()
        task.cancel()
        return history

    assert run(main) == list(range(10))


def test_async_for() -> None:
    async def main() -> list[int]:
        q: queues.Queue[int] = queues.Queue()
        for i in range(5):
            q.put_nowait(i)
        seen = []
        async for item in q:
            seen.append(item)
            if item == 4:
                break
        return seen

    assert run(main) == [0, 1, 2, 3, 4]


def test_priority_queue_order() -> None:
    async def main() -> None:
        q: queues.PriorityQueue[tuple[int, str]] = queues.PriorityQueue(maxsize=2)
        q.put_nowait((1, "a"))
        q.put_nowait((0, "b"))
        assert q.full()
        q.put((3, "c"))
        q.put((2, "d"))
        assert q.get_nowait() == (0, "b")
        assert await q.get() == (1, "a")
        assert q.get_nowait() == (2, "d")
        assert await q.get() == (3, "c")
        assert q.empty()

    run(main)


def test_lifo_queue_order() -> None:
    async def main() -> None:
        q: queues.LifoQueue[int] = queues.LifoQueue(maxsize=2)
        q.put_nowait(1)
        q.put_nowait(0)
        q.put(3)
        q.put(2)
        assert q.get_nowait() == 3
        assert await q.get() == 2
        assert q.get_nowait() == 0
        assert await q.get() == 1
        assert q.empty()
        for _ in range(4):
            q.task_done()
        await q.join(timeout=LONG)

    run(main)
