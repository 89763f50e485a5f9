"""Tests for squall.httputil: headers, start lines, requests, form bodies, cookies."""

import asyncio
import copy
import datetime
import http.client
import io
import json
import pickle
import time
import types

import pytest
from hypothesis import given, settings, strategies as st

from squall import httputil
from squall.httputil import (
    HTTPConnection,
    HTTPFile,
    HTTPHeaders,
    HTTPInputError,
    HTTPMessageDelegate,
    HTTPServerConnectionDelegate,
    HTTPServerRequest,
    ParseBodyConfig,
    ParseMultipartConfig,
    ParseUrlEncodedConfig,
    RequestStartLine,
    ResponseStartLine,
    encode_username_password,
    format_timestamp,
    parse_body_arguments,
    parse_cookie,
    parse_multipart_form_data,
    parse_request_start_line,
    parse_response_start_line,
    qs_to_qsl,
    split_host_and_port,
    url_concat,
)

# --- HTTPHeaders ---------------------------------------------------------------


def test_headers_case_insensitive_and_normalized():
    h = HTTPHeaders()
    h.add("content-type", "text/html")
    h.add("X-FORWARDED-FOR", "1.2.3.4")
    h.add("www-authenticate", "Basic")
    assert list(h) == ["Content-Type", "X-Forwarded-For", "Www-Authenticate"]
    assert h["CONTENT-TYPE"] == "text/html"
    assert h.get("x-forwarded-for") == "1.2.3.4"
    assert "content-TYPE" in h
    assert "Missing" not in h
    assert 5 not in h
    assert h.get("missing") is None
    assert h.get("missing", "d") == "d"


def test_headers_unicode_names_are_not_case_folded():
    # U+212A KELVIN SIGN lower-cases to "k": it must not find header "K".
    h = HTTPHeaders()
    h.add("K", "v")
    assert "\u212a" not in h
    assert h.get_list("\u212a") == []


def test_headers_multiple_values():
    h = HTTPHeaders()
    h.add("Set-Cookie", "a=b")
    h.add("set-cookie", "c=d")
    assert h["Set-Cookie"] == "a=b,c=d"
    assert h.get_list("SET-COOKIE") == ["a=b", "c=d"]
    assert list(h.get_all()) == [("Set-Cookie", "a=b"), ("Set-Cookie", "c=d")]
    assert len(h) == 1
    # The joined value follows later additions.
    h.add("Set-Cookie", "e=f")
    assert h["Set-Cookie"] == "a=b,c=d,e=f"
    h["Set-Cookie"] = "x"
    assert h["Set-Cookie"] == "x"
    assert h.get_list("Set-Cookie") == ["x"]


def test_headers_setitem_keeps_position_and_delitem():
    h = HTTPHeaders()
    h.add("A", "1")
    h.add("B", "2")
    h["a"] = "3"
    assert list(h.items()) == [("A", "3"), ("B", "2")]
    del h["A"]
    assert list(h) == ["B"]
    with pytest.raises(KeyError):
        del h["A"]
    with pytest.raises(KeyError):
        h["A"]


def test_headers_constructors():
    assert list(HTTPHeaders({"content-type": "x"}).get_all()) == [("Content-Type", "x")]
    assert list(HTTPHeaders([("a", "1"), ("b", "2")]).get_all()) == [("A", "1"), ("B", "2")]
    assert list(HTTPHeaders(a="1").get_all()) == [("A", "1")]
    original = HTTPHeaders()
    original.add("A", "1")
    original.add("A", "2")
    copied = HTTPHeaders(original)
    assert list(copied.get_all()) == [("A", "1"), ("A", "2")]
    copied.add("A", "3")
    assert original.get_list("A") == ["1", "2"]


def test_headers_mutable_mapping_methods():
    h = HTTPHeaders()
    assert h.setdefault("foo", "bar") == "bar"
    assert h.setdefault("FOO", "baz") == "bar"
    h.update({"x-y": "1"})
    assert h.pop("X-Y") == "1"
    assert list(h.items()) == [("Foo", "bar")]
    assert h == {"Foo": "bar"}
    assert h == HTTPHeaders({"foo": "bar"})
    assert h != HTTPHeaders({"foo": "baz"})


@pytest.mark.parametrize("name", ["", "foo bar", "foo\tbar", "foo\nbar", "foo\x00bar", "foo ", " foo", "é", "a:b"])
def test_headers_add_rejects_bad_names(name):
    with pytest.raises(HTTPInputError) as info:
        HTTPHeaders().add(name, "v")
    assert "Invalid header name" in str(info.value)


