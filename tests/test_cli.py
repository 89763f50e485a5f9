"""The ``squall`` command line: argument errors, loading targets, and serving
them in real subprocesses (one process, workers, reload, TLS, loops)."""

from __future__ import annotations

import http.client
import logging
import os
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
import pytest

import squall
from squall import cli

SRC = str(Path(squall.__file__).resolve().parent.parent)
CERT_DIR = Path(squall.__file__).resolve().parent / "test"
# Generous bounds for a loaded 2-core machine; each loop below ends as soon
# as its condition holds, so a healthy run takes a fraction of them.
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0

APP_SOURCE = '''
import asyncio
import os

import squall.process
import squall.web
from squall.iostream import StreamClosedError
from squall.tcpserver import TCPServer


class PidHandler(squall.web.RequestHandler):
    def get(self):
        self.write(str(os.getpid()))


class LoopHandler(squall.web.RequestHandler):
    def get(self):
        self.write(type(asyncio.get_running_loop()).__module__)


class TaskHandler(squall.web.RequestHandler):
    def get(self):
        self.write(repr(squall.process.task_id()))


class CrashHandler(squall.web.RequestHandler):
    def get(self):
        os._exit(7)


def _handlers():
    return [
        (r"/", PidHandler),
        (r"/loop", LoopHandler),
        (r"/task", TaskHandler),
        (r"/crash", CrashHandler),
    ]


app = squall.web.Application(_handlers())


def make_app():
    return squall.web.Application(_handlers())


async def make_app_async():
    await asyncio.sleep(0)
    return squall.web.Application(_handlers())


def make_nothing():
    return 42


def make_broken():
    raise RuntimeError("the factory failed")


class EchoLine(TCPServer):
    async def handle_stream(self, stream, address):
        try:
            line = await stream.read_until(b"\\n")
            await stream.write(b"echo " + line)
        except StreamClosedError:
            pass
        stream.close()


def make_echo():
    return EchoLine()


not_servable = "a string"
'''


@pytest.fixture(autouse=True)
def _restore_process_state() -> Iterator[None]:
    # cli.main configures logging for the process it runs in; the tests that
    # call it in this process must not leave that configuration to others.
    # The same goes for the loop choice, sys.path and the imported target.
    root = logging.getLogger()
    access = logging.getLogger("squall.access")
    saved = (root.level, list(root.handlers), access.level)
    saved_loop = os.environ.get("SQUALL_LOOP")
    saved_path = list(sys.path)
    try:
        yield
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        access.setLevel(saved[2])
        if saved_loop is None:
            os.environ.pop("SQUALL_LOOP", None)
        else:
            os.environ["SQUALL_LOOP"] = saved_loop
        sys.path[:] = saved_path
        sys.modules.pop("cliapp", None)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "cliapp.py").write_text(APP_SOURCE)
    (tmp_path / "boom.py").write_text("raise RuntimeError('boom while importing')\n")
    (tmp_path / "needs_missing.py").write_text("import squall_no_such_dependency\napp = None\n")
    return tmp_path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("SQUALL_LOOP", None)
    return env


