"""HTTP utilities shared by the server, the client and the web framework.

This module holds the parts of HTTP that do no I/O: the `HTTPHeaders`
multi-dict, the `HTTPServerRequest` object handed to applications, parsers
for start lines, cookies and form bodies (urlencoded and multipart), and the
interfaces (`HTTPServerConnectionDelegate`, `HTTPMessageDelegate`,
`HTTPConnection`) that connect an HTTP/1 connection to an application.

Every parser here checks its input against the RFC 9110 / 9112 grammar in
:mod:`squall._abnf` before converting it, runs in time linear in its input,
and reports malformed input by raising `HTTPInputError` (which the server
turns into a 400 response) and never any other exception.
"""

import calendar
import collections.abc
import datetime
import email.utils
import http.cookies
import re
import time
import unicodedata
import urllib.parse
from dataclasses import dataclass, field
from http.client import responses
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from squall import _abnf
from squall.util import ObjectDict, _speedups

if TYPE_CHECKING:
    from asyncio import Future

__all__ = [
    "HTTPHeaders",
    "HTTPServerRequest",
    "HTTPInputError",
    "HTTPOutputError",
    "HTTPServerConnectionDelegate",
    "HTTPMessageDelegate",
    "HTTPConnection",
    "HTTPFile",
    "HTTP_WHITESPACE",
    "ParseBodyConfig",
    "ParseMultipartConfig",
    "ParseUrlEncodedConfig",
    "RequestStartLine",
    "ResponseStartLine",
    "encode_username_password",
    "format_timestamp",
    "parse_body_arguments",
    "parse_cookie",
    "parse_multipart_form_data",
    "parse_request_start_line",
    "parse_response_start_line",
    "qs_to_qsl",
    "responses",
    "set_parse_body_config",
    "split_host_and_port",
    "url_concat",
]

# ``responses`` is re-exported: the standard reason phrase for each status
# code, e.g. ``responses[404] == "Not Found"``.
responses = responses

#: The characters that HTTP treats as whitespace around header values
#: (``OWS``, RFC 9110 5.6.3). Other characters that Python's ``str.strip``
#: removes, such as U+00A0 or U+0085, are data in HTTP.
HTTP_WHITESPACE = " \t"


class _ABNF:
    """The RFC 9110 / 9112 rules of :mod:`squall._abnf`, compiled.

    Kept under this name for code (and tests) written against Tornado's
    ``httputil._ABNF``.
    """

    tchar = re.compile(_abnf.tchar)
    token = re.compile(_abnf.token)
    VCHAR = re.compile(_abnf.VCHAR)
    obs_text = re.compile(_abnf.obs_text)
    field_name = re.compile(_abnf.field_name)
    field_vchar = re.compile(_abnf.field_vchar)
    field_value = re.compile(_abnf.field_value)
    method = re.compile(_abnf.method)
    request_target = re.compile(_abnf.request_target)
    HTTP_version = re.compile(_abnf.HTTP_version)
    request_line = re.compile(_abnf.request_line)
    status_code = re.compile(_abnf.status_code)
    reason_phrase = re.compile(_abnf.reason_phrase)
    status_line = re.compile(_abnf.status_line)
    uri_host = re.compile(_abnf.uri_host)
    uri_port = re.compile(_abnf.uri_port)
    uri_unreserved = re.compile(_abnf.uri_unreserved)
    uri_pct_encoded = re.compile(_abnf.uri_pct_encoded)
    uri_sub_delims = re.compile(_abnf.uri_sub_delims)
    host = re.compile(_abnf.host)


class HTTPInputError(Exception):
    """Malformed HTTP input: a bad request from a client or a bad response
    from a server.

    The HTTP server answers a request that raises this with 400 Bad Request.
    """


class HTTPOutputError(Exception):
    """An application tried to write something that is not valid HTTP, such
    as a body longer than its declared ``Content-Length``."""


# --- Header names ----------------------------------------------------------

# Distinct header names worth remembering. Names come from the network, so
# the cache is bounded; the common ones fill it long before this (nginx keeps
# a hash of ~100 known headers for the same purpose).
_HEADER_NAME_CACHE_SIZE = 1000
# Maps a name as received to its normalized form. Only valid tokens are
# stored, so a hit also proves that the name is a valid field-name.
_normalized_names: Dict[str, str] = {}


def _normalize_header(name: str) -> str:
    """Return ``name`` in ``Http-Header-Case``: each dash-separated word
    with its first letter upper case and the rest lower case.

    Only ASCII names are changed; any other name is returned as is, so that
    Unicode case folding (e.g. the Kelvin sign lower-casing to ``k``) cannot
    make two different wire names look equal.
    """
    normalized = _normalized_names.get(name)
    if normalized is not None:
        return normalized
    if not name.isascii():
        return name
    normalized = "-".join([word.capitalize() for word in name.split("-")])
    if normalized == name:
        # Keep one string object rather than two equal ones in the cache.
        normalized = name
    if len(_normalized_names) < _HEADER_NAME_CACHE_SIZE and _abnf.FIELD_NAME_RE.fullmatch(
        name
    ):
        _normalized_names[name] = normalized
    return normalized


for _name in (
    "Accept Accept-Charset Accept-Encoding Accept-Language Accept-Ranges Age Allow "
    "Authorization Cache-Control Connection Content-Disposition Content-Encoding "
    "Content-Language Content-Length Content-Location Content-Range Content-Type "
    "Cookie Date Etag Expect Expires Forwarded Host If-Match If-Modified-Since "
    "If-None-Match If-Range If-Unmodified-Since Keep-Alive Last-Modified Location "
    "Origin Pragma Proxy-Authorization Range Referer Retry-After Sec-Websocket-Key "
    "Sec-Websocket-Version Sec-Websocket-Extensions Sec-Websocket-Protocol Server "
    "Set-Cookie Te Trailer Transfer-Encoding Upgrade User-Agent Vary Via "
    "Www-Authenticate X-Forwarded-For X-Forwarded-Proto X-Real-Ip X-Scheme "
    "X-Requested-With X-Xsrftoken X-Csrftoken"
).split():
    _normalize_header(_name)
    _normalize_header(_name.lower())
del _name


def _invalid_line_error(line: str) -> HTTPInputError:
    """Say what is wrong with a header line that did not match the grammar."""
    if line[:1] in (" ", "\t"):
        return HTTPInputError(
            "header line cannot start with whitespace, folding not supported"
        )
    name, colon, value = line.partition(":")
    if not colon:
        return HTTPInputError(f"no colon in header line: {line[:100]!r}")
    if not _abnf.FIELD_NAME_RE.fullmatch(name):
        return HTTPInputError(f"Invalid header name {name!r}")
    return HTTPInputError(f"Invalid header value {value.strip(HTTP_WHITESPACE)!r}")


