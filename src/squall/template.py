"""Compile Tornado-syntax templates to Python functions and render them to bytes.

A template mixes text with ``{{ expression }}`` output, ``{% directive %}``
control flow and ``{# comments #}``::

    <html>
      <head><title>{{ title }}</title></head>
      <body>
        <ul>
          {% for item in items %}
            <li>{{ escape(item) }}</li>
          {% end %}
        </ul>
      </body>
    </html>

The template is parsed once, turned into the source of one Python function
and compiled; :meth:`Template.generate` then runs that function with the
keyword arguments as its global names and returns the rendered ``bytes``.
Expressions and statements are ordinary Python: anything the function's
namespace can reach may be used, including functions passed in by the
caller.

Directives (each block directive is closed by ``{% end %}``):

``{% if cond %}``, ``{% elif cond %}``, ``{% else %}``
    Conditional output.
``{% for x in expr %}``, ``{% while cond %}``, ``{% break %}``, ``{% continue %}``
    Loops; ``{% else %}`` works as in Python.
``{% try %}``, ``{% except ... %}``, ``{% else %}``, ``{% finally %}``
    Exception handling around part of the template.
``{% set x = y %}``, ``{% import mod %}``, ``{% from mod import name %}``
    Python statements, run where they appear.
``{% raw expr %}``
    Output ``expr`` without autoescaping.
``{% module expr %}``
    Output ``_tt_modules.expr`` without autoescaping; the web framework
    puts its UI modules under ``_tt_modules``.
``{% apply function %}...{% end %}``
    Render the enclosed part, then output ``function(rendered_bytes)``.
``{% autoescape function %}``
    Set the escaping function of this file (``None`` turns it off). It does
    not reach into included files, which keep their own.
``{% whitespace mode %}``
    Set how text from here to the next such directive is compacted:
    ``all`` keeps it, ``single`` collapses runs of whitespace, ``oneline``
    collapses all whitespace to single spaces (see :func:`filter_whitespace`).
``{% extends "base.html" %}`` and ``{% block name %}...{% end %}``
    Inheritance: a template that extends another is rendered as its parent,
    with each block the child defines replacing the parent's block of the
    same name. Text of the child outside any block is ignored.
``{% include "other.html" %}``
    Inline another template at this point; it sees the local names of the
    including template.
``{% comment text %}``, ``{# text #}``
    Removed from the output.

``{{!``, ``{%!`` and ``{#!`` output ``{{``, ``{%`` and ``{#`` literally. When
three or more braces open an expression the innermost two count, so
``{{{ x }}}`` renders ``{`` + x + ``}``.

Output of ``{{ }}`` passes through the autoescape function (by default
:func:`squall.escape.xhtml_escape`) after being converted to UTF-8 ``bytes``;
values that are not strings are converted with ``str()`` first.

Templates see these names besides the caller's: ``escape`` and
``xhtml_escape``, ``url_escape``, ``json_encode``, ``squeeze``, ``linkify``,
``datetime``, ``_tt_utf8`` and ``_tt_string_types``.

Every line of the generated code ends with a ``# name.html:LINE`` comment (and
``(via parent.html:LINE, ...)`` for code that comes from an include or a
block), so a traceback through a template shows where in the template the
error happened. On Python 3.11+ the exception also gets a note naming the
template line.
"""

from __future__ import annotations

import datetime
import linecache
import os.path
import posixpath
import re
import sys
import threading
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from squall import escape

__all__ = [
    "BaseLoader",
    "DictLoader",
    "Loader",
    "ParseError",
    "Template",
    "filter_whitespace",
]

_DEFAULT_AUTOESCAPE = "xhtml_escape"

# The stock escaper, compared by identity to decide whether rendering may
# use the escaping written inline into the generated code.
_STOCK_XHTML_ESCAPE = escape.xhtml_escape

_WHITESPACE_MODES = ("all", "single", "oneline")

# Runs of blanks, and any whitespace around a newline, for "single" mode.
_BLANK_RUN_RE = re.compile(r"[\t ]+")
_NEWLINE_RUN_RE = re.compile(r"\s*\n\s*")
_ANY_SPACE_RUN_RE = re.compile(r"\s+")

# "{{", "{%" or "{#": the three ways a tag opens.
_TAG_OPEN_RE = re.compile(r"\{[{%#]")

_TAG_CLOSERS = {"{": "}}", "%": "%}", "#": "#}"}
_TAG_KIND_NAMES = {"{": "expression", "%": "block", "#": "comment"}

_INDENT = "    "

# Directives that open a Python compound statement and the clauses that may
# continue each one.
_COMPOUND = ("if", "for", "while", "try")
_CLAUSE_PARENTS: dict[str, tuple[str, ...]] = {
    "else": ("if", "for", "while", "try"),
    "elif": ("if",),
    "except": ("try",),
    "finally": ("try",),
}
_LOOPS = ("for", "while")


