"""Tests for squall.simple_httpclient against scripted HTTP/1.1 servers on loopback."""

from __future__ import annotations

import asyncio
import errno
import gzip
import logging
import os
import socket
import ssl
import sys
import time
from typing import Awaitable, Callable, Optional

import pytest

import squall.http1connection as http1connection
import squall.simple_httpclient as simple_httpclient
from squall.httpclient import HTTPRequest
from squall.iostream import UnsatisfiableReadError
from squall.simple_httpclient import (
    HTTPStreamClosedError,
    HTTPTimeoutError,
    SimpleAsyncHTTPClient,
)

CERT_DIR = os.path.join(os.path.dirname(simple_httpclient.__file__), "test")
CERTFILE = os.path.join(CERT_DIR, "test.crt")
KEYFILE = os.path.join(CERT_DIR, "test.key")


class Req:
    def __init__(self, method: str, path: str, version: str, headers: dict[str, str]) -> None:
        self.method = method
        self.path = path
        self.version = version
        self.headers = headers
        self.body = b""
        self.writer: Optional[asyncio.StreamWriter] = None


Handler = Callable[[Req], Awaitable[Optional[bytes]]]


class Backend:
    """A scripted HTTP/1.1 server: ``handler(req)`` returns the raw response
    bytes, or None to close the connection without answering."""

    def __init__(self, handler: Handler, ssl_context: Optional[ssl.SSLContext] = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests: list[Req] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Backend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        await self.server.wait_closed()

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                    break
                lines = head.decode("latin-1").split("\r\n")
                method, path, version = lines[0].split(" ")
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                req = Req(method, path, version, headers)
                req.writer = writer
                self.requests.append(req)
                if headers.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                if "content-length" in headers:
                    req.body = await reader.readexactly(int(headers["content-length"]))
                elif headers.get("transfer-encoding") == "chunked":
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                        data = await reader.readexactly(size + 2)
                        if not size:
                            break
                        req.body += data[:-2]
                response = await self.handler(req)
                if response is None:
                    break
                writer.write(response)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        finally:
            self._writers.discard(writer)
            writer.close()
            self._tasks.discard(task)


def response(
    body: bytes = b"", code: int = 200, headers: Optional[dict[str, str]] = None, version: str = "HTTP/1.1"
) -> bytes:
    all_headers = {"Content-Length": str(len(body))}
    all_headers.update(headers or {})
    head = f"{version} {code} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in all_headers.items() if v)
    return head.encode("latin-1") + b"\r\n" + body


async def echo(req: Req) -> bytes:
    return response(f"{req.method} {req.path} ".encode() + req.body)


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def client(**kwargs: object) -> SimpleAsyncHTTPClient:
    return SimpleAsyncHTTPClient(force_instance=True, **kwargs)


# -- keep-alive pooling -------------------------------------------------------


def test_sequential_requests_share_one_connection() -> None:
    async def main() -> None:
        async with Backend(echo) as backend:
            c = client()
            try:
                for i in range(3):
                    r = await c.fetch(backend.url(f"/n{i}"))
                    assert r.body == f"GET /n{i} ".encode()
                r = await c.fetch(backend.url("/p"), method="POST", body="x=1")
                assert r.body == b"POST /p x=1"
                assert backend.connections == 1
                assert "connection" not in backend.requests[0].headers
            finally:
                c.close()

    run(main())


def test_concurrent_requests_use_separate_connections_then_reuse_them() -> None:
    async def slow(req: Req) -> bytes:
        await asyncio.sleep(0.05)
        return await echo(req)

    async def main() -> None:
        async with Backend(slow) as backend:
            c = client()
            try:
                for _ in range(2):
                    rs = await asyncio.gather(*(c.fetch(backend.url(f"/{i}")) for i in range(4)))
                    assert [r.body for r in rs] == [f"GET /{i} ".encode() for i in range(4)]
                assert backend.connections == 4
            finally:
                c.close()

    run(main())


def test_connection_close_is_honoured_both_ways() -> None:
    async def closing(req: Req) -> bytes:
        return response(b"bye", headers={"Connection": "close"})

    async def main() -> None:
        async with Backend(closing) as backend:
            c = client()
            try:
                await c.fetch(backend.url("/"))
                await c.fetch(backend.url("/"))
                assert backend.connections == 2
            finally:
                c.close()
        async with Backend(echo) as backend:
            c = client()
            try:
                await c.fetch(backend.url("/"), headers={"Connection": "close"})
                await c.fetch(backend.url("/"))
                assert backend.connections == 2
            finally:
                c.close()

    run(main())


def test_http10_response_is_read_until_close_and_not_reused() -> None:
    async def old(req: Req) -> Optional[bytes]:
        assert req.writer is not None
        req.writer.write(b"HTTP/1.0 200 OK\r\n\r\nuntil close")
        return None

    async def main() -> None:
        async with Backend(old) as backend:
            c = client()
            try:
                assert (await c.fetch(backend.url("/"))).body == b"until close"
                assert (await c.fetch(backend.url("/"))).body == b"until close"
                assert backend.connections == 2
            finally:
                c.close()

    run(main())


def test_idle_connections_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simple_httpclient, "IDLE_CONNECTION_TIMEOUT", 0.05)

    async def main() -> None:
        async with Backend(echo) as backend:
            c = client()
            try:
                await c.fetch(backend.url("/"))
                for _ in range(100):
                    if not backend._writers:
                        break
                    await asyncio.sleep(0.02)
                assert not backend._writers, "client did not close the idle connection"
                await c.fetch(backend.url("/"))
                assert backend.connections == 2
            finally:
                c.close()

    run(main())


