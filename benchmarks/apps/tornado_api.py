"""The benchmark endpoints as one Tornado-API application, run on squall or on Tornado.

The handler code is the same for both: only the package it imports differs
(``--framework squall`` or ``--framework tornado``), which is the promise
squall makes to Tornado users. The event loop:

* squall picks uvloop when installed; ``SQUALL_LOOP=asyncio`` forces the
  stdlib loop (the suite's ``squall-asyncio`` row);
* Tornado runs on the stdlib asyncio loop as it does by default, or on
  uvloop with ``--uvloop`` (the suite's ``tornado-uvloop`` row).
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ITEMS, JSON_MESSAGE, PLAINTEXT, TEMPLATES_DIR, TITLE, arg_parser  # noqa: E402


def make_app(framework: str, static_dir: str) -> Any:
    """The application, built from ``framework``'s ``web`` and ``websocket`` modules."""
    web = importlib.import_module(f"{framework}.web")
    websocket = importlib.import_module(f"{framework}.websocket")

    class Plaintext(web.RequestHandler):  # type: ignore[name-defined,misc]
        def get(self) -> None:
            self.set_header("Content-Type", "text/plain")
            self.write(PLAINTEXT)

    class Json(web.RequestHandler):  # type: ignore[name-defined,misc]
        def get(self) -> None:
            self.write(JSON_MESSAGE)

    class User(web.RequestHandler):  # type: ignore[name-defined,misc]
        def get(self, user_id: str) -> None:
            name = self.get_query_argument("name")
            self.set_header("Content-Type", "text/plain")
            self.write(f"user {int(user_id)} name {name}")

    class Echo(web.RequestHandler):  # type: ignore[name-defined,misc]
        def post(self) -> None:
            self.set_header("Content-Type", "application/octet-stream")
            self.write(self.request.body)

    class Page(web.RequestHandler):  # type: ignore[name-defined,misc]
        def get(self) -> None:
            self.render("page.html", title=TITLE, items=ITEMS)

    class EchoSocket(websocket.WebSocketHandler):  # type: ignore[name-defined,misc]
        def on_message(self, message: Any) -> None:
            self.write_message(message, binary=isinstance(message, bytes))

    return web.Application(
        [
            (r"/plaintext", Plaintext),
            (r"/json", Json),
            (r"/user/([0-9]+)", User),
            (r"/echo", Echo),
            (r"/template", Page),
            (r"/ws", EchoSocket),
        ],
        template_path=str(TEMPLATES_DIR),
        static_path=static_dir,
    )


def main() -> None:
    parser = arg_parser(__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=("squall", "tornado"), default="squall")
    parser.add_argument("--uvloop", action="store_true", help="run Tornado on uvloop")
    args = parser.parse_args()
    if args.framework == "squall":
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    app = make_app(args.framework, args.static_dir)
    if args.uvloop:
        import uvloop

        async def serve() -> None:
            app.listen(args.port, "127.0.0.1")
            await asyncio.Event().wait()

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve())
        return
    app.listen(args.port, "127.0.0.1")
    importlib.import_module(f"{args.framework}.ioloop").IOLoop.current().start()


if __name__ == "__main__":
    main()
