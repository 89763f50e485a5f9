"""Tests for squall.testing: AsyncTestCase, gen_test, ExpectLog and friends."""

import asyncio
import contextlib
import logging
import os
import socket
import traceback
import unittest
import warnings

import pytest

from squall import gen
from squall.ioloop import IOLoop
from squall.testing import (
    AsyncHTTPSTestCase,
    AsyncHTTPTestCase,
    AsyncTestCase,
    ExpectLog,
    bind_unused_port,
    gen_test,
    get_async_test_timeout,
    setup_with_context_manager,
)


def run_case(case_class, name):
    result = unittest.TestResult()
    case_class(name).run(result)
    return result


def test_async_test_case_stop_wait_and_fresh_loops():
    loops = []

    class Case(AsyncTestCase):
        def test_stop_wait(self):
            loops.append(self.io_loop)
            assert IOLoop.current() is self.io_loop
            self.io_loop.call_later(0.01, self.stop, "value")
            assert self.wait() == "value"
            self.io_loop.add_callback(self.stop, a=1)
            assert self.wait() == {"a": 1}

        def test_wait_timeout(self):
            loops.append(self.io_loop)
            with self.assertRaises(self.failureException):
                self.wait(timeout=0.01)

        def test_wait_condition(self):
            loops.append(self.io_loop)
            counter = []

            def tick():
                counter.append(1)
                self.stop()
                if len(counter) < 3:
                    self.io_loop.add_callback(tick)

            self.io_loop.add_callback(tick)
            self.wait(condition=lambda: len(counter) >= 3)
            assert len(counter) == 3

    for name in ("test_stop_wait", "test_wait_timeout", "test_wait_condition"):
        result = run_case(Case, name)
        assert result.wasSuccessful(), result.errors + result.failures
    assert len(set(map(id, loops))) == 3
    assert all(loop.asyncio_loop.is_closed() for loop in loops)


def test_undecorated_generator_and_return_values_are_errors():
    class Case(AsyncTestCase):
        def test_gen(self):
            yield

        def test_value(self):
            return 42

    assert "should be decorated" in run_case(Case, "test_gen").errors[0][1]
    assert "Return value from test method ignored" in run_case(Case, "test_value").errors[0][1]


def test_leftover_tasks_are_cancelled_quietly():
    finished = []

    class Case(AsyncTestCase):
        def test_leak(self):
            async def forever():
                try:
                    self.stop()
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    finished.append(True)
                    raise

            self.io_loop.add_callback(forever)
            self.wait()

    assert run_case(Case, "test_leak").wasSuccessful()
    assert finished == [True]


class GenTestCase(AsyncTestCase):
    @gen_test
    def test_generator(self):
        value = yield gen.maybe_future(3)
        assert value == 3

    @gen_test(timeout=2)
    async def test_native(self):
        await asyncio.sleep(0)
        assert asyncio.get_running_loop() is self.io_loop.asyncio_loop

    def test_timeout_points_at_the_stuck_line(self):
        @gen_test(timeout=0.05)
        def stuck(self):
            yield gen.sleep(10)

        with pytest.raises(gen.TimeoutError):
            try:
                stuck(self)
            except gen.TimeoutError:
                assert "gen.sleep(10)" in traceback.format_exc()
                raise

    def test_environment_timeout(self):
        @gen_test
        async def slow(self):
            await asyncio.sleep(10)

        with setup_env("ASYNC_TEST_TIMEOUT", "0.05"):
            assert get_async_test_timeout() == 0.05
            with pytest.raises(gen.TimeoutError):
                slow(self)


@contextlib.contextmanager
def setup_env(name, value):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def test_gen_test_cases_pass():
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(GenTestCase)
    result = unittest.TestResult()
    suite.run(result)
    assert result.testsRun == 4
    assert result.wasSuccessful(), result.errors + result.failures


