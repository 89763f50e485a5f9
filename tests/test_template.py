"""Tests for squall.template: syntax, directives, inheritance, errors, loaders."""

from __future__ import annotations

import contextlib
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from squall import escape
from squall import template as template_module
from squall.template import (
    BaseLoader,
    DictLoader,
    Loader,
    ParseError,
    Template,
    filter_whitespace,
)


def render(source: str, **kwargs: Any) -> bytes:
    return Template(source).generate(**kwargs)


def render_from(templates: dict[str, str], name: str, **kwargs: Any) -> bytes:
    return DictLoader(templates).load(name).generate(**kwargs)


def raised_traceback(template: Template, **kwargs: Any) -> str:
    with pytest.raises(ZeroDivisionError):
        try:
            template.generate(**kwargs)
        except ZeroDivisionError:
            text = traceback.format_exc()
            raise
    return text


# How a template outputs an autoescaped value: by one call of the C escape
# (the default when squall._speedups is built), by one call of its Python
# equivalent, or with inline code (the default without the C module). All
# three must give the same pages.
ESCAPE_MODES = ["c-call", "python-call", "inline"]


@contextlib.contextmanager
def escape_mode(mode: str) -> Iterator[None]:
    """Templates compiled inside use ``mode``."""
    if mode == "c-call" and escape._speedups is None:
        pytest.skip("squall._speedups is not built")
    saved = template_module._ESCAPE_BY_CALL, template_module._STOCK_DEFAULTS
    template_module._ESCAPE_BY_CALL = mode != "inline"
    if mode == "python-call":
        defaults = list(saved[1])
        defaults[2] = template_module._escape_value
        template_module._STOCK_DEFAULTS = tuple(defaults)
    try:
        yield
    finally:
        template_module._ESCAPE_BY_CALL, template_module._STOCK_DEFAULTS = saved


@pytest.fixture(params=ESCAPE_MODES)
def each_escape_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    with escape_mode(request.param):
        yield request.param


def test_escape_modes_compile_as_named() -> None:
    for mode in ESCAPE_MODES:
        with escape_mode(mode):
            code = Template("{{ v }}").code
        assert ("_tt_xe((v), _tt_e)" in code) == (mode != "inline")
        assert ("if '<' in _tt_x" in code) == (mode == "inline")


# -- expressions --------------------------------------------------------------

def test_expression_values_become_utf8_bytes() -> None:
    assert render("Hello {{ name }}!", name="Ben") == b"Hello Ben!"
    assert render("Hello {{ name }}!", name=b"Ben") == b"Hello Ben!"
    assert render("{{ 2 + 2 }} {{ None }} {{ 1.5 }}") == b"4 None 1.5"
    assert render("{{ '\u00e9' }}") == "\u00e9".encode()
    assert render("\u00e9".encode()) == "\u00e9".encode()


def test_default_autoescape_is_xhtml(each_escape_mode: str) -> None:
    assert render("{{ s }}", s="<a href=\"x\">'&'</a>") == (
        b"&lt;a href=&quot;x&quot;&gt;&#x27;&amp;&#x27;&lt;/a&gt;"
    )
    assert render("{{ s }}", s=b"<b>") == b"&lt;b&gt;"
    assert render("{{ s }}", s=["<"]) == b"[&#x27;&lt;&#x27;]"
    assert render("{{ n }}", n=-12) == b"-12"


@given(st.one_of(st.text(), st.integers(), st.floats(allow_nan=False), st.booleans()))
def test_fast_escape_matches_the_escape_module(value: Any) -> None:
    expected = escape.utf8(escape.xhtml_escape(value if isinstance(value, str) else str(value)))
    for mode in ESCAPE_MODES:
        if mode == "c-call" and escape._speedups is None:
            continue
        with escape_mode(mode):
            assert render("{{ v }}", v=value) == expected


def test_expression_with_comment_or_newline(each_escape_mode: str) -> None:
    assert render("{{ 1 # one\n }}") == b"1"
    assert render("{{ [1,\n 2] }}") == b"[1, 2]"
    assert render("{{ '#' }}") == b"#"


