"""The benchmark endpoints as one hand-written ASGI callable on uvicorn (httptools + uvloop).

No framework: the app dispatches on the path itself, so this row shows what
uvicorn costs and nothing else. Templates are rendered with Jinja2, files
are read on every request as a minimal app would.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jinja2  # noqa: E402
import uvicorn  # noqa: E402

from _common import ITEMS, JSON_MESSAGE, PLAINTEXT, TEMPLATES_DIR, TITLE, arg_parser  # noqa: E402

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_TEXT = b"text/plain; charset=utf-8"
_template = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), autoescape=True
).get_template("page.jinja.html")


def make_app(static_dir: str) -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    root = os.path.realpath(static_dir)

    async def respond(send: Send, status: int, content_type: bytes, body: bytes) -> None:
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def websocket(receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "websocket":
            if path == "/ws":
                await websocket(receive, send)
            return
        if scope["type"] != "http":
            return
        if path == "/plaintext":
            await respond(send, 200, _TEXT, PLAINTEXT)
        elif path == "/json":
            await respond(send, 200, b"application/json", json.dumps(JSON_MESSAGE).encode())
        elif path.startswith("/user/") and path[6:].isdigit():
            name = parse_qs(scope["query_string"].decode())["name"][0]
            await respond(send, 200, _TEXT, f"user {int(path[6:])} name {name}".encode())
        elif path == "/echo" and scope["method"] == "POST":
            chunks = []
            more = True
            while more:
                message = await receive()
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            await respond(send, 200, b"application/octet-stream", b"".join(chunks))
        elif path == "/template":
            html = _template.render(title=TITLE, items=ITEMS).encode()
            await respond(send, 200, b"text/html; charset=utf-8", html)
        elif path.startswith("/static/"):
            full = os.path.realpath(os.path.join(root, path[8:]))
            if not full.startswith(root + os.sep) or not os.path.isfile(full):
                await respond(send, 404, _TEXT, b"not found")
                return
            with open(full, "rb") as f:
                await respond(send, 200, b"application/octet-stream", f.read())
        else:
            await respond(send, 404, _TEXT, b"not found")

    return app


def main() -> None:
    args = arg_parser(__doc__.splitlines()[0]).parse_args()
    uvicorn.run(
        make_app(args.static_dir),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
