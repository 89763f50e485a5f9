"""WebSocket benchmark: server memory per idle connection and echo
messages per second, squall against Tornado 6.6.1, side by side in one run.

Both servers run the same echo handler on uvloop (so only the WebSocket code
differs), each in its own process pinned to one core; the load generator is
a lean asyncio client (pre-built frames, no per-message parsing) pinned to
the other core.

* memory: opens ``--connections`` WebSocket connections (10,000 by default)
  to one server, waits until every handshake is done, and reports the growth
  of the server's resident set size divided by the number of connections:
  what an idle connection costs (handler, protocol, transport, buffers).
* throughput: ``--clients`` connections each keep ``--window`` small text
  messages in flight for ``--seconds``; reported is echoes received per
  second, as the median of ``--rounds`` interleaved rounds.

Usage: ``.venv/bin/python benchmarks/bench_websocket.py [--quick]``.
Results go to ``benchmarks/results/websocket.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import REPO_DIR, Server, free_port, machine_info, write_json  # noqa: E402

_SERVER_CODE = r"""
import gc, os, sys
import uvloop
framework, port = sys.argv[1], int(sys.argv[2])
if framework == "squall":
    sys.path.insert(0, sys.argv[3])
    from squall import ioloop, web, websocket
else:
    from tornado import ioloop, web, websocket

class Echo(websocket.WebSocketHandler):
    def on_message(self, message):
        try:
            self.write_message(message, binary=isinstance(message, bytes))
        except websocket.WebSocketClosedError:
            # The benchmark hangs up with messages in flight; a traceback
            # per connection would fill the server's stderr pipe.
            pass

class Ready(web.RequestHandler):
    def get(self):
        gc.collect()
        self.write("ok")

async def main():
    app = web.Application([("/ws", Echo), ("/", Ready)])
    app.listen(port, "127.0.0.1")
    # Nobody drains the stderr pipe once the server is up: log lines about
    # clients hanging up mid-message (Tornado writes a traceback for each)
    # would fill it and block the server.
    sys.stderr = open(os.devnull, "w")
    await __import__("asyncio").Event().wait()

