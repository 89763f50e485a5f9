"""Generator-based coroutines (``@gen.coroutine``) and helpers for waiting on
several futures at once.

Native ``async def`` coroutines are the modern way to write asynchronous
code; this module keeps Tornado's decorated generators working on asyncio and
provides utilities that work with both: `sleep`, `multi`, `with_timeout`,
`WaitIterator`, `convert_yielded`.

A decorated generator function returns an `asyncio.Future` when called. Its
body runs at once, synchronously, up to its first ``yield`` (so a coroutine
called without waiting for it still starts immediately); each ``yield``
waits for a future, an awaitable, a list or dict of them, or `moment`, and
evaluates to the result::

    @gen.coroutine
    def fetch_both(client):
        a, b = yield [client.fetch(url_a), client.fetch(url_b)]
        return a.body + b.body

Context variables set in a coroutine stay set across its yields, and tasks
it starts inherit them, as with native coroutines.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import datetime
import functools
import sys
import types
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from inspect import isawaitable
from typing import Any, Optional, Union

from squall.concurrent import (
    Future,
    chain_future,
    future_add_done_callback,
    future_set_exc_info,
    future_set_result_unless_cancelled,
    is_future,
)
from squall.ioloop import IOLoop, _current_asyncio_loop, new_asyncio_loop
from squall.log import app_log
from squall.util import TimeoutError

__all__ = [
    "BadYieldError",
    "KeyReuseError",
    "LeakedCallbackError",
    "Multi",
    "Return",
    "ReturnValueIgnoredError",
    "Runner",
    "TimeoutError",
    "UnknownKeyError",
    "WaitIterator",
    "convert_yielded",
    "coroutine",
    "is_coroutine_function",
    "maybe_future",
    "moment",
    "multi",
    "multi_future",
    "sleep",
    "with_timeout",
]


_Yieldable = Union[None, Awaitable[Any], list[Awaitable[Any]], dict[Any, Awaitable[Any]]]


class KeyReuseError(Exception):
    """Kept for compatibility with code written for Tornado's old callback
    API; squall never raises it."""


class UnknownKeyError(Exception):
    """Kept for compatibility with code written for Tornado's old callback
    API; squall never raises it."""


class LeakedCallbackError(Exception):
    """Kept for compatibility with code written for Tornado's old callback
    API; squall never raises it."""


class BadYieldError(Exception):
    """A coroutine yielded (or `run_sync` got) something that cannot be
    waited for, such as a number or a tuple."""


class ReturnValueIgnoredError(Exception):
    """Kept for compatibility; squall never raises it."""


class Return(Exception):
    """Return a value from a `coroutine` (``raise gen.Return(value)``).

    A plain ``return value`` does the same and is preferred; this remains
    for code that still runs on Python 2 era idioms.
    """

    def __init__(self, value: Any = None) -> None:
        super().__init__()
        self.value = value
        # Printed by the default exception formatting, for debugging.
        self.args = (value,)


class _NullFuture:
    """A future-like object that is always done with result None.

    `moment` is one: yielding it gives the loop one iteration. It is not a
    real `asyncio.Future`, so yielding it costs no allocation.
    """

    __slots__ = ()

    def result(self) -> None:
        return None

    def exception(self) -> None:
        return None

    def done(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return False

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        callback(self)

    def __repr__(self) -> str:
        return "<squall.gen.moment>" if self is moment else "<squall.gen._NullFuture>"


#: Yield this (``yield gen.moment`` or ``await gen.moment`` is not
#: supported; use ``await asyncio.sleep(0)`` in native coroutines) to let the
#: loop run one iteration before the coroutine continues.
moment: Any = _NullFuture()

# What a finished Runner points its ``future`` at, so that a stray wake-up
# finds a done "future" and stops.
_null_future: Any = _NullFuture()

_THIS_FILE = __file__

# Runners resume in their coroutine's own context (through ``ctx_run``), so
# the context asyncio runs their wake-up callback in does not matter; one
# shared empty context spares asyncio a context copy per yield.
_CALLBACK_CONTEXT = contextvars.Context()


def _create_future() -> Future[Any]:
    loop = asyncio._get_running_loop() or _current_asyncio_loop()
    if loop is None:
        loop = new_asyncio_loop()
        asyncio.set_event_loop(loop)
    future: Future[Any] = Future(loop=loop)
    # In asyncio debug mode the future records where it was created; show
    # the user's call site rather than this module's frames.
    source_traceback = getattr(future, "_source_traceback", None)
    while source_traceback and source_traceback[-1][0] == _THIS_FILE:
        del source_traceback[-1]
    return future


def _value_from_stop(e: BaseException) -> Any:
    return getattr(e, "value", None)


def _settle_failure(future: Future[Any], exc_info: Any) -> None:
    if isinstance(exc_info[1], asyncio.CancelledError):
        # Like an asyncio.Task: a coroutine that lets CancelledError escape
        # ends up cancelled.
        future.cancel()
    else:
        future_set_exc_info(future, exc_info)


def _keep_runner_alive(runner: Runner) -> Callable[[Any], object]:
    # The result future holds this callback (and so the runner, and so the
    # generator) until it is done; otherwise a runner waiting on a future
    # that only it references could be garbage collected mid-flight.
    return lambda future: runner


def coroutine(func: Callable[..., Any]) -> Callable[..., Future[Any]]:
    """Decorator turning a generator function into a coroutine.

    Calling the decorated function runs its body up to the first ``yield``
    and returns an `asyncio.Future` for its eventual return value. The body
    resumes when the yielded object (see `convert_yielded`) is done, with its
    result as the value of the ``yield`` expression, or its exception raised
    there. Exceptions, including those raised before the first ``yield``,
    are delivered through the future, never raised by the call itself.

    Functions that are not generators may be decorated too; their return
    value becomes the future's result.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Future[Any]:
        future = _create_future()
        # Run the whole coroutine in a copy of the caller's context, so that
        # variables it sets persist across its yields but do not leak out.
        ctx_run = contextvars.copy_context().run
        # A traceback stored in ``future`` keeps this frame alive; the
        # ``finally: future = result = None`` blocks below drop the frame's
        # references so that no reference cycle (future -> exception ->
        # traceback -> this frame -> future) outlives the call.
        try:
            result = ctx_run(func, *args, **kwargs)
        except (Return, StopIteration) as e:
            result = _value_from_stop(e)
        except (Exception, asyncio.CancelledError):
            _settle_failure(future, sys.exc_info())
            try:
                return future
            finally:
                future = None  # type: ignore[assignment]
        if isinstance(result, types.GeneratorType):
            try:
                yielded = ctx_run(next, result)
            except (StopIteration, Return) as e:
                future_set_result_unless_cancelled(future, _value_from_stop(e))
            except (Exception, asyncio.CancelledError):
                _settle_failure(future, sys.exc_info())
            else:
                future.add_done_callback(
                    _keep_runner_alive(Runner(ctx_run, result, future, yielded))
                )
                yielded = None
            try:
                return future
            finally:
                future = result = None  # type: ignore[assignment]
        future_set_result_unless_cancelled(future, result)
        return future

    wrapper.__wrapped__ = func
    wrapper.__squall_coroutine__ = True  # type: ignore[attr-defined]
    # The marker Tornado-aware code (and tornado's own is_coroutine_function)
    # looks for.
    wrapper.__tornado_coroutine__ = True  # type: ignore[attr-defined]
    return wrapper


