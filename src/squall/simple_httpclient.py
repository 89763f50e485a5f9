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

Each connection is an `~squall.iostream.IOStream`, and each request on it
is written and its response read by a
`~squall.http1connection.HTTP1Connection` (this module is its delegate), as
in Tornado: one implementation of the HTTP/1 message rules serves both.
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
from typing import Any, Awaitable, Callable, Optional, Union

from squall import _abnf, httputil, version
from squall.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from squall.httpclient import (
    AsyncHTTPClient,
    HTTPClientError,
    HTTPRequest,
    HTTPResponse,
    _RequestProxy,
)
from squall.iostream import IOStream, UnsatisfiableReadError
from squall.log import gen_log
from squall.netutil import Resolver

__all__ = ["SimpleAsyncHTTPClient", "HTTPTimeoutError", "HTTPStreamClosedError"]

# Tornado's SimpleAsyncHTTPClient defaults: 10 simultaneous requests and a
# 100 MiB buffer (which is also the body limit unless max_body_size is set).
_DEFAULT_MAX_CLIENTS = 10
_DEFAULT_MAX_BUFFER_SIZE = 100 * 1024 * 1024
# Tornado's HTTP1ConnectionParameters default for the response head.
_DEFAULT_MAX_HEADER_SIZE = 64 * 1024
# Body data is delivered (and decompressed) in pieces of at most this size,
# Tornado's HTTP1ConnectionParameters.chunk_size.
_CHUNK_SIZE = 64 * 1024
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
        self._tasks: set[asyncio.Task[None]] = set()
        self._ssl_contexts: dict[Any, ssl.SSLContext] = {}
        # The HTTP/1 settings of every exchange, without and with gzip
        # decoding of responses.
        self._h1_params = tuple(
            HTTP1ConnectionParameters(
                chunk_size=_CHUNK_SIZE,
                max_header_size=max_header_size or _DEFAULT_MAX_HEADER_SIZE,
                max_body_size=max_body_size or max_buffer_size,
                decompress=decompress,
            )
            for decompress in (False, True)
        )

    def close(self) -> None:
        """Close idle connections and stop pooling.

        Requests already in progress run to completion; their connections
        are closed instead of pooled.
        """
        super().close()
        for conns in list(self._idle.values()):
            for conn in list(conns):
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
            if conn.leave_pool():
                return conn
            conn.close()
        return None

    def _put_idle(self, conn: _Connection) -> None:
        if self._closed or conn.stream.closed():
            conn.close()
            return
        conns = self._idle.setdefault(conn.pool_key, [])
        if len(conns) >= self.max_clients:
            conns.pop(0).close()
        conns.append(conn)
        conn.enter_pool(self._loop.call_later(IDLE_CONNECTION_TIMEOUT, conn.close))

    def _forget(self, conn: _Connection) -> None:
        """Called by a connection once it is closed."""
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


