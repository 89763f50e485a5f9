"""A WebSocket echo load generator: messages per second and round-trip latency, like wrk for HTTP.

``wrk`` does not speak WebSocket, so the suite runs this instead (pinned to
its own core): ``--connections`` clients each complete the handshake, then
send ``--window`` masked text messages of ``--size`` bytes in one write and
send the next batch as soon as all of them have come back. The client does
as little as it can per message (the echoes have a known size, so it counts
bytes rather than parsing frames), so that the server, not this client, is
what saturates. Prints one JSON object: ``msgs_per_s``, ``p50_ms``,
``p99_ms`` (per batch round trip) and ``errors``.

    python benchmarks/_wsload.py --port 8888 [--path /ws] [--connections 64]
        [--duration 5] [--warmup 1] [--size 32] [--window 1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import time
from array import array
from typing import Optional

# Payloads stay in the 7-bit length form so that every echo is exactly
# 2 + size bytes (RFC 6455 section 5.2).
_MAX_SMALL_PAYLOAD = 125
# The handshake of any server in the suite answers well within this.
_HANDSHAKE_LIMIT = 16 * 1024


def _masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + mask + masked


class _Client(asyncio.Protocol):
    def __init__(self, load: "_Load") -> None:
        self.load = load
        self.transport: Optional[asyncio.Transport] = None
        self.head = b""
        self.open = False
        self.pending = 0
        self.sent_at = 0.0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16))
        self.transport.write(
            b"GET %b HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %b\r\nSec-WebSocket-Version: 13\r\n\r\n" % (self.load.path, key)
        )

    def data_received(self, data: bytes) -> None:
        if not self.open:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > _HANDSHAKE_LIMIT:
                    self._fail("handshake answer too long")
                return
            if not self.head.startswith(b"HTTP/1.1 101"):
                self._fail(self.head[:60].decode(errors="replace"))
                return
            self.open = True
            data = self.head[end + 4 :]
            self.head = b""
            if not self.ready.done():
                self.ready.set_result(None)
            self.send()
            if not data:
                return
        self.pending -= len(data)
        if self.pending <= 0:
            now = time.perf_counter()
            self.load.batch_done(now - self.sent_at)
            self.send(now)

    def send(self, now: float = 0.0) -> None:
        if self.load.stopped or self.transport is None:
            return
        self.sent_at = now or time.perf_counter()
        self.pending += self.load.batch_reply_len
        self.transport.write(self.load.batch)

    def _fail(self, why: str) -> None:
        self.load.errors += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if not self.load.stopped:
            self.load.errors += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during handshake: {exc}"))


class _Load:
    def __init__(self, path: str, size: int, window: int) -> None:
        if not 0 < size <= _MAX_SMALL_PAYLOAD:
            raise ValueError(f"--size must be 1..{_MAX_SMALL_PAYLOAD}, not {size}")
        if window < 1:
            raise ValueError(f"--window must be at least 1, not {window}")
        self.path = path.encode()
        self.batch = _masked_text_frame(b"x" * size) * window
        self.batch_reply_len = (2 + size) * window
        self.window = window
        self.stopped = False
        self.counting = False
        self.errors = 0
        self.batches = 0
        self.latencies = array("d")

    def batch_done(self, seconds: float) -> None:
        if self.counting:
            self.batches += 1
            self.latencies.append(seconds)


async def run(port: int, path: str, connections: int, duration: float, warmup: float, size: int, window: int) -> dict[str, float]:
    """Drive ``connections`` echo clients against 127.0.0.1:``port`` and return the numbers."""
    loop = asyncio.get_running_loop()
    load = _Load(path, size, window)
    clients = []
    for _ in range(connections):
        _, client = await loop.create_connection(lambda: _Client(load), "127.0.0.1", port)
        clients.append(client)
    await asyncio.gather(*(c.ready for c in clients))
    await asyncio.sleep(warmup)
    load.counting = True
    started = time.perf_counter()
    await asyncio.sleep(duration)
    load.counting = False
    elapsed = time.perf_counter() - started
    load.stopped = True
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    latencies = sorted(load.latencies)
    ms = [x * 1000.0 for x in latencies] or [float("nan")]
    return {
        "msgs_per_s": load.batches * window / elapsed,
        "p50_ms": statistics.median(ms),
        "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        "errors": load.errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/ws")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--window", type=int, default=1)
    args = parser.parse_args()
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(
            run(args.port, args.path, args.connections, args.duration, args.warmup, args.size, args.window)
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
