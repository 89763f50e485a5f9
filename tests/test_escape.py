"""Tests for squall.escape: HTML/URL/JSON escaping, conversions and linkify."""

from __future__ import annotations

import html
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from squall import escape
from squall.escape import (
    _unquote_to_bytes,
    json_decode,
    json_encode,
    linkify,
    native_str,
    parse_qs_bytes,
    recursive_unicode,
    squeeze,
    to_basestring,
    to_unicode,
    url_escape,
    url_unescape,
    utf8,
    xhtml_escape,
    xhtml_unescape,
)


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("<foo>", "&lt;foo&gt;"),
        (b"<foo>", "&lt;foo&gt;"),
        ("<>&\"'", "&lt;&gt;&amp;&quot;&#x27;"),
        ("&amp;", "&amp;amp;"),
        ("<\u00e9>", "&lt;\u00e9&gt;"),
        (b"<\xc3\xa9>", "&lt;\u00e9&gt;"),
    ],
)
def test_xhtml_escape_round_trip(raw: str | bytes, escaped: str) -> None:
    assert xhtml_escape(raw) == escaped
    assert type(xhtml_escape(raw)) is str
    assert xhtml_unescape(escaped) == to_unicode(raw)


class _Sub(str):
    def __str__(self) -> str:
        return "other"


@pytest.mark.parametrize("value", ["", "no markup", "<>&\"'" * 3, "&lt;", "\u00e9<\U0001f600>", _Sub("<s>")])
def test_xhtml_escape_matches_html_escape(value: str) -> None:
    expected = html.escape(value, quote=True)
    assert xhtml_escape(value) == expected
    assert type(xhtml_escape(value)) is str


def test_xhtml_escape_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="Expected bytes, unicode, or None"):
        xhtml_escape(1)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        xhtml_escape(None)  # type: ignore[arg-type]
    with pytest.raises(UnicodeDecodeError):
        xhtml_escape(b"\xff")


@pytest.mark.parametrize(
    ("escaped", "text"),
    [
        ("foo&#32;bar", "foo bar"),
        ("foo&#x20;bar", "foo bar"),
        ("foo&#X20;bar", "foo bar"),
        ("foo&#xabc;bar", "foo\u0abcbar"),
        ("foo&#xyz;bar", "foo&#xyz;bar"),
        ("foo&#;bar", "foo&#;bar"),
        ("&nbsp;&eacute;&apos;", "\xa0\xe9'"),
        ("&unknown;", "&unknown;"),
        (b"&lt;x", "<x"),
    ],
)
def test_xhtml_unescape_references(escaped: str | bytes, text: str) -> None:
    assert xhtml_unescape(escaped) == text


def test_url_escape_plus_and_path_forms() -> None:
    assert url_escape("+ #%") == "%2B+%23%25"
    assert url_escape("+ #%", plus=False) == "%2B%20%23%25"
    assert url_escape("a/b") == "a%2Fb"
    assert url_escape("a/b", plus=False) == "a/b"
    assert url_escape("\u00e9") == "%C3%A9"
    assert url_escape("\u00e9".encode("latin-1")) == "%E9"


def test_url_unescape_encodings() -> None:
    assert url_unescape("%2B+%23%25") == "+ #%"
    assert url_unescape("%2B%20%23%25", plus=False) == "+ #%"
    assert url_unescape("a+b", plus=False) == "a+b"
    assert url_unescape(b"%C3%A9") == "\u00e9"
    assert url_unescape("%C3%A9", "latin1") == "\u00c3\u00a9"
    assert url_unescape("%C3%A9+x", encoding=None) == b"\xc3\xa9 x"
    assert url_unescape(b"%C3%A9+x", encoding=None, plus=False) == b"\xc3\xa9+x"


def test_json_encode_cannot_close_a_script_element() -> None:
    encoded = json_encode({"html": "</script><script>alert(1)</script>"})
    assert "</" not in encoded
    assert json_decode(encoded) == {"html": "</script><script>alert(1)</script>"}
    assert json_decode(b'"\xc3\xa9"') == "\u00e9"
    assert json_decode('"foo"') == "foo"


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner)
    | st.tuples(inner, inner)
    | st.dictionaries(st.text() | st.integers() | st.booleans() | st.none() | st.floats(), inner),
    max_leaves=25,
)


