"""squall.httpserver: the HTTP/1.1 server, tested over real loopback sockets.

The helpers at the top (`serving`, `read_response`, `raw_exchange`,
`hello_app`) are shared with test_http_limits.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
from typing import Any, AsyncIterator, Optional

import pytest

from squall import httputil
from squall.httpserver import HTTPRequest, HTTPServer
from squall.httputil import (
    HTTPHeaders,
    HTTPMessageDelegate,
    HTTPOutputError,
    HTTPServerConnectionDelegate,
    HTTPServerRequest,
    ResponseStartLine,
)
from squall.testing import bind_unused_port

OK = ResponseStartLine("HTTP/1.1", 200, "OK")


def run(coro: Any) -> Any:
    """Run ``coro`` on a fresh event loop, failing after 20 seconds."""
    return asyncio.run(asyncio.wait_for(coro, 20))


@contextlib.asynccontextmanager
async def serving(app: Any, **options: Any) -> AsyncIterator[int]:
    """Serve ``app`` with an `HTTPServer` on a free loopback port."""
    server = HTTPServer(app, **options)
    sock, port = bind_unused_port()
    server.add_sockets([sock])
    try:
        yield port
    finally:
        server.stop()
        await server.close_all_connections()


async def read_response(
    reader: asyncio.StreamReader, method: str = "GET"
) -> tuple[int, HTTPHeaders, bytes]:
    """Read one response: (status code, headers, de-chunked body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, _, header_block = head.decode("latin-1").partition("\r\n")
    code = int(status_line.split(" ")[1])
    headers = HTTPHeaders.parse(header_block)
    if method == "HEAD" or code in (204, 304) or code < 200:
        return code, headers, b""
    if "Content-Length" in headers:
        body = await reader.readexactly(int(headers["Content-Length"]))
    elif headers.get("Transfer-Encoding") == "chunked":
        pieces = []
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            piece = await reader.readexactly(size + 2)
            assert piece.endswith(b"\r\n")
            if not size:
                break
            pieces.append(piece[:-2])
        body = b"".join(pieces)
    else:
        body = await asyncio.wait_for(reader.read(), 5)
    return code, headers, body


async def raw_exchange(
    port: int, request: bytes, method: str = "GET"
) -> tuple[int, HTTPHeaders, bytes]:
    """Send one request on a new connection and read the response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return await read_response(reader, method)
    finally:
        writer.close()


def respond(request: HTTPServerRequest, body: bytes, **headers: str) -> None:
    """Write a complete response with a Content-Length."""
    h = HTTPHeaders({"Content-Length": str(len(body))})
    for name, value in headers.items():
        h[name.replace("_", "-")] = value
    request.connection.write_headers(OK, h, body)  # type: ignore[union-attr]
    request.connection.finish()  # type: ignore[union-attr]


def hello_app(request: HTTPServerRequest) -> None:
    """Answers ``hello <path>`` (and the body's length, if any); ``/slow``
    answers a little later, from a timer."""
    text = f"hello {request.path}"
    if request.body:
        text += f" {len(request.body)}"
    if request.path == "/slow":
        asyncio.get_running_loop().call_later(0.05, respond, request, text.encode())
    else:
        respond(request, text.encode())


class _Delegate(HTTPMessageDelegate):
    """A message delegate built from plain functions (for one-off apps)."""

    def __init__(self, conn: httputil.HTTPConnection, app: "DelegateApp") -> None:
        self.conn = conn
        self.app = app
        self.chunks: list[bytes] = []
        self.start_line: Any = None
        self.headers: Optional[HTTPHeaders] = None

    def headers_received(self, start_line: Any, headers: HTTPHeaders) -> Any:
        self.start_line, self.headers = start_line, headers
        self.app.events.append(("headers", start_line.path))
        if self.app.on_headers is not None:
            return self.app.on_headers(self)
        return None

    def data_received(self, chunk: bytes) -> Any:
        self.chunks.append(chunk)
        self.app.events.append(("data", len(chunk)))
        if self.app.on_data is not None:
            return self.app.on_data(self, chunk)
        return None

    def finish(self) -> None:
        self.app.events.append(("finish", self.start_line.path))
        if self.app.on_finish is not None:
            self.app.on_finish(self)

    def on_connection_close(self) -> None:
        self.app.events.append(("close", self.start_line.path if self.start_line else None))


class DelegateApp(HTTPServerConnectionDelegate):
    def __init__(self, on_finish: Any = None, on_headers: Any = None, on_data: Any = None):
        self.on_finish, self.on_headers, self.on_data = on_finish, on_headers, on_data
        self.events: list[tuple] = []
        self.delegates: list[_Delegate] = []

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> Any:
        delegate = _Delegate(request_conn, self)
        self.delegates.append(delegate)
        return delegate


# --- Basics ---------------------------------------------------------------------


def test_hello_and_headers():
    async def main():
        async with serving(hello_app) as port:
            code, headers, body = await raw_exchange(
                port, b"GET /path?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
            )
            assert (code, body) == (200, b"hello /path")
            assert headers["Content-Length"] == "11"
            assert headers["Date"].endswith(" GMT")
            assert "Connection" not in headers

    run(main())


def test_request_attributes():
    seen = {}

    def app(request: HTTPServerRequest) -> None:
        seen.update(
            method=request.method,
            uri=request.uri,
            version=request.version,
            remote_ip=request.remote_ip,
            protocol=request.protocol,
            host=request.host,
            header=request.headers["X-Header-Encoding-Test"],
            arguments=request.arguments,
        )
        respond(request, b"ok")

    async def main():
        async with serving(app) as port:
            await raw_exchange(
                port,
                b"POST /p?a=1 HTTP/1.1\r\nHost: h:1\r\nX-Header-Encoding-Test: \xe9\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\r\nb=2",
            )

    run(main())
    assert seen == dict(
        method="POST",
        uri="/p?a=1",
        version="HTTP/1.1",
        remote_ip="127.0.0.1",
        protocol="http",
        host="h:1",
        header="\u00e9",  # header bytes are latin-1
        arguments={"a": [b"1"], "b": [b"2"]},
    )


def test_httprequest_alias():
    assert HTTPRequest is HTTPServerRequest


def test_bad_arguments_raise():
    with pytest.raises(TypeError, match="request_callback"):
        HTTPServer(42)
    with pytest.raises(ValueError, match="protocol"):
        HTTPServer(hello_app, protocol="gopher")
    with pytest.raises(ValueError, match="max_body_size"):
        HTTPServer(hello_app, max_body_size=-1)


def test_keep_alive_and_pipelining_in_order():
    async def main():
        async with serving(hello_app) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # /slow is answered from a timer, after /fast would have been:
            # the responses must still come back in request order.
            writer.write(
                b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            bodies = [(await read_response(reader))[2] for _ in range(3)]
            assert bodies == [b"hello /slow", b"hello /fast", b"hello /slow"]
            writer.write(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader))[2] == b"hello /again"
            writer.close()

    run(main())


def test_many_pipelined_requests_bounded():
    # More pipelined requests than the backlog holds: reading pauses and
    # resumes, and every request is answered once, in order.
    count = 2000

    async def main():
        async with serving(hello_app) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            writer.write(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(count)))
            assert (await read_response(reader))[2] == b"hello /slow"
            for i in range(count):
                assert (await read_response(reader))[2] == b"hello /%d" % i
            writer.close()

    run(main())


def test_connection_close_request():
    async def main():
        async with serving(hello_app) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            code, headers, body = await read_response(reader)
            assert headers["Connection"] == "close"
            assert await reader.read() == b""
            writer.close()

    run(main())


def test_http10_closes_unless_keep_alive():
    async def main():
        async with serving(hello_app) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            code, headers, body = await read_response(reader)
            assert (code, body) == (200, b"hello /")
            assert "Connection" not in headers
            assert await reader.read() == b""
            writer.close()

            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(2):
                writer.write(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\r\n")
                code, headers, body = await read_response(reader)
                assert headers["Connection"] == "Keep-Alive"
            writer.close()

    run(main())


def test_no_keep_alive_option():
    async def main():
        async with serving(hello_app, no_keep_alive=True) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
            code, headers, body = await read_response(reader)
            assert headers["Connection"] == "close"
            assert await reader.read() == b""
            writer.close()

    run(main())


# --- Bodies both ways --------------------------------------------------------------


def test_chunked_request_body():
    async def main():
        async with serving(hello_app) as port:
            code, _, body = await raw_exchange(
                port,
                b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n"
                b"4;ext=1\r\nfoo=\r\n3\r\nbar\r\n0\r\nTrailer: x\r\n\r\n",
            )
            assert body == b"hello /echo 7"

    run(main())


def test_chunked_response_and_empty_writes():
    def finish(d: _Delegate) -> None:
        d.conn.write_headers(OK, HTTPHeaders())
        d.conn.write(b"hello ")
        d.conn.write(b"")  # an empty write must not end the body
        d.conn.write(b"world")
        d.conn.finish()

    async def main():
        async with serving(DelegateApp(on_finish=finish)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(2):
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                code, headers, body = await read_response(reader)
                assert headers["Transfer-Encoding"] == "chunked"
                assert body == b"hello world"
            writer.close()

    run(main())


def test_http10_response_without_length_closes():
    def finish(d: _Delegate) -> None:
        d.conn.write_headers(OK, HTTPHeaders(), b"all of it")
        d.conn.finish()

    async def main():
        async with serving(DelegateApp(on_finish=finish)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            code, headers, body = await read_response(reader)
            assert "Transfer-Encoding" not in headers
            assert body == b"all of it"  # read until close
            writer.close()

    run(main())


@pytest.mark.parametrize("method,code", [("HEAD", 200), ("GET", 204), ("GET", 304)])
def test_responses_without_body(method, code):
    def finish(d: _Delegate) -> None:
        d.conn.write_headers(ResponseStartLine("HTTP/1.1", code, "X"), HTTPHeaders())
        if method == "HEAD":
            d.conn.write(b"dropped for HEAD")
        d.conn.finish()

    async def main():
        async with serving(DelegateApp(on_finish=finish)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(2):
                writer.write(b"%s / HTTP/1.1\r\nHost: x\r\n\r\n" % method.encode())
                got, headers, _ = await read_response(reader, method)
                assert got == code
                assert "Transfer-Encoding" not in headers
            writer.close()

    run(main())


def test_body_on_204_is_refused():
    errors = []

    def finish(d: _Delegate) -> None:
        d.conn.write_headers(ResponseStartLine("HTTP/1.1", 204, "No Content"), HTTPHeaders())
        try:
            d.conn.write(b"x")
        except HTTPOutputError as e:
            errors.append(e)
        d.conn.finish()

    async def main():
        async with serving(DelegateApp(on_finish=finish)) as port:
            assert (await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))[0] == 204

    run(main())
    assert len(errors) == 1


def test_expect_100_continue():
    async def main():
        async with serving(hello_app) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert interim.startswith(b"HTTP/1.1 100 ")
            writer.write(b"a" * 1024)
            assert (await read_response(reader))[2] == b"hello / 1024"
            writer.close()

    run(main())


def test_no_100_continue_when_answered_early():
    def on_headers(d: _Delegate) -> None:
        d.conn.write_headers(
            ResponseStartLine("HTTP/1.1", 401, "Unauthorized"),
            HTTPHeaders({"Content-Length": "0"}),
        )
        d.conn.finish()

    async def main():
        async with serving(DelegateApp(on_headers=on_headers)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n"
            )
            code, headers, _ = await read_response(reader)
            assert code == 401
            # The body was never read, so the connection cannot be reused.
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()

    run(main())


def test_decompress_request():
    seen = {}

    def app(request: HTTPServerRequest) -> None:
        seen["body"] = request.body
        seen["headers"] = dict(request.headers)
        respond(request, b"ok")

    body = gzip.compress(b"foo=") + gzip.compress(b"bar")  # two gzip members

    async def main():
        async with serving(app, decompress_request=True) as port:
            await raw_exchange(
                port,
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Encoding: GZIP\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body,
            )

    run(main())
    assert seen["body"] == b"foo=bar"
    assert "Content-Encoding" not in seen["headers"]
    assert seen["headers"]["X-Consumed-Content-Encoding"] == "GZIP"


def test_gzip_left_alone_without_decompress_request():
    def finish(d: _Delegate) -> None:
        d.conn.write_headers(OK, HTTPHeaders({"Content-Length": "2"}), b"ok")
        d.conn.finish()

    app = DelegateApp(on_finish=finish)
    body = gzip.compress(b"foo=bar")

    async def main():
        async with serving(app) as port:
            await raw_exchange(
                port,
                b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body,
            )

    run(main())
    assert b"".join(app.delegates[0].chunks) == body
    assert app.delegates[0].headers["Content-Encoding"] == "gzip"


@pytest.mark.parametrize("framing", ["length", "chunked", "gzip"])
def test_chunk_size_caps_data_received(framing):
    body = b"0123456789" * 5

    def finish(d: _Delegate) -> None:
        sizes = ",".join(str(len(c)) for c in d.chunks).encode()
        d.conn.write_headers(OK, HTTPHeaders({"Content-Length": str(len(sizes))}), sizes)
        d.conn.finish()

    if framing == "length":
        request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n" + body
    elif framing == "chunked":
        request = (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"14\r\n" + body[:20] + b"\r\n1e\r\n" + body[20:] + b"\r\n0\r\n\r\n"
        )
    else:
        packed = gzip.compress(body)
        request = (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: %d\r\n\r\n" % len(packed) + packed
        )

    async def main():
        async with serving(DelegateApp(on_finish=finish), chunk_size=16, decompress_request=True) as port:
            return (await raw_exchange(port, request))[2]

    sizes = [int(s) for s in run(main()).split(b",")]
    assert sum(sizes) == 50
    assert all(0 < s <= 16 for s in sizes)
    if framing == "length":
        assert sizes == [16, 16, 16, 2]


# --- Flow control and hang-ups ----------------------------------------------------


def test_data_received_future_pauses_delivery():
    # A streaming delegate that is slow to digest each piece is not handed
    # the next one until it is ready, and nothing is lost or reordered.
    async def slow(d: _Delegate, chunk: bytes) -> None:
        await asyncio.sleep(0.001)

    def finish(d: _Delegate) -> None:
        body = b"".join(d.chunks)
        digest = str(len(body)).encode() + (b" ok" if body == payload else b" bad")
        d.conn.write_headers(OK, HTTPHeaders({"Content-Length": str(len(digest))}), digest)
        d.conn.finish()

    payload = bytes(range(256)) * 4096  # 1 MiB
    app = DelegateApp(on_finish=finish, on_data=slow)

    async def main():
        async with serving(app, chunk_size=4096) as port:
            return (
                await raw_exchange(
                    port,
                    b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(payload)
                    + payload,
                )
            )[2]

    assert run(main()) == b"1048576 ok"
    # Each piece was awaited before the next was delivered.
    kinds = [e[0] for e in app.events]
    assert kinds[0] == "headers" and kinds[-1] == "finish"
    assert set(kinds[1:-1]) == {"data"}


def test_on_connection_close_when_client_leaves_mid_body():
    app = DelegateApp()

    async def main():
        async with serving(app) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
            await writer.drain()
            for _ in range(100):
                if ("data", 3) in app.events:
                    break
                await asyncio.sleep(0.01)
            writer.close()
            for _ in range(200):
                if ("close", "/upload") in app.events:
                    break
                await asyncio.sleep(0.01)

    run(main())
    assert app.events == [("headers", "/upload"), ("data", 3), ("close", "/upload")]


def test_close_callback_when_client_hangs_up_on_slow_handler():
    closed = []

    def finish(d: _Delegate) -> None:
        # A long poll: the response is never finished, but the application
        # wants to know when the client gives up.
        d.conn.set_close_callback(lambda: closed.append(d.start_line.path))  # type: ignore[attr-defined]

    async def main():
        async with serving(DelegateApp(on_finish=finish)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.close()
            for _ in range(200):
                if closed:
                    break
                await asyncio.sleep(0.01)

    run(main())
    assert closed == ["/poll"]


def test_write_future_waits_for_slow_reader():
    state: dict[str, Any] = {}
    chunk = b"x" * (1024 * 1024)

    async def pump(d: _Delegate) -> None:
        d.conn.write_headers(OK, HTTPHeaders({"Content-Length": str(8 * len(chunk))}))
        waited = 0
        for _ in range(8):
            future = d.conn.write(chunk)
            if not future.done():
                waited += 1
            await future
        d.conn.finish()
        state["waited"] = waited

    def finish(d: _Delegate) -> None:
        state["task"] = asyncio.ensure_future(pump(d))

    async def main():
        async with serving(DelegateApp(on_finish=finish)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.sleep(0.2)  # let the server fill the socket buffers
            code, _, body = await read_response(reader)
            assert len(body) == 8 * len(chunk)
            await state["task"]
            writer.close()

    run(main())
    assert state["waited"] > 0


def test_writes_after_close_fail_quietly():
    results = []

    def finish(d: _Delegate) -> None:
        async def later() -> None:
            await asyncio.sleep(0.1)
            try:
                await d.conn.write_headers(OK, HTTPHeaders({"Content-Length": "2"}), b"hi")
            except Exception as e:
                results.append(type(e).__name__)

        asyncio.ensure_future(later())

    async def main():
        async with serving(DelegateApp(on_finish=finish)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.close()
            await asyncio.sleep(0.3)

    run(main())
    assert results == ["StreamClosedError"]


# --- Application mistakes -----------------------------------------------------------


def test_too_much_body_raises():
    errors = []

    def finish(d: _Delegate) -> None:
        d.conn.write_headers(OK, HTTPHeaders({"Content-Length": "2"}))
        try:
            d.conn.write(b"abc")
        except HTTPOutputError as e:
            errors.append(str(e))

    async def main():
        async with serving(DelegateApp(on_finish=finish)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(reader.read(), 5)
            writer.close()

    run(main())
    assert errors == ["Tried to write more data than Content-Length"]


def test_too_little_body_raises():
    errors = []

    def finish(d: _Delegate) -> None:
        d.conn.write_headers(OK, HTTPHeaders({"Content-Length": "5"}), b"abc")
        try:
            d.conn.finish()
        except HTTPOutputError as e:
            errors.append(str(e))

    async def main():
        async with serving(DelegateApp(on_finish=finish)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(reader.read(), 5)
            writer.close()

    run(main())
    assert errors == ["Tried to write 2 bytes less than Content-Length"]


@pytest.mark.parametrize("value", ["foo", "+10", "1_0"])
def test_invalid_output_content_length(value):
    errors = []

    def finish(d: _Delegate) -> None:
        try:
            d.conn.write_headers(OK, HTTPHeaders({"Content-Length": value}))
        except HTTPOutputError as e:
            errors.append(str(e))
        d.conn.write_headers(OK, HTTPHeaders({"Content-Length": "2"}), b"ok")
        d.conn.finish()

    async def main():
        async with serving(DelegateApp(on_finish=finish)) as port:
            assert (await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))[2] == b"ok"

    run(main())
    assert errors == [f"Invalid Content-Length {value!r}"]


def test_header_injection_raises():
    errors = []

    def finish(d: _Delegate) -> None:
        headers = HTTPHeaders({"Content-Length": "2"})
        headers["X-Evil"] = "a\r\nSet-Cookie: x=y"
        try:
            d.conn.write_headers(OK, headers, b"no")
        except ValueError as e:
            errors.append(str(e))
        d.conn.write_headers(OK, HTTPHeaders({"Content-Length": "2"}), b"ok")
        d.conn.finish()

    async def main():
        async with serving(DelegateApp(on_finish=finish)) as port:
            code, headers, body = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert body == b"ok"
            assert "Set-Cookie" not in headers

    run(main())
    assert len(errors) == 1 and "X-Evil" in errors[0]


def test_application_exception_is_logged_and_server_survives(caplog):
    def app(request: HTTPServerRequest) -> None:
        if request.path == "/boom":
            raise ZeroDivisionError("boom")
        respond(request, b"fine")

    async def main():
        async with serving(app) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            assert (await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))[2] == b"fine"

    run(main())
    errors = [r for r in caplog.records if r.name == "squall.application"]
    assert len(errors) == 1
    assert errors[0].exc_info[0] is ZeroDivisionError


def test_legacy_raw_write():
    def app(request: HTTPServerRequest) -> None:
        request.connection.write(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n")
        request.connection.write(b"Hello world")
        request.connection.finish()

    async def main():
        async with serving(app) as port:
            code, _, body = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (code, body) == (200, b"Hello world")

    run(main())


# --- Proxies ---------------------------------------------------------------------


def _ip_app(request: HTTPServerRequest) -> None:
    respond(request, f"{request.remote_ip} {request.protocol}".encode())


@pytest.mark.parametrize(
    "headers,expected",
    [
        (b"", "127.0.0.1 http"),
        (b"X-Real-IP: 4.4.4.4\r\n", "4.4.4.4 http"),
        (b"X-Forwarded-For: 127.0.0.1, 4.4.4.4\r\n", "4.4.4.4 http"),
        (b"X-Forwarded-For: 127.0.0.1, 4.4.4.4, 5.5.5.5\r\n", "4.4.4.4 http"),
        (b"X-Real-IP: 2620:0:1cfe:face:b00c::3\r\n", "2620:0:1cfe:face:b00c::3 http"),
        (b"X-Real-IP: 4.4.4.4<script>\r\n", "127.0.0.1 http"),
        (b"X-Real-IP: www.google.com\r\n", "127.0.0.1 http"),
        (b"X-Scheme: https\r\n", "127.0.0.1 https"),
        (b"X-Forwarded-Proto: https , http\r\n", "127.0.0.1 http"),
        (b"X-Forwarded-Proto: http,https\r\n", "127.0.0.1 https"),
        (b"X-Forwarded-Proto: unknown\r\n", "127.0.0.1 http"),
    ],
)
def test_xheaders(headers, expected):
    async def main():
        async with serving(_ip_app, xheaders=True, trusted_downstream=["5.5.5.5"]) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
            assert (await read_response(reader))[2] == expected.encode()
            # The next request on the connection starts from the real peer.
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader))[2] == b"127.0.0.1 http"
            writer.close()

    run(main())


def test_xheaders_ignored_by_default():
    async def main():
        async with serving(_ip_app) as port:
            request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Real-IP: 4.4.4.4\r\nX-Scheme: https\r\n\r\n"
            assert (await raw_exchange(port, request))[2] == b"127.0.0.1 http"

    run(main())


def test_protocol_option():
    async def main():
        async with serving(_ip_app, protocol="https") as port:
            request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            assert (await raw_exchange(port, request))[2] == b"127.0.0.1 https"

    run(main())


# --- Server lifecycle -------------------------------------------------------------


def test_close_all_connections():
    app = DelegateApp()

    async def main():
        server = HTTPServer(app)
        sock, port = bind_unused_port()
        server.add_sockets([sock])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        await writer.drain()
        for _ in range(100):
            if len(app.events) == 2:
                break
            await asyncio.sleep(0.01)
        server.stop()
        await server.close_all_connections()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()

    run(main())
    assert app.events[-1] == ("close", "/")


def test_http_input_error_from_delegate_is_400(caplog):
    caplog.set_level(logging.INFO, logger="squall.general")

    def on_headers(d: _Delegate) -> None:
        raise httputil.HTTPInputError("no thanks")

    async def main():
        async with serving(DelegateApp(on_headers=on_headers)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await asyncio.wait_for(reader.read(), 5) == b"HTTP/1.1 400 Bad Request\r\n\r\n"
            writer.close()

    run(main())
    messages = [r.getMessage() for r in caplog.records if r.name == "squall.general"]
    assert messages == ["Malformed HTTP message from 127.0.0.1: no thanks"]


def test_headers_received_awaitable_defers_body_checks():
    # headers_received may return an awaitable (an async prepare()) and raise
    # the body limit from there: the limit is checked only after it is done.
    async def on_headers(d: _Delegate) -> None:
        await asyncio.sleep(0.01)
        d.conn.set_max_body_size(10000)  # type: ignore[attr-defined]

    def finish(d: _Delegate) -> None:
        size = str(len(b"".join(d.chunks))).encode()
        d.conn.write_headers(OK, HTTPHeaders({"Content-Length": str(len(size))}), size)
        d.conn.finish()

    async def main():
        app = DelegateApp(on_headers=on_headers, on_finish=finish)
        async with serving(app, max_body_size=100) as port:
            request = b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"a" * 5000
            assert (await raw_exchange(port, request))[2] == b"5000"

    run(main())


def test_server_on_uvloop():
    uvloop = pytest.importorskip("uvloop")

    async def main():
        async with serving(hello_app) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for path in (b"/a", b"/slow", b"/b"):
                writer.write(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
            bodies = [(await read_response(reader))[2] for _ in range(3)]
            assert bodies == [b"hello /a", b"hello /slow", b"hello /b"]
            writer.close()

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(main(), 20))
    finally:
        loop.close()


# --- What llhttp alone would refuse -------------------------------------------------


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"])
def test_bare_lf_line_ends(newline):
    # RFC 9112 2.2 lets a server accept a bare LF as a line end.
    async def main():
        async with serving(hello_app) as port:
            request = newline.join([b"POST /lf HTTP/1.1", b"Host: x", b"Content-Length: 3", b"", b"abc"])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            assert (await read_response(reader))[2] == b"hello /lf 3"
            writer.write(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader))[2] == b"hello /next"
            writer.close()

    run(main())


def test_bare_lf_head_arriving_in_pieces():
    async def main():
        async with serving(hello_app) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /a HTTP/1.0\nX-A: 1\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"X-B: 2\n\n")
            assert (await read_response(reader))[2] == b"hello /a"
            writer.close()

    run(main())


def test_unknown_method_reaches_the_application():
    seen = []

    def app(request: HTTPServerRequest) -> None:
        seen.append((request.method, request.body))
        respond(request, request.method.encode())

    async def main():
        async with serving(app) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"FOO /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
            assert (await read_response(reader))[2] == b"FOO"
            writer.write(b"BREW /pot HTTP/1.1\nHost: x\n\n")
            assert (await read_response(reader))[2] == b"BREW"
            writer.close()

    run(main())
    assert seen == [("FOO", b"hi"), ("BREW", b"")]


# --- Taking the connection over, other transports ----------------------------------


@pytest.mark.parametrize("respond_later", [False, True], ids=["at once", "later"])
def test_detach_after_upgrade_keeps_early_bytes(respond_later):
    # The client sends its first bytes of the new protocol right behind the
    # upgrade request; they must reach the detached stream.
    echoed = []

    async def take_over(d: _Delegate) -> None:
        if respond_later:
            await asyncio.sleep(0.02)
        d.conn.write_headers(
            ResponseStartLine("HTTP/1.1", 101, "Switching Protocols"),
            HTTPHeaders({"Connection": "Upgrade", "Upgrade": "echo"}),
        )
        d.conn.finish()
        stream = d.conn.detach()  # type: ignore[attr-defined]
        data = await stream.read_until(b"!")
        echoed.append(data)
        await stream.write(b"echo:" + data)
        stream.close()

    def finish(d: _Delegate) -> None:
        asyncio.ensure_future(take_over(d))

    async def main():
        async with serving(DelegateApp(on_finish=finish)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly"
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 101 ")
            assert b"Transfer-Encoding" not in head and b"Connection: Upgrade" in head
            writer.write(b" and late!")
            assert await asyncio.wait_for(reader.read(), 5) == b"echo:early and late!"
            writer.close()

    run(main())
    assert echoed == [b"early and late!"]


def test_declined_upgrade_keeps_serving_http():
    async def main():
        async with serving(hello_app) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            assert (await read_response(reader))[2] == b"hello /up"
            assert (await read_response(reader))[2] == b"hello /next"
            writer.close()

    run(main())


def test_https(tmp_path):
    import ssl

    from squall.testing import AsyncHTTPSTestCase

    options = AsyncHTTPSTestCase.default_ssl_options()

    async def main():
        async with serving(hello_app, ssl_options=options) as port:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
            for path in (b"/a", b"/b"):
                writer.write(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
                assert (await read_response(reader))[2] == b"hello " + path
            writer.close()

    run(main())


def test_https_protocol_seen_by_application():
    import ssl

    from squall.testing import AsyncHTTPSTestCase

    async def main():
        async with serving(_ip_app, ssl_options=AsyncHTTPSTestCase.default_ssl_options()) as port:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader))[2] == b"127.0.0.1 https"
            writer.close()

    run(main())


def test_unix_socket(tmp_path):
    from squall.netutil import bind_unix_socket

    path = str(tmp_path / "http.sock")

    async def main():
        server = HTTPServer(_ip_app)
        server.add_sockets([bind_unix_socket(path)])
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            code, _, body = await read_response(reader)
            assert (code, body) == (200, b"0.0.0.0 http")
            writer.close()
        finally:
            server.stop()
            await server.close_all_connections()

    run(main())


def test_connection_stream_takes_the_connection_over(caplog: pytest.LogCaptureFixture) -> None:
    # Tornado's request.connection.stream: raw bytes written on it reach the
    # client as they are; closing it ends the connection; whatever the
    # application then writes through HTTP fails quietly, and the server
    # goes on serving other connections.
    writes_after: list[BaseException] = []

    async def app_main(request: HTTPServerRequest) -> None:
        stream = request.connection.stream  # type: ignore[union-attr]
        assert stream is request.connection.stream  # type: ignore[union-attr]
        if request.path == "/raw":
            await stream.write(b"HTTP/1.1 100 CONTINUE\r\n\r\n")
            await stream.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA")
            stream.close()
            return
        stream.close()
        future = request.connection.write_headers(  # type: ignore[union-attr]
            OK, HTTPHeaders({"Content-Length": "5"}), b"hello"
        )
        writes_after.append(future.exception())  # type: ignore[arg-type]

    def app(request: HTTPServerRequest) -> None:
        if request.path == "/fine":
            respond(request, b"fine")
        else:
            asyncio.ensure_future(app_main(request))

    async def main() -> None:
        async with serving(app) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /raw HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await asyncio.wait_for(reader.read(), 5) == (
                b"HTTP/1.1 100 CONTINUE\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA"
            )
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /closed HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            assert (await raw_exchange(port, b"GET /fine HTTP/1.1\r\nHost: x\r\n\r\n"))[2] == b"fine"

    with caplog.at_level(logging.WARNING):
        run(main())
    assert [type(e).__name__ for e in writes_after] == ["StreamClosedError"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
