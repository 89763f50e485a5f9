"""The HTTP/1.1 server connection: an `asyncio.Protocol` that parses requests
with httptools (llhttp, in C) and hands them to an
`~squall.httputil.HTTPServerConnectionDelegate`.

This is the hot path of every squall server, so it is written for few Python
calls per request: the parser calls back straight into this protocol, the
request head is turned into one `~squall.httputil.HTTPHeaders` in one loop,
and the status line, headers and body of a response produced while a read is
being handled go out in a single ``transport.write()``.

One `_ServerProtocol` serves one TCP (or TLS, or Unix) connection. Each
request on it gets a `_RequestConnection`, the
`~squall.httputil.HTTPConnection` the application writes its response to.
Requests are answered in order: while a response is in progress, requests
that were pipelined behind it wait in a bounded backlog (reading stops when
it fills), and so do body chunks while the application is still digesting
an earlier one (``data_received`` returned an awaitable).

A peer's violation of the protocol is answered with a status code (400, 408,
413, 414, 431, 501, 505), logged once on ``squall.general`` without a
traceback, and the connection is closed; the server keeps serving others.
A mistake by the application (writing more than its ``Content-Length``, a
CR or LF in a header) raises at once with a message naming the bad value.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
import zlib
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Awaitable, Callable, NoReturn, Optional, Union

import httptools

from squall import _abnf, httputil
from squall.util import _speedups
from squall.httputil import (
    HTTPConnection,
    HTTPHeaders,
    HTTPInputError,
    HTTPMessageDelegate,
    HTTPOutputError,
    RequestStartLine,
    ResponseStartLine,
)
from squall.log import app_log, gen_log
from squall.netutil import is_valid_ip
from squall.util import GzipDecompressor

if TYPE_CHECKING:
    from squall.http1connection import HTTP1ConnectionParameters
    from squall.iostream import IOStream

# --- Limits ---------------------------------------------------------------

# A request head (request line and header fields) must arrive within this
# many seconds of its first byte, and a new connection must send its first
# head within it too: a client that trickles bytes (slowloris) is answered
# 408 and dropped. nginx's client_header_timeout (60 s) and Node's
# server.headersTimeout (60 s) do the same; 10 s is ample on any real link.
HEADER_TIMEOUT = 10.0
# An idle keep-alive connection is closed after this many seconds: nginx's
# keepalive_timeout default.
IDLE_TIMEOUT = 75.0
# Largest request head, in bytes (Tornado's max_header_size default: 64 KiB).
# Beyond it the request is answered 431 (RFC 6585).
MAX_HEADER_SIZE = 65536
# Largest request body, in bytes (Tornado's max_body_size default: 100 MB).
# Beyond it the request is answered 413 (RFC 9110 15.5.14).
MAX_BODY_SIZE = 100 * 1024 * 1024
# Longest request-target, in bytes: the request-line limit of nginx
# (large_client_header_buffers, 8k) and Apache (LimitRequestLine, 8190).
# Beyond it the request is answered 414 (RFC 9110 15.5.15).
MAX_URL_SIZE = 8190
# A Content-Length of fewer digits than this is within the allowed maximum.
_SAFE_LENGTH_DIGITS = len(str(_abnf.MAX_CONTENT_LENGTH))
# A body sent with its response head is copied onto the head below this
# size (one buffer to write); from this size on it stays a buffer of its
# own, and the two leave in one writelines (writev on uvloop): copying more
# costs more than the extra buffer.
_COPY_LIMIT = 4096
# Largest piece of a request body handed to ``data_received`` at a time
# (Tornado's chunk_size default).
CHUNK_SIZE = 65536
# Bytes of pipelined input held while an earlier request is being answered
# before reading from the socket pauses: one socket read's worth, as uvicorn
# and Node bound their pipelining buffers.
MAX_BACKLOG = 65536
# After an error response the connection keeps reading (and discarding) what
# the client is still sending for up to this many seconds before it closes,
# so that closing with unread data does not reset the connection and destroy
# the response before the client reads it: nginx's lingering_timeout.
LINGER_TIMEOUT = 5.0

# Peer errors are logged at INFO on squall.general, as Tornado logs them: a
# bad client is routine for a public server, not a fault of this one.
_PEER_ERROR_LEVEL = logging.INFO

# --- Responses written by the connection itself ---------------------------

_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CHUNKED_END = b"0\r\n\r\n"

# --- Date header, formatted once per second -------------------------------

# The current "Date: ...<CRLF>" line, and the time from which it is stale.
_date_line = ""
_date_stale_at = 0.0
_time = time.time


def _refresh_date_line(now: float) -> str:
    global _date_line, _date_stale_at
    second = int(now)
    _date_line = "Date: " + formatdate(second, usegmt=True) + "\r\n"
    _date_stale_at = second + 1.0
    return _date_line


# --- Header names as received, mapped once to (normalized name, role) -----

_OTHER, _CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _EXPECT, _CONTENT_ENCODING = range(6)
_ROLES = {
    "Content-Length": _CONTENT_LENGTH,
    "Transfer-Encoding": _TRANSFER_ENCODING,
    "Connection": _CONNECTION,
    "Expect": _EXPECT,
    "Content-Encoding": _CONTENT_ENCODING,
}
# Names come from the network, so the cache is bounded (see
# httputil._HEADER_NAME_CACHE_SIZE for the same reasoning).
_WIRE_NAME_CACHE_SIZE = 1000
_wire_names: dict[bytes, tuple[str, int]] = {}


def _wire_name(raw: bytes) -> tuple[str, int]:
    text = raw.decode("latin-1")
    name = httputil._normalize_header(text)
    info = (name, _ROLES.get(name, _OTHER))
    if len(_wire_names) < _WIRE_NAME_CACHE_SIZE:
        _wire_names[raw] = info
    return info


_HeaderParts = tuple[
    dict[str, list[str]], Optional[str], Optional[str], Optional[str], Optional[str], Optional[str]
]


def _python_build_headers(raw: list, names: dict[bytes, tuple[str, int]]) -> _HeaderParts:
    """A request's headers from the parser's alternating names and values:
    (as_list, content_length, transfer_encoding, connection, expect,
    content_encoding), each role's value being its last one (connection:
    all, joined by commas) or None. ``names`` is the cache of wire names
    (``_wire_names``), filled here; squall._speedups.build_headers gives the
    same for names already in it."""
    as_list: dict[str, list[str]] = {}
    content_length = None
    transfer_encoding = None
    connection = None
    expect = None
    content_encoding = None
    pairs = iter(raw)
    for raw_name, raw_value in zip(pairs, pairs):
        info = names.get(raw_name)
        if info is None:
            info = _wire_name(raw_name)
        name, role = info
        value = raw_value.decode("latin-1")
        if value[-1:] in _OWS:
            # llhttp drops leading whitespace, not trailing (RFC 9110 5.5).
            value = value.rstrip(" \t")
        values = as_list.get(name)
        if values is None:
            as_list[name] = [value]
        else:
            values.append(value)
        if role:
            if role == _CONTENT_LENGTH:
                content_length = value
            elif role == _TRANSFER_ENCODING:
                transfer_encoding = value
            elif role == _CONNECTION:
                connection = value if connection is None else f"{connection},{value}"
            elif role == _EXPECT:
                expect = value
            else:
                content_encoding = value
    return as_list, content_length, transfer_encoding, connection, expect, content_encoding


# The C versions (squall._speedups numbers the roles as above); without them
# the Python ones. build_headers returns None for what only Python does.
_pair_appender = _speedups.pair_appender if _speedups is not None else None
_build_headers: Callable[[list, dict[bytes, tuple[str, int]]], Optional[_HeaderParts]] = (
    _speedups.build_headers if _speedups is not None else _python_build_headers
)


_METHODS: dict[bytes, str] = {}
_VERSIONS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}

# Parse states of a connection (what the parser is in the middle of).
_IDLE, _HEAD, _BODY, _DONE = range(4)
_NEVER = float("inf")
_OWS = " \t"
# namedtuple's own __new__ is a Python function; tuple.__new__ is not.
_tuple_new = tuple.__new__
# Write states of a request's response.
_NOT_STARTED, _STARTED, _FINISHED = range(3)


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing the current input."""