class Server:
    """``python -m squall run ...`` in a subprocess, on a port it picked."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "squall", "run", "--port", "0", *args],
            cwd=cwd,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.output = b""
        self._selector = selectors.DefaultSelector()
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), False)
        self._selector.register(self.proc.stderr, selectors.EVENT_READ)
        line = self.wait_for_output(b"serving ")
        self.address = line.split(b" on ", 1)[1].split(b" ", 1)[0].decode()
        self.port = int(self.address.rsplit(":", 1)[1])

    def _read_some(self, timeout: float) -> bool:
        assert self.proc.stderr is not None
        if not self._selector.select(timeout):
            return True
        chunk = self.proc.stderr.read()
        if not chunk:
            return False
        self.output += chunk
        return True

    def wait_for_output(self, marker: bytes, timeout: float = STARTUP_TIMEOUT) -> bytes:
        """Return the first line of stderr containing ``marker``."""
        deadline = time.monotonic() + timeout
        while marker not in self.output:
            if time.monotonic() > deadline or not self._read_some(min(0.2, max(0.0, deadline - time.monotonic()))):
                self.kill()
                raise AssertionError(f"no {marker!r} in the server's output:\n{self.output.decode(errors='replace')}")
        start = self.output.rfind(b"\n", 0, self.output.index(marker)) + 1
        end = self.output.find(b"\n", start)
        return self.output[start : end if end >= 0 else None]

    def get(self, path: str = "/", tls: bool = False) -> tuple[int, str]:
        conn: http.client.HTTPConnection
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=context)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT)
        finally:
            self.kill()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        while self._read_some(0):
            if self.proc.stderr is None or self.proc.stderr.closed:
                break
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            self._selector.close()
            self.proc.stderr.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _distinct_pids(server: Server, wanted: int, attempts: int = 200) -> set[int]:
    pids: set[int] = set()
    for _ in range(attempts):
        status, body = server.get("/")
        assert status == 200
        pids.add(int(body))
        if len(pids) >= wanted:
            break
    return pids


def _run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    err = capsys.readouterr().err
    return code, err


# --- the command line itself (in this process: nothing gets served) ---------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"squall {squall.version}"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run_main(capsys)
    assert code == 2
    assert "run" in err


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--port", "http"], "argument --port"),
        (["--port", "70000"], "argument --port"),
        (["--processes", "-1"], "argument --processes"),
        (["--processes", "two"], "argument --processes"),
        (["--loop", "trio"], "argument --loop"),
        (["--log-level", "loud"], "argument --log-level"),
        (["--keyfile", "key.pem"], "argument --keyfile"),
        (["--certfile", "no-such-cert.pem"], "argument --certfile"),
        (["--reload", "--processes", "2"], "argument --reload"),
        (["--app-dir", "no-such-dir"], "argument --app-dir"),
    ],
)
def test_bad_argument_is_one_line_naming_it(
    capsys: pytest.CaptureFixture[str],
    app_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    named: str,
) -> None:
    monkeypatch.chdir(app_dir)
    code, err = _run_main(capsys, "run", *argv, "cliapp:app")
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith("squall run: error: ") and named in err, err
    assert "Traceback" not in err


def test_certificate_that_does_not_load(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Checked before the target is imported, so the target need not exist.
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    code, err = _run_main(capsys, "run", "--certfile", str(bogus), "cliapp:app")
    assert code == 2
    assert "argument --certfile: cannot load" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "target, message",
    [
        ("squall_no_such_module:app", "no module named 'squall_no_such_module'"),
        ("squall_no_such_package.sub:app", "no module named 'squall_no_such_package.sub'"),
        ("cliapp:nope", "module 'cliapp' has no attribute 'nope'"),
        ("cliapp:app.nope", "module 'cliapp' has no attribute 'app.nope'"),
        ("cliapp", "is not MODULE:ATTRIBUTE"),
        ("cliapp:", "is not MODULE:ATTRIBUTE"),
        ("missing/app.py:app", "no such file: 'missing/app.py'"),
        ("cliapp:not_servable", "expected an Application"),
    ],
)
def test_bad_target_is_one_line_naming_it(
    capsys: pytest.CaptureFixture[str], app_dir: Path, monkeypatch: pytest.MonkeyPatch, target: str, message: str
) -> None:
    monkeypatch.chdir(app_dir)
    code, err = _run_main(capsys, "run", target)
    assert code == 2
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_load_target_resolves_dotted_attributes(app_dir: Path) -> None:
    handler = cli.load_target("cliapp:PidHandler.get", str(app_dir))
    assert handler.__qualname__ == "PidHandler.get"
    by_path = cli.load_target(f"{app_dir / 'cliapp.py'}:make_app")
    assert by_path.__module__ == "cliapp"


def test_usage_error_is_raised_by_load_target() -> None:
    with pytest.raises(cli.UsageError, match="no module named 'squall_absent'"):
        cli.load_target("squall_absent:app")


# --- import failures of the application's own code get their traceback -----


def _run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "squall", "run", "--port", "0", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
    )


def test_module_raising_on_import_shows_its_traceback(app_dir: Path) -> None:
    result = _run_cli(app_dir, "boom:app")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "boom while importing" in result.stderr


def test_missing_dependency_of_the_app_is_not_mistaken_for_the_target(app_dir: Path) -> None:
    result = _run_cli(app_dir, "needs_missing:app")
    assert result.returncode == 1
    assert "squall_no_such_dependency" in result.stderr and "Traceback" in result.stderr


def test_factory_returning_the_wrong_thing(app_dir: Path) -> None:
    result = _run_cli(app_dir, "cliapp:make_nothing")
    assert result.returncode == 2
    assert "cliapp:make_nothing() returned 42" in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_is_reported_in_one_line(app_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "squall", "run", "--port", str(port), "cliapp:app"],
            cwd=app_dir,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=STARTUP_TIMEOUT,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


# --- serving -----------------------------------------------------------------


def test_serves_an_application_object_and_stops_on_sigterm(app_dir: Path) -> None:
    server = Server(app_dir, "cliapp:app")
    try:
        assert server.address.startswith("http://127.0.0.1:")
        assert server.get("/") == (200, str(server.proc.pid))
        assert server.get("/task") == (200, "None")
    finally:
        code = server.stop()
    assert code == 0
    # No --access-log: requests are not logged.
    assert b"GET /" not in server.output


def test_serves_a_factory_from_a_file_path_with_access_log(app_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server = Server(elsewhere, str(app_dir / "cliapp.py") + ":make_app_async", "--access-log", "--loop", "asyncio")
    try:
        assert server.get("/loop") == (200, "asyncio.unix_events")
        server.wait_for_output(b"200 GET /loop")
    finally:
        assert server.stop(signal.SIGINT) == 0


def test_default_loop_is_uvloop_when_installed(app_dir: Path) -> None:
    pytest.importorskip("uvloop")
    server = Server(app_dir, "cliapp:make_app")
    try:
        assert b"uvloop)" in server.output
        assert server.get("/loop") == (200, "uvloop")
    finally:
        server.stop()


def test_factory_that_raises_fails_with_its_traceback(app_dir: Path) -> None:
    result = _run_cli(app_dir, "cliapp:make_broken")
    assert result.returncode == 1
    assert "the factory failed" in result.stderr and "Traceback" in result.stderr


def test_tls(app_dir: Path) -> None:
    # On the asyncio loop: with uvloop, SSLIOStream's server handshake
    # currently fails for most clients (an iostream bug, reported).
    server = Server(
        app_dir,
        "cliapp:app",
        "--loop",
        "asyncio",
        "--certfile",
        str(CERT_DIR / "test.crt"),
        "--keyfile",
        str(CERT_DIR / "test.key"),
    )
    try:
        assert server.address.startswith("https://127.0.0.1:")
        assert b"TLS)" in server.output
        assert server.get("/", tls=True) == (200, str(server.proc.pid))
    finally:
        server.stop()


def test_serves_a_tcp_server_factory(app_dir: Path) -> None:
    server = Server(app_dir, "cliapp:make_echo")
    try:
        # A factory's product is unknown until a worker calls it: no scheme.
        assert server.address.startswith("127.0.0.1:")
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"hello\n")
            received = b""
            while True:
                chunk = sock.recv(1024)
                if not chunk:
                    break
                received += chunk
        assert received == b"echo hello\n"
    finally:
        server.stop()


def test_two_workers_answer_and_leave_nothing_behind(app_dir: Path) -> None:
    server = Server(app_dir, "cliapp:make_app", "--processes", "2")
    try:
        assert b"2 workers" in server.output
        pids = _distinct_pids(server, 2)
        assert len(pids) == 2, pids
        assert server.proc.pid not in pids
        tasks = set()
        for _ in range(200):
            tasks.add(server.get("/task")[1])
            if len(tasks) == 2:
                break
        assert tasks == {"0", "1"}
    finally:
        code = server.stop()
    assert code == 0
    for pid in pids:
        assert not _alive(pid), f"worker {pid} outlived its supervisor"


def test_crashed_worker_is_replaced(app_dir: Path) -> None:
    server = Server(app_dir, "cliapp:make_app", "--processes", "2")
    try:
        pids = _distinct_pids(server, 2)
        assert len(pids) == 2
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            server.get("/crash")
        server.wait_for_output(b"exited with status 7; restarting it")
        deadline = time.monotonic() + STARTUP_TIMEOUT
        current: set[int] = set()
        while len(current) < 2 or current <= pids:
            assert time.monotonic() < deadline, (pids, current)
            current |= {int(server.get("/")[1])}
            current = {pid for pid in current if _alive(pid)}
        assert len(current - pids) == 1
    finally:
        assert server.stop() == 0
    for pid in pids | current:
        assert not _alive(pid)


def test_workers_stop_when_the_supervisor_is_killed(app_dir: Path) -> None:
    server = Server(app_dir, "cliapp:make_app", "--processes", "2")
    try:
        pids = _distinct_pids(server, 2)
        assert len(pids) == 2
        server.proc.kill()
        server.proc.wait()
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(_alive(pid) for pid in pids):
            assert time.monotonic() < deadline, "orphaned workers kept running"
            time.sleep(0.1)
    finally:
        server.kill()
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_reload_restarts_on_source_change(app_dir: Path) -> None:
    module = app_dir / "reloadable.py"
    template = textwrap.dedent(
        """
        import squall.web

        class Handler(squall.web.RequestHandler):
            def get(self):
                self.write({body!r})

        app = squall.web.Application([(r"/", Handler)])
        """
    )
    module.write_text(template.format(body="first"))
    server = Server(app_dir, "reloadable:app", "--reload")
    try:
        assert server.get("/") == (200, "first")
        # A different size as well as a new mtime, whatever the clock's
        # resolution.
        module.write_text(template.format(body="second version"))
        stat = module.stat()
        os.utime(module, (stat.st_atime, stat.st_mtime + 2))
        # The restarted process binds a new port (--port 0); read it from
        # the second "serving" line.
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while server.output.count(b"serving ") < 2:
            assert time.monotonic() < deadline, server.output
            server._read_some(0.2)
        second = server.output[server.output.rindex(b"serving ") :].split(b"\n", 1)[0]
        server.port = int(second.split(b" on ", 1)[1].split(b" ", 1)[0].rsplit(b":", 1)[1])
        assert server.get("/") == (200, "second version")
    finally:
        server.stop()
