"""A browser chat room on squall.realtime: messages arrive by long polling or
by WebSocket (the page has a toggle), and are kept in memory, or in Redis
with ``--redis`` so that several server processes share one room.

    python examples/chat/app.py [--port=8888] [--address=127.0.0.1] [--redis=redis://127.0.0.1:6379/0]

then open http://127.0.0.1:8888/ in two browser windows. Stop it with Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any, Optional

from squall import realtime, web
from squall.options import Error as OptionsError
from squall.options import define, options, parse_command_line
from squall.websocket import WebSocketHandler

define("port", default=8888, help="run on the given port", type=int)
define("address", default="127.0.0.1", help="listen on this address")
define("redis", default=None, help="Redis URL for the messages (default: in memory)", type=str)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOM = "chat"
# Room messages are short: a line of chat, like IRC's 512-byte lines with
# room to spare for UTF-8; names fit a message header.
MAX_TEXT = 2000
MAX_NAME = 40
# Messages replayed to a newcomer: the room's recent scrollback.
HISTORY = 200


def chat_message(payload: Any, via: str) -> dict[str, Any]:
    """The stored form of a message a browser sent, or HTTPError 400."""
    if not isinstance(payload, dict):
        raise web.HTTPError(400, "message must be a JSON object")
    name = payload.get("name")
    text = payload.get("text")
    if not isinstance(name, str) or not 0 < len(name.strip()) <= MAX_NAME:
        raise web.HTTPError(400, "name must be 1 to %d characters" % MAX_NAME)
    if not isinstance(text, str) or not 0 < len(text.strip()) <= MAX_TEXT:
        raise web.HTTPError(400, "text must be 1 to %d characters" % MAX_TEXT)
    return {"name": name.strip(), "text": text.strip(), "time": int(time.time() * 1000), "via": via}


class MainHandler(web.RequestHandler):
    def get(self) -> None:
        self.render("index.html", transport=self.get_query_argument("transport", "ws"))


class NewMessageHandler(web.RequestHandler):
    """POST a message (the long-polling client's way of sending)."""

    def initialize(self, pubsub: realtime.PubSub) -> None:  # type: ignore[override]
        self.pubsub = pubsub

    async def post(self) -> None:
        try:
            payload = json.loads(self.request.body)
        except ValueError:
            raise web.HTTPError(400, "body must be JSON") from None
        msg_id = await self.pubsub.publish(ROOM, chat_message(payload, "poll"))
        self.write({"id": msg_id})


class UpdatesHandler(realtime.LongPollHandler):
    """GET /a/message/updates?cursor=N: messages after N, long-polled."""


class ChatSocket(WebSocketHandler):
    """The WebSocket client's connection: receives the room through the
    hub, sends messages as JSON text frames."""

    def initialize(self, pubsub: realtime.PubSub, hub: realtime.WebSocketHub) -> None:  # type: ignore[override]
        self.pubsub = pubsub
        self.hub = hub

    async def open(self) -> None:
        cursor = self.get_query_argument("cursor", None)
        after: Optional[int] = int(cursor) if cursor is not None and cursor.isdigit() else None
        await self.hub.join(self, ROOM, after=after)

    async def on_message(self, message: Any) -> None:
        try:
            data = chat_message(json.loads(message), "ws")
        except (ValueError, web.HTTPError):
            self.close(1007, "bad message")
            return
        await self.pubsub.publish(ROOM, data)

    def on_close(self) -> None:
        self.hub.leave(self)


def make_app(pubsub: realtime.PubSub) -> web.Application:
    hub = realtime.WebSocketHub(pubsub)
    return web.Application(
        [
            (r"/", MainHandler),
            (r"/a/message/new", NewMessageHandler, dict(pubsub=pubsub)),
            (r"/a/message/updates", UpdatesHandler, dict(pubsub=pubsub, topic=ROOM)),
            (r"/ws", ChatSocket, dict(pubsub=pubsub, hub=hub)),
        ],
        template_path=os.path.join(HERE, "templates"),
        static_path=os.path.join(HERE, "static"),
        cross_origin_protection=True,
    )


async def main() -> None:
    try:
        parse_command_line()
    except OptionsError as e:
        # A mistyped option is one line naming it, not a traceback.
        raise SystemExit("chat: %s" % e) from None
    try:
        pubsub = await realtime.connect(options.redis, history_size=HISTORY)
    except (ValueError, ConnectionError) as e:
        # A bad --redis URL stops the program here, with the reason.
        raise SystemExit("chat: %s" % e) from None
    app = make_app(pubsub)
    app.listen(options.port, options.address)
    where = "Redis at %s" % options.redis if options.redis else "memory"
    print("chat on http://%s:%d/ (messages in %s)" % (options.address, options.port, where), flush=True)
    stop = asyncio.Event()
    try:
        # SIGTERM (a service manager, a test) ends the program cleanly.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    except NotImplementedError:
        pass
    try:
        await stop.wait()
    finally:
        await pubsub.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
