"""Serve WSGI applications (Django, Flask, ...) from squall's HTTP server.

`WSGIContainer` turns a PEP 3333 application into the request callable that
`.HTTPServer` and `.web.FallbackHandler` take, so a WSGI site can share a
process (and a port) with native squall handlers::

    from django.core.wsgi import get_wsgi_application

    container = WSGIContainer(get_wsgi_application())
    app = squall.web.Application([
        (r"/ws", ChatSocket),                        # native squall
        (r".*", squall.web.FallbackHandler, dict(fallback=container)),
    ])

WSGI is a blocking interface. Unlike Tornado, which runs the application on
the event loop thread (so one slow view stalls every other request),
squall runs it on a thread pool by default; pass
``executor=squall.concurrent.dummy_executor`` (or ``executor=None``) to get
Tornado's behaviour back, or your own `concurrent.futures.Executor` to size
the pool.

The response is streamed: each piece the application's iterable produces is
written to the client (and waited for, when the client reads slowly) as it
comes, and the iterable's ``close()`` is always called.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import os
import re
import sys
import threading
from types import TracebackType
from typing import Any, Callable, Iterable, Optional

import squall
from squall import escape, httputil
from squall.concurrent import DummyExecutor, dummy_executor
from squall.iostream import StreamClosedError
from squall.log import access_log, app_log

__all__ = ["HTTPRequest", "WSGIContainer", "to_wsgi_str"]

#: Kept for code written against Tornado 4, where the WSGI request class had
#: this name: it is `.httputil.HTTPServerRequest`.
HTTPRequest = httputil.HTTPServerRequest

_ExcInfo = tuple[type[BaseException], BaseException, Optional[TracebackType]]
_StartResponse = Callable[..., Callable[[bytes], None]]
_WSGIApp = Callable[[dict[str, Any], _StartResponse], Iterable[bytes]]

# Threads in the shared default pool: CPython's own default for a
# ThreadPoolExecutor (min(32, cpu_count + 4)), meant for I/O-bound work such
# as views waiting on a database.
_DEFAULT_MAX_WORKERS = min(32, (os.cpu_count() or 1) + 4)

_SERVER_HEADER = "SquallServer/%s" % squall.version

# PEP 3333: "200 OK" -- three digits, then a space and a reason phrase
# (wsgiref's validator insists on the space). No CR or LF: they would split
# the response.
_STATUS_RE = re.compile(r"([1-9][0-9][0-9]) ([^\r\n]*)")

_ERROR_BODY = b"<html><title>500: Internal Server Error</title><body>500: Internal Server Error</body></html>"

_END = object()

_default_pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
_default_pool_lock = threading.Lock()


class _SharedPool:
    """The ``executor`` default: one thread pool shared by every container.

    It is squall's own pool rather than the event loop's default executor,
    which also serves DNS look-ups: a burst of slow views must not hold those
    up.
    """

    def __repr__(self) -> str:
        return "<squall's shared WSGI thread pool>"


_SHARED_POOL: Any = _SharedPool()


def _shared_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _default_pool
    with _default_pool_lock:
        if _default_pool is None:
            _default_pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=_DEFAULT_MAX_WORKERS, thread_name_prefix="squall-wsgi"
            )
        return _default_pool


def to_wsgi_str(s: bytes) -> str:
    """Decode ``s`` as WSGI's "native strings" are: latin-1, one character
    per byte, so that the original bytes can be recovered with
    ``.encode("latin-1")``."""
    if not isinstance(s, bytes):
        raise TypeError(f"to_wsgi_str() needs bytes, got {s!r}")
    return s.decode("latin-1")


class WSGIContainer:
    """Makes a WSGI application (PEP 3333) usable as the request callable of
    an `.HTTPServer`, a `.routing.Router` rule or a `.web.FallbackHandler`.

    ``executor`` is where the application (and the iteration of the body it
    returns) runs:

    * left out: a thread pool that all containers share, sized like
      CPython's default pool, so a slow view does not block the event loop;
    * a `concurrent.futures.Executor` of your own (a bigger thread pool);
    * ``None`` or `squall.concurrent.dummy_executor`: on the event loop
      thread, as Tornado does. Requests are then served one at a time, and
      any blocking in the application blocks the whole server.

    The application receives a complete ``environ``: the CGI variables
    (``REQUEST_METHOD``, ``PATH_INFO`` percent-decoded, ``QUERY_STRING``,
    ``SERVER_NAME``/``SERVER_PORT`` from the ``Host`` header,
    ``REMOTE_ADDR``, ``CONTENT_TYPE``/``CONTENT_LENGTH``, ``HTTP_*`` for the
    other headers) and the ``wsgi.*`` keys, with the request body in
    ``wsgi.input``. Request headers whose names contain an underscore are
    left out: ``X_User`` and ``X-User`` would both become ``HTTP_X_USER``,
    letting a client forge a header a proxy sets (nginx drops them too).

    The response: ``start_response(status, headers, exc_info=None)`` may
    be called again with ``exc_info`` until the headers have gone out (then
    it re-raises the error), and returns the legacy ``write(data)``
    callable. Headers are sent with the first non-empty piece of body.
    A list or tuple body is sent in one write with a ``Content-Length``;
    any other iterable is streamed (chunked, unless the application gave a
    ``Content-Length``). ``Content-Type: text/html; charset=UTF-8`` and a
    ``Server`` header are added when missing, as Tornado does.

    If the application raises before its headers are sent, the client gets a
    500 page; after, the connection is closed so that the client sees the
    response is cut short. Either way the error is logged to
    ``squall.application``. Each request is logged to ``squall.access``.
    """

    def __init__(
        self, wsgi_application: _WSGIApp, executor: Optional[concurrent.futures.Executor] = _SHARED_POOL
    ) -> None:
        if not callable(wsgi_application):
            raise TypeError(f"wsgi_application must be callable, got {wsgi_application!r}")
        if executor is None:
            executor = dummy_executor
        elif executor is not _SHARED_POOL and not isinstance(executor, concurrent.futures.Executor):
            raise TypeError(f"executor must be a concurrent.futures.Executor, got {executor!r}")
        self.wsgi_application = wsgi_application
        self.executor: concurrent.futures.Executor = (
            _shared_pool() if executor is _SHARED_POOL else executor
        )
        # The tasks of requests in flight: asyncio keeps only weak references.
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, request: httputil.HTTPServerRequest) -> None:
        """Start serving ``request``; the response is written to its
        connection from a task on the running event loop."""
        task = asyncio.get_running_loop().create_task(self.handle_request(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle_request(self, request: httputil.HTTPServerRequest) -> None:
        """Run the application for ``request`` and write its response; ends
        once the response is complete (or the client has gone)."""
        response = _Response(self, request)
        try:
            await response.run()
        except StreamClosedError:
            # The client went away: there is nobody left to answer.
            response.status = response.status or 499
        except Exception:
            response.fail()
        self._log(response)

    def environ(self, request: httputil.HTTPServerRequest) -> dict[str, Any]:
        """Build the PEP 3333 ``environ`` dictionary for ``request``."""
        host, port = httputil.split_host_and_port(request.host)
        if host.startswith("["):
            host = host[1:-1]
        if port is None:
            port = 443 if request.protocol == "https" else 80
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": to_wsgi_str(escape.url_unescape(request.path, encoding=None, plus=False)),
            "QUERY_STRING": request.query,
            "REMOTE_ADDR": request.remote_ip or "",
            "SERVER_NAME": host,
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": request.version,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": request.protocol,
            "wsgi.input": io.BytesIO(request.body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": not isinstance(self.executor, DummyExecutor),
            "wsgi.multiprocess": _in_worker_process(),
            "wsgi.run_once": False,
        }
        for name, value in request.headers.get_all():
            if "_" in name:
                continue
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
                environ[key] = value
                continue
            key = "HTTP_" + key
            previous = environ.get(key)
            # RFC 9110 5.3: repeated fields mean the same joined with commas.
            environ[key] = value if previous is None else previous + "," + value
        return environ

    def _log(self, response: "_Response") -> None:
        status = response.status or 500
        if status < 400:
            log = access_log.info
        elif status < 500:
            log = access_log.warning
        else:
            log = access_log.error
        request = response.request
        log(
            "%d %s %s (%s) %.2fms",
            status,
            request.method,
            request.uri,
            request.remote_ip,
            1000.0 * request.request_time(),
        )


def _in_worker_process() -> bool:
    # squall.process is only ever imported by code that forks workers.
    process = sys.modules.get("squall.process")
    return process is not None and process.task_id() is not None


class _Response:
    """One request's trip through the WSGI application."""

    __slots__ = (
        "container", "request", "status", "reason", "headers", "headers_sent",
        "_loop", "_loop_thread", "_inline", "_pending",
    )

    def __init__(self, container: WSGIContainer, request: httputil.HTTPServerRequest) -> None:
        self.container = container
        self.request = request
        self.status: Optional[int] = None
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.headers_sent = False
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._inline = isinstance(container.executor, DummyExecutor)
        # write() calls made on the loop thread, to send once it is free.
        self._pending: list[bytes] = []

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._inline:
            result = fn(*args)
        else:
            result = await self._loop.run_in_executor(self.container.executor, fn, *args)
        if self._pending:
            pending, self._pending = self._pending, []
            for chunk in pending:
                await self._send(chunk)
        return result

    async def run(self) -> None:
        environ = self.container.environ(self.request)
        body = await self._call(self.container.wsgi_application, environ, self.start_response)
        try:
            if isinstance(body, (list, tuple)):
                # Already all in memory: one write, with a Content-Length.
                data = b"".join(body)
                if self.headers_sent:
                    await self._send(data)
                else:
                    await self._send(data, complete=True)
            else:
                iterator = await self._call(iter, body)
                while True:
                    chunk = await self._call(next, iterator, _END)
                    if chunk is _END:
                        break
                    await self._send(chunk)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                await self._call(close)
        if not self.headers_sent:
            await self._send(b"", complete=True)
        self.request.connection.finish()

    def start_response(
        self,
        status: str,
        response_headers: list[tuple[str, str]],
        exc_info: Optional[_ExcInfo] = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                # Do not keep the traceback (and its frames) alive.
                exc_info = None
        elif self.status is not None:
            raise RuntimeError(
                f"start_response({status!r}) called a second time without exc_info"
            )
        match = _STATUS_RE.fullmatch(status) if isinstance(status, str) else None
        if match is None:
            raise ValueError(f"WSGI status must look like '200 OK', got {status!r}")
        if not isinstance(response_headers, list):
            raise TypeError(f"WSGI response headers must be a list, got {response_headers!r}")
        for pair in response_headers:
            if (
                not isinstance(pair, tuple)
                or len(pair) != 2
                or not isinstance(pair[0], str)
                or not isinstance(pair[1], str)
            ):
                raise TypeError(f"WSGI response header must be a (str, str) tuple, got {pair!r}")
        self.status = int(match.group(1))
        self.reason = match.group(2)
        self.headers = response_headers
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333's legacy ``write(data)`` callable."""
        if not isinstance(data, bytes):
            raise TypeError(f"WSGI write() needs bytes, got {data!r}")
        if self.status is None:
            raise RuntimeError("WSGI write() called before start_response()")
        if threading.get_ident() == self._loop_thread:
            # Running on the loop itself: it cannot wait for the client here.
            self._pending.append(data)
        else:
            asyncio.run_coroutine_threadsafe(self._send(data), self._loop).result()

    async def _send(self, data: bytes, complete: bool = False) -> None:
        """Write ``data``, preceded by the headers the first time;
        ``complete`` means ``data`` is the whole body."""
        if self.headers_sent:
            if data:
                await self.request.connection.write(data)
            return
        if not data and not complete:
            # PEP 3333: headers wait for the first non-empty piece of body.
            return
        if self.status is None:
            raise RuntimeError("WSGI application produced a body without calling start_response()")
        headers = httputil.HTTPHeaders()
        for name, value in self.headers:
            headers.add(name, value)
        if self.status >= 200 and self.status not in (204, 304):
            if complete and "Content-Length" not in headers:
                headers["Content-Length"] = str(len(data))
            if "Content-Type" not in headers:
                headers["Content-Type"] = "text/html; charset=UTF-8"
        if "Server" not in headers:
            headers["Server"] = _SERVER_HEADER
        start_line = httputil.ResponseStartLine("HTTP/1.1", self.status, self.reason)
        # write_headers refuses bad headers before anything is sent: only
        # then are the headers out.
        written = self.request.connection.write_headers(start_line, headers, data or None)
        self.headers_sent = True
        await written

    def fail(self) -> None:
        """The application raised: log it, and end the response as best we can."""
        request = self.request
        app_log.error(
            "Uncaught exception in WSGI application %s %s (%s)",
            request.method,
            request.uri,
            request.remote_ip,
            exc_info=True,
        )
        connection = request.connection
        if self.headers_sent:
            # A 200 with half a body must not look complete: cut the
            # connection rather than end the body normally.
            self.status = self.status or 500
            httputil._abort_connection(connection)
            return
        self.status = 500
        headers = httputil.HTTPHeaders(
            {
                "Content-Type": "text/html; charset=UTF-8",
                "Content-Length": str(len(_ERROR_BODY)),
                "Server": _SERVER_HEADER,
            }
        )
        connection.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", 500, "Internal Server Error"), headers, _ERROR_BODY
        )
        self.headers_sent = True
        connection.finish()
