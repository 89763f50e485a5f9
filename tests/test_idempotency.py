"""Tests for squall.idempotency: real servers on loopback, both stores (Redis
against a real redis-server, two applications with their own store objects
standing in for two processes), and the stores' own contracts."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Optional

import pytest

from squall import idempotency, web
from squall.httpserver import HTTPServer
from squall.idempotency import (
    IdempotencyRecord,
    IdempotencyStore,
    MemoryStore,
    RedisStore,
    StoredResponse,
    StoreFullError,
    idempotent,
)
from squall.netutil import bind_sockets

# -- harness ------------------------------------------------------------------


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro_fn())  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[int]:
    server = HTTPServer(app)
    sock = bind_sockets(0, "127.0.0.1")[0]
    server.add_sockets([sock])
    try:
        yield sock.getsockname()[1]
    finally:
        server.stop()
        await server.close_all_connections()


class Response:
    def __init__(
        self, status: int, reason: str, headers: dict[str, str], body: bytes,
        header_lines: list[tuple[str, str]],
    ) -> None:
        self.header_lines = header_lines
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    @property
    def replayed(self) -> bool:
        return self.headers.get("idempotent-replayed") == "true"

    def json(self) -> Any:
        return json.loads(self.body)


def _request_bytes(
    method: str, path: str, key: Optional[str], body: bytes, headers: Optional[list[tuple[str, str]]]
) -> bytes:
    head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % (method, path)
    if key is not None:
        head += "Idempotency-Key: %s\r\n" % key
    for name, value in headers or ():
        head += "%s: %s\r\n" % (name, value)
    head += "Content-Length: %d\r\n\r\n" % len(body)
    return head.encode("latin-1") + body


async def call(
    port: int,
    key: Optional[str] = "k1",
    body: bytes = b"{}",
    method: str = "POST",
    path: str = "/work",
    headers: Optional[list[tuple[str, str]]] = None,
) -> Response:
    """One request with ``Connection: close``; the whole response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_request_bytes(method, path, key, body, headers))
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, payload = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    _, status, reason = lines[0].split(" ", 2)
    pairs = [(name.strip().lower(), value.strip())
             for name, _, value in (line.partition(":") for line in lines[1:])]
    parsed = dict(pairs)
    if parsed.get("transfer-encoding") == "chunked":
        payload = _unchunk(payload)
    return Response(int(status), reason, parsed, payload, pairs)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out += rest[:size]
        data = rest[size + 2:]


