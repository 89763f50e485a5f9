"""A tiny client for the push example's protocol (see ``pushproto.py``).

    python client.py [--host 127.0.0.1] [--port 8890] listen ID
    python client.py [--host 127.0.0.1] [--port 8890] send ID MESSAGE

``listen`` registers ``ID`` and prints every message pushed to it (one per
line, flushed) until interrupted; ``send`` pushes ``MESSAGE`` to ``ID`` and
prints ``delivered`` or ``offline`` (exit status 0 or 1).

`PushClient` is the same client as a class, for use from other coroutines.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from squall.iostream import IOStream
from squall.tcpclient import TCPClient

from pushproto import (
    DELIVERED,
    ERROR,
    HEADER,
    MESSAGE,
    PING,
    PONG,
    PUSH,
    PUSHED,
    REGISTER,
    REGISTERED,
    ProtocolError,
    frame,
    parse_header,
    push_payload,
)


class PushClient:
    """One connection to the push server.

    Replies (``REGISTERED``, ``PUSHED``, ``PONG``) come back in order, so
    each request reads frames until its reply; ``MESSAGE`` frames that
    arrive meanwhile are queued for `receive`.
    """

    def __init__(self, stream: IOStream) -> None:
        self.stream = stream
        self._messages: asyncio.Queue[bytes] = asyncio.Queue()

    @classmethod
    async def connect(cls, host: str, port: int) -> "PushClient":
        return cls(await TCPClient().connect(host, port))

    async def register(self, client_id: str) -> None:
        await self.stream.write(frame(REGISTER, client_id.encode("utf-8")))
        await self._reply(REGISTERED)

    async def push(self, client_id: str, message: bytes) -> bool:
        """Push ``message`` to ``client_id``; True when it was delivered."""
        await self.stream.write(frame(PUSH, push_payload(client_id, message)))
        return (await self._reply(PUSHED)) == bytes([DELIVERED])

    async def ping(self) -> None:
        await self.stream.write(frame(PING))
        await self._reply(PONG)

    async def receive(self) -> bytes:
        """Wait for the next message pushed to this client."""
        if self._messages.empty():
            kind, payload = await self._read_frame()
            if kind != MESSAGE:
                raise ProtocolError(f"expected a message, got frame type {kind:#04x}")
            return payload
        return self._messages.get_nowait()

    def close(self) -> None:
        self.stream.close()

    async def _read_frame(self) -> tuple[int, bytes]:
        kind, size = parse_header(await self.stream.read_bytes(HEADER.size))
        payload = await self.stream.read_bytes(size) if size else b""
        if kind == ERROR:
            raise ProtocolError(payload.decode("utf-8", "replace"))
        return kind, payload

    async def _reply(self, expected: int) -> bytes:
        while True:
            kind, payload = await self._read_frame()
            if kind == expected:
                return payload
            if kind != MESSAGE:
                raise ProtocolError(f"expected frame type {expected:#04x}, got {kind:#04x}")
            self._messages.put_nowait(payload)


async def _main(args: argparse.Namespace) -> int:
    client = await PushClient.connect(args.host, args.port)
    try:
        if args.command == "send":
            delivered = await client.push(args.id, args.message.encode("utf-8"))
            print("delivered" if delivered else "offline", flush=True)
            return 0 if delivered else 1
        await client.register(args.id)
        print(f"registered as {args.id}", flush=True)
        while True:
            message = await client.receive()
            print(message.decode("utf-8", "replace"), flush=True)
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description="client for the squall push example")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8890)
    commands = parser.add_subparsers(dest="command", required=True)
    listen = commands.add_parser("listen", help="register an id and print what is pushed to it")
    listen.add_argument("id")
    send = commands.add_parser("send", help="push a message to an id")
    send.add_argument("id")
    send.add_argument("message")
    args = parser.parse_args()
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