def test_server_closing_idle_connection_is_noticed() -> None:
    async def main() -> None:
        async with Backend(echo) as backend:
            c = client()
            try:
                await c.fetch(backend.url("/"))
                for writer in list(backend._writers):
                    writer.close()
                await asyncio.sleep(0.05)
                r = await c.fetch(backend.url("/again"), method="POST", body=b"b")
                assert r.body == b"POST /again b"
                assert backend.connections == 2
            finally:
                c.close()

    run(main())


def test_idle_connection_the_server_writes_to_is_dropped() -> None:
    async def chatty(req: Req) -> bytes:
        body = req.path.encode()
        # Bytes nobody asked for, in the same segment as the response.
        junk = b"HTTP/1.1 200 OK\r\n" if req.path == "/chatty" else b""
        return response(body) + junk

    async def main() -> None:
        async with Backend(chatty) as backend:
            c = client()
            try:
                assert (await c.fetch(backend.url("/chatty"))).body == b"/chatty"
                assert (await c.fetch(backend.url("/next"))).body == b"/next"
                assert (await c.fetch(backend.url("/again"))).body == b"/again"
                assert backend.connections == 2
            finally:
                c.close()

    run(main())


def test_a_request_the_server_dropped_is_never_sent_again() -> None:
    # The server reads every second request on a connection and closes
    # without answering (as a worker that crashes on it would). The client
    # fails that fetch with 599 and does not re-send it, whatever the method.
    async def flaky(req: Req) -> Optional[bytes]:
        assert req.writer is not None
        seen = sum(1 for r in backend.requests if r.writer is req.writer)
        if seen % 2 == 0:
            return None
        return await echo(req)

    async def main() -> None:
        nonlocal backend
        async with Backend(flaky) as backend:
            c = client()
            try:
                await c.fetch(backend.url("/1"))
                with pytest.raises(HTTPStreamClosedError) as info:
                    await c.fetch(backend.url("/2"))
                assert info.value.code == 599
                assert [q.path for q in backend.requests].count("/2") == 1
                # The next request gets a fresh connection and works.
                assert (await c.fetch(backend.url("/3"))).body == b"GET /3 "
                assert backend.connections == 2
            finally:
                c.close()

    backend: Backend
    run(main())


def test_blocking_client_skips_a_pooled_connection_the_server_closed() -> None:
    # The blocking HTTPClient runs its loop only inside fetch(), so the
    # server's close of an idle connection is noticed by polling the socket
    # before reuse: the next fetch opens a fresh connection and succeeds.
    import threading

    from squall.httpclient import HTTPClient

    accepted: list[socket.socket] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    reply = response(b"hi")

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            accepted.append(conn)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            conn.sendall(reply)
            # Close the connection after answering, without saying so in
            # the response: a server's keep-alive timeout firing.
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    http = HTTPClient(SimpleAsyncHTTPClient)
    try:
        assert http.fetch(f"http://127.0.0.1:{port}/a").body == b"hi"
        deadline = time.monotonic() + 5
        while len(accepted) < 1 or accepted[0].fileno() != -1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.05)
        assert http.fetch(f"http://127.0.0.1:{port}/b").body == b"hi"
    finally:
        http.close()
        listener.close()
        thread.join(5)
    assert len(accepted) == 2


