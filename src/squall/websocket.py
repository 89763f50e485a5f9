"""WebSocket (RFC 6455) server handlers and client connections, with
permessage-deflate compression (RFC 7692).

A server endpoint is a `WebSocketHandler` in the application's URL rules::

    class EchoWebSocket(WebSocketHandler):
        def open(self):
            print("WebSocket opened")

        def on_message(self, message):
            self.write_message("You said: " + message)

        def on_close(self):
            print("WebSocket closed")

A client is `websocket_connect`::

    conn = await websocket_connect("ws://localhost:8888/echo")
    await conn.write_message("hello")
    reply = await conn.read_message()  # None once the connection closed

After the handshake a connection leaves the HTTP server altogether: its
asyncio transport is handed to a `WebSocketProtocol13`, an
`asyncio.Protocol` that parses frames with ``squall._wsproto`` and calls
the handler, with no stream object or task per connection. Messages are
delivered in order: while an ``on_message`` coroutine runs, the next
message waits (and reading pauses). A peer that breaks the protocol is
answered with the matching close code (1002, 1007 or 1009) and logged once
on ``squall.general``, without a traceback.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import collections
import functools
import logging
import os
import socket
import ssl
import sys
import urllib.parse
from collections.abc import Awaitable
from typing import Any, Callable, Optional, Union

from squall import _wsproto, gen, httputil
from squall._wsproto import BINARY, CLOSE, PING, PONG, TEXT, ProtocolError
from squall.escape import json_encode, utf8
from squall.httpclient import HTTPClientError, HTTPRequest, _RequestProxy
from squall.ioloop import IOLoop
from squall.log import app_log, gen_log
from squall.netutil import Resolver
from squall.simple_httpclient import HTTPStreamClosedError, HTTPTimeoutError
from squall.web import RequestHandler

__all__ = [
    "WebSocketClientConnection",
    "WebSocketClosedError",
    "WebSocketError",
    "WebSocketHandler",
    "WebSocketProtocol",
    "WebSocketProtocol13",
    "websocket_connect",
]

# --- Tornado's per-direction deflate objects ---------------------------------
#
# Tornado exposes one compressor and one decompressor object per direction;
# code and tests written against it build them directly. squall's connections
# use `_wsproto.PerMessageDeflate`, which these wrap (server side: the
# compressor sends with the server_* parameters, the decompressor reads with
# the client_* ones).


class _DecompressTooLargeError(Exception):
    """A compressed message inflated past ``max_message_size``."""


class _PerMessageDeflateCompressor:
    """Compresses the messages of one direction (RFC 7692).

    ``persistent`` keeps the compression context between messages (context
    takeover); ``max_wbits`` is the window size in bits (None: 15).
    """

    def __init__(
        self,
        persistent: bool,
        max_wbits: Optional[int],
        compression_options: Optional[dict[str, Any]] = None,
    ) -> None:
        params = _wsproto.DeflateParams(
            server_no_context_takeover=not persistent, server_max_window_bits=max_wbits
        )
        self._deflate = _wsproto.PerMessageDeflate(params, client=False, options=compression_options)

    def compress(self, data: bytes) -> bytes:
        return self._deflate.compress(data)


class _PerMessageDeflateDecompressor:
    """Decompresses the messages of one direction, refusing (with
    `_DecompressTooLargeError`) any that inflates past ``max_message_size``
    without inflating the rest of it."""

    def __init__(
        self,
        persistent: bool,
        max_wbits: Optional[int],
        max_message_size: int,
        compression_options: Optional[dict[str, Any]] = None,
    ) -> None:
        params = _wsproto.DeflateParams(
            client_no_context_takeover=not persistent, client_max_window_bits=max_wbits
        )
        self._deflate = _wsproto.PerMessageDeflate(params, client=False, options=compression_options)
        self._max_message_size = max_message_size

    def decompress(self, data: bytes) -> bytes:
        out = self._deflate.decompress(data, self._max_message_size, last=True)
        if len(out) > self._max_message_size:
            self._deflate.abandon_message()
            raise _DecompressTooLargeError()
        return out


# --- Limits -------------------------------------------------------------------

# Largest message accepted unless the application says otherwise (the
# ``websocket_max_message_size`` setting): Tornado's default, 10 MiB.
DEFAULT_MAX_MESSAGE_SIZE = _wsproto.DEFAULT_MAX_MESSAGE_SIZE
# After sending a close frame, wait this long for the peer's before dropping
# the connection: Tornado's closing-handshake timeout.
CLOSE_TIMEOUT = 5.0
# Messages handled in one go before yielding to the event loop, so that a
# burst of small frames that arrived together cannot starve other
# connections (a fair share, as a socket read is for the HTTP server).
EVENTS_PER_TURN = 64
# Largest response head a client accepts (Tornado's max_header_size).
MAX_RESPONSE_HEAD = 65536
# Messages a client buffers for `WebSocketClientConnection.read_message`
# before it stops reading from the server (Tornado buffers one).
CLIENT_READ_BUFFER = 16
# Distinct peer-error messages remembered by `de_dupe_gen_log`.
_DEDUPE_LOG_SIZE = 256

_WEBSOCKET_VERSIONS = ("7", "8", "13")


class WebSocketError(Exception):
    """A WebSocket handshake or protocol failure on the client side."""


class WebSocketClosedError(WebSocketError):
    """Raised by operations on a closed connection (for example
    ``write_message`` after ``close``)."""


@functools.lru_cache(maxsize=_DEDUPE_LOG_SIZE)
def de_dupe_gen_log(level: int, msg: str, *args: Any) -> None:
    """Log ``msg % args`` on ``squall.general`` at ``level`` the first time
    it is seen; repeats (among the last 256 distinct messages) are dropped,
    so a misbehaving client population cannot flood the log."""
    gen_log.log(level, msg, *args)


class _WebSocketParams:
    """Settings of one connection, resolved once at the handshake."""

    __slots__ = ("ping_interval", "ping_timeout", "max_message_size", "compression_options")

    def __init__(
        self,
        ping_interval: Optional[float] = None,
        ping_timeout: Optional[float] = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        compression_options: Optional[dict[str, Any]] = None,
    ) -> None:
        for name, value in (("ping_interval", ping_interval), ("ping_timeout", ping_timeout)):
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"{name} must be a non-negative number or None, got {value!r}")
        if not isinstance(max_message_size, int) or max_message_size < 0:
            raise ValueError(f"max_message_size must be a non-negative int, got {max_message_size!r}")
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_message_size = max_message_size
        self.compression_options = compression_options


# --- Server side ----------------------------------------------------------------


class WebSocketHandler(RequestHandler):
    """Subclass this class to create a basic WebSocket handler.

    Override `on_message` to handle incoming messages, and use
    `write_message` to send messages to the client. Override `open` and
    `on_close` for the connection's start and end. `select_subprotocol`
    picks a subprotocol, `get_compression_options` enables
    permessage-deflate, and `check_origin` decides which web pages may
    connect (by default only pages of the same host; others get 403).

    The handshake is a GET: a request that is not a WebSocket upgrade is
    answered 400, one with a ``Sec-WebSocket-Version`` other than 13 (or
    the drafts 7 and 8) 426. ``prepare`` runs before it, so it can
    authenticate, and may send an error instead.

    Once the connection is open, the HTTP methods of `RequestHandler` that
    build a response (``write``, ``set_header``, ``finish``, ...) raise
    `RuntimeError`. Application settings ``websocket_ping_interval``,
    ``websocket_ping_timeout`` and ``websocket_max_message_size`` apply to
    every handler (see `ping_interval`, `ping_timeout`, `max_message_size`).
    """

    # Class-level defaults: RequestHandler.__init__ calls set_default_headers
    # (which may call set_header) before ours runs.
    ws_connection: Optional["WebSocketProtocol"] = None

    def __init__(self, application: Any, request: httputil.HTTPServerRequest, **kwargs: Any) -> None:
        super().__init__(application, request, **kwargs)
        self.ws_connection: Optional[WebSocketProtocol] = None
        self.close_code: Optional[int] = None
        self.close_reason: Optional[str] = None
        self._on_close_called = False

    def get(self, *args: Any, **kwargs: Any) -> None:
        """Perform the WebSocket handshake, then call `open`."""
        self.open_args = args
        self.open_kwargs = kwargs
        headers = self.request.headers
        if headers.get("Upgrade", "").lower() != "websocket":
            self._refuse(400, 'Can "Upgrade" only to "WebSocket".')
            return
        if "upgrade" not in (t.strip().lower() for t in headers.get("Connection", "").split(",")):
            self._refuse(400, '"Connection" must be "Upgrade".')
            return
        origin = headers.get("Origin", headers.get("Sec-Websocket-Origin"))
        if origin is not None and not self.check_origin(origin):
            self._refuse(403, "Cross origin websockets not allowed")
            return
        protocol = self.get_websocket_protocol()
        if protocol is None:
            self.set_header("Sec-WebSocket-Version", "7, 8, 13")
            self._refuse(426, "Upgrade Required")
            return
        if not _wsproto.is_valid_key(headers.get("Sec-WebSocket-Key", "")):
            self._refuse(400, "Missing/Invalid WebSocket headers")
            return
        protocol.accept_connection(self)

    def _refuse(self, status: int, message: str) -> None:
        self.set_status(status)
        gen_log.debug("%s: %s", self._request_summary(), message)
        self.finish(message)

    def check_origin(self, origin: str) -> bool:
        """Whether to accept a connection from a page at ``origin`` (the
        ``Origin`` header; only called when there is one, so non-browser
        clients are accepted).

        Browsers let any page open a WebSocket to any server, with the
        user's cookies, so the default accepts only: requests the browser
        marks ``Sec-Fetch-Site: same-origin``; origins for which
        `check_trusted_origin` is true (the ``trusted_origins`` setting);
        and, when the browser sent no ``Sec-Fetch-Site``, an origin whose
        host and port equal the request's ``Host``. Override it to return
        True to accept every origin, or with your own policy; it runs after
        ``prepare``, so it can use what ``prepare`` found out.
        """
        headers = self.request.headers
        site = headers.get("Sec-Fetch-Site")
        if site == "same-origin":
            return True
        if self.check_trusted_origin(origin):
            return True
        if site is not None:
            return False
        netloc = urllib.parse.urlsplit(origin).netloc.lower()
        return bool(netloc) and netloc == headers.get("Host", "").lower()

    def select_subprotocol(self, subprotocols: list[str]) -> Optional[str]:
        """Pick one of the subprotocols the client offered
        (``Sec-WebSocket-Protocol``; an empty list if none), or None for
        none. The default picks none. Returning a name that was not offered
        raises `ValueError`."""
        return None

    @property
    def selected_subprotocol(self) -> Optional[str]:
        """The subprotocol `select_subprotocol` picked, once open."""
        assert self.ws_connection is not None
        return self.ws_connection.selected_subprotocol

    def get_compression_options(self) -> Optional[dict[str, Any]]:
        """Return None (the default) to refuse compression, or a dict to
        accept permessage-deflate when the client offers it. Keys:
        ``compression_level`` (zlib level, default 6) and ``mem_level``
        (zlib memLevel 1-9, default 8; lower saves memory per connection).
        """
        return None

    @property
    def ping_interval(self) -> Optional[float]:
        """Seconds between pings to the client (setting
        ``websocket_ping_interval``); None or 0 sends none."""
        return self.settings.get("websocket_ping_interval", None)

    @property
    def ping_timeout(self) -> Optional[float]:
        """Seconds to wait for the pong before closing the connection
        (setting ``websocket_ping_timeout``); None means `ping_interval`,
        0 never times out."""
        return self.settings.get("websocket_ping_timeout", None)

    @property
    def max_message_size(self) -> int:
        """Largest message accepted, in bytes after decompression (setting
        ``websocket_max_message_size``, default 10 MiB); a bigger one
        closes the connection with code 1009."""
        return self.settings.get("websocket_max_message_size", DEFAULT_MAX_MESSAGE_SIZE)  # type: ignore[no-any-return]

    def open(self, *args: Any, **kwargs: Any) -> Optional[Awaitable[None]]:
        """Called when the connection is open, with the URL rule's
        captured groups. May be a coroutine: messages that arrive meanwhile
        wait until it is done."""
        return None

    def on_message(self, message: Union[str, bytes]) -> Optional[Awaitable[None]]:
        """Handle a message: `str` for text, `bytes` for binary. May be a
        coroutine: the next message is not delivered until it is done. An
        exception is logged and closes the connection."""
        raise NotImplementedError

    def write_message(
        self, message: Union[bytes, str, dict[str, Any]], binary: bool = False
    ) -> "asyncio.Future[None]":
        """Send ``message``: text for `str` (a `dict` is sent as JSON), or
        binary if ``binary`` is true. Returns a future that is done once the
        data has been handed to the network; awaiting it gives flow
        control. Raises `WebSocketClosedError` if the connection is closed.
        """
        connection = self.ws_connection
        if connection is None:
            raise WebSocketClosedError()
        return connection.write_message(message, binary)

    def ping(self, data: Union[str, bytes] = b"") -> None:
        """Send a ping (at most 125 bytes, else `ValueError`); the answer
        arrives in `on_pong`. Raises `WebSocketClosedError` when closed."""
        data = utf8(data)
        if self.ws_connection is None or self.ws_connection.is_closing():
            raise WebSocketClosedError()
        self.ws_connection.write_ping(data)

    def on_ping(self, data: bytes) -> None:
        """Called with each ping's data (the pong is sent automatically)."""

    def on_pong(self, data: bytes) -> None:
        """Called with each pong's data."""

    def on_close(self) -> None:
        """Called once when the connection closes, whoever closed it;
        `close_code` and `close_reason` hold the client's close frame."""

    def close(self, code: Optional[int] = None, reason: Optional[str] = None) -> None:
        """Start the closing handshake. ``code`` is a close code (1000
        when only ``reason`` is given); ``reason`` a short text. Does
        nothing if already closing."""
        if self.ws_connection is not None:
            self.ws_connection.close(code, reason)
            self.ws_connection = None

    def set_nodelay(self, value: bool) -> None:
        """Send small messages at once (TCP_NODELAY, the default for asyncio
        connections) or let the kernel coalesce them (False)."""
        assert self.ws_connection is not None
        self.ws_connection.set_nodelay(value)

    def get_websocket_protocol(self) -> Optional["WebSocketProtocol"]:
        """The protocol for the client's ``Sec-WebSocket-Version``, or None
        (then the handshake is answered 426)."""
        if self.request.headers.get("Sec-WebSocket-Version") not in _WEBSOCKET_VERSIONS:
            return None
        params = _WebSocketParams(
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            max_message_size=self.max_message_size,
            compression_options=self.get_compression_options(),
        )
        return WebSocketProtocol13(self, mask_outgoing=False, params=params)

    def on_connection_close(self) -> None:
        """Called when the connection is lost (before or after the
        handshake); calls `on_close` once."""
        if self.ws_connection is not None:
            self.ws_connection.on_connection_close()
            self.ws_connection = None
        if not self._on_close_called:
            self._on_close_called = True
            self.on_close()

    def on_ws_connection_close(
        self, close_code: Optional[int] = None, close_reason: Optional[str] = None
    ) -> None:
        """Record the close code and reason, then `on_connection_close`."""
        self.close_code = close_code
        self.close_reason = close_reason
        self.on_connection_close()

    # A response is built by the handshake only; afterwards these have no
    # meaning on the connection.
    def _not_for_websockets(self) -> None:
        if self.ws_connection is not None:
            raise RuntimeError("Method not supported for Web Sockets")

    def write(self, chunk: Union[str, bytes, dict[str, Any]]) -> None:
        self._not_for_websockets()
        super().write(chunk)

    def redirect(self, url: str, permanent: bool = False, status: Optional[int] = None) -> None:
        self._not_for_websockets()
        super().redirect(url, permanent, status)

    def set_header(self, name: str, value: Any) -> None:
        self._not_for_websockets()
        super().set_header(name, value)

    def set_cookie(self, name: str, value: Union[str, bytes], *args: Any, **kwargs: Any) -> None:
        self._not_for_websockets()
        super().set_cookie(name, value, *args, **kwargs)

    def set_status(self, status_code: int, reason: Optional[str] = None) -> None:
        self._not_for_websockets()
        super().set_status(status_code, reason)

    def flush(self, include_footers: bool = False) -> "asyncio.Future[None]":
        self._not_for_websockets()
        return super().flush(include_footers)

    def finish(self, chunk: Optional[Union[str, bytes, dict[str, Any]]] = None) -> "asyncio.Future[None]":
        self._not_for_websockets()
        return super().finish(chunk)

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        if self.ws_connection is None:
            super().send_error(status_code, **kwargs)
        else:
            # After the handshake an error page cannot be sent: drop the
            # connection (the exception has been logged).
            self.ws_connection._abort()


