"""Idempotent request handling: doing the work of a retried request only once.

A client that times out and sends its request again cannot know whether the
first attempt was processed. When both attempts carry the same idempotency
key, `idempotent` makes the handler method run once and answers every retry
with the first attempt's response::

    from squall import web
    from squall.idempotency import idempotent

    class PaymentHandler(web.RequestHandler):
        @idempotent
        async def post(self):
            payment = await charge(self.request.body)
            self.set_status(201)
            self.write({"id": payment.id})

The key comes from the ``Idempotency-Key`` request header by default (the
IETF draft ``draft-ietf-httpapi-idempotency-key-header``), or from a function
of the handler. Records live in an `IdempotencyStore`: `MemoryStore` (the
default: one process, bounded, with expiry) or `RedisStore` (shared by every
process that uses the same Redis).

The rules, for a request whose key is K:

* No record for K: the request claims K (an *in-flight* record) and its
  method runs. The claim is renewed while the method runs and expires after
  ``lock_ttl`` if the process dies.
* The method returns (or raises `.web.Finish`): the response is kept under
  K for ``ttl`` (status, reason, the headers named in ``replay_headers``,
  body) and sent. When the method leaves the finishing to squall (it writes
  and returns, the usual case) the record is stored before the response
  leaves, so a client that got the response gets the same one on a retry;
  when it flushes or finishes by itself, the record follows the response.
* The method raises anything else: the claim is dropped, so that a retry runs
  the work again; the error response is not kept.
* The client hung up before the method started (it was waiting in
  ``prepare``, or for the claim): the claim is dropped and the method never
  runs (nginx's 499 is the status written to the access log).
* K is kept: a retry gets that response again, with ``Idempotent-Replayed:
  true``, without the method running.
* K is in flight: a retry waits for the first attempt's result (at most
  ``wait_timeout`` seconds, then 409 with ``Retry-After``; it stops waiting
  if its own client leaves) or, with
  ``in_flight="conflict"``, gets 409 at once. If the first attempt fails or
  its client leaves before starting, a waiting retry claims K and runs.
* K was used with another request (method, target or body differ): 422.
* An empty key, a key longer than `MAX_KEY_LENGTH`, a malformed or repeated
  header: 400 with a reason naming the problem. Without a key the method runs
  normally, unless ``required=True`` (then 400).
* The store fails (Redis unreachable): 503 with ``Retry-After``, logged.

Only decorated methods pay anything: other handlers never reach this module.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import dataclasses
import datetime
import functools
import hashlib
import json
import os
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Optional, TypeVar, Union, overload

from squall import web
from squall.log import app_log, gen_log

__all__ = [
    "DEFAULT_LOCK_TTL",
    "DEFAULT_REPLAY_HEADERS",
    "DEFAULT_TTL",
    "DEFAULT_WAIT_TIMEOUT",
    "IDEMPOTENCY_KEY_HEADER",
    "IdempotencyRecord",
    "IdempotencyStore",
    "MAX_KEY_LENGTH",
    "MemoryStore",
    "REPLAYED_HEADER",
    "RedisStore",
    "SETTINGS_KEY",
    "StoreFullError",
    "StoredResponse",
    "idempotent",
    "store_from_url",
]

# The request header that carries the key (draft-ietf-httpapi-idempotency-key-header).
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
# Marks a response that is a stored copy (the name Stripe's API uses).
REPLAYED_HEADER = "Idempotent-Replayed"
# The application setting that may hold the store for decorated methods
# that do not name one.
SETTINGS_KEY = "idempotency_store"
# Longest key accepted, in characters: Stripe's limit for the same header.
MAX_KEY_LENGTH = 255
# Seconds a finished response is kept for replay: Stripe keeps keys 24 hours.
DEFAULT_TTL = 24 * 3600.0
# Seconds an in-flight claim lives without renewal; the running method renews
# it every third of that, so only a dead process lets it lapse. A minute is
# nginx's proxy_read_timeout: no client waits longer for one attempt.
DEFAULT_LOCK_TTL = 60.0
# Seconds a retry waits for an in-flight attempt before it gets 409: under
# nginx's 60 s proxy_read_timeout, so the client gets our answer, not a 504.
DEFAULT_WAIT_TIMEOUT = 30.0
# Seconds a 409 or 503 tells the client to wait before trying again.
RETRY_AFTER_SECONDS = 1
# Response headers kept with a response and replayed: those that describe
# the representation or the outcome. Set-Cookie and per-response headers
# (Date, Server, Content-Length) are left out; pass replay_headers to change.
DEFAULT_REPLAY_HEADERS = (
    "Cache-Control",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Location",
    "Content-Type",
    "Etag",
    "Expires",
    "Last-Modified",
    "Link",
    "Location",
    "Vary",
)
# MemoryStore bounds: 10,000 records of a few KiB is tens of MiB at most, and
# the bytes bound caps the bodies whatever their size.
DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# Seconds a Redis connection or command may take before the store gives up
# (the request then gets 503 rather than hanging).
REDIS_TIMEOUT = 5.0
# A retry waiting on Redis polls the key: first after 5 ms, doubling up to
# 100 ms, so a short attempt is noticed quickly and a long one costs at most
# ten GETs a second per waiting request.
REDIS_POLL_FIRST = 0.005
REDIS_POLL_MAX = 0.1
# A waiting retry checks at least this often (seconds) whether its own client
# is still there: a second is short next to any client timeout.
_WAIT_SLICE = 1.0
# Times a claim retries when the record it collided with vanished before it
# could be read (released or expired in between): more means a busy loop.
_CLAIM_ATTEMPTS = 3
# Status written to the access log for a request whose client left before
# the work started: nginx's "client closed request".
_CLIENT_GONE = (499, "Client Closed Request")

# An sf-string (RFC 8941 section 3.3.3), the draft's syntax for the key.
_SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"\Z')
_SF_ESCAPE = re.compile(r'\\(["\\])')
# Many clients send the key unquoted (as Stripe's API documents it): accept
# a run of visible ASCII characters too.
_BARE_KEY = re.compile(r"[\x21-\x7e]+\Z")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_IN_FLIGHT_MODES = ("wait", "conflict")

_MethodT = TypeVar("_MethodT", bound=Callable[..., Any])
_Seconds = Union[float, int, datetime.timedelta]


class StoreFullError(Exception):
    """A `MemoryStore` cannot take a new claim: every slot holds a request
    still in flight. The request is answered 503 with ``Retry-After``."""


@dataclasses.dataclass(frozen=True)
class StoredResponse:
    """A response kept for replay: status, reason phrase, the selected
    headers (in order, a name may repeat) and the body as the handler wrote
    it (before output transforms such as gzip, which run again on replay)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclasses.dataclass(frozen=True)