@pytest.mark.parametrize("value", ["a\r\nb", "a\nb", "a\rb", "a\x00", "a\x7f", " a", "a ", "\u4e2d"])
def test_headers_add_rejects_bad_values(value):
    with pytest.raises(HTTPInputError) as info:
        HTTPHeaders().add("X", value)
    assert "Invalid header value" in str(info.value)


def test_headers_add_unicode_text_mode():
    h = HTTPHeaders()
    h.add("X", "\u4e2d\u6587", _chars_are_bytes=False)
    assert h["X"] == "\u4e2d\u6587"
    with pytest.raises(HTTPInputError):
        h.add("X", "a\nb", _chars_are_bytes=False)


def test_headers_add_bytes_and_bad_types():
    h = HTTPHeaders()
    h.add("X", b"caf\xc3\xa9")
    assert h["X"] == "caf\xe9"
    with pytest.raises(TypeError):
        h.add("X", 5)  # type: ignore[arg-type]


def test_headers_parse():
    h = HTTPHeaders.parse(
        "Content-Type: text/html\r\nX-Empty:\r\nX-Ows: \t value with  spaces \t\r\n"
        "Lf: lf\nSet-Cookie: a\r\nset-cookie: b\r\n\r\n"
    )
    assert list(h.get_all()) == [
        ("Content-Type", "text/html"),
        ("X-Empty", ""),
        ("X-Ows", "value with  spaces"),
        ("Lf", "lf"),
        ("Set-Cookie", "a"),
        ("Set-Cookie", "b"),
    ]


def test_headers_parse_bytes_are_latin1():
    h = HTTPHeaders.parse(b"X: caf\xe9\r\n")
    assert h["X"] == "caf\xe9"


@pytest.mark.parametrize(
    "text, message",
    [
        ("Foo: bar\r\n\tasdf", "folding"),
        ("Foo: bar\r\n continued\r\n", "folding"),
        (" Foo: bar", "folding"),
        ("NoColon\r\n", "no colon"),
        ("Foo : bar", "Invalid header name"),
        (": bar", "Invalid header name"),
        ("Foo: a\rb", "Invalid header value"),
        ("Foo: a\x00", "Invalid header value"),
        ("Foo: a\u0100", "Invalid header value"),
        ("A: b\r\nFoo: bar\r", "Invalid header value"),
    ],
)
def test_headers_parse_rejects(text, message):
    with pytest.raises(HTTPInputError) as info:
        HTTPHeaders.parse(text)
    assert message in str(info.value)


def test_headers_parse_unicode_mode():
    h = HTTPHeaders.parse('Content-Disposition: form-data; filename="\u6d4b"', _chars_are_bytes=False)
    assert h["Content-Disposition"] == 'form-data; filename="\u6d4b"'
    with pytest.raises(HTTPInputError):
        HTTPHeaders.parse("X: a\x08", _chars_are_bytes=False)


def test_headers_parse_line():
    h = HTTPHeaders()
    h.parse_line("Content-Type: text/plain\r\n")
    h.parse_line("\r\n")
    h.parse_line("X-A: 1")
    assert list(h.get_all()) == [("Content-Type", "text/plain"), ("X-A", "1")]
    with pytest.raises(HTTPInputError):
        h.parse_line(" folded")
    with pytest.raises(HTTPInputError):
        h.parse_line("bad line")


def test_headers_str_round_trip():
    h = HTTPHeaders()
    h.add("Foo", "1")
    h.add("Foo", "2")
    h.add("Bar", "")
    assert str(h) == "Foo: 1\nFoo: 2\nBar: \n"
    assert HTTPHeaders.parse(str(h)) == h
    assert list(HTTPHeaders.parse(str(h)).get_all()) == list(h.get_all())


def test_headers_copies_are_independent():
    h = HTTPHeaders()
    h.add("A", "1")
    h.add("A", "2")
    for other in (h.copy(), copy.copy(h), copy.deepcopy(h), pickle.loads(pickle.dumps(h))):
        assert list(other.get_all()) == [("A", "1"), ("A", "2")]
        assert other.get_list("A") is not h.get_list("A")
        other.add("A", "3")
        assert h.get_list("A") == ["1", "2"]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_headers_pickle_all_protocols(protocol):
    h = HTTPHeaders()
    h.add("Set-Cookie", "a=b")
    h.add("Set-Cookie", "c=d")
    h["Set-Cookie"]  # populate the joined-value cache
    restored = pickle.loads(pickle.dumps(h, protocol))
    assert list(restored.get_all()) == list(h.get_all())
    restored.add("Set-Cookie", "e=f")
    assert restored["Set-Cookie"] == "a=b,c=d,e=f"


