"""Real-time messaging: publish/subscribe with replayable history, served by
long polling, Server-Sent Events and WebSocket fan-out.

One API, two backends:

* `MemoryPubSub` keeps everything in the process (the embedded default:
  nothing else to start);
* `RedisPubSub` keeps topics in Redis streams, so that every process on
  every machine that talks to the same Redis sees the same messages
  (``pip install squall[redis]``).

`create_pubsub` picks one from a URL (``None`` or ``memory://``, or
``redis://...``), and `connect` also checks that it works::

    pubsub = await realtime.connect(options.redis)   # fails at once if unreachable
    msg_id = await pubsub.publish("room", {"name": "ann", "text": "hi"})

    async with pubsub.subscribe("room", after=0) as sub:   # history, then live
        async for message in sub:
            print(message.id, message.data)

Every topic numbers its messages 1, 2, 3, ... with no gaps, and keeps the
last ``history_size`` of them. A client that remembers the id of the last
message it saw asks for "messages after N" and misses nothing between two
requests, whichever process answers them; a gap in the ids it receives
tells it that it was away longer than the history reaches. A cursor larger
than any id the topic has issued (the ids of a `MemoryPubSub` start again
at 1 when the process restarts) is taken as stale and answered from the
start of the history.

For handlers: `LongPollHandler` (waits up to a timeout for messages after a
cursor; JSONP), `EventSourceHandler` (``text/event-stream`` with
``Last-Event-ID`` resume and heartbeats) and `WebSocketHub` (writes each
message to every WebSocket joined to a topic; a slow connection gets a
bounded queue of its own and is closed, or loses its oldest messages, when
that fills up, so it never holds the others back).

Message data must be JSON-serialisable: it is encoded once, at `publish`,
and the same text is sent to every subscriber.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import itertools
import json
import re
import uuid
from collections.abc import Awaitable
from typing import Any, Callable, NamedTuple, Optional

from squall import httputil, web
from squall.log import app_log, gen_log

__all__ = [
    "EventSourceHandler",
    "Listener",
    "LongPollHandler",
    "MemoryPubSub",
    "Message",
    "PubSub",
    "RedisPubSub",
    "SlowConsumerError",
    "Subscription",
    "WebSocketHub",
    "connect",
    "create_pubsub",
]

# --- Limits -------------------------------------------------------------------

# Messages kept per topic for replay. Tornado's chat demo keeps 200; a
# thousand covers a long-polling client that is away for minutes at a few
# messages a second, for a few hundred bytes each.
DEFAULT_HISTORY = 1000
# Live messages a `Subscription` holds for a consumer that has not read them
# before it is closed as too slow (`SlowConsumerError`); as long as the
# history, so that a consumer that falls behind can still resume from it.
SUBSCRIPTION_QUEUE = DEFAULT_HISTORY
# Messages in one long-poll response: a client that is far behind catches up
# over a few requests instead of one huge body (Bayeux and Socket.IO batch
# polling responses the same way).
MAX_BATCH = 100
# How long a long-poll request waits before answering ``[]``: below the 60 s
# that proxies commonly allow an idle upstream (nginx's proxy_read_timeout).
LONG_POLL_TIMEOUT = 30.0
# Idle time after which an event stream sends a comment line, which keeps
# proxies from closing it; the interval the HTML Living Standard suggests.
SSE_HEARTBEAT = 15.0
# Seconds an event stream's client may take to accept what was written
# before it is disconnected: nginx's send_timeout.
SSE_WRITE_TIMEOUT = 60.0
# Reconnection delay sent to EventSource clients (the ``retry`` field), in ms:
# the browsers' own default.
SSE_RETRY_MS = 3000
# Messages a `WebSocketHub` queues for one connection whose socket buffer is
# full (above the transport's high-water mark) before its overflow policy
# applies.
WEBSOCKET_QUEUE = 256
# Topic names: short printable text, as Redis key suffixes and URL parts.
MAX_TOPIC_LENGTH = 256
# Longest decimal cursor accepted from a client: ids are 63-bit at most, as
# Redis stream ids are.
_MAX_CURSOR_DIGITS = 19
# Entries fetched by one XREAD round of the Redis reader.
REDIS_READ_COUNT = 500
# How long one blocking XREAD waits before it is issued again, in ms: short
# enough that a dead connection is noticed, long enough to cost nothing.
REDIS_BLOCK_MS = 10_000
# Seconds allowed to reach Redis at start-up before `connect` gives up.
REDIS_CONNECT_TIMEOUT = 5.0
# Seconds a Redis command may take before it fails (redis-py's default).
REDIS_COMMAND_TIMEOUT = 5.0
# Retries of a command whose connection failed (redis-py's default count).
REDIS_RETRIES = 3
# Connections one process opens for commands (the reader has its own); as
# redis-py's BlockingConnectionPool default, which is ample for pipelined
# single commands and far below Redis's maxclients (10,000).
REDIS_MAX_CONNECTIONS = 50
# Back-off between reconnection attempts of the Redis reader, in seconds
# (first, then doubling up to the last).
REDIS_RETRY_MIN = 0.1
REDIS_RETRY_MAX = 5.0
# The reader's wake-up stream expires when its process has not touched it
# for this long (it is deleted at close; this covers a crash).
_WAKE_KEY_TTL_S = 86_400

# A WebSocket close code for a consumer dropped for being too slow: 1013,
# "Try Again Later" (IANA WebSocket Close Code Number Registry).
SLOW_CONSUMER_CLOSE_CODE = 1013

_TOPIC_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")
_CURSOR = re.compile(r"[0-9]{1,%d}" % _MAX_CURSOR_DIGITS)
# A JSONP callback: a JavaScript identifier path such as ``cb`` or
# ``jQuery123.handle`` (anything else could inject script).
_JSONP_CALLBACK = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)*")
_MAX_JSONP_CALLBACK = 128


class SlowConsumerError(Exception):
    """Raised by a `Subscription` whose consumer fell more than ``max_queue``
    messages behind: it has been closed, and may resume from the history
    with ``after=`` the id of the last message it handled."""


class Message(NamedTuple):
    """One published message."""

    id: int
    """Its number in the topic: 1 for the first, then consecutive."""
    topic: str
    data: Any
    """The published value, as decoded from `json`."""
    json: str
    """``data`` encoded as JSON, once for all subscribers."""

    def to_json(self) -> str:
        """``{"id": ..., "data": ...}`` as JSON text."""
        return '{"id":%d,"data":%s}' % (self.id, self.json)


def _check_topic(topic: str) -> None:
    if not isinstance(topic, str):
        raise TypeError("topic must be a str, not %r" % (topic,))
    if not topic or len(topic) > MAX_TOPIC_LENGTH or _TOPIC_FORBIDDEN.search(topic):
        raise ValueError(
            "topic must be 1 to %d characters without control characters: %r"
            % (MAX_TOPIC_LENGTH, topic)
        )


def _check_after(after: Optional[int]) -> None:
    if after is not None and (type(after) is not int or after < 0):
        raise ValueError("after must be None or an int >= 0, not %r" % (after,))


def _encode(data: Any) -> str:
    try:
        return json.dumps(data, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise TypeError("message data must be JSON-serialisable: %r (%s)" % (data, e)) from None


# --- Local fan-out (shared by both backends) -----------------------------------


class _LocalTopic:
    """The subscribers of one topic in this process."""

    __slots__ = ("sinks", "last", "ready")

    def __init__(self) -> None:
        # A dict as an insertion-ordered set.
        self.sinks: dict[_Sink, None] = {}
        # Id of the last message handed to the sinks (or, before any, the
        # id the topic had when live delivery began).
        self.last = 0
        # Set while the backend is still starting live delivery.
        self.ready: Optional[asyncio.Future[None]] = None


class _Sink:
    """Something that receives a topic's messages in id order: first the
    history after a cursor, then live messages, without gaps or repeats."""

    __slots__ = ("_pubsub", "topic", "_after", "_last", "_pending", "_attached")

    def __init__(self, pubsub: "PubSub", topic: str, after: Optional[int]) -> None:
        _check_topic(topic)
        _check_after(after)
        self._pubsub = pubsub
        self.topic = topic
        self._after = after
        self._last = 0
        # Live messages that arrive while the history is being read.
        self._pending: Optional[list[Message]] = None
        self._attached = False

    @property
    def last_id(self) -> int:
        """Id of the last message delivered (or the cursor it started from)."""
        return self._last

    async def _start(self) -> None:
        pubsub = self._pubsub
        pubsub._check_open()
        self._pending = []
        local = pubsub._attach(self.topic, self)
        self._attached = True
        try:
            if local.ready is not None:
                # Shielded: one waiter giving up must not cancel the start
                # that the topic's other subscribers share.
                await asyncio.shield(local.ready)
            after = self._after
            backlog: list[Message] = []
            if after is None:
                # Whatever was dispatched since attaching is new to us.
                pending = self._pending
                self._last = pending[0].id - 1 if pending else local.last
            else:
                backlog, newest = await pubsub._read(self.topic, after, pubsub.history_size)
                if after > newest:
                    # A cursor from before a restart: replay what there is.
                    after = 0
                    backlog, newest = await pubsub._read(self.topic, 0, pubsub.history_size)
                self._last = backlog[-1].id if backlog else after
        except BaseException:
            self._detach()
            raise
        if not self._attached:
            # Closed while the history was being read.
            return
        pending = self._pending
        self._pending = None
        self._begin(backlog)
        for message in pending:
            if message.id > self._last:
                self._last = message.id
                self._deliver(message)

    def _push(self, message: Message) -> None:
        """Called by the topic for each live message."""
        if self._pending is not None:
            self._pending.append(message)
        elif message.id > self._last:
            self._last = message.id
            self._deliver(message)

    def _begin(self, backlog: list[Message]) -> None:
        for message in backlog:
            self._deliver(message)

    def _deliver(self, message: Message) -> None:
        raise NotImplementedError()

    def _detach(self) -> None:
        if self._attached:
            self._attached = False
            self._pubsub._detach(self.topic, self)


class Subscription(_Sink):
    """A topic's messages as an async iterator (see `PubSub.subscribe`).

    Use it as an async context manager, which starts it and closes it::

        async with pubsub.subscribe("room", after=cursor) as sub:
            async for message in sub:
                ...

    Iteration ends when the subscription is closed (`close`, or the pubsub
    closing) and raises `SlowConsumerError` if the consumer fell more than
    ``max_queue`` live messages behind.
    """

    __slots__ = (
        "_queue", "_max_queue", "_slack", "_waiter", "_closed", "_overflowed", "_consumed",
        "_closed_future",
    )

    def __init__(self, pubsub: "PubSub", topic: str, after: Optional[int], max_queue: int) -> None:
        if type(max_queue) is not int or max_queue < 1:
            raise ValueError("max_queue must be an int >= 1, not %r" % (max_queue,))
        super().__init__(pubsub, topic, after)
        self._queue: collections.deque[Message] = collections.deque()
        self._max_queue = max_queue
        # The history replayed at the start does not count against max_queue.
        self._slack = 0
        self._waiter: Optional[asyncio.Future[None]] = None
        self._closed = False
        self._overflowed = False
        self._consumed = 0
        self._closed_future: Optional[asyncio.Future[None]] = None

    async def __aenter__(self) -> "Subscription":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.close()

    async def start(self) -> None:
        """Begin receiving: the history after ``after`` is queued first."""
        if self._closed or self._attached:
            raise RuntimeError("subscription to %r already started or closed" % self.topic)
        await self._start()

    @property
    def last_id(self) -> int:
        """Id of the last message returned by `get`, `batch` or iteration
        (before any: the cursor the subscription started from). After a
        `SlowConsumerError`, subscribe again with ``after=last_id``."""
        return self._consumed

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def overflowed(self) -> bool:
        """True once the subscription was closed for falling behind."""
        return self._overflowed

    def close(self) -> None:
        """Stop receiving and wake any waiting `get` or `batch` (they end the
        iteration or return ``[]``). Safe to call more than once, from a
        connection-close callback for example."""
        if not self._closed:
            self._closed = True
            self._queue.clear()
            self._detach()
            self._wake()
            if self._closed_future is not None and not self._closed_future.done():
                self._closed_future.set_result(None)

    def _when_closed(self) -> "asyncio.Future[None]":
        """A future resolved by `close` (for waiting on something else)."""
        if self._closed_future is None:
            self._closed_future = asyncio.get_running_loop().create_future()
            if self._closed:
                self._closed_future.set_result(None)
        return self._closed_future

    def _begin(self, backlog: list[Message]) -> None:
        self._consumed = backlog[0].id - 1 if backlog else self._last
        self._queue.extend(backlog)
        self._slack = len(backlog)
        if backlog:
            self._wake()

    def _deliver(self, message: Message) -> None:
        queue = self._queue
        queue.append(message)
        if len(queue) - self._slack > self._max_queue:
            self._overflowed = True
            self.close()
        elif len(queue) == 1:
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _take(self) -> Message:
        if self._slack:
            self._slack -= 1
        message = self._queue.popleft()
        self._consumed = message.id
        return message

    async def _wait(self, timeout: Optional[float]) -> None:
        """Wait until a message is queued, the subscription closes, or
        ``timeout`` seconds pass."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = None
        if timeout is not None:
            timer = loop.call_later(timeout, self._wake)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if self._waiter is waiter:
                self._waiter = None

    async def get(self, timeout: Optional[float] = None) -> Optional[Message]:
        """The next message; None after ``timeout`` seconds or once closed.
        Raises `SlowConsumerError` if it was closed for falling behind."""
        if not self._queue and not self._closed:
            await self._wait(timeout)
        if self._queue:
            return self._take()
        if self._overflowed:
            raise SlowConsumerError("subscriber to %r fell behind" % self.topic)
        return None

    async def batch(self, timeout: Optional[float] = None, limit: int = MAX_BATCH) -> list[Message]:
        """Wait up to ``timeout`` seconds for at least one message, then
        return every queued one (at most ``limit``); ``[]`` on timeout or
        once closed. Raises `SlowConsumerError` like `get`."""
        if not self._queue and not self._closed:
            await self._wait(timeout)
        queue = self._queue
        if not queue and self._overflowed:
            raise SlowConsumerError("subscriber to %r fell behind" % self.topic)
        take = self._take
        return [take() for _ in range(min(limit, len(queue)))]

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Message:
        message = await self.get()
        if message is None:
            raise StopAsyncIteration
        return message


