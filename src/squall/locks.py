"""Coroutine synchronization primitives: Condition, Event, Semaphore,
BoundedSemaphore and Lock.

They coordinate coroutines on one event loop (they are not thread-safe) and
follow Tornado's API, which differs from `asyncio`'s in ways code relies on:

* ``wait()`` and ``acquire()`` are plain methods returning a future, so the
  call registers the waiter at once, before anything awaits it; a semaphore
  with free slots hands out the future already resolved.
* Every wait takes a ``timeout``: a deadline on the `.IOLoop.time` clock or a
  `datetime.timedelta`. `Condition.wait` then resolves to False; the others
  fail with `squall.util.TimeoutError` (which is `asyncio.TimeoutError`).
* ``with (yield sem.acquire()):`` works in ``gen.coroutine`` code as well as
  ``async with sem:``; a bare ``with sem:`` is a mistake and raises
  ``RuntimeError``.

A waiter that times out or is cancelled is dropped: its slot is never handed
out, and the queues of waiters are swept so that abandoned futures do not
pile up.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import types
from collections.abc import Awaitable, Callable
from typing import Any

from squall.ioloop import IOLoop
from squall.util import TimeoutError

__all__ = ["Condition", "Event", "Semaphore", "BoundedSemaphore", "Lock"]

# A queue of waiters is swept of finished (timed-out or cancelled) futures
# after this many have finished while queued, so sweeping costs O(1)
# amortized per waiter and abandoned waiters stay bounded (the same threshold
# as Tornado's lock garbage collection).
_SWEEP_AFTER_ABANDONED = 100

_Timeout = float | datetime.timedelta


def _new_future() -> asyncio.Future[Any]:
    """A future on the running loop, or on the current IOLoop's loop when
    called outside a coroutine (as Tornado allows)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = IOLoop.current().asyncio_loop  # type: ignore[attr-defined]
    return loop.create_future()


def _on_timeout(future: asyncio.Future[Any], timeout: _Timeout, callback: Callable[[], None]) -> None:
    """Call ``callback()`` at ``timeout`` unless ``future`` is done first."""
    io_loop = IOLoop.current()
    handle = io_loop.add_timeout(timeout, callback)
    future.add_done_callback(lambda _: io_loop.remove_timeout(handle))


class _TimeoutGarbageCollector:
    """Base for primitives that keep a FIFO of waiter futures: counts the
    waiters that finished without being served and sweeps them out."""

    def __init__(self) -> None:
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._abandoned = 0

    def _garbage_collect(self) -> None:
        self._abandoned += 1
        if self._abandoned > _SWEEP_AFTER_ABANDONED:
            self._abandoned = 0
            self._waiters = collections.deque(w for w in self._waiters if not w.done())

    def _track(self, waiter: asyncio.Future[Any]) -> None:
        """Queue ``waiter``; if its owner cancels it, it counts as abandoned."""
        self._waiters.append(waiter)
        waiter.add_done_callback(self._collect_if_cancelled)

    def _collect_if_cancelled(self, waiter: asyncio.Future[Any]) -> None:
        if waiter.cancelled():
            self._garbage_collect()


