"""HTTPS keep-alive throughput: squall's fast path, its old stream path, and Tornado.

Each server answers ``GET /`` with ``Hello, world!`` (13 bytes, with
Content-Type and Content-Length) over TLS, with the test certificate in
``src/squall/test``; wrk makes its TLS connections once and then sends
keep-alive requests, so the numbers are the cost of a request on an
established TLS connection (encryption included), not of handshakes.

* ``squall``: ``HTTPServer(callback, ssl_options=...)``: the loop's TLS
  transport under squall's HTTP protocol (httptools), as for plain HTTP;
* ``squall-stream``: the path squall's HTTPS took before, kept here for the
  comparison: each connection an ``SSLIOStream`` served by
  ``HTTP1ServerConnection`` (``HTTPServer.handle_stream``);
* ``tornado``: Tornado's ``HTTPServer(callback, ssl_options=...)``;
* ``squall-plain``: squall without TLS, to show what TLS itself costs.

All run on uvloop (``--loop asyncio`` for the standard library's loop),
each pinned to CPU 0 while wrk runs on CPU 1; rounds are interleaved and
the median is reported (see ``_harness``).

Usage: ``.venv/bin/python benchmarks/bench_https.py [--rounds 3]
[--duration 5] [--connections 64] [--loop uvloop]``. Prints a markdown
table and writes ``benchmarks/results/https.json`` (``https-asyncio.json``
for the standard library's loop).
"""

from __future__ import annotations

import argparse
import ssl
import sys
import urllib.request
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness  # noqa: E402

PEERS = ["tornado==6.6.1", "uvloop"]
BODY = b"Hello, world!"
CERT_DIR = _harness.REPO_DIR / "src" / "squall" / "test"
SSL_OPTIONS = {"certfile": str(CERT_DIR / "test.crt"), "keyfile": str(CERT_DIR / "test.key")}


def run_forever(loop_name: str, start: Callable[[], Any]) -> None:
    """Call ``start`` on a running loop of the chosen kind, then serve forever."""
    import asyncio

    async def main() -> None:
        start()
        await asyncio.Event().wait()

    if loop_name == "uvloop":
        import uvloop

        uvloop.install()
    asyncio.run(main())


def serve_squall(port: int, loop_name: str, variant: str) -> None:
    sys.path.insert(0, str(_harness.REPO_DIR / "src"))
    from squall.httpserver import HTTPServer
    from squall.httputil import HTTPHeaders, ResponseStartLine
    from squall.tcpserver import TCPServer

    start_line = ResponseStartLine("HTTP/1.1", 200, "OK")

    def handle(request):  # type: ignore[no-untyped-def]
        headers = HTTPHeaders({"Content-Type": "text/plain", "Content-Length": str(len(BODY))})
        request.connection.write_headers(start_line, headers, BODY)
        request.connection.finish()

    class StreamHTTPServer(HTTPServer):
        # TCPServer's own protocol: an SSLIOStream per connection, handed
        # to handle_stream, as HTTPS was served before the fast path.
        _make_protocol = TCPServer._make_protocol

    server_class = StreamHTTPServer if variant == "squall-stream" else HTTPServer
    ssl_options = None if variant == "squall-plain" else SSL_OPTIONS
    run_forever(loop_name, lambda: server_class(handle, ssl_options=ssl_options).listen(port, "127.0.0.1"))


def serve_tornado(port: int, loop_name: str, variant: str) -> None:
    from tornado.httpserver import HTTPServer
    from tornado.httputil import HTTPHeaders, ResponseStartLine

    start_line = ResponseStartLine("HTTP/1.1", 200, "OK")

    def handle(request):  # type: ignore[no-untyped-def]
        headers = HTTPHeaders({"Content-Type": "text/plain", "Content-Length": str(len(BODY))})
        request.connection.write_headers(start_line, headers, BODY)
        request.connection.finish()

    run_forever(loop_name, lambda: HTTPServer(handle, ssl_options=SSL_OPTIONS).listen(port, "127.0.0.1"))


SERVE = {
    "squall": serve_squall,
    "squall-stream": serve_squall,
    "tornado": serve_tornado,
    "squall-plain": serve_squall,
}


class _Server(_harness.Server):
    """A server under test reached over HTTPS unless it is the plain one."""

    @property
    def url(self) -> str:
        scheme = "http" if self.name == "squall-plain" else "https"
        return f"{scheme}://127.0.0.1:{self.port}{self.path}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=sorted(SERVE), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--only", nargs="*", choices=sorted(SERVE), help="servers to run")
    args = parser.parse_args()
    if args.serve:
        SERVE[args.serve](args.port, args.loop, args.serve)
        return

    _harness.ensure_wrk()
    peers = _harness.peers_python(PEERS)
    # The harness waits for each server with urllib: let it accept the
    # self-signed test certificate.
    insecure = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    urllib.request.install_opener(urllib.request.build_opener(urllib.request.HTTPSHandler(context=insecure)))
    script = str(Path(__file__).resolve())
    names = args.only or ["squall", "squall-stream", "tornado", "squall-plain"]
    servers = []
    for name in names:
        python = peers if name == "tornado" else sys.executable
        port = _harness.free_port()
        argv = [python, script, "--serve", name, "--port", str(port), "--loop", args.loop]
        servers.append(_Server(name, argv, port))
    results = _harness.measure(
        servers, rounds=args.rounds, duration=args.duration, connections=args.connections
    )
    print(_harness.markdown_table(results, names[0]))
    ratios: dict[str, float] = {}
    if "squall" in results:
        for name in ("squall-stream", "tornado", "squall-plain"):
            if name in results and results[name].rps:
                ratios[f"squall_vs_{name}"] = round(results["squall"].rps / results[name].rps, 3)
                print(f"squall / {name}: {ratios[f'squall_vs_{name}']:.2f}")
    path = _harness.write_json(
        "https" if args.loop == "uvloop" else f"https-{args.loop}",
        {
            "benchmark": "hello world over HTTPS keep-alive, bare HTTP server",
            "machine": _harness.machine_info(),
            "settings": vars(args),
            "results": results,
            "ratios": ratios,
        },
    )
    print(f"results: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
