"""Queues for coordinating producer and consumer coroutines: Queue (FIFO),
PriorityQueue and LifoQueue.

Like `asyncio.Queue` with Tornado's API: `Queue.put` and `Queue.get` are
plain methods returning a future (the call joins the line at once), both take
a ``timeout`` (a deadline on the `.IOLoop.time` clock or a
`datetime.timedelta`) after which the future fails with
`squall.util.TimeoutError`, and ``async for item in queue`` consumes items
forever. Not thread-safe: use it from one event loop. ::

    q = Queue(maxsize=2)

    async def consumer():
        async for item in q:
            try:
                print("Doing work on", item)
            finally:
                q.task_done()

    async def producer():
        for item in range(5):
            await q.put(item)      # waits while the queue is full

    async def main():
        IOLoop.current().spawn_callback(consumer)
        await producer()
        await q.join()             # waits until every item is task_done()
"""

from __future__ import annotations

import asyncio
import collections
import heapq
from typing import Any, Generic, TypeVar

from squall.locks import Event, _new_future, _on_timeout, _Timeout
from squall.util import TimeoutError

__all__ = ["Queue", "PriorityQueue", "LifoQueue", "QueueFull", "QueueEmpty"]

_T = TypeVar("_T")

# Timed-out or cancelled waiters stay queued until they reach the front; the
# waiter queues are swept after this many, so they stay bounded even when
# the front waiter blocks forever (the threshold squall.locks uses too).
_SWEEP_AFTER_ABANDONED = 100


class QueueEmpty(Exception):
    """Raised by `Queue.get_nowait` when the queue has no items."""


class QueueFull(Exception):
    """Raised by `Queue.put_nowait` when the queue is at its maxsize."""


class _QueueIterator(Generic[_T]):
    def __init__(self, q: Queue[_T]) -> None:
        self.q = q

    def __anext__(self) -> asyncio.Future[_T]:
        return self.q.get()


