"""Tests for squall.netutil: listening sockets, accept handlers, resolvers, TLS contexts."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading

import pytest

from squall.netutil import (
    BlockingResolver,
    DefaultExecutorResolver,
    DefaultLoopResolver,
    ExecutorResolver,
    OverrideResolver,
    Resolver,
    ThreadedResolver,
    add_accept_handler,
    bind_sockets,
    bind_unix_socket,
    is_valid_ip,
    ssl_options_to_context,
    ssl_wrap_socket,
)


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


def _close(sockets: list[socket.socket]) -> None:
    for s in sockets:
        s.close()


# --- bind_sockets -------------------------------------------------------------


def test_bind_sockets_localhost_listens_nonblocking_with_reuseaddr() -> None:
    sockets = bind_sockets(0, "localhost")
    try:
        assert sockets
        port = sockets[0].getsockname()[1]
        assert port != 0
        for s in sockets:
            assert s.getsockname()[1] == port
            assert s.getblocking() is False
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        _close(sockets)


@needs_ipv6
def test_bind_sockets_all_interfaces_is_dual_stack_on_one_port() -> None:
    sockets = bind_sockets(0, None)
    try:
        families = {s.family for s in sockets}
        assert families >= {socket.AF_INET, socket.AF_INET6}
        port = sockets[0].getsockname()[1]
        assert all(s.getsockname()[1] == port for s in sockets)
        for s in sockets:
            if s.family == socket.AF_INET6:
                # IPv6-only, otherwise the IPv4 socket on the same port clashes.
                assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        for host, family in (("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)):
            with socket.socket(family) as c:
                c.settimeout(5)
                c.connect((host, port))
    finally:
        _close(sockets)


@needs_ipv6
def test_bind_sockets_family_restricts_result() -> None:
    v4 = bind_sockets(0, None, family=socket.AF_INET)
    v6 = bind_sockets(0, "::1", family=socket.AF_INET6)
    try:
        assert {s.family for s in v4} == {socket.AF_INET}
        assert [s.family for s in v6] == [socket.AF_INET6]
        assert v6[0].getsockname()[0] == "::1"
    finally:
        _close(v4 + v6)


def test_bind_sockets_empty_address_means_all_interfaces() -> None:
    sockets = bind_sockets(0, "", family=socket.AF_INET)
    try:
        assert [s.getsockname()[0] for s in sockets] == ["0.0.0.0"]
    finally:
        _close(sockets)


def test_bind_sockets_backlog_is_applied() -> None:
    # With listen(0) Linux queues at most one connection; a second connect
    # hangs, which proves the backlog argument reached listen().
    sockets = bind_sockets(0, "127.0.0.1", backlog=0)
    port = sockets[0].getsockname()[1]
    clients = []
    try:
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            clients.append(c)
            c.connect_ex(("127.0.0.1", port))
        _, writable, _ = __import__("select").select([], clients, [], 0.5)
        assert 0 < len(writable) < len(clients)
    finally:
        _close(clients + sockets)


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_bind_sockets_reuse_port_shares_port() -> None:
    first = bind_sockets(0, "127.0.0.1", reuse_port=True)
    port = first[0].getsockname()[1]
    try:
        second = bind_sockets(port, "127.0.0.1", reuse_port=True)
        try:
            assert second[0].getsockname()[1] == port
            assert second[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
        finally:
            _close(second)
        # Without SO_REUSEPORT on the new socket the port is busy.
        with pytest.raises(OSError) as info:
            bind_sockets(port, "127.0.0.1")
        assert info.value.errno == errno.EADDRINUSE
    finally:
        _close(first)


@pytest.mark.parametrize("port", [-1, 65536, "80", 1.5, True])
def test_bind_sockets_rejects_bad_port(port: object) -> None:
    with pytest.raises(ValueError, match="port"):
        bind_sockets(port, "127.0.0.1")  # type: ignore[arg-type]


# --- bind_unix_socket ----------------------------------------------------------


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no unix sockets")
def test_bind_unix_socket(tmp_path) -> None:
    path = str(tmp_path / "s.sock")
    sock = bind_unix_socket(path)
    try:
        assert sock.getblocking() is False
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with socket.socket(socket.AF_UNIX) as c:
            c.settimeout(5)
            c.connect(path)
    finally:
        sock.close()
    # A stale socket file from a previous run is replaced, with the new mode.
    sock = bind_unix_socket(path, mode=0o660)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    finally:
        sock.close()


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no unix sockets")
def test_bind_unix_socket_refuses_to_delete_regular_file(tmp_path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("keep me")
    with pytest.raises(ValueError, match="data.txt"):
        bind_unix_socket(str(path))
    assert path.read_text() == "keep me"


# --- add_accept_handler --------------------------------------------------------


def test_add_accept_handler_accepts_and_removes() -> None:
    async def main() -> None:
        [listener] = bind_sockets(0, "127.0.0.1")
        port = listener.getsockname()[1]
        accepted: list[tuple[socket.socket, object]] = []
        got_two = asyncio.Event()

        def on_accept(conn: socket.socket, address: object) -> None:
            accepted.append((conn, address))
            if len(accepted) == 2:
                got_two.set()

        remove = add_accept_handler(listener, on_accept)
        loop = asyncio.get_running_loop()
        clients = []
        try:
            for _ in range(2):
                c = socket.socket()
                c.setblocking(False)
                await loop.sock_connect(c, ("127.0.0.1", port))
                clients.append(c)
            await asyncio.wait_for(got_two.wait(), 5)
            for (conn, address), client in zip(accepted, clients):
                assert address == client.getsockname()
                conn.sendall(b"hi")
                assert await loop.sock_recv(client, 2) == b"hi"
            remove()
            remove()  # idempotent
            late = socket.socket()
            late.setblocking(False)
            clients.append(late)
            await loop.sock_connect(late, ("127.0.0.1", port))
            await asyncio.sleep(0.05)
            assert len(accepted) == 2
        finally:
            _close(clients + [conn for conn, _ in accepted] + [listener])

    asyncio.run(main())


def test_add_accept_handler_remove_inside_callback_stops_at_once() -> None:
    async def main() -> None:
        [listener] = bind_sockets(0, "127.0.0.1")
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        accepted: list[socket.socket] = []
        done = asyncio.Event()

        def on_accept(conn: socket.socket, address: object) -> None:
            accepted.append(conn)
            remove()
            done.set()

        remove = add_accept_handler(listener, on_accept)
        try:
            await asyncio.wait_for(done.wait(), 5)
            await asyncio.sleep(0.05)
            assert len(accepted) == 1
        finally:
            _close(clients + accepted + [listener])

    asyncio.run(main())


# --- is_valid_ip ---------------------------------------------------------------


@pytest.mark.parametrize("ip", ["127.0.0.1", "4.4.4.4", "::1", "2620:0:1cfe:face:b00c::3", "::ffff:1.2.3.4"])
def test_is_valid_ip_accepts(ip: str) -> None:
    assert is_valid_ip(ip)


@pytest.mark.parametrize(
    "ip", ["www.google.com", "localhost", "4.4.4.4<", " 127.0.0.1", "", " ", "\n", "\x00", "a" * 100, "1.2.3.4\x00", "ünï"]
)
def test_is_valid_ip_rejects(ip: str) -> None:
    assert not is_valid_ip(ip)


# --- resolvers -----------------------------------------------------------------


def test_default_resolver_is_loop_resolver() -> None:
    assert type(Resolver()) is DefaultLoopResolver
    assert isinstance(Resolver(), Resolver)


def _resolve(resolver: Resolver, host: str, port: int, family: int = socket.AF_UNSPEC) -> list:
    async def main() -> list:
        return await resolver.resolve(host, port, family)  # type: ignore[arg-type]

    return asyncio.run(main())


@pytest.mark.parametrize(
    "make",
    [DefaultLoopResolver, DefaultExecutorResolver, BlockingResolver, ThreadedResolver, ExecutorResolver],
)
def test_resolvers_resolve_localhost(make: type[Resolver]) -> None:
    resolver = make()
    try:
        result = _resolve(resolver, "localhost", 80)
        assert (socket.AF_INET, ("127.0.0.1", 80)) in result or (socket.AF_INET6, ("::1", 80, 0, 0)) in result
        # One entry per address: SOCK_STREAM only.
        assert len(result) == len(set(result))
        assert _resolve(resolver, "127.0.0.1", 443, socket.AF_INET) == [(socket.AF_INET, ("127.0.0.1", 443))]
    finally:
        resolver.close()


def test_resolver_error_is_oserror(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: object, **kwargs: object) -> list:
        raise socket.gaierror(socket.EAI_NONAME, "lookup failed")

    for make in (BlockingResolver, ThreadedResolver, DefaultExecutorResolver):
        resolver = make()
        with monkeypatch.context() as m:
            m.setattr(socket, "getaddrinfo", failing)
            with pytest.raises(OSError, match="lookup failed"):
                _resolve(resolver, "example.invalid", 80)
        resolver.close()
    with pytest.raises(OSError):
        _resolve(DefaultLoopResolver(), "name with spaces.invalid", 80)


def test_threaded_resolver_shares_one_pool() -> None:
    a, b = ThreadedResolver(), ThreadedResolver(num_threads=3)
    assert a.executor is b.executor is ThreadedResolver._threadpool
    a.close()
    # close() must not shut the shared pool down.
    assert _resolve(b, "127.0.0.1", 1) == [(socket.AF_INET, ("127.0.0.1", 1))]


def test_executor_resolver_closes_its_executor_only_when_asked() -> None:
    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(1)
    ExecutorResolver(executor=pool, close_executor=False).close()
    assert pool.submit(lambda: 7).result() == 7
    ExecutorResolver(executor=pool).close()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: 7)


def test_override_resolver_precedence() -> None:
    mapping = {
        "example.com": "127.0.0.1",
        ("example.com", 443): ("127.0.0.2", 8443),
        ("example.com", 443, socket.AF_INET6): ("::1", 9443),
    }
    resolver = OverrideResolver(BlockingResolver(), mapping)
    assert _resolve(resolver, "example.com", 80) == [(socket.AF_INET, ("127.0.0.1", 80))]
    assert _resolve(resolver, "example.com", 443) == [(socket.AF_INET, ("127.0.0.2", 8443))]
    assert _resolve(resolver, "example.com", 443, socket.AF_INET6) == [(socket.AF_INET6, ("::1", 9443, 0, 0))]
    assert _resolve(resolver, "127.0.0.3", 1) == [(socket.AF_INET, ("127.0.0.3", 1))]
    resolver.close()


# --- TLS -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl command not available to make a test certificate")
    d = tmp_path_factory.mktemp("cert")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_ssl_options_to_context_passes_contexts_through() -> None:
    context = ssl.create_default_context()
    assert ssl_options_to_context(context) is context


def test_ssl_options_to_context_rejects_unknown_keys_by_name() -> None:
    with pytest.raises(ValueError, match="bogus"):
        ssl_options_to_context({"certfile": "x", "bogus": 1})
    with pytest.raises(TypeError):
        ssl_options_to_context(["certfile"])  # type: ignore[arg-type]


def test_ssl_options_to_context_sides() -> None:
    server = ssl_options_to_context({}, server_side=True)
    assert server.protocol == ssl.PROTOCOL_TLS_SERVER
    client = ssl_options_to_context({}, server_side=False)
    assert client.protocol == ssl.PROTOCOL_TLS_CLIENT
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    relaxed = ssl_options_to_context({"cert_reqs": ssl.CERT_NONE}, server_side=False)
    assert relaxed.verify_mode == ssl.CERT_NONE and not relaxed.check_hostname
    unknown_side = ssl_options_to_context({})
    assert unknown_side.verify_mode == ssl.CERT_NONE
    for context in (server, client, relaxed, unknown_side):
        assert context.options & ssl.OP_NO_COMPRESSION


def test_ssl_options_to_context_loads_files(cert_files: tuple[str, str]) -> None:
    cert, key = cert_files
    context = ssl_options_to_context(
        {"certfile": cert, "keyfile": key, "ca_certs": cert, "cert_reqs": ssl.CERT_REQUIRED, "ciphers": "HIGH"},
        server_side=True,
    )
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.cert_store_stats()["x509"] == 1
    with pytest.raises(FileNotFoundError):
        ssl_options_to_context({"certfile": cert + ".missing"}, server_side=True)


def test_ssl_wrap_socket_handshake(cert_files: tuple[str, str]) -> None:
    cert, key = cert_files
    [listener] = bind_sockets(0, "127.0.0.1")
    listener.setblocking(True)
    port = listener.getsockname()[1]
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(5)
        with ssl_wrap_socket(conn, {"certfile": cert, "keyfile": key}, server_side=True) as tls:
            received.append(tls.recv(5))
            tls.sendall(b"world")

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with ssl_wrap_socket(raw, {"ca_certs": cert}, server_hostname="localhost", server_side=False) as tls:
            assert tls.getpeercert()["subject"] == ((("commonName", "localhost"),),)
            tls.sendall(b"hello")
            assert tls.recv(5) == b"world"
    finally:
        thread.join(5)
        listener.close()
    assert received == [b"hello"]


def test_add_accept_handler_is_an_ioloop_handler() -> None:
    # Tornado code stops accepting with io_loop.remove_handler(sock).
    from squall.ioloop import IOLoop

    async def main() -> None:
        [listener] = bind_sockets(0, "127.0.0.1")
        accepted: list[socket.socket] = []
        add_accept_handler(listener, lambda conn, addr: accepted.append(conn))
        IOLoop.current().remove_handler(listener)
        client = socket.create_connection(listener.getsockname(), timeout=5)
        await asyncio.sleep(0.05)
        try:
            assert accepted == []
        finally:
            _close([client, listener])

    asyncio.run(main())


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_add_accept_handler_pauses_when_out_of_descriptors(tmp_path) -> None:
    # Run in a fresh interpreter: the test lowers RLIMIT_NOFILE.
    script = """
import asyncio, errno, logging, os, resource, socket, sys
logging.basicConfig(level=logging.ERROR, stream=sys.stderr, format="%(name)s %(message)s")
from squall.netutil import add_accept_handler, bind_sockets

async def main():
    [listener] = bind_sockets(0, "127.0.0.1")
    accepted = []
    add_accept_handler(listener, lambda conn, addr: accepted.append(conn))
    clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
    filler = []
    while True:
        try:
            filler.append(os.dup(0))
        except OSError as e:
            assert e.errno == errno.EMFILE
            break
    await asyncio.sleep(0.1)
    assert accepted == [], accepted
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for _ in range(100):
        if len(accepted) == 3:
            break
        await asyncio.sleep(0.05)
    print(len(accepted))

asyncio.run(main())
"""
    import squall

    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(squall.__file__))))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3"
    # Logged once, not once per loop iteration.
    assert result.stderr.count("squall.application Error accepting a connection") == 1, result.stderr