class IdempotencyRecord:
    """What a store holds under a key: the fingerprint of the request that
    claimed it, and its response once finished (None while in flight)."""

    fingerprint: str
    response: Optional[StoredResponse] = None

    @property
    def in_flight(self) -> bool:
        """True while the claiming request has not finished."""
        return self.response is None


class IdempotencyStore(abc.ABC):
    """Where idempotency records live; subclass it for another database.

    Every method is a coroutine and must be atomic per key with respect to
    every process sharing the store. ``token`` identifies one claim: only
    the holder of the token may complete, release or extend it, so a claim
    that expired and was taken by another request is not overwritten.
    """

    @abc.abstractmethod
    async def claim(
        self, key: str, fingerprint: str, token: str, lock_ttl: float
    ) -> Optional[IdempotencyRecord]:
        """Claim ``key`` for ``lock_ttl`` seconds if it holds no record.

        Returns None when the claim was made, else the record found (in
        flight or finished), which is left untouched.
        """

    @abc.abstractmethod
    async def complete(
        self, key: str, token: str, record: IdempotencyRecord, ttl: float
    ) -> bool:
        """Replace the claim ``token`` holds on ``key`` with the finished
        ``record``, kept ``ttl`` seconds. False if the claim was lost."""

    @abc.abstractmethod
    async def release(self, key: str, token: str) -> bool:
        """Drop the claim ``token`` holds on ``key``. False if it was lost."""

    @abc.abstractmethod
    async def extend(self, key: str, token: str, lock_ttl: float) -> bool:
        """Renew the claim ``token`` holds on ``key`` for ``lock_ttl``
        seconds from now. False if it was lost."""

    @abc.abstractmethod
    async def wait(self, key: str, timeout: float) -> None:
        """Return once ``key`` is no longer in flight (finished, released or
        expired), or after ``timeout`` seconds, whichever comes first."""

    async def check(self) -> None:
        """Fail (`ConnectionError`) if the store cannot be reached. Call it
        at start-up to find a misconfiguration before the first request."""

    async def close(self) -> None:
        """Release the store's connections (if it opened them)."""


class _MemoryEntry:
    __slots__ = ("fingerprint", "token", "response", "expires", "size")

    def __init__(
        self,
        fingerprint: str,
        token: Optional[str],
        response: Optional[StoredResponse],
        expires: float,
        size: int,
    ) -> None:
        self.fingerprint = fingerprint
        self.token = token
        self.response = response
        self.expires = expires
        self.size = size