# Characters that may never appear in a header value (controls other than
# HTAB, and DEL): for code that checks values it is about to send.
_FORBIDDEN_HEADER_CHARS_RE = _abnf.FORBIDDEN_VALUE_CHARS_RE

# A header line when the text is real Unicode (``_chars_are_bytes=False``),
# as in multipart part headers decoded from UTF-8: any character but the
# controls (other than HTAB) and DEL may appear in the value.
_UNICODE_HEADER_LINE_RE = re.compile(
    "(?:(" + _abnf.token + "):([^\\x00-\\x08\\x0a-\\x1f\\x7f]*))?(?:\\r?\\n|\\Z)"
)


class HTTPHeaders(collections.abc.MutableMapping):
    """A case-insensitive multi-dict of HTTP header fields.

    Names are stored in ``Http-Header-Case`` (``"content-type"`` becomes
    ``"Content-Type"``) and looked up in any case. A name may have several
    values: `add` appends one, ``headers[name] = value`` replaces them all,
    `get_list` returns them all and ``headers[name]`` joins them with commas
    (RFC 9110 5.3). Iterating yields each name once, in the order names were
    first added; `get_all` yields every ``(name, value)`` pair.

    >>> h = HTTPHeaders({"content-type": "text/html"})
    >>> list(h.keys())
    ['Content-Type']
    >>> h["Content-Type"]
    'text/html'
    >>> h.add("Set-Cookie", "A=B")
    >>> h.add("Set-Cookie", "C=D")
    >>> h["set-cookie"]
    'A=B,C=D'
    >>> h.get_list("set-cookie")
    ['A=B', 'C=D']
    >>> for (k, v) in sorted(h.get_all()):
    ...    print('%s: %s' % (k,v))
    ...
    Content-Type: text/html
    Set-Cookie: A=B
    Set-Cookie: C=D

    `add` and `parse` check names and values against the grammar and raise
    `HTTPInputError`; ``headers[name] = value`` stores what it is given, so a
    caller that sets headers from untrusted data must check them first
    (`squall.web.RequestHandler.set_header` does).

    Constructed like a dict, from a mapping, an iterable of pairs, or keyword
    arguments; constructed from another `HTTPHeaders`, it copies every value.
    """

    __slots__ = ("_as_list", "_combined")

    def __init__(self, *args: Any, **kwargs: str) -> None:
        # name -> every value, in the order received.
        self._as_list: Dict[str, List[str]] = {}
        # name -> comma-joined values, for names with more than one value,
        # so that reading a long repeated header stays linear. Entries are
        # dropped whenever the name's values change.
        self._combined: Dict[str, str] = {}
        if kwargs or len(args) != 1:
            if args or kwargs:
                self.update(*args, **kwargs)
            return
        arg = args[0]
        if type(arg) is dict and type(self) is HTTPHeaders:
            # The common case (an application's response headers, built
            # per request): what update() would do, without its generic
            # MutableMapping machinery.
            as_list = self._as_list
            for name, value in arg.items():
                as_list[_normalized_names.get(name) or _normalize_header(name)] = [value]
        elif isinstance(arg, HTTPHeaders):
            for name, values in arg._as_list.items():
                self._as_list[name] = list(values)
        else:
            self.update(*args, **kwargs)

    # -- multi-value interface ------------------------------------------------

    def add(self, name: str, value: Union[str, bytes], *, _chars_are_bytes: bool = True) -> None:
        """Append ``value`` to the values of header ``name``.

        Raises `HTTPInputError` if ``name`` is not an RFC 9110 token or
        ``value`` is not a valid field value (it may not contain CR, LF, NUL
        or other control characters, nor begin or end with whitespace).
        ``bytes`` values are decoded as UTF-8.

        ``_chars_are_bytes=False`` is for text that was decoded from UTF-8
        rather than latin-1 (multipart part headers): any non-control
        character is then allowed.
        """
        normalized = _normalized_names.get(name)
        if normalized is None:
            if not _abnf.FIELD_NAME_RE.fullmatch(name):
                raise HTTPInputError(f"Invalid header name {name!r}")
            normalized = _normalize_header(name)
        if not isinstance(value, str):
            if not isinstance(value, bytes):
                raise TypeError(f"header value must be str or bytes, not {value!r}")
            value = value.decode("utf-8")
        if _chars_are_bytes:
            if not _abnf.FIELD_VALUE_RE.fullmatch(value):
                raise HTTPInputError(f"Invalid header value {value!r}")
        elif _abnf.FORBIDDEN_VALUE_CHARS_RE.search(value):
            raise HTTPInputError(f"Invalid header value {value!r}")
        values = self._as_list.get(normalized)
        if values is None:
            self._as_list[normalized] = [value]
        else:
            values.append(value)
            self._combined.pop(normalized, None)

    def get_list(self, name: str) -> List[str]:
        """Return every value of header ``name`` (an empty list if absent).

        The list is the one stored here: mutate a copy.
        """
        return self._as_list.get(_normalize_header(name), [])

    def get_all(self) -> Iterator[Tuple[str, str]]:
        """Yield every ``(name, value)`` pair; a repeated header yields one
        pair per value."""
        for name, values in self._as_list.items():
            for value in values:
                yield (name, value)

    def parse_line(self, line: str, *, _chars_are_bytes: bool = True) -> None:
        """Add the header in one line of the form ``Name: value``.

        The line may end with CRLF or LF. Raises `HTTPInputError` if the line
        does not match the grammar; a line that starts with whitespace (an
        obsolete folded continuation, RFC 9112 5.2) is rejected too.

        >>> h = HTTPHeaders()
        >>> h.parse_line("Content-Type: text/html")
        >>> h.get('content-type')
        'text/html'
        """
        line_re = _abnf.HEADER_LINE_RE if _chars_are_bytes else _UNICODE_HEADER_LINE_RE
        m = line_re.fullmatch(line)
        if m is None:
            raise _invalid_line_error(line.rstrip("\r\n"))
        if m.group(1) is None:
            # A blank line, such as the one that ends a header block.
            return
        self._add_parsed(m.group(1), m.group(2).strip(HTTP_WHITESPACE))

    def _add_parsed(self, name: str, value: str) -> None:
        # name and value have already been matched against the grammar.
        normalized = _normalized_names.get(name) or _normalize_header(name)
        values = self._as_list.get(normalized)
        if values is None:
            self._as_list[normalized] = [value]
        else:
            values.append(value)
            self._combined.pop(normalized, None)

    @classmethod
    def parse(cls, headers: Union[str, bytes], *, _chars_are_bytes: bool = True) -> "HTTPHeaders":
        """Return the headers of an HTTP header block.

        Lines end with CRLF or a bare LF (RFC 9112 2.2); a bare CR, a line
        without a colon, an invalid name or value, or a line that starts
        with whitespace (obsolete line folding, RFC 9112 5.2) raises
        `HTTPInputError`. Empty lines are skipped. ``bytes`` are decoded as
        latin-1, one character per byte, as they are on the wire.

        >>> h = HTTPHeaders.parse("Content-Type: text/html\\r\\nContent-Length: 42\\r\\n")
        >>> sorted(h.items())
        [('Content-Length', '42'), ('Content-Type', 'text/html')]
        """
        if isinstance(headers, bytes):
            headers = headers.decode("latin-1")
        line_re = _abnf.HEADER_LINE_RE if _chars_are_bytes else _UNICODE_HEADER_LINE_RE
        match = line_re.match
        h = cls()
        as_list = h._as_list
        names = _normalized_names
        strip_chars = HTTP_WHITESPACE
        end = len(headers)
        pos = 0
        while pos < end:
            m = match(headers, pos)
            if m is None:
                newline = headers.find("\n", pos)
                line = headers[pos : newline if newline >= 0 else end]
                raise _invalid_line_error(line.rstrip("\r"))
            pos = m.end()
            name = m.group(1)
            if name is None:
                continue
            value = m.group(2).strip(strip_chars)
            normalized = names.get(name) or _normalize_header(name)
            values = as_list.get(normalized)
            if values is None:
                as_list[normalized] = [value]
            else:
                values.append(value)
        return h

    # -- dict interface ---------------------------------------------------------

    def __setitem__(self, name: str, value: str) -> None:
        normalized = _normalize_header(name)
        self._as_list[normalized] = [value]
        self._combined.pop(normalized, None)

    def __getitem__(self, name: str) -> str:
        normalized = _normalized_names.get(name) or _normalize_header(name)
        values = self._as_list[normalized]
        if len(values) == 1:
            return values[0]
        return self._join(normalized, values)

    def _join(self, name: str, values: List[str]) -> str:
        joined = self._combined.get(name)
        if joined is None:
            joined = self._combined[name] = ",".join(values)
        return joined

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        """Return the comma-joined values of ``name``, or ``default``."""
        normalized = _normalized_names.get(name) or _normalize_header(name)
        values = self._as_list.get(normalized)
        if values is None:
            return default
        if len(values) == 1:
            return values[0]
        return self._join(normalized, values)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return (_normalized_names.get(name) or _normalize_header(name)) in self._as_list

    def __delitem__(self, name: str) -> None:
        normalized = _normalize_header(name)
        del self._as_list[normalized]
        self._combined.pop(normalized, None)

    def __len__(self) -> int:
        return len(self._as_list)

    def __iter__(self) -> Iterator[str]:
        return iter(self._as_list)

    def copy(self) -> "HTTPHeaders":
        """Return an independent copy: changing either leaves the other as it was."""
        return HTTPHeaders(self)

    # copy.copy() must not share the value lists either.
    __copy__ = copy

    def __getstate__(self) -> Dict[str, List[str]]:
        return self._as_list

    def __setstate__(self, state: Dict[str, List[str]]) -> None:
        self._as_list = state
        self._combined = {}

    def __str__(self) -> str:
        return "".join([f"{name}: {value}\n" for name, value in self.get_all()])

    __unicode__ = __str__

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self._as_list!r})"


