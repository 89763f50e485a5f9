"""Tests for squall.realtime: both backends (Redis against a real
redis-server, two instances standing in for two processes), and the
long-poll, SSE and WebSocket helpers over real loopback connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Optional

import pytest

from squall import realtime, web
from squall.httpserver import HTTPServer
from squall.netutil import bind_sockets
from squall.realtime import Message, PubSub

# -- harness ------------------------------------------------------------------


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro_fn())  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "redis"])
def make_pubsub(request: pytest.FixtureRequest) -> Callable[..., PubSub]:
    """Builds pubsubs of one backend; every Redis one made by a test shares
    a fresh key prefix, as processes of one deployment do."""
    if request.param == "memory":
        shared: list[PubSub] = []

        def make_memory(**kwargs: Any) -> PubSub:
            # One process: every "instance" is the same in-memory pubsub.
            if not shared:
                shared.append(realtime.MemoryPubSub(**kwargs))
            return shared[0]

        return make_memory
    host, port = request.getfixturevalue("redis_server")
    prefix = "test:%s:" % uuid.uuid4().hex

    def make_redis(**kwargs: Any) -> PubSub:
        return realtime.RedisPubSub("redis://%s:%d/0" % (host, port), prefix=prefix, **kwargs)

    return make_redis


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[int]:
    server = HTTPServer(app)
    sock = bind_sockets(0, "127.0.0.1")[0]
    port = sock.getsockname()[1]
    server.add_sockets([sock])
    try:
        yield port
    finally:
        server.stop()
        await server.close_all_connections()


async def http_get(port: int, path: str, headers: Optional[dict[str, str]] = None) -> tuple[int, dict[str, str], bytes]:
    """One GET with ``Connection: close``; returns status, headers, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % path
    for name, value in (headers or {}).items():
        head += "%s: %s\r\n" % (name, value)
    writer.write(head.encode() + b"\r\n")
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    parsed = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    if parsed.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return status, parsed, body


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Wait (bounded) for a condition the server reaches asynchronously."""
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out waiting for " + what)


# -- the API, on both backends --------------------------------------------------


def test_ids_history_and_stale_cursor(make_pubsub: Callable[..., PubSub]) -> None:
    async def main() -> None:
        pubsub = make_pubsub(history_size=5)
        await pubsub.start()
        try:
            assert await pubsub.last_id("room") == 0
            assert await pubsub.history("room") == []
            ids = [await pubsub.publish("room", {"n": n}) for n in range(8)]
            assert ids == [1, 2, 3, 4, 5, 6, 7, 8]
            assert await pubsub.last_id("room") == 8
            # Only the last five are kept; after=N is exclusive.
            history = await pubsub.history("room")
            assert [m.id for m in history] == [4, 5, 6, 7, 8]
            assert [m.data for m in history] == [{"n": n} for n in range(3, 8)]
            assert history[0].json == '{"n":3}' and history[0].topic == "room"
            assert [m.id for m in await pubsub.history("room", after=6)] == [7, 8]
            assert [m.id for m in await pubsub.history("room", after=4, limit=2)] == [5, 6]
            assert await pubsub.history("room", after=8) == []
            # Topics are independent.
            assert await pubsub.publish("other", "x") == 1
            # A cursor beyond the newest id (a restarted server) replays the history.
            async with pubsub.subscribe("room", after=99) as sub:
                assert [m.id for m in await sub.batch(0)] == [4, 5, 6, 7, 8]
        finally:
            await pubsub.close()

    run(main)


def test_subscribe_history_then_live_in_order(make_pubsub: Callable[..., PubSub]) -> None:
    async def main() -> None:
        pubsub = make_pubsub()
        other = make_pubsub()  # another process, for the Redis backend
        try:
            await pubsub.publish("t", "old-1")
            await pubsub.publish("t", "old-2")
            async with pubsub.subscribe("t", after=1) as resumed, pubsub.subscribe("t") as live:
                await other.publish("t", "new-3")
                await pubsub.publish("t", "new-4")
                got = []
                async for message in resumed:
                    got.append((message.id, message.data))
                    if message.id == 4:
                        break
                assert got == [(2, "old-2"), (3, "new-3"), (4, "new-4")]
                assert [(m.id, m.data) for m in [await live.get(5), await live.get(5)]] == [
                    (3, "new-3"), (4, "new-4")
                ]
                assert await live.get(timeout=0.05) is None
                assert live.last_id == 4
            assert resumed.closed and pubsub.subscriber_count == 0
        finally:
            await other.close()
            await pubsub.close()

    run(main)


def test_wait_listen_and_close(make_pubsub: Callable[..., PubSub]) -> None:
    async def main() -> None:
        pubsub = make_pubsub()
        publisher = make_pubsub()
        try:
            # Long-poll core: [] after the timeout, else what arrived.
            assert await pubsub.wait("q", after=0, timeout=0.05) == []
            waiter = asyncio.ensure_future(pubsub.wait("q", after=0, timeout=10))
            await until(lambda: pubsub.subscriber_count == 1, "the waiter")
            await publisher.publish("q", [1, 2])
            assert [m.data for m in await waiter] == [[1, 2]]
            # Callbacks, plain and coroutine; closing stops them.
            seen: list[int] = []
            done = asyncio.Event()

            async def slow(message: Message) -> None:
                await asyncio.sleep(0)
                seen.append(-message.id)
                if message.id == 3:
                    done.set()

            plain = await pubsub.listen("q", lambda m: seen.append(m.id), after=0)
            coro = await pubsub.listen("q", slow)
            await publisher.publish("q", "two")
            await publisher.publish("q", "three")
            await asyncio.wait_for(done.wait(), 10)
            assert [n for n in seen if n > 0] == [1, 2, 3]
            assert [n for n in seen if n < 0] == [-2, -3]
            plain.close()
            coro.close()
            assert pubsub.subscriber_count == 0
            # Closing the pubsub ends pending iterations.
            sub = pubsub.subscribe("q")
            await sub.start()
            pending = asyncio.ensure_future(sub.get())
            await asyncio.sleep(0.01)
        finally:
            await publisher.close()
            await pubsub.close()
        assert await pending is None
        with pytest.raises(RuntimeError, match="closed"):
            await pubsub.publish("q", 1)

    run(main)


def test_slow_consumer_is_closed_and_resumes(make_pubsub: Callable[..., PubSub]) -> None:
    async def main() -> None:
        pubsub = make_pubsub()
        try:
            await pubsub.publish("s", 0)
            # The replayed history does not count against max_queue.
            async with pubsub.subscribe("s", after=0, max_queue=3) as sub:
                for n in range(1, 5):
                    await pubsub.publish("s", n)
                await until(lambda: sub.overflowed, "the overflow")
                with pytest.raises(realtime.SlowConsumerError):
                    async for _ in sub:
                        pass
            # It picks up from the history with its last id.
            assert sub.last_id == 0
            async with pubsub.subscribe("s", after=sub.last_id) as again:
                assert [m.data for m in await again.batch(0)] == [0, 1, 2, 3, 4]
        finally:
            await pubsub.close()

    run(main)


def test_listener_exceptions_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        pubsub = realtime.MemoryPubSub()
        seen = []

        def broken(message: Message) -> None:
            raise ValueError("boom")

        await pubsub.listen("t", broken)
        await pubsub.listen("t", seen.append)
        await pubsub.publish("t", 1)
        assert [m.id for m in seen] == [1]

    with caplog.at_level(logging.ERROR, logger="squall.application"):
        run(main)
    assert [r.exc_info[1].args for r in caplog.records if r.exc_info] == [("boom",)]


def test_bad_arguments_raise_at_once() -> None:
    async def main() -> None:
        pubsub = realtime.MemoryPubSub()
        with pytest.raises(TypeError, match="JSON-serialisable"):
            await pubsub.publish("t", {1, 2})
        with pytest.raises(ValueError, match="topic"):
            await pubsub.publish("", 1)
        with pytest.raises(ValueError, match="topic"):
            await pubsub.publish("a\nb", 1)
        with pytest.raises(TypeError, match="topic"):
            await pubsub.publish(b"t", 1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="after"):
            pubsub.subscribe("t", after=-1)
        with pytest.raises(ValueError, match="max_queue"):
            pubsub.subscribe("t", max_queue=0)
        with pytest.raises(TypeError, match="callback"):
            await pubsub.listen("t", "nope")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="limit"):
            await pubsub.history("t", limit=0)
        # The value stored is the encoded one: later mutation changes nothing.
        data = {"a": [1]}
        await pubsub.publish("t", data)
        data["a"].append(2)
        assert (await pubsub.history("t"))[0].data == {"a": [1]}

    run(main)
    with pytest.raises(ValueError, match="history_size"):
        realtime.MemoryPubSub(history_size=0)
    with pytest.raises(ValueError, match="unsupported pubsub URL 'http://x'"):
        realtime.create_pubsub("http://x")
    assert isinstance(realtime.create_pubsub(), realtime.MemoryPubSub)
    assert isinstance(realtime.create_pubsub("memory://"), realtime.MemoryPubSub)


# -- Redis specifics ------------------------------------------------------------


def test_redis_misconfiguration_fails_at_start_up() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]

    async def main() -> None:
        with pytest.raises(ValueError, match="invalid Redis URL 'redis://127.0.0.1:notaport'"):
            await realtime.connect("redis://127.0.0.1:notaport")
        with pytest.raises(ConnectionError, match="cannot reach Redis at redis://127.0.0.1:%d" % dead_port):
            await realtime.connect("redis://127.0.0.1:%d" % dead_port)

    run(main)


def test_redis_two_processes_share_topics(redis_server: tuple[str, int]) -> None:
    url = "redis://%s:%d/0" % redis_server
    prefix = "test:%s:" % uuid.uuid4().hex

    async def main() -> None:
        a = await realtime.connect(url, prefix=prefix)
        b = await realtime.connect(url, prefix=prefix)
        try:
            # Concurrent publishers in two processes: ids stay consecutive.
            results = await asyncio.gather(
                *[(a if n % 2 else b).publish("room", n) for n in range(40)]
            )
            assert sorted(results) == list(range(1, 41))
            # Each sees every message in one order.
            async with a.subscribe("room", after=0) as sa, b.subscribe("room", after=30) as sb:
                first_a = await sa.batch(0, limit=100)
                assert [m.id for m in first_a] == list(range(1, 41))
                assert [m.id for m in await sb.batch(0)] == list(range(31, 41))
                await b.publish("room", "live")
                assert (await sa.get(5)).data == "live"  # type: ignore[union-attr]
                assert (await sb.get(5)).data == "live"  # type: ignore[union-attr]
            # A topic subscribed after the reader started is picked up at once.
            async with a.subscribe("late") as late:
                await b.publish("late", "hello")
                assert (await late.get(5)).id == 1  # type: ignore[union-attr]
        finally:
            await a.close()
            await b.close()

    run(main)


def test_redis_reader_survives_a_dropped_connection(redis_server: tuple[str, int], caplog: pytest.LogCaptureFixture) -> None:
    import redis

    url = "redis://%s:%d/0" % redis_server
    prefix = "test:%s:" % uuid.uuid4().hex

    async def main() -> None:
        pubsub = await realtime.connect(url, prefix=prefix)
        admin = redis.Redis(*redis_server)
        try:
            async with pubsub.subscribe("t") as sub:
                await pubsub.publish("t", 1)
                assert (await sub.get(5)).data == 1  # type: ignore[union-attr]
                # Kill every client connection (the reader's blocking XREAD too);
                # messages published meanwhile arrive after it reconnects.
                await asyncio.to_thread(admin.client_kill_filter, _type="normal", skipme=True)
                await pubsub.publish("t", 2)
                await pubsub.publish("t", 3)
                assert [(await sub.get(10)).data for _ in range(2)] == [2, 3]  # type: ignore[union-attr]
        finally:
            admin.close()
            await pubsub.close()

    with caplog.at_level(logging.INFO, logger="squall.general"):
        run(main)


# -- handlers -------------------------------------------------------------------


class RoomPoll(realtime.LongPollHandler):
    timeout = 0.3


class QuickEvents(realtime.EventSourceHandler):
    heartbeat_interval = 0.1
    retry_ms = 1500


def test_long_poll_handler(make_pubsub: Callable[..., PubSub]) -> None:
    async def main() -> None:
        pubsub = make_pubsub()
        publisher = make_pubsub()
        app = web.Application([
            (r"/poll", RoomPoll, dict(pubsub=pubsub, topic="room")),
            (r"/poll/(\w+)", RoomPoll, dict(pubsub=pubsub)),
        ])
        try:
            async with serving(app) as port:
                # Nothing yet: 200 with [] after the timeout.
                status, headers, body = await http_get(port, "/poll")
                assert (status, body) == (200, b"[]")
                assert headers["content-type"] == "application/json; charset=UTF-8"
                assert headers["cache-control"] == "no-store"
                # A waiting request is answered by a publish from elsewhere.
                poll = asyncio.ensure_future(http_get(port, "/poll?cursor=0"))
                await until(lambda: pubsub.subscriber_count == 1, "the poller")
                await publisher.publish("room", {"text": "hi"})
                assert json.loads((await poll)[2]) == [{"id": 1, "data": {"text": "hi"}}]
                # The cursor: only what came after it, and nothing is missed
                # between polls.
                await publisher.publish("room", "a")
                await publisher.publish("room", "b")
                body = (await http_get(port, "/poll?cursor=1"))[2]
                assert json.loads(body) == [{"id": 2, "data": "a"}, {"id": 3, "data": "b"}]
                # JSONP, and topics from the URL.
                await publisher.publish("u7", 7)
                status, headers, body = await http_get(port, "/poll/u7?callback=jQuery1.cb")
                assert body == b'jQuery1.cb([{"id":1,"data":7}]);'
                assert headers["content-type"] == "application/javascript; charset=UTF-8"
                assert headers["x-content-type-options"] == "nosniff"
                # Bad input is refused.
                assert (await http_get(port, "/poll?callback=alert(1)"))[0] == 400
                assert (await http_get(port, "/poll?cursor=-1"))[0] == 400
                assert (await http_get(port, "/poll?cursor=1e3"))[0] == 400
                # A client that hangs up stops the wait at once.
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /poll?cursor=3 HTTP/1.1\r\nHost: x\r\n\r\n")
                await until(lambda: pubsub.subscriber_count == 1, "the poller")
                writer.close()
                await until(lambda: pubsub.subscriber_count == 0, "the wait to stop")
        finally:
            await publisher.close()
            await pubsub.close()

    with _quiet_access_log():
        run(main)


@contextlib.contextmanager
def _quiet_access_log() -> Any:
    # The 400s above are expected; keep them out of the captured output.
    logger = logging.getLogger("squall.general")
    access = logging.getLogger("squall.access")
    old = logger.level, access.level
    logger.setLevel(logging.ERROR)
    access.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old[0])
        access.setLevel(old[1])


async def read_events(reader: asyncio.StreamReader, count: int) -> list[str]:
    """Read ``count`` SSE blocks (chunked framing stripped)."""
    blocks: list[str] = []
    buffer = b""
    while len(blocks) < count:
        size_line = await asyncio.wait_for(reader.readline(), 10)
        size = int(size_line, 16)
        chunk = await reader.readexactly(size + 2)
        buffer += chunk[:-2]
        while b"\n\n" in buffer:
            block, _, buffer = buffer.partition(b"\n\n")
            blocks.append(block.decode())
    return blocks[:count]


def test_event_source_handler(make_pubsub: Callable[..., PubSub]) -> None:
    async def main() -> None:
        pubsub = make_pubsub()
        app = web.Application([(r"/events/(\w+)", QuickEvents, dict(pubsub=pubsub))])
        try:
            await pubsub.publish("news", "one")
            await pubsub.publish("news", {"two": 2})
            async with serving(app) as port:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /events/news HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                assert head.startswith(b"HTTP/1.1 200")
                assert b"Content-Type: text/event-stream; charset=UTF-8" in head
                assert b"X-Accel-Buffering: no" in head
                # retry, the history after 1, then a heartbeat when idle.
                assert await read_events(reader, 3) == ["retry: 1500", 'id: 2\ndata: {"two":2}', ": ping"]
                await pubsub.publish("news", "three")
                events = await read_events(reader, 1)
                while events == [": ping"]:
                    events = await read_events(reader, 1)
                assert events == ['id: 3\ndata: "three"']
                writer.close()
                await until(lambda: pubsub.subscriber_count == 0, "the stream to stop")
                # Without Last-Event-ID: only new messages; a bad one is 400.
                status, _, _ = await http_get(port, "/events/news", {"Last-Event-ID": "x1"})
                assert status == 400
        finally:
            await pubsub.close()

    with _quiet_access_log():
        run(main)


@pytest.mark.parametrize("limit", ["max_queue", "write_timeout"])
def test_event_stream_slow_reader_is_disconnected(limit: str) -> None:
    class Stalled(realtime.EventSourceHandler):
        # One limit is tight, the other out of reach.
        max_queue = 5 if limit == "max_queue" else 100_000
        write_timeout = 0.2 if limit == "write_timeout" else 60.0

    async def main() -> None:
        pubsub = realtime.MemoryPubSub(history_size=100_000)
        app = web.Application([(r"/e", Stalled, dict(pubsub=pubsub, topic="big"))])
        async with serving(app) as port:
            # A client that never reads: the socket buffers fill, the
            # handler's flush waits, and the stream ends (its subscription
            # overflowed, or the client took too long) instead of growing
            # without bound or holding the connection for ever.
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1024)
            transport = writer.transport
            transport.pause_reading()
            writer.write(b"GET /e HTTP/1.1\r\nHost: x\r\n\r\n")
            await until(lambda: pubsub.subscriber_count == 1, "the stream")
            payload = "x" * 16384
            for _ in range(2000):
                await pubsub.publish("big", payload)
                await asyncio.sleep(0)
                if pubsub.subscriber_count == 0:
                    break
            await until(lambda: pubsub.subscriber_count == 0, "the stream to be dropped")
            # The server hung up: the client reads what was sent, then EOF.
            transport.resume_reading()
            while await asyncio.wait_for(reader.read(65536), 10):
                pass
            writer.close()

    with _quiet_access_log():
        run(main)


# -- WebSocket fan-out ------------------------------------------------------------


def test_websocket_hub_fans_out_without_waiting_for_slow_clients(make_pubsub: Callable[..., PubSub]) -> None:
    from squall.websocket import WebSocketHandler, websocket_connect

    async def main() -> None:
        pubsub = make_pubsub()
        hub = realtime.WebSocketHub(pubsub, max_queue=4)

        class Socket(WebSocketHandler):
            async def open(self) -> None:
                after = self.get_query_argument("after", None)
                await hub.join(self, "room", after=int(after) if after is not None else None)

            def on_close(self) -> None:
                hub.leave(self)

        app = web.Application([(r"/ws", Socket)])
        try:
            async with serving(app) as port:
                url = "ws://127.0.0.1:%d/ws" % port
                await pubsub.publish("room", "before")
                clients = [await websocket_connect(url) for _ in range(5)]
                resumed = await websocket_connect(url + "?after=0")
                assert json.loads(await resumed.read_message()) == {"id": 1, "topic": "room", "data": "before"}  # type: ignore[arg-type]
                await until(lambda: hub.topic_connections("room") == 6, "the joins")
                await pubsub.publish("room", {"n": 2})
                for client in clients + [resumed]:
                    assert json.loads(await client.read_message()) == {"id": 2, "topic": "room", "data": {"n": 2}}  # type: ignore[arg-type]
                # A client that stops reading: the others keep receiving; it is
                # closed with 1013 once its queue is over the limit.
                slow = await websocket_connect(url)
                await until(lambda: hub.topic_connections("room") == 7, "the slow join")
                slow.protocol.stream.pause_reading()  # type: ignore[attr-defined]
                big = "y" * 65536
                for n in range(200):
                    await pubsub.publish("room", big)
                    for client in clients:
                        message = json.loads(await client.read_message())  # type: ignore[arg-type]
                        assert message["id"] == 3 + n
                    if hub.topic_connections("room") == 6:
                        break
                assert hub.topic_connections("room") == 6
                slow.protocol.stream.resume_reading()  # type: ignore[attr-defined]
                while await slow.read_message() is not None:
                    pass
                assert slow.close_code == 1013
                for client in clients + [resumed]:
                    client.close()
                    while await client.read_message() is not None:
                        pass
                await until(lambda: hub.connection_count == 0, "the leaves")
        finally:
            await pubsub.close()

    with _quiet_access_log():
        run(main)


def test_websocket_hub_rejects_bad_configuration() -> None:
    pubsub = realtime.MemoryPubSub()
    with pytest.raises(ValueError, match="overflow"):
        realtime.WebSocketHub(pubsub, overflow="block")
    with pytest.raises(ValueError, match="max_queue"):
        realtime.WebSocketHub(pubsub, max_queue=0)
    with pytest.raises(TypeError, match="pubsub"):
        realtime.WebSocketHub(object())  # type: ignore[arg-type]