# --- The protocol -------------------------------------------------------------


class WebSocketProtocol(abc.ABC):
    """Base class for WebSocket protocol versions."""

    __slots__ = ("handler", "stream", "client_terminated", "server_terminated")

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.stream: Optional[asyncio.Transport] = None
        self.client_terminated = False
        self.server_terminated = False

    @abc.abstractmethod
    def accept_connection(self, handler: WebSocketHandler) -> None:
        """Answer the handshake request of ``handler`` and take over its
        connection."""

    @abc.abstractmethod
    def write_message(self, message: Union[str, bytes, dict[str, Any]], binary: bool = False) -> "asyncio.Future[None]":
        """Send a message (see `WebSocketHandler.write_message`); raises
        `WebSocketClosedError` once `is_closing`."""

    @abc.abstractmethod
    def write_ping(self, data: bytes) -> None:
        """Send a ping frame."""

    @abc.abstractmethod
    def close(self, code: Optional[int] = None, reason: Optional[str] = None) -> None:
        """Start the closing handshake."""

    @abc.abstractmethod
    def is_closing(self) -> bool:
        """Whether the connection is closing or closed."""

    @abc.abstractmethod
    def on_connection_close(self) -> None:
        """The owner learnt the connection closed."""

    @abc.abstractmethod
    def set_nodelay(self, x: bool) -> None:
        """Set TCP_NODELAY on the connection."""

    @abc.abstractmethod
    def start_pinging(self) -> None:
        """Start the periodic pings, if configured."""

    @property
    @abc.abstractmethod
    def selected_subprotocol(self) -> Optional[str]:
        """The agreed subprotocol, if any."""