def is_coroutine_function(func: Any) -> bool:
    """Return True if ``func`` was decorated with `coroutine`."""
    return getattr(func, "__squall_coroutine__", False) or getattr(
        func, "__tornado_coroutine__", False
    )


class Runner:
    """Drives a decorated generator: resumes it whenever what it yielded is
    done, until it returns or raises into ``result_future``.

    Internal to `coroutine`, but public because Tornado's was.
    """

    def __init__(
        self,
        ctx_run: Callable[..., Any],
        gen: Generator[Any, Any, Any],
        result_future: Future[Any],
        first_yielded: Any,
    ) -> None:
        self.ctx_run = ctx_run
        self.gen: Optional[Generator[Any, Any, Any]] = gen
        self.result_future: Optional[Future[Any]] = result_future
        self.future: Any = _null_future
        self.running = False
        self.finished = False
        self.io_loop = IOLoop.current()
        if self.ctx_run(self.handle_yield, first_yielded):
            # Drop this frame's references before running: an exception
            # raised by the generator keeps this frame in its traceback.
            gen = result_future = first_yielded = None  # type: ignore[assignment]
            self.ctx_run(self.run)

    def run(self) -> None:
        """Resume the generator as long as what it yields is already done."""
        if self.running or self.finished:
            return
        try:
            self.running = True
            while True:
                future = self.future
                if future is None:
                    raise Exception("No pending future")
                if not future.done():
                    return
                self.future = None
                assert self.gen is not None
                try:
                    error: Optional[BaseException] = None
                    try:
                        value = future.result()
                    except (Exception, asyncio.CancelledError) as e:
                        error = e
                        value = None
                    future = None
                    # Thrown outside of any except block, so the exception
                    # does not get an unrelated __context__ attached.
                    if error is not None:
                        try:
                            yielded = self.gen.throw(error)
                        finally:
                            error = None
                    else:
                        yielded = self.gen.send(value)
                except (StopIteration, Return) as e:
                    self._finish()
                    assert self.result_future is not None
                    future_set_result_unless_cancelled(self.result_future, _value_from_stop(e))
                    self.result_future = None
                    return
                except (Exception, asyncio.CancelledError):
                    self._finish()
                    assert self.result_future is not None
                    _settle_failure(self.result_future, sys.exc_info())
                    self.result_future = None
                    return
                if not self.handle_yield(yielded):
                    return
                yielded = None
        finally:
            self.running = False

    def _finish(self) -> None:
        self.finished = True
        self.future = _null_future
        self.gen = None

    def handle_yield(self, yielded: Any) -> bool:
        """Start waiting for a yielded object. Returns True if it is already
        done (the caller then resumes the generator at once)."""
        try:
            self.future = convert_yielded(yielded)
        except BadYieldError:
            self.future = Future()
            future_set_exc_info(self.future, sys.exc_info())
        if self.future is moment:
            self.io_loop.add_callback(self.ctx_run, self.run)
            return False
        if not self.future.done():
            if isinstance(self.future, asyncio.Future):
                # Straight to asyncio: run() handles every exception of the
                # generator itself, so IOLoop's logging wrapper is not needed.
                self.future.add_done_callback(self._resume, context=_CALLBACK_CONTEXT)
            else:
                self.io_loop.add_future(self.future, self._resume)
            return False
        return True

    def _resume(self, future: Any) -> None:
        self.ctx_run(self.run)

    def handle_exception(
        self, typ: type[BaseException], value: BaseException, tb: Optional[types.TracebackType]
    ) -> bool:
        """Throw an exception into the generator at its current yield.

        Returns False (doing nothing) if the generator is running or done.
        """
        if self.running or self.finished:
            return False
        failed: Future[Any] = Future()
        future_set_exc_info(failed, (typ, value, tb))
        self.future = failed
        self.ctx_run(self.run)
        return True