# --- Start lines -------------------------------------------------------------


class RequestStartLine(NamedTuple):
    """The parts of an HTTP request line: ``method``, ``path`` (the
    request-target, with any query) and ``version`` (e.g. ``"HTTP/1.1"``)."""

    method: str
    path: str
    version: str


class ResponseStartLine(NamedTuple):
    """The parts of an HTTP status line: ``version``, ``code`` (an int) and
    ``reason`` (None when the server sent an empty reason phrase)."""

    version: str
    code: int
    reason: Optional[str]


_HTTP1_VERSION_RE = re.compile(r"HTTP/1\.[0-9]")


def parse_request_start_line(line: str) -> RequestStartLine:
    """Split an HTTP/1.x request line into a `RequestStartLine`.

    The line (without its CRLF) must be ``method SP request-target SP
    HTTP-version`` with single spaces (RFC 9112 3); anything else, or a
    version other than HTTP/1.x, raises `HTTPInputError`.

    >>> parse_request_start_line("GET /foo HTTP/1.1")
    RequestStartLine(method='GET', path='/foo', version='HTTP/1.1')
    """
    m = _abnf.REQUEST_LINE_RE.fullmatch(line)
    if m is None:
        raise HTTPInputError(f"Malformed HTTP request line: {line[:200]!r}")
    method, path, version = m.groups()
    if not _HTTP1_VERSION_RE.fullmatch(version):
        raise HTTPInputError(f"Unexpected HTTP version {version!r}")
    return RequestStartLine(method, path, version)


def parse_response_start_line(line: str) -> ResponseStartLine:
    """Split an HTTP/1.x status line into a `ResponseStartLine`.

    The line (without its CRLF) must be ``HTTP-version SP 3DIGIT SP
    [reason-phrase]`` (RFC 9112 4); anything else, or a version other than
    HTTP/1.x, raises `HTTPInputError`.

    >>> parse_response_start_line("HTTP/1.1 200 OK")
    ResponseStartLine(version='HTTP/1.1', code=200, reason='OK')
    """
    m = _abnf.STATUS_LINE_RE.fullmatch(line)
    if m is None:
        raise HTTPInputError(f"Error parsing response start line: {line[:200]!r}")
    version, code, reason = m.groups()
    if not _HTTP1_VERSION_RE.fullmatch(version):
        raise HTTPInputError(f"Unexpected HTTP version {version!r}")
    return ResponseStartLine(version, int(code), reason)


# --- Interfaces between connections and applications --------------------------


class HTTPServerConnectionDelegate:
    """The interface an HTTP server calls for each connection and request.

    `squall.web.Application` implements it; so can any object given to
    `squall.httpserver.HTTPServer`.
    """

    def start_request(
        self, server_conn: object, request_conn: "HTTPConnection"
    ) -> "HTTPMessageDelegate":
        """Called when a new request starts on a connection.

        ``server_conn`` identifies the connection (it is the same object for
        every request of a keep-alive connection); ``request_conn`` is the
        `HTTPConnection` to write the response to. Returns the
        `HTTPMessageDelegate` that receives the request.
        """
        raise NotImplementedError()

    def on_close(self, server_conn: object) -> None:
        """Called when the connection ``server_conn`` has closed."""
        pass


class HTTPMessageDelegate:
    """Receives one HTTP message (a request on a server, a response on a
    client) as it is read.

    Methods may return an awaitable to make the connection wait before it
    reads further (flow control).
    """

    def headers_received(
        self,
        start_line: Union[RequestStartLine, ResponseStartLine],
        headers: HTTPHeaders,
    ) -> Optional[Awaitable[None]]:
        """Called once the start line and headers have been read."""
        pass

    def data_received(self, chunk: bytes) -> Optional[Awaitable[None]]:
        """Called with each piece of the body as it arrives (decoded from
        chunked transfer coding, and decompressed if asked to)."""
        pass

    def finish(self) -> None:
        """Called after the last of the body has been received."""
        pass

    def on_connection_close(self) -> None:
        """Called if the connection closes before the message was complete."""
        pass


