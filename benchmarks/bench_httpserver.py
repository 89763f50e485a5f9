"""Hello-world throughput of squall's HTTP server against its peers.

Four servers answer ``GET /`` with ``Hello, world!`` (13 bytes, with
Content-Type and Content-Length):

* ``squall``: a bare ``squall.httpserver.HTTPServer(callback)``;
* ``tornado``: Tornado's bare ``HTTPServer(callback)``, same callback code;
* ``uvicorn``: a raw ASGI app on uvicorn (httptools + uvloop);
* ``limit``: a minimal ``asyncio.Protocol`` on uvloop that answers every
  request head it sees with a canned response: no parsing, no framework,
  the ceiling for any Python server on this loop.

All run on uvloop (Tornado too, so that only the server code differs), each
pinned to CPU 0 while wrk runs on CPU 1; rounds are interleaved and the
median of three is reported. Peers live in ``benchmarks/.venv-peers``,
created by this script.

Usage: ``.venv/bin/python benchmarks/bench_httpserver.py [--rounds 3]
[--duration 5] [--connections 64]``. Prints a markdown table and writes
``benchmarks/results/httpserver.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness  # noqa: E402

PEERS = ["tornado==6.6.1", "uvicorn[standard]", "uvloop", "httptools"]
BODY = b"Hello, world!"

# Targets from the issue: squall at least 1.5x uvicorn's raw ASGI, and at
# least 40% of the limit.
TARGET_VS_UVICORN = 1.5
TARGET_VS_LIMIT = 0.40


def serve_squall(port: int) -> None:
    sys.path.insert(0, str(_harness.REPO_DIR / "src"))
    from squall.httpserver import HTTPServer
    from squall.httputil import HTTPHeaders, ResponseStartLine
    from squall.ioloop import IOLoop

    start_line = ResponseStartLine("HTTP/1.1", 200, "OK")

    def handle(request):  # type: ignore[no-untyped-def]
        headers = HTTPHeaders({"Content-Type": "text/plain", "Content-Length": str(len(BODY))})
        request.connection.write_headers(start_line, headers, BODY)
        request.connection.finish()

    HTTPServer(handle).listen(port, "127.0.0.1")
    IOLoop.current().start()


def serve_tornado(port: int) -> None:
    import asyncio

    import uvloop
    from tornado.httpserver import HTTPServer
    from tornado.httputil import HTTPHeaders, ResponseStartLine

    start_line = ResponseStartLine("HTTP/1.1", 200, "OK")

    def handle(request):  # type: ignore[no-untyped-def]
        headers = HTTPHeaders({"Content-Type": "text/plain", "Content-Length": str(len(BODY))})
        request.connection.write_headers(start_line, headers, BODY)
        request.connection.finish()

    async def main() -> None:
        HTTPServer(handle).listen(port, "127.0.0.1")
        await asyncio.Event().wait()

    uvloop.install()
    asyncio.run(main())


def serve_uvicorn(port: int) -> None:
    import uvicorn

    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


def serve_limit(port: int) -> None:
    import asyncio

    import uvloop

    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%b"
        % (len(BODY), BODY)
    )

    class Canned(asyncio.Protocol):
        def connection_made(self, transport):  # type: ignore[no-untyped-def]
            self.transport = transport

        def data_received(self, data):  # type: ignore[no-untyped-def]
            self.transport.write(response * data.count(b"\r\n\r\n"))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_server(Canned, "127.0.0.1", port, backlog=1024)
        await asyncio.Event().wait()

    uvloop.install()
    asyncio.run(main())


SERVE = {
    "squall": serve_squall,
    "tornado": serve_tornado,
    "uvicorn": serve_uvicorn,
    "limit": serve_limit,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=sorted(SERVE), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--only", nargs="*", choices=sorted(SERVE), help="servers to run")
    args = parser.parse_args()
    if args.serve:
        SERVE[args.serve](args.port)
        return

    _harness.ensure_wrk()
    peers = _harness.peers_python(PEERS)
    script = str(Path(__file__).resolve())
    pythons = {"squall": sys.executable, "tornado": peers, "uvicorn": peers, "limit": peers}
    names = args.only or ["squall", "tornado", "uvicorn", "limit"]
    servers = []
    for name in names:
        port = _harness.free_port()
        servers.append(
            _harness.Server(name, [pythons[name], script, "--serve", name, "--port", str(port)], port)
        )
    results = _harness.measure(
        servers, rounds=args.rounds, duration=args.duration, connections=args.connections
    )
    print(_harness.markdown_table(results, "squall"))
    summary: dict[str, object] = {}
    if "squall" in results:
        squall = results["squall"].rps
        for name, target in (("uvicorn", TARGET_VS_UVICORN), ("limit", TARGET_VS_LIMIT)):
            if name in results and results[name].rps:
                ratio = squall / results[name].rps
                summary[f"squall_vs_{name}"] = round(ratio, 3)
                summary[f"target_vs_{name}"] = target
                print(f"squall / {name}: {ratio:.2f} (target >= {target})")
        if "tornado" in results and results["tornado"].rps:
            summary["squall_vs_tornado"] = round(squall / results["tornado"].rps, 3)
    path = _harness.write_json(
        "httpserver",
        {
            "benchmark": "hello world, bare HTTP server",
            "machine": _harness.machine_info(),
            "settings": vars(args),
            "results": results,
            "ratios": summary,
        },
    )
    print(f"results: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