def test_literal_tag_openers_and_braces() -> None:
    assert render("{{!") == b"{{"
    assert render("{%!") == b"{%"
    assert render("{#!") == b"{#"
    assert render("{{ 'expr' }} {{!jquery expr}}") == b"expr {{jquery expr}}"
    assert render("{{{ x }}}", x=1) == b"{1}"
    assert render("{{{{ x }}}}", x=1) == b"{{1}}"
    assert render("trailing {") == b"trailing {"


def test_comments_are_removed() -> None:
    assert render("Hello{# TODO #} {{ name }}!", name="Ben") == b"Hello Ben!"
    assert render("{% comment anything at all %}foo") == b"foo"


def test_default_namespace() -> None:
    out = render(
        "{{ url_escape('a b') }}|{% raw json_encode({'a': '</'}) %}|{{ squeeze('a  b') }}"
        "|{% raw linkify('http://x.com') %}|{{ datetime.date(2000, 1, 2) }}|{% raw escape('<') %}"
        "|{{ _tt_utf8('x') }}|{{ _tt_string_types == (str, bytes) }}"
    )
    assert out == (
        b'a+b|{"a": "<\\/"}|a b|<a href="http://x.com">http://x.com</a>|2000-01-02|&lt;'
        b"|x|True"
    )


def test_kwargs_override_namespace() -> None:
    loader = DictLoader({"t.html": "{{ inc(5) }} {{ k }}"}, namespace={"inc": lambda x: x + 1, "k": 1})
    assert loader.load("t.html").generate() == b"6 1"
    assert loader.load("t.html").generate(k=2) == b"6 2"


class _Shouting(str):
    """A str subclass whose str() differs from its characters."""

    def __str__(self) -> str:
        return "SHOUT"


class _Markup:
    def __str__(self) -> str:
        return "<obj & 'co'>"


class _MarkupInt(int):
    """An int subclass: not output by the inline int path."""

    def __str__(self) -> str:
        return "<int>"


# Values the inline escaping (exact str) and its helper (everything else)
# must render exactly as the escape module does.
TRICKY_VALUES: list[Any] = [
    "",
    "plain",
    "<script>alert('x & \"y\"')</script>",
    "&amp; already",
    "\u00e9\u2603 <\U0001f600>",
    b"<b>\xc3\xa9</b>",
    b"",
    None,
    0,
    -12,
    1.5,
    float("inf"),
    True,
    ["<", b">"],
    _Shouting("<i>"),
    _Markup(),
    _MarkupInt(3),
    10**30,
]


def _generic_render(source: str, **kwargs: Any) -> bytes:
    """Render through the path a caller-supplied escaper takes (no inline escaping)."""
    return Template(source).generate(xhtml_escape=lambda value: escape.xhtml_escape(value), **kwargs)


@pytest.mark.parametrize("value", TRICKY_VALUES, ids=repr)
def test_inline_escaping_matches_the_generic_path(value: Any, each_escape_mode: str) -> None:
    if isinstance(value, (str, bytes)):
        text = escape.to_unicode(value)
        expected = escape.xhtml_escape(str.__str__(text) if isinstance(text, str) else text)
    else:
        expected = escape.xhtml_escape(str(value))
    source = "[{{ v }}]{% for i in range(2) %}({{ v }}){% end %}"
    out = render(source, v=value)
    assert out == f"[{expected}]({expected})({expected})".encode()
    assert _generic_render(source, v=value) == out


@pytest.mark.parametrize("value", TRICKY_VALUES, ids=repr)
def test_raw_output_of_tricky_values(value: Any) -> None:
    if isinstance(value, bytes):
        expected = value
    elif isinstance(value, str):
        expected = str.__str__(value).encode()
    else:
        expected = str(value).encode()
    assert render("{% raw v %}|{% autoescape None %}{{ v }}", v=value) == expected + b"|" + expected


def test_bytes_that_are_not_utf8(each_escape_mode: str) -> None:
    # Raw output passes them through untouched, whatever surrounds them.
    blob = b"\xff\xfe<\x80>"
    assert render("a{% raw v %}\u00e9{{ s }}", v=blob, s="<") == b"a" + blob + "\u00e9&lt;".encode()
    assert render("{% apply f %}x{% end %}", f=lambda b: b + b"\xff") == b"x\xff"
    # Escaping decodes them, as xhtml_escape does.
    with pytest.raises(UnicodeDecodeError):
        render("{{ v }}", v=blob)