def test_headers_repr():
    h = HTTPHeaders({"a": "1"})
    assert repr(h) == "HTTPHeaders({'A': ['1']})"


def test_headers_name_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(httputil, "_normalized_names", dict(httputil._normalized_names))
    for i in range(httputil._HEADER_NAME_CACHE_SIZE + 10):
        HTTPHeaders.parse(f"X-Unique-{i}-name: v")
    assert len(httputil._normalized_names) <= httputil._HEADER_NAME_CACHE_SIZE
    # Names beyond the cache still work.
    assert HTTPHeaders.parse("x-not-cached-zzz: v")["X-Not-Cached-Zzz"] == "v"


def test_headers_parse_is_linear():
    # Many values for one name used to be quadratic (CVE-2025-67725).
    def cost(n):
        text = "X: a\r\n" * n
        start = time.perf_counter()
        HTTPHeaders.parse(text)["X"]
        return time.perf_counter() - start

    cost(1000)
    assert cost(50_000) < 0.5


_header_names = st.from_regex(httputil._ABNF.field_name, fullmatch=True)
_header_values = st.from_regex(httputil._ABNF.field_value, fullmatch=True)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_header_names, _header_values), max_size=10))
def test_headers_parse_matches_http_client(pairs):
    """Differential test: squall and the stdlib read the same header block
    the same way (names compared case-insensitively; the stdlib keeps the
    case it was given)."""
    block = "".join(f"{name}: {value}\r\n" for name, value in pairs)
    ours = [(name.lower(), value) for name, value in HTTPHeaders.parse(block).get_all()]
    msg = http.client.parse_headers(io.BytesIO(block.encode("latin-1") + b"\r\n"))
    theirs = [(name.lower(), value) for name, value in msg.items()]
    # Group the stdlib's pairs by name in first-seen order, as HTTPHeaders does.
    order: dict = {}
    for name, value in theirs:
        order.setdefault(name, []).append(value)
    assert ours == [(name, value) for name, values in order.items() for value in values]


# --- Start lines ---------------------------------------------------------------


def test_parse_request_start_line():
    assert parse_request_start_line("GET /foo?a=b HTTP/1.1") == RequestStartLine("GET", "/foo?a=b", "HTTP/1.1")
    line = parse_request_start_line("OPTIONS * HTTP/1.0")
    assert (line.method, line.path, line.version) == ("OPTIONS", "*", "HTTP/1.0")


@pytest.mark.parametrize(
    "line, message",
    [
        ("GET  / HTTP/1.1", "Malformed"),
        ("GET / HTTP/1.1 ", "Malformed"),
        ("GET /\x00 HTTP/1.1", "Malformed"),
        ("GET /", "Malformed"),
        ("", "Malformed"),
        ("GET / HTTP/2.0", "Unexpected HTTP version"),
        ("GET / HTTP/0.9", "Unexpected HTTP version"),
    ],
)
def test_parse_request_start_line_rejects(line, message):
    with pytest.raises(HTTPInputError) as info:
        parse_request_start_line(line)
    assert message in str(info.value)


def test_parse_response_start_line():
    assert parse_response_start_line("HTTP/1.1 200 OK") == ResponseStartLine("HTTP/1.1", 200, "OK")
    assert parse_response_start_line("HTTP/1.0 404 ") == ResponseStartLine("HTTP/1.0", 404, None)
    assert parse_response_start_line("HTTP/1.1 599 A  b").reason == "A  b"


@pytest.mark.parametrize("line", ["HTTP/1.1 200", "HTTP/1.1 99 OK", "HTTP/2.0 200 OK", "http/1.1 200 OK", "HTTP/1.1 200 OK\r"])
def test_parse_response_start_line_rejects(line):
    with pytest.raises(HTTPInputError):
        parse_response_start_line(line)


# --- HTTPServerRequest ---------------------------------------------------------


def _request(uri="/", version="HTTP/1.1", headers=None, **kwargs):
    if headers is None:
        headers = HTTPHeaders({"Host": "example.com"})
    return HTTPServerRequest(start_line=RequestStartLine("GET", uri, version), headers=headers, **kwargs)


