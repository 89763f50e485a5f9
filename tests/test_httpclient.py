"""Tests for squall.httpclient: request/response/error types, the client
singleton and configuration, and the blocking HTTPClient."""

from __future__ import annotations

import asyncio
import copy
import datetime
import io
import subprocess
import sys
import threading
from typing import Iterator

import pytest

from squall.httpclient import (
    AsyncHTTPClient,
    HTTPClient,
    HTTPClientError,
    HTTPError,
    HTTPRequest,
    HTTPResponse,
    _RequestProxy,
)
from squall.httputil import HTTPHeaders, format_timestamp
from squall.simple_httpclient import SimpleAsyncHTTPClient


class _ThreadedServer:
    """A minimal HTTP/1.1 server on its own thread and asyncio loop: 200 with
    the path on ``/...``, 404 on ``/missing``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.writers: set[asyncio.StreamWriter] = set()
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.wait_closed())
        self.loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                path = head.split(b" ")[1]
                status = b"404 Not Found" if path == b"/missing" else b"200 OK"
                writer.write(b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status, len(path), path))
        finally:
            self.writers.discard(writer)
            writer.close()

    def stop(self) -> None:
        def shutdown() -> None:
            self.server.close()
            for writer in self.writers:
                writer.close()
            self.loop.call_later(0.05, self.loop.stop)

        self.loop.call_soon_threadsafe(shutdown)
        self.thread.join(10)


@pytest.fixture
def threaded_server() -> Iterator[_ThreadedServer]:
    server = _ThreadedServer()
    yield server
    server.stop()


# -- HTTPRequest ---------------------------------------------------------------


def test_request_headers_and_body_normalisation() -> None:
    request = HTTPRequest("http://example.com", headers={"foo": "bar"}, body="caf\xe9")
    assert request.headers == {"foo": "bar"}
    assert request.body == "caf\xe9".encode()
    request.headers = None  # type: ignore[assignment]
    assert request.headers == {}
    assert isinstance(request.headers, HTTPHeaders)
    request.body = "x"  # type: ignore[assignment]
    assert request.body == b"x"
    assert HTTPRequest("http://example.com").body is None


def test_request_if_modified_since_and_use_gzip() -> None:
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    request = HTTPRequest("http://example.com", if_modified_since=when)
    assert request.headers == {"If-Modified-Since": format_timestamp(when)}
    assert HTTPRequest("http://example.com", use_gzip=False).decompress_response is False
    assert HTTPRequest("http://example.com", use_gzip=False, decompress_response=True).decompress_response


def test_request_rejects_bad_url_and_method() -> None:
    with pytest.raises(TypeError, match="b'http"):
        HTTPRequest(b"http://example.com")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method"):
        HTTPRequest("http://example.com", method="")


def test_request_proxy_falls_back_on_defaults() -> None:
    request = HTTPRequest("http://example.com/", user_agent="foo", proxy_host="mine")
    proxy = _RequestProxy(request, {"network_interface": "1.2.3.4", "proxy_host": "theirs"})
    assert proxy.user_agent == "foo"
    assert proxy.network_interface == "1.2.3.4"
    assert proxy.proxy_host == "mine"
    assert proxy.auth_username is None
    assert _RequestProxy(request, None).auth_username is None
    with pytest.raises(AttributeError):
        proxy.no_such_attribute
    # A default for something requests do not have is not invented.
    with pytest.raises(AttributeError):
        _RequestProxy(request, {"not_an_option": 1}).not_an_option
    # The properties, and a subclass's own computed attributes, answer too.
    request.body = "é"
    assert _RequestProxy(request, None).body == "é".encode()
    assert _RequestProxy(request, None).headers is request.headers

    class Timed(HTTPRequest):
        @property
        def deadline(self) -> float:
            return self.start_time + 5

    timed = Timed("http://example.com/")
    assert _RequestProxy(timed, {}).deadline == timed.start_time + 5
    assert _RequestProxy(timed, {}).request is timed


# -- HTTPResponse and HTTPClientError ------------------------------------------


def test_response_body_is_read_lazily_from_buffer() -> None:
    request = HTTPRequest("http://example.com/")
    buffer = io.BytesIO(b"hello")
    response = HTTPResponse(request, 200, buffer=buffer)
    assert response.body == b"hello"
    assert response.error is None
    response.rethrow()
    assert response.effective_url == "http://example.com/"
    assert response.reason == "OK"
    assert response.time_info == {}
    assert HTTPResponse(request, 200).body == b""
    assert repr(response).startswith("HTTPResponse(") and "code=200" in repr(response)


def test_response_error_for_non_2xx_and_proxy_unwrapping() -> None:
    request = HTTPRequest("http://example.com/")
    response = HTTPResponse(_RequestProxy(request, {}), 403)  # type: ignore[arg-type]
    assert response.request is request
    assert isinstance(response.error, HTTPClientError)
    with pytest.raises(HTTPError) as info:
        response.rethrow()
    assert str(info.value) == repr(info.value) == "HTTP 403: Forbidden"
    assert info.value.response is response
    failure = HTTPResponse(request, 599, error=OSError("boom"))
    with pytest.raises(OSError, match="boom"):
        failure.rethrow()


def test_client_error_messages_and_copy() -> None:
    assert HTTPError is HTTPClientError
    error = HTTPClientError(599, "Timeout")
    assert (error.code, error.message, error.response) == (599, "Timeout", None)
    assert str(HTTPClientError(404)) == "HTTP 404: Not Found"
    assert str(HTTPClientError(799)) == "HTTP 799: Unknown"
    clone = copy.copy(HTTPClientError(403))
    assert clone.code == 403 and str(clone) == "HTTP 403: Forbidden"


# -- AsyncHTTPClient -----------------------------------------------------------


def test_one_shared_client_per_loop() -> None:
    async def make() -> tuple[AsyncHTTPClient, AsyncHTTPClient, AsyncHTTPClient]:
        a = AsyncHTTPClient()
        b = AsyncHTTPClient()
        private = AsyncHTTPClient(force_instance=True)
        private.close()
        return a, b, private

    a1, b1, private = asyncio.run(make())
    a2, _, _ = asyncio.run(make())
    try:
        assert a1 is b1
        assert private is not a1
        assert a1 is not a2
        assert isinstance(a1, SimpleAsyncHTTPClient)
    finally:
        a1.close()
        a2.close()


def test_close_forgets_the_shared_instance() -> None:
    async def main() -> None:
        first = AsyncHTTPClient()
        first.close()
        first.close()
        second = AsyncHTTPClient()
        try:
            assert second is not first
            with pytest.raises(RuntimeError, match="closed"):
                first.fetch("http://127.0.0.1/")
        finally:
            second.close()

    asyncio.run(main())


def test_configure_sets_implementation_arguments() -> None:
    saved = AsyncHTTPClient._save_configuration()
    try:
        AsyncHTTPClient.configure(SimpleAsyncHTTPClient, max_clients=12)

        async def main() -> None:
            for kwargs, expected in (({}, 12), ({"max_clients": 13}, 13)):
                client = AsyncHTTPClient(force_instance=True, **kwargs)
                try:
                    assert client.max_clients == expected  # type: ignore[attr-defined]
                finally:
                    client.close()

        asyncio.run(main())
    finally:
        AsyncHTTPClient._restore_configuration(saved)


def test_fetch_rejects_kwargs_with_request_object() -> None:
    async def main() -> None:
        client = AsyncHTTPClient(force_instance=True)
        try:
            with pytest.raises(ValueError, match="method"):
                client.fetch(HTTPRequest("http://127.0.0.1/"), method="POST")
        finally:
            client.close()

    asyncio.run(main())


def test_raise_error_only_covers_http_status(threaded_server: _ThreadedServer) -> None:
    async def main() -> None:
        client = AsyncHTTPClient(force_instance=True, defaults={"user_agent": "T/1"})
        url = f"http://127.0.0.1:{threaded_server.port}"
        try:
            with pytest.raises(HTTPClientError) as info:
                await client.fetch(url + "/missing")
            assert info.value.code == 404
            assert info.value.response is not None and info.value.response.body == b"/missing"
            response = await client.fetch(url + "/missing", raise_error=False)
            assert response.code == 404
            response = await client.fetch(url + "/ok")
            assert response.body == b"/ok"
            assert response.request_time is not None and 0 <= response.request_time < 5
            assert response.start_time is not None
            with pytest.raises(OSError):
                await client.fetch("http://127.0.0.1:1/", raise_error=False)
        finally:
            client.close()

    asyncio.run(main())


def test_cancelled_fetch_logs_late_error(threaded_server: _ThreadedServer, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        client = AsyncHTTPClient(force_instance=True)
        try:
            future = client.fetch(f"http://127.0.0.1:{threaded_server.port}/missing")
            future.cancel()
            for _ in range(100):
                await asyncio.sleep(0.01)
                if caplog.records:
                    break
        finally:
            client.close()

    asyncio.run(main())
    assert [r.getMessage() for r in caplog.records] == ["Exception after Future was cancelled"]


# -- HTTPClient ----------------------------------------------------------------


def test_blocking_client(threaded_server: _ThreadedServer) -> None:
    client = HTTPClient()
    try:
        url = f"http://127.0.0.1:{threaded_server.port}"
        assert client.fetch(url + "/a").body == b"/a"
        assert client.fetch(HTTPRequest(url + "/b")).body == b"/b"
        with pytest.raises(HTTPClientError) as info:
            client.fetch(url + "/missing")
        assert info.value.code == 404
        assert client.fetch(url + "/missing", raise_error=False).code == 404
    finally:
        client.close()
    client.close()
    with pytest.raises(RuntimeError):
        client.fetch("http://127.0.0.1/")


def test_blocking_client_at_interpreter_exit_is_silent() -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c",
         "from squall.httpclient import HTTPClient; f = lambda: None; c = HTTPClient()"],
        capture_output=True, timeout=30,
    )
    assert proc.returncode == 0
    assert proc.stdout == b"" and proc.stderr == b""


def test_curl_client_names_import_and_construction_explains() -> None:
    from squall import curl_httpclient

    error = curl_httpclient.CurlError(7, "Couldn't connect")
    assert (error.code, error.errno, str(error)) == (599, 7, "HTTP 599: Couldn't connect")
    assert curl_httpclient.CR_OR_LF_RE.search(b"a\r\nb")

    async def main() -> None:
        with pytest.raises((ImportError, NotImplementedError), match="SimpleAsyncHTTPClient"):
            curl_httpclient.CurlAsyncHTTPClient(force_instance=True)

    asyncio.run(main())