def test_text_with_lone_surrogates_cannot_be_encoded(each_escape_mode: str) -> None:
    with pytest.raises(UnicodeEncodeError):
        render("{{ v }}", v="\ud800")
    with pytest.raises(UnicodeEncodeError):
        render("{% raw v %}", v="\udcff")
    # Inside {% try %} the error is raised at the expression, where the
    # template can catch it.
    source = (
        "a{% try %}b{{ v }}{% except UnicodeEncodeError %}E{% end %}"
        "{% try %}{% raw v %}{% except UnicodeEncodeError %}R{% end %}"
        "{% try %}{% apply f %}{{ v }}{% end %}{% except UnicodeEncodeError %}A{% end %}"
        "{% try %}{% for i in [1] %}{{ i }}{{ v }}{% end %}"
        "{% except UnicodeEncodeError %}L{% end %}"
    )
    assert render(source, v="\ud800", f=lambda b: b) == b"abERA1L"
    assert render(source, v="<", f=lambda b: b) == b"ab&lt;<&lt;1&lt;"
    unescaped = "{% autoescape None %}{% try %}{{ v }}{% except UnicodeEncodeError %}U{% end %}"
    assert render(unescaped, v="\ud800") == b"U"


def test_escaper_results_follow_utf8_rules(each_escape_mode: str) -> None:
    assert render("{{ v }}", v="x", xhtml_escape=lambda b: b"<" + b + b">") == b"<x>"
    with pytest.raises(TypeError, match="Expected bytes, unicode, or None"):
        render("{{ v }}", v="x", xhtml_escape=lambda b: 42)
    # None is passed along and fails the page's join, as in Tornado.
    with pytest.raises(TypeError):
        render("{{ v }}", v="x", xhtml_escape=lambda b: None)


def test_expression_list_is_one_tuple(each_escape_mode: str) -> None:
    assert render("{{ 1, '<' }}") == b"(1, &#x27;&lt;&#x27;)"


def test_output_before_a_caught_error_is_kept(each_escape_mode: str) -> None:
    source = "{% try %}a{{ x }}b{{ 1 / 0 }}c{% except ZeroDivisionError %}E{% end %}."
    assert render(source, x="<") == b"a&lt;bE."


# -- directives ---------------------------------------------------------------

def test_if_elif_else() -> None:
    template = Template("{% if x > 4 %}big{% elif x > 2 %}mid{% else %}small{% end %}")
    assert template.generate(x=5) == b"big"
    assert template.generate(x=3) == b"mid"
    assert template.generate(x=1) == b"small"
    assert render("{% if True %}{% else %}{% end %}") == b""


def test_for_while_and_loop_else() -> None:
    assert render("{% for i in range(3) %}{{ i }}{% else %}!{% end %}") == b"012!"
    assert render("{% set n = 3 %}{% while n %}{{ n }}{% set n -= 1 %}{% end %}") == b"321"


def test_break_and_continue() -> None:
    template = Template(
        "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% end %}"
        "{{ i }}{% if i == 5 %}{% break %}{% end %}{% end %}"
    )
    assert template.generate() == b"01345"


@pytest.mark.parametrize(
    "source",
    [
        "{% break %}",
        "{% if 1 %}{% continue %}{% end %}",
        "{% for i in [] %}{% apply f %}{% break %}{% end %}{% end %}",
    ],
)
def test_break_outside_a_loop_is_a_parse_error(source: str) -> None:
    with pytest.raises(ParseError, match="outside for/while block"):
        Template(source)


def test_try_except_else_finally() -> None:
    template = Template(
        "{% try %}t{% set y = 1 / x %}{% except ZeroDivisionError %}e"
        "{% else %}l{% finally %}f{% end %}"
    )
    assert template.generate(x=1) == b"tlf"
    assert template.generate(x=0) == b"tef"


