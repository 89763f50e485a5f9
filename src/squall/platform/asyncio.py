"""The asyncio side of `squall.ioloop.IOLoop`.

`BaseAsyncIOLoop` implements every IOLoop method on top of an asyncio event
loop. Its two concrete forms differ only in who owns the asyncio loop:
`AsyncIOMainLoop` wraps a loop that already exists (``IOLoop.current()``
creates one for the running loop), `AsyncIOLoop` creates and owns a new loop
(``IOLoop()``). The remaining names are compatibility shims from Tornado:
futures are already asyncio futures, and the selector-thread helpers only
matter on Windows' proactor loop, which squall does not target.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import errno
import functools
import select
import socket
import threading
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, Optional, TypeVar, Union

from squall.ioloop import IOLoop, _current_asyncio_loop, _Selectable, new_asyncio_loop
from squall.log import app_log

__all__ = [
    "AddThreadSelectorEventLoop",
    "AnyThreadEventLoopPolicy",
    "AsyncIOLoop",
    "AsyncIOMainLoop",
    "BaseAsyncIOLoop",
    "SelectorThread",
    "to_asyncio_future",
    "to_tornado_future",
]

_T = TypeVar("_T")


class BaseAsyncIOLoop(IOLoop):
    """`IOLoop` implemented by delegation to ``self.asyncio_loop``.

    File descriptor handlers use the loop's ``add_reader``/``add_writer``;
    timeouts are asyncio timer handles; callbacks are ``call_soon`` (or
    ``call_soon_threadsafe`` from another thread).
    """

    def initialize(  # type: ignore[override]
        self, asyncio_loop: asyncio.AbstractEventLoop, **kwargs: Any
    ) -> None:
        self.asyncio_loop = asyncio_loop
        # On platforms whose loop lacks add_reader this would be a selector
        # thread; every loop squall runs on (uvloop, the selector loops)
        # supports it directly.
        self.selector_loop = asyncio_loop
        # fileno -> (the object registered, handler)
        self.handlers: dict[int, tuple[Union[int, _Selectable], Callable[..., None]]] = {}
        self.readers: set[int] = set()
        self.writers: set[int] = set()
        self.closing = False
        registry = IOLoop._ioloop_for_asyncio
        # Forget wrappers of loops closed through asyncio rather than through
        # IOLoop.close, so the registry cannot grow without bound.
        # (list() copies the keys atomically; other threads may be
        # registering their own loops at the same time.)
        for stale in [loop for loop in list(registry) if loop.is_closed()]:
            registry.pop(stale, None)
        existing = registry.setdefault(asyncio_loop, self)
        if existing is not self:
            raise RuntimeError(
                f"IOLoop {existing!r} already associated with asyncio loop {asyncio_loop!r}"
            )
        super().initialize(**kwargs)

    def close(self, all_fds: bool = False) -> None:
        if self.closing:
            return
        if self.asyncio_loop.is_running():
            # Checked before any state changes, so the loop stays usable.
            raise RuntimeError(f"Cannot close {self!r} while it is running; stop it first")
        self.closing = True
        for fd in list(self.handlers):
            fileobj = self.handlers[fd][0]
            self.remove_handler(fd)
            if all_fds:
                self.close_fd(fileobj)
        if IOLoop._ioloop_for_asyncio.get(self.asyncio_loop) is self:
            IOLoop._ioloop_for_asyncio.pop(self.asyncio_loop, None)
        with warnings.catch_warnings():
            # uvloop reports transports still open at close() as
            # ResourceWarnings from inside its C handle walk; escalated to
            # errors (python -W error) they leave uvloop's close() spinning
            # forever. Report them as ordinary warnings instead.
            warnings.simplefilter("default", ResourceWarning)
            try:
                self.asyncio_loop.close()
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise
                # uvloop refuses to close (EBUSY) while libuv still owes a
                # close callback to a transport closed just before; one more
                # loop iteration delivers it.
                self.asyncio_loop.call_soon(self.asyncio_loop.stop)
                self.asyncio_loop.run_forever()
                self.asyncio_loop.close()

    def add_handler(
        self, fd: Union[int, _Selectable], handler: Callable[..., None], events: int
    ) -> None:
        fileno, fileobj = self.split_fd(fd)
        if fileno in self.handlers:
            raise ValueError(f"fd {fileno} added twice")
        self.handlers[fileno] = (fileobj, handler)
        if events & IOLoop.READ:
            self.selector_loop.add_reader(fileno, self._handle_events, fileno, IOLoop.READ)
            self.readers.add(fileno)
        if events & IOLoop.WRITE:
            self.selector_loop.add_writer(fileno, self._handle_events, fileno, IOLoop.WRITE)
            self.writers.add(fileno)

    def update_handler(self, fd: Union[int, _Selectable], events: int) -> None:
        fileno = self.split_fd(fd)[0]
        if fileno not in self.handlers:
            raise ValueError(f"fd {fileno} is not registered")
        if events & IOLoop.READ:
            if fileno not in self.readers:
                self.selector_loop.add_reader(fileno, self._handle_events, fileno, IOLoop.READ)
                self.readers.add(fileno)
        elif fileno in self.readers:
            self.selector_loop.remove_reader(fileno)
            self.readers.remove(fileno)
        if events & IOLoop.WRITE:
            if fileno not in self.writers:
                self.selector_loop.add_writer(fileno, self._handle_events, fileno, IOLoop.WRITE)
                self.writers.add(fileno)
        elif fileno in self.writers:
            self.selector_loop.remove_writer(fileno)
            self.writers.remove(fileno)

    def remove_handler(self, fd: Union[int, _Selectable]) -> None:
        fileno = self.split_fd(fd)[0]
        if fileno not in self.handlers:
            return
        if fileno in self.readers:
            self.selector_loop.remove_reader(fileno)
            self.readers.remove(fileno)
        if fileno in self.writers:
            self.selector_loop.remove_writer(fileno)
            self.writers.remove(fileno)
        del self.handlers[fileno]

    def _handle_events(self, fd: int, events: int) -> None:
        entry = self.handlers.get(fd)
        if entry is None:
            # Removed by an earlier handler in the same loop iteration.
            return
        fileobj, handler = entry
        try:
            handler(fileobj, events)
        except Exception:
            app_log.error("Exception in I/O handler for fd %s", fd, exc_info=True)

    def start(self) -> None:
        old_loop = _current_asyncio_loop()
        try:
            asyncio.set_event_loop(self.asyncio_loop)
            self.asyncio_loop.run_forever()
        finally:
            asyncio.set_event_loop(old_loop)

    def stop(self) -> None:
        self.asyncio_loop.stop()

    def call_at(
        self, when: float, callback: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> object:
        # asyncio's clock is monotonic while IOLoop.time() is wall-clock
        # time, so the deadline is turned into a delay.
        return self.asyncio_loop.call_later(
            max(0.0, when - self.time()),
            self._run_callback,
            functools.partial(callback, *args, **kwargs),
        )

    def remove_timeout(self, timeout: object) -> None:
        timeout.cancel()  # type: ignore[attr-defined]

    def add_callback(self, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        call = functools.partial(callback, *args, **kwargs) if args or kwargs else callback
        loop = self.asyncio_loop
        try:
            if asyncio._get_running_loop() is loop:
                loop.call_soon(self._run_callback, call)
            else:
                loop.call_soon_threadsafe(self._run_callback, call)
        except RuntimeError:
            # The loop is closed (possibly by another thread right now);
            # the documented behaviour is to drop the callback.
            pass

    def add_callback_from_signal(
        self, callback: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        warnings.warn("add_callback_from_signal is deprecated", DeprecationWarning, stacklevel=2)
        try:
            self.asyncio_loop.call_soon_threadsafe(
                self._run_callback, functools.partial(callback, *args, **kwargs)
            )
        except RuntimeError:
            pass

    def run_in_executor(
        self,
        executor: Optional[concurrent.futures.Executor],
        func: Callable[..., _T],
        *args: Any,
    ) -> Awaitable[_T]:
        return self.asyncio_loop.run_in_executor(executor, func, *args)

    def set_default_executor(self, executor: concurrent.futures.Executor) -> None:
        self.asyncio_loop.set_default_executor(executor)


class AsyncIOMainLoop(BaseAsyncIOLoop):
    """The IOLoop of an asyncio loop that someone else created and runs.

    ``IOLoop.current()`` makes one automatically for the running (or
    current) asyncio loop, so constructing it by hand is rarely needed.
    """

    def initialize(self, **kwargs: Any) -> None:  # type: ignore[override]
        loop = kwargs.pop("asyncio_loop", None)
        if loop is None:
            loop = _current_asyncio_loop()
            if loop is None:
                loop = new_asyncio_loop()
                asyncio.set_event_loop(loop)
        super().initialize(loop, **kwargs)

    def _make_current(self) -> None:
        # The wrapped loop is, by construction, already the current one.
        pass


class AsyncIOLoop(BaseAsyncIOLoop):
    """An IOLoop that owns its asyncio loop.

    ``IOLoop()`` builds one around a new loop (see `new_asyncio_loop`);
    pass ``asyncio_loop=`` to wrap a specific loop instead. `close` closes
    the asyncio loop too. With ``make_current=True`` (the default) the loop
    becomes the thread's current asyncio loop until the IOLoop is closed.
    """

    def initialize(self, **kwargs: Any) -> None:  # type: ignore[override]
        self.is_current = False
        self.old_asyncio: Optional[asyncio.AbstractEventLoop] = None
        created = None
        if kwargs.get("asyncio_loop") is None:
            kwargs["asyncio_loop"] = created = new_asyncio_loop()
        try:
            super().initialize(**kwargs)
        except Exception:
            # The loop we created would otherwise leak (and warn when
            # garbage collected).
            if created is not None:
                created.close()
            raise

    def close(self, all_fds: bool = False) -> None:
        if self.is_current:
            self._clear_current_hook()
        super().close(all_fds=all_fds)

    def _make_current(self) -> None:
        if not self.is_current:
            self.old_asyncio = _current_asyncio_loop()
            self.is_current = True
        asyncio.set_event_loop(self.asyncio_loop)

    def _clear_current_hook(self) -> None:
        if self.is_current:
            asyncio.set_event_loop(self.old_asyncio)
            self.old_asyncio = None
            self.is_current = False


def to_tornado_future(asyncio_future: asyncio.Future[_T]) -> asyncio.Future[_T]:
    """Return the future unchanged: squall futures are asyncio futures."""
    return asyncio_future


def to_asyncio_future(tornado_future: Any) -> asyncio.Future[Any]:
    """Turn any yieldable (future, coroutine, list of them...) into an
    asyncio future, as `squall.gen.convert_yielded` does."""
    from squall.gen import convert_yielded

    future: asyncio.Future[Any] = convert_yielded(tornado_future)
    return future


class AddThreadSelectorEventLoop(asyncio.AbstractEventLoop):
    """Wrap an event loop so that it has ``add_reader``/``add_writer``.

    Tornado needs this for Windows' proactor loop, which lacks them. Every
    loop squall runs on has them natively, so this wrapper delegates
    everything to the real loop; it exists for code that constructs it.
    """

    MY_ATTRIBUTES = {
        "_real_loop",
        "_closed",
        "add_reader",
        "add_writer",
        "close",
        "remove_reader",
        "remove_writer",
    }

    def __init__(self, real_loop: asyncio.AbstractEventLoop) -> None:
        self._real_loop = real_loop
        self._closed = False

    def __getattribute__(self, name: str) -> Any:
        if name in AddThreadSelectorEventLoop.MY_ATTRIBUTES or name.startswith("__"):
            return super().__getattribute__(name)
        return getattr(self._real_loop, name)

    def close(self) -> None:
        """Close the real loop (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        self._real_loop.close()

    def add_reader(  # type: ignore[override]
        self, fd: Any, callback: Callable[..., Any], *args: Any
    ) -> None:
        """Watch ``fd`` for reading."""
        self._real_loop.add_reader(fd, callback, *args)

    def add_writer(  # type: ignore[override]
        self, fd: Any, callback: Callable[..., Any], *args: Any
    ) -> None:
        """Watch ``fd`` for writing."""
        self._real_loop.add_writer(fd, callback, *args)

    def remove_reader(self, fd: Any) -> bool:
        """Stop watching ``fd`` for reading."""
        return self._real_loop.remove_reader(fd)

    def remove_writer(self, fd: Any) -> bool:
        """Stop watching ``fd`` for writing."""
        return self._real_loop.remove_writer(fd)


# Selector threads not closed yet; the atexit hook stops their threads so
# the interpreter does not hang on (or complain about) them at exit.
_selector_loops: set[SelectorThread] = set()


def _atexit_callback() -> None:
    for selector in list(_selector_loops):
        selector._shutdown_thread()
        selector._close_wakers()
    _selector_loops.clear()


atexit.register(_atexit_callback)


class SelectorThread:
    """Run ``select()`` on a helper thread for a loop without ``add_reader``.

    Windows' proactor loop cannot watch raw file descriptors; this class
    gives it ``add_reader``/``add_writer`` by selecting on a thread and
    running the callbacks on the loop. The thread is started by the loop
    (through an async generator, so ``loop.shutdown_asyncgens()`` and
    `asyncio.run` stop it) and stopped by `close`.
    """

    def __init__(self, real_loop: asyncio.AbstractEventLoop) -> None:
        self._real_loop = real_loop
        self._select_cond = threading.Condition()
        self._select_args: Optional[tuple[list[Any], list[Any]]] = None
        self._closing_selector = False
        self._closed = False
        self._thread: Optional[threading.Thread] = None
        self._thread_manager_task: Optional[asyncio.Task[None]] = None
        # Callbacks run in the context of the thread that created us, not
        # in the selector thread's (which would lose context variables).
        self._context = contextvars.copy_context()
        self._readers: dict[Any, Callable[[], None]] = {}
        self._writers: dict[Any, Callable[[], None]] = {}
        self._waker_r, self._waker_w = socket.socketpair()
        self._waker_r.setblocking(False)
        self._waker_w.setblocking(False)
        _selector_loops.add(self)
        self.add_reader(self._waker_r, self._consume_waker)
        self._thread_manager_handle = self._thread_manager()
        real_loop.call_soon(self._start_thread_manager)

    def _start_thread_manager(self) -> None:
        if not self._closed:
            self._thread_manager_task = self._real_loop.create_task(self._run_thread_manager())

    async def _run_thread_manager(self) -> None:
        await self._thread_manager_handle.__anext__()

    async def _thread_manager(self) -> Any:
        self._thread = threading.Thread(
            name="squall selector", daemon=True, target=self._run_select
        )
        self._thread.start()
        self._start_select()
        try:
            # Suspended here for the loop's lifetime; shutdown_asyncgens()
            # raises GeneratorExit here, which shuts the thread down.
            yield
        except GeneratorExit:
            self.close()
            raise

    def _wake_selector(self) -> None:
        if self._closed:
            return
        try:
            self._waker_w.send(b"a")
        except (BlockingIOError, OSError):
            # A full buffer already guarantees a wake-up.
            pass

    def _consume_waker(self) -> None:
        try:
            while self._waker_r.recv(1024):
                pass
        except (BlockingIOError, OSError):
            pass

    def _start_select(self) -> None:
        with self._select_cond:
            self._select_args = (list(self._readers), list(self._writers))
            self._select_cond.notify()

    def _run_select(self) -> None:
        while True:
            with self._select_cond:
                while self._select_args is None and not self._closing_selector:
                    self._select_cond.wait()
                if self._closing_selector:
                    return
                readers, writers = self._select_args  # type: ignore[misc]
                self._select_args = None
            try:
                readable, writable, errors = select.select(readers, writers, writers)
                writable = writable + errors
            except OSError:
                # A descriptor was closed under us: report nothing ready;
                # the next round selects on the updated sets.
                readable, writable = [], []
            try:
                self._real_loop.call_soon_threadsafe(
                    self._handle_select, readable, writable, context=self._context
                )
            except RuntimeError:
                # The loop is closed; nobody is left to serve.
                return

    def _handle_select(self, readable: list[Any], writable: list[Any]) -> None:
        for fd in readable:
            callback = self._readers.get(fd)
            if callback is not None:
                callback()
        for fd in writable:
            callback = self._writers.get(fd)
            if callback is not None:
                callback()
        if not self._closed:
            self._start_select()

    def _shutdown_thread(self) -> None:
        with self._select_cond:
            self._closing_selector = True
            self._select_cond.notify()
        self._wake_selector()
        if self._thread is not None:
            self._thread.join()

    def _close_wakers(self) -> None:
        self._waker_r.close()
        self._waker_w.close()

    def close(self) -> None:
        """Stop the selector thread and release its sockets (idempotent)."""
        if self._closed:
            return
        self._shutdown_thread()
        self._closed = True
        _selector_loops.discard(self)
        self._readers.clear()
        self._writers.clear()
        self._close_wakers()
        task = self._thread_manager_task
        if task is not None and not task.done():
            # The loop stopped before the task ever ran: close its coroutine
            # so neither the task nor the coroutine complains when collected.
            task.get_coro().close()
            task._log_destroy_pending = False  # type: ignore[attr-defined]

    def add_reader(self, fd: Any, callback: Callable[..., None], *args: Any) -> None:
        """Call ``callback(*args)`` on the loop whenever ``fd`` is readable."""
        self._readers[fd] = functools.partial(callback, *args)
        self._wake_selector()

    def add_writer(self, fd: Any, callback: Callable[..., None], *args: Any) -> None:
        """Call ``callback(*args)`` on the loop whenever ``fd`` is writable."""
        self._writers[fd] = functools.partial(callback, *args)
        self._wake_selector()

    def remove_reader(self, fd: Any) -> bool:
        """Stop watching ``fd`` for reading; True if it was watched."""
        try:
            del self._readers[fd]
        except KeyError:
            return False
        self._wake_selector()
        return True

    def remove_writer(self, fd: Any) -> bool:
        """Stop watching ``fd`` for writing; True if it was watched."""
        try:
            del self._writers[fd]
        except KeyError:
            return False
        self._wake_selector()
        return True


def __getattr__(name: str) -> Any:
    # Defined lazily: asyncio's event loop policies are deprecated (3.14),
    # and merely subclassing one at import time would warn.
    if name == "AnyThreadEventLoopPolicy":
        return _any_thread_policy_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.lru_cache(maxsize=None)
def _any_thread_policy_class() -> type:
    base = asyncio.DefaultEventLoopPolicy

    class AnyThreadEventLoopPolicy(base):  # type: ignore[misc,valid-type]
        """Deprecated event loop policy that gives every thread a loop on
        demand (asyncio only does so for the main thread). Use
        `asyncio.run` or `asyncio.new_event_loop` in the thread instead."""

        def __init__(self) -> None:
            warnings.warn(
                "AnyThreadEventLoopPolicy is deprecated, use asyncio.run "
                "or asyncio.new_event_loop instead",
                DeprecationWarning,
                stacklevel=2,
            )
            super().__init__()

        def get_event_loop(self) -> asyncio.AbstractEventLoop:
            loop: asyncio.AbstractEventLoop
            try:
                loop = super().get_event_loop()
            except RuntimeError:
                loop = self.new_event_loop()
                self.set_event_loop(loop)
            return loop

    AnyThreadEventLoopPolicy.__module__ = __name__
    return AnyThreadEventLoopPolicy
