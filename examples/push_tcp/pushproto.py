"""The wire format of the push example: length-prefixed binary frames.

Every frame is ``length (4 bytes, big-endian) | type (1 byte) | payload``,
where ``length`` counts the type byte and the payload. The server and the
client both use these helpers, so the format is written down once.

Client to server:

* ``REGISTER``: payload is the client's id (UTF-8, 1 to `MAX_ID_BYTES`
  bytes). Answered with ``REGISTERED``. Registering an id that another
  connection holds moves the id to the new connection and closes the old
  one (a phone that reconnected).
* ``PUSH``: payload is ``id length (1 byte) | id | message``. The message
  goes to the connection registered under the id as a ``MESSAGE`` frame; the
  sender gets ``PUSHED`` with one status byte: `DELIVERED` or `OFFLINE`.
* ``PING``: answered with ``PONG`` (keeps NAT mappings of idle mobile
  connections alive).

Server to client: ``REGISTERED``, ``PUSHED``, ``MESSAGE`` (payload is the
message), ``PONG``, and ``ERROR`` (a UTF-8 reason; the server then closes).
"""

from __future__ import annotations

import struct

HEADER = struct.Struct(">IB")

REGISTER = 0x01
PUSH = 0x02
PING = 0x03
REGISTERED = 0x81
PUSHED = 0x82
MESSAGE = 0x83
PONG = 0x84
ERROR = 0xFF

DELIVERED = 1
OFFLINE = 0

# A frame may not claim more than this: a 4-byte length could otherwise ask
# the server to buffer 4 GiB. Apple's push service caps a notification at
# 4 KiB; 64 KiB leaves room for richer messages.
MAX_FRAME = 64 * 1024
# Ids travel with a one-byte length; 64 bytes fits a UUID or a device token.
MAX_ID_BYTES = 64


class ProtocolError(Exception):
    """The peer sent something the protocol does not allow."""


def frame(kind: int, payload: bytes = b"") -> bytes:
    """Encode one frame."""
    if len(payload) + 1 > MAX_FRAME:
        raise ValueError(f"payload of {len(payload)} bytes exceeds the {MAX_FRAME}-byte frame limit")
    return HEADER.pack(len(payload) + 1, kind) + payload


def parse_header(header: bytes) -> tuple[int, int]:
    """Return ``(kind, payload length)`` from the 5 header bytes."""
    length, kind = HEADER.unpack(header)
    if length < 1 or length > MAX_FRAME:
        raise ProtocolError(f"frame length {length} is outside 1-{MAX_FRAME}")
    return kind, length - 1


def check_id(raw: bytes) -> str:
    """Decode a client id, rejecting empty, oversized or non-UTF-8 ones."""
    if not 1 <= len(raw) <= MAX_ID_BYTES:
        raise ProtocolError(f"an id has 1-{MAX_ID_BYTES} bytes, got {len(raw)}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("an id must be UTF-8") from None


def push_payload(client_id: str, message: bytes) -> bytes:
    """Encode the payload of a ``PUSH`` frame."""
    raw = client_id.encode("utf-8")
    check_id(raw)
    return bytes([len(raw)]) + raw + message


def parse_push(payload: bytes) -> tuple[str, bytes]:
    """Split a ``PUSH`` payload into ``(id, message)``."""
    if not payload:
        raise ProtocolError("empty PUSH frame")
    size = payload[0]
    if len(payload) < 1 + size:
        raise ProtocolError("PUSH frame shorter than its id")
    return check_id(payload[1 : 1 + size]), payload[1 + size :]
