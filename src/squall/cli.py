"""The ``squall`` command line: serve an application with ``squall run module:app``.

::

    squall run myapp:app                      # an Application object
    squall run myapp:make_app --port 8000     # a factory returning one
    squall run path/to/app.py:make_app        # a file instead of a module
    squall run myapp:app --processes 0        # one worker per CPU
    python -m squall run myapp:app --reload   # restart on source changes

The target after ``run`` is ``MODULE:ATTRIBUTE``. ``MODULE`` is a dotted
module name (found on ``sys.path`` with the current directory first, or
``--app-dir``) or the path of a ``.py`` file; ``ATTRIBUTE`` may be dotted.
It names one of:

* an `~squall.httputil.HTTPServerConnectionDelegate` -- a
  `squall.web.Application` or a `squall.routing.Router` -- served by an
  `~squall.httpserver.HTTPServer`;
* a `~squall.tcpserver.TCPServer` (an `~squall.httpserver.HTTPServer`
  included), which is given the listening sockets;
* a factory: any other callable, called with no arguments once per worker
  (inside the worker's running event loop, so it may create loop-bound
  resources) and returning one of the above, or an awaitable resolving to one.

With ``--processes N`` (N > 1, or 0 for one per CPU) this process becomes a
supervisor of N forked workers. On Linux each worker accepts on a socket of
its own, all bound to the same port with ``SO_REUSEPORT``, so the kernel
spreads new connections evenly; elsewhere the workers share one listening
socket. The supervisor keeps every worker's socket open, so connections that
arrive while a crashed worker is being replaced wait in its queue instead of
being refused. A worker that exits with an error or is killed by a signal is
replaced (at most `MAX_RESTARTS` times); ``SIGTERM`` or ``SIGINT`` to the
supervisor stops every worker before the supervisor exits, and a worker whose
supervisor disappears (``kill -9``) stops by itself within about a second.

Errors in the command line or in the target name print one line naming the
culprit and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import inspect
import logging
import os
import select
import signal
import socket
import ssl
import sys
import time
import traceback
from collections.abc import Sequence
from types import FrameType, ModuleType
from typing import Any, NoReturn, Optional

import squall
from squall import httputil
from squall.log import LogFormatter, gen_log

__all__ = ["main", "load_target", "UsageError", "MAX_RESTARTS", "SHUTDOWN_TIMEOUT", "CONNECTION_CLOSE_TIMEOUT"]

#: How many times the supervisor replaces crashed workers before it gives up
#: and stops: `squall.process.fork_processes`' default (and Tornado's).
MAX_RESTARTS = 100
#: Seconds the supervisor waits for workers to stop after SIGTERM before it
#: kills them; systemd gives a whole service 90 s (``TimeoutStopSec``), so
#: this leaves the rest to the service manager.
SHUTDOWN_TIMEOUT = 10.0
#: Seconds a stopping worker lets its open connections finish closing.
#: Kept below `SHUTDOWN_TIMEOUT` so a worker ends on its own before its
#: supervisor resorts to SIGKILL.
CONNECTION_CLOSE_TIMEOUT = 5.0
# How often a worker checks that its supervisor is still alive, and the
# supervisor wakes up even when no signal arrived: once a second keeps an
# orphaned worker's lifetime short at no measurable cost.
_POLL_INTERVAL = 1.0
# Exit status of a worker that could not build its server (the factory
# raised, or returned something unservable). Replacing such a worker would
# fail the same way, so the supervisor stops instead.
_EXIT_STARTUP_FAILED = 3
# Exit status for command-line and target-name errors, as argparse uses.
_EXIT_USAGE = 2
_DEFAULT_PORT = 8888
_DEFAULT_ADDRESS = "127.0.0.1"
_LOOP_CHOICES = ("auto", "uvloop", "asyncio")
_LOG_LEVELS = ("debug", "info", "warning", "error")
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class UsageError(Exception):
    """A mistake in the command line or the target: reported in one line, exit status 2."""


class _ArgumentParser(argparse.ArgumentParser):
    # argparse prints the whole usage text before its error; one line that
    # names the argument is easier to read in a service manager's log.
    def error(self, message: str) -> NoReturn:
        self.exit(_EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _port(text: str) -> int:
    try:
        port = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0-65535")
    return port


def _processes(text: str) -> int:
    try:
        count = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of processes: {text!r}") from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (one per CPU) or more, got {count}")
    return count


def _build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="squall",
        description="squall: an asyncio-native, Tornado-compatible web server and framework.",
    )
    parser.add_argument("--version", action="version", version=f"squall {squall.version}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="serve an application",
        description="Serve an Application, a Router, a TCPServer, or a factory returning one.",
        epilog="Example: squall run myapp:make_app --port 8000 --processes 0",
    )
    run.add_argument(
        "target",
        metavar="MODULE:ATTRIBUTE",
        help="what to serve, e.g. myapp:app, myapp:make_app or path/to/app.py:app",
    )
    run.add_argument("--port", type=_port, default=_DEFAULT_PORT, help="TCP port (default %(default)s; 0 picks a free one)")
    run.add_argument(
        "--address",
        default=_DEFAULT_ADDRESS,
        help="address to listen on (default %(default)s; '' for every interface)",
    )
    run.add_argument(
        "--processes",
        type=_processes,
        default=1,
        metavar="N",
        help="worker processes (default 1; 0 means one per CPU)",
    )
    run.add_argument("--reload", action="store_true", help="restart when a source file changes (development)")
    run.add_argument(
        "--loop",
        choices=_LOOP_CHOICES,
        default="auto",
        help="event loop: uvloop, asyncio, or auto (uvloop when installed; the default)",
    )
    run.add_argument("--access-log", action="store_true", help="log every request to the squall.access logger")
    run.add_argument("--log-level", choices=_LOG_LEVELS, default="info", help="logging level (default %(default)s)")
    run.add_argument("--certfile", help="serve HTTPS with this PEM certificate chain")
    run.add_argument("--keyfile", help="the certificate's private key (if not in --certfile)")
    run.add_argument(
        "--xheaders",
        action="store_true",
        help="trust X-Real-Ip / X-Forwarded-For / X-Forwarded-Proto (only behind your own proxy)",
    )
    run.add_argument(
        "--app-dir",
        default=".",
        metavar="DIR",
        help="directory put first on sys.path before importing the target (default: the current one)",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``squall`` command line with ``argv`` (default ``sys.argv[1:]``).

    Returns the exit status: 0 after a clean stop (SIGTERM or SIGINT), 1 when
    serving failed, 2 for a bad argument or target. ``--help`` and
    ``--version`` exit through `SystemExit` with status 0.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return _EXIT_USAGE
    prog = f"{parser.prog} {args.command}"
    try:
        return _run(args)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
        return _EXIT_USAGE
    except _ServeError as e:
        print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C before the event loop took over SIGINT (e.g. while the
        # application module was importing).
        return 1


class _ServeError(Exception):
    """Serving could not start for a reason outside the command line (a port in use)."""


def load_target(spec: str, app_dir: Optional[str] = None) -> Any:
    """Import and return the object named by ``spec`` (``"MODULE:ATTRIBUTE"``).

    ``MODULE`` is a dotted module name or a path to a ``.py`` file (whose
    directory is then put first on ``sys.path``, so that its sibling modules
    import); ``ATTRIBUTE`` may be dotted (``"pkg.mod:obj.app"``).
    ``app_dir`` is put first on ``sys.path`` before importing.

    Raises `UsageError` naming the part that is wrong when the spec is
    malformed, the module does not exist, or it has no such attribute.
    Exceptions raised by the module's own code while it imports propagate
    unchanged.
    """
    module_name, sep, attribute = spec.rpartition(":")
    if not sep or not module_name or not attribute:
        raise UsageError(f"target {spec!r} is not MODULE:ATTRIBUTE (e.g. myapp:app)")
    if app_dir is not None:
        directory = os.path.abspath(app_dir)
        if not os.path.isdir(directory):
            raise UsageError(f"argument --app-dir: no such directory: {app_dir!r}")
        if directory not in sys.path:
            sys.path.insert(0, directory)
    if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
        module = _import_file(module_name)
    else:
        module = _import_module(module_name)
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"module {module.__name__!r} has no attribute {attribute!r}") from None
    return obj


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        # Only a missing target (or one of its parent packages) is a usage
        # error; a module that the target itself imports and that is missing
        # is a bug in the application, reported with its traceback.
        if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
            raise UsageError(f"no module named {name!r}") from None
        raise
    except ValueError as e:
        # An empty segment ("a..b") or a relative name.
        raise UsageError(f"bad module name {name!r}: {e}") from None


def _import_file(path: str) -> ModuleType:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise UsageError(f"no such file: {path!r}")
    name = os.path.splitext(os.path.basename(full))[0]
    directory = os.path.dirname(full)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _setup_logging(level: str, access_log: bool) -> None:
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper()))
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(LogFormatter())
        root.addHandler(handler)
    if not access_log:
        # Above every level the access log uses: requests are not logged at
        # all, while errors still reach squall.application with tracebacks.
        logging.getLogger("squall.access").setLevel(logging.CRITICAL + 1)


def _choose_loop(choice: str) -> str:
    """Make every event loop squall creates (here, in workers, after a
    reload) of the chosen kind; return the kind's name."""
    from squall.ioloop import LOOP_ENV_VAR

    if choice == "asyncio":
        os.environ[LOOP_ENV_VAR] = "asyncio"
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if choice == "uvloop":
            raise UsageError("argument --loop: uvloop is not installed (pip install uvloop)") from None
        return "asyncio"
    if choice == "uvloop":
        os.environ[LOOP_ENV_VAR] = "uvloop"
    # "auto" leaves the environment alone: SQUALL_LOOP, if set, still decides.
    return os.environ.get(LOOP_ENV_VAR, "").strip().lower() or "uvloop"


