"""Tests for squall.iostream: real loopback sockets and pipes, on asyncio and uvloop."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from squall.iostream import (
    IOStream,
    PipeIOStream,
    StreamBufferFullError,
    StreamClosedError,
    UnsatisfiableReadError,
    _StreamBuffer,
)

uvloop = pytest.importorskip("uvloop")

LOOPS = ["asyncio", "uvloop"]


def run(loop_name: str, main: Callable[[], Awaitable[Any]]) -> Any:
    if loop_name == "uvloop":
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(main(), 20))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def stream_pair(**kwargs: Any) -> tuple[IOStream, IOStream]:
    """A connected (server, client) pair over loopback TCP."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    client = IOStream(socket.socket(), **kwargs)
    connect = client.connect(listener.getsockname())
    conn, _ = await loop.sock_accept(listener)
    listener.close()
    server = IOStream(conn, **kwargs)
    await connect
    return server, client


@pytest.fixture(params=LOOPS)
def loop_name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_read_write_close(loop_name: str) -> None:
    async def main() -> None:
        server, client = await stream_pair()
        await client.write(b"hello\r\nworld")
        assert await server.read_until(b"\r\n") == b"hello\r\n"
        assert await server.read_bytes(5) == b"world"
        server.write(b"bye")
        server.close()
        assert await client.read_until_close() == b"bye"
        assert client.closed()
        with pytest.raises(StreamClosedError):
            client.write(b"x")

    run(loop_name, main)


def test_buffered_read_completes_synchronously(loop_name: str) -> None:
    async def main() -> None:
        server, client = await stream_pair()
        await client.write(b"abcdef")
        assert await server.read_bytes(1) == b"a"
        fut = server.read_bytes(2)
        assert fut.done() and fut.result() == b"bc"
        fut = server.read_until(b"e")
        assert fut.done() and fut.result() == b"de"
        server.close()
        client.close()

    run(loop_name, main)


def test_read_bytes_partial_and_zero(loop_name: str) -> None:
    async def main() -> None:
        server, client = await stream_pair()
        fut = server.read_bytes(50, partial=True)
        client.write(b"hello")
        assert await fut == b"hello"
        assert await server.read_bytes(0) == b""
        with pytest.raises(ValueError):
            server.read_bytes(-1)
        server.close()
        client.close()

    run(loop_name, main)


def test_read_until_max_bytes_closes(loop_name: str) -> None:
    async def main() -> None:
        server, client = await stream_pair()
        fut = server.read_until(b"def", max_bytes=5)
        client.write(b"123456")
        with pytest.raises(StreamClosedError) as info:
            await fut
        assert isinstance(info.value.real_error, UnsatisfiableReadError)
        assert server.closed()
        client.close()

    run(loop_name, main)


def test_read_until_regex(loop_name: str) -> None:
    async def main() -> None:
        server, client = await stream_pair()
        client.write(b"key=1;key=22;")
        assert await server.read_until_regex(rb"=\d+;") == b"key=1;"
        assert await server.read_until_regex(rb"=\d+;") == b"key=22;"
        server.close()
        client.close()

    run(loop_name, main)


def test_read_into(loop_name: str) -> None:
    async def main() -> None:
        server, client = await stream_pair()
        buf = bytearray(10)
        fut = server.read_into(buf)
        client.write(b"hello")
        await asyncio.sleep(0.01)
        assert not fut.done()
        client.write(b"world!!")
        assert await fut == 10
        assert bytes(buf) == b"helloworld"
        del buf[:]  # the stream keeps no view of the caller's buffer
        small = bytearray(4)
        assert await server.read_into(small, partial=True) == 2
        assert bytes(small[:2]) == b"!!"
        server.close()
        client.close()

    run(loop_name, main)


def test_close_with_pending_read_runs_callback(loop_name: str) -> None:
    async def main() -> None:
        server, client = await stream_pair()
        closed = asyncio.Event()
        server.set_close_callback(closed.set)
        fut = server.read_until(b"\n")
        client.close()
        with pytest.raises(StreamClosedError):
            await fut
        await closed.wait()
        assert server.closed()

    run(loop_name, main)


