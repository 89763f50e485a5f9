"""Fuzz tests for squall.httputil and squall._abnf parsers.

The only oracle: every parser returns a result or raises its documented
error (`HTTPInputError`, or `ValueError` for the framing helpers), never any
other exception. Examples are bounded so the file runs in a few seconds.
"""

from hypothesis import example, given, settings, strategies as st

from squall import _abnf
from squall.httputil import (
    HTTPHeaders,
    HTTPInputError,
    HTTPServerRequest,
    RequestStartLine,
    _parse_header,
    _parse_request_range,
    parse_body_arguments,
    parse_cookie,
    parse_multipart_form_data,
    parse_request_start_line,
    parse_response_start_line,
)

FUZZ = settings(max_examples=200, deadline=None)

# Text built from the pieces that matter to HTTP parsers, so that random
# input reaches deep states more often than uniformly random characters do.
_pieces = st.sampled_from(
    ["\r\n", "\n", "\r", ":", " ", "\t", ";", "=", '"', "\\", ",", "-", "--", "a", "A", "0", "9",
     "\x00", "\x7f", "\x80", "\xff", "\u0100", "Host", "Content-Disposition", "form-data",
     "name", "filename", "HTTP/1.1", "GET", "/", "?", "&", "%", "%zz", "%41", "*", "[", "]"]
)
http_text = st.one_of(st.text(), st.lists(_pieces, max_size=40).map("".join))
http_bytes = st.one_of(st.binary(), http_text.map(lambda s: s.encode("utf-8")))


@FUZZ
@given(http_text, st.booleans())
@example("Foo: bar\r\n\tcontinued", True)
@example("X: \udcff", False)
def test_headers_parse(text, chars_are_bytes):
    try:
        headers = HTTPHeaders.parse(text, _chars_are_bytes=chars_are_bytes)
    except HTTPInputError:
        return
    for name, value in headers.get_all():
        assert _abnf.FIELD_NAME_RE.fullmatch(name)
        assert value == value.strip(" \t")
        if chars_are_bytes:
            assert _abnf.FIELD_VALUE_RE.fullmatch(value)
        assert "\r" not in value and "\n" not in value and "\x00" not in value


@FUZZ
@given(http_text, http_text)
def test_headers_add(name, value):
    try:
        HTTPHeaders().add(name, value)
    except HTTPInputError:
        pass


@FUZZ
@given(http_text)
def test_request_start_line(line):
    try:
        parsed = parse_request_start_line(line)
    except HTTPInputError:
        return
    assert " ".join(parsed) == line


@FUZZ
@given(http_text)
def test_response_start_line(line):
    try:
        parsed = parse_response_start_line(line)
    except HTTPInputError:
        return
    assert 0 <= parsed.code <= 999


@FUZZ
@given(http_text)
def test_parse_cookie(header):
    for name, value in parse_cookie(header).items():
        assert isinstance(name, str) and isinstance(value, str)


@FUZZ
@given(http_text)
def test_parse_header(line):
    key, params = _parse_header(line)
    assert isinstance(key, str)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())


@FUZZ
@given(http_text)
def test_parse_request_range(header):
    result = _parse_request_range(header)
    assert result is None or len(result) == 2


@FUZZ
@given(st.sampled_from(["1234", "a'()+_,-./:=?", "x y"]), http_bytes, st.integers(0, 5))
def test_multipart(boundary, body, parts):
    # Wrap the fuzz in a plausible frame part of the time, to get past the
    # boundary checks.
    delimiter = b"--" + boundary.encode()
    data = delimiter + b"\r\n" + body + (b"\r\n" + delimiter + b"\r\n" + body) * parts + b"\r\n" + delimiter + b"--"
    for candidate in (body, data):
        args: dict = {}
        files: dict = {}
        try:
            parse_multipart_form_data(boundary.encode(), candidate, args, files)
        except HTTPInputError:
            assert args == {} and files == {}


@FUZZ
@given(http_text, http_bytes)
def test_parse_body_arguments(content_type, body):
    for ctype in (content_type, "multipart/form-data; " + content_type, "application/x-www-form-urlencoded"):
        try:
            parse_body_arguments(ctype, body, {}, {})
        except HTTPInputError:
            pass


@FUZZ
@given(http_text, st.one_of(st.none(), http_text), st.sampled_from(["HTTP/1.0", "HTTP/1.1"]))
def test_server_request(uri, host, version):
    headers = HTTPHeaders()
    if host is not None:
        headers["Host"] = host
    try:
        request = HTTPServerRequest(start_line=RequestStartLine("GET", uri, version), headers=headers)
        request.arguments
        request.cookies
        request.full_url()
    except HTTPInputError:
        pass


@FUZZ
@given(st.one_of(http_text, http_bytes))
@example("1" * 5000)
def test_framing_helpers(value):
    for helper in (_abnf.parse_content_length, _abnf.parse_chunk_size, _abnf.is_transfer_encoding_chunked):
        try:
            result = helper(value)
        except ValueError:
            continue
        assert isinstance(result, (int, bool))
        if helper is _abnf.parse_content_length:
            assert 0 <= result <= _abnf.MAX_CONTENT_LENGTH
        elif helper is _abnf.parse_chunk_size:
            assert 0 <= result < 2**64
