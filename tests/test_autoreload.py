"""squall.autoreload: real processes that restart when their source changes."""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Optional

import pytest

from squall import autoreload

SRC = str(Path(__file__).resolve().parent.parent / "src")
# Generous for a loaded 2-core machine: a restart is a fresh interpreter.
DEADLINE = 30.0

APP = """\
import asyncio
import sys

import squall.autoreload
import greeting

squall.autoreload.add_reload_hook(lambda: print("hook ran", flush=True))


async def main():
    squall.autoreload.start(check_time=50)
    # Only now is the source's current state noted: an edit from here on counts.
    print("says", greeting.WORD, flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
"""


SERVER = """\
import asyncio

import squall.web
from squall.httpserver import HTTPServer
from squall.netutil import bind_sockets

import view


class Answer(squall.web.RequestHandler):
    def get(self):
        self.write(view.answer())


async def main():
    app = squall.web.Application([("/", Answer)], debug=True)
    sockets = bind_sockets(0, "127.0.0.1")
    HTTPServer(app).add_sockets(sockets)
    print("listening", sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
"""


class _Lines:
    """Lines of a child's stream, read by a thread so that waits can time out."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[Optional[str]] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str) -> str:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"never saw {text!r}; got {self.seen!r}")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _edit(path: Path, text: str) -> None:
    """Rewrite ``path`` with a modification time that surely differs (file
    systems with coarse timestamps would otherwise hide a quick edit)."""
    before = path.stat().st_mtime if path.exists() else 0.0
    path.write_text(textwrap.dedent(text))
    os.utime(path, (before + 2, before + 2))


def _start(args: list[str], cwd: Path) -> tuple[subprocess.Popen[str], _Lines, _Lines]:
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, _Lines(proc.stdout), _Lines(proc.stderr)  # type: ignore[arg-type]


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(timeout=DEADLINE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()


@pytest.mark.parametrize("mode", ["script", "module"])
def test_restarts_on_change_and_survives_syntax_error(tmp_path: Path, mode: str) -> None:
    (tmp_path / "greeting.py").write_text('WORD = "one"\n')
    if mode == "script":
        (tmp_path / "app.py").write_text(APP)
        args = ["app.py"]
    else:
        (tmp_path / "app").mkdir()
        (tmp_path / "app" / "__init__.py").write_text("")
        (tmp_path / "app" / "__main__.py").write_text(APP)
        args = ["-m", "app"]
    proc, out, err = _start(args, tmp_path)
    try:
        out.wait_for("says one")
        _edit(tmp_path / "greeting.py", 'WORD = "two"\n')
        out.wait_for("hook ran")
        out.wait_for("says two")

        # A half-typed edit: the process keeps running the previous code.
        _edit(tmp_path / "greeting.py", 'WORD = "three\n')
        line = err.wait_for("serving the previous code")
        assert "greeting.py" in line and "SyntaxError" in line
        assert proc.poll() is None

        _edit(tmp_path / "greeting.py", 'WORD = "three"\n')
        out.wait_for("says three")
        assert "says two" not in out.seen[out.seen.index("says three"):]
    finally:
        _stop(proc)


def _get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=DEADLINE) as response:
        return response.read().decode()


def test_debug_application_serves_the_edited_code(tmp_path: Path) -> None:
    (tmp_path / "view.py").write_text('def answer():\n    return "one"\n')
    (tmp_path / "server.py").write_text(SERVER)
    proc, out, err = _start(["server.py"], tmp_path)
    try:
        port = int(out.wait_for("listening").split()[1])
        assert _get(port) == "one"

        _edit(tmp_path / "view.py", 'def answer():\n    return "two"\n')
        port = int(out.wait_for("listening").split()[1])
        assert _get(port) == "two"

        # A syntax error: the running server keeps answering with the last
        # good code.
        _edit(tmp_path / "view.py", 'def answer(:\n    return "three"\n')
        err.wait_for("serving the previous code")
        assert _get(port) == "two"

        _edit(tmp_path / "view.py", 'def answer():\n    return "three"\n')
        port = int(out.wait_for("listening").split()[1])
        assert _get(port) == "three"
    finally:
        _stop(proc)


def test_watched_file_restarts(tmp_path: Path) -> None:
    (tmp_path / "settings.cfg").write_text("a\n")
    (tmp_path / "app.py").write_text(textwrap.dedent("""\
        import asyncio
        import squall.autoreload

        async def main():
            squall.autoreload.watch("settings.cfg")
            squall.autoreload.start(check_time=50)
            print("config", open("settings.cfg").read().strip(), flush=True)
            await asyncio.Event().wait()

        asyncio.run(main())
    """))
    proc, out, _ = _start(["-X", "dev", "app.py"], tmp_path)
    try:
        out.wait_for("config a")
        _edit(tmp_path / "settings.cfg", "b\n")
        out.wait_for("config b")
    finally:
        _stop(proc)


def test_restart_keeps_interpreter_options(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(textwrap.dedent("""\
        import os, sys
        import squall.autoreload

        print("dev mode", sys.flags.dev_mode, sys.argv[1:], flush=True)
        if os.environ.get("RESTARTED"):
            sys.exit(0)
        os.environ["RESTARTED"] = "1"
        squall.autoreload._reload()
    """))
    proc, out, _ = _start(["-X", "dev", "app.py", "--flag", "x"], tmp_path)
    try:
        out.wait_for("dev mode True ['--flag', 'x']")
        out.wait_for("dev mode True ['--flag', 'x']")
        assert proc.wait(timeout=DEADLINE) == 0
    finally:
        _stop(proc)


def test_wrapper_waits_out_a_broken_module_until_success(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("def value(:\n")
    (tmp_path / "main.py").write_text(textwrap.dedent("""\
        import helper
        print("value", helper.value(), flush=True)
    """))
    proc, out, err = _start(
        ["-m", "squall.autoreload", "--until-success", "main.py"], tmp_path
    )
    try:
        err.wait_for("Script exited with uncaught exception")
        assert proc.poll() is None
        _edit(tmp_path / "helper.py", "def value():\n    return 42\n")
        out.wait_for("value 42")
        assert proc.wait(timeout=DEADLINE) == 0
    finally:
        _stop(proc)


def test_wrapper_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "squall.autoreload"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=DEADLINE,
    )
    assert result.returncode == 2
    assert "Usage" in result.stderr


def test_bad_arguments_raise_at_once() -> None:
    with pytest.raises(TypeError, match="42"):
        autoreload.watch(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'nope'"):
        autoreload.add_reload_hook("nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="-1"):
        autoreload.start(check_time=-1)


def test_watcher_holds_a_restart_while_a_changed_file_is_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # In-process, so the exec at the end is replaced by a record of it.
    restarts: list[int] = []
    monkeypatch.setattr(autoreload, "_reload", lambda: restarts.append(1))
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text("A = 1\n")
    bad.write_text("B = 1\n")
    monkeypatch.setattr(autoreload, "_watched_files", {str(good), str(bad)})
    watcher = autoreload._Watcher()
    watcher.check()
    assert restarts == []

    _edit(good, "A = 2\n")
    _edit(bad, "B = (\n")
    with caplog.at_level(logging.ERROR, "squall.general"):
        watcher.check()
    assert restarts == []
    assert "bad.py:1" in caplog.text

    # Nothing new: still waiting for the broken file.
    watcher.check()
    assert restarts == []

    # The broken file goes away: the held restart happens.
    bad.unlink()
    watcher.check()
    assert restarts == [1]
