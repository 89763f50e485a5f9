"""A non-blocking, single-threaded HTTP/1.1 server.

`HTTPServer` accepts connections with asyncio and serves each with a fast
`asyncio.Protocol` over httptools (llhttp): keep-alive, pipelining, chunked
bodies both ways, ``Expect: 100-continue``, optional gzip request
decompression, flow control, and safe limits on every part of a request
(see ``squall._http1server`` for each limit and its precedent).

Typical use, with a `squall.web.Application` (or any
`~squall.httputil.HTTPServerConnectionDelegate`, or a plain callable that
takes an `HTTPServerRequest`)::

    server = HTTPServer(app)
    server.listen(8888)
    await asyncio.Event().wait()

or with several processes sharing the port::

    sockets = squall.netutil.bind_sockets(8888)
    squall.process.fork_processes(0)
    server = HTTPServer(app)
    server.add_sockets(sockets)
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from typing import Any, Awaitable, Callable, Optional, Union

from squall import httputil
from squall._http1server import HEADER_TIMEOUT, IDLE_TIMEOUT, _RequestContext, _ServerProtocol
from squall.http1connection import HTTP1ConnectionParameters, HTTP1ServerConnection
from squall.httputil import HTTPServerRequest
from squall.iostream import SSLIOStream
from squall.tcpserver import TCPServer
from squall.util import Configurable

__all__ = ["HTTPServer", "HTTPRequest"]

#: Tornado's old name for `squall.httputil.HTTPServerRequest`.
HTTPRequest = HTTPServerRequest


class HTTPServer(TCPServer, Configurable, httputil.HTTPServerConnectionDelegate):
    r"""An HTTP/1.1 server.

    ``request_callback`` is either an `~squall.httputil.HTTPServerConnectionDelegate`
    (such as `squall.web.Application`), whose ``start_request`` is called
    for each request, or a callable that receives each complete
    `~squall.httputil.HTTPServerRequest` and writes its response through
    ``request.connection`` (``write_headers``, ``write``, ``finish``).

    ``xheaders=True`` takes the client's address from ``X-Real-Ip`` or
    ``X-Forwarded-For`` and the scheme from ``X-Scheme`` or
    ``X-Forwarded-Proto``: use it only behind a reverse proxy that sets
    them. Addresses listed in ``trusted_downstream`` (further proxies of
    yours) are skipped when reading ``X-Forwarded-For`` from the right.
    ``protocol`` forces `~squall.httputil.HTTPServerRequest.protocol` (e.g.
    ``"https"`` behind a TLS-terminating proxy that sets no header).

    ``ssl_options`` (an `ssl.SSLContext`, or a dict of `ssl.wrap_socket`
    arguments with at least ``certfile`` and ``keyfile``) serves HTTPS: the
    event loop's TLS layer does each connection's handshake, then the same
    protocol as for HTTP serves it (requests say ``protocol == "https"``;
    `~squall.httputil.HTTPServerRequest.get_ssl_certificate` gives the
    client's certificate when the context asks for one). A handshake that
    fails with a TLS error (a plain-HTTP client, a refused certificate) is
    logged once, as a warning without a traceback.

    ``decompress_request=True`` decodes ``Content-Encoding: gzip`` request
    bodies (never beyond ``max_body_size``, so a small "zip bomb" cannot
    exhaust memory). ``chunk_size`` caps each piece of body passed to a
    streaming handler; ``max_header_size`` (64 KiB) and ``max_body_size``
    (100 MB) cap a request's head and body (answered 431 and 413);
    ``idle_connection_timeout`` (75 s) closes keep-alive connections left
    idle; ``body_timeout`` limits the time a body may take to arrive.
    ``no_keep_alive=True`` closes each connection after one response.
    ``max_buffer_size`` is accepted for compatibility (the protocol
    buffers at most one read at a time).

    The server is a `~squall.tcpserver.TCPServer`: start it with `listen`,
    `add_sockets`, or ``bind`` and ``start``; stop accepting with ``stop``
    and drop open connections with `close_all_connections`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Configurable.__new__ has already called initialize(); TCPServer's
        # __init__ must not run a second time.
        pass

    def initialize(
        self,
        request_callback: Union[
            httputil.HTTPServerConnectionDelegate,
            Callable[[httputil.HTTPServerRequest], None],
        ],
        no_keep_alive: bool = False,
        xheaders: bool = False,
        ssl_options: Union[dict[str, Any], ssl.SSLContext, None] = None,
        protocol: Optional[str] = None,
        decompress_request: bool = False,
        chunk_size: Optional[int] = None,
        max_header_size: Optional[int] = None,
        idle_connection_timeout: Optional[float] = None,
        body_timeout: Optional[float] = None,
        max_body_size: Optional[int] = None,
        max_buffer_size: Optional[int] = None,
        trusted_downstream: Optional[list[str]] = None,
    ) -> None:
        if not callable(request_callback) and not isinstance(
            request_callback, httputil.HTTPServerConnectionDelegate
        ):
            raise TypeError(
                "request_callback must be an HTTPServerConnectionDelegate or a callable,"
                f" got {request_callback!r}"
            )
        if protocol is not None and protocol not in ("http", "https"):
            raise ValueError(f"protocol must be 'http', 'https' or None, got {protocol!r}")
        if idle_connection_timeout is not None and idle_connection_timeout <= 0:
            raise ValueError(
                f"idle_connection_timeout must be positive, got {idle_connection_timeout!r}"
            )
        self.request_callback = request_callback
        self.xheaders = xheaders
        self.protocol = protocol
        self._idle_timeout = idle_connection_timeout or IDLE_TIMEOUT
        self.conn_params = HTTP1ConnectionParameters(
            decompress=decompress_request,
            chunk_size=chunk_size,
            max_header_size=max_header_size,
            # As in Tornado, a connection may not take longer to send a
            # request head than it may stay idle.
            header_timeout=min(HEADER_TIMEOUT, self._idle_timeout),
            body_timeout=body_timeout,
            max_body_size=max_body_size,
            no_keep_alive=no_keep_alive,
        )
        TCPServer.__init__(
            self,
            ssl_options=ssl_options,
            max_buffer_size=max_buffer_size,
            read_chunk_size=chunk_size,
        )
        self._connections: set[Any] = set()
        self.trusted_downstream = set(trusted_downstream or [])
        # What the protocol reads for each connection's context.
        self._http_protocol = protocol
        # What each connection calls to start a request: straight into the
        # application when there is nothing to wrap (one call fewer each).
        if xheaders:
            self._start_request = self.start_request
        elif isinstance(request_callback, httputil.HTTPServerConnectionDelegate):
            self._start_request = request_callback.start_request
        else:
            self._start_request = functools.partial(_CallableAdapter, request_callback)

    @classmethod
    def configurable_base(cls) -> type[Configurable]:
        return HTTPServer

    @classmethod
    def configurable_default(cls) -> type[Configurable]:
        return HTTPServer

    async def close_all_connections(self) -> None:
        """Close every open connection and wait until they are closed.

        Requests in progress see ``on_connection_close``. Call ``stop``
        first so that no new connections arrive meanwhile.
        """
        while self._connections:
            conn = next(iter(self._connections))
            self._connections.discard(conn)
            await conn.close()

    def _make_protocol(self) -> asyncio.BaseProtocol:
        # With ssl_options, TCPServer gives this protocol to the loop's TLS
        # layer, which connects it once the handshake is done: HTTPS is
        # served by the same protocol as HTTP, over a transport that
        # encrypts (the protocol sees its ``sslcontext`` and says "https").
        return _ServerProtocol(self, self.conn_params, self._idle_timeout)

    def handle_stream(self, stream: Any, address: Any) -> None:
        """Serve HTTP on an already-connected `~squall.iostream.IOStream`
        (for code that accepts connections itself, e.g. to sniff a
        protocol, and hands the HTTP ones over). Connections this server
        accepts never come here: they are served by its own protocol."""
        context = _RequestContext(
            address,
            getattr(stream.socket, "family", None),
            self.protocol,
            isinstance(stream, SSLIOStream),
            self.trusted_downstream,
        )
        conn = HTTP1ServerConnection(stream, self.conn_params, context)
        self._connections.add(conn)
        conn.start_serving(self)

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        if isinstance(self.request_callback, httputil.HTTPServerConnectionDelegate):
            delegate = self.request_callback.start_request(server_conn, request_conn)
        else:
            delegate = _CallableAdapter(self.request_callback, server_conn, request_conn)
        if self.xheaders:
            delegate = _ProxyAdapter(delegate, request_conn)
        return delegate

    def on_close(self, server_conn: object) -> None:
        self._connections.discard(server_conn)


class _CallableAdapter(httputil.HTTPMessageDelegate):
    """Collects a request for a plain ``request_callback(request)``."""

    # Class-level defaults: __init__ sets only what each request has.
    _request: Optional[HTTPServerRequest] = None
    _chunks: Optional[list[bytes]] = None

    def __init__(
        self,
        callback: Callable[[HTTPServerRequest], Any],
        server_conn: object,
        connection: httputil.HTTPConnection,
    ) -> None:
        self._callback = callback
        self._connection = connection
        self._server_conn = server_conn

    def headers_received(
        self,
        start_line: Union[httputil.RequestStartLine, httputil.ResponseStartLine],
        headers: httputil.HTTPHeaders,
    ) -> Optional[Awaitable[None]]:
        self._request = HTTPServerRequest(
            connection=self._connection,
            server_connection=self._server_conn,
            start_line=start_line,  # type: ignore[arg-type]
            headers=headers,
        )
        return None

    def data_received(self, chunk: bytes) -> Optional[Awaitable[None]]:
        if self._chunks is None:
            self._chunks = [chunk]
        else:
            self._chunks.append(chunk)
        return None

    def finish(self) -> None:
        request = self._request
        assert request is not None
        if self._chunks is not None:
            request.body = b"".join(self._chunks)
            self._chunks = None
            request._parse_body()
        self._callback(request)

    def on_connection_close(self) -> None:
        self._request = None
        self._chunks = None


class _ProxyAdapter(httputil.HTTPMessageDelegate):
    """Applies ``X-Real-Ip`` / ``X-Forwarded-*`` to the connection's context
    for the duration of one request."""

    __slots__ = ("_delegate", "_connection")

    def __init__(
        self, delegate: httputil.HTTPMessageDelegate, connection: httputil.HTTPConnection
    ) -> None:
        self._delegate = delegate
        self._connection = connection

    def headers_received(
        self,
        start_line: Union[httputil.RequestStartLine, httputil.ResponseStartLine],
        headers: httputil.HTTPHeaders,
    ) -> Optional[Awaitable[None]]:
        self._connection.context._apply_xheaders(headers)  # type: ignore[attr-defined]
        return self._delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Optional[Awaitable[None]]:
        return self._delegate.data_received(chunk)

    def finish(self) -> None:
        self._delegate.finish()
        self._connection.context._unapply_xheaders()  # type: ignore[attr-defined]

    def on_connection_close(self) -> None:
        self._delegate.on_connection_close()
        self._connection.context._unapply_xheaders()  # type: ignore[attr-defined]