class WebSocketProtocol13(WebSocketProtocol, asyncio.Protocol):
    """Implementation of the WebSocket protocol from RFC 6455, as the
    `asyncio.Protocol` of the connection's transport.

    ``handler`` is the `WebSocketHandler` (server) or the
    `WebSocketClientConnection` (client) whose ``on_message``, ``on_ping``,
    ``on_pong`` and ``on_ws_connection_close`` it calls. ``mask_outgoing``
    is true on the client side. ``stream`` is the asyncio transport.
    ``close_code`` and ``close_reason`` are those of the peer's close frame.
    """

    FIN = _wsproto.FIN
    RSV1 = _wsproto.RSV1
    RSV2 = _wsproto.RSV2
    RSV3 = _wsproto.RSV3
    RSV_MASK = _wsproto.RSV_MASK
    OPCODE_MASK = _wsproto.OPCODE_MASK

    # Slots keep an idle connection small; ``__dict__`` (created only when
    # used) still lets code and tests wrap methods on an instance.
    __slots__ = (
        "mask_outgoing",
        "params",
        "close_code",
        "close_reason",
        "_core",
        "_subprotocol",
        "_blocked",
        "_writing_paused",
        "_drain_waiters",
        "_done",
        "_close_timer",
        "_ping_timer",
        "_last_ping",
        "_last_pong",
        "_pong_future",
        "_pending_pong",
        "_lost",
        "_loop",
        "_out",
        "__dict__",
    )

    def __init__(self, handler: Any, mask_outgoing: bool, params: _WebSocketParams) -> None:
        WebSocketProtocol.__init__(self, handler)
        self.mask_outgoing = mask_outgoing
        self.params = params
        self.close_code: Optional[int] = None
        self.close_reason: Optional[str] = None
        self._core = _wsproto.Connection(client=mask_outgoing, max_message_size=params.max_message_size)
        self._subprotocol: Optional[str] = None
        # What stops frames being handled: an awaitable from a callback, or
        # True while yielding to the loop; None when free to go on.
        self._blocked: Any = None
        self._writing_paused = False
        self._drain_waiters: Optional[list[asyncio.Future[None]]] = None
        self._done: Optional[asyncio.Future[None]] = None
        self._close_timer: Optional[asyncio.TimerHandle] = None
        self._ping_timer: Optional[asyncio.TimerHandle] = None
        self._last_ping = 0.0
        self._last_pong = 0.0
        self._pong_future: Optional[asyncio.Future[None]] = None
        self._pending_pong: Optional[bytes] = None
        self._lost = False
        self._loop = asyncio.get_running_loop()
        # While frames are being handled, what the callbacks write is
        # gathered here and sent in one transport.write() (one syscall).
        self._out: Optional[list[bytes]] = None

    # -- Tornado's counters, for measuring compression ----------------------

    @property
    def _message_bytes_in(self) -> int:
        return self._core.message_bytes_in

    @property
    def _message_bytes_out(self) -> int:
        return self._core.message_bytes_out

    @property
    def _wire_bytes_in(self) -> int:
        return self._core.wire_bytes_in

    @property
    def _wire_bytes_out(self) -> int:
        return self._core.wire_bytes_out

    @staticmethod
    def compute_accept_value(key: Union[str, bytes]) -> str:
        """The ``Sec-WebSocket-Accept`` value for ``Sec-WebSocket-Key`` ``key``."""
        return _wsproto.accept_value(key)

    @property
    def selected_subprotocol(self) -> Optional[str]:
        return self._subprotocol

    @selected_subprotocol.setter
    def selected_subprotocol(self, value: Optional[str]) -> None:
        self._subprotocol = value

    @property
    def ping_interval(self) -> float:
        """Seconds between our pings (0: none)."""
        return self.params.ping_interval or 0

    @property
    def ping_timeout(self) -> float:
        """Seconds a pong may take before we close (0: forever); defaults
        to `ping_interval`."""
        timeout = self.params.ping_timeout
        return self.ping_interval if timeout is None else timeout

    @staticmethod
    def ping_sleep_time(*, last_ping_time: float, interval: float, now: float) -> float:
        """Seconds from ``now`` until the ping due ``interval`` after
        ``last_ping_time`` (0 if overdue)."""
        return max(0.0, last_ping_time + interval - now)

    # -- Handshake (server side) --------------------------------------------

    def accept_connection(self, handler: WebSocketHandler) -> None:
        headers = handler.request.headers
        offered = [s.strip() for s in headers.get("Sec-WebSocket-Protocol", "").split(",") if s.strip()]
        subprotocol = handler.select_subprotocol(offered)
        if subprotocol is not None:
            if subprotocol not in offered:
                raise ValueError(
                    f"select_subprotocol returned {subprotocol!r}, which the client did not offer ({offered!r})"
                )
            handler.set_header("Sec-WebSocket-Protocol", subprotocol)
            self._subprotocol = subprotocol
        options = self.params.compression_options
        if options is not None:
            agreed = _wsproto.negotiate_deflate(headers.get("Sec-WebSocket-Extensions", ""), options)
            if agreed is not None:
                handler.set_header("Sec-WebSocket-Extensions", agreed.header_value())
                self._core._deflate = _wsproto.PerMessageDeflate(agreed, client=False, options=options)
        handler.set_status(101)
        handler.set_header("Upgrade", "websocket")
        handler.set_header("Connection", "Upgrade")
        handler.set_header("Sec-WebSocket-Accept", _wsproto.accept_value(headers["Sec-WebSocket-Key"]))
        handler.finish()
        connection = handler.request.connection
        transport, tail = connection._detach_transport()  # type: ignore[union-attr]
        handler.ws_connection = self
        self._attach(transport)
        if self._lost:
            return
        self.start_pinging()
        self._blocked = True
        try:
            opened = handler.open(*handler.open_args, **handler.open_kwargs)
        except BaseException:
            self._callback_failed(sys.exc_info())
            return
        if tail:
            self._core.receive_data(tail)
        if opened is not None:
            self._block_on(opened)
        else:
            self._blocked = None
            self.data_received(b"")

    def _attach(self, transport: asyncio.Transport) -> None:
        self.stream = transport
        if transport.is_closing():
            self._lost = True
            self._notify_closed()
            return
        transport.set_protocol(self)

    # -- asyncio.Protocol ------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Take bytes from the transport and handle the frames complete so
        far, until a callback makes us wait. Called with no bytes, it
        handles what is already buffered (after a wait is over)."""
        core = self._core
        core.receive_data(data)
        if self._blocked is not None:
            return
        handler = self.handler
        budget = EVENTS_PER_TURN
        # A callback whose awaitable was already done brings us back here
        # from inside this loop: keep gathering into the outer call's list.
        nested = self._out is not None
        if not nested:
            self._out = []
        try:
            while True:
                try:
                    event = core.next_event()
                except ProtocolError as e:
                    self._protocol_failed(e)
                    return
                if event is None:
                    return
                opcode, message = event
                try:
                    # _handle_message's first case, inlined for messages.
                    if opcode == TEXT or opcode == BINARY:
                        result = handler.on_message(message)
                    else:
                        result = self._handle_message(opcode, message)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException:
                    # Logged, and the connection dropped: nothing more is
                    # delivered.
                    self._callback_failed(sys.exc_info())
                    return
                if result is not None:
                    self._block_on(result)
                    return
                if not core._buf:
                    # All parsed (the parser drops a consumed buffer): no
                    # need to ask it for the None that ends the loop.
                    return
                budget -= 1
                if budget == 0:
                    # Let other connections run; carry on in the next turn.
                    self._blocked = True
                    self._pause_reading()
                    self._loop.call_soon(self._unblock, None)
                    return
        finally:
            if not nested:
                # _flush(), inlined: the replies to this read in one write.
                out = self._out
                self._out = None
                if out:
                    transport = self.stream
                    assert transport is not None
                    if not transport.is_closing():
                        transport.write(out[0] if len(out) == 1 else b"".join(out))

    def eof_received(self) -> Optional[bool]:
        # The peer will send nothing more: close our side too.
        return None

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self._lost:
            return
        self._lost = True
        self.client_terminated = self.server_terminated = True
        for timer in (self._close_timer, self._ping_timer):
            if timer is not None:
                timer.cancel()
        self._close_timer = self._ping_timer = None
        waiters = self._drain_waiters
        self._drain_waiters = None
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(WebSocketClosedError())
                    waiter.exception()  # a write nobody awaits must not warn
        self._notify_closed()

    def _notify_closed(self) -> None:
        handler = self.handler
        try:
            handler.on_ws_connection_close(self.close_code, self.close_reason)
        except Exception:
            app_log.error("Exception in on_close", exc_info=True)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiters = self._drain_waiters
        self._drain_waiters = None
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    # -- Receiving -------------------------------------------------------------

    def _flush(self) -> None:
        out = self._out
        if out:
            transport = self.stream
            assert transport is not None
            if not transport.is_closing():
                transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _handle_message(self, opcode: int, data: Any) -> Optional[Awaitable[Any]]:
        """Act on one event from the frame parser; returns what the
        handler's callback returned (an awaitable holds back the next
        message)."""
        handler = self.handler
        if opcode == TEXT or opcode == BINARY:
            return handler.on_message(data)  # type: ignore[no-any-return]
        if opcode == PING:
            if not self.server_terminated:
                self._send_pong(data)
            callback = handler.on_ping
        elif opcode == PONG:
            self._last_pong = self._loop.time()
            callback = handler.on_pong
        else:
            assert opcode == CLOSE
            self.client_terminated = True
            self.close_code, self.close_reason = data
            # Answer with the same code (RFC 6455 section 5.5.1), then the
            # handshake is complete and the transport closes.
            self.close(self.close_code)
            return None
        return callback(data)  # type: ignore[no-any-return]

    def _block_on(self, awaitable: Awaitable[Any]) -> None:
        future = gen.convert_yielded(awaitable)
        self._blocked = future
        if future.done():
            self._unblock(future)
            return
        self._pause_reading()
        future.add_done_callback(self._unblock)

    def _unblock(self, future: Optional["asyncio.Future[Any]"]) -> None:
        self._blocked = None
        if future is not None:
            if future.cancelled():
                error: Optional[BaseException] = asyncio.CancelledError()
            else:
                error = future.exception()
            if error is not None:
                self._callback_failed((type(error), error, error.__traceback__))
                return
        if self._lost:
            return
        transport = self.stream
        if transport is not None and not transport.is_closing():
            transport.resume_reading()
        self.data_received(b"")

    def _pause_reading(self) -> None:
        transport = self.stream
        if transport is not None and not transport.is_closing():
            transport.pause_reading()

    def _callback_failed(self, exc_info: Any) -> None:
        try:
            self.handler.log_exception(*exc_info)
        except Exception:
            app_log.error("Error in exception logger", exc_info=True)
        self._abort()

    def _protocol_failed(self, error: ProtocolError) -> None:
        de_dupe_gen_log(logging.DEBUG, "WebSocket protocol error from %s: %s", self._peer(), str(error))
        if not self.server_terminated and not self._lost:
            self.server_terminated = True
            transport = self.stream
            assert transport is not None
            self._flush()
            transport.write(self._core.close(error.code, error.reason))
            # Let the peer read our close frame: stop sending, keep reading
            # (and discarding) until it hangs up or the timeout passes.
            if transport.can_write_eof():
                transport.write_eof()
            self._close_timer = self._loop.call_later(CLOSE_TIMEOUT, self._abort)
        elif not self._lost:
            self._abort()

    def _peer(self) -> str:
        transport = self.stream
        peer = transport.get_extra_info("peername") if transport is not None else None
        return str(peer[0]) if isinstance(peer, tuple) else str(peer)

    def _send_pong(self, data: bytes) -> None:
        # While a pong is still being written, only the latest ping is
        # answered when it is done (RFC 6455 section 5.5.3 allows this).
        if self._pong_future is not None:
            self._pending_pong = data
            return
        future = self._write_frame(True, PONG, data)
        if not future.done():
            self._pong_future = future
            future.add_done_callback(self._pong_written)

    def _pong_written(self, future: "asyncio.Future[None]") -> None:
        self._pong_future = None
        data = self._pending_pong
        if data is not None and not self.server_terminated and not self._lost:
            self._pending_pong = None
            self._send_pong(data)

    # -- Sending ---------------------------------------------------------------

    def _write(self, data: bytes) -> "asyncio.Future[None]":
        transport = self.stream
        if self._lost or transport is None or transport.is_closing():
            raise WebSocketClosedError()
        out = self._out
        if out is not None:
            out.append(data)
        else:
            transport.write(data)
        if self._writing_paused:
            waiter: asyncio.Future[None] = self._loop.create_future()
            if self._drain_waiters is None:
                self._drain_waiters = [waiter]
            else:
                self._drain_waiters.append(waiter)
            return waiter
        done = self._done
        return done if done is not None else self._finished()

    def _finished(self) -> "asyncio.Future[None]":
        # One finished future serves every write that did not have to wait:
        # no allocation per message.
        done = self._done = self._loop.create_future()
        done.set_result(None)
        return done

    def _write_frame(self, fin: bool, opcode: int, data: bytes, flags: int = 0) -> "asyncio.Future[None]":
        """Write a control frame (ping or pong); data frames go through
        `write_message`."""
        if opcode == PONG:
            frame = self._core.pong(data)
        else:
            frame = self._core.ping(data)
        return self._write(frame)

    def write_message(self, message: Union[str, bytes, dict[str, Any]], binary: bool = False) -> "asyncio.Future[None]":
        # is_closing(), inlined: the handler relies on this check.
        if self._lost or self.server_terminated or self.client_terminated:
            raise WebSocketClosedError()
        if isinstance(message, dict):
            message = json_encode(message)
        frame = self._core.message(message, binary)  # type: ignore[arg-type]
        out = self._out
        if out is None or self._writing_paused:
            return self._write(frame)
        # Inside data_received, whose one transport.write() sends it; the
        # transport was open when the read arrived and only our close or
        # abort (which set server_terminated) closes it.
        out.append(frame)
        done = self._done
        return done if done is not None else self._finished()

    def write_ping(self, data: bytes) -> None:
        if self.server_terminated or self._lost:
            raise WebSocketClosedError()
        self._write_frame(True, PING, data)

    def close(self, code: Optional[int] = None, reason: Optional[str] = None) -> None:
        if self._lost:
            return
        transport = self.stream
        assert transport is not None
        if not self.server_terminated:
            if code is None and reason is not None:
                code = 1000
            frame = self._core.close(code, reason or "")
            self.server_terminated = True
            self._flush()
            transport.write(frame)
        if self.client_terminated:
            # Both close frames have crossed: the handshake is complete.
            if self._close_timer is not None:
                self._close_timer.cancel()
                self._close_timer = None
            transport.close()
        elif self._close_timer is None:
            self._close_timer = self._loop.call_later(CLOSE_TIMEOUT, self._abort)
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None

    def _abort(self) -> None:
        """Drop the connection without further ceremony."""
        self.client_terminated = self.server_terminated = True
        transport = self.stream
        if transport is not None and not self._lost:
            self._flush()
            transport.close()

    def is_closing(self) -> bool:
        return self._lost or self.server_terminated or self.client_terminated

    def on_connection_close(self) -> None:
        self._abort()

    def set_nodelay(self, x: bool) -> None:
        transport = self.stream
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if x else 0)

    # -- Pings -----------------------------------------------------------------

    def start_pinging(self) -> None:
        interval = self.ping_interval
        if interval > 0 and not self._lost:
            loop = self._loop
            self._last_ping = self._last_pong = loop.time()
            self._ping_timer = loop.call_later(interval, self.periodic_ping)

    def periodic_ping(self) -> None:
        """Send the next ping and schedule the one after (and, with a
        `ping_timeout`, the check that its pong came back in time)."""
        self._ping_timer = None
        if self.is_closing():
            return
        loop = self._loop
        now = loop.time()
        self._last_ping = now
        self._write_frame(True, PING, b"")
        self._ping_timer = loop.call_later(self.ping_interval, self.periodic_ping)
        timeout = self.ping_timeout
        if timeout > 0:
            loop.call_later(timeout, self._check_pong, now)

    def _check_pong(self, ping_time: float) -> None:
        if self._last_pong < ping_time and not self.is_closing():
            self.close(reason="ping timed out")


# --- Client side ---------------------------------------------------------------


class _ClientHandshake(asyncio.Protocol):
    """Sends the opening handshake and reads the response head, then hands
    the transport to the `WebSocketClientConnection`."""

    def __init__(self, connection: "WebSocketClientConnection", request_bytes: bytes) -> None:
        self._connection = connection
        self._request_bytes = request_bytes
        self._buf = bytearray()
        self._transport: Optional[asyncio.Transport] = None
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        transport.write(self._request_bytes)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        buf = self._buf
        searched = max(0, len(buf) - 3)
        buf += data
        end = buf.find(b"\r\n\r\n", searched)
        if end < 0:
            if len(buf) > MAX_RESPONSE_HEAD:
                self._fail(WebSocketError(f"response head over {MAX_RESPONSE_HEAD} bytes"))
            return
        self._done = True
        head = bytes(buf[:end]).decode("latin-1")
        rest = bytes(buf[end + 4 :])
        self._buf = bytearray()
        first, _, fields = head.partition("\r\n")
        try:
            start_line = httputil.parse_response_start_line(first)
            headers = httputil.HTTPHeaders.parse(fields)
        except httputil.HTTPInputError as e:
            self._fail(WebSocketError(f"malformed handshake response: {e}"))
            return
        assert self._transport is not None
        self._connection._handshake_response(self._transport, start_line, headers, rest)

    def _fail(self, error: BaseException) -> None:
        self._done = True
        self._connection._connect_failed(error)
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if not self._done:
            self._done = True
            self._connection._connect_failed(HTTPStreamClosedError("Stream closed"))


class WebSocketClientConnection:
    """WebSocket client connection. Created by `websocket_connect`, which
    resolves to it once the handshake succeeded.

    `write_message`, `read_message`, `ping` and `close` use it; ``headers``
    holds the handshake response's headers, `selected_subprotocol` the
    subprotocol the server chose, ``close_code`` and ``close_reason`` the
    server's close frame once closed. ``protocol`` is the
    `WebSocketProtocol13` and ``stream`` its asyncio transport.
    """

    # Set once the handshake has succeeded.
    protocol: Optional["WebSocketProtocol13"] = None

    def __init__(
        self,
        request: Any,
        on_message_callback: Optional[Callable[[Union[None, str, bytes]], Any]] = None,
        compression_options: Optional[dict[str, Any]] = None,
        ping_interval: Optional[float] = None,
        ping_timeout: Optional[float] = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        subprotocols: Optional[list[str]] = None,
        resolver: Optional[Resolver] = None,
    ) -> None:
        self.request = request
        self.params = _WebSocketParams(
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_message_size=max_message_size,
            compression_options=compression_options,
        )
        if compression_options is not None:
            # Refuse bad options now rather than at the server's answer.
            _wsproto.deflate_offer(compression_options)
        self.io_loop = IOLoop.current()
        self.connect_future: asyncio.Future[WebSocketClientConnection] = self.io_loop.asyncio_loop.create_future()
        self.stream: Optional[asyncio.Transport] = None
        self.headers: httputil.HTTPHeaders = httputil.HTTPHeaders()
        self.code: Optional[int] = None
        self.reason: Optional[str] = None
        self.close_code: Optional[int] = None
        self.close_reason: Optional[str] = None
        self.key = base64.b64encode(os.urandom(16)).decode("ascii")
        self.read_queue: collections.deque[Union[None, str, bytes]] = collections.deque()
        self._on_message_callback = on_message_callback
        self._subprotocols = list(subprotocols) if subprotocols else []
        self._readers: collections.deque[asyncio.Future[Union[None, str, bytes]]] = collections.deque()
        self._room: Optional[asyncio.Future[None]] = None
        self._closed = False
        self._timer: Optional[asyncio.TimerHandle] = None
        self._task = self.io_loop.asyncio_loop.create_task(self._connect(resolver))

    # -- Connecting --------------------------------------------------------------

    def _request_bytes(self, host_header: str, path: str) -> bytes:
        request = self.request
        headers = httputil.HTTPHeaders()
        headers["Host"] = host_header
        headers["Upgrade"] = "websocket"
        headers["Connection"] = "Upgrade"
        headers["Sec-WebSocket-Key"] = self.key
        headers["Sec-WebSocket-Version"] = "13"
        if self._subprotocols:
            headers["Sec-WebSocket-Protocol"] = ",".join(self._subprotocols)
        options = self.params.compression_options
        if options is not None:
            headers["Sec-WebSocket-Extensions"] = _wsproto.deflate_offer(options)
        if request.headers:
            for name, value in httputil.HTTPHeaders(request.headers).get_all():
                headers[name] = value
        lines = [f"GET {path} HTTP/1.1"]
        lines.extend(f"{name}: {value}" for name, value in headers.get_all())
        text = "\r\n".join(lines) + "\r\n\r\n"
        if "\n" in text[:-4].replace("\r\n", "") or "\r" in text[:-4].replace("\r\n", ""):
            raise ValueError(f"CR or LF in the handshake request headers: {text!r}")
        return text.encode("latin-1")

    async def _connect(self, resolver: Optional[Resolver]) -> None:
        try:
            await self._open(resolver)
        except asyncio.CancelledError:
            # We cancelled it: the handshake timed out or failed already.
            return
        except asyncio.TimeoutError:
            self._timed_out()
        except Exception as e:
            self._connect_failed(e)

    async def _open(self, resolver: Optional[Resolver]) -> None:
        request = self.request
        loop = asyncio.get_running_loop()
        parsed = urllib.parse.urlsplit(request.url)
        scheme = parsed.scheme.lower()
        if scheme not in ("ws", "wss", "http", "https"):
            raise ValueError(f"unsupported WebSocket URL scheme: {request.url!r}")
        secure = scheme in ("wss", "https")
        host = parsed.hostname or ""
        default_port = 443 if secure else 80
        port = parsed.port or default_port
        if port == default_port:
            host_header = f"[{host}]" if ":" in host else host
        else:
            host_header = parsed.netloc.rpartition("@")[2]
        path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        payload = self._request_bytes(host_header, path)
        timeout = request.request_timeout or None
        if timeout:
            self._timer = loop.call_later(timeout, self._timed_out)
        ssl_context = _client_ssl_context(request) if secure else None
        connecting = self._open_transport(loop, host, port, ssl_context, resolver, payload)
        connect_timeout = request.connect_timeout or None
        if connect_timeout:
            await asyncio.wait_for(connecting, connect_timeout)
        else:
            await connecting

    async def _open_transport(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        ssl_context: Optional[ssl.SSLContext],
        resolver: Optional[Resolver],
        payload: bytes,
    ) -> None:
        def factory() -> _ClientHandshake:
            return _ClientHandshake(self, payload)

        server_hostname = host if ssl_context is not None else None
        if resolver is None:
            await loop.create_connection(factory, host, port, ssl=ssl_context, server_hostname=server_hostname)
            return
        addresses = await resolver.resolve(host, port)
        error: Optional[BaseException] = None
        for family, address in addresses:
            try:
                await loop.create_connection(
                    factory, address[0], address[1], family=family, ssl=ssl_context,
                    server_hostname=server_hostname,
                )
                return
            except OSError as e:
                error = e
        raise error or OSError(f"no address for {host!r}")

    def _timed_out(self) -> None:
        self._connect_failed(HTTPTimeoutError("Timeout during WebSocket handshake"))

    def _connect_failed(self, error: BaseException) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.connect_future.done():
            self.connect_future.set_exception(error)
            if self._task is not None and not self._task.done() and self._task is not asyncio.current_task():
                self._task.cancel()
        if self.stream is not None and self.protocol is None:
            self.stream.close()

    def _handshake_response(
        self,
        transport: asyncio.Transport,
        start_line: httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
        rest: bytes,
    ) -> None:
        self.stream = transport
        if self.connect_future.done():
            transport.close()
            return
        self.headers_received(start_line, headers)
        if self.connect_future.done():
            transport.close()
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        protocol = self.protocol
        assert protocol is not None
        protocol._attach(transport)
        protocol.start_pinging()
        self.connect_future.set_result(self)
        if rest:
            protocol.data_received(rest)

    def headers_received(self, start_line: httputil.ResponseStartLine, headers: httputil.HTTPHeaders) -> None:
        """Check the server's handshake response: anything but a valid
        ``101 Switching Protocols`` fails `websocket_connect`, with
        `~squall.httpclient.HTTPClientError` for an HTTP error status and
        `WebSocketError` otherwise."""
        self.code = start_line.code
        self.reason = start_line.reason
        self.headers = headers
        if start_line.code != 101:
            if 200 <= start_line.code < 300:
                error: BaseException = WebSocketError(f"Non-websocket response: {start_line.code}")
            else:
                error = HTTPClientError(start_line.code, start_line.reason or None)
            self._connect_failed(error)
            return
        try:
            if headers.get("Upgrade", "").lower() != "websocket":
                raise WebSocketError(f"bad Upgrade header: {headers.get('Upgrade')!r}")
            if "upgrade" not in (t.strip().lower() for t in headers.get("Connection", "").split(",")):
                raise WebSocketError(f"bad Connection header: {headers.get('Connection')!r}")
            if headers.get("Sec-WebSocket-Accept") != _wsproto.accept_value(self.key):
                raise WebSocketError("Sec-WebSocket-Accept does not match our key")
            subprotocol = headers.get("Sec-WebSocket-Protocol")
            if subprotocol is not None and subprotocol not in self._subprotocols:
                raise WebSocketError(f"server selected a subprotocol we did not offer: {subprotocol!r}")
            deflate = None
            extensions = headers.get("Sec-WebSocket-Extensions", "")
            if extensions:
                options = self.params.compression_options
                if options is None:
                    raise WebSocketError(f"server accepted extensions that were not offered: {extensions!r}")
                try:
                    agreed = _wsproto.accept_deflate(extensions)
                except ValueError as e:
                    raise WebSocketError(str(e)) from None
                if agreed is not None:
                    deflate = _wsproto.PerMessageDeflate(agreed, client=True, options=options)
        except WebSocketError as e:
            self._connect_failed(e)
            return
        protocol = self.get_websocket_protocol()
        protocol._core._deflate = deflate
        protocol.selected_subprotocol = subprotocol
        self.protocol = protocol

    def get_websocket_protocol(self) -> WebSocketProtocol13:
        """The protocol object for this connection (masking, as clients must)."""
        return WebSocketProtocol13(self, mask_outgoing=True, params=self.params)

    @property
    def selected_subprotocol(self) -> Optional[str]:
        """The subprotocol the server selected, or None."""
        return self.protocol.selected_subprotocol if self.protocol is not None else None

    # -- Using the connection ------------------------------------------------------

    def write_message(self, message: Union[str, bytes, dict[str, Any]], binary: bool = False) -> "asyncio.Future[None]":
        """Send a message (text for `str`, JSON for `dict`, binary with
        ``binary``); returns a future done once it has been handed to the
        network. Raises `WebSocketClosedError` when closed."""
        protocol = self.protocol
        if protocol is None:
            raise WebSocketClosedError()
        return protocol.write_message(message, binary)

    def read_message(
        self, callback: Optional[Callable[["asyncio.Future[Union[None, str, bytes]]"], None]] = None
    ) -> "asyncio.Future[Union[None, str, bytes]]":
        """The next message from the server, or None once the connection
        has closed. ``callback``, if given, is called with the future when it
        is done. Not usable together with ``on_message_callback``."""
        if self._on_message_callback is not None:
            raise RuntimeError("read_message cannot be used with an on_message_callback")
        future: asyncio.Future[Union[None, str, bytes]] = self.io_loop.asyncio_loop.create_future()
        if self.read_queue:
            future.set_result(self.read_queue.popleft())
            room = self._room
            if room is not None and len(self.read_queue) < CLIENT_READ_BUFFER:
                self._room = None
                if not room.done():
                    room.set_result(None)
        elif self._closed:
            future.set_result(None)
        else:
            self._readers.append(future)
        if callback is not None:
            self.io_loop.add_future(future, callback)
        return future

    def on_message(self, message: Union[str, bytes]) -> Optional[Awaitable[None]]:
        """Deliver a message to ``on_message_callback`` or `read_message`."""
        if self._on_message_callback is not None:
            return self._on_message_callback(message)  # type: ignore[no-any-return]
        return self._deliver(message)

    def _deliver(self, message: Union[None, str, bytes]) -> Optional[Awaitable[None]]:
        readers = self._readers
        while readers:
            reader = readers.popleft()
            if not reader.done():
                reader.set_result(message)
                return None
        self.read_queue.append(message)
        if len(self.read_queue) >= CLIENT_READ_BUFFER and message is not None:
            # Nobody is reading: stop taking messages from the server.
            self._room = self.io_loop.asyncio_loop.create_future()
            return self._room
        return None

    def on_ping(self, data: bytes) -> None:
        """Called with each ping's data (the pong is sent automatically)."""

    def on_pong(self, data: bytes) -> None:
        """Called with each pong's data."""

    def ping(self, data: Union[str, bytes] = b"") -> None:
        """Send a ping (at most 125 bytes, else `ValueError`). Raises
        `WebSocketClosedError` when closed."""
        data = utf8(data)
        if len(data) > _wsproto.MAX_CONTROL_PAYLOAD:
            raise ValueError(f"ping data is at most 125 bytes, got {len(data)}")
        protocol = self.protocol
        if protocol is None or protocol.is_closing():
            raise WebSocketClosedError()
        protocol.write_ping(data)

    def close(self, code: Optional[int] = None, reason: Optional[str] = None) -> None:
        """Start the closing handshake (see `WebSocketHandler.close`), or
        give up connecting."""
        if self.protocol is not None:
            self.protocol.close(code, reason)
        elif not self.connect_future.done():
            self._connect_failed(WebSocketClosedError("closed while connecting"))

    def on_ws_connection_close(
        self, close_code: Optional[int] = None, close_reason: Optional[str] = None
    ) -> None:
        """Record the server's close code and reason, then
        `on_connection_close`."""
        self.close_code = close_code
        self.close_reason = close_reason
        self.on_connection_close()

    def on_connection_close(self) -> None:
        """The connection is gone: readers get None."""
        if self._closed:
            return
        self._closed = True
        if self._on_message_callback is not None:
            self._on_message_callback(None)
        else:
            self._deliver(None)
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)

    def log_exception(self, typ: Any, value: Optional[BaseException], tb: Any) -> None:
        """Log an exception raised by ``on_message_callback``."""
        app_log.error("Uncaught exception in %s", self.request.url, exc_info=(typ, value, tb))


