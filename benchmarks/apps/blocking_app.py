"""The server side of ``benchmarks/latency_blocking.py``: one slow endpoint, one trivial one.

* ``GET /slow``: 50 ms of blocking work (``time.sleep``, standing in for a
  blocking database or HTTP client call), either handed to the default
  thread pool with ``IOLoop.run_in_executor`` (``--mode executor``) or done
  right on the event loop (``--mode inline``, the classic mistake);
* ``GET /fast``: ``ok`` at once.

The same code runs on squall or Tornado (``--framework``).
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import arg_parser  # noqa: E402

# The blocking work: 50 ms per slow request.
BLOCKING_SECONDS = 0.050


def _blocking_work() -> bytes:
    time.sleep(BLOCKING_SECONDS)
    return b"slow"


def make_app(framework: str, mode: str) -> Any:
    web = importlib.import_module(f"{framework}.web")
    ioloop = importlib.import_module(f"{framework}.ioloop")

    class SlowInExecutor(web.RequestHandler):  # type: ignore[name-defined,misc]
        async def get(self) -> None:
            self.write(await ioloop.IOLoop.current().run_in_executor(None, _blocking_work))

    class SlowInline(web.RequestHandler):  # type: ignore[name-defined,misc]
        def get(self) -> None:
            self.write(_blocking_work())

    class Fast(web.RequestHandler):  # type: ignore[name-defined,misc]
        def get(self) -> None:
            self.write(b"ok")

    slow = SlowInExecutor if mode == "executor" else SlowInline
    return web.Application([(r"/slow", slow), (r"/fast", Fast)])


def main() -> None:
    parser = arg_parser(__doc__.splitlines()[0], static=False)
    parser.add_argument("--framework", choices=("squall", "tornado"), default="squall")
    parser.add_argument("--mode", choices=("executor", "inline"), default="executor")
    args = parser.parse_args()
    if args.framework == "squall":
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    make_app(args.framework, args.mode).listen(args.port, "127.0.0.1")
    importlib.import_module(f"{args.framework}.ioloop").IOLoop.current().start()


if __name__ == "__main__":
    main()