def test_idle_connections_per_origin_are_bounded() -> None:
    async def slow(req: Req) -> bytes:
        await asyncio.sleep(0.05)
        return await echo(req)

    async def main() -> None:
        async with Backend(slow) as backend:
            c = client(max_clients=2)
            try:
                await asyncio.gather(*(c.fetch(backend.url("/")) for _ in range(5)))
                assert backend.connections == 2
                assert sum(len(v) for v in c._idle.values()) == 2
            finally:
                c.close()
            await asyncio.sleep(0.05)
            assert not backend._writers

    run(main())


# -- framing -------------------------------------------------------------------


def test_chunked_response_streams_chunks_and_skips_trailers() -> None:
    async def chunked(req: Req) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\nasdf\r\n4;ext=1\r\nqwer\r\n0\r\nX-Trailer: 1\r\n\r\n"
        )

    async def main() -> None:
        async with Backend(chunked) as backend:
            c = client()
            try:
                chunks: list[bytes] = []
                r = await c.fetch(backend.url("/"), streaming_callback=chunks.append)
                # Chunk boundaries carry no meaning (RFC 9112 7.1): chunks
                # that arrived together may be delivered together.
                assert b"".join(chunks) == b"asdfqwer" and 1 <= len(chunks) <= 2
                assert r.body == b""
                r = await c.fetch(backend.url("/"))
                assert r.body == b"asdfqwer"
                assert backend.connections == 1
            finally:
                c.close()

    run(main())


def test_gzip_is_decompressed_unless_disabled() -> None:
    payload = b"hello " * 1000

    async def gz(req: Req) -> bytes:
        if req.headers.get("accept-encoding") == "gzip":
            return response(gzip.compress(payload), headers={"Content-Encoding": "gzip"})
        return response(payload)

    async def main() -> None:
        async with Backend(gz) as backend:
            c = client()
            try:
                r = await c.fetch(backend.url("/"))
                assert r.body == payload
                assert "Content-Encoding" not in r.headers
                assert r.headers["X-Consumed-Content-Encoding"] == "gzip"
                r = await c.fetch(backend.url("/"), decompress_response=False)
                assert r.body == payload
                r = await c.fetch(
                    backend.url("/"), decompress_response=False, headers={"Accept-Encoding": "gzip"}
                )
                assert gzip.decompress(r.body) == payload
            finally:
                c.close()

    run(main())


def test_head_204_and_304_have_no_body() -> None:
    async def bodiless(req: Req) -> bytes:
        if req.path == "/204":
            return b"HTTP/1.1 204 No Content\r\n\r\n"
        if req.path == "/304":
            return b"HTTP/1.1 304 Not Modified\r\nContent-Length: 42\r\n\r\n"
        return b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"

    async def main() -> None:
        async with Backend(bodiless) as backend:
            c = client()
            try:
                r = await c.fetch(backend.url("/"), method="HEAD")
                assert (r.code, r.body, r.headers["Content-Length"]) == (200, b"", "7")
                r = await c.fetch(backend.url("/204"))
                assert (r.code, r.body) == (204, b"")
                r = await c.fetch(backend.url("/304"), raise_error=False)
                assert (r.code, r.body) == (304, b"")
                assert backend.connections == 1
            finally:
                c.close()

    run(main())


