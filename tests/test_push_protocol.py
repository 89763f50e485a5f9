"""A length-prefixed binary push protocol on TCPServer, with 2,000 concurrent clients.

Each frame is a 4-byte big-endian length followed by that many payload bytes.
Every client connects and sends a hello frame naming itself; once all of them
are registered, the server pushes one distinct message to each connection and
closes it. Each client must receive exactly its own message, then the close.
"""

from __future__ import annotations

import asyncio
import hashlib
import resource
import socket
import struct
from typing import Any

import pytest

from squall.iostream import IOStream, StreamClosedError
from squall.tcpserver import TCPServer

uvloop = pytest.importorskip("uvloop")

CLIENTS = 2000
# Connections opened at once; a bounded batch keeps the listen queue from
# overflowing (dropped SYNs are retried only after a second).
CONNECT_BATCH = 200
# Each client needs two descriptors (its socket and the server's), plus the
# interpreter's own and some headroom.
FDS_NEEDED = 2 * CLIENTS + 256
TIME_LIMIT = 60.0
HEADER = struct.Struct(">I")
# Pushed messages are bounded so a bad length prefix cannot ask for gigabytes.
MAX_FRAME = 1 << 20


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


async def read_frame(stream: IOStream) -> bytes:
    (length,) = HEADER.unpack(await stream.read_bytes(HEADER.size))
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes exceeds {MAX_FRAME}")
    return await stream.read_bytes(length)


def message_for(client_id: int) -> bytes:
    # Distinct content and length per client, so a mix-up cannot go unnoticed.
    digest = hashlib.sha256(b"%d" % client_id).digest()
    return b"to-%d:" % client_id + digest * (1 + client_id % 7)


class PushServer(TCPServer):
    """Registers each connection by the id in its hello frame, then pushes."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.streams: dict[int, IOStream] = {}
        self.expected = expected
        self.all_registered = asyncio.Event()

    async def handle_stream(self, stream: IOStream, address: Any) -> None:
        hello = await read_frame(stream)
        client_id = int(hello.decode("ascii"))
        assert client_id not in self.streams, f"client {client_id} said hello twice"
        self.streams[client_id] = stream
        if len(self.streams) == self.expected:
            self.all_registered.set()

    async def push_all(self) -> None:
        writes = []
        for client_id, stream in self.streams.items():
            writes.append(stream.write(frame(message_for(client_id))))
        await asyncio.gather(*writes)
        for stream in self.streams.values():
            stream.close()


def _ensure_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= FDS_NEEDED:
        return
    if hard != resource.RLIM_INFINITY and hard < FDS_NEEDED:
        pytest.skip(
            f"needs {FDS_NEEDED} open files for {CLIENTS} loopback connections; "
            f"RLIMIT_NOFILE hard limit is {hard}"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (FDS_NEEDED, hard))


@pytest.fixture
def descriptors() -> Any:
    saved = resource.getrlimit(resource.RLIMIT_NOFILE)
    _ensure_descriptors()
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, saved)


async def _client(port: int, client_id: int, connected: asyncio.Semaphore) -> tuple[int, IOStream]:
    stream = IOStream(socket.socket())
    async with connected:
        await stream.connect(("127.0.0.1", port))
    await stream.write(frame(b"%d" % client_id))
    return client_id, stream


async def _receive(client_id: int, stream: IOStream) -> None:
    message = await read_frame(stream)
    assert message == message_for(client_id), f"client {client_id} got another client's message"
    # Exactly one message: the next thing is the server's close.
    assert await stream.read_until_close() == b""
    with pytest.raises(StreamClosedError):
        stream.read_bytes(1)


async def _scenario() -> None:
    server = PushServer(CLIENTS)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(CONNECT_BATCH * 2)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    server.add_socket(listener)
    clients: list[tuple[int, IOStream]] = []
    try:
        connected = asyncio.Semaphore(CONNECT_BATCH)
        clients = await asyncio.gather(*(_client(port, i, connected) for i in range(CLIENTS)))
        await server.all_registered.wait()
        assert sorted(server.streams) == list(range(CLIENTS))
        receivers = asyncio.gather(*(_receive(i, stream) for i, stream in clients))
        await server.push_all()
        await receivers
    finally:
        server.stop()
        for _, stream in clients:
            stream.close()
        for stream in server.streams.values():
            stream.close()


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_push_to_2000_clients(loop_name: str, descriptors: None) -> None:
    loop = uvloop.new_event_loop() if loop_name == "uvloop" else asyncio.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(_scenario(), TIME_LIMIT))
        # Let the closed transports finish closing before the loop goes.
        loop.run_until_complete(asyncio.sleep(0.05))
    finally:
        loop.close()