def test_data_buffered_before_close_is_readable(loop_name: str) -> None:
    async def main() -> None:
        server, client = await stream_pair()
        client.write(b"1234")
        assert await server.read_bytes(1) == b"1"
        client.close()
        assert await server.read_until_close() == b"234"
        with pytest.raises(StreamClosedError):
            server.read_bytes(1)

    run(loop_name, main)


def test_flow_control_bounds_buffer(loop_name: str) -> None:
    async def main() -> None:
        server, client = await stream_pair(max_buffer_size=64 * 1024)
        payload = os.urandom(1024 * 1024)
        client.write(payload)
        await asyncio.sleep(0.05)
        # Nobody is reading: the stream stopped reading well below its limit.
        assert server._wpos - server._rpos <= 64 * 1024
        chunks = []
        for _ in range(256):
            chunks.append(await server.read_bytes(4096))
        assert b"".join(chunks) == payload
        server.close()
        client.close()

    run(loop_name, main)


def test_read_until_close_overflow(loop_name: str) -> None:
    async def main() -> None:
        server, client = await stream_pair(max_buffer_size=1024)
        fut = server.read_until_close()
        client.write(b"a" * 8192)
        with pytest.raises(StreamClosedError) as info:
            await fut
        assert isinstance(info.value.real_error, StreamBufferFullError)
        client.close()

    run(loop_name, main)


def test_write_backpressure_and_close_fails_pending_write(loop_name: str) -> None:
    async def main() -> None:
        server, client = await stream_pair()
        data = bytearray(16 * 1024 * 1024)
        fut = client.write(data)
        assert client.writing()
        del data[:]  # written data was copied
        client.close()
        with pytest.raises(StreamClosedError):
            await fut
        server.close()

    run(loop_name, main)


def test_write_before_connect_is_queued_in_order(loop_name: str) -> None:
    async def main() -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        client = IOStream(socket.socket())
        order: list[str] = []
        connect = client.connect(listener.getsockname())
        write = client.write(b"x" * 5000 + b"!")
        connect.add_done_callback(lambda f: order.append("connect"))
        write.add_done_callback(lambda f: order.append("write"))
        conn, _ = await asyncio.get_running_loop().sock_accept(listener)
        listener.close()
        server = IOStream(conn)
        assert await server.read_until(b"!") == b"x" * 5000 + b"!"
        await write
        assert order == ["connect", "write"]
        server.close()
        client.close()

    run(loop_name, main)


def test_connect_refused(loop_name: str) -> None:
    async def main() -> None:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        address = probe.getsockname()
        probe.close()
        stream = IOStream(socket.socket())
        with pytest.raises(StreamClosedError):
            await stream.connect(address)
        assert isinstance(stream.error, ConnectionRefusedError)

    run(loop_name, main)


def test_only_one_read_at_a_time(loop_name: str) -> None:
    async def main() -> None:
        server, client = await stream_pair()
        fut = server.read_bytes(1)
        with pytest.raises(RuntimeError):
            server.read_bytes(1)
        fut.cancel()
        # A cancelled read no longer counts as pending.
        client.write(b"z")
        assert await server.read_bytes(1) == b"z"
        server.close()
        client.close()

    run(loop_name, main)