_NOT_DIGITS = "Only integer Content-Length is allowed"


def _head_too_large(size: int, limit: int) -> str:
    return f"request head of {size}+ bytes is over the {limit}-byte limit (answered 431)"


def _llhttp_reason(message: str, data: bytes) -> str:
    """Describe llhttp's complaint about ``data`` in squall's words.

    This runs only on the error path, so it may rescan the input to name the
    offending header precisely.
    """
    if "Content-Length" in message:
        values = _raw_header_values(data, b"content-length")
        if len(values) > 1 or any(b"," in v for v in values):
            return f"Multiple unequal Content-Lengths: {b','.join(values)!r}"
        if "Transfer-Encoding" in message:
            return "Message with both Transfer-Encoding and Content-Length"
        return f"{_NOT_DIGITS}: {values[0] if values else b''!r}"
    if "Transfer-Encoding" in message:
        values = _raw_header_values(data, b"transfer-encoding")
        joined = ",".join(v.decode("latin-1") for v in values)
        return f"Unsupported Transfer-Encoding {joined}"
    if message == "Invalid header token":
        for line in data.split(b"\r\n")[1:]:
            if not line:
                break
            if b":" not in line:
                return f"no colon in header line: {line[:100]!r}"
        return "Invalid header name"
    if "chunk size" in message:
        return "invalid chunk size"
    if "after chunk data" in message:
        return "improperly terminated chunk"
    if message.startswith("Unexpected whitespace after header value") or message.startswith(
        "Unexpected space"
    ):
        return "header line cannot start with whitespace, folding not supported"
    return message


def _raw_header_values(data: bytes, lower_name: bytes) -> list[bytes]:
    found = []
    for line in data.split(b"\n"):
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == lower_name:
            found.append(value.strip(b" \t\r"))
    return found


_HEAD_END_RE = re.compile(rb"\r?\n\r?\n")


def _rewrite_head(data: bytes, unknown_method: bool) -> Optional[tuple[bytes, Optional[str]]]:
    """Return ``data`` with its request head in canonical form (CRLF line
    ends; a stand-in for the method if llhttp does not know it) and the real
    method name if it was replaced, or None if the head is invalid or
    incomplete (the caller then answers 400 as before)."""
    data = data.lstrip(b"\r\n")
    end = _HEAD_END_RE.search(data)
    if end is None:
        return None
    lines = data[: end.start()].split(b"\n")
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    if any(b"\r" in line for line in lines):
        return None
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _abnf.TOKEN_RE.fullmatch(parts[0].decode("latin-1")):
        return None
    method = None
    if unknown_method:
        # Any token is a method (RFC 9110 9.1); llhttp knows a fixed list.
        # PUT frames its body like every request, so it stands in.
        method = parts[0].decode("latin-1")
        lines[0] = b"PUT " + parts[1] + b" " + parts[2]
    return b"\r\n".join(lines) + b"\r\n\r\n" + data[end.end() :], method


_BARE_LF_RE = re.compile(rb"(?<!\r)\n")


