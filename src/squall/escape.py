"""Escaping and unescaping for HTML, URLs and JSON, plus bytes/str conversion.

These helpers are what templates and handlers use to put untrusted text into
HTML, URLs and JSON safely, and to move between ``bytes`` and ``str`` at the
edges of the program (UTF-8 unless told otherwise).
"""

from __future__ import annotations

import html
import json
import re
import urllib.parse
from collections.abc import Callable
from typing import Any, overload

from squall.util import _speedups

__all__ = [
    "xhtml_escape",
    "xhtml_unescape",
    "url_escape",
    "url_unescape",
    "json_encode",
    "json_decode",
    "squeeze",
    "utf8",
    "to_unicode",
    "native_str",
    "to_basestring",
    "recursive_unicode",
    "linkify",
    "parse_qs_bytes",
]

_UNICODE_TYPES = (str, type(None))
_BYTES_TYPES = (bytes, type(None))


# html.escape's replacements, "&" first so that no entity is escaped
# twice: _xhtml_escape_str below, and the inline code templates generate
# when the C escape is not built.
_XHTML_REPLACEMENTS = (
    ("&", "&amp;"),
    ("<", "&lt;"),
    (">", "&gt;"),
    ('"', "&quot;"),
    ("'", "&#x27;"),
)


def _xhtml_escape_str(value: str) -> str:
    """The escape of an exact ``str``: html.escape's replacements, "&"
    first. Each replace runs only when its character is present, since the
    "in" test is much cheaper than a replace call that finds nothing."""
    if "&" in value:
        value = value.replace("&", "&amp;")
    if "<" in value:
        value = value.replace("<", "&lt;")
    if ">" in value:
        value = value.replace(">", "&gt;")
    if '"' in value:
        value = value.replace('"', "&quot;")
    if "'" in value:
        value = value.replace("'", "&#x27;")
    return value


# What escapes an exact str: the C version (one pass over the characters)
# when it is built, else the replaces above; the results are identical.
_escape_str: Callable[[str], str] = (
    _speedups.xhtml_escape if _speedups is not None else _xhtml_escape_str
)


def xhtml_escape(value: str | bytes) -> str:
    """Escape ``value`` for use in HTML or XML text and attribute values.

    ``<``, ``>``, ``&``, ``"`` and ``'`` become ``&lt;``, ``&gt;``, ``&amp;``,
    ``&quot;`` and ``&#x27;``. Bytes are decoded as UTF-8 first; the result is
    always ``str``.
    """
    if value.__class__ is not str:
        value = to_unicode(value)
        if value is None:
            # The error Tornado's xhtml_escape gives for None (html.escape's).
            raise AttributeError("'NoneType' object has no attribute 'replace'")
        # A subclass's characters, as a plain str like every other result.
        value = str.__str__(value)
    return _escape_str(value)


def xhtml_unescape(value: str | bytes) -> str:
    """Replace HTML character references in ``value`` with the characters.

    Named references (``&amp;``, ``&eacute;``...), decimal (``&#32;``) and
    hexadecimal (``&#x20;``) references are understood, with the same
    leniency as browsers (HTML5 rules). Malformed references are left as is.
    """
    return html.unescape(to_unicode(value))


def json_encode(value: Any) -> str:
    """Serialize ``value`` to JSON that is safe to embed in an HTML page.

    Every ``</`` is written as ``<\\/`` (an equivalent JSON string), so the
    output cannot close a surrounding ``<script>`` element.
    """
    if _c_json_encoder is not None:
        try:
            text = "".join(_c_json_encoder(value, 0))
        except RecursionError:
            # Nested too deep, or a container that contains itself (the
            # encoder below keeps no markers): json.dumps says which.
            text = json.dumps(value)
    else:
        text = json.dumps(value)
    return text.replace("</", "<\\/") if "</" in text else text


def _refuse_to_encode(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# json.dumps(value) with its default arguments, without the three Python
# calls (dumps, encode, iterencode) it makes around json's C encoder: the
# same output, a good part cheaper for the small dicts handlers write.
# No circular-reference markers (a shared dict would not be safe across
# threads); a cycle ends in RecursionError, answered by json.dumps.
try:
    _c_json_encoder: Any = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _refuse_to_encode, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )
except (AttributeError, TypeError):
    _c_json_encoder = None


def json_decode(value: str | bytes) -> Any:
    """Parse JSON from ``value``; bytes are decoded as UTF-8."""
    return json.loads(value)


# The ASCII control characters and the space, as in Tornado's squeeze().
_SQUEEZE_RE = re.compile(r"[\x00-\x20]+")


def squeeze(value: str) -> str:
    """Collapse every run of ASCII whitespace and control characters in
    ``value`` to one space, and strip both ends."""
    return _SQUEEZE_RE.sub(" ", value).strip()


