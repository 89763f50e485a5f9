"""HTTP/1.x over an `~squall.iostream.IOStream`: the client side of
`squall.simple_httpclient`, and a server connection for code that already
holds a stream.

`squall.httpserver.HTTPServer` does not use these classes for the
connections it accepts: it serves them with a faster `asyncio.Protocol`
(in ``squall._http1server``) that implements the same
`~squall.httputil.HTTPConnection` interface and honours the same
`HTTP1ConnectionParameters`.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from typing import Any, Awaitable, Callable, Optional, Union

from squall import _abnf, httputil, iostream
from squall.log import app_log, gen_log
from squall.util import GzipDecompressor

__all__ = [
    "CR_OR_LF_RE",
    "DIGITS",
    "HEXDIGITS",
    "HTTP1Connection",
    "HTTP1ConnectionParameters",
    "HTTP1ServerConnection",
    "is_transfer_encoding_chunked",
    "parse_hex_int",
    "parse_int",
]

# A CR or LF in a header name or value would end the line early and let the
# rest be read as another header or a body (response splitting).
CR_OR_LF_RE = re.compile(b"\r|\n")

# Only ASCII digits: ``int()`` also accepts signs, underscores, whitespace
# and non-ASCII digits, none of which HTTP allows in a length.
DIGITS = re.compile(r"[0-9]+")
HEXDIGITS = re.compile(r"[0-9a-fA-F]+")


def parse_int(s: str) -> int:
    """Parse a non-negative decimal integer made only of ASCII digits.

    Raises `ValueError` for anything else (``"+1"``, ``"1_0"``, ``" 1"``),
    although ``int()`` would accept it.
    """
    if not DIGITS.fullmatch(s):
        raise ValueError(f"not a decimal integer: {s!r}")
    return int(s)


def parse_hex_int(s: str) -> int:
    """Parse a non-negative hexadecimal integer made only of hex digits.

    Raises `ValueError` for anything else (``"0x1"``, ``"1_a"``).
    """
    if not HEXDIGITS.fullmatch(s):
        raise ValueError(f"not a hexadecimal integer: {s!r}")
    return int(s, 16)


def is_transfer_encoding_chunked(headers: httputil.HTTPHeaders) -> bool:
    """Return whether ``headers`` declare a chunked body.

    Only the single coding ``chunked`` (any case) is supported: any other
    ``Transfer-Encoding`` value raises `~squall.httputil.HTTPInputError`
    (RFC 9112 6.1: a recipient must not guess at codings it does not apply).
    """
    if "Transfer-Encoding" not in headers:
        return False
    value = headers["Transfer-Encoding"]
    if "Content-Length" in headers:
        raise httputil.HTTPInputError("Message with both Transfer-Encoding and Content-Length")
    try:
        return _abnf.is_transfer_encoding_chunked(value)
    except ValueError:
        raise httputil.HTTPInputError(f"Unsupported Transfer-Encoding {value}") from None


class HTTP1ConnectionParameters:
    """Settings for an HTTP/1.x connection (client or server).

    :arg bool no_keep_alive: close the connection after each request.
    :arg int chunk_size: largest piece of body passed to ``data_received``.
    :arg int max_header_size: largest request/response head, in bytes.
    :arg float header_timeout: seconds allowed for the head to arrive.
    :arg int max_body_size: largest body, in bytes.
    :arg float body_timeout: seconds allowed for the body to arrive.
    :arg bool decompress: decode ``Content-Encoding: gzip`` bodies.

    ``None`` means the default (see ``squall._http1server`` for the
    server's limits and their precedents).
    """

    def __init__(
        self,
        no_keep_alive: bool = False,
        chunk_size: Optional[int] = None,
        max_header_size: Optional[int] = None,
        header_timeout: Optional[float] = None,
        max_body_size: Optional[int] = None,
        body_timeout: Optional[float] = None,
        decompress: bool = False,
    ) -> None:
        for name, value in (
            ("chunk_size", chunk_size),
            ("max_header_size", max_header_size),
            ("max_body_size", max_body_size),
        ):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative int or None, got {value!r}")
        for name, value in (("header_timeout", header_timeout), ("body_timeout", body_timeout)):
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"{name} must be a positive number or None, got {value!r}")
        self.no_keep_alive = no_keep_alive
        self.chunk_size = chunk_size or 65536
        self.max_header_size = max_header_size or 65536
        self.header_timeout = header_timeout
        self.max_body_size = max_body_size
        self.body_timeout = body_timeout
        self.decompress = decompress


# Interim (1xx) responses a client accepts before the final one; a server
# that sends more is stalling (h11 and Tornado bound them likewise).
_MAX_1XX_RESPONSES = 10
# While decoding a chunked body whose data is already buffered, yield to the
# event loop after this many chunks so that a body of many tiny chunks
# cannot monopolise it.
_CHUNKS_PER_YIELD = 64
# Largest request or response body, in bytes, unless the parameters say
# otherwise (Tornado's max_body_size default: 100 MB).
_DEFAULT_MAX_BODY_SIZE = 100 * 1024 * 1024
_HEAD_END_RE = re.compile(b"\r?\n\r?\n")


class _TooLarge(httputil.HTTPInputError):
    """A body over the size limit: answered 413 Content Too Large
    (RFC 9110 15.5.14), as the HTTP server's fast path answers it."""


class _DelegateFailed(Exception):
    """A delegate callback raised; it has been logged already."""


def _call(method: Callable[..., Any], *args: Any) -> Optional[Awaitable[None]]:
    # Application code: log what it raises once, as Tornado does, and let
    # the connection close quietly. An awaitable it returns gets the same
    # treatment when awaited.
    try:
        result = method(*args)
    except httputil.HTTPInputError:
        # The delegate found the message malformed: a peer error, answered
        # like one found by the connection itself.
        raise
    except Exception:
        app_log.error("Uncaught exception", exc_info=True)
        raise _DelegateFailed() from None
    return None if result is None else _awaited(result)


async def _awaited(result: Awaitable[Any]) -> None:
    try:
        await result
    except httputil.HTTPInputError:
        raise
    except asyncio.CancelledError:
        if _cancelling():
            raise
        # Something the delegate awaited was cancelled, not this read.
        app_log.error("Uncaught exception", exc_info=True)
        raise _DelegateFailed() from None
    except Exception:
        app_log.error("Uncaught exception", exc_info=True)
        raise _DelegateFailed() from None


def _cancelling() -> bool:
    """Whether the running task has been asked to cancel."""
    task = asyncio.current_task()
    # Task.cancelling() is new in Python 3.11; before it, a cancellation
    # is taken to be the task's own.
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0


def _content_length(value: str) -> int:
    try:
        return _abnf.parse_content_length(value)
    except ValueError:
        if "," in value:
            raise httputil.HTTPInputError(f"Multiple unequal Content-Lengths: {value!r}") from None
        raise httputil.HTTPInputError(
            f"Only integer Content-Length is allowed: {value!r}"
        ) from None


class HTTP1Connection(httputil.HTTPConnection):
    """One HTTP/1.x message exchange over an `~squall.iostream.IOStream`.

    On a client (``is_client=True``) the caller writes a request with
    `write_headers` / `write` / `finish` and reads the response with
    `read_response`; on a server it is the other way round (see
    `HTTP1ServerConnection`). ``params`` is an `HTTP1ConnectionParameters`;
    ``context`` describes the peer (it appears in log messages and, on a
    server, as ``request.connection.context``).
    """

    def __init__(
        self,
        stream: "iostream.IOStream",
        is_client: bool,
        params: Optional[HTTP1ConnectionParameters] = None,
        context: Optional[object] = None,
    ) -> None:
        self.is_client = is_client
        self.stream: Optional["iostream.IOStream"] = stream
        if params is None:
            params = HTTP1ConnectionParameters()
        self.params = params
        self.context = context
        self.no_keep_alive = params.no_keep_alive
        self._max_body_size = (
            params.max_body_size if params.max_body_size is not None else _DEFAULT_MAX_BODY_SIZE
        )
        self._body_timeout = params.body_timeout
        # Whether the message we write, and the one we read, are complete.
        self._write_finished = False
        self._read_finished = False
        self._disconnect_on_finish = False
        self._close_callback: Optional[Callable[[], None]] = None
        self._finish_future: Optional["asyncio.Future[None]"] = None
        # The request line and headers (sent as a client, received as a
        # server), which decide how the response is framed.
        self._request_start_line: Optional[httputil.RequestStartLine] = None
        self._request_headers: Optional[httputil.HTTPHeaders] = None
        self._response_code = 0
        self._chunking_output = False
        self._expected_content_remaining: Optional[int] = None
        self._headers_written = False
        self._pending_write: Optional["asyncio.Future[None]"] = None

    # -- reading ------------------------------------------------------------------

    def read_response(self, delegate: httputil.HTTPMessageDelegate) -> "asyncio.Future[bool]":
        """Read one message (a response on a client, a request on a server)
        into ``delegate``.

        Returns a future that resolves to True when the message was read and
        the connection may carry another, and to False when the connection
        was closed: by the peer, after a malformed message (logged to
        ``squall.general`` and, on a server, answered 400), after a timeout,
        or because a delegate method raised (logged to
        ``squall.application``; the delegate then gets
        ``on_connection_close``).
        """
        return asyncio.ensure_future(self._read_message(delegate))

    async def _read_message(self, delegate: httputil.HTTPMessageDelegate) -> bool:
        # read_response without the task around it, for squall's own client,
        # which awaits it at once.
        if self.params.decompress:
            delegate = _GzipMessageDelegate(delegate, self.params.chunk_size, self)
        stream = self.stream
        assert stream is not None
        need_delegate_close = False
        try:
            interim = 0
            while True:
                head = await self._read_head(stream)
                if head is None:
                    return False
                start_line, headers = head
                need_delegate_close = True
                result = _call(delegate.headers_received, start_line, headers)
                if result is not None:
                    await result
                if self.stream is None:
                    # detached by the delegate
                    need_delegate_close = False
                    return False
                code = self._response_code
                if not (self.is_client and 100 <= code < 200 and code != 101):
                    break
                # An interim response: the final one follows.
                if "Content-Length" in headers or "Transfer-Encoding" in headers:
                    raise httputil.HTTPInputError(f"Response code {code} cannot have a body")
                interim += 1
                if interim > _MAX_1XX_RESPONSES:
                    raise httputil.HTTPInputError("Too many 1xx responses")
            if not self.is_client and headers.get("Expect", "").lower() == "100-continue":
                if start_line.version == "HTTP/1.1" and not self._headers_written:  # type: ignore[union-attr]
                    stream.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if not self._skip_body():
                body = self._read_body(headers, delegate)
                if body is not None:
                    if self._body_timeout is None:
                        await body
                    elif not await _within(body, self._body_timeout):
                        gen_log.info("Timeout reading body from %s", self.context)
                        stream.close()
                        return False
            self._read_finished = True
            if not self._write_finished or self.is_client:
                if isinstance(delegate, _GzipMessageDelegate):
                    result = _call(delegate.flush)
                    if result is not None:
                        await result
                _call(delegate.finish)
            need_delegate_close = False
            if not self.is_client and self.stream is not None and not stream.closed():
                # A server reads the next request only once this one has
                # been answered.
                if not self._write_finished:
                    stream.set_close_callback(self._on_connection_close)
                    await self._finish_waiter()
            if self.is_client and self._disconnect_on_finish:
                self.close()
            return self.stream is not None and not self._disconnect_on_finish
        except httputil.HTTPInputError as e:
            gen_log.info("Malformed HTTP message from %s: %s", self.context, e)
            if not self.is_client and not self._headers_written and not stream.closed():
                status = b"413 Content Too Large" if isinstance(e, _TooLarge) else b"400 Bad Request"
                await _quietly(stream.write(b"HTTP/1.1 " + status + b"\r\n\r\n"))
            self.close()
            return False
        except _DelegateFailed:
            self.close()
            return False
        except (iostream.StreamClosedError, iostream.UnsatisfiableReadError):
            self.close()
            return False
        finally:
            if need_delegate_close:
                try:
                    delegate.on_connection_close()
                except Exception:
                    app_log.error("Uncaught exception", exc_info=True)
            self._clear_callbacks()

    async def _read_head(
        self, stream: "iostream.IOStream"
    ) -> Optional[tuple[Union[httputil.RequestStartLine, httputil.ResponseStartLine], httputil.HTTPHeaders]]:
        reading = stream.read_until_regex(_HEAD_END_RE, max_bytes=self.params.max_header_size)
        if self.params.header_timeout is None:
            data = await reading
        elif not await _within(reading, self.params.header_timeout):
            if not self.is_client:
                gen_log.info("Timeout reading request headers from %s", self.context)
            self.close()
            return None
        else:
            data = reading.result()
        text = data.decode("latin-1").lstrip("\r\n")
        first, _, rest = text.partition("\n")
        first = first.rstrip("\r")
        headers = httputil.HTTPHeaders.parse(rest)
        if self.is_client:
            response_line = httputil.parse_response_start_line(first)
            self._response_code = response_line.code
            if not self._can_keep_alive(response_line.version, headers):
                self._disconnect_on_finish = True
            return response_line, headers
        try:
            request_line = httputil.parse_request_start_line(first)
        except httputil.HTTPInputError:
            raise httputil.HTTPInputError("Malformed HTTP request line") from None
        self._request_start_line = request_line
        self._request_headers = headers
        self._disconnect_on_finish = not self._can_keep_alive(request_line.version, headers)
        return request_line, headers

    def _can_keep_alive(self, version: str, headers: httputil.HTTPHeaders) -> bool:
        if self.params.no_keep_alive:
            return False
        tokens = _tokens(headers.get("Connection"))
        if version == "HTTP/1.1":
            return "close" not in tokens
        if "keep-alive" not in tokens:
            return False
        # HTTP/1.0 keep-alive needs a message whose end the reader can find.
        return (
            "Content-Length" in headers
            or "Transfer-Encoding" in headers
            or (not self.is_client and self._request_has_no_body(headers))
        )

    @staticmethod
    def _request_has_no_body(headers: httputil.HTTPHeaders) -> bool:
        return "Content-Length" not in headers and "Transfer-Encoding" not in headers

    def _skip_body(self) -> bool:
        if not self.is_client:
            return False
        code = self._response_code
        method = self._request_start_line.method if self._request_start_line else None
        return method == "HEAD" or code == 304 or 100 <= code < 200

    def _read_body(
        self, headers: httputil.HTTPHeaders, delegate: httputil.HTTPMessageDelegate
    ) -> Optional[Awaitable[None]]:
        content_length: Optional[int] = None
        if self.is_client and self._response_code == 204:
            # No body, and no reading until close either (RFC 9110 15.3.5);
            # a 204 that announces one is malformed.
            if "Transfer-Encoding" in headers or headers.get("Content-Length", "0") != "0":
                raise httputil.HTTPInputError("Response with code 204 should not have body")
            return None
        if "Content-Length" in headers:
            if "Transfer-Encoding" in headers:
                raise httputil.HTTPInputError(
                    "Message with both Transfer-Encoding and Content-Length"
                )
            content_length = _content_length(headers["Content-Length"])
            if content_length > self._max_body_size:
                raise _TooLarge("Content-Length too long")
        if is_transfer_encoding_chunked(headers):
            return self._read_chunked_body(delegate)
        if content_length is not None:
            return self._read_fixed_body(content_length, delegate) if content_length else None
        if self.is_client:
            return self._read_body_until_close(delegate)
        return None

    async def _deliver(self, delegate: httputil.HTTPMessageDelegate, data: bytes) -> None:
        if self._write_finished and not self.is_client:
            # The response went out before the request was read: the rest
            # of the request is discarded.
            return
        size = self.params.chunk_size
        for start in range(0, len(data), size):
            result = _call(delegate.data_received, data[start : start + size])
            if result is not None:
                await result

    async def _read_fixed_body(self, content_length: int, delegate: httputil.HTTPMessageDelegate) -> None:
        stream = self.stream
        assert stream is not None
        while content_length > 0:
            piece = await stream.read_bytes(min(self.params.chunk_size, content_length), partial=True)
            content_length -= len(piece)
            await self._deliver(delegate, piece)

    async def _read_chunked_body(self, delegate: httputil.HTTPMessageDelegate) -> None:
        stream = self.stream
        assert stream is not None
        total = 0
        pending: list[bytes] = []
        pending_size = 0
        since_yield = 0
        chunk_size = self.params.chunk_size
        while True:
            reading = stream.read_until(b"\r\n", max_bytes=_abnf.MAX_CHUNK_LINE_LENGTH + 2)
            if pending and not reading.done():
                # About to wait for the network: hand over what we have.
                await self._deliver(delegate, b"".join(pending))
                pending, pending_size = [], 0
            line = await reading
            try:
                size = _abnf.parse_chunk_size(line)
            except ValueError:
                raise httputil.HTTPInputError(f"invalid chunk size: {line[:64]!r}") from None
            if size == 0:
                break
            total += size
            if total > self._max_body_size:
                raise _TooLarge("chunked body too large")
            remaining = size
            while remaining:
                reading = stream.read_bytes(min(chunk_size, remaining), partial=True)
                if pending and not reading.done():
                    await self._deliver(delegate, b"".join(pending))
                    pending, pending_size = [], 0
                piece = await reading
                remaining -= len(piece)
                pending.append(piece)
                pending_size += len(piece)
                if pending_size >= chunk_size:
                    await self._deliver(delegate, b"".join(pending))
                    pending, pending_size = [], 0
            if await stream.read_bytes(2) != b"\r\n":
                raise httputil.HTTPInputError("improperly terminated chunk")
            since_yield += 1
            if since_yield == _CHUNKS_PER_YIELD:
                since_yield = 0
                await asyncio.sleep(0)
        # Trailer fields (RFC 9112 7.1.2) are read and discarded, within the
        # header size limit.
        trailer_size = 0
        while True:
            line = await stream.read_until(b"\n", max_bytes=self.params.max_header_size)
            if line in (b"\r\n", b"\n"):
                break
            trailer_size += len(line)
            if trailer_size > self.params.max_header_size:
                raise httputil.HTTPInputError("chunked trailer too large")
        if pending:
            await self._deliver(delegate, b"".join(pending))

    async def _read_body_until_close(self, delegate: httputil.HTTPMessageDelegate) -> None:
        # The body ends when the server closes the connection, so the
        # connection cannot carry another response.
        self._disconnect_on_finish = True
        stream = self.stream
        assert stream is not None
        received = 0
        while True:
            try:
                piece = await stream.read_bytes(self.params.chunk_size, partial=True)
            except iostream.StreamClosedError:
                if stream.error is not None and not isinstance(
                    stream.error, (ConnectionResetError, BrokenPipeError)
                ):
                    raise
                return
            received += len(piece)
            if received > self._max_body_size:
                raise _TooLarge("Body too long")
            await self._deliver(delegate, piece)

    # -- writing ------------------------------------------------------------------

    def write_headers(
        self,
        start_line: Union[httputil.RequestStartLine, httputil.ResponseStartLine],
        headers: httputil.HTTPHeaders,
        chunk: Optional[bytes] = None,
    ) -> "asyncio.Future[None]":
        """Write a request (client) or response (server) head, and ``chunk``.

        A client request with a body-carrying method and no
        ``Content-Length`` is sent chunked; so is a server response to an
        HTTP/1.1 request that has no ``Content-Length`` (and may have a
        body). Raises `ValueError` for a CR or LF in a header and
        `~squall.httputil.HTTPOutputError` for a non-numeric
        ``Content-Length``.
        """
        if self._headers_written:
            raise httputil.HTTPOutputError("write_headers called twice")
        lines = []
        if self.is_client:
            assert isinstance(start_line, httputil.RequestStartLine)
            self._request_start_line = start_line
            lines.append(f"{start_line.method} {start_line.path} HTTP/1.1")
            self._chunking_output = (
                start_line.method in ("POST", "PUT", "PATCH")
                and "Content-Length" not in headers
                and "Transfer-Encoding" not in headers
            )
            if "close" in _tokens(headers.get("Connection")):
                self._disconnect_on_finish = True
        else:
            assert isinstance(start_line, httputil.ResponseStartLine)
            request = self._request_start_line
            assert request is not None and self._request_headers is not None
            self._response_code = start_line.code
            lines.append(f"HTTP/1.1 {start_line.code} {start_line.reason or ''}")
            no_body = request.method == "HEAD" or start_line.code in (204, 304) or start_line.code < 200
            self._chunking_output = (
                request.version == "HTTP/1.1"
                and not no_body
                and "Content-Length" not in headers
                and "Transfer-Encoding" not in headers
            )
            if headers.get("Connection", "").lower() == "close":
                self._disconnect_on_finish = True
            if (
                not no_body
                and not self._chunking_output
                and "Content-Length" not in headers
                and "Transfer-Encoding" not in headers
            ):
                # The body ends when the connection does.
                self._disconnect_on_finish = True
            if request.version == "HTTP/1.1" and self._disconnect_on_finish:
                if "Connection" not in headers:
                    lines.append("Connection: close")
            elif (
                request.version == "HTTP/1.0"
                and not self._disconnect_on_finish
                and "Connection" not in headers
            ):
                lines.append("Connection: Keep-Alive")
            if no_body:
                self._expected_content_remaining = 0
        if self._chunking_output:
            lines.append("Transfer-Encoding: chunked")
        if "Content-Length" in headers and (self.is_client or not self._chunking_output):
            try:
                self._expected_content_remaining = parse_int(headers["Content-Length"])
            except ValueError:
                raise httputil.HTTPOutputError(
                    f"Invalid Content-Length {headers['Content-Length']!r}"
                ) from None
            if not self.is_client and self._response_code in (204, 304):
                self._expected_content_remaining = 0
            elif not self.is_client and self._request_start_line.method == "HEAD":  # type: ignore[union-attr]
                self._expected_content_remaining = 0
        header_lines = [f"{name}: {value}" for name, value in headers.get_all()]
        for line in header_lines:
            if CR_OR_LF_RE.search(line.encode("latin-1")):
                raise ValueError(f"Illegal characters (CR or LF) in header: {line!r}")
        lines[1:1] = header_lines
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._headers_written = True
        if chunk:
            data += self._format_chunk(chunk)
        return self._write_data(data)

    def _format_chunk(self, chunk: bytes) -> bytes:
        if self._expected_content_remaining is not None:
            self._expected_content_remaining -= len(chunk)
            if self._expected_content_remaining < 0:
                self.close()
                raise httputil.HTTPOutputError("Tried to write more data than Content-Length")
        if self._chunking_output and chunk:
            return b"%x\r\n%b\r\n" % (len(chunk), chunk)
        return chunk

    def _write_data(self, data: bytes) -> "asyncio.Future[None]":
        stream = self.stream
        if stream is None or stream.closed():
            from squall.iostream import StreamClosedError

            future = asyncio.get_event_loop().create_future()
            future.set_exception(StreamClosedError())
            future.exception()  # a write nobody awaits must not warn
            return future
        self._pending_write = future = stream.write(data)
        return future

    def write(self, chunk: bytes) -> "asyncio.Future[None]":
        """Write a piece of the body (framed as a chunk when chunking).
        Raises `~squall.httputil.HTTPOutputError` past ``Content-Length``."""
        return self._write_data(self._format_chunk(chunk))

    def finish(self) -> None:
        """Finish the message. Raises `~squall.httputil.HTTPOutputError`
        (and closes the connection) if less was written than
        ``Content-Length`` announced."""
        if self._expected_content_remaining:
            remaining = self._expected_content_remaining
            self.close()
            raise httputil.HTTPOutputError(
                f"Tried to write {remaining} bytes less than Content-Length"
            )
        if self._chunking_output and self.stream is not None and not self.stream.closed():
            self._pending_write = self.stream.write(b"0\r\n\r\n")
        self._write_finished = True
        if not self._read_finished and not self.is_client:
            # Answered before the request was read: the rest of it is not
            # worth reading, and the connection cannot be reused.
            self._disconnect_on_finish = True
        if self.stream is not None and not self.is_client:
            # Let TCP send the last segment at once, instead of waiting for
            # an acknowledgement of the previous one (Nagle). A client's
            # socket keeps its owner's setting (squall's client turns Nagle
            # off once per connection).
            self.stream.set_nodelay(True)
        pending = self._pending_write
        if pending is None or pending.done():
            self._finish_request(pending)
        else:
            pending.add_done_callback(self._finish_request)

    def _finish_request(self, future: Optional["asyncio.Future[None]"]) -> None:
        if future is not None and not future.cancelled():
            future.exception()  # a failed write is reported by the close
        self._clear_callbacks()
        if not self.is_client and self._disconnect_on_finish:
            self.close()
            return
        if self.stream is not None and not self.is_client:
            self.stream.set_nodelay(False)
        waiter = self._finish_future
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- connection management ---------------------------------------------------

    def _finish_waiter(self) -> "asyncio.Future[None]":
        if self._finish_future is None:
            self._finish_future = asyncio.get_event_loop().create_future()
            if self._write_finished:
                self._finish_future.set_result(None)
        return self._finish_future

    def set_close_callback(self, callback: Optional[Callable[[], None]]) -> None:
        """Call ``callback`` (no arguments) if the connection closes while
        this message is in progress; ``None`` clears it."""
        self._close_callback = callback
        if callback is not None and self.stream is not None:
            self.stream.set_close_callback(self._on_connection_close)

    def _on_connection_close(self) -> None:
        callback = self._close_callback
        self._close_callback = None
        if callback is not None:
            callback()
        waiter = self._finish_future
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._clear_callbacks()

    def _clear_callbacks(self) -> None:
        self._close_callback = None
        if self.stream is not None:
            self.stream.set_close_callback(None)

    def close(self) -> None:
        """Close the underlying stream."""
        if self.stream is not None:
            self.stream.close()
        self._clear_callbacks()
        waiter = self._finish_future
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def detach(self) -> "iostream.IOStream":
        """Take the stream away from this connection (for WebSocket and other
        upgrades) and return it; the connection then does nothing more."""
        self._clear_callbacks()
        stream = self.stream
        assert stream is not None
        self.stream = None
        waiter = self._finish_future
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return stream

    def set_body_timeout(self, timeout: float) -> None:
        """Allow ``timeout`` seconds for this message's body (instead of the
        parameters' ``body_timeout``)."""
        self._body_timeout = timeout

    def set_max_body_size(self, max_body_size: int) -> None:
        """Allow this message's body up to ``max_body_size`` bytes (instead
        of the parameters' ``max_body_size``)."""
        self._max_body_size = max_body_size


def _tokens(value: Optional[str]) -> set[str]:
    """The lower-cased members of a comma-separated header value."""
    if not value:
        return set()
    return {token.strip(" \t").lower() for token in value.split(",")}


async def _within(awaitable: Awaitable[Any], timeout: float) -> bool:
    """Wait for ``awaitable`` up to ``timeout`` seconds without cancelling it
    (an IOStream read must not be cancelled halfway); True if it finished."""
    future = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({future}, timeout=timeout)
    if done:
        future.result()
        return True
    future.add_done_callback(_consume)
    return False


def _consume(future: "asyncio.Future[Any]") -> None:
    if not future.cancelled():
        future.exception()


async def _quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except iostream.StreamClosedError:
        pass


class _GzipMessageDelegate(httputil.HTTPMessageDelegate):
    """Decompresses a ``Content-Encoding: gzip`` body for the delegate it
    wraps, in pieces of at most ``chunk_size`` bytes."""

    def __init__(
        self, delegate: httputil.HTTPMessageDelegate, chunk_size: int, connection: HTTP1Connection
    ) -> None:
        self._delegate = delegate
        self._chunk_size = chunk_size
        # The decompressed body counts against the connection's
        # max_body_size, so a small "zip bomb" cannot expand without bound.
        self._connection = connection
        self._decompressed = 0
        self._decompressor: Optional[GzipDecompressor] = None

    def headers_received(
        self,
        start_line: Union[httputil.RequestStartLine, httputil.ResponseStartLine],
        headers: httputil.HTTPHeaders,
    ) -> Optional[Awaitable[None]]:
        if headers.get("Content-Encoding", "").strip(" \t").lower() == "gzip":
            self._decompressor = GzipDecompressor()
            # The delegate sees the decoded body, so the header describing
            # the encoded one moves aside.
            headers.add("X-Consumed-Content-Encoding", headers["Content-Encoding"])
            del headers["Content-Encoding"]
        return self._delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Optional[Awaitable[None]]:
        if self._decompressor is None:
            # Not compressed: passed through, with no coroutine in between.
            return self._delegate.data_received(chunk)
        return self._decompress(chunk, self._decompressor)

    async def _decompress(self, data: bytes, decompressor: GzipDecompressor) -> None:
        while data:
            try:
                piece = decompressor.decompress(data, self._chunk_size)
            except zlib.error as e:
                raise httputil.HTTPInputError(f"invalid gzip data: {e}") from None
            data = decompressor.unconsumed_tail
            self._count(piece)
            if piece:
                result = self._delegate.data_received(piece)
                if result is not None:
                    await result

    def flush(self) -> Optional[Awaitable[None]]:
        """Deliver what the decompressor still holds (before `finish`)."""
        if self._decompressor is None:
            return None
        try:
            tail = self._decompressor.flush()
        except zlib.error as e:
            raise httputil.HTTPInputError(f"invalid gzip data: {e}") from None
        self._count(tail)
        return self._delegate.data_received(tail) if tail else None

    def finish(self) -> None:
        return self._delegate.finish()

    def on_connection_close(self) -> None:
        return self._delegate.on_connection_close()

    def _count(self, piece: bytes) -> None:
        self._decompressed += len(piece)
        if self._decompressed > self._connection._max_body_size:
            raise _TooLarge("decompressed body too large")


class HTTP1ServerConnection:
    """Serves HTTP/1.x requests on one `~squall.iostream.IOStream`, one
    `HTTP1Connection` per request, until the stream closes."""

    def __init__(
        self,
        stream: "iostream.IOStream",
        params: Optional[HTTP1ConnectionParameters] = None,
        context: Optional[object] = None,
    ) -> None:
        self.stream = stream
        if params is None:
            params = HTTP1ConnectionParameters()
        self.params = params
        self.context = context
        self._serving_future: Optional["asyncio.Future[None]"] = None

    async def close(self) -> None:
        """Close the stream and wait until serving has stopped."""
        self.stream.close()
        if self._serving_future is not None:
            try:
                await self._serving_future
            except Exception:
                pass

    def start_serving(self, delegate: httputil.HTTPServerConnectionDelegate) -> None:
        """Start reading requests and passing them to ``delegate``."""
        if not isinstance(delegate, httputil.HTTPServerConnectionDelegate):
            raise TypeError(f"delegate must be an HTTPServerConnectionDelegate, got {delegate!r}")
        self._serving_future = asyncio.ensure_future(self._serve(delegate))

    async def _serve(self, delegate: httputil.HTTPServerConnectionDelegate) -> None:
        try:
            while True:
                conn = HTTP1Connection(self.stream, False, self.params, self.context)
                request_delegate = delegate.start_request(self, conn)
                try:
                    keep_going = await conn.read_response(request_delegate)
                except Exception:
                    gen_log.error("Uncaught exception serving HTTP", exc_info=True)
                    conn.close()
                    return
                if not keep_going:
                    return
                # Let other connections run between requests.
                await asyncio.sleep(0)
        finally:
            delegate.on_close(self)
