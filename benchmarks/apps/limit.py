"""The ceiling: an asyncio.Protocol on uvloop that parses with httptools and answers canned bytes.

No framework and no per-request work beyond parsing: every response that
does not depend on the request is built once at start-up (the template's
output included: it is rendered once with `html.escape`), ``/echo`` and
``/user/<int>`` are answered from the parsed request, and ``/ws`` upgrades
to a WebSocket that echoes unfragmented messages. No Python server with the
same loop and parser can be faster, so the other rows are read against it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import json
import os
import sys
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httptools  # noqa: E402
import uvloop  # noqa: E402

from _common import ITEMS, JSON_MESSAGE, PLAINTEXT, TITLE, arg_parser  # noqa: E402

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


def _response(content_type: bytes, body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: %b\r\nContent-Length: %d\r\n\r\n%b" % (
        content_type,
        len(body),
        body,
    )


def _rendered_page() -> bytes:
    items = "".join(f"<li>{html.escape(item)}</li>\n" for item in ITEMS)
    title = html.escape(TITLE)
    return (
        f"<!DOCTYPE html>\n<html>\n<head><title>{title}</title></head>\n<body>\n"
        f"<h1>{title}</h1>\n<ul>\n{items}</ul>\n</body>\n</html>\n"
    ).encode()


def _canned(static_dir: str) -> dict[bytes, bytes]:
    canned = {
        b"/plaintext": _response(b"text/plain", PLAINTEXT),
        b"/json": _response(b"application/json", json.dumps(JSON_MESSAGE).encode()),
        b"/template": _response(b"text/html; charset=UTF-8", _rendered_page()),
    }
    for entry in os.scandir(static_dir):
        if entry.is_file():
            with open(entry.path, "rb") as f:
                canned[b"/static/" + entry.name.encode()] = _response(b"application/octet-stream", f.read())
    return canned


class _Limit(asyncio.Protocol):
    canned: dict[bytes, bytes] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.ws_key: Optional[bytes] = None
        self.frames: Optional[bytearray] = None

    def data_received(self, data: bytes) -> None:
        if self.frames is not None:
            self.frames += data
            self._echo_frames()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._accept_websocket(data[upgrade.args[0] :])
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []
        self.ws_key = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"sec-websocket-key":
            self.ws_key = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.parser.should_upgrade():
            return
        path, _, query = self.url.partition(b"?")
        response = self.canned.get(path)
        if response is None:
            if path == b"/echo":
                response = _response(b"application/octet-stream", b"".join(self.body))
            elif path.startswith(b"/user/") and path[6:].isdigit():
                name = parse_qs(query.decode())["name"][0]
                response = _response(b"text/plain", b"user %d name %b" % (int(path[6:]), name.encode()))
            else:
                response = _NOT_FOUND
        self.transport.write(response)

    def _accept_websocket(self, rest: bytes) -> None:
        if self.url != b"/ws" or self.ws_key is None:
            self.transport.write(_NOT_FOUND)
            self.transport.close()
            return
        accept = base64.b64encode(hashlib.sha1(self.ws_key + _WS_GUID).digest())
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: %b\r\n\r\n" % accept
        )
        self.frames = bytearray(rest)
        self._echo_frames()

    def _echo_frames(self) -> None:
        buf = self.frames
        assert buf is not None
        out = []
        pos = 0
        while len(buf) - pos >= 6:
            first, length = buf[pos], buf[pos + 1] & 0x7F
            head = pos + 2
            if length == 126:
                length = int.from_bytes(buf[head : head + 2], "big")
                head += 2
            elif length == 127:
                length = int.from_bytes(buf[head : head + 8], "big")
                head += 8
            start = head + 4
            if len(buf) < start or len(buf) < start + length:
                break
            mask = bytes(buf[head:start]) * (length // 4 + 1)
            payload = (
                int.from_bytes(buf[start : start + length], "big") ^ int.from_bytes(mask[:length], "big")
            ).to_bytes(length, "big")
            pos = start + length
            opcode = first & 0x0F
            if opcode == 0x8:
                self.transport.write(b"\x88\x00")
                self.transport.close()
                return
            if length < 126:
                out.append(bytes((0x80 | opcode, length)) + payload)
            elif length < 65536:
                out.append(bytes((0x80 | opcode, 126)) + length.to_bytes(2, "big") + payload)
            else:
                out.append(bytes((0x80 | opcode, 127)) + length.to_bytes(8, "big") + payload)
        del buf[:pos]
        if out:
            self.transport.write(b"".join(out))


async def _serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(_Limit, "127.0.0.1", port, backlog=1024)
    await asyncio.Event().wait()


def main() -> None:
    args = arg_parser(__doc__.splitlines()[0]).parse_args()
    _Limit.canned = _canned(args.static_dir)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(args.port))


if __name__ == "__main__":
    main()
