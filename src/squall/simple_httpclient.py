"""squall's own HTTP/1.1 client: `SimpleAsyncHTTPClient`, with keep-alive pooling.

It is the default `squall.httpclient.AsyncHTTPClient` implementation, with
Tornado's options and behaviour, plus one thing Tornado's simple client never
did: connections are kept open after a response when both sides allow it and
reused by the next request to the same origin. A burst of requests to one
backend therefore costs a handful of TCP (and TLS) handshakes instead of one
per request.

Pooling rules: a connection goes back to its origin's pool after a complete,
cleanly framed response (``Content-Length`` or chunked) when neither side
said ``Connection: close``; idle connections are closed after
`IDLE_CONNECTION_TIMEOUT` seconds or when the server closes them. Before a
pooled connection is reused its socket is polled: one the server has closed
(or written to unasked) is discarded, so a stale keep-alive connection never
gets a request. A request is never sent twice: if the connection fails once
it is sent, the fetch fails with `HTTPStreamClosedError` (code 599), as with
Tornado's client, which opened a connection per request.

The protocol runs directly on asyncio transports: one `asyncio.Protocol`
per connection and a pure-Python, grammar-checked response reader.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import copy
import io
import os
import re
import select
import socket
import ssl
import time
import urllib.parse
import zlib
from typing import Any, Callable, Optional

from squall import _abnf, httputil, version
from squall.httpclient import (
    AsyncHTTPClient,
    HTTPClientError,
    HTTPRequest,
    HTTPResponse,
    _RequestProxy,
)
from squall.iostream import UnsatisfiableReadError
from squall.log import app_log, gen_log
from squall.netutil import Resolver
from squall.util import GzipDecompressor

__all__ = ["SimpleAsyncHTTPClient", "HTTPTimeoutError", "HTTPStreamClosedError"]

# Tornado's SimpleAsyncHTTPClient defaults: 10 simultaneous requests and a
# 100 MiB buffer (which is also the body limit unless max_body_size is set).
_DEFAULT_MAX_CLIENTS = 10
_DEFAULT_MAX_BUFFER_SIZE = 100 * 1024 * 1024
# Tornado's HTTP1ConnectionParameters default for the response head.
_DEFAULT_MAX_HEADER_SIZE = 64 * 1024
# Tornado's http1connection._MAX_1XX_RESPONSES: interim responses accepted
# before the final one.
_MAX_1XX_RESPONSES = 10
# Body data is delivered (and decompressed) in pieces of at most this size,
# Tornado's HTTP1ConnectionParameters.chunk_size.
_CHUNK_SIZE = 64 * 1024
# Reading pauses while this much received data waits to be consumed; the
# same high-water mark as asyncio streams' default limit (2 * 64 KiB).
_READ_HIGH_WATER = 128 * 1024
#: Seconds an idle pooled connection is kept open: aiohttp's
#: ``keepalive_timeout`` default, safely below common server keep-alive
#: timeouts (nginx 75 s, Tornado's idle_connection_timeout 3600 s), so the
#: client, not the server, closes an idle connection in the usual case.
IDLE_CONNECTION_TIMEOUT = 15.0
# Methods sent without allow_nonstandard_methods, as in Tornado.
_SUPPORTED_METHODS = frozenset({"GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS"})
_BODY_METHODS = frozenset({"POST", "PATCH", "PUT"})
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# End of a response head: CRLF CRLF, or bare LFs, which RFC 9112 2.2 lets a
# recipient accept.
_HEAD_END_RE = re.compile(rb"\r?\n\r?\n")
_METHOD_RE = re.compile(_abnf.token)
# A request-target may hold no whitespace or control characters.
_BAD_PATH_CHARS_RE = re.compile(r"[\x00-\x20\x7f]")


class HTTPTimeoutError(HTTPClientError):
    """A request that did not finish in time (code 599).

    The message says which phase ran out of time: ``"Timeout in request
    queue"``, ``"Timeout while resolving <host>"``, ``"Timeout while
    connecting to <host>:<port>"``, ``"Timeout during TLS handshake with
    <host>:<port>"`` or ``"Timeout during request"``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(599, message=message)

    def __str__(self) -> str:
        return self.message or "Timeout"


class HTTPStreamClosedError(HTTPClientError):
    """The connection closed before the response was complete (code 599).

    Also the error for a malformed response, which is logged to
    ``squall.general`` at INFO level and makes the client drop the
    connection.
    """

    def __init__(self, message: str) -> None:
        super().__init__(599, message=message)

    def __str__(self) -> str:
        return self.message or "Stream closed"


