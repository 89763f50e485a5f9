"""Tests for squall.pytest_plugin: real nested pytest runs (pytester) of test
files that use the fixtures and the marker against real servers."""

from __future__ import annotations

import importlib.metadata
import os

import pytest

pytest_plugins = ["pytester"]

# Load the plugin by module name whatever is installed: the entry point
# (named "squall") is blocked so that the module is never registered twice.
PLUGIN = ("-p", "no:squall", "-p", "squall.pytest_plugin")
# Hypothesis's plugin re-imports hypothesis in every nested run: seconds each.
STRICT = ("-W", "error", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--strict-markers")

APP = """
import asyncio
import pytest
from squall.web import Application, RequestHandler

class EchoHandler(RequestHandler):
    async def post(self):
        self.write(b"echo:" + self.request.body)

class HelloHandler(RequestHandler):
    def get(self):
        self.write("hello")

def make_app():
    return Application([("/", HelloHandler), ("/echo", EchoHandler)])
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*PLUGIN, *STRICT, *args)


def test_fixtures_and_marker_serve_and_fetch(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(APP + """
@pytest.fixture
def squall_app():
    return make_app()

@pytest.mark.squall_test
async def test_fetch(fetch):
    response = await fetch("/")
    assert response.code == 200 and response.body == b"hello"
    response = await fetch("/echo", method="POST", body=b"abc")
    assert response.body == b"echo:abc"
    missing = await fetch("/nowhere")
    assert missing.code == 404

@pytest.mark.gen_test(timeout=5)
async def test_client_and_urls(http_client, base_url, squall_port, io_loop):
    assert base_url == f"http://127.0.0.1:{squall_port}"
    assert asyncio.get_running_loop() is io_loop.asyncio_loop
    response = await http_client.fetch(base_url + "/")
    assert response.body == b"hello"

@pytest.mark.squall_test
async def test_raise_error(fetch):
    from squall.httpclient import HTTPClientError
    with pytest.raises(HTTPClientError):
        await fetch("/nowhere", raise_error=True)

def test_sync_test_drives_the_loop(io_loop, squall_server, fetch):
    response = io_loop.run_sync(lambda: fetch("/"))
    assert response.body == b"hello"

@pytest.mark.squall_test
async def test_loop_is_current_without_asking():
    await asyncio.sleep(0.001)
""")
    result = _run(pytester)
    result.assert_outcomes(passed=5)


def test_each_test_gets_a_fresh_loop_and_server(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(APP + """
seen = []

@pytest.fixture
def squall_app():
    return make_app()

@pytest.mark.squall_test
@pytest.mark.parametrize("n", [1, 2])
async def test_one(n, io_loop, squall_port, fetch):
    seen.append((io_loop, squall_port))
    assert (await fetch("/")).code == 200
    if n == 2:
        assert seen[0][0] is not seen[1][0]
        assert seen[0][0].asyncio_loop.is_closed()
        assert seen[0][1] != seen[1][1]
""")
    _run(pytester).assert_outcomes(passed=2)


def test_timeout_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
import asyncio
import pytest

@pytest.mark.squall_test(timeout=0.2)
async def test_slow():
    await asyncio.sleep(30)
""")
    result = _run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*TimeoutError*"])
    assert result.duration < 20


def test_failures_and_leftover_tasks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
import asyncio
import pytest

@pytest.mark.squall_test
async def test_fails():
    await asyncio.sleep(0)
    assert 1 == 2, "inner assertion"

@pytest.mark.squall_test
async def test_leaves_a_task():
    asyncio.ensure_future(asyncio.sleep(30))
""")
    result = _run(pytester)
    # The leftover task is cancelled at teardown, without a warning (which
    # -W error would turn into an error).
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*inner assertion*"])


def test_misuse_is_reported(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
import pytest

@pytest.mark.squall_test
def test_not_async():
    pass

@pytest.mark.squall_test(3)
async def test_positional():
    pass

@pytest.mark.squall_test(timeout=-1)
async def test_bad_timeout():
    pass

def test_no_app(squall_server):
    pass
""")
    result = _run(pytester)
    result.assert_outcomes(failed=3, errors=1)
    result.stdout.fnmatch_lines_random([
        "*squall_test is for async def tests; test_not_async is not one*",
        "*takes only timeout=, got arguments (3,)*",
        "*timeout must be a positive number of seconds, got -1*",
        "*define a squall_app fixture that returns it*",
    ])


def test_pytest_tornado_style_app_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(APP + """
@pytest.fixture
def app():
    return make_app()

@pytest.mark.gen_test
async def test_fetch(fetch):
    assert (await fetch("/")).body == b"hello"
""")
    _run(pytester).assert_outcomes(passed=1)


def test_plain_tests_are_untouched(pytester: pytest.Pytester) -> None:
    # A project's own io_loop fixture wins over the plugin's, and unmarked
    # tests run exactly as without the plugin.
    pytester.makepyfile("""
import pytest

@pytest.fixture
def io_loop():
    return "mine"

def test_own_fixture(io_loop):
    assert io_loop == "mine"

def test_plain():
    assert True
""")
    _run(pytester).assert_outcomes(passed=2)


def _entry_point_installed() -> bool:
    return any(
        ep.name == "squall" and ep.value == "squall.pytest_plugin"
        for ep in importlib.metadata.entry_points(group="pytest11")
    )


def test_entry_point_loads_the_plugin(pytester: pytest.Pytester) -> None:
    if not _entry_point_installed():
        if os.environ.get("CI"):
            pytest.fail("squall is installed without its pytest11 entry point")
        pytest.skip("squall is not installed with its pytest11 entry point (scripts/test installs it)")
    pytester.makepyfile("""
import pytest

@pytest.mark.squall_test
async def test_marked(io_loop):
    assert io_loop is not None
""")
    pytester.runpytest(*STRICT).assert_outcomes(passed=1)
    # -p no:squall turns it off: the marker is then unknown.
    pytester.runpytest("-p", "no:squall", *STRICT).assert_outcomes(errors=1)
