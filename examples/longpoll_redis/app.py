"""A per-user long-polling message service on Redis, rebuilt on
squall.realtime from a 2013 Tornado program (``@asynchronous`` handlers
that polled a Redis list with ``add_timeout`` back-off).

    python examples/longpoll_redis/app.py --redis=redis://127.0.0.1:6379/0 [--port=8888] [--timeout=30]

Run as many processes as you like (on several ports or machines, behind a
load balancer): they share the queues through Redis.

``GET /?uid=U&sign=S[&cursor=N][&jsonCallback=cb]``
    Waits up to ``--timeout`` seconds for messages to user U, and answers
    with a JSON array of ``{"id": ..., "data": ...}`` (``[]`` on timeout),
    wrapped as ``cb([...]);`` with ``jsonCallback``. ``sign`` is
    ``sign(uid, salt)`` (``--sign_salt``); a missing or wrong one is a 404,
    as in the original.
    The client sends the last id it received as ``cursor``, and then misses
    nothing between two polls. A client without a cursor is served like the
    original's queue: the server remembers, per user, the last id it
    delivered without one.

``POST /push?uid=U&sign=S`` with a JSON body
    Queues the body for user U; answers ``{"id": N}``.

Where the original pushed with ``LPUSH Q/MSG<uid>`` from other programs,
they POST to ``/push`` (or, in Python, call ``RedisPubSub.publish`` on the
topic ``Q/MSG<uid>`` with the same ``--redis`` and prefix).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
from typing import Any, Optional

from squall import realtime, web
from squall.options import define, options, parse_command_line

define("port", default=8888, help="run on the given port", type=int)
define("address", default="127.0.0.1", help="listen on this address")
define("redis", default="redis://127.0.0.1:6379/0", help="Redis URL", type=str)
define("timeout", default=realtime.LONG_POLL_TIMEOUT, help="seconds a poll waits", type=float)
define("sign_salt", default="salt", help="secret that signs user ids", type=str)

TOPIC = "Q/MSG%s"
# Per-user cursor of the clients that send none, in one Redis hash.
CURSORS_KEY = "squall:longpoll:cursors"
# User ids as the original's clients send them: short tokens.
MAX_UID = 64


def sign(uid: str, salt: str) -> str:
    """The ``sign`` argument for ``uid``: an HMAC-SHA256 of it, hex."""
    return hmac.new(salt.encode(), uid.encode(), hashlib.sha256).hexdigest()


class _UserHandler(web.RequestHandler):
    def checked_uid(self) -> str:
        uid = self.get_query_argument("uid", None)
        signature = self.get_query_argument("sign", None)
        salt = self.settings["sign_salt"]
        if (
            uid is None or signature is None or not 0 < len(uid) <= MAX_UID
            or not hmac.compare_digest(signature, sign(uid, salt))
        ):
            raise web.HTTPError(404)
        return uid


class LongPolling(realtime.LongPollHandler, _UserHandler):
    jsonp_argument = "jsonCallback"

    def initialize(self, pubsub: realtime.PubSub, redis: Any, timeout: float) -> None:  # type: ignore[override]
        super().initialize(pubsub)
        self.redis = redis
        self.timeout = timeout
        self.remembered = False

    def get_topic(self, *args: Any, **kwargs: Any) -> str:
        self.uid = self.checked_uid()
        return TOPIC % self.uid

    async def prepare(self) -> None:
        # Clients without a cursor continue where the last one left off.
        if self.get_query_argument("cursor", None) is None:
            self.remembered = True
            stored = await self.redis.hget(CURSORS_KEY, self.checked_uid())
            self.stored_cursor = int(stored) if stored is not None else 0

    def get_cursor(self) -> int:
        if self.remembered:
            return self.stored_cursor
        return super().get_cursor()

    async def send_messages(self, messages: list[realtime.Message], callback: Optional[str]) -> None:  # type: ignore[override]
        if self.remembered and messages:
            # Stored before answering: a client that polls again at once
            # must not be sent the same messages.
            await self.redis.hset(CURSORS_KEY, self.uid, messages[-1].id)
        super().send_messages(messages, callback)


class Push(_UserHandler):
    def initialize(self, pubsub: realtime.PubSub) -> None:  # type: ignore[override]
        self.pubsub = pubsub

    async def post(self) -> None:
        uid = self.checked_uid()
        try:
            data = json.loads(self.request.body)
        except ValueError:
            raise web.HTTPError(400, "body must be JSON") from None
        self.write({"id": await self.pubsub.publish(TOPIC % uid, data)})


def make_app(pubsub: realtime.PubSub, redis: Any, timeout: float, sign_salt: str) -> web.Application:
    return web.Application(
        [
            (r"/", LongPolling, dict(pubsub=pubsub, redis=redis, timeout=timeout)),
            (r"/push", Push, dict(pubsub=pubsub)),
        ],
        sign_salt=sign_salt,
    )


async def main() -> None:
    import redis.asyncio

    parse_command_line()
    try:
        pubsub = await realtime.connect(options.redis)
    except (ValueError, ConnectionError) as e:
        # An unreachable or malformed --redis stops the program here.
        raise SystemExit("longpoll_redis: %s" % e) from None
    client = redis.asyncio.Redis.from_url(options.redis)
    app = make_app(pubsub, client, options.timeout, options.sign_salt)
    app.listen(options.port, options.address)
    print("long polling on http://%s:%d/ (Redis at %s)" % (options.address, options.port, options.redis), flush=True)
    stop = asyncio.Event()
    try:
        # SIGTERM (a service manager, a test) ends the program cleanly.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    except NotImplementedError:
        pass
    try:
        await stop.wait()
    finally:
        await client.aclose()
        await pubsub.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