async def hang_up(
    port: int, key: str, when: Optional[Callable[[], bool]] = None, body: bytes = b"{}"
) -> None:
    """Send a whole request, then close (once ``when`` holds, if given)
    without reading the answer."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_request_bytes("POST", "/work", key, body, None))
    await writer.drain()
    if when is not None:
        await until(when, "the moment to hang up")
    writer.close()
    await writer.wait_closed()


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Wait (bounded) for a condition the server reaches asynchronously."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("timed out waiting for " + what)


class Service:
    """A decorated handler class with its own counters and gates."""

    def __init__(self, **options: Any) -> None:
        self.runs = 0
        self.arrived = 0
        self.closed = 0
        self.statuses: list[int] = []
        self.fail_next = 0
        self.work_gate: Optional[asyncio.Event] = None
        self.prepare_gate: Optional[asyncio.Event] = None
        service = self

        class WorkHandler(web.RequestHandler):
            async def prepare(self) -> None:
                service.arrived += 1
                if service.prepare_gate is not None:
                    await service.prepare_gate.wait()

            def on_connection_close(self) -> None:
                service.closed += 1

            def on_finish(self) -> None:
                service.statuses.append(self.get_status())

            @idempotent(**options)
            async def post(self) -> None:
                service.runs += 1
                run = service.runs
                if service.work_gate is not None:
                    await service.work_gate.wait()
                if service.fail_next:
                    service.fail_next -= 1
                    raise RuntimeError("work failed")
                self.set_status(201)
                self.set_header("Location", "/things/%d" % run)
                self.set_header("X-Not-Kept", "1")
                self.write({"run": run, "body": self.request.body.decode()})

            put = post

        self.handler = WorkHandler

    def app(self, **settings: Any) -> web.Application:
        return web.Application([("/work", self.handler), ("/other", self.handler)], **settings)


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> Callable[[], IdempotencyStore]:
    """Builds stores of one backend. Every Redis store a test makes is a
    separate client on a fresh shared prefix, as processes of one deployment
    are; the memory backend hands out one store (one process)."""
    if request.param == "memory":
        memory = MemoryStore()
        return lambda: memory
    host, port = request.getfixturevalue("redis_server")
    prefix = "test:%s:" % uuid.uuid4().hex
    return lambda: RedisStore.from_url("redis://%s:%d/0" % (host, port), prefix=prefix)


async def has_claim(store: IdempotencyStore, key: str) -> bool:
    """Whether ``key`` holds any record (probing with a claim we undo)."""
    token = uuid.uuid4().hex
    found = await store.claim(key, "probe", token, 5)
    if found is None:
        await store.release(key, token)
        return False
    return True


# -- the rules ------------------------------------------------------------------


def test_replay_after_completion(make_store: Callable[[], IdempotencyStore]) -> None:
    async def main() -> None:
        store = make_store()
        service = Service()
        try:
            async with serving(service.app(idempotency_store=store)) as port:
                first = await call(port, body=b"pay 5")
                assert (first.status, first.reason) == (201, "Created")
                assert not first.replayed
                assert first.headers["x-not-kept"] == "1"
                # The record was kept before the response was sent.
                kept = await store.claim("k1", "probe", "t", 5)
                assert kept is not None and kept.response is not None
                assert kept.response.body == first.body
                second = await call(port, body=b"pay 5")
                assert second.replayed
                assert (second.status, second.reason) == (201, "Created")
                assert second.body == first.body
                assert second.json() == {"run": 1, "body": "pay 5"}
                assert second.headers["location"] == "/things/1"
                assert second.headers["content-type"] == "application/json; charset=UTF-8"
                assert "x-not-kept" not in second.headers
                # Another key is another operation.
                third = await call(port, key="k2", body=b"pay 5")
                assert not third.replayed and third.json()["run"] == 2
                assert service.runs == 2
        finally:
            await store.close()

    run(main)


def test_concurrent_duplicates_run_once(make_store: Callable[[], IdempotencyStore]) -> None:
    async def main() -> None:
        # Two applications, each with its own store object: on Redis, two
        # processes sharing one Redis.
        stores = [make_store(), make_store()]
        service = Service()
        service.work_gate = asyncio.Event()
        try:
            async with serving(service.app(idempotency_store=stores[0])) as port_a, \
                    serving(service.app(idempotency_store=stores[1])) as port_b:
                first = asyncio.ensure_future(call(port_a))
                await until(lambda: service.runs == 1, "the first attempt to start")
                duplicates = [asyncio.ensure_future(call(port)) for port in (port_a, port_b, port_b)]
                await until(lambda: service.arrived == 4, "the duplicates to arrive")
                await asyncio.sleep(0.05)
                service.work_gate.set()
                responses = [await first] + [await d for d in duplicates]
            assert service.runs == 1
            assert [r.status for r in responses] == [201] * 4
            assert [r.replayed for r in responses] == [False, True, True, True]
            assert {r.body for r in responses} == {responses[0].body}
        finally:
            for store in stores:
                await store.close()

    run(main)


def test_conflict_mode_answers_409(make_store: Callable[[], IdempotencyStore]) -> None:
    async def main() -> None:
        store = make_store()
        service = Service(in_flight="conflict")
        service.work_gate = asyncio.Event()
        try:
            async with serving(service.app(idempotency_store=store)) as port:
                first = asyncio.ensure_future(call(port))
                await until(lambda: service.runs == 1, "the first attempt to start")
                conflict = await call(port)
                assert conflict.status == 409
                assert conflict.headers["retry-after"] == "1"
                assert "in progress" in conflict.reason
                service.work_gate.set()
                assert (await first).status == 201
                after = await call(port)
                assert after.replayed and after.status == 201
            assert service.runs == 1
        finally:
            await store.close()

    run(main)


def test_wait_is_bounded(make_store: Callable[[], IdempotencyStore]) -> None:
    async def main() -> None:
        store = make_store()
        service = Service(wait_timeout=0.1)
        service.work_gate = asyncio.Event()
        try:
            async with serving(service.app(idempotency_store=store)) as port:
                first = asyncio.ensure_future(call(port))
                await until(lambda: service.runs == 1, "the first attempt to start")
                waited = await call(port)
                assert waited.status == 409
                assert waited.headers["retry-after"] == "1"
                service.work_gate.set()
                assert (await first).status == 201
            assert service.runs == 1
        finally:
            await store.close()

    run(main)


def test_reuse_with_another_request_is_422(make_store: Callable[[], IdempotencyStore]) -> None:
    async def main() -> None:
        store = make_store()
        service = Service()
        try:
            async with serving(service.app(idempotency_store=store)) as port:
                assert (await call(port, body=b"pay 5")).status == 201
                for changed in (
                    dict(body=b"pay 500"),
                    dict(body=b"pay 5", path="/other"),
                    dict(body=b"pay 5", method="PUT"),
                ):
                    response = await call(port, **changed)  # type: ignore[arg-type]
                    assert response.status == 422, changed
                    assert "different request" in response.reason
                assert (await call(port, body=b"pay 5")).replayed
            assert service.runs == 1
        finally:
            await store.close()

    run(main)


def test_reuse_while_in_flight_is_422(make_store: Callable[[], IdempotencyStore]) -> None:
    async def main() -> None:
        store = make_store()
        service = Service()
        service.work_gate = asyncio.Event()
        try:
            async with serving(service.app(idempotency_store=store)) as port:
                first = asyncio.ensure_future(call(port, body=b"a"))
                await until(lambda: service.runs == 1, "the first attempt to start")
                assert (await call(port, body=b"b")).status == 422
                service.work_gate.set()
                assert (await first).status == 201
        finally:
            await store.close()

    run(main)


def test_exception_releases_the_claim(
    make_store: Callable[[], IdempotencyStore], caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        store = make_store()
        service = Service()
        service.fail_next = 1
        try:
            async with serving(service.app(idempotency_store=store)) as port:
                with caplog.at_level(logging.ERROR, "squall.application"):
                    failed = await call(port)
                assert failed.status == 500
                app_errors = [r for r in caplog.records if r.name == "squall.application"]
                assert [r.message.split()[0] for r in app_errors] == ["Uncaught"]
                assert not await has_claim(store, "k1")
                retried = await call(port)
                assert retried.status == 201 and not retried.replayed
                assert retried.json()["run"] == 2
                assert (await call(port)).replayed
            assert service.runs == 2
        finally:
            await store.close()

    run(main)


def test_waiting_duplicate_runs_when_the_first_fails(
    make_store: Callable[[], IdempotencyStore], caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        store = make_store()
        service = Service()
        service.work_gate = asyncio.Event()
        service.fail_next = 1
        try:
            async with serving(service.app(idempotency_store=store)) as port:
                with caplog.at_level(logging.ERROR, "squall.application"):
                    first = asyncio.ensure_future(call(port))
                    await until(lambda: service.runs == 1, "the first attempt to start")
                    second = asyncio.ensure_future(call(port))
                    await until(lambda: service.arrived == 2, "the retry to arrive")
                    await asyncio.sleep(0.05)
                    service.work_gate.set()
                    assert (await first).status == 500
                    response = await second
                assert response.status == 201 and not response.replayed
            assert service.runs == 2
        finally:
            await store.close()

    run(main)


def test_hang_up_before_the_work_starts(make_store: Callable[[], IdempotencyStore]) -> None:
    async def main() -> None:
        store = make_store()
        service = Service()
        service.prepare_gate = asyncio.Event()
        try:
            async with serving(service.app(idempotency_store=store)) as port:
                await hang_up(port, "k1")
                await until(lambda: service.closed == 1, "the server to see the hang-up")
                service.prepare_gate.set()
                await asyncio.sleep(0.05)
                assert service.runs == 0
                assert not await has_claim(store, "k1")
                retried = await call(port)
                assert retried.status == 201 and not retried.replayed
                assert retried.json()["run"] == 1
            assert service.runs == 1
        finally:
            await store.close()

    run(main)


class _SlowClaimStore(MemoryStore):
    """A MemoryStore whose claims take as long as the test says."""

    def __init__(self) -> None:
        super().__init__()
        self.claimed = asyncio.Event()
        self.gate = asyncio.Event()

    async def claim(self, key: str, fingerprint: str, token: str, lock_ttl: float) -> Optional[IdempotencyRecord]:
        found = await super().claim(key, fingerprint, token, lock_ttl)
        self.claimed.set()
        await self.gate.wait()
        return found


def test_hang_up_while_claiming_releases_the_claim() -> None:
    async def main() -> None:
        store = _SlowClaimStore()
        service = Service(store=store)
        async with serving(service.app()) as port:
            await hang_up(port, "k1")
            await asyncio.wait_for(store.claimed.wait(), 5)
            assert len(store) == 1
            await until(lambda: service.closed == 1, "the server to see the hang-up")
            store.gate.set()
            await until(lambda: len(store) == 0, "the claim to be released")
            assert service.runs == 0
            assert (await call(port)).status == 201
        assert service.runs == 1

    run(main)


def test_hang_up_after_the_work_started_keeps_the_result(
    make_store: Callable[[], IdempotencyStore]
) -> None:
    async def main() -> None:
        store = make_store()
        service = Service()
        service.work_gate = asyncio.Event()
        try:
            async with serving(service.app(idempotency_store=store)) as port:
                await hang_up(port, "k1", when=lambda: service.runs == 1)
                await until(lambda: service.closed == 1, "the server to see the hang-up")
                service.work_gate.set()
                retried = await call(port)
                assert retried.replayed and retried.json()["run"] == 1
            assert service.runs == 1
        finally:
            await store.close()

    run(main)


def test_waiting_retry_whose_client_leaves_stops_waiting() -> None:
    async def main() -> None:
        service = Service(store=MemoryStore())
        service.work_gate = asyncio.Event()
        async with serving(service.app()) as port:
            first = asyncio.ensure_future(call(port))
            await until(lambda: service.runs == 1, "the first attempt to start")
            await hang_up(port, "k1", when=lambda: service.arrived == 2)
            # Within a wait slice (a second) the retry notices and gives up.
            await until(lambda: service.statuses == [499], "the retry to give up")
            service.work_gate.set()
            assert (await first).status == 201
        assert service.runs == 1

    run(main)


# -- keys -----------------------------------------------------------------------


def test_key_syntax() -> None:
    async def main() -> None:
        service = Service(store=MemoryStore())
        async with serving(service.app()) as port:
            assert (await call(port, key='"a\\"b"')).status == 201
            # The same key unquoted (as an sf-string it is a"b).
            assert (await call(port, key='"a\\"b"')).replayed
            assert (await call(port, key='"abc"')).status == 201
            assert (await call(port, key="abc")).replayed
            for bad, reason in (
                ("", "Idempotency-Key is empty"),
                ('""', "Idempotency-Key is empty"),
                ("x" * 256, "Idempotency-Key is longer than 255 characters"),
                ('"open', "Idempotency-Key is not a valid quoted string"),
                ('"a\\nb"', "Idempotency-Key is not a valid quoted string"),
                ("caf\xe9", "Idempotency-Key has characters outside visible ASCII"),
            ):
                response = await call(port, key=bad)
                assert (response.status, response.reason) == (400, reason), bad
            assert (await call(port, key="x" * 255)).status == 201
            twice = await call(port, headers=[("Idempotency-Key", "k9")])
            assert (twice.status, twice.reason) == (400, "More than one Idempotency-Key header")
            # Without a key the method runs every time.
            runs = service.runs
            assert not (await call(port, key=None)).replayed
            assert not (await call(port, key=None)).replayed
            assert service.runs == runs + 2

    run(main)


def test_required_key_and_custom_key_function() -> None:
    async def main() -> None:
        required = Service(store=MemoryStore(), required=True)
        by_argument = Service(store=MemoryStore(), key=lambda h: h.get_query_argument("op", None))
        async with serving(required.app()) as port:
            missing = await call(port, key=None)
            assert (missing.status, missing.reason) == (400, "Missing Idempotency-Key header")
            assert required.runs == 0
        async with serving(by_argument.app()) as port:
            assert (await call(port, key=None, path="/work?op=7")).status == 201
            # The header is ignored; the argument is the key (the target
            # is part of the fingerprint, so it must match too).
            assert (await call(port, key="zz", path="/work?op=7")).replayed
            empty = await call(port, key=None, path="/work?op=")
            assert (empty.status, empty.reason) == (400, "Idempotency key is empty")
        assert by_argument.runs == 1

    run(main)


def test_custom_fingerprint_and_replay_headers() -> None:
    async def main() -> None:
        service = Service(
            store=MemoryStore(),
            fingerprint=lambda h: h.request.method or "",
            replay_headers=["Location", "X-Not-Kept"],
        )
        async with serving(service.app()) as port:
            await call(port, body=b"one")
            # The body is not in this fingerprint: a different body replays.
            replay = await call(port, body=b"two")
            assert replay.replayed and replay.json()["body"] == "one"
            assert replay.headers["x-not-kept"] == "1"
            # Content-Type is not in replay_headers: the default comes back.
            assert replay.headers["content-type"] == "text/html; charset=UTF-8"
        assert service.runs == 1

    run(main)


def test_cookies_are_replayed_when_asked() -> None:
    class Login(web.RequestHandler):
        @idempotent(store=MemoryStore(), replay_headers=["Set-Cookie"])
        def post(self) -> None:
            self.set_cookie("session", "s1", httponly=True)
            self.add_header("Set-Cookie", "theme=dark")
            self.write("welcome")

    async def main() -> None:
        async with serving(web.Application([("/work", Login)])) as port:
            first = await call(port)
            again = await call(port)
        assert again.replayed and again.body == b"welcome"
        cookies = [v for n, v in first.header_lines if n == "set-cookie"]
        assert sorted(cookies) == ["session=s1; HttpOnly; Path=/", "theme=dark"]
        assert [v for n, v in again.header_lines if n == "set-cookie"] == cookies

    run(main)


# -- handler styles ------------------------------------------------------------------


def test_handler_styles_are_recorded() -> None:
    """Plain methods, Finish, streamed flushes, redirects, a later finish()."""
    runs: list[str] = []

    class Styles(web.RequestHandler):
        @idempotent(store=MemoryStore())
        def post(self, style: str) -> Optional[Awaitable[None]]:
            runs.append(style)
            if style == "plain":
                self.write("plain body")
                return None
            if style == "finish":
                self.set_status(202)
                raise web.Finish("finished early")
            if style == "redirect":
                self.redirect("/elsewhere", status=303)
                return None
            if style == "streamed":
                return self._streamed()
            assert style == "later"
            self._auto_finish = False
            asyncio.get_running_loop().call_later(0.01, self.finish, "finished later")
            return None

        async def _streamed(self) -> None:
            self.write("part one, ")
            await self.flush()
            self.write("part two")

    async def main() -> None:
        async with serving(web.Application([(r"/(\w+)", Styles)])) as port:
            expected = {
                "plain": (200, b"plain body"),
                "finish": (202, b"finished early"),
                "redirect": (303, b""),
                "streamed": (200, b"part one, part two"),
                "later": (200, b"finished later"),
            }
            for style, (status, body) in expected.items():
                first = await call(port, key=style, path="/" + style)
                assert (first.status, first.body) == (status, body), style
                await asyncio.sleep(0.05 if style == "later" else 0)
                again = await call(port, key=style, path="/" + style)
                assert again.replayed, style
                assert (again.status, again.body) == (status, body), style
            again = await call(port, key="redirect", path="/redirect")
            assert again.headers["location"] == "/elsewhere"
        assert runs == list(expected)

    run(main)


# -- configuration -------------------------------------------------------------------


def test_bad_options_fail_at_decoration() -> None:
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        (dict(ttl=0), ValueError, "ttl must be a finite positive"),
        (dict(ttl="1h"), TypeError, "ttl must be a number"),
        (dict(lock_ttl=-1), ValueError, "lock_ttl"),
        (dict(wait_timeout=float("nan")), ValueError, "wait_timeout"),
        (dict(in_flight="queue"), ValueError, "'queue'"),
        (dict(required=1), TypeError, "required must be a bool"),
        (dict(key="Idempotency-Key"), TypeError, "key must be a function"),
        (dict(store=42), TypeError, "store must be"),
        (dict(store="mysql://db/1"), ValueError, "'mysql://db/1'"),
        (dict(store="redis://localhost:notaport/0"), ValueError, "bad port"),
        (dict(store="redis:///0"), ValueError, "no host"),
        (dict(replay_headers="Location"), TypeError, "replay_headers"),
        (dict(replay_headers=["Bad Name"]), ValueError, "'Bad Name'"),
    ]
    for options, error, message in cases:
        with pytest.raises(error, match=message):
            idempotent(**options)
    with pytest.raises(TypeError, match="decorates a handler method"):
        idempotent()(42)  # type: ignore[type-var]
    decorated = idempotent(ttl=datetime.timedelta(hours=1), wait_timeout=0)(lambda self: None)
    assert callable(decorated)


def test_store_urls_and_bounds() -> None:
    assert isinstance(idempotency.store_from_url("memory://"), MemoryStore)
    store = idempotency.store_from_url("redis://127.0.0.1:6379/0", prefix="p:")
    assert isinstance(store, RedisStore) and store.prefix == "p:"
    run(store.close)
    with pytest.raises(ValueError, match="unsupported idempotency store URL 'http://x'"):
        idempotency.store_from_url("http://x")
    with pytest.raises(ValueError, match="max_entries must be at least 1"):
        MemoryStore(max_entries=0)
    with pytest.raises(TypeError, match="max_bytes must be an int"):
        MemoryStore(max_bytes=1.5)  # type: ignore[arg-type]


def test_redis_client_must_not_decode(redis_server: tuple[str, int]) -> None:
    import redis.asyncio as aioredis

    host, port = redis_server
    client = aioredis.Redis(host=host, port=port, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisStore(client)
    with pytest.raises(TypeError, match="redis.asyncio.Redis"):
        RedisStore(object())
    run(client.aclose)


def test_unreachable_redis(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    url = "redis://127.0.0.1:%d/0" % dead_port

    async def main() -> None:
        store = RedisStore.from_url(url, socket_connect_timeout=1)
        try:
            with pytest.raises(ConnectionError, match="cannot reach Redis at " + url):
                await store.check()
            service = Service(store=store)
            async with serving(service.app()) as port:
                with caplog.at_level(logging.ERROR, "squall.application"):
                    response = await call(port)
            assert response.status == 503 and response.headers["retry-after"] == "1"
            app_errors = [r.message for r in caplog.records if r.name == "squall.application"]
            assert app_errors == ["idempotency store failed to claim 'k1'"]
            assert service.runs == 0
        finally:
            await store.close()

    run(main)


def test_setting_must_be_a_store(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        service = Service()
        async with serving(service.app(idempotency_store="redis://localhost")) as port:
            with caplog.at_level(logging.ERROR, "squall.application"):
                response = await call(port)
        assert response.status == 500
        app_errors = [r for r in caplog.records if r.name == "squall.application"]
        assert "must be an IdempotencyStore" in str(app_errors[0].exc_info[1])  # type: ignore[index]
        assert service.runs == 0

    run(main)


def test_default_store_is_one_per_process() -> None:
    async def main() -> None:
        service = Service()
        key = uuid.uuid4().hex
        async with serving(service.app()) as port_a, serving(service.app()) as port_b:
            assert (await call(port_a, key=key)).status == 201
            assert (await call(port_b, key=key)).replayed
        assert service.runs == 1

    run(main)


# -- the stores' contract ------------------------------------------------------------


def _response(body: bytes = b"body") -> StoredResponse:
    return StoredResponse(201, "Created", (("Location", "/a"), ("Link", "<x>"), ("Link", "<y>")), body)


def test_store_contract(make_store: Callable[[], IdempotencyStore]) -> None:
    async def main() -> None:
        store = make_store()
        try:
            assert await store.claim("k", "fp", "t1", 5) is None
            pending = await store.claim("k", "fp2", "t2", 5)
            assert pending == IdempotencyRecord("fp") and pending.in_flight
            # Only the claim's token acts on it.
            assert not await store.complete("k", "t2", IdempotencyRecord("fp", _response()), 5)
            assert not await store.release("k", "t2")
            assert not await store.extend("k", "t2", 5)
            assert await store.extend("k", "t1", 5)
            record = IdempotencyRecord("fp", _response(b"\x00\n\xff binary"))
            assert await store.complete("k", "t1", record, 5)
            assert await store.claim("k", "fp", "t3", 5) == record
            # A finished record is no longer a claim.
            assert not await store.release("k", "t1")
            assert await store.claim("k", "fp", "t4", 5) == record
            # Waiting on a finished or absent key returns at once.
            await asyncio.wait_for(store.wait("k", 10), 1)
            await asyncio.wait_for(store.wait("absent", 10), 1)
        finally:
            await store.close()

    run(main)


def test_store_expiry(make_store: Callable[[], IdempotencyStore]) -> None:
    async def main() -> None:
        store = make_store()
        try:
            assert await store.claim("lapsed", "fp", "t1", 0.05) is None
            await asyncio.wait_for(store.wait("lapsed", 10), 2)
            await asyncio.sleep(0.02)
            # The claim lapsed: another request takes the key; the first
            # request's token no longer completes it.
            assert await store.claim("lapsed", "fp", "t2", 5) is None
            assert not await store.complete("lapsed", "t1", IdempotencyRecord("fp", _response()), 5)
            assert await store.complete("lapsed", "t2", IdempotencyRecord("fp", _response()), 0.05)
            await asyncio.sleep(0.1)
            assert await store.claim("lapsed", "fp", "t3", 5) is None
        finally:
            await store.close()

    run(main)


def test_store_wait_wakes_on_completion(make_store: Callable[[], IdempotencyStore]) -> None:
    async def main() -> None:
        store = make_store()
        try:
            assert await store.claim("w", "fp", "t1", 5) is None
            waiter = asyncio.ensure_future(store.wait("w", 10))
            await asyncio.sleep(0.02)
            assert not waiter.done()
            await store.release("w", "t1")
            await asyncio.wait_for(waiter, 2)
            assert await store.claim("w", "fp", "t2", 5) is None
            waiter = asyncio.ensure_future(store.wait("w", 0.05))
            await asyncio.wait_for(waiter, 2)
            assert (await store.claim("w", "fp", "t3", 5)) == IdempotencyRecord("fp")
        finally:
            await store.close()

    run(main)


def test_memory_store_bounds(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        store = MemoryStore(max_entries=3, max_bytes=100)
        for n in range(3):
            assert await store.claim("k%d" % n, "fp", "t", 5) is None
        # Three claims in flight fill it: no slot for a fourth.
        with pytest.raises(StoreFullError, match="all 3 idempotency slots"):
            await store.claim("k3", "fp", "t", 5)
        record = IdempotencyRecord("fp", _response(b"x" * 10))
        assert await store.complete("k0", "t", record, 5)
        assert await store.complete("k1", "t", record, 5)
        # The oldest finished record makes room.
        assert await store.claim("k3", "fp", "t", 5) is None
        assert len(store) == 3
        assert await store.claim("k0", "fp", "t", 5) is None
        assert await store.release("k0", "t")
        # Bytes: a record that alone exceeds max_bytes is not kept.
        with caplog.at_level(logging.WARNING, "squall.general"):
            assert await store.complete("k2", "t", IdempotencyRecord("fp", _response(b"y" * 200)), 5)
        assert "exceeds max_bytes=100" in caplog.records[0].message
        assert await store.claim("k2", "fp", "t", 5) is None
        # ... and keeping one evicts older ones until the total fits.
        big = IdempotencyRecord("fp", _response(b"z" * 70))
        assert await store.complete("k2", "t", big, 5)
        assert await store.complete("k3", "t", big, 5)
        assert await store.claim("k2", "fp", "t", 5) is None
        assert await store.claim("k3", "fp", "t", 5) == big

    run(main)


# -- the example -----------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "idempotent_service" / "app.py"


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("idempotent_service_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_places_each_order_once() -> None:
    example = _load_example()

    async def main() -> None:
        orders: list[dict[str, Any]] = []
        async with serving(example.make_app(MemoryStore(), orders, work=0.1)) as port:
            form = [("Content-Type", "application/x-www-form-urlencoded")]
            attempts = [call(port, key="order-42", path="/orders", body=b"item=book", headers=form)
                        for _ in range(3)]
            answers = await asyncio.gather(*attempts)
            assert sorted(a.replayed for a in answers) == [False, True, True]
            assert {a.body for a in answers} == {b'{"id": 1, "item": "book"}'}
            other = await call(port, key="order-43", path="/orders", body=b"item=pen", headers=form)
            assert other.status == 201 and other.headers["location"] == "/orders/2"
            missing = await call(port, key=None, path="/orders", body=b"item=pen", headers=form)
            assert missing.status == 400
            listing = await call(port, key=None, method="GET", path="/orders", body=b"")
            assert listing.json() == {"orders": [{"id": 1, "item": "book"}, {"id": 2, "item": "pen"}]}

    run(main)


def test_example_fails_at_start_up_without_its_store() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(Path(idempotency.__file__).resolve().parents[1]))
    for store, message in (
        ("redis://127.0.0.1:%d/0" % dead_port, b"cannot reach Redis at redis://127.0.0.1:%d/0" % dead_port),
        ("mysql://db", b"unsupported idempotency store URL 'mysql://db'"),
    ):
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), "--port=0", "--store=" + store],
            env=env, capture_output=True, timeout=60,
        )
        assert done.returncode != 0
        assert message in done.stderr