def url_escape(value: str | bytes, plus: bool = True) -> str:
    """Percent-encode ``value`` (``str`` is encoded as UTF-8 first).

    With ``plus=True`` (the default) the result suits a query string: spaces
    become ``+`` and ``/`` is escaped. With ``plus=False`` it suits a path:
    spaces become ``%20`` and ``/`` is kept.
    """
    data = utf8(value)
    if plus:
        return urllib.parse.quote_plus(data)
    return urllib.parse.quote(data)


@overload
def url_unescape(value: str | bytes, encoding: None, plus: bool = True) -> bytes: ...


@overload
def url_unescape(value: str | bytes, encoding: str = "utf-8", plus: bool = True) -> str: ...


def url_unescape(
    value: str | bytes, encoding: str | None = "utf-8", plus: bool = True
) -> str | bytes:
    """Decode percent-escapes in ``value``.

    The result is ``str`` decoded with ``encoding``, or the raw ``bytes`` when
    ``encoding`` is None. With ``plus=True`` (the default, for query strings)
    ``+`` means a space; with ``plus=False`` (for paths) it stays a ``+``.
    """
    if encoding is None:
        data = utf8(value)
        if plus:
            data = data.replace(b"+", b" ")
        return _unquote_to_bytes(data)
    text = to_unicode(value)
    if plus:
        return urllib.parse.unquote_plus(text, encoding=encoding)
    return urllib.parse.unquote(text, encoding=encoding)


# Every "XY" hex pair (either case) mapped to its byte value, so decoding a
# "%XY" escape is one dict look-up and needs no int() call.
_HEX_DIGITS = "0123456789abcdefABCDEF"
_HEX_PAIR_VALUE = {
    (hi + lo).encode("ascii"): int(hi + lo, 16) for hi in _HEX_DIGITS for lo in _HEX_DIGITS
}


def _unquote_to_bytes(data: bytes) -> bytes:
    """Decode ``%XY`` escapes in ``data``, like ``urllib.parse.unquote_to_bytes``
    but with memory bounded by a small multiple of the input: the stdlib (and
    ``re.sub``) allocate an object per ``%``, about 30 bytes per input byte on
    a hostile query string of escapes; this writes into one growing buffer."""
    if b"%" not in data:
        return data
    out = bytearray()
    find = data.find
    pos = 0
    while True:
        pct = find(b"%", pos)
        if pct < 0:
            break
        out += data[pos:pct]
        value = _HEX_PAIR_VALUE.get(data[pct + 1 : pct + 3])
        if value is None:
            out.append(0x25)  # a lone "%" stays as it is
            pos = pct + 1
        else:
            out.append(value)
            pos = pct + 3
    out += data[pos:]
    return bytes(out)


def parse_qs_bytes(
    qs: str | bytes,
    keep_blank_values: bool = False,
    strict_parsing: bool = False,
    *,
    max_num_fields: int | None = None,
) -> dict[str, list[bytes]]:
    """Parse a query string into ``{name: [value, ...]}`` keeping values as bytes.

    Works like ``urllib.parse.parse_qs`` with ``&`` as the only separator, but
    values stay undecoded ``bytes`` (the charset of a form is not known here)
    and names are decoded as latin-1 so that no byte is lost. A ``str``
    argument must only hold latin-1 characters.

    ``keep_blank_values`` keeps ``name=`` and bare ``name`` fields (as
    ``b""``). ``strict_parsing`` raises ``ValueError`` on an empty field or a
    field without ``=``. ``max_num_fields`` raises ``ValueError`` when the
    string has more fields than that.
    """
    data = qs if isinstance(qs, bytes) else qs.encode("latin-1")
    if max_num_fields is not None and max_num_fields < 1 + data.count(b"&"):
        raise ValueError("Max number of fields exceeded")
    result: dict[str, list[bytes]] = {}
    if not data:
        return result
    for field in data.split(b"&"):
        if not field and not strict_parsing:
            continue
        name, eq, value = field.partition(b"=")
        if not eq:
            if strict_parsing:
                raise ValueError(f"bad query field: {field!r}")
            if not keep_blank_values:
                continue
        if value or keep_blank_values:
            key = _unquote_to_bytes(name.replace(b"+", b" ")).decode("latin-1")
            result.setdefault(key, []).append(_unquote_to_bytes(value.replace(b"+", b" ")))
    return result


@overload
def utf8(value: bytes) -> bytes: ...


@overload
def utf8(value: str) -> bytes: ...


@overload
def utf8(value: None) -> None: ...


def utf8(value: str | bytes | None) -> bytes | None:
    """Return ``value`` as bytes: ``str`` is encoded as UTF-8, ``bytes`` and
    None pass through unchanged; anything else raises ``TypeError``."""
    if isinstance(value, _BYTES_TYPES):
        return value
    if not isinstance(value, str):
        raise TypeError(f"Expected bytes, unicode, or None; got {type(value)!r}")
    return value.encode("utf-8")