def sleep(duration: float) -> Future[None]:
    """Return a future that resolves after ``duration`` seconds.

    ``yield gen.sleep(0.5)`` in a coroutine (or ``await``) pauses it without
    blocking the loop.
    """
    future = _create_future()
    future.get_loop().call_later(duration, future_set_result_unless_cancelled, future, None)
    return future


def multi(
    children: Union[Sequence[_Yieldable], Mapping[Any, _Yieldable]],
    quiet_exceptions: Union[type[Exception], tuple[type[Exception], ...]] = (),
) -> Future[Any]:
    """Wait for several yieldables at once.

    ``children`` is a list (the result is the list of their results, in
    order) or a dict (the result is a dict with the same keys). Every child
    is waited for; if any fails, the result is the first failure in order,
    and the other failures are logged unless their type is in
    ``quiet_exceptions``. A cancelled child makes the result raise
    `asyncio.CancelledError`, as with `asyncio.gather`.

    Yielding a list or dict in a coroutine calls this implicitly.
    """
    return multi_future(children, quiet_exceptions=quiet_exceptions)


#: Old name of `multi`.
Multi = multi


def multi_future(
    children: Union[Sequence[_Yieldable], Mapping[Any, _Yieldable]],
    quiet_exceptions: Union[type[Exception], tuple[type[Exception], ...]] = (),
) -> Future[Any]:
    """Same as `multi`, kept under Tornado's older name."""
    keys: Optional[list[Any]]
    if isinstance(children, dict):
        keys = list(children)
        children_seq: Any = children.values()
    else:
        keys = None
        children_seq = children
    children_futures = [convert_yielded(child) for child in children_seq]
    pending = set(children_futures)
    future = _create_future()
    if not children_futures:
        future.set_result({} if keys is not None else [])
        return future

    def on_child_done(child: Any) -> None:
        pending.discard(child)
        if pending:
            return
        results = []
        for f in children_futures:
            try:
                results.append(f.result())
            except (Exception, asyncio.CancelledError) as e:
                if future.done():
                    if not isinstance(e, (asyncio.CancelledError, *_as_tuple(quiet_exceptions))):
                        app_log.error("Multiple exceptions in yield list", exc_info=True)
                elif isinstance(e, asyncio.CancelledError):
                    # The multi future itself is not cancelled; waiting on
                    # it raises CancelledError, like asyncio.gather.
                    future.set_exception(asyncio.CancelledError())
                else:
                    future_set_exc_info(future, sys.exc_info())
        if not future.done():
            future.set_result(dict(zip(keys, results)) if keys is not None else results)

    subscribed = set()
    for child in children_futures:
        if child not in subscribed:
            subscribed.add(child)
            future_add_done_callback(child, on_child_done)
    return future