def test_request_basics():
    r = _request("/a%20b?x=1&x=2&y=&%C3%A9=%C3%A9")
    assert r.method == "GET" and r.version == "HTTP/1.1"
    assert r.path == "/a%20b"
    assert r.query == "x=1&x=2&y=&%C3%A9=%C3%A9"
    expected = {"x": [b"1", b"2"], "y": [b""], "\xc3\xa9": [b"\xc3\xa9"]}
    assert r.query_arguments == expected
    assert r.arguments == expected
    assert r.arguments["x"] is not r.query_arguments["x"]
    assert r.body_arguments == {} and r.files == {} and r.body == b""
    assert r.host == "example.com" and r.host_name == "example.com"
    assert r.protocol == "http" and r.remote_ip is None
    assert r.full_url() == "http://example.com/a%20b?x=1&x=2&y=&%C3%A9=%C3%A9"
    assert "Host" not in repr(r) and "uri='/a%20b" in repr(r)


def test_request_arguments_are_plain_attributes():
    r = _request("/?a=1")
    r.arguments = {"b": [b"2"]}
    assert r.arguments == {"b": [b"2"]}
    assert r.query_arguments == {"a": [b"1"]}
    assert "query_arguments" in vars(r)
    with pytest.raises(AttributeError):
        r.no_such_attribute


def test_request_legacy_constructor():
    r = HTTPServerRequest("POST", "/p?q=1", headers=HTTPHeaders({"Host": "h"}), body=b"data")
    assert (r.method, r.uri, r.version, r.body) == ("POST", "/p?q=1", "HTTP/1.0", b"data")
    with pytest.raises(TypeError):
        HTTPServerRequest()


def test_request_host_rules():
    assert HTTPServerRequest(start_line=RequestStartLine("GET", "/", "HTTP/1.0")).host == "127.0.0.1"
    with pytest.raises(HTTPInputError, match="Missing Host"):
        _request(headers=HTTPHeaders())
    r = _request(headers=HTTPHeaders({"Host": "Example.COM:8080"}))
    assert r.host == "Example.COM:8080" and r.host_name == "example.com"
    r = _request(headers=HTTPHeaders({"Host": "[::1]:8888"}))
    assert r.host_name == "[::1]"
    assert _request(host="given:1").host_name == "given"
    for bad in ["a b", "é", "a/b", "a,b"]:
        with pytest.raises(HTTPInputError):
            _request(headers=HTTPHeaders({"Host": bad}))
    two = HTTPHeaders()
    two.add("Host", "a")
    two.add("Host", "b")
    with pytest.raises(HTTPInputError, match="Multiple host"):
        _request(headers=two)


def test_request_max_query_arguments():
    limit = httputil._DEFAULT_PARSE_BODY_CONFIG.urlencoded.max_arguments
    ok = "/?" + "&".join(f"a={i}" for i in range(limit))
    assert len(_request(ok).arguments["a"]) == limit
    with pytest.raises(HTTPInputError, match="Max number of fields exceeded"):
        _request(ok + "&b=1")


def test_request_context_and_times():
    context = types.SimpleNamespace(remote_ip="10.0.0.1", protocol="https")
    connection = types.SimpleNamespace(context=context)
    r = _request(connection=connection)
    assert r.remote_ip == "10.0.0.1" and r.protocol == "https"
    assert r.connection is connection
    assert r.full_url() == "https://example.com/"
    assert 0 <= r.request_time() < 5
    r._finish_time = r._start_time + 1.5
    assert r.request_time() == 1.5
    assert r.get_ssl_certificate() is None


def test_request_cookies():
    headers = HTTPHeaders({"Host": "h"})
    headers.add("Cookie", 'a=b; c="d e"')
    headers.add("Cookie", "f=g; bad name=x")
    r = _request(headers=headers)
    cookies = r.cookies
    assert cookies is r.cookies
    assert {k: m.value for k, m in cookies.items()} == {"a": "b", "c": "d e", "f": "g"}


def test_request_parse_body():
    headers = HTTPHeaders({"Host": "h", "Content-Type": "application/x-www-form-urlencoded"})
    r = HTTPServerRequest(
        start_line=RequestStartLine("POST", "/?a=1", "HTTP/1.1"), headers=headers, body=b"a=2&b=3"
    )
    r._parse_body()
    assert r.body_arguments == {"a": [b"2"], "b": [b"3"]}
    assert r.query_arguments == {"a": [b"1"]}
    assert r.arguments == {"a": [b"1", b"2"], "b": [b"3"]}