@overload
def to_unicode(value: str) -> str: ...


@overload
def to_unicode(value: bytes) -> str: ...


@overload
def to_unicode(value: None) -> None: ...


def to_unicode(value: str | bytes | None) -> str | None:
    """Return ``value`` as ``str``: bytes are decoded as UTF-8, ``str`` and
    None pass through unchanged; anything else raises ``TypeError``."""
    if isinstance(value, _UNICODE_TYPES):
        return value
    if not isinstance(value, bytes):
        raise TypeError(f"Expected bytes, unicode, or None; got {type(value)!r}")
    return value.decode("utf-8")


# On Python 3 the "native" string type is str, so both names are to_unicode
# itself (code that compares them with ``is`` keeps working).
native_str = to_unicode
to_basestring = to_unicode
# The short private name predates ``to_unicode``; old code still imports it.
_unicode = to_unicode


def recursive_unicode(obj: Any) -> Any:
    """Decode every ``bytes`` found in nested dicts, lists and tuples.

    Containers are rebuilt with the same type; other values are returned
    unchanged.
    """
    if isinstance(obj, dict):
        return {recursive_unicode(k): recursive_unicode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [recursive_unicode(i) for i in obj]
    if isinstance(obj, tuple):
        return tuple(recursive_unicode(i) for i in obj)
    if isinstance(obj, bytes):
        return to_unicode(obj)
    return obj


# --- linkify ---------------------------------------------------------------
#
# A link starts at a word boundary with "scheme:" and one to three slashes, or
# with "www.". Neither the start nor the body is found with one big regular
# expression: "[\w-]+:" retried at every word boundary of "a-a-a-a-..." and
# nested quantifiers in URL patterns both go quadratic or worse on hostile
# input. Runs of scheme characters are found once and the body is scanned by
# hand (see _link_body_end), so linkify is linear in its input.
_SCHEME_RUN_RE = re.compile(r"[\w-]+")
_WORD_CHAR_RE = re.compile(r"\w")
# At most this many slashes after "scheme:" belong to the link's start.
_LINK_MAX_SLASHES = 3

# Entities xhtml_escape produces that may stay inside a link; &lt;, &gt; and
# &#x27; end it (they were "<", ">" and "'" in the original text).
_LINK_ENTITIES = ("&amp;", "&quot;")

# Characters a link may not end with (sentence punctuation, brackets, quotes),
# after John Gruber's "liberal URL pattern".
_LINK_TRAILING = frozenset("!\"#$%&'()*+,.:;<=>?@[]^`{|}~")

# Display length limits for ``shorten=True``: links longer than this are
# abbreviated, and anything still longer than 1.5 times it is cut to it.
_LINK_DISPLAY_MAX = 30
# How many characters of the first path segment a shortened link keeps.
_LINK_PATH_KEEP = 8
# A cut display text ending in an "&" this close to the limit may have split
# an entity ("&quot;" is six characters), so the text is cut before the "&".
_LINK_ENTITY_SLACK = 5

_DEFAULT_PROTOCOLS = ("http", "https")


def _link_token_end(text: str, pos: int) -> int:
    """End of the "safe" token at ``pos`` (one character or an allowed
    entity), or ``pos`` when ``text[pos]`` cannot be part of a link run."""
    ch = text[pos]
    if ch == "&":
        for entity in _LINK_ENTITIES:
            if text.startswith(entity, pos):
                return pos + len(entity)
        return pos
    if ch in "()" or ch.isspace():
        return pos
    return pos + 1


def _link_body_end(text: str, pos: int) -> int:
    """Where the link body starting at ``pos`` ends.

    The body is a sequence of pieces, each either a run of safe tokens that
    ends with a non-punctuation character, or a parenthesised run of safe
    tokens (so "wiki/Foo_(bar)" keeps its parentheses but "(see http://x)"
    does not swallow the closing one). Runs out in linear time.
    """
    n = len(text)
    while pos < n:
        if text[pos] == "(":
            scan = pos + 1
            while scan < n:
                nxt = _link_token_end(text, scan)
                if nxt == scan:
                    break
                scan = nxt
            if scan < n and text[scan] == ")":
                pos = scan + 1
                continue
            return pos
        scan = pos
        last_good = -1
        while scan < n:
            nxt = _link_token_end(text, scan)
            if nxt == scan:
                break
            if nxt == scan + 1 and text[scan] not in _LINK_TRAILING:
                last_good = nxt
            scan = nxt
        if last_good < 0:
            return pos
        pos = last_good
    return pos


def _shorten_link(url: str, scheme_len: int) -> str | None:
    """The abbreviated display text for ``url``, or None when abbreviating
    would not make it shorter. ``scheme_len`` is the length of its
    "scheme://" prefix (0 for "www." links)."""
    short = url
    host, slash, path = url[scheme_len:].partition("/")
    if slash:
        first = path.partition("/")[0]
        segment = first[:_LINK_PATH_KEEP].split("?")[0].split(".")[0]
        short = url[:scheme_len] + host + "/" + segment
    if len(short) > _LINK_DISPLAY_MAX * 3 // 2:
        short = short[:_LINK_DISPLAY_MAX]
    if short == url:
        return None
    # Do not leave half an entity ("&am") dangling at the cut.
    amp = short.rfind("&")
    if amp > _LINK_DISPLAY_MAX - _LINK_ENTITY_SLACK:
        short = short[:amp]
    short += "..."
    if len(short) >= len(url):
        return None
    return short


def _is_word_boundary(text: str, pos: int) -> bool:
    """Whether a regex ``\\b`` would match at ``pos`` (``pos < len(text)``)."""
    before = pos > 0 and _WORD_CHAR_RE.match(text, pos - 1) is not None
    return before != (_WORD_CHAR_RE.match(text, pos) is not None)


def _find_link_start(text: str, pos: int) -> tuple[int, int, str | None, int] | None:
    """The leftmost link start at or after ``pos``.

    Returns ``(start, body_start, scheme, slash_count)``, with ``scheme``
    None for a "www." link, or None when there is no link start.
    """
    for run in _SCHEME_RUN_RE.finditer(text, pos):
        run_start, run_end = run.span()
        if text.startswith(":/", run_end):
            for start in range(run_start, run_end):
                if _is_word_boundary(text, start):
                    slashes = 1
                    while (
                        slashes < _LINK_MAX_SLASHES
                        and text.startswith("/", run_end + 1 + slashes)
                    ):
                        slashes += 1
                    return start, run_end + 1 + slashes, text[start:run_end], slashes
        elif (
            text.startswith(".", run_end)
            and run_end - run_start >= 3
            and text.startswith("www", run_end - 3)
            and _is_word_boundary(text, run_end - 3)
        ):
            return run_end - 3, run_end + 1, None, 0
    return None


def linkify(
    text: str | bytes,
    shorten: bool = False,
    extra_params: str | Callable[[str], str] = "",
    require_protocol: bool = False,
    permitted_protocols: list[str] | tuple[str, ...] = _DEFAULT_PROTOCOLS,
) -> str:
    """HTML-escape ``text`` and turn the URLs in it into ``<a>`` links.

    Recognised links start with ``scheme:/`` (one to three slashes) or with
    ``www.``; trailing punctuation and unbalanced parentheses are left out of
    the link, so "see http://example.com/." links just the URL.

    - ``shorten``: abbreviate long links in the displayed text (the full URL
      goes into a ``title`` attribute).
    - ``extra_params``: extra attributes for the ``<a>`` tag, e.g.
      ``'rel="nofollow"'``; or a callable that receives the href and returns
      them, to treat internal and external links differently.
    - ``require_protocol``: only link URLs that name a scheme (not bare
      ``www.`` ones).
    - ``permitted_protocols``: the schemes that may become links (compared
      case-sensitively). The default is ``http`` and ``https``: links to
      ``javascript:`` or ``file:`` must be allowed explicitly, because they
      are dangerous when the text comes from a user.
    """
    escaped = xhtml_escape(text)
    if isinstance(extra_params, str):
        fixed_params = " " + extra_params.strip() if extra_params else ""
    else:
        fixed_params = ""
    out: list[str] = []
    emitted = 0
    search_from = 0
    while True:
        found = _find_link_start(escaped, search_from)
        if found is None:
            break
        start, body_start, scheme, slashes = found
        end = _link_body_end(escaped, body_start)
        if end == body_start and slashes > 1:
            # "scheme://" followed by nothing linkable: the last slash is the
            # (one-character) body, as a backtracking regex would find.
            slashes -= 1
            body_start -= 1
            end = _link_body_end(escaped, body_start)
        search_from = end
        if end == body_start:
            continue
        url = escaped[start:end]
        if (require_protocol and not scheme) or (
            scheme and scheme not in permitted_protocols
        ):
            continue
        href = url if scheme else "http://" + url
        if callable(extra_params):
            params = " " + extra_params(href).strip()
        else:
            params = fixed_params
        display = url
        if shorten and len(url) > _LINK_DISPLAY_MAX:
            scheme_len = len(scheme) + 1 + slashes if scheme else 0
            short = _shorten_link(url, scheme_len)
            if short is not None:
                display = short
                params += f' title="{href}"'
        out.append(escaped[emitted:start])
        out.append(f'<a href="{href}"{params}>{display}</a>')
        emitted = end
    out.append(escaped[emitted:])
    return "".join(out)