class Listener(_Sink):
    """A callback registered with `PubSub.listen`; `close` unregisters it."""

    __slots__ = ("_callback",)

    def __init__(
        self,
        pubsub: "PubSub",
        topic: str,
        after: Optional[int],
        callback: Callable[[Message], Optional[Awaitable[Any]]],
    ) -> None:
        if not callable(callback):
            raise TypeError("callback must be callable, not %r" % (callback,))
        super().__init__(pubsub, topic, after)
        self._callback = callback

    def close(self) -> None:
        """Stop calling the callback."""
        self._detach()

    def _deliver(self, message: Message) -> None:
        try:
            result = self._callback(message)
        except Exception:
            app_log.exception("Exception in realtime listener for %r", self.topic)
            return
        if result is not None:
            asyncio.ensure_future(result).add_done_callback(_log_listener_failure)


def _log_listener_failure(future: "asyncio.Future[Any]") -> None:
    if not future.cancelled() and future.exception() is not None:
        app_log.error("Exception in realtime listener", exc_info=future.exception())


# --- The API ------------------------------------------------------------------


class PubSub(abc.ABC):
    """Publish/subscribe with per-topic history; see the module docstring.

    Create one per process with `create_pubsub` or `connect` and share it
    (an application setting, or a handler's ``initialize`` argument).
    """

    def __init__(self, *, history_size: int = DEFAULT_HISTORY) -> None:
        if type(history_size) is not int or history_size < 1:
            raise ValueError("history_size must be an int >= 1, not %r" % (history_size,))
        self.history_size = history_size
        self._topics: dict[str, _LocalTopic] = {}
        self._closed = False

    async def start(self) -> None:
        """Check the backend and start delivering. `connect` calls it; the
        first use of an unstarted pubsub does too."""

    async def close(self) -> None:
        """Close every subscription and release the backend's resources."""
        self._closed = True
        for local in list(self._topics.values()):
            for sink in list(local.sinks):
                if isinstance(sink, Subscription):
                    sink.close()
                else:
                    sink._detach()
        self._topics.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("%s is closed" % type(self).__name__)

    async def publish(self, topic: str, data: Any) -> int:
        """Append ``data`` (JSON-serialisable) to ``topic`` and deliver it to
        every subscriber, in this process and others sharing the backend.
        Returns the message's id."""
        _check_topic(topic)
        self._check_open()
        return await self._publish(topic, _encode(data), data)

    async def history(self, topic: str, after: int = 0, limit: Optional[int] = None) -> list[Message]:
        """The retained messages of ``topic`` with ids above ``after``,
        oldest first, at most ``limit`` (default: the whole history)."""
        _check_topic(topic)
        _check_after(after)
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ValueError("limit must be None or an int >= 1, not %r" % (limit,))
        self._check_open()
        messages, _ = await self._read(topic, after, limit or self.history_size)
        return messages

    async def last_id(self, topic: str) -> int:
        """Id of the newest message of ``topic`` (0 if none was published)."""
        _check_topic(topic)
        self._check_open()
        _, newest = await self._read(topic, 2**63 - 2, 1)
        return newest

    def subscribe(
        self, topic: str, after: Optional[int] = None, *, max_queue: int = SUBSCRIPTION_QUEUE
    ) -> Subscription:
        """A `Subscription` to ``topic`` (start it with ``async with``).

        With ``after=None`` it receives messages published from now on; with
        ``after=N`` it first receives the retained messages with ids above N
        (``after=0``: the whole history).
        """
        return Subscription(self, topic, after, max_queue)

    async def listen(
        self,
        topic: str,
        callback: Callable[[Message], Optional[Awaitable[Any]]],
        after: Optional[int] = None,
    ) -> Listener:
        """Call ``callback(message)`` on the event loop for each message of
        ``topic`` (as `subscribe` for ``after``). A coroutine callback is
        run as a task; exceptions are logged on ``squall.application``."""
        listener = Listener(self, topic, after, callback)
        await listener._start()
        return listener

    async def wait(self, topic: str, after: int, timeout: Optional[float]) -> list[Message]:
        """The messages after ``after`` (at most `MAX_BATCH`), waiting up to
        ``timeout`` seconds for the first one: the core of long polling."""
        async with self.subscribe(topic, after=after) as sub:
            return await sub.batch(timeout)

    # -- backend interface -----------------------------------------------------

    @abc.abstractmethod
    async def _publish(self, topic: str, encoded: str, data: Any) -> int:
        """Store and deliver one message; return its id."""

    @abc.abstractmethod
    async def _read(self, topic: str, after: int, limit: int) -> tuple[list[Message], int]:
        """Up to ``limit`` retained messages above ``after``, and the newest
        id the topic has issued, read together."""

    @abc.abstractmethod
    def _activate(self, topic: str, local: _LocalTopic) -> None:
        """Start live delivery of ``topic``: set ``local.last`` to its newest
        id, and ``local.ready`` if that takes a while."""

    def _deactivate(self, topic: str) -> None:
        """``topic`` has no local subscribers any more."""

    def _attach(self, topic: str, sink: _Sink) -> _LocalTopic:
        local = self._topics.get(topic)
        if local is None:
            local = self._topics[topic] = _LocalTopic()
            self._activate(topic, local)
        local.sinks[sink] = None
        return local

    def _detach(self, topic: str, sink: _Sink) -> None:
        local = self._topics.get(topic)
        if local is not None and local.sinks.pop(sink, 0) is None and not local.sinks:
            del self._topics[topic]
            self._deactivate(topic)

    def _dispatch(self, message: Message) -> None:
        """Hand a new message to the topic's local subscribers, once."""
        local = self._topics.get(message.topic)
        if local is None or message.id <= local.last:
            return
        local.last = message.id
        for sink in tuple(local.sinks):
            sink._push(message)

    @property
    def subscriber_count(self) -> int:
        """Subscriptions, listeners and hub connections in this process."""
        return sum(len(local.sinks) for local in self._topics.values())


