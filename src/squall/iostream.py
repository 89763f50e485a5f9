"""Buffered, future-based byte streams over sockets and pipes, built on asyncio transports.

This is squall's counterpart of ``tornado.iostream``. An `IOStream` wraps a
socket: ``read_until``, ``read_bytes``, ``read_into`` and friends return
futures that resolve once the buffered data satisfies them, and ``write``
returns a future that resolves once the data has been handed to the
transport and the transport's buffer is back under its high-water mark.

Underneath, each stream is the `asyncio.BufferedProtocol` of an asyncio
transport (uvloop's when it is installed), so the event loop does the
reading, writing and TLS in its own code and the stream only keeps one read
buffer. Nothing is allocated for an idle connection: the read buffer comes
from a small shared pool when data arrives and goes back when it has been
consumed.

Differences from Tornado worth knowing:

* Reading is flow-controlled: while no read is pending and the buffer holds
  ``read_chunk_size`` bytes or more, the transport stops reading, so a peer
  that sends faster than the application reads fills its own socket buffers
  instead of this process's memory.
* ``close()`` lets the transport send what it already accepted (the futures
  of those writes have resolved) before the socket is closed; writes whose
  futures are still pending fail with `StreamClosedError`.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import fcntl
import inspect
import io
import os
import re
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Optional, Union

from squall.log import app_log, gen_log

__all__ = [
    "BaseIOStream",
    "IOStream",
    "PipeIOStream",
    "SSLIOStream",
    "StreamBufferFullError",
    "StreamClosedError",
    "UnsatisfiableReadError",
]

_Buffer = Union[bytes, bytearray, memoryview]
_ExcInfo = Union[
    None,
    bool,
    BaseException,
    tuple[Optional[type[BaseException]], Optional[BaseException], Optional[TracebackType]],
]

# Tornado's default ``max_buffer_size``: a read that needs more than this many
# buffered bytes fails and closes the stream.
DEFAULT_MAX_BUFFER_SIZE = 100 * 1024 * 1024

# Tornado's default ``read_chunk_size``: the most one receive asks the
# transport for, and (here) the buffered amount above which reading pauses
# while nobody is reading.
DEFAULT_READ_CHUNK_SIZE = 64 * 1024

# Size of the pooled read buffers. Buffers of this size go back to a shared
# pool when a stream has consumed everything it buffered, so an idle
# connection holds no read memory; 64 KiB matches the chunk size above and
# the 64 KiB that libuv suggests per read.
_POOLED_BUFFER_SIZE = 64 * 1024

# At most this many idle buffers are pooled per process (2 MiB), enough to
# serve a burst of concurrently readable connections without reallocating.
_POOL_LIMIT = 32

# Writes at least this large are queued by reference instead of copied while
# a stream waits for its connection (Tornado queues large writes the same
# way); smaller ones are coalesced into one bytearray.
_LARGE_WRITE_THRESHOLD = 2048

# A TLS stream whose TCP transport it cannot see (the loop's TLS layer made
# both) hands its TLS transport at most this much per write call, keeping
# the rest itself until the TLS layer's buffer drains: the TLS layer passes
# whatever it is given down to the TCP transport at once, so one large write
# would otherwise sit there, unbounded and invisible to the stream. 64 KiB
# is the TCP transports' default high-water mark (asyncio's and uvloop's).
_TLS_WRITE_CHUNK = 64 * 1024

# After ``close()``, a transport that still holds unsent data gets this long
# to send it before it is aborted, so that a peer which stops reading cannot
# pin a closed connection forever (nginx's ``send_timeout`` default).
_CLOSE_FLUSH_TIMEOUT = 60.0

_free_buffers: list[bytearray] = []

# Kinds of pending read.
_NO_READ = 0
_READ_BYTES = 1
_READ_UNTIL = 2
_READ_REGEX = 3
_READ_CLOSE = 4
_READ_INTO = 5


class StreamClosedError(OSError):
    """Raised by a stream operation when the stream is closed.

    A stream closes when the peer closes its end, after an error, or when
    ``close()`` is called. ``real_error`` holds the exception that closed it
    (also found in `BaseIOStream.error`), or None after a clean close.
    """

    def __init__(self, real_error: Optional[BaseException] = None) -> None:
        super().__init__("Stream is closed")
        self.real_error = real_error


class UnsatisfiableReadError(Exception):
    """A read cannot be satisfied: ``read_until`` or ``read_until_regex``
    found no match within ``max_bytes``. The stream is closed and the read's
    future fails with a `StreamClosedError` whose ``real_error`` is this."""


class StreamBufferFullError(Exception):
    """A read needed more than ``max_buffer_size`` buffered bytes, or a write
    would have queued more than ``max_write_buffer_size`` bytes."""


def _byte_view(data: Any) -> memoryview:
    # A flat, byte-addressed view: lengths and slices count bytes even for
    # memoryviews of wider items (e.g. ``memoryview(...).cast("L")``).
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def _is_connection_reset(exc: Optional[BaseException]) -> bool:
    # A peer that resets the connection is treated like one that closed it
    # cleanly (some platforms report one as the other).
    return isinstance(exc, (ConnectionResetError, BrokenPipeError)) or (
        isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE)
    )


def _current_loop() -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        from squall.ioloop import IOLoop

        return IOLoop.current().asyncio_loop


class _StreamBuffer:
    """A FIFO of bytes that copies small pieces and borrows large ones.

    Small appends are coalesced into owned bytearrays; pieces larger than
    ``_large_buf_threshold`` are kept as views of the caller's object, and
    the views are released as soon as they have been consumed (``advance``)
    or dropped (``clear``), so the caller may resize its bytearray again.
    """

    __slots__ = ("_buffers", "_first_pos", "_size", "_large_buf_threshold")

    def __init__(self) -> None:
        self._buffers: collections.deque[Union[bytes, bytearray, memoryview]] = (
            collections.deque()
        )
        self._first_pos = 0
        self._size = 0
        self._large_buf_threshold = _LARGE_WRITE_THRESHOLD

    def __len__(self) -> int:
        return self._size

    def append(self, data: _Buffer) -> None:
        """Add ``data`` at the end."""
        view = _byte_view(data)
        size = view.nbytes
        if size == 0:
            view.release()
            return
        buffers = self._buffers
        if size > self._large_buf_threshold:
            # bytes are immutable, so keeping the object itself is safe.
            buffers.append(data if type(data) is bytes else view)
        else:
            last = buffers[-1] if buffers else None
            if type(last) is bytearray and len(last) + size <= self._large_buf_threshold:
                last += view
            else:
                buffers.append(bytearray(view))
            view.release()
        self._size += size

    def peek(self, size: int) -> memoryview:
        """A view of up to ``size`` bytes from the front (possibly fewer,
        never none unless the buffer is empty). Release it before the
        buffer is modified, e.g. with ``with buf.peek(n) as view:``."""
        if not self._buffers:
            return memoryview(b"")
        pos = self._first_pos
        return memoryview(self._buffers[0])[pos : pos + size]

    def advance(self, size: int) -> None:
        """Drop ``size`` bytes from the front."""
        if not 0 <= size <= self._size:
            raise ValueError(f"cannot advance by {size!r}: {self._size} bytes buffered")
        self._size -= size
        buffers = self._buffers
        pos = self._first_pos
        while size:
            first = buffers[0]
            remaining = len(first) - pos
            if size < remaining:
                pos += size
                break
            size -= remaining
            buffers.popleft()
            if type(first) is memoryview:
                first.release()
            pos = 0
        self._first_pos = pos

    def clear(self) -> None:
        """Drop everything, releasing the views of borrowed buffers."""
        for piece in self._buffers:
            if type(piece) is memoryview:
                piece.release()
        self._buffers.clear()
        self._first_pos = 0
        self._size = 0


def _resolve(future: Optional[asyncio.Future[Any]], result: Any) -> None:
    if future is not None and not future.done():
        future.set_result(result)


def _fail(future: Optional[asyncio.Future[Any]], exc: BaseException) -> None:
    if future is not None and not future.done():
        future.set_exception(exc)
        # Nobody may ever wait on a read or write that a close interrupted;
        # marking the exception as retrieved keeps asyncio from logging it.
        future.exception()


class BaseIOStream(asyncio.BufferedProtocol):
    """Reading and writing for all stream kinds (`IOStream`, `SSLIOStream`,
    `PipeIOStream`).

    ``max_buffer_size`` (default 100 MiB) bounds what one read may need
    buffered; ``read_chunk_size`` (default 64 KiB, at most half of
    ``max_buffer_size``) is the most one receive asks for;
    ``max_write_buffer_size`` (default unlimited) bounds the bytes queued
    for writing, beyond which ``write`` raises `StreamBufferFullError`.

    Only one read may be pending at a time. A read that the buffered data
    already satisfies completes at once: its future is done when the read
    method returns.
    """

    __slots__ = (
        "max_buffer_size",
        "read_chunk_size",
        "max_write_buffer_size",
        "error",
        "_loop",
        "_transport",
        "_writer",
        "_closed",
        "_close_callback",
        "_rbuf",
        "_rpos",
        "_wpos",
        "_scan_pos",
        "_read_future",
        "_read_kind",
        "_read_arg",
        "_read_max",
        "_read_partial",
        "_into_filled",
        "_reading_paused",
        "_writing_paused",
        "_write_buffer",
        "_write_waiters",
        "_task",
        "_connect_future",
        "_on_connected",
        "__weakref__",
        # Applications and tests set their own attributes on streams (and
        # patch methods), as Tornado allows; the dict is only allocated
        # when that happens.
        "__dict__",
    )

    def __init__(
        self,
        max_buffer_size: Optional[int] = None,
        read_chunk_size: Optional[int] = None,
        max_write_buffer_size: Optional[int] = None,
    ) -> None:
        for name, value in (
            ("max_buffer_size", max_buffer_size),
            ("read_chunk_size", read_chunk_size),
            ("max_write_buffer_size", max_write_buffer_size),
        ):
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        self.max_buffer_size: int = max_buffer_size or DEFAULT_MAX_BUFFER_SIZE
        self.read_chunk_size: int = max(
            1, min(read_chunk_size or DEFAULT_READ_CHUNK_SIZE, self.max_buffer_size // 2)
        )
        self.max_write_buffer_size: Optional[int] = max_write_buffer_size
        #: The exception that closed the stream, or None.
        self.error: Optional[BaseException] = None
        self._loop = _current_loop()
        self._transport: Optional[asyncio.BaseTransport] = None
        # The transport that writes go to: the same as ``_transport`` except
        # for a read-write pipe, whose two directions are two transports.
        self._writer: Optional[asyncio.WriteTransport] = None
        self._closed = False
        self._close_callback: Optional[Callable[[], None]] = None
        self._rbuf: Optional[bytearray] = None
        self._rpos = 0
        self._wpos = 0
        self._scan_pos = 0
        self._read_future: Optional[asyncio.Future[Any]] = None
        self._read_kind = _NO_READ
        self._read_arg: Any = None
        self._read_max: Optional[int] = None
        self._read_partial = False
        self._into_filled = 0
        self._reading_paused = False
        self._writing_paused = False
        # Writes made before the transport exists (while connecting or during
        # a TLS handshake) wait here; None until the first such write.
        self._write_buffer: Optional[_StreamBuffer] = None
        self._write_waiters: Optional[collections.deque[asyncio.Future[None]]] = None
        self._task: Optional[asyncio.Future[Any]] = None
        self._connect_future: Optional[asyncio.Future[Any]] = None
        self._on_connected: Optional[Callable[[BaseIOStream, Any], None]] = None

    @property
    def io_loop(self) -> Any:
        """The `squall.ioloop.IOLoop` this stream runs on."""
        from squall.ioloop import IOLoop

        return IOLoop._ioloop_for_asyncio.get(self._loop) or IOLoop.current()

    # -- the file-descriptor interface of Tornado's streams ------------------

    def fileno(self) -> Union[int, Any]:
        """The file descriptor (or object with ``fileno()``) of this stream."""
        raise NotImplementedError()

    def close_fd(self) -> None:
        """Close the underlying descriptor; `close` calls it."""
        for transport in (self._transport, self._writer):
            if transport is not None and not transport.is_closing():
                transport.close()

    def read_from_fd(self, buf: Union[bytearray, memoryview]) -> Optional[int]:
        """Read directly from the descriptor into ``buf``, bypassing the
        stream's buffer. Returns the number of bytes read, None if nothing is
        available, and 0 at end of file. The transport normally does all the
        reading; this is for subclasses and diagnostics."""
        raise NotImplementedError()

    def write_to_fd(self, data: memoryview) -> int:
        """Write ``data`` directly to the descriptor, bypassing the transport;
        returns the number of bytes written."""
        raise NotImplementedError()

    def get_fd_error(self) -> Optional[Exception]:
        """The pending error on the descriptor, if any."""
        return None

    # -- reading ---------------------------------------------------------------

    def read_until_regex(
        self, regex: Union[bytes, re.Pattern[bytes]], max_bytes: Optional[int] = None
    ) -> Awaitable[bytes]:
        """Read until ``regex`` matches; the result runs up to and including
        the end of the match.

        If ``max_bytes`` is given and no match ends within that many bytes,
        the stream is closed (logged at INFO) and the future fails with
        `StreamClosedError` whose ``real_error`` is `UnsatisfiableReadError`.
        """
        if not isinstance(regex, re.Pattern):
            regex = re.compile(regex)
        return self._start_read(_READ_REGEX, regex, max_bytes, False)

    def read_until(self, delimiter: bytes, max_bytes: Optional[int] = None) -> Awaitable[bytes]:
        """Read until ``delimiter``; the result includes it.

        ``max_bytes`` bounds the result's length as for `read_until_regex`.
        """
        if not isinstance(delimiter, (bytes, bytearray)) or not delimiter:
            raise ValueError(f"delimiter must be non-empty bytes, got {delimiter!r}")
        return self._start_read(_READ_UNTIL, bytes(delimiter), max_bytes, False)

    def read_bytes(self, num_bytes: int, partial: bool = False) -> Awaitable[bytes]:
        """Read ``num_bytes`` bytes.

        With ``partial=True`` the future resolves as soon as any data is
        available (at most ``num_bytes`` of it). ``read_bytes(0)`` resolves
        with ``b""`` at once.
        """
        if not isinstance(num_bytes, int) or num_bytes < 0:
            raise ValueError(f"num_bytes must be a non-negative int, got {num_bytes!r}")
        return self._start_read(_READ_BYTES, num_bytes, None, partial)

    def read_into(self, buf: Union[bytearray, memoryview], partial: bool = False) -> Awaitable[int]:
        """Read into the caller's buffer ``buf`` until it is full; the future
        resolves with the number of bytes read.

        With ``partial=True`` it resolves as soon as any data has been
        stored. Buffered data is copied into ``buf`` at once, and further data
        is received straight into it. ``buf`` must not be modified or resized
        until the future is done; the stream keeps no reference to it after.
        """
        view = _byte_view(buf)
        if view.readonly:
            raise TypeError(f"read_into needs a writable buffer, got {type(buf).__name__}")
        future = self._new_read_future()
        size = view.nbytes
        avail = self._wpos - self._rpos
        take = min(size, avail)
        if take:
            rpos = self._rpos
            view[:take] = memoryview(self._rbuf)[rpos : rpos + take]  # type: ignore[arg-type]
            self._advance(take)
        view.release()
        self._read_kind = _READ_INTO
        self._read_arg = buf
        self._read_max = size
        self._read_partial = partial
        self._into_filled = take
        self._begin_read()
        return future

    def read_until_close(self) -> Awaitable[bytes]:
        """Read everything until the peer closes the stream.

        The future fails instead if the stream closes because of an error
        (other than a connection reset) or because the buffered data would
        exceed ``max_buffer_size``.
        """
        return self._start_read(_READ_CLOSE, None, None, False)

    def reading(self) -> bool:
        """True while a read is pending."""
        return self._read_future is not None

    def _new_read_future(self) -> asyncio.Future[Any]:
        current = self._read_future
        if current is not None:
            if not current.done():
                raise RuntimeError("Already reading: only one read may be pending")
            # The caller cancelled it; nothing was consumed for it.
            self._clear_read()
        future = self._loop.create_future()
        self._read_future = future
        return future

    def _start_read(
        self, kind: int, arg: Any, max_bytes: Optional[int], partial: bool
    ) -> asyncio.Future[Any]:
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 0):
            raise ValueError(f"max_bytes must be a non-negative int or None, got {max_bytes!r}")
        future = self._new_read_future()
        self._read_kind = kind
        self._read_arg = arg
        self._read_max = max_bytes
        self._read_partial = partial
        self._scan_pos = self._rpos
        self._begin_read()
        return future

    def _begin_read(self) -> None:
        try:
            self._try_inline_read()
        except BaseException:
            self._clear_read()
            raise

    def _try_inline_read(self) -> None:
        # Complete the new read from the buffer if possible; otherwise make
        # sure the transport is reading, or fail at once on a closed stream.
        if self._try_complete_read():
            return
        if self._closed:
            raise StreamClosedError(real_error=self.error)
        if self._reading_paused:
            self._resume_reading()

    def _try_complete_read(self) -> bool:
        """Complete the pending read if the buffered data satisfies it."""
        kind = self._read_kind
        if kind == _NO_READ:
            return False
        rpos = self._rpos
        avail = self._wpos - rpos
        size = -1
        if kind == _READ_BYTES:
            wanted = self._read_arg
            if avail >= wanted or (self._read_partial and avail):
                size = min(wanted, avail)
        elif kind == _READ_UNTIL:
            size = self._find_delimiter()
        elif kind == _READ_REGEX:
            if avail:
                match = self._read_arg.search(self._rbuf, rpos, self._wpos)
                if match is not None:
                    size = match.end() - rpos
        elif kind == _READ_INTO:
            filled = self._into_filled
            if filled == self._read_max or (self._read_partial and filled):
                self._finish_read(filled)
                return True
            return False
        elif self._closed and (self.error is None or _is_connection_reset(self.error)):
            size = avail
        if kind == _READ_UNTIL or kind == _READ_REGEX:
            limit = self._read_max
            if limit is not None and ((size >= 0 and size > limit) or (size < 0 and avail >= limit)):
                self._unsatisfiable(limit)
                return True
        if size < 0:
            return False
        self._finish_read(self._consume(size) if size else b"")
        return True

    def _find_delimiter(self) -> int:
        buf = self._rbuf
        if buf is None:
            return -1
        delimiter: bytes = self._read_arg
        # Only search the bytes that arrived since the last search (plus an
        # overlap for a delimiter split between chunks), so a long read_until
        # costs linear time.
        start = max(self._rpos, self._scan_pos - len(delimiter) + 1)
        loc = buf.find(delimiter, start, self._wpos)
        if loc < 0:
            self._scan_pos = self._wpos
            return -1
        return loc + len(delimiter) - self._rpos

    def _unsatisfiable(self, limit: int) -> None:
        error = UnsatisfiableReadError(f"delimiter not found within {limit} bytes")
        gen_log.info("Unsatisfiable read, closing connection: %s", error)
        self.close(exc_info=error)

    def _finish_read(self, result: Any) -> None:
        future = self._read_future
        self._clear_read()
        _resolve(future, result)

    def _clear_read(self) -> None:
        self._read_future = None
        self._read_kind = _NO_READ
        self._read_arg = None
        self._read_max = None

    def _consume(self, size: int) -> bytes:
        rpos = self._rpos
        data = memoryview(self._rbuf)[rpos : rpos + size].tobytes()  # type: ignore[arg-type]
        self._advance(size)
        return data

    def _advance(self, size: int) -> None:
        self._rpos += size
        if self._rpos == self._wpos:
            self._release_read_buffer()

    def _release_read_buffer(self) -> None:
        buf = self._rbuf
        self._rbuf = None
        self._rpos = self._wpos = self._scan_pos = 0
        if buf is not None and len(buf) == _POOLED_BUFFER_SIZE and len(_free_buffers) < _POOL_LIMIT:
            _free_buffers.append(buf)

    def _pause_reading(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()  # type: ignore[attr-defined]
            self._reading_paused = True

    def _resume_reading(self) -> None:
        self._reading_paused = False
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()  # type: ignore[attr-defined]

    # -- asyncio.BufferedProtocol ---------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        """Protocol callback: where the transport should store the next bytes."""
        if self._read_kind == _READ_INTO:
            return _byte_view(self._read_arg)[self._into_filled :]
        chunk = self.read_chunk_size
        buf = self._rbuf
        if buf is None:
            if chunk <= _POOLED_BUFFER_SIZE:
                buf = _free_buffers.pop() if _free_buffers else bytearray(_POOLED_BUFFER_SIZE)
            else:
                buf = bytearray(chunk)
            self._rbuf = buf
        wpos = self._wpos
        free = len(buf) - wpos
        if free < chunk and self._rpos:
            # Move the unread bytes to the front. A same-length slice
            # assignment never resizes, so it is safe even while the
            # transport still holds a view from the previous receive.
            rpos = self._rpos
            live = wpos - rpos
            buf[:live] = buf[rpos:wpos]
            self._scan_pos -= rpos
            self._rpos = 0
            self._wpos = wpos = live
            free = len(buf) - wpos
        if free == 0:
            # Grow into a new buffer (never resize in place, for the same
            # reason); over-allocating by half keeps copying linear in the
            # amount read.
            grown = bytearray(wpos + max(chunk, wpos // 2))
            grown[:wpos] = buf
            self._rbuf = buf = grown
            free = len(buf) - wpos
        return memoryview(buf)[wpos : wpos + min(free, chunk)]

    def buffer_updated(self, nbytes: int) -> None:
        """Protocol callback: ``nbytes`` were stored in the last buffer."""
        if self._read_kind == _READ_INTO:
            self._into_filled += nbytes
        else:
            self._wpos += nbytes
        self._on_data()

    def data_received(self, data: bytes) -> None:
        """Protocol callback for transports that do not use `get_buffer`
        (asyncio's pipe transports)."""
        view = memoryview(data)
        offset = 0
        total = len(data)
        while offset < total and not self._closed:
            target = self.get_buffer(total - offset)
            count = min(len(target), total - offset)
            target[:count] = view[offset : offset + count]
            target.release()
            offset += count
            self.buffer_updated(count)

    def _on_data(self) -> None:
        if self._read_kind != _NO_READ:
            self._try_complete_read()
        if self._closed:
            return
        buffered = self._wpos - self._rpos
        if self._read_kind == _NO_READ:
            if buffered >= self.read_chunk_size and not self._reading_paused:
                self._pause_reading()
        elif buffered > self.max_buffer_size:
            gen_log.error("Reached maximum read buffer size")
            error = StreamBufferFullError("Reached maximum read buffer size")
            gen_log.warning("error on read: %s", error)
            self.close(exc_info=error)

    def eof_received(self) -> Optional[bool]:
        """Protocol callback: the peer closed its end; the stream closes at
        once, as in Tornado (a TLS transport would otherwise first wait to
        flush what the peer will never read)."""
        self.close()
        return None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Protocol callback: the transport is ready."""
        if self._closed:
            transport.close()
            return
        self._attach(transport)
        on_connected = self._on_connected
        if on_connected is not None:
            self._on_connected = None
            on_connected(self, transport.get_extra_info("peername"))

    def connection_lost(self, exc: Optional[Exception]) -> None:
        """Protocol callback: the transport has closed."""
        if not self._closed:
            self.close(exc_info=exc if exc is not None else False)
        self._fail_writes()

    def pause_writing(self) -> None:
        """Protocol callback: the transport's buffer went over its high-water
        mark; write futures wait from now on."""
        self._writing_paused = True

    def resume_writing(self) -> None:
        """Protocol callback: the transport's buffer drained; the waiting
        write futures resolve."""
        self._writing_paused = False
        waiters = self._write_waiters
        while waiters and not self._writing_paused:
            _resolve(waiters.popleft(), None)

    def _attach(self, transport: asyncio.BaseTransport) -> None:
        # Take the transport into use: resolve a pending connect, then send
        # whatever was written while waiting, in order.
        self._transport = transport
        _resolve(self._connect_future, self)
        self._connect_future = None
        self._task = None
        self._attach_writer(transport)  # type: ignore[arg-type]

    def _attach_writer(self, transport: asyncio.WriteTransport) -> None:
        self._writer = transport
        pending = self._write_buffer
        if pending is not None:
            self._write_buffer = None
            while pending:
                with pending.peek(len(pending)) as view:
                    size = view.nbytes
                    transport.write(bytes(view))
                pending.advance(size)
            # Every waiter so far belongs to a queued write. If the transport
            # failed on them, connection_lost fails them instead.
            if not self._writing_paused and not transport.is_closing():
                self.resume_writing()

    # -- writing ----------------------------------------------------------------

    def write(self, data: _Buffer) -> asyncio.Future[None]:
        """Write ``data`` (bytes, bytearray or memoryview).

        Returns a future that resolves once the data has been handed to the
        transport and the transport's buffer is below its high-water mark, so
        ``await stream.write(...)`` in a loop never buffers unboundedly. A
        caller's bytearray may be changed once the future is done. Writing to
        a closed stream raises `StreamClosedError`.
        """
        if self._closed:
            raise StreamClosedError(real_error=self.error)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"write() needs bytes, bytearray or memoryview, got {type(data).__name__}")
        future: asyncio.Future[None] = self._loop.create_future()
        transport = self._writer
        if transport is None:
            size = _byte_view(data).nbytes
            pending = self._write_buffer
            if pending is None:
                pending = self._write_buffer = _StreamBuffer()
            self._check_write_limit(len(pending) + size)
            pending.append(data)
            self._queue_write_waiter(future)
            return future
        if type(data) is not bytes:
            # The transport may keep the object until it is sent; a copy
            # leaves the caller free to reuse its buffer.
            data = _byte_view(data).tobytes()
        if self.max_write_buffer_size is not None:
            self._check_write_limit(transport.get_write_buffer_size() + len(data))
        transport.write(data)
        if self._writing_paused or self._write_waiters or transport.is_closing():
            # Wait for the buffer to drain, or (when the write failed and
            # the transport is going away) for connection_lost to fail it.
            self._queue_write_waiter(future)
        else:
            future.set_result(None)
        return future

    def _check_write_limit(self, total: int) -> None:
        limit = self.max_write_buffer_size
        if limit is not None and total > limit:
            raise StreamBufferFullError(
                f"Reached maximum write buffer size ({total} > {limit} bytes)"
            )

    def _queue_write_waiter(self, future: asyncio.Future[None]) -> None:
        waiters = self._write_waiters
        if waiters is None:
            waiters = self._write_waiters = collections.deque()
        waiters.append(future)

    def writing(self) -> bool:
        """True while written data has not yet been sent."""
        if self._write_buffer:
            return True
        return not self._closed and self._unsent() > 0

    def _unsent(self) -> int:
        # Bytes handed to the transport but not yet to the kernel.
        writer = self._writer
        return writer.get_write_buffer_size() if writer is not None else 0

    def _fail_writes(self) -> None:
        if self._write_buffer is not None:
            self._write_buffer.clear()
        waiters = self._write_waiters
        if waiters:
            error = StreamClosedError(real_error=self.error)
            while waiters:
                _fail(waiters.popleft(), error)

    # -- closing -----------------------------------------------------------------

    def set_close_callback(self, callback: Optional[Callable[[], None]]) -> None:
        """Call ``callback()`` once the stream is closed (at once, on the next
        loop iteration, if it already is).

        Pending reads and writes have failed by the time it runs. Use a
        read's `StreamClosedError` rather than this when a read is pending.
        """
        self._close_callback = callback
        if self._closed and callback is not None:
            self._loop.call_soon(self._run_close_callback)

    def closed(self) -> bool:
        """True once the stream is closed. Data buffered before the close can
        still be read."""
        return self._closed

    def close(self, exc_info: _ExcInfo = False) -> None:
        """Close the stream.

        ``exc_info`` records why: an exception, an exc_info tuple, or True to
        use the exception being handled. It becomes `error` and the
        ``real_error`` of the `StreamClosedError` pending operations fail
        with. A pending ``read_until_close`` resolves with the buffered data
        unless there is such an error. Closing twice does nothing.
        """
        if self._closed:
            return
        if exc_info:
            if isinstance(exc_info, tuple):
                error = exc_info[1]
            elif isinstance(exc_info, BaseException):
                error = exc_info
            else:
                error = sys.exc_info()[1]
            if error is not None and self.error is None:
                self.error = error
        self._closed = True
        self._on_connected = None
        task = self._task
        self._task = None
        if task is not None and not task.done():
            task.cancel()
        if self._read_kind != _NO_READ:
            # Any other read the buffer could satisfy has completed already.
            if self._read_kind == _READ_CLOSE and (self.error is None or _is_connection_reset(self.error)):
                avail = self._wpos - self._rpos
                self._finish_read(self._consume(avail) if avail else b"")
            else:
                future = self._read_future
                self._clear_read()
                _fail(future, StreamClosedError(real_error=self.error))
        _fail(self._connect_future, StreamClosedError(real_error=self.error))
        self._connect_future = None
        abandoned = bool(self._write_waiters)
        self._fail_writes()
        self._close_transport(abandoned)
        if self._close_callback is not None:
            self._loop.call_soon(self._run_close_callback)

    def _close_transport(self, abandoned: bool) -> None:
        # With ``abandoned`` the writer was told some of its data was not
        # sent (their futures failed), so the rest is dropped at once, as
        # Tornado does; otherwise what the transport accepted is flushed.
        writer = self._writer
        if writer is not None and not writer.is_closing() and self._unsent():
            if abandoned:
                writer.abort()
            else:
                # Aborting a transport that has closed meanwhile does nothing.
                self._loop.call_later(_CLOSE_FLUSH_TIMEOUT, writer.abort)
        self.close_fd()

    def _run_close_callback(self) -> None:
        callback = self._close_callback
        self._close_callback = None
        if callback is None:
            return
        try:
            result = callback()
            if inspect.isawaitable(result):
                asyncio.ensure_future(result).add_done_callback(_log_callback_failure)
        except Exception:
            app_log.error("Exception in callback %r", callback, exc_info=True)

    def set_nodelay(self, value: bool) -> None:
        """Set ``TCP_NODELAY``: with True, small writes are sent at once
        instead of being coalesced by Nagle's algorithm. Does nothing for
        non-TCP streams."""


def _log_callback_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        exc = future.exception()
        app_log.error("Exception in callback %r", future, exc_info=(type(exc), exc, exc.__traceback__))  # type: ignore[arg-type]


def _is_connected(sock: Any) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


class IOStream(BaseIOStream):
    """A stream over a socket.

    ``IOStream(sock)`` takes ownership of ``sock``. If it is connected (an
    accepted connection, say) the stream is usable at once: reads wait for
    data and writes are queued until the loop has set up its transport. If it
    is not connected yet, call `connect`::

        stream = IOStream(socket.socket())
        await stream.connect(("example.com", 80))
        await stream.write(b"GET / HTTP/1.0\\r\\nHost: example.com\\r\\n\\r\\n")
        headers = await stream.read_until(b"\\r\\n\\r\\n")
        body = await stream.read_until_close()
    """

    __slots__ = ("socket", "_owns_socket")

    def __init__(self, socket: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The socket (for streams created by a server, the transport's view of it).
        self.socket: Any = socket
        # True while the stream must close the socket itself: from the
        # start until a transport takes the socket over (and closes it,
        # even when cancelled or failing). A transport's view of its socket
        # (uvloop's pseudo-socket) is never the stream's to close.
        self._owns_socket = True
        if _is_connected(socket):
            self._wrap_connected()

    @classmethod
    def _from_transport(cls, transport: asyncio.BaseTransport, buffered: bytes = b"") -> IOStream:
        """A stream that takes over an established asyncio ``transport``
        (made its protocol with ``set_protocol``), with ``buffered`` as the
        start of its read buffer. A TLS transport gives an `SSLIOStream`."""
        kind: type[IOStream] = cls
        if cls is IOStream and transport.get_extra_info("ssl_object") is not None:
            kind = SSLIOStream
        stream = kind._bare(None)
        stream._set_socket_from(transport)
        if buffered:
            stream._rbuf = bytearray(buffered)
            stream._wpos = len(buffered)
        transport.set_protocol(stream)
        limits = getattr(transport, "get_write_buffer_limits", None)
        if limits is not None and transport.get_write_buffer_size() > limits()[1]:  # type: ignore[attr-defined]
            stream._writing_paused = True
        stream._attach(transport)
        return stream

    @classmethod
    def _bare(cls, on_connected: Optional[Callable[[BaseIOStream, Any], None]], *args: Any) -> IOStream:
        # A stream with no socket yet: the protocol of a connection that the
        # loop accepts (``on_connected`` gets the stream once the transport
        # exists) or of a transport being taken over.
        stream = cls.__new__(cls)
        BaseIOStream.__init__(stream, *args)
        stream.socket = None
        stream._owns_socket = False
        stream._on_connected = on_connected
        return stream

    def _sock(self) -> Any:
        """The plain socket the transport runs on."""
        return self.socket

    def _set_socket_from(self, transport: asyncio.BaseTransport) -> None:
        if self.socket is None:
            self.socket = transport.get_extra_info("socket")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._set_socket_from(transport)
        super().connection_made(transport)

    def _wrap_connected(self) -> None:
        self._task = asyncio.ensure_future(self._open_transport(), loop=self._loop)

    async def _open_transport(self) -> None:
        self._owns_socket = False
        try:
            await self._loop.connect_accepted_socket(lambda: self, self._sock())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.close(exc_info=exc)

    def close(self, exc_info: _ExcInfo = False) -> None:
        if not exc_info and not self._closed and self._writer is None and self._write_buffer:
            self._send_queued_directly()
        super().close(exc_info)

    def _send_queued_directly(self) -> None:
        # ``IOStream(connected_sock).write(data); close()`` in one go: the
        # transport is not set up yet, but the data was written to a
        # connected socket, so it goes out now (as far as the kernel takes
        # it without blocking) rather than being dropped by the close.
        sock = self._sock()
        pending = self._write_buffer
        if sock is None or pending is None or self._connect_future is not None or isinstance(self, SSLIOStream):
            return
        try:
            while pending:
                with pending.peek(len(pending)) as view:
                    sent = sock.send(view)
                pending.advance(sent)
        except OSError:
            return
        waiters = self._write_waiters
        while waiters:
            _resolve(waiters.popleft(), None)

    def fileno(self) -> Union[int, Any]:
        sock = self._sock()
        return sock.fileno() if sock is not None else -1

    def close_fd(self) -> None:
        if self._transport is not None:
            super().close_fd()
        elif self._owns_socket and self._sock() is not None:
            self._sock().close()

    def get_fd_error(self) -> Optional[Exception]:
        code = self._sock().getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return OSError(code, os.strerror(code)) if code else None

    def read_from_fd(self, buf: Union[bytearray, memoryview]) -> Optional[int]:
        try:
            return self._sock().recv_into(buf, len(buf))  # type: ignore[no-any-return]
        except BlockingIOError:
            return None

    def write_to_fd(self, data: memoryview) -> int:
        return self._sock().send(data)  # type: ignore[no-any-return]

    def connect(self, address: Any, server_hostname: Optional[str] = None) -> asyncio.Future[IOStream]:
        """Connect the (not yet connected) socket to ``address``.

        Returns a future that resolves to this stream once connected;
        writes made before that are queued and sent in order. If the
        connection fails, the future fails with `StreamClosedError` (the
        cause is in `error`). Cancelling the future abandons the attempt and
        closes the stream. ``server_hostname`` is used by `SSLIOStream`.
        """
        if self._closed:
            raise StreamClosedError(real_error=self.error)
        if self._connect_future is not None or self._transport is not None:
            raise RuntimeError("connect() called on a stream that is connecting or connected")
        future: asyncio.Future[IOStream] = self._loop.create_future()
        self._connect_future = future
        future.add_done_callback(self._on_connect_done)
        self._task = asyncio.ensure_future(self._connect(address, server_hostname), loop=self._loop)
        return future

    def _on_connect_done(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self.close()

    async def _connect(self, address: Any, server_hostname: Optional[str]) -> None:
        sock = self._sock()
        try:
            sock.setblocking(False)
            await self._loop.sock_connect(sock, address)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Not logged: the connect future reports it (as in Tornado 6).
            self.close(exc_info=exc)
            return
        await self._open_transport()

    def set_nodelay(self, value: bool) -> None:
        sock = self._sock()
        if sock is None or self._closed or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if value else 0)
        except OSError as exc:
            # The peer may already have closed the connection (EINVAL on
            # some systems); there is nothing left to tune then.
            if exc.errno != errno.EINVAL and not _is_connection_reset(exc):
                raise

    def start_tls(
        self,
        server_side: bool,
        ssl_options: Union[dict[str, Any], ssl.SSLContext, None] = None,
        server_hostname: Optional[str] = None,
    ) -> Awaitable[SSLIOStream]:
        """Upgrade this connection to TLS (e.g. after SMTP's ``STARTTLS``).

        Returns a future resolving to a new `SSLIOStream` once the handshake
        is done; this stream must not be used afterwards. It must be idle: no
        pending read, no unsent or unread data. ``ssl_options`` is a
        dictionary for `squall.netutil.ssl_options_to_context` or an
        `ssl.SSLContext`; clients verify certificates by default. A failed
        handshake fails the future with the `ssl.SSLError`; cancelling the
        future closes the connection.
        """
        transport = self._transport
        if (
            transport is None
            or self._closed
            or self._read_future is not None
            or self._write_buffer
            or self._wpos > self._rpos
            or self.writing()
        ):
            raise ValueError("IOStream is not idle; cannot convert to SSL")
        context = _ssl_context(ssl_options, server_side)
        tls = SSLIOStream._bare(None, self.max_buffer_size, self.read_chunk_size, self.max_write_buffer_size)
        tls._init_tls(self.socket, context, server_side, server_hostname)
        # This stream hands its connection over: it must neither close the
        # transport nor run its close callback.
        self._transport = self._writer = None
        self._close_callback = None
        self._closed = True
        return tls._start_handshake(transport, with_result=True)


def _log_tls_failure(fd: Any, peer: Any, exc: BaseException) -> None:
    # One line, no traceback: a peer that fails a handshake (a plain-HTTP
    # client on the TLS port, a certificate it refuses) is not a bug here.
    # Resets are the peer leaving and are not logged, as elsewhere.
    if isinstance(exc, ssl.SSLError):
        gen_log.warning("SSL Error on %s %s: %s", fd, peer, exc)
    elif not _is_connection_reset(exc):
        gen_log.info("TLS handshake on %s %s failed: %r", fd, peer, exc)


def _ssl_context(
    ssl_options: Union[dict[str, Any], ssl.SSLContext, None], server_side: bool
) -> ssl.SSLContext:
    from squall import netutil

    if ssl_options is None:
        if server_side:
            raise ValueError("a server-side TLS stream needs ssl_options with a certificate")
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    return netutil.ssl_options_to_context(ssl_options, server_side=server_side)


class _TLSSocketView:
    """What `SSLIOStream.socket` is: the socket's own methods plus the TLS
    ones of `ssl.SSLSocket` (``cipher``, ``getpeercert``, ``version``, ...),
    which answer as an unfinished handshake does until it completes."""

    __slots__ = ("_sock", "_stream")

    def __init__(self, sock: Any, stream: SSLIOStream) -> None:
        self._sock = sock
        self._stream = stream

    def _ssl_object(self) -> Optional[ssl.SSLObject]:
        transport = self._stream._transport
        return transport.get_extra_info("ssl_object") if transport is not None else None

    def cipher(self) -> Optional[tuple[str, str, int]]:
        obj = self._ssl_object()
        return obj.cipher() if obj is not None else None

    def version(self) -> Optional[str]:
        obj = self._ssl_object()
        return obj.version() if obj is not None else None

    def selected_alpn_protocol(self) -> Optional[str]:
        obj = self._ssl_object()
        return obj.selected_alpn_protocol() if obj is not None else None

    def getpeercert(self, binary_form: bool = False) -> Any:
        obj = self._ssl_object()
        if obj is None:
            raise ValueError("handshake not done yet")
        return obj.getpeercert(binary_form)

    def __getattr__(self, name: str) -> Any:
        obj = self._ssl_object()
        if obj is not None and hasattr(obj, name):
            return getattr(obj, name)
        return getattr(self._sock, name)


class _FlowShim(asyncio.Protocol):
    """Sits between a TCP transport and asyncio's TLS protocol above it, so
    that the socket's back-pressure reaches the stream: asyncio's TLS layer
    (and uvloop's) passes all encrypted data down to the TCP transport
    without ever pausing the application protocol."""

    __slots__ = ("_tls", "_stream")

    def __init__(self, tls: Any, stream: BaseIOStream) -> None:
        self._tls = tls
        self._stream = stream

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._tls.connection_lost(exc)

    def pause_writing(self) -> None:
        self._tls.pause_writing()
        self._stream.pause_writing()

    def resume_writing(self) -> None:
        self._tls.resume_writing()
        self._stream.resume_writing()

    def eof_received(self) -> Optional[bool]:
        return self._tls.eof_received()  # type: ignore[no-any-return]

    def data_received(self, data: bytes) -> None:
        self._tls.data_received(data)


class _BufferedFlowShim(_FlowShim, asyncio.BufferedProtocol):
    """`_FlowShim` for a TLS protocol that receives into its own buffers."""

    __slots__ = ()

    def get_buffer(self, sizehint: int) -> Any:
        return self._tls.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._tls.buffer_updated(nbytes)

    def data_received(self, data: bytes) -> None:
        # uvloop keeps delivering through data_received to a protocol set
        # while the transport reads; the TLS protocol only takes buffers.
        tls = self._tls
        view = memoryview(data)
        while view:
            target = memoryview(tls.get_buffer(len(view))).cast("B")
            count = min(len(target), len(view))
            target[:count] = view[:count]
            target.release()
            view = view[count:]
            tls.buffer_updated(count)


def _flow_shim(tls: Any, stream: BaseIOStream) -> _FlowShim:
    if hasattr(tls, "get_buffer"):
        return _BufferedFlowShim(tls, stream)
    return _FlowShim(tls, stream)


class SSLIOStream(IOStream):
    """A stream over a TLS connection.

    Client side: ``SSLIOStream(socket.socket(), ssl_options=...)`` then
    `connect`, whose ``server_hostname`` is sent as SNI and checked against
    the certificate (clients verify certificates unless ``ssl_options`` says
    otherwise). Server side: a `~squall.tcpserver.TCPServer` with
    ``ssl_options`` hands these to ``handle_stream`` as soon as the
    connection is accepted, before the handshake has finished;
    `wait_for_handshake` waits for it. An already wrapped,
    connected `ssl.SSLSocket` may be passed too; its context and side are
    reused.

    ``ssl_options`` is an `ssl.SSLContext` or a dictionary for
    `squall.netutil.ssl_options_to_context`. Reads wait and writes are
    queued until the handshake completes. A failed handshake is logged at
    WARNING ("SSL Error ...") and closes the stream.
    """

    __slots__ = (
        "_ssl_context",
        "_server_side",
        "_server_hostname",
        "_handshake_done",
        "_handshake_waiter",
        "_raw_transport",
        "_feed_writes",
        "_write_ends",
        "_queued_bytes",
        "_fed_bytes",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        ssl_options = kwargs.pop("ssl_options", None)
        sock = args[0] if args else kwargs.pop("socket")
        if isinstance(sock, ssl.SSLSocket):
            context: Optional[ssl.SSLContext] = sock.context
            server_side = sock.server_side
            hostname = sock.server_hostname
            # asyncio transports run TLS themselves over a plain socket; the
            # wrapped socket has not handshaken yet, so its descriptor is
            # taken over as is.
            sock = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        else:
            server_side = False
            hostname = None
            context = None if ssl_options is None else _ssl_context(ssl_options, False)
        BaseIOStream.__init__(self, *args[1:], **kwargs)
        self._on_connected = None
        self._init_tls(sock, context, server_side, hostname)
        self._owns_socket = True
        if _is_connected(sock):
            self._wrap_connected()

    def _init_tls(
        self, sock: Any, context: Optional[ssl.SSLContext], server_side: bool, server_hostname: Optional[str]
    ) -> None:
        self.socket = _TLSSocketView(sock, self)
        self._ssl_context = context
        self._server_side = server_side
        self._server_hostname = server_hostname
        self._handshake_done = False
        self._handshake_waiter: Optional[asyncio.Future[None]] = None
        # The TCP transport under the TLS one, once a handshake made with
        # loop.start_tls is done.
        self._raw_transport: Optional[asyncio.WriteTransport] = None
        self._owns_socket = False
        # A server's stream, whose TLS transport the loop makes with the
        # TCP one out of reach, feeds writes to it in chunks: the bytes
        # written so far, the bytes handed to the transport, and where each
        # pending write (in _write_waiters) ends.
        self._feed_writes = False
        self._write_ends: collections.deque[int] = collections.deque()
        self._queued_bytes = 0
        self._fed_bytes = 0

    @classmethod
    def _bare(cls, on_connected: Optional[Callable[[BaseIOStream, Any], None]], *args: Any) -> SSLIOStream:
        stream = cls.__new__(cls)
        BaseIOStream.__init__(stream, *args)
        stream._on_connected = on_connected
        stream._init_tls(None, None, True, None)
        return stream

    @classmethod
    def _for_server(
        cls, context: ssl.SSLContext, on_connected: Callable[[BaseIOStream, Any], None], *args: Any
    ) -> SSLIOStream:
        stream = cls._bare(on_connected, *args)
        stream._ssl_context = context
        return stream

    def _sock(self) -> Any:
        return self.socket._sock

    def _set_socket_from(self, transport: asyncio.BaseTransport) -> None:
        if self.socket._sock is None:
            self.socket._sock = transport.get_extra_info("socket")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._closed:
            transport.close()
            return
        self._set_socket_from(transport)
        if transport.get_extra_info("ssl_object") is not None:
            # A server's connection: the loop has done the handshake.
            self._attach(transport)
            return
        # A client's TCP connection is up; TLS is layered on with
        # loop.start_tls. Nothing can be read as plain data meanwhile: a
        # TLS server says nothing before the client's hello.
        self._start_handshake(transport, with_result=False)

    def _serve_accepted(self, sock: socket.socket, address: Any) -> None:
        # Serve a connection a TLS server has just accepted: hand the stream
        # to the application at once, the handshake running meanwhile.
        self.socket._sock = sock
        self._owns_socket = True
        self._start_server_tls(sock, address)
        on_connected = self._on_connected
        self._on_connected = None
        if on_connected is not None:
            on_connected(self, address)

    def _wrap_connected(self) -> None:
        if not self._server_side:
            super()._wrap_connected()
            return
        sock = self._sock()
        self._start_server_tls(sock, sock.getpeername())

    def _start_server_tls(self, sock: socket.socket, address: Any) -> None:
        # The loop's TLS layer takes the socket over before a byte is read
        # from it. (A plain transport upgraded with loop.start_tls would
        # race with the client's hello: uvloop starts reading right after
        # connection_made, whatever the protocol asked, and the hello would
        # be consumed as plain data.)
        self._feed_writes = True
        self._task = asyncio.ensure_future(self._accept_handshake(sock, address), loop=self._loop)

    async def _accept_handshake(self, sock: socket.socket, address: Any) -> None:
        fd = sock.fileno()
        # The transport created below owns the socket, and closes it when
        # the handshake fails or this task is cancelled.
        self._owns_socket = False
        try:
            await self._loop.connect_accepted_socket(lambda: self, sock, ssl=self._ssl_context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log_tls_failure(fd, address, exc)
            self._handshake_failed(exc, None)

    def _attach(self, transport: asyncio.BaseTransport) -> None:
        self._handshake_done = True
        super()._attach(transport)
        _resolve(self._handshake_waiter, None)

    def _start_handshake(self, raw: asyncio.BaseTransport, with_result: bool) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        if with_result:
            self._connect_future = future
            future.add_done_callback(self._on_connect_done)
        self._task = asyncio.ensure_future(self._handshake(raw, future), loop=self._loop)
        return future

    async def _handshake(self, raw: asyncio.BaseTransport, future: asyncio.Future[Any]) -> None:
        server_side = self._server_side
        # For the log line: a failed start_tls has closed the socket.
        fd, peer = self.fileno(), self._peer()
        try:
            transport = await self._loop.start_tls(
                raw,  # type: ignore[arg-type]
                self,
                self._ssl_context or _ssl_context(None, server_side),
                server_side=server_side,
                # An empty name turns host name checking off, which is what
                # a context with check_hostname=False asks for anyway.
                server_hostname=None if server_side else (self._server_hostname or ""),
            )
        except asyncio.CancelledError:
            raw.abort()  # type: ignore[attr-defined]
            raise
        except Exception as exc:
            if isinstance(exc, ssl.SSLError):
                # Other failures are the connect future's to report.
                _log_tls_failure(fd, peer, exc)
            raw.abort()  # type: ignore[attr-defined]
            self._handshake_failed(exc, future)
            return
        if transport is None:
            self.close()
            return
        self._raw_transport = raw  # type: ignore[assignment]
        raw.set_protocol(_flow_shim(raw.get_protocol(), self))
        self._attach(transport)

    def _handshake_failed(self, exc: Exception, future: Optional[asyncio.Future[Any]]) -> None:
        if isinstance(exc, ssl.SSLError):
            _fail(future, exc)
            _fail(self._connect_future, exc)
            _fail(self._handshake_waiter, exc)
        self.close(exc_info=exc)

    def _unsent(self) -> int:
        raw = self._raw_transport
        return super()._unsent() + (raw.get_write_buffer_size() if raw is not None else 0)

    def write(self, data: _Buffer) -> asyncio.Future[None]:
        if not self._feed_writes:
            return super().write(data)
        if self._closed:
            raise StreamClosedError(real_error=self.error)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"write() needs bytes, bytearray or memoryview, got {type(data).__name__}")
        future: asyncio.Future[None] = self._loop.create_future()
        pending = self._write_buffer
        if pending is None:
            pending = self._write_buffer = _StreamBuffer()
        size = _byte_view(data).nbytes
        self._check_write_limit(len(pending) + self._unsent() + size)
        pending.append(data)
        self._queued_bytes += size
        self._write_ends.append(self._queued_bytes)
        self._queue_write_waiter(future)
        self._feed()
        return future

    def _feed(self) -> None:
        # Hand queued bytes to the TLS transport a chunk at a time until it
        # pauses the stream, then resolve the writes that are all handed
        # over (unless paused: those wait for resume_writing).
        transport = self._writer
        pending = self._write_buffer
        if transport is None or pending is None:
            return
        while pending and not self._writing_paused and not transport.is_closing():
            with pending.peek(_TLS_WRITE_CHUNK) as view:
                size = view.nbytes
                transport.write(view.tobytes())
            pending.advance(size)
            self._fed_bytes += size
        if self._writing_paused:
            return
        ends = self._write_ends
        waiters = self._write_waiters
        fed = self._fed_bytes
        while ends and ends[0] <= fed and waiters:
            ends.popleft()
            _resolve(waiters.popleft(), None)

    def _attach_writer(self, transport: asyncio.WriteTransport) -> None:
        if not self._feed_writes:
            super()._attach_writer(transport)
            return
        self._writer = transport
        self._feed()

    def resume_writing(self) -> None:
        if not self._feed_writes:
            super().resume_writing()
            return
        self._writing_paused = False
        self._feed()

    def _fail_writes(self) -> None:
        super()._fail_writes()
        self._write_ends.clear()

    def _peer(self) -> Any:
        try:
            return self._sock().getpeername()
        except (OSError, AttributeError):
            return None

    def connect(self, address: Any, server_hostname: Optional[str] = None) -> asyncio.Future[IOStream]:
        """Connect to ``address`` and do the TLS handshake; the future
        resolves to this stream afterwards. A failed handshake fails it with
        the `ssl.SSLError` (e.g. `ssl.SSLCertVerificationError`)."""
        if server_hostname is not None:
            self._server_hostname = server_hostname
        return super().connect(address, server_hostname)

    def wait_for_handshake(self) -> Awaitable[None]:
        """A future that resolves once the TLS handshake has completed
        (at once if it has). Only one caller may wait at a time: a second
        call while one waits raises `RuntimeError`."""
        if self._handshake_waiter is not None and not self._handshake_waiter.done():
            raise RuntimeError("Already waiting for the handshake")
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._handshake_waiter = waiter
        if self._handshake_done:
            waiter.set_result(None)
        elif self._closed:
            _fail(waiter, StreamClosedError(real_error=self.error))
        return waiter

    def close(self, exc_info: _ExcInfo = False) -> None:
        was_closed = self._closed
        super().close(exc_info)
        if not was_closed:
            _fail(self._handshake_waiter, StreamClosedError(real_error=self.error))

    def reading(self) -> bool:
        """True while a read is pending (the handshake is not a read)."""
        return super().reading()

    def writing(self) -> bool:
        """True while written data has not yet been sent, including data
        queued until the handshake completes."""
        return super().writing()

    def read_from_fd(self, buf: Union[bytearray, memoryview]) -> Optional[int]:
        raise NotImplementedError("TLS data is decrypted by the transport; read from the stream")

    def write_to_fd(self, data: memoryview) -> int:
        raise NotImplementedError("TLS data is encrypted by the transport; write to the stream")


class PipeIOStream(BaseIOStream):
    """A stream over a pipe (or another non-socket descriptor), e.g. a
    subprocess's stdin or stdout.

    ``PipeIOStream(fd)`` takes ownership of the integer descriptor ``fd`` and
    makes it non-blocking. A read-only descriptor can be read, a write-only
    one written, a read-write one both. It is usable at once: writes are
    queued until the loop has set up its transport.
    """

    __slots__ = ("fd", "_pipes")

    def __init__(self, fd: int, *args: Any, **kwargs: Any) -> None:
        if not isinstance(fd, int) or fd < 0:
            raise ValueError(f"fd must be a non-negative int, got {fd!r}")
        super().__init__(*args, **kwargs)
        #: The file descriptor.
        self.fd = fd
        os.set_blocking(fd, False)
        mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        reader = writer = None
        if mode != os.O_WRONLY:
            reader = io.FileIO(fd, "rb", closefd=True)
        if mode != os.O_RDONLY:
            # Each transport closes the descriptor it was given, so a
            # read-write descriptor gives its write side a duplicate.
            writer = io.FileIO(fd if reader is None else os.dup(fd), "wb", closefd=True)
        # The file objects not yet handed to a transport; close_fd closes
        # them if the stream is closed first.
        self._pipes: list[Optional[io.FileIO]] = [reader, writer]
        self._task = asyncio.ensure_future(self._open(), loop=self._loop)

    async def _open(self) -> None:
        loop = self._loop
        reader, writer = self._pipes
        try:
            if reader is not None:
                transport, _ = await loop.connect_read_pipe(lambda: self, reader)
                self._pipes[0] = None
                self._transport = transport
                if self._reading_paused:
                    transport.pause_reading()
            if writer is not None:
                wtransport, _ = await loop.connect_write_pipe(lambda: self, writer)
                self._pipes[1] = None
                self._attach_writer(wtransport)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.close(exc_info=exc)

    def close_fd(self) -> None:
        super().close_fd()
        for pipe in self._pipes:
            if pipe is not None:
                pipe.close()
        self._pipes = [None, None]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The transports are taken into use by _open, which knows which
        # direction each one is.
        if self._closed:
            transport.close()

    def _pause_reading(self) -> None:
        if self._transport is None:
            # Not set up yet: _open pauses the transport once it exists.
            self._reading_paused = True
            return
        super()._pause_reading()

    def fileno(self) -> int:
        return self.fd

    def read_from_fd(self, buf: Union[bytearray, memoryview]) -> Optional[int]:
        try:
            return os.readv(self.fd, [buf])
        except BlockingIOError:
            return None

    def write_to_fd(self, data: memoryview) -> int:
        return os.write(self.fd, data)


def doctests() -> Any:
    """This module's doctests as a `unittest` suite (Tornado's test runner
    collects one such suite per module)."""
    import doctest

    return doctest.DocTestSuite()
