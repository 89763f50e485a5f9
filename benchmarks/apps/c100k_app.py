"""The server side of ``benchmarks/c100k.py``: many idle connections, one push to all.

* ``GET /``: ``ok`` (each idle keep-alive connection sends this once);
* ``/ws``: a WebSocket that stays open and idle;
* ``POST /push``: sends the request body as one text message to every open
  WebSocket and answers with how many it went to and how long the loop took;
* ``GET /rss``: the process's resident set size in bytes (``/proc/self/status``).

The same code runs on squall or Tornado (``--framework``); idle connections
are kept for an hour (both servers' defaults are shorter than a run may be),
and the listen backlog is deep enough for fast connection bursts.
"""

from __future__ import annotations

import gc
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import arg_parser  # noqa: E402

# Idle connections must outlive the longest run (Tornado's and squall's
# defaults close them sooner).
IDLE_TIMEOUT = 3600.0
# Matches the kernel's somaxconn ceiling on common distributions (4096).
BACKLOG = 4096


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def make_app(framework: str) -> Any:
    web = importlib.import_module(f"{framework}.web")
    websocket = importlib.import_module(f"{framework}.websocket")
    sockets: set[Any] = set()

    class Hello(web.RequestHandler):  # type: ignore[name-defined,misc]
        def get(self) -> None:
            self.set_header("Content-Type", "text/plain")
            self.write(b"ok")

    class Rss(web.RequestHandler):  # type: ignore[name-defined,misc]
        def get(self) -> None:
            # Collect first, so the number is what live objects hold.
            gc.collect()
            self.write({"rss": _rss_bytes(), "websockets": len(sockets)})

    class Push(web.RequestHandler):  # type: ignore[name-defined,misc]
        def post(self) -> None:
            message = self.request.body.decode()
            started = time.perf_counter()
            for socket in sockets:
                socket.write_message(message)
            loop_s = time.perf_counter() - started
            self.write({"sent": len(sockets), "loop_s": loop_s})

    class Idle(websocket.WebSocketHandler):  # type: ignore[name-defined,misc]
        def open(self) -> None:
            sockets.add(self)

        def on_message(self, message: Any) -> None:
            pass

        def on_close(self) -> None:
            sockets.discard(self)

    return web.Application([(r"/", Hello), (r"/rss", Rss), (r"/push", Push), (r"/ws", Idle)])


def main() -> None:
    parser = arg_parser(__doc__.splitlines()[0], static=False)
    parser.add_argument("--framework", choices=("squall", "tornado"), default="squall")
    args = parser.parse_args()
    if args.framework == "squall":
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    make_app(args.framework).listen(
        args.port, "127.0.0.1", backlog=BACKLOG, idle_connection_timeout=IDLE_TIMEOUT
    )
    print(json.dumps({"listening": args.port}), flush=True)
    importlib.import_module(f"{args.framework}.ioloop").IOLoop.current().start()


if __name__ == "__main__":
    main()
