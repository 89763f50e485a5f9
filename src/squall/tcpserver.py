"""A non-blocking TCP server that hands each connection to ``handle_stream`` as an IOStream.

This is squall's counterpart of ``tornado.tcpserver``. Subclass `TCPServer`,
override `TCPServer.handle_stream`, and start it::

    class EchoServer(TCPServer):
        async def handle_stream(self, stream, address):
            while True:
                try:
                    line = await stream.read_until(b"\\n")
                except StreamClosedError:
                    return
                await stream.write(line)

    async def main():
        server = EchoServer()
        server.listen(8888)
        await asyncio.Event().wait()

Plain connections are accepted by the asyncio loop itself
(``loop.create_server``; with uvloop the accept loop runs in C), and each
becomes the protocol that `_make_protocol` returns. By default that protocol
is the connection's `~squall.iostream.IOStream`; servers that speak a
protocol of their own (the HTTP server) override `_make_protocol` to serve
connections without a stream.

With ``ssl_options`` the server accepts each connection itself and gives the
socket to ``loop.connect_accepted_socket(..., ssl=context)``, so the loop's
TLS layer owns the socket before a single byte is read from it. (Layering
TLS onto an already running plain transport with ``loop.start_tls`` races
with the client's ClientHello: uvloop starts reading right after
``connection_made``, whatever the protocol asked, and the hello is consumed
as plain data.) Accepting in Python also means a failed handshake is seen
and logged, which a listening ``create_server(ssl=...)`` would keep to itself.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import os
import socket
import ssl
from collections.abc import Awaitable, Iterable
from typing import Any, Optional, Union

from squall.iostream import BaseIOStream, IOStream, SSLIOStream, _log_tls_failure
from squall.log import app_log, gen_log

__all__ = ["TCPServer"]

# Listen queue length when the caller does not give one: Tornado's default
# (and the historical Linux SOMAXCONN).
_DEFAULT_BACKLOG = 128

# A TLS listener accepts at most this many connections per readiness event
# before letting the loop run other work (asyncio's selector loop and
# Tornado's accept handler bound each round by the backlog the same way).
_ACCEPTS_PER_WAKEUP = _DEFAULT_BACKLOG

# After accept() fails for want of resources (EMFILE, ENFILE, ENOBUFS,
# ENOMEM), a TLS listener stops accepting for this many seconds instead of
# spinning on the error (asyncio's ``ACCEPT_RETRY_DELAY``).
_ACCEPT_RETRY_DELAY = 1.0


def _run_to_completion(coro: Any) -> Any:
    """Run ``coro`` without an event loop and return its result.

    ``loop.create_server(sock=...)`` does all its work synchronously and at
    most yields once to let the loop run (asyncio's ``sleep(0)``); running it
    here makes `TCPServer.add_socket` take effect at once, even before the
    loop runs, as in Tornado.
    """
    try:
        while True:
            yielded = coro.send(None)
            if yielded is not None:
                coro.close()
                raise RuntimeError(f"{coro!r} waited for {yielded!r}; expected it not to block")
    except StopIteration as stop:
        return stop.value


class TCPServer:
    r"""A non-blocking, single-threaded TCP server.

    Override `handle_stream` to serve connections. Three ways to start:

    1. `listen`: one process, ``server.listen(8888)`` inside a running loop
       (or before it starts).
    2. `add_sockets`: sockets from `squall.netutil.bind_sockets`, typically
       bound before `squall.process.fork_processes` so that every worker
       serves them.
    3. `bind` + `start`: the deprecated Tornado way of forking workers.

    ``ssl_options`` turns on TLS: an `ssl.SSLContext`, or a dictionary with
    at least ``certfile`` (see `squall.netutil.ssl_options_to_context`).
    Streams are then `~squall.iostream.SSLIOStream`\ s handed over before
    their handshake has finished (``await stream.wait_for_handshake()`` to
    wait for it). ``max_buffer_size`` and ``read_chunk_size`` are passed to
    each stream.
    """

    def __init__(
        self,
        ssl_options: Union[dict[str, Any], ssl.SSLContext, None] = None,
        max_buffer_size: Optional[int] = None,
        read_chunk_size: Optional[int] = None,
    ) -> None:
        self.ssl_options = ssl_options
        self._sockets: dict[int, socket.socket] = {}
        self._servers: dict[int, Union[asyncio.AbstractServer, _TLSListener]] = {}
        self._backlogs: dict[int, int] = {}
        self._pending_sockets: list[socket.socket] = []
        self._started = False
        self._stopped = False
        self.max_buffer_size = max_buffer_size
        self.read_chunk_size = read_chunk_size
        self._ssl_context: Optional[ssl.SSLContext] = None
        # Handshakes in progress for connections served by a protocol other
        # than a stream (a stream keeps its own handshake task).
        self._handshakes: set[asyncio.Future[Any]] = set()
        if isinstance(ssl_options, dict):
            # Catch a bad certificate path now rather than at the first
            # connection's handshake.
            if "certfile" not in ssl_options:
                raise KeyError('missing key "certfile" in ssl_options')
            for key in ("certfile", "keyfile"):
                path = ssl_options.get(key)
                if path is not None and not os.path.exists(path):
                    raise ValueError(f'{key} "{path}" does not exist')
        elif ssl_options is not None and not isinstance(ssl_options, ssl.SSLContext):
            raise TypeError(f"ssl_options must be a dict or an ssl.SSLContext, got {ssl_options!r}")

    def listen(
        self,
        port: int,
        address: Optional[str] = None,
        family: socket.AddressFamily = socket.AF_UNSPEC,
        backlog: int = _DEFAULT_BACKLOG,
        flags: Optional[int] = None,
        reuse_port: bool = False,
    ) -> None:
        """Start accepting connections on ``port`` (all interfaces unless
        ``address`` is given). May be called more than once for several
        ports. The arguments are those of `squall.netutil.bind_sockets`."""
        from squall.netutil import bind_sockets

        sockets = bind_sockets(
            port, address=address, family=family, backlog=backlog, flags=flags, reuse_port=reuse_port
        )
        for sock in sockets:
            self._backlogs[sock.fileno()] = backlog
        self.add_sockets(sockets)

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        """Start accepting connections on these listening sockets (e.g. from
        `squall.netutil.bind_sockets`). The server owns them from now on."""
        for sock in sockets:
            self.add_socket(sock)

    def add_socket(self, socket: socket.socket) -> None:
        """Start accepting connections on one listening socket."""
        if self._stopped:
            raise RuntimeError("TCPServer.add_socket called after stop()")
        from squall.ioloop import IOLoop

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = IOLoop.current().asyncio_loop
        fd = socket.fileno()
        backlog = self._backlogs.get(fd, _DEFAULT_BACKLOG)
        server: Union[asyncio.AbstractServer, _TLSListener]
        if self.ssl_options is None:
            # asyncio listens on the socket again with this backlog, so the
            # one it was bound with is passed on.
            server = _run_to_completion(loop.create_server(self._make_protocol, sock=socket, backlog=backlog))
        else:
            self._server_ssl_context()
            server = _TLSListener(self, loop, socket, backlog)
        self._sockets[fd] = socket
        self._servers[fd] = server

    def bind(
        self,
        port: int,
        address: Optional[str] = None,
        family: socket.AddressFamily = socket.AF_UNSPEC,
        backlog: int = _DEFAULT_BACKLOG,
        flags: Optional[int] = None,
        reuse_port: bool = False,
    ) -> None:
        """Bind to ``port`` without accepting yet; `start` begins accepting
        (after forking, if asked to). Deprecated in Tornado in favour of
        `listen` or `add_sockets` with `squall.process.fork_processes`."""
        from squall.netutil import bind_sockets

        sockets = bind_sockets(
            port, address=address, family=family, backlog=backlog, flags=flags, reuse_port=reuse_port
        )
        for sock in sockets:
            self._backlogs[sock.fileno()] = backlog
        if self._started:
            self.add_sockets(sockets)
        else:
            self._pending_sockets.extend(sockets)

    def start(self, num_processes: Optional[int] = 1, max_restarts: Optional[int] = None) -> None:
        """Start accepting on the sockets given to `bind`.

        With ``num_processes`` other than 1 the process first forks that many
        workers (None or 0: one per CPU) with
        `squall.process.fork_processes`, restarting a crashed one up to
        ``max_restarts`` times; each worker then accepts on the shared
        sockets. Call it before any event loop has started when forking.
        """
        if self._started:
            raise RuntimeError("TCPServer.start called twice")
        self._started = True
        if num_processes != 1:
            from squall import process

            process.fork_processes(num_processes, max_restarts)
        sockets = self._pending_sockets
        self._pending_sockets = []
        self.add_sockets(sockets)

    def stop(self) -> None:
        """Stop accepting new connections and close the listening sockets.

        Connections already accepted stay open. Calling it twice is harmless.
        """
        if self._stopped:
            return
        self._stopped = True
        for fd, server in self._servers.items():
            server.close()
            self._sockets[fd].close()
        self._servers.clear()
        self._sockets.clear()
        for sock in self._pending_sockets:
            sock.close()
        self._pending_sockets = []

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> Optional[Awaitable[None]]:
        """Serve one new connection; override it.

        ``stream`` is the connection's `~squall.iostream.IOStream` and
        ``address`` the peer's address. It may be a coroutine function or
        return an awaitable: an exception it raises is logged, as is one
        raised by a plain method.
        """
        raise NotImplementedError()

    def _make_protocol(self) -> asyncio.BaseProtocol:
        """The asyncio protocol for one accepted connection (called once per
        connection). The default is the connection's stream, which calls
        `handle_stream` as soon as the connection is accepted; override it to
        serve connections with a protocol of one's own. With ``ssl_options``
        the protocol is connected once the TLS handshake has completed."""
        if self.ssl_options is None:
            return IOStream._bare(self._on_stream, self.max_buffer_size, self.read_chunk_size)
        return SSLIOStream._for_server(
            self._server_ssl_context(), self._on_stream, self.max_buffer_size, self.read_chunk_size
        )

    def _server_ssl_context(self) -> ssl.SSLContext:
        context = self._ssl_context
        if context is None:
            from squall.netutil import ssl_options_to_context

            assert self.ssl_options is not None
            context = self._ssl_context = ssl_options_to_context(self.ssl_options, server_side=True)
        return context

    def _serve_tls(self, sock: socket.socket, address: Any) -> None:
        # One connection accepted by a _TLSListener.
        protocol = self._make_protocol()
        if isinstance(protocol, SSLIOStream):
            # The stream is handed to handle_stream at once, as in Tornado;
            # its handshake runs meanwhile.
            protocol._serve_accepted(sock, address)
            return
        task = asyncio.ensure_future(_handshake(protocol, sock, address, self._server_ssl_context()))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    def _on_stream(self, stream: BaseIOStream, address: Any) -> None:
        try:
            result = self.handle_stream(stream, address)  # type: ignore[arg-type]
        except Exception:
            app_log.error("Exception in callback %r", self.handle_stream, exc_info=True)
            return
        if result is not None and inspect.isawaitable(result):
            asyncio.ensure_future(result).add_done_callback(_log_failure)


def _log_failure(future: asyncio.Future[Any]) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        app_log.error("Exception in callback %r", future, exc_info=(type(exc), exc, exc.__traceback__))


async def _handshake(
    protocol: asyncio.BaseProtocol, sock: socket.socket, address: Any, context: ssl.SSLContext
) -> None:
    # TLS for a connection served by a protocol of the server's own: the
    # protocol sees connection_made once the handshake is done, and never
    # hears of a connection whose handshake failed.
    fd = sock.fileno()
    try:
        await asyncio.get_running_loop().connect_accepted_socket(lambda: protocol, sock, ssl=context)
    except Exception as exc:
        # The loop has closed the connection already.
        _log_tls_failure(fd, address, exc)


class _TLSListener:
    """Accepts connections for a TLS server on one listening socket and
    hands each to `TCPServer._serve_tls`. ``close`` stops accepting (as
    `asyncio.Server.close` does; the socket is closed by the server)."""

    __slots__ = ("_server", "_loop", "_sock", "_retry")

    def __init__(
        self, server: TCPServer, loop: asyncio.AbstractEventLoop, sock: socket.socket, backlog: int
    ) -> None:
        self._server = server
        self._loop = loop
        self._sock = sock
        self._retry: Optional[asyncio.TimerHandle] = None
        sock.setblocking(False)
        # As create_server does: listen (again) with the server's backlog.
        sock.listen(backlog)
        loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        sock = self._sock
        serve = self._server._serve_tls
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                conn, address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                # The peer gave up while the connection waited in the queue.
                continue
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                gen_log.error(
                    "Cannot accept connections on %s: %s; retrying in %s s",
                    sock.getsockname(),
                    exc,
                    _ACCEPT_RETRY_DELAY,
                )
                self._loop.remove_reader(sock.fileno())
                self._retry = self._loop.call_later(_ACCEPT_RETRY_DELAY, self._resume)
                return
            conn.setblocking(False)
            serve(conn, address)

    def _resume(self) -> None:
        self._retry = None
        self._loop.add_reader(self._sock.fileno(), self._accept)

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        elif not self._loop.is_closed() and self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
