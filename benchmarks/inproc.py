"""Per-request Python cost of squall's full stack, measured in-process.

Feeds keep-alive requests straight into the HTTP protocol object over an
in-memory transport (no sockets, no load generator), so the number is the
Python work of one request (parse, route, handler, response assembly) with
none of the machine's network noise. Use it to compare changes to the hot
path; ``suite.py`` remains the end-to-end comparison with other servers.

    .venv/bin/python benchmarks/inproc.py                 # every endpoint
    .venv/bin/python benchmarks/inproc.py --profile plaintext
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "apps"))
sys.path.insert(0, str(ROOT.parent / "src"))

from tornado_api import make_app  # noqa: E402

import squall.httpserver  # noqa: E402
import squall.httputil  # noqa: E402

SORT = "tottime"
BODY = b"x" * 10240
REQUESTS = {
    "plaintext": b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "json": b"GET /json HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "params": b"GET /user/42?name=squall HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "echo-10k": b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s"
    % (len(BODY), BODY),
    "template": b"GET /template HTTP/1.1\r\nHost: localhost\r\n\r\n",
    # /plaintext with the dozen headers a browser sends (the suite's
    # requests, from wrk, carry only Host): the per-header cost.
    "browser": b"GET /plaintext HTTP/1.1\r\nHost: localhost:8888\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
    b"Connection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\n"
    b"Sec-Fetch-Mode: navigate\r\nSec-Fetch-Site: none\r\nSec-Fetch-User: ?1\r\n"
    b"Cookie: session=abc123; theme=dark\r\n\r\n",
    "static-1m": b"GET /static/1mb.bin HTTP/1.1\r\nHost: localhost\r\n\r\n",
}
# The static file of the suite's static-1m endpoint (1 MB), in a directory
# of its own.
_STATIC_DIR = tempfile.mkdtemp(prefix="squall-inproc-")
with open(os.path.join(_STATIC_DIR, "1mb.bin"), "wb") as _file:
    _file.write(bytes(range(256)) * 4096)


class _Transport(asyncio.Transport):
    """Swallows what the server writes; counts responses."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000)}.get(name, default)

    def write(self, data: Any) -> None:
        self.written += 1

    def writelines(self, chunks: Any) -> None:
        self.written += 1

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: Any = None, low: Any = None) -> None:
        pass


class _Bare(squall.httputil.HTTPServerConnectionDelegate, squall.httputil.HTTPMessageDelegate):
    """No framework: answers every request with canned headers and body
    through the server's HTTPConnection (the floor under the web layer)."""

    def start_request(self, server_conn: Any, request_conn: Any) -> Any:
        self.connection = request_conn
        return self

    def finish(self) -> None:
        headers = squall.httputil.HTTPHeaders()
        headers._as_list = {"Content-Type": ["text/plain"], "Content-Length": ["13"]}
        self.connection.write_headers(_OK, headers, b"Hello, World!")
        self.connection.finish()


_OK = squall.httputil.ResponseStartLine("HTTP/1.1", 200, "OK")


async def _run(name: str, count: int, profile: bool) -> float:
    bare = name.startswith("bare-")
    if bare:
        name = name[len("bare-") :]
    app = _Bare() if bare else make_app("squall", _STATIC_DIR)
    server = squall.httpserver.HTTPServer(app)
    protocol = server._make_protocol()
    transport = _Transport()
    protocol.connection_made(transport)
    request = REQUESTS[name]
    sleep = asyncio.sleep

    async def loop(n: int) -> None:
        for _ in range(n):
            before = transport.written
            protocol.data_received(request)
            while transport.written == before or protocol._tx is not None:
                await sleep(0)

    await loop(200)  # warm up: caches, compiled templates
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    start = time.process_time()
    await loop(count)
    elapsed = time.process_time() - start
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats(SORT).print_stats(60)
    protocol.connection_lost(None)
    return elapsed / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "endpoints",
        nargs="*",
        default=list(REQUESTS),
        help="endpoint names; bare-<name> sends the same request to a server with no framework",
    )
    parser.add_argument("-n", "--count", type=int, default=20000)
    parser.add_argument("--profile", action="store_true", help="cProfile the first endpoint")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--rounds", type=int, default=5, help="report the best of this many")
    args = parser.parse_args()
    factory = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    for name in args.endpoints:
        best = float("inf")
        with asyncio.Runner(loop_factory=factory) as runner:
            for _ in range(1 if args.profile else args.rounds):
                best = min(best, runner.run(_run(name, args.count, args.profile)))
        print(f"{name:10s} {best:7.2f} µs CPU/request (best of {args.rounds} x {args.count})")


if __name__ == "__main__":
    main()