def test_interim_responses_are_skipped_up_to_a_limit() -> None:
    async def interim(req: Req) -> bytes:
        count = int(req.path[1:])
        return b"HTTP/1.1 102 Processing\r\n\r\n" * count + response(b"A")

    async def main() -> None:
        async with Backend(interim) as backend:
            c = client()
            try:
                assert (await c.fetch(backend.url("/3"))).body == b"A"
                with pytest.raises(HTTPStreamClosedError):
                    await c.fetch(backend.url(f"/{http1connection._MAX_1XX_RESPONSES + 1}"))
            finally:
                c.close()

    run(main())


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nok",
            "Message with both Transfer-Encoding and Content-Length",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 4\r\n\r\nok", "Multiple unequal Content-Lengths"),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", "should not have body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size"),
        (b"HTTP/1.1 200 OK\r\nX: 1;\r\n\tfolded\r\n\r\n", "Malformed"),
        (b"HTTP/2 200 OK\r\n\r\n", "Malformed"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope",
            "invalid gzip data",
        ),
    ],
)
def test_malformed_responses_fail_with_599_and_log_once(
    raw: bytes, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def bad(req: Req) -> Optional[bytes]:
        assert req.writer is not None
        req.writer.write(raw)
        return None

    async def main() -> None:
        async with Backend(bad) as backend:
            c = client()
            try:
                with pytest.raises(HTTPStreamClosedError) as info:
                    await c.fetch(backend.url("/"))
                assert info.value.code == 599
            finally:
                c.close()

    with caplog.at_level(logging.INFO, logger="squall.general"):
        run(main())
    records = [r for r in caplog.records if r.name == "squall.general"]
    assert len(records) == 1
    assert records[0].getMessage().startswith("Malformed HTTP message from None: ")
    assert message in records[0].getMessage()


def test_max_body_size_applies_before_and_after_decompression(caplog: pytest.LogCaptureFixture) -> None:
    big = b"a" * 2000

    async def serve(req: Req) -> bytes:
        if req.path == "/gzip":
            return response(gzip.compress(big), headers={"Content-Encoding": "gzip"})
        if req.path == "/close":
            assert req.writer is not None
            req.writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + big)
            return None  # type: ignore[return-value]
        return response(big[: int(req.path[1:])])

    async def main() -> None:
        async with Backend(serve) as backend:
            c = client(max_body_size=1000)
            try:
                assert len((await c.fetch(backend.url("/1000"))).body) == 1000
                received: list[bytes] = []
                for path in ("/1001", "/gzip", "/close"):
                    with pytest.raises(HTTPStreamClosedError):
                        await c.fetch(backend.url(path), streaming_callback=received.append)
                assert sum(map(len, received)) <= 1000
                assert len((await c.fetch(backend.url("/10"))).body) == 10
            finally:
                c.close()

    with caplog.at_level(logging.INFO, logger="squall.general"):
        run(main())
    messages = [r.getMessage() for r in caplog.records if r.name == "squall.general"]
    assert any("Content-Length too long" in m for m in messages)
    assert any("decompressed body too large" in m for m in messages)
    assert any("Body too long" in m for m in messages)


def test_large_body_with_small_buffer() -> None:
    big = os.urandom(300 * 1024)

    async def serve(req: Req) -> bytes:
        return response(big)

    async def main() -> None:
        async with Backend(serve) as backend:
            c = client(max_buffer_size=64 * 1024, max_body_size=1024 * 1024)
            try:
                assert (await c.fetch(backend.url("/"))).body == big
            finally:
                c.close()

    run(main())


def test_max_header_size(caplog: pytest.LogCaptureFixture) -> None:
    async def serve(req: Req) -> bytes:
        return response(b"ok", headers={"X-Filler": "a" * int(req.path[1:])})

    async def main() -> None:
        async with Backend(serve) as backend:
            c = client(max_header_size=1024)
            try:
                assert (await c.fetch(backend.url("/100"))).body == b"ok"
                with pytest.raises(UnsatisfiableReadError):
                    await c.fetch(backend.url("/2000"))
            finally:
                c.close()

    with caplog.at_level(logging.INFO, logger="squall.general"):
        run(main())
    messages = [r.getMessage() for r in caplog.records if r.name == "squall.general"]
    assert len(messages) == 1 and messages[0].startswith("Unsatisfiable read")


# -- callbacks -----------------------------------------------------------------


def test_header_callback_sees_status_headers_and_blank_line() -> None:
    async def main() -> None:
        async with Backend(echo) as backend:
            c = client()
            lines: list[str] = []
            try:
                await c.fetch(backend.url("/"), header_callback=lines.append)
            finally:
                c.close()
            assert lines[0] == "HTTP/1.1 200 X\r\n"
            assert "Content-Length: 6\r\n" in lines
            assert lines[-1] == "\r\n"

    run(main())


def test_async_streaming_callback_applies_backpressure() -> None:
    big = b"x" * (512 * 1024)

    async def serve(req: Req) -> bytes:
        return response(big)

    async def main() -> None:
        async with Backend(serve) as backend:
            c = client()
            got: list[int] = []

            async def slow_consumer(chunk: bytes) -> None:
                got.append(len(chunk))
                await asyncio.sleep(0)

            try:
                await c.fetch(backend.url("/"), streaming_callback=slow_consumer)
            finally:
                c.close()
            assert sum(got) == len(big)
            assert max(got) <= simple_httpclient._CHUNK_SIZE

    run(main())