@settings(max_examples=400)
@given(_JSON_VALUES)
def test_json_encode_is_json_dumps_made_script_safe(value: object) -> None:
    # json_encode calls json's C encoder directly; the text must be exactly
    # json.dumps's (with "</" escaped), whatever the value.
    import json

    assert json_encode(value) == json.dumps(value).replace("</", "<\\/")


def test_json_encode_errors_are_json_dumps_errors() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="Circular reference detected"):
        json_encode({"a": cyclic})
    with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
        json_encode({"a": object()})
    with pytest.raises(TypeError, match="keys must be str, int, float, bool or None, not tuple"):
        json_encode({(1, 2): 3})
    deep: dict[str, object] = {}
    for _ in range(100_000):
        deep = {"x": deep}
    with pytest.raises(RecursionError):
        json_encode(deep)
    # Subclasses of the basic types are encoded as their base type.
    class Name(str):
        pass

    class Count(int):
        pass

    assert json_encode({Name("a"): Count(3), "t": (1, 2)}) == '{"a": 3, "t": [1, 2]}'


def test_squeeze_collapses_ascii_whitespace_only() -> None:
    assert squeeze("sequences     of    whitespace   chars") == "sequences of whitespace chars"
    assert squeeze(" a\t\r\n\x00b ") == "a b"
    assert squeeze("a\xa0\u2003b") == "a\xa0\u2003b"


def test_utf8_and_to_unicode_conversions() -> None:
    assert utf8("\u00e9") == b"\xc3\xa9"
    assert utf8(b"x") == b"x"
    assert utf8(None) is None
    assert to_unicode(b"\xc3\xa9") == "\u00e9"
    assert to_unicode("x") == "x"
    assert to_unicode(None) is None
    assert native_str is to_unicode
    assert to_basestring is to_unicode
    with pytest.raises(TypeError, match="int"):
        utf8(1)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="int"):
        to_unicode(1)  # type: ignore[call-overload]
    with pytest.raises(UnicodeDecodeError):
        to_unicode(b"\xff")


def test_recursive_unicode_rebuilds_containers() -> None:
    assert recursive_unicode({b"foo": b"bar"}) == {"foo": "bar"}
    assert recursive_unicode([b"foo", (b"bar", {b"k": [b"v", 1]})]) == [
        "foo",
        ("bar", {"k": ["v", 1]}),
    ]
    assert recursive_unicode(b"foo") == "foo"
    assert recursive_unicode(5) == 5


def test_parse_qs_bytes_keeps_values_as_bytes() -> None:
    assert parse_qs_bytes(b"a=1&b=%41+%2B&a=2&&c&d=", keep_blank_values=True) == {
        "a": [b"1", b"2"],
        "b": [b"A +"],
        "c": [b""],
        "d": [b""],
    }
    assert parse_qs_bytes("%E9=%E9") == {"\xe9": [b"\xe9"]}
    assert parse_qs_bytes(b"c&d=") == {}
    assert parse_qs_bytes(b"a=1;b=2") == {"a": [b"1;b=2"]}
    assert parse_qs_bytes(b"", strict_parsing=True) == {}


def test_parse_qs_bytes_strict_and_field_limit() -> None:
    with pytest.raises(ValueError, match="bad query field"):
        parse_qs_bytes(b"a=1&&b=2", strict_parsing=True)
    with pytest.raises(ValueError, match="bad query field: b'c'"):
        parse_qs_bytes(b"a=1&c", strict_parsing=True)
    with pytest.raises(ValueError, match="Max number of fields"):
        parse_qs_bytes(b"a=1&b=2", max_num_fields=1)
    assert parse_qs_bytes(b"a=1&b=2", max_num_fields=2) == {"a": [b"1"], "b": [b"2"]}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40) | st.text(alphabet="%0123456789abcdefABCDEFxyz+&= \n", max_size=40).map(str.encode))
def test_unquote_to_bytes_matches_stdlib(data: bytes) -> None:
    assert _unquote_to_bytes(data) == urllib.parse.unquote_to_bytes(data)


_QS_ALPHABET = "ab=&+%2041eE;\xe9"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_QS_ALPHABET, max_size=30), st.booleans())
def test_parse_qs_bytes_matches_stdlib(qs: str, keep_blank: bool) -> None:
    expected = {
        name: [value.encode("latin-1") for value in values]
        for name, values in urllib.parse.parse_qs(
            qs, keep_blank_values=keep_blank, encoding="latin-1"
        ).items()
    }
    assert parse_qs_bytes(qs, keep_blank_values=keep_blank) == expected
    assert parse_qs_bytes(qs.encode("latin-1"), keep_blank_values=keep_blank) == expected


