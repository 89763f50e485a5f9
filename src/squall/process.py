"""Processes: pre-forking a server into workers, and running child processes without blocking the loop.

`fork_processes` turns one process into a supervisor and ``N`` workers that
share the listening sockets created before the fork (each worker then runs its
own event loop). `Subprocess` is `subprocess.Popen` with non-blocking
`~squall.iostream.PipeIOStream` pipes and an asynchronous `Subprocess.wait_for_exit`.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from squall.ioloop import IOLoop
from squall.iostream import PipeIOStream
from squall.log import gen_log

__all__ = ["CalledProcessError", "Subprocess", "cpu_count", "fork_processes", "task_id"]

# Re-exported so that ``squall.process.CalledProcessError`` is the exception
# `Subprocess.wait_for_exit` raises, as in Tornado.
CalledProcessError = subprocess.CalledProcessError

# How many times fork_processes replaces crashed workers when the caller does
# not say: Tornado's default, enough to ride out sporadic crashes while still
# stopping a crash loop.
_DEFAULT_MAX_RESTARTS = 100

# Delay before asking again for the status of a child whose pidfd reported
# an exit the kernel does not yet let us collect (seen on sandboxed kernels).
_REAP_RETRY_DELAY = 0.01

_task_id: int | None = None


def cpu_count() -> int:
    """Return the number of processors this process may run on (at least 1).

    CPUs excluded by the scheduler affinity mask (e.g. ``taskset`` or a
    container's cpuset) are not counted, so ``fork_processes(0)`` starts one
    worker per usable CPU.
    """
    count: int | None
    if hasattr(os, "process_cpu_count"):
        count = os.process_cpu_count()
    elif hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:
        count = os.cpu_count()
    if count:
        return count
    gen_log.error("Could not detect number of processors; assuming 1")
    return 1


def _reseed_random() -> None:
    # Workers forked from one parent must not share a random sequence (for
    # example for session ids); only reseed when the module is in use.
    if "random" not in sys.modules:
        return
    random.seed(int.from_bytes(os.urandom(16), "big"))


def fork_processes(num_processes: int | None, max_restarts: int | None = None) -> int:
    """Fork ``num_processes`` worker processes and supervise them from this one.

    ``num_processes`` of ``None`` or ``<= 0`` means one worker per CPU
    (`cpu_count`). In each worker this function returns its task id, an integer
    in ``range(num_processes)`` (also available from `task_id`). The calling
    process never returns: it waits for the workers, starts a new worker with
    the same task id when one exits with a non-zero status or is killed by a
    signal, and calls ``sys.exit(0)`` once every worker has exited cleanly.
    After ``max_restarts`` replacements (default 100) it gives up with
    `RuntimeError`.

    Create listening sockets (`~squall.netutil.bind_sockets`) before calling
    this, and the event loop and everything else after it: an event loop must
    not cross a fork. Not available on Windows.
    """
    if sys.platform == "win32":
        raise RuntimeError("fork_processes is not available on Windows")
    global _task_id
    if _task_id is not None:
        raise RuntimeError(f"fork_processes called in worker {_task_id}; it can only be called once, by the parent")
    if max_restarts is None:
        max_restarts = _DEFAULT_MAX_RESTARTS
    if num_processes is None or num_processes <= 0:
        num_processes = cpu_count()
    gen_log.info("Starting %d processes", num_processes)
    children: dict[int, int] = {}

    def start_child(i: int) -> int | None:
        global _task_id
        pid = os.fork()
        if pid == 0:
            _reseed_random()
            _task_id = i
            return i
        children[pid] = i
        return None

    for i in range(num_processes):
        child_id = start_child(i)
        if child_id is not None:
            return child_id
    restarts = 0
    while children:
        pid, status = os.wait()
        if pid not in children:
            continue
        child_id = children.pop(pid)
        if os.WIFSIGNALED(status):
            gen_log.warning(
                "child %d (pid %d) killed by signal %d, restarting", child_id, pid, os.WTERMSIG(status)
            )
        elif os.WEXITSTATUS(status) != 0:
            gen_log.warning(
                "child %d (pid %d) exited with status %d, restarting", child_id, pid, os.WEXITSTATUS(status)
            )
        else:
            gen_log.info("child %d (pid %d) exited normally", child_id, pid)
            continue
        restarts += 1
        if restarts > max_restarts:
            raise RuntimeError(f"Too many child restarts ({restarts} > max_restarts={max_restarts}), giving up")
        new_id = start_child(child_id)
        if new_id is not None:
            return new_id
    # All workers exited cleanly: the supervisor's job is done. SystemExit
    # (rather than returning) keeps it out of the worker code path.
    sys.exit(0)


def task_id() -> int | None:
    """Return this worker's task id from `fork_processes`, or ``None`` outside a worker."""
    return _task_id


class Subprocess:
    """`subprocess.Popen` with asynchronous pipes and exit notification.

    Takes the same arguments as `subprocess.Popen`. Passing
    ``Subprocess.STREAM`` as ``stdin``, ``stdout`` or ``stderr`` gives a
    non-blocking `~squall.iostream.PipeIOStream` in the attribute of that name
    (other values behave as with ``Popen``, whose attributes are copied).
    ``proc`` is the underlying ``Popen``, ``pid`` its process id and
    ``returncode`` is set once the exit has been observed through
    `set_exit_callback` or `wait_for_exit`.

    Exits are observed without a ``SIGCHLD`` handler: on Linux a pidfd
    registered with the event loop, elsewhere a helper thread blocked in
    ``waitpid``. So unlike Tornado there is no need to call `initialize`
    (kept for compatibility) and nothing competes with other code for
    ``SIGCHLD``.
    """

    STREAM = object()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.io_loop = IOLoop.current()
        loop_fds: dict[str, int] = {}
        child_fds: list[int] = []
        try:
            for name, parent_end in (("stdin", 1), ("stdout", 0), ("stderr", 0)):
                if kwargs.get(name) is Subprocess.STREAM:
                    pipe = os.pipe()
                    kwargs[name] = pipe[1 - parent_end]
                    child_fds.append(pipe[1 - parent_end])
                    loop_fds[name] = pipe[parent_end]
            self.proc = subprocess.Popen(*args, **kwargs)
        except BaseException:
            for fd in child_fds + list(loop_fds.values()):
                os.close(fd)
            raise
        for fd in child_fds:
            os.close(fd)
        self.pid = self.proc.pid
        self.stdin: Any = PipeIOStream(loop_fds["stdin"]) if "stdin" in loop_fds else self.proc.stdin
        self.stdout: Any = PipeIOStream(loop_fds["stdout"]) if "stdout" in loop_fds else self.proc.stdout
        self.stderr: Any = PipeIOStream(loop_fds["stderr"]) if "stderr" in loop_fds else self.proc.stderr
        self.returncode: int | None = None
        self._exit_callback: Callable[[int], None] | None = None
        self._watching = False

    def set_exit_callback(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(returncode)`` on this object's IOLoop when the process exits.

        ``returncode`` is the exit status, or ``-N`` when signal ``N`` killed
        the process. Must be called on the IOLoop's thread. If the exit was
        already observed the callback is scheduled at once.
        """
        self._exit_callback = callback
        if self.returncode is not None:
            self.io_loop.add_callback(self._run_exit_callback)
            return
        if not self._watching:
            self._watching = True
            self._watch()

    def wait_for_exit(self, raise_error: bool = True) -> asyncio.Future[int]:
        """Return a future resolving to the exit code once the process exits.

        With ``raise_error=True`` (the default) a non-zero exit code raises
        `CalledProcessError` instead. Replaces any callback given to
        `set_exit_callback`.
        """
        future: asyncio.Future[int] = self.io_loop.asyncio_loop.create_future()

        def on_exit(returncode: int) -> None:
            if future.cancelled():
                return
            if returncode != 0 and raise_error:
                future.set_exception(CalledProcessError(returncode, self.proc.args))
            else:
                future.set_result(returncode)

        self.set_exit_callback(on_exit)
        return future

    @classmethod
    def initialize(cls) -> None:
        """Kept for Tornado compatibility; does nothing.

        Tornado installs its ``SIGCHLD`` handler here. squall watches each
        process on its own (see the class docstring), so exits are reported
        whether or not this was called.
        """

    @classmethod
    def uninitialize(cls) -> None:
        """Kept for Tornado compatibility; does nothing (see `initialize`)."""

    def _watch(self) -> None:
        loop = self.io_loop.asyncio_loop
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                pidfd = pidfd_open(self.pid)
            except ProcessLookupError:
                # Already reaped elsewhere (e.g. Popen.wait()).
                loop.call_soon(self._reap)
                return
            except OSError:
                # Kernel without pidfd support (before 5.3) or a sandbox
                # that forbids it: fall back to a waiting thread.
                pass
            else:
                loop.add_reader(pidfd, self._on_pidfd_readable, pidfd)
                return
        thread = threading.Thread(target=self._wait_in_thread, name=f"squall-wait-{self.pid}", daemon=True)
        thread.start()

    def _on_pidfd_readable(self, pidfd: int) -> None:
        loop = self.io_loop.asyncio_loop
        loop.remove_reader(pidfd)
        os.close(pidfd)
        self._reap()

    def _wait_in_thread(self) -> None:
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            status = None
        loop = self.io_loop.asyncio_loop
        if loop.is_closed():
            return
        if status is None:
            loop.call_soon_threadsafe(self._reap)
        else:
            loop.call_soon_threadsafe(self._set_returncode, os.waitstatus_to_exitcode(status))

    def _reap(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            # Someone else (Popen.wait, a waiting thread) reaped the process
            # and may have recorded its status on the Popen object.
            if self.proc.returncode is not None:
                self._set_returncode(self.proc.returncode)
            return
        if pid == 0:
            # pidfd said "exited" but the zombie is not waitable yet; retry.
            self.io_loop.asyncio_loop.call_later(_REAP_RETRY_DELAY, self._reap)
            return
        self._set_returncode(os.waitstatus_to_exitcode(status))

    def _set_returncode(self, returncode: int) -> None:
        self.returncode = returncode
        # Popen must know the process is gone, or it would wait for it again
        # and warn about a still-running child when collected.
        self.proc.returncode = returncode
        self._run_exit_callback()

    def _run_exit_callback(self) -> None:
        callback, self._exit_callback = self._exit_callback, None
        if callback is not None and self.returncode is not None:
            callback(self.returncode)