def _feed_protocol(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """Deliver ``data`` to ``protocol`` as its transport would."""
    if isinstance(protocol, asyncio.BufferedProtocol):
        view = memoryview(data)
        while view:
            buffer = protocol.get_buffer(len(view))
            n = min(len(buffer), len(view))
            buffer[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]
    else:
        protocol.data_received(data)  # type: ignore[attr-defined]


class _HeadCollector:
    """Stands in for the parser while a request head that llhttp refused
    arrives in full, then hands it, rewritten, to a new parser."""

    def __init__(self, proto: "_ServerProtocol", unknown_method: bool) -> None:
        self._proto = proto
        self._unknown_method = unknown_method
        self._data = b""

    def feed_data(self, data: bytes) -> None:
        self._data += data
        if _HEAD_END_RE.search(self._data) is None:
            # Not all here yet; the protocol's head size limit applies.
            return
        rewritten = _rewrite_head(self._data, self._unknown_method)
        if rewritten is None:
            raise httptools.HttpParserInvalidMethodError("Malformed HTTP request line")
        self._proto._restart_parser(*rewritten)


class _RequestContext:
    """What a request knows about its connection: ``remote_ip`` and
    ``protocol`` (which `squall.httpserver.HTTPServer`'s ``xheaders`` may
    replace), ``address`` and ``address_family``."""

    def __init__(
        self,
        address: Any,
        family: Optional[int],
        protocol: Optional[str],
        secure: bool,
        trusted_downstream: Optional[set] = None,
    ) -> None:
        self.address = address
        self.address_family = family
        if family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            self.remote_ip: str = address[0]
        else:
            # A Unix socket has no peer address; use a placeholder.
            self.remote_ip = "0.0.0.0"
        if protocol:
            self.protocol = protocol
        elif secure:
            self.protocol = "https"
        else:
            self.protocol = "http"
        self._orig_remote_ip = self.remote_ip
        self._orig_protocol = self.protocol
        self.trusted_downstream = trusted_downstream if trusted_downstream is not None else set()

    def __str__(self) -> str:
        if isinstance(self.address, tuple):
            return self.remote_ip
        # A Unix socket's peer is usually unnamed.
        return str(self.address) if self.address else ""

    def _apply_xheaders(self, headers: HTTPHeaders) -> None:
        """Take the client's address and scheme from proxy headers."""
        ip = headers.get("X-Forwarded-For", self.remote_ip)
        # The list grows rightwards as the request passes proxies: walk it
        # from the right past the proxies we trust.
        for candidate in reversed(ip.split(",")):
            ip = candidate.strip(" \t")
            if ip not in self.trusted_downstream:
                break
        ip = headers.get("X-Real-Ip", ip)
        if is_valid_ip(ip):
            self.remote_ip = ip
        scheme = headers.get("X-Scheme", headers.get("X-Forwarded-Proto", self.protocol))
        if scheme:
            scheme = scheme.split(",")[-1].strip(" \t")
        if scheme in ("http", "https"):
            self.protocol = scheme

    def _unapply_xheaders(self) -> None:
        """Restore the connection's own address and scheme (the next request
        on a keep-alive connection may not carry proxy headers)."""
        self.remote_ip = self._orig_remote_ip
        self.protocol = self._orig_protocol


class _RequestConnection(HTTPConnection):
    """The `~squall.httputil.HTTPConnection` of one request on a
    `_ServerProtocol`: the application writes its response here.

    Also offers Tornado's `~squall.http1connection.HTTP1Connection` extras a
    request handler may use: `set_close_callback`, `set_max_body_size`,
    `set_body_timeout` and `detach`.
    """

    # Defaults shared by all instances: __init__ sets only what every
    # request has, and the head parser sets the rest when it differs.
    _delegate: Optional[HTTPMessageDelegate] = None
    _close_callback: Optional[Callable[[], None]] = None
    # A request without a body is read completely once its head is.
    _read_done = True
    _content_length = 0
    _chunked_in = False
    _expect_continue = False
    _gzip = False
    _received = 0
    _body_timeout: Optional[float] = None
    _gunzip: Optional[GzipDecompressor] = None
    _gunzipped = 0
    _wstate = _NOT_STARTED
    _chunked_out = False
    _remaining: Optional[int] = None
    _no_body = False
    _switching = False

    def __init__(
        self,
        proto: "_ServerProtocol",
        start_line: RequestStartLine,
        headers: HTTPHeaders,
        keep_alive: bool,
    ) -> None:
        self._proto = proto
        self.context = proto._context
        self._start_line = start_line
        self._headers = headers
        self._keep_alive = keep_alive
        self._max_body_size = proto._max_body_size

    # -- HTTP1Connection extras ---------------------------------------------

    @property
    def transport(self) -> Optional[asyncio.BaseTransport]:
        """The asyncio transport under this connection (for TLS details)."""
        return self._proto._transport

    def set_close_callback(self, callback: Optional[Callable[[], None]]) -> None:
        """Call ``callback`` (no arguments) if the connection closes before
        the response is finished; ``None`` clears it."""
        self._close_callback = callback

    def set_max_body_size(self, max_body_size: int) -> None:
        """Allow this request's body to be up to ``max_body_size`` bytes
        (instead of the server's ``max_body_size``). Call it from
        ``headers_received`` (a streaming handler's ``prepare``)."""
        if not isinstance(max_body_size, int) or max_body_size < 0:
            raise ValueError(f"max_body_size must be a non-negative int, got {max_body_size!r}")
        self._max_body_size = max_body_size

    def set_body_timeout(self, timeout: float) -> None:
        """Allow ``timeout`` seconds, from now, for the rest of this
        request's body to arrive; the connection is closed if it does not."""
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"body timeout must be a positive number, got {timeout!r}")
        self._body_timeout = timeout
        if self._proto._rx is self and not self._read_done:
            self._proto._set_body_deadline(timeout)

    def detach(self) -> "IOStream":
        """Take over the connection: returns an `~squall.iostream.IOStream`
        over the same transport, holding any bytes already received after
        this request. The HTTP server forgets the connection. Used for
        WebSocket and other protocols that upgrade from HTTP."""
        return self._proto._detach(self)

    @property
    def stream(self) -> "IOStream":
        """The connection as an `~squall.iostream.IOStream` (Tornado's
        ``HTTP1Connection.stream``), for code that writes raw bytes or
        closes the connection itself. Using it takes the connection over
        (`detach`): this request's own writes then fail with
        `~squall.iostream.StreamClosedError`, and no further request is read
        on the connection."""
        stream = self.__dict__.get("_stream")
        if stream is None:
            stream = self._stream = self.detach()
            # Whatever the application still writes through HTTP fails:
            # the transport belongs to the stream now.
            self._proto._closing = True
        return stream

    def _detach_transport(self) -> tuple[asyncio.Transport, bytes]:
        """Like `detach`, but hand over the bare asyncio transport and the
        bytes already received after this request, for a protocol that
        installs its own `asyncio.Protocol` (``squall.websocket`` does)."""
        return self._proto._detach_transport(self)

    # -- HTTPConnection -----------------------------------------------------

    def write_headers(
        self,
        start_line: Union[ResponseStartLine, RequestStartLine],
        headers: HTTPHeaders,
        chunk: Optional[bytes] = None,
    ) -> "asyncio.Future[None]":
        """Write the status line and headers, and ``chunk`` if given.

        Adds ``Date`` if absent, ``Transfer-Encoding: chunked`` when the
        response has no ``Content-Length`` and the client speaks HTTP/1.1,
        and ``Connection: close`` / ``Connection: Keep-Alive`` as the
        connection's fate requires. Raises `ValueError` if a header contains
        CR or LF and `~squall.httputil.HTTPOutputError` if
        ``Content-Length`` is not a decimal integer.
        """
        if self._wstate is not _NOT_STARTED:
            raise HTTPOutputError(f"write_headers called twice for {self._start_line!r}")
        status = _status_lines.get(start_line) or _status_line(start_line)  # type: ignore[arg-type]
        if type(headers) is not HTTPHeaders:
            headers = _as_http_headers(headers)
        as_list = headers._as_list
        joined = _header_lines(as_list)
        if joined is None:
            joined = _python_header_lines(as_list)
        code = start_line.code  # type: ignore[union-attr]
        request_line = self._start_line
        keep_alive = self._keep_alive
        extra = ""
        if "Connection" in as_list and "close" in ",".join(as_list["Connection"]).lower():
            keep_alive = False
        if code < 200 or code == 204 or code == 304 or request_line.method == "HEAD":
            self._no_body = True
            if code == 101:
                self._switching = True
        elif "Transfer-Encoding" in as_list:
            if as_list["Transfer-Encoding"][-1].lower() == "chunked":
                # The application asked for chunking itself: frame its writes.
                self._chunked_out = True
            else:
                keep_alive = False
        elif "Content-Length" in as_list:
            content_length = as_list["Content-Length"][-1]
            # Only ASCII digits: int() would also take "+1", "1_0" and " 1".
            if not (content_length.isascii() and content_length.isdigit()):
                raise HTTPOutputError(f"Invalid Content-Length {content_length!r}")
            self._remaining = int(content_length)
        elif request_line.version == "HTTP/1.1":
            self._chunked_out = True
            extra = "Transfer-Encoding: chunked\r\n"
        else:
            # An HTTP/1.0 client learns where the body ends when we close.
            keep_alive = False
        if "Connection" not in as_list:
            if keep_alive:
                if request_line.version == "HTTP/1.0":
                    extra += "Connection: Keep-Alive\r\n"
            elif request_line.version == "HTTP/1.1" and code != 101:
                extra += "Connection: close\r\n"
        if "Date" not in as_list:
            now = _time()
            extra += _date_line if now < _date_stale_at else _refresh_date_line(now)
        self._keep_alive = keep_alive
        self._wstate = _STARTED
        data = f"{status}{joined}{extra}\r\n".encode("latin-1")
        body = None
        if chunk:
            remaining = self._remaining
            if remaining is not None and remaining >= len(chunk) and not self._no_body:
                # The usual response: the whole body in this call.
                self._remaining = remaining - len(chunk)
                if len(chunk) < _COPY_LIMIT or type(chunk) is not bytes:
                    # (A bytearray or memoryview is copied now: the caller
                    # may change it once this returns.)
                    data += chunk
                else:
                    body = chunk
            else:
                data += self._frame(chunk)
        proto = self._proto
        if proto._corked and not (proto._closing or proto._writing_paused):
            # Inside the server's callbacks (the usual case): what _write
            # would do, without the call. A large body stays a buffer of
            # its own, written with the head in one writelines (no copy).
            out = proto._out
            out.append(data)
            if body is not None:
                out.append(body)
            return proto._ready
        if body is not None:
            data += body
        return proto._write(data)

    def write(self, chunk: bytes) -> "asyncio.Future[None]":
        """Write a piece of the body (framed as a chunk if the response is
        chunked). Before `write_headers` it writes ``chunk`` verbatim (the
        legacy interface, where the application formats the whole
        response); the connection then closes when the response finishes.

        Raises `~squall.httputil.HTTPOutputError` if the response would
        exceed its ``Content-Length``.
        """
        if self._wstate is _NOT_STARTED:
            self._wstate = _STARTED
            self._keep_alive = False
            return self._proto._write(bytes(chunk))
        if self._wstate is _FINISHED:
            raise HTTPOutputError("write() called after finish()")
        if not chunk:
            return self._proto._ready
        return self._proto._write(self._frame(chunk))

    def _frame(self, chunk: bytes) -> bytes:
        if self._no_body:
            if self._start_line.method != "HEAD":
                raise HTTPOutputError(
                    f"a response with this status has no body; refusing to write {len(chunk)} bytes"
                )
            return b""
        if self._chunked_out:
            return b"%x\r\n%b\r\n" % (len(chunk), chunk)
        remaining = self._remaining
        if remaining is not None:
            remaining -= len(chunk)
            self._remaining = remaining
            if remaining < 0:
                self._proto._abort()
                raise HTTPOutputError("Tried to write more data than Content-Length")
        return bytes(chunk) if type(chunk) is not bytes else chunk

    def finish(self) -> None:
        """Finish the response. Raises `~squall.httputil.HTTPOutputError`
        (and closes the connection) if fewer bytes were written than its
        ``Content-Length`` announced."""
        wstate = self._wstate
        if wstate is _FINISHED:
            raise HTTPOutputError("finish() called twice")
        if wstate is _NOT_STARTED:
            # Nothing was written (the legacy interface may do this): there
            # is no framing to rely on, so the connection closes.
            self._keep_alive = False
        self._wstate = _FINISHED
        proto = self._proto
        if self._chunked_out:
            proto._write(_CHUNKED_END)
        elif self._remaining and not self._no_body:
            proto._abort()
            raise HTTPOutputError(
                f"Tried to write {self._remaining} bytes less than Content-Length"
            )
        proto._response_finished(self)

    def _sendfile(self, file: Any, offset: int, count: int) -> Optional[Awaitable[None]]:
        """Send ``count`` bytes of the open regular ``file``, from ``offset``,
        as part of the body with ``os.sendfile``: the kernel moves them from
        the page cache to the socket, with no copy through Python.

        Returns an awaitable that finishes when the kernel has taken the last
        byte, or None when this response cannot be sent so (headers not yet
        written, a chunked or bodiless response, more than its
        ``Content-Length`` left, TLS, a transport without a socket, or bytes
        still queued in the transport): the caller then writes the bytes
        itself. The awaitable raises `~squall.iostream.StreamClosedError` if
        the connection closes first; if the file turns out shorter than
        ``count``, the connection is dropped (the client cannot mistake the
        truncated body for a whole one) and `HTTPOutputError` is raised.
        """
        if (
            self._wstate is not _STARTED
            or self._chunked_out
            or self._no_body
            or self._remaining is None
            or not 0 < count <= self._remaining
        ):
            return None
        sending = self._proto._sendfile(file, offset, count)
        if sending is not None:
            self._remaining -= count
        return sending

    def __repr__(self) -> str:
        return f"<_RequestConnection {self._start_line!r} from {self.context}>"