class SimpleAsyncHTTPClient(AsyncHTTPClient):
    """Non-blocking HTTP/1.1 client on asyncio, with connection pooling.

    - ``max_clients``: requests in progress at once; further ones wait in
      `queue` (the wait counts against their ``connect_timeout`` and
      ``request_timeout``). It also bounds the idle connections kept per
      origin.
    - ``hostname_mapping``: ``{"host": "other-host"}`` or
      ``{("host", port): ("other-host", other_port)}`` redirects
      connections (the ``Host`` header and TLS name are unchanged), like
      an ``/etc/hosts`` entry.
    - ``resolver``: a `squall.netutil.Resolver` to look up host names; by
      default the configured one (IP addresses in URLs then need no lookup).
    - ``max_buffer_size``: received data held before reading pauses is at
      most this much, and it is the body limit when ``max_body_size`` is
      not given.
    - ``max_header_size``: limit on the response head (64 KiB by default).
    - ``max_body_size``: limit on a response body after decompression,
      with or without a ``streaming_callback``; a longer one fails the
      request with code 599.

    Only basic authentication is supported; ``proxy_*`` options are not
    (use the curl client).
    """

    def initialize(  # type: ignore[override]
        self,
        max_clients: int = _DEFAULT_MAX_CLIENTS,
        hostname_mapping: Optional[dict[Any, Any]] = None,
        max_buffer_size: int = _DEFAULT_MAX_BUFFER_SIZE,
        resolver: Any = None,
        defaults: Optional[dict[str, Any]] = None,
        max_header_size: Optional[int] = None,
        max_body_size: Optional[int] = None,
    ) -> None:
        super().initialize(defaults=defaults)
        for name, value in (
            ("max_clients", max_clients),
            ("max_buffer_size", max_buffer_size),
            ("max_header_size", max_header_size),
            ("max_body_size", max_body_size),
        ):
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.max_clients = max_clients
        #: Requests waiting for a free slot, oldest first.
        self.queue: collections.deque[tuple[object, HTTPRequest, Callable[[HTTPResponse], None]]] = (
            collections.deque()
        )
        #: Requests in progress, by an internal key.
        self.active: dict[object, tuple[HTTPRequest, Callable[[HTTPResponse], None]]] = {}
        #: Queued requests (request, callback, queue timeout handle, time
        #: queued), by the same key.
        self.waiting: dict[
            object, tuple[HTTPRequest, Callable[[HTTPResponse], None], Any, float]
        ] = {}
        self.max_buffer_size = max_buffer_size
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self.hostname_mapping = hostname_mapping
        #: The resolver for host names: the caller's, or else a configured
        #: `squall.netutil.Resolver` that `close` closes.
        self.resolver = resolver if resolver is not None else Resolver()
        self.own_resolver = resolver is None
        self._loop = self.io_loop.asyncio_loop
        self._idle: dict[tuple[Any, ...], list[_Connection]] = {}
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ssl_contexts: dict[Any, ssl.SSLContext] = {}

    def close(self) -> None:
        """Close idle connections and stop pooling.

        Requests already in progress run to completion; their connections
        are closed instead of pooled.
        """
        super().close()
        for conn in list(self._connections):
            if conn.idle:
                conn.close()
        self._idle.clear()
        if self.own_resolver:
            self.resolver.close()

    def fetch_impl(
        self, request: HTTPRequest, callback: Callable[[HTTPResponse], None]
    ) -> None:
        key = object()
        queued_at = self._loop.time()
        self.queue.append((key, request, callback))
        timeout_handle = None
        if len(self.active) >= self.max_clients:
            timeout = _first_timeout(request)
            if timeout:
                timeout_handle = self._loop.call_at(
                    queued_at + timeout, self._on_queue_timeout, key, queued_at
                )
        self.waiting[key] = (request, callback, timeout_handle, queued_at)
        self._process_queue()
        if self.queue:
            gen_log.debug(
                "max_clients limit reached, request queued. %d active, %d queued requests.",
                len(self.active),
                len(self.queue),
            )

    def _process_queue(self) -> None:
        while self.queue and len(self.active) < self.max_clients:
            key, request, callback = self.queue.popleft()
            if key not in self.waiting:
                continue
            _, _, timeout_handle, queued_at = self.waiting.pop(key)
            if timeout_handle is not None:
                timeout_handle.cancel()
            self.active[key] = (request, callback)
            fetch = _Fetch(self, key, request, callback, queued_at)
            task = self._loop.create_task(fetch.run())
            fetch.task = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _release(self, key: object) -> None:
        if self.active.pop(key, None) is not None:
            self._process_queue()

    def _on_queue_timeout(self, key: object, queued_at: float) -> None:
        entry = self.waiting.pop(key, None)
        if entry is None:
            return
        request, callback, _, _ = entry
        self.queue = collections.deque(item for item in self.queue if item[0] is not key)
        now = self._loop.time()
        response = HTTPResponse(
            request,
            599,
            error=HTTPTimeoutError("Timeout in request queue"),
            request_time=now - queued_at,
            start_time=time.time() - (now - queued_at),
        )
        callback(response)

    # -- connection pool -----------------------------------------------------

    def _take_idle(self, pool_key: tuple[Any, ...]) -> Optional[_Connection]:
        conns = self._idle.get(pool_key)
        while conns:
            conn = conns.pop()
            conn.leave_pool()
            if conn.usable() and not conn.readable_now():
                return conn
            conn.close()
        return None

    def _put_idle(self, conn: _Connection) -> None:
        if self._closed or not conn.usable():
            conn.close()
            return
        conns = self._idle.setdefault(conn.pool_key, [])
        if len(conns) >= self.max_clients:
            conns.pop(0).close()
        conns.append(conn)
        conn.enter_pool(self._loop.call_later(IDLE_CONNECTION_TIMEOUT, conn.close))

    def _forget(self, conn: _Connection) -> None:
        """Called by a connection once it is closed."""
        self._connections.discard(conn)
        conns = self._idle.get(conn.pool_key)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._idle[conn.pool_key]

    def _ssl_context(self, request: HTTPRequest) -> ssl.SSLContext:
        options = request.ssl_options
        if isinstance(options, ssl.SSLContext):
            return options
        if options is not None:
            try:
                cache_key: Any = ("options", tuple(sorted(options.items())))
                hash(cache_key)
            except TypeError:
                return _context_from_options(options)
            context = self._ssl_contexts.get(cache_key)
            if context is None:
                context = self._ssl_contexts[cache_key] = _context_from_options(options)
            return context
        cache_key = (
            bool(request.validate_cert),
            request.ca_certs,
            request.client_cert,
            request.client_key,
        )
        context = self._ssl_contexts.get(cache_key)
        if context is None:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=request.ca_certs)
            if not request.validate_cert:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if request.client_cert is not None:
                context.load_cert_chain(request.client_cert, request.client_key)
            self._ssl_contexts[cache_key] = context
        return context


