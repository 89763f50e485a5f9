"""Tests for squall.websocket: a real HTTPServer on a loopback port, spoken to
with squall's WebSocket client and with hand-written frames on raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any, Optional

import pytest

from squall import gen
from squall.httpclient import HTTPClientError, HTTPRequest
from squall.httpserver import HTTPServer
from squall.testing import bind_unused_port
from squall.web import Application
from squall.websocket import (
    WebSocketClosedError,
    WebSocketError,
    WebSocketHandler,
    websocket_connect,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


# Every handler that opened, so each test can end with all connections closed.
_LIVE: list[WebSocketHandler] = []


class _Tracked(WebSocketHandler):
    def get(self, *args: Any, **kwargs: Any) -> None:
        _LIVE.append(self)
        super().get(*args, **kwargs)


class Echo(_Tracked):
    def initialize(self, events: Optional[list] = None, compression: Optional[dict] = None) -> None:
        self.events = events if events is not None else []
        self.compression = compression

    def get_compression_options(self) -> Optional[dict]:
        return self.compression

    def open(self, *args: Any) -> None:
        self.events.append(("open", args))

    def on_message(self, message: Any) -> None:
        self.write_message(message, binary=isinstance(message, bytes))

    def on_ping(self, data: bytes) -> None:
        self.events.append(("ping", data))

    def on_close(self) -> None:
        self.events.append(("close", self.close_code, self.close_reason))


class SlowOrdered(_Tracked):
    async def on_message(self, message: Any) -> None:
        await asyncio.sleep(0.01 if message == "first" else 0)
        await self.write_message(message)


class GenEcho(_Tracked):
    # A callback whose future is already done when returned: the next
    # message is handled at once, inside the same read.
    @gen.coroutine
    def on_message(self, message: Any) -> Any:
        yield self.write_message(message)


class Subprotocol(_Tracked):
    def select_subprotocol(self, subprotocols: list[str]) -> Optional[str]:
        return "chat" if "chat" in subprotocols else None

    def open(self) -> None:
        self.write_message(f"subprotocol={self.selected_subprotocol}")


class Counter(_Tracked):
    def initialize(self, events: list) -> None:
        self.count = 0
        events.append(("counter", self))

    def on_message(self, message: Any) -> None:
        self.count += 1


class Closer(_Tracked):
    def open(self) -> None:
        self.close(4001, "go away")


class Faulty(_Tracked):
    def initialize(self, events: list) -> None:
        self.events = events

    def on_message(self, message: Any) -> None:
        self.events.append(message)
        if message == "boom":
            raise ValueError("boom")


class LateWriter(_Tracked):
    def initialize(self, events: list) -> None:
        self.events = events

    def on_message(self, message: Any) -> None:
        self.write_message("before")
        assert self.ws_connection is not None
        self.ws_connection.close(1000)
        try:
            self.write_message("after")
        except WebSocketClosedError:
            self.events.append("refused")


@contextlib.asynccontextmanager
async def serving(**settings: Any) -> AsyncIterator[tuple[int, list]]:
    events: list = []
    _LIVE.clear()
    app = Application(
        [
            (r"/echo", Echo, {"events": events}),
            (r"/args/(\w+)", Echo, {"events": events}),
            (r"/deflate", Echo, {"events": events, "compression": {}}),
            (r"/ordered", SlowOrdered),
            (r"/gen", GenEcho),
            (r"/sub", Subprotocol),
            (r"/closer", Closer),
            (r"/count", Counter, {"events": events}),
            (r"/faulty", Faulty, {"events": events}),
            (r"/late", LateWriter, {"events": events}),
        ],
        **settings,
    )
    sock, port = bind_unused_port()
    server = HTTPServer(app)
    server.add_sockets([sock])
    try:
        yield port, events
    finally:
        server.stop()
        for handler in _LIVE:
            if handler.ws_connection is not None:
                handler.ws_connection._abort()
        await wait_for(lambda: all(h.ws_connection is None for h in _LIVE))
        await server.close_all_connections()
        _LIVE.clear()


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def masked(b0: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes((b0, 0x80 | n)) if n < 126 else bytes((b0, 0xFE)) + struct.pack("!H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def raw_upgrade(port: int, path: str = "/echo", extra: str = "") -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return reader, writer, head


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await asyncio.wait_for(reader.readexactly(2), 5)
    assert not b1 & 0x80, "server frames are not masked"
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    return b0, await reader.readexactly(n)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- handshake ------------------------------------------------------------------


def test_handshake_response_and_raw_echo() -> None:
    async def main() -> None:
        async with serving() as (port, events):
            reader, writer, head = await raw_upgrade(port)
            lines = head.decode("latin-1").split("\r\n")
            assert lines[0] == "HTTP/1.1 101 Switching Protocols"
            fields = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:])}
            assert fields["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
            assert fields["upgrade"] == "websocket" and fields["connection"] == "Upgrade"
            writer.write(masked(0x81, "héllo".encode()) + masked(0x82, b"\x00\xff"))
            assert await read_frame(reader) == (0x81, "héllo".encode())
            assert await read_frame(reader) == (0x82, b"\x00\xff")
            writer.close()
            await writer.wait_closed()
            await wait_for(lambda: ("close", None, None) in events)

    run(main())


@pytest.mark.parametrize(
    "headers,status",
    [
        ({}, 400),  # a plain GET
        ({"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}, 400),  # no key
        (
            {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "short"},
            400,
        ),
        ({"Upgrade": "websocket", "Connection": "close", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": KEY}, 400),
        ({"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "12", "Sec-WebSocket-Key": KEY}, 426),
        (
            {
                "Upgrade": "WebSocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": KEY,
                "Origin": "http://evil.example",
            },
            403,
        ),
    ],
)
def test_refused_handshakes(headers: dict, status: int) -> None:
    async def main() -> None:
        async with serving() as (port, events):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            writer.write(f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{lines}\r\n".encode())
            head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
            assert head.startswith(f"HTTP/1.1 {status} ")
            if status == 426:
                assert "sec-websocket-version: 7, 8, 13" in head.lower()
            writer.close()
            await writer.wait_closed()
            assert not any(e[0] == "open" for e in events)

    run(main())


def test_post_is_not_allowed() -> None:
    async def main() -> None:
        async with serving() as (port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 405 ")
            writer.close()
            await writer.wait_closed()

    run(main())


def test_origin_check() -> None:
    async def main() -> None:
        async with serving(trusted_origins=["https://trusted.example"]) as (port, _):
            url = f"ws://127.0.0.1:{port}/echo"
            for origin in (f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/page", "https://trusted.example"):
                ws = await websocket_connect(HTTPRequest(url, headers={"Origin": origin}))
                ws.close()
            for origin in ("http://evil.example", f"127.0.0.1:{port}", "http://sub.127.0.0.1"):
                with pytest.raises(HTTPClientError) as info:
                    await websocket_connect(HTTPRequest(url, headers={"Origin": origin}))
                assert info.value.code == 403
            with pytest.raises(HTTPClientError):
                await websocket_connect(
                    HTTPRequest(url, headers={"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "cross-site"})
                )

    run(main())


def test_client_errors() -> None:
    async def main() -> None:
        async with serving() as (port, _):
            with pytest.raises(HTTPClientError) as info:
                await websocket_connect(f"ws://127.0.0.1:{port}/missing")
            assert info.value.code == 404
            sock, dead_port = bind_unused_port()
            sock.close()
            with pytest.raises(OSError):
                await websocket_connect(f"ws://127.0.0.1:{dead_port}/")
            with pytest.raises(ValueError, match="unknown compression option"):
                websocket_connect(f"ws://127.0.0.1:{port}/echo", compression_options={"bogus": 1})

    run(main())


def test_client_rejects_a_bad_accept_value() -> None:
    async def fake_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        )
        # The client gives up on the connection: wait for it to hang up.
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        done.set()

    done = asyncio.Event()

    async def main() -> None:
        server = await asyncio.start_server(fake_server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(WebSocketError, match="Sec-WebSocket-Accept"):
            await websocket_connect(f"ws://127.0.0.1:{port}/")
        await asyncio.wait_for(done.wait(), 5)
        server.close()
        await server.wait_closed()

    run(main())


# --- messages -------------------------------------------------------------------


def test_echo_text_binary_json_and_path_args() -> None:
    async def main() -> None:
        async with serving() as (port, events):
            ws = await websocket_connect(f"ws://127.0.0.1:{port}/args/abc")
            assert ("open", ("abc",)) in events
            await ws.write_message("hello ☃")
            assert await ws.read_message() == "hello ☃"
            await ws.write_message(b"\x00\x01", binary=True)
            assert await ws.read_message() == b"\x00\x01"
            await ws.write_message({"a": 1})
            assert await ws.read_message() == '{"a": 1}'
            big = os.urandom(200_000)
            await ws.write_message(big, binary=True)
            assert await ws.read_message() == big
            ws.close()
            await wait_for(lambda: any(e[0] == "close" for e in events))
            with pytest.raises(WebSocketClosedError):
                ws.write_message("late")
            assert await ws.read_message() is None

    run(main())


def test_fragmented_message_from_raw_client() -> None:
    async def main() -> None:
        async with serving() as (port, _):
            reader, writer, _ = await raw_upgrade(port)
            text = "snow ☃ man".encode()
            writer.write(masked(0x01, text[:6]) + masked(0x89, b"mid"))
            # The ping in the middle of the message is answered at once.
            assert await read_frame(reader) == (0x8A, b"mid")
            writer.write(masked(0x00, text[6:7]) + masked(0x80, text[7:]))
            assert await read_frame(reader) == (0x81, text)
            writer.close()
            await writer.wait_closed()

    run(main())


def test_async_on_message_keeps_order() -> None:
    async def main() -> None:
        async with serving() as (port, _):
            ws = await websocket_connect(f"ws://127.0.0.1:{port}/ordered")
            ws.write_message("first")
            ws.write_message("second")
            assert await ws.read_message() == "first"
            assert await ws.read_message() == "second"
            ws.close()

    run(main())


def test_coroutine_echo_of_a_burst() -> None:
    async def main() -> None:
        async with serving() as (port, _):
            reader, writer, _ = await raw_upgrade(port, "/gen")
            writer.write(b"".join(masked(0x81, b"m%d" % i) for i in range(100)))
            for i in range(100):
                assert await read_frame(reader) == (0x81, b"m%d" % i)
            writer.close()
            await writer.wait_closed()

    run(main())


def test_ping_and_pong() -> None:
    async def main() -> None:
        async with serving(websocket_ping_interval=0.02, websocket_ping_timeout=5) as (port, events):
            pongs: list = []
            ws = await websocket_connect(f"ws://127.0.0.1:{port}/echo")
            ws.protocol.handler.on_pong = pongs.append  # type: ignore[union-attr]
            ws.ping(b"client ping")
            await wait_for(lambda: ("ping", b"client ping") in events)
            with pytest.raises(ValueError, match="125"):
                ws.ping(b"x" * 126)
            # The server pings every 20 ms and the client answers by itself.
            await asyncio.sleep(0.1)
            assert ws.protocol is not None and not ws.protocol.is_closing()
            ws.close()

    run(main())


def test_server_ping_timeout_closes() -> None:
    async def main() -> None:
        async with serving(websocket_ping_interval=0.02, websocket_ping_timeout=0.02) as (port, events):
            reader, writer, _ = await raw_upgrade(port)
            # A client that never answers pings.
            opcode, _ = await read_frame(reader)
            assert opcode == 0x89
            while True:
                opcode, payload = await read_frame(reader)
                if opcode == 0x88:
                    break
            assert payload == struct.pack("!H", 1000) + b"ping timed out"
            writer.write(masked(0x88, payload[:2]))
            await wait_for(lambda: ("close", 1000, "") in events)
            writer.close()
            await writer.wait_closed()

    run(main())


def test_subprotocols() -> None:
    async def main() -> None:
        async with serving() as (port, _):
            ws = await websocket_connect(f"ws://127.0.0.1:{port}/sub", subprotocols=["x", "chat"])
            assert ws.selected_subprotocol == "chat"
            assert ws.headers["Sec-WebSocket-Protocol"] == "chat"
            assert await ws.read_message() == "subprotocol=chat"
            ws.close()
            ws = await websocket_connect(f"ws://127.0.0.1:{port}/sub")
            assert ws.selected_subprotocol is None
            assert await ws.read_message() == "subprotocol=None"
            ws.close()

    run(main())


# --- closing --------------------------------------------------------------------


def test_close_codes_both_ways() -> None:
    async def main() -> None:
        async with serving() as (port, events):
            ws = await websocket_connect(f"ws://127.0.0.1:{port}/echo")
            ws.close(4000, "bye")
            await wait_for(lambda: ("close", 4000, "bye") in events)
            ws = await websocket_connect(f"ws://127.0.0.1:{port}/closer")
            assert await ws.read_message() is None
            assert (ws.close_code, ws.close_reason) == (4001, "go away")

    run(main())


@pytest.mark.parametrize(
    "frame,code",
    [
        (bytes((0x88, 0x82)) + b"\0\0\0\0" + struct.pack("!H", 1005), 1002),
        (bytes((0x81, 0x01)) + b"x", 1002),  # unmasked
        (masked(0x81, b"\xff"), 1007),
        (masked(0x80, b"x"), 1002),
    ],
)
def test_protocol_errors_are_answered_with_close_codes(frame: bytes, code: int) -> None:
    async def main() -> None:
        async with serving() as (port, events):
            reader, writer, _ = await raw_upgrade(port)
            writer.write(frame)
            opcode, payload = await read_frame(reader)
            assert opcode == 0x88
            assert struct.unpack("!H", payload[:2])[0] == code
            # The server half-closed: the client sees EOF and hangs up.
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            await writer.wait_closed()
            await wait_for(lambda: any(e[0] == "close" for e in events))

    run(main())


def test_max_message_size() -> None:
    async def main() -> None:
        async with serving(websocket_max_message_size=1024) as (port, _):
            ws = await websocket_connect(f"ws://127.0.0.1:{port}/echo")
            ws.write_message("a" * 1024)
            assert await ws.read_message() == "a" * 1024
            ws.write_message("a" * 1025)
            assert await ws.read_message() is None
            assert (ws.close_code, ws.close_reason) == (1009, "message too big")

    run(main())


def test_client_that_vanishes() -> None:
    async def main() -> None:
        async with serving() as (port, events):
            reader, writer, _ = await raw_upgrade(port)
            # Half a frame, then the socket is reset.
            writer.write(masked(0x81, b"hello")[:4])
            await writer.drain()
            writer.transport.abort()
            await wait_for(lambda: ("close", None, None) in events)

    run(main())


# --- compression ----------------------------------------------------------------


def test_compression_negotiated_and_smaller_on_the_wire() -> None:
    async def main() -> None:
        async with serving() as (port, events):
            ws = await websocket_connect(f"ws://127.0.0.1:{port}/deflate", compression_options={})
            assert ws.headers["Sec-WebSocket-Extensions"] == "permessage-deflate"
            message = "Hello world. Testing 123 123 " * 20
            for _ in range(3):
                ws.write_message(message)
                assert await ws.read_message() == message
            protocol = ws.protocol
            assert protocol is not None
            assert protocol._message_bytes_out == protocol._message_bytes_in == 3 * len(message)
            assert protocol._wire_bytes_in < len(message)
            # Without compression options the client does not offer it.
            plain = await websocket_connect(f"ws://127.0.0.1:{port}/deflate")
            assert "Sec-WebSocket-Extensions" not in plain.headers
            plain.close()
            ws.close()

    run(main())


def test_compression_parameters_from_a_raw_client() -> None:
    async def main() -> None:
        async with serving() as (port, _):
            reader, writer, head = await raw_upgrade(
                port,
                "/deflate",
                "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover;"
                " server_no_context_takeover; server_max_window_bits=10\r\n",
            )
            assert (
                b"permessage-deflate; server_no_context_takeover;"
                b" client_no_context_takeover; server_max_window_bits=10\r\n"
            ) in head
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            body = (c.compress(b"squall " * 50) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
            writer.write(masked(0xC1, body))
            opcode, payload = await read_frame(reader)
            assert opcode == 0xC1
            d = zlib.decompressobj(-10)
            assert d.decompress(payload + b"\x00\x00\xff\xff") == b"squall " * 50
            writer.close()
            await writer.wait_closed()

    run(main())


def test_compression_bomb_closes_with_1009() -> None:
    async def main() -> None:
        async with serving(websocket_max_message_size=4096) as (port, _):
            ws = await websocket_connect(f"ws://127.0.0.1:{port}/deflate", compression_options={})
            ws.write_message(b"\0" * 1_000_000, binary=True)
            assert await ws.read_message() is None
            assert ws.close_code == 1009

    run(main())


def test_many_frames_at_once_yield_to_the_loop() -> None:
    async def main() -> None:
        async with serving() as (port, events):
            reader, writer, _ = await raw_upgrade(port, "/count")
            await wait_for(lambda: "counter" in dict(events))
            counter = dict(events)["counter"]
            count = 5000
            writer.write(b"\x82\x81\x00\x00\x00\x00x" * count)
            ticks = 0
            while counter.count < count:
                ticks += 1
                await asyncio.sleep(0)
            # Handled in turns of EVENTS_PER_TURN, not in one long callback.
            assert ticks > 10
            writer.close()
            await writer.wait_closed()

    run(main())


def test_failing_on_message_logs_and_stops_delivery(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with serving() as (port, events):
            reader, writer, _ = await raw_upgrade(port, "/faulty")
            # Three messages in one read: the one after the failure is dropped.
            writer.write(masked(0x81, b"a") + masked(0x81, b"boom") + masked(0x81, b"c"))
            assert await asyncio.wait_for(reader.read(), 5) == b""
            assert events == ["a", "boom"]
            writer.close()
            await writer.wait_closed()

    with caplog.at_level("ERROR", logger="squall.application"):
        run(main())
    errors = [r for r in caplog.records if r.name == "squall.application"]
    assert len(errors) == 1 and "Uncaught exception" in errors[0].getMessage()


def test_write_after_our_close_frame_is_refused() -> None:
    async def main() -> None:
        async with serving() as (port, events):
            reader, writer, _ = await raw_upgrade(port, "/late")
            writer.write(masked(0x81, b"go"))
            assert await read_frame(reader) == (0x81, b"before")
            assert await read_frame(reader) == (0x88, struct.pack("!H", 1000))
            assert events == ["refused"]
            writer.write(masked(0x88, struct.pack("!H", 1000)))
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            await writer.wait_closed()

    run(main())
