"""Tests for squall._speedups, the optional C module, against the pure-Python
code squall uses without it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from squall import escape

speedups = escape._speedups
SRC = Path(__file__).resolve().parent.parent / "src"


def test_the_module_is_built() -> None:
    # The project's install builds it wherever there is a C compiler (CI
    # has one); a missing module here means the build broke.
    if os.environ.get("SQUALL_NO_SPEEDUPS", "0") not in ("", "0"):
        pytest.skip("SQUALL_NO_SPEEDUPS is set")
    assert speedups is not None
    assert escape._escape_str is speedups.xhtml_escape


needs_c = pytest.mark.skipif(speedups is None, reason="squall._speedups is not built")

# Every markup character, in each storage width CPython uses for str
# (Latin-1, UCS-2, UCS-4), at the edges and in runs.
EDGE_CASES = [
    "",
    "plain text",
    "&",
    "<>",
    "&&&&",
    "\"'\"'",
    "<script>alert('x & \"y\"')</script>",
    "&amp; already escaped",
    "caf\u00e9 <\u00ff>",
    "\u2603 & \u20ac <'>",
    "\U0001f600<\U0001f600>&",
    "\x00<\x00",
    "a" * 1000 + "<" + "b" * 1000,
    "<" * 500,
]


@needs_c
@pytest.mark.parametrize("value", EDGE_CASES, ids=lambda v: repr(v[:20]))
def test_c_escape_is_the_python_escape(value: str) -> None:
    assert speedups.xhtml_escape(value) == escape._xhtml_escape_str(value)
    assert type(speedups.xhtml_escape(value)) is str


@needs_c
@given(st.text(alphabet=st.sampled_from("&<>\"'ab \u00e9\u2603\U0001f600")) | st.text())
def test_c_escape_matches_on_generated_text(value: str) -> None:
    assert speedups.xhtml_escape(value) == escape._xhtml_escape_str(value)


@needs_c
def test_c_escape_returns_unchanged_text_itself() -> None:
    text = "nothing to escape here \u2603"
    assert speedups.xhtml_escape(text) is text


@needs_c
def test_c_escape_result_is_a_sound_str() -> None:
    # The result's storage width is the input's: equal strings built by
    # Python compare and hash equal to it.
    for value in ("<\u00e9>", "<\u2603>", "<\U0001f600>", "<a>"):
        result = speedups.xhtml_escape(value)
        rebuilt = "".join(list(result))
        assert result == rebuilt and hash(result) == hash(rebuilt)
        assert result.encode("utf-8").decode("utf-8") == result


@needs_c
def test_c_escape_argument_errors() -> None:
    with pytest.raises(TypeError, match="argument must be str, not bytes"):
        speedups.xhtml_escape(b"<")
    with pytest.raises(TypeError, match="argument must be str, not _Text"):
        speedups.xhtml_escape(_Text("<"))
    with pytest.raises(TypeError, match=r"takes 1 or 2 positional arguments \(0 given\)"):
        speedups.xhtml_escape()
    with pytest.raises(TypeError, match=r"\(3 given\)"):
        speedups.xhtml_escape("a", repr, repr)


class _Text(str):
    pass


@needs_c
def test_c_escape_with_an_other_function() -> None:
    seen: list[Any] = []

    def other(value: Any) -> str:
        seen.append(value)
        return "other"

    assert speedups.xhtml_escape("<", other) == "&lt;"
    assert speedups.xhtml_escape(-12, other) == "-12"
    assert speedups.xhtml_escape(10**30, other) == str(10**30)
    # Not exactly str or int: handed to other, whose result is returned.
    for value in (True, 1.5, None, b"<", _Text("<"), ["<"]):
        assert speedups.xhtml_escape(value, other) == "other"
    assert seen == [True, 1.5, None, b"<", _Text("<"), ["<"]]

    def failing(value: Any) -> str:
        raise ValueError(f"cannot output {value!r}")

    with pytest.raises(ValueError, match="cannot output None"):
        speedups.xhtml_escape(None, failing)


def test_squall_without_the_c_module() -> None:
    # SQUALL_NO_SPEEDUPS=1 gives the pure-Python code paths, with the same
    # results: escaping, and templates (compiled for inline escaping).
    script = (
        "from squall import escape, template\n"
        "assert escape._speedups is None and not template._ESCAPE_BY_CALL\n"
        "t = template.Template('{% for v in vs %}[{{ v }}]{% end %}{% raw r %}')\n"
        "assert '_tt_xe' not in t.code.split('\\n', 1)[1]\n"
        "out = t.generate(vs=['<a&b>', 3, None, b'\\xc3\\xa9<', 1.5], r='<r>')\n"
        "assert out == '[&lt;a&amp;b&gt;][3][None][\\u00e9&lt;][1.5]<r>'.encode(), out\n"
        "assert escape.xhtml_escape('<\\'\">&') == '&lt;&#x27;&quot;&gt;&amp;'\n"
        # A real server answering through the Python header block.
        "import asyncio, socket\n"
        "from squall import _http1server, web\n"
        "assert _http1server._header_lines is _http1server._python_header_lines\n"
        "class H(web.RequestHandler):\n"
        "    def get(self):\n"
        "        self.set_header('X-Test', 'caf\\u00e9')\n"
        "        self.write(template.Template('<{{ v }}>').generate(v='&'))\n"
        "async def main():\n"
        "    server = web.Application([('/', H)]).listen(0, '127.0.0.1')\n"
        "    port = next(iter(server._sockets.values())).getsockname()[1]\n"
        "    reader, writer = await asyncio.open_connection('127.0.0.1', port)\n"
        "    writer.write(b'GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\n"
        "    data = await reader.read()\n"
        "    server.stop()\n"
        "    return data\n"
        "data = asyncio.run(main())\n"
        "assert data.startswith(b'HTTP/1.1 200 OK\\r\\n'), data\n"
        "assert b'\\r\\nX-Test: caf\\xe9\\r\\n' in data, data\n"
        "assert data.endswith(b'\\r\\n\\r\\n<&amp;>'), data\n"
        "print('ok')\n"
    )
    env = {**os.environ, "SQUALL_NO_SPEEDUPS": "1", "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# -- header_lines ---------------------------------------------------------------

from squall import _http1server  # noqa: E402

header_text = st.text(alphabet=st.sampled_from("aZ09-: ;=\t\u00e9\u00ff\r\n\u20ac"), max_size=12)


@needs_c
@given(st.dictionaries(header_text, st.lists(header_text, max_size=3), max_size=6))
def test_header_lines_is_the_python_block_or_defers(as_list: dict[str, list[str]]) -> None:
    built = speedups.header_lines(as_list)
    try:
        expected = _http1server._python_header_lines(as_list)
    except ValueError:
        # A CR or LF somewhere: C defers, Python raises.
        assert built is None
        return
    if built is None:
        # Deferred only for characters beyond Latin-1 or a CR or LF in a
        # name or value (here in a name without values: no line, no error).
        text = "".join(as_list) + "".join(v for values in as_list.values() for v in values)
        assert any(ord(c) > 255 or c in "\r\n" for c in text)
    else:
        assert built == expected
        assert type(built) is str
        # Stored like any str Python would build (ASCII or Latin-1 form).
        assert built.isascii() == expected.isascii()
        assert hash(built) == hash(expected)


@needs_c
def test_header_lines_defers_on_other_shapes() -> None:
    assert speedups.header_lines({"X": ("a",)}) is None
    assert speedups.header_lines({"X": [1]}) is None
    assert speedups.header_lines({b"X": ["a"]}) is None
    assert speedups.header_lines([("X", "a")]) is None
    assert speedups.header_lines({"X": ["a\r\nInjected: yes"]}) is None
    assert speedups.header_lines({"X\n": ["a"]}) is None
    assert speedups.header_lines({"X": ["\u20ac"]}) is None
    assert speedups.header_lines({}) == ""
    assert speedups.header_lines({"A": [], "B": ["1", "2"]}) == "B: 1\r\nB: 2\r\n"
    # A Latin-1 name without values writes nothing: the block stays ASCII.
    block = speedups.header_lines({"\u00e9": [], "B": ["1"]})
    assert block == "B: 1\r\n" and block.isascii()


def test_python_header_lines_rejects_injection() -> None:
    with pytest.raises(ValueError, match="Illegal characters"):
        _http1server._python_header_lines({"X": ["a\r\nInjected: yes"]})
    assert _http1server._python_header_lines({"X": ["\u00e9"]}) == "X: \u00e9\r\n"


# -- parse_qs -------------------------------------------------------------------

import urllib.parse  # noqa: E402

from squall import httputil  # noqa: E402


def _parse_qsl_dict(qs: str) -> dict[str, list[bytes]]:
    """What the query string means to urllib (the reference)."""
    result: dict[str, list[bytes]] = {}
    for name, value in urllib.parse.parse_qsl(qs, keep_blank_values=True, encoding="latin-1"):
        result.setdefault(name, []).append(value.encode("latin-1"))
    return result


@needs_c
@given(st.text(alphabet=st.sampled_from("ab=&+%09AFfgz;/ "), max_size=40))
def test_parse_qs_is_parse_qsl(qs: str) -> None:
    assert speedups.parse_qs(qs, 1000) == _parse_qsl_dict(qs)


@needs_c
@pytest.mark.parametrize(
    "qs",
    [
        "",
        "&",
        "name=squall",
        "a=1&a=2&b",
        "&&x=%41%4g%zz%&y=a+b%2B&=v&k=",
        "%C3%A9=%E9%00",
        "q=%2",
        "q=%",
        "a==b=c",
        "x=" + "%41" * 200 + "&y=" + "b" * 300,
    ],
)
def test_parse_qs_edge_cases(qs: str) -> None:
    parsed = speedups.parse_qs(qs, 1000)
    assert parsed == _parse_qsl_dict(qs)
    assert list(parsed) == list(_parse_qsl_dict(qs))  # first-seen order


@needs_c
def test_parse_qs_defers_on_non_ascii() -> None:
    assert speedups.parse_qs("\u00e9=1", 1000) is None
    assert speedups.parse_qs(b"a=1", 1000) is None
    # The Python path then answers, as urllib does.
    assert httputil._parse_qs_bytes("\u00e9=%41", 100) == {"\u00e9": [b"A"]}


@needs_c
def test_parse_qs_defers_on_too_many_fields() -> None:
    # max_fields or more "&": None, and _parse_qs_bytes refuses the text.
    assert speedups.parse_qs("a&b&c", 3) == {"a": [b""], "b": [b""], "c": [b""]}
    assert speedups.parse_qs("a&b&c&", 3) is None
    assert speedups.parse_qs("a", 0) is None
    with pytest.raises(TypeError, match="takes 2 arguments"):
        speedups.parse_qs("a")
    with pytest.raises(httputil.HTTPInputError, match="Max number of fields"):
        httputil._parse_qs_bytes("a&b&c&", 3)
    with pytest.raises(httputil.HTTPInputError, match="Max number of fields"):
        httputil._parse_qs_bytes("a", 0)


@given(st.text(alphabet=st.sampled_from("ab=&+%09AFfgz\u00e9 "), max_size=40))
def test_parse_qs_bytes_is_parse_qsl(qs: str) -> None:
    # Whichever path answers (C for ASCII, Python otherwise).
    assert httputil._parse_qs_bytes(qs, 1000) == _parse_qsl_dict(qs)


def test_parse_qs_bytes_rejects_text_beyond_latin1() -> None:
    # Only a request built by hand can have such a query (the network gives
    # Latin-1 text); it gets a clear error naming the query.
    with pytest.raises(httputil.HTTPInputError, match="beyond Latin-1: '=\u0100'"):
        httputil._parse_qs_bytes("=\u0100", 1000)
    request = httputil.HTTPServerRequest(
        start_line=httputil.RequestStartLine("GET", "/?a=\u20ac", "HTTP/1.1"),
        headers=httputil.HTTPHeaders({"Host": "example.com"}),
    )
    with pytest.raises(httputil.HTTPInputError, match="beyond Latin-1"):
        request.arguments


# -- request headers: pair_appender and build_headers ---------------------------


def test_roles_are_numbered_as_the_c_module_expects() -> None:
    assert (
        _http1server._OTHER,
        _http1server._CONTENT_LENGTH,
        _http1server._TRANSFER_ENCODING,
        _http1server._CONNECTION,
        _http1server._EXPECT,
        _http1server._CONTENT_ENCODING,
    ) == (0, 1, 2, 3, 4, 5)


@needs_c
def test_pair_appender_appends_both() -> None:
    items: list[Any] = []
    append = speedups.pair_appender(items)
    assert append(b"Host", b"x") is None
    append(b"X", b"")
    assert items == [b"Host", b"x", b"X", b""]
    with pytest.raises(TypeError, match="expected 2 arguments, got 1"):
        append(b"Host")
    with pytest.raises(TypeError, match="must be list, not tuple"):
        speedups.pair_appender(())


raw_header_name = st.sampled_from(
    [b"Host", b"host", b"Content-Length", b"content-length", b"Transfer-Encoding",
     b"Connection", b"connection", b"Expect", b"Content-Encoding", b"X-Thing", b"Cookie"]
)
raw_header_value = st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@needs_c
@given(st.lists(st.tuples(raw_header_name, raw_header_value), max_size=8))
def test_build_headers_is_the_python_build(pairs: list[tuple[bytes, bytes]]) -> None:
    raw = [item for pair in pairs for item in pair]
    expected = _http1server._python_build_headers(raw, _http1server._wire_names)  # fills it
    built = speedups.build_headers(raw, _http1server._wire_names)
    assert built == expected
    # Same order of names, and values stored like any str Python makes.
    assert list(built[0]) == list(expected[0])
    for values, other in zip(built[0].values(), expected[0].values()):
        assert [hash(v) for v in values] == [hash(v) for v in other]


@needs_c
def test_build_headers_defers_and_checks() -> None:
    names = {b"Host": ("Host", 0), b"Connection": ("Connection", 3)}
    assert speedups.build_headers([b"Host", b"x", b"Unknown", b"y"], names) is None
    assert speedups.build_headers([b"Host"], names) is None  # odd length
    assert speedups.build_headers((b"Host", b"x"), names) is None
    assert speedups.build_headers([b"Host", "x"], names) is None
    assert speedups.build_headers([b"Host", b"x"], {b"Host": ["Host", 0]}) is None
    built = speedups.build_headers(
        [b"Connection", b"keep-alive \t", b"Host", b"a\xe9", b"Connection", b"Upgrade"], names
    )
    assert built == (
        {"Connection": ["keep-alive", "Upgrade"], "Host": ["a\u00e9"]},
        None,
        None,
        "keep-alive,Upgrade",
        None,
        None,
    )
    assert speedups.build_headers([], names) == ({}, None, None, None, None, None)
    with pytest.raises(TypeError, match="takes 2 arguments"):
        speedups.build_headers([])
