"""Tests for squall.tcpserver: real servers on 127.0.0.1 port 0."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest

from squall.iostream import IOStream, StreamClosedError
from squall.tcpserver import TCPServer

uvloop = pytest.importorskip("uvloop")


def run(loop_name: str, main: Any) -> Any:
    loop = uvloop.new_event_loop() if loop_name == "uvloop" else asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(main(), 20))
    finally:
        loop.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_name(request: pytest.FixtureRequest) -> str:
    return request.param


def listening_socket() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock, sock.getsockname()[1]


class EchoServer(TCPServer):
    async def handle_stream(self, stream: IOStream, address: Any) -> None:
        try:
            while True:
                line = await stream.read_until(b"\n")
                await stream.write(line.upper())
        except StreamClosedError:
            pass


def test_echo(loop_name: str) -> None:
    async def main() -> None:
        server = EchoServer()
        sock, port = listening_socket()
        server.add_socket(sock)
        clients = [IOStream(socket.socket()) for _ in range(5)]
        await asyncio.gather(*(c.connect(("127.0.0.1", port)) for c in clients))
        for i, c in enumerate(clients):
            c.write(b"hi %d\n" % i)
        replies = await asyncio.gather(*(c.read_until(b"\n") for c in clients))
        assert replies == [b"HI %d\n" % i for i in range(5)]
        for c in clients:
            c.close()
        server.stop()
        server.stop()

    run(loop_name, main)


def test_listen_and_stop_refuses_new_connections(loop_name: str) -> None:
    async def main() -> None:
        server = EchoServer()
        sock, port = listening_socket()
        sock.close()
        server.listen(port, address="127.0.0.1")
        client = IOStream(socket.socket())
        await client.connect(("127.0.0.1", port))
        client.close()
        server.stop()
        await asyncio.sleep(0.01)
        late = IOStream(socket.socket())
        with pytest.raises(StreamClosedError):
            await late.connect(("127.0.0.1", port))

    run(loop_name, main)


def test_handle_stream_exception_is_logged(loop_name: str, caplog: pytest.LogCaptureFixture) -> None:
    class Failing(TCPServer):
        async def handle_stream(self, stream: IOStream, address: Any) -> None:
            await stream.read_bytes(1)
            stream.close()
            raise ZeroDivisionError("boom")

    async def main() -> None:
        server = Failing()
        sock, port = listening_socket()
        server.add_socket(sock)
        client = IOStream(socket.socket())
        await client.connect(("127.0.0.1", port))
        await client.write(b"x")
        await client.read_until_close()
        await asyncio.sleep(0.01)
        server.stop()

    with caplog.at_level(logging.ERROR, logger="squall.application"):
        run(loop_name, main)
    assert any("Exception in callback" in r.getMessage() and r.exc_info for r in caplog.records)


def test_ssl_options_validated() -> None:
    with pytest.raises(KeyError):
        TCPServer(ssl_options={"keyfile": "x"})
    with pytest.raises(ValueError):
        TCPServer(ssl_options={"certfile": "/nonexistent/cert.pem"})
    with pytest.raises(TypeError):
        TCPServer(ssl_options="cert.pem")  # type: ignore[arg-type]
