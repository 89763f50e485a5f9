"""Seed scenario "Tornado HTTP 服务的 ACK": service A calls service B over HTTP;
under load B answers slowly, A times out and sends the request again, and B
processes the same request twice.

The post's remedies, as squall gives them: the normal response is the ACK
(A retries, with the same idempotency key, until it gets one); B records each
key in Redis, so a retry waits for or replays the first attempt instead of
redoing it; an attempt whose client hung up before B started on it is
dropped. Both services are real squall applications on loopback ports, A's
client is squall's AsyncHTTPClient, B's records are in a real redis-server,
and "two processes of B" are two applications with their own Redis clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, Optional

import pytest

from squall import web
from squall.httpclient import AsyncHTTPClient, HTTPClientError
from squall.httpserver import HTTPServer
from squall.idempotency import IdempotencyStore, MemoryStore, RedisStore, idempotent
from squall.netutil import bind_sockets

# Under load B's work takes longer than A is willing to wait for one attempt;
# the load lasts LOAD_SECONDS, then B answers at once.
WORK_SECONDS = 0.3
LOAD_SECONDS = 0.4
A_TIMEOUT = 0.12
# A gives up after this many attempts (bounds the test whatever the load).
A_ATTEMPTS = 60


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


class ServiceB:
    """The slow service: each job's work is counted. ``slots`` models a
    saturated B (requests queue for a worker before their method runs)."""

    def __init__(self, protected: bool) -> None:
        self.work_done: list[str] = []
        self.dropped = 0
        self.open_requests = 0
        self.loaded_until = 0.0
        service = self

        class JobHandler(web.RequestHandler):
            async def prepare(self) -> None:
                service.open_requests += 1
                slots: Optional[asyncio.Semaphore] = self.settings.get("slots")
                if slots is not None:
                    await slots.acquire()
                    self._slot = slots

            def on_finish(self) -> None:
                service.open_requests -= 1
                if self.get_status() == 499:
                    service.dropped += 1
                slot = getattr(self, "_slot", None)
                if slot is not None:
                    slot.release()

            async def post(self) -> None:
                job = self.get_argument("job")
                if asyncio.get_running_loop().time() < service.loaded_until:
                    await asyncio.sleep(WORK_SECONDS)
                service.work_done.append(job)
                self.write({"job": job, "status": "processed", "by": self.settings["name"]})

        if protected:
            JobHandler.post = idempotent(required=True)(JobHandler.post)  # type: ignore[method-assign]
        self.handler = JobHandler

    def app(self, name: str, store: Optional[IdempotencyStore] = None,
            slots: Optional[asyncio.Semaphore] = None) -> web.Application:
        return web.Application(
            [("/jobs", self.handler)], name=name, idempotency_store=store, slots=slots
        )


class ServiceA:
    """The caller: for each order, one idempotency key and retries until B
    answers normally (the ACK), round-robin over B's processes."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.timeouts = 0
        self.client = AsyncHTTPClient(force_instance=True)
        service = self

        class OrderHandler(web.RequestHandler):
            async def post(self) -> None:
                job = self.get_argument("job")
                key = uuid.uuid4().hex
                for attempt in range(A_ATTEMPTS):
                    port = service.backends[attempt % len(service.backends)]
                    try:
                        response = await service.client.fetch(
                            "http://127.0.0.1:%d/jobs" % port,
                            method="POST",
                            body="job=" + job,
                            headers={"Idempotency-Key": key},
                            request_timeout=A_TIMEOUT,
                        )
                    except HTTPClientError as e:
                        if e.code != 599:
                            raise
                        service.timeouts += 1
                        continue
                    self.write(response.body)
                    return
                raise web.HTTPError(504, "B never answered")

        self.app = web.Application([("/orders", OrderHandler)])


async def place_order(port: int, job: str) -> dict[str, Any]:
    client = AsyncHTTPClient(force_instance=True)
    try:
        response = await client.fetch(
            "http://127.0.0.1:%d/orders" % port, method="POST", body="job=" + job,
            request_timeout=30,
        )
    finally:
        client.close()
    return json.loads(response.body)  # type: ignore[no-any-return]


async def settle(b: ServiceB) -> None:
    """Wait (bounded) until B has finished every request it accepted."""
    for _ in range(1000):
        if b.open_requests == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("B still has %d requests open" % b.open_requests)


@pytest.mark.parametrize("protected", [False, True], ids=["plain", "idempotent"])
def test_slow_b_and_retrying_a(protected: bool) -> None:
    """One B process, loaded at first. Unprotected, A's retries make B do the
    job several times; with @idempotent the job is done exactly once, and
    the retries (they wait for the first attempt, or get it replayed) return
    its result."""
    b = ServiceB(protected)

    async def main() -> None:
        store = MemoryStore()
        async with serving(b.app("b1", store)) as b_port:
            a = ServiceA([b_port])
            try:
                async with serving(a.app) as a_port:
                    b.loaded_until = asyncio.get_running_loop().time() + LOAD_SECONDS
                    result = await place_order(a_port, "job-1")
                    await settle(b)
            finally:
                a.client.close()
        assert result == {"job": "job-1", "status": "processed", "by": "b1"}
        assert a.timeouts >= 1

    asyncio.run(main())
    if protected:
        assert b.work_done == ["job-1"]
    else:
        assert len(b.work_done) >= 2 and set(b.work_done) == {"job-1"}


def test_saturated_b_processes_across_redis(redis_server: tuple[str, int]) -> None:
    """Two B processes sharing Redis, each with one worker slot held by other
    work at first. A's early attempts queue for a slot and time out: B drops
    them unstarted when their turn comes. The job still runs exactly once,
    wherever the attempt that got a slot landed."""
    host, port = redis_server
    url = "redis://%s:%d/0" % (host, port)
    prefix = "seed-ack:%s:" % uuid.uuid4().hex
    b = ServiceB(protected=True)

    async def main() -> None:
        stores = [RedisStore.from_url(url, prefix=prefix) for _ in range(2)]
        slots = [asyncio.Semaphore(1), asyncio.Semaphore(1)]
        for slot in slots:
            await slot.acquire()  # busy with other work
        try:
            async with serving(b.app("b1", stores[0], slots[0])) as b1, \
                    serving(b.app("b2", stores[1], slots[1])) as b2:
                a = ServiceA([b1, b2])
                try:
                    async with serving(a.app) as a_port:
                        b.loaded_until = asyncio.get_running_loop().time() + LOAD_SECONDS
                        order = asyncio.ensure_future(place_order(a_port, "job-7"))
                        while a.timeouts < 4:
                            await asyncio.sleep(0.02)
                            assert not order.done()
                        for slot in slots:
                            slot.release()  # the load drops
                        result = await order
                        await settle(b)
                finally:
                    a.client.close()
        finally:
            for store in stores:
                await store.close()
        assert result["job"] == "job-7" and result["status"] == "processed"
        # The attempts that timed out while queued never started the work.
        assert b.dropped >= 3

    asyncio.run(main())
    assert b.work_done == ["job-7"]