class _Unset:
    """Marker type for "argument not given" where ``None`` is meaningful."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


def filter_whitespace(mode: str, text: str) -> str:
    """Compact the whitespace of template text ``text`` according to ``mode``.

    ``"all"`` returns the text unchanged. ``"single"`` turns each run of
    spaces and tabs into one space and each run of whitespace containing a
    newline into one newline. ``"oneline"`` turns every run of whitespace,
    newlines included, into one space. Any other mode raises ``ValueError``.
    """
    if mode == "all":
        return text
    if mode == "single":
        return _NEWLINE_RUN_RE.sub("\n", _BLANK_RUN_RE.sub(" ", text))
    if mode == "oneline":
        return _ANY_SPACE_RUN_RE.sub(" ", text)
    raise ValueError(f"invalid whitespace mode {mode!r}; expected one of {_WHITESPACE_MODES}")


class ParseError(Exception):
    """A template could not be parsed.

    ``filename`` and ``lineno`` locate the problem; ``str()`` of the error is
    ``"<message> at <filename>:<lineno>"``.
    """

    def __init__(self, message: str, filename: str | None = None, lineno: int = 0) -> None:
        self.message = message
        self.filename = filename
        self.lineno = lineno

    def __str__(self) -> str:
        return f"{self.message} at {self.filename}:{self.lineno}"


# ---------------------------------------------------------------------------
# Parse tree

class _Text:
    __slots__ = ("value", "line")

    def __init__(self, value: str, line: int) -> None:
        self.value = value
        self.line = line


class _Expression:
    __slots__ = ("code", "line", "raw")

    def __init__(self, code: str, line: int, raw: bool) -> None:
        self.code = code
        self.line = line
        self.raw = raw


class _Statement:
    __slots__ = ("code", "line")

    def __init__(self, code: str, line: int) -> None:
        self.code = code
        self.line = line


class _Compound:
    """if/for/while/try with its clauses, each a (header, line, body)."""

    __slots__ = ("clauses", "line")

    def __init__(self, line: int) -> None:
        self.line = line
        self.clauses: list[tuple[str, int, list[Any]]] = []


class _Apply:
    __slots__ = ("function", "line", "body")

    def __init__(self, function: str, line: int, body: list[Any]) -> None:
        self.function = function
        self.line = line
        self.body = body


class _Block:
    __slots__ = ("name", "line", "body")

    def __init__(self, name: str, line: int, body: list[Any]) -> None:
        self.name = name
        self.line = line
        self.body = body


class _Include:
    __slots__ = ("name", "line")

    def __init__(self, name: str, line: int) -> None:
        self.name = name
        self.line = line


class _Extends:
    __slots__ = ("name", "line")

    def __init__(self, name: str, line: int) -> None:
        self.name = name
        self.line = line


class _File:
    """The parse tree of one template: its top-level nodes."""

    __slots__ = ("body",)

    def __init__(self, body: list[Any]) -> None:
        self.body = body


# ---------------------------------------------------------------------------
# Parser

class _Parser:
    """Turns template text into a tree of nodes, one pass, no backtracking."""

    def __init__(self, template: Template, text: str, whitespace: str) -> None:
        self._template = template
        self._text = text
        self._whitespace = whitespace
        self._tokens = self._tokenize()

    def _error(self, message: str, line: int) -> ParseError:
        return ParseError(message, self._template.name, line)

    def _tokenize(self) -> Iterator[tuple[str, str, int]]:
        """Yield (kind, content, line) for text, expression and block tags."""
        text = self._text
        pos = 0
        line = 1
        while True:
            match = _TAG_OPEN_RE.search(text, pos)
            if match is None:
                if pos < len(text):
                    yield "text", text[pos:], line
                return
            start = match.start()
            # With three or more braces the innermost pair opens the tag.
            while text.startswith("{{{", start):
                start += 1
            if start > pos:
                yield "text", text[pos:start], line
                line += text.count("\n", pos, start)
            kind = text[start + 1]
            if text.startswith("!", start + 2):
                yield "text", text[start : start + 2], line
                pos = start + 3
                continue
            closer = _TAG_CLOSERS[kind]
            end = text.find(closer, start + 2)
            if end < 0:
                raise self._error(f"Missing end {_TAG_KIND_NAMES[kind]} {closer}", line)
            if kind != "#":
                yield kind, text[start + 2 : end].strip(), line
            line += text.count("\n", start, end)
            pos = end + 2

    def parse(self) -> list[Any]:
        body, closer = self._parse_body(None, False)
        if closer is not None:
            raise self._error("Extra {% end %} block", closer[2])
        return body

    def _parse_body(
        self, opener: str | None, in_loop: bool
    ) -> tuple[list[Any], tuple[str, str, int] | None]:
        """Parse nodes until ``{% end %}``, a clause tag, or the end of input.

        Returns the nodes and the (operator, argument, line) of the tag that
        stopped the body, or ``None`` at the end of input.
        """
        body: list[Any] = []
        for kind, content, line in self._tokens:
            if kind == "text":
                value = content
                if "<pre>" not in value:
                    value = filter_whitespace(self._whitespace, value)
                if value:
                    body.append(_Text(value, line))
                continue
            if kind == "{":
                if not content:
                    raise self._error("Empty expression", line)
                body.append(_Expression(content, line, raw=False))
                continue
            if not content:
                raise self._error("Empty block tag ({% %})", line)
            parts = content.split(None, 1)
            operator = parts[0]
            argument = parts[1].strip() if len(parts) > 1 else ""
            if operator == "end" or operator in _CLAUSE_PARENTS:
                if operator != "end":
                    allowed = _CLAUSE_PARENTS[operator]
                    if opener is None:
                        raise self._error(
                            f"{operator} outside {'/'.join(allowed)} block", line
                        )
                    if opener not in allowed:
                        raise self._error(
                            f"{operator} block cannot be attached to {opener} block", line
                        )
                elif opener is None:
                    raise self._error("Extra {% end %} block", line)
                return body, (operator, content, line)
            node = self._directive(operator, argument, content, line, in_loop)
            if node is not None:
                body.append(node)
        if opener is not None:
            raise self._error(f"Missing {{% end %}} block for {opener}", self._last_line())
        return body, None

    def _last_line(self) -> int:
        return self._text.count("\n") + 1

    def _require(self, operator: str, argument: str, what: str, line: int) -> str:
        if not argument:
            raise self._error(f"{operator} missing {what}", line)
        return argument

    def _directive(
        self, operator: str, argument: str, content: str, line: int, in_loop: bool
    ) -> Any:
        if operator in _COMPOUND:
            return self._compound(operator, content, line, in_loop)
        if operator in ("break", "continue"):
            if not in_loop:
                raise self._error(f"{operator} outside {'/'.join(_LOOPS)} block", line)
            return _Statement(operator, line)
        if operator == "comment":
            return None
        if operator in ("include", "extends"):
            path = self._require(operator, argument, "file path", line).strip("\"'")
            return _Include(path, line) if operator == "include" else _Extends(path, line)
        if operator == "set":
            return _Statement(self._require(operator, argument, "statement", line), line)
        if operator in ("import", "from"):
            self._require(operator, argument, "statement", line)
            return _Statement(content, line)
        if operator == "raw":
            return _Expression(self._require(operator, argument, "expression", line), line, True)
        if operator == "module":
            module = self._require(operator, argument, "expression", line)
            return _Expression("_tt_modules." + module, line, True)
        if operator == "autoescape":
            function = self._require(operator, argument, "function name", line)
            self._template.autoescape = None if function == "None" else function
            return None
        if operator == "whitespace":
            mode = self._require(operator, argument, "mode", line)
            if mode not in _WHITESPACE_MODES:
                raise self._error(f"invalid whitespace mode {mode!r}", line)
            self._whitespace = mode
            return None
        if operator == "apply":
            function = self._require(operator, argument, "method name", line)
            # The applied part becomes a nested function: a loop outside it
            # cannot be broken from inside.
            body, _ = self._parse_body(operator, False)
            return _Apply(function, line, body)
        if operator == "block":
            name = self._require(operator, argument, "name", line)
            body, _ = self._parse_body(operator, in_loop)
            return _Block(name, line, body)
        raise self._error(f"unknown operator: {operator!r}", line)

    def _compound(self, operator: str, header: str, line: int, in_loop: bool) -> _Compound:
        node = _Compound(line)
        is_loop = operator in _LOOPS
        clause_header, clause_line, first = header, line, True
        while True:
            # A loop's own body may break; its else clause belongs outside.
            body, closer = self._parse_body(operator, in_loop or (is_loop and first))
            node.clauses.append((clause_header, clause_line, body))
            assert closer is not None
            clause_op, clause_header, clause_line = closer
            if clause_op == "end":
                return node
            first = False


# ---------------------------------------------------------------------------
# Code generation
#
# A template becomes one function that appends ``str`` pieces to a list and
# encodes their join once: no per-piece UTF-8 round trip. Each ``{{ }}``
# is output, with the stock autoescape, by one call of the C escape from
# ``squall._speedups`` (``_tt_xe``: an exact ``str`` escaped, an exact
# ``int`` through ``str()``) or, when that module is not built, by inline
# code doing the same from ``_tt_x``; any other value, and every value when
# the caller replaced ``xhtml_escape``, goes through the ``_tt_e`` helper. Only bytes
# that are not UTF-8 (which raw output passes through untouched) make the
# list hold anything but ``str``; the join then falls back to encoding piece
# by piece.

def _to_bytes(value: Any) -> bytes:
    """Convert an expression's value to the bytes a custom autoescape function receives."""
    if value.__class__ is str:
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return str(value).encode("utf-8")


