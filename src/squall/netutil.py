"""Low-level network helpers: listening sockets, accept loops, DNS resolvers and TLS contexts.

This is squall's counterpart of ``tornado.netutil``. Servers use `bind_sockets`
(or `bind_unix_socket`) to create their listening sockets, clients resolve names
through a `Resolver`, and both sides turn Tornado-style ``ssl_options``
dictionaries into `ssl.SSLContext` objects with `ssl_options_to_context`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import os
import socket
import ssl
import stat
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from squall.concurrent import dummy_executor
from squall.ioloop import IOLoop
from squall.log import app_log
from squall.util import Configurable

__all__ = [
    "BlockingResolver",
    "DefaultExecutorResolver",
    "DefaultLoopResolver",
    "ExecutorResolver",
    "OverrideResolver",
    "Resolver",
    "ThreadedResolver",
    "add_accept_handler",
    "bind_sockets",
    "bind_unix_socket",
    "is_valid_ip",
    "ssl_options_to_context",
    "ssl_wrap_socket",
]

# Listen backlog used when the caller does not choose one; 128 is Tornado's
# default and the historical Linux SOMAXCONN.
_DEFAULT_BACKLOG = 128

# At most this many connections are accepted per readiness event, so that a
# flood of connections cannot starve the rest of the loop (Tornado bounds its
# accept loop by the backlog for the same reason).
_ACCEPTS_PER_EVENT = _DEFAULT_BACKLOG

# When accept() fails for lack of descriptors or memory, stop accepting for
# this many seconds instead of spinning on a socket that stays readable
# (asyncio's ACCEPT_RETRY_DELAY does the same).
_ACCEPT_RETRY_DELAY = 1.0

# accept() errors that mean "the process or the system is out of resources":
# retried later rather than treated as fatal (the list asyncio uses).
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

# The keys an ``ssl_options`` dictionary may hold: the keyword arguments of the
# old ``ssl.wrap_socket`` function, which is what Tornado accepts.
_SSL_PARAMS = frozenset({"ssl_version", "certfile", "keyfile", "cert_reqs", "ca_certs", "ciphers"})

# Default client and server options when a caller passes ``ssl_options=None``
# to an API that expects a context: certificate verification for clients, and a
# plain server context for servers.
_client_ssl_defaults = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
_server_ssl_defaults = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
if hasattr(ssl, "OP_NO_COMPRESSION"):
    # CRIME: TLS compression leaks secrets; OpenSSL disables it in these
    # contexts already, setting it again guards older builds.
    _client_ssl_defaults.options |= ssl.OP_NO_COMPRESSION
    _server_ssl_defaults.options |= ssl.OP_NO_COMPRESSION


def bind_sockets(
    port: int,
    address: str | None = None,
    family: socket.AddressFamily = socket.AF_UNSPEC,
    backlog: int = _DEFAULT_BACKLOG,
    flags: int | None = None,
    reuse_port: bool = False,
) -> list[socket.socket]:
    """Create listening sockets bound to ``port`` on ``address``.

    Returns one non-blocking, listening socket per address that ``address``
    resolves to: ``"localhost"`` may give an IPv4 and an IPv6 socket, and
    ``None`` or ``""`` listens on every interface of every family the system
    supports. IPv6 sockets are IPv6-only, so they never clash with the IPv4 ones.
    Restrict the families with ``family`` (``socket.AF_INET`` or
    ``socket.AF_INET6``).

    With ``port=0`` the operating system picks a free port for the first
    socket and every other socket is bound to that same port, so one number
    reaches the server on all families.

    ``backlog`` is the ``listen()`` queue length. ``flags`` is passed to
    ``getaddrinfo`` (default ``AI_PASSIVE``; e.g. ``AI_NUMERICHOST`` to refuse
    name lookups). ``reuse_port=True`` sets ``SO_REUSEPORT`` so that several
    processes can listen on the same port; it raises `ValueError` where the
    platform lacks it. ``SO_REUSEADDR`` is always set, so a restarted server can
    bind while old connections linger in ``TIME_WAIT``.
    """
    if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError(f"reuse_port={reuse_port!r}: SO_REUSEPORT is not supported on this platform")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer in 0..65535, got {port!r}")
    if address == "":
        address = None
    if not socket.has_ipv6 and family == socket.AF_UNSPEC:
        # getaddrinfo may still return IPv6 addresses on a Python built
        # without IPv6 support; those sockets could never be created.
        family = socket.AF_INET
    if flags is None:
        flags = socket.AI_PASSIVE
    infos = socket.getaddrinfo(address, port, family, socket.SOCK_STREAM, 0, flags)
    sockets: list[socket.socket] = []
    bound_port: int | None = None
    seen: set[tuple[Any, ...]] = set()
    for af, socktype, proto, _canonname, sockaddr in infos:
        key = (af, socktype, proto, sockaddr)
        if key in seen:
            continue
        seen.add(key)
        if (
            sys.platform == "darwin"
            and address == "localhost"
            and af == socket.AF_INET6
            and sockaddr[3] != 0
        ):
            # macOS lists a link-local fe80::1%lo0 for localhost; binding it
            # fails when the port is already taken on ::1.
            continue
        try:
            sock = socket.socket(af, socktype, proto)
        except OSError as e:
            if e.errno == errno.EAFNOSUPPORT:
                continue
            _close_all(sockets)
            raise
        try:
            if os.name != "nt":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if af == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            bind_addr: tuple[Any, ...] = tuple(sockaddr)
            if port == 0 and bound_port is not None:
                bind_addr = (bind_addr[0], bound_port, *bind_addr[2:])
            sock.setblocking(False)
            try:
                sock.bind(bind_addr)
            except OSError as e:
                if e.errno == errno.EADDRNOTAVAIL and address == "localhost" and sockaddr[0] == "::1":
                    # localhost resolves to ::1 but the kernel has IPv6
                    # disabled; the IPv4 socket alone serves localhost.
                    sock.close()
                    continue
                raise
            bound_port = sock.getsockname()[1]
            sock.listen(backlog)
        except BaseException:
            sock.close()
            _close_all(sockets)
            raise
        sockets.append(sock)
    return sockets


def _close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


if hasattr(socket, "AF_UNIX"):

    def bind_unix_socket(file: str, mode: int = 0o600, backlog: int = _DEFAULT_BACKLOG) -> socket.socket:
        """Create a non-blocking listening Unix-domain socket at path ``file``.

        A stale socket file left by a previous run is removed first; any other
        kind of file at that path raises `ValueError` rather than being deleted.
        The socket file gets permissions ``mode`` (default owner-only). A name
        starting with a NUL byte is a Linux abstract socket: nothing is created
        on the filesystem and ``mode`` does not apply.
        """
        abstract = file.startswith("\0")
        if not abstract:
            try:
                st = os.stat(file)
            except FileNotFoundError:
                pass
            else:
                if not stat.S_ISSOCK(st.st_mode):
                    raise ValueError(f"File {file!r} exists and is not a socket")
                os.remove(file)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setblocking(False)
            sock.bind(file)
            if not abstract:
                os.chmod(file, mode)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return sock


def add_accept_handler(
    sock: socket.socket, callback: Callable[[socket.socket, Any], None]
) -> Callable[[], None]:
    """Accept connections on the listening socket ``sock`` from the current IOLoop.

    ``callback(connection, address)`` runs on the loop for every accepted
    connection. Returns a function that stops accepting; calling it from inside
    ``callback`` takes effect at once, even when more connections are queued.
    The listening socket itself is never closed here.

    When the process runs out of file descriptors the handler pauses for a
    second and logs the error, instead of spinning on a socket that stays
    readable.
    """
    return _AcceptHandler(IOLoop.current(), sock, callback).remove


class _AcceptHandler:
    """The IOLoop handler behind `add_accept_handler`, with its pause/remove state.

    It is registered with `IOLoop.add_handler`, so ``io_loop.remove_handler(sock)``
    stops it too, as in Tornado.
    """

    __slots__ = ("_io_loop", "_sock", "_callback", "_removed", "_retry")

    def __init__(self, io_loop: IOLoop, sock: socket.socket, callback: Callable[[socket.socket, Any], None]) -> None:
        self._io_loop = io_loop
        self._sock = sock
        self._callback = callback
        self._removed = False
        self._retry: asyncio.TimerHandle | None = None
        io_loop.add_handler(sock, self._on_readable, IOLoop.READ)

    def _on_readable(self, fd: Any, events: int) -> None:
        for _ in range(_ACCEPTS_PER_EVENT):
            if self._removed:
                return
            try:
                connection, address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                # The peer reset the connection while it sat in the queue.
                continue
            except OSError as e:
                if e.errno not in _RESOURCE_ERRNOS:
                    raise
                app_log.error(
                    "Error accepting a connection on %r; retrying in %.1fs",
                    self._sock,
                    _ACCEPT_RETRY_DELAY,
                    exc_info=True,
                )
                self._io_loop.update_handler(self._sock, 0)
                self._retry = self._io_loop.asyncio_loop.call_later(_ACCEPT_RETRY_DELAY, self._resume)
                return
            self._callback(connection, address)

    def _resume(self) -> None:
        self._retry = None
        try:
            self._io_loop.update_handler(self._sock, IOLoop.READ)
        except ValueError:
            # Unregistered meanwhile through io_loop.remove_handler(sock).
            self._removed = True

    def remove(self) -> None:
        if self._removed:
            return
        self._removed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._io_loop.remove_handler(self._sock)


def is_valid_ip(ip: str) -> bool:
    """Return True if ``ip`` is a numeric IPv4 or IPv6 address (no name lookup).

    Accepts what the platform's ``getaddrinfo`` accepts with
    ``AI_NUMERICHOST``, including scoped IPv6 addresses such as ``fe80::1%lo``.
    Empty strings, surrounding whitespace and NUL bytes are rejected.
    """
    if not ip or "\x00" in ip:
        return False
    try:
        infos = socket.getaddrinfo(ip, 0, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except socket.gaierror as e:
        if e.errno == socket.EAI_NONAME:
            return False
        raise
    except UnicodeError:
        # Non-ASCII text cannot be a numeric address.
        return False
    return bool(infos)


class Resolver(Configurable):
    """Asynchronous DNS resolver interface; ``Resolver()`` builds the configured implementation.

    The default implementation is `DefaultLoopResolver`, which asks the asyncio
    event loop (and so never blocks it). Choose another one for the whole
    process with ``Resolver.configure(...)``, e.g.
    ``Resolver.configure("squall.netutil.ThreadedResolver")``.

    Implementations shipped here: `DefaultLoopResolver`,
    `DefaultExecutorResolver`, `ThreadedResolver`, `BlockingResolver` (tests
    only) and `OverrideResolver` (wraps another resolver with fixed answers).
    """

    @classmethod
    def configurable_base(cls) -> type[Configurable]:
        return Resolver

    @classmethod
    def configurable_default(cls) -> type[Configurable]:
        return DefaultLoopResolver

    def resolve(
        self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> Awaitable[list[tuple[int, Any]]]:
        """Resolve ``host`` and ``port`` to a list of ``(family, address)`` pairs.

        ``address`` is a tuple ready for ``socket.connect`` (``(ip, port)`` for
        IPv4, ``(ip, port, flowinfo, scope_id)`` for IPv6). ``family`` limits
        the answer to one address family. Returns an awaitable; a failed lookup
        raises `OSError` (``socket.gaierror``) when awaited.
        """
        raise NotImplementedError()

    def close(self) -> None:
        """Release the resources this resolver holds (threads, executors)."""


def _resolve_addr(host: str, port: int, family: int = socket.AF_UNSPEC) -> list[tuple[int, Any]]:
    # SOCK_STREAM keeps getaddrinfo from listing each address once per socket
    # type; ``socket.getaddrinfo`` is looked up at call time so that it can be
    # replaced (tests inject failures that way).
    infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    return [(af, sockaddr) for af, _type, _proto, _name, sockaddr in infos]


class DefaultExecutorResolver(Resolver):
    """Resolver that runs ``socket.getaddrinfo`` in the IOLoop's default executor."""

    async def resolve(
        self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[tuple[int, Any]]:
        return await IOLoop.current().run_in_executor(None, _resolve_addr, host, port, family)


class DefaultLoopResolver(Resolver):
    """Resolver that uses the running asyncio loop's ``getaddrinfo`` (the default)."""

    async def resolve(
        self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[tuple[int, Any]]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
        return [(af, sockaddr) for af, _type, _proto, _name, sockaddr in infos]


class ExecutorResolver(Resolver):
    """Resolver that runs ``socket.getaddrinfo`` on a `concurrent.futures.Executor`.

    ``executor`` defaults to one that runs the lookup synchronously on the
    calling thread. With ``close_executor=True`` (the default) `close` shuts
    the given executor down. Prefer `DefaultLoopResolver`, or
    `DefaultExecutorResolver` when a thread pool is wanted.
    """

    def initialize(
        self, executor: concurrent.futures.Executor | None = None, close_executor: bool = True
    ) -> None:
        if executor is None:
            self.executor: concurrent.futures.Executor = dummy_executor
            self.close_executor = False
        else:
            self.executor = executor
            self.close_executor = close_executor

    def close(self) -> None:
        if self.close_executor:
            self.executor.shutdown()
        self.executor = None  # type: ignore[assignment]

    def resolve(
        self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> Awaitable[list[tuple[int, Any]]]:
        if self.executor is None:
            raise RuntimeError(f"{type(self).__name__} is closed")
        return asyncio.wrap_future(
            self.executor.submit(_resolve_addr, host, port, family), loop=IOLoop.current().asyncio_loop
        )


class BlockingResolver(ExecutorResolver):
    """Resolver that calls ``socket.getaddrinfo`` on the loop thread, blocking it.

    Only suitable for tests and scripts that resolve literal addresses.
    """

    def initialize(self) -> None:  # type: ignore[override]
        super().initialize()


class ThreadedResolver(ExecutorResolver):
    """Resolver backed by a process-wide thread pool of ``num_threads`` threads.

    Every instance shares one pool (created by the first instance, and again in
    a child process after ``fork``), so creating resolvers is cheap; the pool's
    size is fixed by whichever instance created it.
    """

    _threadpool: concurrent.futures.ThreadPoolExecutor | None = None
    _threadpool_pid: int | None = None

    def initialize(self, num_threads: int = 10) -> None:  # type: ignore[override]
        pool = ThreadedResolver._create_threadpool(num_threads)
        super().initialize(executor=pool, close_executor=False)

    @classmethod
    def _create_threadpool(cls, num_threads: int) -> concurrent.futures.ThreadPoolExecutor:
        pid = os.getpid()
        if cls._threadpool_pid != pid:
            # A pool inherited across fork has no threads in this process.
            cls._threadpool = None
        if cls._threadpool is None:
            cls._threadpool = concurrent.futures.ThreadPoolExecutor(num_threads)
            cls._threadpool_pid = pid
        return cls._threadpool


class OverrideResolver(Resolver):
    """Resolver that answers some names from a fixed ``mapping`` and asks ``resolver`` otherwise.

    ``mapping`` keys are, from most to least specific, ``(host, port,
    family)``, ``(host, port)`` or ``host``; the values are the
    ``(host, port)`` (or, for a bare host key, the host) to resolve instead::

        OverrideResolver(resolver, {
            "example.com": "127.0.1.1",
            ("login.example.com", 443): ("localhost", 1443),
            ("login.example.com", 443, socket.AF_INET6): ("::1", 1443),
        })
    """

    def initialize(self, resolver: Resolver, mapping: dict[Any, Any]) -> None:  # type: ignore[override]
        self.resolver = resolver
        self.mapping = mapping

    def close(self) -> None:
        self.resolver.close()

    def resolve(
        self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> Awaitable[list[tuple[int, Any]]]:
        if (host, port, family) in self.mapping:
            host, port = self.mapping[(host, port, family)]
        elif (host, port) in self.mapping:
            host, port = self.mapping[(host, port)]
        elif host in self.mapping:
            host = self.mapping[host]
        return self.resolver.resolve(host, port, family)


def ssl_options_to_context(
    ssl_options: dict[str, Any] | ssl.SSLContext, server_side: bool | None = None
) -> ssl.SSLContext:
    """Turn a Tornado-style ``ssl_options`` dictionary into an `ssl.SSLContext`.

    An `ssl.SSLContext` is returned unchanged. A dictionary may hold the keys
    ``ssl_version``, ``certfile``, ``keyfile``, ``cert_reqs``, ``ca_certs`` and
    ``ciphers`` (the arguments of the old ``ssl.wrap_socket``); any other key
    raises `ValueError` naming it.

    ``server_side=True`` builds a server context, ``False`` a client context
    that verifies the peer's certificate and host name unless ``cert_reqs``
    says otherwise. With ``None`` the side is guessed: a context with a
    ``certfile`` is a server's, one without is a client's that (as in Tornado)
    verifies nothing unless ``cert_reqs`` asks.
    """
    if isinstance(ssl_options, ssl.SSLContext):
        return ssl_options
    if not isinstance(ssl_options, dict):
        raise TypeError(f"ssl_options must be a dict or an ssl.SSLContext, got {ssl_options!r}")
    unknown = sorted(set(ssl_options) - _SSL_PARAMS)
    if unknown:
        raise ValueError(f"unknown ssl_options keys {unknown!r}; allowed: {sorted(_SSL_PARAMS)!r}")
    guessed_side = server_side is None
    if guessed_side:
        server_side = "certfile" in ssl_options
    default_version = ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT
    context = ssl.SSLContext(ssl_options.get("ssl_version", default_version))
    if guessed_side and not server_side:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if "certfile" in ssl_options:
        context.load_cert_chain(ssl_options["certfile"], ssl_options.get("keyfile"))
    if "cert_reqs" in ssl_options:
        if ssl_options["cert_reqs"] == ssl.CERT_NONE:
            # check_hostname cannot stay on once verification is off.
            context.check_hostname = False
        context.verify_mode = ssl_options["cert_reqs"]
    if "ca_certs" in ssl_options:
        context.load_verify_locations(ssl_options["ca_certs"])
    if "ciphers" in ssl_options:
        context.set_ciphers(ssl_options["ciphers"])
    if hasattr(ssl, "OP_NO_COMPRESSION"):
        context.options |= ssl.OP_NO_COMPRESSION
    return context


def ssl_wrap_socket(
    socket: socket.socket,
    ssl_options: dict[str, Any] | ssl.SSLContext,
    server_hostname: str | None = None,
    server_side: bool | None = None,
    **kwargs: Any,
) -> ssl.SSLSocket:
    """Wrap ``socket`` in an `ssl.SSLSocket` configured by ``ssl_options``.

    ``ssl_options`` is an `ssl.SSLContext` or a dictionary accepted by
    `ssl_options_to_context`. ``server_hostname`` is sent as SNI and checked
    against the certificate on the client side. Extra keyword arguments go to
    `ssl.SSLContext.wrap_socket`.
    """
    context = ssl_options_to_context(ssl_options, server_side=server_side)
    if server_side is None:
        server_side = context.protocol == ssl.PROTOCOL_TLS_SERVER
    return context.wrap_socket(socket, server_hostname=server_hostname, server_side=server_side, **kwargs)
