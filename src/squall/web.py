"""The web framework: request handlers, the application that routes to them,
and the pieces around them (cookies, XSRF protection, templates, static files,
output transforms).

A minimal application::

    from squall import ioloop, web

    class MainHandler(web.RequestHandler):
        def get(self):
            self.write("Hello, world")

    if __name__ == "__main__":
        web.Application([(r"/", MainHandler)]).listen(8888)
        ioloop.IOLoop.current().start()

Each request gets a fresh `RequestHandler` instance. The HTTP method picks the
handler method (``get``, ``post``...); groups captured by the URL pattern are
passed to it as arguments. A handler method may be a plain function, a
coroutine (``async def``) or a `.gen.coroutine`: a plain function that does not
return an awaitable runs to completion without any task being created, which is
what makes the common case cheap.

The response is buffered by `RequestHandler.write` and sent by
`RequestHandler.finish` (called for you when the handler method returns), or
streamed earlier with `RequestHandler.flush`.

Handlers are not thread-safe: call ``write``, ``finish``, ``flush`` and friends
from the event loop thread only (use `.IOLoop.add_callback` from other threads).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import datetime
import email.utils
import functools
import hashlib
import hmac
import http.cookies
import inspect
import mimetypes
import numbers
import os.path
import re
import socket
import stat
import string
import sys
import threading
import time
import traceback
import types
import urllib.parse
import zlib
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from inspect import isclass
from typing import Any, Optional, TypeVar, Union, cast
from urllib.parse import urlencode

from squall import escape, httputil, iostream, locale, template
from squall import version as _squall_version
from squall.escape import to_unicode as _unicode, utf8
from squall.log import access_log, app_log, gen_log
from squall.routing import (
    AnyMatches,
    DefaultHostMatches,
    HostMatches,
    ReversibleRouter,
    ReversibleRuleRouter,
    Router,
    Rule,
    URLSpec,
    _RuleSpec,
)
from squall.util import ObjectDict, _websocket_mask

__all__ = [
    "Application",
    "RequestHandler",
    "HTTPError",
    "Finish",
    "MissingArgumentError",
    "ErrorHandler",
    "RedirectHandler",
    "StaticFileHandler",
    "FallbackHandler",
    "OutputTransform",
    "GZipContentEncoding",
    "UIModule",
    "TemplateModule",
    "URLSpec",
    "url",
    "authenticated",
    "addslash",
    "removeslash",
    "stream_request_body",
    "asynchronous",
    "create_signed_value",
    "decode_signed_value",
    "get_signature_key_version",
    "is_absolute",
    "DEFAULT_SIGNED_VALUE_VERSION",
    "DEFAULT_SIGNED_VALUE_MIN_VERSION",
    "MIN_SUPPORTED_SIGNED_VALUE_VERSION",
    "MAX_SUPPORTED_SIGNED_VALUE_VERSION",
]

url = URLSpec

# Signed value formats (see create_signed_value). Version 1 signs with
# HMAC-SHA1 and has no room for a key version; version 2 signs with
# HMAC-SHA256, length-prefixes every field and records the key version.
MIN_SUPPORTED_SIGNED_VALUE_VERSION = 1
MAX_SUPPORTED_SIGNED_VALUE_VERSION = 2
DEFAULT_SIGNED_VALUE_VERSION = 2
DEFAULT_SIGNED_VALUE_MIN_VERSION = 1

_CookieSecretTypes = Union[str, bytes, dict[int, str], dict[int, bytes]]
_HeaderTypes = Union[bytes, str, int, numbers.Integral, datetime.datetime]
_T = TypeVar("_T")
_MethodT = TypeVar("_MethodT", bound=Callable[..., Any])

_SERVER_HEADER = "SquallServer/%s" % _squall_version
_DEFAULT_CONTENT_TYPE = "text/html; charset=UTF-8"
# Methods that must not change state (RFC 9110 section 9.2.1): they skip the
# XSRF and cross-origin checks.
_SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
# UTF-8 decoding of a path group (TypeError for None or str groups).
_decode_utf8 = bytes.decode
# A keyword argument not given (None may be given on purpose).
_NOT_GIVEN: Any = object()
# Statuses whose responses never carry a body (RFC 9110 sections 15.3.5, 15.4.5).
_BODILESS_STATUSES = frozenset((204, 304))
# Methods whose 200 responses get an automatic ETag (and may become a 304).
_ETAG_METHODS = frozenset(("GET", "HEAD"))
# Request methods mapped to the handler attributes that serve them.
_METHOD_ATTRS = {m: m.lower() for m in ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")}
_sha1 = hashlib.sha1
# Response start lines by (code, reason): the same few serve every request.
# Reasons can come from applications, so the cache is bounded.
_START_LINE_CACHE_SIZE = 256
_start_lines: dict[tuple[int, str], httputil.ResponseStartLine] = {}
# A header value is field-vchar / SP / HTAB (RFC 9110 section 5.5), in Latin-1:
# no CR, LF or other control characters that would let a value inject headers.
_VALID_HEADER_VALUE = re.compile(r"[\x09\x20-\x7e\x80-\xff]*\Z")
# A header name is a token (RFC 9110 section 5.6.2).
_VALID_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# A reason phrase is HTAB / SP / VCHAR / obs-text (RFC 9112 section 4); "<" is
# refused as well because error pages echo the phrase into HTML.
_VALID_REASON = re.compile(r"[\x09\x20-\x3b\x3d-\x7e\x80-\xff]+\Z")
# Control characters replaced by a space in decoded arguments (tab, newlines
# and form feed are kept: they are ordinary text in form fields).
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f]")
# Characters refused in cookie names: controls, space and ';' (RFC 6265
# section 4.1.1); attribute values also refuse controls and ';'.
_INVALID_COOKIE_NAME = re.compile(r"[\x00-\x20\x7f;]")
_INVALID_COOKIE_ATTR = re.compile(r"[\x00-\x1f\x7f;]")
_INVALID_COOKIE_VALUE = re.compile(r"[\x00-\x20]")
# Attributes http.cookies.Morsel understands, by their lowercase key.
_MORSEL_ATTRS = frozenset(http.cookies.Morsel._reserved)  # type: ignore[attr-defined]
# An xsrf token or signed value that starts with a version number.
_VERSIONED_TOKEN = re.compile(rb"^([1-9][0-9]*)\|(.*)$", re.DOTALL)
# A v2 signed value field length: decimal digits only (no sign, no spaces).
_FIELD_LENGTH = re.compile(rb"[0-9]{1,10}\Z")
# URL schemes whose URLs always have an authority: browsers read
# "https:evil.com" as "https://evil.com" (WHATWG URL "special schemes").
_SPECIAL_SCHEMES = frozenset(("http", "https", "ws", "wss", "ftp", "file"))
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_URL_AUTHORITY_END = re.compile(r"[/?#]")
# What browsers strip from both ends of a URL (WHATWG URL parsing).
_C0_CONTROLS_AND_SPACE = "".join(map(chr, range(0x21)))
# Seconds in a day, for cookie and signed value lifetimes.
_DAY = 86400
# Signed values dated further in the future than this are refused: a value
# from a client with a skewed clock is fine, a forged timestamp is not.
_MAX_FUTURE_TIMESTAMP = 31 * _DAY


# The Date of the default headers (see RequestHandler.clear): the second it
# was formatted for, and the text. Formatting it once per second is enough.
_default_headers_cache: list[Any] = [0, ""]
_time = time.time
_HTTPHeaders = httputil.HTTPHeaders
_new_headers = httputil.HTTPHeaders.__new__
# Header names known to be valid tokens, mapped to their normalized form
# (httputil's cache: a hit proves the name valid).
_normalized_names = httputil._normalized_names


class _ArgDefaultMarker:
    pass


_ARG_DEFAULT: Any = _ArgDefaultMarker()

# Tasks of handlers that had to wait for something: asyncio keeps only weak
# references to tasks, so they are held here until they finish.
_RUNNING_TASKS: set[asyncio.Task[Any]] = set()


class _LazyUI:
    """``RequestHandler.ui``: built on first use, since most handlers never
    render a template and the namespace costs a closure per UI method."""

    def __get__(self, handler: Optional["RequestHandler"], owner: type) -> Any:
        if handler is None:
            return self
        ui = ObjectDict(
            (name, handler._ui_method(method))
            for name, method in handler.application.ui_methods.items()
        )
        ui["_tt_modules"] = _UIModuleNamespace(handler, handler.application.ui_modules)
        ui["modules"] = ui["_tt_modules"]
        handler.__dict__["ui"] = ui
        return ui


class RequestHandler:
    """Base class for HTTP request handlers.

    Subclasses define a method per HTTP method they answer (``get``,
    ``post``, ``put``, ``delete``, ``patch``, ``head``, ``options``); methods
    not defined answer 405. Methods outside `SUPPORTED_METHODS` are refused
    with 405 before any handler code runs.

    Override `initialize` to receive the keyword arguments of the URL rule,
    `prepare` for code common to all methods, and `on_finish` for clean-up
    after the response is sent. Don't override ``__init__``.
    """

    SUPPORTED_METHODS: tuple[str, ...] = (
        "GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS",
    )

    _template_loaders: dict[str, template.BaseLoader] = {}
    _template_loader_lock = threading.Lock()
    _remove_control_chars_regex = _CONTROL_CHARS
    _stream_request_body = False

    ui: ObjectDict = _LazyUI()  # type: ignore[assignment]
    path_args: list[Any]
    path_kwargs: dict[str, Any]

    # Set in _execute; a test double that skips __init__ still sees these.
    _prepared_future: Optional["asyncio.Future[None]"] = None
    # Per-request state that starts the same for every request: class
    # defaults, so that a handler is cheaper to create.
    _headers_written = False
    _finished = False
    _auto_finish = True
    _transforms: list["OutputTransform"] = []
    _new_cookie: Optional[dict[str, http.cookies.Morsel]] = None  # type: ignore[type-arg]

    def __init__(
        self,
        application: "Application",
        request: httputil.HTTPServerRequest,
        **kwargs: Any,
    ) -> None:
        # super().__init__() reaches a mixin listed after RequestHandler (as
        # Tornado's does); the call costs more than the rest of this method,
        # so it is made only for classes that have one.
        cls = self.__class__
        cooperative = _cooperative_init.get(cls)
        if cooperative is None:
            cooperative = _has_init_after_handler(cls)
        if cooperative:
            super().__init__()
        self.application = application
        self.request = request
        self.clear()
        connection = request.connection
        assert connection is not None
        connection.set_close_callback(self._connection_closed)
        if kwargs:
            self.initialize(**kwargs)
        else:
            self.initialize()

    def initialize(self) -> None:
        """Hook for subclass initialization, called for each request.

        Receives the third item of the URL rule (a dict) as keyword
        arguments; subclasses define it with the parameters they need::

            class ProfileHandler(RequestHandler):
                def initialize(self, database):
                    self.database = database

            app = Application([(r"/user/(.*)", ProfileHandler, dict(database=db))])
        """

    @property
    def settings(self) -> dict[str, Any]:
        """The `Application`'s settings (``self.application.settings``)."""
        return self.application.settings

    def _unimplemented_method(self, *args: Any, **kwargs: Any) -> None:
        raise HTTPError(405)

    head: Callable[..., Optional[Awaitable[None]]] = _unimplemented_method
    get: Callable[..., Optional[Awaitable[None]]] = _unimplemented_method
    post: Callable[..., Optional[Awaitable[None]]] = _unimplemented_method
    delete: Callable[..., Optional[Awaitable[None]]] = _unimplemented_method
    patch: Callable[..., Optional[Awaitable[None]]] = _unimplemented_method
    put: Callable[..., Optional[Awaitable[None]]] = _unimplemented_method
    options: Callable[..., Optional[Awaitable[None]]] = _unimplemented_method

    def prepare(self) -> Optional[Awaitable[None]]:
        """Called before the HTTP method's handler, whatever the method.

        May be a coroutine: the method handler then waits for it. Calling
        `finish` (or `redirect`...) here ends the request without calling the
        method handler.
        """
        pass

    def on_finish(self) -> None:
        """Called after the response has been sent (for clean-up or logging).

        Its counterpart is `prepare`. It must not produce output.
        """
        pass

    def on_connection_close(self) -> None:
        """Called when the client closes the connection before the response ends.

        Long-running handlers (long polling, streaming) override it to stop
        their work. The default, for handlers decorated with
        `stream_request_body`, fails the pending request body. It may not be
        called if the close is only noticed when writing.
        """
        if self._stream_request_body:
            body_future = self.request._body_future
            if not body_future.done():
                body_future.set_exception(iostream.StreamClosedError())
                # Nobody may be waiting for the body; mark it as seen.
                body_future.exception()

    def _connection_closed(self) -> None:
        # The server may report the same close twice (as the end of the
        # request being read and of the response being written).
        if not self._close_reported:
            self._close_reported = True
            self.on_connection_close()

    _close_reported = False

    def clear(self) -> None:
        """Reset the headers and the buffered output (before anything is sent)."""
        # _default_headers(), inlined: this runs for every request.
        now = int(_time())
        cache = _default_headers_cache
        if now != cache[0]:
            cache[0] = now
            cache[1] = email.utils.formatdate(now, usegmt=True)
        headers = self._headers = _new_headers(_HTTPHeaders)
        headers._as_list = {
            "Server": [_SERVER_HEADER],
            "Content-Type": [_DEFAULT_CONTENT_TYPE],
            "Date": [cache[1]],
        }
        headers._combined = {}
        self.set_default_headers()
        self._write_buffer: list[bytes] = []
        self._status_code = 200
        self._reason = "OK"

    def set_default_headers(self) -> None:
        """Hook to set headers on every response, error pages included.

        Called at the start of each request and again by `send_error`.
        """
        pass

    def set_status(self, status_code: int, reason: Optional[str] = None) -> None:
        """Set the response status code.

        ``reason`` is the phrase sent with it; by default the standard phrase
        (``"Unknown"`` for a code without one). A reason containing control
        characters or ``<`` is replaced by ``"Unknown"`` rather than sent.
        """
        if not isinstance(status_code, int):
            raise TypeError("status code must be an int, got %r" % (status_code,))
        if not 100 <= status_code <= 999:
            raise ValueError("status code must have three digits, got %r" % status_code)
        self._status_code = status_code
        if reason is None:
            self._reason = httputil.responses.get(status_code, "Unknown")
        elif isinstance(reason, str) and _VALID_REASON.match(reason):
            self._reason = reason
        else:
            self._reason = "Unknown"

    def get_status(self) -> int:
        """The response status code."""
        return self._status_code

    def set_header(self, name: str, value: _HeaderTypes) -> None:
        """Set a response header, replacing any previous value.

        ``value`` may be a str, bytes (read as Latin-1), an int, or a datetime
        (formatted as an HTTP date). A value with CR, LF or another control
        character raises ValueError, so that no header can be injected.
        """
        normalized = _normalized_names.get(name) if type(name) is str else None
        if normalized is None:
            normalized = httputil._normalize_header(_checked_header_name(name))
        if type(value) is not str or not (value.isascii() and value.isprintable()):
            value = _convert_header_value(value)
        headers = self._headers
        headers._as_list[normalized] = [value]
        if headers._combined:
            headers._combined.pop(normalized, None)

    def add_header(self, name: str, value: _HeaderTypes) -> None:
        """Add a header line without replacing the ones of the same name."""
        self._headers.add(_checked_header_name(name), _convert_header_value(value))

    def clear_header(self, name: str) -> None:
        """Remove a response header (all its values); no error if absent."""
        if name in self._headers:
            del self._headers[name]

    # -- arguments ---------------------------------------------------------

    def get_argument(
        self, name: str, default: Any = _ARG_DEFAULT, strip: bool = True
    ) -> Any:
        """The last value of argument ``name``, from the query or the form body.

        Without ``default``, a missing argument raises `MissingArgumentError`
        (a 400 response). Values are decoded by `decode_argument`; control
        characters become spaces and, with ``strip``, surrounding whitespace
        goes.
        """
        return self._get_argument(name, default, self.request.arguments, strip)

    def get_arguments(self, name: str, strip: bool = True) -> list[str]:
        """All values of argument ``name`` (query then body); maybe empty."""
        return self._get_arguments(name, self.request.arguments, strip)

    def get_body_argument(
        self, name: str, default: Any = _ARG_DEFAULT, strip: bool = True
    ) -> Any:
        """Like `get_argument`, from the request body only."""
        return self._get_argument(name, default, self.request.body_arguments, strip)

    def get_body_arguments(self, name: str, strip: bool = True) -> list[str]:
        """Like `get_arguments`, from the request body only."""
        return self._get_arguments(name, self.request.body_arguments, strip)

    def get_query_argument(
        self, name: str, default: Any = _ARG_DEFAULT, strip: bool = True
    ) -> Any:
        """Like `get_argument`, from the query string only."""
        return self._get_argument(name, default, self.request.query_arguments, strip)

    def get_query_arguments(self, name: str, strip: bool = True) -> list[str]:
        """Like `get_arguments`, from the query string only."""
        return self._get_arguments(name, self.request.query_arguments, strip)

    def _get_argument(
        self, name: str, default: Any, source: dict[str, list[bytes]], strip: bool
    ) -> Any:
        raw_values = source.get(name)
        if (
            raw_values is not None
            and len(raw_values) == 1
            and type(self).decode_argument is _decode_argument
        ):
            # The usual case (one value, default decoding), without the calls.
            raw = raw_values[0]
            if type(raw) is bytes:
                try:
                    value = raw.decode("utf-8")
                except UnicodeDecodeError:
                    pass  # decode_argument, below, answers 400
                else:
                    if not value.isprintable():
                        value = _CONTROL_CHARS.sub(" ", value)
                    return value.strip() if strip else value
        values = self._get_arguments(name, source, strip)
        if not values:
            if default is _ARG_DEFAULT:
                raise MissingArgumentError(name)
            return default
        return values[-1]

    def _get_arguments(
        self, name: str, source: dict[str, list[bytes]], strip: bool
    ) -> list[Any]:
        values = []
        for raw in source.get(name, ()):
            value = self.decode_argument(raw, name=name)
            if isinstance(value, str):
                if not value.isprintable():
                    # Only then can it hold one of the control characters.
                    value = _CONTROL_CHARS.sub(" ", value)
                if strip:
                    value = value.strip()
            values.append(value)
        return values

    def decode_argument(self, value: bytes, name: Optional[str] = None) -> Any:
        """Decode an argument or path group from bytes (UTF-8 by default).

        Invalid UTF-8 answers 400. Override to accept other encodings; the
        result may stay bytes. ``name`` is None for path groups.
        """
        if value is None or isinstance(value, str):
            return value
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPError(
                400, "Invalid unicode in %s: %r", name or "url", value[:40]
            ) from None

    # -- cookies -----------------------------------------------------------

    @property
    def cookies(self) -> dict[str, http.cookies.Morsel]:  # type: ignore[type-arg]
        """The request's cookies (``self.request.cookies``), name to Morsel."""
        return self.request.cookies

    def get_cookie(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The value of the request cookie ``name``, or ``default``.

        The value is as the client sent it; see `get_signed_cookie` for
        values that must not be forged.
        """
        cookies = self.request.cookies
        if cookies is not None and name in cookies:
            return cast(str, cookies[name].value)
        return default

    def set_cookie(
        self,
        name: str,
        value: Union[str, bytes],
        domain: Optional[str] = None,
        expires: Optional[Union[float, tuple, datetime.datetime]] = None,
        path: str = "/",
        expires_days: Optional[float] = None,
        *,
        max_age: Optional[int] = None,
        httponly: bool = False,
        secure: bool = False,
        samesite: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        """Add a ``Set-Cookie`` header; a later call for the same name replaces it.

        ``expires`` (a timestamp, time tuple or datetime) or ``expires_days``
        (from now) make a persistent cookie; ``max_age`` is in seconds. Other
        keyword arguments are passed on as cookie attributes (their lowercase
        spelling is deprecated). Control characters or ``;`` in the name or in
        an attribute raise `http.cookies.CookieError`; control characters or
        spaces in the value raise ValueError.
        """
        name = escape.native_str(name)
        value = escape.native_str(value)
        if _INVALID_COOKIE_NAME.search(name):
            raise http.cookies.CookieError(
                "Invalid cookie attribute name=%r for cookie %r" % (name, name)
            )
        if _INVALID_COOKIE_VALUE.search(value):
            raise ValueError("Invalid cookie %r: %r" % (name, value))
        for attr, attr_value in (("domain", domain), ("path", path), ("samesite", samesite)):
            _check_cookie_attr(name, attr, attr_value)
        for attr, attr_value in kwargs.items():
            _check_cookie_attr(name, attr, attr_value)
            if attr.lower() not in _MORSEL_ATTRS:
                raise http.cookies.CookieError("Invalid attribute %r" % attr)
        if self._new_cookie is None:
            self._new_cookie = {}
        morsel: http.cookies.Morsel = http.cookies.Morsel()  # type: ignore[type-arg]
        morsel.set(name, value, http.cookies.SimpleCookie().value_encode(value)[1])
        self._new_cookie[name] = morsel
        if domain:
            morsel["domain"] = domain
        if expires_days is not None and not expires:
            expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
                days=expires_days
            )
        if expires:
            morsel["expires"] = httputil.format_timestamp(expires)
        if path:
            morsel["path"] = path
        if max_age:
            # int() refuses strings like "1; Path=/x" that would smuggle
            # attributes into the header.
            morsel["max-age"] = str(int(max_age))
        if httponly:
            morsel["httponly"] = True
        if secure:
            morsel["secure"] = True
        if samesite:
            morsel["samesite"] = samesite
        if kwargs:
            import warnings

            warnings.warn(
                "Deprecated arguments to set_cookie: %s (should be lowercase)"
                % set(kwargs),
                DeprecationWarning,
                stacklevel=2,
            )
            for attr, attr_value in kwargs.items():
                key = attr.lower()
                if key == "max_age":
                    key = "max-age"
                morsel[key] = attr_value

    def clear_cookie(self, name: str, **kwargs: Any) -> None:
        """Tell the client to delete cookie ``name`` (an expired, empty cookie).

        Pass the same ``path`` and ``domain`` the cookie was set with.
        """
        for excluded in ("expires", "max_age"):
            if excluded in kwargs:
                raise TypeError(f"clear_cookie() got an unexpected keyword argument '{excluded}'")
        expires = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=365)
        self.set_cookie(name, value="", expires=expires, **kwargs)

    def clear_all_cookies(self, **kwargs: Any) -> None:
        """Delete every cookie the request carried (see `clear_cookie`)."""
        for name in self.request.cookies:
            self.clear_cookie(name, **kwargs)

    def set_signed_cookie(
        self,
        name: str,
        value: Union[str, bytes],
        expires_days: Optional[float] = 30,
        version: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        """Set a cookie signed with the ``cookie_secret`` setting.

        The value is readable by the client but cannot be forged; read it
        back with `get_signed_cookie`. Other arguments as for `set_cookie`.
        """
        self.set_cookie(
            name,
            self.create_signed_value(name, value, version=version),
            expires_days=expires_days,
            **kwargs,
        )

    set_secure_cookie = set_signed_cookie

    def create_signed_value(
        self, name: str, value: Union[str, bytes], version: Optional[int] = None
    ) -> bytes:
        """Sign ``value`` under ``name`` with the application's ``cookie_secret``.

        With a dict of secrets, the ``key_version`` setting picks the key.
        """
        self.require_setting("cookie_secret", "secure cookies")
        secret = self.application.settings["cookie_secret"]
        key_version = None
        if isinstance(secret, dict):
            key_version = self.application.settings.get("key_version")
            if key_version is None:
                raise ValueError("key_version setting must be used for secret_key dicts")
        return create_signed_value(secret, name, value, version=version, key_version=key_version)

    def get_signed_cookie(
        self,
        name: str,
        value: Optional[str] = None,
        max_age_days: float = 31,
        min_version: Optional[int] = None,
    ) -> Optional[bytes]:
        """The verified value of a cookie set by `set_signed_cookie`, or None.

        None when the cookie is missing, forged, older than ``max_age_days``
        or in a format older than ``min_version``. The result is bytes.
        """
        self.require_setting("cookie_secret", "secure cookies")
        if value is None:
            value = self.get_cookie(name)
        return decode_signed_value(
            self.application.settings["cookie_secret"],
            name,
            value,
            max_age_days=max_age_days,
            min_version=min_version,
        )

    get_secure_cookie = get_signed_cookie

    def get_signed_cookie_key_version(
        self, name: str, value: Optional[str] = None
    ) -> Optional[int]:
        """The key version a signed cookie was signed with, or None."""
        self.require_setting("cookie_secret", "secure cookies")
        if value is None:
            value = self.get_cookie(name)
        if value is None:
            return None
        return get_signature_key_version(value)

    get_secure_cookie_key_version = get_signed_cookie_key_version

    # -- output --------------------------------------------------------------

    def redirect(
        self, url: str, permanent: bool = False, status: Optional[int] = None
    ) -> None:
        """Redirect the client to ``url`` and finish the response.

        The status is 302, 301 with ``permanent``, or ``status`` (3xx).
        """
        if self._headers_written:
            raise RuntimeError("Cannot redirect after headers have been written")
        if status is None:
            status = 301 if permanent else 302
        elif not (isinstance(status, int) and 300 <= status <= 399):
            raise ValueError("redirect status must be a 3xx int, got %r" % (status,))
        self.set_status(status)
        self.set_header("Location", utf8(url))
        self.finish()

    def write(self, chunk: Union[str, bytes, dict[str, Any]]) -> None:
        """Add ``chunk`` to the output buffer.

        A dict is sent as JSON with a JSON Content-Type. Lists are refused
        (top-level JSON arrays were a cross-site script vector); wrap them in
        a dict. Nothing is sent until `flush` or `finish`.
        """
        if self._finished:
            raise RuntimeError("Cannot write() after finish()")
        if type(chunk) is bytes:
            self._write_buffer.append(chunk)
            return
        if isinstance(chunk, str):
            self._write_buffer.append(chunk.encode("utf-8"))
            return
        if isinstance(chunk, dict):
            if type(self).set_header is _set_header:
                # A constant, valid value: stored without the setter.
                self._headers._as_list["Content-Type"] = [_JSON_CONTENT_TYPE]
            else:
                self.set_header("Content-Type", _JSON_CONTENT_TYPE)
            self._write_buffer.append(escape.json_encode(chunk).encode("utf-8"))
            return
        if isinstance(chunk, (bytes, bytearray, memoryview)):
            self._write_buffer.append(bytes(chunk))
            return
        message = "write() only accepts bytes, unicode, and dict objects"
        if isinstance(chunk, list):
            message += (
                ". Lists not accepted for security reasons; see "
                "http://www.tornadoweb.org/en/stable/web.html#tornado.web.RequestHandler.write"
            )
        raise TypeError(message)

    def render(self, template_name: str, **kwargs: Any) -> "asyncio.Future[None]":
        """Render a template and finish the response with it.

        CSS and JavaScript declared by the UI modules used on the page are
        inserted before ``</head>`` and ``</body>``. Returns `finish`'s future.
        """
        if self._finished:
            raise RuntimeError("Cannot render() after finish()")
        html = self.render_string(template_name, **kwargs)
        modules = self.__dict__.get("_active_modules")
        if not modules:
            # No UI module on the page: nothing to insert.
            return self.finish(html)
        js_embed: list[bytes] = []
        js_files: list[str] = []
        css_embed: list[bytes] = []
        css_files: list[str] = []
        html_heads: list[bytes] = []
        html_bodies: list[bytes] = []
        for module in modules.values():
            part = module.embedded_javascript()
            if part:
                js_embed.append(utf8(part))
            _extend_paths(js_files, module.javascript_files())
            part = module.embedded_css()
            if part:
                css_embed.append(utf8(part))
            _extend_paths(css_files, module.css_files())
            part = module.html_head()
            if part:
                html_heads.append(utf8(part))
            part = module.html_body()
            if part:
                html_bodies.append(utf8(part))
        if js_files:
            html = _insert_before(html, b"</body>", utf8(self.render_linked_js(js_files)), last=True)
        if js_embed:
            html = _insert_before(html, b"</body>", self.render_embed_js(js_embed), last=True)
        if css_files:
            html = _insert_before(html, b"</head>", utf8(self.render_linked_css(css_files)))
        if css_embed:
            html = _insert_before(html, b"</head>", self.render_embed_css(css_embed))
        if html_heads:
            html = _insert_before(html, b"</head>", b"".join(html_heads))
        if html_bodies:
            html = _insert_before(html, b"</body>", b"".join(html_bodies))
        return self.finish(html)

    def _unique_urls(self, paths: Iterable[str]) -> list[str]:
        seen: set[str] = set()
        urls = []
        for path in paths:
            if not is_absolute(path):
                path = self.static_url(path)
            if path not in seen:
                seen.add(path)
                urls.append(path)
        return urls

    def render_linked_js(self, js_files: Iterable[str]) -> str:
        """HTML for the given script URLs (relative ones go through `static_url`)."""
        return "".join(
            '<script src="%s" type="text/javascript"></script>' % escape.xhtml_escape(p)
            for p in self._unique_urls(js_files)
        )

    def render_embed_js(self, js_embed: Iterable[bytes]) -> bytes:
        """HTML wrapping the given inline JavaScript snippets."""
        return (
            b'<script type="text/javascript">\n//<![CDATA[\n'
            + b"\n".join(js_embed)
            + b"\n//]]>\n</script>"
        )

    def render_linked_css(self, css_files: Iterable[str]) -> str:
        """HTML for the given stylesheet URLs (relative ones go through `static_url`)."""
        return "".join(
            '<link href="%s" type="text/css" rel="stylesheet"/>' % escape.xhtml_escape(p)
            for p in self._unique_urls(css_files)
        )

    def render_embed_css(self, css_embed: Iterable[bytes]) -> bytes:
        """HTML wrapping the given inline CSS snippets."""
        return b'<style type="text/css">\n' + b"\n".join(css_embed) + b"\n</style>"

    def render_string(self, template_name: str, **kwargs: Any) -> bytes:
        """Render a template to bytes without sending it.

        Templates are looked up in `get_template_path` (by default the
        ``template_path`` setting, else the directory of the calling file).
        """
        template_path = self.get_template_path()
        if not template_path:
            frame = sys._getframe(0)
            this_file = frame.f_code.co_filename
            while frame.f_code.co_filename == this_file and frame.f_back is not None:
                frame = frame.f_back
            template_path = os.path.dirname(frame.f_code.co_filename)
        # A dict read is atomic: only creating a loader needs the lock.
        loader = RequestHandler._template_loaders.get(template_path)
        if loader is None:
            with RequestHandler._template_loader_lock:
                loader = RequestHandler._template_loaders.get(template_path)
                if loader is None:
                    loader = self.create_template_loader(template_path)
                    RequestHandler._template_loaders[template_path] = loader
        compiled = loader.load(template_name)
        namespace = self.get_template_namespace()
        namespace.update(kwargs)
        if type(compiled) is template.Template:
            return compiled._generate_from(namespace)
        return compiled.generate(**namespace)

    def get_template_namespace(self) -> dict[str, Any]:
        """The names templates see by default (add yours by overriding)."""
        user_locale = self.locale
        namespace = {
            "handler": self,
            "request": self.request,
            "current_user": self.current_user,
            "locale": user_locale,
            "_": user_locale.translate,
            "pgettext": user_locale.pgettext,
            "static_url": self.static_url,
            "xsrf_form_html": self.xsrf_form_html,
            "reverse_url": self.reverse_url,
        }
        namespace.update(self.ui)
        return namespace

    def create_template_loader(self, template_path: str) -> template.BaseLoader:
        """The template loader for ``template_path``.

        Uses the ``template_loader`` setting if given, else a `.template.Loader`
        honouring the ``autoescape`` and ``template_whitespace`` settings.
        """
        settings = self.application.settings
        if "template_loader" in settings:
            return settings["template_loader"]
        kwargs = {}
        if "autoescape" in settings:
            kwargs["autoescape"] = settings["autoescape"]
        if "template_whitespace" in settings:
            kwargs["whitespace"] = settings["template_whitespace"]
        return template.Loader(template_path, **kwargs)

    def flush(self, include_footers: bool = False) -> "asyncio.Future[None]":
        """Send the buffered output now (the headers too, the first time).

        The returned future resolves when the data has been handed to the
        network and the connection's write buffer is below its high-water
        mark: ``await self.flush()`` is how a streaming handler keeps memory
        bounded when the client reads slowly.
        """
        connection = self.request.connection
        assert connection is not None
        buffer = self._write_buffer
        if len(buffer) == 1:
            chunk = buffer[0]
        else:
            chunk = b"".join(buffer)
        self._write_buffer = []
        if not self._headers_written:
            self._headers_written = True
            for transform in self._transforms:
                self._status_code, self._headers, chunk = transform.transform_first_chunk(
                    self._status_code, self._headers, chunk, include_footers
                )
            if self.request.method == "HEAD":
                chunk = b""
            if self._new_cookie:
                for morsel in self._new_cookie.values():
                    self._headers.add("Set-Cookie", morsel.OutputString(None))
            key = (self._status_code, self._reason)
            start_line = _start_lines.get(key)
            if start_line is None:
                start_line = httputil.ResponseStartLine("", self._status_code, self._reason)
                if len(_start_lines) < _START_LINE_CACHE_SIZE:
                    _start_lines[key] = start_line
            return connection.write_headers(start_line, self._headers, chunk)
        for transform in self._transforms:
            chunk = transform.transform_chunk(chunk, include_footers)
        if self.request.method != "HEAD":
            return connection.write(chunk)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def finish(self, chunk: Optional[Union[str, bytes, dict[str, Any]]] = None) -> "asyncio.Future[None]":
        """Finish the response, optionally writing ``chunk`` first.

        For a 200 answer to GET or HEAD without an ``Etag``, one is computed
        (`compute_etag`) and a matching ``If-None-Match`` turns the response
        into a bodiless 304. ``Content-Length`` is set unless output was
        already flushed. Returns a future that resolves when the response has
        been handed to the network (awaiting it is optional).
        """
        if self._finished:
            raise RuntimeError("finish() called twice")
        if chunk is not None:
            self.write(chunk)
        if not self._headers_written:
            status = self._status_code
            # Names in _as_list are normalized: membership needs no call.
            as_list = self._headers._as_list
            if status == 200 and "Etag" not in as_list and self.request.method in _ETAG_METHODS:
                cls = type(self)
                if cls.set_etag_header is _set_etag_header and cls.compute_etag is _compute_etag:
                    # The default pair, without the calls.
                    buffer = self._write_buffer
                    if len(buffer) == 1:
                        as_list["Etag"] = ['"%s"' % _sha1(buffer[0]).hexdigest()]
                    else:
                        as_list["Etag"] = [self.compute_etag()]  # type: ignore[list-item]
                else:
                    self.set_etag_header()
                if (
                    "If-None-Match" in self.request.headers._as_list
                    or cls.check_etag_header is not _check_etag_header
                ) and self.check_etag_header():
                    self._write_buffer = []
                    self.set_status(304)
                    status = 304
            if status in _BODILESS_STATUSES or 100 <= status < 200:
                if self._write_buffer and any(self._write_buffer):
                    raise RuntimeError("Cannot send body with status code %d" % status)
                self._clear_representation_headers()
            elif "Content-Length" not in as_list:
                buffer = self._write_buffer
                length = len(buffer[0]) if len(buffer) == 1 else sum(map(len, buffer))
                as_list["Content-Length"] = [str(length)]
        connection = self.request.connection
        assert connection is not None
        # Drop the connection's reference to this handler, so that a
        # keep-alive connection does not keep it alive.
        connection.set_close_callback(None)
        future = self.flush(include_footers=True)
        connection.finish()
        self._log()
        self._finished = True
        self.on_finish()
        # The UI namespace holds closures over the handler.
        if "ui" in self.__dict__:
            self.ui = None  # type: ignore[assignment]
        return future

    def detach(self) -> iostream.IOStream:
        """Take over the connection: no response will be sent by this handler.

        Returns the underlying `.IOStream` (what WebSocket upgrades use).
        """
        self._finished = True
        connection = self.request.connection
        assert connection is not None
        return connection.detach()  # type: ignore[attr-defined, no-any-return]

    def _clear_representation_headers(self) -> None:
        # A bodiless response must not describe a body (RFC 9110 section 15.4.5).
        for name in ("Content-Encoding", "Content-Language", "Content-Type"):
            self.clear_header(name)

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        """Send an error response with ``status_code`` (via `write_error`).

        Discards any buffered output. If headers were already sent, an error
        page cannot be sent: the response is ended as it stands. ``kwargs``
        (for instance ``exc_info``, ``reason``) are passed to `write_error`.
        """
        if self._headers_written:
            gen_log.error("Cannot send error response after headers written")
            if not self._finished:
                # The body is probably shorter than announced, so finishing
                # will likely fail; try anyway to release the connection.
                try:
                    self.finish()
                except Exception:
                    gen_log.error("Failed to flush partial response", exc_info=True)
            return
        self.clear()
        reason = kwargs.get("reason")
        if "exc_info" in kwargs:
            exception = kwargs["exc_info"][1]
            if isinstance(exception, HTTPError) and exception.reason:
                reason = exception.reason
        self.set_status(status_code, reason=reason)
        if not (status_code in _BODILESS_STATUSES or 100 <= status_code < 200):
            try:
                self.write_error(status_code, **kwargs)
            except Exception:
                app_log.error("Uncaught exception in write_error", exc_info=True)
        if not self._finished:
            self.finish()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Write the body of an error page. Override for custom error pages.

        ``kwargs["exc_info"]`` is present when an exception caused the error.
        With the ``serve_traceback`` setting the traceback is sent as text;
        otherwise a minimal HTML page naming the status.
        """
        if self.settings.get("serve_traceback") and "exc_info" in kwargs:
            self.set_header("Content-Type", "text/plain")
            for line in traceback.format_exception(*kwargs["exc_info"]):
                self.write(line)
            self.finish()
        else:
            message = escape.xhtml_escape(self._reason)
            self.finish(
                "<html><title>%d: %s</title><body>%d: %s</body></html>"
                % (status_code, message, status_code, message)
            )

    # -- users, locales ------------------------------------------------------

    @property
    def locale(self) -> locale.Locale:
        """The locale for this request: `get_user_locale`, else the browser's.

        May be assigned to.
        """
        loc = self.__dict__.get("_locale")
        if loc is None:
            loc = self.get_user_locale()
            if loc is None:
                loc = self.get_browser_locale()
            self._locale = loc
        return loc

    @locale.setter
    def locale(self, value: locale.Locale) -> None:
        self._locale = value

    def get_user_locale(self) -> Optional[locale.Locale]:
        """Override to choose the locale from the user (None: use the browser's)."""
        return None

    def get_browser_locale(self, default: str = "en_US") -> locale.Locale:
        """The best locale from the ``Accept-Language`` header, else ``default``.

        Languages are ranked by their ``q`` weight; a weight of zero or an
        invalid one excludes the language.
        """
        header = self.request.headers.get("Accept-Language")
        if header:
            ranked = []
            for item in header.split(","):
                parts = item.strip().split(";")
                score = 1.0
                if len(parts) > 1 and parts[1].strip().startswith("q="):
                    try:
                        score = float(parts[1].strip()[2:])
                    except ValueError:
                        score = 0.0
                    if not 0.0 <= score <= 1.0:
                        score = 0.0
                if score > 0:
                    ranked.append((parts[0], score))
            if ranked:
                ranked.sort(key=lambda pair: pair[1], reverse=True)
                return locale.get(*(code for code, _ in ranked))
        return locale.get(default)

    @property
    def current_user(self) -> Any:
        """The authenticated user (`get_current_user`, computed once), or None.

        May be assigned to, for instance from `prepare` when finding the user
        needs to await something.
        """
        if "_current_user" not in self.__dict__:
            self._current_user = self.get_current_user()
        return self._current_user

    @current_user.setter
    def current_user(self, value: Any) -> None:
        self._current_user = value

    def get_current_user(self) -> Any:
        """Override to find the user of this request (e.g. from a signed cookie)."""
        return None

    def get_login_url(self) -> str:
        """The URL `authenticated` redirects to (the ``login_url`` setting)."""
        self.require_setting("login_url", "@squall.web.authenticated")
        return cast(str, self.application.settings["login_url"])

    def get_template_path(self) -> Optional[str]:
        """Where templates are found (the ``template_path`` setting)."""
        return self.application.settings.get("template_path")

    # -- XSRF and cross-origin protection -----------------------------------

    @property
    def xsrf_token(self) -> bytes:
        """The XSRF token for this user, setting the ``_xsrf`` cookie if needed.

        Each call on a new request returns a differently masked token (so it
        cannot be recovered through compression side channels); all of them
        validate against the same cookie. See `check_xsrf_cookie`.
        """
        token = self.__dict__.get("_xsrf_token")
        if token is not None:
            return cast(bytes, token)
        version, raw, timestamp = self._get_raw_xsrf_token()
        settings = self.application.settings
        output_version = settings.get("xsrf_cookie_version", 2)
        cookie_kwargs = dict(settings.get("xsrf_cookie_kwargs", {}))
        if output_version == 1:
            token = binascii.b2a_hex(raw)
        elif output_version == 2:
            mask = os.urandom(4)
            token = b"|".join(
                [
                    b"2",
                    binascii.b2a_hex(mask),
                    binascii.b2a_hex(_websocket_mask(mask, raw)),
                    utf8(str(int(timestamp))),
                ]
            )
        else:
            raise ValueError("unknown xsrf cookie version %r" % (output_version,))
        self._xsrf_token = token
        if version is None:
            if self.current_user and "expires_days" not in cookie_kwargs:
                cookie_kwargs["expires_days"] = 30
            cookie_name = settings.get("xsrf_cookie_name", "_xsrf")
            self.set_cookie(cookie_name, token, **cookie_kwargs)
        return token

    def _get_raw_xsrf_token(self) -> tuple[Optional[int], bytes, float]:
        """(version, token bytes, timestamp) of the XSRF cookie; a fresh random
        token (version None) when the request has no valid one."""
        raw = self.__dict__.get("_raw_xsrf_token")
        if raw is None:
            cookie = self.get_cookie(self.application.settings.get("xsrf_cookie_name", "_xsrf"))
            version: Optional[int] = None
            token: Optional[bytes] = None
            timestamp: Optional[float] = None
            if cookie:
                version, token, timestamp = self._decode_xsrf_token(cookie)
            if token is None:
                version = None
                token = os.urandom(16)
                timestamp = time.time()
            assert timestamp is not None
            raw = self._raw_xsrf_token = (version, token, timestamp)
        return cast("tuple[Optional[int], bytes, float]", raw)

    def _decode_xsrf_token(
        self, cookie: str
    ) -> tuple[Optional[int], Optional[bytes], Optional[float]]:
        """Read an XSRF token in any version; (None, None, None) if malformed."""
        data = utf8(cookie)
        found = _VERSIONED_TOKEN.match(data)
        if found is None:
            # Version 1: the hex token itself (or any opaque string).
            try:
                token = binascii.a2b_hex(data)
            except (binascii.Error, TypeError):
                token = data
            return 1, token, float(int(time.time()))
        if found.group(1) != b"2":
            gen_log.debug("Unknown xsrf token version %r", found.group(1))
            return None, None, None
        parts = data.split(b"|")
        if len(parts) != 4 or not parts[3].isdigit():
            return None, None, None
        try:
            mask = binascii.a2b_hex(parts[1])
            masked = binascii.a2b_hex(parts[2])
        except (binascii.Error, TypeError):
            return None, None, None
        if len(mask) != 4:
            return None, None, None
        return 2, _websocket_mask(mask, masked), float(int(parts[3]))

    def check_xsrf_cookie(self) -> None:
        """Check that the request's ``_xsrf`` argument matches the XSRF cookie.

        The token may come as the ``_xsrf`` argument (query or form) or in an
        ``X-Xsrftoken`` or ``X-Csrftoken`` header. Called for every request
        with a non-safe method when the ``xsrf_cookies`` setting is on; raises
        `HTTPError` 403 on a mismatch.
        """
        token = (
            self.get_argument("_xsrf", None)
            or self.request.headers.get("X-Xsrftoken")
            or self.request.headers.get("X-Csrftoken")
        )
        if not token:
            raise HTTPError(403, "'_xsrf' argument missing from POST")
        _, decoded, _ = self._decode_xsrf_token(token)
        _, expected, _ = self._get_raw_xsrf_token()
        if not decoded:
            raise HTTPError(403, "'_xsrf' argument has invalid format")
        if not hmac.compare_digest(utf8(decoded), utf8(expected)):
            raise HTTPError(403, "XSRF cookie does not match POST argument")

    def xsrf_form_html(self) -> str:
        """A hidden ``<input>`` carrying the XSRF token, to put in every form."""
        return (
            '<input type="hidden" name="_xsrf" value="'
            + escape.xhtml_escape(self.xsrf_token)
            + '"/>'
        )

    def check_trusted_origin(self, origin: str) -> bool:
        """Whether a cross-origin request from ``origin`` is allowed.

        Consulted by the ``cross_origin_protection`` setting for requests that
        come from another origin. The default accepts exactly the origins in
        the ``trusted_origins`` setting.
        """
        return origin in self.application.settings.get("trusted_origins", ())

    def _check_cross_origin(self) -> None:
        """Refuse (403) a state-changing request that a browser sent from
        another origin, using ``Sec-Fetch-Site`` and else ``Origin``."""
        headers = self.request.headers
        origin = headers.get("Origin")
        site = headers.get("Sec-Fetch-Site")
        if site is not None:
            if site in ("same-origin", "none"):
                return
            if origin is not None and self.check_trusted_origin(origin):
                return
            if origin is None and self.check_trusted_origin("null"):
                return
            raise HTTPError(
                403,
                "Cross-origin request refused: Sec-Fetch-Site %s (Origin %r) not allowed",
                site,
                origin,
            )
        if origin is None:
            return
        if _same_origin(origin, self.request.protocol, self.request.host):
            return
        if self.check_trusted_origin(origin):
            return
        raise HTTPError(403, "Cross-origin request refused: Origin %r not allowed", origin)

    # -- URLs -----------------------------------------------------------------

    def static_url(self, path: str, include_host: Optional[bool] = None, **kwargs: Any) -> str:
        """The URL of static file ``path`` (relative to ``static_path``),
        with a content hash (``?v=...``) so it can be cached forever.

        ``include_host`` (default: the handler's ``include_host`` attribute,
        else False) makes the URL absolute.
        """
        self.require_setting("static_path", "static_url")
        make_url = self.application.settings.get(
            "static_handler_class", StaticFileHandler
        ).make_static_url
        if include_host is None:
            include_host = getattr(self, "include_host", False)
        base = self.request.protocol + "://" + self.request.host if include_host else ""
        return base + make_url(self.application.settings, path, **kwargs)

    def require_setting(self, name: str, feature: str = "this feature") -> None:
        """Raise if application setting ``name`` is not set."""
        if not self.application.settings.get(name):
            raise RuntimeError(
                "You must define the '%s' setting in your application to use %s"
                % (name, feature)
            )

    def reverse_url(self, name: str, *args: Any) -> str:
        """`Application.reverse_url`."""
        return self.application.reverse_url(name, *args)

    # -- ETags ----------------------------------------------------------------

    def compute_etag(self) -> Optional[str]:
        """The ETag of the buffered response (a SHA-1 of the body by default).

        Return None to send no ETag (and skip the hashing).
        """
        buffer = self._write_buffer
        if len(buffer) == 1:
            # The common one-chunk body: one hash call.
            return '"%s"' % hashlib.sha1(buffer[0]).hexdigest()
        hasher = hashlib.sha1()
        for part in buffer:
            hasher.update(part)
        return '"%s"' % hasher.hexdigest()

    def set_etag_header(self) -> None:
        """Set the ``Etag`` header from `compute_etag` (if it gives one)."""
        etag = self.compute_etag()
        if etag is not None:
            if type(self).compute_etag is not RequestHandler.compute_etag:
                # Only an overriding compute_etag can produce a bad value.
                etag = _convert_header_value(etag)
            self._headers["Etag"] = etag

    def check_etag_header(self) -> bool:
        """Whether the response's ``Etag`` matches the request's ``If-None-Match``.

        Weak comparison (RFC 9110 section 8.8.3.2); ``*`` matches any ETag.
        """
        if_none_match = self.request.headers.get("If-None-Match")
        if not if_none_match:
            return False
        computed = utf8(self._headers.get("Etag", ""))
        if not computed:
            return False
        etags = re.findall(rb'\*|(?:W/)?"[^"]*"', utf8(if_none_match))
        if not etags:
            return False
        if etags[0] == b"*":
            return True
        computed = _strip_weak(computed)
        return any(_strip_weak(etag) == computed for etag in etags)

    # -- execution ------------------------------------------------------------

    async def _execute(
        self, transforms: list["OutputTransform"], *args: bytes, **kwargs: bytes
    ) -> None:
        """Process the request (prepare, then the method handler, then finish)."""
        task = self._start(transforms, args, kwargs)
        if task is not None:
            await task

    def _start(
        self,
        transforms: list["OutputTransform"],
        args: Sequence[Any],
        kwargs: dict[str, Any],
    ) -> Optional["asyncio.Task[None]"]:
        """Run the request as far as it goes without waiting.

        Returns None when it is done, or the task that carries on from the
        first awaitable a hook returned: a handler that never awaits costs no
        task at all.
        """
        self._transforms = transforms
        try:
            request = self.request
            method = request.method
            if method not in self.SUPPORTED_METHODS:
                raise HTTPError(405)
            if args:
                path_args = None
                if type(self).decode_argument is _decode_argument:
                    try:
                        # map() runs in C: no comprehension frame.
                        path_args = list(map(_decode_utf8, args))
                    except (TypeError, UnicodeDecodeError):
                        pass  # None or str groups, or bad UTF-8: below
                if path_args is None:
                    decode = self.decode_argument
                    path_args = [decode(arg) for arg in args]
                self.path_args = path_args
            else:
                self.path_args = []
            if kwargs:
                decode = self.decode_argument
                self.path_kwargs = {k: decode(v, name=k) for k, v in kwargs.items()}
            else:
                self.path_kwargs = {}
            if method not in _SAFE_METHODS:
                settings = self.application.settings
                if settings.get("cross_origin_protection"):
                    self._check_cross_origin()
                if settings.get("xsrf_cookies"):
                    self.check_xsrf_cookie()
            result = self.prepare()
            if result is not None:
                return _spawn(self._continue(result, after_prepare=True))
            return self._run_method()
        except BaseException as e:
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            self._on_execute_error(e)
        return None

    def _run_method(self) -> Optional["asyncio.Task[None]"]:
        """What follows prepare(): the method handler and the automatic finish."""
        if self._prepared_future is not None:
            _resolve(self._prepared_future)
        if self._finished:
            return None
        if self._stream_request_body:
            body_future = self.request._body_future
            if not body_future.done() or body_future.exception() is not None:
                return _spawn(self._continue(body_future, after_prepare=False, body=True))
        verb = self.request.method
        method = getattr(self, _METHOD_ATTRS.get(verb) or verb.lower())  # type: ignore[union-attr, arg-type]
        if self.path_kwargs:
            result = method(*self.path_args, **self.path_kwargs)
        else:
            result = method(*self.path_args)
        if result is not None:
            return _spawn(self._continue(result, after_prepare=False))
        if self._auto_finish and not self._finished:
            self.finish()
        return None

    async def _continue(
        self, pending: Awaitable[Any], after_prepare: bool, body: bool = False
    ) -> None:
        """The rest of the request once something had to be awaited."""
        try:
            if body:
                try:
                    await pending
                except iostream.StreamClosedError:
                    return
                pending = None  # type: ignore[assignment]
            else:
                await pending
            if after_prepare or body:
                if after_prepare:
                    if self._prepared_future is not None:
                        _resolve(self._prepared_future)
                    if self._finished:
                        return
                    if self._stream_request_body:
                        try:
                            await self.request._body_future
                        except iostream.StreamClosedError:
                            return
                method = getattr(self, self.request.method.lower())  # type: ignore[union-attr]
                result = method(*self.path_args, **self.path_kwargs)
                if result is not None:
                    await result
            if self._auto_finish and not self._finished:
                self.finish()
        except asyncio.CancelledError as e:
            task = asyncio.current_task()
            cancelling = getattr(task, "cancelling", None)
            # Python 3.10 has no Task.cancelling(): there, any cancellation
            # reaching the handler is taken as its own task's.
            own = cancelling() if cancelling is not None else True
            if self._close_reported:
                # Work cancelled because its client went away (as
                # squall.offload's mixin does): nobody to answer, no error.
                if self._prepared_future is not None:
                    _resolve(self._prepared_future)
                if own:
                    raise
                return
            if own:
                # This request's own task was cancelled (server shutting down,
                # a timeout): answer if still possible, log nothing.
                if not self._finished and not self._headers_written:
                    self.send_error(500)
                if self._prepared_future is not None:
                    _resolve(self._prepared_future)
                raise
            self._on_execute_error(e)
        except Exception as e:
            self._on_execute_error(e)

    def _on_execute_error(self, e: BaseException) -> None:
        try:
            self._handle_request_exception(e)
        except Exception:
            app_log.error("Exception in exception handler", exc_info=True)
        if self._prepared_future is not None:
            # Unblock the server, which waits for prepare() before reading a
            # streamed body.
            _resolve(self._prepared_future)

    def data_received(self, chunk: bytes) -> Optional[Awaitable[None]]:
        """Receive a piece of the request body (handlers with `stream_request_body`).

        May return an awaitable: the next piece is not read until it resolves.
        """
        raise NotImplementedError()

    def _log(self) -> None:
        self.application.log_request(self)

    def _request_summary(self) -> str:
        return "%s %s (%s)" % (self.request.method, self.request.uri, self.request.remote_ip)

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, Finish):
            if not self._finished:
                self.finish(*e.args)
            return
        exc_info = (type(e), e, e.__traceback__)
        try:
            self.log_exception(*exc_info)
        except Exception:
            # The application's logging hook failed; say so, never silently.
            app_log.error("Error in exception logger", exc_info=True)
        if self._finished:
            # Too late for an error page; the exception has been logged.
            return
        if isinstance(e, HTTPError):
            self.send_error(e.status_code, exc_info=exc_info)
        else:
            self.send_error(500, exc_info=exc_info)

    def log_exception(
        self,
        typ: Optional[type[BaseException]],
        value: Optional[BaseException],
        tb: Optional[types.TracebackType],
    ) -> None:
        """Log an exception raised while handling the request.

        `HTTPError` is logged as a warning without traceback (and only when it
        has a log message); anything else as an error with its traceback.
        """
        if isinstance(value, HTTPError):
            log_message = value.get_message()
            if log_message:
                gen_log.warning(
                    "%d %s: %s", value.status_code, self._request_summary(), log_message
                )
        else:
            app_log.error(
                "Uncaught exception %s\n%r",
                self._request_summary(),
                self.request,
                exc_info=(typ, value, tb),  # type: ignore[arg-type]
            )

    def _ui_module(self, name: str, module: type["UIModule"]) -> Callable[..., str]:
        def render(*args: Any, **kwargs: Any) -> str:
            active = self.__dict__.get("_active_modules")
            if active is None:
                active = self._active_modules = {}
            instance = active.get(name)
            if instance is None:
                instance = active[name] = module(self)
            return cast(str, instance.render(*args, **kwargs))

        return render

    def _ui_method(self, method: Callable[..., Any]) -> Callable[..., Any]:
        return lambda *args, **kwargs: method(self, *args, **kwargs)