# --- Form bodies -----------------------------------------------------------------


def test_urlencoded_body():
    args: dict = {"a": [b"0"]}
    files: dict = {}
    parse_body_arguments("application/x-www-form-urlencoded; charset=UTF-8", b"a=1&b=%20+x&a=3&c", args, files)
    assert args == {"a": [b"0", b"1", b"3"], "b": [b"  x"], "c": [b""]}
    assert files == {}


def test_urlencoded_limits():
    with pytest.raises(HTTPInputError, match="Max number of fields exceeded"):
        parse_body_arguments("application/x-www-form-urlencoded", b"a=1&" * 1001, {}, {})
    config = ParseBodyConfig(urlencoded=ParseUrlEncodedConfig(max_arguments=2))
    parse_body_arguments("application/x-www-form-urlencoded", b"a=1&b=2", {}, {}, config=config)
    with pytest.raises(HTTPInputError):
        parse_body_arguments("application/x-www-form-urlencoded", b"a=1&b=2&c=3", {}, {}, config=config)


def test_other_content_types_are_ignored():
    args: dict = {}
    parse_body_arguments("text/plain", b"a=1", args, {})
    assert args == {}


def test_content_encoding_refused():
    with pytest.raises(HTTPInputError, match="Unsupported Content-Encoding: gzip"):
        parse_body_arguments(
            "application/x-www-form-urlencoded", b"a=1", {}, {}, HTTPHeaders({"Content-Encoding": "gzip"})
        )


def _multipart(*parts, boundary=b"1234", tail=b"--1234--\r\n"):
    return b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts) + tail


def test_multipart_fields_and_files():
    body = _multipart(
        b'Content-Disposition: form-data; name="field"\r\n\r\nvalue',
        b'Content-Disposition: form-data; name="field"\r\n\r\nline1\r\nline2',
        b'Content-Disposition: form-data; name="up"; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\nFoo',
        b'Content-Disposition: form-data; name="up"; filename="b.bin"\r\n\r\n',
        b'Content-Disposition: form-data; name="empty"\r\n',
    )
    args: dict = {}
    files: dict = {}
    parse_body_arguments("multipart/form-data; boundary=1234", body, args, files)
    assert args == {"field": [b"value", b"line1\r\nline2"], "empty": [b""]}
    assert [(f.filename, f.body, f.content_type) for f in files["up"]] == [
        ("a.txt", b"Foo", "text/plain"),
        ("b.bin", b"", "application/unknown"),
    ]
    assert files["up"][0]["filename"] == "a.txt"
    assert isinstance(files["up"][0], HTTPFile)


def test_multipart_quoted_boundary_and_trailing_data():
    body = _multipart(b'Content-Disposition: form-data; name="a"\r\n\r\nb', tail=b"--1234--\r\nepilogue")
    args: dict = {}
    parse_body_arguments('multipart/form-data; boundary="1234"', body, args, {})
    assert args == {"a": [b"b"]}


def test_multipart_first_part_without_delimiter():
    # Tornado has always read a body that starts with part headers.
    body = b'Content-Disposition: form-data; name="a"\r\n\r\nb\r\n--1234--'
    args: dict = {}
    parse_multipart_form_data(b"1234", body, args, {})
    assert args == {"a": [b"b"]}


def test_multipart_filenames():
    for filename in ['a;b.txt', 'a"b.txt', 'a\\b.txt', "a b.txt", "a\tb.txt", "\u6d4b\u8bd5.txt"]:
        quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
        part = f'Content-Disposition: form-data; name="f"; filename="{quoted}"\r\n\r\nx'.encode()
        files: dict = {}
        parse_multipart_form_data(b"1234", _multipart(part), {}, files)
        assert files["f"][0].filename == filename


def test_multipart_rfc8187_filename():
    part = b"Content-Disposition: form-data; name=f; filename=\"ab.txt\"; filename*=UTF-8''%C3%A1b.txt\r\n\r\nx"
    files: dict = {}
    parse_multipart_form_data(b"1234", _multipart(part), {}, files)
    assert files["f"][0].filename == "\xe1b.txt"