class HTTPConnection:
    """The interface through which an application writes an HTTP message
    (a response on a server, a request on a client)."""

    def write_headers(
        self,
        start_line: Union[RequestStartLine, ResponseStartLine],
        headers: HTTPHeaders,
        chunk: Optional[bytes] = None,
    ) -> "Future[None]":
        """Write the start line and headers, and optionally the first body
        chunk. The returned future resolves when the data has been written
        (or buffered below the transport's high-water mark)."""
        raise NotImplementedError()

    def write(self, chunk: bytes) -> "Future[None]":
        """Write a piece of the body; the future resolves as for
        `write_headers`."""
        raise NotImplementedError()

    def finish(self) -> None:
        """Mark the end of the message."""
        raise NotImplementedError()


# --- The server's request object -------------------------------------------------


class HTTPFile(ObjectDict):
    """A file uploaded in a ``multipart/form-data`` body.

    Read its fields as keys or attributes: ``filename`` (as sent by the
    client: do not trust it as a path), ``body`` (the bytes) and
    ``content_type`` (``"application/unknown"`` when the part had no
    Content-Type).
    """

    filename: str
    body: bytes
    content_type: str


# 1000 arguments per urlencoded body or query string, and 100 parts per
# multipart body, are Tornado 6.5's defaults (PHP's max_input_vars is 1000
# too); 10 KiB of headers per part is what Tornado allows as well.
_DEFAULT_MAX_ARGUMENTS = 1000
_DEFAULT_MAX_PARTS = 100
_DEFAULT_MAX_PART_HEADER_SIZE = 10 * 1024


@dataclass
class ParseMultipartConfig:
    """Limits for parsing ``multipart/form-data`` bodies.

    ``enabled``: when False, multipart bodies are refused with
    `HTTPInputError`. ``max_parts``: the most parts a body may have.
    ``max_part_header_size``: the most bytes of headers one part may have.
    """

    enabled: bool = True
    max_parts: int = _DEFAULT_MAX_PARTS
    max_part_header_size: int = _DEFAULT_MAX_PART_HEADER_SIZE


@dataclass
class ParseUrlEncodedConfig:
    """Limits for parsing ``application/x-www-form-urlencoded`` bodies and
    query strings.

    ``max_arguments``: the most ``name=value`` fields one body (or query
    string) may have; more raises `HTTPInputError`.
    """

    max_arguments: int = _DEFAULT_MAX_ARGUMENTS


@dataclass
class ParseBodyConfig:
    """The limits applied when request bodies are parsed into arguments.

    Pass one to `parse_body_arguments`, or make it the default for the whole
    process with `set_parse_body_config`.
    """

    multipart: ParseMultipartConfig = field(default_factory=ParseMultipartConfig)
    urlencoded: ParseUrlEncodedConfig = field(default_factory=ParseUrlEncodedConfig)


_DEFAULT_PARSE_BODY_CONFIG = ParseBodyConfig()


def set_parse_body_config(config: ParseBodyConfig) -> None:
    """Make ``config`` the limits used wherever no config is passed: form
    bodies parsed by `parse_body_arguments` and query strings parsed by
    `HTTPServerRequest`. Affects the whole process."""
    if not isinstance(config, ParseBodyConfig):
        raise TypeError(f"expected a ParseBodyConfig, got {config!r}")
    global _DEFAULT_PARSE_BODY_CONFIG
    _DEFAULT_PARSE_BODY_CONFIG = config


# The same parse in C for ASCII text (None when squall._speedups is not built).
_c_parse_qs = _speedups.parse_qs if _speedups is not None else None


def _parse_qs_bytes(qs: str, max_fields: int) -> Dict[str, List[bytes]]:
    """Parse a query string or urlencoded body as Tornado does: names are
    str (the percent-decoded bytes read as latin-1), values bytes."""
    if _c_parse_qs is not None:
        # None for too many fields or text beyond ASCII: checked below.
        parsed = _c_parse_qs(qs, max_fields)
        if parsed is not None:
            return parsed  # type: ignore[no-any-return]
    if qs.count("&") >= max_fields:
        raise HTTPInputError("Max number of fields exceeded")
    if not qs.isascii() and max(qs) > "\xff":
        # Not from the network (which gives Latin-1 text): a request built
        # by hand. Its values could not be the bytes they stand for.
        raise HTTPInputError(f"Query string has characters beyond Latin-1: {qs[:40]!r}")
    result: Dict[str, List[bytes]] = {}
    if "%" not in qs and "+" not in qs:
        # Nothing to decode (the usual ``?page=2&sort=name``): split it
        # ourselves, as parse_qsl would, at a fraction of its cost.
        for pair in qs.split("&"):
            if pair:
                name, _, text = pair.partition("=")
                values = result.get(name)
                if values is None:
                    result[name] = [text.encode("latin-1")]
                else:
                    values.append(text.encode("latin-1"))
        return result
    for name, value in urllib.parse.parse_qsl(qs, keep_blank_values=True, encoding="latin-1"):
        result.setdefault(name, []).append(value.encode("latin-1"))
    return result


# Host header values already checked against the grammar, mapped to their
# host_name: a server sees the same few names on every request, and the
# check is the costliest step of building a request. Names come from the
# network, so the cache is bounded (as _HEADER_NAME_CACHE_SIZE is).
_HOST_CACHE_SIZE = 1000
_host_names: Dict[str, str] = {}


class _MadeOnFirstUse:
    """An attribute computed by ``make(instance)`` on first access and then
    stored in the instance's ``__dict__``, which answers every later access
    (a non-data descriptor yields to it). Cheaper than ``__getattr__``,
    which Python 3.11 reaches only after building an AttributeError."""

    __slots__ = ("make", "name")

    def __init__(self, make: Callable[[Any], Any]) -> None:
        self.make = make
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: Optional[type] = None) -> Any:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.make(instance)
        return value


