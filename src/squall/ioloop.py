"""The event loop: `IOLoop`, a facade over an asyncio event loop, and
`PeriodicCallback`.

squall does not have an event loop of its own. Each `IOLoop` wraps exactly
one asyncio loop (uvloop's when it is installed, see `new_asyncio_loop`), and
``IOLoop.current()`` finds the wrapper of the running (or current) asyncio
loop, creating it on first use. Code inside squall that is on a hot path
talks to asyncio directly; `IOLoop` is the compatible API for applications.

Typical use::

    async def main():
        ...

    if __name__ == "__main__":
        IOLoop.current().run_sync(main)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import functools
import math
import numbers
import os
import random
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from inspect import isawaitable
from typing import Any, Literal, Optional, Protocol, TypeVar, Union, overload

from squall.concurrent import (
    Future,
    future_add_done_callback,
    future_set_exc_info,
    is_future,
)
from squall.log import app_log
from squall.util import Configurable, TimeoutError, import_object

__all__ = ["IOLoop", "PeriodicCallback", "TimeoutError", "new_asyncio_loop"]

_T = TypeVar("_T")


class _Selectable(Protocol):
    def fileno(self) -> int: ...

    def close(self) -> None: ...



#: Environment variable choosing the asyncio loop implementation squall
#: creates: ``uvloop``, ``asyncio``, or unset/``auto`` (uvloop if installed).
LOOP_ENV_VAR = "SQUALL_LOOP"


def new_asyncio_loop() -> asyncio.AbstractEventLoop:
    """Create a new asyncio event loop the way squall does everywhere.

    uvloop is used when it is installed, unless the environment variable
    ``SQUALL_LOOP`` is ``asyncio``; ``SQUALL_LOOP=uvloop`` insists on uvloop
    and raises `RuntimeError` if it is missing. The stdlib loop comes from
    `asyncio.new_event_loop`, so an installed event loop policy is honoured.
    """
    choice = os.environ.get(LOOP_ENV_VAR, "").strip().lower()
    if choice not in ("", "auto", "uvloop", "asyncio"):
        raise RuntimeError(
            f"{LOOP_ENV_VAR}={os.environ[LOOP_ENV_VAR]!r} is not one of "
            "'uvloop', 'asyncio' or 'auto'"
        )
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise RuntimeError(
                    f"{LOOP_ENV_VAR}=uvloop but uvloop is not installed "
                    "(pip install uvloop, or set SQUALL_LOOP=asyncio)"
                ) from None
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


def _current_asyncio_loop() -> Optional[asyncio.AbstractEventLoop]:
    """The running asyncio loop, else the thread's current one; never
    creates a loop and never warns."""
    loop = asyncio._get_running_loop()
    if loop is not None:
        return loop
    if sys.version_info >= (3, 14):
        # Event loop policies are deprecated; get_event_loop() no longer
        # creates a loop implicitly, it raises when none is set.
        try:
            return asyncio.get_event_loop()
        except RuntimeError:
            return None
    policy = asyncio.get_event_loop_policy()
    # The stdlib and uvloop policies keep the thread's loop here. Reading it
    # avoids get_event_loop(), which would create a stdlib loop implicitly
    # (and warn about it on Python 3.12+) when none is set.
    local = getattr(policy, "_local", None)
    if local is not None and hasattr(local, "_loop"):
        current: Optional[asyncio.AbstractEventLoop] = local._loop
        return current
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return policy.get_event_loop()
    except RuntimeError:
        return None


class IOLoop(Configurable):
    """An event loop: a thin wrapper around one asyncio event loop.

    Get the loop of the current thread with `IOLoop.current`; run it with
    `start` or, better, `run_sync`. ``IOLoop()`` creates a wrapper around a
    brand-new asyncio loop (an `AsyncIOLoop`); ``IOLoop(asyncio_loop=loop)``
    wraps an existing one. Each asyncio loop has at most one `IOLoop`.

    Callbacks scheduled through the IOLoop (`add_callback`, `add_timeout`,
    `add_future`, ...) that raise are logged to ``squall.application`` with
    their traceback; a callback that returns an awaitable has its eventual
    exception logged the same way.
    """

    # Event masks for add_handler/update_handler; the values match the
    # epoll constants as in Tornado, so existing code comparing them works.
    NONE = 0
    READ = 0x001
    WRITE = 0x004
    ERROR = 0x018

    #: Maps each asyncio loop to its IOLoop wrapper.
    _ioloop_for_asyncio: dict[asyncio.AbstractEventLoop, IOLoop] = {}

    asyncio_loop: asyncio.AbstractEventLoop

    @classmethod
    def configure(cls, impl: Union[None, str, type[Configurable]], **kwargs: Any) -> None:
        """Choose the IOLoop class used by ``IOLoop()``; it must be a
        subclass of `squall.platform.asyncio.BaseAsyncIOLoop`."""
        from squall.platform.asyncio import BaseAsyncIOLoop

        if isinstance(impl, str):
            impl = import_object(impl)
        if isinstance(impl, type) and not issubclass(impl, BaseAsyncIOLoop):
            raise RuntimeError(f"IOLoop implementation {impl!r} is not a BaseAsyncIOLoop")
        super().configure(impl, **kwargs)

    @staticmethod
    def instance() -> IOLoop:
        """Deprecated alias for `IOLoop.current()`."""
        return IOLoop.current()

    def install(self) -> None:
        """Deprecated alias for `make_current()`."""
        self.make_current()

    @staticmethod
    def clear_instance() -> None:
        """Deprecated alias for `clear_current()`."""
        IOLoop.clear_current()

    @overload
    @staticmethod
    def current() -> IOLoop: ...

    @overload
    @staticmethod
    def current(instance: Literal[True] = True) -> IOLoop: ...

    @overload
    @staticmethod
    def current(instance: bool = True) -> Optional[IOLoop]: ...

    @staticmethod
    def current(instance: bool = True) -> Optional[IOLoop]:
        """Return the IOLoop of the running asyncio loop, or else of the
        thread's current one.

        With no asyncio loop at all, ``instance=True`` (the default) creates
        one (see `new_asyncio_loop`), makes it the thread's current loop and
        returns its IOLoop; ``instance=False`` returns None instead. An
        asyncio loop without a wrapper gets one (an `AsyncIOMainLoop`) unless
        ``instance`` is False.
        """
        loop = _current_asyncio_loop()
        if loop is None:
            if not instance:
                return None
            loop = new_asyncio_loop()
            asyncio.set_event_loop(loop)
        existing = IOLoop._ioloop_for_asyncio.get(loop)
        if existing is not None or not instance:
            return existing
        from squall.platform.asyncio import AsyncIOMainLoop

        wrapper: IOLoop = AsyncIOMainLoop(asyncio_loop=loop, make_current=False)
        return wrapper

    def make_current(self) -> None:
        """Deprecated: make this IOLoop's asyncio loop the thread's current
        loop. Start the loop (or use `run_sync`) instead."""
        warnings.warn(
            "make_current is deprecated; start the event loop first",
            DeprecationWarning,
            stacklevel=2,
        )
        self._make_current()

    def _make_current(self) -> None:
        raise NotImplementedError()

    @staticmethod
    def clear_current() -> None:
        """Deprecated: undo `make_current`."""
        warnings.warn("clear_current is deprecated", DeprecationWarning, stacklevel=2)
        IOLoop._clear_current()

    @staticmethod
    def _clear_current() -> None:
        old = IOLoop.current(instance=False)
        if old is not None:
            old._clear_current_hook()

    def _clear_current_hook(self) -> None:
        """Undo what `_make_current` did, if anything."""

    @classmethod
    def configurable_base(cls) -> type[Configurable]:
        return IOLoop

    @classmethod
    def configurable_default(cls) -> type[Configurable]:
        from squall.platform.asyncio import AsyncIOLoop

        return AsyncIOLoop

    def initialize(self, make_current: bool = True) -> None:
        """Finish construction; ``make_current`` makes the loop the thread's
        current asyncio loop."""
        if make_current:
            self._make_current()

    def close(self, all_fds: bool = False) -> None:
        """Close the IOLoop and its asyncio loop, freeing their resources.

        With ``all_fds`` the file descriptors (or file objects) still
        registered with `add_handler` are closed too. The loop must not be
        running; call `stop` first and let `start` return.
        """
        raise NotImplementedError()

    def add_handler(
        self, fd: Union[int, _Selectable], handler: Callable[..., None], events: int
    ) -> None:
        """Call ``handler(fd, events)`` when ``fd`` is ready for ``events``.

        ``fd`` is an integer file descriptor or an object with ``fileno()``;
        the handler receives the very object that was registered. ``events``
        is a mask of `READ` and `WRITE`. Registering the same descriptor twice
        raises `ValueError`.
        """
        raise NotImplementedError()

    def update_handler(self, fd: Union[int, _Selectable], events: int) -> None:
        """Change the events that ``fd``'s handler listens for."""
        raise NotImplementedError()

    def remove_handler(self, fd: Union[int, _Selectable]) -> None:
        """Stop listening on ``fd``; does nothing if it is not registered."""
        raise NotImplementedError()

    def start(self) -> None:
        """Run the loop until `stop` is called.

        While it runs, its asyncio loop is the thread's current loop.
        Calling `start` on a loop that is already running raises
        `RuntimeError`.
        """
        raise NotImplementedError()

    def stop(self) -> None:
        """Make `start` return after the current iteration (callbacks
        already scheduled may still run). Safe to call before `start`: the
        loop then stops right after starting."""
        raise NotImplementedError()

    def run_sync(self, func: Callable[[], Any], timeout: Optional[float] = None) -> Any:
        """Start the loop, run ``func``, stop the loop, return the result.

        ``func`` may be a plain function or return an awaitable (a native
        coroutine, a `.gen.coroutine`, a future); its result (or exception)
        becomes `run_sync`'s. A plain function returning a value that is not
        awaitable raises `.gen.BadYieldError`. If ``timeout`` seconds pass
        first, ``func``'s future is cancelled and `TimeoutError` is raised.
        This is the usual way to run a program's main coroutine::

            IOLoop.current().run_sync(main)
        """
        from squall.gen import convert_yielded

        if timeout is not None and (not isinstance(timeout, numbers.Real) or timeout < 0):
            raise ValueError(f"run_sync timeout must be a non-negative number, got {timeout!r}")
        state: dict[str, Any] = {"future": None, "timed_out": False}

        def run() -> None:
            try:
                result = func()
                if result is not None:
                    result = convert_yielded(result)
            except Exception:
                failed: Future[Any] = Future()
                future_set_exc_info(failed, sys.exc_info())
                state["future"] = failed
            else:
                if is_future(result):
                    state["future"] = result
                else:
                    done: Future[Any] = Future()
                    done.set_result(result)
                    state["future"] = done
            self.add_future(state["future"], lambda future: self.stop())

        self.add_callback(run)
        timeout_handle = None
        if timeout is not None:

            def on_timeout() -> None:
                state["timed_out"] = True
                future = state["future"]
                # A cancelled future stops the loop through its done
                # callback once the cancellation has run through it.
                if future is None or not future.cancel():
                    self.stop()

            timeout_handle = self.add_timeout(self.time() + timeout, on_timeout)
        try:
            self.start()
        finally:
            if timeout_handle is not None:
                self.remove_timeout(timeout_handle)
        future = state["future"]
        if future is None or not future.done():
            if future is not None and future.cancel():
                # Someone stopped the loop early. Let the cancellation run
                # through the abandoned task now, so it is not destroyed
                # while pending (and logged as such) when the loop closes.
                self.add_future(future, lambda f: self.stop())
                self.start()
            if state["timed_out"]:
                raise TimeoutError(f"Operation timed out after {timeout} seconds")
            raise RuntimeError("Event loop stopped before Future completed.")
        if future.cancelled() and state["timed_out"]:
            raise TimeoutError(f"Operation timed out after {timeout} seconds")
        return future.result()

    def time(self) -> float:
        """Return the loop's notion of the current time, in seconds.

        It is `time.time` (as in Tornado), the clock that `add_timeout` and
        `call_at` deadlines are measured against.
        """
        return time.time()

    def add_timeout(
        self,
        deadline: Union[float, datetime.timedelta],
        callback: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> object:
        """Run ``callback(*args, **kwargs)`` at ``deadline``.

        ``deadline`` is a time on the `time` clock, or a `datetime.timedelta`
        relative to now. Returns a handle for `remove_timeout`.
        """
        if isinstance(deadline, numbers.Real):
            return self.call_at(deadline, callback, *args, **kwargs)
        if isinstance(deadline, datetime.timedelta):
            return self.call_at(self.time() + deadline.total_seconds(), callback, *args, **kwargs)
        raise TypeError(f"Unsupported deadline {deadline!r}")

    def call_later(
        self, delay: float, callback: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> object:
        """Run ``callback(*args, **kwargs)`` after ``delay`` seconds.
        Returns a handle for `remove_timeout`."""
        return self.call_at(self.time() + delay, callback, *args, **kwargs)

    def call_at(
        self, when: float, callback: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> object:
        """Run ``callback(*args, **kwargs)`` at time ``when`` (on the `time`
        clock). Returns a handle for `remove_timeout`."""
        raise NotImplementedError()

    def remove_timeout(self, timeout: object) -> None:
        """Cancel a pending timeout. Harmless if it already ran."""
        raise NotImplementedError()

    def add_callback(self, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``callback(*args, **kwargs)`` on the next loop iteration.

        Safe to call from any thread (the loop is woken up). A callback added
        while another thread is closing the loop is silently dropped.
        """
        raise NotImplementedError()

    def add_callback_from_signal(
        self, callback: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        """Deprecated: like `add_callback`, for use in signal handlers.
        Use ``asyncio.get_running_loop().add_signal_handler`` instead."""
        raise NotImplementedError()

    def spawn_callback(self, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``callback(*args, **kwargs)`` on the next iteration, detached
        from the caller (errors are logged, not propagated)."""
        self.add_callback(callback, *args, **kwargs)

    def add_future(
        self,
        future: Union[Future[_T], concurrent.futures.Future[_T]],
        callback: Callable[[Any], Any],
    ) -> None:
        """Call ``callback(future)`` on this loop once ``future`` is done.

        Works with asyncio futures and with `concurrent.futures` futures
        completed on other threads.
        """
        if isinstance(future, asyncio.Future):
            future.add_done_callback(
                lambda f: self._run_callback(functools.partial(callback, f))
            )
        elif is_future(future):
            future_add_done_callback(future, lambda f: self.add_callback(callback, f))
        else:
            raise TypeError(f"add_future expects a future, got {future!r}")

    def run_in_executor(
        self,
        executor: Optional[concurrent.futures.Executor],
        func: Callable[..., _T],
        *args: Any,
    ) -> Awaitable[_T]:
        """Run ``func(*args)`` on ``executor`` (the default thread pool when
        None) and return an awaitable future of its result.

        Context variables are not copied to the worker thread.
        """
        raise NotImplementedError()

    def set_default_executor(self, executor: concurrent.futures.Executor) -> None:
        """Use ``executor`` for ``run_in_executor(None, ...)``."""
        raise NotImplementedError()

    def _run_callback(self, callback: Callable[[], Any]) -> None:
        try:
            result = callback()
            if result is not None:
                from squall.gen import BadYieldError, convert_yielded

                try:
                    result = convert_yielded(result)
                except BadYieldError:
                    # A callback's plain return value is meaningless; only
                    # awaitables are followed, to log their errors.
                    pass
                else:
                    self.add_future(result, self._discard_future_result)
        except asyncio.CancelledError:
            pass
        except Exception:
            app_log.error("Exception in callback %r", callback, exc_info=True)

    def _discard_future_result(self, future: Future[Any]) -> None:
        # Raises (and so gets logged by _run_callback) if the future failed.
        future.result()

    def split_fd(self, fd: Union[int, _Selectable]) -> tuple[int, Union[int, _Selectable]]:
        """Return ``(fileno, fd)`` for an integer descriptor or a file-like
        object, so both forms can be registered."""
        if isinstance(fd, int):
            return fd, fd
        return fd.fileno(), fd

    def close_fd(self, fd: Union[int, _Selectable]) -> None:
        """Close an integer descriptor or a file-like object, ignoring
        `OSError` (it may already be closed)."""
        try:
            if isinstance(fd, int):
                os.close(fd)
            else:
                fd.close()
        except OSError:
            pass


class PeriodicCallback:
    """Call ``callback`` every ``callback_time`` milliseconds.

    ``callback_time`` may also be a `datetime.timedelta`. If the callback
    returns an awaitable, the next run is scheduled only after it finishes.
    Runs that would fall in the past (because the callback or the loop was
    slow) are skipped so that the schedule stays on its original grid.
    ``jitter`` (a fraction, e.g. 0.1 for ±5%) randomises each interval to
    keep many periodic tasks from firing together.

    Call `start` after creating it; it runs on the IOLoop current at
    `start` time.
    """

    def __init__(
        self,
        callback: Callable[[], Any],
        callback_time: Union[datetime.timedelta, float],
        jitter: float = 0,
    ) -> None:
        self.callback = callback
        if isinstance(callback_time, datetime.timedelta):
            callback_time = callback_time / datetime.timedelta(milliseconds=1)
        if not isinstance(callback_time, numbers.Real) or callback_time <= 0:
            raise ValueError(
                f"PeriodicCallback must have a positive callback_time, got {callback_time!r}"
            )
        self.callback_time: float = callback_time
        if jitter < 0:
            raise ValueError(f"PeriodicCallback jitter must not be negative, got {jitter!r}")
        self.jitter: float = jitter
        self._running: bool = False
        self._timeout: Optional[object] = None
        self._next_timeout: float = 0.0
        self.io_loop: IOLoop

    def start(self) -> None:
        """Start calling the callback (first call one period from now)."""
        self.io_loop = IOLoop.current()
        self._running = True
        self._next_timeout = self.io_loop.time()
        self._schedule_next()

    def stop(self) -> None:
        """Stop calling the callback."""
        self._running = False
        if self._timeout is not None:
            self.io_loop.remove_timeout(self._timeout)
            self._timeout = None

    def is_running(self) -> bool:
        """Return True between `start` and `stop`."""
        return self._running

    async def _run(self) -> None:
        if not self._running:
            return
        try:
            result = self.callback()
            if result is not None and isawaitable(result):
                await result
        except Exception:
            app_log.error("Exception in callback %r", self.callback, exc_info=True)
        finally:
            self._schedule_next()

    def _schedule_next(self) -> None:
        if self._running:
            self._update_next(self.io_loop.time())
            self._timeout = self.io_loop.add_timeout(self._next_timeout, self._run)

    def _update_next(self, current_time: float) -> None:
        period = self.callback_time / 1000.0
        if self.jitter:
            period *= 1 + self.jitter * (random.random() - 0.5)
        if self._next_timeout <= current_time:
            # Skip every run whose time has already passed, keeping to the
            # grid of start time plus whole periods.
            missed = math.floor((current_time - self._next_timeout) / period)
            self._next_timeout += (missed + 1) * period
        else:
            # The clock went backwards: keep the schedule rather than firing
            # a burst of runs.
            self._next_timeout += period