class MemoryStore(IdempotencyStore):
    """Records in this process's memory: the default store.

    Fast and dependency-free, but private to one process: behind several
    processes or machines use `RedisStore`. It is bounded: at most
    ``max_entries`` records and ``max_bytes`` of stored responses; beyond
    that the oldest finished records are forgotten first (a retry of one of
    them would run again). Claims in flight are never evicted: when they
    alone fill the store, new claims fail with `StoreFullError` (503). A
    response larger than ``max_bytes`` is not kept. Use it from one event
    loop (it is not thread-safe).
    """

    def __init__(
        self, *, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        _check_positive_int("max_entries", max_entries)
        _check_positive_int("max_bytes", max_bytes)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        # Claims in flight, and finished records in the order they finished
        # (the eviction order).
        self._pending: dict[str, _MemoryEntry] = {}
        self._done: collections.OrderedDict[str, _MemoryEntry] = collections.OrderedDict()
        self._bytes = 0
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        return len(self._pending) + len(self._done)

    def _lookup(self, key: str, now: float) -> Optional[_MemoryEntry]:
        entry = self._pending.get(key)
        if entry is None:
            entry = self._done.get(key)
        if entry is not None and entry.expires <= now:
            self._forget(key, entry)
            return None
        return entry

    def _forget(self, key: str, entry: _MemoryEntry) -> None:
        if entry.token is not None:
            del self._pending[key]
        else:
            del self._done[key]
            self._bytes -= entry.size
        self._wake(key)

    def _wake(self, key: str) -> None:
        for waiter in self._waiters.pop(key, ()):
            if not waiter.done():
                waiter.set_result(None)

    def _make_room(self, now: float) -> None:
        """Evict finished records until one more entry and the stored bytes
        fit; raise StoreFullError if claims in flight fill every slot."""
        while self._done and (
            len(self) >= self.max_entries or self._bytes > self.max_bytes
        ):
            key, entry = next(iter(self._done.items()))
            self._forget(key, entry)
        if len(self._pending) >= self.max_entries:
            for key, entry in list(self._pending.items()):
                if entry.expires <= now:
                    self._forget(key, entry)
            if len(self._pending) >= self.max_entries:
                raise StoreFullError(
                    "all %d idempotency slots hold requests in flight" % self.max_entries
                )

    async def claim(
        self, key: str, fingerprint: str, token: str, lock_ttl: float
    ) -> Optional[IdempotencyRecord]:
        now = time.monotonic()
        entry = self._lookup(key, now)
        if entry is not None:
            return IdempotencyRecord(entry.fingerprint, entry.response)
        self._make_room(now)
        self._pending[key] = _MemoryEntry(fingerprint, token, None, now + lock_ttl, 0)
        return None

    def _claimed(self, key: str, token: str) -> Optional[_MemoryEntry]:
        entry = self._lookup(key, time.monotonic())
        if entry is None or entry.token != token:
            return None
        return entry

    async def complete(
        self, key: str, token: str, record: IdempotencyRecord, ttl: float
    ) -> bool:
        entry = self._claimed(key, token)
        if entry is None:
            return False
        del self._pending[key]
        response = record.response
        size = _response_size(response) if response is not None else 0
        if size > self.max_bytes:
            gen_log.warning(
                "idempotency: a %d-byte response exceeds max_bytes=%d and is not kept",
                size, self.max_bytes,
            )
        else:
            self._done[key] = _MemoryEntry(
                record.fingerprint, None, response, time.monotonic() + ttl, size
            )
            self._bytes += size
            while self._bytes > self.max_bytes:
                oldest, evicted = next(iter(self._done.items()))
                self._forget(oldest, evicted)
        self._wake(key)
        return True

    async def release(self, key: str, token: str) -> bool:
        entry = self._claimed(key, token)
        if entry is None:
            return False
        self._forget(key, entry)
        return True

    async def extend(self, key: str, token: str, lock_ttl: float) -> bool:
        entry = self._claimed(key, token)
        if entry is None:
            return False
        entry.expires = time.monotonic() + lock_ttl
        return True

    async def wait(self, key: str, timeout: float) -> None:
        entry = self._lookup(key, time.monotonic())
        if entry is None or entry.token is None:
            return
        # A claim whose process died is never completed: wake at its expiry.
        timeout = min(timeout, entry.expires - time.monotonic())
        if timeout <= 0:
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.setdefault(key, []).append(waiter)
        timer = loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            waiters = self._waiters.get(key)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[key]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _response_size(response: StoredResponse) -> int:
    return len(response.body) + sum(len(n) + len(v) for n, v in response.headers)


# Redis values: an in-flight claim is "P <token> <fingerprint>"; a finished
# record is "D " + JSON metadata + "\n" + the body bytes, so bodies are stored
# as they are, without base64.
_PENDING = b"P "
_DONE = b"D "

# Compare-and-act on a claim, atomically: act only if the key still holds a
# claim with our token. KEYS[1] the key; ARGV[1] the claim prefix "P <token> ".
_IF_CLAIMED = """
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, string.len(ARGV[1])) ~= ARGV[1] then return 0 end
"""
# ARGV[2] the finished record, ARGV[3] its time to live in milliseconds.
_COMPLETE_SCRIPT = _IF_CLAIMED + "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])\nreturn 1\n"
_RELEASE_SCRIPT = _IF_CLAIMED + "redis.call('DEL', KEYS[1])\nreturn 1\n"
# ARGV[2] the claim's new time to live in milliseconds.
_EXTEND_SCRIPT = _IF_CLAIMED + "redis.call('PEXPIRE', KEYS[1], ARGV[2])\nreturn 1\n"


def _encode_done(record: IdempotencyRecord) -> bytes:
    response = record.response
    assert response is not None
    meta = {
        "f": record.fingerprint,
        "s": response.status,
        "r": response.reason,
        "h": [list(pair) for pair in response.headers],
    }
    return _DONE + json.dumps(meta, separators=(",", ":")).encode("utf-8") + b"\n" + response.body


def _decode_record(value: bytes) -> IdempotencyRecord:
    if value.startswith(_PENDING):
        _, _, fingerprint = value[2:].partition(b" ")
        return IdempotencyRecord(fingerprint.decode("ascii"))
    if value.startswith(_DONE):
        meta_bytes, _, body = value[2:].partition(b"\n")
        meta = json.loads(meta_bytes)
        response = StoredResponse(
            int(meta["s"]), str(meta["r"]), tuple((str(n), str(v)) for n, v in meta["h"]), body
        )
        return IdempotencyRecord(str(meta["f"]), response)
    raise ValueError("not an idempotency record: %r" % (value[:40],))


def _milliseconds(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisStore(IdempotencyStore):
    """Records in Redis, shared by every process and machine that uses it.

    A claim is one ``SET key value NX PX lock_ttl``; completing, releasing
    and renewing a claim are short Lua scripts that act only if the key still
    holds this request's claim. Finished records are stored with ``PX ttl``,
    so Redis expires them. Keys are ``prefix + idempotency key``. A retry
    waiting for an in-flight request polls the key (every 5 ms at first, at
    most every 100 ms).

    ``client`` is a ``redis.asyncio.Redis`` (it must not decode responses);
    `from_url` builds one. Works with Redis 2.6.12 and later.
    """

    def __init__(self, client: Any, *, prefix: str = "squall:idempotency:") -> None:
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a str, not %r" % (prefix,))
        pool = getattr(client, "connection_pool", None)
        if pool is None or not hasattr(client, "register_script"):
            raise TypeError("client must be a redis.asyncio.Redis, not %r" % (client,))
        if pool.connection_kwargs.get("decode_responses"):
            raise ValueError("RedisStore needs a client with decode_responses=False")
        self.prefix = prefix
        self._client = client
        self._owns_client = False
        self._url: Optional[str] = None
        self._complete = client.register_script(_COMPLETE_SCRIPT)
        self._release = client.register_script(_RELEASE_SCRIPT)
        self._extend = client.register_script(_EXTEND_SCRIPT)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "squall:idempotency:", **redis_kwargs: Any
    ) -> "RedisStore":
        """A store with its own client for ``url`` (``redis://host:port/db``,
        ``rediss://`` or ``unix://``). A malformed URL raises `ValueError`
        here; `check` finds an unreachable server. ``redis_kwargs`` go to
        ``redis.asyncio.Redis.from_url``; `close` closes the client."""
        _check_redis_url(url)
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise RuntimeError("RedisStore needs redis-py: pip install 'squall[redis]'") from None
        redis_kwargs.setdefault("socket_connect_timeout", REDIS_TIMEOUT)
        redis_kwargs.setdefault("socket_timeout", REDIS_TIMEOUT)
        try:
            client = aioredis.Redis.from_url(url, **redis_kwargs)
        except ValueError as e:
            raise ValueError("invalid Redis URL %r: %s" % (url, e)) from None
        store = cls(client, prefix=prefix)
        store._owns_client = True
        store._url = url
        return store

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def claim(
        self, key: str, fingerprint: str, token: str, lock_ttl: float
    ) -> Optional[IdempotencyRecord]:
        name = self._key(key)
        value = b"%s%s %s" % (_PENDING, token.encode("ascii"), fingerprint.encode("ascii"))
        for _ in range(_CLAIM_ATTEMPTS):
            if await self._client.set(name, value, nx=True, px=_milliseconds(lock_ttl)):
                return None
            existing = await self._client.get(name)
            if existing is not None:
                return _decode_record(existing)
        raise RuntimeError("idempotency key %r keeps vanishing while being claimed" % (key,))

    async def complete(
        self, key: str, token: str, record: IdempotencyRecord, ttl: float
    ) -> bool:
        done = await self._complete(
            keys=[self._key(key)],
            args=[_claim_prefix(token), _encode_done(record), _milliseconds(ttl)],
        )
        return bool(done)

    async def release(self, key: str, token: str) -> bool:
        return bool(await self._release(keys=[self._key(key)], args=[_claim_prefix(token)]))

    async def extend(self, key: str, token: str, lock_ttl: float) -> bool:
        done = await self._extend(
            keys=[self._key(key)], args=[_claim_prefix(token), _milliseconds(lock_ttl)]
        )
        return bool(done)

    async def wait(self, key: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = REDIS_POLL_FIRST
        name = self._key(key)
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, REDIS_POLL_MAX)
            value = await self._client.get(name)
            if value is None or not value.startswith(_PENDING):
                return

    async def check(self) -> None:
        """``PING`` Redis; raise `ConnectionError` naming the server if it
        does not answer."""
        import redis.exceptions

        try:
            await self._client.ping()
        except (OSError, asyncio.TimeoutError, redis.exceptions.RedisError) as e:
            where = self._url or repr(self._client)
            raise ConnectionError("cannot reach Redis at %s: %s" % (where, e)) from None

    async def close(self) -> None:
        """Close the client if `from_url` created it (a client passed in
        belongs to the caller)."""
        if self._owns_client:
            await self._client.aclose()


def _claim_prefix(token: str) -> bytes:
    return _PENDING + token.encode("ascii") + b" "


def _check_redis_url(url: str) -> None:
    if not isinstance(url, str):
        raise TypeError("Redis URL must be a str, not %r" % (url,))
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("invalid Redis URL %r: use redis://, rediss:// or unix://" % (url,))
    try:
        parts.port
    except ValueError:
        raise ValueError("invalid Redis URL %r: bad port" % (url,)) from None
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("invalid Redis URL %r: no host" % (url,))
    if parts.scheme == "unix" and not parts.path:
        raise ValueError("invalid Redis URL %r: no socket path" % (url,))


def store_from_url(url: str, **kwargs: Any) -> IdempotencyStore:
    """A store for ``url``: ``memory://`` gives a `MemoryStore`;
    ``redis://``, ``rediss://`` and ``unix://`` a `RedisStore`. Keyword
    arguments go to the store. Any other URL raises `ValueError` at once."""
    if not isinstance(url, str):
        raise TypeError("store URL must be a str, not %r" % (url,))
    if url == "memory://":
        return MemoryStore(**kwargs)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore.from_url(url, **kwargs)
    raise ValueError(
        "unsupported idempotency store URL %r: use memory:// or redis://host:port/db" % (url,)
    )


_default_store: Optional[MemoryStore] = None


def _process_store() -> MemoryStore:
    global _default_store
    if _default_store is None:
        _default_store = MemoryStore()
    return _default_store


# -- the decorator -----------------------------------------------------------


class _ClientGone(Exception):
    """The client hung up before the work started: nothing to run or answer."""


class _Refusal(Exception):
    """Ends an idempotent request with an error status before any work."""

    def __init__(self, status: int, reason: str, retry_after: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


@dataclasses.dataclass(frozen=True)
class _Policy:
    key: Optional[Callable[[web.RequestHandler], Optional[str]]]
    fingerprint: Optional[Callable[[web.RequestHandler], Union[str, bytes]]]
    store: Optional[IdempotencyStore]
    ttl: float
    lock_ttl: float
    in_flight: str
    wait_timeout: float
    required: bool
    replay_headers: frozenset[str]


@overload
def idempotent(method: _MethodT) -> _MethodT: ...


@overload
def idempotent(
    method: None = None,
    *,
    key: Optional[Callable[[web.RequestHandler], Optional[str]]] = None,
    store: Union[IdempotencyStore, str, None] = None,
    ttl: _Seconds = DEFAULT_TTL,
    lock_ttl: _Seconds = DEFAULT_LOCK_TTL,
    in_flight: str = "wait",
    wait_timeout: _Seconds = DEFAULT_WAIT_TIMEOUT,
    required: bool = False,
    fingerprint: Optional[Callable[[web.RequestHandler], Union[str, bytes]]] = None,
    replay_headers: Iterable[str] = DEFAULT_REPLAY_HEADERS,
) -> Callable[[_MethodT], _MethodT]: ...


def idempotent(
    method: Optional[_MethodT] = None,
    *,
    key: Optional[Callable[[web.RequestHandler], Optional[str]]] = None,
    store: Union[IdempotencyStore, str, None] = None,
    ttl: _Seconds = DEFAULT_TTL,
    lock_ttl: _Seconds = DEFAULT_LOCK_TTL,
    in_flight: str = "wait",
    wait_timeout: _Seconds = DEFAULT_WAIT_TIMEOUT,
    required: bool = False,
    fingerprint: Optional[Callable[[web.RequestHandler], Union[str, bytes]]] = None,
    replay_headers: Iterable[str] = DEFAULT_REPLAY_HEADERS,
) -> Any:
    """Make a `~.web.RequestHandler` method run once per idempotency key.

    Use it bare (``@idempotent``) or with options (``@idempotent(ttl=3600)``)
    on a verb method (``post``, ``put``, ``patch``, ``delete``), plain or
    coroutine. The module docstring lists the rules. Options:

    * ``key``: a function of the handler returning the key (a str) or None
      for "no key"; by default the ``Idempotency-Key`` header, as an
      RFC 8941 string (``"abc"``) or bare visible ASCII (``abc``). Keys are
      global to the store: include the user or tenant in a custom key when
      clients could pick the same one.
    * ``store``: an `IdempotencyStore` or a store URL (`store_from_url`,
      parsed here, so a bad URL fails at import). By default the
      application's ``idempotency_store`` setting, else one `MemoryStore`
      per process.
    * ``ttl``: seconds (or a timedelta) a finished response is kept.
    * ``lock_ttl``: seconds an in-flight claim survives without renewal
      (only matters when a process dies mid-request).
    * ``in_flight``: ``"wait"`` (a retry waits for the first attempt) or
      ``"conflict"`` (a retry gets 409 at once, as the IETF draft describes).
    * ``wait_timeout``: the longest a retry waits before 409.
    * ``required``: answer 400 to a request without a key.
    * ``fingerprint``: a function of the handler giving what must match for
      a key to be reused (default: method, target and body, hashed).
    * ``replay_headers``: response header names kept and replayed.

    Misuse (a bad option value) raises `TypeError` or `ValueError` here.
    """
    policy = _Policy(
        key=_check_callable("key", key),
        fingerprint=_check_callable("fingerprint", fingerprint),
        store=_check_store(store),
        ttl=_seconds("ttl", ttl),
        lock_ttl=_seconds("lock_ttl", lock_ttl),
        in_flight=_check_mode(in_flight),
        wait_timeout=_seconds("wait_timeout", wait_timeout, allow_zero=True),
        required=_check_bool("required", required),
        replay_headers=_check_header_names(replay_headers),
    )

    def decorate(func: _MethodT) -> _MethodT:
        if not callable(func):
            raise TypeError("@idempotent decorates a handler method, not %r" % (func,))

        @functools.wraps(func)
        async def wrapper(self: web.RequestHandler, *args: Any, **kwargs: Any) -> None:
            await _run(policy, func, self, args, kwargs)

        return wrapper  # type: ignore[return-value]

    if method is not None:
        return decorate(method)
    return decorate


def _check_callable(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError("%s must be a function of the handler or None, not %r" % (name, value))
    return value


def _check_store(store: Any) -> Optional[IdempotencyStore]:
    if store is None or isinstance(store, IdempotencyStore):
        return store
    if isinstance(store, str):
        return store_from_url(store)
    raise TypeError("store must be an IdempotencyStore, a store URL or None, not %r" % (store,))


def _seconds(name: str, value: Any, allow_zero: bool = False) -> float:
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("%s must be a number of seconds or a timedelta, not %r" % (name, value))
    if not (value >= 0 if allow_zero else value > 0) or value != value or value == float("inf"):
        raise ValueError("%s must be a finite %s number of seconds, not %r" % (
            name, "non-negative" if allow_zero else "positive", value))
    return float(value)


def _check_mode(mode: Any) -> str:
    if mode not in _IN_FLIGHT_MODES:
        raise ValueError("in_flight must be 'wait' or 'conflict', not %r" % (mode,))
    return str(mode)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("%s must be a bool, not %r" % (name, value))
    return value


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an int, not %r" % (name, value))
    if value < 1:
        raise ValueError("%s must be at least 1, not %r" % (name, value))


def _check_header_names(names: Iterable[str]) -> frozenset[str]:
    if isinstance(names, str):
        raise TypeError("replay_headers must be a collection of names, not the str %r" % (names,))
    checked = set()
    for name in names:
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ValueError("invalid header name in replay_headers: %r" % (name,))
        checked.add(name.lower())
    return frozenset(checked)


# -- one request ---------------------------------------------------------------


def _header_key(handler: web.RequestHandler) -> Optional[str]:
    values = handler.request.headers.get_list(IDEMPOTENCY_KEY_HEADER)
    if not values:
        return None
    if len(values) > 1:
        raise _Refusal(400, "More than one Idempotency-Key header")
    value = values[0]
    if value.startswith('"'):
        match = _SF_STRING.match(value)
        if match is None:
            raise _Refusal(400, "Idempotency-Key is not a valid quoted string")
        return _SF_ESCAPE.sub(r"\1", match.group(1))
    if value and not _BARE_KEY.match(value):
        raise _Refusal(400, "Idempotency-Key has characters outside visible ASCII")
    return value


def _request_key(policy: _Policy, handler: web.RequestHandler) -> Optional[str]:
    if policy.key is None:
        key = _header_key(handler)
    else:
        key = policy.key(handler)
        if key is not None and not isinstance(key, str):
            raise TypeError("the idempotency key function must return a str or None, not %r" % (key,))
    if key is None:
        if policy.required:
            if policy.key is None:
                raise _Refusal(400, "Missing Idempotency-Key header")
            raise _Refusal(400, "Missing idempotency key")
        return None
    what = "Idempotency-Key" if policy.key is None else "Idempotency key"
    if not key:
        raise _Refusal(400, what + " is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise _Refusal(400, "%s is longer than %d characters" % (what, MAX_KEY_LENGTH))
    return key


def _request_fingerprint(policy: _Policy, handler: web.RequestHandler) -> str:
    digest = hashlib.sha256()
    if policy.fingerprint is None:
        request = handler.request
        digest.update(request.method.encode("ascii") if request.method else b"")
        digest.update(b"\n")
        digest.update(request.uri.encode("utf-8") if request.uri else b"")
        digest.update(b"\n")
        digest.update(request.body)
    else:
        value = policy.fingerprint(handler)
        if isinstance(value, str):
            value = value.encode("utf-8")
        if not isinstance(value, bytes):
            raise TypeError("the fingerprint function must return str or bytes, not %r" % (value,))
        digest.update(value)
    # 128 bits tell requests apart as well as 256 and halve the stored text.
    return digest.hexdigest()[:32]


def _store_for(policy: _Policy, handler: web.RequestHandler) -> IdempotencyStore:
    if policy.store is not None:
        return policy.store
    store = handler.settings.get(SETTINGS_KEY)
    if store is None:
        return _process_store()
    if not isinstance(store, IdempotencyStore):
        raise TypeError(
            "the %r setting must be an IdempotencyStore (see store_from_url), not %r"
            % (SETTINGS_KEY, store)
        )
    return store


def _client_gone(handler: web.RequestHandler) -> bool:
    # RequestHandler notes here that on_connection_close was reported.
    return bool(handler._close_reported)


def _refuse(handler: web.RequestHandler, refusal: _Refusal) -> None:
    """Answer with the refusal's status through the handler's write_error,
    as send_error would, but keeping a Retry-After header."""
    handler.clear()
    handler.set_status(refusal.status, refusal.reason)
    if refusal.retry_after:
        handler.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
    handler.write_error(refusal.status)
    if not handler._finished:
        handler.finish()


def _replay(handler: web.RequestHandler, response: StoredResponse) -> None:
    handler.set_status(response.status, response.reason)
    seen: set[str] = set()
    for name, value in response.headers:
        if name in seen:
            handler.add_header(name, value)
        else:
            seen.add(name)
            handler.set_header(name, value)
    handler.set_header(REPLAYED_HEADER, "true")
    if response.body:
        handler.write(response.body)
    handler.finish()


async def _run(
    policy: _Policy,
    method: Callable[..., Any],
    handler: web.RequestHandler,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    try:
        key = _request_key(policy, handler)
        if key is None:
            result = method(handler, *args, **kwargs)
            if result is not None:
                await result
            return
        store = _store_for(policy, handler)
        attempt = _Attempt(policy, store, handler, key, _request_fingerprint(policy, handler))
        await attempt.run(method, args, kwargs)
    except _Refusal as refusal:
        _refuse(handler, refusal)


class _Attempt:
    """One request's way through the claim: acquire, run, record or release."""

    __slots__ = (
        "policy", "store", "handler", "key", "fingerprint", "token",
        "status", "reason", "headers", "body", "deferred", "renewal",
    )

    def __init__(
        self,
        policy: _Policy,
        store: IdempotencyStore,
        handler: web.RequestHandler,
        key: str,
        fingerprint: str,
    ) -> None:
        self.policy = policy
        self.store = store
        self.handler = handler
        self.key = key
        self.fingerprint = fingerprint
        self.token = os.urandom(12).hex()
        self.status = 200
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.deferred = False
        self.renewal: Optional[asyncio.TimerHandle] = None

    async def run(
        self, method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        handler = self.handler
        try:
            stored = await self._acquire()
            if stored is not None:
                _replay(handler, stored)
                return
            if _client_gone(handler):
                await self._release()
                raise _ClientGone()
        except _ClientGone:
            # Logged as nginx logs a client that closed first; the work and
            # the claim are dropped (a retry will run it).
            handler.set_status(*_CLIENT_GONE)
            return
        # Record what the handler sends, should it flush or finish by itself
        # (streaming, finish(), redirect()).
        handler.flush = self._flush  # type: ignore[method-assign]
        self._schedule_renewal()
        try:
            try:
                result = method(handler, *args, **kwargs)
                if result is not None:
                    await result
                finish = handler._auto_finish
            except web.Finish as e:
                # Finish(chunk) means finish(chunk), auto_finish or not.
                finish = True
                if e.args and not handler._finished:
                    handler.write(*e.args)
            if finish and not handler._finished and not handler._headers_written:
                # The usual path: the method wrote and returned. Keep the
                # record before the response leaves, so that a client that
                # got it can count on its retry being a replay.
                self._stop()
                self._capture()
                await self._complete()
                handler.finish()
                return
            if finish and not handler._finished:
                handler.finish()
        except asyncio.CancelledError:
            # Awaiting here could be cancelled again: release in the background.
            self._stop()
            _spawn(self._release())
            raise
        except BaseException:
            self._stop()
            await self._release()
            raise
        if handler._finished:
            self._stop()
            await self._complete()
        else:
            # The handler finishes later (auto_finish is off): _flush records
            # the response then; the claim must be completed within lock_ttl.
            self._cancel_renewal()
            self.deferred = True

    async def _acquire(self) -> Optional[StoredResponse]:
        """Claim the key (None) or return the stored response to replay;
        raise _Refusal for the other outcomes."""
        policy = self.policy
        loop = asyncio.get_running_loop()
        deadline = loop.time() + policy.wait_timeout
        while True:
            if _client_gone(self.handler):
                # Nothing claimed yet and nobody to answer: stop here.
                raise _ClientGone()
            try:
                record = await self.store.claim(
                    self.key, self.fingerprint, self.token, policy.lock_ttl
                )
            except StoreFullError:
                raise _Refusal(503, "Too many requests in flight", retry_after=True) from None
            except Exception:
                app_log.error("idempotency store failed to claim %r", self.key, exc_info=True)
                raise _Refusal(503, "Idempotency store unavailable", retry_after=True) from None
            if record is None:
                return None
            if record.fingerprint != self.fingerprint:
                raise _Refusal(422, "Idempotency key reused with a different request")
            if record.response is not None:
                return record.response
            remaining = deadline - loop.time()
            if policy.in_flight == "conflict" or remaining <= 0:
                raise _Refusal(409, "A request with this idempotency key is in progress", retry_after=True)
            try:
                await self.store.wait(self.key, min(remaining, _WAIT_SLICE))
            except Exception:
                app_log.error("idempotency store failed waiting on %r", self.key, exc_info=True)
                raise _Refusal(503, "Idempotency store unavailable", retry_after=True) from None

    def _capture(self) -> None:
        """Take what the handler is about to send: the status and headers
        the first time, and the buffered body (before output transforms)."""
        handler = self.handler
        if not handler._headers_written:
            self.status = handler.get_status()
            self.reason = handler._reason
            wanted = self.policy.replay_headers
            self.headers = [
                (name, value) for name, value in handler._headers.get_all()
                if name.lower() in wanted
            ]
            # set_cookie() keeps cookies aside until the headers are sent.
            if "set-cookie" in wanted and handler._new_cookie:
                self.headers.extend(
                    ("Set-Cookie", morsel.OutputString(None))
                    for morsel in handler._new_cookie.values()
                )
        self.body.extend(handler._write_buffer)

    def _flush(self, include_footers: bool = False) -> asyncio.Future[None]:
        handler = self.handler
        self._capture()
        future = type(handler).flush(handler, include_footers)
        if include_footers:
            del handler.flush
            if self.deferred:
                _spawn(self._complete())
        return future

    def _record(self) -> IdempotencyRecord:
        response = StoredResponse(self.status, self.reason, tuple(self.headers), b"".join(self.body))
        return IdempotencyRecord(self.fingerprint, response)

    async def _complete(self) -> None:
        try:
            kept = await self.store.complete(
                self.key, self.token, self._record(), self.policy.ttl
            )
        except Exception:
            app_log.error("idempotency store failed to record %r", self.key, exc_info=True)
            return
        if not kept:
            gen_log.warning(
                "idempotency: claim on %r lapsed before the response was recorded "
                "(raise lock_ttl above the longest request)", self.key,
            )

    async def _release(self) -> None:
        try:
            await self.store.release(self.key, self.token)
        except Exception:
            app_log.error("idempotency store failed to release %r", self.key, exc_info=True)

    def _schedule_renewal(self) -> None:
        loop = asyncio.get_running_loop()
        self.renewal = loop.call_later(self.policy.lock_ttl / 3, self._renew)

    def _renew(self) -> None:
        _spawn(self._extend())
        self._schedule_renewal()

    async def _extend(self) -> None:
        try:
            await self.store.extend(self.key, self.token, self.policy.lock_ttl)
        except Exception:
            app_log.error("idempotency store failed to renew %r", self.key, exc_info=True)

    def _cancel_renewal(self) -> None:
        if self.renewal is not None:
            self.renewal.cancel()
            self.renewal = None

    def _stop(self) -> None:
        self._cancel_renewal()
        self.handler.__dict__.pop("flush", None)


# Store calls that outlive their request (renewals, late records); held here
# so that the loop's weak references are not the only ones.
_background: set[asyncio.Task[None]] = set()


def _spawn(coro: Awaitable[None]) -> None:
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