class Queue(Generic[_T]):
    """A first-in, first-out queue of items for coroutines.

    ``maxsize`` bounds the number of items (0, the default, means no bound);
    while the queue is full `put` waits. `get` waits while it is empty.
    Waiting producers and consumers are served in the order they arrived.

    `join` waits until every item put has been marked done with `task_done`.
    """

    def __init__(self, maxsize: int = 0) -> None:
        if maxsize is None:
            raise TypeError("maxsize can't be None")
        if maxsize < 0:
            raise ValueError(f"maxsize can't be negative, got {maxsize!r}")
        self._maxsize = maxsize
        self._init()
        self._getters: collections.deque[asyncio.Future[_T]] = collections.deque()
        self._putters: collections.deque[tuple[_T, asyncio.Future[None]]] = collections.deque()
        self._abandoned = 0
        self._unfinished_tasks = 0
        self._finished = Event()
        self._finished.set()

    @property
    def maxsize(self) -> int:
        """The maximum number of items allowed in the queue (0: no bound)."""
        return self._maxsize

    def qsize(self) -> int:
        """The number of items in the queue."""
        return len(self._queue)

    def empty(self) -> bool:
        """True if the queue holds no items."""
        return not self._queue

    def full(self) -> bool:
        """True if the queue holds ``maxsize`` items (never, when maxsize is 0)."""
        if self._maxsize == 0:
            return False
        return self.qsize() >= self._maxsize

    def put(self, item: _T, timeout: _Timeout | None = None) -> asyncio.Future[None]:
        """Put ``item`` in the queue, waiting for room if it is full.

        Returns a future that resolves once the item is in the queue (at once
        if there is room), or fails with `TimeoutError` if ``timeout`` passes
        first; the item is then not put.
        """
        future: asyncio.Future[None] = _new_future()
        try:
            self.put_nowait(item)
        except QueueFull:
            self._putters.append((item, future))
            self._watch(future, timeout, "Timeout putting into Queue")
        else:
            future.set_result(None)
        return future

    def put_nowait(self, item: _T) -> None:
        """Put ``item`` in the queue without waiting; raises `QueueFull` if
        there is no room."""
        self._consume_expired()
        if self._getters:
            # Only possible while the queue is empty: hand the item straight
            # to the longest waiting consumer.
            getter = self._getters.popleft()
            self._put_counted(item)
            getter.set_result(self._get())
        elif self.full():
            raise QueueFull
        else:
            self._put_counted(item)

    def get(self, timeout: _Timeout | None = None) -> asyncio.Future[_T]:
        """Remove and return an item, waiting until one is available.

        Returns a future that resolves to the item, or fails with
        `TimeoutError` if ``timeout`` passes first.
        """
        future: asyncio.Future[_T] = _new_future()
        try:
            future.set_result(self.get_nowait())
        except QueueEmpty:
            self._getters.append(future)
            self._watch(future, timeout, "Timeout getting from Queue")
        return future

    def get_nowait(self) -> _T:
        """Remove and return an item without waiting; raises `QueueEmpty` if
        there is none."""
        self._consume_expired()
        if self._putters:
            # Only possible while the queue is full: admit the longest
            # waiting producer's item as this one leaves.
            item, putter = self._putters.popleft()
            self._put_counted(item)
            putter.set_result(None)
            return self._get()
        if self.qsize():
            return self._get()
        raise QueueEmpty

    def task_done(self) -> None:
        """Mark one item taken with `get` as processed.

        When every item put has been marked done, `join` returns. Raises
        ``ValueError`` if called more times than items were put.
        """
        if self._unfinished_tasks <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished_tasks -= 1
        if self._unfinished_tasks == 0:
            self._finished.set()

    def join(self, timeout: _Timeout | None = None) -> asyncio.Future[None]:
        """Wait until every item put has been marked done with `task_done`.

        The future fails with `TimeoutError` if ``timeout`` passes first.
        """
        return self._finished.wait(timeout)  # type: ignore[return-value]

    def __aiter__(self) -> _QueueIterator[_T]:
        return _QueueIterator(self)

    # Storage hooks, overridden by PriorityQueue and LifoQueue.
    def _init(self) -> None:
        self._queue: Any = collections.deque()

    def _get(self) -> _T:
        return self._queue.popleft()  # type: ignore[no-any-return]

    def _put(self, item: _T) -> None:
        self._queue.append(item)

    def _put_counted(self, item: _T) -> None:
        self._unfinished_tasks += 1
        self._finished.clear()
        self._put(item)

    def _watch(self, future: asyncio.Future[Any], timeout: _Timeout | None, message: str) -> None:
        """Arrange for a queued waiter to fail at ``timeout``, and count it as
        abandoned when it times out or is cancelled."""
        future.add_done_callback(self._count_if_cancelled)
        if timeout is not None:

            def expire() -> None:
                if not future.done():
                    future.set_exception(TimeoutError(message))
                    self._count_abandoned()

            _on_timeout(future, timeout, expire)

    def _count_if_cancelled(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self._count_abandoned()

    def _count_abandoned(self) -> None:
        self._abandoned += 1
        if self._abandoned > _SWEEP_AFTER_ABANDONED:
            self._abandoned = 0
            self._getters = collections.deque(f for f in self._getters if not f.done())
            self._putters = collections.deque(p for p in self._putters if not p[1].done())

    def _consume_expired(self) -> None:
        # Drop waiters at the front that timed out or were cancelled.
        while self._putters and self._putters[0][1].done():
            self._putters.popleft()
        while self._getters and self._getters[0].done():
            self._getters.popleft()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at {hex(id(self))} {self._format()}>"

    def __str__(self) -> str:
        return f"<{type(self).__name__} {self._format()}>"

    def _format(self) -> str:
        result = f"maxsize={self.maxsize!r}"
        if getattr(self, "_queue", None):
            result += f" queue={self._queue!r}"
        if self._getters:
            result += f" getters[{len(self._getters)}]"
        if self._putters:
            result += f" putters[{len(self._putters)}]"
        if self._unfinished_tasks:
            result += f" tasks={self._unfinished_tasks}"
        return result


class PriorityQueue(Queue[_T]):
    """A `Queue` that returns the smallest item first.

    Items are usually ``(priority, data)`` tuples; lower priorities come out
    first. ::

        q = PriorityQueue()
        q.put((1, "medium-priority item"))
        q.put((0, "high-priority item"))
        q.put((10, "low-priority item"))
        q.get_nowait()  # (0, "high-priority item")
    """

    def _init(self) -> None:
        self._queue = []

    def _put(self, item: _T) -> None:
        heapq.heappush(self._queue, item)

    def _get(self) -> _T:
        return heapq.heappop(self._queue)  # type: ignore[no-any-return]


class LifoQueue(Queue[_T]):
    """A `Queue` that returns the most recently put item first (a stack)."""

    def _init(self) -> None:
        self._queue = []

    def _put(self, item: _T) -> None:
        self._queue.append(item)

    def _get(self) -> _T:
        return self._queue.pop()  # type: ignore[no-any-return]
