"""Fuzz squall._wsproto with hypothesis: whatever bytes arrive, in whatever
pieces, the parser yields events or a clean ProtocolError, never crashes,
never hangs, and never buffers without bound."""

from __future__ import annotations

import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squall import _wsproto as wp

_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_MAX = 4096


def _drain(conn: wp.Connection, pieces: list[bytes]) -> list:
    out = []
    try:
        for piece in pieces:
            conn.receive_data(piece)
            # Bounded: each event consumes at least one 2-byte frame header.
            for _ in range(len(piece) + 1):
                ev = conn.next_event()
                if ev is None:
                    break
                out.append(ev)
            else:
                raise AssertionError("next_event did not stop")
    except wp.ProtocolError as e:
        assert e.code in (1002, 1007, 1009), e
        assert conn.state == wp.FAILED
        assert conn.next_event() is None
    # Unparsed input is bounded by one frame header plus the size limit.
    assert len(conn._buf) - conn._pos <= 14 + wp._deflate_bound(_MAX)
    for opcode, payload in out:
        if opcode == wp.TEXT:
            assert isinstance(payload, str) and len(payload.encode()) <= _MAX
        elif opcode == wp.BINARY:
            assert isinstance(payload, bytes) and len(payload) <= _MAX
        elif opcode == wp.CLOSE:
            code, reason = payload
            assert code is None or wp.is_valid_close_code(code)
            assert isinstance(reason, str)
        else:
            assert opcode in (wp.PING, wp.PONG) and len(payload) <= 125
    return out


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points + [len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


@_SETTINGS
@given(st.binary(max_size=512), st.lists(st.integers(0, 600), max_size=8), st.booleans(), st.booleans())
def test_random_bytes(data: bytes, cuts: list[int], client: bool, deflate: bool) -> None:
    params = wp.DeflateParams()
    conn = wp.Connection(
        client=client,
        max_message_size=_MAX,
        deflate=wp.PerMessageDeflate(params, client=client) if deflate else None,
    )
    _drain(conn, _split(data, cuts))


# Frames that are mostly well-formed, so the fuzzer gets past the header checks.
_frame = st.tuples(
    st.sampled_from([0x00, 0x80, 0x01, 0x81, 0x02, 0x82, 0x88, 0x89, 0x8A, 0xC1, 0x41, 0x03, 0x8B]),
    st.binary(max_size=300),
    st.booleans(),
)


@_SETTINGS
@given(st.lists(_frame, max_size=8), st.lists(st.integers(0, 3000), max_size=6), st.booleans())
def test_structured_frames(frames: list, cuts: list[int], compressed: bool) -> None:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    wire = b""
    for b0, payload, deflate_it in frames:
        if compressed and deflate_it and b0 & 0x40:
            payload = (c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
        n = len(payload)
        if n < 126:
            head = bytes((b0, 0x80 | n))
        else:
            head = bytes((b0, 0x80 | 126)) + n.to_bytes(2, "big")
        wire += head + b"\x00\x00\x00\x00" + payload
    conn = wp.Connection(
        client=False,
        max_message_size=_MAX,
        deflate=wp.PerMessageDeflate(wp.DeflateParams(), client=False) if compressed else None,
    )
    _drain(conn, _split(wire, cuts))


@_SETTINGS
@given(st.lists(st.one_of(st.text(max_size=200), st.binary(max_size=200)), max_size=6), st.booleans())
def test_round_trip(messages: list, compressed: bool) -> None:
    params = wp.DeflateParams()
    server = wp.Connection(False, deflate=wp.PerMessageDeflate(params, False) if compressed else None)
    client = wp.Connection(True, deflate=wp.PerMessageDeflate(params, True) if compressed else None)
    wire = b"".join(client.message(m, binary=isinstance(m, bytes)) for m in messages)
    got = _drain(server, [wire])
    assert [p for _, p in got] == messages


@_SETTINGS
@given(st.text(max_size=100))
def test_parse_extensions_never_crashes(header: str) -> None:
    try:
        parsed = wp.parse_extensions(header)
    except ValueError:
        return
    for name, params in parsed:
        assert name and name == name.lower()
        for pname, _ in params:
            assert pname == pname.lower()
    wp.negotiate_deflate(header, {})