# The stock autoescape, written inline into generated code for values that
# are exactly ``str``: the replacements of ``html.escape(value, quote=True)``,
# "&" first so that no entity is escaped twice. Inline, a ``{{ }}`` costs no
# Python call frame, and each ``replace`` runs only when its character is
# there: an ``in`` test is several times cheaper than a ``replace`` call
# that finds nothing, and most output has no markup characters.
_INLINE_XHTML_ESCAPE = tuple(
    f"if {char!r} in _tt_x: _tt_x = _tt_x.replace({char!r}, {entity!r})"
    for char, entity in escape._XHTML_REPLACEMENTS
)
# Whether generated code outputs each autoescaped value through one call of
# ``_tt_xe`` (the C escape from squall._speedups: one call beats the five
# tests and the replaces) or with inline code (without the C module a Python
# call would cost more than the inline tests). Read when a template is
# compiled; both give the same output.
_ESCAPE_BY_CALL = escape._speedups is not None


def _escape_value(value: Any, other: Callable[[Any], Any]) -> Any:
    """The output of an autoescaped value, as ``squall._speedups.xhtml_escape``
    gives it when called with ``other``: used in its place when the C module
    is not built (and ``_ESCAPE_BY_CALL`` is set anyway)."""
    cls = value.__class__
    if cls is str:
        return escape._xhtml_escape_str(value)
    if cls is int:
        return str(value)
    return other(value)


