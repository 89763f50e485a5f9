"""A Django site and native squall handlers on one port.

    python examples/wsgi_django/server.py [--port=8888] [--address=127.0.0.1]

``/native`` is a squall handler, ``/static/`` is served by squall's
StaticFileHandler, and everything else goes to Django through a
`squall.wsgi.WSGIContainer`. Django's views run on a thread pool, so the
slow one (``/slow``, one second) does not hold up the others.
"""

import asyncio
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Django finds its settings module, djsite.settings, beside this file.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djsite.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

import squall.web  # noqa: E402
from squall.httpserver import HTTPServer  # noqa: E402
from squall.netutil import bind_sockets  # noqa: E402
from squall.options import define, options, parse_command_line  # noqa: E402
from squall.wsgi import WSGIContainer  # noqa: E402

define("port", default=8888, help="run on the given port (0: any free port)", type=int)
define("address", default="127.0.0.1", help="listen on this address")


class NativeHandler(squall.web.RequestHandler):
    def get(self) -> None:
        self.write({"served_by": "squall"})


def make_app() -> squall.web.Application:
    django = WSGIContainer(get_wsgi_application())
    return squall.web.Application(
        [
            (r"/native", NativeHandler),
            (r"/static/(.*)", squall.web.StaticFileHandler, {"path": str(HERE / "static")}),
            (r".*", squall.web.FallbackHandler, {"fallback": django}),
        ]
    )


async def serve() -> None:
    server = HTTPServer(make_app())
    sockets = bind_sockets(options.port, options.address)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    print("listening on http://%s:%d/" % (options.address, port), flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parse_command_line()
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
