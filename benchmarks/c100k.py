"""100,000 concurrent connections to one server process: memory per connection and push latency.

    .venv/bin/python benchmarks/c100k.py                       # squall and Tornado, 100,000 each
    .venv/bin/python benchmarks/c100k.py --connections 20000 --only squall   # quicker

For each server (``benchmarks/apps/c100k_app.py``, the same code on squall
and on Tornado) and each phase, a fresh server process is started, pinned to
CPU 0, and its resident set size (RSS) read; then client processes (pinned to
CPU 1) open the connections:

* ``http``: idle HTTP/1.1 keep-alive connections, each after one ``GET /``;
* ``websocket``: idle WebSockets; then one ``POST /push`` makes the server send
  one message to all of them, and the time until the *last* client has it is
  reported (clients and this script share the system's monotonic clock).

The server's RSS growth divided by the number of connections is what one
idle connection costs. Targets (squall): <= 4 KiB per HTTP keep-alive
connection, <= 8 KiB per WebSocket, a push to all 100,000 within 2 s.

A client socket binds a source address before connecting; one source
address has ~28,000 ephemeral ports towards one server port
(``net.ipv4.ip_local_port_range``), so the connections are spread over
127.0.0.2, 127.0.0.3, ... (all loopback on Linux), one client process per
address. Client processes are raw asyncio protocols on uvloop, cheap per
connection, so the clients are not what limits the run.

The script raises its RLIMIT_NOFILE (and, as root, the hard limit) so that
the server and the clients can hold the sockets; when that is not allowed it
says which limit to change. Results: ``benchmarks/results/c100k.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness  # noqa: E402

APP = _harness.BENCH_DIR / "apps" / "c100k_app.py"
SERVER_CORE = 0
CLIENT_CORE = 1
# Connections per source address: below the ~28,000 ephemeral ports of the
# default ip_local_port_range (32768-60999), with room for stray sockets.
PER_SOURCE = 25_000
# Connection attempts in flight per client process: well under the server's
# listen backlog (4096) and the kernel's SYN backlog (tcp_max_syn_backlog,
# 2048 here), so no SYN is dropped and retried a second later.
CONNECT_CONCURRENCY = 256
# Descriptors beyond the connections: listening socket, pipes, files, epoll.
FD_MARGIN = 1_000
# Linux: let connect() choose the source port, so a bound address does not
# reserve its port for every destination (IP_BIND_ADDRESS_NO_PORT, linux/in.h).
IP_BIND_ADDRESS_NO_PORT = 24
# A phase may take this long (connecting 100,000 sockets to a slow server
# included) before it is abandoned.
PHASE_TIMEOUT = 600.0
PUSH_MESSAGE = "x" * 32
# Targets from the issue, for squall.
TARGET_HTTP_BYTES = 4 * 1024
TARGET_WS_BYTES = 8 * 1024
TARGET_PUSH_S = 2.0


# --- client process ---------------------------------------------------------------


class _Conn(asyncio.Protocol):
    """One idle client connection: an HTTP request or a WebSocket handshake,
    then silence; in WebSocket mode it notes when pushed bytes arrive."""

    def __init__(self, client: "_Client") -> None:
        self.client = client
        self.transport: Optional[asyncio.Transport] = None
        self.buffer = b""
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pushed = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.client.request)

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self.buffer += data
            if self.client.websocket:
                if b"\r\n\r\n" in self.buffer:
                    if self.buffer.startswith(b"HTTP/1.1 101"):
                        self.opened.set_result(None)
                    else:
                        self.opened.set_exception(ConnectionError(self.buffer[:40].decode(errors="replace")))
                    self.buffer = b""
            elif self.buffer.endswith(b"\r\n\r\nok"):
                self.opened.set_result(None)
                self.buffer = b""
            return
        self.pushed += len(data)
        if self.pushed >= self.client.push_len and self.pushed - len(data) < self.client.push_len:
            self.client.push_received()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed: {exc}"))
        elif not self.client.closing:
            self.client.lost += 1


class _Client:
    def __init__(self, port: int, source: str, count: int, websocket: bool) -> None:
        self.port = port
        self.source = source
        self.count = count
        self.websocket = websocket
        key = base64.b64encode(os.urandom(16))
        self.request = (
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %b\r\nSec-WebSocket-Version: 13\r\n\r\n" % key
            if websocket
            else b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )
        # An unmasked server text frame: 2 header bytes + the payload.
        self.push_len = 2 + len(PUSH_MESSAGE)
        self.conns: list[_Conn] = []
        self.errors = 0
        self.lost = 0
        self.closing = False
        self.received = 0
        self.last_received = 0.0

    def push_received(self) -> None:
        self.received += 1
        self.last_received = time.monotonic()

    async def _open_one(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((self.source, 0))
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", self.port))
            _, conn = await loop.create_connection(lambda: _Conn(self), sock=sock)
        except OSError:
            sock.close()
            self.errors += 1
            return
        try:
            await conn.opened
        except ConnectionError:
            self.errors += 1
            return
        self.conns.append(conn)

    async def _opener(self, count: int) -> None:
        for _ in range(count):
            await self._open_one()

    async def run(self) -> None:
        started = time.monotonic()
        # A fixed set of openers, each opening its share in turn (a semaphore
        # with tens of thousands of waiters costs quadratic time in 3.11).
        workers = min(CONNECT_CONCURRENCY, self.count)
        await asyncio.gather(
            *(self._opener(self.count // workers + (1 if i < self.count % workers else 0)) for i in range(workers))
        )
        _say(opened=len(self.conns), errors=self.errors, seconds=time.monotonic() - started)
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            command = (await reader.readline()).decode().strip()
            if command == "arm":
                self.received = 0
                for conn in self.conns:
                    conn.pushed = 0
                _say(armed=True)
            elif command == "report":
                _say(received=self.received, last=self.last_received, lost=self.lost)
            else:
                self.closing = True
                for conn in self.conns:
                    if conn.transport is not None:
                        conn.transport.abort()
                _say(closed=True)
                return


def _say(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def client_main(port: int, source: str, count: int, websocket: bool) -> None:
    raise_fd_limit(count + FD_MARGIN)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_Client(port, source, count, websocket).run())


# --- orchestration -----------------------------------------------------------------


def raise_fd_limit(needed: int) -> None:
    """Raise RLIMIT_NOFILE to ``needed`` (the hard limit too, where allowed);
    exit with instructions when the system does not allow it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, max(hard, needed)))
    except (ValueError, OSError):
        try:
            nr_open = Path("/proc/sys/fs/nr_open").read_text().strip()
        except OSError:
            nr_open = "?"
        sys.exit(
            f"c100k: need {needed} open files, but RLIMIT_NOFILE is {soft} (hard {hard}) and cannot be raised.\n"
            f"Raise the hard limit: run as root (with CAP_SYS_RESOURCE), or `ulimit -Hn {needed}` in a root shell, or set "
            f"'* hard nofile {needed}' in /etc/security/limits.conf (fs.nr_open is {nr_open}; "
            f"raise it with `sysctl fs.nr_open={needed}` if it is lower); in a container, grant "
            f"CAP_SYS_RESOURCE or start it with `--ulimit nofile={needed}:{needed}`. "
            f"Or ask for fewer: --connections {max(0, hard - FD_MARGIN)} fits the current limit."
        )


