"""Asynchronous and blocking HTTP clients: the request, response and error types.

`AsyncHTTPClient` is the interface; its default implementation is
`squall.simple_httpclient.SimpleAsyncHTTPClient`, an HTTP/1.1 client that
(unlike Tornado's) keeps idle connections open and reuses them. `HTTPClient`
is a blocking wrapper for scripts and tests that have no event loop running::

    async def main():
        client = AsyncHTTPClient()
        response = await client.fetch("http://example.com/")
        print(response.body)

A non-2xx status raises `HTTPClientError` (also known as `HTTPError`) unless
``raise_error=False`` is given; failures that produced no response at all
(refused connections, timeouts, broken streams) raise whatever went wrong,
with status code 599 when they are `HTTPClientError` s.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import io
import ssl
import sys
import time
import weakref
from typing import Any, Awaitable, Callable, Optional, Union, cast

from squall import gen, httputil
from squall.concurrent import (
    Future,
    future_set_exception_unless_cancelled,
    future_set_result_unless_cancelled,
)
from squall.escape import utf8
from squall.ioloop import IOLoop
from squall.util import Configurable

__all__ = [
    "HTTPClient",
    "AsyncHTTPClient",
    "HTTPRequest",
    "HTTPResponse",
    "HTTPClientError",
    "HTTPError",
    "main",
]

_HeadersArg = Union[dict[str, str], httputil.HTTPHeaders, None]


class HTTPClient:
    """A blocking HTTP client with its own private event loop.

    Meant for scripts and tests; in an application use `AsyncHTTPClient`.
    `fetch` blocks until the response arrives::

        client = HTTPClient()
        try:
            print(client.fetch("http://example.com/").body)
        finally:
            client.close()

    It cannot be used while an asyncio loop is running in the same thread.
    Extra keyword arguments are passed to the async client's constructor
    (``async_client_class``, `AsyncHTTPClient` by default), which gets a
    private instance of its own. Idle keep-alive connections are kept between
    calls to `fetch` until `close`.
    """

    def __init__(
        self,
        async_client_class: Optional[type[AsyncHTTPClient]] = None,
        **kwargs: Any,
    ) -> None:
        # Set first so that __del__ has nothing to do if the rest fails.
        self._closed = True
        self._io_loop = IOLoop(make_current=False)
        client_class = AsyncHTTPClient if async_client_class is None else async_client_class

        async def make_client() -> AsyncHTTPClient:
            # The async client binds to the loop current where it is built,
            # so it must be built while the private loop runs.
            await gen.sleep(0)
            return client_class(**kwargs)

        self._async_client: AsyncHTTPClient = self._io_loop.run_sync(make_client)
        self._closed = False

    def __del__(self) -> None:
        # At interpreter exit the OS reclaims everything, and the modules
        # closing needs may already be torn down.
        if not sys.is_finalizing():
            self.close()

    def close(self) -> None:
        """Close the client and its event loop. Further fetches fail."""
        if self._closed:
            return
        self._closed = True
        self._async_client.close()
        # Let the closed connections' transports finish closing before the
        # loop goes away.
        self._io_loop.asyncio_loop.run_until_complete(asyncio.sleep(0))
        self._io_loop.close()

    def fetch(self, request: Union[HTTPRequest, str], **kwargs: Any) -> HTTPResponse:
        """Fetch ``request`` (a URL or an `HTTPRequest`) and return the response.

        Keyword arguments build the `HTTPRequest` when a URL is given. A
        non-2xx response raises `HTTPClientError` unless ``raise_error=False``
        is passed; transport failures always raise.
        """
        if self._closed:
            raise RuntimeError("fetch() called on a closed HTTPClient")
        return cast(
            HTTPResponse,
            self._io_loop.run_sync(functools.partial(self._async_client.fetch, request, **kwargs)),
        )


class AsyncHTTPClient(Configurable):
    """Non-blocking HTTP client, the interface of all implementations.

    ``AsyncHTTPClient()`` returns the configured implementation
    (`~squall.simple_httpclient.SimpleAsyncHTTPClient` unless `configure`
    chose another), and it is a pseudo-singleton: one shared instance per
    `IOLoop`, so constructor arguments take effect only the first time. Pass
    ``force_instance=True`` for a private instance (which you should `close`).

    ``defaults`` (a dict of `HTTPRequest` keyword arguments) fills in what a
    request leaves unset, e.g. ``defaults=dict(user_agent="MyBot/1.0")``.
    Implementation-wide options go through `configure`::

        AsyncHTTPClient.configure(None, max_clients=100)
    """

    _instance_cache: Optional[weakref.WeakKeyDictionary[IOLoop, AsyncHTTPClient]]

    @classmethod
    def configurable_base(cls) -> type[Configurable]:
        return AsyncHTTPClient

    @classmethod
    def configurable_default(cls) -> type[Configurable]:
        from squall.simple_httpclient import SimpleAsyncHTTPClient

        return SimpleAsyncHTTPClient

    @classmethod
    def _async_clients(cls) -> weakref.WeakKeyDictionary[IOLoop, AsyncHTTPClient]:
        # One cache per class, so that each implementation has its own
        # singleton per loop.
        attr_name = "_async_client_dict_" + cls.__name__
        if attr_name not in cls.__dict__:
            setattr(cls, attr_name, weakref.WeakKeyDictionary())
        return cast("weakref.WeakKeyDictionary[IOLoop, AsyncHTTPClient]", getattr(cls, attr_name))

    def __new__(cls, force_instance: bool = False, **kwargs: Any) -> AsyncHTTPClient:
        io_loop = IOLoop.current()
        instance_cache = None if force_instance else cls._async_clients()
        if instance_cache is not None and io_loop in instance_cache:
            return instance_cache[io_loop]
        instance = cast(AsyncHTTPClient, super().__new__(cls, **kwargs))
        # Remember the cache the instance went into: a subclass instance
        # built through the base class lives in the base's cache.
        instance._instance_cache = instance_cache
        if instance_cache is not None:
            instance_cache[instance.io_loop] = instance
        return instance

    def initialize(self, defaults: Optional[dict[str, Any]] = None) -> None:  # type: ignore[override]
        """Set up the client; ``defaults`` override `HTTPRequest`'s defaults."""
        self.io_loop = IOLoop.current()
        self.defaults = dict(HTTPRequest._DEFAULTS)
        if defaults is not None:
            self.defaults.update(defaults)
        self._closed = False

    def close(self) -> None:
        """Release the client's resources (idle connections, timers).

        Rarely needed for the shared instance; required for instances made
        with ``force_instance=True``. Once closed, the shared instance is
        forgotten, so the next ``AsyncHTTPClient()`` builds a fresh one.
        """
        if self._closed:
            return
        self._closed = True
        if self._instance_cache is not None:
            cached = self._instance_cache.pop(self.io_loop, None)
            # A different cached instance means someone replaced the cache
            # entry behind our back; that is a bug worth surfacing.
            if cached is not None and cached is not self:
                raise RuntimeError("inconsistent AsyncHTTPClient cache")

    def fetch(
        self,
        request: Union[str, HTTPRequest],
        raise_error: bool = True,
        **kwargs: Any,
    ) -> Future[HTTPResponse]:
        """Start fetching ``request`` and return a future for the `HTTPResponse`.

        ``request`` is a URL string or an `HTTPRequest`; with a URL, keyword
        arguments are `HTTPRequest` arguments (they are rejected alongside an
        `HTTPRequest` object). Neither the request nor its headers are
        modified, so both can be reused for other fetches.

        With ``raise_error=True`` (the default) a non-2xx response makes the
        future raise `HTTPClientError`; with ``raise_error=False`` the
        response is returned whatever its code. Failures without a response
        (connection refused, timeout, ...) raise in both cases.
        """
        if self._closed:
            raise RuntimeError("fetch() called on closed AsyncHTTPClient")
        if not isinstance(request, HTTPRequest):
            request = HTTPRequest(url=request, **kwargs)
        elif kwargs:
            raise ValueError(
                "kwargs can't be used if request is an HTTPRequest object, got %s"
                % ", ".join(sorted(kwargs))
            )
        request_proxy = _RequestProxy(request, self.defaults)
        future: Future[HTTPResponse] = Future()

        def handle_response(response: HTTPResponse) -> None:
            if response.error is not None:
                if raise_error or not response._error_is_response_code:
                    future_set_exception_unless_cancelled(future, response.error)
                    return
            future_set_result_unless_cancelled(future, response)

        self.fetch_impl(cast(HTTPRequest, request_proxy), handle_response)
        return future

    def fetch_impl(
        self, request: HTTPRequest, callback: Callable[[HTTPResponse], None]
    ) -> None:
        """Perform ``request`` and call ``callback`` with the `HTTPResponse`
        exactly once. Implementations override this."""
        raise NotImplementedError()

    @classmethod
    def configure(
        cls, impl: Union[None, str, type[Configurable]], **kwargs: Any
    ) -> None:
        """Choose the implementation ``AsyncHTTPClient()`` builds.

        ``impl`` is a subclass (or its dotted name), or None for the default;
        ``kwargs`` are constructor arguments for every instance built
        afterwards, such as ``max_clients``::

            AsyncHTTPClient.configure("squall.curl_httpclient.CurlAsyncHTTPClient")
        """
        super().configure(impl, **kwargs)