def _as_tuple(types_: Union[type[Exception], tuple[type[Exception], ...]]) -> tuple[type[Exception], ...]:
    return types_ if isinstance(types_, tuple) else (types_,)


def maybe_future(x: Any) -> Future[Any]:
    """Return ``x`` if it is a future, else a future already resolved to
    ``x``. (Prefer `convert_yielded`, which also accepts coroutines.)"""
    if is_future(x):
        existing: Future[Any] = x
        return existing
    future = _create_future()
    future.set_result(x)
    return future


def with_timeout(
    timeout: Union[float, datetime.timedelta],
    future: _Yieldable,
    quiet_exceptions: Union[type[Exception], tuple[type[Exception], ...]] = (),
    *,
    message: Union[None, str, Callable[[], str]] = None,
) -> Future[Any]:
    """Wrap a yieldable in a future that fails with `TimeoutError` at
    ``timeout``.

    ``timeout`` is a deadline on the `.IOLoop.time` clock or a
    `datetime.timedelta`. The wrapped work is not cancelled on timeout; if
    it later fails, the error is logged unless its type is in
    ``quiet_exceptions``. ``message`` is the `TimeoutError`'s text (default
    ``"Timeout"``); a callable is called only if the timeout happens.
    Cancelling the wrapped future cancels the result.
    """
    inner = convert_yielded(future)
    result = _create_future()
    chain_future(inner, result)
    io_loop = IOLoop.current()
    quiet = _as_tuple(quiet_exceptions)

    def log_late_error(f: Any) -> None:
        if f.cancelled():
            return
        error = f.exception()
        if error is not None and not isinstance(error, quiet):
            app_log.error(
                "Exception in Future %r after timeout", f, exc_info=(type(error), error, error.__traceback__)
            )

    def on_timeout() -> None:
        if not result.done():
            text = message() if callable(message) else message
            result.set_exception(TimeoutError("Timeout" if text is None else text))
        future_add_done_callback(inner, log_late_error)

    handle = io_loop.add_timeout(timeout, on_timeout)
    if isinstance(inner, asyncio.Future):
        inner.add_done_callback(lambda f: io_loop.remove_timeout(handle))
    else:
        io_loop.add_future(inner, lambda f: io_loop.remove_timeout(handle))
    return result