@pytest.mark.parametrize(
    "body, message",
    [
        (b"--1234\r\n\r\nFoo\r\n--1234--", "missing headers"),
        (_multipart(b"Foo"), "missing headers"),
        (_multipart(b'Content-Disposition: invalid; name="a"\r\n\r\nb'), "form-data"),
        (_multipart(b'Content-Disposition: form-data; filename="a"\r\n\r\nb'), "missing name"),
        (_multipart(b"Content-Disposition: form-data; name=\"a\"; filename=\"a\rb\"\r\n\r\nb"), "Invalid header value"),
        (_multipart(b"Content-Disposition: form-data; name=\"\xff\"\r\n\r\nb"), "UTF-8"),
        (b'--1234\r\nContent-Disposition: form-data; name="a"\r\n\r\nFoo--1234--', "not terminated"),
        (b'--1234\r\nContent-Disposition: form-data; name="a"\r\n\r\nFoo', "no final boundary"),
        (b'--1234 \r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--1234--', "boundary line"),
    ],
)
def test_multipart_rejects(body, message):
    args: dict = {}
    files: dict = {}
    with pytest.raises(HTTPInputError) as info:
        parse_multipart_form_data(b"1234", body, args, files)
    assert message in str(info.value)
    assert args == {} and files == {}


def test_multipart_limits():
    part = b'Content-Disposition: form-data; name="a"\r\n\r\nb'
    with pytest.raises(HTTPInputError, match="too many parts"):
        parse_multipart_form_data(b"1234", _multipart(*[part] * 101), {}, {})
    parse_multipart_form_data(b"1234", _multipart(*[part] * 100), {}, {})
    with pytest.raises(HTTPInputError, match="too many parts"):
        parse_multipart_form_data(b"1234", _multipart(part), {}, {}, config=ParseMultipartConfig(max_parts=0))
    with pytest.raises(HTTPInputError, match="header too large"):
        parse_multipart_form_data(
            b"1234", _multipart(part), {}, {}, config=ParseMultipartConfig(max_part_header_size=10)
        )
    with pytest.raises(HTTPInputError, match="disabled"):
        parse_multipart_form_data(b"1234", _multipart(part), {}, {}, config=ParseMultipartConfig(enabled=False))


@pytest.mark.parametrize("content_type", ["multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=a@b"])
def test_multipart_bad_boundary(content_type):
    with pytest.raises(HTTPInputError):
        parse_body_arguments(content_type, b"--a@b--", {}, {})


def test_set_parse_body_config():
    original = httputil._DEFAULT_PARSE_BODY_CONFIG
    try:
        httputil.set_parse_body_config(ParseBodyConfig(multipart=ParseMultipartConfig(enabled=False)))
        with pytest.raises(HTTPInputError, match="disabled"):
            parse_body_arguments("multipart/form-data; boundary=1", b"--1--", {}, {})
        with pytest.raises(TypeError):
            httputil.set_parse_body_config({})  # type: ignore[arg-type]
    finally:
        httputil.set_parse_body_config(original)


def test_config_classes():
    assert ParseBodyConfig() == ParseBodyConfig()
    assert ParseMultipartConfig(max_parts=5) != ParseMultipartConfig()
    assert "max_arguments=1000" in repr(ParseUrlEncodedConfig())
    assert ParseBodyConfig().multipart.max_part_header_size == 10240


def test_multipart_is_linear():
    def cost(n):
        body = _multipart(
            b"Content-Disposition: form-data; x=\"" + b";" * n + b'"; name="f"; filename="a"\r\n\r\nFoo'
        )
        start = time.perf_counter()
        parse_multipart_form_data(b"1234", body, {}, {})
        return time.perf_counter() - start

    cost(100)
    assert cost(10_000) < 0.5


# --- Header parameters and ranges ------------------------------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        ("text/html; charset=\"utf-8\"", ("text/html", {"charset": "utf-8"})),
        ("Form-Data; NAME=x", ("Form-Data", {"name": "x"})),
        (" a ; b = 1 ;c= \"2\" ", ("a", {"b": "1", "c": "2"})),
        ("a;b;c=;=d", ("a", {"c": "", "": "d"})),
        ('a; x="q\\"uo;te"', ("a", {"x": 'q"uo;te'})),
        ('a; x="unterminated; y=1', ("a", {"x": '"unterminated; y=1'})),
        ("a; f*=utf-8''%E2%82%AC; f=plain", ("a", {"f": "\u20ac"})),
        ("a; f*=unknown''%E9", ("a", {"f": "\xe9"})),
        ("", ("", {})),
    ],
)
def test_parse_header(line, expected):
    assert httputil._parse_header(line) == expected


def test_parse_header_linear():
    start = time.perf_counter()
    httputil._parse_header('a; x="' + '\\"' * 50_000)
    httputil._parse_header("a" + '; x="' * 20_000)
    assert time.perf_counter() - start < 0.5