def test_set_import_from() -> None:
    assert render("{% set x = [1,\n 2] %}{{ len(x) }}") == b"2"
    assert render("{% import os.path %}{{ os.path.sep }}") == b"/"
    assert render("{% from os import sep %}{{ sep }}") == b"/"


def test_raw_and_module() -> None:
    assert render("{% raw '<b>' %}") == b"<b>"
    modules = type("Modules", (), {"Box": staticmethod(lambda x: f"<box>{x}</box>")})
    assert render("{% module Box('<') %}", _tt_modules=modules) == b"<box><</box>"


def test_apply() -> None:
    assert render("{% apply upper %}foo \u00e9{% end %}", upper=lambda b: b.decode().upper()) == (
        "FOO \u00c9".encode()
    )
    assert render("{% apply f %}a{{ x }}{% end %}", f=bytes.upper, x="<") == b"A&LT;"


def test_autoescape_directive_and_custom_function(each_escape_mode: str) -> None:
    assert render("{% autoescape None %}{{ s }}", s="<") == b"<"
    seen: list[Any] = []

    def shout(value: bytes) -> str:
        seen.append(value)
        return value.decode().upper()

    assert render("{% autoescape shout %}{{ s }} {{ 1 }}", s="a", shout=shout) == b"A 1"
    assert seen == [b"a", b"1"]


def test_autoescape_argument_and_loader_default() -> None:
    assert Template("{{ s }}", autoescape=None).generate(s="<") == b"<"
    loader = DictLoader({"a.html": "{{ s }}"}, autoescape=None)
    assert loader.load("a.html").generate(s="<") == b"<"


def test_passing_xhtml_escape_replaces_the_escaper(each_escape_mode: str) -> None:
    assert render("{{ 'a' }}", xhtml_escape=lambda b: b.decode().upper()) == b"A"


def test_template_rebinding_the_escaper_name_is_honoured(each_escape_mode: str) -> None:
    source = "{% set xhtml_escape = lambda b: b'[' + b + b']' %}{{ 'x' }}"
    assert render(source) == b"[x]"


def test_whitespace_modes() -> None:
    assert filter_whitespace("all", " a \n\n b ") == " a \n\n b "
    assert filter_whitespace("single", " a \t \n\n b ") == " a\nb "
    assert filter_whitespace("oneline", " a \n\n b ") == " a b "
    with pytest.raises(ValueError, match="bogus"):
        filter_whitespace("bogus", "")
    with pytest.raises(ValueError, match="bogus"):
        Template("x", whitespace="bogus")
    with pytest.raises(ValueError):
        Template("x", whitespace="all", compress_whitespace=True)
    assert Template("a  \n\n b", compress_whitespace=True).generate() == b"a\nb"
    assert Template("a  \n\n b", name="x.html", compress_whitespace=False).generate() == b"a  \n\n b"


def test_whitespace_by_filename_and_pre() -> None:
    loader = DictLoader(
        {
            "a.html": "  \n\t\n x\t  ",
            "a.js": "  \n\n y  ",
            "a.txt": "\t z\n\n",
            "pre.html": "  <pre>  keep\n\n  </pre>  ",
            "mix.txt": "\t{% include a.html %}  ",
        }
    )
    assert loader.load("a.html").generate() == b"\nx "
    assert loader.load("a.js").generate() == b"\ny "
    assert loader.load("a.txt").generate() == b"\t z\n\n"
    assert loader.load("pre.html").generate() == b"  <pre>  keep\n\n  </pre>  "
    assert loader.load("mix.txt").generate() == b"\t\nx   "


def test_whitespace_directive() -> None:
    source = (
        "{% whitespace oneline %}\n  {% for i in range(2) %}\n    {{ i }}\n  {% end %}\n"
        "{% whitespace all %}\n  pre\tformatted\n"
    )
    assert Template(source, name="x.html").generate() == b"  0  1  \n  pre\tformatted\n"
    with pytest.raises(ParseError, match="invalid whitespace mode"):
        Template("{% whitespace sometimes %}")


def test_manual_minimize_whitespace() -> None:
    source = "{% for i in items\n %}{% if i > 0 %}, {% end %}{#\n #}{{i\n }}{% end\n%}"
    assert render(source, items=range(4)) == b"0, 1, 2, 3"


