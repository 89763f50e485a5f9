"""The benchmark endpoints as an aiohttp.web application on uvloop."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jinja2  # noqa: E402
import uvloop  # noqa: E402
from aiohttp import WSMsgType, web  # noqa: E402

from _common import ITEMS, JSON_MESSAGE, PLAINTEXT, TEMPLATES_DIR, TITLE, arg_parser  # noqa: E402

_template = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), autoescape=True
).get_template("page.jinja.html")


async def plaintext(request: web.Request) -> web.StreamResponse:
    return web.Response(body=PLAINTEXT, content_type="text/plain")


async def json_message(request: web.Request) -> web.StreamResponse:
    return web.json_response(JSON_MESSAGE)


async def user(request: web.Request) -> web.StreamResponse:
    user_id = int(request.match_info["user_id"])
    name = request.query["name"]
    return web.Response(text=f"user {user_id} name {name}")


async def echo(request: web.Request) -> web.StreamResponse:
    return web.Response(body=await request.read(), content_type="application/octet-stream")


async def page(request: web.Request) -> web.StreamResponse:
    return web.Response(text=_template.render(title=TITLE, items=ITEMS), content_type="text/html")


async def echo_socket(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


async def serve(port: int, static_dir: str) -> None:
    app = web.Application()
    app.router.add_get("/plaintext", plaintext)
    app.router.add_get("/json", json_message)
    app.router.add_get(r"/user/{user_id:\d+}", user)
    app.router.add_post("/echo", echo)
    app.router.add_get("/template", page)
    app.router.add_get("/ws", echo_socket)
    app.router.add_static("/static/", static_dir)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def main() -> None:
    args = arg_parser(__doc__.splitlines()[0]).parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.port, args.static_dir))


if __name__ == "__main__":
    main()
