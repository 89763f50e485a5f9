"""The HTTP server's defences against bad or hostile clients, over raw sockets.

Each case sends something a client must not send, checks the status code
(or the close) the server answers with and that the mistake is logged once,
without a traceback, and then checks that a good request on a new connection
is still served.
"""

from __future__ import annotations

import asyncio
import gzip
import logging

import pytest

from squall import _http1server
from test_httpserver import hello_app, raw_exchange, read_response, run, serving

GOOD = b"GET /good HTTP/1.1\r\nHost: example.com\r\n\r\n"


async def expect_error(port: int, request: bytes, status: int) -> bytes:
    """Send ``request``, expect ``status`` and a close, then a good request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        response = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    assert response.startswith(b"HTTP/1.1 %d " % status), response
    status_code, _, body = await raw_exchange(port, GOOD)
    assert (status_code, body) == (200, b"hello /good")
    return response


def check_logged_once(caplog: pytest.LogCaptureFixture, fragment: str) -> None:
    records = [r for r in caplog.records if r.name == "squall.general"]
    assert len(records) == 1, [r.getMessage() for r in records]
    record = records[0]
    assert fragment in record.getMessage(), record.getMessage()
    assert record.levelno == logging.INFO
    assert record.exc_info is None


CASES = [
    ("request line", b"asdf\r\n\r\n", 400, "Malformed HTTP request line"),
    ("method not a token", b"FOO,BAR / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request line"),
    ("header without colon", b"GET / HTTP/1.1\r\nHost: x\r\nasdf\r\n\r\n", 400, "no colon"),
    ("space in header name", b"GET / HTTP/1.1\r\nHost: x\r\nX Y: 1\r\n\r\n", 400, "header"),
    ("NUL in header value", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", 400, "value"),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400, "folding"),
    (
        "Content-Length and Transfer-Encoding",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n",
        400,
        "both Transfer-Encoding and Content-Length",
    ),
    (
        "differing Content-Lengths",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        400,
        "Multiple unequal Content-Lengths",
    ),
    (
        "Content-Length list with odd whitespace",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5,\xa05\r\n\r\nhello",
        400,
        "Multiple unequal Content-Lengths",
    ),
    (
        "signed Content-Length",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\nok",
        400,
        "Only integer Content-Length",
    ),
    (
        "Content-Length with underscore",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\n1234567890",
        400,
        "Only integer Content-Length",
    ),
    (
        "Content-Length beyond 2**63 - 1",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999999999999999\r\n\r\nok",
        400,
        "Content-Length too large",
    ),
    (
        "chunked twice",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        400,
        "Unsupported Transfer-Encoding chunked,chunked",
    ),
    (
        "chunked not last",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        400,
        "Transfer-Encoding",
    ),
    (
        "unknown transfer coding",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        501,
        "Unsupported Transfer-Encoding gzip, chunked",
    ),
    (
        "bad chunk size",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1_a\r\n",
        400,
        "invalid chunk size",
    ),
    (
        "bad chunk terminator",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nfooXX0\r\n\r\n",
        400,
        "improperly terminated chunk",
    ),
    ("HTTP/2.0 request line", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP version"),
    ("HTTP/1.2 request line", b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 400, "HTTP version"),
    ("missing Host", b"GET / HTTP/1.1\r\n\r\n", 400, "Host"),
    ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "host"),
    ("Host with a space", b"GET / HTTP/1.1\r\nHost: foo bar\r\n\r\n", 400, "Invalid Host header"),
    (
        "target too long",
        b"GET /" + b"a" * (_http1server.MAX_URL_SIZE + 1) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        414,
        "Request-target too long",
    ),
]


@pytest.mark.parametrize("request_bytes,status,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_request(caplog, request_bytes, status, fragment):
    caplog.set_level(logging.INFO, logger="squall.general")

    async def main():
        async with serving(hello_app) as port:
            response = await expect_error(port, request_bytes, status)
        # The connection's own error responses are minimal (like Tornado's).
        assert response.endswith(b"\r\n\r\n")

    run(main())
    check_logged_once(caplog, fragment)


def test_target_too_long_arriving_in_pieces(caplog):
    caplog.set_level(logging.INFO, logger="squall.general")

    async def main():
        async with serving(hello_app) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /" + b"a" * 5000)
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"a" * 5000)
            response = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert response.startswith(b"HTTP/1.1 414 "), response
            assert (await raw_exchange(port, GOOD))[0] == 200

    run(main())
    check_logged_once(caplog, "Request-target too long")


@pytest.mark.parametrize("pieces", [1, 3], ids=["one read", "several reads"])
def test_header_block_too_large(caplog, pieces):
    caplog.set_level(logging.INFO, logger="squall.general")
    big = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Filler: " + b"a" * 2000 + b"\r\n\r\n"

    async def main():
        async with serving(hello_app, max_header_size=1024) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            size = -(-len(big) // pieces)
            for i in range(0, len(big), size):
                writer.write(big[i : i + size])
                await writer.drain()
                await asyncio.sleep(0.02)
            response = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert response.startswith(b"HTTP/1.1 431 "), response
            # A head just under the limit is fine.
            ok = b"GET /good HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * 800 + b"\r\n\r\n"
            assert (await raw_exchange(port, ok))[0] == 200

    run(main())
    check_logged_once(caplog, "Unsatisfiable read, closing connection: request head of")


def test_default_header_limit_is_64k(caplog):
    caplog.set_level(logging.INFO, logger="squall.general")
    assert _http1server.MAX_HEADER_SIZE == 65536
    filler = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(70))

    async def main():
        async with serving(hello_app) as port:
            await expect_error(port, b"GET / HTTP/1.1\r\nHost: x\r\n" + filler + b"\r\n", 431)

    run(main())
    check_logged_once(caplog, "Unsatisfiable read, closing connection: request head of")


@pytest.mark.parametrize("length", ["5", "0" * 18 + "5", "0" * 40 + "5"])
def test_content_length_with_leading_zeros(length):
    # Up to 18 digits the server reads the value itself; longer values go
    # through the full parser, which also takes them when they are small.
    async def main():
        async with serving(hello_app) as port:
            request = b"POST /z HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\nhello"
            status, _, body = await raw_exchange(port, request % length.encode())
            assert (status, body) == (200, b"hello /z 5")

    run(main())


def test_body_too_large_by_content_length(caplog):
    caplog.set_level(logging.INFO, logger="squall.general")

    async def main():
        async with serving(hello_app, max_body_size=1000) as port:
            # Only the head is sent: the 413 must not wait for the body.
            await expect_error(
                port, b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n", 413
            )
            status, _, body = await raw_exchange(
                port, b"PUT /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"a" * 1000
            )
            assert (status, body) == (200, b"hello /ok 1000")

    run(main())
    check_logged_once(caplog, "Content-Length too long")


def test_body_too_large_chunked(caplog):
    caplog.set_level(logging.INFO, logger="squall.general")
    chunks = b"".join(b"100\r\n" + b"a" * 256 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"

    async def main():
        async with serving(hello_app, max_body_size=1000) as port:
            await expect_error(
                port,
                b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks,
                413,
            )

    run(main())
    check_logged_once(caplog, "chunked body too large")


def test_default_body_limit_is_100mb(caplog):
    caplog.set_level(logging.INFO, logger="squall.general")
    assert _http1server.MAX_BODY_SIZE == 100 * 1024 * 1024

    async def main():
        async with serving(hello_app) as port:
            await expect_error(
                port, b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 104857601\r\n\r\n", 413
            )

    run(main())
    check_logged_once(caplog, "Content-Length too long")


def test_error_response_survives_unread_body(caplog):
    # The client keeps sending a body the server has refused: the server
    # must let the 413 reach it rather than reset the connection.
    caplog.set_level(logging.INFO, logger="squall.general")

    async def main():
        async with serving(hello_app, max_body_size=1000) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n")
            writer.write(b"a" * 300000)
            response = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert response.startswith(b"HTTP/1.1 413 "), response

    run(main())
    check_logged_once(caplog, "Content-Length too long")


def test_gzip_bomb(caplog):
    caplog.set_level(logging.INFO, logger="squall.general")
    bomb = gzip.compress(b"\0" * (16 * 1024 * 1024))
    assert len(bomb) < 32 * 1024

    async def main():
        async with serving(hello_app, decompress_request=True, max_body_size=1024 * 1024) as port:
            await expect_error(
                port,
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
                b"Content-Length: %d\r\n\r\n" % len(bomb) + bomb,
                413,
            )

    run(main())
    check_logged_once(caplog, "decompressed body too large")


@pytest.mark.parametrize("tail", [b"\0", b"truncate"], ids=["trailing garbage", "truncated"])
def test_invalid_gzip(caplog, tail):
    caplog.set_level(logging.INFO, logger="squall.general")
    body = gzip.compress(b"foo=bar")
    body = body[:-1] if tail == b"truncate" else body + tail

    async def main():
        async with serving(hello_app, decompress_request=True) as port:
            await expect_error(
                port,
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body,
                400,
            )

    run(main())
    check_logged_once(caplog, "invalid gzip data")


def test_slow_headers_get_408(caplog):
    caplog.set_level(logging.INFO, logger="squall.general")

    async def main():
        async with serving(hello_app, idle_connection_timeout=0.3) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
            loop = asyncio.get_running_loop()
            started = loop.time()
            response = await asyncio.wait_for(reader.read(), 5)
            elapsed = loop.time() - started
            writer.close()
            assert response.startswith(b"HTTP/1.1 408 "), response
            assert 0.25 < elapsed < 3, elapsed
            assert (await raw_exchange(port, GOOD))[0] == 200

    run(main())
    check_logged_once(caplog, "Timeout reading request headers")


def test_header_timeout_default_is_10s():
    assert _http1server.HEADER_TIMEOUT == 10.0
    assert _http1server.IDLE_TIMEOUT == 75.0


def test_silent_connection_is_closed(caplog):
    # A connection that never sends anything is closed without a response.
    caplog.set_level(logging.INFO, logger="squall.general")

    async def main():
        async with serving(hello_app, idle_connection_timeout=0.2) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()

    run(main())
    assert not [r for r in caplog.records if r.name == "squall.general"]


def test_idle_keep_alive_is_closed():
    async def main():
        async with serving(hello_app, idle_connection_timeout=0.3) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(2):
                writer.write(GOOD)
                status, _, body = await read_response(reader)
                assert (status, body) == (200, b"hello /good")
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            assert 0.2 < loop.time() - started < 3
            writer.close()

    run(main())


def test_body_timeout(caplog):
    caplog.set_level(logging.INFO, logger="squall.general")

    async def main():
        async with serving(hello_app, body_timeout=0.2) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 42\r\n\r\nabc")
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            assert (await raw_exchange(port, GOOD))[0] == 200

    run(main())
    check_logged_once(caplog, "Timeout reading body")


def test_pipelined_error_waits_for_earlier_response(caplog):
    # A bad request behind a good one: the good one is answered first.
    caplog.set_level(logging.INFO, logger="squall.general")

    async def main():
        async with serving(hello_app) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nasdf\r\n\r\n")
            status, _, body = await read_response(reader)
            assert (status, body) == (200, b"hello /slow")
            rest = await asyncio.wait_for(reader.read(), 5)
            assert rest.startswith(b"HTTP/1.1 400 "), rest
            writer.close()

    run(main())
    check_logged_once(caplog, "Malformed HTTP request line")
