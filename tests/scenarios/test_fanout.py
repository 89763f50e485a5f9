"""Scenario: long-lived connections to a backend service.

One coroutine fans out five concurrent requests to a backend that takes
0.3 s per request. They run in parallel (about 0.3 s in all, not 1.5 s),
over at most five TCP connections, and a second round reuses those
connections instead of opening new ones.
"""

from __future__ import annotations

import asyncio
import time

from squall.httpclient import AsyncHTTPClient, HTTPResponse

BACKEND_DELAY = 0.3
FANOUT = 5


class SlowBackend:
    """An HTTP/1.1 keep-alive backend that answers every request after
    `BACKEND_DELAY` and counts the connections it accepts."""

    def __init__(self) -> None:
        self.accepted = 0
        self.served = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self.server.close()
        for writer in list(self._writers):
            writer.close()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.accepted += 1
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                await asyncio.sleep(BACKEND_DELAY)
                self.served += 1
                body = b"item " + head.split(b" ")[1]
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        finally:
            self._writers.discard(writer)
            writer.close()
            self._handlers.discard(task)


async def aggregate(client: AsyncHTTPClient, base_url: str) -> list[bytes]:
    """What an application handler does: fetch the parts concurrently and
    combine them."""
    responses: list[HTTPResponse] = await asyncio.gather(
        *(client.fetch(f"{base_url}/part/{i}") for i in range(FANOUT))
    )
    return [response.body for response in responses]


def test_fanout_runs_in_parallel_over_reused_connections() -> None:
    async def main() -> None:
        backend = SlowBackend()
        port = await backend.start()
        client = AsyncHTTPClient()
        try:
            base_url = f"http://127.0.0.1:{port}"
            started = time.monotonic()
            parts = await aggregate(client, base_url)
            elapsed = time.monotonic() - started
            assert parts == [b"item /part/%d" % i for i in range(FANOUT)]
            # Sequential requests would take FANOUT * BACKEND_DELAY = 1.5 s.
            assert elapsed < 1.0, elapsed
            assert backend.accepted <= FANOUT

            connections_after_first_round = backend.accepted
            parts = await aggregate(client, base_url)
            assert parts == [b"item /part/%d" % i for i in range(FANOUT)]
            assert backend.accepted == connections_after_first_round
            assert backend.served == 2 * FANOUT
        finally:
            client.close()
            await backend.stop()

    asyncio.run(main())