def test_callback_errors_are_logged_and_fail_the_request(caplog: pytest.LogCaptureFixture) -> None:
    def boom(_: object) -> None:
        raise ZeroDivisionError("boom")

    async def main() -> None:
        async with Backend(echo) as backend:
            c = client()
            try:
                with pytest.raises(HTTPStreamClosedError):
                    await c.fetch(backend.url("/"), streaming_callback=boom)
                with pytest.raises(HTTPStreamClosedError):
                    await c.fetch(backend.url("/"), header_callback=boom)
            finally:
                c.close()

    with caplog.at_level(logging.ERROR, logger="squall.application"):
        run(main())
    records = [r for r in caplog.records if r.name == "squall.application"]
    assert len(records) == 2
    assert all(r.getMessage().startswith("Uncaught exception") for r in records)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="needs Task.cancelling()")
def test_async_streaming_callback_failures_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    async def raises(_: bytes) -> None:
        await asyncio.sleep(0)
        raise ZeroDivisionError("boom")

    async def awaits_cancelled(_: bytes) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.cancel()
        await future

    async def main() -> None:
        async with Backend(echo) as backend:
            c = client()
            try:
                for callback in (raises, awaits_cancelled):
                    with pytest.raises(HTTPStreamClosedError):
                        await c.fetch(backend.url("/"), streaming_callback=callback)
                # The client is still usable.
                assert (await c.fetch(backend.url("/ok"))).body == b"GET /ok "
            finally:
                c.close()

    with caplog.at_level(logging.ERROR, logger="squall.application"):
        run(main())
    records = [r for r in caplog.records if r.name == "squall.application"]
    assert [r.getMessage() for r in records] == ["Uncaught exception"] * 2


# -- request bodies ------------------------------------------------------------


def test_body_producer_chunked_and_with_content_length() -> None:
    async def producer(write: Callable[[bytes], Awaitable[None]]) -> None:
        await write(b"1234")
        await asyncio.sleep(0)
        await write(b"5678")

    def sync_producer(write: Callable[[bytes], object]) -> None:
        write(b"ab")
        write(b"cd")

    async def main() -> None:
        async with Backend(echo) as backend:
            c = client()
            try:
                r = await c.fetch(backend.url("/"), method="POST", body_producer=producer)
                assert r.body == b"POST / 12345678"
                assert backend.requests[-1].headers["transfer-encoding"] == "chunked"
                r = await c.fetch(
                    backend.url("/"), method="PUT", body_producer=sync_producer,
                    headers={"Content-Length": "4"},
                )
                assert r.body == b"PUT / abcd"
                assert backend.connections == 1
            finally:
                c.close()

    run(main())


def test_body_producer_of_another_method_is_chunked() -> None:
    def producer(write: Callable[[bytes], object]) -> None:
        write(b"ab")
        write(b"")
        write(b"cd")

    async def main() -> None:
        async with Backend(echo) as backend:
            c = client()
            try:
                r = await c.fetch(
                    backend.url("/"), method="DELETE", body_producer=producer,
                    allow_nonstandard_methods=True,
                )
                assert r.body == b"DELETE / abcd"
                assert backend.requests[-1].headers["transfer-encoding"] == "chunked"
                # The framing ended cleanly: the connection is reused.
                assert (await c.fetch(backend.url("/next"))).body == b"GET /next "
                assert backend.connections == 1
            finally:
                c.close()

    run(main())


def test_body_producer_writing_more_than_content_length_fails() -> None:
    def producer(write: Callable[[bytes], object]) -> None:
        write(b"too long")

    async def main() -> None:
        async with Backend(echo) as backend:
            c = client()
            try:
                with pytest.raises(Exception, match="more data than Content-Length"):
                    await c.fetch(
                        backend.url("/"), method="POST", body_producer=producer,
                        headers={"Content-Length": "2"},
                    )
            finally:
                c.close()

    run(main())