def _ssl_context(certfile: Optional[str], keyfile: Optional[str]) -> Optional[ssl.SSLContext]:
    if certfile is None:
        if keyfile is not None:
            raise UsageError("argument --keyfile: needs --certfile")
        return None
    for flag, path in (("--certfile", certfile), ("--keyfile", keyfile)):
        if path is not None and not os.path.isfile(path):
            raise UsageError(f"argument {flag}: no such file: {path!r}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as e:
        raise UsageError(f"argument --certfile: cannot load the certificate and key: {e}") from None
    return context


def _run(args: argparse.Namespace) -> int:
    processes = args.processes
    if processes == 0:
        from squall.process import cpu_count

        processes = cpu_count()
    if args.reload and processes != 1:
        raise UsageError(
            f"argument --reload: cannot be combined with --processes {args.processes} "
            "(a reload restarts one process; use it in development with one process)"
        )
    if processes > 1 and not hasattr(os, "fork"):
        raise UsageError(f"argument --processes: {processes} workers need os.fork, which {sys.platform} lacks")
    loop_name = _choose_loop(args.loop)
    ssl_context = _ssl_context(args.certfile, args.keyfile)
    _setup_logging(args.log_level, args.access_log)
    target = load_target(args.target, args.app_dir)
    if not callable(target) and not _is_servable(target):
        raise UsageError(
            f"{args.target} is {target!r}: expected an Application, a Router, a TCPServer, or a factory returning one"
        )
    if _is_tcp_server(target) and processes > 1:
        raise UsageError(
            f"argument --processes: {args.target} is one TCPServer object, which cannot be shared by "
            "several workers; name a factory that builds it instead"
        )
    per_worker = processes > 1 and _reuse_port_balances()
    groups = _bind_groups(args, processes if per_worker else 1)
    where = _display_address(groups[0][0])
    if isinstance(target, httputil.HTTPServerConnectionDelegate):
        # Known to speak HTTP: print a URL one can click. A factory's
        # product is only known in the workers, so it gets the bare address.
        where = ("https://" if ssl_context is not None else "http://") + where
    details = [f"{processes} workers" if processes > 1 else f"pid {os.getpid()}", loop_name]
    if ssl_context is not None:
        details.append("TLS")
    print(
        f"squall: serving {args.target} on {where} ({', '.join(details)})",
        file=sys.stderr,
        flush=True,
    )
    options = _ServeOptions(ssl_context, args.xheaders, args.reload)
    if processes == 1:
        return _serve_in_this_process(target, groups[0], options, args.target, parent_pid=None)
    return _Supervisor(processes, groups, target, options, args.target).run()


def _is_tcp_server(obj: Any) -> bool:
    from squall.tcpserver import TCPServer

    return isinstance(obj, TCPServer)


def _is_servable(obj: Any) -> bool:
    return isinstance(obj, httputil.HTTPServerConnectionDelegate) or _is_tcp_server(obj)


def _reuse_port_balances() -> bool:
    # Linux spreads connections over a SO_REUSEPORT group; the BSDs and
    # macOS accept the option but hand every connection to one socket.
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _bind_groups(args: argparse.Namespace, count: int) -> list[list[socket.socket]]:
    """Bind ``count`` groups of listening sockets (one per address family
    each) on one port; more than one group uses SO_REUSEPORT."""
    from squall.netutil import bind_sockets

    address = args.address or None
    reuse_port = count > 1
    groups: list[list[socket.socket]] = []
    port = args.port
    try:
        for _ in range(count):
            group = bind_sockets(port, address, reuse_port=reuse_port)
            # With --port 0 the first group's port becomes everyone's.
            port = group[0].getsockname()[1]
            groups.append(group)
    except socket.gaierror as e:
        _close_groups(groups)
        raise UsageError(f"argument --address: cannot resolve {args.address!r}: {e.strerror}") from None
    except OSError as e:
        _close_groups(groups)
        raise _ServeError(f"cannot listen on {_display_host(args.address or '')}:{args.port}: {e.strerror or e}") from None
    return groups


def _close_groups(groups: list[list[socket.socket]]) -> None:
    for group in groups:
        for sock in group:
            sock.close()


def _display_host(host: str) -> str:
    if not host:
        return "0.0.0.0"
    return f"[{host}]" if ":" in host else host


def _display_address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{_display_host(host)}:{port}"


class _ServeOptions:
    __slots__ = ("ssl_context", "xheaders", "reload")

    def __init__(self, ssl_context: Optional[ssl.SSLContext], xheaders: bool, reload: bool) -> None:
        self.ssl_context = ssl_context
        self.xheaders = xheaders
        self.reload = reload


class _StartupError(Exception):
    """The target could not be turned into a server (reported in one line)."""


async def _make_server(target: Any, options: _ServeOptions, target_name: str) -> Any:
    from squall.httpserver import HTTPServer

    obj = target
    if not _is_servable(obj):
        obj = target()
        if inspect.isawaitable(obj):
            obj = await obj
        if not _is_servable(obj):
            raise _StartupError(
                f"{target_name}() returned {obj!r}: expected an Application, a Router or a TCPServer"
            )
    if isinstance(obj, httputil.HTTPServerConnectionDelegate):
        return HTTPServer(obj, xheaders=options.xheaders, ssl_options=options.ssl_context)
    if options.ssl_context is not None or options.xheaders:
        flag = "--certfile" if options.ssl_context is not None else "--xheaders"
        raise _StartupError(
            f"{flag} applies to applications; {target_name} gives a TCPServer, "
            "so pass ssl_options (or xheaders) to it instead"
        )
    return obj


async def _serve(
    target: Any, sockets: list[socket.socket], options: _ServeOptions, target_name: str, parent_pid: Optional[int]
) -> None:
    loop = asyncio.get_running_loop()
    server = await _make_server(target, options, target_name)
    server.add_sockets(sockets)
    stopping = asyncio.Event()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stopping.set)
    if options.reload:
        from squall import autoreload

        autoreload.start()
    if parent_pid is not None:

        def check_parent() -> None:
            # Reparented: the supervisor died without stopping us.
            if os.getppid() != parent_pid:
                gen_log.warning("supervisor (pid %d) is gone; stopping worker %d", parent_pid, os.getpid())
                stopping.set()
            else:
                loop.call_later(_POLL_INTERVAL, check_parent)

        loop.call_later(_POLL_INTERVAL, check_parent)
    try:
        await stopping.wait()
    finally:
        for signum in _STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        server.stop()
        close_all = getattr(server, "close_all_connections", None)
        if close_all is not None:
            try:
                await asyncio.wait_for(close_all(), CONNECTION_CLOSE_TIMEOUT)
            except asyncio.TimeoutError:
                gen_log.warning("connections still open after %.0f s; stopping anyway", CONNECTION_CLOSE_TIMEOUT)


