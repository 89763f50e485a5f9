"""Tests for squall.process: pre-fork supervision and asynchronous subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import squall

from squall.process import CalledProcessError, Subprocess, cpu_count, task_id

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

# The directory this squall was imported from, for the child interpreters.
_SRC = os.path.dirname(os.path.dirname(os.path.abspath(squall.__file__)))


def test_cpu_count_and_task_id_outside_workers() -> None:
    n = cpu_count()
    assert isinstance(n, int) and n >= 1
    assert task_id() is None
    assert CalledProcessError is subprocess.CalledProcessError


def _run_script(body: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # fork_processes runs in a fresh interpreter: forking pytest itself (with
    # its threads) would be unsafe and warns on Python 3.12+.
    script = textwrap.dedent(
        """
        import logging, os, random, sys
        logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s", stream=sys.stderr)
        from squall.process import fork_processes, task_id
        out = sys.argv[1]
        """
    ) + textwrap.dedent(body)
    env = dict(os.environ, PYTHONPATH=_SRC)
    return subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True, timeout=60
    )


def test_fork_processes_restarts_crashed_children_then_exits_cleanly(tmp_path: Path) -> None:
    result = _run_script(
        """
        random.seed(42)  # identical state in every child unless reseeded
        i = fork_processes(3, max_restarts=2)
        assert i == task_id()
        marker = os.path.join(out, f"ran-{i}")
        first_run = not os.path.exists(marker)
        with open(os.path.join(out, f"run-{i}-{os.getpid()}"), "w") as f:
            f.write(str(random.random()))
        open(marker, "a").close()
        if i == 1 and first_run:
            os._exit(3)
        if i == 2 and first_run:
            os.kill(os.getpid(), 9)
        os._exit(0)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    runs = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("run-"))
    ids = [name.split("-")[1] for name in runs]
    assert sorted(ids) == ["0", "1", "1", "2", "2"]
    randoms = {(tmp_path / name).read_text() for name in runs}
    assert len(randoms) == len(runs), "children share a random sequence"
    log = result.stderr
    assert "squall.general Starting 3 processes" in log
    assert "exited with status 3, restarting" in log
    assert "killed by signal 9, restarting" in log
    assert log.count("exited normally") == 3


def test_fork_processes_gives_up_after_max_restarts(tmp_path: Path) -> None:
    result = _run_script(
        """
        i = fork_processes(1, max_restarts=2)
        open(os.path.join(out, f"run-{os.getpid()}"), "w").close()
        os._exit(1)
        """,
        tmp_path,
    )
    assert result.returncode != 0
    assert "Too many child restarts" in result.stderr
    # The first run and two restarts.
    assert len(list(tmp_path.iterdir())) == 3


def test_fork_processes_only_in_parent(tmp_path: Path) -> None:
    result = _run_script(
        """
        i = fork_processes(1)
        try:
            fork_processes(1)
        except RuntimeError as e:
            open(os.path.join(out, "error"), "w").write(str(e))
        os._exit(0)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "worker 0" in (tmp_path / "error").read_text()


# --- Subprocess ------------------------------------------------------------------


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_subprocess_pipes() -> None:
    async def main() -> None:
        proc = Subprocess(
            _py("import sys; data = sys.stdin.read(); sys.stdout.write(data.upper()); sys.stderr.write('err')"),
            stdin=Subprocess.STREAM,
            stdout=Subprocess.STREAM,
            stderr=Subprocess.STREAM,
        )
        await proc.stdin.write(b"hello ")
        await proc.stdin.write(b"world")
        proc.stdin.close()
        out, err = await asyncio.gather(proc.stdout.read_until_close(), proc.stderr.read_until_close())
        assert (out, err) == (b"HELLO WORLD", b"err")
        assert await proc.wait_for_exit() == 0
        assert proc.returncode == 0 and proc.proc.returncode == 0

    asyncio.run(main())


def test_subprocess_non_stream_arguments_pass_through() -> None:
    async def main() -> None:
        proc = Subprocess(_py("import sys; print('x'); sys.stderr.write('y')"), stdout=Subprocess.STREAM, stderr=subprocess.STDOUT)
        assert proc.stdin is None and proc.stderr is None
        assert await proc.stdout.read_until_close() == b"x\ny"
        await proc.wait_for_exit()

    asyncio.run(main())


def test_subprocess_exit_callback_and_signal() -> None:
    async def main() -> None:
        proc = Subprocess(_py("import time; time.sleep(30)"))
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        proc.set_exit_callback(done.set_result)
        os.kill(proc.pid, signal.SIGTERM)
        assert await asyncio.wait_for(done, 10) == -signal.SIGTERM
        assert proc.returncode == -signal.SIGTERM

    asyncio.run(main())


def test_wait_for_exit_errors() -> None:
    async def main() -> None:
        proc = Subprocess(_py("import sys; sys.exit(3)"))
        with pytest.raises(CalledProcessError) as info:
            await proc.wait_for_exit()
        assert info.value.returncode == 3
        proc = Subprocess(_py("import sys; sys.exit(3)"))
        assert await proc.wait_for_exit(raise_error=False) == 3

    asyncio.run(main())


def test_exit_before_anyone_asks_and_asking_twice() -> None:
    async def main() -> None:
        proc = Subprocess(_py("pass"))
        # Wait for the exit without reaping: the zombie is still there to collect.
        await asyncio.get_running_loop().run_in_executor(
            None, os.waitid, os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT
        )
        assert await asyncio.wait_for(proc.wait_for_exit(), 10) == 0
        # Asking again after the exit was observed answers at once.
        assert await asyncio.wait_for(proc.wait_for_exit(), 1) == 0

    asyncio.run(main())


def test_exit_already_reaped_by_popen() -> None:
    async def main() -> None:
        proc = Subprocess(_py("import sys; sys.exit(5)"))
        assert await asyncio.get_running_loop().run_in_executor(None, proc.proc.wait) == 5
        assert await asyncio.wait_for(proc.wait_for_exit(raise_error=False), 10) == 5

    asyncio.run(main())


def test_initialize_uninitialize_are_accepted() -> None:
    async def main() -> None:
        Subprocess.initialize()
        try:
            proc = Subprocess(_py("pass"))
            assert await asyncio.wait_for(proc.wait_for_exit(), 10) == 0
        finally:
            Subprocess.uninitialize()

    asyncio.run(main())


def test_subprocess_popen_failure_closes_pipes() -> None:
    async def main() -> None:
        before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
        with pytest.raises(FileNotFoundError):
            Subprocess(["/nonexistent/program"], stdin=Subprocess.STREAM, stdout=Subprocess.STREAM)
        if before is not None:
            assert len(os.listdir("/proc/self/fd")) == before

    asyncio.run(main())


def test_exit_watching_without_pidfd(monkeypatch: pytest.MonkeyPatch) -> None:
    # Kernels before 5.3 (and some sandboxes) lack pidfd_open; a waiting
    # thread reports the exit instead.
    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd, raising=False)

    async def main() -> None:
        proc = Subprocess(_py("import sys; sys.exit(7)"), stdout=Subprocess.STREAM)
        assert await proc.stdout.read_until_close() == b""
        assert await asyncio.wait_for(proc.wait_for_exit(raise_error=False), 10) == 7
        assert proc.proc.returncode == 7

    asyncio.run(main())