def test_from_transport_takes_over_with_buffered_bytes(loop_name: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        made: asyncio.Future[asyncio.Transport] = loop.create_future()

        class First(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                made.set_result(transport)  # type: ignore[arg-type]

        server = await loop.create_server(First, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = IOStream(socket.socket())
        await client.connect(("127.0.0.1", port))
        transport = await made
        stream = IOStream._from_transport(transport, b"early ")
        client.write(b"late\n")
        assert await stream.read_until(b"\n") == b"early late\n"
        await stream.write(b"reply")
        assert await client.read_bytes(5) == b"reply"
        stream.close()
        client.close()
        server.close()

    run(loop_name, main)


def test_pipe_stream(loop_name: str) -> None:
    async def main() -> None:
        r, w = os.pipe()
        rs, ws = PipeIOStream(r), PipeIOStream(w)
        ws.write(b"hel")
        ws.write(b"lo world")
        assert await rs.read_until(b" ") == b"hello "
        assert await rs.read_bytes(3) == b"wor"
        ws.close()
        assert await rs.read_until_close() == b"ld"
        rs.close()

    run(loop_name, main)


def test_stream_buffer_borrows_large_and_releases() -> None:
    buf = _StreamBuffer()
    buf._large_buf_threshold = 10
    big = bytearray(b"a" * 20)
    buf.append(b"12")
    buf.append(big)
    with pytest.raises(BufferError):
        big += b"!"
    assert len(buf) == 22
    with buf.peek(100) as view:
        assert view.tobytes() == b"12"
    buf.advance(2)
    buf.advance(20)
    big += b"!"  # the view was released
    assert len(buf) == 0
    with pytest.raises(ValueError):
        buf.advance(1)


CERT_DIR = os.path.join(os.path.dirname(__file__), "..", "src", "squall", "test")
SERVER_SSL = {"certfile": os.path.join(CERT_DIR, "test.crt"), "keyfile": os.path.join(CERT_DIR, "test.key")}


def client_context() -> Any:
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_tls_server_stream_handshake_and_backpressure(loop_name: str) -> None:
    from squall.iostream import SSLIOStream
    from squall.tcpserver import TCPServer

    async def main() -> None:
        accepted: asyncio.Future[SSLIOStream] = asyncio.get_running_loop().create_future()
        ciphers: list[Any] = []

        class Server(TCPServer):
            async def handle_stream(self, stream: Any, address: Any) -> None:
                # Handed over before the handshake, as in Tornado.
                ciphers.append(stream.socket.cipher())
                await stream.wait_for_handshake()
                ciphers.append(stream.socket.cipher())
                accepted.set_result(stream)

        server = Server(ssl_options=SERVER_SSL)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        server.add_socket(listener)
        client = SSLIOStream(socket.socket(), ssl_options=client_context())
        await client.connect(("127.0.0.1", port))
        stream = await accepted
        assert ciphers[0] is None and ciphers[1] is not None
        # Nobody reads: the socket's back-pressure must reach the writer.
        fut = stream.write(b"x" * (8 * 1024 * 1024))
        await asyncio.sleep(0.05)
        assert stream.writing() and not fut.done()
        data = await client.read_bytes(8 * 1024 * 1024)
        assert len(data) == 8 * 1024 * 1024
        await fut
        await stream.write(b"ping")
        assert await client.read_bytes(4) == b"ping"
        stream.close()
        assert await client.read_until_close() == b""
        server.stop()

    run(loop_name, main)


def test_start_tls_upgrade(loop_name: str) -> None:
    async def main() -> None:
        server, client = await stream_pair()
        client.write(b"STARTTLS\r\n")
        assert await server.read_until(b"\r\n") == b"STARTTLS\r\n"
        tls_server_f = server.start_tls(True, SERVER_SSL)
        tls_client = await client.start_tls(False, client_context())
        tls_server = await tls_server_f
        await tls_client.write(b"secret\n")
        assert await tls_server.read_until(b"\n") == b"secret\n"
        with pytest.raises(ValueError):
            client.start_tls(False, client_context())  # handed over: no longer usable
        tls_client.close()
        tls_server.close()

    run(loop_name, main)


def test_write_then_close_at_once_on_a_connected_socket_sends_the_data() -> None:
    # ``IOStream(sock).write(...)`` followed straight away by ``close()``:
    # the bytes were written to a connected socket, so the peer gets them.
    import socket as _socket

    from squall.iostream import IOStream

    async def main() -> bytes:
        listener = _socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = _socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        listener.close()
        client.setblocking(False)
        stream = IOStream(client)
        stream.write(b"request bytes")
        stream.close()
        server.settimeout(5)
        data = b""
        while True:
            chunk = server.recv(100)
            if not chunk:
                break
            data += chunk
        server.close()
        return data

    assert asyncio.run(main()) == b"request bytes"