def test_expect_100_continue() -> None:
    async def refuse(req: Req) -> Optional[bytes]:
        assert req.writer is not None
        req.writer.write(response(b"no", code=403))
        return None

    async def main() -> None:
        async with Backend(echo) as backend:
            c = client()
            try:
                r = await c.fetch(backend.url("/"), method="POST", body=b"data", expect_100_continue=True)
                assert r.body == b"POST / data"
                assert backend.requests[0].headers["expect"] == "100-continue"
            finally:
                c.close()

        def never(write: object) -> None:
            raise AssertionError("body sent despite early response")

        # A server that answers at once (no 100 Continue): the body is not
        # sent, and the client closes the connection, whose framing is lost.
        done = asyncio.Event()

        async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(response(b"no", code=403))
            await writer.drain()
            assert await reader.read() == b""
            writer.close()
            done.set()

        server = await asyncio.start_server(early, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        c = client()
        try:
            r = await c.fetch(
                f"http://127.0.0.1:{port}/", method="POST", body_producer=never,
                expect_100_continue=True, raise_error=False,
            )
            assert (r.code, r.body) == (403, b"no")
            await asyncio.wait_for(done.wait(), 5)
        finally:
            c.close()
            server.close()
            await server.wait_closed()

    run(main())


def test_request_validation_errors() -> None:
    async def main() -> None:
        async with Backend(echo) as backend:
            c = client()
            try:
                with pytest.raises(ValueError, match="must not be None"):
                    await c.fetch(backend.url("/"), method="POST")
                with pytest.raises(ValueError, match="must be None"):
                    await c.fetch(backend.url("/"), body=b"x")
                for bad in ({"X": "a\r\nInjected: 1"}, {"X\nY": "a"}):
                    with pytest.raises(ValueError):
                        await c.fetch(backend.url("/"), headers=bad)
                with pytest.raises(ValueError, match="Unsupported url scheme"):
                    await c.fetch("ftp://127.0.0.1/")
                with pytest.raises(ValueError, match="auth_mode"):
                    await c.fetch(backend.url("/"), auth_username="a", auth_password="b", auth_mode="digest")
                with pytest.raises(ValueError, match="not-an-ip"):
                    await c.fetch(backend.url("/"), network_interface="not-an-ip")
                with pytest.raises(NotImplementedError):
                    await c.fetch(backend.url("/"), proxy_host="proxy")
                r = await c.fetch(backend.url("/"), method="OTHER", allow_nonstandard_methods=True)
                assert r.body == b"OTHER / "
                assert len(backend.requests) == 1
            finally:
                c.close()

    run(main())


def test_default_headers_auth_and_host() -> None:
    async def main() -> None:
        async with Backend(echo) as backend:
            c = client()
            try:
                await c.fetch(backend.url("/").replace("http://", "http://me:s%40cret@"))
                await c.fetch(backend.url("/"), auth_username="Aladdin", auth_password="open sesame",
                              user_agent="UA/1", headers={"Foo": "b\xe4r"})
                await c.fetch(backend.url("/"), method="POST", body="a=1")
            finally:
                c.close()
            first, second, third = (r.headers for r in backend.requests)
            assert first["host"] == f"127.0.0.1:{backend.port}"
            assert first["authorization"] == "Basic bWU6c0BjcmV0"
            assert first["user-agent"].startswith("squall/")
            assert first["accept-encoding"] == "gzip"
            assert second["authorization"] == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
            assert second["user-agent"] == "UA/1"
            assert second["foo"] == "b\xe4r"
            assert third["content-type"] == "application/x-www-form-urlencoded"
            assert third["content-length"] == "3"

    run(main())


# -- redirects -----------------------------------------------------------------


def test_redirects() -> None:
    async def redirecting(req: Req) -> bytes:
        if req.path.startswith("/r/"):
            code, _, target = req.path[3:].partition("/")
            return response(b"moved", code=int(code), headers={"Location": "/" + target})
        if req.path.startswith("/count/"):
            n = int(req.path[7:])
            if n:
                return response(code=302, headers={"Location": f"/count/{n - 1}"})
        return await echo(req)

    async def main() -> None:
        async with Backend(redirecting) as backend:
            c = client()
            try:
                for code in (301, 302, 303):
                    r = await c.fetch(backend.url(f"/r/{code}/t"), method="POST", body=b"b")
                    assert r.body == b"GET /t "
                    assert r.request.method == "POST"
                    assert r.effective_url == backend.url("/t")
                for code in (307, 308):
                    r = await c.fetch(backend.url(f"/r/{code}/t"), method="PUT", body=b"b")
                    assert r.body == b"PUT /t b"
                r = await c.fetch(backend.url("/r/302/t"), follow_redirects=False, raise_error=False)
                assert (r.code, r.headers["Location"]) == (302, "/t")
                r = await c.fetch(backend.url("/count/5"), max_redirects=3, raise_error=False)
                assert r.code == 302
                assert r.effective_url.endswith("/count/2")
                assert r.request.url.endswith("/count/5")
                streamed: list[bytes] = []
                lines: list[str] = []
                await c.fetch(backend.url("/r/302/t"), streaming_callback=streamed.append,
                              header_callback=lines.append)
                assert streamed == [b"GET /t "]
                assert sum(line.startswith("HTTP/") for line in lines) == 1
                assert backend.connections == 1
            finally:
                c.close()

    run(main())


def test_cross_origin_redirect_drops_credentials() -> None:
    async def main() -> None:
        async with Backend(echo) as target:

            async def redirect(req: Req) -> bytes:
                return response(code=302, headers={"Location": target.url("/landed")})

            async with Backend(redirect) as origin:
                c = client()
                try:
                    await c.fetch(origin.url("/"), auth_username="u", auth_password="p",
                                  headers={"Cookie": "secret=1", "X-Keep": "1"})
                finally:
                    c.close()
                assert "authorization" in origin.requests[0].headers
                landed = target.requests[0].headers
                assert "authorization" not in landed
                assert "cookie" not in landed
                assert landed["x-keep"] == "1"
                assert landed["host"] == f"127.0.0.1:{target.port}"

    run(main())


# -- connecting and timeouts ---------------------------------------------------


def test_connection_refused() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    async def main() -> None:
        c = client()
        try:
            with pytest.raises(OSError) as info:
                await c.fetch(f"http://127.0.0.1:{port}/")
            assert info.value.errno == errno.ECONNREFUSED
            assert os.strerror(errno.ECONNREFUSED) in str(info.value)
        finally:
            c.close()

    run(main())


def test_request_timeout_closes_the_connection() -> None:
    async def stall(req: Req) -> bytes:
        if req.path == "/slow":
            await asyncio.sleep(1)
        return await echo(req)

    async def main() -> None:
        async with Backend(stall) as backend:
            c = client()
            try:
                with pytest.raises(HTTPTimeoutError) as info:
                    await c.fetch(backend.url("/slow"), request_timeout=0.1)
                assert str(info.value) == "Timeout during request"
                assert info.value.code == 599
                r = await c.fetch(backend.url("/fast"))
                assert r.body == b"GET /fast "
                assert backend.connections == 2
            finally:
                c.close()

    run(main())


def test_max_clients_queue_and_queue_timeout() -> None:
    release = asyncio.Event

    async def main() -> None:
        gate = release()

        async def blocked(req: Req) -> bytes:
            if req.path == "/block":
                await gate.wait()
            return await echo(req)

        async with Backend(blocked) as backend:
            c = client(max_clients=1)
            try:
                first = c.fetch(backend.url("/block"))
                await asyncio.sleep(0.05)
                second = c.fetch(backend.url("/queued"))
                assert len(c.queue) == 1 and len(c.active) == 1
                with pytest.raises(HTTPTimeoutError, match="Timeout in request queue"):
                    await c.fetch(backend.url("/x"), connect_timeout=0.05)
                gate.set()
                assert (await first).body == b"GET /block "
                assert (await second).body == b"GET /queued "
                assert len(c.queue) == 0 and not c.active and not c.waiting
            finally:
                c.close()

    run(main())


def test_resolver_and_hostname_mapping() -> None:
    class Resolver:
        def __init__(self) -> None:
            self.calls: list[tuple[str, int]] = []

        async def resolve(self, host: str, port: int, family: int = 0) -> list[tuple[int, tuple[str, int]]]:
            self.calls.append((host, port))
            return [(socket.AF_INET, ("127.0.0.1", port))]

    class HangingResolver:
        async def resolve(self, host: str, port: int, family: int = 0) -> list[tuple[int, tuple[str, int]]]:
            await asyncio.sleep(10)
            raise AssertionError("not reached")

    async def main() -> None:
        async with Backend(echo) as backend:
            resolver = Resolver()
            c = client(resolver=resolver, hostname_mapping={("example.com", 81): ("mapped.test", backend.port)})
            try:
                await c.fetch(backend.url("/").replace("127.0.0.1", "example.test"))
                await c.fetch("http://example.com:81/m")
            finally:
                c.close()
            assert resolver.calls == [("example.test", backend.port), ("mapped.test", backend.port)]
            assert backend.requests[1].headers["host"] == "example.com:81"
            c = client(resolver=HangingResolver())
            try:
                with pytest.raises(HTTPTimeoutError) as info:
                    await c.fetch(backend.url("/"), connect_timeout=0.05)
                assert str(info.value) == "Timeout while resolving 127.0.0.1"
            finally:
                c.close()

    run(main())


# -- TLS -------------------------------------------------------------------------


def _server_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(CERTFILE, KEYFILE)
    return context


def test_https_validation_options_and_pooling(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with Backend(echo, ssl_context=_server_context()) as backend:
            c = client()
            try:
                with caplog.at_level(logging.INFO, logger="squall.general"):
                    with pytest.raises(ssl.SSLError):
                        await c.fetch(backend.url("/", "https"))
                # A failed handshake is logged once, as a warning without a
                # traceback (the fetch's error carries the details).
                records = [r for r in caplog.records if r.name == "squall.general"]
                assert len(records) == 1 and records[0].levelno == logging.WARNING
                assert records[0].getMessage().startswith(f"SSL Error on 127.0.0.1:{backend.port}: ")
                assert records[0].exc_info is None
                r = await c.fetch(backend.url("/a", "https"), ca_certs=CERTFILE)
                assert r.body == b"GET /a "
                r = await c.fetch(backend.url("/b", "https"), ca_certs=CERTFILE)
                assert r.body == b"GET /b "
                r = await c.fetch(backend.url("/c", "https"), validate_cert=False)
                assert r.body == b"GET /c "
                r = await c.fetch(backend.url("/d", "https"), ssl_options={"cert_reqs": ssl.CERT_NONE})
                assert r.body == b"GET /d "
                # One connection per distinct TLS setup (the server never
                # sees the connection whose handshake failed).
                assert backend.connections == 3
            finally:
                c.close()

    run(main())


def test_tls_handshake_timeout_closes_socket() -> None:
    async def main() -> None:
        closed = asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()
            closed.set()
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        c = client()
        try:
            with pytest.raises(HTTPTimeoutError) as info:
                await c.fetch(f"https://127.0.0.1:{port}/", connect_timeout=0.2, validate_cert=False)
            assert str(info.value) == f"Timeout during TLS handshake with 127.0.0.1:{port}"
            await asyncio.wait_for(closed.wait(), 5)
        finally:
            c.close()
            server.close()
            await server.wait_closed()

    run(main())


def test_client_options_are_validated() -> None:
    async def main() -> None:
        for bad in ({"max_clients": 0}, {"max_body_size": -1}, {"max_header_size": "big"}):
            with pytest.raises(ValueError):
                client(**bad)
        c = client(max_clients=3, defaults={"user_agent": "D/1"})
        try:
            assert c.max_clients == 3
            assert c.defaults["user_agent"] == "D/1"
            assert c.defaults["request_timeout"] == 20.0
        finally:
            c.close()

    run(main())


def test_http_request_object_is_not_modified() -> None:
    async def main() -> None:
        async with Backend(echo) as backend:
            c = client()
            request = HTTPRequest(backend.url("/"), headers={"User-Agent": "Mine"})
            try:
                await c.fetch(request)
                await c.fetch(request)
            finally:
                c.close()
            assert dict(request.headers) == {"User-Agent": "Mine"}
            assert backend.requests[1].headers["user-agent"] == "Mine"

    run(main())


def test_connection_reset_mid_request_is_a_599_stream_closed_error() -> None:
    # A server process that dies while handling a request resets the
    # connection; the caller sees the usual transport-failure error (599),
    # not a bare socket exception.
    async def reset(req: Req) -> Optional[bytes]:
        assert req.writer is not None
        sock = req.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        req.writer.transport.abort()
        return None

    async def main() -> None:
        async with Backend(reset) as backend:
            c = client()
            try:
                with pytest.raises(HTTPStreamClosedError) as info:
                    await c.fetch(backend.url("/"))
                assert info.value.code == 599
                assert isinstance(info.value.__cause__, ConnectionResetError)
            finally:
                c.close()

    run(main())
