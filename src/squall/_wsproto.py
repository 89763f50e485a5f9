"""The WebSocket protocol without I/O: RFC 6455 framing and RFC 7692
permessage-deflate as a small state machine that takes bytes and gives events.

`Connection` is one side (client or server) of one WebSocket. Feed it what the
socket delivered with `Connection.receive_data`, then call
`Connection.next_event` until it returns None. Each event is a pair
``(opcode, payload)``:

- ``(TEXT, str)`` and ``(BINARY, bytes)``: a complete message, reassembled
  from its fragments and decompressed;
- ``(PING, bytes)`` and ``(PONG, bytes)``: control frames;
- ``(CLOSE, (code, reason))``: the peer's closing handshake, ``code`` None
  when its close frame had no body.

A peer that breaks the protocol makes `next_event` raise `ProtocolError`,
whose ``code`` is the close code to answer with (1002 for framing, 1007 for
bad UTF-8 or bad compressed data, 1009 for a message over the size limit).
Outgoing frames are built by `Connection.message`, `Connection.ping`,
`Connection.pong` and `Connection.close`, which return the bytes to write.

The handshake helpers (`accept_value`, `is_valid_key`, `parse_extensions`)
and the permessage-deflate negotiation (`negotiate_deflate`,
`deflate_offer`, `accept_deflate`) are pure functions too, shared by
`squall.websocket`'s server and client.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import os
import re
import struct
import zlib
from typing import Any, Optional, Union

from squall.util import _websocket_mask

__all__ = [
    "BINARY",
    "CLOSE",
    "CONTINUATION",
    "Connection",
    "DeflateParams",
    "PING",
    "PONG",
    "PerMessageDeflate",
    "ProtocolError",
    "TEXT",
    "accept_deflate",
    "accept_value",
    "deflate_offer",
    "is_valid_close_code",
    "is_valid_key",
    "negotiate_deflate",
    "parse_extensions",
    "websocket_mask",
]

# --- Wire constants (RFC 6455 section 5.2) ----------------------------------

CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA

FIN = 0x80
RSV1 = 0x40
RSV2 = 0x20
RSV3 = 0x10
RSV_MASK = RSV1 | RSV2 | RSV3
OPCODE_MASK = 0x0F
_MASK_BIT = 0x80
# First header bytes of a whole, uncompressed message in one frame.
_FIN_TEXT = FIN | TEXT
_FIN_BINARY = FIN | BINARY
# Largest payload whose length fits the header's 7-bit field (RFC 6455
# section 5.2).
_MAX_SMALL_PAYLOAD = 125
# The two header bytes of every unmasked, uncompressed message of up to
# that many bytes, indexed by length: built once, not per message.
_TEXT_HEADS = tuple(bytes((_FIN_TEXT, n)) for n in range(_MAX_SMALL_PAYLOAD + 1))
_BINARY_HEADS = tuple(bytes((_FIN_BINARY, n)) for n in range(_MAX_SMALL_PAYLOAD + 1))

# --- Limits -----------------------------------------------------------------

# Control frames carry at most 125 bytes and are never fragmented
# (RFC 6455 section 5.5).
MAX_CONTROL_PAYLOAD = 125
# A close frame's reason shares those 125 bytes with the 2-byte code.
MAX_CLOSE_REASON = MAX_CONTROL_PAYLOAD - 2
# Largest message accepted by default, after reassembly and decompression:
# Tornado's websocket_max_message_size default (10 MiB).
DEFAULT_MAX_MESSAGE_SIZE = 10 * 1024 * 1024
# Frame lengths are 63-bit (RFC 6455 section 5.2: the most significant bit
# of the 64-bit length MUST be 0).
_MAX_FRAME_LENGTH = (1 << 63) - 1
# Consumed input is dropped from the receive buffer once this much has
# piled up in front of what is still unparsed, so a burst of small frames
# costs no quadratic copying and an idle connection holds no buffer.
_COMPACT_AT = 65536

# The GUID appended to Sec-WebSocket-Key (RFC 6455 section 1.3).
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# What a sync-flushed deflate block ends with; RFC 7692 section 7.2.1 strips
# it from each message on the wire and section 7.2.2 puts it back.
_DEFLATE_TAIL = b"\x00\x00\xff\xff"

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")


class ProtocolError(Exception):
    """The peer broke the WebSocket protocol.

    ``code`` is the close code to send back (RFC 6455 section 7.4.1) and
    ``reason`` a short description for the close frame and the log.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code} {self.reason}"


