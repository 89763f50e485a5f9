"""One request fanning out to several backends at once, over pooled keep-alive connections.

``GET /`` asks three backend services (users, orders, recommendations) for
their part of a page *at the same time* with `squall.httpclient.AsyncHTTPClient`
and answers with the combined JSON, including how long each part took and
how long the whole took: about as long as the slowest backend, not the sum
(the "pipeline" case from the seed write-ups). The client keeps its
connections to each backend open between requests, so a page costs no new
TCP handshakes once the pool is warm; each part reports the client port the
backend saw, and those ports repeat from one page to the next.

The backends are simulated by ``/backend/NAME?delay=SECONDS`` on the same
server, so the example needs nothing else running. ``--backend`` points the
fan-out elsewhere.

    squall run examples/fanout/app.py:make_app --port 8891
    python examples/fanout/app.py --port=8891

    curl 'http://127.0.0.1:8891/'
    curl 'http://127.0.0.1:8891/?users=0.1&orders=0.5&recommendations=0.3'
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Optional

import squall.httpserver
import squall.ioloop
import squall.options
import squall.web
from squall.httpclient import AsyncHTTPClient
from squall.netutil import bind_sockets
from squall.options import define, options

# The parts of the page and how long each simulated backend takes by default.
DEFAULT_DELAYS = {"users": 0.1, "orders": 0.3, "recommendations": 0.2}
# A simulated backend never sleeps longer than this, whatever it is asked.
MAX_DELAY = 10.0
# Requests the shared client runs at once (more wait in its queue); it also
# bounds the idle keep-alive connections kept per backend.
MAX_CLIENTS = 50


def _seconds(handler: squall.web.RequestHandler, name: str, default: float) -> float:
    text = handler.get_argument(name, str(default))
    try:
        value = float(text)
    except ValueError:
        raise squall.web.HTTPError(400, f"{name}={text!r} is not a number of seconds") from None
    return min(max(value, 0.0), MAX_DELAY)


class BackendHandler(squall.web.RequestHandler):
    """A stand-in for a slow service: waits ``delay`` seconds, then answers."""

    async def get(self, name: str) -> None:
        delay = _seconds(self, "delay", 0.1)
        await asyncio.sleep(delay)
        self.write({"service": name, "delay": delay, "client_port": self.request.connection.context.address[1]})


class PageHandler(squall.web.RequestHandler):
    """Fetches every part concurrently and combines them."""

    async def get(self) -> None:
        base = self.settings["backend"] or f"{self.request.protocol}://{self.request.host}"
        delays = {name: _seconds(self, name, default) for name, default in DEFAULT_DELAYS.items()}
        client = AsyncHTTPClient()
        started = time.monotonic()

        async def part(name: str, delay: float) -> dict[str, Any]:
            part_started = time.monotonic()
            response = await client.fetch(f"{base}/backend/{name}?delay={delay}")
            body: dict[str, Any] = json.loads(response.body)
            body["seconds"] = round(time.monotonic() - part_started, 4)
            return body

        parts = await asyncio.gather(*(part(name, delay) for name, delay in delays.items()))
        total = time.monotonic() - started
        self.write(
            {
                "parts": {p["service"]: p for p in parts},
                "total_seconds": round(total, 4),
                "slowest_seconds": max(p["seconds"] for p in parts),
                "sum_seconds": round(sum(p["seconds"] for p in parts), 4),
            }
        )


def make_app(backend: Optional[str] = None) -> squall.web.Application:
    """The factory ``squall run`` calls. ``backend`` is the base URL of the
    services (default: this server's own simulated ones)."""
    # One pooled client per event loop, shared by every request.
    AsyncHTTPClient.configure(None, max_clients=MAX_CLIENTS)
    return squall.web.Application(
        [
            (r"/", PageHandler),
            (r"/backend/(\w+)", BackendHandler),
        ],
        backend=backend,
    )


def main() -> None:
    define("port", default=8891, help="run on the given port", type=int)
    define("address", default="127.0.0.1", help="listen on this address")
    define("backend", default=None, help="base URL of the backends (default: this server)")
    squall.options.parse_command_line()
    sockets = bind_sockets(options.port, options.address)
    server = squall.httpserver.HTTPServer(make_app(options.backend))
    server.add_sockets(sockets)
    print("fan-out example on http://%s:%d/" % sockets[0].getsockname()[:2], flush=True)
    try:
        squall.ioloop.IOLoop.current().start()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