uvloop.install()
__import__("asyncio").run(main())
"""

_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
# Every handshake asks for the same path; the server answers 101.
_HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + _KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
# A handshake that takes longer than this means the server is stuck.
_HANDSHAKE_TIMEOUT = 30.0
# Connections opened at once while filling the server (a listen backlog's worth).
_OPEN_BATCH = 200


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class _Client(asyncio.Protocol):
    """One benchmark connection: handshake, then echo traffic in a window."""

    def __init__(self, frame: bytes, echo_size: int, window: int, ready: asyncio.Future) -> None:
        self.frame = frame
        self.echo_size = echo_size
        self.window = window
        self.ready = ready
        self.upgraded = False
        self.head = b""
        self.pending = 0
        self.received = 0
        self.transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(_HANDSHAKE)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(RuntimeError(self.head[:200].decode("latin-1")))
                return
            self.upgraded = True
            data = self.head[end + 4 :]
            self.head = b""
            self.ready.set_result(None)
        if data:
            self.pending += len(data)
            done, self.pending = divmod(self.pending, self.echo_size)
            self.received += done
            if done and self.window:
                assert self.transport is not None
                self.transport.write(self.frame * done)

    def start(self) -> None:
        assert self.transport is not None
        self.transport.write(self.frame * self.window)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed during handshake"))


async def _open(port: int, count: int, frame: bytes, echo_size: int, window: int) -> list[_Client]:
    loop = asyncio.get_running_loop()
    clients: list[_Client] = []
    for start in range(0, count, _OPEN_BATCH):
        batch = []
        for _ in range(min(_OPEN_BATCH, count - start)):
            ready = loop.create_future()
            batch.append(
                loop.create_connection(lambda r=ready: _Client(frame, echo_size, window, r), "127.0.0.1", port)
            )
        for _, protocol in await asyncio.gather(*batch):
            clients.append(protocol)
        waiting = [c.ready for c in clients[start:]]
        done, pending = await asyncio.wait(waiting, timeout=_HANDSHAKE_TIMEOUT)
        if pending:
            stuck = [c for c in clients[start:] if not c.ready.done()]
            raise RuntimeError(
                f"{len(pending)} handshakes to port {port} unfinished after {_HANDSHAKE_TIMEOUT} s;"
                f" first one got {stuck[0].head[:300]!r}"
            )
        for f in done:
            f.result()
        if len(clients) % 2000 == 0:
            print(f"  {port}: {len(clients):,} connections open", file=sys.stderr, flush=True)
    return clients


def _text_frame(payload: bytes) -> bytes:
    # Masked with an all-zero key: valid, and the payload needs no XOR.
    return bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload


async def _memory(server: Server, connections: int) -> float:
    pid = server.process.pid  # type: ignore[union-attr]
    _ready(server)
    before = _rss_kib(pid)
    clients = await _open(server.port, connections, b"", 1, 0)
    await asyncio.sleep(0.5)
    _ready(server)
    after = _rss_kib(pid)
    for c in clients:
        assert c.transport is not None
        c.transport.close()
    await asyncio.sleep(0.5)
    return (after - before) * 1024 / connections


def _ready(server: Server) -> None:
    """Ask the server for a page (which runs a garbage collection)."""
    with urllib.request.urlopen(server.url, timeout=30) as response:
        response.read()


async def _throughput(port: int, clients: int, window: int, seconds: float, size: int) -> float:
    payload = b"x" * size
    conns = await _open(port, clients, _text_frame(payload), 2 + size, window)
    for c in conns:
        c.start()
    await asyncio.sleep(0.2)  # warm up
    start_count = sum(c.received for c in conns)
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    count = sum(c.received for c in conns) - start_count
    elapsed = time.perf_counter() - started
    for c in conns:
        c.window = 0
        assert c.transport is not None
        c.transport.close()
    await asyncio.sleep(0.2)
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--size", type=int, default=32, help="message payload bytes (< 126)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1,000 connections, 1 s rounds")
    parser.add_argument("--client-core", type=int, default=1)
    args = parser.parse_args()
    if args.quick:
        args.connections, args.seconds = 1000, 1.0
    if not 0 < args.size < 126:
        parser.error(f"--size must be 1..125, got {args.size}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.connections + 100
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    if hard < need:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is below {need}")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.client_core})

    servers = {}
    for name in ("squall", "tornado"):
        port = free_port()
        argv = [sys.executable, "-c", _SERVER_CODE, name, str(port), str(REPO_DIR / "src")]
        servers[name] = Server(name, argv, port, "/")
    try:
        for s in servers.values():
            s.start(core=0)
            print(f"  {s.name} serves on port {s.port}", file=sys.stderr, flush=True)
        import uvloop

        memory = {name: uvloop.run(_memory(s, args.connections)) for name, s in servers.items()}
        rounds: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, s in servers.items():
                rounds[name].append(
                    uvloop.run(_throughput(s.port, args.clients, args.window, args.seconds, args.size))
                )
    finally:
        for s in servers.values():
            s.stop()
    rate = {name: statistics.median(r) for name, r in rounds.items()}
    print(f"| server | bytes per idle connection ({args.connections:,}) | echo msgs/s (median of {args.rounds}) |")
    print("| --- | ---: | ---: |")
    for name in servers:
        print(f"| {name} | {memory[name]:,.0f} | {rate[name]:,.0f} |")
    print(
        f"\nsquall/tornado: memory x{memory['squall'] / memory['tornado']:.2f},"
        f" throughput x{rate['squall'] / rate['tornado']:.2f}"
    )
    path = write_json(
        "websocket",
        {
            "args": vars(args),
            "machine": machine_info(),
            "bytes_per_idle_connection": memory,
            "echo_messages_per_second": rate,
            "rounds": rounds,
        },
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
