"""Tests for squall._abnf: the RFC 9110 / 9112 grammar and the framing helpers."""

import time

import pytest

from squall import _abnf


@pytest.mark.parametrize("name", ["Host", "X-Foo_bar.baz", "a", "!#$%&'*+-.^_`|~09AZaz"])
def test_token_accepts(name):
    assert _abnf.TOKEN_RE.fullmatch(name)


@pytest.mark.parametrize("name", ["", "a b", "a:b", "a\tb", "é", "a(b)", "a\x00", "a/b", 'a"'])
def test_token_rejects(name):
    assert not _abnf.TOKEN_RE.fullmatch(name)


@pytest.mark.parametrize("value", ["", "x", "a b", "a\tb", "\x80\xff", "a  \t b", "!~"])
def test_field_value_accepts(value):
    assert _abnf.FIELD_VALUE_RE.fullmatch(value)


@pytest.mark.parametrize("value", [" a", "a ", "\t", "a\rb", "a\nb", "a\x00", "a\x7f", "a\x1fb", "\u0100"])
def test_field_value_rejects(value):
    assert not _abnf.FIELD_VALUE_RE.fullmatch(value)


@pytest.mark.parametrize(
    "line, groups",
    [
        ("GET / HTTP/1.1", ("GET", "/", "HTTP/1.1")),
        ("OPTIONS * HTTP/1.0", ("OPTIONS", "*", "HTTP/1.0")),
        ("CONNECT example.com:443 HTTP/1.1", ("CONNECT", "example.com:443", "HTTP/1.1")),
        ("GET http://a/b?c#d HTTP/1.1", ("GET", "http://a/b?c#d", "HTTP/1.1")),
    ],
)
def test_request_line(line, groups):
    m = _abnf.REQUEST_LINE_RE.fullmatch(line)
    assert m is not None and m.groups() == groups


@pytest.mark.parametrize(
    "line",
    ["GET  / HTTP/1.1", "GET / HTTP/1.1 ", "GET /a b HTTP/1.1", "GET\t/ HTTP/1.1", "GET / HTTP/11", "G@T / HTTP/1.1", "GET / http/1.1", "GET / HTTP/1.1\r"],
)
def test_request_line_rejects(line):
    assert _abnf.REQUEST_LINE_RE.fullmatch(line) is None


@pytest.mark.parametrize(
    "line, groups",
    [
        ("HTTP/1.1 200 OK", ("HTTP/1.1", "200", "OK")),
        ("HTTP/1.1 404 ", ("HTTP/1.1", "404", None)),
        ("HTTP/1.0 500 Internal \t Error", ("HTTP/1.0", "500", "Internal \t Error")),
    ],
)
def test_status_line(line, groups):
    m = _abnf.STATUS_LINE_RE.fullmatch(line)
    assert m is not None and m.groups() == groups


@pytest.mark.parametrize("line", ["HTTP/1.1 200", "HTTP/1.1 20 OK", "HTTP/1.1 2000 OK", "HTTP/1.1 200 O\x00K"])
def test_status_line_rejects(line):
    assert _abnf.STATUS_LINE_RE.fullmatch(line) is None


@pytest.mark.parametrize(
    "host", ["", "example.com", "example.com:80", "127.0.0.1:8888", "[::1]", "[::1]:80", "a%20b", "xn--bcher-kva.ch:"]
)
def test_host_accepts(host):
    assert _abnf.HOST_RE.fullmatch(host)


@pytest.mark.parametrize("host", ["a b", "a/b", "é", "a:b", "[::1", "a@b", "a:80:80"])
def test_host_rejects(host):
    assert not _abnf.HOST_RE.fullmatch(host)


@pytest.mark.parametrize(
    "value, expected",
    [("0", 0), ("5", 5), (b"42", 42), ("007", 7), ("5, 5", 5), ("5,5,5", 5), (str(2**63 - 1), 2**63 - 1), ("0" * 100 + "1", 1)],
)
def test_parse_content_length(value, expected):
    assert _abnf.parse_content_length(value) == expected


@pytest.mark.parametrize(
    "value",
    ["", "+1", "-1", " 1", "1 ", "1_0", "0x10", "1.0", "５", "1,2", "5, 6", ",", "5,", str(2**63), "9" * 5000, "1\n"],
)
def test_parse_content_length_rejects(value):
    with pytest.raises(ValueError) as info:
        _abnf.parse_content_length(value)
    assert "Content-Length" in str(info.value)


def test_parse_content_length_type_error():
    with pytest.raises(TypeError):
        _abnf.parse_content_length(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "line, expected",
    [
        ("0", 0),
        ("1a", 26),
        ("FF", 255),
        (b"ff\r\n", 255),
        ("10\n", 16),
        ("2;name", 2),
        ("2 ; name = value", 2),
        ('2;name="quoted; value"', 2),
        ("2;a=1;b=2", 2),
        ("f" * 16, 2**64 - 1),
        ("0" * 30 + "1", 1),
    ],
)
def test_parse_chunk_size(line, expected):
    assert _abnf.parse_chunk_size(line) == expected


@pytest.mark.parametrize(
    "line",
    ["", "0x2", "+2", "-2", " 2", "1_a", "g", "2;", "2;=x", '2;a="unterminated', "2 x", "1" * 17, "2\r", "2;a=" + "x" * 5000],
)
def test_parse_chunk_size_rejects(line):
    with pytest.raises(ValueError):
        _abnf.parse_chunk_size(line)


@pytest.mark.parametrize("value, expected", [("chunked", True), ("CHUNKED", True), (" chunked ", True), (b"chunked", True), ("", False), (" , ", False)])
def test_is_transfer_encoding_chunked(value, expected):
    assert _abnf.is_transfer_encoding_chunked(value) is expected


@pytest.mark.parametrize("value", ["gzip", "gzip, chunked", "chunked, chunked", "chunked, gzip", "\xa0chunked", "chunked\x00", "chu nked"])
def test_is_transfer_encoding_chunked_rejects(value):
    with pytest.raises(ValueError):
        _abnf.is_transfer_encoding_chunked(value)


def test_parse_transfer_encoding():
    assert _abnf.parse_transfer_encoding("gzip;q=1, Chunked") == ["gzip", "chunked"]
    with pytest.raises(ValueError):
        _abnf.parse_transfer_encoding("gzip;q")


def _elapsed(func, arg):
    start = time.perf_counter()
    func(arg)
    return time.perf_counter() - start


@pytest.mark.parametrize(
    "pattern, attack",
    [
        # Long runs of whitespace followed by a character the rule forbids
        # are the classic trigger for quadratic backtracking.
        (_abnf.FIELD_VALUE_RE, "a" + " " * 50_000 + "\x00"),
        (_abnf.HEADER_LINE_RE, "X:" + " " * 50_000 + "\x00"),
        (_abnf.STATUS_LINE_RE, "HTTP/1.1 200 " + " " * 50_000 + "\x00"),
        (_abnf.HOST_RE, "a" * 50_000 + "@"),
    ],
)
def test_no_quadratic_backtracking(pattern, attack):
    # A quadratic pattern takes seconds on 50 000 characters; a linear one
    # takes well under a millisecond, so 0.5 s leaves room for a slow machine.
    assert _elapsed(pattern.fullmatch, attack) < 0.5


def test_chunk_extension_linear():
    attack = "1" + ";a=b" * 1000 + ";"
    assert _elapsed(lambda s: pytest.raises(ValueError, _abnf.parse_chunk_size, s), attack) < 0.5
