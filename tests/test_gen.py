"""Tests for squall.gen: decorated coroutines and the multi-future helpers."""

import asyncio
import contextvars
import datetime
import gc
import logging
import weakref
from concurrent import futures

import pytest

from squall import gen
from squall.concurrent import Future
from squall.ioloop import IOLoop


@pytest.fixture
def io_loop():
    loop = IOLoop(make_current=False)
    yield loop
    loop.close(all_fds=True)


def test_body_runs_synchronously_until_first_yield(io_loop):
    events = []

    @gen.coroutine
    def child():
        events.append("child start")
        yield gen.sleep(0.01)
        events.append("child end")

    @gen.coroutine
    def parent():
        events.append("parent")
        fut = child()
        events.append("after call")
        yield fut

    io_loop.run_sync(parent)
    assert events == ["parent", "child start", "after call", "child end"]


def test_results_and_errors_go_through_the_future(io_loop):
    @gen.coroutine
    def returns():
        yield gen.moment
        return 1

    @gen.coroutine
    def raises_return():
        raise gen.Return((1, 2))

    @gen.coroutine
    def fails_before_yield():
        1 / 0
        yield

    @gen.coroutine
    def not_a_generator(x):
        return x * 2

    async def main():
        assert await returns() == 1
        assert await raises_return() == (1, 2)
        future = fails_before_yield()  # does not raise here
        assert isinstance(future, asyncio.Future)
        with pytest.raises(ZeroDivisionError):
            await future
        assert await not_a_generator(21) == 42

    io_loop.run_sync(main)


def test_yield_lists_dicts_awaitables_and_concurrent_futures(io_loop):
    async def native(x):
        await asyncio.sleep(0)
        return x

    @gen.coroutine
    def main():
        listed = yield [native(1), gen.sleep(0), gen.moment]
        keyed = yield {"a": native("A"), "b": gen.maybe_future("B")}
        empty = (yield []), (yield {})
        with futures.ThreadPoolExecutor(1) as pool:
            threaded = yield pool.submit(lambda: "T")
        nothing = yield None
        return listed, keyed, empty, threaded, nothing

    assert io_loop.run_sync(main) == ([1, None, None], {"a": "A", "b": "B"}, ([], {}), "T", None)


def test_bad_yields_raise_bad_yield_error(io_loop):
    @gen.coroutine
    def bad(value):
        yield value

    for value in (42, (1, 2), "text"):
        with pytest.raises(gen.BadYieldError):
            io_loop.run_sync(lambda: bad(value))


def test_moment_interleaves_coroutines(io_loop):
    calls = []

    @gen.coroutine
    def worker(name, yieldable):
        for _ in range(3):
            calls.append(name)
            yield yieldable

    done = Future(loop=io_loop.asyncio_loop)
    done.set_result(None)
    io_loop.run_sync(lambda: [worker("a", done), worker("b", done)])
    assert "".join(calls) == "aaabbb"
    calls.clear()
    io_loop.run_sync(lambda: [worker("a", gen.moment), worker("b", gen.moment)])
    assert "".join(calls) == "ababab"


def test_cancelled_error_cancels_the_coroutine_future(io_loop):
    @gen.coroutine
    def waits(fut):
        yield fut

    async def main():
        fut = Future()
        result = waits(fut)
        fut.cancel()
        with pytest.raises(asyncio.CancelledError):
            await result
        assert result.cancelled()

    io_loop.run_sync(main)


def test_multi_first_error_wins_and_others_are_logged(io_loop, caplog):
    @gen.coroutine
    def fail(message):
        yield gen.moment
        raise RuntimeError(message)

    async def main():
        with pytest.raises(RuntimeError, match="one"):
            await gen.multi([fail("one"), fail("two")])
        with pytest.raises(RuntimeError):
            await gen.multi([fail("three"), fail("four")], quiet_exceptions=RuntimeError)

    with caplog.at_level(logging.ERROR, logger="squall.application"):
        io_loop.run_sync(main)
    logged = [r for r in caplog.records if "Multiple exceptions" in r.getMessage()]
    assert len(logged) == 1 and "two" in str(logged[0].exc_info[1])