# Handler class -> whether an __init__ follows RequestHandler's in its MRO.
_cooperative_init: dict[type, bool] = {}


def _has_init_after_handler(cls: type) -> bool:
    mro = cls.__mro__
    after = mro[mro.index(RequestHandler) + 1 :]
    found = any("__init__" in vars(base) for base in after if base is not object)
    if len(_cooperative_init) >= 4096:
        # Classes made on the fly must not grow this without bound.
        _cooperative_init.clear()
    _cooperative_init[cls] = found
    return found


# RequestHandler's own methods, to tell when a handler class overrides one
# (the hot path then does the default's work without the call).
_set_etag_header = RequestHandler.set_etag_header
_compute_etag = RequestHandler.compute_etag
_check_etag_header = RequestHandler.check_etag_header
_set_header = RequestHandler.set_header
_decode_argument = RequestHandler.decode_argument

_JSON_CONTENT_TYPE = "application/json; charset=UTF-8"


def _strip_weak(etag: bytes) -> bytes:
    return etag[2:] if etag.startswith(b"W/") else etag


def _extend_paths(out: list[str], paths: Any) -> None:
    if not paths:
        return
    if isinstance(paths, (str, bytes)):
        out.append(_unicode(paths))
    else:
        out.extend(paths)


def _insert_before(html: bytes, marker: bytes, fragment: bytes, last: bool = False) -> bytes:
    index = html.rindex(marker) if last else html.index(marker)
    return html[:index] + fragment + b"\n" + html[index:]


