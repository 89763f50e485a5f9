"""Tests for squall.tcpclient: real connections, Happy Eyeballs, timeouts, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from squall.iostream import StreamClosedError
from squall.netutil import Resolver, bind_sockets
from squall.tcpclient import TCPClient, _Connector, _format_addr


def _ipv6_loopback_works() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback_works(), reason="no IPv6 loopback")


class _FixedResolver(Resolver):
    """Answers every lookup with the addresses it was built with."""

    def initialize(self, answer: list[tuple[int, Any]]) -> None:  # type: ignore[override]
        self.answer = answer

    async def resolve(self, host: str, port: int, family: int = socket.AF_UNSPEC) -> list[tuple[int, Any]]:  # type: ignore[override]
        return self.answer


class _EchoProtocol(asyncio.Protocol):
    def __init__(self, server: _Server) -> None:
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.server.peers.append(transport.get_extra_info("peername"))
        self.server.transports.append(transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.closed_by_peer.set()


class _Server:
    """A loopback echo server that records its peers' addresses."""

    def __init__(self, family: int = socket.AF_INET, host: str = "127.0.0.1", ssl_ctx: ssl.SSLContext | None = None):
        [self.sock] = bind_sockets(0, host, family=family)
        self.port = self.sock.getsockname()[1]
        self.ssl_ctx = ssl_ctx
        self.peers: list[Any] = []
        self.transports: list[asyncio.BaseTransport] = []
        self.closed_by_peer = asyncio.Event()
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _EchoProtocol(self), sock=self.sock, ssl=self.ssl_ctx)

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for transport in self.transports:
            transport.abort()  # type: ignore[attr-defined]
        await self.server.wait_closed()