# -- inheritance and includes -------------------------------------------------

def test_extends_and_blocks() -> None:
    templates = {
        "base.html": "<t>{% block title %}default{% end %}</t><b>{% block body %}body{% end %}</b>",
        "page.html": '{% extends "base.html" %}ignored{% block title %}page {{ x }}{% end %}',
        "sub.html": "{% extends 'page.html' %}{% block body %}sub{% end %}",
    }
    assert render_from(templates, "page.html", x=1) == b"<t>page 1</t><b>body</b>"
    assert render_from(templates, "sub.html", x=2) == b"<t>page 2</t><b>sub</b>"


def test_nested_blocks_and_blocks_in_includes() -> None:
    templates = {
        "base.html": "{% block outer %}[{% block inner %}i{% end %}]{% end %}{% include 'part.html' %}",
        "part.html": "({% block part %}p{% end %})",
        "child.html": "{% extends base.html %}{% block inner %}I{% end %}{% block part %}P{% end %}",
    }
    assert render_from(templates, "child.html") == b"[I](P)"


def test_blocks_keep_their_own_files_autoescape() -> None:
    templates = {
        "raw_base.html": "{% autoescape None %}{% block b %}{{ s }}{% end %}",
        "inherits.html": "{% autoescape xhtml_escape %}{% extends raw_base.html %}",
        "overrides.html": "{% extends raw_base.html %}{% block b %}{{ s }}{% end %}",
    }
    assert render_from(templates, "inherits.html", s="<") == b"<"
    assert render_from(templates, "overrides.html", s="<") == b"&lt;"


def test_include_sees_locals_and_keeps_its_autoescape() -> None:
    templates = {
        "index.html": "{% set who = '<w>' %}{% include 'part.html' %}|{% include raw.html %}",
        "part.html": "hi {{ who }}",
        "raw.html": "{% autoescape None %}{{ who }}",
    }
    assert render_from(templates, "index.html") == b"hi &lt;w&gt;|<w>"


def test_relative_paths_in_dict_loader() -> None:
    templates = {
        "a/1.html": "{% include '2.html' %}",
        "a/2.html": "{% include '../b/3.html' %}",
        "b/3.html": "ok",
    }
    assert render_from(templates, "a/1.html") == b"ok"


def test_text_across_include_and_block_edges() -> None:
    templates = {
        "base.html": "<b>{% block x %}B{% end %}</b>{% include 'inc.html' %}!",
        "inc.html": "[{{ v }}]",
        "page.html": "{% extends 'base.html' %}{% block x %}<{{ v }}>{% end %}",
        "plain.html": "{% extends 'base.html' %}{% block x %}text{% end %}",
    }
    assert render_from(templates, "page.html", v="&") == b"<b><&amp;></b>[&amp;]!"
    assert render_from(templates, "plain.html", v=1) == b"<b>text</b>[1]!"
    # The text around the block and the include is one append.
    code = DictLoader(templates).load("plain.html").code
    assert "_tt_parts.append('<b>text</b>[')" in code


def test_include_and_extends_need_a_loader() -> None:
    with pytest.raises(ParseError, match="needs a template loader"):
        Template("{% include x.html %}")
    with pytest.raises(ParseError, match="needs a template loader"):
        Template("{% extends x.html %}")


def test_including_an_extending_template_is_an_error() -> None:
    loader = DictLoader(
        {"base.html": "b", "child.html": "\n{% extends base.html %}", "page.html": "{% include child.html %}"}
    )
    with pytest.raises(ParseError) as info:
        loader.load("page.html")
    assert str(info.value) == "a template that uses {% extends %} cannot be included at child.html:2"


def test_recursive_include_is_reported() -> None:
    loader = DictLoader({"a.html": "{% include b.html %}", "b.html": "{% include a.html %}"})
    with pytest.raises(ParseError, match="includes or extends itself"):
        loader.load("a.html")


