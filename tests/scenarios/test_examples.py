"""Scenario: the real-time examples, run as their own processes.

* examples/chat: messages posted over HTTP or sent over a WebSocket reach
  long-polling and WebSocket clients; input is checked; with ``--redis``
  two server processes share one room; a bad ``--redis`` stops start-up.
* examples/longpoll_redis: the 2013 per-user long-polling service on
  squall.realtime and a real redis-server, two processes sharing the
  queues, JSONP ``jsonCallback``, signatures, cursors and timeouts.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from squall.websocket import websocket_connect

ROOT = Path(__file__).resolve().parents[2]
CHAT = ROOT / "examples" / "chat" / "app.py"
LONGPOLL = ROOT / "examples" / "longpoll_redis" / "app.py"
# Bounds for a loaded machine; waits end as soon as their condition holds.
STARTUP_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """An example started as ``python app.py --port=N ...``."""

    def __init__(self, script: Path, *args: str) -> None:
        self.port = _free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "--port=%d" % self.port, "--logging=warning", *args],
            env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )

    def wait_up(self) -> "Server":
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("example did not start:\n" + self.stop())
                time.sleep(0.05)

    def stop(self) -> str:
        """SIGTERM, which the examples handle by closing cleanly; returns
        the output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out.decode(errors="replace")


@pytest.fixture
def start() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start_server(script: Path, *args: str) -> Server:
        server = Server(script, *args)
        servers.append(server)
        return server.wait_up()

    yield start_server
    for server in servers:
        server.stop()
        assert server.proc.returncode == 0, "an example did not stop cleanly"


def request(
    url: str, body: Optional[bytes] = None, headers: Optional[dict[str, str]] = None
) -> tuple[int, bytes, Any]:
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read(), e.headers


def post_json(url: str, value: Any, headers: Optional[dict[str, str]] = None) -> tuple[int, bytes, Any]:
    return request(url, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})})


# -- chat ----------------------------------------------------------------------


def test_chat_poll_and_websocket_clients_share_the_room(start: Callable[..., Server]) -> None:
    server = start(CHAT)
    status, page, _ = request(server.url + "/")
    assert status == 200 and b'id="transport-ws"' in page and b'id="name-input"' in page
    assert request(server.url + "/static/chat.js")[0] == 200
    # Input is checked; a cross-site form post is refused.
    assert post_json(server.url + "/a/message/new", {"name": "", "text": "x"})[0] == 400
    assert post_json(server.url + "/a/message/new", {"name": "a", "text": "y" * 2001})[0] == 400
    assert request(server.url + "/a/message/new", b"not json")[0] == 400
    assert post_json(server.url + "/a/message/new", {"name": "a", "text": "b"},
                     {"Origin": "http://evil.example"})[0] == 403

    async def main() -> None:
        # A WebSocket client joins first; a poller waits with cursor 0.
        ws = await websocket_connect("ws://127.0.0.1:%d/ws" % server.port)
        poll = asyncio.ensure_future(asyncio.to_thread(request, server.url + "/a/message/updates?cursor=0"))
        status, body, _ = await asyncio.to_thread(
            post_json, server.url + "/a/message/new", {"name": " Ann ", "text": "hi all"}
        )
        assert (status, json.loads(body)) == (200, {"id": 1})
        pushed = json.loads(await ws.read_message())  # type: ignore[arg-type]
        assert pushed["id"] == 1 and pushed["topic"] == "chat"
        assert {k: pushed["data"][k] for k in ("name", "text", "via")} == {"name": "Ann", "text": "hi all", "via": "poll"}
        polled = json.loads((await poll)[1])
        assert [m["data"]["text"] for m in polled] == ["hi all"]
        # Sent over the WebSocket: the poller (cursor 1) and the socket get it.
        poll = asyncio.ensure_future(asyncio.to_thread(request, server.url + "/a/message/updates?cursor=1"))
        await ws.write_message(json.dumps({"name": "Bob", "text": "hello"}))
        assert json.loads(await ws.read_message())["data"]["via"] == "ws"  # type: ignore[arg-type]
        assert [(m["id"], m["data"]["name"]) for m in json.loads((await poll)[1])] == [(2, "Bob")]
        # A resuming socket gets what it missed; a bad frame closes with 1007.
        late = await websocket_connect("ws://127.0.0.1:%d/ws?cursor=1" % server.port)
        assert json.loads(await late.read_message())["id"] == 2  # type: ignore[arg-type]
        await late.write_message("{oops")
        assert await late.read_message() is None and late.close_code == 1007
        ws.close()
        assert await ws.read_message() is None

    asyncio.run(main())


