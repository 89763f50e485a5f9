"""Unit tests of squall._wsproto: WebSocket framing and permessage-deflate
without sockets."""

from __future__ import annotations

import os
import struct
import zlib

import pytest

from squall import _wsproto as wp
from squall._wsproto import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    Connection,
    DeflateParams,
    PerMessageDeflate,
    ProtocolError,
)


def frame(b0: int, payload: bytes, mask: bytes | None = b"\x01\x02\x03\x04", length: int | None = None) -> bytes:
    """Build a frame by hand (independently of Connection._frame)."""
    n = len(payload) if length is None else length
    mbit = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 65536:
        head = bytes((b0, mbit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, mbit | 127)) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def events(conn: Connection, data: bytes) -> list:
    conn.receive_data(data)
    out = []
    while (ev := conn.next_event()) is not None:
        out.append(ev)
    return out


def error_of(conn: Connection, data: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        events(conn, data)
    assert conn.state == wp.FAILED
    # Reading has stopped; our close frame (with the error's code) may go out.
    assert conn.next_event() is None
    conn.close(info.value.code)
    assert conn.state == wp.CLOSED
    with pytest.raises(RuntimeError, match="CLOSED"):
        conn.message("x")
    return info.value


# --- masking and handshake helpers ------------------------------------------


def test_mask_known_vectors() -> None:
    assert wp.websocket_mask(b"abcd", b"") == b""
    assert wp.websocket_mask(b"abcd", b"b") == b"\x03"
    assert wp.websocket_mask(b"ZXCV", b"98765432") == b"c`t`olpd"
    data = os.urandom(1001)
    assert wp.websocket_mask(b"\xff\x00\x80\x7f", wp.websocket_mask(b"\xff\x00\x80\x7f", data)) == data


@pytest.mark.parametrize("mask", [b"", b"abc", b"abcde"])
def test_mask_length_is_checked(mask: bytes) -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        wp.websocket_mask(mask, b"data")


def test_accept_value_rfc_example() -> None:
    # RFC 6455 section 1.3.
    assert wp.accept_value("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    "key,ok",
    [
        ("dGhlIHNhbXBsZSBub25jZQ==", True),
        ("dGhlIHNhbXBsZSBub25jZQ", False),
        ("dGhlIHNhbXBsZSBub25jZR==", False),  # non-zero padding bits
        ("!!!!!!!!!!!!!!!!!!!!!!==", False),
        ("", False),
    ],
)
def test_is_valid_key(key: str, ok: bool) -> None:
    assert wp.is_valid_key(key) is ok


def test_parse_extensions() -> None:
    assert wp.parse_extensions(
        'Permessage-Deflate ; client_max_window_bits ,, x-foo; a="b\\"c"; B=1'
    ) == [
        ("permessage-deflate", [("client_max_window_bits", None)]),
        ("x-foo", [("a", 'b"c'), ("b", "1")]),
    ]
    assert wp.parse_extensions("") == []
    for bad in ("a b", "a;", "a; =1", "a; b=", ";a"):
        with pytest.raises(ValueError, match="Sec-WebSocket-Extensions"):
            wp.parse_extensions(bad)


# --- receiving ----------------------------------------------------------------


def test_text_and_binary_messages() -> None:
    server = Connection(client=False)
    data = frame(0x81, "héllo".encode()) + frame(0x82, b"\x00\xff")
    assert events(server, data) == [(TEXT, "héllo"), (BINARY, b"\x00\xff")]
    assert server.message_bytes_in == 8
    assert server.wire_bytes_in == len(data)


def test_byte_by_byte_and_extended_lengths() -> None:
    client = Connection(client=True)
    payloads = [b"a" * 125, b"b" * 126, b"c" * 65535, b"d" * 65536]
    data = b"".join(frame(0x82, p, mask=None) for p in payloads)
    got = []
    for i in range(0, len(data), 997):
        got += events(client, data[i : i + 997])
    assert got == [(BINARY, p) for p in payloads]
    # Everything was consumed: an idle connection keeps no buffer.
    assert client._buf == b""


def test_fragmented_text_with_interleaved_control_frames() -> None:
    server = Connection(client=False)
    text = "snow ☃ man".encode()
    # Split inside the multi-byte snowman.
    data = (
        frame(0x01, text[:6])
        + frame(0x89, b"p")
        + frame(0x00, text[6:7])
        + frame(0x8A, b"q")
        + frame(0x80, text[7:])
    )
    assert events(server, data) == [(PING, b"p"), (PONG, b"q"), (TEXT, "snow ☃ man")]


def test_fragmented_binary() -> None:
    server = Connection(client=False)
    data = frame(0x02, b"ab") + frame(0x00, b"") + frame(0x80, b"cd")
    assert events(server, data) == [(BINARY, b"abcd")]


def test_close_frames() -> None:
    server = Connection(client=False)
    assert events(server, frame(0x88, struct.pack("!H", 1001) + "bye ✓".encode())) == [
        (CLOSE, (1001, "bye ✓"))
    ]
    assert server.state == wp.CLOSE_RECEIVED
    # Nothing after a close frame is read.
    assert events(server, frame(0x81, b"late")) == []
    server.close(1001)
    assert server.state == wp.CLOSED
    empty = Connection(client=False)
    assert events(empty, frame(0x88, b"")) == [(CLOSE, (None, ""))]


@pytest.mark.parametrize(
    "data,code",
    [
        (frame(0x81, b"x", mask=None), 1002),  # unmasked client frame
        (frame(0x83, b"x"), 1002),  # reserved data opcode
        (frame(0x8B, b"x"), 1002),  # reserved control opcode
        (frame(0x09, b"x"), 1002),  # fragmented ping
        (frame(0x89, b"x" * 126), 1002),  # ping over 125 bytes
        (frame(0xC1, b"x"), 1002),  # RSV1 without permessage-deflate
        (frame(0xA1, b"x"), 1002),  # RSV2
        (frame(0x80, b"x"), 1002),  # continuation with nothing to continue
        (frame(0x01, b"x") + frame(0x81, b"y"), 1002),  # new message mid-message
        (frame(0x88, b"\x03"), 1002),  # 1-byte close body
        (frame(0x88, struct.pack("!H", 1005)), 1002),  # close code never sent
        (frame(0x88, struct.pack("!H", 2999)), 1002),
        (frame(0x88, struct.pack("!H", 1000) + b"\xff"), 1007),
        (frame(0x81, b"\xc3\x28"), 1007),  # invalid UTF-8
        (frame(0x01, b"\xe2\x98") + frame(0x80, b""), 1007),  # truncated character
        (frame(0x01, b"\xff") + frame(0x80, b"ok"), 1007),
        (bytes((0x82, 0xFF)) + b"\x80" + b"\0" * 7 + b"mask", 1002),  # 64th length bit
    ],
)
def test_protocol_errors(data: bytes, code: int) -> None:
    server = Connection(client=False)
    assert error_of(server, data).code == code
    # A failed connection stays failed and quiet.
    assert events(server, frame(0x81, b"x")) == []


def test_invalid_utf8_fails_at_the_first_bad_fragment() -> None:
    server = Connection(client=False)
    assert events(server, frame(0x01, b"ok")) == []
    assert error_of(server, frame(0x00, b"\xff")).code == 1007


def test_client_rejects_masked_frames() -> None:
    assert error_of(Connection(client=True), frame(0x81, b"x")).code == 1002


def test_max_message_size() -> None:
    server = Connection(client=False, max_message_size=10)
    assert events(server, frame(0x82, b"x" * 10)) == [(BINARY, b"x" * 10)]
    # Refused on the header alone: the payload never has to arrive.
    err = error_of(Connection(client=False, max_message_size=10), frame(0x82, b"", length=11)[:2])
    assert err.code == 1009
    fragmented = Connection(client=False, max_message_size=10)
    assert error_of(fragmented, frame(0x02, b"x" * 6) + frame(0x80, b"x" * 5)).code == 1009
    with pytest.raises(ValueError, match="max_message_size"):
        Connection(client=False, max_message_size=-1)


# --- sending ------------------------------------------------------------------


def test_server_frames_are_unmasked_and_client_frames_masked() -> None:
    server, client = Connection(client=False), Connection(client=True)
    assert server.message("hi") == b"\x81\x02hi"
    assert server.message(b"\x00", binary=True) == b"\x82\x01\x00"
    out = client.message("hi")
    assert out[:2] == b"\x81\x82" and len(out) == 8
    assert wp.websocket_mask(out[2:6], out[6:]) == b"hi"
    for size in (125, 126, 65535, 65536):
        assert events(client, server.message(b"z" * size, binary=True)) == [(BINARY, b"z" * size)]
        assert events(server, client.message("y" * size)) == [(TEXT, "y" * size)]


def test_every_short_length_both_ways() -> None:
    # Lengths around the 7-bit field's end: the ready-made headers and the
    # inline unmasking must agree with frames built by hand.
    server, client = Connection(client=False), Connection(client=True)
    sent = 0
    for n in range(131):
        payload = os.urandom(n)
        text = "é" * (n // 2)
        out = server.message(payload, binary=True)
        assert out == frame(0x82, payload, mask=None)
        sent += len(out)
        out = server.message(text)
        assert out == frame(0x81, text.encode(), mask=None)
        sent += len(out)
        assert events(client, server.message(payload, binary=True) + server.message(text)) == [
            (BINARY, payload),
            (TEXT, text),
        ]
        assert events(server, frame(0x82, payload, mask=os.urandom(4))) == [(BINARY, payload)]
        assert events(server, frame(0x81, text.encode(), mask=os.urandom(4))) == [(TEXT, text)]
    assert server._buf == b"" and client._buf == b""
    # The client read every frame the server built except the first pair of each round.
    assert client.wire_bytes_in == server.wire_bytes_out - sent


def test_control_frames_out() -> None:
    server = Connection(client=False)
    assert server.ping(b"abc") == b"\x89\x03abc"
    assert server.pong(b"") == b"\x8a\x00"
    with pytest.raises(ValueError, match="125"):
        server.ping(b"x" * 126)
    with pytest.raises(ValueError, match="close code 1005"):
        server.close(1005)
    with pytest.raises(ValueError, match="123"):
        server.close(1000, "x" * 124)
    with pytest.raises(ValueError, match="needs a close code"):
        server.close(None, "why")
    assert server.close(4000, "ok") == b"\x88\x04\x0f\xa0ok"
    assert server.state == wp.CLOSE_SENT
    with pytest.raises(RuntimeError, match="CLOSE_SENT"):
        server.message("more")
    with pytest.raises(RuntimeError, match="CLOSE_SENT"):
        server.close(1000)
    # The peer's answer completes the handshake.
    assert events(server, frame(0x88, struct.pack("!H", 4000))) == [(CLOSE, (4000, ""))]
    assert server.state == wp.CLOSED


def test_state_transitions_table() -> None:
    # Each edge of the closing handshake, plus failing from the two states
    # that still read.
    for first, second, final in [
        ("send_close", "receive_close", wp.CLOSED),
        ("receive_close", "send_close", wp.CLOSED),
    ]:
        conn = Connection(client=False)
        conn._transition(first)
        conn._transition(second)
        assert conn.state == final
    with pytest.raises(KeyError):
        conn._transition("send_close")
    failed = Connection(client=False)
    failed._transition("send_close")
    failed._transition("protocol_error")
    assert failed.state == wp.CLOSED


# --- permessage-deflate -------------------------------------------------------


def test_negotiate_deflate_server() -> None:
    agreed = wp.negotiate_deflate("permessage-deflate; client_max_window_bits", {})
    assert agreed is not None and agreed.header_value() == "permessage-deflate"
    agreed = wp.negotiate_deflate(
        "x-unknown, permessage-deflate; server_max_window_bits=8, "
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
        " server_max_window_bits=10; client_max_window_bits=12",
        {},
    )
    assert agreed is not None
    assert agreed.header_value() == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
        " server_max_window_bits=10; client_max_window_bits=12"
    )
    for declined in (
        "",
        "x-foo",
        "permessage-deflate; foo",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; client_max_window_bits=08",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate;;",
    ):
        assert wp.negotiate_deflate(declined, {}) is None, declined
    with pytest.raises(ValueError, match="unknown compression option 'level'"):
        wp.negotiate_deflate("permessage-deflate", {"level": 1})


def test_accept_deflate_client() -> None:
    assert wp.deflate_offer({}) == "permessage-deflate; client_max_window_bits"
    assert wp.accept_deflate("") is None
    agreed = wp.accept_deflate("permessage-deflate; client_max_window_bits=10")
    assert agreed is not None and agreed.client_max_window_bits == 10
    for bad in (
        "x-foo",
        "permessage-deflate, permessage-deflate",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; client_max_window_bits=8",
        "permessage-deflate; bogus",
    ):
        with pytest.raises(ValueError):
            wp.accept_deflate(bad)


def deflate_pair(params: DeflateParams, max_message_size: int = 1 << 20) -> tuple[Connection, Connection]:
    return (
        Connection(client=False, max_message_size=max_message_size, deflate=PerMessageDeflate(params, client=False)),
        Connection(client=True, max_message_size=max_message_size, deflate=PerMessageDeflate(params, client=True)),
    )


@pytest.mark.parametrize(
    "params",
    [
        DeflateParams(),
        DeflateParams(True, True),
        DeflateParams(server_max_window_bits=9, client_max_window_bits=9),
    ],
)
def test_deflate_round_trip(params: DeflateParams) -> None:
    server, client = deflate_pair(params)
    message = "Hello world. Testing 123 123"
    sizes = []
    for _ in range(3):
        out = client.message(message)
        assert out[0] == 0xC1  # FIN, RSV1, text
        sizes.append(len(out))
        assert events(server, out) == [(TEXT, message)]
        assert events(client, server.message(message)) == [(TEXT, message)]
    if params.client_no_context_takeover:
        assert sizes[0] == sizes[2]
        assert server._deflate._decompressor is None  # state only while a message is in flight
        assert client._deflate._compressor is None
    else:
        assert sizes[2] < sizes[0]
    assert events(server, client.message(b"", binary=True)) == [(BINARY, b"")]
    assert server.message_bytes_in == client.message_bytes_out == 3 * len(message)


def test_deflate_fragmented_message_from_a_peer() -> None:
    server, _ = deflate_pair(DeflateParams())
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = c.compress(b"abc" * 1000) + c.flush(zlib.Z_SYNC_FLUSH)
    body = body[:-4]
    data = frame(0x42, body[:5]) + frame(0x00, body[5:9]) + frame(0x80, body[9:])
    assert events(server, data) == [(BINARY, b"abc" * 1000)]


def test_deflate_bomb_is_refused_without_inflating_it() -> None:
    server, client = deflate_pair(DeflateParams(), max_message_size=1024)
    bomb = client.message(b"\0" * (1 << 20), binary=True)
    assert len(bomb) < 2048
    assert error_of(server, bomb).code == 1009
    server, client = deflate_pair(DeflateParams(), max_message_size=1024)
    assert events(server, client.message(b"\0" * 1024, binary=True)) == [(BINARY, b"\0" * 1024)]


def test_deflate_garbage_and_bad_rsv() -> None:
    server, _ = deflate_pair(DeflateParams())
    assert error_of(server, frame(0xC2, b"\xff\xff\xff\xff")).code == 1007
    server, _ = deflate_pair(DeflateParams())
    # RSV1 on a continuation frame or a control frame is a framing error.
    assert error_of(server, frame(0x02, b"") + frame(0xC0, b"")).code == 1002
    server, _ = deflate_pair(DeflateParams())
    assert error_of(server, frame(0xC9, b"")).code == 1002


def test_deflate_options_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown compression option"):
        PerMessageDeflate(DeflateParams(), client=False, options={"window": 9})
    with pytest.raises((ValueError, zlib.error)):
        PerMessageDeflate(DeflateParams(), client=False, options={"mem_level": 99})
    small = PerMessageDeflate(DeflateParams(), client=False, options={"compression_level": 1, "mem_level": 1})
    assert zlib.decompressobj(-15).decompress(small.compress(b"x" * 100) + b"\x00\x00\xff\xff") == b"x" * 100


def test_tornado_shaped_deflate_objects_round_trip_and_cap_size() -> None:
    import pytest as _pytest

    from squall.websocket import (
        _DecompressTooLargeError,
        _PerMessageDeflateCompressor,
        _PerMessageDeflateDecompressor,
    )

    for persistent in (True, False):
        for wbits in (9, 12, None):
            c = _PerMessageDeflateCompressor(persistent, wbits)
            d = _PerMessageDeflateDecompressor(persistent, wbits, max_message_size=1 << 16)
            for message in (b"", b"hello " * 50, bytes(range(256)) * 8, b"hello " * 50):
                assert d.decompress(c.compress(message)) == message
    big = _PerMessageDeflateCompressor(False, None).compress(b"z" * 5000)
    with _pytest.raises(_DecompressTooLargeError):
        _PerMessageDeflateDecompressor(False, None, 4999).decompress(big)
    assert _PerMessageDeflateDecompressor(False, None, 5000).decompress(big) == b"z" * 5000