_new_request_connection = object.__new__

_os_sendfile = getattr(os, "sendfile", None)


def _wake(waiter: "asyncio.Future[None]") -> None:
    if not waiter.done():
        waiter.set_result(None)


_CR_OR_LF_RE = re.compile(r"\r|\n")

# Status lines seen so far (the usual handful), formatted once.
_STATUS_LINE_CACHE_SIZE = 256
_status_lines: dict[tuple, str] = {}


def _status_line(start_line: ResponseStartLine) -> str:
    _, code, reason = start_line
    if not isinstance(code, int):
        raise TypeError(f"status code must be an int, got {code!r}")
    if reason and _CR_OR_LF_RE.search(reason):
        raise ValueError(f"Illegal characters (CR or LF) in reason phrase: {reason!r}")
    # A server announces the highest version it speaks, whatever the
    # application put in the start line (Tornado's web layer leaves it empty).
    line = f"HTTP/1.1 {code} {reason or ''}\r\n"
    if len(_status_lines) < _STATUS_LINE_CACHE_SIZE:
        _status_lines[tuple(start_line)] = line
    return line


def _python_header_lines(as_list: dict[str, list[str]]) -> str:
    """The header block "name: value\r\n"... of a response.

    Raises `ValueError` naming the line when a name or value holds a CR or
    LF, which would split the response (RFC 9112 11.1).
    """
    lines = [f"{name}: {value}\r\n" for name, values in as_list.items() for value in values]
    joined = "".join(lines)
    # Each line must end in the one CRLF we put there.
    n = len(lines)
    if joined.count("\n") != n or joined.count("\r") != n:
        _reject_header_lines(as_list)
    return joined


# The same block built by squall._speedups (None when it cannot: the Python
# version then builds it, or raises).
_header_lines: Callable[[dict[str, list[str]]], Optional[str]] = (
    _speedups.header_lines if _speedups is not None else _python_header_lines
)


def _reject_header_lines(as_list: dict[str, list[str]]) -> NoReturn:
    for name, values in as_list.items():
        for value in values:
            line = f"{name}: {value}"
            if _CR_OR_LF_RE.search(line):
                raise ValueError(f"Illegal characters (CR or LF) in header: {line!r}")
    raise AssertionError("unreachable: a header line has an extra CR or LF")


def _as_http_headers(headers: Any) -> HTTPHeaders:
    # Any mapping (or HTTPHeaders subclass) the application passed.
    converted = HTTPHeaders()
    pairs = headers.get_all() if hasattr(headers, "get_all") else headers.items()
    for name, value in pairs:
        converted._as_list.setdefault(httputil._normalize_header(name), []).append(value)
    return converted