# -- errors -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("source", "message", "line"),
    [
        ("\n\n{{", "Missing end expression }}", 3),
        ("{%", "Missing end block %}", 1),
        ("a\n{# x", "Missing end comment #}", 2),
        ("{{ }}", "Empty expression", 1),
        ("{% %}", "Empty block tag ({% %})", 1),
        ("\n{% end %}", "Extra {% end %} block", 2),
        ("{% if 1 %}\n", "Missing {% end %} block for if", 2),
        ("{% else %}", "else outside if/for/while/try block", 1),
        ("{% if 1 %}{% except %}{% end %}", "except block cannot be attached to if block", 1),
        ("{% frobnicate %}", "unknown operator: 'frobnicate'", 1),
        ("{% set %}", "set missing statement", 1),
        ("{% include %}", "include missing file path", 1),
        ("{% block %}{% end %}", "block missing name", 1),
    ],
)
def test_parse_errors(source: str, message: str, line: int) -> None:
    loader = DictLoader({"foo.html": source})
    with pytest.raises(ParseError) as info:
        loader.load("foo.html")
    assert info.value.message == message
    assert info.value.filename == "foo.html"
    assert info.value.lineno == line
    assert str(info.value) == f"{message} at foo.html:{line}"


def test_parse_error_default_location() -> None:
    assert str(ParseError("asdf")) == "asdf at None:0"


def test_python_syntax_error_names_the_template_line() -> None:
    with pytest.raises(SyntaxError, match=r"in template t\.html:2"):
        DictLoader({"t.html": "a\n{{ 1 + }}"}).load("t.html")


def test_runtime_error_names_line_in_traceback(each_escape_mode: str) -> None:
    loader = DictLoader({"test.html": "one\ntwo{{ 1/0 }}\nthree"})
    assert "# test.html:2" in raised_traceback(loader.load("test.html"))
    loader = DictLoader({"test.html": "one\ntwo{% if 1/0 %}\nthree{% end %}"})
    assert "# test.html:2" in raised_traceback(loader.load("test.html"))


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes are 3.11+")
def test_runtime_error_gets_a_note() -> None:
    template = DictLoader({"n.html": "\n\n{{ 1/0 }}"}).load("n.html")
    with pytest.raises(ZeroDivisionError) as info:
        template.generate()
    assert info.value.__notes__ == ["in template n.html:3"]


def test_error_lines_through_includes_and_blocks(each_escape_mode: str) -> None:
    loader = DictLoader(
        {
            "a.html": "{% include 'b.html' %}",
            "b.html": "\n{% include 'c.html' %}",
            "c.html": "{{1/0}}",
            "base.html": "{% block 'b' %}{% end %}",
            "sub.html": "\n{% extends 'base.html' %}\n{% block 'b' %}\n{{1/0}}\n{% end %}",
        }
    )
    assert "# c.html:1 (via b.html:2, a.html:1)" in raised_traceback(loader.load("a.html"))
    assert "# sub.html:4 (via base.html:1)" in raised_traceback(loader.load("sub.html"))


def test_error_lines_through_modules() -> None:
    loader: DictLoader

    class Modules:
        @staticmethod
        def Template(name: str) -> bytes:
            return loader.load(name).generate()

    loader = DictLoader(
        {"base.html": "{% module Template('sub.html') %}", "sub.html": "\n{{1/0}}"},
        namespace={"_tt_modules": Modules},
    )
    text = raised_traceback(loader.load("base.html"))
    assert "# base.html:1" in text
    assert "# sub.html:2" in text


# -- loaders ------------------------------------------------------------------

def test_file_loader(tmp_path: Path) -> None:
    (tmp_path / "pages").mkdir()
    (tmp_path / "base.html").write_text("<h1>{% block b %}{% end %}</h1>")
    (tmp_path / "pages" / "p.html").write_text(
        "{% extends ../base.html %}{% block b %}H\u00e9llo {% include part.txt %}{% end %}",
        encoding="utf-8",
    )
    (tmp_path / "pages" / "part.txt").write_text("{{ x }}")
    loader = Loader(str(tmp_path))
    page = loader.load("pages/p.html")
    assert page.generate(x="<") == "<h1>H\u00e9llo &lt;</h1>".encode()
    assert loader.load("pages/p.html") is page

    (tmp_path / "pages" / "part.txt").write_text("changed")
    # Cached: the change shows only after reset().
    assert loader.load("pages/p.html").generate(x="") == "<h1>H\u00e9llo </h1>".encode()
    loader.reset()
    assert loader.load("pages/p.html").generate() == "<h1>H\u00e9llo changed</h1>".encode()


