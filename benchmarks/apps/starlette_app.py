"""The benchmark endpoints as a Starlette application on uvicorn (httptools + uvloop)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvicorn  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, PlainTextResponse, Response  # noqa: E402
from starlette.routing import Mount, Route, WebSocketRoute  # noqa: E402
from starlette.staticfiles import StaticFiles  # noqa: E402
from starlette.templating import Jinja2Templates  # noqa: E402
from starlette.websockets import WebSocket, WebSocketDisconnect  # noqa: E402

from _common import ITEMS, JSON_MESSAGE, PLAINTEXT, TEMPLATES_DIR, TITLE, arg_parser  # noqa: E402

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))


async def plaintext(request: Request) -> Response:
    return PlainTextResponse(PLAINTEXT)


async def json_message(request: Request) -> Response:
    return JSONResponse(JSON_MESSAGE)


async def user(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    name = request.query_params["name"]
    return PlainTextResponse(f"user {user_id} name {name}")


async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")


async def page(request: Request) -> Response:
    return templates.TemplateResponse(request, "page.jinja.html", {"title": TITLE, "items": ITEMS})


async def echo_socket(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


def main() -> None:
    args = arg_parser(__doc__.splitlines()[0]).parse_args()
    app = Starlette(
        routes=[
            Route("/plaintext", plaintext),
            Route("/json", json_message),
            Route("/user/{user_id:int}", user),
            Route("/echo", echo, methods=["POST"]),
            Route("/template", page),
            WebSocketRoute("/ws", echo_socket),
            Mount("/static", StaticFiles(directory=args.static_dir)),
        ]
    )
    uvicorn.run(
        app,
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