class _ServerProtocol(asyncio.Protocol):
    """Serves HTTP/1.x on one connection (see the module docstring)."""

    __slots__ = (
        "_server",
        "_start_request",
        "_params",
        "_loop",
        "_transport",
        "_context",
        "_parser",
        "_url",
        "_raw_headers",
        "_header_sink",
        "_pstate",
        "_head_bytes",
        "_last_len",
        "_rx",
        "_tx",
        "_backlog",
        "_backlog_bytes",
        "_waiting_for",
        "_reading_paused",
        "_writing_paused",
        "_drain_waiters",
        "_out",
        "_corked",
        "_close_after_flush",
        "_deadline",
        "_timer",
        "_timer_at",
        "_tick",
        "_idle_timeout",
        "_header_timeout",
        "_max_header_size",
        "_max_body_size",
        "_chunk_size",
        "_decompress",
        "_no_keep_alive",
        "_closed",
        "_lingering",
        "_closing",
        "_detached",
        "_upgrade_tail",
        "_closed_waiter",
        "_heads_begun",
        "_partial",
        "_rewritten",
        "_method_override",
        "_ready",
    )

    def __init__(self, server: Any, params: "HTTP1ConnectionParameters", idle_timeout: float) -> None:
        self._server = server
        self._start_request = server._start_request
        self._params = params
        self._idle_timeout = idle_timeout
        header_timeout = params.header_timeout or HEADER_TIMEOUT
        self._header_timeout = header_timeout
        self._tick = min(header_timeout, idle_timeout)
        self._max_header_size = params.max_header_size or MAX_HEADER_SIZE
        self._max_body_size = (
            params.max_body_size if params.max_body_size is not None else MAX_BODY_SIZE
        )
        self._chunk_size = params.chunk_size or CHUNK_SIZE
        self._decompress = params.decompress
        self._no_keep_alive = params.no_keep_alive
        self._transport: Any = None
        self._rx: Optional[_RequestConnection] = None
        self._tx: Optional[_RequestConnection] = None
        self._backlog: Optional[list] = None
        self._backlog_bytes = 0
        self._waiting_for: Any = None
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiters: Optional[list] = None
        self._out: list[bytes] = []
        self._corked = False
        self._close_after_flush = False
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_at = 0.0
        self._deadline = 0.0
        self._pstate = _IDLE
        self._url = b""
        # The current head's header names and values, alternating, as the
        # parser reports them (through _header_sink).
        self._raw_headers: list = []
        self._header_sink = (
            _pair_appender(self._raw_headers) if _pair_appender is not None else self._append_header
        )
        self._head_bytes = 0
        self._last_len = 0
        self._closed = False
        self._lingering = False
        self._closing = False
        self._detached = False
        self._upgrade_tail: Optional[bytes] = None
        self._closed_waiter: Optional[asyncio.Future] = None
        # For rewriting a head llhttp refuses (see _on_parser_error).
        self._heads_begun = 0
        self._partial: Optional[bytes] = None
        self._rewritten = False
        self._method_override: Optional[str] = None

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._loop = loop = asyncio.get_running_loop()
        sock = transport.get_extra_info("socket")
        family = getattr(sock, "family", None)
        secure = transport.get_extra_info("sslcontext") is not None
        server = self._server
        self._context = _RequestContext(
            transport.get_extra_info("peername"),
            family,
            server._http_protocol,
            secure,
            server.trusted_downstream,
        )
        self._parser = httptools.HttpRequestParser(self)
        self._ready = loop.create_future()
        self._ready.set_result(None)
        server._connections.add(self)
        now = loop.time()
        # A new connection must send its first request head promptly.
        self._deadline = now + self._tick
        self._arm_timer(self._deadline)

    def data_received(self, data: bytes) -> None:
        if self._pstate is _DONE:
            return
        self._last_len = len(data)
        self._corked = True
        entry_state = self._pstate
        self._heads_begun = 0
        error: Optional[Exception] = None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            error = e
        except httptools.HttpParserError as e:
            error = e
        if error is not None:
            # Handled outside the except clauses, so that parsing resumed
            # from here does not chain its errors to this one.
            self._on_feed_error(error, data, entry_state)
        elif self._pstate is _HEAD:
            self._check_partial_head(len(data))
            self._partial = self._head_origin(entry_state, data)
        if self._backlog is not None:
            self._backlog_bytes += len(data)
            if self._backlog_bytes > MAX_BACKLOG and not self._reading_paused:
                self._pause_reading()
        self._uncork()

    def eof_received(self) -> Optional[bool]:
        # A client that shuts down its side has gone away (as for Tornado);
        # returning None lets the transport close once our writes flush.
        return None

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self._closed:
            return
        self._closed = True
        self._closing = True
        self._pstate = _DONE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._server._connections.discard(self)
        rx, tx = self._rx, self._tx
        self._rx = self._tx = None
        self._backlog = None
        if rx is not None and rx._delegate is not None:
            self._call_delegate_close(rx._delegate)
        if tx is not None:
            callback = tx._close_callback
            tx._close_callback = None
            if callback is not None:
                try:
                    callback()
                except Exception:
                    app_log.error("Exception in close callback", exc_info=True)
        waiters = self._drain_waiters
        if waiters:
            self._drain_waiters = None
            from squall.iostream import StreamClosedError

            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(StreamClosedError())
                    waiter.exception()  # a write nobody awaits must not warn
        if self._closed_waiter is not None and not self._closed_waiter.done():
            self._closed_waiter.set_result(None)
        try:
            self._server.on_close(self)
        except Exception:
            app_log.error("Exception in on_close", exc_info=True)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiters = self._drain_waiters
        if waiters:
            self._drain_waiters = None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    # -- httptools callbacks (parse side) -------------------------------------

    # on_message_begin is not defined, to save a call per request: the
    # request-target is the first part of every request, so on_url marks
    # the start of a head.

    def on_url(self, url: bytes) -> None:
        if self._pstate is _HEAD:
            # The target arrived in pieces, across reads.
            self._url += url
            return
        if self._pstate is _DONE:
            # The connection is closing (an earlier request on this read was
            # its last): nothing after it is served.
            raise _Stop()
        self._pstate = _HEAD
        self._url = url
        self._head_bytes = 0
        self._heads_begun += 1
        if self._tx is None:
            self._deadline = self._loop.time() + self._header_timeout

    @property
    def on_header(self) -> Callable[[bytes, bytes], None]:
        # httptools reads the callback once per parser: a C function bound
        # to the list when squall._speedups is built.
        return self._header_sink

    def _append_header(self, name: bytes, value: bytes) -> None:
        raw = self._raw_headers
        raw.append(name)
        raw.append(value)

    def on_body(self, body: bytes) -> None:
        if self._backlog is None:
            self._deliver_body(body)
        else:
            self._backlog.append((self._deliver_body, body))

    def on_message_complete(self) -> None:
        if self._pstate is _DONE:
            raise _Stop()
        self._pstate = _IDLE
        if self._backlog is None:
            self._deliver_end(None)
        else:
            self._backlog.append((self._deliver_end, None))

    # -- head parsing ------------------------------------------------------------

    def on_headers_complete(self) -> None:
        # The head is parsed here rather than in a helper: one call fewer on
        # every request. A violation raises _Stop through _head_error.
        parser = self._parser
        version = _VERSIONS.get(parser.get_http_version())
        if version is None:
            found = parser.get_http_version()
            if found.startswith(("0.", "1.")):
                self._head_error(400, f"Malformed HTTP version in HTTP Request-Line: {found!r}")
            self._head_error(505, f"Unsupported HTTP version {found!r}")
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method)
        if method is None:
            method = _METHODS[raw_method] = raw_method.decode("ascii")
        if self._rewritten:
            # This head parsed after a rewrite; the next may be rewritten too.
            self._rewritten = False
            if self._method_override is not None:
                method = self._method_override
                self._method_override = None
        url = self._url
        if len(url) > MAX_URL_SIZE:
            self._head_error(414, f"Request-target too long ({len(url)} bytes)")
        raw = self._raw_headers
        if self._head_bytes + self._last_len > self._max_header_size:
            self._check_head_size(method, url, raw)
        built = _build_headers(raw, _wire_names)
        if built is None:
            built = _python_build_headers(raw, _wire_names)
        as_list, content_length, transfer_encoding, connection, expect, content_encoding = built
        raw.clear()
        # The names and values were checked by llhttp against the grammar,
        # so the headers are assembled without HTTPHeaders.add's checks.
        headers = HTTPHeaders.__new__(HTTPHeaders)
        headers._as_list = as_list
        headers._combined = {}
        if connection is None:
            keep_alive = version == "HTTP/1.1"
        else:
            tokens = {t.strip(" \t").lower() for t in connection.split(",")}
            if version == "HTTP/1.1":
                keep_alive = "close" not in tokens
            else:
                keep_alive = "keep-alive" in tokens
        if self._no_keep_alive:
            keep_alive = False
        # _RequestConnection(...), without the call: one per request.
        rc = _new_request_connection(_RequestConnection)
        rc._proto = self
        rc.context = self._context
        rc._start_line = _tuple_new(RequestStartLine, (method, url.decode("latin-1"), version))
        rc._headers = headers
        rc._keep_alive = keep_alive
        rc._max_body_size = self._max_body_size
        if transfer_encoding is not None:
            if content_length is not None:
                self._head_error(400, "Message with both Transfer-Encoding and Content-Length")
            try:
                chunked = _abnf.is_transfer_encoding_chunked(transfer_encoding)
            except ValueError:
                self._head_error(501, f"Unsupported Transfer-Encoding {transfer_encoding}")
            if chunked:
                rc._chunked_in = True
                rc._read_done = False
        elif content_length is not None:
            if (
                content_length.isdigit()
                and content_length.isascii()
                and len(content_length) < _SAFE_LENGTH_DIGITS
            ):
                # The usual value, fewer digits than the largest allowed:
                # what parse_content_length gives, without its calls.
                length = int(content_length)
            else:
                try:
                    length = _abnf.parse_content_length(content_length)
                except ValueError as e:
                    self._head_error(400, f"{_NOT_DIGITS}: {e}")
            if length:
                rc._content_length = length
                rc._read_done = False
        if expect is not None and version == "HTTP/1.1" and expect.lower() == "100-continue":
            rc._expect_continue = True
        if (
            content_encoding is not None
            and self._decompress
            and content_encoding.strip(" \t").lower() == "gzip"
        ):
            rc._gzip = True
        self._pstate = _BODY
        if self._backlog is None:
            self._deliver_head(rc)
        else:
            self._backlog.append((self._deliver_head, rc))

    def _head_error(self, status: int, reason: str) -> NoReturn:
        self._parse_error(status, reason)
        raise _Stop()

    def _check_head_size(self, method: str, url: bytes, raw: list) -> None:
        # Only reached when the reads that carried this head were large:
        # count the head's bytes exactly (request line and "name: value"
        # lines with their CRLFs).
        size = len(method) + len(url) + 12 + 2 * len(raw)
        for name_or_value in raw:
            size += len(name_or_value)
        if size > self._max_header_size:
            self._head_error(431, _head_too_large(size, self._max_header_size))

    def _check_partial_head(self, received: int) -> None:
        # The current head is not complete after this read.
        self._head_bytes += received
        if len(self._url) > MAX_URL_SIZE:
            self._parse_error(414, f"Request-target too long ({len(self._url)}+ bytes)")
        elif self._head_bytes > self._max_header_size:
            self._parse_error(431, _head_too_large(self._head_bytes, self._max_header_size))

    # -- delivery side: events to the application, in order -------------------

    def _deliver_head(self, rc: _RequestConnection) -> None:
        self._rx = self._tx = rc
        # The head is in: no timeout applies until the application says how
        # long the body may take, or the response is finished.
        self._deadline = _NEVER
        headers = rc._headers
        if rc._gzip:
            rc._gunzip = GzipDecompressor()
            # The application sees the decompressed body, so the header that
            # described the compressed one moves aside (as in Tornado).
            headers.add("X-Consumed-Content-Encoding", headers["Content-Encoding"])
            del headers["Content-Encoding"]
        try:
            delegate = rc._delegate = self._start_request(self, rc)
            result = delegate.headers_received(rc._start_line, headers)
        except HTTPInputError as e:
            self._peer_error(400, str(e))
            raise _Stop() from None
        except Exception:
            self._app_error()
            raise _Stop() from None
        if result is not None:
            self._block_on(result, self._after_head, rc)
        elif not rc._read_done:
            self._after_head(rc)

    def _after_head(self, rc: _RequestConnection) -> None:
        # Runs once headers_received (and any awaitable it returned) is done,
        # so that a handler may have raised its max_body_size by now.
        if rc._read_done or rc is not self._rx:
            return
        if rc._content_length > rc._max_body_size:
            self._peer_error(413, "Content-Length too long")
            raise _Stop()
        if rc._expect_continue and rc._wstate is _NOT_STARTED:
            self._write(_CONTINUE)
        timeout = rc._body_timeout or self._params.body_timeout
        if timeout:
            self._set_body_deadline(timeout)

    def _deliver_body(self, body: bytes) -> None:
        rc = self._rx
        if rc is None:
            return
        received = rc._received + len(body)
        rc._received = received
        if received > rc._max_body_size:
            self._peer_error(
                413, "chunked body too large" if rc._chunked_in else "Content-Length too long"
            )
            raise _Stop()
        if rc._gunzip is not None:
            self._deliver_gzipped(rc, body)
        elif len(body) <= self._chunk_size:
            self._deliver_piece(rc, body)
        else:
            size = self._chunk_size
            pieces = [body[i : i + size] for i in range(0, len(body), size)]
            self._deliver_pieces(rc, pieces)

    def _deliver_gzipped(self, rc: _RequestConnection, body: bytes) -> None:
        gunzip = rc._gunzip
        assert gunzip is not None
        size = self._chunk_size
        pieces = []
        data = body
        try:
            while data:
                piece = gunzip.decompress(data, size)
                rc._gunzipped += len(piece)
                if rc._gunzipped > rc._max_body_size:
                    self._peer_error(413, "decompressed body too large")
                    raise _Stop()
                if piece:
                    pieces.append(piece)
                data = gunzip.unconsumed_tail
        except zlib.error as e:
            self._peer_error(400, f"invalid gzip data: {e}")
            raise _Stop() from None
        if pieces:
            self._deliver_pieces(rc, pieces)

    def _deliver_pieces(self, rc: _RequestConnection, pieces: list) -> None:
        for i, piece in enumerate(pieces):
            if self._backlog is not None:
                # An earlier piece made us wait: the rest waits its turn.
                self._backlog.insert(0, (self._deliver_pieces_to, (rc, pieces[i:])))
                return
            self._deliver_piece(rc, piece)

    def _deliver_pieces_to(self, args: tuple) -> None:
        rc, pieces = args
        if rc is self._rx:
            self._deliver_pieces(rc, pieces)

    def _deliver_piece(self, rc: _RequestConnection, piece: bytes) -> None:
        try:
            result = rc._delegate.data_received(piece)  # type: ignore[union-attr]
        except HTTPInputError as e:
            self._peer_error(400, str(e))
            raise _Stop() from None
        except Exception:
            self._app_error()
            raise _Stop() from None
        if result is not None:
            self._block_on(result, None, None)

    def _deliver_end(self, _: None) -> None:
        rc = self._rx
        if rc is None:
            return
        gunzip = rc._gunzip
        if gunzip is not None:
            rc._gunzip = None
            try:
                tail = gunzip.flush()
            except zlib.error as e:
                self._peer_error(400, f"invalid gzip data: {e}")
                raise _Stop() from None
            if tail:
                rc._gunzipped += len(tail)
                if rc._gunzipped > rc._max_body_size:
                    self._peer_error(413, "decompressed body too large")
                    raise _Stop()
                self._deliver_pieces(rc, [tail])
                if self._backlog is not None:
                    # The application is digesting the tail: the end of the
                    # message follows it.
                    self._backlog.append((self._deliver_end, None))
                    return
        rc._read_done = True
        self._rx = None
        if self._tx is rc:
            # No timeout applies until the response is finished (a long poll
            # may take minutes).
            self._deadline = _NEVER
        try:
            rc._delegate.finish()  # type: ignore[union-attr]
        except HTTPInputError as e:
            self._peer_error(400, str(e))
            raise _Stop() from None
        except Exception:
            self._app_error()
            raise _Stop() from None
        if self._pstate is _DONE and self._closing:
            raise _Stop()
        if self._tx is not rc:
            # Read and answered: drop the delegate, which usually refers
            # back to rc, so that the pair is freed without the cyclic GC.
            rc._delegate = None
        elif self._backlog is None:
            # Answer requests in order: whatever follows waits for this
            # response to finish.
            self._backlog = []
            self._waiting_for = rc

    def _block_on(self, awaitable: Awaitable, then: Any, arg: Any) -> None:
        """Hold further events until ``awaitable`` is done, then run
        ``then(arg)`` (if given) before them."""
        backlog: list = []
        if then is not None:
            backlog.append((then, arg))
        if self._backlog:
            backlog.extend(self._backlog)
        self._backlog = backlog
        future = asyncio.ensure_future(awaitable)
        self._waiting_for = future
        future.add_done_callback(self._on_awaited)

    def _on_awaited(self, future: asyncio.Future) -> None:
        if self._waiting_for is not future or self._closed:
            return
        if not future.cancelled() and future.exception() is not None:
            exc = future.exception()
            if isinstance(exc, HTTPInputError):
                self._peer_error(400, str(exc))
            else:
                app_log.error("Uncaught exception", exc_info=(type(exc), exc, exc.__traceback__))
                self._abort()
            return
        self._drain()

    def _drain(self) -> None:
        """Deliver backlogged events until one makes us wait again."""
        self._waiting_for = None
        backlog = self._backlog
        self._backlog = None
        self._corked = True
        try:
            while backlog:
                deliver, arg = backlog.pop(0)
                deliver(arg)
                if self._backlog is not None:
                    # Blocked again: keep what is left, after anything the
                    # event itself queued.
                    self._backlog.extend(backlog)
                    break
        except _Stop:
            pass
        if self._backlog is None:
            self._backlog_bytes = 0
            if self._reading_paused and not self._closed:
                self._reading_paused = False
                self._transport.resume_reading()
        self._uncork()

    # -- response side -----------------------------------------------------------

    def _write(self, data: bytes) -> "asyncio.Future[None]":
        if self._closing:
            return self._closed_future()
        if self._corked:
            self._out.append(data)
        else:
            self._transport.write(data)
        if self._writing_paused:
            return self._drain_waiter()
        # A write below the high-water mark is complete as far as the caller
        # is concerned; one finished future per connection serves them all.
        return self._ready

    def _sendfile(self, file: Any, offset: int, count: int) -> Optional[Awaitable[None]]:
        # See _RequestConnection._sendfile.
        if _os_sendfile is None or self._closing:
            return None
        transport = self._transport
        if transport.is_closing() or transport.get_extra_info("sslcontext") is not None:
            return None
        sock = transport.get_extra_info("socket")
        try:
            sock_fd = sock.fileno()
            file_fd = file.fileno()
        except (AttributeError, OSError, ValueError):
            return None
        if not (isinstance(sock_fd, int) and sock_fd >= 0 and isinstance(file_fd, int)):
            return None
        out = self._out
        if out:
            # The head is still corked: it goes first.
            transport.write(b"".join(out))
            out.clear()
        if transport.get_write_buffer_size():
            # The kernel must see the file's bytes after those queued in the
            # transport, and the transport cannot say when its queue has
            # emptied: the caller writes the file through it instead.
            return None
        # The socket is used through a duplicate descriptor: it stays ours
        # (and cannot be reused for another connection) even if the
        # transport closes its own meanwhile, and the event loop lets us
        # watch it for writability, which it refuses for a transport's fd.
        return self._send_file(os.dup(sock_fd), file_fd, offset, count)

    async def _send_file(self, sock_fd: int, file_fd: int, offset: int, count: int) -> None:
        from squall.iostream import StreamClosedError

        transport = self._transport
        loop = self._loop
        end = offset + count
        try:
            while offset < end:
                if transport.is_closing():
                    raise StreamClosedError()
                try:
                    sent = _os_sendfile(sock_fd, file_fd, offset, end - offset)
                except BlockingIOError:
                    # The socket's buffer is full: wait until it drains (a
                    # drain waiter also fails when the connection is lost).
                    waiter = self._drain_waiter()
                    loop.add_writer(sock_fd, _wake, waiter)
                    try:
                        await waiter
                    finally:
                        loop.remove_writer(sock_fd)
                        waiters = self._drain_waiters
                        if waiters and waiter in waiters:
                            waiters.remove(waiter)
                    continue
                except OSError as e:
                    # The peer reset the connection, or the file cannot be
                    # read: the response cannot be completed.
                    self._abort()
                    raise StreamClosedError(real_error=e) from e
                if not sent:
                    self._abort()
                    raise HTTPOutputError(
                        f"The file ended {end - offset} bytes short of the response's Content-Length"
                    )
                offset += sent
        finally:
            os.close(sock_fd)

    def _drain_waiter(self) -> "asyncio.Future[None]":
        """A future resolved when the transport may be written again, or
        failed with StreamClosedError if the connection is lost first."""
        waiter = self._loop.create_future()
        if self._drain_waiters is None:
            self._drain_waiters = [waiter]
        else:
            self._drain_waiters.append(waiter)
        return waiter

    def _closed_future(self) -> "asyncio.Future[None]":
        # squall.iostream is imported here, off the hot path, because only a
        # write to a closed connection (and detach) needs it.
        from squall.iostream import StreamClosedError

        future = self._loop.create_future()
        future.set_exception(StreamClosedError())
        future.exception()  # a write nobody awaits must not warn
        return future

    def _uncork(self) -> None:
        self._corked = False
        out = self._out
        if out:
            transport = self._transport
            if not transport.is_closing():
                if len(out) == 1:
                    transport.write(out[0])
                else:
                    # Pipelined responses, or a head and its large body:
                    # uvloop sends them with one writev, without joining.
                    transport.writelines(out)
            out.clear()
        if self._close_after_flush:
            self._close_after_flush = False
            self._close_transport()

    def _response_finished(self, rc: _RequestConnection) -> None:
        if rc is not self._tx:
            return
        self._tx = None
        rc._close_callback = None
        if rc._switching:
            # 101 Switching Protocols: the application detaches next; until
            # then nothing more is parsed as HTTP.
            self._pstate = _DONE
            return
        if not rc._keep_alive:
            self._close_soon(lingering=not rc._read_done)
            return
        if not rc._read_done:
            # Answered before the body arrived: stop listening to the rest of
            # it and close once it has been drained (as Tornado does).
            self._rx = None
            self._close_soon(lingering=True)
            return
        if self._rx is not rc:
            rc._delegate = None  # see _deliver_end
        self._deadline = self._loop.time() + self._idle_timeout
        if self._timer is None:
            self._arm_timer(self._deadline)
        if self._waiting_for is rc:
            if self._corked:
                # We are inside a parser or backlog callback: events after
                # this one are delivered by our caller.
                self._waiting_for = None
                backlog = self._backlog
                self._backlog = None
                if backlog:
                    self._loop.call_soon(self._replay, backlog)
            else:
                self._drain()

    def _replay(self, backlog: list) -> None:
        if self._closed:
            return
        if self._backlog is not None:
            self._backlog.extend(backlog)
            return
        self._backlog = backlog
        self._drain()

    # -- closing -------------------------------------------------------------------

    def _close_soon(self, lingering: bool) -> None:
        self._pstate = _DONE
        self._closing = True
        self._lingering = lingering
        if self._corked:
            self._close_after_flush = True
        else:
            self._close_transport()

    def _close_transport(self) -> None:
        transport = self._transport
        if self._closed or transport.is_closing():
            return
        if self._lingering:
            # Lingering close: the client may still be sending (a body we
            # answered early, with 413 say). Closing now would reset the
            # connection under it, losing our response; instead we read and
            # discard what it sends, and close when it hangs up or after
            # LINGER_TIMEOUT. Over TCP a half-close also tells it the
            # response ended; TLS cannot half-close, but the response is
            # framed (Content-Length or Connection: close) all the same.
            if transport.can_write_eof():
                transport.write_eof()
            if self._reading_paused:
                self._reading_paused = False
                transport.resume_reading()
            self._deadline = self._loop.time() + LINGER_TIMEOUT
            self._arm_timer(self._deadline)
        else:
            transport.close()

    def _abort(self) -> None:
        """Drop the connection now (after an application error)."""
        self._pstate = _DONE
        self._closing = True
        self._out.clear()
        self._close_after_flush = False
        if self._transport is not None and not self._closed:
            self._transport.abort()

    def _peer_error(self, status: int, reason: str) -> None:
        """The client broke the protocol: log it, answer ``status`` if no
        response has started, and close."""
        if self._closing or self._closed:
            return
        if status == 431:
            # Tornado's wording for the same event, which log filters of
            # existing deployments may look for.
            gen_log.log(_PEER_ERROR_LEVEL, "Unsatisfiable read, closing connection: %s from %s", reason, self._context)
        else:
            gen_log.log(_PEER_ERROR_LEVEL, "Malformed HTTP message from %s: %s", self._context, reason)
        self._pstate = _DONE
        tx = self._tx
        rx = self._rx
        self._rx = None
        self._backlog = None
        if rx is not None and rx._delegate is not None:
            self._call_delegate_close(rx._delegate)
        if tx is None or tx._wstate is _NOT_STARTED:
            if tx is not None:
                tx._wstate = _FINISHED
            self._tx = None
            self._write(f"HTTP/1.1 {status} {_REASONS[status]}\r\n\r\n".encode("latin-1"))
            self._close_soon(lingering=True)
        else:
            self._abort()

    def _app_error(self) -> None:
        """An application callback raised: log it and drop the connection."""
        app_log.error("Uncaught exception", exc_info=True)
        rx = self._rx
        self._rx = None
        if rx is not None and rx._delegate is not None:
            self._call_delegate_close(rx._delegate)
        self._abort()

    def _internal_error(self, exc: BaseException) -> None:
        app_log.error(
            "Uncaught exception in HTTP connection", exc_info=(type(exc), exc, exc.__traceback__)
        )
        self._abort()

    def _call_delegate_close(self, delegate: HTTPMessageDelegate) -> None:
        try:
            delegate.on_connection_close()
        except Exception:
            app_log.error("Uncaught exception in on_connection_close", exc_info=True)

    def _on_feed_error(self, error: Exception, data: bytes, entry_state: int) -> None:
        if isinstance(error, httptools.HttpParserUpgrade):
            self._on_upgrade(data, error.args[0])
        elif isinstance(error, httptools.HttpParserCallbackError):
            cause = error.__context__
            if not isinstance(cause, _Stop):
                self._internal_error(cause or error)
        else:
            self._on_parser_error(error, data, self._head_origin(entry_state, data))

    def _head_origin(self, entry_state: int, data: bytes) -> Optional[bytes]:
        """The raw bytes of the head being parsed, from its first byte, if
        they are known: the head began this read at its start (nothing
        before it was parsed in this read), or continued one that did."""
        if entry_state is _IDLE:
            if self._heads_begun == 0 or (self._heads_begun == 1 and self._pstate is _HEAD):
                return data
        elif entry_state is _HEAD and self._heads_begun == 0 and self._partial is not None:
            return self._partial + data
        return None

    def _on_parser_error(self, error: Exception, data: bytes, origin: Optional[bytes]) -> None:
        if origin is not None and not self._rewritten and self._pstate is not _BODY:
            # llhttp is stricter than RFC 9112 in two ways a real client may
            # trip: it knows a fixed list of methods (RFC 9110 9.1 allows any
            # token), and wants CRLF where a bare LF is allowed (2.2). Such a
            # head is rewritten canonically and parsed again, once.
            unknown_method = isinstance(error, httptools.HttpParserInvalidMethodError)
            head = origin.lstrip(b"\r\n")
            if unknown_method or _BARE_LF_RE.search(head, 0, self._max_header_size):
                self._rewritten = True
                self._parser = _HeadCollector(self, unknown_method)  # type: ignore[assignment]
                self._pstate = _HEAD
                if self._tx is None:
                    self._deadline = self._loop.time() + self._header_timeout
                error = None
                try:
                    self._parser.feed_data(head)
                except httptools.HttpParserError as e:
                    error = e
                if error is not None:
                    self._on_parser_error(error, head, None)
                return
        message = str(error)
        if isinstance(error, httptools.HttpParserInvalidMethodError):
            reason = "Malformed HTTP request line"
        elif isinstance(error, httptools.HttpParserInvalidURLError):
            reason = f"Malformed HTTP request line: {message}"
        else:
            reason = _llhttp_reason(message, data)
        # Whatever llhttp refuses breaks the message's framing: always 400
        # (RFC 9112 6.3). An unknown coding before a final "chunked", which
        # llhttp lets through, is answered 501 by on_headers_complete.
        self._parse_error(400, reason)

    def _restart_parser(self, data: bytes, method: Optional[str]) -> None:
        self._method_override = method
        self._pstate = _IDLE
        self._partial = None
        # Headers of the refused attempt: they are parsed again.
        self._raw_headers.clear()
        self._parser = httptools.HttpRequestParser(self)
        # The head had bare LFs: its body's chunk lines may too.
        self._parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        self.data_received(data)

    def _parse_error(self, status: int, reason: str) -> None:
        """The parser found a violation: answer it now, or after the
        responses to the requests before it if they are still in progress."""
        if self._backlog is not None:
            self._backlog.append((self._deliver_error, (status, reason)))
            self._pstate = _DONE
        else:
            self._peer_error(status, reason)

    def _deliver_error(self, args: tuple) -> None:
        self._peer_error(*args)
        raise _Stop()

    def _on_upgrade(self, data: bytes, offset: int) -> None:
        # The parser stops after a request that asks to switch protocols;
        # what follows belongs to the new protocol if the application
        # accepts (detach), and is parsed as HTTP again if it does not.
        tail = data[offset:]
        if self._detached:
            # Detached while this read was parsed: hand the new protocol
            # what followed the request.
            if tail:
                _feed_protocol(self._transport.get_protocol(), tail)
            return
        self._upgrade_tail = tail
        self._pstate = _DONE
        if self._backlog is not None or self._tx is not None:
            if not self._reading_paused:
                self._pause_reading()
            self._waiting_for_upgrade()
        else:
            self._resume_after_upgrade()

    def _waiting_for_upgrade(self) -> None:
        # Nothing to do until the response to the upgrade request finishes;
        # _response_finished then drains, and the drain ends here.
        if self._backlog is None:
            self._backlog = []
        self._backlog.append((self._resume_after_upgrade_event, None))

    def _resume_after_upgrade_event(self, _: None) -> None:
        self._resume_after_upgrade()

    def _resume_after_upgrade(self) -> None:
        if self._detached or self._closed:
            return
        tail = self._upgrade_tail or b""
        self._upgrade_tail = None
        self._pstate = _IDLE
        self._parser = httptools.HttpRequestParser(self)
        if tail:
            self.data_received(tail)

    def _detach(self, rc: _RequestConnection) -> "IOStream":
        from squall.iostream import IOStream

        transport, tail = self._detach_transport(rc)
        return IOStream._from_transport(transport, tail)

    def _detach_transport(self, rc: _RequestConnection) -> tuple[asyncio.Transport, bytes]:
        self._uncork()
        self._detached = True
        self._pstate = _DONE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._server._connections.discard(self)
        self._rx = self._tx = None
        self._backlog = None
        rc._close_callback = None
        tail = self._upgrade_tail or b""
        self._upgrade_tail = None
        if self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()
        return self._transport, tail

    # -- flow control and timers -------------------------------------------------

    def _pause_reading(self) -> None:
        if not self._closed and not self._transport.is_closing():
            self._reading_paused = True
            self._transport.pause_reading()

    def _set_body_deadline(self, timeout: float) -> None:
        self._deadline = self._loop.time() + timeout
        if self._timer is None or self._timer_at > self._deadline:
            self._arm_timer(self._deadline)

    def _arm_timer(self, deadline: float) -> None:
        # The timer never sleeps longer than one tick (the shortest timeout),
        # so a deadline set later never needs it re-armed sooner: a request
        # on a keep-alive connection costs no timer operations at all.
        if self._timer is not None:
            self._timer.cancel()
        when = min(deadline, self._loop.time() + self._tick)
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed or self._detached:
            return
        now = self._loop.time()
        deadline = self._deadline
        if now < deadline:
            if deadline != _NEVER:
                self._arm_timer(deadline)
            return
        if self._lingering:
            self._transport.close()
        elif self._pstate is _HEAD and self._tx is None:
            gen_log.log(_PEER_ERROR_LEVEL, "Timeout reading request headers from %s", self._context)
            self._transport.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
            self._close_soon(lingering=True)
        elif self._pstate is _BODY and self._rx is not None:
            gen_log.log(_PEER_ERROR_LEVEL, "Timeout reading body from %s", self._context)
            rx = self._rx
            self._rx = None
            if rx._delegate is not None:
                self._call_delegate_close(rx._delegate)
            self._abort()
        elif self._tx is None and self._backlog is None:
            # Idle keep-alive connection: close quietly.
            self._pstate = _DONE
            self._transport.close()

    # -- server-side API (used by HTTPServer) ------------------------------------

    async def close(self) -> None:
        """Close the connection and wait until it is closed."""
        if self._closed:
            return
        if self._closed_waiter is None:
            self._closed_waiter = self._loop.create_future()
        waiter = self._closed_waiter
        self._pstate = _DONE
        transport = self._transport
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()
        await waiter