def test_unquote_memory_is_bounded_by_input() -> None:
    import tracemalloc

    data = b"%41" * 50_000
    tracemalloc.start()
    try:
        result = _unquote_to_bytes(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result == b"A" * 50_000
    assert peak < 4 * len(data)


@pytest.mark.parametrize(
    ("text", "kwargs", "html"),
    [
        ("hello http://world.com/!", {}, 'hello <a href="http://world.com/">http://world.com/</a>!'),
        (
            "a http://x.com/?p=1&q=2 b",
            {},
            'a <a href="http://x.com/?p=1&amp;q=2">http://x.com/?p=1&amp;q=2</a> b',
        ),
        (
            "(see http://foo.com/blah_(wiki))",
            {},
            '(see <a href="http://foo.com/blah_(wiki)">http://foo.com/blah_(wiki)</a>)',
        ),
        ("http://url.com/w(aaaa", {}, '<a href="http://url.com/w">http://url.com/w</a>(aaaa'),
        (
            "<http://foo.com/x>",
            {},
            '&lt;<a href="http://foo.com/x">http://foo.com/x</a>&gt;',
        ),
        ("it's http://a.com/it's", {}, 'it&#x27;s <a href="http://a.com/it">http://a.com/it</a>&#x27;s'),
        ("Just a www.example.com link.", {}, 'Just a <a href="http://www.example.com">www.example.com</a> link.'),
        ("Just a www.example.com link.", {"require_protocol": True}, "Just a www.example.com link."),
        ("javascript://alert(1)", {}, "javascript://alert(1)"),
        ("HTTP://A.COM", {}, "HTTP://A.COM"),
        ("rdar:/1234", {"permitted_protocols": ["rdar"]}, '<a href="rdar:/1234">rdar:/1234</a>'),
        ("foo-http://x.com", {}, "foo-http://x.com"),
        ("xwww.foo.com", {}, "xwww.foo.com"),
        ("http://(", {}, '<a href="http://">http://</a>('),
        ("ftp:/ and www.", {"permitted_protocols": ["ftp"]}, "ftp:/ and www."),
        (b"http://a.com", {}, '<a href="http://a.com">http://a.com</a>'),
        (
            "A http://reallylong.com/link/that/exceedsthelenglimit.html",
            {"shorten": True},
            'A <a href="http://reallylong.com/link/that/exceedsthelenglimit.html"'
            ' title="http://reallylong.com/link/that/exceedsthelenglimit.html">'
            "http://reallylong.com/link...</a>",
        ),
        (
            "http://abcdefghijklmnopqrstu&vwxyz.com/abc",
            {"shorten": True},
            '<a href="http://abcdefghijklmnopqrstu&amp;vwxyz.com/abc"'
            ' title="http://abcdefghijklmnopqrstu&amp;vwxyz.com/abc">'
            "http://abcdefghijklmnopqrstu...</a>",
        ),
        ("http://short.com/x", {"shorten": True}, '<a href="http://short.com/x">http://short.com/x</a>'),
        (
            "www.x.com",
            {"extra_params": '  rel="nofollow" '},
            '<a href="http://www.x.com" rel="nofollow">www.x.com</a>',
        ),
    ],
)
def test_linkify(text: str | bytes, kwargs: dict[str, object], html: str) -> None:
    assert linkify(text, **kwargs) == html  # type: ignore[arg-type]


def test_linkify_extra_params_callable_sees_href() -> None:
    seen: list[str] = []

    def params(href: str) -> str:
        seen.append(href)
        return 'class="internal"' if "internal" in href else 'rel="nofollow"'

    out = linkify("www.internal.com and http://ext.com", extra_params=params)
    assert seen == ["http://www.internal.com", "http://ext.com"]
    assert out == (
        '<a href="http://www.internal.com" class="internal">www.internal.com</a> and '
        '<a href="http://ext.com" rel="nofollow">http://ext.com</a>'
    )


@pytest.mark.parametrize(
    "hostile",
    ["a-" * 100_000, "http://a(" * 20_000, "(" * 100_000, "-" * 100_000 + "://x", "x:/" * 50_000],
)
def test_linkify_is_linear_on_hostile_input(hostile: str) -> None:
    # A backtracking URL regex takes minutes on these; the pytest timeout
    # turns a regression into a failure.
    assert isinstance(linkify(hostile), str)


def test_module_exports() -> None:
    for name in escape.__all__:
        assert callable(getattr(escape, name))