def test_loader_whitespace_and_namespace() -> None:
    templates = {"foo.html": "\t\tfoo\n\n", "bar.txt": "\t\tbar\n\n"}
    for mode, html_out, txt_out in [
        ("all", b"\t\tfoo\n\n", b"\t\tbar\n\n"),
        ("single", b" foo\n", b" bar\n"),
        ("oneline", b" foo ", b" bar "),
    ]:
        loader = DictLoader(templates, whitespace=mode)
        assert loader.load("foo.html").generate() == html_out
        assert loader.load("bar.txt").generate() == txt_out
    with pytest.raises(ValueError):
        DictLoader(templates, whitespace="most")


def test_non_ascii_template_name() -> None:
    assert DictLoader({"t\u00e9st.html": "hello"}).load("t\u00e9st.html").generate() == b"hello"


def test_loader_cache_hit_and_reset() -> None:
    sources = {"a.html": "one"}
    loader = DictLoader(sources)
    first = loader.load("a.html")
    assert loader.load("a.html") is first
    sources["a.html"] = "two"
    assert loader.load("a.html").generate() == b"one"
    loader.reset()
    assert loader.load("a.html").generate() == b"two"


def test_custom_loader_and_concurrent_loads() -> None:
    created: list[str] = []

    class CountingLoader(BaseLoader):
        def resolve_path(self, name: str, parent_path: str | None = None) -> str:
            return name

        def _create_template(self, name: str) -> Template:
            created.append(name)
            return Template(f"<{name}>", name=name, loader=self)

    loader = CountingLoader(autoescape=None)
    results: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: results.append(loader.load("x").generate()))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [b"<x>"] * 8
    assert created == ["x"]


def test_template_attributes() -> None:
    template = Template("{{ x }}", name="a.b.html")
    assert template.name == "a.b.html"
    assert template.autoescape == "xhtml_escape"
    assert template.loader is None
    assert template.namespace == {}
    assert "# a.b.html:1" in template.code
    assert template.compiled.co_filename == "a_b_html.generated.py"


# -- against Tornado ------------------------------------------------------------

DIFFERENTIAL_CASES = [
    "{{{x}}}",
    "{{ None }}{{ [1, '<'] }}{{ b'<a>' }}",
    "{% for i in range(3) %}\n  {{i}}\n{% else %}E{% end %}",
    "{% try %}{{ 1/0 }}{% except ZeroDivisionError as e %}{{ type(e).__name__ }}{% end %}",
    "{% whitespace oneline %}a  \n\n b{% whitespace single %}a  \n\n b\t\tc",
    "{% autoescape escape %}{{ '<' }}{% raw '<' %}",
    "{{ linkify('see http://x.com') }} {{ json_encode('</') }}",
    "\u00e9{{ '\u00e9' }}{{!x}}{%!x%}{#!x#}",
    "{% for v in values %}[{{ v }}|{% raw v %}]{% end %}",
    "{% apply f %}<{{ values[2] }}>{% end %}{% autoescape None %}{{ values[0] }}",
]


class _Odd:
    def __str__(self) -> str:
        return "<odd & 'co'>"


DIFFERENTIAL_VALUES: list[Any] = [
    "<a href=\"x\">'&amp;'</a>",
    "plain \u00e9\u2603",
    b"<b>\xc3\xa9</b>",
    None,
    7,
    2.5,
    False,
    ["<", b">"],
    _Odd(),
]


@pytest.mark.parametrize("source", DIFFERENTIAL_CASES)
def test_same_output_as_tornado(source: str) -> None:
    tornado_template = pytest.importorskip("tornado.template")
    kwargs = {"x": 1, "values": DIFFERENTIAL_VALUES, "f": bytes.upper}
    expected = tornado_template.Template(source, name="d.html").generate(**kwargs)
    assert Template(source, name="d.html").generate(**kwargs) == expected