def test_expect_log_matches_and_swallows():
    logger = logging.getLogger("squall.test_testing")
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Collect()
    logger.addHandler(handler)
    try:
        with ExpectLog(logger, "expected"):
            logger.error("expected message")
            logger.error("other message")
        assert records == ["other message"]
        with pytest.raises(Exception, match="did not get expected log message"):
            with ExpectLog("squall.test_testing", "never"):
                pass
        with ExpectLog(logger, "never", required=False):
            pass
        # ``level`` lowers the logger's level for the block.
        with ExpectLog(logger, "debug detail", level=logging.DEBUG) as expectation:
            logger.debug("debug detail")
        assert expectation.matched
        assert logger.level == logging.NOTSET
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with ExpectLog(logger, "traced"):
                try:
                    1 / 0
                except ZeroDivisionError:
                    logger.exception("traced")
    finally:
        logger.removeHandler(handler)


def test_bind_unused_port_listens_on_loopback():
    sock, port = bind_unused_port()
    try:
        assert sock.getsockname() == ("127.0.0.1", port)
        assert not sock.getblocking()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        sock.close()
    sock, port = bind_unused_port(reuse_port=True)
    sock.close()


def test_setup_with_context_manager_exits_at_cleanup():
    events = []

    @contextlib.contextmanager
    def managed():
        events.append("enter")
        yield "value"
        events.append("exit")

    class Case(unittest.TestCase):
        def test(self):
            assert setup_with_context_manager(self, managed()) == "value"
            events.append("test")

    result = unittest.TestResult()
    Case("test").run(result)
    assert result.wasSuccessful()
    assert events == ["enter", "test", "exit"]


def test_https_test_certificate_ships():
    import ssl

    options = AsyncHTTPSTestCase.default_ssl_options()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(options["certfile"], options["keyfile"])


def test_callback_exceptions_fail_the_test_unless_expected():
    class Case(AsyncTestCase):
        def test_unexpected(self):
            self.io_loop.add_callback(lambda: 1 / 0)
            self.io_loop.call_later(0.05, self.stop)
            self.wait()

        def test_expected(self):
            self.io_loop.add_callback(lambda: 1 / 0)
            self.io_loop.add_callback(self.stop)
            with ExpectLog("squall.application", "Exception in callback"):
                self.wait()

        @gen_test
        async def test_unexpected_raw_asyncio_callback(self):
            asyncio.get_running_loop().call_soon(lambda: {}["missing"])
            await asyncio.sleep(0.01)

    # No ExpectLog around these runs: it would hide the records from the
    # recorder under test (pytest captures the log output instead).
    result = run_case(Case, "test_unexpected")
    assert len(result.errors) == 1 and "ZeroDivisionError" in result.errors[0][1]
    assert run_case(Case, "test_expected").wasSuccessful()
    result = run_case(Case, "test_unexpected_raw_asyncio_callback")
    assert len(result.errors) == 1 and "KeyError" in result.errors[0][1]


def test_async_http_test_case_serves_and_cleans_up():
    pytest.importorskip("squall.httpserver")
    pytest.importorskip("squall.httpclient")
    web = pytest.importorskip("squall.web")

    class Hello(web.RequestHandler):
        def get(self):
            self.write("hello " + self.request.protocol)

    seen = {}

    class Case(AsyncHTTPTestCase):
        def get_app(self):
            return web.Application([("/", Hello)])

        def test_fetch(self):
            response = self.fetch("/")
            seen["body"] = response.body
            seen["missing"] = self.fetch("/missing").code
            seen["url"] = response.request.url
            seen["port"] = self.get_http_port()

    case = Case("test_fetch")
    result = unittest.TestResult()
    case.run(result)
    assert result.wasSuccessful(), result.errors + result.failures
    assert seen["body"] == b"hello http"
    assert seen["missing"] == 404
    assert seen["url"] == f"http://127.0.0.1:{seen['port']}/"
    assert not hasattr(case, "_app") and not hasattr(case, "http_server")