def test_encode_header():
    assert httputil._encode_header("a", {}) == "a"
    assert httputil._encode_header("a", {"b": "1", "c": None}) == "a; b=1; c"


@pytest.mark.parametrize(
    "header, expected",
    [
        ("bytes=0-1", (0, 2)),
        ("bytes=5-", (5, None)),
        ("bytes=-5", (-5, None)),
        ("bytes=-0", (None, 0)),
        ("bytes=26", (26, None)),
        ("bytes=10-3", (10, 4)),
        ("bytes=", (None, None)),
        ("bytes=+1-2", None),
        ("bytes=1_0-2", None),
        ("bytes= 1-2", None),
        ("bytes=0-1,3-4", None),
        ("items=0-1", None),
        ("asdf", None),
    ],
)
def test_parse_request_range(header, expected):
    assert httputil._parse_request_range(header) == expected


def test_get_content_range():
    assert httputil._get_content_range(0, 2, 10) == "bytes 0-1/10"
    assert httputil._get_content_range(None, None, 10) == "bytes 0-9/10"
    assert httputil._get_content_range(5, None, 10) == "bytes 5-9/10"


# --- Small helpers -----------------------------------------------------------------


@pytest.mark.parametrize(
    "url, args, expected",
    [
        ("https://h/p", [("y", "/y"), ("z", "z")], "https://h/p?y=%2Fy&z=z"),
        ("https://h/p?", [("y", "y")], "https://h/p?y=y"),
        ("https://h/p?x", [("y", "y")], "https://h/p?x=&y=y"),
        ("https://h/p?r=1&r=2", (("y", "y"),), "https://h/p?r=1&r=2&y=y"),
        ("https://h/p#frag", {"y": "y"}, "https://h/p?y=y#frag"),
        ("https://h/p?r=1", None, "https://h/p?r=1"),
        ("https://h/p?r=1", [], "https://h/p?r=1"),
    ],
)
def test_url_concat(url, args, expected):
    assert url_concat(url, args) == expected


def test_url_concat_rejects_strings():
    with pytest.raises(TypeError, match="should be dict, list or tuple"):
        url_concat("http://h/", "x=1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "ts",
    [
        1359312200.503611,
        1359312200,
        time.gmtime(1359312200),
        tuple(time.gmtime(1359312200)),
        datetime.datetime(2013, 1, 27, 18, 43, 20),
        datetime.datetime(2013, 1, 27, 18, 43, 20, tzinfo=datetime.timezone.utc),
        datetime.datetime(2013, 1, 27, 14, 43, 20, tzinfo=datetime.timezone(datetime.timedelta(hours=-4))),
    ],
)
def test_format_timestamp(ts):
    assert format_timestamp(ts) == "Sun, 27 Jan 2013 18:43:20 GMT"


def test_format_timestamp_rejects():
    with pytest.raises(TypeError, match="unknown timestamp type"):
        format_timestamp("yesterday")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "netloc, expected",
    [
        ("a:80", ("a", 80)),
        ("a", ("a", None)),
        ("[::1]:80", ("[::1]", 80)),
        ("[::1]", ("[::1]", None)),
        ("a:", ("a:", None)),
        (":80", (":80", None)),
        ("a:\u0661", ("a:\u0661", None)),
    ],
)
def test_split_host_and_port(netloc, expected):
    assert split_host_and_port(netloc) == expected


def test_qs_to_qsl():
    assert sorted(qs_to_qsl({"a": ["1", "3"], "b": ["2"]})) == [("a", "1"), ("a", "3"), ("b", "2")]


@pytest.mark.parametrize(
    "header, expected",
    [
        ("chips=ahoy; vienna=finger", {"chips": "ahoy", "vienna": "finger"}),
        ("keebler=E=mc2", {"keebler": "E=mc2"}),
        ("a=b; h=i; a=c", {"a": "c", "h": "i"}),
        ("abc=def; unnamed; d=e", {"abc": "def", "": "unnamed", "d": "e"}),
        ("a b c=d e = f; gh=i", {"a b c": "d e = f", "gh": "i"}),
        ("  =  b  ;  ;  =  ;   c  =  ;  ", {"": "b", "c": ""}),
        ('a="b;c"', {"a": '"b', "": 'c"'}),
        (r'a="b=\"\\\042\134\377\400"', {"a": 'b="\\"\\\xff400'}),
        ("a=\xa0b\xa0", {"a": "\xa0b\xa0"}),
        ("", {}),
    ],
)
def test_parse_cookie(header, expected):
    assert parse_cookie(header) == expected