_SSL_OPTION_KEYS = frozenset({"ssl_version", "certfile", "keyfile", "cert_reqs", "ca_certs", "ciphers"})


def _context_from_options(options: dict[str, Any]) -> ssl.SSLContext:
    # The ``ssl.wrap_socket``-style dict Tornado accepts, for the client side.
    unknown = set(options) - _SSL_OPTION_KEYS
    if unknown:
        raise ValueError(f"unknown ssl_options keys: {sorted(unknown)!r}")
    context = ssl.SSLContext(options.get("ssl_version", ssl.PROTOCOL_TLS_CLIENT))
    if "certfile" in options:
        context.load_cert_chain(options["certfile"], options.get("keyfile"))
    if "cert_reqs" in options:
        if options["cert_reqs"] == ssl.CERT_NONE:
            context.check_hostname = False
        context.verify_mode = options["cert_reqs"]
    if "ca_certs" in options:
        context.load_verify_locations(options["ca_certs"])
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if "ciphers" in options:
        context.set_ciphers(options["ciphers"])
    return context


def _first_timeout(request: HTTPRequest) -> float:
    # The smaller of the two timeouts, ignoring one that is 0 (none).
    connect = request.connect_timeout or 0
    whole = request.request_timeout or 0
    if connect and whole:
        return min(connect, whole)
    return connect or whole


def _ip_family(host: str) -> Optional[int]:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return family
    return None


class _ConnectionClosed(Exception):
    """The peer closed the connection before the data needed arrived."""


class _Malformed(Exception):
    """The response breaks HTTP/1.1 framing or a configured limit."""


class _CallbackFailed(Exception):
    """A user callback raised (already logged)."""