# --- Masking ----------------------------------------------------------------


# RFC 6455 section 5.3 masking (XOR with the 4-byte key repeated; its own
# inverse). The runtime layer owns it; Tornado code imports it from util.
websocket_mask = _websocket_mask


# --- Close codes ------------------------------------------------------------


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a close frame.

    RFC 6455 section 7.4 defines 1000-1003 and 1007-1011; the IANA registry
    adds 1012-1014; 3000-4999 belong to libraries and applications. 1004 is
    reserved, and 1005, 1006 and 1015 only describe a closure locally.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


# --- Handshake helpers ------------------------------------------------------


def accept_value(key: Union[str, bytes]) -> str:
    """The ``Sec-WebSocket-Accept`` value answering ``Sec-WebSocket-Key``
    ``key`` (RFC 6455 section 4.2.2)."""
    if isinstance(key, str):
        key = key.encode("latin-1")
    return base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode("ascii")


_KEY_RE = re.compile(r"[A-Za-z0-9+/]{21}[AQgw]==")


def is_valid_key(key: str) -> bool:
    """Whether ``key`` is a well-formed ``Sec-WebSocket-Key``: the base64
    encoding of 16 bytes (RFC 6455 section 4.1)."""
    if not _KEY_RE.fullmatch(key):
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        return False


# RFC 6455 section 9.1 over RFC 7230 tokens and quoted strings.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\x09\x20-\x7e\x80-\xff])*"'
_OWS = r"[ \t]*"
_PARAM_RE = re.compile(rf"{_OWS};{_OWS}({_TOKEN})(?:{_OWS}={_OWS}({_TOKEN}|{_QUOTED}))?")
_EXT_NAME_RE = re.compile(rf"{_OWS}({_TOKEN})")
_COMMA_RE = re.compile(rf"{_OWS},")
_QUOTED_PAIR_RE = re.compile(r"\\(.)")


def parse_extensions(header: str) -> list[tuple[str, list[tuple[str, Optional[str]]]]]:
    """Parse a ``Sec-WebSocket-Extensions`` value into
    ``[(name, [(param, value or None), ...]), ...]``.

    Names and parameter names are lower-cased; quoted values are unquoted.
    Empty list elements are skipped (RFC 9110 section 5.6.1). Raises
    `ValueError` naming the value if it does not match the grammar of
    RFC 6455 section 9.1.
    """
    result: list[tuple[str, list[tuple[str, Optional[str]]]]] = []
    pos = 0
    end = len(header.rstrip(" \t"))
    while pos < end:
        comma = _COMMA_RE.match(header, pos)
        if comma:
            pos = comma.end()
            continue
        m = _EXT_NAME_RE.match(header, pos)
        if not m:
            raise ValueError(f"malformed Sec-WebSocket-Extensions: {header!r}")
        name = m.group(1).lower()
        pos = m.end()
        params: list[tuple[str, Optional[str]]] = []
        while True:
            p = _PARAM_RE.match(header, pos)
            if not p:
                break
            value = p.group(2)
            if value is not None and value.startswith('"'):
                value = _QUOTED_PAIR_RE.sub(r"\1", value[1:-1])
            params.append((p.group(1).lower(), value))
            pos = p.end()
        result.append((name, params))
        if pos < end:
            comma = _COMMA_RE.match(header, pos)
            if not comma:
                raise ValueError(f"malformed Sec-WebSocket-Extensions: {header!r}")
            pos = comma.end()
    return result


# --- permessage-deflate (RFC 7692) ------------------------------------------

