"""Outgoing TCP connections: `TCPClient` resolves a name and connects with Happy Eyeballs.

`TCPClient.connect` returns a connected `~squall.iostream.IOStream` (or an
`~squall.iostream.SSLIOStream` when ``ssl_options`` is given). When a name
resolves to both IPv4 and IPv6 addresses, the first family is tried first and
the other one joins after a short delay; the first connection to succeed wins
and the others are closed (RFC 8305, "Happy Eyeballs"). Nothing here blocks the
event loop: a peer that never answers costs a timer, not a thread.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import numbers
import socket
import ssl
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from squall.ioloop import IOLoop
from squall.iostream import IOStream
from squall.netutil import Resolver

__all__ = ["TCPClient"]

# How long the first address family gets on its own before the second family
# is tried in parallel: RFC 8305 section 5 recommends 250 ms as the
# "Connection Attempt Delay" (Tornado uses 300 ms).
_INITIAL_CONNECT_TIMEOUT = 0.25

_Address = Any
_AddrInfo = list[tuple[int, _Address]]
_Connect = Callable[[int, _Address], tuple[Any, "asyncio.Future[Any]"]]


def _format_addr(addr: _Address) -> str:
    """Format a socket address for messages: ``1.2.3.4:80``, ``[::1]:80``, else ``str(addr)``."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        if ":" in str(host):
            return f"[{host}]:{port}"
        return f"{host}:{port}"
    return str(addr)