class WaitIterator:
    """Iterate over futures in the order they finish.

    Construct it with futures as positional arguments (indices are their
    positions) or as keyword arguments (indices are the names), then::

        wait = gen.WaitIterator(f1, f2)
        while not wait.done():
            try:
                result = yield wait.next()
            except Exception as e:
                print("Error {} from {}".format(e, wait.current_future))
            else:
                print("Result {} from {}".format(result, wait.current_index))

    or ``async for result in gen.WaitIterator(f1, f2): ...``.
    `current_index` and `current_future` tell which input produced the
    latest result. Futures that are already done come out in argument order.
    """

    def __init__(self, *args: Future[Any], **kwargs: Future[Any]) -> None:
        if args and kwargs:
            raise ValueError("You must provide args or kwargs, not both")
        items: list[tuple[Any, Any]] = list(kwargs.items()) if kwargs else list(enumerate(args))
        self.current_index: Optional[Any] = None
        self.current_future: Optional[Any] = None
        self._remaining = len(items)
        self._finished: collections.deque[tuple[Any, Any]] = collections.deque()
        self._running_future: Optional[Future[Any]] = None
        for key, fut in items:
            future_add_done_callback(convert_yielded(fut), functools.partial(self._on_done, key))

    def done(self) -> bool:
        """Return True once every future's result has been handed out."""
        if self._remaining:
            return False
        self.current_index = self.current_future = None
        return True

    def next(self) -> Future[Any]:
        """Return a future for the next result (or exception) to arrive."""
        self._running_future = _create_future()
        if self._finished:
            self._hand_out(*self._finished.popleft())
        return self._running_future

    def _on_done(self, key: Any, done: Any) -> None:
        if self._running_future is not None and not self._running_future.done():
            self._hand_out(key, done)
        else:
            self._finished.append((key, done))

    def _hand_out(self, key: Any, done: Any) -> None:
        self._remaining -= 1
        self.current_index = key
        self.current_future = done
        assert self._running_future is not None
        chain_future(done, self._running_future)

    def __aiter__(self) -> WaitIterator:
        return self

    def __anext__(self) -> Future[Any]:
        if self.done():
            raise StopAsyncIteration()
        return self.next()


def _wrap_awaitable(awaitable: Awaitable[Any]) -> Future[Any]:
    loop = asyncio._get_running_loop()
    if loop is None:
        loop = IOLoop.current().asyncio_loop
    return asyncio.ensure_future(awaitable, loop=loop)


@functools.singledispatch
def convert_yielded(yielded: _Yieldable) -> Any:
    """Convert a yielded object into a future (or `moment`).

    None and `moment` mean "one loop iteration"; futures (asyncio and
    `concurrent.futures`) are returned as they are; lists and dicts go
    through `multi`; other awaitables (native coroutines...) are scheduled
    as asyncio tasks. Anything else raises `BadYieldError`.

    Being a `functools.singledispatch` function, it can learn new types::

        @convert_yielded.register(MyAwaitable)
        def _(obj):
            return obj.as_future()
    """
    if yielded is None or yielded is moment:
        return moment
    if yielded is _null_future:
        return _null_future
    if isinstance(yielded, (list, dict)):
        return multi(yielded)
    if is_future(yielded):
        return yielded
    if isawaitable(yielded):
        return _wrap_awaitable(yielded)
    raise BadYieldError(f"yielded unknown object {yielded!r}")