def _rss(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/rss", timeout=60) as response:
        return json.loads(response.read())


def _readline(process: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    import select

    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError(f"client {process.pid} did not answer within {timeout:.0f} s")
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"client {process.pid} exited")
    return json.loads(line)


def _command(clients: list[subprocess.Popen[bytes]], command: str, timeout: float) -> list[dict[str, Any]]:
    for client in clients:
        assert client.stdin is not None
        client.stdin.write(command.encode() + b"\n")
        client.stdin.flush()
    return [_readline(client, timeout) for client in clients]


def run_phase(framework: str, python: str, count: int, websocket: bool) -> dict[str, Any]:
    """One fresh server, ``count`` idle connections of one kind; the numbers."""
    port = _harness.free_port()
    env = dict(os.environ)
    server = subprocess.Popen(
        _harness.pinned([python, str(APP), "--port", str(port), "--framework", framework], SERVER_CORE),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    clients: list[subprocess.Popen[bytes]] = []
    try:
        assert server.stdout is not None
        server.stdout.readline()
        baseline = _rss(port)["rss"]
        sources = math.ceil(count / PER_SOURCE)
        started = time.monotonic()
        for i in range(sources):
            share = count // sources + (1 if i < count % sources else 0)
            argv = [sys.executable, __file__, "--client", "--port", str(port), "--source", f"127.0.0.{i + 2}", "--count", str(share)]
            if websocket:
                argv.append("--websocket")
            clients.append(
                subprocess.Popen(_harness.pinned(argv, CLIENT_CORE), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            )
        opened = [_readline(c, PHASE_TIMEOUT) for c in clients]
        connect_s = time.monotonic() - started
        total = sum(o["opened"] for o in opened)
        errors = sum(o["errors"] for o in opened)
        # Let the server settle (deferred frees, buffers of the last handshakes).
        time.sleep(1.0)
        after = _rss(port)
        result: dict[str, Any] = {
            "framework": framework,
            "kind": "websocket" if websocket else "http",
            "asked": count,
            "open": total,
            "connect_errors": errors,
            "connect_s": round(connect_s, 2),
            "rss_before": baseline,
            "rss_after": after["rss"],
            "bytes_per_conn": round((after["rss"] - baseline) / total) if total else None,
        }
        if websocket:
            _command(clients, "arm", 60)
            request = urllib.request.Request(f"http://127.0.0.1:{port}/push", data=PUSH_MESSAGE.encode(), method="POST")
            t0 = time.monotonic()
            with urllib.request.urlopen(request, timeout=PHASE_TIMEOUT) as response:
                pushed = json.loads(response.read())
            # Wait until every client has everything (or has stopped getting more).
            deadline = time.monotonic() + 60
            while True:
                reports = _command(clients, "report", 60)
                received = sum(r["received"] for r in reports)
                if received >= total or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            result.update(
                {
                    "push_sent": pushed["sent"],
                    "push_server_loop_s": round(pushed["loop_s"], 3),
                    "push_received": received,
                    "push_all_s": round(max(r["last"] for r in reports) - t0, 3) if received else None,
                }
            )
        result["lost"] = sum(r.get("lost", 0) for r in _command(clients, "report", 60))
        _command(clients, "close", 60)
        return result
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
            client.wait()
        _harness.stop_process(server, timeout=10)


def _kib(value: Optional[float]) -> str:
    return "-" if value is None else f"{value / 1024:.2f} KiB"


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        "| server | kind | connections | connect s | RSS before | RSS after | per connection | push to all |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        push = f"{r['push_all_s']:.3f} s ({r['push_received']:,} got it)" if r.get("push_all_s") is not None else "-"
        lines.append(
            f"| {r['framework']} | {r['kind']} | {r['open']:,} | {r['connect_s']:.1f} | "
            f"{r['rss_before'] / 2**20:.1f} MiB | {r['rss_after'] / 2**20:.1f} MiB | "
            f"{_kib(r['bytes_per_conn'])} | {push} |"
        )
    verdicts = []
    for r in results:
        if r["framework"] != "squall" or r["bytes_per_conn"] is None:
            continue
        target = TARGET_WS_BYTES if r["kind"] == "websocket" else TARGET_HTTP_BYTES
        met = r["bytes_per_conn"] <= target
        verdicts.append(f"{'met ' if met else 'MISS'} squall {r['kind']}: {_kib(r['bytes_per_conn'])} per connection (target <= {_kib(target)})")
        if r["kind"] == "websocket" and r.get("push_all_s") is not None:
            ok = r["push_all_s"] <= TARGET_PUSH_S and r["push_received"] == r["open"]
            verdicts.append(f"{'met ' if ok else 'MISS'} squall push to {r['push_received']:,}: {r['push_all_s']:.3f} s (target <= {TARGET_PUSH_S} s)")
    return "\n".join(lines) + "\n\n```\n" + "\n".join(verdicts) + "\n```\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--tornado-connections", type=int, help="for Tornado (default: --connections)")
    parser.add_argument("--only", nargs="+", choices=("squall", "tornado"), default=["squall", "tornado"])
    parser.add_argument("--phases", nargs="+", choices=("http", "websocket"), default=["http", "websocket"])
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--websocket", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args.port, args.source, args.count, args.websocket)
        return
    if args.connections < 1:
        parser.error(f"--connections must be positive, got {args.connections}")
    largest = max(args.connections, args.tornado_connections or 0)
    # Raised here so the server processes, started from this one, inherit it.
    raise_fd_limit(largest + FD_MARGIN)
    peers = _harness.peers_python(["tornado==6.6.1"]) if "tornado" in args.only else ""
    results = []
    for framework in args.only:
        count = args.connections if framework == "squall" else (args.tornado_connections or args.connections)
        python = sys.executable if framework == "squall" else peers
        for phase in args.phases:
            print(f"{framework} {phase}: {count:,} connections ...", file=sys.stderr, flush=True)
            result = run_phase(framework, python, count, websocket=phase == "websocket")
            print(f"  {json.dumps(result)}", file=sys.stderr, flush=True)
            results.append(result)
    table = report(results)
    print(table)
    path = _harness.write_json("c100k", {"machine": _harness.machine_info(), "settings": vars(args), "results": results})
    print(f"results: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