class _Connection:
    """A connection to one origin: its `IOStream` and its state in the pool."""

    def __init__(self, client: SimpleAsyncHTTPClient, pool_key: tuple[Any, ...], stream: IOStream) -> None:
        self.client = client
        self.pool_key = pool_key
        self.stream = stream
        self._idle_handle: Optional[asyncio.TimerHandle] = None

    def readable_now(self) -> bool:
        """True if the idle connection's socket has something to read.

        Nothing is owed to an idle connection, so that is the server's close
        (or a protocol error). Asked of the socket itself because the loop
        may not have run since the server closed it (the blocking
        `HTTPClient` runs its loop only inside ``fetch``), so the stream may
        not have seen it yet.
        """
        sock = self.stream.socket
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
        self._idle_handle = idle_handle
        self.stream.set_close_callback(self.close)

    def leave_pool(self) -> bool:
        """Take the connection out of the pool; False if it is spent.

        Between responses the server owes us nothing: a byte it sent
        unasked (already buffered by the stream, or still in the socket), or
        its close, makes the connection unusable.
        """
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        stream = self.stream
        stream.set_close_callback(None)
        if stream.closed() or self.readable_now():
            return False
        probe = stream.read_bytes(1, partial=True)
        if probe.done():  # type: ignore[attr-defined]
            probe.exception()  # type: ignore[attr-defined]
            return False
        probe.cancel()  # type: ignore[attr-defined]
        # A cancelled read stays the stream's pending read until another
        # starts, and would swallow the first byte of the response: an
        # empty read takes its place at once.
        stream.read_bytes(0)
        return True

    def close(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        self.stream.close()
        self.client._forget(self)


class _Fetch(httputil.HTTPMessageDelegate):
    """One request on its way: connection, request, response, redirects.

    It is the `~squall.httputil.HTTPMessageDelegate` of the
    `~squall.http1connection.HTTP1Connection` that writes the request and
    reads the response.
    """

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
        # The response as it arrives (see the delegate methods).
        self._h1: Optional[HTTP1Connection] = None
        self._body: Optional[bytes] = None
        self._body_pending = False
        self._start_line: Optional[httputil.ResponseStartLine] = None
        self._headers: Optional[httputil.HTTPHeaders] = None
        self._follow = False
        self._chunks: list[bytes] = []
        self._complete = False
        self._frame_chunks = False

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
        start_line, headers, body = self._build_request(parsed, netloc)
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
        await self._exchange(conn, start_line, headers, body)

    def _build_request(
        self, parsed: urllib.parse.SplitResult, netloc: str
    ) -> tuple[httputil.RequestStartLine, httputil.HTTPHeaders, Optional[bytes]]:
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
        elif (
            request.body_producer is not None
            and "Content-Length" not in headers
            and method not in _BODY_METHODS
        ):
            # HTTP1Connection chunks the bodies of POST, PUT and PATCH of
            # unknown length; another method's is chunked here.
            headers["Transfer-Encoding"] = "chunked"
            self._frame_chunks = True
        if method == "POST" and "Content-Type" not in headers:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if request.decompress_response:
            headers["Accept-Encoding"] = "gzip"
        path = (parsed.path or "/") + ("?" + parsed.query if parsed.query else "")
        if _BAD_PATH_CHARS_RE.search(path):
            raise ValueError(f"invalid characters in request path {path!r}")
        wire = httputil.HTTPHeaders()
        for name, value in headers.get_all():
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            elif not isinstance(value, str):
                value = str(value)
            if not _abnf.FIELD_NAME_RE.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            if _abnf.FORBIDDEN_VALUE_CHARS_RE.search(value):
                raise ValueError(f"invalid character in value of header {name!r}: {value!r}")
            wire.add(name, value)
        return httputil.RequestStartLine(method, path, "HTTP/1.1"), wire, body

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
        try:
            transport, _ = await self.loop.create_connection(
                asyncio.Protocol,
                sock=sock,
                ssl=ssl_context,
                server_hostname=server_hostname if ssl_context is not None else None,
            )
        except ssl.SSLError as e:
            sock.close()
            # Logged once, without a traceback, as Tornado's TLS streams log
            # a failed handshake; the fetch fails with the error itself.
            gen_log.warning("SSL Error on %s:%s: %s", host, port, e)
            raise
        except BaseException:
            sock.close()
            raise
        stream = IOStream._from_transport(transport)
        stream.max_buffer_size = self.client.max_buffer_size
        return _Connection(self.client, pool_key, stream)

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

    async def _exchange(
        self,
        conn: _Connection,
        start_line: httputil.RequestStartLine,
        headers: httputil.HTTPHeaders,
        body: Optional[bytes],
    ) -> None:
        request = self.request
        client = self.client
        h1 = self._h1 = HTTP1Connection(
            conn.stream, True, client._h1_params[bool(request.decompress_response)]
        )
        self._body = body
        self._body_pending = bool(request.expect_100_continue) and (
            body is not None or request.body_producer is not None
        )
        if self._body_pending:
            h1.write_headers(start_line, headers)
        elif request.body_producer is not None or (body is not None and len(body) > _CHUNK_SIZE):
            h1.write_headers(start_line, headers)
            await self._send_body()
        else:
            # The head and a small body in one segment.
            h1.write_headers(start_line, headers, body)
            h1.finish()
        reusable = await h1._read_message(self)
        if not self._complete:
            # The connection failed or the response was malformed (logged
            # by HTTP1Connection): code 599, with the socket error kept as
            # the cause. A head over max_header_size is reported as the
            # stream's UnsatisfiableReadError, as with Tornado.
            error = conn.stream.error
            if isinstance(error, UnsatisfiableReadError):
                raise error
            closed = HTTPStreamClosedError("Stream closed")
            closed.__cause__ = error
            raise closed
        if self._body_pending:
            # The server answered without waiting for the body, which we then
            # never sent: the connection's framing is unknown from here on.
            reusable = False
        self._set_timer(None)
        self.conn = None
        if reusable and not client._closed:
            client._put_idle(conn)
        else:
            conn.close()
        self.time_info["total"] = self.loop.time() - self.queued_at
        start, response_headers = self._start_line, self._headers
        assert start is not None and response_headers is not None
        if self._follow:
            self._follow_redirect(start.code, response_headers)
            return
        client._release(self.key)
        callback, self.callback = self.callback, None
        if callback is None:
            return
        original = getattr(request, "_squall_original_request", None)
        if original is None:
            original = request.request if isinstance(request, _RequestProxy) else request
        callback(
            HTTPResponse(
                original,
                start.code,
                reason=start.reason,
                headers=response_headers,
                request_time=self.loop.time() - self.queued_at,
                start_time=self.start_wall_time,
                buffer=io.BytesIO(b"".join(self._chunks)),
                effective_url=request.url,
                time_info=self.time_info,
            )
        )

    async def _send_body(self) -> None:
        h1 = self._h1
        assert h1 is not None
        body = self._body
        if body is not None:
            h1.write(body)
            h1.finish()
            return
        producer = self.request.body_producer
        assert producer is not None
        frame = self._frame_chunks

        def write(chunk: bytes) -> Awaitable[None]:
            if not isinstance(chunk, bytes):
                raise TypeError(f"body_producer must write bytes, got {type(chunk).__name__}")
            if frame and chunk:
                chunk = b"%x\r\n%b\r\n" % (len(chunk), chunk)
            return h1.write(chunk)

        result = producer(write)
        if result is not None:
            await result
        if frame:
            h1.write(b"0\r\n\r\n")
        h1.finish()

    # -- httputil.HTTPMessageDelegate: the response ---------------------------

    def headers_received(
        self,
        start_line: Union[httputil.RequestStartLine, httputil.ResponseStartLine],
        headers: httputil.HTTPHeaders,
    ) -> Optional[Awaitable[None]]:
        assert isinstance(start_line, httputil.ResponseStartLine)
        request = self.request
        code = start_line.code
        if code < 200 and code != 101:
            # Interim: the final response follows.
            if code == 100 and self._body_pending:
                self._body_pending = False
                return self._send_body()
            return None
        self.time_info["starttransfer"] = self.loop.time() - self.queued_at
        self._start_line = start_line
        self._headers = headers
        self._follow = (
            bool(request.follow_redirects)
            and (request.max_redirects or 0) > 0
            and code in _REDIRECT_CODES
            and "Location" in headers
        )
        if not self._follow and request.header_callback is not None:
            request.header_callback(f"{start_line.version} {code} {start_line.reason}\r\n")
            for name, value in headers.get_all():
                request.header_callback(f"{name}: {value}\r\n")
            request.header_callback("\r\n")
        return None

    def data_received(self, chunk: bytes) -> Optional[Awaitable[None]]:
        if self._follow:
            return None
        streaming = self.request.streaming_callback
        if streaming is not None:
            return streaming(chunk)
        self._chunks.append(chunk)
        return None

    def finish(self) -> None:
        self._complete = True

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


def _drop_headers(headers: httputil.HTTPHeaders, names: tuple[str, ...]) -> None:
    for name in names:
        if name in headers:
            del headers[name]


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