def _other_only(value: Any, other: Callable[[Any], Any]) -> Any:
    """``_tt_xe`` when the caller replaced ``xhtml_escape``: every value goes
    to ``other``, the caller's escape."""
    return other(value)


_XE = escape._speedups.xhtml_escape if escape._speedups is not None else _escape_value


def _xhtml_escape_other(value: Any) -> str:
    """The stock autoescape of a value that is not exactly ``str``.

    Gives the characters of ``utf8(xhtml_escape(_to_bytes(value)))``:
    bytes are decoded as UTF-8 (strictly, as ``xhtml_escape`` does), other
    objects go through ``str()``.
    """
    cls = value.__class__
    if cls is int or cls is float or cls is bool or value is None:
        # Their str() has no markup characters.
        return str(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    elif isinstance(value, str):
        # A subclass's characters, not whatever its __str__ makes of them.
        value = str.__str__(value)
    else:
        value = str(value)
        if value.__class__ is not str:
            value = str.__str__(value)
    return escape.xhtml_escape(value)


def _piece(value: bytes) -> str | bytes:
    """Bytes output as the page buffer holds it: decoded when valid UTF-8.

    Other bytes stay ``bytes`` in the buffer; the final join then encodes
    piece by piece (``_join_mixed``), so they reach the page unchanged.
    Decoding valid UTF-8 and encoding it again gives the same bytes.
    """
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


def _raw_text(value: Any) -> str | bytes:
    """Unescaped output of a value that is not exactly ``str``: bytes as
    they are, other objects through ``str()``."""
    if isinstance(value, bytes):
        return _piece(value)
    if isinstance(value, str):
        return value
    return str(value)


def _function_result(value: Any) -> str | bytes | None:
    """An escape or ``{% apply %}`` function's result, under ``utf8()``'s
    rules: ``str``, ``bytes`` and ``None`` are output (``None`` then fails
    the page's join, as it does in Tornado), anything else raises
    ``TypeError``."""
    if isinstance(value, bytes):
        return _piece(value)
    if value is None or isinstance(value, str):
        return value
    return escape.utf8(value)  # raises TypeError naming the type


def _encodable(piece: Any) -> Any:
    """``piece``, once its text is known to encode as UTF-8 (raises
    ``UnicodeEncodeError`` otherwise)."""
    if isinstance(piece, str):
        piece.encode("utf-8")
    return piece


def _join_mixed(parts: list[Any]) -> bytes:
    """The page's bytes when the buffer holds more than ``str`` pieces."""
    return b"".join([part.encode("utf-8") if isinstance(part, str) else part for part in parts])


class _NoValue:
    """A class no value is exactly: given as ``_tt_fast`` and ``_tt_int`` it
    turns the inline output paths off, so that every value goes through
    ``_tt_e``."""


def _custom_escaper(function: Callable[[bytes], Any]) -> Callable[[Any], str | bytes | None]:
    """Autoescape through a caller-chosen function that receives bytes."""

    def escape_value(value: Any) -> str | bytes | None:
        return _function_result(function(_to_bytes(value)))

    return escape_value


# What the generated function's parameters default to: ``_tt_fast`` (the
# class whose values get the stock escape, inline or by ``_tt_xe``),
# ``_tt_int`` (the class whose values are output with str() inline: no
# markup characters), ``_tt_xe`` (the one-call output of a value, see
# above), ``_tt_e``
# (autoescape of any other value), ``_tt_str``, ``_tt_r`` (raw output of a
# non-``str`` value), ``_tt_b`` (a value as bytes for a named autoescape
# function), ``_tt_u`` (a function's result as a page piece), ``_tt_v`` (an
# output piece checked to be encodable) and ``_tt_join``. Bound as
# parameters they are fast local variables that a template's own names
# cannot shadow.
_PARAMS = "_tt_fast, _tt_int, _tt_xe, _tt_e, _tt_str, _tt_r, _tt_b, _tt_u, _tt_v, _tt_join"
_HELPERS = (str, _raw_text, _to_bytes, _function_result, _encodable, _join_mixed)
_STOCK_DEFAULTS = (str, int, _XE, _xhtml_escape_other, *_HELPERS)


class _Writer:
    """Emits the generated Python source, one line per statement.

    Each line records where it came from in the templates, both as a trailing
    comment (what a traceback shows) and in ``origins`` (used to map a
    generated line back to a template line).
    """

    def __init__(
        self,
        root: Template,
        loader: BaseLoader | None,
        blocks: dict[str, tuple[_Block, Template]],
        fast_escape: bool,
    ) -> None:
        self.lines: list[str] = []
        self.origins: list[str] = []
        self._indent = 0
        self._loader = loader
        self._blocks = blocks
        self._fast_escape = fast_escape
        self._template = root
        self._via: list[tuple[Template, int]] = []
        self._pending: list[str] = []
        self._pending_origin = ""
        self._applies = 0
        # How many {% try %} blocks enclose the code being written.
        self._tries = 0

    def _origin(self, line: int) -> str:
        origin = f"{self._template.name}:{line}"
        if self._via:
            origin += " (via " + ", ".join(f"{t.name}:{n}" for t, n in reversed(self._via)) + ")"
        return origin

    def emit(self, code: str, line: int) -> None:
        self._emit_at(code, self._origin(line))

    def _emit_at(self, code: str, origin: str) -> None:
        code_lines = code.split("\n")
        code_lines[0] = _INDENT * self._indent + code_lines[0]
        code_lines[-1] += "  # " + origin
        self.lines.extend(code_lines)
        self.origins.extend([origin] * len(code_lines))

    def flush_text(self) -> None:
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            self._emit_at(f"_tt_parts.append({text!r})", self._pending_origin)

    def function(self, name: str, body: list[Any], line: int, params: str = "") -> None:
        self.emit(f"def {name}({params}):", line)
        self._indent += 1
        self.emit("_tt_parts = []", line)
        self.write(body)
        self.flush_text()
        # The pieces are str, encoded once; bytes that are not UTF-8 (or a
        # stray non-text piece, which then fails as it would in Tornado)
        # take the piece-by-piece join.
        self.emit("try:", line)
        self.emit("    return ''.join(_tt_parts).encode()", line)
        self.emit("except TypeError:", line)
        self.emit("    return _tt_join(_tt_parts)", line)
        self._indent -= 1

    def write(self, nodes: list[Any]) -> None:
        for node in nodes:
            kind = node.__class__
            if kind is _Text:
                if not self._pending:
                    self._pending_origin = self._origin(node.line)
                self._pending.append(node.value)
                continue
            if kind is _Extends:
                # Only the root of an inheritance chain is written, and it
                # extends nothing: this template was reached by an include.
                raise ParseError(
                    "a template that uses {% extends %} cannot be included",
                    self._template.name,
                    node.line,
                )
            if kind is not _Block and kind is not _Include:
                self.flush_text()
            if kind is _Expression:
                self._expression(node)
            elif kind is _Statement:
                self.emit(node.code, node.line)
            elif kind is _Compound:
                self._compound(node)
            elif kind is _Apply:
                self._applies += 1
                name = f"_tt_apply{self._applies}"
                self.function(name, node.body, node.line)
                self.emit(self._output(f"_tt_u(({node.function})({name}()))"), node.line)
            elif kind is _Block:
                block, owner = self._blocks[node.name]
                self._inside(owner, node.line, block.body)
            elif kind is _Include:
                if self._loader is None:
                    raise ParseError(
                        "{% include %} needs a template loader", self._template.name, node.line
                    )
                included = self._loader.load(node.name, self._template.name)
                self._inside(included, node.line, included.file.body)

    def _inside(self, template: Template, line: int, body: list[Any]) -> None:
        """Write ``body``, which belongs to ``template``, at ``line`` of the current one."""
        entered = template is not self._template
        if entered:
            self._via.append((self._template, line))
            self._template = template
        # Text pending at either edge joins the text across the edge into one
        # append; it keeps the origin of its first piece.
        self.write(body)
        if entered:
            self._template = self._via.pop()[0]

    def _expression(self, node: _Expression) -> None:
        code = node.code
        if "\n" in code or "#" in code:
            # A comment or line break inside the expression must not swallow
            # the closing parentheses.
            code = code + "\n"
        # Parenthesized, a line break inside the expression is harmless and
        # "a, b" is one tuple.
        autoescape = None if node.raw else self._template.autoescape
        if autoescape == _DEFAULT_AUTOESCAPE and self._fast_escape and _ESCAPE_BY_CALL:
            # One call does it all: the C escape of an exact str, str() of
            # an exact int, _tt_e (the stock or the caller's escape) for the
            # rest.
            self.emit(self._output(f"_tt_xe(({code}), _tt_e)"), node.line)
            return
        self.emit(f"_tt_x = ({code})", node.line)
        if autoescape is None:
            self.emit(
                self._output("_tt_x if _tt_x.__class__ is _tt_str else _tt_r(_tt_x)"), node.line
            )
        elif autoescape == _DEFAULT_AUTOESCAPE and self._fast_escape:
            # Without the C escape: exact str values are escaped by inline
            # code, which costs less than a call of the Python escape.
            self.emit("if _tt_x.__class__ is _tt_fast:", node.line)
            self._indent += 1
            for line in _INLINE_XHTML_ESCAPE:
                self.emit(line, node.line)
            self.emit(self._output("_tt_x"), node.line)
            self._indent -= 1
            self.emit("elif _tt_x.__class__ is _tt_int:", node.line)
            self.emit("    _tt_parts.append(_tt_str(_tt_x))", node.line)
            self.emit("else:", node.line)
            self.emit("    " + self._output("_tt_e(_tt_x)"), node.line)
        else:
            self.emit(self._output(f"_tt_u(({autoescape})(_tt_b(_tt_x)))"), node.line)

    def _output(self, piece: str) -> str:
        """The statement that outputs the value of expression ``piece``.

        Inside ``{% try %}`` the piece is checked to be encodable at once, so
        that a ``str`` with lone surrogates raises where the template can
        catch it, as in Tornado; elsewhere that error surfaces from the final
        encode, and the render fails either way.
        """
        if self._tries:
            return f"_tt_parts.append(_tt_v({piece}))"
        return f"_tt_parts.append({piece})"

    def _compound(self, node: _Compound) -> None:
        is_try = node.clauses[0][0].split(None, 1)[0] == "try"
        self._tries += is_try
        for header, line, body in node.clauses:
            self.emit(header + ":", line)
            self._indent += 1
            before = len(self.lines)
            self.write(body)
            self.flush_text()
            if len(self.lines) == before:
                self.emit("pass", line)
            self._indent -= 1
        self._tries -= is_try


def _collect_blocks(
    nodes: list[Any],
    owner: Template,
    loader: BaseLoader | None,
    blocks: dict[str, tuple[_Block, Template]],
) -> None:
    """Record every named block reachable from ``nodes``, later ones winning."""
    for node in nodes:
        kind = node.__class__
        if kind is _Block:
            blocks[node.name] = (node, owner)
            _collect_blocks(node.body, owner, loader, blocks)
        elif kind is _Compound:
            for _, _, body in node.clauses:
                _collect_blocks(body, owner, loader, blocks)
        elif kind is _Apply:
            _collect_blocks(node.body, owner, loader, blocks)
        elif kind is _Include and loader is not None:
            included = loader.load(node.name, owner.name)
            _collect_blocks(included.file.body, included, loader, blocks)


class _SourceLoader:
    """The ``__loader__`` linecache asks for generated source after a cache clear."""

    __slots__ = ("_template",)

    def __init__(self, template: Template) -> None:
        self._template = template

    def get_source(self, name: str) -> str:
        return self._template.code


class Template:
    """A compiled template.

    ``template_string`` is the template text (``str``, or UTF-8 ``bytes``);
    ``name`` is used in error messages, tracebacks and to resolve relative
    ``{% include %}``/``{% extends %}`` paths through ``loader``. Templates
    usually come from a :class:`Loader`, which caches them.

    ``autoescape`` names the escaping function applied to ``{{ }}`` output
    (a name the template's namespace resolves, or ``None`` for none);
    unset, it is the loader's, or ``"xhtml_escape"`` without a loader.
    ``whitespace`` is a :func:`filter_whitespace` mode; unset, it is the
    loader's, else ``"single"`` for names ending in ``.html`` or ``.js`` and
    ``"all"`` otherwise. ``compress_whitespace`` is the older spelling:
    ``True`` means ``"single"``, ``False`` means ``"all"``.

    Parsing and compilation happen here; syntax errors in the template raise
    :class:`ParseError`, and Python syntax errors inside expressions raise
    ``SyntaxError`` naming the template line.
    """

    def __init__(
        self,
        template_string: str | bytes,
        name: str = "<string>",
        loader: BaseLoader | None = None,
        compress_whitespace: bool | _Unset = _UNSET,
        autoescape: str | None | _Unset = _UNSET,
        whitespace: str | None = None,
    ) -> None:
        self.name: str = escape.native_str(name)
        if compress_whitespace is not _UNSET:
            if whitespace is not None:
                raise ValueError("cannot set both whitespace and compress_whitespace")
            whitespace = "single" if compress_whitespace else "all"
        if whitespace is None:
            if loader is not None and loader.whitespace:
                whitespace = loader.whitespace
            elif self.name.endswith((".html", ".js")):
                whitespace = "single"
            else:
                whitespace = "all"
        if whitespace not in _WHITESPACE_MODES:
            raise ValueError(
                f"invalid whitespace mode {whitespace!r}; expected one of {_WHITESPACE_MODES}"
            )
        if autoescape is not _UNSET:
            self.autoescape: str | None = autoescape
        elif loader is not None:
            self.autoescape = loader.autoescape
        else:
            self.autoescape = _DEFAULT_AUTOESCAPE
        self.namespace: dict[str, Any] = loader.namespace if loader is not None else {}
        self.loader = loader
        text = escape.native_str(template_string)
        self.file = _File(_Parser(self, text, whitespace).parse())
        self._filename = self.name.replace(".", "_") + ".generated.py"
        self.code, self._origins = self._generate_python(loader, fast_escape=True)
        compiled = self._compile()
        execute = _function_code(compiled)
        if _escaper_is_local(execute):
            # The template rebinds "xhtml_escape" itself, so escaping must go
            # through that name as written, not the inline escaping.
            self.code, self._origins = self._generate_python(loader, fast_escape=False)
            compiled = self._compile()
            execute = _function_code(compiled)
        self.compiled: types.CodeType = compiled
        self._execute = execute
        # Tracebacks read the generated lines (with their "# name:line"
        # comments) from linecache; entries without an mtime are never
        # invalidated by linecache.checkcache.
        linecache.cache[self._filename] = (
            len(self.code),
            None,
            self.code.splitlines(True),
            self._filename,
        )
        self._defaults: dict[str, Any] = {
            "escape": escape.xhtml_escape,
            "xhtml_escape": escape.xhtml_escape,
            "url_escape": escape.url_escape,
            "json_encode": escape.json_encode,
            "squeeze": escape.squeeze,
            "linkify": escape.linkify,
            "datetime": datetime,
            "_tt_utf8": escape.utf8,
            "_tt_string_types": (str, bytes),
            "__name__": self.name.replace(".", "_"),
            "__loader__": _SourceLoader(self),
            "__builtins__": __builtins__,
        }

    def _compile(self) -> types.CodeType:
        try:
            return compile(self.code, self._filename, "exec", dont_inherit=True)
        except SyntaxError as e:
            where = self._origins[e.lineno - 1] if e.lineno else self.name
            raise SyntaxError(f"{e.msg} in template {where}") from e

    def generate(self, **kwargs: Any) -> bytes:
        """Render the template with ``kwargs`` as its names and return bytes.

        The names a template sees are, in increasing priority, the defaults
        listed in this module's documentation, the loader's ``namespace`` and
        ``kwargs``.
        """
        return self._generate_from(kwargs)

    def _generate_from(self, names: dict[str, Any]) -> bytes:
        # generate() without the ** round trip: RequestHandler.render_string
        # hands its namespace dict over as it is (it is not kept).
        if self.namespace:
            namespace = {**self._defaults, **self.namespace, **names}
        else:
            namespace = {**self._defaults, **names}
        escaper = namespace.get("xhtml_escape")
        if escaper is _STOCK_XHTML_ESCAPE:
            defaults = _STOCK_DEFAULTS
        else:
            defaults = (_NoValue, _NoValue, _other_only, _custom_escaper(escaper), *_HELPERS)  # type: ignore[arg-type]
        execute = types.FunctionType(self._execute, namespace, None, defaults)
        try:
            return execute()  # type: ignore[no-any-return]
        except Exception as e:
            self._annotate(e, namespace)
            raise

    def _annotate(self, error: BaseException, namespace: dict[str, Any]) -> None:
        """Add a note naming the template line that raised (Python 3.11+)."""
        if sys.version_info < (3, 11):
            return
        origin = None
        tb = error.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if frame.f_globals is namespace and frame.f_code.co_filename == self._filename:
                lineno = tb.tb_lineno
                if 0 < lineno <= len(self._origins):
                    origin = self._origins[lineno - 1]
            tb = tb.tb_next
        if origin is not None:
            error.add_note(f"in template {origin}")

    def _generate_python(
        self, loader: BaseLoader | None, fast_escape: bool
    ) -> tuple[str, list[str]]:
        ancestors = self._ancestors(loader)
        blocks: dict[str, tuple[_Block, Template]] = {}
        # Root first, so that the most derived template's blocks win.
        for template in reversed(ancestors):
            _collect_blocks(template.file.body, template, loader, blocks)
        root = ancestors[-1]
        writer = _Writer(root, loader, blocks, fast_escape)
        writer.function("_tt_execute", root.file.body, 0, params=_PARAMS)
        return "\n".join(writer.lines) + "\n", writer.origins

    def _ancestors(self, loader: BaseLoader | None) -> list[Template]:
        """This template followed by the chain of templates it extends."""
        chain: list[Template] = [self]
        for node in self.file.body:
            if node.__class__ is _Extends:
                if loader is None:
                    raise ParseError("{% extends %} needs a template loader", self.name, node.line)
                parent = loader.load(node.name, self.name)
                chain.extend(parent._ancestors(loader))
        return chain


def _function_code(module_code: types.CodeType) -> types.CodeType:
    for const in module_code.co_consts:
        if isinstance(const, types.CodeType) and const.co_name == "_tt_execute":
            return const
    raise AssertionError("generated template code has no _tt_execute function")


def _escaper_is_local(code: types.CodeType) -> bool:
    if _DEFAULT_AUTOESCAPE in code.co_varnames or _DEFAULT_AUTOESCAPE in code.co_cellvars:
        return True
    return any(
        isinstance(const, types.CodeType) and _escaper_is_local(const) for const in code.co_consts
    )


class BaseLoader:
    """Base class for template loaders: finds templates by name and caches them.

    ``autoescape`` (default ``"xhtml_escape"``), ``namespace`` (extra names
    every template sees) and ``whitespace`` (a :func:`filter_whitespace`
    mode, default by file name) apply to every template the loader creates.
    Subclasses implement :meth:`resolve_path` and ``_create_template(name)``.
    Loading is thread-safe; :meth:`reset` empties the cache.
    """

    def __init__(
        self,
        autoescape: str | None = _DEFAULT_AUTOESCAPE,
        namespace: dict[str, Any] | None = None,
        whitespace: str | None = None,
    ) -> None:
        if whitespace is not None and whitespace not in _WHITESPACE_MODES:
            raise ValueError(
                f"invalid whitespace mode {whitespace!r}; expected one of {_WHITESPACE_MODES}"
            )
        self.autoescape = autoescape
        self.namespace: dict[str, Any] = namespace or {}
        self.whitespace = whitespace
        self.templates: dict[str, Template] = {}
        # Reentrant: compiling a template loads the templates it includes
        # and extends through the same loader, on the same thread.
        self.lock = threading.RLock()
        self._loading: set[str] = set()

    def reset(self) -> None:
        """Forget every cached template, so the next load reads them again."""
        with self.lock:
            self.templates = {}

    def resolve_path(self, name: str, parent_path: str | None = None) -> str:
        """Turn ``name``, relative to template ``parent_path``, into a loader key."""
        raise NotImplementedError()

    def load(self, name: str, parent_path: str | None = None) -> Template:
        """Return the compiled template ``name`` (resolved against ``parent_path``)."""
        name = self.resolve_path(name, parent_path=parent_path)
        # Cached templates are read without the lock: a dict look-up is
        # atomic, and reset() swaps in a new dict rather than emptying it.
        template = self.templates.get(name)
        if template is not None:
            return template
        with self.lock:
            template = self.templates.get(name)
            if template is None:
                if name in self._loading:
                    raise ParseError(
                        f"template {name!r} includes or extends itself", parent_path, 0
                    )
                self._loading.add(name)
                try:
                    template = self._create_template(name)
                finally:
                    self._loading.discard(name)
                self.templates[name] = template
            return template

    def _create_template(self, name: str) -> Template:
        raise NotImplementedError()


class Loader(BaseLoader):
    """Loads templates from files under ``root_directory``.

    Keyword arguments are those of :class:`BaseLoader`. Paths in
    ``{% include %}`` and ``{% extends %}`` are relative to the including
    template's directory unless they start with ``/``.
    """

    def __init__(self, root_directory: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = os.path.abspath(root_directory)

    def resolve_path(self, name: str, parent_path: str | None = None) -> str:
        if (
            parent_path
            and not parent_path.startswith(("<", "/"))
            and not name.startswith("/")
        ):
            parent_dir = os.path.dirname(os.path.abspath(os.path.join(self.root, parent_path)))
            candidate = os.path.abspath(os.path.join(parent_dir, name))
            if candidate.startswith(self.root + os.sep):
                name = candidate[len(self.root) + 1 :]
        return name

    def _create_template(self, name: str) -> Template:
        with open(os.path.join(self.root, name), "rb") as f:
            return Template(f.read(), name=name, loader=self)


class DictLoader(BaseLoader):
    """Loads templates from a dict mapping names to template text.

    Keyword arguments are those of :class:`BaseLoader`; names are resolved
    like POSIX paths relative to the including template.
    """

    def __init__(self, dict: Mapping[str, str | bytes], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dict = dict

    def resolve_path(self, name: str, parent_path: str | None = None) -> str:
        if (
            parent_path
            and not parent_path.startswith(("<", "/"))
            and not name.startswith("/")
        ):
            name = posixpath.normpath(posixpath.join(posixpath.dirname(parent_path), name))
        return name

    def _create_template(self, name: str) -> Template:
        return Template(self.dict[name], name=name, loader=self)
