"""HTTPS served by the HTTP server's own protocol (not a TLS stream).

`HTTPServer` with ``ssl_options`` hands each accepted socket to the loop's
TLS layer and serves the decrypted connection with the same protocol as
plain HTTP. These tests run real servers on 127.0.0.1 port 0 with the
package's test certificate, on asyncio's loop and on uvloop, and talk to
them with the standard library's TLS clients (in threads) and squall's own
clients.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import socket
import ssl
from collections.abc import Callable
from typing import Any, Optional

import pytest

from squall import web, websocket
from squall._http1server import _RequestConnection
from squall.httpclient import HTTPRequest
from squall.httpserver import HTTPServer
from squall.iostream import SSLIOStream
from squall.simple_httpclient import SimpleAsyncHTTPClient

from _tls_support import (  # noqa: E402  (loop_name is a fixture)
    CERTFILE,
    KEYFILE,
    LISTENING,
    SERVER_SSL,
    SOCKET_TIMEOUT,
    TEST_TIMEOUT,
    client_context,
    listen,
    loop_name,
    run,
    uvloop,
)

# Concurrent handshakes in the load test: several times the 20 of
# test_tls_server, still quick on a shared 2-core machine.
CONCURRENT_CLIENTS = 64
# Bigger than the TLS layer's and the socket's buffers, so that writing it
# meets back-pressure.
LARGE = 3 * 1024 * 1024
# Far more than loopback socket buffers (a few MB) plus the TLS layer's
# (64 KiB high-water mark) can hold: a handler writing this much to a client
# that reads nothing must be paused long before the end.
UNREAD = 32 * 1024 * 1024
PIECE = 256 * 1024
# How long the handler's progress must stand still to count as paused.
STALL = 0.2


def start(app: web.Application, **kwargs: Any) -> int:
    kwargs.setdefault("ssl_options", SERVER_SSL)
    return listen(HTTPServer(app, **kwargs))


async def in_thread(function: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


def https_connection(port: int, certificate: bool = False) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection(
        "127.0.0.1", port, timeout=SOCKET_TIMEOUT, context=client_context(certificate)
    )


class InfoHandler(web.RequestHandler):
    """Describes the request as the server saw it."""

    def get(self) -> None:
        self.write(self._info())

    def post(self) -> None:
        info = self._info()
        info["body_length"] = len(self.request.body)
        info["body_ends"] = self.request.body[-8:].decode("latin1")
        self.write(info)

    def _info(self) -> dict[str, Any]:
        connection = self.request.connection
        certificate = self.request.get_ssl_certificate()
        der = self.request.get_ssl_certificate(binary_form=True)
        return {
            "protocol": self.request.protocol,
            "remote_ip": self.request.remote_ip,
            "fast": isinstance(connection, _RequestConnection),
            "client_port": connection.context.address[1],  # type: ignore[union-attr]
            "subject": certificate["subject"] if isinstance(certificate, dict) else None,
            "der_length": len(der) if isinstance(der, bytes) else None,
        }


class LargeHandler(web.RequestHandler):
    async def get(self) -> None:
        # Written in pieces, each awaited: the handler must be paused by the
        # TLS transport's back-pressure and resumed, never lose a byte.
        piece = bytes(range(256)) * 1024
        for _ in range(LARGE // len(piece)):
            self.write(piece)
            await self.flush()


class CountingHandler(web.RequestHandler):
    """Writes UNREAD bytes in flushed pieces, counting those written."""

    pieces = 0

    async def get(self) -> None:
        CountingHandler.pieces = 0
        self.set_header("Content-Length", UNREAD)
        piece = b"z" * PIECE
        for _ in range(UNREAD // PIECE):
            self.write(piece)
            await self.flush()
            CountingHandler.pieces += 1


class EchoWebSocket(websocket.WebSocketHandler):
    def open(self) -> None:
        self.write_message(f"open over {self.request.protocol}")

    def on_message(self, message: Any) -> None:
        self.write_message(message, binary=isinstance(message, bytes))


class RawHandler(web.RequestHandler):
    """Takes the TLS connection over and speaks a line protocol on it."""

    async def get(self) -> None:
        stream = self.detach()
        assert isinstance(stream, SSLIOStream)
        version = stream.socket.version()
        await stream.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        line = await stream.read_until(b"\n")
        await stream.write(b"%s %s" % (version.encode(), line.upper()))
        stream.close()


def make_app() -> web.Application:
    return web.Application(
        [
            ("/", InfoHandler),
            ("/large", LargeHandler),
            ("/counting", CountingHandler),
            ("/ws", EchoWebSocket),
            ("/raw", RawHandler),
        ]
    )


def get_info(conn: http.client.HTTPSConnection, headers: Optional[dict[str, str]] = None) -> dict[str, Any]:
    conn.request("GET", "/", headers=headers or {})
    response = conn.getresponse()
    assert response.status == 200
    return json.loads(response.read())  # type: ignore[no-any-return]


def test_requests_are_https_on_the_fast_protocol_with_keep_alive(loop_name: str) -> None:
    def client(port: int) -> list[dict[str, Any]]:
        conn = https_connection(port)
        try:
            return [get_info(conn) for _ in range(5)]
        finally:
            conn.close()

    async def main() -> None:
        port = start(make_app())
        infos = await in_thread(client, port)
        assert {info["protocol"] for info in infos} == {"https"}
        assert {info["remote_ip"] for info in infos} == {"127.0.0.1"}
        assert all(info["fast"] for info in infos)
        # One TLS connection served all five requests.
        assert len({info["client_port"] for info in infos}) == 1
        # No client certificate was asked for.
        assert infos[0]["subject"] is None and infos[0]["der_length"] is None

    run(loop_name, main)


def test_post_bodies(loop_name: str) -> None:
    body = os.urandom(LARGE // 2) + b"the end!"

    def client(port: int) -> list[dict[str, Any]]:
        conn = https_connection(port)
        results = []
        try:
            for payload, chunked in ((b"small=1", False), (body, False), (iter([body[:1000], body[1000:]]), True)):
                headers = {"Content-Type": "application/octet-stream"}
                conn.request("POST", "/", body=payload, headers=headers, encode_chunked=chunked)
                response = conn.getresponse()
                assert response.status == 200
                results.append(json.loads(response.read()))
        finally:
            conn.close()
        return results

    async def main() -> None:
        port = start(make_app())
        small, large, chunked = await in_thread(client, port)
        assert small["body_length"] == 7 and small["body_ends"] == "small=1"
        for info in (large, chunked):
            assert info["body_length"] == len(body) and info["body_ends"] == "the end!"
            assert info["protocol"] == "https"
        assert small["client_port"] == large["client_port"] == chunked["client_port"]

    run(loop_name, main)


def test_large_response_under_back_pressure(loop_name: str) -> None:
    def client(port: int) -> bytes:
        conn = https_connection(port)
        try:
            conn.request("GET", "/large")
            response = conn.getresponse()
            assert response.status == 200
            return response.read()
        finally:
            conn.close()

    async def main() -> None:
        port = start(make_app())
        body = await in_thread(client, port)
        assert body == bytes(range(256)) * (LARGE // 256)

    run(loop_name, main)


def test_slow_reader_pauses_the_handler(loop_name: str) -> None:
    async def main() -> None:
        port = start(make_app())
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context())
        writer.write(b"GET /counting HTTP/1.1\r\nHost: x\r\n\r\n")
        # Read nothing until the handler stops making progress.
        seen = -1
        for _ in range(int(TEST_TIMEOUT / STALL)):
            await asyncio.sleep(STALL)
            if CountingHandler.pieces == seen:
                break
            seen = CountingHandler.pieces
        assert 0 < seen < UNREAD // PIECE
        await reader.readuntil(b"\r\n\r\n")
        assert await reader.readexactly(UNREAD) == b"z" * UNREAD
        assert CountingHandler.pieces == UNREAD // PIECE
        writer.close()

    run(loop_name, main)


def test_oversized_body_is_answered_413(loop_name: str) -> None:
    def client(port: int) -> tuple[int, dict[str, Any]]:
        conn = https_connection(port)
        try:
            conn.request("POST", "/", body=b"x" * 200_000)
            status = conn.getresponse().status
        finally:
            conn.close()
        # The server still serves others.
        conn = https_connection(port)
        try:
            return status, get_info(conn)
        finally:
            conn.close()

    async def main() -> None:
        port = start(make_app(), max_body_size=1000)
        status, info = await in_thread(client, port)
        assert status == 413
        assert info["protocol"] == "https"

    run(loop_name, main)


def test_early_413_reaches_a_client_still_sending_its_body(loop_name: str) -> None:
    # The server answers 413 after the head; the client is still sending
    # megabytes. A TLS connection cannot be half-closed, so the server must
    # keep reading (and discarding) until the client is done: closing at
    # once resets the connection under the client, which never sees the 413.
    def client(port: int) -> int:
        conn = https_connection(port)
        try:
            conn.request("POST", "/", body=b"x" * 4_000_000)
            return conn.getresponse().status
        finally:
            conn.close()

    async def main() -> None:
        port = start(make_app(), max_body_size=1000)
        assert await in_thread(client, port) == 413

    run(loop_name, main)


def test_xheaders_override_the_scheme_per_request(loop_name: str) -> None:
    def client(port: int) -> list[dict[str, Any]]:
        conn = https_connection(port)
        try:
            return [
                get_info(conn, {"X-Forwarded-Proto": "http", "X-Real-Ip": "10.1.2.3"}),
                get_info(conn),
            ]
        finally:
            conn.close()

    async def main() -> None:
        port = start(make_app(), xheaders=True)
        proxied, direct = await in_thread(client, port)
        assert (proxied["protocol"], proxied["remote_ip"]) == ("http", "10.1.2.3")
        # The next request on the same connection is back to its own scheme.
        assert (direct["protocol"], direct["remote_ip"]) == ("https", "127.0.0.1")
        assert proxied["client_port"] == direct["client_port"]

    run(loop_name, main)


def test_client_certificate(loop_name: str) -> None:
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(CERTFILE, KEYFILE)
    server_context.load_verify_locations(CERTFILE)
    server_context.verify_mode = ssl.CERT_OPTIONAL
    with open(CERTFILE) as f:
        expected_der = ssl.PEM_cert_to_DER_cert(f.read())

    def client(port: int, certificate: bool) -> dict[str, Any]:
        conn = https_connection(port, certificate)
        try:
            return get_info(conn)
        finally:
            conn.close()

    async def main() -> None:
        port = start(make_app(), ssl_options=server_context)
        with_cert = await in_thread(client, port, True)
        without = await in_thread(client, port, False)
        assert with_cert["der_length"] == len(expected_der)
        assert ["commonName", "localhost"] in [pair for rdn in with_cert["subject"] for pair in rdn]
        assert without["subject"] is None and without["der_length"] is None
        assert with_cert["protocol"] == without["protocol"] == "https"

    run(loop_name, main)


def test_squall_http_client(loop_name: str) -> None:
    async def main() -> None:
        port = start(make_app())
        client = SimpleAsyncHTTPClient(force_instance=True)
        try:
            infos = []
            for i in range(3):
                request = HTTPRequest(
                    f"https://127.0.0.1:{port}/",
                    method="POST",
                    body=b"x" * (i * 100_000),
                    validate_cert=False,
                )
                response = await client.fetch(request)
                infos.append(json.loads(response.body))
            assert [info["body_length"] for info in infos] == [0, 100_000, 200_000]
            assert {info["protocol"] for info in infos} == {"https"}
            assert all(info["fast"] for info in infos)
            large = await client.fetch(HTTPRequest(f"https://127.0.0.1:{port}/large", validate_cert=False))
            assert large.body == bytes(range(256)) * (LARGE // 256)
        finally:
            client.close()

    run(loop_name, main)


def test_websocket_over_wss(loop_name: str) -> None:
    async def main() -> None:
        port = start(make_app())
        request = HTTPRequest(f"wss://127.0.0.1:{port}/ws", validate_cert=False)
        conn = await websocket.websocket_connect(request)
        try:
            assert await conn.read_message() == "open over https"
            big = os.urandom(300_000)
            for message in ("hello", big, "é" * 70_000):
                await conn.write_message(message, binary=isinstance(message, bytes))
                assert await conn.read_message() == message
        finally:
            conn.close()

    run(loop_name, main)


def test_detach_gives_a_tls_stream(loop_name: str) -> None:
    def client(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
            with client_context().wrap_socket(raw) as tls:
                tls.sendall(b"GET /raw HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                while not data.endswith(b"\r\n\r\n"):
                    data += tls.recv(1)
                tls.sendall(b"ping\n")
                while True:
                    chunk = tls.recv(65536)
                    if not chunk:
                        return data
                    data += chunk

    async def main() -> None:
        port = start(make_app())
        reply = await in_thread(client, port)
        head, _, rest = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert rest.startswith(b"TLSv1.") and rest.endswith(b" PING\n"), rest

    run(loop_name, main)


def test_many_concurrent_handshakes(loop_name: str, caplog: pytest.LogCaptureFixture) -> None:
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"

    async def client(port: int) -> list[dict[str, Any]]:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(), server_hostname="localhost"
        )
        try:
            infos = []
            for _ in range(2):
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                infos.append(json.loads(await reader.readexactly(length)))
            return infos
        finally:
            writer.close()

    async def main() -> None:
        port = start(make_app())
        results = await asyncio.gather(*(client(port) for _ in range(CONCURRENT_CLIENTS)))
        ports = set()
        for first, second in results:
            assert first["protocol"] == second["protocol"] == "https"
            assert first["client_port"] == second["client_port"]
            ports.add(first["client_port"])
        assert len(ports) == CONCURRENT_CLIENTS

    with caplog.at_level(logging.INFO, logger="squall"):
        run(loop_name, main)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_close_all_connections_closes_idle_tls_connections(loop_name: str) -> None:
    async def main() -> None:
        port = start(make_app())
        server = LISTENING[-1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context())
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        server.stop()
        await server.close_all_connections()
        assert not server._connections
        # The client sees the rest of the response, then the connection end.
        body = await asyncio.wait_for(reader.read(), SOCKET_TIMEOUT)
        assert json.loads(body)["protocol"] == "https"
        writer.close()

    run(loop_name, main)
