"""TLS servers under load, on uvloop and the standard library's loop.

Regression tests for the server-side handshake that failed for most
connections under uvloop (the client's hello was read as plain data before
TLS took the connection over, and the failure's clean-up then tried to close
uvloop's pseudo-socket). Real servers on 127.0.0.1 port 0, real clients: the
standard library's ``ssl`` module in threads, and squall's own `TCPClient`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import socket
import ssl
import threading
import time
from typing import Any, Optional

import pytest

from squall import web
from squall.httpserver import HTTPServer
from squall.iostream import IOStream, SSLIOStream, StreamClosedError
from squall.tcpclient import TCPClient
from squall.tcpserver import TCPServer

from _tls_support import (  # noqa: E402  (loop_name is a fixture)
    SERVER_SSL,
    SOCKET_TIMEOUT,
    client_context,
    listen,
    loop_name,
    run,
)

CLIENTS = 20
# How long the busy loop gives connected clients to send their hellos.
HELLO_DELAY = 0.1


class EchoServer(TCPServer):
    """Echoes each line back upper-cased, after checking the handshake."""

    async def handle_stream(self, stream: IOStream, address: Any) -> None:
        try:
            assert isinstance(stream, SSLIOStream)
            await stream.wait_for_handshake()
            assert stream.socket.version() is not None
            while True:
                line = await stream.read_until(b"\n")
                await stream.write(line.upper())
        except (StreamClosedError, ssl.SSLError):
            # A failed handshake fails wait_for_handshake with its SSLError.
            pass


class HelloHandler(web.RequestHandler):
    def get(self) -> None:
        self.write(f"hello {self.request.protocol}")


def make_http_server() -> HTTPServer:
    return HTTPServer(web.Application([("/", HelloHandler)]), ssl_options=SERVER_SSL)


def stdlib_exchange(port: int, payload: bytes, connected: Optional[threading.Semaphore] = None) -> bytes:
    """One blocking TLS connection: send ``payload``; read one line back if
    it is an echo line, else everything until the server closes. Releases
    ``connected`` once the TCP connection is up (the hello follows at once)."""
    echo = payload.endswith(b"\n") and not payload.endswith(b"\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
        if connected is not None:
            connected.release()
        with client_context().wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(payload)
            data = b""
            while not (echo and data.endswith(b"\n")):
                chunk = tls.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data


async def stdlib_clients(port: int, payloads: list[bytes]) -> list[bytes]:
    """Run one client per payload, each in its own thread, all at once.

    The loop is kept busy until every client has connected and sent its
    hello, as on a loaded server: each hello is then already waiting when
    its connection is accepted, which is when TLS layered onto a plain
    transport too late used to lose it under uvloop.
    """
    loop = asyncio.get_running_loop()
    connected = threading.Semaphore(0)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        clients = [loop.run_in_executor(pool, stdlib_exchange, port, p, connected) for p in payloads]
        for _ in payloads:
            connected.acquire(timeout=SOCKET_TIMEOUT)
        time.sleep(HELLO_DELAY)
        return list(await asyncio.gather(*clients))


async def squall_exchange(port: int, payload: bytes) -> bytes:
    stream = await TCPClient().connect("127.0.0.1", port, ssl_options=client_context())
    assert isinstance(stream, SSLIOStream)
    try:
        await stream.write(payload)
        if payload.startswith(b"GET"):
            return await stream.read_until_close()
        return await stream.read_until(b"\n")
    finally:
        stream.close()


HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def check_http_response(response: bytes) -> None:
    assert response.startswith(b"HTTP/1.1 200 "), response[:200]
    assert response.endswith(b"\r\n\r\nhello https"), response[-200:]


def test_stdlib_clients_against_tcp_server(loop_name: str) -> None:
    async def main() -> None:
        server = EchoServer(ssl_options=SERVER_SSL)
        port = listen(server)
        payloads = [b"line %d\n" % i for i in range(CLIENTS)]
        replies = await stdlib_clients(port, payloads)
        assert replies == [p.upper() for p in payloads]
        server.stop()

    run(loop_name, main)


def test_stdlib_clients_against_http_server(loop_name: str) -> None:
    async def main() -> None:
        server = make_http_server()
        port = listen(server)
        for response in await stdlib_clients(port, [HTTP_REQUEST] * CLIENTS):
            check_http_response(response)
        server.stop()
        await server.close_all_connections()

    run(loop_name, main)


def test_squall_clients_against_tcp_server(loop_name: str) -> None:
    async def main() -> None:
        server = EchoServer(ssl_options=SERVER_SSL)
        port = listen(server)
        payloads = [b"line %d\n" % i for i in range(CLIENTS)]
        replies = await asyncio.gather(*(squall_exchange(port, p) for p in payloads))
        assert replies == [p.upper() for p in payloads]
        server.stop()

    run(loop_name, main)


def test_squall_clients_against_http_server(loop_name: str) -> None:
    async def main() -> None:
        server = make_http_server()
        port = listen(server)
        for response in await asyncio.gather(*(squall_exchange(port, HTTP_REQUEST) for _ in range(CLIENTS))):
            check_http_response(response)
        server.stop()
        await server.close_all_connections()

    run(loop_name, main)


def plain_http_to_tls_port(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
        raw.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        data = b""
        while True:
            try:
                chunk = raw.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return data


@pytest.mark.parametrize("kind", ["tcp", "http"])
def test_failed_handshake_is_logged_once_and_server_keeps_serving(
    loop_name: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        server = EchoServer(ssl_options=SERVER_SSL) if kind == "tcp" else make_http_server()
        port = listen(server)
        reply = await asyncio.get_running_loop().run_in_executor(None, plain_http_to_tls_port, port)
        # Whatever the server answered (a TLS alert at most), it is no HTTP.
        assert not reply.startswith(b"HTTP/")
        # The failure is logged on the loop's side; let it get there.
        for _ in range(100):
            if any("SSL Error" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.01)
        if kind == "tcp":
            assert await squall_exchange(port, b"still here\n") == b"STILL HERE\n"
        else:
            check_http_response(await squall_exchange(port, HTTP_REQUEST))
            await server.close_all_connections()
        server.stop()

    with caplog.at_level(logging.INFO, logger="squall"):
        run(loop_name, main)
    failures = [r for r in caplog.records if "SSL Error" in r.getMessage()]
    assert len(failures) == 1, caplog.text
    (failure,) = failures
    assert failure.levelno == logging.WARNING and failure.name == "squall.general"
    assert failure.exc_info is None and "http request" in failure.getMessage().lower()
    assert "127.0.0.1" in failure.getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_stream_closed_during_handshake(loop_name: str, caplog: pytest.LogCaptureFixture) -> None:
    # An application that drops a connection before its handshake: the
    # accepted socket is closed (the client sees the connection end), with
    # nothing logged and no attempt to close a transport's socket view.
    class Dropping(TCPServer):
        def handle_stream(self, stream: IOStream, address: Any) -> None:
            stream.close()

    async def main() -> None:
        server = Dropping(ssl_options=SERVER_SSL)
        port = listen(server)
        loop = asyncio.get_running_loop()
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await loop.run_in_executor(None, stdlib_exchange, port, b"hello?\n")
        server.stop()

    with caplog.at_level(logging.INFO, logger="squall"):
        run(loop_name, main)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_client_handshake_failure_closes_cleanly(loop_name: str, caplog: pytest.LogCaptureFixture) -> None:
    # A client that refuses the server's self-signed certificate: its
    # connect fails with the verification error, which is logged once
    # without a traceback; closing the stream must not touch uvloop's
    # pseudo-socket (that used to raise "transport sockets do not support
    # close() method" from the handshake task).
    async def main() -> None:
        server = EchoServer(ssl_options=SERVER_SSL)
        port = listen(server)
        with pytest.raises(ssl.SSLCertVerificationError):
            await TCPClient().connect("127.0.0.1", port, ssl_options=ssl.create_default_context())
        # A handshake task that failed in its clean-up is reported when it
        # is collected.
        await asyncio.sleep(0.01)
        gc.collect()
        # A client that checks nothing still gets served.
        assert await squall_exchange(port, b"ok\n") == b"OK\n"
        server.stop()

    with caplog.at_level(logging.INFO, logger="squall"):
        run(loop_name, main)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "certificate verify failed" in warnings[0].getMessage(), caplog.text
    assert warnings[0].levelno == logging.WARNING and warnings[0].exc_info is None


def test_server_with_its_own_protocol_gets_tls(loop_name: str, caplog: pytest.LogCaptureFixture) -> None:
    # A server that overrides _make_protocol (as the HTTP server does) still
    # has its connections' TLS done for it: the protocol is connected after
    # the handshake, and a failed handshake is logged by the server.
    class Greeter(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            version = transport.get_extra_info("ssl_object").version()
            transport.write(b"hello over %s\n" % version.encode())  # type: ignore[attr-defined]
            transport.close()

    class GreetingServer(TCPServer):
        def _make_protocol(self) -> asyncio.BaseProtocol:
            return Greeter()

    async def main() -> None:
        server = GreetingServer(ssl_options=SERVER_SSL)
        port = listen(server)
        replies = await stdlib_clients(port, [b""] * 5)
        assert all(r.startswith(b"hello over TLSv1.") for r in replies), replies
        await asyncio.get_running_loop().run_in_executor(None, plain_http_to_tls_port, port)
        for _ in range(100):
            if caplog.records:
                break
            await asyncio.sleep(0.01)
        server.stop()

    with caplog.at_level(logging.INFO, logger="squall"):
        run(loop_name, main)
    assert [r.levelname for r in caplog.records] == ["WARNING"], caplog.text
    assert "SSL Error" in caplog.records[0].getMessage() and caplog.records[0].exc_info is None
