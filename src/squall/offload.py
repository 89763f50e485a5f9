"""Offload blocking work from the event loop: bounded thread and process pools, and Celery.

A blocking call on the event loop (a synchronous database driver, image
processing, a legacy SDK) stalls every request the process serves. This
module runs such work elsewhere and awaits it without blocking::

    from squall import offload

    class ReportHandler(offload.OffloadMixin, web.RequestHandler):
        async def get(self, flag):
            rows = await self.offload(db.query, "select ... where flag=%s", flag, timeout=10)
            self.write({"rows": rows})

* `run` (or `Pool.run`) calls a function on a bounded `Pool` of threads
  (``executor="thread"``, the default) or processes (``executor="process"``),
  with a per-call ``timeout``. When every worker is busy, callers wait their
  turn on the loop; when ``max_pending`` calls are already running or
  waiting, `run` raises `PoolFull` at once (a 503 `squall.web.HTTPError`),
  so an overloaded server sheds load instead of queueing without end.
* `OffloadMixin` gives a `~squall.web.RequestHandler` ``self.offload(...)``:
  when the client goes away, work still waiting for a worker is dropped and
  never runs, and the result of work already running is discarded.
* `celery` sends a Celery task and awaits its result; `wait_celery` awaits a
  Celery ``AsyncResult``. Neither blocks the loop: the broker and the result
  backend are only spoken to from threads, results arrive through the
  backend's pub/sub when it has one (Redis, RPC), else by polling with
  back-off.

A thread cannot be interrupted: work that times out or whose caller is
cancelled while it runs goes on to the end in its worker, which stays busy
(and counted) until then. Only work still waiting for a worker is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import multiprocessing
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional, TypeVar, Union

from squall.log import gen_log
from squall.web import HTTPError

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

__all__ = [
    "DEFAULT_MAX_PENDING",
    "OffloadMixin",
    "Pool",
    "PoolFull",
    "celery",
    "default_pool",
    "run",
    "wait_celery",
]

_T = TypeVar("_T")

#: Calls a pool admits at once, running or waiting for a worker, before
#: `PoolFull` is raised: the same bound as gunicorn's default listen backlog
#: (``backlog = 2048``), the queue a server keeps before refusing clients.
DEFAULT_MAX_PENDING = 2048

#: Threads of a default thread pool: the standard library's
#: `concurrent.futures.ThreadPoolExecutor` default since Python 3.8.
_DEFAULT_THREADS = min(32, (os.cpu_count() or 1) + 4)

#: Processes of a default process pool: one per CPU, as
#: `concurrent.futures.ProcessPoolExecutor` does.
_DEFAULT_PROCESSES = os.cpu_count() or 1

#: First and longest pause between two polls of a Celery result backend
#: without pub/sub: Celery's own ``AsyncResult.get`` polls every 0.5 s, so
#: start well below that and back off to it.
_POLL_FIRST = 0.01
_POLL_MAX = 0.5

#: Seconds the thread that drains a Celery backend's pub/sub waits for a
#: message before it looks for new results to watch; bounds how long a new
#: watch waits to be registered (the state is checked once on registering,
#: so no result is missed).
_DRAIN_WAIT = 0.05

#: Seconds a drainer thread with nothing to watch lingers before it ends
#: (a new watch starts it again).
_DRAINER_IDLE = 5.0

_KINDS = ("thread", "process")


class PoolFull(HTTPError):
    """Raised by `Pool.run` when ``max_pending`` calls are already running or
    waiting for a worker.

    It is a 503 `squall.web.HTTPError`: raised in a request handler it
    becomes a "503 Service Unavailable" response and one warning in the log.
    """

    def __init__(self, pool: "Pool") -> None:
        super().__init__(
            503,
            "offload pool %s is full: %d calls pending (max_pending=%d)",
            pool.name,
            pool.pending,
            pool.max_pending,
        )
        self.pool = pool


def _default_mp_context() -> "BaseContext":
    # Forking a process that runs an event loop and threads can copy a lock
    # held by another thread; a fork server starts workers from a clean
    # single-threaded process (Python 3.14's default on POSIX).
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _check_seconds(name: str, value: Optional[float]) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")
    return float(value)


class Pool:
    """A bounded pool of worker threads or processes for blocking calls.

    ``max_workers`` calls run at once (default: as many as the standard
    library's executors use). Further calls wait, in order, on the event
    loop: a waiting call costs a future, not a thread, and is dropped
    without ever running if its caller is cancelled or its timeout passes.
    ``max_pending`` bounds running plus waiting calls: beyond it `run`
    raises `PoolFull`. ``timeout`` is the default per-call timeout (None:
    no limit). ``kind`` is ``"thread"`` or ``"process"``; a process pool
    needs picklable functions and arguments and starts its workers with
    ``mp_context`` (default: a fork server where there is one, else spawn).

    The pool may be shared by several event loops (threads); its workers
    are started on first use. `close` shuts it down.
    """

    def __init__(
        self,
        max_workers: Optional[int] = None,
        *,
        kind: str = "thread",
        max_pending: int = DEFAULT_MAX_PENDING,
        timeout: Optional[float] = None,
        name: Optional[str] = None,
        mp_context: Optional["BaseContext"] = None,
    ) -> None:
        if kind not in _KINDS:
            raise ValueError(f"kind must be 'thread' or 'process', got {kind!r}")
        if max_workers is None:
            max_workers = _DEFAULT_THREADS if kind == "thread" else _DEFAULT_PROCESSES
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be a positive int, got {max_workers!r}")
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < max_workers:
            raise ValueError(
                f"max_pending must be an int of at least max_workers ({max_workers}), got {max_pending!r}"
            )
        if mp_context is not None and kind != "process":
            raise ValueError("mp_context is only for kind='process'")
        self.kind = kind
        self.max_workers = max_workers
        self.max_pending = max_pending
        self.timeout = _check_seconds("timeout", timeout)
        self.name = name or f"{kind}-pool-{id(self):x}"
        self._mp_context = mp_context
        self._executor: Optional[concurrent.futures.Executor] = None
        # Guards the slot count and the waiters: slots are released from
        # worker threads, and waiters may belong to several loops.
        self._lock = threading.Lock()
        self._busy = 0
        self._waiting: collections.deque[_Waiter] = collections.deque()
        self._closed = False

    def __repr__(self) -> str:
        return f"<Pool {self.name} busy={self._busy} waiting={len(self._waiting)}>"

    @property
    def running(self) -> int:
        """Calls holding a worker now (including abandoned ones still running)."""
        return self._busy

    @property
    def waiting(self) -> int:
        """Calls waiting for a worker."""
        return len(self._waiting)

    @property
    def pending(self) -> int:
        """Calls running or waiting: what ``max_pending`` bounds."""
        return self._busy + len(self._waiting)

    async def run(self, fn: Callable[..., _T], /, *args: Any, timeout: Optional[float] = None,
                  **kwargs: Any) -> _T:
        """Call ``fn(*args, **kwargs)`` on a worker and return its result.

        Waits (without blocking the loop) while all workers are busy. Raises
        `PoolFull` when ``max_pending`` calls are already pending, and
        `asyncio.TimeoutError` when the call has not finished ``timeout``
        seconds (default: the pool's ``timeout``) after it was made; the
        wait for a worker counts. Exceptions of ``fn`` propagate. If the
        caller is cancelled (or times out) while waiting, ``fn`` never runs;
        while running, its result is discarded. (``fn``'s own keyword
        argument named ``timeout`` can be passed with `functools.partial`.)
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        if timeout is None:
            timeout = self.timeout
        else:
            timeout = _check_seconds("timeout", timeout)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        waiter: Optional[_Waiter] = None
        with self._lock:
            if self._closed:
                raise RuntimeError(f"offload pool {self.name} is closed")
            if self._busy < self.max_workers and not self._waiting:
                self._busy += 1
            elif self._busy + len(self._waiting) >= self.max_pending:
                raise PoolFull(self)
            else:
                waiter = _Waiter(loop.create_future())
                self._waiting.append(waiter)
        if waiter is not None:
            await self._wait_for_worker(waiter, deadline, _describe(fn), timeout)
        try:
            work = self._get_executor().submit(fn, *args, **kwargs)
        except BaseException as e:
            self._release()
            if isinstance(e, RuntimeError) and self._closed:
                raise RuntimeError(f"offload pool {self.name} is closed") from e
            raise
        # The worker stays counted until the work really ends, even if its
        # caller has gone: a thread cannot be stopped.
        work.add_done_callback(self._on_work_done)
        return await _within(asyncio.wrap_future(work, loop=loop), deadline, _describe(fn), timeout)

    async def _wait_for_worker(self, waiter: "_Waiter", deadline: Optional[float],
                               what: str, timeout: Optional[float]) -> None:
        try:
            await _within(waiter.future, deadline, what, timeout)
        except BaseException:
            with self._lock:
                granted = waiter.granted
                if not granted:
                    try:
                        self._waiting.remove(waiter)
                    except ValueError:
                        pass  # taken out by close()
            if granted:
                # A worker was handed over just as we gave up: pass it on.
                self._release()
            raise

    def _get_executor(self) -> concurrent.futures.Executor:
        executor = self._executor
        if executor is None:
            with self._lock:
                if self._closed:
                    raise RuntimeError(f"offload pool {self.name} is closed")
                if self._executor is None:
                    if self.kind == "thread":
                        self._executor = concurrent.futures.ThreadPoolExecutor(
                            self.max_workers, thread_name_prefix=f"squall-offload-{self.name}"
                        )
                    else:
                        self._executor = concurrent.futures.ProcessPoolExecutor(
                            self.max_workers, mp_context=self._mp_context or _default_mp_context()
                        )
                executor = self._executor
        return executor

    def _on_work_done(self, work: concurrent.futures.Future[Any]) -> None:
        # Runs in the worker thread (or the process pool's manager thread).
        self._release()

    def _release(self) -> None:
        """Give a worker back: to the first waiter still waiting, else free it."""
        with self._lock:
            while self._waiting:
                waiter = self._waiting.popleft()
                future = waiter.future
                if future.done():
                    continue  # given up; its owner will not take the worker
                try:
                    future.get_loop().call_soon_threadsafe(_grant, future)
                except RuntimeError:
                    continue  # its loop is closed: nobody will take the worker
                waiter.granted = True
                return
            self._busy -= 1

    def close(self, wait: bool = True) -> None:
        """Shut the pool down: refuse new calls, fail the waiting ones with
        RuntimeError, and stop the workers (after their current work when
        ``wait``). Blocks while waiting: call it at shutdown, off the loop
        or once the loop has stopped."""
        with self._lock:
            self._closed = True
            waiters = list(self._waiting)
            self._waiting.clear()
            executor = self._executor
        for waiter in waiters:
            try:
                waiter.future.get_loop().call_soon_threadsafe(_fail_closed, waiter.future, self.name)
            except RuntimeError:
                pass  # its loop is closed; nobody awaits it any more
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)


class _Waiter:
    """A call waiting for a worker; ``granted`` once one was handed to it."""

    __slots__ = ("future", "granted")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future
        self.granted = False


def _describe(fn: Callable[..., Any]) -> str:
    return f"offloaded call {getattr(fn, '__qualname__', fn)!r}"


def _grant(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _fail_closed(waiter: asyncio.Future[None], name: str) -> None:
    if not waiter.done():
        waiter.set_exception(RuntimeError(f"offload pool {name} is closed"))


async def _within(future: asyncio.Future[_T], deadline: Optional[float], what: str,
                  timeout: Optional[float]) -> _T:
    """Await ``future`` until the loop time ``deadline``; cancel it and raise
    TimeoutError (saying ``what`` timed out) when it passes."""
    if deadline is None:
        return await future
    remaining = deadline - asyncio.get_running_loop().time()
    try:
        return await asyncio.wait_for(future, remaining)
    except asyncio.TimeoutError:
        raise asyncio.TimeoutError(f"{what} did not finish within {timeout}s") from None


_default_pools: dict[str, Pool] = {}
_default_pools_lock = threading.Lock()


def default_pool(kind: str = "thread") -> Pool:
    """The shared `Pool` of ``kind`` (``"thread"`` or ``"process"``) that
    `run` uses unless told otherwise, created with default sizes on first use."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be 'thread' or 'process', got {kind!r}")
    with _default_pools_lock:
        pool = _default_pools.get(kind)
        if pool is None or pool._closed:
            pool = _default_pools[kind] = Pool(kind=kind, name=f"default-{kind}")
        return pool


def _resolve_pool(executor: Union[str, Pool]) -> Pool:
    if isinstance(executor, Pool):
        return executor
    if executor in _KINDS:
        return default_pool(executor)
    raise TypeError(f"executor must be 'thread', 'process' or a Pool, got {executor!r}")


async def run(fn: Callable[..., _T], /, *args: Any, executor: Union[str, Pool] = "thread",
              timeout: Optional[float] = None, **kwargs: Any) -> _T:
    """Call ``fn(*args, **kwargs)`` off the event loop and return its result.

    ``executor`` is ``"thread"`` (the shared default thread pool),
    ``"process"`` (the shared default process pool) or a `Pool`. See
    `Pool.run` for ``timeout``, waiting, `PoolFull` and cancellation.
    """
    return await _resolve_pool(executor).run(fn, *args, timeout=timeout, **kwargs)


class OffloadMixin:
    """Mixin for a `~squall.web.RequestHandler`: ``await self.offload(fn, ...)``.

    Like `run`, on the pool named by the class attribute `offload_executor`,
    but tied to the request: if the client closes the connection (and
    `~squall.web.RequestHandler.on_connection_close` fires) while the work
    waits for a worker, it is dropped and never runs; while it runs, its
    result is discarded. Either way the handler's coroutine is cancelled, as
    when the server shuts down (no client is there to read a response). A
    handler that overrides
    ``on_connection_close`` must call ``super().on_connection_close()``.
    """

    #: The pool ``self.offload`` uses: ``"thread"``, ``"process"`` or a `Pool`.
    offload_executor: Union[str, Pool] = "thread"

    _offload_tasks: Optional[set[asyncio.Task[Any]]] = None

    async def offload(self, fn: Callable[..., _T], /, *args: Any, timeout: Optional[float] = None,
                      **kwargs: Any) -> _T:
        """Run ``fn(*args, **kwargs)`` off the loop for this request; see `run`."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("offload() must be awaited from a task (an async handler method)")
        tasks = self._offload_tasks
        if tasks is None:
            tasks = self._offload_tasks = set()
        tasks.add(task)
        try:
            return await run(fn, *args, executor=self.offload_executor, timeout=timeout, **kwargs)
        finally:
            tasks.discard(task)

    def on_connection_close(self) -> None:
        """Cancel the offloaded work this request is waiting for."""
        if self._offload_tasks:
            for task in list(self._offload_tasks):
                task.cancel()
        super().on_connection_close()  # type: ignore[misc]


# -- Celery --------------------------------------------------------------------


async def celery(task: Any, /, *args: Any, timeout: Optional[float] = None, **kwargs: Any) -> Any:
    """Send the Celery ``task`` with ``args`` and ``kwargs`` and return its result.

    The message is published from a worker thread of the loop's default
    executor (publishing is blocking I/O to the broker), then the result is
    awaited as `wait_celery` does. Raises `asyncio.TimeoutError` after
    ``timeout`` seconds (the task itself goes on; its result is discarded),
    and the task's own exception if it failed. For ``apply_async`` options
    (``countdown``, ``queue``...), call ``apply_async`` yourself (in a
    thread) and pass the result to `wait_celery`.
    """
    if not callable(getattr(task, "apply_async", None)):
        raise TypeError(f"task must be a Celery task (with apply_async), got {task!r}")
    timeout = _check_seconds("timeout", timeout)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout

    async def send_and_wait() -> Any:
        send = functools.partial(task.apply_async, args, kwargs)
        return await _result_of(await loop.run_in_executor(None, send), loop)

    what = f"Celery task {getattr(task, 'name', task)!r}"
    return await _within(asyncio.ensure_future(send_and_wait()), deadline, what, timeout)


async def wait_celery(result: Any, *, timeout: Optional[float] = None) -> Any:
    """Await a Celery ``AsyncResult`` without blocking the loop; return its value.

    With a result backend that has pub/sub (Redis, RPC), one thread per
    backend listens for results and hands each to its loop as it arrives;
    with another backend, the state is polled from a thread, the pause
    growing from 10 ms to 0.5 s. Raises the task's exception if it failed
    (``celery.exceptions.TaskRevokedError`` if it was revoked), and
    `asyncio.TimeoutError` after ``timeout`` seconds.
    """
    if not callable(getattr(result, "maybe_throw", None)) or not hasattr(result, "backend"):
        raise TypeError(f"result must be a Celery AsyncResult, got {result!r}")
    timeout = _check_seconds("timeout", timeout)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    what = f"Celery task {result.id}"
    return await _within(asyncio.ensure_future(_result_of(result, loop)), deadline, what, timeout)


async def _result_of(result: Any, loop: asyncio.AbstractEventLoop) -> Any:
    from celery.result import EagerResult  # type: ignore[import-untyped]

    if isinstance(result, EagerResult):
        # Already computed in this process (``task_always_eager``).
        return result.maybe_throw()
    if result.backend.is_async:
        # Cancelling the wait cancels this future; the drainer then stops
        # listening for the result.
        future: asyncio.Future[Any] = loop.create_future()
        _drainer_for(result.backend).watch(result, future, loop)
        return await future
    return await _poll(result, loop)


async def _poll(result: Any, loop: asyncio.AbstractEventLoop) -> Any:
    pause = _POLL_FIRST
    while not await loop.run_in_executor(None, result.ready):
        await asyncio.sleep(pause)
        pause = min(pause * 2, _POLL_MAX)
    # ready() cached the final state: no I/O left.
    return result.maybe_throw()


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    """On the loop: give ``future`` the outcome of the ready ``result``."""
    if future.done():
        return
    try:
        value = result.maybe_throw()
    except BaseException as e:
        future.set_exception(e)
    else:
        future.set_result(value)


_drainers: "weakref.WeakKeyDictionary[Any, _Drainer]" = weakref.WeakKeyDictionary()
_drainers_lock = threading.Lock()


def _drainer_for(backend: Any) -> "_Drainer":
    with _drainers_lock:
        drainer = _drainers.get(backend)
        if drainer is None:
            drainer = _drainers[backend] = _Drainer(backend)
        return drainer


class _Drainer:
    """One thread per Celery result backend with pub/sub: registers results
    to watch, drains the backend's messages, and hands each ready result to
    the loop that waits for it."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._inbox: queue.SimpleQueue[tuple[Any, asyncio.Future[Any], asyncio.AbstractEventLoop]] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        # Results registered with the backend and not yet ready.
        self._watched: dict[int, tuple[Any, asyncio.Future[Any], asyncio.AbstractEventLoop]] = {}

    def watch(self, result: Any, future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop) -> None:
        self._inbox.put((result, future, loop))
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="squall-celery-results", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            if not self._watched:
                try:
                    item = self._inbox.get(timeout=_DRAINER_IDLE)
                except queue.Empty:
                    with self._lock:
                        if self._inbox.empty():
                            self._thread = None
                            return
                    continue
                self._register(*item)
            self._register_new()
            self._forget_abandoned()
            if not self._watched:
                continue
            try:
                self._backend.result_consumer.drain_events(timeout=_DRAIN_WAIT)
            except Exception:
                # Celery reconnects by itself; say so and try again shortly.
                gen_log.warning("error draining Celery results; retrying", exc_info=True)
                time.sleep(_DRAIN_WAIT)

    def _register_new(self) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            self._register(*item)

    def _register(self, result: Any, future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop) -> None:
        key = id(future)
        self._watched[key] = (result, future, loop)
        try:
            result.then(functools.partial(self._on_ready, key),
                        on_error=functools.partial(self._on_error, key))
            # A result that was ready before it was watched sent its message
            # to nobody: fetching the state once settles it.
            result.ready()
        except Exception as e:
            self._on_error(key, e)

    def _on_ready(self, key: int, _result: Any) -> None:
        # In this thread, from drain_events or ready(); the result's final
        # state is cached in it, so settling it on the loop does no I/O.
        entry = self._watched.pop(key, None)
        if entry is not None:
            _call_soon(entry[2], _settle, entry[1], entry[0])

    def _on_error(self, key: int, error: BaseException) -> None:
        entry = self._watched.pop(key, None)
        if entry is not None:
            _call_soon(entry[2], _fail, entry[1], error)

    def _forget_abandoned(self) -> None:
        for key, (result, future, _) in list(self._watched.items()):
            if future.done():
                # Timed out or cancelled: stop listening for this result.
                del self._watched[key]
                try:
                    self._backend.remove_pending_result(result)
                except Exception:
                    gen_log.warning("could not unsubscribe from Celery result %s", result.id, exc_info=True)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        pass  # that loop is closed: nobody awaits the result any more


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