class MemoryPubSub(PubSub):
    """The in-process backend: topics live in this process's memory, and a
    publish reaches subscribers before `publish` returns. Memory is bounded
    by ``history_size`` messages per topic that has ever been published to.
    """

    def __init__(self, *, history_size: int = DEFAULT_HISTORY) -> None:
        super().__init__(history_size=history_size)
        self._stores: dict[str, tuple[collections.deque[Message], list[int]]] = {}

    def _store(self, topic: str) -> tuple[collections.deque[Message], list[int]]:
        store = self._stores.get(topic)
        if store is None:
            store = self._stores[topic] = (collections.deque(maxlen=self.history_size), [0])
        return store

    async def _publish(self, topic: str, encoded: str, data: Any) -> int:
        history, counter = self._store(topic)
        counter[0] += 1
        # Delivered values are decoded from the encoding, as the Redis
        # backend's are: a caller mutating ``data`` later changes nothing.
        message = Message(counter[0], topic, json.loads(encoded), encoded)
        history.append(message)
        self._dispatch(message)
        return message.id

    async def _read(self, topic: str, after: int, limit: int) -> tuple[list[Message], int]:
        store = self._stores.get(topic)
        if store is None:
            return [], 0
        history, counter = store
        newest = counter[0]
        if not history or after >= newest:
            return [], newest
        start = max(0, after - history[0].id + 1)
        return list(itertools.islice(history, start, start + limit)), newest

    def _activate(self, topic: str, local: _LocalTopic) -> None:
        store = self._stores.get(topic)
        local.last = store[1][0] if store is not None else 0


