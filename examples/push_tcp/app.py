"""A push notification service on `squall.tcpserver.TCPServer`.

In the spirit of KPNS (the push service behind 500K concurrent mobile
connections in one of the seed write-ups): devices keep one TCP connection
open and register an id on it; anyone can then push a message to an id, and
the server writes it down that id's connection at once. The protocol is a
small length-prefixed binary one (see ``pushproto.py``); ``client.py`` is a
tiny client for it.

Run the server (one process: the id registry lives in its memory)::

    squall run examples/push_tcp/app.py:make_server --port 8890
    python examples/push_tcp/app.py --port=8890

then, in two more terminals::

    python examples/push_tcp/client.py --port 8890 listen alice
    python examples/push_tcp/client.py --port 8890 send alice "hello there"
"""

from __future__ import annotations

import asyncio
from typing import Any

import squall.ioloop
import squall.options
from squall.iostream import IOStream, StreamClosedError
from squall.log import app_log
from squall.netutil import bind_sockets
from squall.options import define, options
from squall.tcpserver import TCPServer

from pushproto import (
    DELIVERED,
    ERROR,
    HEADER,
    MESSAGE,
    OFFLINE,
    PING,
    PONG,
    PUSH,
    PUSHED,
    REGISTER,
    REGISTERED,
    ProtocolError,
    check_id,
    frame,
    parse_header,
    parse_push,
)


class PushServer(TCPServer):
    """Keeps one registered connection per id and pushes messages to it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clients: dict[str, IOStream] = {}

    async def handle_stream(self, stream: IOStream, address: Any) -> None:
        registered: str | None = None
        try:
            while True:
                kind, size = parse_header(await stream.read_bytes(HEADER.size))
                payload = await stream.read_bytes(size) if size else b""
                if kind == REGISTER:
                    registered = self._register(check_id(payload), stream, registered)
                    await stream.write(frame(REGISTERED))
                elif kind == PUSH:
                    client_id, message = parse_push(payload)
                    status = self.push(client_id, message)
                    await stream.write(frame(PUSHED, bytes([status])))
                elif kind == PING:
                    await stream.write(frame(PONG))
                else:
                    raise ProtocolError(f"unknown frame type {kind:#04x}")
        except StreamClosedError:
            pass
        except ProtocolError as e:
            app_log.info("closing %s: %s", address, e)
            stream.write(frame(ERROR, str(e).encode())).add_done_callback(_ignore_result)
            stream.close()
        finally:
            if registered is not None and self.clients.get(registered) is stream:
                del self.clients[registered]

    def _register(self, client_id: str, stream: IOStream, previous: str | None) -> str:
        if previous is not None and previous != client_id and self.clients.get(previous) is stream:
            del self.clients[previous]
        old = self.clients.get(client_id)
        if old is not None and old is not stream:
            # The same device came back on a new connection; the old one is
            # dead or about to be.
            old.close()
        self.clients[client_id] = stream
        return client_id

    def push(self, client_id: str, message: bytes) -> int:
        """Send ``message`` to ``client_id``; return `DELIVERED` or `OFFLINE`.

        The write is not awaited: one slow phone must not hold up whoever
        is pushing.
        """
        stream = self.clients.get(client_id)
        if stream is None or stream.closed():
            return OFFLINE
        stream.write(frame(MESSAGE, message)).add_done_callback(_ignore_result)
        return DELIVERED


def _ignore_result(future: "asyncio.Future[None]") -> None:
    # A write to a connection that closed meanwhile fails; nothing to do.
    if not future.cancelled():
        future.exception()


def make_server() -> PushServer:
    """The factory ``squall run`` calls."""
    return PushServer()


def main() -> None:
    define("port", default=8890, help="run on the given port", type=int)
    define("address", default="127.0.0.1", help="listen on this address")
    squall.options.parse_command_line()
    sockets = bind_sockets(options.port, options.address)
    server = make_server()
    server.add_sockets(sockets)
    print("push server listening on %s:%d" % sockets[0].getsockname()[:2], flush=True)
    try:
        squall.ioloop.IOLoop.current().start()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