_DEFLATE = "permessage-deflate"
# Window sizes allowed by RFC 7692 section 7.1.2, as 1*DIGIT without a
# leading zero.
_WBITS_RE = re.compile(r"[1-9][0-9]?")
# zlib refuses an 8-bit window for raw deflate streams (since zlib 1.2.9),
# so a peer that limits our sending window to 8 bits gets no compression.
_MIN_SEND_WBITS = 9
_COMPRESSION_OPTIONS = frozenset(("compression_level", "mem_level"))


class DeflateParams:
    """The agreed parameters of permessage-deflate (RFC 7692 section 7.1).

    ``*_max_window_bits`` are None when absent; in a client's offer
    ``client_max_window_bits`` is 0 when present without a value.
    """

    __slots__ = (
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    )

    def __init__(
        self,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: Optional[int] = None,
        client_max_window_bits: Optional[int] = None,
    ) -> None:
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits = client_max_window_bits

    def header_value(self) -> str:
        """This agreement as a ``Sec-WebSocket-Extensions`` value."""
        parts = [_DEFLATE]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits is not None:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.client_max_window_bits:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        elif self.client_max_window_bits == 0:
            parts.append("client_max_window_bits")
        return "; ".join(parts)

    def __repr__(self) -> str:
        return f"DeflateParams({self.header_value()!r})"


def _parse_deflate_params(
    params: list[tuple[str, Optional[str]]], in_response: bool
) -> DeflateParams:
    """Check one permessage-deflate element's parameters; `ValueError` if
    any is unknown, repeated or has a bad value (RFC 7692 section 7.1)."""
    result = DeflateParams()
    seen: set[str] = set()
    for name, value in params:
        if name in seen:
            raise ValueError(f"permessage-deflate parameter {name!r} repeated")
        seen.add(name)
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                raise ValueError(f"permessage-deflate {name} takes no value, got {value!r}")
            setattr(result, name, True)
        elif name in ("server_max_window_bits", "client_max_window_bits"):
            if value is None:
                # Only a client's offer may leave client_max_window_bits
                # without a value (section 7.1.2.2).
                if name == "server_max_window_bits" or in_response:
                    raise ValueError(f"permessage-deflate {name} needs a value")
                bits = 0
            else:
                if not _WBITS_RE.fullmatch(value) or not 8 <= int(value) <= 15:
                    raise ValueError(f"permessage-deflate {name} must be 8..15, got {value!r}")
                bits = int(value)
            setattr(result, name, bits)
        else:
            raise ValueError(f"unknown permessage-deflate parameter {name!r}")
    return result


def _check_compression_options(options: dict[str, Any]) -> None:
    for key in options:
        if key not in _COMPRESSION_OPTIONS:
            raise ValueError(
                f"unknown compression option {key!r} (known: {sorted(_COMPRESSION_OPTIONS)})"
            )


def negotiate_deflate(header: str, options: dict[str, Any]) -> Optional[DeflateParams]:
    """Server side: pick the first acceptable permessage-deflate offer in the
    client's ``Sec-WebSocket-Extensions`` ``header``.

    Returns the agreement (whose `DeflateParams.header_value` is the
    response header) or None to go without compression. Offers we cannot
    honour, and a header that does not parse, are declined rather than
    failing the handshake (RFC 7692 section 5.1). ``options`` are the
    handler's compression options (``compression_level``, ``mem_level``);
    an unknown key raises `ValueError`.
    """
    _check_compression_options(options)
    try:
        offers = parse_extensions(header)
    except ValueError:
        return None
    for name, params in offers:
        if name != _DEFLATE:
            continue
        try:
            offer = _parse_deflate_params(params, in_response=False)
        except ValueError:
            continue
        server_bits = offer.server_max_window_bits
        if server_bits is not None and server_bits < _MIN_SEND_WBITS:
            continue
        # Answer client_max_window_bits without a value by not limiting the
        # client (its absence from the response means 15).
        if offer.client_max_window_bits == 0:
            offer.client_max_window_bits = None
        return offer
    return None


