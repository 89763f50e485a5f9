"""Loop watchdog: notice when the event loop stops turning, and say who stopped it.

A blocking call on the event loop (a synchronous database query, ``time.sleep``,
a CPU-heavy loop in a handler) stalls every other request the process serves.
The watchdog makes such stalls visible::

    from squall import watchdog

    async def main():
        watchdog.start(threshold=0.1)   # on the loop to watch
        ...

A monitor thread pings the loop every `Watchdog.interval` seconds with a
callback scheduled thread-safely. When a ping has waited longer than
`Watchdog.threshold`, the loop is blocked: the monitor samples the loop
thread's current stack (`sys._current_frames`) and looks in it for a running
`squall.web.RequestHandler`. When the loop answers again it logs one warning
to ``squall.application`` that names the handler's class and request line (or,
outside a handler, shows the stack) and says how long the loop was blocked.
`Watchdog.count`, `Watchdog.total` and `Watchdog.longest` sum the stalls up.

The request path pays nothing for this: the culprit is found in the sampled
frames, not recorded on each request. The monitor's own cost is one
thread-safe callback per interval, and the sampling happens only during a
stall.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
import types
from typing import Any, NamedTuple, Optional

from squall.log import app_log

__all__ = ["DEFAULT_THRESHOLD", "Stall", "Watchdog", "current", "start", "stop"]

#: Seconds without a turn of the loop that count as a stall: asyncio's debug
#: mode reports callbacks slower than 0.1 s (``loop.slow_callback_duration``).
DEFAULT_THRESHOLD = 0.1

#: Frames of the loop thread's stack shown in a report, innermost last: as
#: many as a traceback needs to reach from the blocking call back up to the
#: handler method and its framework caller, without the whole loop machinery.
_STACK_LIMIT = 12

#: Seconds `Watchdog.stop` waits for the monitor thread to end; the thread
#: only ever waits on events with timeouts of at most `Watchdog.interval`.
_JOIN_TIMEOUT = 5.0

# One watchdog per asyncio loop, as there is one IOLoop per asyncio loop.
_registry: dict[asyncio.AbstractEventLoop, "Watchdog"] = {}
_registry_lock = threading.Lock()


class Stall(NamedTuple):
    """One stall of the event loop, as reported by the watchdog."""

    #: Seconds the loop did not answer (at least `Watchdog.threshold`).
    duration: float
    #: Class name of the `~squall.web.RequestHandler` running at the time,
    #: or None when the loop was not inside a handler.
    handler: Optional[str]
    #: The handler's request line (``"GET /report?id=3"``), or None.
    request: Optional[str]
    #: The loop thread's stack when sampled (innermost frame last).
    stack: str


class _Ping:
    """One ping sent to the loop: set when the loop has run it."""

    __slots__ = ("answered", "at")

    def __init__(self) -> None:
        self.answered = threading.Event()
        self.at = 0.0


class Watchdog:
    """Watches one event loop from a monitor thread and reports its stalls.

    Most code uses `start` and `stop`, which keep one watchdog per loop.
    ``threshold`` is the shortest stall (in seconds) that is reported;
    ``interval`` the pause between two pings (default: half the threshold).
    A stall can only start being timed at a ping, so a stall is reported as
    at least ``threshold`` and at most ``interval`` shorter than it was.
    ``loop`` defaults to the running loop. Time during which the loop is
    not running at all (stopped between two ``run_until_complete`` calls)
    is not a stall.
    """

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        interval: Optional[float] = None,
        loop: Optional[asyncio.AbstractEventLoop] = None,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
            raise ValueError(f"threshold must be a positive number of seconds, got {threshold!r}")
        if interval is None:
            interval = threshold / 2
        elif isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        self.threshold = float(threshold)
        self.interval = float(interval)
        if loop is None:
            loop = asyncio.get_running_loop()
        self.loop = loop
        #: Number of stalls reported so far.
        self.count = 0
        #: Seconds of all reported stalls added up.
        self.total = 0.0
        #: The longest stall so far, in seconds.
        self.longest = 0.0
        #: The most recent `Stall`, or None.
        self.last: Optional[Stall] = None
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        # The loop thread's id, to find its frames; known at once when the
        # watchdog is created on the loop thread, else from the first ping.
        self._loop_thread: Optional[int] = None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._loop_thread = threading.get_ident()

    def start(self) -> None:
        """Start the monitor thread (a daemon thread: it never holds up exit)."""
        if self._thread is not None:
            raise RuntimeError("this watchdog was already started")
        self._thread = threading.Thread(target=self._monitor, name="squall-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the monitor thread and wait for it to end.

        A stall still in progress is not reported. Safe to call twice.
        """
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT)
        with _registry_lock:
            if _registry.get(self.loop) is self:
                del _registry[self.loop]

    @property
    def running(self) -> bool:
        """True while the monitor thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def summary(self) -> dict[str, Any]:
        """The counters as a dict: ``count``, ``total`` and ``longest``
        (seconds) and ``threshold``, e.g. for a metrics endpoint."""
        return {
            "count": self.count,
            "total": self.total,
            "longest": self.longest,
            "threshold": self.threshold,
        }

    # -- monitor thread ---------------------------------------------------

    def _answer(self, ping: _Ping) -> None:
        # Runs on the loop: the only work the watchdog ever asks of it.
        if self._loop_thread is None:
            self._loop_thread = threading.get_ident()
        ping.at = time.monotonic()
        ping.answered.set()

    def _monitor(self) -> None:
        try:
            while not self._stopping.is_set():
                ping = _Ping()
                sent = time.monotonic()
                try:
                    self.loop.call_soon_threadsafe(self._answer, ping)
                except RuntimeError:
                    return  # the loop was closed: nothing left to watch
                if not ping.answered.wait(self.threshold):
                    if self.loop.is_running():
                        sample = self._sample()
                        end = self._stall_end(ping)
                        if end is None:
                            return
                        self._report(end - sent, sample)
                    # Only one ping is ever outstanding, however long the
                    # loop stays stopped between two runs.
                    if not self._answered(ping):
                        return
                self._stopping.wait(self.interval)
        finally:
            with _registry_lock:
                if _registry.get(self.loop) is self:
                    del _registry[self.loop]

    def _stall_end(self, ping: _Ping) -> Optional[float]:
        """When the stall ended: the loop answered ``ping``, or stopped
        running; None when the watchdog was stopped or the loop closed."""
        while not ping.answered.wait(self.interval):
            if self._stopping.is_set() or self.loop.is_closed():
                return None
            if not self.loop.is_running():
                return time.monotonic()
        return ping.at

    def _answered(self, ping: _Ping) -> bool:
        """Wait until the loop has answered ``ping``; False when the watchdog
        was stopped or the loop closed first."""
        while not ping.answered.wait(self.interval):
            if self._stopping.is_set() or self.loop.is_closed():
                return False
        return True

    def _sample(self) -> tuple[Optional[str], Optional[str], str]:
        """What the loop thread runs now: (handler class, request line, stack)."""
        thread = self._loop_thread
        frame = sys._current_frames().get(thread) if thread is not None else None
        if frame is None:
            return None, None, ""
        try:
            stack = "".join(traceback.format_stack(frame, limit=_STACK_LIMIT))
            handler = _find_handler(frame)
        finally:
            del frame  # frames keep every local of the loop thread alive
        if handler is None:
            return None, None, stack
        request = handler.request
        return type(handler).__name__, f"{request.method} {request.uri}", stack

    def _report(self, duration: float, sample: tuple[Optional[str], Optional[str], str]) -> None:
        handler, request, stack = sample
        stall = Stall(duration, handler, request, stack)
        self.count += 1
        self.total += duration
        self.longest = max(self.longest, duration)
        self.last = stall
        if handler is not None:
            app_log.warning(
                "event loop blocked for %.3fs by %s (%s); loop thread stack:\n%s",
                duration, handler, request, stack,
            )
        else:
            app_log.warning("event loop blocked for %.3fs; loop thread stack:\n%s", duration, stack)


def _find_handler(frame: Optional[types.FrameType]) -> Any:
    """The innermost `RequestHandler` whose method is on the stack, or None."""
    # Imported here: squall.web is only needed once a stall is sampled.
    from squall.web import RequestHandler

    while frame is not None:
        code = frame.f_code
        # Only methods are looked at, and only their ``self``: reading one
        # local of a frame that another thread runs is safe under the GIL.
        if code.co_argcount and code.co_varnames[0] == "self":
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, RequestHandler):
                return candidate
        frame = frame.f_back
    return None


def start(
    threshold: float = DEFAULT_THRESHOLD,
    interval: Optional[float] = None,
    *,
    loop: Optional[asyncio.AbstractEventLoop] = None,
) -> Watchdog:
    """Start watching ``loop`` (default: the running loop) and return the `Watchdog`.

    Stalls of at least ``threshold`` seconds are logged as warnings to
    ``squall.application`` with the handler (class and request line) or the
    stack that blocked the loop, and how long. Raises RuntimeError if the
    loop is already watched; `stop` ends the watch.
    """
    dog = Watchdog(threshold, interval, loop)
    with _registry_lock:
        existing = _registry.get(dog.loop)
        if existing is not None and existing.running:
            raise RuntimeError(f"a watchdog already watches {dog.loop!r}; stop() it first")
        _registry[dog.loop] = dog
    dog.start()
    return dog


def current(loop: Optional[asyncio.AbstractEventLoop] = None) -> Optional[Watchdog]:
    """The `Watchdog` watching ``loop`` (default: the running loop), or None."""
    if loop is None:
        loop = asyncio.get_running_loop()
    with _registry_lock:
        return _registry.get(loop)


def stop(loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
    """Stop the watchdog of ``loop`` (default: the running loop), if any."""
    dog = current(loop)
    if dog is not None:
        dog.stop()