class HTTPRequest:
    """One HTTP request: a URL and everything about how to fetch it.

    Every argument but ``url`` is optional. Those left as None take the
    client's ``defaults`` and then these built-in values: 20 s connect and
    request timeouts, redirects followed (at most 5), gzip responses
    decompressed, certificates validated, non-standard methods refused.

    - ``method``, ``headers`` (dict or `~squall.httputil.HTTPHeaders`),
      ``body`` (str is encoded as UTF-8; POST, PUT and PATCH need one, other
      methods must not have one unless ``allow_nonstandard_methods``).
    - ``body_producer``: instead of ``body``, a function called with a
      ``write(chunk)`` function, which may return an awaitable; without a
      ``Content-Length`` header the body is sent chunked.
    - ``auth_username`` / ``auth_password`` / ``auth_mode`` (``"basic"``).
      Credentials in the URL (``http://user:pass@host/``) work too.
    - ``connect_timeout`` covers finding and connecting to the server (and
      time spent waiting for a free slot), ``request_timeout`` the whole
      request; in seconds, 0 means none.
    - ``if_modified_since`` (a datetime or timestamp) sets that header.
    - ``follow_redirects`` / ``max_redirects``; ``user_agent``.
    - ``decompress_response`` (``use_gzip`` is its old name): ask for gzip
      and decompress it transparently.
    - ``network_interface``: local IP address to connect from.
    - ``streaming_callback(chunk)``: receives the body piece by piece
      instead of buffering it (``response.body`` is then empty); it may
      return an awaitable, which pauses reading until it is done.
    - ``header_callback(line)``: receives the status line, each header line
      and the final ``"\\r\\n"``, as strings.
    - ``expect_100_continue``: send ``Expect: 100-continue`` and only send
      the body once the server agrees.
    - TLS: ``validate_cert``, ``ca_certs``, ``client_cert`` / ``client_key``,
      or ``ssl_options`` (an `ssl.SSLContext` or a dict of ``ssl`` options)
      overriding them all.
    - ``allow_ipv6`` (default True).
    - ``proxy_*`` and ``prepare_curl_callback`` are for the curl client only.
    """

    # The built-in defaults behind _RequestProxy; AsyncHTTPClient copies
    # them into its own ``defaults``.
    _DEFAULTS: dict[str, Any] = dict(
        connect_timeout=20.0,
        request_timeout=20.0,
        follow_redirects=True,
        max_redirects=5,
        decompress_response=True,
        proxy_password="",
        allow_nonstandard_methods=False,
        validate_cert=True,
    )

    def __init__(
        self,
        url: str,
        method: str = "GET",
        headers: _HeadersArg = None,
        body: Union[bytes, str, None] = None,
        auth_username: Optional[str] = None,
        auth_password: Optional[str] = None,
        auth_mode: Optional[str] = None,
        connect_timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
        if_modified_since: Union[float, datetime.datetime, None] = None,
        follow_redirects: Optional[bool] = None,
        max_redirects: Optional[int] = None,
        user_agent: Optional[str] = None,
        use_gzip: Optional[bool] = None,
        network_interface: Optional[str] = None,
        streaming_callback: Optional[Callable[[bytes], Optional[Awaitable[None]]]] = None,
        header_callback: Optional[Callable[[str], None]] = None,
        prepare_curl_callback: Optional[Callable[[Any], None]] = None,
        proxy_host: Optional[str] = None,
        proxy_port: Optional[int] = None,
        proxy_username: Optional[str] = None,
        proxy_password: Optional[str] = None,
        proxy_auth_mode: Optional[str] = None,
        allow_nonstandard_methods: Optional[bool] = None,
        validate_cert: Optional[bool] = None,
        ca_certs: Optional[str] = None,
        allow_ipv6: Optional[bool] = None,
        client_key: Optional[str] = None,
        client_cert: Optional[str] = None,
        body_producer: Optional[Callable[[Callable[[bytes], Awaitable[None]]], Any]] = None,
        expect_100_continue: bool = False,
        decompress_response: Optional[bool] = None,
        ssl_options: Union[dict[str, Any], ssl.SSLContext, None] = None,
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"HTTPRequest url must be a str, got {url!r}")
        if not isinstance(method, str) or not method:
            raise ValueError(f"HTTPRequest method must be a non-empty str, got {method!r}")
        self.headers = headers  # type: ignore[assignment]
        if if_modified_since:
            self.headers["If-Modified-Since"] = httputil.format_timestamp(if_modified_since)
        self.proxy_host = proxy_host
        self.proxy_port = proxy_port
        self.proxy_username = proxy_username
        self.proxy_password = proxy_password
        self.proxy_auth_mode = proxy_auth_mode
        self.url = url
        self.method = method
        self.body = body  # type: ignore[assignment]
        self.body_producer = body_producer
        self.auth_username = auth_username
        self.auth_password = auth_password
        self.auth_mode = auth_mode
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.follow_redirects = follow_redirects
        self.max_redirects = max_redirects
        self.user_agent = user_agent
        self.decompress_response = use_gzip if decompress_response is None else decompress_response
        self.network_interface = network_interface
        self.streaming_callback = streaming_callback
        self.header_callback = header_callback
        self.prepare_curl_callback = prepare_curl_callback
        self.allow_nonstandard_methods = allow_nonstandard_methods
        self.validate_cert = validate_cert
        self.ca_certs = ca_certs
        self.allow_ipv6 = allow_ipv6
        self.client_key = client_key
        self.client_cert = client_cert
        self.ssl_options = ssl_options
        self.expect_100_continue = expect_100_continue
        #: Wall-clock time (`time.time`) at which the request was created.
        self.start_time = time.time()

    @property
    def headers(self) -> httputil.HTTPHeaders:
        """The request headers; assigning None empties them."""
        return self._headers  # type: ignore[return-value]

    @headers.setter
    def headers(self, value: _HeadersArg) -> None:
        if value is None:
            self._headers: _HeadersArg = httputil.HTTPHeaders()
        else:
            self._headers = value

    @property
    def body(self) -> Optional[bytes]:
        """The request body as bytes (a str is stored UTF-8 encoded)."""
        return self._body

    @body.setter
    def body(self, value: Union[bytes, str, None]) -> None:
        self._body = None if value is None else utf8(value)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.method} {self.url})"