def test_chat_processes_share_a_room_through_redis(
    start: Callable[..., Server], redis_server: tuple[str, int]
) -> None:
    import redis

    url = "redis://%s:%d/0" % redis_server
    redis.Redis(*redis_server).delete("squall:rt:chat")
    one = start(CHAT, "--redis=" + url)
    two = start(CHAT, "--redis=" + url)
    assert post_json(one.url + "/a/message/new", {"name": "Ann", "text": "from one"})[0] == 200
    status, body, _ = request(two.url + "/a/message/updates?cursor=0")
    assert [m["data"]["text"] for m in json.loads(body)] == ["from one"]


def test_chat_refuses_to_start_with_a_bad_redis_url() -> None:
    for bad, reason in (
        ("redis://127.0.0.1:%d/0" % _free_port(), b"chat: cannot reach Redis at redis://127.0.0.1:"),
        ("mysql://x", b"chat: unsupported pubsub URL 'mysql://x'"),
        ("redis://127.0.0.1:port/0", b"chat: invalid Redis URL 'redis://127.0.0.1:port/0'"),
    ):
        server = Server(CHAT, "--redis=" + bad)
        try:
            assert server.proc.wait(timeout=STARTUP_S) == 1
        finally:
            out = server.stop().encode()
        assert out.startswith(reason) and b"Traceback" not in out


def test_chat_reports_a_bad_option_in_one_line() -> None:
    # (An unknown option also prints the usage text first, as Tornado does.)
    for args, named in (
        (("--port", "8899"), b"port"),
        (("--port=eighty",), b"eighty"),
        (("--no-such-option=1",), b"no"),
    ):
        server = Server(CHAT, *args)
        try:
            assert server.proc.wait(timeout=STARTUP_S) == 1
        finally:
            out = server.stop().encode()
        last = out.strip().splitlines()[-1]
        assert last.startswith(b"chat: ") and named in last and b"Traceback" not in out, out


# -- long polling on Redis ---------------------------------------------------------


def _sign(uid: str) -> str:
    return hmac.new(b"test-salt", uid.encode(), hashlib.sha256).hexdigest()


def test_longpoll_redis_service(start: Callable[..., Server], redis_server: tuple[str, int]) -> None:
    import redis

    url = "redis://%s:%d/0" % redis_server
    client = redis.Redis(*redis_server)
    for uid in ("42", "7", "9"):
        client.delete("squall:rt:Q/MSG" + uid)
    client.hdel("squall:longpoll:cursors", "42", "7", "9")
    client.close()
    # Two processes behind one load balancer, as the original was deployed.
    a = start(LONGPOLL, "--redis=" + url, "--timeout=0.5", "--sign_salt=test-salt")
    b = start(LONGPOLL, "--redis=" + url, "--timeout=0.5", "--sign_salt=test-salt")

    def poll(server: Server, uid: str, extra: str = "") -> tuple[int, bytes, Any]:
        return request("%s/?uid=%s&sign=%s%s" % (server.url, uid, _sign(uid), extra))

    def push(server: Server, uid: str, value: Any) -> int:
        status, body, _ = post_json("%s/push?uid=%s&sign=%s" % (server.url, uid, _sign(uid)), value)
        assert status == 200
        return int(json.loads(body)["id"])

    # Unsigned or wrongly signed: 404, as the original answered.
    assert request(a.url + "/?uid=42")[0] == 404
    assert request(a.url + "/?uid=42&sign=" + _sign("43"))[0] == 404
    assert post_json(a.url + "/push?uid=42&sign=bad", 1)[0] == 404
    # A message already waiting, delivered through the JSONP callback.
    assert push(a, "42", {"n": 1}) == 1
    status, body, headers = poll(b, "42", "&jsonCallback=cb")
    assert (status, body) == (200, b'cb([{"id":1,"data":{"n":1}}]);')
    assert headers["Content-Type"].startswith("application/javascript")
    # Nothing waiting: [] after the timeout (the original's stop code).
    started = time.monotonic()
    assert poll(a, "42")[1] == b"[]"
    assert time.monotonic() - started >= 0.4

    async def held_then_answered() -> None:
        waiting = asyncio.ensure_future(asyncio.to_thread(poll, a, "7", "&cursor=0"))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(push, b, "7", "hello")
        assert json.loads((await waiting)[1]) == [{"id": 1, "data": "hello"}]

    asyncio.run(held_then_answered())
    # With cursors nothing is lost between polls, whichever process answers.
    for n in range(3):
        push(b, "9", n)
    assert [m["id"] for m in json.loads(poll(a, "9", "&cursor=1")[1])] == [2, 3]
    # Without one, the service remembers what it delivered: a queue.
    assert [m["data"] for m in json.loads(poll(a, "9")[1])] == [0, 1, 2]
    push(a, "9", 3)
    assert [m["data"] for m in json.loads(poll(b, "9")[1])] == [3]
    # Bad input.
    assert poll(a, "9", "&jsonCallback=alert(1)//")[0] == 400
    assert poll(a, "9", "&cursor=x")[0] == 400