class HTTPServerRequest:
    """A single HTTP request, as handed to an application.

    Attributes:

    * ``method``, ``uri``, ``version``: from the request line.
    * ``path``, ``query``: ``uri`` split at the first ``?``.
    * ``headers``: an `HTTPHeaders`.
    * ``body``: the body as bytes (empty until it has been read).
    * ``remote_ip``, ``protocol`` (``"http"`` or ``"https"``): from the
      connection's ``context``, after any ``xheaders`` processing.
    * ``host``: the ``Host`` header (or the ``host`` argument), ``host_name``
      its host part in lower case.
    * ``arguments``: query and body arguments together, ``query_arguments``
      and ``body_arguments`` separately; each maps a name to a list of byte
      strings. ``files`` maps a form field name to a list of `HTTPFile`.
    * ``connection``: the `HTTPConnection` to write the response to;
      ``server_connection``: the object that identifies the underlying
      connection.

    The query string is parsed when ``arguments`` or ``query_arguments`` is
    first read, but a query with too many fields is refused at once, with
    `HTTPInputError`. A request for HTTP/1.1 without a ``Host`` header, with
    several, or with one that is not ``host[:port]``, raises `HTTPInputError`
    too (RFC 9112 3.2).
    """

    path: str
    query: str

    def __init__(
        self,
        method: Optional[str] = None,
        uri: Optional[str] = None,
        version: str = "HTTP/1.0",
        headers: Optional[HTTPHeaders] = None,
        body: Optional[bytes] = None,
        host: Optional[str] = None,
        files: Optional[Dict[str, List[HTTPFile]]] = None,
        connection: Optional[HTTPConnection] = None,
        start_line: Optional[RequestStartLine] = None,
        server_connection: Optional[object] = None,
    ) -> None:
        if start_line is not None:
            method, uri, version = start_line
        if uri is None:
            raise TypeError("HTTPServerRequest needs a uri or a start_line")
        self.method = method
        self.uri = uri
        self.version = version
        self.headers = headers if headers is not None else HTTPHeaders()
        self.body = body or b""

        try:
            # squall's server always gives its connections a full context.
            context = connection.context  # type: ignore[attr-defined]
            self.remote_ip = context.remote_ip
            self.protocol = context.protocol
        except AttributeError:
            context = getattr(connection, "context", None)
            self.remote_ip = getattr(context, "remote_ip", None)
            self.protocol = getattr(context, "protocol", "http")

        if host is None:
            host = self._host_from_headers()
        self.host = host
        host_name = _host_names.get(host)
        if host_name is None:
            host_name = split_host_and_port(host.lower())[0]
        self.host_name = host_name
        self.files = files if files is not None else {}
        self.connection = connection
        self.server_connection = server_connection
        self._start_time = time.time()
        self._finish_time: Optional[float] = None

        self.path, sep, self.query = uri.partition("?")
        if self.query:
            max_fields = _DEFAULT_PARSE_BODY_CONFIG.urlencoded.max_arguments
            if self.query.count("&") >= max_fields:
                raise HTTPInputError("Max number of fields exceeded in query string")
        else:
            self.query_arguments = {}
            self.arguments = {}
        self.body_arguments: Dict[str, List[bytes]] = {}

    @classmethod
    def _for_server(
        cls,
        start_line: RequestStartLine,
        headers: "HTTPHeaders",
        connection: HTTPConnection,
        server_connection: object,
    ) -> "HTTPServerRequest":
        """The request a server received: what ``__init__`` does for
        ``start_line``/``headers``/``connection``, without its defaulting of
        the other arguments (one of these is built for every request)."""
        self = cls.__new__(cls)
        self.method, uri, self.version = start_line
        self.uri = uri
        self.headers = headers
        context = getattr(connection, "context", None)
        self.remote_ip = getattr(context, "remote_ip", None)
        self.protocol = getattr(context, "protocol", "http")
        hosts = headers._as_list.get("Host")
        host = hosts[0] if hosts is not None and len(hosts) == 1 else None
        host_name = _host_names.get(host) if host is not None else None
        if host_name is None:
            # Not a Host seen before (or none, or several): the full checks.
            host = self._host_from_headers()
            host_name = _host_names.get(host)
            if host_name is None:
                host_name = split_host_and_port(host.lower())[0]
        self.host = host  # type: ignore[assignment]
        self.host_name = host_name
        self.connection = connection
        self.server_connection = server_connection
        self._start_time = time.time()
        self.path, _, query = uri.partition("?")
        self.query = query
        if query and query.count("&") >= _DEFAULT_PARSE_BODY_CONFIG.urlencoded.max_arguments:
            raise HTTPInputError("Max number of fields exceeded in query string")
        # body (b"") and _finish_time (None) are class defaults; the
        # argument dicts and files are made on first use (_MadeOnFirstUse).
        return self

    def _host_from_headers(self) -> str:
        hosts = self.headers.get_list("Host")
        if not hosts:
            if self.version == "HTTP/1.1":
                raise HTTPInputError("Missing Host header")
            return "127.0.0.1"
        if len(hosts) > 1 or "," in hosts[0]:
            raise HTTPInputError(f"Multiple host headers not allowed: {','.join(hosts)!r}")
        host = hosts[0]
        if host not in _host_names:
            if not _abnf.HOST_RE.fullmatch(host):
                raise HTTPInputError(f"Invalid Host header: {host!r}")
            if len(_host_names) < _HOST_CACHE_SIZE:
                _host_names[host] = split_host_and_port(host.lower())[0]
        return host

    def _parse_body(self) -> None:
        """Parse the (complete) body into ``body_arguments`` and ``files``,
        and add the body arguments to ``arguments``.

        Called by the framework once the body has been read, before the
        handler runs; raises `HTTPInputError` for a malformed form body.
        """
        headers = self.headers
        content_type = headers.get("Content-Type", "")
        if not (content_type.startswith(_FORM_TYPES) or "Content-Encoding" in headers):
            # Not a form (a JSON or binary body): nothing to parse, and the
            # argument dicts need not even be made.
            return
        parse_body_arguments(content_type, self.body, self.body_arguments, self.files, headers)
        if self.body_arguments:
            arguments = self.arguments
            for name, values in self.body_arguments.items():
                arguments.setdefault(name, []).extend(values)

    body = b""
    _finish_time: Optional[float] = None

    # The argument dicts and files are made on first use, then stored on the
    # request (see _MadeOnFirstUse).
    def _parse_query_arguments(self) -> Dict[str, List[bytes]]:
        return _parse_qs_bytes(self.query, _DEFAULT_PARSE_BODY_CONFIG.urlencoded.max_arguments)

    def _copy_query_arguments(self) -> Dict[str, List[bytes]]:
        return {k: list(v) for k, v in self.query_arguments.items()}

    def _empty_dict(self) -> Dict[str, Any]:
        return {}

    query_arguments: Dict[str, List[bytes]] = _MadeOnFirstUse(_parse_query_arguments)  # type: ignore[assignment]
    arguments: Dict[str, List[bytes]] = _MadeOnFirstUse(_copy_query_arguments)  # type: ignore[assignment]
    body_arguments: Dict[str, List[bytes]] = _MadeOnFirstUse(_empty_dict)  # type: ignore[assignment]
    files: Dict[str, List["HTTPFile"]] = _MadeOnFirstUse(_empty_dict)  # type: ignore[assignment]

    @property
    def cookies(self) -> http.cookies.SimpleCookie:
        """The request's cookies, as an `http.cookies.SimpleCookie`.

        Parsed from every ``Cookie`` header (with `parse_cookie`) on first
        use; cookies whose names `http.cookies` cannot represent are left out.
        """
        try:
            return self.__dict__["_cookies"]
        except KeyError:
            pass
        cookies: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
        for header in self.headers.get_list("Cookie"):
            for name, value in parse_cookie(header).items():
                try:
                    cookies[name] = value
                except http.cookies.CookieError:
                    pass
        self.__dict__["_cookies"] = cookies
        return cookies

    def full_url(self) -> str:
        """Return the URL of this request: protocol, host and uri."""
        return self.protocol + "://" + self.host + self.uri

    def request_time(self) -> float:
        """Return the seconds this request has taken so far, or took in all
        once it has finished."""
        if self._finish_time is None:
            return time.time() - self._start_time
        return self._finish_time - self._start_time

    def get_ssl_certificate(self, binary_form: bool = False) -> Union[None, Dict[str, Any], bytes]:
        """Return the client's TLS certificate, or None.

        Only available when the server's ``ssl_options`` ask for client
        certificates (``cert_reqs``). By default a dict as described by
        `ssl.SSLSocket.getpeercert`; with ``binary_form=True`` the
        DER-encoded bytes.
        """
        ssl_object = None
        # The transport first: on squall's own server, touching the
        # connection's ``stream`` would take the connection over.
        transport = getattr(self.connection, "transport", None)
        if transport is not None:
            ssl_object = transport.get_extra_info("ssl_object")
        else:
            stream = getattr(self.connection, "stream", None)
            if stream is not None:
                ssl_object = getattr(stream, "socket", None)
        getpeercert = getattr(ssl_object, "getpeercert", None)
        if getpeercert is None:
            return None
        try:
            return getpeercert(binary_form=binary_form)
        except ValueError:
            # Raised before the handshake has completed.
            return None

    def __repr__(self) -> str:
        attrs = ("protocol", "host", "method", "uri", "version", "remote_ip")
        args = ", ".join(f"{n}={getattr(self, n)!r}" for n in attrs)
        return f"{self.__class__.__name__}({args})"