class _Connector:
    """The Happy Eyeballs state machine, independent of real sockets.

    ``connect(af, addr)`` starts one attempt and returns ``(stream, future)``
    where ``future`` resolves to the connected stream; it may also raise at
    once (for example when the address family is not supported). Addresses of
    the first family in ``addrinfo`` (the primary queue) are tried one at a
    time; the other family (the secondary queue) starts when the primary's
    first attempt fails or when ``timeout`` passes, whichever is first. The
    first success wins and every other stream is closed. A failed or cancelled
    attempt moves on to its queue's next address; when both queues are empty
    and nothing is pending, `start`'s future fails with the last error.
    """

    def __init__(self, addrinfo: _AddrInfo, connect: _Connect) -> None:
        self.io_loop = IOLoop.current()
        self._loop: asyncio.AbstractEventLoop = self.io_loop.asyncio_loop
        self.connect = connect
        self.future: asyncio.Future[tuple[int, _Address, Any]] = self._loop.create_future()
        self.future.add_done_callback(self._on_future_done)
        self.timeout: asyncio.TimerHandle | None = None
        self.connect_timeout: asyncio.TimerHandle | None = None
        self.last_error: BaseException | None = None
        primary, secondary = self.split(addrinfo)
        self.primary_addrs: deque[tuple[int, _Address]] = deque(primary)
        self.secondary_addrs: deque[tuple[int, _Address]] = deque(secondary)
        self._secondary_started = False
        # Streams of every attempt started and not won; all are closed once
        # the outcome is known.
        self.streams: set[Any] = set()
        # Addresses of the attempts still in flight, in start order.
        self._pending: dict[asyncio.Future[Any], _Address] = {}

    @staticmethod
    def split(addrinfo: Iterable[tuple[int, _Address]]) -> tuple[_AddrInfo, _AddrInfo]:
        """Split ``addrinfo`` into the first entry's family and all other families, keeping order."""
        primary: _AddrInfo = []
        secondary: _AddrInfo = []
        primary_af = None
        for af, addr in addrinfo:
            if primary_af is None:
                primary_af = af
            (primary if af == primary_af else secondary).append((af, addr))
        return primary, secondary

    def start(
        self,
        timeout: float = _INITIAL_CONNECT_TIMEOUT,
        connect_timeout: float | datetime.timedelta | None = None,
    ) -> asyncio.Future[tuple[int, _Address, Any]]:
        """Start connecting; the future resolves to ``(af, addr, stream)``.

        ``timeout`` is the delay, in seconds, before the secondary family joins.
        ``connect_timeout`` is an absolute `IOLoop.time` deadline (or a
        `datetime.timedelta` from now) after which the whole attempt fails
        with `TimeoutError`.
        """
        self._try_next(self.primary_addrs, primary=True)
        if not self.future.done():
            if self.secondary_addrs and not self._secondary_started:
                self.set_timeout(timeout)
            if connect_timeout is not None:
                self.set_connect_timeout(connect_timeout)
        return self.future

    def _try_next(self, queue: deque[tuple[int, _Address]], primary: bool) -> None:
        # Start the next address of ``queue``; synchronous failures count as
        # failed attempts and move straight on to the following address.
        while queue and not self.future.done():
            af, addr = queue.popleft()
            try:
                stream, attempt = self.connect(af, addr)
            except Exception as e:
                self.last_error = e
                if primary:
                    self._start_secondary()
                continue
            self.streams.add(stream)
            self._pending[attempt] = addr
            attempt.add_done_callback(functools.partial(self._on_attempt_done, af, addr, stream, primary))
            return
        self._fail_if_exhausted()

    def _on_attempt_done(
        self, af: int, addr: _Address, stream: Any, primary: bool, attempt: asyncio.Future[Any]
    ) -> None:
        self._pending.pop(attempt, None)
        if attempt.cancelled() or attempt.exception() is not None:
            if not attempt.cancelled():
                self.last_error = attempt.exception()
            stream.close()
            if self.future.done():
                return
            if primary:
                self._start_secondary()
            self._try_next(self.primary_addrs if primary else self.secondary_addrs, primary)
            return
        connected = attempt.result()
        if self.future.done():
            # A slower attempt finished after the race was decided.
            connected.close()
            return
        self.clear_timeouts()
        self.streams.discard(stream)
        self.streams.discard(connected)
        self.future.set_result((af, addr, connected))
        self.close_streams()

    def _start_secondary(self) -> None:
        if self._secondary_started or self.future.done():
            return
        self._secondary_started = True
        self.clear_timeout()
        self._try_next(self.secondary_addrs, primary=False)

    def _fail_if_exhausted(self) -> None:
        if self.future.done() or self._pending or self.primary_addrs or self.secondary_addrs:
            return
        self.clear_timeouts()
        self.future.set_exception(self.last_error or OSError("connection failed"))
        self.close_streams()

    def set_timeout(self, timeout: float) -> None:
        """Start the secondary family after ``timeout`` seconds unless something else starts it first."""
        self.timeout = self._loop.call_later(timeout, self.on_timeout)

    def on_timeout(self) -> None:
        """The primary family had its head start: try the secondary family in parallel now."""
        self.timeout = None
        if not self.future.done():
            self._start_secondary()

    def clear_timeout(self) -> None:
        """Cancel the pending start of the secondary family."""
        if self.timeout is not None:
            self.timeout.cancel()
            self.timeout = None

    def set_connect_timeout(self, connect_timeout: float | datetime.timedelta) -> None:
        """Fail the whole attempt with `TimeoutError` at ``connect_timeout``."""
        if isinstance(connect_timeout, datetime.timedelta):
            self.connect_timeout = self._loop.call_later(connect_timeout.total_seconds(), self.on_connect_timeout)
        else:
            self.connect_timeout = self._loop.call_at(connect_timeout, self.on_connect_timeout)

    def on_connect_timeout(self) -> None:
        """The deadline passed: fail with `TimeoutError` naming the attempts in flight, close everything."""
        self.connect_timeout = None
        if not self.future.done():
            pending = ", ".join(sorted(_format_addr(addr) for addr in self._pending.values()))
            self.clear_timeouts()
            self.future.set_exception(TimeoutError(f"Timeout while connecting to {pending}"))
        self.close_streams()

    def clear_timeouts(self) -> None:
        """Cancel both timers."""
        self.clear_timeout()
        if self.connect_timeout is not None:
            self.connect_timeout.cancel()
            self.connect_timeout = None

    def close_streams(self) -> None:
        """Close the stream of every attempt that did not win."""
        for stream in self.streams:
            stream.close()

    def _on_future_done(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            # The caller gave up (e.g. its task was cancelled): abandon every
            # attempt so no socket outlives the call.
            self.clear_timeouts()
            self.close_streams()


class TCPClient:
    """A factory of outgoing TCP connections.

    ``resolver`` turns host names into addresses; by default each client gets
    its own `~squall.netutil.Resolver()` (the configured implementation), which
    `close` releases. A resolver passed in is left open by `close`.
    """

    def __init__(self, resolver: Resolver | None = None) -> None:
        if resolver is not None:
            self.resolver = resolver
            self._own_resolver = False
        else:
            self.resolver = Resolver()
            self._own_resolver = True

    def close(self) -> None:
        """Release the resolver if this client created it."""
        if self._own_resolver:
            self.resolver.close()

    async def connect(
        self,
        host: str,
        port: int,
        af: socket.AddressFamily = socket.AF_UNSPEC,
        ssl_options: dict[str, Any] | ssl.SSLContext | None = None,
        max_buffer_size: int | None = None,
        source_ip: str | None = None,
        source_port: int | None = None,
        timeout: float | datetime.timedelta | None = None,
    ) -> IOStream:
        """Connect to ``host``:``port`` and return the connected `~squall.iostream.IOStream`.

        ``af`` restricts the address family (``socket.AF_INET`` or
        ``AF_INET6``). With ``ssl_options`` (an `ssl.SSLContext` or a
        Tornado-style dictionary) the TLS handshake is done too and an
        `~squall.iostream.SSLIOStream` is returned; the certificate is checked
        against ``host``. ``source_ip`` and ``source_port`` bind the local end
        first. ``max_buffer_size`` is handed to the stream.

        ``timeout`` (seconds, or a `datetime.timedelta`) bounds the whole call:
        name resolution, TCP connect and TLS handshake. When it passes,
        `TimeoutError` is raised and every socket opened for the call is
        closed; cancelling the call closes them too. Connection errors raise
        `OSError` (the last one seen when several addresses were tried).
        """
        loop = asyncio.get_running_loop()
        deadline: float | None
        if timeout is None:
            deadline = None
        elif isinstance(timeout, datetime.timedelta):
            deadline = loop.time() + timeout.total_seconds()
        elif isinstance(timeout, numbers.Real) and not isinstance(timeout, bool):
            deadline = loop.time() + float(timeout)
        else:
            raise TypeError(f"timeout must be a number of seconds or a timedelta, got {timeout!r}")

        resolving = self.resolver.resolve(host, port, af)
        if deadline is None:
            addrinfo = await resolving
        else:
            try:
                addrinfo = await asyncio.wait_for(resolving, max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                raise TimeoutError(f"Timeout while resolving {host}") from None

        connector = _Connector(
            addrinfo,
            functools.partial(self._create_stream, max_buffer_size, source_ip=source_ip, source_port=source_port),
        )
        stream: IOStream
        _af, addr, stream = await connector.start(connect_timeout=deadline)
        if ssl_options is None:
            return stream
        try:
            handshake = stream.start_tls(False, ssl_options=ssl_options, server_hostname=host)
            if deadline is None:
                return await handshake
            return await asyncio.wait_for(handshake, max(deadline - loop.time(), 0))
        except asyncio.TimeoutError:
            stream.close()
            raise TimeoutError(f"Timeout during TLS handshake with {_format_addr(addr)}") from None
        except BaseException:
            stream.close()
            raise

    def _create_stream(
        self,
        max_buffer_size: int | None,
        af: int,
        addr: _Address,
        source_ip: str | None = None,
        source_port: int | None = None,
    ) -> tuple[IOStream, asyncio.Future[IOStream]]:
        # One connection attempt: a non-blocking socket of family ``af``,
        # bound to the requested source address, wrapped in a stream whose
        # connect() future the connector races against the others.
        sock = socket.socket(af, socket.SOCK_STREAM)
        if source_ip is not None or source_port is not None:
            try:
                sock.bind((source_ip or "", source_port or 0))
            except BaseException:
                sock.close()
                raise
        stream = IOStream(sock, max_buffer_size=max_buffer_size)
        return stream, stream.connect(addr)