def deflate_offer(options: dict[str, Any]) -> str:
    """Client side: the ``Sec-WebSocket-Extensions`` value offering
    permessage-deflate, letting the server limit our window."""
    _check_compression_options(options)
    return f"{_DEFLATE}; client_max_window_bits"


def accept_deflate(header: str) -> Optional[DeflateParams]:
    """Client side: check the server's ``Sec-WebSocket-Extensions``
    response to `deflate_offer`.

    Returns the agreement, or None if the server declined (empty header).
    Raises `ValueError` naming the value if the server answered with
    anything we did not offer or with bad parameters (RFC 6455 section 9.1:
    the client must then fail the connection).
    """
    extensions = parse_extensions(header)
    if not extensions:
        return None
    if len(extensions) != 1 or extensions[0][0] != _DEFLATE:
        raise ValueError(f"server accepted extensions that were not offered: {header!r}")
    params = _parse_deflate_params(extensions[0][1], in_response=True)
    if params.client_max_window_bits is not None and params.client_max_window_bits < _MIN_SEND_WBITS:
        raise ValueError(f"cannot compress with the window the server asks for: {header!r}")
    return params


def _deflate_bound(n: int) -> int:
    """An upper bound on the deflated size of ``n`` bytes: the worst case
    is stored blocks, 5 bytes per 64 KiB (zlib's deflateBound is tighter)."""
    return n + (n >> 10) + 64


class PerMessageDeflate:
    """The compressor and decompressor of one connection (RFC 7692).

    With context takeover (the default) each direction keeps its zlib
    stream, and its window, for the life of the connection: repeated
    content compresses well, at the cost of about 300 KiB for the
    compressor (zlib's default ``mem_level`` and window) and 40 KiB for the
    decompressor. When ``*_no_context_takeover`` is agreed for a direction,
    that direction's zlib state exists only while a message is being
    compressed or decompressed. ``*_max_window_bits`` shrink the window.
    """

    __slots__ = (
        "_level",
        "_mem_level",
        "_send_bits",
        "_recv_bits",
        "_send_keep",
        "_recv_keep",
        "_compressor",
        "_decompressor",
    )

    def __init__(
        self, params: DeflateParams, client: bool, options: Optional[dict[str, Any]] = None
    ) -> None:
        options = options or {}
        _check_compression_options(options)
        self._level = options.get("compression_level", zlib.Z_DEFAULT_COMPRESSION)
        self._mem_level = options.get("mem_level", zlib.DEF_MEM_LEVEL)
        if client:
            send_bits, recv_bits = params.client_max_window_bits, params.server_max_window_bits
            send_reset, recv_reset = params.client_no_context_takeover, params.server_no_context_takeover
        else:
            send_bits, recv_bits = params.server_max_window_bits, params.client_max_window_bits
            send_reset, recv_reset = params.server_no_context_takeover, params.client_no_context_takeover
        self._send_bits = send_bits or zlib.MAX_WBITS
        self._recv_bits = recv_bits or zlib.MAX_WBITS
        self._send_keep = not send_reset
        self._recv_keep = not recv_reset
        self._compressor: Any = None
        self._decompressor: Any = None
        # Fail now, not on the first message, if the options are bad.
        zlib.compressobj(self._level, zlib.DEFLATED, -self._send_bits, self._mem_level)

    def compress(self, data: bytes) -> bytes:
        """One message's payload, compressed for the wire."""
        c = self._compressor
        if c is None:
            c = zlib.compressobj(self._level, zlib.DEFLATED, -self._send_bits, self._mem_level)
            if self._send_keep:
                self._compressor = c
        out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
        # A sync flush always ends with the empty stored block's tail.
        return out[:-4]

    def decompress(self, data: bytes, limit: int, last: bool) -> bytes:
        """Decompress one frame's payload of a message: at most ``limit + 1``
        bytes come out, so a caller seeing more than ``limit`` knows the
        message is too big without inflating all of it. ``last`` marks the
        message's final frame. Raises `zlib.error` on bad data."""
        d = self._decompressor
        if d is None:
            d = self._decompressor = zlib.decompressobj(-self._recv_bits)
        out = d.decompress(data, limit + 1)
        if last and len(out) <= limit:
            out += d.decompress(_DEFLATE_TAIL, limit + 1 - len(out))
        if last and (not self._recv_keep or d.eof):
            # No takeover (or the peer ended its deflate stream with a final
            # block): the next message starts a fresh stream.
            self._decompressor = None
        return out

    def abandon_message(self) -> None:
        """Forget a message cut short by an error."""
        self._decompressor = None