class _Connection(asyncio.Protocol):
    """One client connection: buffered reads for the response reader and
    flow-controlled writes, plus its state in the pool."""

    def __init__(self, client: SimpleAsyncHTTPClient, pool_key: tuple[Any, ...]) -> None:
        self.client = client
        self.pool_key = pool_key
        self.transport: Optional[asyncio.Transport] = None
        self.buf = bytearray()
        self.high_water = min(_READ_HIGH_WATER, client.max_buffer_size)
        self.eof = False
        self.closed = False
        self.error: Optional[BaseException] = None
        self.idle = False
        self.reused = False
        self.bytes_received = 0
        self._idle_handle: Optional[asyncio.TimerHandle] = None
        self._waiter: Optional[asyncio.Future[None]] = None
        self._read_paused = False
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.idle:
            # Nothing is owed to us between responses: a server that talks
            # now is broken or closing; either way the connection is done.
            self.close()
            return
        self.buf += data
        self.bytes_received += len(data)
        if len(self.buf) >= self.high_water and not self._read_paused:
            self._read_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        if self.idle:
            self.close()
        # False: let the transport close; a half-closed HTTP connection is
        # of no further use.
        return False

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closed = True
        self.eof = True
        self.error = exc
        self._wake()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        self.client._forget(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # -- pool state ----------------------------------------------------------

    def usable(self) -> bool:
        return not (self.closed or self.eof or self.buf) and not (
            self.transport is None or self.transport.is_closing()
        )

    def readable_now(self) -> bool:
        """True if the idle connection's socket has something to read.

        Nothing is owed to an idle connection, so that is the server's close
        (or a protocol error). Asked of the socket itself because the loop
        may not have run since the server closed it (the blocking
        `HTTPClient` runs its loop only inside ``fetch``), so
        ``eof_received`` may not have been called yet.
        """
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return False
        try:
            fd = sock.fileno()
        except (OSError, ValueError):
            return True
        if fd < 0:
            return True
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([fd], [], [], 0)[0])

    def enter_pool(self, idle_handle: asyncio.TimerHandle) -> None:
        self.idle = True
        self._idle_handle = idle_handle

    def leave_pool(self) -> None:
        self.idle = False
        self.reused = True
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- writing -------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise _ConnectionClosed()
        self.transport.write(data)

    def write_future(self, data: bytes) -> asyncio.Future[None]:
        """Write and return a future that resolves once the transport is
        ready for more (the flow control a body_producer sees)."""
        self.write(data)
        future: asyncio.Future[None] = self.client._loop.create_future()
        if self._write_paused:
            self._drain_waiters.append(future)
        else:
            future.set_result(None)
        return future

    # -- reading -------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _fill(self) -> None:
        """Wait for more data; raise `_ConnectionClosed` if none can come."""
        if self.eof:
            raise _ConnectionClosed()
        if self._read_paused:
            self._read_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        waiter = self._waiter = self.client._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _take(self, size: int) -> bytes:
        buf = self.buf
        if size >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:size])
            del buf[:size]
        if self._read_paused and len(buf) < self.high_water:
            self._read_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        return data

    async def read_head(self, max_size: int) -> bytes:
        """Return one response head, terminator included."""
        scanned = 0
        while True:
            match = _HEAD_END_RE.search(self.buf, max(0, scanned - 3))
            if match is not None:
                if match.end() > max_size:
                    break
                return self._take(match.end())
            if len(self.buf) > max_size:
                break
            scanned = len(self.buf)
            await self._fill()
        # Tornado reports this limit as an unsatisfiable stream read.
        raise UnsatisfiableReadError(f"Response head larger than {max_size} bytes")

    async def read_line(self, max_size: int) -> bytes:
        """Return one line, LF included."""
        scanned = 0
        while True:
            end = self.buf.find(b"\n", scanned)
            if end >= 0:
                if end + 1 > max_size:
                    raise _Malformed(f"Line longer than {max_size} bytes")
                return self._take(end + 1)
            if len(self.buf) > max_size:
                raise _Malformed(f"Line longer than {max_size} bytes")
            scanned = len(self.buf)
            await self._fill()

    async def read_exact(self, size: int) -> bytes:
        while len(self.buf) < size:
            await self._fill()
        return self._take(size)

    async def read_some(self, max_size: int) -> bytes:
        """Return between 1 and ``max_size`` bytes, or b"" at end of stream."""
        while not self.buf:
            if self.eof:
                return b""
            await self._fill()
        return self._take(max_size)


