"""Support for testing asynchronous code with `unittest`.

* `AsyncTestCase` gives each test a fresh `.IOLoop`; `gen_test` runs a
  coroutine test method on it.
* `AsyncHTTPTestCase` / `AsyncHTTPSTestCase` also start an HTTP(S) server
  for an application and offer `AsyncHTTPTestCase.fetch`.
* `ExpectLog` asserts that a log message is emitted (and swallows it).
* `bind_unused_port` gives a listening socket on a free loopback port.

Example::

    class MyTest(AsyncTestCase):
        @gen_test
        async def test_sleep(self):
            await asyncio.sleep(0.01)
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import re
import signal
import socket
import sys
import types
import unittest
import warnings
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, Optional, TypeVar, Union, overload

from squall import gen
from squall.ioloop import IOLoop, TimeoutError
from squall.log import app_log
from squall.util import raise_exc_info

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

__all__ = [
    "AsyncHTTPSTestCase",
    "AsyncHTTPTestCase",
    "AsyncTestCase",
    "ExpectLog",
    "bind_unused_port",
    "gen_test",
    "get_async_test_timeout",
    "main",
    "setup_with_context_manager",
]

_T = TypeVar("_T")

#: Seconds `AsyncTestCase.wait` and `gen_test` allow by default; the
#: environment variable ``ASYNC_TEST_TIMEOUT`` overrides it (Tornado's value).
DEFAULT_ASYNC_TEST_TIMEOUT = 5.0

#: Listen backlog of `bind_unused_port` sockets (the common default of
#: Tornado's ``bind_sockets`` and of many servers).
_LISTEN_BACKLOG = 128


def bind_unused_port(
    reuse_port: bool = False, address: str = "127.0.0.1"
) -> tuple[socket.socket, int]:
    """Bind a listening, non-blocking socket to a free port on ``address``.

    Returns ``(socket, port)``. The port is chosen by the kernel (port 0),
    so tests running in parallel never collide. ``reuse_port`` sets
    ``SO_REUSEPORT``.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            if not hasattr(socket, "SO_REUSEPORT"):
                raise ValueError("the platform does not support SO_REUSEPORT")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address, 0))
        sock.listen(_LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock, sock.getsockname()[1]


def get_async_test_timeout() -> float:
    """Return the default timeout of `AsyncTestCase.wait` and `gen_test`:
    ``ASYNC_TEST_TIMEOUT`` from the environment, else 5 seconds."""
    env = os.environ.get("ASYNC_TEST_TIMEOUT")
    if env is not None:
        try:
            return float(env)
        except ValueError:
            raise ValueError(f"ASYNC_TEST_TIMEOUT must be a number of seconds, got {env!r}") from None
    return DEFAULT_ASYNC_TEST_TIMEOUT


def setup_with_context_manager(testcase: unittest.TestCase, cm: AbstractContextManager[_T]) -> _T:
    """Enter a context manager for the rest of a test and exit it at
    cleanup (after ``tearDown``). Returns what ``__enter__`` returned."""
    value = cm.__enter__()
    testcase.addCleanup(cm.__exit__, None, None, None)
    return value


# Loggers whose "Exception in callback" records mean a callback raised: the
# IOLoop's (squall.application) and asyncio's own, for raw loop callbacks.
_CALLBACK_ERROR_LOGGERS = ("squall.application", "asyncio")


class _CallbackErrorRecorder(logging.Handler):
    """Fails the running test when a callback's exception is logged.

    It is a handler, not a filter, so a message that an `ExpectLog` block
    expects (and filters out) never reaches it.
    """

    def __init__(self, test: AsyncTestCase) -> None:
        super().__init__(logging.ERROR)
        self._test = test

    def emit(self, record: logging.LogRecord) -> None:
        exc_info = record.exc_info
        if exc_info and exc_info[1] is not None and record.getMessage().startswith(
            "Exception in callback"
        ):
            self._test._handle_exception(*exc_info)


class AsyncTestCase(unittest.TestCase):
    """A `unittest.TestCase` with a fresh `.IOLoop` for each test.

    ``self.io_loop`` is created in `setUp` (by `get_new_ioloop`) and is the
    thread's current loop during the test; `tearDown` cancels the tasks
    still pending on it and closes it. Test methods that are coroutines
    must be decorated with `gen_test`. For callback-style code, `stop` and
    `wait` run the loop until a callback says the test can continue::

        def test_timer(self):
            self.io_loop.call_later(0.01, self.stop, "done")
            self.assertEqual(self.wait(), "done")

    A callback that raises (its exception logged as "Exception in
    callback" by the IOLoop or by asyncio) fails the test, unless an
    `ExpectLog` block expects the message. Subclasses overriding `setUp` or
    `tearDown` must call ``super()``.
    """

    def __init__(self, methodName: str = "runTest") -> None:
        super().__init__(methodName)
        self.__stopped = False
        self.__running = False
        self.__failure: Optional[tuple[Any, Any, Any]] = None
        self.__stop_args: Any = None
        self.__timeout: Optional[object] = None
        # The generator or coroutine of the running gen_test method, so a
        # timeout can be thrown into it to show where the test was stuck.
        self._test_generator: Optional[Union[Generator[Any, Any, Any], Coroutine[Any, Any, Any]]] = None

    def setUp(self) -> None:
        super().setUp()
        self.io_loop = self.get_new_ioloop()
        asyncio.set_event_loop(self.io_loop.asyncio_loop)
        self.__recorder = _CallbackErrorRecorder(self)
        for name in _CALLBACK_ERROR_LOGGERS:
            logging.getLogger(name).addHandler(self.__recorder)

    def tearDown(self) -> None:
        # Cancel what the test left running, and let the cancellations run,
        # so no "Task was destroyed but it is pending" appears at exit.
        asyncio_loop = self.io_loop.asyncio_loop
        if not asyncio_loop.is_closed():
            tasks = [t for t in asyncio.all_tasks(asyncio_loop) if not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                done, pending = self.io_loop.run_sync(lambda: asyncio.wait(tasks))
                for task in done:
                    if not task.cancelled() and task.exception() is not None:
                        app_log.error(
                            "Exception in task left running by the test",
                            exc_info=task.exception(),
                        )
        asyncio.set_event_loop(None)
        if not asyncio_loop.is_closed():
            self.io_loop.close(all_fds=True)
        for name in _CALLBACK_ERROR_LOGGERS:
            logging.getLogger(name).removeHandler(self.__recorder)
        super().tearDown()
        # Surface a failure recorded after the test method returned.
        self.__rethrow()

    def get_new_ioloop(self) -> IOLoop:
        """Return the `.IOLoop` for one test; by default a new one.

        Override to return, for example, a loop configured differently.
        """
        loop: IOLoop = IOLoop(make_current=False)
        return loop

    def _handle_exception(self, typ: type[BaseException], value: BaseException,
                          tb: Optional[types.TracebackType]) -> bool:
        if self.__failure is None:
            self.__failure = (typ, value, tb)
        else:
            app_log.error("multiple unhandled exceptions in test", exc_info=(typ, value, tb))
        self.stop()
        return True

    def __rethrow(self) -> None:
        if self.__failure is not None:
            failure = self.__failure
            self.__failure = None
            raise_exc_info(failure)

    def run(self, result: Optional[unittest.TestResult] = None) -> Optional[unittest.TestResult]:
        ret = super().run(result)
        # An exception recorded by stop()/wait() machinery that nothing
        # surfaced yet must still fail the test.
        self.__rethrow()
        return ret

    def _callTestMethod(self, method: Callable[[], Any]) -> None:
        result = method()
        if isinstance(result, Generator) or inspect.iscoroutine(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(
                "Generator and coroutine test methods should be decorated with "
                "squall.testing.gen_test"
            )
        if result is not None:
            raise ValueError(f"Return value from test method ignored: {result!r}")

    def stop(self, _arg: Any = None, **kwargs: Any) -> None:
        """Stop the loop started by `wait`, making `wait` return ``_arg``
        (or the keyword arguments as a dict).

        Calling `stop` before `wait` makes the next `wait` return at once.
        """
        if _arg is not None and kwargs:
            raise ValueError("stop() takes a positional argument or keyword arguments, not both")
        self.__stop_args = kwargs or _arg
        if self.__running:
            self.io_loop.stop()
            self.__running = False
        self.__stopped = True

    def wait(self, condition: Optional[Callable[..., bool]] = None,
             timeout: Optional[float] = None) -> Any:
        """Run the loop until `stop` is called (and ``condition()``, if
        given, is true), then return the argument given to `stop`.

        Fails the test if ``timeout`` seconds pass first (default:
        `get_async_test_timeout`; 0 or None-with-no-default means no limit).
        """
        if timeout is None:
            timeout = get_async_test_timeout()
        if not self.__stopped:
            if timeout:

                def on_timeout() -> None:
                    try:
                        raise self.failureException(
                            f"Async operation timed out after {timeout} seconds"
                        )
                    except Exception:
                        self.__failure = sys.exc_info()
                    self.stop()

                self.__timeout = self.io_loop.add_timeout(self.io_loop.time() + timeout, on_timeout)
            while True:
                self.__running = True
                self.io_loop.start()
                if self.__failure is not None or condition is None or condition():
                    break
            if self.__timeout is not None:
                self.io_loop.remove_timeout(self.__timeout)
                self.__timeout = None
        assert self.__stopped
        self.__stopped = False
        self.__rethrow()
        result = self.__stop_args
        self.__stop_args = None
        return result


_TestMethod = Callable[..., Union[Generator[Any, Any, Any], Coroutine[Any, Any, Any], None]]


@overload
def gen_test(*, timeout: Optional[float] = None) -> Callable[[_TestMethod], Callable[..., None]]: ...


@overload
def gen_test(func: _TestMethod) -> Callable[..., None]: ...


def gen_test(func: Optional[_TestMethod] = None, timeout: Optional[float] = None) -> Any:
    """Run a coroutine test method (``async def`` or generator) on
    ``self.io_loop`` of an `AsyncTestCase`.

    Usable bare (``@gen_test``) or with a timeout in seconds
    (``@gen_test(timeout=10)``); the default is `get_async_test_timeout`.
    A test that exceeds it fails with `TimeoutError` raised at the point
    where the test was waiting.
    """

    def wrap(f: _TestMethod) -> Callable[..., None]:
        @functools.wraps(f)
        def remember_generator(self: AsyncTestCase, *args: Any, **kwargs: Any) -> Any:
            result = f(self, *args, **kwargs)
            if isinstance(result, Generator) or inspect.iscoroutine(result):
                self._test_generator = result
            else:
                self._test_generator = None
            return result

        if inspect.iscoroutinefunction(f):
            body: Callable[..., Any] = remember_generator
        else:
            body = gen.coroutine(remember_generator)

        @functools.wraps(f)
        def run_test(self: AsyncTestCase, *args: Any, **kwargs: Any) -> Any:
            limit = timeout if timeout is not None else get_async_test_timeout()
            try:
                return self.io_loop.run_sync(
                    functools.partial(body, self, *args, **kwargs), timeout=limit
                )
            except TimeoutError as e:
                # run_sync's traceback only shows the loop; throwing the
                # error into the suspended test shows the line it waited on.
                stuck = self._test_generator
                if stuck is not None and _is_suspended(stuck):
                    stuck.throw(e)
                raise

        # Tell test runners that this is no longer a generator/coroutine.
        return run_test

    if func is not None:
        return wrap(func)
    return wrap


def _is_suspended(generator: Any) -> bool:
    if isinstance(generator, types.GeneratorType):
        return inspect.getgeneratorstate(generator) == inspect.GEN_SUSPENDED
    if inspect.iscoroutine(generator):
        return inspect.getcoroutinestate(generator) == inspect.CORO_SUSPENDED
    return False


# The default tests of nose-like runners would try to collect gen_test.
gen_test.__test__ = False  # type: ignore[attr-defined]


class ExpectLog(logging.Filter):
    """Context manager that expects (and swallows) a log message.

    ``regex`` must match the start of the formatted message (`re.match`).
    With ``required`` (the default) leaving the block without a match
    raises an exception. ``level`` is the level the message must have
    (for example ``logging.WARNING``); it also lowers the logger's level for
    the duration so the message is emitted at all. Matching records are not
    passed on to handlers.

    The filter is attached to ``logger`` itself (a `logging.Logger` or its
    name), so messages logged on child loggers that propagate up are not
    seen; name the logger that actually emits.
    """

    def __init__(
        self,
        logger: Union[logging.Logger, str],
        regex: str,
        required: bool = True,
        level: Optional[int] = None,
    ) -> None:
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        self.logger = logger
        self.regex = re.compile(regex)
        self.required = required
        self.matched = False
        self.logged_stack = False
        self.level = level
        self.orig_level: Optional[int] = None
        # Counts matches below WARNING accepted without an explicit level.
        self.deprecated_level_matched = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            self.logged_stack = True
        message = record.getMessage()
        if not self.regex.match(message):
            return True
        if self.level is None and record.levelno < logging.WARNING:
            self.deprecated_level_matched += 1
        if self.level is not None and record.levelno != self.level:
            app_log.warning(
                "Got expected log message %r at unexpected level (%s vs %s)",
                message,
                logging.getLevelName(self.level),
                record.levelname,
            )
            return True
        self.matched = True
        return False

    def __enter__(self) -> ExpectLog:
        if self.level is not None and self.level < self.logger.getEffectiveLevel():
            self.orig_level = self.logger.level
            self.logger.setLevel(self.level)
        self.logger.addFilter(self)
        return self

    def __exit__(self, typ: Optional[type[BaseException]], value: Optional[BaseException],
                 tb: Optional[types.TracebackType]) -> None:
        if self.orig_level is not None:
            self.logger.setLevel(self.orig_level)
        self.logger.removeFilter(self)
        if not typ and self.required and not self.matched:
            raise Exception("did not get expected log message")
        if not typ and self.required and self.deprecated_level_matched >= 1:
            warnings.warn(
                "ExpectLog matched at INFO or below without level argument",
                DeprecationWarning,
                stacklevel=2,
            )


def main(**kwargs: Any) -> None:
    """Run tests from the command line, like `unittest.main`, after
    parsing squall's command-line options (`squall.options`).

    With no test names on the command line, runs the ``all`` attribute of
    ``__main__`` (a function returning a suite). ``kwargs`` go to
    `unittest.main`.
    """
    from squall.options import define, options, parse_command_line

    define("exception_on_interrupt", type=bool, default=True,
           help="If true (default), ctrl-c raises a KeyboardInterrupt exception; "
           "if false, it dumps the stack and keeps running")
    define("verbose", type=bool)
    define("quiet", type=bool)
    define("failfast", type=bool)
    define("catch", type=bool)
    define("buffer", type=bool)
    argv = [sys.argv[0]] + parse_command_line(sys.argv)
    if not options.exception_on_interrupt:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    for name in ("failfast", "catch", "buffer"):
        if options[name] is not None:
            kwargs[name] = options[name]
    if options.verbose is not None:
        kwargs["verbosity"] = 2
    if options.quiet is not None:
        kwargs["verbosity"] = 0
    if len(argv) > 1:
        unittest.main(module=None, argv=argv, **kwargs)
    else:
        unittest.main(defaultTest="all", argv=argv, **kwargs)


class AsyncHTTPTestCase(AsyncTestCase):
    """An `AsyncTestCase` that serves an application over HTTP.

    Override `get_app` to return the `squall.web.Application` (or any
    `squall.httputil.HTTPServerConnectionDelegate`) under test. `setUp`
    starts an `squall.httpserver.HTTPServer` for it on a free loopback port;
    `fetch` requests it synchronously and `get_url` builds its URLs::

        class HelloTest(AsyncHTTPTestCase):
            def get_app(self):
                return Application([("/", HelloHandler)])

            def test_hello(self):
                response = self.fetch("/")
                self.assertEqual(response.body, b"Hello")
    """

    def setUp(self) -> None:
        super().setUp()
        sock, port = bind_unused_port()
        self.__port = port
        self.http_client = self.get_http_client()
        self._app = self.get_app()
        self.http_server = self.get_http_server()
        self.http_server.add_sockets([sock])

    def get_http_client(self) -> Any:
        """Return the `squall.httpclient.AsyncHTTPClient` used by `fetch`."""
        from squall.httpclient import AsyncHTTPClient

        return AsyncHTTPClient()

    def get_http_server(self) -> Any:
        """Return the (not yet listening) `squall.httpserver.HTTPServer`."""
        from squall.httpserver import HTTPServer

        return HTTPServer(self._app, **self.get_httpserver_options())

    def get_app(self) -> Any:
        """Return the application to test. Subclasses must override it."""
        raise NotImplementedError()

    def fetch(self, path: str, raise_error: bool = False, **kwargs: Any) -> Any:
        """Fetch ``path`` from the test server and return the response.

        ``path`` is relative to the server (``"/index"``) or an absolute
        ``http(s)://`` URL, which is fetched as is. Unlike the HTTP client,
        an error status is returned as a response, not raised, unless
        ``raise_error`` is True. Runs the loop until the response arrives
        (at most `get_async_test_timeout` seconds).
        """
        if path.lower().startswith(("http://", "https://")):
            url = path
        else:
            url = self.get_url(path)
        return self.io_loop.run_sync(
            functools.partial(self.http_client.fetch, url, raise_error=raise_error, **kwargs),
            timeout=get_async_test_timeout(),
        )

    def get_httpserver_options(self) -> dict[str, Any]:
        """Return keyword arguments for the `HTTPServer` (override to add
        options such as ``xheaders``)."""
        return {}

    def get_http_port(self) -> int:
        """Return the port the test server listens on."""
        return self.__port

    def get_protocol(self) -> str:
        """Return the URL scheme of the test server (``"http"``)."""
        return "http"

    def get_url(self, path: str) -> str:
        """Return the absolute URL of ``path`` on the test server."""
        return f"{self.get_protocol()}://127.0.0.1:{self.get_http_port()}{path}"

    def tearDown(self) -> None:
        self.http_server.stop()
        self.io_loop.run_sync(self.http_server.close_all_connections, timeout=get_async_test_timeout())
        self.http_client.close()
        # Drop references so the application can be garbage collected even
        # though unittest keeps the test case object alive.
        del self.http_server
        del self._app
        super().tearDown()


class AsyncHTTPSTestCase(AsyncHTTPTestCase):
    """`AsyncHTTPTestCase` over HTTPS, with a self-signed certificate for
    ``localhost`` shipped with squall (certificate checks are disabled in
    the test client)."""

    def get_http_client(self) -> Any:
        from squall.httpclient import AsyncHTTPClient

        return AsyncHTTPClient(force_instance=True, defaults=dict(validate_cert=False))

    def get_httpserver_options(self) -> dict[str, Any]:
        return dict(ssl_options=self.get_ssl_options())

    def get_ssl_options(self) -> dict[str, Any]:
        """Return the server's ``ssl_options`` (override to use another
        certificate)."""
        return AsyncHTTPSTestCase.default_ssl_options()

    @staticmethod
    def default_ssl_options() -> dict[str, Any]:
        """Return ``ssl_options`` using squall's bundled test certificate."""
        directory = os.path.join(os.path.dirname(os.path.abspath(__file__)), "test")
        return dict(
            certfile=os.path.join(directory, "test.crt"),
            keyfile=os.path.join(directory, "test.key"),
        )

    def get_protocol(self) -> str:
        return "https"