def test_parse_cookie_linear():
    start = time.perf_counter()
    value = parse_cookie('a="' + "\\\\" * 100_000 + '"')["a"]
    assert len(value) == 100_000
    assert time.perf_counter() - start < 0.5


def test_encode_username_password():
    assert encode_username_password("user", "pass") == b"user:pass"
    assert encode_username_password(b"u", b"\xff") == b"u:\xff"
    # Decomposed input is normalized to NFC before encoding.
    assert encode_username_password("jose\u0301", "x") == "jos\xe9:x".encode()


def test_responses_and_whitespace():
    assert httputil.responses[404] == "Not Found"
    assert httputil.HTTP_WHITESPACE == " \t"


def test_doctests():
    import unittest

    result = unittest.TestResult()
    suite = httputil.doctests()
    assert suite.countTestCases() > 5
    suite.run(result)
    assert result.wasSuccessful(), result.failures + result.errors


def test_interfaces():
    delegate = HTTPMessageDelegate()
    assert delegate.headers_received(RequestStartLine("GET", "/", "HTTP/1.1"), HTTPHeaders()) is None
    assert delegate.data_received(b"x") is None
    delegate.finish()
    delegate.on_connection_close()
    with pytest.raises(NotImplementedError):
        HTTPServerConnectionDelegate().start_request(object(), HTTPConnection())
    HTTPServerConnectionDelegate().on_close(object())
    connection = HTTPConnection()
    with pytest.raises(NotImplementedError):
        connection.write(b"x")
    with pytest.raises(NotImplementedError):
        connection.finish()


# --- Over a real socket --------------------------------------------------------------


class _EchoProtocol(asyncio.Protocol):
    """Reads one request with squall's parsers and answers with what it parsed."""

    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        head, sep, body = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        start, _, header_block = head.decode("latin-1").partition("\r\n")
        try:
            headers = HTTPHeaders.parse(header_block)
            length = int(headers.get("Content-Length", "0"))
            if len(body) < length:
                return
            request = HTTPServerRequest(
                start_line=parse_request_start_line(start), headers=headers, body=body[:length]
            )
            request._parse_body()
            payload = json.dumps(
                {
                    "path": request.path,
                    "host_name": request.host_name,
                    "arguments": {k: [v.decode() for v in vs] for k, vs in request.arguments.items()},
                    "files": {k: [f.filename for f in fs] for k, fs in request.files.items()},
                }
            ).encode()
            status = b"200 OK"
        except HTTPInputError as e:
            payload = str(e).encode()
            status = b"400 Bad Request"
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
        )
        self.transport.close()


async def _roundtrip(raw: bytes):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_EchoProtocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        response = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
    head, _, payload = response.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    return parse_response_start_line(status_line), payload


def test_over_socket_multipart_and_query():
    body = _multipart(
        b'Content-Disposition: form-data; name="f"; filename="x.txt"\r\n\r\ndata',
        b'Content-Disposition: form-data; name="a"\r\n\r\n2',
    )
    raw = (
        b"POST /up?a=1 HTTP/1.1\r\nHost: Example.com:8000\r\n"
        b"Content-Type: multipart/form-data; boundary=1234\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    start_line, payload = asyncio.run(_roundtrip(raw))
    assert start_line.code == 200
    assert json.loads(payload) == {
        "path": "/up",
        "host_name": "example.com",
        "arguments": {"a": ["1", "2"]},
        "files": {"f": ["x.txt"]},
    }


def test_over_socket_rejects_folded_header():
    raw = b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  folded\r\n\r\n"
    start_line, payload = asyncio.run(_roundtrip(raw))
    assert start_line.code == 400
    assert b"folding" in payload


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab=&;%+ 2F\u00e9x", max_size=30))
def test_query_parsing_fast_path_agrees_with_parse_qsl(qs: str) -> None:
    # Query strings without "%" or "+" are split without parse_qsl; the
    # result must be the same as parse_qsl's for every string.
    import urllib.parse

    from squall.httputil import _parse_qs_bytes

    expected: dict[str, list[bytes]] = {}
    for name, value in urllib.parse.parse_qsl(qs, keep_blank_values=True, encoding="latin-1"):
        expected.setdefault(name, []).append(value.encode("latin-1"))
    assert _parse_qs_bytes(qs, 1000) == expected