# Publishes one message: the next id follows the newest entry of the stream
# (ids are "<n>-0"), so ids stay consecutive across every publisher.
# KEYS[1] the stream; ARGV[1] the JSON text; ARGV[2] the history size.
_PUBLISH_SCRIPT = """
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local n = 1
if newest[1] then n = tonumber(string.match(newest[1][1], '^%d+')) + 1 end
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], n .. '-0', 'd', ARGV[1])
return n
"""


class RedisPubSub(PubSub):
    """The Redis backend, for many processes and machines.

    Each topic is a Redis stream ``<prefix><topic>`` whose entry ids are
    ``<n>-0``, n being the message id; a short Lua script appends with the
    next n and trims the stream to ``history_size`` entries (``XADD
    MAXLEN``), atomically, so ids stay consecutive whoever publishes.
    "Messages after N" is ``XRANGE``. Live delivery costs one connection per
    process: a reader task runs ``XREAD BLOCK`` over every topic that has a
    subscriber here, from the last id it delivered, and fans each entry out
    locally; subscribing to a new topic wakes it through a small stream of
    its own. A message therefore reaches this process's subscribers in one
    round trip after it is stored, in order, and a reader that loses its
    connection resumes from its cursor without losing any.

    ``url`` is a redis-py URL (``redis://host:port/db``, ``rediss://``,
    ``unix://``); a malformed one raises `ValueError` here, an unreachable
    server raises `ConnectionError` from `start`.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "squall:rt:",
        history_size: int = DEFAULT_HISTORY,
    ) -> None:
        super().__init__(history_size=history_size)
        if not isinstance(url, str):
            raise TypeError("url must be a str, not %r" % (url,))
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a str, not %r" % (prefix,))
        try:
            import redis.asyncio as aioredis
            import redis.exceptions
            from redis.asyncio.retry import Retry
            from redis.backoff import ExponentialBackoff
        except ImportError:
            raise RuntimeError(
                "RedisPubSub needs redis-py: pip install 'squall[redis]'"
            ) from None
        try:
            # A pooled connection that Redis dropped (a restart, an idle
            # timeout) fails its next command: retry that on a new one.
            # A publish whose reply was lost may then be stored twice.
            # Commands beyond REDIS_MAX_CONNECTIONS wait for a connection
            # (a blocking pool) instead of failing under a burst.
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=REDIS_MAX_CONNECTIONS,
                timeout=REDIS_COMMAND_TIMEOUT,
                socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
                socket_timeout=REDIS_COMMAND_TIMEOUT,
                retry=Retry(ExponentialBackoff(cap=REDIS_RETRY_MAX, base=REDIS_RETRY_MIN), REDIS_RETRIES),
                retry_on_error=[redis.exceptions.ConnectionError],
            )
            # Typed Any: redis-py's reply types are unions too loose to use.
            self._client: Any = aioredis.Redis.from_pool(pool)
            # The reader blocks in XREAD for up to REDIS_BLOCK_MS: its socket
            # timeout must be longer, yet still notice a dead connection.
            self._reader_client: Any = aioredis.Redis.from_url(
                url,
                socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
                socket_timeout=REDIS_BLOCK_MS / 1000 + REDIS_COMMAND_TIMEOUT,
                single_connection_client=True,
            )
        except ValueError as e:
            raise ValueError("invalid Redis URL %r: %s" % (url, e)) from None
        self.url = url
        self.prefix = prefix
        self._publish_script = self._client.register_script(_PUBLISH_SCRIPT)
        self._wake_key = "%s_wake:%s" % (prefix, uuid.uuid4().hex)
        self._wake_cursor = "0-0"
        self._reader: Optional[asyncio.Task[None]] = None
        self._started: Optional[asyncio.Future[None]] = None

    def _key(self, topic: str) -> str:
        return self.prefix + topic

    async def start(self) -> None:
        """Reach Redis (``PING``) and start the reader. Raises
        `ConnectionError` naming the URL when Redis cannot be reached."""
        self._check_open()
        if self._started is None:
            self._started = asyncio.ensure_future(self._start_once())
        await asyncio.shield(self._started)

    async def _start_once(self) -> None:
        import redis.exceptions

        try:
            await asyncio.wait_for(self._client.ping(), REDIS_CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError, redis.exceptions.RedisError) as e:
            self._started = None
            raise ConnectionError(
                "cannot reach Redis at %s: %s" % (self.url, e or type(e).__name__)
            ) from None
        self._reader = asyncio.ensure_future(self._read_loop())

    async def _ensure_started(self) -> None:
        if self._started is None or not self._started.done():
            await self.start()

    async def close(self) -> None:
        await super().close()
        reader, self._reader = self._reader, None
        if reader is not None:
            # Woken rather than cancelled: redis-py does not recover well
            # from a command cancelled while it blocks.
            try:
                await self._wake()
                await asyncio.wait_for(reader, REDIS_COMMAND_TIMEOUT)
                await self._client.delete(self._wake_key)
            except Exception:
                # Redis is gone: the reader stops at its next attempt, and
                # the wake-up key expires by itself.
                reader.cancel()
        await self._reader_client.aclose()
        await self._client.aclose()

    async def _publish(self, topic: str, encoded: str, data: Any) -> int:
        await self._ensure_started()
        n = await self._publish_script(keys=[self._key(topic)], args=[encoded, self.history_size])
        return int(n)

    async def _read(self, topic: str, after: int, limit: int) -> tuple[list[Message], int]:
        await self._ensure_started()
        key = self._key(topic)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.xrevrange(key, "+", "-", count=1)
            # Ids are "<n>-0": starting at "<after>-1" excludes message ``after``.
            pipe.xrange(key, "%d-1" % after, "+", count=limit)
            newest_entry, entries = await pipe.execute()
        newest = _entry_number(newest_entry[0][0]) if newest_entry else 0
        return [_entry_message(topic, entry) for entry in entries], newest

    def _activate(self, topic: str, local: _LocalTopic) -> None:
        ready = local.ready = asyncio.ensure_future(self._activate_async(topic, local))
        # Its waiters may all have given up: the failure is theirs to see.
        ready.add_done_callback(_ignore_result)

    async def _activate_async(self, topic: str, local: _LocalTopic) -> None:
        try:
            await self._ensure_started()
            entries = await self._client.xrevrange(self._key(topic), "+", "-", count=1)
            local.last = _entry_number(entries[0][0]) if entries else 0
            local.ready = None
            await self._wake()
        except BaseException:
            # Let the next subscriber try again.
            if self._topics.get(topic) is local:
                del self._topics[topic]
            raise

    async def _wake(self) -> None:
        """Make the reader start a new XREAD that includes new topics."""
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.xadd(self._wake_key, {"w": "1"}, maxlen=1)
            pipe.expire(self._wake_key, _WAKE_KEY_TTL_S)
            await pipe.execute()

    async def _read_loop(self) -> None:
        import redis.exceptions

        retry = REDIS_RETRY_MIN
        failing = False
        prefix_length = len(self.prefix)
        while self._reader is not None:
            streams = {self._wake_key: self._wake_cursor}
            for topic, local in self._topics.items():
                if local.ready is None:
                    streams[self._key(topic)] = "%d-0" % local.last
            try:
                response = await self._reader_client.xread(
                    streams, count=REDIS_READ_COUNT, block=REDIS_BLOCK_MS
                )
            except (OSError, redis.exceptions.RedisError) as e:
                if not failing:
                    gen_log.warning("realtime: lost Redis at %s (%s); reconnecting", self.url, e)
                    failing = True
                await asyncio.sleep(retry)
                retry = min(retry * 2, REDIS_RETRY_MAX)
                continue
            if failing:
                gen_log.info("realtime: Redis at %s is back", self.url)
                failing = False
            retry = REDIS_RETRY_MIN
            for key, entries in response or ():
                name = key.decode("utf-8")
                if name == self._wake_key:
                    self._wake_cursor = entries[-1][0].decode("ascii")
                    continue
                topic = name[prefix_length:]
                for entry in entries:
                    self._dispatch(_entry_message(topic, entry))


def _ignore_result(future: "asyncio.Future[Any]") -> None:
    if not future.cancelled():
        future.exception()


def _entry_number(entry_id: bytes) -> int:
    return int(entry_id.partition(b"-")[0])


def _entry_message(topic: str, entry: tuple[bytes, dict[bytes, bytes]]) -> Message:
    entry_id, fields = entry
    encoded = fields[b"d"].decode("utf-8")
    return Message(_entry_number(entry_id), topic, json.loads(encoded), encoded)


def create_pubsub(url: Optional[str] = None, **kwargs: Any) -> PubSub:
    """A pubsub for ``url``: `MemoryPubSub` for None or ``memory://``,
    `RedisPubSub` for ``redis://``, ``rediss://`` and ``unix://`` URLs.
    Keyword arguments go to the backend (``history_size``, ``prefix``).
    Raises `ValueError` for any other URL."""
    if url is None or url == "memory://":
        return MemoryPubSub(**kwargs)
    if not isinstance(url, str):
        raise TypeError("url must be a str or None, not %r" % (url,))
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisPubSub(url, **kwargs)
    raise ValueError(
        "unsupported pubsub URL %r: use memory:// or redis://host:port/db" % (url,)
    )


async def connect(url: Optional[str] = None, **kwargs: Any) -> PubSub:
    """`create_pubsub` and `PubSub.start`: misconfiguration fails here, at
    start-up, rather than at the first message."""
    pubsub = create_pubsub(url, **kwargs)
    try:
        await pubsub.start()
    except BaseException:
        await pubsub.close()
        raise
    return pubsub


# --- Handlers -----------------------------------------------------------------


def _parse_cursor(value: Optional[str], name: str) -> Optional[int]:
    if value is None:
        return None
    if not _CURSOR.fullmatch(value):
        raise web.HTTPError(400, "bad %s %r", name, value[:40])
    return int(value)


class _TopicHandler(web.RequestHandler):
    """What the long-poll and SSE handlers share: a pubsub and a topic."""

    pubsub: PubSub
    topic: Optional[str]

    def initialize(self, pubsub: PubSub, topic: Optional[str] = None) -> None:  # type: ignore[override]
        """``pubsub``: the `PubSub` to read; ``topic``: a fixed topic (else
        `get_topic` decides per request)."""
        if not isinstance(pubsub, PubSub):
            raise TypeError("pubsub must be a realtime.PubSub, not %r" % (pubsub,))
        self.pubsub = pubsub
        self.topic = topic
        self._subscription: Optional[Subscription] = None

    def get_topic(self, *args: Any, **kwargs: Any) -> str:
        """The topic this request reads: the ``topic`` given to the route,
        else the first path argument. Override to map users to topics, or
        to refuse (raise `web.HTTPError`)."""
        if self.topic is not None:
            return self.topic
        if args:
            return str(args[0])
        if kwargs:
            return str(next(iter(kwargs.values())))
        raise RuntimeError("%s has no topic: pass topic= or capture it in the URL" % type(self).__name__)

    def _topic_for(self, args: Any, kwargs: Any) -> str:
        topic = self.get_topic(*args, **kwargs)
        try:
            _check_topic(topic)
        except (TypeError, ValueError):
            raise web.HTTPError(400, "bad topic %r", topic) from None
        return topic

    def on_connection_close(self) -> None:
        """Stops waiting for messages when the client goes away."""
        super().on_connection_close()
        if self._subscription is not None:
            self._subscription.close()


class LongPollHandler(_TopicHandler):
    """Long polling: ``GET ...?cursor=N`` answers with the messages after N
    as soon as there is at least one, or with ``[]`` after `timeout` seconds.

    Route it with the pubsub (and optionally a fixed topic)::

        (r"/poll/(\\w+)", LongPollHandler, dict(pubsub=pubsub))

    The body is a JSON array of ``{"id": ..., "data": ...}`` objects, oldest
    first, at most `MAX_BATCH` of them; the client sends the last id back as
    ``cursor`` on its next request and so never misses a message published
    between two polls. Without a cursor the answer starts at the oldest
    retained message. With ``?callback=name`` (see `jsonp_argument`) the
    array is wrapped as JSONP, ``name([...]);``, served as JavaScript; a
    callback that is not a JavaScript name is refused with 400. A client that
    disconnects stops the wait at once.
    """

    timeout: float = LONG_POLL_TIMEOUT
    """Seconds to wait before answering ``[]``."""
    jsonp_argument: Optional[str] = "callback"
    """Query argument naming a JSONP callback; None turns JSONP off."""
    cursor_argument: str = "cursor"

    def get_cursor(self) -> int:
        """The id after which to answer (the ``cursor`` argument, default 0).
        A value that is not a decimal number is refused with 400."""
        return _parse_cursor(self.get_query_argument(self.cursor_argument, None), "cursor") or 0

    def get_jsonp_callback(self) -> Optional[str]:
        """The JSONP callback name, or None for plain JSON; 400 if invalid."""
        if self.jsonp_argument is None:
            return None
        callback: Optional[str] = self.get_query_argument(self.jsonp_argument, None)
        if callback is not None and (
            len(callback) > _MAX_JSONP_CALLBACK or not _JSONP_CALLBACK.fullmatch(callback)
        ):
            raise web.HTTPError(400, "bad JSONP callback %r", callback[:40])
        return callback

    async def get(self, *args: Any, **kwargs: Any) -> None:
        topic = self._topic_for(args, kwargs)
        cursor = self.get_cursor()
        callback = self.get_jsonp_callback()
        async with self.pubsub.subscribe(topic, after=cursor) as sub:
            self._subscription = sub
            messages = await sub.batch(self.timeout)
        self._subscription = None
        result = self.send_messages(messages, callback)
        if result is not None:
            await result

    def send_messages(self, messages: list[Message], callback: Optional[str]) -> Optional[Awaitable[None]]:
        """Write the response (``callback``: the JSONP name or None).
        Override to change the body's format or to act on the messages
        first; an override may be a coroutine."""
        body = "[" + ",".join(m.to_json() for m in messages) + "]"
        self.set_header("Cache-Control", "no-store")
        if callback is not None:
            self.set_header("Content-Type", "application/javascript; charset=UTF-8")
            self.set_header("X-Content-Type-Options", "nosniff")
            body = "%s(%s);" % (callback, body)
        else:
            self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(body)
        return None


class EventSourceHandler(_TopicHandler):
    """Server-Sent Events: a ``text/event-stream`` of a topic's messages.

    Route it like `LongPollHandler`. Each message is sent as an event with
    ``id:`` its id and ``data:`` its data as JSON (override `format_event`).
    A browser's ``EventSource`` reconnects by itself with the header
    ``Last-Event-ID`` and the stream resumes after that id from the history;
    a first connection without it receives only new messages (or, with
    ``?last_event_id=N``, the ones after N). A comment line is sent after
    `heartbeat_interval` idle seconds so that proxies keep the stream open.
    A client that reads too slowly to keep up (more than ``max_queue``
    messages behind) is disconnected, and resumes from the history when it
    reconnects.
    """

    heartbeat_interval: float = SSE_HEARTBEAT
    retry_ms: Optional[int] = SSE_RETRY_MS
    """Reconnection delay sent to the client; None leaves the browser's."""
    max_queue: int = SUBSCRIPTION_QUEUE
    write_timeout: float = SSE_WRITE_TIMEOUT
    """Seconds a client may take to accept what was written before it is
    disconnected."""
    event_name: Optional[str] = None
    """If set, the ``event:`` field of every event (the client listens with
    ``addEventListener(name, ...)`` instead of ``onmessage``)."""

    def get_last_event_id(self) -> Optional[int]:
        """The id to resume after: ``Last-Event-ID``, else the
        ``last_event_id`` query argument, else None (new messages only)."""
        header = self.request.headers.get("Last-Event-ID")
        if header is not None and header.strip():
            return _parse_cursor(header.strip(), "Last-Event-ID")
        return _parse_cursor(self.get_query_argument("last_event_id", None), "last_event_id")

    def format_event(self, message: Message) -> str:
        """One event's text, ending with the blank line."""
        if self.event_name is not None:
            return "id: %d\nevent: %s\ndata: %s\n\n" % (message.id, self.event_name, message.json)
        return "id: %d\ndata: %s\n\n" % (message.id, message.json)

    async def get(self, *args: Any, **kwargs: Any) -> None:
        topic = self._topic_for(args, kwargs)
        after = self.get_last_event_id()
        self.set_header("Content-Type", "text/event-stream; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        # Tells nginx not to buffer the stream.
        self.set_header("X-Accel-Buffering", "no")
        sub = self._subscription = self.pubsub.subscribe(topic, after=after, max_queue=self.max_queue)
        async with sub:
            if self.retry_ms is not None:
                self.write("retry: %d\n\n" % self.retry_ms)
            else:
                self.write(": connected\n\n")
            await self.flush()
            while not sub.closed:
                try:
                    messages = await sub.batch(self.heartbeat_interval)
                except SlowConsumerError:
                    gen_log.info("realtime: closing slow event stream of %r", topic)
                    break
                if sub.closed:
                    break
                if messages:
                    self.write("".join(self.format_event(m) for m in messages))
                else:
                    self.write(": ping\n\n")
                if not await self._flushed(sub):
                    gen_log.info("realtime: dropping stalled event stream of %r", topic)
                    break

    async def _flushed(self, sub: Subscription) -> bool:
        """Flush; False if the client stopped reading, and was dropped: it
        did not take the data within `write_timeout`, or fell so far behind
        that its subscription overflowed meanwhile."""
        flushed = self.flush()
        if not flushed.done():
            await asyncio.wait(
                (flushed, sub._when_closed()),
                timeout=self.write_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not flushed.done():
                httputil._abort_connection(self.request.connection)
                return False
        if not flushed.cancelled():
            # A failed flush means the client is gone: on_connection_close
            # has closed the subscription, which ends the stream.
            flushed.exception()
        return True


class _HubConnection(_Sink):
    """One WebSocket joined to one topic of a `WebSocketHub`."""

    __slots__ = ("_hub", "handler", "_queue", "_blocked", "dropped")

    def __init__(self, hub: "WebSocketHub", handler: Any, topic: str, after: Optional[int]) -> None:
        super().__init__(hub.pubsub, topic, after)
        self._hub = hub
        self.handler = handler
        self._queue: collections.deque[str] = collections.deque()
        self._blocked = False
        self.dropped = 0

    def _deliver(self, message: Message) -> None:
        text = self._hub._text(message)
        if self._blocked:
            queue = self._queue
            queue.append(text)
            if len(queue) > self._hub.max_queue:
                self._hub._overflow(self)
            return
        self._send(text)

    def _send(self, text: str) -> None:
        try:
            future = self.handler.write_message(text)
        except self._hub._closed_error:
            self._hub._remove(self)
            return
        if not future.done():
            # Above the transport's high-water mark: queue until it drains.
            self._blocked = True
            future.add_done_callback(self._drained)

    def _drained(self, future: "asyncio.Future[None]") -> None:
        self._blocked = False
        if future.cancelled() or future.exception() is not None:
            self._hub._remove(self)
            return
        queue = self._queue
        while queue and not self._blocked and self._attached:
            self._send(queue.popleft())


class WebSocketHub:
    """Writes a topic's messages to every WebSocket that joined it.

    ::

        hub = WebSocketHub(pubsub)

        class ChatSocket(WebSocketHandler):
            async def open(self):
                await hub.join(self, "room", after=cursor_or_None)
            def on_close(self):
                hub.leave(self)

    Each message is encoded once (`format`) and written to each connection.
    A connection whose socket cannot take more (the client reads slowly) gets
    a queue of its own, so the others are not held back; when that queue
    exceeds ``max_queue`` messages, the ``overflow`` policy applies:
    ``"close"`` (the default) closes the connection with code 1013 ("try
    again later"), and a client that reconnects with its last id resumes
    from the history; ``"drop"`` discards the oldest queued message (the
    client sees a gap in the ids).
    """

    def __init__(
        self,
        pubsub: PubSub,
        *,
        max_queue: int = WEBSOCKET_QUEUE,
        overflow: str = "close",
    ) -> None:
        if not isinstance(pubsub, PubSub):
            raise TypeError("pubsub must be a realtime.PubSub, not %r" % (pubsub,))
        if type(max_queue) is not int or max_queue < 1:
            raise ValueError("max_queue must be an int >= 1, not %r" % (max_queue,))
        if overflow not in ("close", "drop"):
            raise ValueError("overflow must be 'close' or 'drop', not %r" % (overflow,))
        # Imported here so that long polling and SSE do not load WebSockets.
        from squall.websocket import WebSocketClosedError

        self._closed_error = WebSocketClosedError
        self.pubsub = pubsub
        self.max_queue = max_queue
        self.overflow = overflow
        self._connections: dict[Any, dict[str, _HubConnection]] = {}
        self._last_message: Optional[Message] = None
        self._last_text = ""

    def format(self, message: Message) -> str:
        """The text sent for ``message``: ``{"id", "topic", "data"}`` as JSON.
        Override to change it; it is called once per message."""
        return '{"id":%d,"topic":%s,"data":%s}' % (
            message.id, json.dumps(message.topic), message.json
        )

    def _text(self, message: Message) -> str:
        # Every connection of a topic receives the same message in turn:
        # remembering the last one encodes it once.
        if message is not self._last_message:
            self._last_text = self.format(message)
            self._last_message = message
        return self._last_text

    async def join(self, handler: Any, topic: str, after: Optional[int] = None) -> None:
        """Send ``topic``'s messages to ``handler`` (an open
        `squall.websocket.WebSocketHandler`): those after ``after`` from the
        history first if given, then live ones. Joining a topic twice does
        nothing."""
        joined = self._connections.setdefault(handler, {})
        if topic in joined:
            return
        connection = _HubConnection(self, handler, topic, after)
        joined[topic] = connection
        try:
            await connection._start()
        except BaseException:
            self._remove(connection)
            raise

    def leave(self, handler: Any, topic: Optional[str] = None) -> None:
        """Stop sending ``topic`` (default: every topic) to ``handler``;
        call it from ``on_close``."""
        joined = self._connections.get(handler)
        if joined is None:
            return
        for connection in list(joined.values()) if topic is None else [joined.get(topic)]:
            if connection is not None:
                self._remove(connection)

    def _remove(self, connection: _HubConnection) -> None:
        connection._detach()
        connection._queue.clear()
        joined = self._connections.get(connection.handler)
        if joined is not None and joined.get(connection.topic) is connection:
            del joined[connection.topic]
            if not joined:
                del self._connections[connection.handler]

    def _overflow(self, connection: _HubConnection) -> None:
        if self.overflow == "drop":
            connection._queue.popleft()
            connection.dropped += 1
            return
        gen_log.info("realtime: closing slow WebSocket on %r", connection.topic)
        self._remove(connection)
        connection.handler.close(SLOW_CONSUMER_CLOSE_CODE, "too slow")

    @property
    def connection_count(self) -> int:
        """WebSocket connections joined to at least one topic."""
        return len(self._connections)

    def topic_connections(self, topic: str) -> int:
        """How many connections are joined to ``topic``."""
        return sum(1 for joined in self._connections.values() if topic in joined)