def test_multi_with_cancelled_child_raises_but_is_not_cancelled(io_loop):
    async def main():
        child = Future()
        child.cancel()
        combined = gen.multi([child, gen.sleep(0)])
        with pytest.raises(asyncio.CancelledError):
            await combined
        assert not combined.cancelled()

    io_loop.run_sync(main)


def test_with_timeout(io_loop, caplog):
    async def main():
        with pytest.raises(gen.TimeoutError, match="^Timeout$"):
            await gen.with_timeout(datetime.timedelta(seconds=0.01), Future())
        with pytest.raises(gen.TimeoutError, match="lazy"):
            await gen.with_timeout(IOLoop.current().time() + 0.01, Future(), message=lambda: "lazy")
        assert await gen.with_timeout(datetime.timedelta(hours=1), gen.sleep(0.01)) is None
        late = Future()
        with pytest.raises(gen.TimeoutError):
            await gen.with_timeout(datetime.timedelta(seconds=0.01), late)
        late.set_exception(KeyError("late failure"))
        await asyncio.sleep(0)

    with caplog.at_level(logging.ERROR, logger="squall.application"):
        io_loop.run_sync(main)
    assert any("after timeout" in r.getMessage() for r in caplog.records)


def test_wait_iterator_yields_in_completion_order(io_loop):
    async def main():
        a, b, c = Future(), Future(), Future()
        c.set_result("c")
        loop = asyncio.get_running_loop()
        loop.call_later(0.02, a.set_result, "a")
        loop.call_later(0.01, b.set_exception, ValueError("b"))
        seen = []
        iterator = gen.WaitIterator(a, b, c)
        while not iterator.done():
            try:
                seen.append((iterator.current_index, (await iterator.next())))
            except ValueError:
                seen.append((iterator.current_index, "error"))
        seen = [(i, v) for i, v in seen]
        assert [v for _, v in seen] == ["c", "error", "a"]
        assert iterator.current_index is None
        named = {}
        async for value in gen.WaitIterator(x=gen.maybe_future(1), y=gen.maybe_future(2)):
            named[value] = True
        assert named == {1: True, 2: True}
        with pytest.raises(ValueError):
            gen.WaitIterator(a, b=b)

    io_loop.run_sync(main)


ctx_var = contextvars.ContextVar("ctx_var", default=None)


def test_context_vars_persist_across_yields_and_reach_tasks(io_loop):
    async def read():
        return ctx_var.get()

    @gen.coroutine
    def setter(value):
        token = ctx_var.set(value)
        yield gen.moment
        seen_by_task = yield read()
        assert ctx_var.get() == value
        ctx_var.reset(token)  # only valid in the same context
        return seen_by_task

    assert io_loop.run_sync(lambda: [setter(1), setter(2)]) == [1, 2]
    assert ctx_var.get() is None


def test_convert_yielded_is_extensible(io_loop):
    class Later:
        def __init__(self, value):
            self.value = value

    @gen.convert_yielded.register(Later)
    def _(later):
        return gen.maybe_future(later.value)

    @gen.coroutine
    def main():
        return (yield Later(5))

    assert io_loop.run_sync(main) == 5


def test_runner_kept_alive_while_result_future_pending(io_loop):
    ref = []

    @gen.coroutine
    def waiter():
        fut = Future()
        ref.append(weakref.ref(fut))
        result = yield fut
        return result

    async def main():
        result = waiter()
        gc.collect()
        ref[0]().set_result("alive")
        return await result

    assert io_loop.run_sync(main) == "alive"


def test_is_coroutine_function_and_attributes():
    def f():
        yield

    wrapped = gen.coroutine(f)
    assert gen.is_coroutine_function(wrapped)
    assert not gen.is_coroutine_function(f)
    assert wrapped.__wrapped__ is f and wrapped.__name__ == "f"