# --- Request bodies ----------------------------------------------------------


def _abort_connection(connection: Any) -> None:
    """Close a server connection at once, without ending its response (a
    client that cannot keep up, or a body that broke off half-way, must not
    look complete). squall's server connections expose their asyncio
    ``transport``; an `HTTP1Connection` over an IOStream its ``stream``."""
    transport = getattr(connection, "transport", None)
    if transport is not None:
        transport.abort()
        return
    stream = getattr(connection, "stream", None)
    if stream is not None:
        stream.close()


# The body types parse_body_arguments reads; any other is left alone.
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def parse_body_arguments(
    content_type: str,
    body: bytes,
    arguments: Dict[str, List[bytes]],
    files: Dict[str, List[HTTPFile]],
    headers: Optional[HTTPHeaders] = None,
    *,
    config: Optional[ParseBodyConfig] = None,
) -> None:
    """Parse a form body into ``arguments`` and ``files``.

    ``content_type`` selects the format: ``application/x-www-form-urlencoded``
    or ``multipart/form-data`` (any other type is left alone). Values are
    appended to the lists in ``arguments`` (name -> list of bytes) and
    ``files`` (name -> list of `HTTPFile`). ``headers``, when given, are the
    request's headers: a body with a ``Content-Encoding`` is refused, since it
    should have been decoded before it got here. ``config`` sets the limits
    (default: the one set by `set_parse_body_config`).

    Raises `HTTPInputError` for a malformed body or one over the limits.
    """
    if headers is not None and "Content-Encoding" in headers:
        raise HTTPInputError(f"Unsupported Content-Encoding: {headers['Content-Encoding']}")
    if config is None:
        config = _DEFAULT_PARSE_BODY_CONFIG
    if content_type.startswith("application/x-www-form-urlencoded"):
        parsed = _parse_qs_bytes(body.decode("latin-1"), config.urlencoded.max_arguments)
        for name, values in parsed.items():
            arguments.setdefault(name, []).extend(values)
    elif content_type.startswith("multipart/form-data"):
        _, params = _parse_header(content_type)
        boundary = params.get("boundary")
        if not boundary:
            raise HTTPInputError("Invalid multipart/form-data: multipart boundary not found")
        try:
            boundary_bytes = boundary.encode("latin-1")
        except UnicodeEncodeError:
            raise HTTPInputError(f"Invalid multipart boundary {boundary!r}") from None
        try:
            parse_multipart_form_data(
                boundary_bytes, body, arguments, files, config=config.multipart
            )
        except HTTPInputError as e:
            raise HTTPInputError(f"Invalid multipart/form-data: {e}") from None


# RFC 2046 5.1.1: boundary := 0*69<bchars> bcharsnospace
_BOUNDARY_RE = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


def parse_multipart_form_data(
    boundary: bytes,
    data: bytes,
    arguments: Dict[str, List[bytes]],
    files: Dict[str, List[HTTPFile]],
    *,
    config: Optional[ParseMultipartConfig] = None,
) -> None:
    """Parse a ``multipart/form-data`` body (RFC 7578) into ``arguments``
    and ``files``.

    ``boundary`` is the ``boundary`` parameter of the Content-Type (quotes
    around it are removed). A part whose Content-Disposition has a
    ``filename`` becomes an `HTTPFile` in ``files``; any other part's body is
    appended to ``arguments``. Data after the final boundary is ignored
    (RFC 2046 5.1.1); data before the first boundary is read as a part, as
    Tornado does (browsers send no preamble).

    Raises `HTTPInputError` for a malformed body (a missing final boundary,
    a part without headers, a Content-Disposition other than ``form-data`` or
    without a ``name``) or one over the limits of ``config``, whose default is
    the multipart part of the config set by `set_parse_body_config`. Nothing
    is added to ``arguments`` or ``files`` unless the whole body is valid.
    """
    if config is None:
        config = _DEFAULT_PARSE_BODY_CONFIG.multipart
    if not config.enabled:
        raise HTTPInputError("multipart/form-data parsing is disabled")
    if boundary[:1] == b'"' and boundary[-1:] == b'"' and len(boundary) >= 2:
        boundary = boundary[1:-1]
    if not _BOUNDARY_RE.fullmatch(boundary):
        raise HTTPInputError(f"invalid multipart boundary {boundary!r}")
    delimiter = b"--" + boundary
    close = data.rfind(delimiter + b"--")
    if close < 0:
        raise HTTPInputError("Invalid multipart/form-data: no final boundary found")
    # A delimiter is CRLF + "--" + boundary, except at the very start.
    body_delimiter = b"\r\n" + delimiter
    found_args: List[Tuple[str, bytes]] = []
    found_files: List[Tuple[str, HTTPFile]] = []
    max_header = config.max_part_header_size
    parts = 0
    # Where the delimiter that opens the next part is. A body that does not
    # start with a delimiter has its first part right at the start, as
    # Tornado has always accepted (clients do not send preambles in forms).
    next_delimiter: Optional[int] = 0 if data.startswith(delimiter) else None
    start = 0
    while True:
        if next_delimiter is not None:
            if next_delimiter == close:
                break
            # The delimiter must end its line.
            start = next_delimiter + len(delimiter)
            if data[start : start + 2] != b"\r\n":
                raise HTTPInputError("Invalid multipart/form-data: malformed boundary line")
            start += 2
            if data.startswith(delimiter, start):
                # An empty part (not even a header block): nothing to keep.
                next_delimiter = start
                continue
        parts += 1
        if parts > config.max_parts:
            raise HTTPInputError("multipart/form-data has too many parts")
        end = data.find(body_delimiter, start)
        if end < 0 or end + 2 > close:
            raise HTTPInputError("Invalid multipart/form-data: part not terminated")
        # The blank line after the headers may share its CRLF with the
        # delimiter (an empty body), hence the search up to end + 2. It is
        # bounded by the header size limit so a huge part is not scanned.
        limit = start + max_header + 4
        header_end = data.find(b"\r\n\r\n", start, min(end + 2, limit))
        if header_end < 0:
            if end + 2 > limit:
                raise HTTPInputError("multipart/form-data part header too large")
            raise HTTPInputError("multipart/form-data missing headers")
        name, item = _parse_part(data[start:header_end], data[header_end + 4 : end])
        if isinstance(item, HTTPFile):
            found_files.append((name, item))
        else:
            found_args.append((name, item))
        next_delimiter = end + 2
    for name, value in found_args:
        arguments.setdefault(name, []).append(value)
    for name, upload in found_files:
        files.setdefault(name, []).append(upload)


