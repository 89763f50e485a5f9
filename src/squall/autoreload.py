"""Restart the process when its source changes: the development reloader.

`start` watches the file of every imported module (and any file given to
`watch`) from the running `.IOLoop`; when one changes, the process replaces
itself with a fresh interpreter started with the same command line
(``os.execv``), so ``python app.py``, ``python -m app`` and interpreter options
such as ``-X dev`` all come back as they were. ``Application(debug=True)`` or
``Application(autoreload=True)`` calls `start` for you.

A change that does not compile (a half-typed edit) is not restarted into:
the server keeps serving the previous code, logs the syntax error, and
restarts once the file compiles again. Errors that only show when the new
process imports the code (a ``NameError`` at module level, say) do end the
process; run it under the wrapper to survive those too::

    python -m squall.autoreload [--until-success] path/to/script.py [args...]
    python -m squall.autoreload [--until-success] -m package.module [args...]

The wrapper runs the script or module as ``python`` would and, if it dies
with an exception (or exits), waits for a file involved to change and
restarts it. With ``--until-success`` a clean exit ends the wrapper instead
of waiting, which suits test runners.

Reloading is skipped in processes made by `.process.fork_processes`: a
re-executed child would leave its parent's process group.
"""

import os
import sys

# Run as ``python path/to/squall/autoreload.py``, the interpreter puts this
# package's own directory first on sys.path, where its modules (``locale``,
# ``queues``, ``platform``...) would shadow the standard library's for the
# script being run. Drop it before anything else is imported.
if __name__ == "__main__" and sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import logging  # noqa: E402
import runpy  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import traceback  # noqa: E402
import weakref  # noqa: E402
from typing import Callable, Optional, Union  # noqa: E402

from squall.ioloop import IOLoop, PeriodicCallback  # noqa: E402
from squall.log import gen_log  # noqa: E402

__all__ = ["add_reload_hook", "main", "start", "wait", "watch"]

# How often files are checked, in milliseconds: Tornado's default, and about
# what a person notices between saving a file and reloading the page.
_DEFAULT_CHECK_TIME_MS = 500

_watched_files: set[str] = set()
_reload_hooks: list[Callable[[], None]] = []
_reload_attempted = False
# One watcher per IOLoop; the loop's end ends its watcher.
_watchers: "weakref.WeakKeyDictionary[IOLoop, _Watcher]" = weakref.WeakKeyDictionary()

_USAGE = """\
Usage:
  python -m squall.autoreload [--until-success] -m module.to.run [args...]
  python -m squall.autoreload [--until-success] path/to/script.py [args...]
"""


def start(check_time: int = _DEFAULT_CHECK_TIME_MS) -> None:
    """Watch the source of every imported module, and the files given to
    `watch`, from the current `.IOLoop`; restart the process when one
    changes.

    Files are checked every ``check_time`` milliseconds. Calling `start`
    again for the same IOLoop does nothing. A changed ``.py`` file that does
    not compile is logged and the process keeps running the previous code
    until the file is fixed.
    """
    if isinstance(check_time, bool) or not isinstance(check_time, (int, float)) or check_time <= 0:
        raise ValueError(f"check_time must be a positive number of milliseconds, got {check_time!r}")
    _start_watcher(None, check_time)


def _start_watcher(watcher: "Optional[_Watcher]", check_time: float) -> None:
    io_loop = IOLoop.current()
    if io_loop in _watchers:
        return
    if watcher is None:
        # Note what every file looks like now, so that an edit made before
        # the first periodic check is still seen as an edit.
        watcher = _Watcher()
        watcher.check()
    _watchers[io_loop] = watcher
    PeriodicCallback(watcher.check, check_time).start()


def wait() -> None:
    """Block until a watched file (or an imported module) changes, then
    restart the process. Never returns.

    Meant for the end of a script that is run once: for instance a test
    runner under ``python -m squall.autoreload``, which runs the tests again
    on every edit.
    """
    _wait(None)


def _wait(watcher: "Optional[_Watcher]") -> None:
    io_loop = IOLoop(make_current=False)
    io_loop.add_callback(_start_watcher, watcher, _DEFAULT_CHECK_TIME_MS)
    io_loop.start()


def watch(filename: Union[str, "os.PathLike[str]"]) -> None:
    """Restart the process when ``filename`` changes too (a template, a
    configuration file...). Imported modules are watched without this."""
    if not isinstance(filename, (str, os.PathLike)):
        raise TypeError(f"watch() needs a file name, got {filename!r}")
    _watched_files.add(os.path.abspath(os.fspath(filename)))


def add_reload_hook(fn: Callable[[], None]) -> None:
    """Call ``fn()`` (no arguments) just before the process restarts, for
    example to close files or sockets that should not outlive it.

    Sockets, and files opened by Python, are closed by the restart anyway
    (Python makes them non-inheritable).
    """
    if not callable(fn):
        raise TypeError(f"add_reload_hook() needs a callable, got {fn!r}")
    _reload_hooks.append(fn)