class HTTPResponse:
    """The outcome of a fetch.

    - ``request``: the `HTTPRequest` (the original one, even after redirects).
    - ``code`` and ``reason``: the status (``reason`` defaults to the
      standard phrase for ``code``).
    - ``headers``: `~squall.httputil.HTTPHeaders`.
    - ``effective_url``: the URL finally fetched, after any redirects.
    - ``buffer``: a file-like object over the body; ``body`` is the body as
      bytes (empty when a ``streaming_callback`` took it), read from the
      buffer on first access.
    - ``error``: the exception for a failed request, or None. A non-2xx
      code gets an `HTTPClientError` automatically; `rethrow` raises it.
    - ``request_time``: seconds from the start of the fetch to its end;
      ``start_time``: when it started (`time.time`); ``time_info``: a dict
      of timings of phases of the request (implementation specific).
    """

    # Only set here: the class-level value keeps the attribute present on
    # responses built before `error` is assigned.
    error: Optional[BaseException] = None
    _error_is_response_code = False
    request: HTTPRequest

    def __init__(
        self,
        request: HTTPRequest,
        code: int,
        headers: Optional[httputil.HTTPHeaders] = None,
        buffer: Optional[io.BytesIO] = None,
        effective_url: Optional[str] = None,
        error: Optional[BaseException] = None,
        request_time: Optional[float] = None,
        time_info: Optional[dict[str, float]] = None,
        reason: Optional[str] = None,
        start_time: Optional[float] = None,
    ) -> None:
        if isinstance(request, _RequestProxy):
            self.request = request.request
        else:
            self.request = request
        self.code = code
        self.reason = reason or httputil.responses.get(code, "Unknown")
        self.headers = headers if headers is not None else httputil.HTTPHeaders()
        self.buffer = buffer
        self._body: Optional[bytes] = None
        self.effective_url = self.request.url if effective_url is None else effective_url
        self._error_is_response_code = False
        if error is None:
            if code < 200 or code >= 300:
                self._error_is_response_code = True
                self.error = HTTPClientError(code, message=self.reason, response=self)
            else:
                self.error = None
        else:
            self.error = error
        self.start_time = start_time
        self.request_time = request_time
        self.time_info = time_info or {}

    @property
    def body(self) -> bytes:
        """The response body (``b""`` when there is no buffer)."""
        if self.buffer is None:
            return b""
        if self._body is None:
            self._body = self.buffer.getvalue()
        return self._body

    def rethrow(self) -> None:
        """Raise `error` if the request failed; do nothing otherwise."""
        if self.error:
            raise self.error

    def __repr__(self) -> str:
        fields = ",".join(f"{name}={value!r}" for name, value in sorted(self.__dict__.items()))
        return f"{self.__class__.__name__}({fields})"


