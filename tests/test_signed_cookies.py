"""Signed values and cookies: squall's format is byte-compatible with Tornado's.

Values signed by squall are read by the real tornado package (installed for
comparison) with the same secret, and the other way round, for both format
versions and with key rotation. A cookie set by a squall handler over a real
socket is read back by tornado too.
"""

from __future__ import annotations

import http.cookies

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

tornado_web = pytest.importorskip("tornado.web")

from squall import web  # noqa: E402

SECRET = "It's a secret to everybody"
KEYS = {0: "first-key-0123456789", 1: "second-key-abcdefghij", 7: b"bytes-key"}
NOW = 1_300_000_000.0


def clock() -> float:
    return NOW


def test_known_vectors_match_tornado_exactly() -> None:
    for version in (1, 2):
        ours = web.create_signed_value(SECRET, "key", "value", version=version, clock=clock)
        theirs = tornado_web.create_signed_value(SECRET, "key", "value", version=version, clock=clock)
        assert ours == theirs
    assert web.create_signed_value(SECRET, "key", "value", clock=clock) == (
        b"2|1:0|10:1300000000|3:key|8:dmFsdWU=|"
        b"3d4e60b996ff9c5d5788e333a0cba6f238a22c6c0f94788870e1a9ecd482e152"
    )


@pytest.mark.parametrize("version", [1, 2])
def test_squall_signs_tornado_reads(version: int) -> None:
    signed = web.create_signed_value(SECRET, "session", b"\x00user\xff", version=version, clock=clock)
    assert tornado_web.decode_signed_value(SECRET, "session", signed, clock=clock) == b"\x00user\xff"
    # Signed for another name: refused by both.
    assert tornado_web.decode_signed_value(SECRET, "other", signed, clock=clock) is None


@pytest.mark.parametrize("version", [1, 2])
def test_tornado_signs_squall_reads(version: int) -> None:
    signed = tornado_web.create_signed_value(SECRET, "session", "héllo", version=version, clock=clock)
    assert web.decode_signed_value(SECRET, "session", signed, clock=clock) == "héllo".encode()
    assert web.decode_signed_value("wrong secret", "session", signed, clock=clock) is None
    assert web.decode_signed_value(SECRET, "session", signed, clock=clock, min_version=version) is not None
    if version == 1:
        assert web.decode_signed_value(SECRET, "session", signed, clock=clock, min_version=2) is None


def test_key_rotation_both_ways() -> None:
    for key_version in KEYS:
        ours = web.create_signed_value(KEYS, "k", "v", clock=clock, key_version=key_version)
        theirs = tornado_web.create_signed_value(KEYS, "k", "v", clock=clock, key_version=key_version)
        assert ours == theirs
        assert web.get_signature_key_version(ours) == key_version
        assert tornado_web.get_signature_key_version(ours) == key_version
        assert tornado_web.decode_signed_value(KEYS, "k", ours, clock=clock) == b"v"
        assert web.decode_signed_value(KEYS, "k", theirs, clock=clock) == b"v"
    # Retiring a key invalidates what it signed.
    signed = web.create_signed_value(KEYS, "k", "v", clock=clock, key_version=0)
    retired = {k: v for k, v in KEYS.items() if k != 0}
    assert web.decode_signed_value(retired, "k", signed, clock=clock) is None
    assert web.get_signature_key_version(web.create_signed_value(SECRET, "k", "v", version=1)) is None


def test_expiry_and_future_timestamps(caplog: pytest.LogCaptureFixture) -> None:
    signed = web.create_signed_value(SECRET, "k", "v", clock=lambda: NOW - 32 * 86400)
    assert web.decode_signed_value(SECRET, "k", signed, clock=clock) is None
    assert web.decode_signed_value(SECRET, "k", signed, clock=clock, max_age_days=40) == b"v"
    # Version 1 signatures do not separate the value from the timestamp, so
    # digits can move between them; the resulting far-future date is refused.
    v1 = web.create_signed_value(SECRET, "k", b"\xd7m\xf8\xe7\xae\xfc", version=1, clock=clock)
    value, timestamp, signature = v1.split(b"|")
    assert value == b"12345678"
    tampered = b"1234|5678" + timestamp + b"|" + signature
    with caplog.at_level("WARNING", logger="squall.general"):
        assert web.decode_signed_value(SECRET, "k", tampered, clock=clock) is None
    assert "Cookie timestamp in future" in caplog.text
    assert tornado_web.decode_signed_value(SECRET, "k", tampered, clock=clock) is None


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"2|",
        b"2|1:0|10:1300000000|3:key|8:dmFsdWU=",
        b"2|1:0|10:130000000|3:key|8:dmFsdWU=|3d4e",
        b"2|1:x|10:1300000000|3:key|8:dmFsdWU=|00",
        b"2|-1:0|10:1300000000|3:key|8:dmFsdWU=|00",
        b"9|whatever",
        b"not|a|signature",
    ],
)
def test_malformed_values_decode_to_none(bad: bytes) -> None:
    assert web.decode_signed_value(SECRET, "key", bad, clock=clock) is None
    assert web.get_signature_key_version(bad) is None


