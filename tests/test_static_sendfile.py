"""StaticFileHandler's sendfile path: a file larger than one chunk, on a plain
socket and without a transform that changes its bytes, is sent by the kernel
(``os.sendfile``) instead of being read and written through Python.

Every test runs a real HTTPServer on a loopback port, on the asyncio loop and
on uvloop, and reads the response from a real socket. A counting wrapper
around the real ``os.sendfile`` tells which path served the body.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import socket
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from squall import _http1server
from squall.httpserver import HTTPServer
from squall.web import Application, RequestHandler, StaticFileHandler

from _tls_support import SERVER_SSL, client_context, listen, loop_name, run  # noqa: F401

CHUNK = StaticFileHandler._CHUNK_SIZE
SOCKET_TIMEOUT = 10.0


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Byte counts asked of each os.sendfile call the server makes."""
    made: list[int] = []
    real = os.sendfile

    def counting(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        made.append(count)
        return real(out_fd, in_fd, offset, count)

    monkeypatch.setattr(_http1server, "_os_sendfile", counting)
    return made


@pytest.fixture
def files(tmp_path: Path) -> dict[str, bytes]:
    StaticFileHandler.reset()
    contents = {
        "big.bin": os.urandom(3 * 1024 * 1024 + 17),
        "small.bin": os.urandom(1000),
        "text.txt": b"".join(b"line %d of a long text file\n" % i for i in range(20000)),
    }
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    return contents


def app_for(tmp_path: Path, **settings: Any) -> Application:
    return Application(static_path=str(tmp_path), **settings)


def request(method: str, path: str, headers: Optional[dict[str, str]] = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: Any, pending: bytearray, slow: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length body from ``sock`` (bytes after it
    stay in ``pending``); ``slow`` reads in small pieces with pauses."""

    def more() -> None:
        data = sock.recv(65536 if slow else 1 << 20)
        if not data:
            raise ConnectionError("closed before the response ended")
        pending.extend(data)
        if slow:
            time.sleep(0.0005)

    while b"\r\n\r\n" not in pending:
        more()
    status, headers = parse_head(pending)
    length = int(headers.get("content-length", "0"))
    while len(pending) < length:
        more()
    body = bytes(pending[:length])
    del pending[:length]
    return status, headers, body


def parse_head(pending: bytearray) -> tuple[int, dict[str, str]]:
    """The status and headers (names lower-cased) of the complete head at
    the start of ``pending``, which is removed from it."""
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    pending[:] = rest
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers


async def in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)


def test_large_file_and_ranges_are_sent_by_the_kernel(
    tmp_path: Path, files: dict[str, bytes], calls: list[int], loop_name: str
) -> None:
    big = files["big.bin"]
    size = len(big)

    def client(port: int) -> list[tuple[int, dict[str, str], bytes]]:
        with connect(port) as sock:
            pending = bytearray()
            out = []
            # Several responses on one keep-alive connection, the last two
            # pipelined: each body must end exactly where the next begins.
            for headers in ({}, {"Range": "bytes=100-"}, {"Range": "bytes=-70000"}):
                sock.sendall(request("GET", "/static/big.bin", headers))
                out.append(read_response(sock, pending))
            sock.sendall(
                request("GET", "/static/big.bin", {"Range": "bytes=5-200004"})
                + request("GET", "/static/small.bin")
            )
            out.append(read_response(sock, pending))
            out.append(read_response(sock, pending))
            return out

    async def main() -> None:
        port = listen(HTTPServer(app_for(tmp_path)))
        whole, tail, suffix, middle, small = await in_thread(client, port)
        assert (whole[0], whole[2]) == (200, big)
        assert whole[1]["content-length"] == str(size)
        assert (tail[0], tail[2]) == (206, big[100:])
        assert tail[1]["content-range"] == f"bytes 100-{size - 1}/{size}"
        assert (suffix[0], suffix[2]) == (206, big[-70000:])
        assert (middle[0], middle[2]) == (206, big[5:200005])
        assert (small[0], small[2]) == (200, files["small.bin"])

    run(loop_name, main)
    # The four large bodies went through sendfile; the one-chunk file did not.
    assert calls, "sendfile was not used"
    assert sum(1 for c in calls if c in (size, size - 100, 70000, 200000)) >= 4
    assert all(c > CHUNK for c in calls if c in (size, size - 100, 70000, 200000))


def test_slow_reader_gets_every_byte_then_the_next_response(
    tmp_path: Path, files: dict[str, bytes], calls: list[int], loop_name: str
) -> None:
    # A client with a small receive buffer that reads slowly, and a file
    # larger than the kernel's largest send buffer (4 MiB by default), make
    # the socket fill up again and again: the server waits for it each time.
    big = os.urandom(12 * 1024 * 1024)
    (tmp_path / "two.bin").write_bytes(big)

    def client(port: int) -> tuple[Any, Any]:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.settimeout(SOCKET_TIMEOUT)
        sock.connect(("127.0.0.1", port))
        with sock:
            pending = bytearray()
            sock.sendall(request("GET", "/static/two.bin") + request("GET", "/static/small.bin"))
            first = read_response(sock, pending, slow=True)
            second = read_response(sock, pending)
            return first, second

    async def main() -> None:
        port = listen(HTTPServer(app_for(tmp_path)))
        first, second = await in_thread(client, port)
        assert (first[0], first[2]) == (200, big)
        assert (second[0], second[2]) == (200, files["small.bin"])

    run(loop_name, main)
    # Several calls: each one sends what the socket takes, the rest waits.
    assert len(calls) > 1


def test_client_that_hangs_up_mid_file_frees_the_connection(
    tmp_path: Path, calls: list[int], loop_name: str
) -> None:
    (tmp_path / "huge.bin").write_bytes(os.urandom(16 * 1024 * 1024))
    finished: list[bool] = []

    class Static(StaticFileHandler):
        def on_finish(self) -> None:
            finished.append(True)

    def client(port: int) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.settimeout(SOCKET_TIMEOUT)
        sock.connect(("127.0.0.1", port))
        sock.sendall(request("GET", "/f/huge.bin"))
        got = 0
        while got < 100_000:
            got += len(sock.recv(65536))
        # An abortive close (RST), like a browser tab closed mid-download.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()

    async def main() -> None:
        app = Application([(r"/f/(.*)", Static, {"path": str(tmp_path)})])
        server = HTTPServer(app)
        port = listen(server)
        fds_before = len(os.listdir("/proc/self/fd"))
        await in_thread(client, port)
        deadline = asyncio.get_running_loop().time() + SOCKET_TIMEOUT
        while (server._connections or not finished) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert finished == [True], "the handler never finished"
        assert not server._connections, "the connection was kept"
        # The duplicate socket descriptor and the file were closed.
        assert len(os.listdir("/proc/self/fd")) <= fds_before
        # And the server goes on serving.
        with connect(port) as sock:
            sock.sendall(request("GET", "/f/huge.bin", {"Range": "bytes=0-9"}))
            status, _, body = await in_thread(read_response, sock, bytearray())
        assert (status, len(body)) == (206, 10)

    run(loop_name, main)
    assert calls


def test_file_shorter_than_announced_drops_the_connection(
    tmp_path: Path, files: dict[str, bytes], calls: list[int], loop_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The file shrank after its size was read: the client must not take the
    # short body for a whole one.
    class Stale(StaticFileHandler):
        def get_content_size(self) -> int:
            return super().get_content_size() + 5000

    def client(port: int) -> bytes:
        with connect(port) as sock:
            sock.sendall(request("GET", "/f/big.bin"))
            received = bytearray()
            while True:
                data = sock.recv(1 << 20)
                if not data:
                    return bytes(received)
                received.extend(data)

    async def main() -> None:
        app = Application([(r"/f/(.*)", Stale, {"path": str(tmp_path)})])
        port = listen(HTTPServer(app))
        received = await in_thread(client, port)
        head, _, body = received.partition(b"\r\n\r\n")
        assert f"Content-Length: {len(files['big.bin']) + 5000}".encode() in head
        assert body == files["big.bin"]

    run(loop_name, main)
    assert calls
    assert "5000 bytes short" in caplog.text


def test_gzip_transform_and_tls_take_the_ordinary_path(
    tmp_path: Path, files: dict[str, bytes], calls: list[int], loop_name: str
) -> None:
    text = files["text.txt"]

    def plain(port: int) -> tuple[Any, Any]:
        with connect(port) as sock:
            pending = bytearray()
            sock.sendall(request("GET", "/static/text.txt", {"Accept-Encoding": "gzip"}))
            status, headers, _ = read_response_chunked(sock, pending)
            sock.sendall(request("GET", "/static/big.bin", {"Accept-Encoding": "gzip"}))
            return (status, headers, gzip.decompress(_)), read_response(sock, pending)

    def secure(port: int) -> Any:
        raw = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
        with client_context().wrap_socket(raw) as sock:
            sock.sendall(request("GET", "/static/big.bin"))
            return read_response(sock, bytearray())

    async def main() -> None:
        port = listen(HTTPServer(app_for(tmp_path, compress_response=True)))
        (status, headers, body), binary = await in_thread(plain, port)
        # Text is compressible: gzipped, so read and written by Python.
        assert (status, headers["content-encoding"], body) == (200, "gzip", text)
        # A binary type is not compressed: the kernel sends it (the first
        # call asks for the whole file: the text never went this way).
        assert (binary[0], binary[2]) == (200, files["big.bin"])
        assert "content-encoding" not in binary[1]
        assert calls and calls[0] == len(files["big.bin"])
        tls_port = listen(HTTPServer(app_for(tmp_path), ssl_options=SERVER_SSL))
        calls.clear()
        status, _, body = await in_thread(secure, tls_port)
        assert (status, body) == (200, files["big.bin"])
        # TLS encrypts in user space: no sendfile.
        assert calls == []

    run(loop_name, main)


def read_response_chunked(sock: Any, pending: bytearray) -> tuple[int, dict[str, str], bytes]:
    """A response with a chunked body (the gzip transform's)."""
    while b"\r\n\r\n" not in pending:
        pending.extend(sock.recv(65536))
    status, headers = parse_head(pending)
    assert headers["transfer-encoding"] == "chunked"
    body = bytearray()
    while True:
        while b"\r\n" not in pending:
            pending.extend(sock.recv(65536))
        size_line, _, _ = bytes(pending).partition(b"\r\n")
        size = int(size_line, 16)
        need = len(size_line) + 2 + size + 2
        while len(pending) < need:
            pending.extend(sock.recv(65536))
        body.extend(pending[len(size_line) + 2 : len(size_line) + 2 + size])
        del pending[:need]
        if size == 0:
            return status, headers, bytes(body)


def test_overridden_reader_and_head_do_not_use_sendfile(
    tmp_path: Path, files: dict[str, bytes], calls: list[int], loop_name: str
) -> None:
    class Upper(StaticFileHandler):
        @classmethod
        def get_content(cls, abspath: str, start: Optional[int] = None, end: Optional[int] = None) -> Any:
            for piece in super().get_content(abspath, start, end):
                yield piece.upper()

    class Plain(RequestHandler):
        def get(self) -> None:
            self.write("ok")

    def client(port: int) -> tuple[Any, Any, Any]:
        with connect(port) as sock:
            pending = bytearray()
            sock.sendall(request("GET", "/u/text.txt"))
            upper = read_response(sock, pending)
            sock.sendall(request("HEAD", "/static/big.bin"))
            head = read_response_head_only(sock, pending)
            sock.sendall(request("GET", "/plain"))
            return upper, head, read_response(sock, pending)

    async def main() -> None:
        app = Application(
            [(r"/u/(.*)", Upper, {"path": str(tmp_path)}), (r"/plain", Plain)],
            static_path=str(tmp_path),
        )
        port = listen(HTTPServer(app))
        upper, head, plain = await in_thread(client, port)
        assert (upper[0], upper[2]) == (200, files["text.txt"].upper())
        assert head[0] == 200 and head[1]["content-length"] == str(len(files["big.bin"]))
        assert (plain[0], plain[2]) == (200, b"ok")

    run(loop_name, main)
    assert calls == []


def read_response_head_only(sock: Any, pending: bytearray) -> tuple[int, dict[str, str]]:
    while b"\r\n\r\n" not in pending:
        pending.extend(sock.recv(65536))
    return parse_head(pending)


def test_unix_socket_is_served_by_sendfile_too(
    tmp_path: Path, files: dict[str, bytes], calls: list[int], loop_name: str
) -> None:
    from squall.netutil import bind_unix_socket

    path = str(tmp_path / "s.sock")

    def client() -> Any:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(SOCKET_TIMEOUT)
            sock.connect(path)
            sock.sendall(request("GET", "/static/big.bin"))
            return read_response(sock, bytearray())

    async def main() -> None:
        server = HTTPServer(app_for(tmp_path))
        server.add_socket(bind_unix_socket(path))
        try:
            status, _, body = await in_thread(client)
        finally:
            server.stop()
            await server.close_all_connections()
        assert (status, body) == (200, files["big.bin"])

    run(loop_name, main)
    assert calls