# --- The connection state machine -------------------------------------------

# Both sides open; either may send anything.
OPEN = "OPEN"
# We sent a close frame: nothing more may be sent, we await the peer's.
CLOSE_SENT = "CLOSE_SENT"
# The peer's close frame arrived: nothing more is read, we answer it.
CLOSE_RECEIVED = "CLOSE_RECEIVED"
# The peer broke the protocol: nothing more is read; our close frame
# (with the error's code) may still be sent.
FAILED = "FAILED"
# Both close frames have crossed, or we failed and sent our close.
CLOSED = "CLOSED"

# (state, what happened) -> next state.
_TRANSITIONS = {
    (OPEN, "send_close"): CLOSE_SENT,
    (OPEN, "receive_close"): CLOSE_RECEIVED,
    (CLOSE_SENT, "receive_close"): CLOSED,
    (CLOSE_RECEIVED, "send_close"): CLOSED,
    (OPEN, "protocol_error"): FAILED,
    (CLOSE_SENT, "protocol_error"): CLOSED,
    (FAILED, "send_close"): CLOSED,
}

_EMPTY = b""


class Connection:
    """The framing state of one side of one WebSocket (see the module docs).

    ``client`` selects the side: a client masks what it sends and requires
    unmasked frames; a server the reverse (RFC 6455 section 5.1).
    ``max_message_size`` bounds a reassembled, decompressed message
    (`ProtocolError` 1009 beyond it). ``deflate`` is the agreed
    permessage-deflate, if any.

    The counters ``wire_bytes_in``/``wire_bytes_out`` (frames, headers
    included) and ``message_bytes_in``/``message_bytes_out`` (message
    payloads before compression) let callers measure compression.
    """

    __slots__ = (
        "client",
        "state",
        "_max_message_size",
        "_deflate",
        "_buf",
        "_pos",
        "_frag_opcode",
        "_frag_compressed",
        "_frag_size",
        "_frag_parts",
        "_decoder",
        "_peer_mask",
        "wire_bytes_in",
        "wire_bytes_out",
        "message_bytes_in",
        "message_bytes_out",
    )

    def __init__(
        self,
        client: bool,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        deflate: Optional[PerMessageDeflate] = None,
    ) -> None:
        if not isinstance(max_message_size, int) or max_message_size < 0:
            raise ValueError(f"max_message_size must be a non-negative int, got {max_message_size!r}")
        self.client = client
        self.state = OPEN
        self._max_message_size = max_message_size
        self._deflate = deflate
        self._buf: Union[bytes, bytearray] = _EMPTY
        self._pos = 0
        # The message being reassembled from fragments, if any.
        self._frag_opcode = 0
        self._frag_compressed = False
        self._frag_size = 0
        self._frag_parts: Optional[list[Any]] = None
        self._decoder: Any = None
        # The mask bit every frame from the peer must carry (RFC 6455
        # section 5.1: clients mask, servers do not).
        self._peer_mask = 0 if client else _MASK_BIT
        self.wire_bytes_in = 0
        self.wire_bytes_out = 0
        self.message_bytes_in = 0
        self.message_bytes_out = 0

    def _transition(self, event: str) -> None:
        self.state = _TRANSITIONS[(self.state, event)]

    # -- receiving ---------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the peer; `next_event` parses them."""
        if (self.state is not OPEN and self.state is not CLOSE_SENT) or not data:
            return
        buf = self._buf
        pos = self._pos
        if pos >= len(buf):
            # Nothing pending: parse straight out of the caller's bytes.
            self._buf = data
            self._pos = 0
            return
        if type(buf) is not bytearray:
            buf = self._buf = bytearray(memoryview(buf)[pos:])
            self._pos = 0
        elif pos >= _COMPACT_AT:
            del buf[:pos]
            self._pos = 0
        buf += data

    def next_event(self) -> Optional[tuple[int, Any]]:
        """The next complete event, or None when more bytes are needed.

        Raises `ProtocolError` if the peer broke the protocol; the
        connection is then `FAILED` (or `CLOSED` if our close frame was
        already sent) and yields nothing more.
        """
        # Every way out of OPEN and CLOSE_SENT empties the buffer and
        # receive_data then refuses input, so an empty buffer is all that
        # has to be checked here for the state.
        try:
            while True:
                buf = self._buf
                pos = self._pos
                avail = len(buf) - pos
                if avail < 2:
                    return None
                b0 = buf[pos]
                b1 = buf[pos + 1]
                masked = b1 & _MASK_BIT
                length = b1 & 0x7F
                # A final, uncompressed text or binary frame that starts a
                # message, masked as this side requires, is valid as it is
                # and a whole message: the common case skips the full checks.
                whole = (
                    (b0 == _FIN_TEXT or b0 == _FIN_BINARY) and masked == self._peer_mask and self._frag_parts is None
                )
                if not whole:
                    self._check_header(b0, b0 & OPCODE_MASK, masked, length)
                head = 6 if masked else 2
                if length > 125:
                    if length == 126:
                        head += 2
                        if avail < head:
                            return None
                        length = _U16.unpack_from(buf, pos + 2)[0]
                    else:
                        head += 8
                        if avail < head:
                            return None
                        length = _U64.unpack_from(buf, pos + 2)[0]
                        if length > _MAX_FRAME_LENGTH:
                            raise ProtocolError(1002, "frame length uses the 64th bit")
                # Refuse an oversized frame before buffering it. Compressed
                # data is measured again once inflated.
                if whole:
                    if length > self._max_message_size:
                        raise ProtocolError(1009, "message too big")
                elif b0 & OPCODE_MASK < CLOSE:
                    if b0 & RSV1 or (b0 & OPCODE_MASK == CONTINUATION and self._frag_compressed):
                        if length > _deflate_bound(self._max_message_size):
                            raise ProtocolError(1009, "message too big")
                    elif self._frag_size + length > self._max_message_size:
                        raise ProtocolError(1009, "message too big")
                size = head + length
                if avail < size:
                    return None
                end = pos + size
                start = end - length
                if not masked:
                    # One copy out of a bytearray (its slice would be a
                    # second one).
                    payload = buf[start:end] if type(buf) is bytes else bytes(memoryview(buf)[start:end])
                elif length:
                    # websocket_mask's big-integer XOR, inlined for the hot
                    # path (the mask is known to be 4 bytes).
                    payload = (
                        int.from_bytes(buf[start:end], "little")
                        ^ int.from_bytes((buf[start - 4 : start] * ((length >> 2) + 1))[:length], "little")
                    ).to_bytes(length, "little")
                else:
                    payload = _EMPTY
                if avail == size:
                    # All consumed: drop the reference, so an idle
                    # connection holds no buffer.
                    self._buf = _EMPTY
                    self._pos = 0
                else:
                    self._pos = end
                self.wire_bytes_in += size
                if whole:
                    self.message_bytes_in += length
                    if b0 == _FIN_BINARY:
                        return BINARY, payload
                    try:
                        return TEXT, payload.decode()
                    except UnicodeDecodeError:
                        raise ProtocolError(1007, "invalid UTF-8 in a text message") from None
                event = self._frame_received(b0, b0 & OPCODE_MASK, payload)
                if event is not None:
                    return event
        except ProtocolError:
            self._fail()
            raise

    def _fail(self) -> None:
        if self.state is OPEN or self.state is CLOSE_SENT:
            self._transition("protocol_error")
        self._buf = _EMPTY
        self._pos = 0
        self._frag_parts = None
        self._decoder = None
        if self._deflate is not None:
            self._deflate.abandon_message()

    def _check_header(self, b0: int, opcode: int, masked: int, length: int) -> None:
        if bool(masked) == self.client:
            raise ProtocolError(
                1002, "server frames must not be masked" if self.client else "client frames must be masked"
            )
        rsv = b0 & RSV_MASK
        if opcode >= CLOSE:
            if opcode > PONG:
                raise ProtocolError(1002, f"reserved opcode {opcode:#x}")
            if not b0 & FIN:
                raise ProtocolError(1002, "fragmented control frame")
            if length > MAX_CONTROL_PAYLOAD:
                raise ProtocolError(1002, "control frame payload over 125 bytes")
            if rsv:
                raise ProtocolError(1002, "RSV bits set on a control frame")
            return
        if opcode > BINARY:
            raise ProtocolError(1002, f"reserved opcode {opcode:#x}")
        if rsv:
            # RSV1 marks the first frame of a compressed message (RFC 7692
            # section 6); nothing else may set an RSV bit.
            if rsv != RSV1 or self._deflate is None or opcode == CONTINUATION:
                raise ProtocolError(1002, "unexpected RSV bits")
        if opcode == CONTINUATION:
            if self._frag_parts is None:
                raise ProtocolError(1002, "continuation frame without a message to continue")
        elif self._frag_parts is not None:
            raise ProtocolError(1002, "new message before the previous one's final fragment")

    def _frame_received(self, b0: int, opcode: int, payload: bytes) -> Optional[tuple[int, Any]]:
        if opcode >= CLOSE:
            if opcode == CLOSE:
                return CLOSE, self._close_received(payload)
            return opcode, payload
        fin = b0 & FIN
        parts = self._frag_parts
        if parts is None:
            compressed = bool(b0 & RSV1)
            if fin:
                # A whole message in one frame: the common case, no state.
                if compressed:
                    payload = self._inflate(payload, 0, True)
                self.message_bytes_in += len(payload)
                if opcode == TEXT:
                    try:
                        return TEXT, payload.decode("utf-8")
                    except UnicodeDecodeError:
                        raise ProtocolError(1007, "invalid UTF-8 in a text message") from None
                return BINARY, payload
            self._frag_opcode = opcode
            self._frag_compressed = compressed
            self._frag_size = 0
            parts = self._frag_parts = []
            if opcode == TEXT:
                self._decoder = codecs.getincrementaldecoder("utf-8")()
        if self._frag_compressed:
            payload = self._inflate(payload, self._frag_size, bool(fin))
        self._frag_size += len(payload)
        decoder = self._decoder
        if decoder is not None:
            # Validate text as it arrives, so bad UTF-8 fails the message at
            # the first bad fragment rather than after buffering all of it.
            try:
                parts.append(decoder.decode(payload, final=bool(fin)))
            except UnicodeDecodeError:
                raise ProtocolError(1007, "invalid UTF-8 in a text message") from None
        else:
            parts.append(payload)
        if not fin:
            return None
        self._frag_parts = None
        self._decoder = None
        self.message_bytes_in += self._frag_size
        self._frag_size = 0
        if self._frag_opcode == TEXT:
            return TEXT, "".join(parts)
        return BINARY, b"".join(parts)

    def _inflate(self, payload: bytes, so_far: int, last: bool) -> bytes:
        limit = self._max_message_size - so_far
        try:
            out = self._deflate.decompress(payload, limit, last)  # type: ignore[union-attr]
        except zlib.error:
            raise ProtocolError(1007, "invalid compressed data") from None
        if len(out) > limit:
            raise ProtocolError(1009, "message too big")
        return out

    def _close_received(self, payload: bytes) -> tuple[Optional[int], str]:
        if len(payload) == 1:
            raise ProtocolError(1002, "close frame with a 1-byte body")
        code: Optional[int] = None
        reason = ""
        if payload:
            code = _U16.unpack_from(payload)[0]
            if not is_valid_close_code(code):
                raise ProtocolError(1002, f"invalid close code {code}")
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(1007, "invalid UTF-8 in a close reason") from None
        self._transition("receive_close")
        self._buf = _EMPTY
        self._pos = 0
        return code, reason

    # -- sending -----------------------------------------------------------

    def _frame(self, b0: int, payload: bytes) -> bytes:
        n = len(payload)
        if self.client:
            if n < 126:
                head = bytes((b0, n | _MASK_BIT))
            elif n < 65536:
                head = _HEAD_16.pack(b0, 126 | _MASK_BIT, n)
            else:
                head = _HEAD_64.pack(b0, 127 | _MASK_BIT, n)
            key = os.urandom(4)
            out = head + key + websocket_mask(key, payload)
        else:
            if n < 126:
                out = bytes((b0, n)) + payload
            elif n < 65536:
                out = _HEAD_16.pack(b0, 126, n) + payload
            else:
                out = _HEAD_64.pack(b0, 127, n) + payload
        self.wire_bytes_out += len(out)
        return out

    def _check_can_send(self, closing: bool = False) -> None:
        state = self.state
        if state is not OPEN and state is not CLOSE_RECEIVED and not (closing and state is FAILED):
            raise RuntimeError(f"cannot send on a WebSocket in state {state}")

    def message(self, payload: Union[str, bytes], binary: bool = False) -> bytes:
        """The frame carrying one whole message: a text message for `str`
        payloads (and bytes with ``binary`` false, which must be UTF-8),
        binary otherwise. Compressed when permessage-deflate was agreed.

        Raises `RuntimeError` once we have sent a close frame.
        """
        state = self.state
        if state is not OPEN and state is not CLOSE_RECEIVED:
            self._check_can_send()
        if isinstance(payload, str):
            payload = payload.encode()
        elif type(payload) is not bytes:
            payload = bytes(payload)
        n = len(payload)
        self.message_bytes_out += n
        if n <= _MAX_SMALL_PAYLOAD and self._deflate is None and not self.client:
            # The common small server message: a ready-made header.
            self.wire_bytes_out += n + 2
            return (_BINARY_HEADS if binary else _TEXT_HEADS)[n] + payload
        b0 = FIN | (BINARY if binary else TEXT)
        deflate = self._deflate
        if deflate is not None:
            payload = deflate.compress(payload)
            b0 |= RSV1
        return self._frame(b0, payload)

    def _control(self, opcode: int, payload: bytes) -> bytes:
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ValueError(
                f"control frame payload is at most {MAX_CONTROL_PAYLOAD} bytes, got {len(payload)}"
            )
        self._check_can_send()
        return self._frame(FIN | opcode, bytes(payload))

    def ping(self, payload: bytes = b"") -> bytes:
        """A ping frame; `ValueError` if ``payload`` is over 125 bytes."""
        return self._control(PING, payload)

    def pong(self, payload: bytes = b"") -> bytes:
        """A pong frame; `ValueError` if ``payload`` is over 125 bytes."""
        return self._control(PONG, payload)

    def close(self, code: Optional[int] = None, reason: str = "") -> bytes:
        """Our close frame, starting (or completing) the closing handshake.

        ``code`` None sends a close frame without a body (then ``reason``
        must be empty). Raises `ValueError` for a code that may not be sent
        or a reason over 123 bytes of UTF-8, and `RuntimeError` if a close
        frame was already sent.
        """
        if code is None:
            if reason:
                raise ValueError(f"a close reason needs a close code, got reason {reason!r}")
            body = b""
        else:
            if not isinstance(code, int) or not is_valid_close_code(code):
                raise ValueError(f"invalid WebSocket close code {code!r}")
            encoded = reason.encode("utf-8")
            if len(encoded) > MAX_CLOSE_REASON:
                raise ValueError(
                    f"close reason is at most {MAX_CLOSE_REASON} bytes of UTF-8, got {len(encoded)}"
                )
            body = _U16.pack(code) + encoded
        self._check_can_send(closing=True)
        self._transition("send_close")
        return self._frame(FIN | CLOSE, body)