class Condition(_TimeoutGarbageCollector):
    """Lets coroutines wait until another one notifies them.

    ``wait()`` returns a future that resolves to True when `notify` or
    `notify_all` wakes it, or to False if its ``timeout`` passes first.
    Waiters are woken in the order they started waiting. Unlike
    `threading.Condition` there is no lock to hold around ``wait``::

        condition = Condition()

        async def waiter():
            await condition.wait()
            print("notified")

        async def notifier():
            condition.notify()
    """

    def __repr__(self) -> str:
        waiters = f" waiters[{len(self._waiters)}]" if self._waiters else ""
        return f"<{self.__class__.__name__}{waiters}>"

    def wait(self, timeout: _Timeout | None = None) -> Awaitable[bool]:
        """Wait for a notification; the future resolves to False if
        ``timeout`` (a deadline or a timedelta) passes first."""
        waiter = _new_future()
        self._track(waiter)
        if timeout is not None:

            def expire() -> None:
                if not waiter.done():
                    waiter.set_result(False)
                    self._garbage_collect()

            _on_timeout(waiter, timeout, expire)
        return waiter

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiters (those that timed out do not count)."""
        woken = []
        while n and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                n -= 1
                woken.append(waiter)
        # Resolve after popping, so a callback that re-enters notify() sees
        # a consistent queue.
        for waiter in woken:
            if not waiter.done():
                waiter.set_result(True)

    def notify_all(self) -> None:
        """Wake all current waiters."""
        self.notify(len(self._waiters))


class Event:
    """A flag that coroutines can wait for.

    The flag starts clear. `set` sets it and wakes every waiter; while it is
    set, `wait` returns an already resolved future. `clear` resets it, so
    that later waiters block again.
    """

    def __init__(self) -> None:
        self._value = False
        self._waiters: set[asyncio.Future[None]] = set()

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} {'set' if self._value else 'clear'}>"

    def is_set(self) -> bool:
        """True if the flag is set."""
        return self._value

    def set(self) -> None:
        """Set the flag and wake every waiter. Harmless if already set."""
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        """Reset the flag; subsequent `wait` calls block until `set`."""
        self._value = False

    def wait(self, timeout: _Timeout | None = None) -> Awaitable[None]:
        """Wait until the flag is set.

        The future fails with `TimeoutError` if ``timeout`` (a deadline or a
        timedelta) passes first.
        """
        waiter: asyncio.Future[None] = _new_future()
        if self._value:
            waiter.set_result(None)
            return waiter
        self._waiters.add(waiter)
        waiter.add_done_callback(self._waiters.discard)
        if timeout is not None:

            def expire() -> None:
                if not waiter.done():
                    waiter.set_exception(TimeoutError("Timeout waiting for Event"))

            _on_timeout(waiter, timeout, expire)
        return waiter


class _ReleasingContextManager:
    """What ``yield sem.acquire()`` produces: releases ``obj`` on exiting a
    ``with`` block (its ``__enter__`` returns None)."""

    __slots__ = ("_obj",)

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: types.TracebackType | None,
    ) -> None:
        self._obj.release()


class _AsyncWithOnly:
    """``async with x:`` acquires and releases; a plain ``with x:`` is a
    mistake (it could not wait) and raises at once. For Semaphore and Lock."""

    def acquire(self, timeout: _Timeout | None = None) -> Awaitable[Any]:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> None:
        raise RuntimeError(
            f"Use 'async with' (or 'with (yield x.acquire())') instead of 'with' for "
            f"{self.__class__.__name__}"
        )

    def __exit__(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.__enter__()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.release()


class Semaphore(_AsyncWithOnly, _TimeoutGarbageCollector):
    """A counter that limits how many coroutines run a section at once.

    `acquire` takes a slot (waiting, in FIFO order, while the counter is 0)
    and `release` gives one back. ``release`` may be called more often than
    ``acquire``, raising the counter above its initial ``value``; use
    `BoundedSemaphore` to forbid that::

        sem = Semaphore(2)

        async def worker():
            async with sem:
                ...  # at most two workers are here at a time

    In ``gen.coroutine`` code, ``with (yield sem.acquire()):`` does the
    same.
    """

    def __init__(self, value: int = 1) -> None:
        super().__init__()
        if value < 0:
            raise ValueError(f"semaphore initial value must be >= 0, not {value!r}")
        self._value = value

    def __repr__(self) -> str:
        base = super().__repr__()[1:-1]
        state = "locked" if self._value == 0 else f"unlocked,value:{self._value}"
        if self._waiters:
            state += f",waiters:{len(self._waiters)}"
        return f"<{base} [{state}]>"

    def release(self) -> None:
        """Give a slot back, waking the longest waiting `acquire`."""
        self._value += 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._value -= 1
                # The slot passes straight to the waiter, so a coroutine that
                # calls acquire() before the waiter runs cannot take it.
                waiter.set_result(_ReleasingContextManager(self))
                break

    def acquire(self, timeout: _Timeout | None = None) -> Awaitable[_ReleasingContextManager]:
        """Take a slot.

        The future resolves (at once when a slot is free) to an object for
        ``with (yield sem.acquire()):``. It fails with `TimeoutError` if
        ``timeout`` (a deadline or a timedelta) passes first, and then no
        slot is taken.
        """
        waiter: asyncio.Future[_ReleasingContextManager] = _new_future()
        if self._value > 0:
            self._value -= 1
            waiter.set_result(_ReleasingContextManager(self))
            return waiter
        self._track(waiter)
        if timeout is not None:

            def expire() -> None:
                if not waiter.done():
                    waiter.set_exception(TimeoutError("Timeout acquiring Semaphore"))
                    self._garbage_collect()

            _on_timeout(waiter, timeout, expire)
        return waiter



class BoundedSemaphore(Semaphore):
    """A `Semaphore` whose `release` raises ``ValueError`` if it would raise
    the counter above its initial value (a release without an acquire is
    usually a bug)."""

    def __init__(self, value: int = 1) -> None:
        super().__init__(value=value)
        self._initial_value = value

    def release(self) -> None:
        """Give a slot back; ``ValueError`` if none is taken."""
        if self._value >= self._initial_value:
            raise ValueError(f"{self.__class__.__name__} released too many times")
        super().release()


class Lock(_AsyncWithOnly):
    """A mutual-exclusion lock for coroutines.

    `acquire` waits (in FIFO order) until the lock is free and takes it;
    `release` frees it. Use ``async with lock:``, or in ``gen.coroutine``
    code ``with (yield lock.acquire()):``. Releasing an unlocked lock raises
    ``RuntimeError``.
    """

    def __init__(self) -> None:
        self._block = BoundedSemaphore(value=1)

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} _block={self._block}>"

    def acquire(self, timeout: _Timeout | None = None) -> Awaitable[_ReleasingContextManager]:
        """Take the lock; the future fails with `TimeoutError` if ``timeout``
        (a deadline or a timedelta) passes first."""
        return self._block.acquire(timeout)

    def release(self) -> None:
        """Free the lock, handing it to the longest waiting `acquire`."""
        try:
            self._block.release()
        except ValueError:
            raise RuntimeError("release unlocked lock") from None

