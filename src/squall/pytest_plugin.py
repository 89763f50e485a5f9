"""pytest fixtures and a marker for testing squall applications with pytest.

Installed with squall as a ``pytest11`` entry point named ``squall``, so
pytest loads it by itself (``-p no:squall`` turns it off; without the entry
point, ``-p squall.pytest_plugin`` or ``pytest_plugins =
["squall.pytest_plugin"]`` in a ``conftest.py`` turns it on). It only adds
fixtures and a marker: tests that use neither run as before.

Fixtures (each test gets fresh ones):

* ``io_loop``: a new `squall.ioloop.IOLoop` (and asyncio loop), the thread's
  current loop during the test, closed after it with the tasks it left.
* ``squall_app``: the application under test. Override it (a fixture of the
  same name in your ``conftest.py`` or test module) to return your
  `squall.web.Application`; an ``app`` fixture, as pytest-tornado users have,
  is used when there is one.
* ``squall_server``: a `squall.httpserver.HTTPServer` serving ``squall_app`` on a
  free loopback port, stopped after the test with its connections.
* ``squall_port`` and ``base_url`` (``"http://127.0.0.1:PORT"``): where it listens.
* ``http_client``: a `squall.httpclient.AsyncHTTPClient` of its own, closed after.
* ``fetch``: ``await fetch("/path", method="POST", body=...)`` requests the
  server and returns the response; an error status is returned, not raised,
  unless ``raise_error=True`` (as `squall.testing.AsyncHTTPTestCase.fetch`).

Marker: ``@pytest.mark.squall_test`` (or ``@pytest.mark.gen_test``, the name
pytest-tornado uses) runs an ``async def`` test on ``io_loop``, failing it after
``timeout`` seconds (default: `squall.testing.get_async_test_timeout`, 5 s
unless ``ASYNC_TEST_TIMEOUT`` says otherwise)::

    @pytest.fixture
    def squall_app():
        return Application([("/", MainHandler)])

    @pytest.mark.squall_test(timeout=10)
    async def test_home(fetch):
        response = await fetch("/")
        assert response.code == 200
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Optional

import pytest

# squall's modules are imported inside the fixtures, not here: pytest loads
# this plugin in every run of every project where squall is installed, and a
# run that uses none of the fixtures should not pay for the framework.
if TYPE_CHECKING:
    import socket

    from squall.httpclient import AsyncHTTPClient, HTTPResponse
    from squall.httpserver import HTTPServer
    from squall.ioloop import IOLoop

__all__ = [
    "base_url",
    "fetch",
    "http_client",
    "io_loop",
    "squall_app",
    "squall_port",
    "squall_server",
]

#: The names of the marker that runs an ``async def`` test on ``io_loop``.
MARKERS = ("squall_test", "gen_test")


def pytest_configure(config: pytest.Config) -> None:
    for name in MARKERS:
        config.addinivalue_line(
            "markers",
            f"{name}(timeout=None): run an async def test on the io_loop fixture's loop, "
            "failing it after timeout seconds (squall)",
        )


def _marker(item: pytest.Item) -> Optional[pytest.Mark]:
    for name in MARKERS:
        mark = item.get_closest_marker(name)
        if mark is not None:
            return mark
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A marked test runs on io_loop, whether or not it asks for it.
    for item in items:
        if _marker(item) is not None and isinstance(item, pytest.Function):
            if "io_loop" not in item.fixturenames:
                item.fixturenames.append("io_loop")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Optional[bool]:
    mark = _marker(pyfuncitem)
    if mark is None:
        return None
    test = pyfuncitem.obj
    if not inspect.iscoroutinefunction(test):
        raise TypeError(f"@pytest.mark.{mark.name} is for async def tests; {pyfuncitem.name} is not one")
    if mark.args:
        raise TypeError(f"@pytest.mark.{mark.name} takes only timeout=, got arguments {mark.args!r}")
    from squall.testing import get_async_test_timeout

    timeout = mark.kwargs.get("timeout")
    if timeout is None:
        timeout = get_async_test_timeout()
    elif isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"@pytest.mark.{mark.name} timeout must be a positive number of seconds, got {timeout!r}")
    arguments = {name: pyfuncitem.funcargs[name] for name in inspect.signature(test).parameters}
    io_loop: IOLoop = pyfuncitem.funcargs["io_loop"]  # type: ignore[assignment]
    io_loop.run_sync(functools.partial(test, **arguments), timeout=timeout)
    return True


@pytest.fixture
def io_loop() -> Iterator[IOLoop]:
    """A fresh `IOLoop` for the test, current during it and closed after it."""
    from squall.ioloop import IOLoop

    loop = IOLoop(make_current=False)
    asyncio_loop = loop.asyncio_loop
    asyncio.set_event_loop(asyncio_loop)
    try:
        yield loop
    finally:
        if not asyncio_loop.is_closed():
            # Cancel what the test left running and let the cancellations
            # run, so nothing is destroyed while pending.
            leftovers = [task for task in asyncio.all_tasks(asyncio_loop) if not task.done()]
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_sync(lambda: asyncio.wait(leftovers))
            loop.close(all_fds=True)
        asyncio.set_event_loop(None)


@pytest.fixture
def squall_app(request: pytest.FixtureRequest) -> Any:
    """The application under test: override this fixture to return yours."""
    try:
        return request.getfixturevalue("app")
    except pytest.FixtureLookupError:
        raise pytest.UsageError(
            "the squall_server fixture needs your application: define a squall_app "
            "fixture that returns it (in conftest.py or the test module)"
        ) from None


@pytest.fixture
def _squall_listener(io_loop: IOLoop) -> Iterator[tuple[socket.socket, int]]:
    from squall.testing import bind_unused_port

    sock, port = bind_unused_port()
    try:
        yield sock, port
    finally:
        sock.close()


@pytest.fixture
def squall_server(
    io_loop: IOLoop, squall_app: Any, _squall_listener: tuple[socket.socket, int]
) -> Iterator[HTTPServer]:
    """An `HTTPServer` for ``squall_app`` on a free loopback port (``squall_port``)."""
    from squall.httpserver import HTTPServer
    from squall.testing import get_async_test_timeout

    server = HTTPServer(squall_app)
    server.add_sockets([_squall_listener[0]])
    try:
        yield server
    finally:
        server.stop()
        if not io_loop.asyncio_loop.is_closed():
            io_loop.run_sync(server.close_all_connections, timeout=get_async_test_timeout())


@pytest.fixture
def squall_port(squall_server: HTTPServer, _squall_listener: tuple[socket.socket, int]) -> int:
    """The port ``squall_server`` listens on (on 127.0.0.1)."""
    return _squall_listener[1]


@pytest.fixture
def base_url(squall_port: int) -> str:
    """``"http://127.0.0.1:PORT"`` for ``squall_server``; append a path to it."""
    return f"http://127.0.0.1:{squall_port}"


@pytest.fixture
def http_client(io_loop: IOLoop, squall_server: HTTPServer) -> Iterator[AsyncHTTPClient]:
    """An `AsyncHTTPClient` of the test's own (not the shared instance), closed after."""
    from squall.httpclient import AsyncHTTPClient

    client = AsyncHTTPClient(force_instance=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def fetch(http_client: AsyncHTTPClient, base_url: str) -> Callable[..., Awaitable[HTTPResponse]]:
    """``await fetch(path, raise_error=False, **kwargs)``: request ``squall_server``.

    ``path`` is relative to the server, or an absolute ``http(s)://`` URL
    fetched as is; ``kwargs`` are `squall.httpclient.HTTPRequest` arguments.
    """

    async def fetch(path: str, raise_error: bool = False, **kwargs: Any) -> HTTPResponse:
        url = path if path.lower().startswith(("http://", "https://")) else base_url + path
        return await http_client.fetch(url, raise_error=raise_error, **kwargs)

    return fetch