def test_bad_arguments_raise_at_once() -> None:
    with pytest.raises(ValueError, match="3"):
        web.create_signed_value(SECRET, "k", "v", version=3)
    with pytest.raises(ValueError, match="key_version"):
        web.create_signed_value(KEYS, "k", "v")
    with pytest.raises(ValueError, match="99"):
        web.create_signed_value(KEYS, "k", "v", key_version=99)
    with pytest.raises(ValueError, match="min_version 3"):
        web.decode_signed_value(SECRET, "k", "x", min_version=3)


# Cookie names are RFC 6265 tokens (printable ASCII).
_TOKEN_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='()<>@,;:\\"/[]?={}')


@settings(max_examples=60, deadline=None)
@given(
    name=st.text(_TOKEN_CHARS, min_size=1, max_size=20),
    value=st.binary(max_size=200),
    version=st.sampled_from([1, 2]),
)
def test_roundtrip_property(name: str, value: bytes, version: int) -> None:
    ours = web.create_signed_value(SECRET, name, value, version=version, clock=clock)
    theirs = tornado_web.create_signed_value(SECRET, name, value, version=version, clock=clock)
    assert ours == theirs
    assert web.decode_signed_value(SECRET, name, theirs, clock=clock) == value
    assert tornado_web.decode_signed_value(SECRET, name, ours, clock=clock) == value


def test_non_ascii_names_round_trip() -> None:
    # Tornado writes the name's length in characters, not bytes, so it cannot
    # read back its own values for non-ASCII names; squall counts bytes.
    signed = web.create_signed_value(SECRET, "nämé", "v", clock=clock)
    assert b"|6:n\xc3\xa4m\xc3\xa9|" in signed
    assert web.decode_signed_value(SECRET, "nämé", signed, clock=clock) == b"v"


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=120))
def test_decoding_garbage_never_raises(garbage: bytes) -> None:
    # The only oracle: a result or None, never an exception.
    web.decode_signed_value(SECRET, "k", garbage, clock=clock)
    web.get_signature_key_version(garbage)


def test_cookies_cross_between_squall_server_and_tornado() -> None:
    import asyncio

    from test_web import fetch, serving

    class Login(web.RequestHandler):
        def get(self) -> None:
            self.set_signed_cookie("user", "alice", version=int(self.get_argument("v")))

    class Whoami(web.RequestHandler):
        def get(self) -> None:
            self.write(repr(self.get_signed_cookie("user")))

    async def main() -> None:
        app = web.Application([("/login", Login), ("/whoami", Whoami)], cookie_secret=SECRET)
        async with serving(app) as port:
            for version in (1, 2):
                header = (await fetch(port, "/login?v=%d" % version)).headers["Set-Cookie"]
                morsel = http.cookies.SimpleCookie(header)["user"]
                # A cookie set by a squall handler is accepted by tornado...
                assert tornado_web.decode_signed_value(SECRET, "user", morsel.value) == b"alice"
                # ...and one signed by tornado is accepted by a squall handler.
                theirs = tornado_web.create_signed_value(SECRET, "user", "bob", version=version)
                r = await fetch(port, "/whoami", headers={"Cookie": "user=" + theirs.decode()})
                assert r.body == b"b'bob'"
                wrong = tornado_web.create_signed_value("other secret", "user", "eve", version=version)
                r = await fetch(port, "/whoami", headers={"Cookie": "user=" + wrong.decode()})
                assert r.body == b"None"

    asyncio.run(main())
