"""Seed scenarios for squall.web: Tornado programs from blog posts, with
``tornado`` replaced by ``squall``, run for real on loopback ports.

(a) the hello-world app, started with ``IOLoop.instance().start()`` in its own
    process (and the demo in examples/hello);
(b) a long-polling handler from 2013: ``@web.asynchronous``, ``add_timeout``
    polling with back-off, a JSONP callback, messages read with redis-py from a
    real redis-server;
(c) the "ACK" handler: a client that gives up on a slow request and retries
    must not get its job processed twice; ``on_connection_close`` stops it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

import squall.ioloop
from squall import web

from test_web import fetch, serving

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"

# -- (a) hello world in a subprocess ----------------------------------------------

HELLO_SEED = '''\
import squall.ioloop
import squall.web

class MainHandler(squall.web.RequestHandler):
    def get(self):
        self.write("Hello, world")

application = squall.web.Application([
    (r"/", MainHandler),
])

if __name__ == "__main__":
    application.listen({port}, "127.0.0.1")
    squall.ioloop.IOLoop.instance().start()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_when_up(port: int, proc: subprocess.Popen[Any], deadline_s: float = 30) -> bytes:
    """GET / once the server accepts connections (bounded wait)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=5) as response:
                return response.read()
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _run_server_process(args: list[str], port: int) -> bytes:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        return _get_when_up(port, proc)
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_seed_hello_world_process(tmp_path: Path) -> None:
    port = _free_port()
    app_file = tmp_path / "hello.py"
    app_file.write_text(HELLO_SEED.format(port=port))
    assert _run_server_process([sys.executable, str(app_file)], port) == b"Hello, world"


def test_demo_app_with_port_option() -> None:
    port = _free_port()
    demo = [sys.executable, str(ROOT / "examples" / "hello" / "app.py"), "--port=%d" % port]
    assert _run_server_process(demo, port) == b"Hello, world"


# -- (b) long polling with @asynchronous, add_timeout and redis ----------------------


def make_long_polling(redis_host: str, redis_port: int, min_wait: float, max_wait: float) -> type:
    """The seed's handler, as published, with four changes: the Redis
    address (a test server), the wait times (seconds, not minutes),
    ``self.uid``, which the published code reads but never sets, and the
    closed-client check: the seed asks ``self.request.connection.stream``,
    which squall's fast server connection does not have (it has no IOStream);
    the handler learns of the close from ``on_connection_close`` instead."""

    class LongPolling(web.RequestHandler):

        minWaitTime = min_wait
        maxWaitTime = max_wait

        RedisHost = redis_host
        RedisPrefix = "Q/MSG%s"

        SignSalt = "salt"

        StopCode = "{'stop':1}"

        @web.asynchronous
        def get(self):
            sUid = self.get_argument("uid", None)
            sSign = self.get_argument("sign", None)
            sJsonCall = self.get_argument("jsonCallback", None)  # noqa: F841

            if (sUid is None or sSign is None
                    or self.checkSign(sUid, sSign) == False):  # noqa: E712
                raise web.HTTPError(404)
                self.clear()

            else:
                self.uid = sUid
                self.doLongPolling(callback=self.onWaitting)

        def checkSign(self, sUid, sSign):
            return True

        client_gone = False

        def on_connection_close(self):
            self.client_gone = True

        def doLongPolling(self, callback):
            # Check if the client close the connection
            if self.client_gone:
                self.clear()
                return

            sKey = self.RedisPrefix % self.uid
            res = redis.Redis(self.RedisHost, port=redis_port)
            sMessage = res.rpop(sKey)
            res.close()
            del res  # close the redis at 1st time

            callback(sMessage)

        def onWaitting(self, sMessage):
            if (sMessage is not None):
                self.onRespones(sMessage)
            else:
                iNextPollingTime = time.time() + self.minWaitTime
                if self.minWaitTime < self.maxWaitTime:
                    self.minWaitTime *= 2
                    # Can't useing time.sleep for no-bloking mode
                    squall.ioloop.IOLoop.instance().add_timeout(
                        iNextPollingTime,
                        lambda: self.doLongPolling(callback=self.onWaitting)
                    )
                else:
                    self.onRespones(self.StopCode)

        def onRespones(self, sMessage):
            sJsonCall = self.get_argument("jsonCallback", None)
            if sJsonCall is not None:
                sMessage = sJsonCall + "( " + sMessage.decode('utf-8') + ")"

            self.write(sMessage)
            self.finish()

    return LongPolling