def _parse_part(raw_headers: bytes, value: bytes) -> Tuple[str, Union[bytes, HTTPFile]]:
    try:
        text = raw_headers.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPInputError("multipart/form-data part headers are not UTF-8") from None
    headers = HTTPHeaders.parse(text, _chars_are_bytes=False)
    disposition, params = _parse_header(headers.get("Content-Disposition", ""))
    if disposition != "form-data":
        raise HTTPInputError("Invalid multipart/form-data: Content-Disposition is not form-data")
    name = params.get("name")
    if not name:
        raise HTTPInputError("multipart/form-data value missing name")
    filename = params.get("filename")
    if filename:
        content_type = headers.get("Content-Type", "application/unknown")
        return name, HTTPFile(filename=filename, body=value, content_type=content_type)
    return name, value


# One ";"-separated piece of a header value with parameters: quoted strings
# are kept whole (a ";" inside one does not split). An unterminated quoted
# string runs to the end, so the pattern never backtracks.
_PARAM_SEGMENT_RE = re.compile(r'(?:"(?:[^"\\]|\\[\s\S]?)*(?:"|\Z)|[^;"])*')
_QUOTED_PAIR_RE = re.compile(r"\\([\s\S])")
# RFC 8187 ext-value: charset "'" [ language ] "'" value-chars
_EXT_VALUE_RE = re.compile(r"([!#$%&+\-^_`{}~0-9A-Za-z]+)'[0-9A-Za-z\-]*'([\s\S]*)")


def _split_params(line: str) -> List[str]:
    pieces = []
    pos = 0
    end = len(line)
    while True:
        m = _PARAM_SEGMENT_RE.match(line, pos)
        assert m is not None  # the pattern matches the empty string
        pieces.append(m.group())
        pos = m.end() + 1
        if pos > end:
            return pieces


