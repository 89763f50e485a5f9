"""squall.wsgi: WSGI applications served by a real squall HTTPServer on a
loopback port, spoken to over raw sockets."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from typing import Any, Awaitable, Callable, Optional
from wsgiref.validate import validator

import pytest

from squall.concurrent import dummy_executor
from squall.httpserver import HTTPServer
from squall.simple_httpclient import HTTPStreamClosedError
from squall.testing import AsyncHTTPSTestCase, ExpectLog, bind_unused_port
from squall.web import Application, FallbackHandler, RequestHandler
from squall.wsgi import HTTPRequest, WSGIContainer, to_wsgi_str
from squall import httputil

# Bounds every wait in this file; generous for a loaded shared machine.
TIMEOUT = 10.0


class _Reply:
    def __init__(self, status: str, headers: httputil.HTTPHeaders, body: bytes, complete: bool) -> None:
        self.status = status
        self.code = int(status.split()[1])
        self.headers = headers
        self.body = body
        self.complete = complete


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, httputil.HTTPHeaders]:
    head = await reader.readuntil(b"\r\n\r\n")
    status, _, rest = head.decode("latin-1").partition("\r\n")
    return status, httputil.HTTPHeaders.parse(rest)


async def _read_body(reader: asyncio.StreamReader, headers: httputil.HTTPHeaders, head_only: bool) -> tuple[bytes, bool]:
    """The body and whether it arrived whole (per its framing)."""
    if head_only:
        return b"", True
    if headers.get("Transfer-Encoding") == "chunked":
        parts = []
        try:
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    return b"".join(parts), True
                parts.append(data[:-2])
        except (asyncio.IncompleteReadError, ConnectionError):
            return b"".join(parts), False
    if "Content-Length" in headers:
        length = int(headers["Content-Length"])
        try:
            return await reader.readexactly(length), True
        except asyncio.IncompleteReadError as e:
            return e.partial, False
    return await reader.read(), True


async def request(
    port: int,
    method: str = "GET",
    path: str = "/",
    headers: Optional[list[tuple[str, str]]] = None,
    body: bytes = b"",
) -> _Reply:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
        for name, value in headers or []:
            lines.append(f"{name}: {value}")
        if body:
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        status, response_headers = await asyncio.wait_for(_read_head(reader), TIMEOUT)
        data, complete = await asyncio.wait_for(
            _read_body(reader, response_headers, method == "HEAD"), TIMEOUT
        )
        return _Reply(status, response_headers, data, complete)
    finally:
        writer.close()


def serve(target: Any, test: Callable[[int], Awaitable[None]]) -> None:
    """Run ``test(port)`` against an HTTPServer for ``target`` (an
    Application or a request callable), then shut it down."""

    async def main() -> None:
        server = HTTPServer(target)
        sock, port = bind_unused_port()
        server.add_sockets([sock])
        try:
            await asyncio.wait_for(test(port), TIMEOUT * 2)
        finally:
            server.stop()
            await server.close_all_connections()

    asyncio.run(main())


def hello_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello ", b"world"]


def test_simple_list_body_gets_content_length() -> None:
    async def check(port: int) -> None:
        reply = await request(port)
        assert reply.code == 200
        assert reply.body == b"Hello world"
        assert reply.headers["Content-Length"] == "11"
        assert "Transfer-Encoding" not in reply.headers
        assert reply.headers["Content-Type"] == "text/plain"
        assert reply.headers["Server"].startswith("SquallServer/")

        head = await request(port, "HEAD")
        assert head.code == 200 and head.headers["Content-Length"] == "11"

    serve(WSGIContainer(hello_app), check)


def test_validated_app_is_streamed() -> None:
    # wsgiref's validator hides the list behind an iterator: no length is
    # known up front, so the body is streamed.
    async def check(port: int) -> None:
        reply = await request(port)
        assert reply.body == b"Hello world" and reply.complete
        assert reply.headers["Transfer-Encoding"] == "chunked"

    serve(WSGIContainer(validator(hello_app)), check)


def test_environ_is_complete_and_decoded() -> None:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.update(environ)
        seen["body"] = environ["wsgi.input"].read(100)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    async def check(port: int) -> None:
        reply = await request(
            port,
            "POST",
            "/caf%C3%A9/a%20b?x=1&y=%20",
            headers=[
                ("Content-Type", "text/plain"),
                ("X-Thing", "one"),
                ("X-Thing", "two"),
                ("X_Thing", "forged"),
            ],
            body=b"payload",
        )
        assert reply.code == 200

    serve(WSGIContainer(validator(app)), check)
    assert seen["REQUEST_METHOD"] == "POST"
    assert seen["SCRIPT_NAME"] == ""
    # PEP 3333: bytes of the decoded path, as latin-1 "native strings".
    assert seen["PATH_INFO"] == to_wsgi_str("/café/a b".encode())
    assert seen["QUERY_STRING"] == "x=1&y=%20"
    assert seen["SERVER_NAME"] == "127.0.0.1"
    assert seen["SERVER_PORT"].isdigit()
    assert seen["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert seen["REMOTE_ADDR"] == "127.0.0.1"
    assert seen["CONTENT_TYPE"] == "text/plain"
    assert seen["CONTENT_LENGTH"] == "7"
    assert "HTTP_CONTENT_TYPE" not in seen and "HTTP_CONTENT_LENGTH" not in seen
    assert seen["HTTP_X_THING"] == "one,two"
    assert seen["HTTP_HOST"].startswith("127.0.0.1:")
    assert seen["body"] == b"payload"
    assert seen["wsgi.version"] == (1, 0)
    assert seen["wsgi.url_scheme"] == "http"
    assert seen["wsgi.multithread"] is True
    assert seen["wsgi.multiprocess"] is False
    assert seen["wsgi.run_once"] is False
    assert hasattr(seen["wsgi.errors"], "write")


def test_default_runs_on_a_pool_so_a_slow_app_does_not_block_the_loop() -> None:
    release = threading.Event()
    threads: dict[str, str] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        threads[environ["PATH_INFO"]] = threading.current_thread().name
        if environ["PATH_INFO"] == "/slow":
            release.wait(TIMEOUT)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]

    async def check(port: int) -> None:
        slow = asyncio.ensure_future(request(port, path="/slow"))
        fast = await request(port, path="/fast")
        assert fast.body == b"/fast"
        assert not slow.done()
        release.set()
        assert (await slow).body == b"/slow"

    serve(WSGIContainer(app), check)
    assert threads["/slow"].startswith("squall-wsgi")
    assert threads["/fast"] != threading.current_thread().name


def test_dummy_executor_runs_on_the_loop_thread() -> None:
    threads: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        threads.append(threading.current_thread().name)
        assert environ["wsgi.multithread"] is False
        return hello_app(environ, start_response)

    async def check(port: int) -> None:
        assert (await request(port)).body == b"Hello world"

    for executor in (None, dummy_executor):
        threads.clear()
        serve(WSGIContainer(app, executor=executor), check)
        assert threads == [threading.current_thread().name]


@pytest.mark.parametrize("executor", ["pool", "loop"])
def test_streaming_body_is_sent_as_it_comes_and_closed(executor: str) -> None:
    first_seen = threading.Event()
    closed = threading.Event()

    class Body:
        def __iter__(self) -> Any:
            yield b"first"
            if executor == "pool":
                # Only continue once the client has the first piece.
                assert first_seen.wait(TIMEOUT)
            yield b""
            yield b"second"

        def close(self) -> None:
            closed.set()

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    async def check(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers = await asyncio.wait_for(_read_head(reader), TIMEOUT)
        assert headers["Transfer-Encoding"] == "chunked"
        first = await asyncio.wait_for(reader.readuntil(b"first\r\n"), TIMEOUT)
        assert first.endswith(b"5\r\nfirst\r\n")
        first_seen.set()
        body, complete = await asyncio.wait_for(_read_body(reader, headers, False), TIMEOUT)
        assert (body, complete) == (b"second", True)
        writer.close()

    container = WSGIContainer(app) if executor == "pool" else WSGIContainer(app, executor=None)
    serve(container, check)
    assert closed.is_set()


def test_close_is_called_when_the_client_goes_away() -> None:
    closed = threading.Event()
    produced: list[int] = []

    class Endless:
        def __iter__(self) -> Any:
            for i in range(100_000):
                produced.append(i)
                yield b"x" * 65536

        def close(self) -> None:
            closed.set()

    def app(environ: dict[str, Any], start_response: Any) -> Endless:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Endless()

    async def check(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(_read_head(reader), TIMEOUT)
        writer.transport.abort()
        for _ in range(int(TIMEOUT / 0.01)):
            if closed.is_set():
                break
            await asyncio.sleep(0.01)

    serve(WSGIContainer(app), check)
    assert closed.is_set()
    # Flow control stopped the iteration long before the end.
    assert len(produced) < 100_000


def test_write_callable_comes_before_the_iterable() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"one ")
        write(b"two ")
        return [b"three"]

    async def check(port: int) -> None:
        reply = await request(port)
        assert reply.body == b"one two three" and reply.complete

    serve(WSGIContainer(validator(app)), check)
    serve(WSGIContainer(validator(app), executor=None), check)


def test_start_response_with_exc_info_replaces_the_status() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise KeyError("boom")
        except KeyError:
            start_response("503 Try Later", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"sorry"]

    async def check(port: int) -> None:
        reply = await request(port)
        assert reply.status == "HTTP/1.1 503 Try Later"
        assert reply.body == b"sorry"

    serve(WSGIContainer(validator(app)), check)


def test_second_start_response_without_exc_info_is_an_error(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        start_response("200 OK", [])
        return [b""]

    async def check(port: int) -> None:
        assert (await request(port)).code == 500

    with caplog.at_level(logging.ERROR, "squall.application"):
        serve(WSGIContainer(app), check)
    assert "called a second time" in caplog.text


def test_app_error_gives_500_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise ZeroDivisionError("kaboom")

    async def check(port: int) -> None:
        reply = await request(port, path="/broken")
        assert reply.code == 500
        assert b"500: Internal Server Error" in reply.body

    with caplog.at_level(logging.INFO):
        serve(WSGIContainer(app), check)
    errors = [r for r in caplog.records if r.name == "squall.application"]
    assert len(errors) == 1
    assert "GET /broken" in errors[0].getMessage()
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is ZeroDivisionError
    access = [r.getMessage() for r in caplog.records if r.name == "squall.access"]
    assert len(access) == 1 and access[0].startswith("500 GET /broken (127.0.0.1)")


def test_bad_status_from_app_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK\r\nX-Injected: 1", [])
        return [b""]

    async def check(port: int) -> None:
        reply = await request(port)
        assert reply.code == 500
        assert "X-Injected" not in reply.headers

    with caplog.at_level(logging.ERROR, "squall.application"):
        serve(WSGIContainer(app), check)
    assert "must look like '200 OK'" in caplog.text


def test_error_mid_stream_cuts_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        raise RuntimeError("halfway")

    async def check(port: int) -> None:
        reply = await request(port)
        assert reply.code == 200
        assert reply.body == b"partial"
        assert not reply.complete

    with caplog.at_level(logging.ERROR, "squall.application"):
        serve(WSGIContainer(app), check)
    assert "halfway" in caplog.text


def test_access_log(caplog: pytest.LogCaptureFixture) -> None:
    async def check(port: int) -> None:
        await request(port, path="/where?q=1")

    with caplog.at_level(logging.INFO, "squall.access"):
        serve(WSGIContainer(hello_app), check)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "squall.access"]
    assert line.startswith("200 GET /where?q=1 (127.0.0.1) ")
    assert line.endswith("ms")


def test_fallback_handler_beside_native_handlers() -> None:
    class Native(RequestHandler):
        def get(self) -> None:
            self.write("native")

    container = WSGIContainer(hello_app)
    app = Application([("/native", Native), (r".*", FallbackHandler, dict(fallback=container))])

    async def check(port: int) -> None:
        assert (await request(port, path="/native")).body == b"native"
        reply = await request(port, path="/anything")
        assert reply.body == b"Hello world" and reply.code == 200

    serve(app, check)


def test_bad_arguments_raise_at_once() -> None:
    with pytest.raises(TypeError, match="42"):
        WSGIContainer(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'pool'"):
        WSGIContainer(hello_app, executor="pool")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'text'"):
        to_wsgi_str("text")  # type: ignore[arg-type]
    assert to_wsgi_str(b"caf\xc3\xa9") == "caf\u00c3\u00a9"
    assert HTTPRequest is httputil.HTTPServerRequest


class HTTPSMidStreamErrorTest(AsyncHTTPSTestCase):
    """Over HTTPS the connection runs on an IOStream: an error mid-body
    must cut it there too, not leave the client waiting."""

    def get_app(self) -> Application:
        def app(environ: dict[str, Any], start_response: Any) -> Any:
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"partial"
            raise RuntimeError("halfway")

        return Application([(r".*", FallbackHandler, dict(fallback=WSGIContainer(app)))])

    def test_error_mid_stream_cuts_the_connection(self) -> None:
        with ExpectLog("squall.application", "Uncaught exception in WSGI application"):
            with pytest.raises(HTTPStreamClosedError):
                self.fetch("/", request_timeout=TIMEOUT)
