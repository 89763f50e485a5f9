"""squall.http1connection: HTTP/1.x over IOStream (client and server sides),
and its framing helpers. Real streams over a connected socket pair."""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
from typing import Any

import pytest

from squall import httputil
from squall.http1connection import (
    HTTP1Connection,
    HTTP1ConnectionParameters,
    HTTP1ServerConnection,
    is_transfer_encoding_chunked,
    parse_hex_int,
    parse_int,
)
from squall.httputil import HTTPHeaders, HTTPMessageDelegate, RequestStartLine, ResponseStartLine
from squall.iostream import IOStream


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


def stream_pair() -> tuple[IOStream, IOStream]:
    a, b = socket.socketpair()
    return IOStream(a), IOStream(b)


class Recorder(HTTPMessageDelegate):
    def __init__(self, fail_in: str = "") -> None:
        self.fail_in = fail_in
        self.start_lines: list[Any] = []
        self.headers: list[HTTPHeaders] = []
        self.chunks: list[bytes] = []
        self.finished = 0
        self.closed = 0

    def headers_received(self, start_line: Any, headers: HTTPHeaders) -> None:
        self.start_lines.append(start_line)
        self.headers.append(headers)
        if self.fail_in == "headers":
            raise ValueError("boom in headers_received")

    def data_received(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        if self.fail_in == "data":
            raise ValueError("boom in data_received")

    def finish(self) -> None:
        self.finished += 1
        if self.fail_in == "finish":
            raise ValueError("boom in finish")

    def on_connection_close(self) -> None:
        self.closed += 1

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


async def read_as_client(
    response: bytes, close: bool = True, request_method: str = "GET", **params: Any
) -> tuple[Any, Recorder, IOStream]:
    client, server = stream_pair()
    conn = HTTP1Connection(client, True, HTTP1ConnectionParameters(**params))
    conn.write_headers(RequestStartLine(request_method, "/", "HTTP/1.1"), HTTPHeaders({"Host": "x"}))
    conn.finish()
    await server.read_until(b"\r\n\r\n")
    await server.write(response)
    if close:
        server.close()
    recorder = Recorder()
    result = await conn.read_response(recorder)
    client.close()
    server.close()
    return result, recorder, client


# --- Helpers ----------------------------------------------------------------------------


def test_parse_int():
    assert parse_int("0") == 0 and parse_int("123") == 123
    for bad in ["", "+1", "-1", "1_0", " 1", "1 ", "\u0661", "0x1"]:
        with pytest.raises(ValueError, match="decimal"):
            parse_int(bad)


def test_parse_hex_int():
    assert parse_hex_int("ff") == 255 and parse_hex_int("0A") == 10
    for bad in ["", "0x1", "1_a", "+a", " a", "g"]:
        with pytest.raises(ValueError, match="hexadecimal"):
            parse_hex_int(bad)


def test_is_transfer_encoding_chunked():
    assert not is_transfer_encoding_chunked(HTTPHeaders())
    assert is_transfer_encoding_chunked(HTTPHeaders({"Transfer-Encoding": "Chunked"}))
    for value in ["gzip, chunked", "chunked, chunked", "identity"]:
        with pytest.raises(httputil.HTTPInputError, match="Unsupported Transfer-Encoding"):
            is_transfer_encoding_chunked(HTTPHeaders({"Transfer-Encoding": value}))
    with pytest.raises(httputil.HTTPInputError, match="both"):
        is_transfer_encoding_chunked(
            HTTPHeaders({"Transfer-Encoding": "chunked", "Content-Length": "1"})
        )


def test_parameters():
    params = HTTP1ConnectionParameters()
    assert (params.chunk_size, params.max_header_size) == (65536, 65536)
    assert params.max_body_size is None and not params.no_keep_alive and not params.decompress
    with pytest.raises(ValueError, match="chunk_size"):
        HTTP1ConnectionParameters(chunk_size=-1)
    with pytest.raises(ValueError, match="body_timeout"):
        HTTP1ConnectionParameters(body_timeout=0)


# --- Client side: reading responses ----------------------------------------------------


def test_content_length_response():
    result, rec, _ = run(read_as_client(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", close=False))
    assert result is True
    assert rec.start_lines[0] == ResponseStartLine("HTTP/1.1", 200, "OK")
    assert (rec.body, rec.finished, rec.closed) == (b"hello", 1, 0)


def test_http10_response_read_until_close():
    result, rec, _ = run(read_as_client(b"HTTP/1.0 200 OK\r\n\r\nhello"))
    assert rec.start_lines[0].code == 200
    assert (rec.body, rec.finished) == (b"hello", 1)
    assert result is False  # the connection is spent


def test_interim_responses_are_skipped():
    result, rec, _ = run(
        read_as_client(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
    )
    assert [s.code for s in rec.start_lines] == [100, 103, 200]
    assert (rec.body, rec.finished, rec.closed) == (b"ok", 1, 0)


@pytest.mark.parametrize(
    "method,status,length", [("HEAD", 200, 10), ("GET", 304, 10), ("GET", 204, 0), ("GET", 204, None)]
)
def test_responses_without_body(method, status, length):
    async def main():
        client, server = stream_pair()
        conn = HTTP1Connection(client, True)
        conn.write_headers(RequestStartLine(method, "/", "HTTP/1.1"), HTTPHeaders())
        conn.finish()
        await server.read_until(b"\r\n\r\n")
        framing = b"" if length is None else b"Content-Length: %d\r\n" % length
        await server.write(b"HTTP/1.1 %d X\r\n%s\r\nHTTP/1.1 200 OK\r\n" % (status, framing))
        rec = Recorder()
        assert await conn.read_response(rec) is True
        # What follows the head is the next response, not a body.
        assert await client.read_until(b"\r\n") == b"HTTP/1.1 200 OK\r\n"
        client.close()
        server.close()
        return rec

    rec = run(main())
    assert (rec.body, rec.finished) == (b"", 1)


def test_tiny_chunks_are_coalesced_and_yield():
    count = 5000
    ticks = [0]

    async def main():
        loop = asyncio.get_running_loop()
        done = [False]

        def tick() -> None:
            if not done[0]:
                ticks[0] += 1
                loop.call_soon(tick)

        loop.call_soon(tick)
        result = await read_as_client(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"1\r\nx\r\n" * count
            + b"0\r\n\r\n"
        )
        done[0] = True
        return result

    result, rec, _ = run(main())
    assert rec.body == b"x" * count
    assert len(rec.chunks) < 10
    assert ticks[0] > 10


def test_chunked_response_with_extensions_and_trailers():
    result, rec, _ = run(
        read_as_client(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;name=value\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n",
            close=False,
        )
    )
    assert (result, rec.body, rec.finished) == (True, b"abcde", 1)


@pytest.mark.parametrize(
    "response,message",
    [
        (b"Transfer-Encoding: chunked\r\n\r\n3\r\nfooXX0\r\n\r\n", "improperly terminated chunk"),
        (b"Transfer-Encoding: chunked\r\n\r\n1_a\r\nx\r\n0\r\n\r\n", "invalid chunk size"),
        (b"Content-Length: +5\r\n\r\nhello", "Only integer Content-Length"),
        (b"Content-Length: 5, 6\r\n\r\nhello", "Multiple unequal Content-Lengths"),
        (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", "both Transfer-Encoding"),
        (b"Transfer-Encoding: gzip, chunked\r\n\r\n", "Unsupported Transfer-Encoding"),
        (b"Content-Length: 5\r\n\r\nhello", "Response with code 204 should not have body"),
        (b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "Response with code 204 should not have"),
    ],
)
def test_malformed_responses(caplog, response, message):
    caplog.set_level(logging.INFO, logger="squall.general")
    status = b"204 No Content" if "204" in message else b"200 OK"
    result, rec, client = run(read_as_client(b"HTTP/1.1 " + status + b"\r\n" + response, close=False))
    assert result is False
    assert rec.closed == 1 and rec.finished == 0
    logged = [r.getMessage() for r in caplog.records if r.name == "squall.general"]
    assert len(logged) == 1 and message in logged[0], logged


def test_body_larger_than_limit(caplog):
    caplog.set_level(logging.INFO, logger="squall.general")
    result, rec, _ = run(
        read_as_client(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"a" * 100, max_body_size=10)
    )
    assert result is False
    assert "Content-Length too long" in caplog.records[-1].getMessage()


@pytest.mark.parametrize("where", ["headers", "data", "finish"])
def test_delegate_errors_close_the_connection(caplog, where):
    async def main():
        client, server = stream_pair()
        conn = HTTP1Connection(client, True)
        await server.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        rec = Recorder(fail_in=where)
        result = await conn.read_response(rec)
        server.close()
        return result, rec, client

    result, rec, client = run(main())
    assert result is False
    assert rec.closed == 1
    assert client.closed()
    errors = [r for r in caplog.records if r.name == "squall.application"]
    assert len(errors) == 1 and errors[0].getMessage() == "Uncaught exception"


def test_decompress_response():
    body = gzip.compress(b"hello " * 100)
    result, rec, _ = run(
        read_as_client(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body,
            close=False,
            decompress=True,
            chunk_size=64,
        )
    )
    assert rec.body == b"hello " * 100
    assert all(len(c) <= 64 for c in rec.chunks)
    assert rec.headers[0]["X-Consumed-Content-Encoding"] == "gzip"
    assert "Content-Encoding" not in rec.headers[0]


def test_body_until_close_is_streamed_within_the_limit(caplog):
    caplog.set_level(logging.INFO, logger="squall.general")
    result, rec, _ = run(read_as_client(b"HTTP/1.0 200 OK\r\n\r\n" + b"a" * 200, chunk_size=64))
    assert (result, rec.body, rec.finished) == (False, b"a" * 200, 1)
    assert all(len(c) <= 64 for c in rec.chunks)
    result, rec, _ = run(read_as_client(b"HTTP/1.0 200 OK\r\n\r\n" + b"a" * 200, max_body_size=100))
    assert (result, rec.finished, rec.closed) == (False, 0, 1)
    logged = [r.getMessage() for r in caplog.records if r.name == "squall.general"]
    assert logged == ["Malformed HTTP message from None: Body too long"]


class AsyncRecorder(Recorder):
    async def data_received(self, chunk: bytes) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        super().data_received(chunk)


def test_awaited_delegate_errors_are_logged_once(caplog):
    async def main():
        client, server = stream_pair()
        conn = HTTP1Connection(client, True)
        await server.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        rec = AsyncRecorder(fail_in="data")
        result = await conn.read_response(rec)
        server.close()
        return result, rec, client

    result, rec, client = run(main())
    assert (result, rec.finished, rec.closed) == (False, 0, 1)
    assert client.closed()
    errors = [r for r in caplog.records if r.name == "squall.application"]
    assert len(errors) == 1 and errors[0].getMessage() == "Uncaught exception"


def test_decompressed_tail_reaches_an_async_delegate():
    body = gzip.compress(b"x" * 5000)

    async def main():
        client, server = stream_pair()
        conn = HTTP1Connection(client, True, HTTP1ConnectionParameters(decompress=True, chunk_size=1000))
        await server.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
        rec = AsyncRecorder()
        result = await conn.read_response(rec)
        client.close()
        server.close()
        return result, rec

    result, rec = run(main())
    assert (result, rec.body, rec.finished) == (True, b"x" * 5000, 1)


def test_request_connection_close_token_ends_the_connection():
    async def main():
        client, server = stream_pair()
        conn = HTTP1Connection(client, True)
        conn.write_headers(
            RequestStartLine("GET", "/", "HTTP/1.1"), HTTPHeaders({"Connection": "TE, Close"})
        )
        conn.finish()
        await server.read_until(b"\r\n\r\n")
        await server.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        rec = Recorder()
        result = await conn.read_response(rec)
        server.close()
        return result, rec, client

    result, rec, client = run(main())
    assert (result, rec.body, rec.finished) == (False, b"ok", 1)
    assert client.closed()


def test_header_timeout():
    async def main():
        client, server = stream_pair()
        conn = HTTP1Connection(client, True, HTTP1ConnectionParameters(header_timeout=0.1))
        await server.write(b"HTTP/1.1 200 OK\r\n")  # and nothing more
        rec = Recorder()
        result = await conn.read_response(rec)
        server.close()
        return result, client

    result, client = run(main())
    assert result is False and client.closed()


# --- Client side: writing requests ---------------------------------------------------


def test_request_head_and_chunked_body():
    async def main():
        client, server = stream_pair()
        conn = HTTP1Connection(client, True)
        conn.write_headers(
            RequestStartLine("POST", "/upload?x=1", "HTTP/1.1"), HTTPHeaders({"Host": "example.com"})
        )
        conn.write(b"abc")
        conn.write(b"")
        conn.write(b"defg")
        conn.finish()
        data = await server.read_until(b"0\r\n\r\n")
        client.close()
        server.close()
        return data

    data = run(main())
    assert data == (
        b"POST /upload?x=1 HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    )


def test_request_with_crlf_in_header_raises():
    async def main():
        client, server = stream_pair()
        conn = HTTP1Connection(client, True)
        headers = HTTPHeaders()
        headers["X-Bad"] = "a\r\nInjected: yes"
        with pytest.raises(ValueError, match="CR or LF"):
            conn.write_headers(RequestStartLine("GET", "/", "HTTP/1.1"), headers)
        client.close()
        server.close()

    run(main())


def test_too_much_body_raises():
    async def main():
        client, server = stream_pair()
        conn = HTTP1Connection(client, True)
        conn.write_headers(
            RequestStartLine("PUT", "/", "HTTP/1.1"), HTTPHeaders({"Content-Length": "2"})
        )
        with pytest.raises(httputil.HTTPOutputError, match="more data than Content-Length"):
            conn.write(b"abc")
        server.close()

    run(main())


# --- Server side -----------------------------------------------------------------------


class EchoApp(httputil.HTTPServerConnectionDelegate):
    def __init__(self) -> None:
        self.closed: list[object] = []

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> Any:
        app = self

        class Echo(HTTPMessageDelegate):
            def headers_received(self, start_line: Any, headers: HTTPHeaders) -> None:
                self.path = start_line.path
                self.chunks: list[bytes] = []

            def data_received(self, chunk: bytes) -> None:
                self.chunks.append(chunk)

            def finish(self) -> None:
                body = f"{self.path} {len(b''.join(self.chunks))}".encode()
                request_conn.write_headers(
                    ResponseStartLine("", 200, "OK"), HTTPHeaders({"Content-Length": str(len(body))})
                )
                request_conn.write(body)
                request_conn.finish()

        del app
        return Echo()

    def on_close(self, server_conn: object) -> None:
        self.closed.append(server_conn)


def test_server_connection_serves_pipelined_requests():
    async def main():
        client, server = stream_pair()
        app = EchoApp()
        conn = HTTP1ServerConnection(server)
        conn.start_serving(app)
        await client.write(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            b"PUT /c HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        )
        data = await client.read_until_close()
        await conn.close()
        return data, app

    data, app = run(main())
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert data.endswith(b"\r\n\r\n/c 2")
    assert b"/a 0" in data and b"/b 3" in data
    assert b"Connection: close" in data
    assert len(app.closed) == 1


def test_server_connection_rejects_bad_request(caplog):
    caplog.set_level(logging.INFO, logger="squall.general")

    async def main():
        client, server = stream_pair()
        conn = HTTP1ServerConnection(server)
        conn.start_serving(EchoApp())
        await client.write(b"garbage\r\n\r\n")
        data = await client.read_until_close()
        await conn.close()
        return data

    assert run(main()) == b"HTTP/1.1 400 Bad Request\r\n\r\n"
    assert "Malformed HTTP request line" in caplog.records[-1].getMessage()


def test_server_connection_100_continue_and_http10():
    async def main():
        client, server = stream_pair()
        conn = HTTP1ServerConnection(server)
        conn.start_serving(EchoApp())
        await client.write(
            b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await client.read_until(b"\r\n\r\n")
        await client.write(b"abc")
        first = await client.read_until(b"/e 3")
        await client.write(b"GET /old HTTP/1.0\r\n\r\n")
        rest = await client.read_until_close()
        await conn.close()
        return interim, first, rest

    interim, first, rest = run(main())
    assert interim.startswith(b"HTTP/1.1 100 ")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert rest.endswith(b"/old 0") and b"Connection" not in rest


def test_start_serving_checks_its_delegate():
    async def main():
        client, server = stream_pair()
        with pytest.raises(TypeError, match="HTTPServerConnectionDelegate"):
            HTTP1ServerConnection(server).start_serving(object())  # type: ignore[arg-type]
        client.close()
        server.close()

    run(main())


def test_server_connection_caps_decompressed_body(caplog):
    caplog.set_level(logging.INFO, logger="squall.general")
    bomb = gzip.compress(b"\0" * (4 * 1024 * 1024))

    async def main():
        client, server = stream_pair()
        params = HTTP1ConnectionParameters(decompress=True, max_body_size=64 * 1024)
        conn = HTTP1ServerConnection(server, params)
        conn.start_serving(EchoApp())
        await client.write(
            b"POST /z HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: %d\r\n\r\n" % len(bomb) + bomb
        )
        data = await client.read_until_close()
        await conn.close()
        return data

    assert run(main()) == b"HTTP/1.1 413 Content Too Large\r\n\r\n"
    assert "decompressed body too large" in caplog.records[-1].getMessage()


def test_server_connection_answers_413_for_long_content_length(caplog):
    caplog.set_level(logging.INFO, logger="squall.general")

    async def main():
        client, server = stream_pair()
        conn = HTTP1ServerConnection(server, HTTP1ConnectionParameters(max_body_size=10))
        conn.start_serving(EchoApp())
        await client.write(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n")
        data = await client.read_until_close()
        await conn.close()
        return data

    assert run(main()) == b"HTTP/1.1 413 Content Too Large\r\n\r\n"