def _checked_header_name(name: str) -> str:
    if not isinstance(name, str) or not _VALID_HEADER_NAME.match(name):
        raise ValueError("Invalid header name %r" % (name,))
    return name


def _convert_header_value(value: _HeaderTypes) -> str:
    if type(value) is str and value.isascii() and value.isprintable():
        # Printable ASCII is always a valid value: skip the regex.
        return value
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is datetime.datetime:
        return httputil.format_timestamp(value)  # type: ignore[arg-type]
    if isinstance(value, str):
        converted = value
    elif isinstance(value, bytes):
        converted = value.decode("latin1")
    elif isinstance(value, numbers.Integral):
        return str(value)
    elif isinstance(value, datetime.datetime):
        return httputil.format_timestamp(value)
    else:
        raise TypeError("Unsupported header value %r" % (value,))
    if not _VALID_HEADER_VALUE.match(converted):
        raise ValueError("Unsafe header value %r" % converted)
    return converted


def _check_cookie_attr(cookie: str, attr: str, value: Any) -> None:
    if isinstance(value, str) and _INVALID_COOKIE_ATTR.search(value):
        raise http.cookies.CookieError(
            "Invalid cookie attribute %s=%r for cookie %r" % (attr, value, cookie)
        )


def _same_origin(origin: str, protocol: str, host: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(origin)
    except ValueError:
        return False
    scheme = parts.scheme.lower()
    if not scheme or not parts.netloc:
        return False
    return scheme == protocol.lower() and _strip_default_port(
        parts.netloc.lower(), scheme
    ) == _strip_default_port(host.lower(), protocol.lower())


def _strip_default_port(netloc: str, scheme: str) -> str:
    default = {"http": ":80", "https": ":443"}.get(scheme)
    if default and netloc.endswith(default):
        return netloc[: -len(default)]
    return netloc


def _spawn(coro: Any) -> "asyncio.Task[None]":
    task = asyncio.get_running_loop().create_task(coro)
    _RUNNING_TASKS.add(task)
    task.add_done_callback(_RUNNING_TASKS.discard)
    return task


def _resolve(future: "asyncio.Future[None]") -> None:
    if not future.done():
        future.set_result(None)


def stream_request_body(cls: type[_T]) -> type[_T]:
    """Class decorator: deliver the request body to `~RequestHandler.data_received`
    piece by piece instead of buffering it.

    `~RequestHandler.prepare` runs once the headers are in (the body limits
    of the server can be raised there); then ``data_received`` for each piece,
    each awaited before the next is read; then the method handler. The body
    is not parsed into arguments.
    """
    if not (isclass(cls) and issubclass(cls, RequestHandler)):
        raise TypeError("expected subclass of RequestHandler, got %r" % (cls,))
    cls._stream_request_body = True
    return cls  # type: ignore[return-value]


def removeslash(method: _MethodT) -> _MethodT:
    """Decorator for a method handler: redirect ``/path/`` to ``/path`` (301).

    Only GET and HEAD are redirected; other methods get 404. Used with a URL
    pattern like ``r"/foo/*"``.
    """

    @functools.wraps(method)
    def wrapper(self: RequestHandler, *args: Any, **kwargs: Any) -> Any:
        if self.request.path.endswith("/"):
            if self.request.method in ("GET", "HEAD"):
                target = self.request.path.rstrip("/")
                if target:
                    _refuse_protocol_relative(target)
                    if self.request.query:
                        target += "?" + self.request.query
                    self.redirect(target, permanent=True)
                    return None
            else:
                raise HTTPError(404)
        return method(self, *args, **kwargs)

    return cast(_MethodT, wrapper)


def addslash(method: _MethodT) -> _MethodT:
    """Decorator for a method handler: redirect ``/path`` to ``/path/`` (301).

    Only GET and HEAD are redirected; other methods get 404. Used with a URL
    pattern like ``r"/foo/?"``.
    """

    @functools.wraps(method)
    def wrapper(self: RequestHandler, *args: Any, **kwargs: Any) -> Any:
        if not self.request.path.endswith("/"):
            if self.request.method in ("GET", "HEAD"):
                target = self.request.path + "/"
                _refuse_protocol_relative(target)
                if self.request.query:
                    target += "?" + self.request.query
                self.redirect(target, permanent=True)
                return None
            raise HTTPError(404)
        return method(self, *args, **kwargs)

    return cast(_MethodT, wrapper)


def _refuse_protocol_relative(path: str) -> None:
    # "//host/x" (or "/\\host") in a Location header sends the browser to
    # another site: an open redirect.
    if path.replace("\\", "/").startswith("//"):
        raise HTTPError(403, "cannot redirect path with two initial slashes")


def authenticated(method: _MethodT) -> _MethodT:
    """Decorator for a method handler: require a logged-in `current_user`.

    Without one, GET and HEAD redirect to `~RequestHandler.get_login_url`
    (with ``next`` set to the current URL); other methods get 403.
    """

    @functools.wraps(method)
    def wrapper(self: RequestHandler, *args: Any, **kwargs: Any) -> Any:
        if not self.current_user:
            if self.request.method in ("GET", "HEAD"):
                login_url = self.get_login_url()
                if "?" not in login_url:
                    if urllib.parse.urlsplit(login_url).scheme:
                        next_url = self.request.full_url()
                    else:
                        next_url = cast(str, self.request.uri)
                    login_url += "?" + urlencode(dict(next=next_url))
                self.redirect(login_url)
                return None
            raise HTTPError(403)
        return method(self, *args, **kwargs)

    return cast(_MethodT, wrapper)


def asynchronous(method: _MethodT) -> _MethodT:
    """Compatibility decorator from Tornado before 6.0: the response is not
    finished when the method returns; the handler calls `~RequestHandler.finish`
    itself, typically from a callback::

        class Poll(RequestHandler):
            @asynchronous
            def get(self):
                IOLoop.current().call_later(1, self.on_ready)

            def on_ready(self):
                self.finish("ready")

    If the method returns an awaitable (a coroutine), the response is
    finished when it completes, unless the handler did so already. New code
    should use ``async def`` methods instead.
    """

    @functools.wraps(method)
    def wrapper(self: RequestHandler, *args: Any, **kwargs: Any) -> Any:
        self._auto_finish = False
        result = method(self, *args, **kwargs)
        if result is not None and inspect.isawaitable(result):
            return _finish_after(self, result)
        return None

    return cast(_MethodT, wrapper)


async def _finish_after(handler: RequestHandler, awaitable: Awaitable[Any]) -> None:
    await awaitable
    if not handler._finished:
        handler.finish()


class HTTPError(Exception):
    """An exception that becomes an HTTP error response.

    Raising it is usually better than `RequestHandler.send_error`, since it
    also ends the handler. ``log_message`` (with ``args`` %-formatted in) is
    logged, never shown to the client; ``reason`` is the phrase sent with the
    status code.
    """

    def __init__(
        self,
        status_code: int = 500,
        log_message: Optional[str] = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self.status_code = status_code
        self._log_message = log_message
        self.args = args
        self.reason = kwargs.get("reason", None)

    @property
    def log_message(self) -> Optional[str]:
        """The log message; without ``args``, its ``%`` signs come doubled so
        that it can still be used as a format string."""
        if self._log_message is not None and not self.args:
            return self._log_message.replace("%", "%%")
        return self._log_message

    def get_message(self) -> Optional[str]:
        """The log message with its ``args`` formatted in (None if there is none)."""
        if self._log_message is not None and self.args:
            return self._log_message % self.args
        return self._log_message

    def __str__(self) -> str:
        message = "HTTP %d: %s" % (
            self.status_code,
            self.reason or httputil.responses.get(self.status_code, "Unknown"),
        )
        log_message = self.get_message()
        if log_message:
            return message + " (" + log_message + ")"
        return message


class Finish(Exception):
    """Raise to end the request without an error response.

    Like calling `~RequestHandler.finish` and returning; arguments given to
    the exception are passed to ``finish()``. Useful in helpers that cannot
    return from the handler themselves::

        if self.current_user is None:
            self.set_status(401)
            raise Finish("authentication required")
    """


class MissingArgumentError(HTTPError):
    """A required argument is missing (400), raised by `RequestHandler.get_argument`."""

    def __init__(self, arg_name: str) -> None:
        super().__init__(400, "Missing argument %s" % arg_name)
        self.arg_name = arg_name


class ErrorHandler(RequestHandler):
    """Answers every request with the ``status_code`` given as its argument."""

    def initialize(self, status_code: int) -> None:  # type: ignore[override]
        self.set_status(status_code)

    def prepare(self) -> None:
        raise HTTPError(self._status_code)

    def check_xsrf_cookie(self) -> None:
        # An error page changes nothing, so a POST to a missing page gets its
        # 404 rather than an XSRF 403.
        pass

    def check_trusted_origin(self, origin: str) -> bool:
        # Likewise for the cross-origin check.
        return True


class RedirectHandler(RequestHandler):
    """Redirects every GET to a fixed URL (301 by default).

    ``url`` may contain `str.format` fields filled from the URL pattern's
    groups, and the query string is carried over::

        (r"/pictures/(.*)", RedirectHandler, dict(url=r"/photos/{0}"))

    Values from the request cannot change the target's scheme or host: a
    redirect that would leave the site answers 400.
    """

    def initialize(self, url: str, permanent: bool = True) -> None:  # type: ignore[override]
        self._url = url
        self._permanent = permanent

    def get(self, *args: Any, **kwargs: Any) -> None:
        to_url = self._url.format(*args, **kwargs)
        if args or kwargs:
            fields = list(string.Formatter().parse(self._url))
            prefix = fields[0][0] if fields and fields[0][1] is not None else self._url
            if _scheme_and_netloc(to_url) != _scheme_and_netloc(prefix):
                raise HTTPError(
                    400, "Redirect URL cannot change the scheme or netloc: %r", to_url
                )
        if re.search(r"[\x00-\x1f\x7f]", to_url):
            raise HTTPError(400, "Redirect URL contains invalid characters: %r", to_url)
        if self.request.query_arguments:
            to_url = httputil.url_concat(
                to_url, list(httputil.qs_to_qsl(self.request.query_arguments))
            )
        self.redirect(to_url, permanent=self._permanent)


def _scheme_and_netloc(url: str) -> tuple[str, Optional[str]]:
    """The scheme and host a browser would take from ``url`` (None: no host,
    i.e. relative). Mimics the browser's leniency: surrounding spaces and
    embedded tabs and newlines are dropped, backslashes count as slashes and
    any number of slashes may precede the host."""
    normalized = url.strip(_C0_CONTROLS_AND_SPACE)
    normalized = normalized.replace("\t", "").replace("\n", "").replace("\r", "")
    normalized = normalized.replace("\\", "/")
    found = _URL_SCHEME.match(normalized)
    scheme = found.group(1).lower() if found else ""
    rest = normalized[found.end():] if found else normalized
    if rest.startswith("//") or scheme in _SPECIAL_SCHEMES:
        authority = rest.lstrip("/")
        return scheme, _URL_AUTHORITY_END.split(authority, 1)[0].lower()
    return scheme, None


class FallbackHandler(RequestHandler):
    """Hands the request to a plain callable taking an `.HTTPServerRequest`,
    for instance a `.wsgi.WSGIContainer`::

        wsgi_app = WSGIContainer(django_app)
        Application([(r".*", FallbackHandler, dict(fallback=wsgi_app))])
    """

    def initialize(  # type: ignore[override]
        self, fallback: Callable[[httputil.HTTPServerRequest], None]
    ) -> None:
        self.fallback = fallback

    def prepare(self) -> None:
        self.fallback(self.request)
        self._finished = True
        self.on_finish()


class StaticFileHandler(RequestHandler):
    """Serves files from a directory.

    With the ``static_path`` setting the application serves that directory
    under ``/static/`` (and ``/favicon.ico``, ``/robots.txt``). Or map it
    yourself; the pattern's group is the path inside the directory::

        (r"/content/(.*)", StaticFileHandler, {"path": "/var/www"})

    Supports conditional requests (``If-None-Match``, ``If-Modified-Since``),
    byte ranges and HEAD. Files are sent in pieces, never read whole. Paths
    that leave the directory, including through symbolic links, are refused
    with 403 unless ``allowed_symlink_directory`` (a directory or a list of
    them) contains their target. With ``default_filename`` (e.g.
    ``"index.html"``) a directory serves that file.

    URLs from `RequestHandler.static_url` carry a content hash (``?v=``); such
    requests are cached by browsers for `CACHE_MAX_AGE`. The hashes are cached
    per process (`reset` clears them).

    Subclasses can change where content comes from by overriding the class
    methods `get_absolute_path`, `get_content`, `get_content_version` and the
    instance methods `validate_absolute_path`, `get_content_size`,
    `get_modified_time`, `get_content_type`...
    """

    # Ten years (the Expires horizon HTTP caches accept, RFC 9111 section 5.3).
    CACHE_MAX_AGE = 86400 * 365 * 10
    # The largest file whose content is hashed for its version (64 MiB).
    MAX_VERSION_CONTENT_SIZE = 64 * 1024 * 1024
    # How many version hashes are remembered (least recently used are dropped).
    MAX_CACHED_VERSIONS = 10000
    # Files are read and sent in pieces of this size.
    _CHUNK_SIZE = 64 * 1024
    allowed_symlink_directory: Optional[Union[str, Sequence[str]]] = None

    _static_hashes: "collections.OrderedDict[str, Optional[str]]" = collections.OrderedDict()
    _lock = threading.Lock()

    def initialize(  # type: ignore[override]
        self,
        path: str,
        default_filename: Optional[str] = None,
        allowed_symlink_directory: Optional[Union[str, Sequence[str]]] = None,
    ) -> None:
        self.root = path
        self.default_filename = default_filename
        self.allowed_symlink_directory = allowed_symlink_directory

    @classmethod
    def reset(cls) -> None:
        """Forget the cached version hashes (the files changed)."""
        with cls._lock:
            cls._static_hashes = collections.OrderedDict()

    def head(self, path: str) -> Awaitable[None]:  # type: ignore[override]
        return self.get(path, include_body=False)

    async def get(self, path: str, include_body: bool = True) -> None:  # type: ignore[override]
        self.path = self.parse_url_path(path)
        del path
        absolute_path = self.get_absolute_path(self.root, self.path)
        self.absolute_path = self.validate_absolute_path(self.root, absolute_path)
        if self.absolute_path is None:
            return
        self.modified = self.get_modified_time()
        self.set_headers()
        if self.should_return_304():
            self.set_status(304)
            return
        size = self.get_content_size()
        start: Optional[int] = None
        end: Optional[int] = None
        range_header = self.request.headers.get("Range")
        # An unreadable Range header is ignored (RFC 9110 section 14.2).
        requested = httputil._parse_request_range(range_header) if range_header else None
        if requested is not None:
            start, end = requested
            if start is not None and start < 0:
                start = max(start + size, 0)
            if (start is not None and (start >= size or (end is not None and start >= end))) or end == 0:
                # Unsatisfiable (RFC 9110 section 14.1.2): nothing of the
                # representation lies in the range.
                self.set_status(416)
                self.set_header("Content-Type", "text/plain")
                self.set_header("Content-Range", "bytes */%d" % size)
                return
            if end is not None and end > size:
                # Clients ask for huge ranges to cap their download; serve the file.
                end = size
            if (end if end is not None else size) - (start or 0) != size:
                # 206 only for a real part: some players refuse a 206 that
                # answers "bytes=0-".
                self.set_status(206)
                self.set_header("Content-Range", httputil._get_content_range(start, end, size))
            else:
                start = end = None
        if start is not None and end is not None:
            content_length = end - start
        elif end is not None:
            content_length = end
        elif start is not None:
            content_length = size - start
        else:
            content_length = size
        self.set_header("Content-Length", content_length)
        if include_body:
            stock = getattr(type(self).get_content, "__func__", None) is _stock_get_content
            if stock and content_length > self._CHUNK_SIZE:
                # More than one chunk of a plain file: let the kernel send it.
                try:
                    if await self._send_file(start or 0, content_length):
                        return
                except iostream.StreamClosedError:
                    return
            content = self.get_content(self.absolute_path, start, end)
            if isinstance(content, bytes):
                content = [content]
            for chunk in content:
                try:
                    self.write(chunk)
                    await self.flush()
                except iostream.StreamClosedError:
                    return

    async def _send_file(self, offset: int, count: int) -> bool:
        """Send the body with ``sendfile(2)`` when the connection can (a plain
        socket) and no output transform changes the bytes; False if the
        caller must write them itself. The headers are sent first, which is
        when the transforms decide (gzip takes only compressible types)."""
        connection = self.request.connection
        sendfile = getattr(connection, "_sendfile", None)
        if sendfile is None:
            return False
        self.flush()
        for transform in self._transforms:
            kind = type(transform)
            if kind is not OutputTransform and not (
                kind is GZipContentEncoding and not transform._gzipping  # type: ignore[attr-defined]
            ):
                return False
        assert self.absolute_path is not None
        with open(self.absolute_path, "rb") as file:
            sending = sendfile(file, offset, count)
            if sending is None:
                return False
            await sending
        return True

    def compute_etag(self) -> Optional[str]:
        """The content hash of the file, quoted (None if it has none)."""
        assert self.absolute_path is not None
        if self.get_content_size() > self.MAX_VERSION_CONTENT_SIZE:
            # Hashing would stall the event loop; serve it without an ETag.
            return None
        version = self._get_cached_version(self.absolute_path)
        if not version:
            return None
        return '"%s"' % version

    def set_headers(self) -> None:
        """Set the response headers of a file (type, ETag, caching...)."""
        self.set_header("Accept-Ranges", "bytes")
        self.set_etag_header()
        if self.modified is not None:
            self.set_header("Last-Modified", self.modified)
        content_type = self.get_content_type()
        if content_type:
            self.set_header("Content-Type", content_type)
        cache_time = self.get_cache_time(self.path, self.modified, content_type)
        if cache_time > 0:
            self.set_header(
                "Expires",
                datetime.datetime.now(datetime.timezone.utc)
                + datetime.timedelta(seconds=cache_time),
            )
            self.set_header("Cache-Control", "max-age=" + str(cache_time))
        self.set_extra_headers(self.path)

    def should_return_304(self) -> bool:
        """Whether the client's cached copy is current (``If-None-Match`` wins
        over ``If-Modified-Since``)."""
        if self.request.headers.get("If-None-Match"):
            return self.check_etag_header()
        since = self.request.headers.get("If-Modified-Since")
        if since is not None and self.modified is not None:
            try:
                if_since = email.utils.parsedate_to_datetime(since)
            except (TypeError, ValueError, IndexError):
                return False
            if if_since.tzinfo is None:
                if_since = if_since.replace(tzinfo=datetime.timezone.utc)
            return if_since >= self.modified
        return False

    @classmethod
    def get_absolute_path(cls, root: str, path: str) -> str:
        """The filesystem path for URL path ``path`` under ``root``.

        Not yet checked: `validate_absolute_path` does that.
        """
        return os.path.abspath(os.path.join(root, path))

    def validate_absolute_path(self, root: str, absolute_path: str) -> Optional[str]:
        """Check that ``absolute_path`` may be served; returns the path to serve.

        Raises `HTTPError` 403 for a path outside ``root`` (symbolic links
        resolved), 404 for a missing file, 403 for something that is not a
        regular file. A directory with ``default_filename`` set serves that
        file, after redirecting to the URL with a trailing slash (the
        redirect returns None).
        """
        root_dir = _root_dirs.get(root)
        if root_dir is None:
            root_dir = _with_sep(os.path.abspath(root))
            if os.path.isabs(root) and len(_root_dirs) < 64:
                # Lexical only (no file system), so safe to keep; a relative
                # root depends on the working directory and is not kept.
                _root_dirs[root] = root_dir
        if not (absolute_path + os.path.sep).startswith(root_dir):
            raise HTTPError(403, "%s is not in root static directory", self.path)
        self._check_symlinks(root_dir, absolute_path)
        try:
            st = os.stat(absolute_path)
        except (FileNotFoundError, NotADirectoryError):
            raise HTTPError(404) from None
        except (OSError, ValueError):
            raise HTTPError(404) from None
        if stat.S_ISDIR(st.st_mode) and self.default_filename is not None:
            if not self.request.path.endswith("/"):
                _refuse_protocol_relative(self.request.path)
                self.redirect(self.request.path + "/", permanent=True)
                return None
            absolute_path = os.path.join(absolute_path, self.default_filename)
            self._check_symlinks(root_dir, absolute_path)
            try:
                st = os.stat(absolute_path)
            except (OSError, ValueError):
                raise HTTPError(404) from None
        if not stat.S_ISREG(st.st_mode):
            raise HTTPError(403, "%s is not a file", self.path)
        self._stat_result = st
        return absolute_path

    def _check_symlinks(self, root_dir: str, absolute_path: str) -> None:
        """Refuse a path whose resolved target leaves the allowed directories."""
        allowed = getattr(self, "allowed_symlink_directory", None)
        if allowed is None:
            allowed_dirs: Sequence[str] = (root_dir,)
        elif isinstance(allowed, (str, os.PathLike)):
            allowed_dirs = (os.fspath(allowed),)
        else:
            allowed_dirs = [os.fspath(d) for d in allowed]
        real = _real_path(absolute_path)
        for directory in allowed_dirs:
            if (real + os.path.sep).startswith(_with_sep(_real_path(directory))):
                return
        raise HTTPError(403, "%s is not in root static directory", self.path)

    @classmethod
    def get_content(
        cls, abspath: str, start: Optional[int] = None, end: Optional[int] = None
    ) -> Generator[bytes, None, None]:
        """The file's bytes from ``start`` to ``end`` (exclusive), in pieces.

        Override to serve content from elsewhere; may also return a single
        bytes object.
        """
        with open(abspath, "rb") as file:
            if start is not None:
                file.seek(start)
            remaining = end - (start or 0) if end is not None else None
            while True:
                size = cls._CHUNK_SIZE
                if remaining is not None and remaining < size:
                    size = remaining
                chunk = file.read(size) if size else b""
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    @classmethod
    def get_content_version(cls, abspath: str) -> str:
        """The version string of a file (a SHA-512 of its content)."""
        data = cls.get_content(abspath)
        hasher = hashlib.sha512()
        if isinstance(data, bytes):
            hasher.update(data)
        else:
            for chunk in data:
                hasher.update(chunk)
        return hasher.hexdigest()

    def _stat(self) -> os.stat_result:
        assert self.absolute_path is not None
        result = self.__dict__.get("_stat_result")
        if result is None:
            result = self._stat_result = os.stat(self.absolute_path)
        return result  # type: ignore[no-any-return]

    def get_content_size(self) -> int:
        """The size of the file in bytes."""
        return self._stat().st_size

    def get_modified_time(self) -> Optional[datetime.datetime]:
        """The file's modification time (whole seconds, UTC), or None."""
        return datetime.datetime.fromtimestamp(int(self._stat().st_mtime), datetime.timezone.utc)

    def get_content_type(self) -> str:
        """The Content-Type, guessed from the file name.

        Compressed files (``.gz``...) are sent as what they are, not with the
        type of what they contain.
        """
        assert self.absolute_path is not None
        mime_type, encoding = mimetypes.guess_type(self.absolute_path)
        if encoding == "gzip":
            return "application/gzip"
        if encoding is not None:
            return "application/octet-stream"
        return mime_type or "application/octet-stream"

    def set_extra_headers(self, path: str) -> None:
        """Hook to add headers to file responses."""

    def get_cache_time(
        self, path: str, modified: Optional[datetime.datetime], mime_type: str
    ) -> int:
        """Seconds the response may be cached: `CACHE_MAX_AGE` for versioned
        URLs (with ``?v=``), else 0 (no caching headers)."""
        return self.CACHE_MAX_AGE if "v" in self.request.arguments else 0

    @classmethod
    def make_static_url(
        cls, settings: dict[str, Any], path: str, include_version: bool = True
    ) -> str:
        """The URL for static file ``path`` (used by `RequestHandler.static_url`).

        ``static_url_prefix`` (default ``/static/``) + path, plus ``?v=`` and
        the file's version hash when there is one.
        """
        url = settings.get("static_url_prefix", "/static/") + path
        if not include_version:
            return url
        version = cls.get_version(settings, path)
        if not version:
            return url
        return "%s?v=%s" % (url, version)

    def parse_url_path(self, url_path: str) -> str:
        """Turn the URL path group into a filesystem path relative to the root."""
        if os.path.sep != "/":
            url_path = url_path.replace("/", os.path.sep)
        return url_path

    @classmethod
    def get_version(cls, settings: dict[str, Any], path: str) -> Optional[str]:
        """The version hash of static file ``path`` (cached), or None.

        A path outside ``static_path`` raises `HTTPError` 403; a missing file,
        something that is not a regular file, or a file larger than
        `MAX_VERSION_CONTENT_SIZE` has no version.
        """
        root = settings["static_path"]
        abs_path = cls.get_absolute_path(root, path)
        if not (abs_path + os.path.sep).startswith(_with_sep(os.path.abspath(root))):
            raise HTTPError(403, "%s is not in root static directory", path)
        return cls._get_cached_version(abs_path, check_file=True)

    @classmethod
    def _get_cached_version(cls, abs_path: str, check_file: bool = False) -> Optional[str]:
        """The version of ``abs_path`` from the cache, computed on a miss.

        ``check_file`` (for paths that did not go through
        `validate_absolute_path`) first makes sure it is a regular file of
        reasonable size.
        """
        with cls._lock:
            hashes = cls._static_hashes
            if abs_path in hashes:
                hashes.move_to_end(abs_path)
                return hashes[abs_path]
            version = cls._read_version(abs_path, check_file)
            hashes[abs_path] = version
            while len(hashes) > cls.MAX_CACHED_VERSIONS:
                hashes.popitem(last=False)
            return version

    @classmethod
    def _read_version(cls, abs_path: str, check_file: bool) -> Optional[str]:
        if check_file and not cls._is_versionable(abs_path):
            return None
        try:
            return cls.get_content_version(abs_path)
        except Exception:
            gen_log.error("Could not open static file %r", abs_path, exc_info=True)
            return None

    @classmethod
    def _is_versionable(cls, abs_path: str) -> bool:
        # stat() first: opening a FIFO would block, hashing a device never end.
        try:
            st = os.stat(abs_path)
        except (OSError, ValueError) as e:
            gen_log.error("Could not open static file %r: %s", abs_path, e)
            return False
        if not stat.S_ISREG(st.st_mode):
            gen_log.error("Could not open static file %r: is not a file", abs_path)
            return False
        if st.st_size > cls.MAX_VERSION_CONTENT_SIZE:
            gen_log.error(
                "Could not open static file %r: larger than %d bytes",
                abs_path,
                cls.MAX_VERSION_CONTENT_SIZE,
            )
            return False
        return True


# The stock reader: a subclass that overrides it serves its own bytes.
_stock_get_content = StaticFileHandler.__dict__["get_content"].__func__


# abspath(root) + separator, per static root (see validate_absolute_path).
_root_dirs: dict[str, str] = {}

# Where the kernel tells the resolved path of an open descriptor (Linux).
_FD_PATHS = "/proc/self/fd/" if hasattr(os, "O_PATH") and os.path.isdir("/proc/self/fd") else None


def _real_path(path: str) -> str:
    """``os.path.realpath(path)``, from the kernel when it can tell: opening
    the path resolves every symbolic link in one system call, where
    realpath makes one per component (in Python, twice the time)."""
    if _FD_PATHS is not None:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except (OSError, ValueError):
            # Missing, or not reachable: realpath's lexical answer decides
            # (a missing file is then a 404, as before).
            return os.path.realpath(path)
        try:
            real = os.readlink(_FD_PATHS + str(fd))
        except OSError:
            real = ""
        finally:
            os.close(fd)
        # The kernel's answer is only usable if it is a plain absolute path
        # (not "(deleted)", nor a path outside this process's root).
        if real.startswith("/") and not real.endswith(" (deleted)"):
            return real
    return os.path.realpath(path)


def _with_sep(directory: str) -> str:
    return directory if directory.endswith(os.path.sep) else directory + os.path.sep


class OutputTransform:
    """Base of output transforms, which rewrite a response as it is sent.

    An application's transforms are instantiated per request; the first
    chunk comes with the status and headers, which may be changed.
    """

    def __init__(self, request: httputil.HTTPServerRequest) -> None:
        pass

    def transform_first_chunk(
        self,
        status_code: int,
        headers: httputil.HTTPHeaders,
        chunk: bytes,
        finishing: bool,
    ) -> tuple[int, httputil.HTTPHeaders, bytes]:
        return status_code, headers, chunk

    def transform_chunk(self, chunk: bytes, finishing: bool) -> bytes:
        return chunk


class GZipContentEncoding(OutputTransform):
    """Gzips text-like responses for clients that accept it.

    Enabled by the ``compress_response`` (or ``gzip``) application setting.
    Responses shorter than `MIN_LENGTH`, already encoded, or of a type that
    does not compress well are sent as they are. Always adds
    ``Vary: Accept-Encoding``.
    """

    # Types worth compressing besides text/*.
    CONTENT_TYPES = {
        "application/javascript",
        "application/x-javascript",
        "application/xml",
        "application/atom+xml",
        "application/json",
        "application/xhtml+xml",
        "image/svg+xml",
    }
    # zlib's default trade-off between speed and size.
    GZIP_LEVEL = 6
    # Below about 1 KiB, gzip's framing eats most of the gain (nginx's
    # gzip_min_length defaults to 20 bytes; Akamai and others use ~1 KiB).
    MIN_LENGTH = 1024

    def __init__(self, request: httputil.HTTPServerRequest) -> None:
        self._gzipping = "gzip" in request.headers.get("Accept-Encoding", "")
        self._compressor: Any = None

    def _compressible_type(self, ctype: str) -> bool:
        return ctype.startswith("text/") or ctype in self.CONTENT_TYPES

    def transform_first_chunk(
        self,
        status_code: int,
        headers: httputil.HTTPHeaders,
        chunk: bytes,
        finishing: bool,
    ) -> tuple[int, httputil.HTTPHeaders, bytes]:
        if "Vary" in headers:
            headers["Vary"] += ", Accept-Encoding"
        else:
            headers["Vary"] = "Accept-Encoding"
        if self._gzipping:
            ctype = _unicode(headers.get("Content-Type", "")).split(";")[0]
            self._gzipping = (
                self._compressible_type(ctype)
                and (not finishing or len(chunk) >= self.MIN_LENGTH)
                and "Content-Encoding" not in headers
            )
        if self._gzipping:
            headers["Content-Encoding"] = "gzip"
            # wbits 16 + MAX_WBITS: gzip framing (RFC 1952) around deflate.
            self._compressor = zlib.compressobj(self.GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            chunk = self.transform_chunk(chunk, finishing)
            if "Content-Length" in headers:
                # The length changed; known only if this is the whole body.
                if finishing:
                    headers["Content-Length"] = str(len(chunk))
                else:
                    del headers["Content-Length"]
        return status_code, headers, chunk

    def transform_chunk(self, chunk: bytes, finishing: bool) -> bytes:
        if self._gzipping:
            data = self._compressor.compress(chunk)
            if finishing:
                data += self._compressor.flush()
            else:
                data += self._compressor.flush(zlib.Z_SYNC_FLUSH)
            return data
        return chunk


class UIModule:
    """A reusable piece of page, used from templates as ``{% module Name(...) %}``.

    Register subclasses with the ``ui_modules`` application setting. A module
    may also declare CSS and JavaScript that `RequestHandler.render` adds to
    the page once, however many times the module is used.
    """

    def __init__(self, handler: RequestHandler) -> None:
        self.handler = handler
        self.request = handler.request
        self.ui = handler.ui
        self.locale = handler.locale

    @property
    def current_user(self) -> Any:
        return self.handler.current_user

    def render(self, *args: Any, **kwargs: Any) -> str:
        """The module's HTML (override)."""
        raise NotImplementedError()

    def embedded_javascript(self) -> Optional[str]:
        """JavaScript to add inline at the end of the page."""
        return None

    def javascript_files(self) -> Optional[Iterable[str]]:
        """Script URLs (relative ones go through `RequestHandler.static_url`)."""
        return None

    def embedded_css(self) -> Optional[str]:
        """CSS to add inline in the page head."""
        return None

    def css_files(self) -> Optional[Iterable[str]]:
        """Stylesheet URLs (relative ones go through `RequestHandler.static_url`)."""
        return None

    def html_head(self) -> Optional[str]:
        """HTML to add before ``</head>``."""
        return None

    def html_body(self) -> Optional[str]:
        """HTML to add before ``</body>``."""
        return None

    def render_string(self, path: str, **kwargs: Any) -> bytes:
        """Render a template (see `RequestHandler.render_string`)."""
        return self.handler.render_string(path, **kwargs)


class _linkify(UIModule):
    def render(self, text: str, **kwargs: Any) -> str:  # type: ignore[override]
        return escape.linkify(text, **kwargs)


class _xsrf_form_html(UIModule):
    def render(self) -> str:  # type: ignore[override]
        return self.handler.xsrf_form_html()


class TemplateModule(UIModule):
    """``{% module Template("file.html", **kwargs) %}``: render another template.

    The included template may call ``set_resources(...)`` with the keyword
    names of the `UIModule` resource methods (``embedded_css``,
    ``javascript_files``...) to have them added to the page.
    """

    def __init__(self, handler: RequestHandler) -> None:
        super().__init__(handler)
        self._resource_list: list[dict[str, Any]] = []
        self._resource_dict: dict[str, dict[str, Any]] = {}

    def render(self, path: str, **kwargs: Any) -> bytes:  # type: ignore[override]
        def set_resources(**resources: Any) -> str:
            known = self._resource_dict.get(path)
            if known is None:
                self._resource_list.append(resources)
                self._resource_dict[path] = resources
            elif known != resources:
                raise ValueError(
                    "set_resources called with different resources for the same template %r"
                    % path
                )
            return ""

        return self.render_string(path, set_resources=set_resources, **kwargs)

    def _get_resources(self, key: str) -> Iterable[Any]:
        return (r[key] for r in self._resource_list if key in r)

    def _get_paths(self, key: str) -> list[str]:
        paths: list[str] = []
        for item in self._get_resources(key):
            _extend_paths(paths, item)
        return paths

    def embedded_javascript(self) -> str:
        return "\n".join(self._get_resources("embedded_javascript"))

    def javascript_files(self) -> list[str]:
        return self._get_paths("javascript_files")

    def embedded_css(self) -> str:
        return "\n".join(self._get_resources("embedded_css"))

    def css_files(self) -> list[str]:
        return self._get_paths("css_files")

    def html_head(self) -> str:
        return "".join(self._get_resources("html_head"))

    def html_body(self) -> str:
        return "".join(self._get_resources("html_body"))


class _UIModuleNamespace:
    """``_tt_modules`` in templates: the application's UI modules bound to a handler."""

    def __init__(self, handler: RequestHandler, ui_modules: dict[str, type[UIModule]]) -> None:
        self.handler = handler
        self.ui_modules = ui_modules

    def __getitem__(self, key: str) -> Callable[..., str]:
        return self.handler._ui_module(key, self.ui_modules[key])

    def __getattr__(self, key: str) -> Callable[..., str]:
        try:
            return self[key]
        except KeyError as e:
            raise AttributeError(str(e)) from None


def is_absolute(path: str) -> bool:
    """Whether a resource URL is used as is (not passed through `static_url`)."""
    return path.startswith(("/", "http:", "https:"))


# -- the application -----------------------------------------------------------


class _ApplicationRouter(ReversibleRuleRouter):
    """The application's rule router: targets may be `RequestHandler`
    subclasses, and a nested list of rules becomes a nested router."""

    def __init__(self, application: "Application", rules: Optional[Sequence[_RuleSpec]] = None) -> None:
        assert isinstance(application, Application)
        self.application = application
        super().__init__(rules)

    def process_rule(self, rule: Rule) -> Rule:
        rule = super().process_rule(rule)
        target = rule.target
        if isinstance(target, (list, tuple)):
            rule.target = _ApplicationRouter(self.application, target)
        elif not (
            isinstance(target, (Router, httputil.HTTPServerConnectionDelegate)) or callable(target)
        ):
            raise TypeError(
                "handler for %r must be a RequestHandler subclass, a router or a "
                "callable, got %r" % (rule.matcher, target)
            )
        if not isinstance(rule.target_kwargs, dict):
            raise TypeError(
                "handler arguments for %r must be a dict, got %r" % (rule.matcher, rule.target_kwargs)
            )
        return rule

    def get_target_delegate(
        self,
        target: Any,
        request: httputil.HTTPServerRequest,
        target_kwargs: Any = _NOT_GIVEN,
        path_args: Any = _NOT_GIVEN,
        path_kwargs: Any = _NOT_GIVEN,
        **target_params: Any,
    ) -> Optional[httputil.HTTPMessageDelegate]:
        # The parameters a rule and PathMatches give are named, so that
        # Python binds them without building a dict to look them up in.
        is_handler = isinstance(target, type) and issubclass(target, RequestHandler)
        if is_handler:
            application = self.application
            if type(application).get_handler_delegate is _default_get_handler_delegate:
                # What the default get_handler_delegate does, one call fewer.
                return _HandlerDelegate(
                    application,
                    request,
                    target,
                    None if target_kwargs is _NOT_GIVEN else target_kwargs,
                    None if path_args is _NOT_GIVEN else path_args,
                    None if path_kwargs is _NOT_GIVEN else path_kwargs,
                )
        # Anything else gets the parameters exactly as they were given.
        if target_kwargs is not _NOT_GIVEN:
            target_params["target_kwargs"] = target_kwargs
        if path_args is not _NOT_GIVEN:
            target_params["path_args"] = path_args
        if path_kwargs is not _NOT_GIVEN:
            target_params["path_kwargs"] = path_kwargs
        if is_handler:
            return self.application.get_handler_delegate(request, target, **target_params)
        return super().get_target_delegate(target, request, **target_params)


class Application(ReversibleRouter):
    """A collection of request handlers: the web application.

    ``handlers`` is a list of rules, most often ``(pattern, handler_class)``
    or ``(pattern, handler_class, kwargs)`` tuples, or `url` objects with a
    name for `reverse_url`. The pattern is a regex matched against the whole
    path; its groups are passed to the handler's method::

        application = Application([
            (r"/", MainHandler),
            (r"/user/([0-9]+)", UserHandler, dict(db=database)),
            url(r"/story/(\\d+)", StoryHandler, name="story"),
        ])
        application.listen(8888)

    ``settings`` configure the framework; the ones squall reads:

    * ``debug``: shortcut for ``autoreload``, ``compiled_template_cache=False``,
      ``static_hash_cache=False`` and ``serve_traceback``.
    * ``compress_response`` / ``gzip``: gzip responses (`GZipContentEncoding`).
    * ``default_handler_class`` / ``default_handler_args``: the handler when no
      rule matches (else a 404 page).
    * ``log_function``: called with each finished handler instead of the
      access log line.
    * ``cookie_secret`` (str, bytes, or a dict of them by key version, with
      ``key_version``): for signed cookies.
    * ``login_url``: for `authenticated`.
    * ``xsrf_cookies``, ``xsrf_cookie_version``, ``xsrf_cookie_name``,
      ``xsrf_cookie_kwargs``: XSRF protection of non-GET requests.
    * ``cross_origin_protection``, ``trusted_origins``: refuse state-changing
      requests that browsers send from other sites.
    * ``template_path``, ``template_loader``, ``autoescape``,
      ``template_whitespace``, ``compiled_template_cache``, ``ui_modules``,
      ``ui_methods``: templates.
    * ``static_path``, ``static_url_prefix``, ``static_handler_class``,
      ``static_handler_args``, ``static_hash_cache``: static files.
    * ``serve_traceback``: send tracebacks in error pages.
    * ``websocket_ping_interval``, ``websocket_ping_timeout``,
      ``websocket_max_message_size``: read by `.websocket.WebSocketHandler`.

    Settings are checked here: a wrong type raises at once, naming the value.
    """

    def __init__(
        self,
        handlers: Optional[Sequence[_RuleSpec]] = None,
        default_host: Optional[str] = None,
        transforms: Optional[list[type[OutputTransform]]] = None,
        **settings: Any,
    ) -> None:
        _check_settings(settings)
        if transforms is None:
            self.transforms: list[type[OutputTransform]] = []
            if settings.get("compress_response") or settings.get("gzip"):
                self.transforms.append(GZipContentEncoding)
        else:
            self.transforms = transforms
        self.default_host = default_host
        self.settings = settings
        self.ui_modules: dict[str, type[UIModule]] = {
            "linkify": _linkify,
            "xsrf_form_html": _xsrf_form_html,
            "Template": TemplateModule,
        }
        self.ui_methods: dict[str, Callable[..., str]] = {}
        self._load_ui_modules(settings.get("ui_modules", {}))
        self._load_ui_methods(settings.get("ui_methods", {}))
        if self.settings.get("static_path"):
            path = self.settings["static_path"]
            handlers = list(handlers or [])
            static_url_prefix = settings.get("static_url_prefix", "/static/")
            static_handler_class = settings.get("static_handler_class", StaticFileHandler)
            static_handler_args = dict(settings.get("static_handler_args") or {})
            static_handler_args["path"] = path
            for pattern in (
                re.escape(static_url_prefix) + r"(.*)",
                r"/(favicon\.ico)",
                r"/(robots\.txt)",
            ):
                handlers.insert(0, (pattern, static_handler_class, static_handler_args))
        if self.settings.get("debug"):
            self.settings.setdefault("autoreload", True)
            self.settings.setdefault("compiled_template_cache", False)
            self.settings.setdefault("static_hash_cache", False)
            self.settings.setdefault("serve_traceback", True)
        self.wildcard_router = _ApplicationRouter(self, handlers)
        self._any_host_rule = Rule(AnyMatches(), self.wildcard_router)
        self.default_router = _ApplicationRouter(self, [self._any_host_rule])
        if self.settings.get("autoreload"):
            from squall import autoreload

            autoreload.start()
        if self.settings.get("watchdog"):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass  # no loop yet: listen() starts it on the loop it serves
            else:
                self._start_watchdog()

    def _start_watchdog(self) -> None:
        # The ``watchdog`` setting: report stalls of the serving loop (see
        # squall.watchdog); True means the module's default threshold.
        from squall import watchdog

        if watchdog.current() is None:
            threshold = self.settings["watchdog"]
            if threshold is True:
                watchdog.start()
            else:
                watchdog.start(threshold=threshold)

    def listen(
        self,
        port: int,
        address: Optional[str] = None,
        *,
        family: socket.AddressFamily = socket.AF_UNSPEC,
        backlog: int = 128,
        flags: Optional[int] = None,
        reuse_port: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Start an `.HTTPServer` for this application on ``port``; returns it.

        Keyword arguments other than the socket options go to the
        `.HTTPServer` constructor (e.g. ``xheaders=True``, ``ssl_options``).
        The IOLoop still has to be started.
        """
        from squall.httpserver import HTTPServer

        if self.settings.get("watchdog"):
            from squall.ioloop import IOLoop

            IOLoop.current().add_callback(self._start_watchdog)
        server = HTTPServer(self, **kwargs)
        server.listen(
            port,
            address=address,
            family=family,
            backlog=backlog,
            flags=flags,
            reuse_port=reuse_port,
        )
        return server

    def add_handlers(self, host_pattern: str, host_handlers: Sequence[_RuleSpec]) -> None:
        """Add rules that apply only to requests for hosts matching ``host_pattern``.

        Host rules are tried in the order added, before the rules given to the
        constructor (which serve any host). When the application has a
        ``default_host``, rules for a pattern matching it also serve requests
        that did not come through a proxy.
        """
        host_matcher = HostMatches(host_pattern)
        rule = Rule(host_matcher, _ApplicationRouter(self, host_handlers))
        self.default_router.rules.insert(-1, rule)
        if self.default_host is not None:
            self.wildcard_router.add_rules(
                [(DefaultHostMatches(self, host_matcher.host_pattern), host_handlers)]
            )

    def add_transform(self, transform_class: type[OutputTransform]) -> None:
        """Add an `OutputTransform` applied to every response."""
        self.transforms.append(transform_class)

    def _load_ui_methods(self, methods: Any) -> None:
        if isinstance(methods, types.ModuleType):
            self._load_ui_methods({n: getattr(methods, n) for n in dir(methods)})
        elif isinstance(methods, list):
            for m in methods:
                self._load_ui_methods(m)
        elif isinstance(methods, dict):
            for name, fn in methods.items():
                if not name.startswith("_") and callable(fn) and name[0].lower() == name[0]:
                    self.ui_methods[name] = fn
        else:
            raise TypeError("ui_methods must be a dict, module or list, got %r" % (methods,))

    def _load_ui_modules(self, modules: Any) -> None:
        if isinstance(modules, types.ModuleType):
            self._load_ui_modules({n: getattr(modules, n) for n in dir(modules)})
        elif isinstance(modules, list):
            for m in modules:
                self._load_ui_modules(m)
        elif isinstance(modules, dict):
            for name, cls in modules.items():
                if isclass(cls) and issubclass(cls, UIModule):
                    self.ui_modules[name] = cls
        else:
            raise TypeError("ui_modules must be a dict, module or list, got %r" % (modules,))

    def __call__(self, request: httputil.HTTPServerRequest) -> Optional[Awaitable[None]]:
        """Handle an already-read request (the pre-4.0 calling convention)."""
        dispatcher = self.find_handler(request)
        return dispatcher.execute()

    def find_handler(
        self, request: httputil.HTTPServerRequest, **kwargs: Any
    ) -> "_HandlerDelegate":
        rules = self.default_router._rules
        if len(rules) == 1 and rules[0] is self._any_host_rule:
            # No host-specific rules: skip the level that would only say so.
            route = self.wildcard_router.find_handler(request)
        else:
            route = self.default_router.find_handler(request)
        if route is not None:
            return route  # type: ignore[return-value]
        if self.settings.get("default_handler_class"):
            return self.get_handler_delegate(
                request,
                self.settings["default_handler_class"],
                self.settings.get("default_handler_args", {}),
            )
        return self.get_handler_delegate(request, ErrorHandler, {"status_code": 404})

    def get_handler_delegate(
        self,
        request: httputil.HTTPServerRequest,
        target_class: type[RequestHandler],
        target_kwargs: Optional[dict[str, Any]] = None,
        path_args: Optional[list[bytes]] = None,
        path_kwargs: Optional[dict[str, bytes]] = None,
    ) -> "_HandlerDelegate":
        """The message delegate that runs ``target_class`` for ``request``.

        For custom routers that want to use this application's handlers.
        """
        if not (isinstance(target_class, type) and issubclass(target_class, RequestHandler)):
            raise TypeError("expected subclass of RequestHandler, got %r" % (target_class,))
        return _HandlerDelegate(
            self, request, target_class, target_kwargs, path_args, path_kwargs
        )

    def reverse_url(self, name: str, *args: Any) -> str:
        """The URL of the rule called ``name``, its groups filled with ``args``.

        Arguments are converted to str and percent-encoded. Raises KeyError
        for an unknown name.
        """
        reversed_url = self.default_router.reverse_url(name, *args)
        if reversed_url is not None:
            return reversed_url
        raise KeyError("%s not found in named urls" % name)

    def log_request(self, handler: RequestHandler) -> None:
        """Write the access log line of a finished request.

        Status below 400 at INFO, below 500 at WARNING, else ERROR, to the
        ``squall.access`` logger. The ``log_function`` setting replaces it.
        """
        log_function = self.settings.get("log_function")
        if log_function is not None:
            log_function(handler)
            return
        status = handler.get_status()
        if status < 400:
            level = 20
        elif status < 500:
            level = 30
        else:
            level = 40
        # Logger.isEnabledFor's own cache, read without the call (this runs
        # for every request); the logging module clears it on any change.
        enabled = None if access_log.disabled else access_log._cache.get(level)
        if enabled is None:
            enabled = access_log.isEnabledFor(level)
        if enabled:
            access_log.log(
                level,
                "%d %s %.2fms",
                status,
                handler._request_summary(),
                1000.0 * handler.request.request_time(),
            )


def _check_settings(settings: dict[str, Any]) -> None:
    """Refuse settings of the wrong type at start-up, naming the bad value."""
    stall = settings.get("watchdog")
    if stall not in (None, False, True) and (
        isinstance(stall, bool) or not isinstance(stall, (int, float)) or not stall > 0
    ):
        raise ValueError("watchdog must be True or a positive number of seconds, got %r" % (stall,))
    secret = settings.get("cookie_secret")
    if secret is not None:
        if isinstance(secret, dict):
            if not secret or not all(isinstance(v, (str, bytes)) for v in secret.values()):
                raise TypeError("cookie_secret dict must map key versions to str or bytes")
            key_version = settings.get("key_version")
            if key_version is not None and key_version not in secret:
                raise ValueError("key_version %r is not a key of cookie_secret" % (key_version,))
        elif not isinstance(secret, (str, bytes)):
            raise TypeError("cookie_secret must be str, bytes or a dict, got %r" % (secret,))
    version = settings.get("xsrf_cookie_version")
    if version is not None and version not in (1, 2):
        raise ValueError("xsrf_cookie_version must be 1 or 2, got %r" % (version,))
    for name in ("default_handler_class", "static_handler_class"):
        value = settings.get(name)
        if value is not None and not (isclass(value) and issubclass(value, RequestHandler)):
            raise TypeError("%s must be a RequestHandler subclass, got %r" % (name, value))
    for name in ("default_handler_args", "static_handler_args", "xsrf_cookie_kwargs"):
        value = settings.get(name)
        if value is not None and not isinstance(value, dict):
            raise TypeError("%s must be a dict, got %r" % (name, value))
    for name in ("static_path", "template_path", "login_url", "static_url_prefix"):
        value = settings.get(name)
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise TypeError("%s must be a string, got %r" % (name, value))
    log_function = settings.get("log_function")
    if log_function is not None and not callable(log_function):
        raise TypeError("log_function must be callable, got %r" % (log_function,))


class _HandlerDelegate(httputil.HTTPMessageDelegate):
    """Runs one `RequestHandler` for one request: buffers the body (or streams
    it to the handler) and starts the handler."""

    __slots__ = (
        "application", "connection", "request", "handler_class", "handler_kwargs",
        "path_args", "path_kwargs", "chunks", "stream_request_body", "handler",
    )

    def __init__(
        self,
        application: Application,
        request: httputil.HTTPServerRequest,
        handler_class: type[RequestHandler],
        handler_kwargs: Optional[dict[str, Any]],
        path_args: Optional[list[bytes]],
        path_kwargs: Optional[dict[str, bytes]],
    ) -> None:
        self.application = application
        self.connection = request.connection
        self.request = request
        self.handler_class = handler_class
        self.handler_kwargs = handler_kwargs or {}
        self.path_args = path_args or []
        self.path_kwargs = path_kwargs or {}
        self.chunks: Optional[list[bytes]] = []
        # handler_class is a RequestHandler subclass: checked by the callers
        # (get_handler_delegate; the router's match, before the fused call).
        self.stream_request_body = handler_class._stream_request_body
        self.handler: Optional[RequestHandler] = None

    def headers_received(
        self,
        start_line: Union[httputil.RequestStartLine, httputil.ResponseStartLine],
        headers: httputil.HTTPHeaders,
    ) -> Optional[Awaitable[None]]:
        if self.stream_request_body:
            self.request._body_future = asyncio.get_running_loop().create_future()
            return self.execute()
        return None

    def data_received(self, data: bytes) -> Optional[Awaitable[None]]:
        if self.stream_request_body:
            assert self.handler is not None
            return self.handler.data_received(data)
        if self.chunks is not None:
            self.chunks.append(data)
        return None

    def finish(self) -> None:
        if self.stream_request_body:
            _resolve(self.request._body_future)
            return
        chunks = self.chunks
        if chunks:
            self.request.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            try:
                self.request._parse_body()
            except httputil.HTTPInputError as e:
                # A body that does not parse as the form its headers claim is
                # the client's mistake: a 400 page through the application's
                # error handling (its write_error), logged once, no traceback.
                gen_log.warning("Invalid body: %s", e)
                self.handler_class = ErrorHandler
                self.handler_kwargs = {"status_code": 400}
        self.execute()

    def on_connection_close(self) -> None:
        if self.stream_request_body:
            assert self.handler is not None
            self.handler._connection_closed()
        else:
            self.chunks = None

    def execute(self) -> Optional[Awaitable[None]]:
        settings = self.application.settings
        if not settings.get("compiled_template_cache", True):
            with RequestHandler._template_loader_lock:
                for loader in RequestHandler._template_loaders.values():
                    loader.reset()
        if not settings.get("static_hash_cache", True):
            settings.get("static_handler_class", StaticFileHandler).reset()
        if self.handler_kwargs:
            handler = self.handler_class(self.application, self.request, **self.handler_kwargs)
        else:
            handler = self.handler_class(self.application, self.request)
        self.handler = handler
        transforms = self.application.transforms
        if transforms:
            transforms = [t(self.request) for t in transforms]  # type: ignore[misc]
        if self.stream_request_body:
            handler._prepared_future = asyncio.get_running_loop().create_future()
        handler._start(transforms, self.path_args, self.path_kwargs)  # type: ignore[arg-type]
        return handler._prepared_future


_default_get_handler_delegate = Application.get_handler_delegate


# -- signed values -----------------------------------------------------------


def create_signed_value(
    secret: _CookieSecretTypes,
    name: str,
    value: Union[str, bytes],
    version: Optional[int] = None,
    clock: Optional[Callable[[], float]] = None,
    key_version: Optional[int] = None,
) -> bytes:
    """Sign ``value`` so that it can be given to a client and checked later.

    The result (bytes) holds the base64 value, a timestamp and an HMAC over
    them and ``name``; `decode_signed_value` with the same secret and name
    returns the value. ``version`` 2 (the default) uses HMAC-SHA256 and
    supports key rotation: ``secret`` may be a dict of secrets by key version,
    with ``key_version`` naming the one to sign with. ``clock`` replaces
    `time.time` (for tests).
    """
    if version is None:
        version = DEFAULT_SIGNED_VALUE_VERSION
    if clock is None:
        clock = time.time
    timestamp = utf8(str(int(clock())))
    encoded = base64.b64encode(utf8(value))
    if version == 1:
        if isinstance(secret, dict):
            raise ValueError("signed value version 1 does not support a dict of secrets")
        signature = _create_signature_v1(secret, name, encoded, timestamp)
        return b"|".join([encoded, timestamp, signature])
    if version == 2:
        if isinstance(secret, dict):
            if key_version is None:
                raise ValueError("key_version must be set when secret is a dict")
            try:
                secret = secret[key_version]
            except KeyError:
                raise ValueError("key_version %r is not a key of the secret dict" % key_version) from None
        signed = b"|".join(
            [
                b"2",
                _format_field(utf8(str(key_version or 0))),
                _format_field(timestamp),
                _format_field(utf8(name)),
                _format_field(encoded),
                b"",
            ]
        )
        return signed + _create_signature_v2(secret, signed)
    raise ValueError("Unsupported signed value version %r" % (version,))


def _format_field(data: bytes) -> bytes:
    return b"%d:%s" % (len(data), data)


def _get_version(value: bytes) -> int:
    """The format version of a signed value.

    Version 1 has no version field: it starts with base64 data, which can
    look like a number. A real version field is short (at most three
    digits, no leading zero), while a base64 value is at least four
    characters, so anything else is version 1.
    """
    field, sep, _ = value.partition(b"|")
    if sep and 1 <= len(field) <= 3 and field.isdigit() and not field.startswith(b"0"):
        return int(field)
    return 1


def decode_signed_value(
    secret: _CookieSecretTypes,
    name: str,
    value: Union[None, str, bytes],
    max_age_days: float = 31,
    clock: Optional[Callable[[], float]] = None,
    min_version: Optional[int] = None,
) -> Optional[bytes]:
    """The value signed by `create_signed_value`, or None if it does not verify.

    None when the signature is wrong (tampering, other secret or name), the
    value is older than ``max_age_days`` or older in format than
    ``min_version`` (default 1), or it is malformed. A dict ``secret`` is
    looked up by the key version recorded in the value.
    """
    if clock is None:
        clock = time.time
    if min_version is None:
        min_version = DEFAULT_SIGNED_VALUE_MIN_VERSION
    if min_version > MAX_SUPPORTED_SIGNED_VALUE_VERSION:
        raise ValueError("Unsupported min_version %d" % min_version)
    if not value:
        return None
    data = utf8(value)
    version = _get_version(data)
    if version < min_version:
        return None
    if version == 1:
        if isinstance(secret, dict):
            return None
        return _decode_signed_value_v1(secret, name, data, max_age_days, clock)
    if version == 2:
        return _decode_signed_value_v2(secret, name, data, max_age_days, clock)
    return None


def _create_signature_v1(secret: Union[str, bytes], *parts: Union[str, bytes]) -> bytes:
    mac = hmac.new(utf8(secret), digestmod=hashlib.sha1)
    for part in parts:
        mac.update(utf8(part))
    return utf8(mac.hexdigest())


def _create_signature_v2(secret: Union[str, bytes], s: bytes) -> bytes:
    mac = hmac.new(utf8(secret), digestmod=hashlib.sha256)
    mac.update(utf8(s))
    return utf8(mac.hexdigest())


def _decode_signed_value_v1(
    secret: Union[str, bytes],
    name: str,
    value: bytes,
    max_age_days: float,
    clock: Callable[[], float],
) -> Optional[bytes]:
    parts = value.split(b"|")
    if len(parts) != 3:
        return None
    encoded, timestamp_field, signature = parts
    expected = _create_signature_v1(secret, name, encoded, timestamp_field)
    if not hmac.compare_digest(signature, expected):
        gen_log.warning("Invalid cookie signature for %r", name)
        return None
    if not timestamp_field.isdigit() or not timestamp_field.isascii():
        return None
    timestamp = int(timestamp_field)
    now = clock()
    if timestamp < now - max_age_days * _DAY:
        gen_log.warning("Expired cookie %r", name)
        return None
    if timestamp > now + _MAX_FUTURE_TIMESTAMP:
        # The v1 format lets digits move between the value and the timestamp
        # without changing the signature; a far-future date is the symptom.
        gen_log.warning("Cookie timestamp in future; possible tampering %r", name)
        return None
    if timestamp_field.startswith(b"0"):
        gen_log.warning("Tampered cookie %r", name)
        return None
    try:
        return base64.b64decode(encoded)
    except (binascii.Error, ValueError):
        return None


def _decode_fields_v2(value: bytes) -> tuple[int, bytes, bytes, bytes, bytes]:
    """Split a v2 signed value into (key version, timestamp, name, value,
    signature); ValueError if it does not follow the format."""

    def consume(rest: bytes) -> tuple[bytes, bytes]:
        length, sep, rest = rest.partition(b":")
        if not sep or not _FIELD_LENGTH.match(length):
            raise ValueError("malformed v2 signed value field")
        n = int(length)
        if rest[n : n + 1] != b"|":
            raise ValueError("malformed v2 signed value field")
        return rest[:n], rest[n + 1 :]

    rest = value[2:]  # skip "2|"
    key_version, rest = consume(rest)
    timestamp, rest = consume(rest)
    name_field, rest = consume(rest)
    value_field, signature = consume(rest)
    if not key_version.isdigit() or not key_version.isascii():
        raise ValueError("malformed v2 key version")
    return int(key_version), timestamp, name_field, value_field, signature


def _decode_signed_value_v2(
    secret: _CookieSecretTypes,
    name: str,
    value: bytes,
    max_age_days: float,
    clock: Callable[[], float],
) -> Optional[bytes]:
    try:
        key_version, timestamp_field, name_field, value_field, signature = _decode_fields_v2(value)
    except ValueError:
        return None
    if isinstance(secret, dict):
        try:
            secret = secret[key_version]
        except KeyError:
            return None
    signed = value[: len(value) - len(signature)]
    expected = _create_signature_v2(secret, signed)
    if not hmac.compare_digest(signature, expected):
        return None
    if name_field != utf8(name):
        return None
    if not timestamp_field.isdigit() or not timestamp_field.isascii():
        return None
    timestamp = int(timestamp_field)
    if timestamp < clock() - max_age_days * _DAY:
        return None
    try:
        return base64.b64decode(value_field)
    except (binascii.Error, ValueError):
        return None


def get_signature_key_version(value: Union[str, bytes]) -> Optional[int]:
    """The key version recorded in a signed value (None for version 1 values
    or malformed ones)."""
    data = utf8(value)
    if _get_version(data) < 2:
        return None
    try:
        key_version, _, _, _, _ = _decode_fields_v2(data)
    except ValueError:
        return None
    return key_version