@contextlib.asynccontextmanager
async def _serving(**kwargs: Any) -> AsyncIterator[_Server]:
    server = _Server(**kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


class _SilentListener:
    """A listening socket that accepts TCP connections into its queue but never reads.

    Used for "the peer never answers the TLS handshake".
    """

    def __init__(self) -> None:
        [self.sock] = bind_sockets(0, "127.0.0.1")
        self.port = self.sock.getsockname()[1]

    def accept_one(self, timeout: float = 5) -> socket.socket:
        self.sock.setblocking(True)
        self.sock.settimeout(timeout)
        conn, _ = self.sock.accept()
        conn.settimeout(timeout)
        return conn


def _full_backlog_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A listener whose accept queue is full, so the kernel drops new SYNs.

    listen(0) and raw connections that fill the queue: the next connect gets
    no answer at all, like a firewalled host (on Linux, SYNs to a full accept
    queue are dropped).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    import select

    for _ in range(16):
        c = socket.socket()
        c.setblocking(False)
        fillers.append(c)
        c.connect_ex(("127.0.0.1", port))
        _, writable, _ = select.select([], [c], [], 0.2)
        if not writable:
            return listener, fillers
    for s in fillers + [listener]:
        s.close()
    pytest.skip("could not fill the accept queue on this platform")


@pytest.fixture(scope="module")
def cert_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl command not available to make a test certificate")
    d = tmp_path_factory.mktemp("cert")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return cert, key


# --- real connections -----------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_connect_and_exchange_data(host: str) -> None:
    async def main() -> None:
        async with _serving() as server:
            client = TCPClient()
            stream = await client.connect(host, server.port)
            try:
                assert stream.socket.family == socket.AF_INET
                await stream.write(b"hello")
                assert await stream.read_bytes(5) == b"hello"
            finally:
                stream.close()
                client.close()
            await asyncio.wait_for(server.closed_by_peer.wait(), 5)

    asyncio.run(main())


@needs_ipv6
def test_connect_ipv6() -> None:
    async def main() -> None:
        async with _serving(family=socket.AF_INET6, host="::1") as server:
            client = TCPClient()
            stream = await client.connect("::1", server.port, af=socket.AF_INET6)
            try:
                assert stream.socket.family == socket.AF_INET6
                await stream.write(b"v6")
                assert await stream.read_bytes(2) == b"v6"
            finally:
                stream.close()
                client.close()

    asyncio.run(main())


def test_refused_connection_raises_oserror() -> None:
    async def main() -> None:
        [sock] = bind_sockets(0, "127.0.0.1")
        port = sock.getsockname()[1]
        sock.close()
        client = TCPClient()
        with pytest.raises(OSError) as info:
            await client.connect("127.0.0.1", port)
        # As in Tornado: the stream's StreamClosedError, with the cause attached.
        assert isinstance(info.value, StreamClosedError)
        assert isinstance(info.value.real_error, ConnectionRefusedError)
        client.close()

    asyncio.run(main())


def test_source_ip() -> None:
    async def main() -> None:
        async with _serving() as server:
            client = TCPClient()
            stream = await client.connect("127.0.0.1", server.port, source_ip="127.0.0.1")
            stream.close()
            with pytest.raises(OSError):
                # Not an address of this machine: bind fails before connecting.
                await client.connect("127.0.0.1", server.port, source_ip="192.0.2.7")
            client.close()
            assert server.peers[0][0] == "127.0.0.1"

    asyncio.run(main())


@needs_ipv6
def test_happy_eyeballs_falls_back_at_once_when_primary_is_refused() -> None:
    async def main() -> None:
        async with _serving() as server:
            resolver = _FixedResolver(
                [(socket.AF_INET6, ("::1", server.port, 0, 0)), (socket.AF_INET, ("127.0.0.1", server.port))]
            )
            start = time.monotonic()
            stream = await TCPClient(resolver=resolver).connect("example.com", server.port)
            try:
                assert stream.socket.family == socket.AF_INET
            finally:
                stream.close()
            # The refusal starts the secondary family at once; no 250 ms wait.
            assert time.monotonic() - start < 0.2

    asyncio.run(main())


@needs_ipv6
def test_happy_eyeballs_secondary_wins_when_primary_hangs() -> None:
    async def main() -> None:
        listener, fillers = _full_backlog_listener()
        hung_port = listener.getsockname()[1]
        try:
            async with _serving(family=socket.AF_INET6, host="::1") as server:
                resolver = _FixedResolver(
                    [(socket.AF_INET, ("127.0.0.1", hung_port)), (socket.AF_INET6, ("::1", server.port, 0, 0))]
                )
                stream = await TCPClient(resolver=resolver).connect("example.com", 1, timeout=10)
                try:
                    assert stream.socket.family == socket.AF_INET6
                    await stream.write(b"x")
                    assert await stream.read_bytes(1) == b"x"
                finally:
                    stream.close()
        finally:
            for s in fillers + [listener]:
                s.close()

    asyncio.run(main())


def test_connect_timeout_on_dropped_syns_does_not_block_loop() -> None:
    async def main() -> None:
        listener, fillers = _full_backlog_listener()
        port = listener.getsockname()[1]
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        client = TCPClient()
        start = time.monotonic()
        try:
            with pytest.raises(TimeoutError, match=f"Timeout while connecting to 127.0.0.1:{port}"):
                await client.connect("127.0.0.1", port, timeout=0.5)
        finally:
            elapsed = time.monotonic() - start
            tick_task.cancel()
            client.close()
            for s in fillers + [listener]:
                s.close()
        assert 0.45 <= elapsed < 3
        # The loop kept running other work while the connect was pending.
        assert ticks >= 5

    asyncio.run(main())


def test_timedelta_timeout_and_bad_timeout() -> None:
    async def main() -> None:
        listener, fillers = _full_backlog_listener()
        port = listener.getsockname()[1]
        client = TCPClient()
        try:
            with pytest.raises(TimeoutError):
                await client.connect("127.0.0.1", port, timeout=datetime.timedelta(seconds=0.2))
            with pytest.raises(TypeError, match="'soon'"):
                await client.connect("127.0.0.1", port, timeout="soon")  # type: ignore[arg-type]
        finally:
            client.close()
            for s in fillers + [listener]:
                s.close()

    asyncio.run(main())


def test_resolve_timeout() -> None:
    class NeverResolver(Resolver):
        def resolve(self, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:  # type: ignore[override]
            return asyncio.get_running_loop().create_future()

    async def main() -> None:
        with pytest.raises(TimeoutError) as info:
            await TCPClient(resolver=NeverResolver()).connect("example.com", 80, timeout=0.05)
        assert str(info.value) == "Timeout while resolving example.com"

    asyncio.run(main())


# --- TLS -----------------------------------------------------------------------------


def test_tls_connect(cert_file: tuple[str, str]) -> None:
    cert, key = cert_file
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def main() -> None:
        async with _serving(ssl_ctx=server_ctx) as server:
            client = TCPClient()
            stream = await client.connect("localhost", server.port, ssl_options={"ca_certs": cert}, timeout=10)
            try:
                await stream.write(b"secret")
                assert await stream.read_bytes(6) == b"secret"
            finally:
                stream.close()
            # The certificate is checked against the host name.
            bad = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            with pytest.raises(ssl.SSLError):
                await client.connect("127.0.0.1", server.port, ssl_options=bad)
            client.close()

    asyncio.run(main())


def _insecure_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_tls_handshake_timeout_closes_socket() -> None:
    async def main() -> None:
        silent = _SilentListener()
        client = TCPClient()
        loop = asyncio.get_running_loop()
        try:
            with pytest.raises(TimeoutError) as info:
                await client.connect("127.0.0.1", silent.port, ssl_options=_insecure_ctx(), timeout=0.5)
            assert str(info.value) == f"Timeout during TLS handshake with 127.0.0.1:{silent.port}"
            conn = await loop.run_in_executor(None, silent.accept_one)
            with conn:
                # The ClientHello, then end of file: the client closed its socket.
                data = b""
                while chunk := await loop.run_in_executor(None, conn.recv, 65536):
                    data += chunk
                assert data[:1] == b"\x16"
        finally:
            client.close()
            silent.sock.close()

    asyncio.run(main())


def test_cancel_during_tls_handshake_closes_socket() -> None:
    async def main() -> None:
        silent = _SilentListener()
        client = TCPClient()
        loop = asyncio.get_running_loop()
        try:
            task = asyncio.ensure_future(client.connect("127.0.0.1", silent.port, ssl_options=_insecure_ctx()))
            conn = await loop.run_in_executor(None, silent.accept_one)
            with conn:
                assert (await loop.run_in_executor(None, conn.recv, 1)) == b"\x16"
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                while await loop.run_in_executor(None, conn.recv, 65536):
                    pass
        finally:
            client.close()
            silent.sock.close()

    asyncio.run(main())


# --- the Happy Eyeballs state machine, with a scripted connect function ------------------


class _FakeStream:
    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.closed = False

    def close(self) -> None:
        self.closed = True


class _Script:
    """A connect function whose attempts the test completes by hand."""

    def __init__(self, sync_failures: tuple[str, ...] = ()) -> None:
        self.attempts: dict[str, asyncio.Future[_FakeStream]] = {}
        self.streams: dict[str, _FakeStream] = {}
        self.sync_failures = sync_failures

    def __call__(self, af: int, addr: str) -> tuple[_FakeStream, asyncio.Future[_FakeStream]]:
        if addr in self.sync_failures:
            raise OSError(f"cannot create socket for {addr}")
        stream = self.streams[addr] = _FakeStream(addr)
        future = self.attempts[addr] = asyncio.get_running_loop().create_future()
        return stream, future

    def pending(self) -> list[str]:
        return sorted(a for a, f in self.attempts.items() if not f.done())

    async def succeed(self, addr: str) -> None:
        self.attempts[addr].set_result(self.streams[addr])
        await asyncio.sleep(0)

    async def fail(self, addr: str) -> None:
        self.attempts[addr].set_exception(ConnectionRefusedError(f"refused by {addr}"))
        await asyncio.sleep(0)


_ADDRS = [(1, "a"), (1, "b"), (2, "c"), (2, "d")]


def test_split_keeps_order_per_family() -> None:
    assert _Connector.split([(1, "a"), (2, "b"), (1, "c"), (3, "d")]) == ([(1, "a"), (1, "c")], [(2, "b"), (3, "d")])
    assert _Connector.split([]) == ([], [])


def test_format_addr() -> None:
    assert _format_addr(("1.2.3.4", 443)) == "1.2.3.4:443"
    assert _format_addr(("::1", 443, 0, 0)) == "[::1]:443"
    assert _format_addr("/tmp/sock") == "/tmp/sock"


def test_connector_primary_first_then_secondary_after_delay() -> None:
    async def main() -> None:
        script = _Script()
        future = _Connector(_ADDRS, script).start(timeout=0.05)
        assert script.pending() == ["a"]
        await asyncio.sleep(0.1)
        assert script.pending() == ["a", "c"]
        await script.succeed("c")
        assert future.result() == (2, "c", script.streams["c"])
        # The loser is closed, the winner is not.
        assert script.streams["a"].closed and not script.streams["c"].closed
        # A late success of the loser closes its stream and starts nothing.
        await script.succeed("a")
        assert script.pending() == [] and "b" not in script.attempts

    asyncio.run(main())


def test_connector_failure_starts_secondary_immediately_and_reports_last_error() -> None:
    async def main() -> None:
        script = _Script()
        future = _Connector(_ADDRS, script).start(timeout=3600)
        await script.fail("a")
        assert script.pending() == ["b", "c"]
        assert script.streams["a"].closed
        for addr in ("b", "c", "d"):
            await script.fail(addr)
        with pytest.raises(ConnectionRefusedError, match="refused by d"):
            future.result()

    asyncio.run(main())


def test_connector_synchronous_failures() -> None:
    async def main() -> None:
        script = _Script(sync_failures=("a", "b"))
        future = _Connector(_ADDRS, script).start(timeout=3600)
        assert script.pending() == ["c"]
        await script.succeed("c")
        assert future.result()[1] == "c"

        script = _Script(sync_failures=("a", "b", "c", "d"))
        future = _Connector(_ADDRS, script).start(timeout=3600)
        assert future.done()
        with pytest.raises(OSError, match="cannot create socket"):
            future.result()

    asyncio.run(main())


def test_connector_connect_timeout_names_pending_attempts() -> None:
    async def main() -> None:
        script = _Script()
        loop = asyncio.get_running_loop()
        future = _Connector(_ADDRS, script).start(timeout=0.01, connect_timeout=loop.time() + 0.1)
        await script.fail("a")
        with pytest.raises(TimeoutError) as info:
            await future
        assert str(info.value) == "Timeout while connecting to b, c"
        assert all(s.closed for s in script.streams.values())

    asyncio.run(main())


def test_connector_cancelled_attempts_and_cancelled_result() -> None:
    async def main() -> None:
        script = _Script()
        future = _Connector([(1, "a"), (2, "c")], script).start(timeout=3600)
        script.attempts["a"].cancel()
        await asyncio.sleep(0)
        assert script.pending() == ["c"]
        script.attempts["c"].cancel()
        await asyncio.sleep(0)
        # All attempts cancelled: an ordinary connection error, not CancelledError.
        assert isinstance(future.exception(), OSError)
        assert script.streams["a"].closed and script.streams["c"].closed

        script = _Script()
        future = _Connector(_ADDRS, script).start(timeout=0)
        await asyncio.sleep(0.01)
        assert script.pending() == ["a", "c"]
        future.cancel()
        await asyncio.sleep(0)
        assert script.streams["a"].closed and script.streams["c"].closed

    asyncio.run(main())
