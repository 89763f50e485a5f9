"""The seed's Tornado + Celery application, on squall.

A slow "MySQL query" is handed to a Celery worker and awaited without
blocking the event loop, so ``/i_want_you_now`` keeps answering at once
while queries run. ``/local_query/N`` does the same query on squall's own
thread pool, for deployments without Celery. Run it with a Celery worker
(see tasks.py) and a Redis server::

    python server.py --port=8000
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import tasks  # noqa: E402

from squall import offload, web  # noqa: E402
from squall.httpserver import HTTPServer  # noqa: E402
from squall.netutil import bind_sockets  # noqa: E402
from squall.options import define, options, parse_command_line  # noqa: E402

define("port", default=8000, help="run on the given port (0: any free port)", type=int)
define("address", default="127.0.0.1", help="listen on this address")

# Seconds a request waits for its query before answering 504.
QUERY_TIMEOUT = float(os.environ.get("QUERY_TIMEOUT", "30"))


class CeleryQueryHandler(web.RequestHandler):
    async def get(self, flag: str) -> None:
        try:
            rows = await offload.celery(tasks.query_users, int(flag), timeout=QUERY_TIMEOUT)
        except asyncio.TimeoutError:
            raise web.HTTPError(504, "query for flag %s timed out", flag) from None
        self.write({"rows": rows, "via": "celery"})


class LocalQueryHandler(offload.OffloadMixin, web.RequestHandler):
    async def get(self, flag: str) -> None:
        # offload.PoolFull (a 503) when too many queries are already queued;
        # dropped from the queue if the client goes away.
        rows = await self.offload(tasks.query_users_sync, int(flag), timeout=QUERY_TIMEOUT)
        self.write({"rows": rows, "via": "thread pool"})


class NowHandler(web.RequestHandler):
    def get(self) -> None:
        self.write("i want you, right now!")


def make_app() -> web.Application:
    return web.Application([
        (r"/mysql_query/(\d+)", CeleryQueryHandler),
        (r"/local_query/(\d+)", LocalQueryHandler),
        (r"/i_want_you_now", NowHandler),
    ])


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