def test_seed_long_polling(redis_server: tuple[str, int], caplog: pytest.LogCaptureFixture) -> None:
    host, port = redis_server
    client = redis.Redis(host, port=port)
    client.delete("Q/MSG42", "Q/MSG7", "Q/MSG8", "Q/MSG9")

    async def push_later(key: str, value: bytes, delay: float) -> None:
        await asyncio.sleep(delay)
        await asyncio.to_thread(client.lpush, key, value)

    async def main() -> None:
        handler = make_long_polling(host, port, min_wait=0.02, max_wait=5.0)
        quick = make_long_polling(host, port, min_wait=0.01, max_wait=0.04)
        app = web.Application([(r"/", handler), (r"/quick", quick)])
        async with serving(app) as server_port:
            # A message already waiting, delivered through a JSONP callback.
            client.lpush("Q/MSG42", b'{"n": 1}')
            r = await fetch(server_port, "/?uid=42&sign=s&jsonCallback=cb")
            assert (r.code, r.body) == (200, b'cb( {"n": 1})')
            # Nothing waiting: the request is held while the handler polls
            # with add_timeout, and answered when a message arrives.
            started = time.monotonic()
            pusher = asyncio.ensure_future(push_later("Q/MSG7", b"hello", 0.3))
            r = await fetch(server_port, "/?uid=7&sign=s")
            await pusher
            assert r.body == b"hello"
            assert time.monotonic() - started >= 0.25
            # Polling gives up with the stop code once the back-off is exhausted.
            r = await fetch(server_port, "/quick?uid=8&sign=s")
            assert r.body == b"{'stop':1}"
            # Missing arguments: 404 raised from the asynchronous method.
            assert (await fetch(server_port, "/?sign=s")).code == 404
            # A client that hangs up stops the polling: a message that
            # arrives afterwards stays queued for the next request.
            reader, writer = await asyncio.open_connection("127.0.0.1", server_port)
            writer.write(b"GET /?uid=9&sign=s HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.sleep(0.1)
            writer.close()
            await asyncio.sleep(0.1)
            client.lpush("Q/MSG9", b"kept")
            await asyncio.sleep(0.3)
            assert client.lrange("Q/MSG9", 0, -1) == [b"kept"]

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    client.close()


# -- (c) on_connection_close as an "ACK" ---------------------------------------------

LOG = logging.getLogger("seed.ack")


def make_ack_handlers(processed: list[str], capacity: asyncio.Event) -> tuple[type, type]:
    """The seed's handler (with the work it elides spelled out) behind a
    server that is too busy to start new work until ``capacity`` is set."""

    class Busy(web.RequestHandler):
        async def prepare(self):
            # Under load the request waits for a worker slot before its
            # method runs: the window in which the client may give up.
            await capacity.wait()

    class MainHandler(Busy):
        def post(self):
            if self._finished:
                return
            # do something
            processed.append(self.get_argument("job"))

        def on_connection_close(self):
            LOG.debug('connection closed')
            self._finished = True
            super().on_connection_close()

    class NoAckHandler(Busy):
        def post(self):
            processed.append(self.get_argument("job"))

    return MainHandler, NoAckHandler


async def _give_up_after(port: int, path: str, body: bytes, seconds: float) -> None:
    """Service A: send a request, time out waiting, hang up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST %s HTTP/1.1\r\nHost: b\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)
    )
    await writer.drain()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(reader.read(1), seconds)
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize("path, expected", [("/ack", ["job-1"]), ("/no-ack", ["job-1", "job-1"])])
def test_seed_ack_no_double_processing(path: str, expected: list[str]) -> None:
    processed: list[str] = []

    async def main() -> None:
        capacity = asyncio.Event()
        ack, no_ack = make_ack_handlers(processed, capacity)
        app = web.Application([("/ack", ack), ("/no-ack", no_ack)])
        async with serving(app) as port:
            # A's first attempt times out while B is saturated.
            await _give_up_after(port, path, b"job=job-1", 0.2)
            await asyncio.sleep(0.05)  # B notices the hang-up
            capacity.set()  # load drops: the held request would now run
            await asyncio.sleep(0.05)
            # A retries; this time B answers.
            r = await fetch(port, path, method="POST",
                            headers={"Content-Type": "application/x-www-form-urlencoded"},
                            body=b"job=job-1")
            assert r.code == 200

    asyncio.run(main())
    # With the seed's on_connection_close, the abandoned attempt did no work;
    # without it, the job ran twice.
    assert processed == expected