class _Fetch:
    """One request on its way: connection, request, response, redirects."""

    def __init__(
        self,
        client: SimpleAsyncHTTPClient,
        key: object,
        request: HTTPRequest,
        callback: Callable[[HTTPResponse], None],
        queued_at: float,
    ) -> None:
        self.client = client
        self.key = key
        self.request = request
        self.callback: Optional[Callable[[HTTPResponse], None]] = callback
        self.loop = client._loop
        self.queued_at = queued_at
        self.start_wall_time = time.time() - (self.loop.time() - self.queued_at)
        self.task: Optional[asyncio.Task[None]] = None
        self.conn: Optional[_Connection] = None
        self.timeout_message: Optional[str] = None
        self._timer: Optional[asyncio.TimerHandle] = None
        self._stage = "during request"
        self.time_info: dict[str, float] = {"queue": self.loop.time() - self.queued_at}

    # -- timeouts ------------------------------------------------------------

    def _set_timer(self, deadline: Optional[float]) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timeout)

    def _on_timeout(self) -> None:
        self._timer = None
        self.timeout_message = "Timeout " + self._stage
        assert self.task is not None
        self.task.cancel()

    # -- driver ----------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            if self.timeout_message is None:
                self._finish_with_error(HTTPStreamClosedError("Request cancelled"))
                raise
            self._finish_with_error(HTTPTimeoutError(self.timeout_message))
        except _Malformed as e:
            gen_log.info("Malformed HTTP message from None: %s", e)
            self._finish_with_error(HTTPStreamClosedError("Stream closed"))
        except httputil.HTTPInputError as e:
            gen_log.info("Malformed HTTP message from None: %s", e)
            self._finish_with_error(HTTPStreamClosedError("Stream closed"))
        except _CallbackFailed:
            self._finish_with_error(HTTPStreamClosedError("Stream closed"))
        except UnsatisfiableReadError as e:
            gen_log.info("Unsatisfiable read, closing connection: %s", e)
            self._finish_with_error(e)
        except _ConnectionClosed:
            # A reset or an early close is a transport failure: code 599 like
            # any other, with the socket error kept as the cause.
            closed = HTTPStreamClosedError("Stream closed")
            conn = self.conn
            if conn is not None and conn.error is not None:
                closed.__cause__ = conn.error
            self._finish_with_error(closed)
        except Exception as e:
            self._finish_with_error(e)

    def _finish_with_error(self, error: BaseException) -> None:
        self._set_timer(None)
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.client._release(self.key)
        callback, self.callback = self.callback, None
        if callback is None:
            return
        now = self.loop.time()
        callback(
            HTTPResponse(
                self.request,
                599,
                error=error,
                request_time=now - self.queued_at,
                start_time=self.start_wall_time,
            )
        )

    async def _run(self) -> None:
        request = self.request
        parsed = urllib.parse.urlsplit(request.url)
        scheme = parsed.scheme
        if scheme not in _DEFAULT_PORTS:
            raise ValueError(f"Unsupported url scheme: {request.url}")
        netloc = parsed.netloc
        if "@" in netloc:
            netloc = netloc.rpartition("@")[2]
        host, port = httputil.split_host_and_port(netloc)
        if port is None:
            port = _DEFAULT_PORTS[scheme]
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not host:
            raise ValueError(f"No host in url: {request.url!r}")
        for option in ("proxy_host", "proxy_port", "proxy_username", "proxy_password", "proxy_auth_mode"):
            if getattr(request, option, None):
                raise NotImplementedError(f"{option} not supported by SimpleAsyncHTTPClient")
        head, body = self._build_request(parsed, netloc)
        source_ip = request.network_interface
        if source_ip is not None and _ip_family(source_ip) is None:
            raise ValueError(f"network_interface must be a local IP address, got {source_ip!r}")

        connect_host, connect_port = host, port
        mapping = self.client.hostname_mapping
        if mapping:
            if (host, port) in mapping:
                connect_host, connect_port = mapping[(host, port)]
            elif host in mapping:
                connect_host = mapping[host]
        family = socket.AF_UNSPEC if request.allow_ipv6 is not False else socket.AF_INET
        ssl_context = self.client._ssl_context(request) if scheme == "https" else None
        pool_key = (scheme, connect_host, connect_port, family, source_ip, ssl_context, host)

        now = self.loop.time()
        request_deadline = (
            self.queued_at + request.request_timeout if request.request_timeout else None
        )
        first = _first_timeout(request)
        connect_deadline = now + first if first else None
        if request_deadline is not None and connect_deadline is not None:
            connect_deadline = min(connect_deadline, request_deadline)

        conn = self.client._take_idle(pool_key)
        if conn is None:
            self._set_timer(connect_deadline)
            conn = await self._connect(
                connect_host, connect_port, family, source_ip, ssl_context, host, pool_key
            )
        self.conn = conn
        self.time_info["connect"] = self.loop.time() - now
        self._stage = "during request"
        self._set_timer(request_deadline)
        # No automatic retry once the request is sent, whatever its method:
        # the server may have acted on it (a crashed worker, a GET with side
        # effects), and a Tornado user expects one send per fetch. Dead
        # pooled connections are caught before sending instead (_take_idle).
        await self._exchange(conn, head, body)

    def _build_request(
        self, parsed: urllib.parse.SplitResult, netloc: str
    ) -> tuple[bytes, Optional[bytes]]:
        request = self.request
        method = request.method
        if not _METHOD_RE.fullmatch(method):
            raise ValueError(f"invalid HTTP method {method!r}")
        if not request.allow_nonstandard_methods:
            if method not in _SUPPORTED_METHODS:
                raise ValueError(f"unknown method {method!r} (set allow_nonstandard_methods)")
            body_expected = method in _BODY_METHODS
            body_present = request.body is not None or request.body_producer is not None
            if body_expected != body_present:
                raise ValueError(
                    "Body must %sbe None for method %s (unless allow_nonstandard_methods is true)"
                    % ("not " if body_expected else "", method)
                )
        # The wire headers are a copy: the caller's request stays reusable.
        headers = httputil.HTTPHeaders(request.headers)
        if "Host" not in headers:
            headers["Host"] = netloc
        username = request.auth_username
        password = request.auth_password
        if username is None and parsed.username is not None:
            username = urllib.parse.unquote(parsed.username)
            password = urllib.parse.unquote(parsed.password or "")
        if username is not None:
            if request.auth_mode not in (None, "basic"):
                raise ValueError(f"unsupported auth_mode {request.auth_mode!r}")
            credentials = httputil.encode_username_password(username, password or "")
            headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
        if request.user_agent:
            headers["User-Agent"] = request.user_agent
        elif headers.get("User-Agent") is None:
            headers["User-Agent"] = f"squall/{version}"
        if request.expect_100_continue:
            headers["Expect"] = "100-continue"
        body = request.body
        if body is not None:
            headers["Content-Length"] = str(len(body))
        elif request.body_producer is not None and "Content-Length" not in headers:
            headers["Transfer-Encoding"] = "chunked"
        if method == "POST" and "Content-Type" not in headers:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if request.decompress_response:
            headers["Accept-Encoding"] = "gzip"
        path = (parsed.path or "/") + ("?" + parsed.query if parsed.query else "")
        if _BAD_PATH_CHARS_RE.search(path):
            raise ValueError(f"invalid characters in request path {path!r}")
        lines = [f"{method} {path} HTTP/1.1"]
        for name, value in headers.get_all():
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            elif not isinstance(value, str):
                value = str(value)
            if not _abnf.FIELD_NAME_RE.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            if _abnf.FORBIDDEN_VALUE_CHARS_RE.search(value):
                raise ValueError(f"invalid character in value of header {name!r}: {value!r}")
            lines.append(f"{name}: {value}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1"), body

    async def _connect(
        self,
        host: str,
        port: int,
        family: int,
        source_ip: Optional[str],
        ssl_context: Optional[ssl.SSLContext],
        server_hostname: str,
        pool_key: tuple[Any, ...],
    ) -> _Connection:
        self._stage = f"while resolving {host}"
        addresses = await self._resolve(host, port, family)
        self._stage = f"while connecting to {host}:{port}"
        sock = await self._connect_socket(addresses, source_ip)
        if ssl_context is not None:
            self._stage = f"during TLS handshake with {host}:{port}"
        conn = _Connection(self.client, pool_key)
        try:
            await self.loop.create_connection(
                lambda: conn,
                sock=sock,
                ssl=ssl_context,
                server_hostname=server_hostname if ssl_context is not None else None,
            )
        except BaseException:
            sock.close()
            raise
        self.client._connections.add(conn)
        return conn

    async def _resolve(self, host: str, port: int, family: int) -> list[tuple[int, Any]]:
        client = self.client
        if client.own_resolver:
            literal = _ip_family(host)
            if literal is not None:
                # No lookup (and no executor round trip) for an address.
                if family != socket.AF_UNSPEC and literal != family:
                    raise ValueError(f"address {host!r} is IPv6 but allow_ipv6 is False")
                return [(literal, (host, port))]
        return list(await client.resolver.resolve(host, port, family))

    async def _connect_socket(
        self, addresses: list[tuple[int, Any]], source_ip: Optional[str]
    ) -> socket.socket:
        if not addresses:
            raise OSError("no addresses to connect to")
        last_error: Optional[OSError] = None
        for family, address in _interleave(addresses):
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                if source_ip is not None:
                    sock.bind((source_ip, 0))
                await self.loop.sock_connect(sock, address)
            except OSError as e:
                sock.close()
                # asyncio words connect errors as "Connect call failed";
                # keep the errno but give the usual text and the address.
                if e.errno is not None:
                    last_error = OSError(
                        e.errno, f"{os.strerror(e.errno)} ({address[0]}:{address[1]})"
                    )
                else:
                    last_error = e
                continue
            except BaseException:
                sock.close()
                raise
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        assert last_error is not None
        raise last_error

    # -- one request/response on a connection ---------------------------------

    async def _exchange(self, conn: _Connection, head: bytes, body: Optional[bytes]) -> None:
        request = self.request
        reusable = "close" not in _tokens(request.headers.get("Connection"))
        expecting_continue = bool(request.expect_100_continue) and (
            body is not None or request.body_producer is not None
        )
        if body is not None and not expecting_continue:
            conn.write(head + body if len(body) <= _CHUNK_SIZE else head)
            if len(body) > _CHUNK_SIZE:
                conn.write(body)
        else:
            conn.write(head)
            if not expecting_continue and request.body_producer is not None:
                await self._produce_body(conn)
        informational = 0
        while True:
            raw = await conn.read_head(self.client.max_header_size or _DEFAULT_MAX_HEADER_SIZE)
            start_line, headers = _parse_head(raw)
            if start_line.code >= 200 or start_line.code == 101:
                break
            informational += 1
            if informational > _MAX_1XX_RESPONSES:
                raise _Malformed("Too many 1xx responses")
            if start_line.code == 100 and expecting_continue:
                expecting_continue = False
                if body is not None:
                    conn.write(body)
                else:
                    await self._produce_body(conn)
        if expecting_continue:
            # The server answered without waiting for the body, which we then
            # never sent: the connection's framing is unknown from here on.
            reusable = False
        self.time_info["starttransfer"] = self.loop.time() - self.queued_at
        await self._read_response(conn, start_line, headers, reusable)

    async def _produce_body(self, conn: _Connection) -> None:
        request = self.request
        declared = request.headers.get("Content-Length")
        limit = None if declared is None else _abnf.parse_content_length(declared)
        written = 0

        def write(chunk: bytes) -> asyncio.Future[None]:
            nonlocal written
            if not isinstance(chunk, bytes):
                raise TypeError(f"body_producer must write bytes, got {type(chunk).__name__}")
            written += len(chunk)
            if limit is None:
                if not chunk:
                    future: asyncio.Future[None] = self.loop.create_future()
                    future.set_result(None)
                    return future
                return conn.write_future(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            if written > limit:
                raise httputil.HTTPOutputError("Tried to write more data than Content-Length")
            return conn.write_future(chunk)

        assert request.body_producer is not None
        result = request.body_producer(write)
        if result is not None:
            await result
        if limit is None:
            conn.write(b"0\r\n\r\n")
        elif written < limit:
            raise httputil.HTTPOutputError(
                "Tried to write %d bytes less than Content-Length" % (limit - written)
            )

    async def _read_response(
        self,
        conn: _Connection,
        start_line: httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
        reusable: bool,
    ) -> None:
        request = self.request
        code = start_line.code
        connection_tokens = _tokens(headers.get("Connection"))
        if start_line.version == "HTTP/1.1":
            reusable = reusable and "close" not in connection_tokens
        else:
            reusable = reusable and "keep-alive" in connection_tokens
        follow = (
            bool(request.follow_redirects)
            and (request.max_redirects or 0) > 0
            and code in _REDIRECT_CODES
            and "Location" in headers
        )
        max_body = self.client.max_body_size or self.client.max_buffer_size

        # Framing (RFC 9112 6.3).
        length: Optional[int] = None
        chunked = False
        if request.method == "HEAD" or code in (204, 304) or code < 200:
            if code == 204 and (
                "Transfer-Encoding" in headers or headers.get("Content-Length", "0") != "0"
            ):
                raise _Malformed(f"Response with code {code} should not have body")
            length = 0
        elif "Transfer-Encoding" in headers:
            if "Content-Length" in headers:
                raise _Malformed("Message with both Transfer-Encoding and Content-Length")
            try:
                codings = _abnf.parse_transfer_encoding(headers["Transfer-Encoding"])
            except ValueError as e:
                raise _Malformed(str(e)) from None
            if codings == ["chunked"]:
                chunked = True
            elif "chunked" in codings:
                raise _Malformed(f"Unsupported Transfer-Encoding {headers['Transfer-Encoding']!r}")
        elif "Content-Length" in headers:
            value = headers["Content-Length"]
            if "," in value and len({v.strip(" \t") for v in value.split(",")}) > 1:
                raise _Malformed(f"Multiple unequal Content-Lengths: {value!r}")
            try:
                length = _abnf.parse_content_length(value)
            except ValueError as e:
                raise _Malformed(str(e)) from None
            if length > max_body:
                raise _Malformed("Content-Length too long")
        if length is None and not chunked:
            reusable = False

        decompressor: Optional[GzipDecompressor] = None
        if (
            request.decompress_response
            and length != 0
            and headers.get("Content-Encoding", "").lower() == "gzip"
        ):
            decompressor = GzipDecompressor()
            headers.add("X-Consumed-Content-Encoding", headers["Content-Encoding"])
            del headers["Content-Encoding"]

        if not follow and request.header_callback is not None:
            lines = [f"{start_line.version} {code} {start_line.reason}\r\n"]
            lines.extend(f"{name}: {value}\r\n" for name, value in headers.get_all())
            lines.append("\r\n")
            for line in lines:
                self._call_user(request.header_callback, line)

        chunks: list[bytes] = []
        streaming = None if follow else request.streaming_callback
        delivered = 0

        async def deliver(data: bytes) -> None:
            nonlocal delivered
            delivered += len(data)
            if delivered > max_body:
                raise _Malformed(
                    "decompressed body too large" if decompressor is not None else "Body too long"
                )
            if follow:
                return
            if streaming is not None:
                result = self._call_user(streaming, data)
                if result is not None:
                    try:
                        await result
                    except asyncio.CancelledError:
                        if self.timeout_message is not None:
                            raise
                        app_log.error("Uncaught exception in streaming_callback", exc_info=True)
                        raise _CallbackFailed() from None
                    except Exception:
                        app_log.error("Uncaught exception in streaming_callback", exc_info=True)
                        raise _CallbackFailed() from None
            else:
                chunks.append(data)

        async def sink(data: bytes) -> None:
            if decompressor is None:
                await deliver(data)
                return
            while data:
                try:
                    out = decompressor.decompress(data, _CHUNK_SIZE)
                except zlib.error:
                    raise _Malformed("invalid gzip data") from None
                data = decompressor.unconsumed_tail
                if out:
                    await deliver(out)

        if chunked:
            received = 0
            while True:
                line = await conn.read_line(_abnf.MAX_CHUNK_LINE_LENGTH + 2)
                try:
                    size = _abnf.parse_chunk_size(line.decode("latin-1"))
                except ValueError as e:
                    raise _Malformed(str(e)) from None
                if size == 0:
                    await self._read_trailers(conn)
                    break
                received += size
                if received > max_body:
                    raise _Malformed("chunked body too large")
                while size:
                    data = await conn.read_some(min(size, _CHUNK_SIZE))
                    if not data:
                        raise _ConnectionClosed()
                    size -= len(data)
                    await sink(data)
                if await conn.read_exact(2) != b"\r\n":
                    raise _Malformed("improperly terminated chunked request")
        elif length is not None:
            remaining = length
            while remaining:
                data = await conn.read_some(min(remaining, _CHUNK_SIZE))
                if not data:
                    raise _ConnectionClosed()
                remaining -= len(data)
                await sink(data)
        else:
            received = 0
            while True:
                data = await conn.read_some(_CHUNK_SIZE)
                if not data:
                    break
                received += len(data)
                if received > max_body:
                    raise _Malformed("Body too long")
                await sink(data)
        if decompressor is not None:
            try:
                tail = decompressor.flush()
            except zlib.error:
                raise _Malformed("invalid gzip data") from None
            if tail:
                await deliver(tail)

        # The response is complete.
        self._set_timer(None)
        self.conn = None
        if reusable and not self.client._closed:
            self.client._put_idle(conn)
        else:
            conn.close()
        self.time_info["total"] = self.loop.time() - self.queued_at
        if follow:
            self._follow_redirect(code, headers)
            return
        self.client._release(self.key)
        callback, self.callback = self.callback, None
        if callback is None:
            return
        original = getattr(request, "_squall_original_request", None)
        if original is None:
            original = request.request if isinstance(request, _RequestProxy) else request
        now = self.loop.time()
        callback(
            HTTPResponse(
                original,
                code,
                reason=start_line.reason,
                headers=headers,
                request_time=now - self.queued_at,
                start_time=self.start_wall_time,
                buffer=io.BytesIO(b"".join(chunks)),
                effective_url=request.url,
                time_info=self.time_info,
            )
        )

    async def _read_trailers(self, conn: _Connection) -> None:
        # Trailer fields are read (to keep the framing) and dropped, as
        # RFC 9110 6.5.1 allows a recipient that has no use for them.
        limit = self.client.max_header_size or _DEFAULT_MAX_HEADER_SIZE
        total = 0
        while True:
            line = await conn.read_line(limit)
            total += len(line)
            if total > limit:
                raise _Malformed("Trailers too large")
            if line in (b"\r\n", b"\n"):
                return

    def _call_user(self, callback: Callable[..., Any], argument: Any) -> Any:
        try:
            return callback(argument)
        except Exception:
            app_log.error("Uncaught exception in %s", getattr(callback, "__name__", callback), exc_info=True)
            raise _CallbackFailed() from None

    def _follow_redirect(self, code: int, headers: httputil.HTTPHeaders) -> None:
        request = self.request
        original_request = getattr(request, "_squall_original_request", None)
        if original_request is None:
            original_request = request.request if isinstance(request, _RequestProxy) else request
        source = request.request if isinstance(request, _RequestProxy) else request
        new_request = copy.copy(source)
        new_request.url = urllib.parse.urljoin(request.url, headers["Location"])
        new_request.max_redirects = request.max_redirects - 1
        new_request.headers = httputil.HTTPHeaders(request.headers)
        # The Host header is rebuilt from the new URL.
        _drop_headers(new_request.headers, ("Host",))
        if (code in (301, 302) and request.method == "POST") or (
            code == 303 and request.method != "HEAD"
        ):
            new_request.method = "GET"
            new_request.body = None
            new_request.body_producer = None
            _drop_headers(
                new_request.headers,
                ("Content-Length", "Content-Type", "Content-Encoding", "Transfer-Encoding"),
            )
        if _origin(new_request.url) != _origin(request.url):
            # Credentials are for the origin they were given to.
            _drop_headers(new_request.headers, ("Authorization", "Cookie", "Proxy-Authorization"))
            new_request.auth_username = None
            new_request.auth_password = None
        new_request._squall_original_request = original_request  # type: ignore[attr-defined]
        callback, self.callback = self.callback, None
        self.client._release(self.key)
        assert callback is not None
        if self.client._closed:
            callback(
                HTTPResponse(
                    original_request, 599, error=HTTPStreamClosedError("Client closed")
                )
            )
            return
        self.client.fetch_impl(_RequestProxy(new_request, self.client.defaults), callback)  # type: ignore[arg-type]


def _parse_head(raw: bytes) -> tuple[httputil.ResponseStartLine, httputil.HTTPHeaders]:
    text = raw.decode("latin-1")
    first_end = text.find("\n")
    first = text[:first_end].rstrip("\r")
    start_line = httputil.parse_response_start_line(first)
    headers = httputil.HTTPHeaders.parse(text[first_end + 1 :])
    return start_line, headers


def _drop_headers(headers: httputil.HTTPHeaders, names: tuple[str, ...]) -> None:
    for name in names:
        if name in headers:
            del headers[name]


def _tokens(value: Optional[str]) -> set[str]:
    if not value:
        return set()
    return {token.strip(" \t").lower() for token in value.split(",")}


def _origin(url: str) -> tuple[str, str, Optional[int]]:
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme.lower()
    return (scheme, (parsed.hostname or "").lower(), parsed.port or _DEFAULT_PORTS.get(scheme))


def _interleave(addresses: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    # Alternate address families, starting with the resolver's first choice,
    # so that one unreachable family does not hold up the other (the order
    # RFC 8305 section 4 recommends).
    if not addresses:
        return []
    first_family = addresses[0][0]
    primary = [a for a in addresses if a[0] == first_family]
    secondary = [a for a in addresses if a[0] != first_family]
    result: list[tuple[int, Any]] = []
    for i in range(max(len(primary), len(secondary))):
        if i < len(primary):
            result.append(primary[i])
        if i < len(secondary):
            result.append(secondary[i])
    return result