def _client_ssl_context(request: Any) -> ssl.SSLContext:
    options = request.ssl_options
    if isinstance(options, ssl.SSLContext):
        return options
    context = ssl.create_default_context(cafile=request.ca_certs)
    if request.validate_cert is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if request.client_cert:
        context.load_cert_chain(request.client_cert, request.client_key)
    return context


def websocket_connect(
    url: Union[str, HTTPRequest],
    callback: Optional[Callable[["asyncio.Future[WebSocketClientConnection]"], None]] = None,
    connect_timeout: Optional[float] = None,
    on_message_callback: Optional[Callable[[Union[None, str, bytes]], Any]] = None,
    compression_options: Optional[dict[str, Any]] = None,
    ping_interval: Optional[float] = None,
    ping_timeout: Optional[float] = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    subprotocols: Optional[list[str]] = None,
    resolver: Optional[Resolver] = None,
) -> "asyncio.Future[WebSocketClientConnection]":
    """Client-side websocket support.

    Takes a ``ws://`` or ``wss://`` URL (or an
    `~squall.httpclient.HTTPRequest`, for headers, timeouts and TLS
    options) and returns a future resolving to a
    `WebSocketClientConnection`. A response other than ``101`` fails it
    with `~squall.httpclient.HTTPClientError` (an error status) or
    `WebSocketError`; a refused connection with `OSError`.

    Messages are read with `~WebSocketClientConnection.read_message`, or
    pushed to ``on_message_callback`` (None once closed).
    ``compression_options`` (a dict, possibly empty) offers
    permessage-deflate. ``ping_interval``, ``ping_timeout`` and
    ``max_message_size`` are as for `WebSocketHandler`; ``subprotocols``
    lists the subprotocols to offer, in order of preference; ``resolver``
    is a `~squall.netutil.Resolver` to look the host up with.
    """
    if isinstance(url, HTTPRequest):
        if connect_timeout is not None:
            raise ValueError("give connect_timeout in the HTTPRequest, not also to websocket_connect")
        request = url
    else:
        request = HTTPRequest(url, connect_timeout=connect_timeout)
    connection = WebSocketClientConnection(
        _RequestProxy(request, HTTPRequest._DEFAULTS),
        on_message_callback=on_message_callback,
        compression_options=compression_options,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        max_message_size=max_message_size,
        subprotocols=subprotocols,
        resolver=resolver,
    )
    if callback is not None:
        connection.io_loop.add_future(connection.connect_future, callback)
    return connection.connect_future
