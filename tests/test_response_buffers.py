"""A response's head and its body written in one call: a small body is
copied onto the head (one buffer), a body of ``_COPY_LIMIT`` bytes or more
stays a buffer of its own and both leave in one ``writelines``. Either way
the client must read exactly the bytes written, in order, also when
responses are pipelined, over TLS, and to a reader slower than the server.

Real HTTPServer on a loopback port, on the asyncio loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from squall import _http1server
from squall.httpserver import HTTPServer
from squall.web import Application, RequestHandler

from _tls_support import SERVER_SSL, client_context, listen, loop_name, run  # noqa: F401

LIMIT = _http1server._COPY_LIMIT
SIZES = [0, 1, LIMIT - 1, LIMIT, LIMIT + 1, 100_000, 3 * 1024 * 1024 + 7]
BODIES = {size: os.urandom(size) for size in SIZES}


class Body(RequestHandler):
    def get(self, size: str) -> None:
        self.set_header("Content-Type", "application/octet-stream")
        self.write(BODIES[int(size)])

    head = get


def app() -> Application:
    return Application([(r"/(\d+)", Body)])


async def read_one(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return await reader.readexactly(int(line.split(b":")[1]))
    raise AssertionError(f"no Content-Length in {head!r}")


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_pipelined_bodies_arrive_whole_and_in_order(loop_name: str, tls: bool) -> None:
    async def main() -> None:
        server = HTTPServer(app(), ssl_options=SERVER_SSL if tls else None)
        port = listen(server)
        context: Any = client_context() if tls else None
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, limit=8 * 1024 * 1024
        )
        order = SIZES + SIZES[::-1]
        # All requests in one packet: the server answers them from one
        # read, so several heads and bodies share one flush.
        writer.write(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in order))
        for size in order:
            assert await read_one(reader) == BODIES[size]
        writer.close()

    run(loop_name, main)


def test_slow_reader_gets_every_byte(loop_name: str) -> None:
    # The server fills the socket and its write buffer (writing pauses)
    # while the client reads a little at a time.
    async def main() -> None:
        port = listen(HTTPServer(app()))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        size = SIZES[-1]
        writer.write(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % size * 3)
        for _ in range(3):
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"Content-Length: %d\r\n" % size in head
            received = bytearray()
            while len(received) < size:
                received += await reader.read(min(65536, size - len(received)))
                await asyncio.sleep(0)
            assert bytes(received) == BODIES[size]
        writer.close()

    run(loop_name, main)


def test_head_request_sends_no_body(loop_name: str) -> None:
    async def main() -> None:
        port = listen(HTTPServer(app()))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HEAD /100000 HTTP/1.1\r\nHost: x\r\n\r\nGET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"Content-Length: 100000\r\n" in head
        # The next bytes are the second response, not the first one's body.
        assert await read_one(reader) == BODIES[1]
        writer.close()

    run(loop_name, main)


def test_mutable_body_is_copied_before_write_headers_returns(loop_name: str) -> None:
    # A bytearray handed to write_headers may be changed by its owner right
    # after the call; the response must carry the bytes at call time.
    from squall.httputil import HTTPHeaders, ResponseStartLine

    size = LIMIT * 4

    def app(request: Any) -> None:
        body = bytearray(b"a" * size)
        headers = HTTPHeaders({"Content-Length": str(size)})
        request.connection.write_headers(ResponseStartLine("HTTP/1.1", 200, "OK"), headers, body)
        body[:] = b"b" * size
        request.connection.finish()

    async def main() -> None:
        port = listen(HTTPServer(app))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await read_one(reader) == b"a" * size
        writer.close()

    run(loop_name, main)