class HTTPClientError(Exception):
    """A request that failed, with an HTTP status ``code``.

    A non-2xx response is reported with its own code and the `HTTPResponse`
    in ``response``. Failures with no response at all use code 599 (their
    ``response`` may be None): see `squall.simple_httpclient.HTTPTimeoutError`
    and `~squall.simple_httpclient.HTTPStreamClosedError`. ``message``
    defaults to the standard reason phrase for ``code``.

    ``HTTPError`` is another name for this class (the old one, easily
    confused with `squall.web.HTTPError`).
    """

    def __init__(
        self,
        code: int,
        message: Optional[str] = None,
        response: Optional[HTTPResponse] = None,
    ) -> None:
        self.code = code
        self.message = message or httputil.responses.get(code, "Unknown")
        self.response = response
        super().__init__(code, message, response)

    def __str__(self) -> str:
        return f"HTTP {self.code}: {self.message}"

    # The default repr would include the response, whose repr includes this
    # error: keep it short and non-recursive.
    __repr__ = __str__


HTTPError = HTTPClientError


class _RequestProxy:
    """A read-only view of a request that falls back on the client's defaults
    for every attribute the request left as None."""

    def __init__(self, request: HTTPRequest, defaults: Optional[dict[str, Any]]) -> None:
        # A request is not changed while it is being fetched, so every
        # answer is taken now, into this object's own attributes: a fetch
        # reads some 25 of them, and each first read through __getattr__
        # would cost an AttributeError built and dropped (Python 3.11).
        attributes = self.__dict__
        attributes.update(vars(request))
        attributes["headers"] = request.headers
        attributes["body"] = request.body
        if defaults is not None:
            for name, value in defaults.items():
                if attributes.get(name) is None and hasattr(request, name):
                    attributes[name] = value
        self.request = request
        self.defaults = defaults

    def __getattr__(self, name: str) -> Any:
        # Only for what the request computes (a subclass's properties).
        value = getattr(self.request, name)
        if value is None and self.defaults is not None:
            value = self.defaults.get(name, None)
        self.__dict__[name] = value
        return value


def main() -> None:
    """Fetch the URLs given on the command line and print the responses.

    ``python -m squall.httpclient [--print_headers] [--print_body=false]
    [--follow_redirects=false] [--validate_cert=false] [--proxy_host=H
    --proxy_port=P] URL...``
    """
    from squall.options import define, options, parse_command_line

    define("print_headers", type=bool, default=False)
    define("print_body", type=bool, default=True)
    define("follow_redirects", type=bool, default=True)
    define("validate_cert", type=bool, default=True)
    define("proxy_host", type=str)
    define("proxy_port", type=int)
    args = parse_command_line()
    client = HTTPClient()
    try:
        for arg in args:
            try:
                response = client.fetch(
                    arg,
                    follow_redirects=options.follow_redirects,
                    validate_cert=options.validate_cert,
                    proxy_host=options.proxy_host,
                    proxy_port=options.proxy_port,
                )
            except HTTPClientError as e:
                if e.response is None:
                    raise
                response = e.response
            if options.print_headers:
                print(response.headers)
            if options.print_body:
                print(response.body.decode("utf-8", "replace"))
    finally:
        client.close()


if __name__ == "__main__":
    main()