class _Watcher:
    """Modification times of the watched files, and the files whose latest
    version does not compile."""

    __slots__ = ("_mtimes", "_broken", "_pending")

    def __init__(self) -> None:
        self._mtimes: dict[str, float] = {}
        self._broken: dict[str, str] = {}
        # A change was seen but the restart waits for a broken file.
        self._pending = False

    def check(self) -> None:
        if _reload_attempted or _in_forked_child():
            return
        changed = [path for path in _files_to_watch() if self._changed(path)]
        if not changed and not self._pending:
            return
        for path in list(self._broken):
            # A broken file that was deleted no longer stands in the way.
            if not os.path.exists(path):
                del self._broken[path]
        for path in changed:
            problem = _compile_problem(path)
            if problem is None:
                if self._broken.pop(path, None) is not None:
                    gen_log.info("%s compiles again", path)
            else:
                if self._broken.get(path) != problem:
                    gen_log.error("%s; serving the previous code until it is fixed", problem)
                self._broken[path] = problem
        self._pending = True
        if self._broken:
            return
        gen_log.info("%s modified; restarting server", changed[0] if changed else "a watched file")
        _reload()

    def _changed(self, path: str) -> bool:
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            # Deleted or not a file (a module from a zip): nothing to run anew.
            return False
        previous = self._mtimes.get(path)
        self._mtimes[path] = mtime
        return previous is not None and previous != mtime


def _in_forked_child() -> bool:
    # squall.process is only ever imported by code that forks workers.
    process = sys.modules.get("squall.process")
    return process is not None and process.task_id() is not None


def _files_to_watch() -> list[str]:
    files = set(_watched_files)
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not isinstance(path, str):
            continue
        if path.endswith(".pyc"):
            path = path[:-1]
        files.add(path)
    return sorted(files)


def _compile_problem(path: str) -> Optional[str]:
    """Describe why the Python file ``path`` would fail to compile, or None."""
    if not path.endswith(".py"):
        return None
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError:
        return None
    try:
        compile(source, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        if isinstance(e, SyntaxError):
            return f"{path}:{e.lineno}: {e.__class__.__name__}: {e.msg}"
        return f"{path}: {e}"
    return None


def _restart_command() -> list[str]:
    # sys.orig_argv is the command line exactly as typed, interpreter options
    # and ``-m`` included; under the wrapper it starts the wrapper again.
    return [sys.executable] + sys.orig_argv[1:]


def _reload() -> None:
    """Replace this process with a new run of the same command line."""
    global _reload_attempted
    _reload_attempted = True
    for fn in _reload_hooks:
        fn()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    command = _restart_command()
    if sys.platform == "win32":
        # execv on Windows starts a new process and ends this one, which
        # confuses the console the server was started from; do it openly.
        subprocess.Popen(command)
        os._exit(0)
    # An interval timer survives exec and would send the fresh process a
    # SIGALRM it has no handler for.
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    os.execv(sys.executable, command)


def main() -> None:
    """Run a script or module under the reloader (``python -m
    squall.autoreload``), restarting it whenever its files change.

    The script sees the command line it would see if run directly. If it
    raises, the files in the traceback are watched too, so fixing the error
    restarts it. When it ends, the wrapper waits for a change and runs it
    again; with ``--until-success`` a clean exit (status 0) ends the wrapper.
    """
    args = sys.argv[1:]
    until_success = False
    while args and args[0] == "--until-success":
        until_success = True
        args = args[1:]
    if args[:1] == ["-m"] and len(args) >= 2:
        module: Optional[str] = args[1]
        target = args[1]
        sys.argv = [target] + args[2:]
    elif args and not args[0].startswith("-"):
        module = None
        target = args[0]
        sys.argv = args[:]
    else:
        print(_USAGE, file=sys.stderr, end="")
        sys.exit(2)
    succeeded = False
    watcher = _Watcher()
    try:
        if module is not None:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(target, run_name="__main__")
    except SystemExit as e:
        succeeded = e.code is None or e.code == 0
        watcher.check()
        _ensure_logging()
        gen_log.info("Script exited with status %s", e.code)
    except Exception as e:
        for frame in traceback.extract_tb(e.__traceback__):
            watch(frame.filename)
        if isinstance(e, SyntaxError) and e.filename:
            watch(e.filename)
        # Note the files' state before saying anything: an edit made in
        # answer to the message must count as a change.
        watcher.check()
        _ensure_logging()
        gen_log.warning("Script exited with uncaught exception", exc_info=True)
    else:
        succeeded = True
        watcher.check()
        _ensure_logging()
        gen_log.info("Script exited normally")
    if succeeded and until_success:
        sys.exit(0)
    _wait(watcher)


def _ensure_logging() -> None:
    # The script may have configured logging; if not, the wrapper's own
    # messages should still reach the terminal.
    if not logging.getLogger().handlers:
        from squall.log import enable_pretty_logging

        enable_pretty_logging()


if __name__ == "__main__":
    # This file is running as ``__main__``; hand over to the copy imported
    # under its real name so that the script's ``import squall.autoreload``
    # finds the state the wrapper set up.
    import importlib

    importlib.import_module(__spec__.name if __spec__ is not None else "squall.autoreload").main()