def _unquote_param(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return _QUOTED_PAIR_RE.sub(r"\1", value[1:-1])
    return value


def _decode_ext_value(value: str) -> str:
    m = _EXT_VALUE_RE.fullmatch(value)
    if m is None:
        return urllib.parse.unquote(value, errors="replace")
    charset, encoded = m.groups()
    raw = urllib.parse.unquote_to_bytes(encoded)
    try:
        return raw.decode(charset, errors="replace")
    except LookupError:
        return raw.decode("latin-1")


def _parse_header(line: str) -> Tuple[str, Dict[str, str]]:
    """Parse a header value with parameters, like Content-Type or
    Content-Disposition, into the main value and a dict of parameters.

    Parameter names are lower-cased and quoted values unquoted; an
    ``name*=charset'lang'value`` parameter (RFC 8187) is decoded and takes
    the place of ``name``.

    >>> d = "form-data; foo=\\"b\\\\\\\\a\\\\\\"r\\"; file*=utf-8''T%C3%A4st"
    >>> ct, d = _parse_header(d)
    >>> ct
    'form-data'
    >>> d['file'] == r'T\\u00e4st'.encode('ascii').decode('unicode_escape')
    True
    >>> d['foo']
    'b\\\\a"r'
    """
    pieces = _split_params(line)
    key = pieces[0].strip(HTTP_WHITESPACE)
    params: Dict[str, str] = {}
    extended: Dict[str, str] = {}
    for piece in pieces[1:]:
        name, eq, value = piece.partition("=")
        if not eq:
            continue
        name = name.strip(HTTP_WHITESPACE).lower()
        value = value.strip(HTTP_WHITESPACE)
        if name.endswith("*"):
            extended[name[:-1]] = _decode_ext_value(value)
        else:
            params[name] = _unquote_param(value)
    params.update(extended)
    return key, params


def _encode_header(key: str, pdict: Dict[str, Optional[str]]) -> str:
    """The inverse of `_parse_header`: ``key; name=value; ...``.

    >>> _encode_header('permessage-deflate',
    ...     {'client_max_window_bits': 15, 'client_no_context_takeover': None})
    'permessage-deflate; client_max_window_bits=15; client_no_context_takeover'
    """
    if not pdict:
        return key
    out = [key]
    for name, value in pdict.items():
        out.append(name if value is None else f"{name}={value}")
    return "; ".join(out)


# --- Ranges ----------------------------------------------------------------

# RFC 9110 14.1.1: a single int-range "first-last", "first-" or a
# suffix-range "-length", as digits only (no signs, spaces or underscores).
# A bare "first" is accepted as "first-", as Tornado does.
_RANGE_RE = re.compile(r"bytes=([0-9]*)(?:-([0-9]*))?")


def _parse_request_range(range_header: str) -> Optional[Tuple[Optional[int], Optional[int]]]:
    """Parse a ``Range`` header into a ``(start, end)`` slice of the entity.

    ``end`` is exclusive, as in Python slices; a suffix range ``-N`` gives
    ``(-N, None)``. Returns None for a header squall does not understand
    (another unit, several ranges, bad syntax): the whole entity is then sent.

    >>> _parse_request_range("bytes=1-2")
    (1, 3)
    >>> _parse_request_range("bytes=6-")
    (6, None)
    >>> _parse_request_range("bytes=-6")
    (-6, None)
    >>> _parse_request_range("bytes=-0")
    (None, 0)
    >>> _parse_request_range("bytes=")
    (None, None)
    >>> _parse_request_range("foo=42")
    >>> _parse_request_range("bytes=1-2,6-10")
    """
    m = _RANGE_RE.fullmatch(range_header)
    if m is None:
        return None
    first, last = m.groups()
    start = int(first) if first else None
    end = int(last) if last else None
    if start is None:
        if end is not None and end != 0:
            return (-end, None)
        return (None, end)
    if end is not None:
        end += 1
    return (start, end)


def _get_content_range(start: Optional[int], end: Optional[int], total: int) -> str:
    """Return a ``Content-Range`` value for the slice ``[start:end]`` of an
    entity of ``total`` bytes.

    >>> print(_get_content_range(None, 1, 4))
    bytes 0-0/4
    >>> print(_get_content_range(1, 3, 4))
    bytes 1-2/4
    >>> print(_get_content_range(None, None, 4))
    bytes 0-3/4
    """
    start = start or 0
    end = (end or total) - 1
    return f"bytes {start}-{end}/{total}"


# --- Small helpers -----------------------------------------------------------


def url_concat(
    url: str,
    args: Union[None, Dict[str, str], List[Tuple[str, str]], Tuple[Tuple[str, str], ...]],
) -> str:
    """Append ``args`` (a dict, or a list or tuple of pairs, which may repeat
    a name) to the query string of ``url``, keeping any existing query and
    fragment.

    >>> url_concat("http://example.com/foo", dict(c="d"))
    'http://example.com/foo?c=d'
    >>> url_concat("http://example.com/foo?a=b", dict(c="d"))
    'http://example.com/foo?a=b&c=d'
    >>> url_concat("http://example.com/foo?a=b", [("c", "d"), ("c", "d2")])
    'http://example.com/foo?a=b&c=d&c=d2'
    """
    if args is None:
        return url
    if isinstance(args, dict):
        pairs: List[Tuple[str, str]] = list(args.items())
    elif isinstance(args, (list, tuple)):
        pairs = list(args)
    else:
        raise TypeError(
            f"'args' parameter should be dict, list or tuple. Not {type(args)}"
        )
    parts = urllib.parse.urlparse(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query.extend(pairs)
    return urllib.parse.urlunparse(parts._replace(query=urllib.parse.urlencode(query)))


def format_timestamp(
    ts: Union[int, float, Tuple[int, ...], time.struct_time, datetime.datetime],
) -> str:
    """Format a time as an HTTP date (RFC 9110 5.6.7), e.g.
    ``"Sun, 06 Nov 1994 08:49:37 GMT"``.

    ``ts`` is a Unix timestamp, a time tuple or `time.struct_time` in UTC (as
    from `time.gmtime`), or a `datetime.datetime` (naive ones are taken as
    UTC; aware ones are converted).

    >>> format_timestamp(1359312200)
    'Sun, 27 Jan 2013 18:43:20 GMT'
    """
    if isinstance(ts, datetime.datetime):
        if ts.tzinfo is None:
            seconds: float = calendar.timegm(ts.utctimetuple())
        else:
            seconds = ts.timestamp()
    elif isinstance(ts, (int, float)) and not isinstance(ts, bool):
        seconds = ts
    elif isinstance(ts, (tuple, time.struct_time)):
        seconds = calendar.timegm(ts)
    else:
        raise TypeError(f"unknown timestamp type: {ts!r}")
    # The same few times recur (a static file's Last-Modified on every
    # request for it): format each once.
    text = _http_dates.get(seconds)
    if text is None:
        text = email.utils.formatdate(seconds, usegmt=True)
        if len(_http_dates) >= 256:
            _http_dates.clear()
        _http_dates[seconds] = text
    return text


_http_dates: dict[float, str] = {}


# host ":" port, where port is ASCII digits (int() would also take other
# Unicode digits).
_HOST_PORT_RE = re.compile(r"(.+):([0-9]+)", re.DOTALL)


def split_host_and_port(netloc: str) -> Tuple[str, Optional[int]]:
    """Split ``"host:port"`` into ``(host, port)``; ``port`` is None when
    ``netloc`` has no port. IPv6 literals keep their brackets.

    >>> split_host_and_port("example.com:8080")
    ('example.com', 8080)
    >>> split_host_and_port("[::1]")
    ('[::1]', None)
    """
    m = _HOST_PORT_RE.fullmatch(netloc)
    if m is None:
        return (netloc, None)
    return (m.group(1), int(m.group(2)))


def qs_to_qsl(qs: Mapping[str, Sequence[Any]]) -> Iterable[Tuple[str, Any]]:
    """Turn the result of `urllib.parse.parse_qs` (name -> list of values)
    back into ``(name, value)`` pairs."""
    for name, values in qs.items():
        for value in values:
            yield (name, value)


# An escape in a quoted cookie value: a three-digit octal byte value or any
# escaped character (the forms http.cookies writes).
_COOKIE_ESCAPE_RE = re.compile(r"\\(?:([0-3][0-7][0-7])|([\s\S]))")


def _unescape_cookie_match(m: "re.Match[str]") -> str:
    octal = m.group(1)
    if octal is not None:
        return chr(int(octal, 8))
    return m.group(2)


def _unquote_cookie(value: str) -> str:
    """Unquote a cookie value that is wrapped in double quotes, as
    `http.cookies` quotes values; other values are returned unchanged."""
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    return _COOKIE_ESCAPE_RE.sub(_unescape_cookie_match, value[1:-1])


def parse_cookie(cookie: str) -> Dict[str, str]:
    """Parse a ``Cookie`` header value into a dict of name -> value.

    Browsers are lenient about what they send, so this is too, in the way
    they read ``document.cookie``: every ``;`` separates cookies (even inside
    quotes), spaces and tabs around names and values are dropped, a piece
    without ``=`` is a cookie with an empty name, and when a name repeats the
    last value wins. Quoted values are unquoted as `http.cookies` quotes
    them. Never raises.

    >>> parse_cookie("a=b; c=\\"d e\\"")
    {'a': 'b', 'c': 'd e'}
    """
    result: Dict[str, str] = {}
    for piece in cookie.split(";"):
        name, eq, value = piece.partition("=")
        if not eq:
            name, value = "", name
        name = name.strip(HTTP_WHITESPACE)
        value = value.strip(HTTP_WHITESPACE)
        if name or value:
            result[name] = _unquote_cookie(value)
    return result


def encode_username_password(username: Union[str, bytes], password: Union[str, bytes]) -> bytes:
    """Return ``username:password`` as bytes, the form HTTP Basic
    authentication base64-encodes.

    ``str`` arguments are normalized to Unicode NFC and encoded as UTF-8
    (RFC 7617 2.1), so that the same password typed as composed or
    decomposed characters gives the same credentials.
    """
    if isinstance(username, str):
        username = unicodedata.normalize("NFC", username).encode("utf-8")
    if isinstance(password, str):
        password = unicodedata.normalize("NFC", password).encode("utf-8")
    return username + b":" + password


def doctests() -> Any:
    """Return this module's doctests as a `unittest` suite."""
    import doctest

    return doctest.DocTestSuite()