def _serve_in_this_process(
    target: Any, sockets: list[socket.socket], options: _ServeOptions, target_name: str, parent_pid: Optional[int]
) -> int:
    """Run the event loop until SIGTERM/SIGINT; return the exit status."""
    from squall.ioloop import IOLoop

    io_loop = IOLoop(make_current=False)
    try:
        io_loop.run_sync(lambda: _serve(target, sockets, options, target_name, parent_pid))
    except _StartupError as e:
        print(f"squall run: error: {e}", file=sys.stderr, flush=True)
        return _EXIT_STARTUP_FAILED if parent_pid is not None else _EXIT_USAGE
    except Exception:
        gen_log.error("cannot serve %s", target_name, exc_info=True)
        return _EXIT_STARTUP_FAILED if parent_pid is not None else 1
    finally:
        io_loop.close(all_fds=True)
    return 0


class _Supervisor:
    """Forks the workers, replaces crashed ones, and stops them all on
    SIGTERM/SIGINT. Signals reach it through a wakeup pipe, so nothing runs
    inside a signal handler but setting a flag."""

    def __init__(
        self,
        count: int,
        groups: list[list[socket.socket]],
        target: Any,
        options: _ServeOptions,
        target_name: str,
    ) -> None:
        self.count = count
        self.groups = groups
        self.target = target
        self.options = options
        self.target_name = target_name
        self.children: dict[int, int] = {}  # pid -> worker index
        self.restarts = 0
        self.stop_signal: Optional[int] = None
        self.failed = False

    def _sockets_for(self, index: int) -> list[socket.socket]:
        return self.groups[index] if len(self.groups) > 1 else self.groups[0]

    def run(self) -> int:
        wakeup_read, wakeup_write = os.pipe()
        os.set_blocking(wakeup_read, False)
        os.set_blocking(wakeup_write, False)
        previous_wakeup = signal.set_wakeup_fd(wakeup_write)
        previous_handlers = {
            signum: signal.signal(signum, self._on_signal) for signum in (*_STOP_SIGNALS, signal.SIGCHLD)
        }
        self._pipe = (wakeup_read, wakeup_write)
        try:
            for index in range(self.count):
                self._spawn(index)
            while self.children and self.stop_signal is None and not self.failed:
                self._wait(_POLL_INTERVAL)
                self._reap(restart=True)
            self._stop_all()
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            os.close(wakeup_read)
            os.close(wakeup_write)
            _close_groups(self.groups)
        return 1 if self.failed else 0

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        if signum == signal.SIGCHLD:
            return
        if self.stop_signal is not None:
            # A second request to stop: do not wait for the workers.
            for pid in self.children:
                _signal_child(pid, signal.SIGKILL)
        self.stop_signal = signum

    def _wait(self, timeout: float) -> None:
        try:
            select.select([self._pipe[0]], [], [], timeout)
        except InterruptedError:
            pass
        try:
            while os.read(self._pipe[0], 512):
                pass
        except BlockingIOError:
            pass

    def _spawn(self, index: int) -> None:
        # Signals stay blocked across the fork, so a SIGTERM cannot reach
        # the child while it still has the supervisor's handlers.
        blocked = set(_STOP_SIGNALS) | {signal.SIGCHLD}
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
            raise
        if pid == 0:
            self._become_worker(index, blocked)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        self.children[pid] = index

    def _become_worker(self, index: int, blocked: set[int]) -> NoReturn:
        status = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum in blocked:
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
            os.close(self._pipe[0])
            os.close(self._pipe[1])
            mine = self._sockets_for(index)
            for group in self.groups:
                if group is not mine:
                    for sock in group:
                        sock.close()
            _set_task_id(index)
            status = _serve_in_this_process(
                self.target, mine, self.options, self.target_name, parent_pid=os.getppid()
            )
        except BaseException:
            traceback.print_exc()
        finally:
            # Never return into the supervisor's code path, nor run its
            # atexit handlers: flush what the worker wrote and leave.
            logging.shutdown()
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(status)

    def _reap(self, restart: bool) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            index = self.children.pop(pid, None)
            if index is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if not restart:
                continue
            if code == 0:
                gen_log.info("worker %d (pid %d) exited", index, pid)
                continue
            if code == _EXIT_STARTUP_FAILED:
                gen_log.error("worker %d (pid %d) could not start; stopping", index, pid)
                self.failed = True
                return
            how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
            self.restarts += 1
            if self.restarts > MAX_RESTARTS:
                gen_log.error("worker %d (pid %d) %s; %d restarts already, stopping", index, pid, how, MAX_RESTARTS)
                self.failed = True
                return
            gen_log.warning("worker %d (pid %d) %s; restarting it", index, pid, how)
            self._spawn(index)

    def _stop_all(self) -> None:
        for pid in self.children:
            _signal_child(pid, signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT
        while self.children:
            self._reap(restart=False)
            remaining = deadline - time.monotonic()
            if not self.children:
                break
            if remaining <= 0:
                for pid in self.children:
                    gen_log.warning("worker pid %d did not stop in %.0f s; killing it", pid, SHUTDOWN_TIMEOUT)
                    _signal_child(pid, signal.SIGKILL)
                deadline = float("inf")
                remaining = _POLL_INTERVAL
            self._wait(min(remaining, _POLL_INTERVAL))


def _signal_child(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _set_task_id(index: int) -> None:
    # squall.process.task_id() answers "which worker am I?" for code that
    # shards work by worker, and autoreload relies on it to stay off in
    # workers; these workers are forked here rather than by fork_processes,
    # so record the id where task_id() reads it.
    from squall import process

    process._task_id = index
