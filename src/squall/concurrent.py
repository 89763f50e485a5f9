"""Futures: squall's `Future` is `asyncio.Future`, plus helpers to bridge
`concurrent.futures` and to run blocking methods on an executor.

Everything that returns a future in squall returns an `asyncio.Future` (or
something `await`-able); `concurrent.futures.Future` objects, as returned by
thread pools, are accepted wherever a future is yielded or chained.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import types
from concurrent import futures
from collections.abc import Callable
from typing import Any, Optional, TypeVar, Union, overload

from squall.log import app_log

__all__ = [
    "DummyExecutor",
    "FUTURES",
    "Future",
    "ReturnValueIgnoredError",
    "chain_future",
    "dummy_executor",
    "future_add_done_callback",
    "future_set_exc_info",
    "future_set_exception_unless_cancelled",
    "future_set_result_unless_cancelled",
    "is_future",
    "run_on_executor",
]

_T = TypeVar("_T")

#: squall's Future class: exactly `asyncio.Future`.
Future = asyncio.Future

#: The future types squall accepts: `asyncio.Future` and
#: `concurrent.futures.Future`.
FUTURES = (asyncio.Future, futures.Future)


class ReturnValueIgnoredError(Exception):
    """Raised when a function's return value would be silently lost
    (kept for compatibility with code that catches it)."""


def is_future(x: Any) -> bool:
    """Return True if ``x`` is an asyncio or a `concurrent.futures` future."""
    return isinstance(x, FUTURES)


class DummyExecutor(futures.Executor):
    """An executor that runs each submitted function at once, in the calling
    thread, and returns an already finished `concurrent.futures.Future`."""

    def submit(  # type: ignore[override]
        self, fn: Callable[..., _T], *args: Any, **kwargs: Any
    ) -> futures.Future[_T]:
        future: futures.Future[_T] = futures.Future()
        try:
            future_set_result_unless_cancelled(future, fn(*args, **kwargs))
        except Exception:
            future_set_exc_info(future, sys.exc_info())
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Nothing to shut down: work ran synchronously in `submit`."""


#: A shared `DummyExecutor`.
dummy_executor = DummyExecutor()


def run_on_executor(*args: Any, **kwargs: Any) -> Callable[..., Any]:
    """Decorator: run a method on an executor and return an awaitable Future.

    The method's object must have the executor as an attribute, named
    ``executor`` unless given: ``@run_on_executor(executor="_thread_pool")``.
    The decorator may be used bare (``@run_on_executor``) or called. The
    returned `asyncio.Future` belongs to the loop running at call time.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Future[Any]]:
        attribute = kwargs.get("executor", "executor")

        @functools.wraps(fn)
        def wrapper(self: Any, *call_args: Any, **call_kwargs: Any) -> Future[Any]:
            async_future: Future[Any] = Future()
            concurrent_future = getattr(self, attribute).submit(
                fn, self, *call_args, **call_kwargs
            )
            chain_future(concurrent_future, async_future)
            return async_future

        return wrapper

    unknown = set(kwargs) - {"executor"}
    if unknown:
        raise ValueError(f"run_on_executor got unexpected keyword arguments {sorted(unknown)!r}")
    if args and kwargs:
        raise ValueError("run_on_executor takes either a function or keyword arguments, not both")
    if len(args) == 1:
        return decorate(args[0])
    if len(args) > 1:
        raise ValueError(f"run_on_executor expected 1 argument, got {len(args)}")
    return decorate


def _copy_future_state(source: Union[Future[Any], futures.Future[Any]],
                       target: Union[Future[Any], futures.Future[Any]]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
        return
    exception = source.exception()
    if exception is not None:
        target.set_exception(exception)
    else:
        target.set_result(source.result())


def chain_future(a: Union[Future[_T], futures.Future[_T]],
                 b: Union[Future[_T], futures.Future[_T]]) -> None:
    """When ``a`` finishes, give ``b`` the same outcome.

    Result, exception and cancellation are copied, unless ``b`` is already
    done. Either future may be an asyncio or a `concurrent.futures` future;
    an asyncio ``b`` is always settled on its own loop's thread.
    """

    def copy(source: Any) -> None:
        if isinstance(b, asyncio.Future):
            loop = b.get_loop()
            if asyncio._get_running_loop() is not loop:
                if not loop.is_closed():
                    # ``a`` finished on another thread (or outside the loop):
                    # asyncio futures must only be touched on their loop.
                    loop.call_soon_threadsafe(_copy_future_state, source, b)
                return
        _copy_future_state(source, b)

    future_add_done_callback(a, copy)


def future_set_result_unless_cancelled(
    future: Union[Future[_T], futures.Future[_T]], value: _T
) -> None:
    """Set ``future``'s result unless it was cancelled (a cancelled future
    rejects results; the caller usually no longer cares)."""
    if not future.cancelled():
        future.set_result(value)


def future_set_exception_unless_cancelled(
    future: Union[Future[Any], futures.Future[Any]], exc: BaseException
) -> None:
    """Set ``future``'s exception, or log it if ``future`` was cancelled.

    Logging (to ``squall.application``) keeps an error from vanishing when
    nobody waits for the future any more.
    """
    if not future.cancelled():
        future.set_exception(exc)
    else:
        app_log.error("Exception after Future was cancelled", exc_info=exc)


def future_set_exc_info(
    future: Union[Future[Any], futures.Future[Any]],
    exc_info: tuple[Optional[type], Optional[BaseException], Optional[types.TracebackType]],
) -> None:
    """Set ``future``'s exception from a `sys.exc_info` triple (logging it
    instead if ``future`` was cancelled)."""
    if exc_info[1] is None:
        raise Exception("future_set_exc_info called with no exception")
    future_set_exception_unless_cancelled(future, exc_info[1])


@overload
def future_add_done_callback(
    future: futures.Future[_T], callback: Callable[[futures.Future[_T]], None]
) -> None: ...


@overload
def future_add_done_callback(
    future: Future[_T], callback: Callable[[Future[_T]], None]
) -> None: ...


def future_add_done_callback(future: Any, callback: Callable[[Any], None]) -> None:
    """Call ``callback(future)`` when ``future`` is done.

    Unlike ``add_done_callback``, a future that is already done runs the
    callback immediately, before this function returns (asyncio would
    schedule it for the next loop iteration).
    """
    if future.done():
        callback(future)
    else:
        future.add_done_callback(callback)
