"""Instructions per request: every server and endpoint of suite.py, counted by callgrind (deterministic).

    .venv/bin/python benchmarks/icount.py                        # all (~7 min)
    .venv/bin/python benchmarks/icount.py --only squall limit --endpoints plaintext websocket

Throughput on a shared machine moves by 2-3x between runs; the number of
user-space instructions a server executes per request does not. Each server
of ``suite.py`` (same apps, same peers virtualenv, same endpoints and request
bodies) runs under ``valgrind --tool=callgrind`` with ``PYTHONHASHSEED=0``;
one client connection per endpoint sends sequential keep-alive requests (for
``websocket``: after the upgrade, echo round trips of a masked 32-byte text
frame), each one once the server is idle again (blocked in its epoll wait,
read from ``/proc/<pid>/syscall``), so every request costs the same: one
wake-up of the loop, the request, and whatever follows its answer. After
``--warmup`` requests, callgrind's counters are read (``vgdb`` ``dump``)
around two phases, one of W requests and one of W + N; the difference
divided by N is the cost of one request, with whatever a phase costs besides
its requests (the wake-up for the dump itself) cancelled out.

Counted: everything the server process runs in user space (Python, uvloop,
httptools, libc). Not counted: kernel time (system calls, the loopback copy),
cache misses and stalls; and every instruction counts one, whatever it
costs. Under load a server wakes once for several requests, so these counts
are the single-client cost, at or above the per-request cost under load.
The first answer on every connection is checked like suite.py checks it,
every answer's status too, so a broken app cannot report a small number.

Writes ``benchmarks/results/icount.json`` and ``icount.md`` (also printed).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness  # noqa: E402
import suite  # noqa: E402

# Requests before the counted phases: enough for CPython's adaptive
# specialization (a few executions per code object) and every per-connection
# cache to settle.
_WARMUP = 50
# Requests the two counted phases differ by. What does not repeat exactly is
# work driven by the clock (uvicorn's once-a-second tick: more ticks in a
# longer phase) and where a full garbage collection falls; spread over this
# many requests, repeat runs agreed within 0.2% (uvicorn's WebSocket: 0.8%).
_REQUESTS = 1000
# Uninstrumented start-up is a few seconds; two valgrind processes and other
# work on a shared 2-core machine can stretch it a lot.
_STARTUP_TIMEOUT = 300.0
# One server's whole run (start-up, every endpoint, shutdown); Tornado, the
# slowest, needs a few minutes on the default counts.
_RUN_TIMEOUT = 1200.0
# A vgdb command is served within --max-invoke-ms (100 ms) once the server
# is idle; this allows for a loaded machine.
_VGDB_TIMEOUT = 120.0
# glibc copies and fills big blocks with ``rep movsb``/``rep stosb``, which
# callgrind counts once per byte: zeroing Tornado's 64 KiB read buffer
# (calloc) counted 65,536 instructions for about a microsecond of work. With
# these thresholds glibc uses its vector loops instead (32 bytes a store),
# whose count is in proportion to their cost. glibc >= 2.33 on x86-64;
# other systems ignore the variable.
_GLIBC_TUNABLES = "glibc.cpu.x86_rep_movsb_threshold=1000000000000:glibc.cpu.x86_rep_stosb_threshold=1000000000000"
# The system calls an event loop blocks in while it waits for I/O, by
# machine (Linux system call numbers: x86_64's syscall_64.tbl; aarch64 uses
# the generic table, which has only epoll_pwait). The stdlib loop calls
# epoll_wait, libuv (uvloop) epoll_pwait.
_EPOLL_WAITS = {"x86_64": (232, 281), "aarch64": (22,)}
# How often the server's state is sampled while waiting for it to go idle,
# and how many samples in a row must find it blocked: a wait that returns at
# once (an event already pending) lasts microseconds, anything the server
# does under valgrind takes far longer than two samples.
_IDLE_POLL_SECONDS = 0.0005
_IDLE_SAMPLES = 2
# The WebSocket message: 32 bytes of text, as the suite's load generator
# sends, masked with a fixed key (a client must mask, RFC 6455 section 5.3;
# fixed so that every run executes the same code on the same bytes).
_WS_PAYLOAD = b"squall-icount-websocket-echo-32b"
_WS_MASK = b"\x37\xfa\x21\x3d"
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
# The handshake key of RFC 6455 section 1.3's example.
_WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
# Bytes asked of the socket per read: a 1 MB answer in few calls.
_RECV_SIZE = 1 << 20
# Any answer head of these servers is far below this.
_MAX_HEAD = 64 * 1024


def _masked_frame(payload: bytes) -> bytes:
    masked = bytes(b ^ _WS_MASK[i % 4] for i, b in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + _WS_MASK + masked


def ensure_valgrind() -> tuple[str, str]:
    """Return the paths of ``valgrind`` and ``vgdb``, installing Debian's
    package when missing and running as root; raise `RuntimeError` otherwise."""
    if not shutil.which("valgrind") and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "valgrind"], check=True)
    valgrind, vgdb = shutil.which("valgrind"), shutil.which("vgdb")
    if not valgrind or not vgdb:
        raise RuntimeError("valgrind (with vgdb) is not installed: apt-get install valgrind")
    return valgrind, vgdb


def _epoll_waits() -> tuple[int, ...]:
    machine = platform.machine()
    if sys.platform != "linux" or machine not in _EPOLL_WAITS:
        raise RuntimeError(f"icount.py reads /proc/<pid>/syscall: Linux on {' or '.join(_EPOLL_WAITS)} only, not {sys.platform} {machine}")
    return _EPOLL_WAITS[machine]


class _Deadline:
    def __init__(self, seconds: float, what: str) -> None:
        self.end = time.monotonic() + seconds
        self.what = what

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{self.what} ran out of time")
        return left


class _Connection:
    """One blocking client connection that reads whole HTTP answers
    (Content-Length or chunked) or fixed-size WebSocket frames."""

    def __init__(self, port: int, deadline: _Deadline) -> None:
        self.deadline = deadline
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=deadline.left())
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.settimeout(self.deadline.left())
        self.sock.sendall(data)

    def _fill(self) -> None:
        self.sock.settimeout(self.deadline.left())
        data = self.sock.recv(_RECV_SIZE)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buf += data

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _read_line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            self._fill()
        return self.read_exact(end + 2)[:-2]

    def read_head(self) -> tuple[int, dict[str, str]]:
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > _MAX_HEAD:
                raise RuntimeError(f"answer head longer than {_MAX_HEAD} bytes: {bytes(self.buf[:200])!r}")
            self._fill()
        lines = self.read_exact(end + 4).decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or not status[1].isdigit():
            raise RuntimeError(f"not an HTTP answer: {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        return int(status[1]), headers

    def read_response(self) -> tuple[int, bytes]:
        status, headers = self.read_head()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self._read_line().split(b";")[0], 16):
                chunks.append(self.read_exact(size))
                self.read_exact(2)
            while self._read_line():
                pass
            return status, b"".join(chunks)
        if "content-length" not in headers:
            raise RuntimeError(f"answer {status} without Content-Length or chunked body")
        return status, self.read_exact(int(headers["content-length"]))


def _http_exchange(conn: _Connection, endpoint: suite.Endpoint, port: int) -> Callable[[], bytes]:
    head = f"{endpoint.method} {endpoint.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    if endpoint.body:
        head += f"Content-Type: application/octet-stream\r\nContent-Length: {len(endpoint.body)}\r\n"
    request = head.encode() + b"\r\n" + endpoint.body

    def exchange() -> bytes:
        conn.send(request)
        status, body = conn.read_response()
        if status != 200:
            raise RuntimeError(f"{endpoint.method} {endpoint.path} answered {status}: {body[:200]!r}")
        return body

    return exchange


def _websocket_exchange(conn: _Connection, endpoint: suite.Endpoint, port: int) -> Callable[[], bytes]:
    conn.send(
        f"GET {endpoint.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n".encode()
        + b"Sec-WebSocket-Key: " + _WS_KEY + b"\r\n\r\n"
    )
    status, headers = conn.read_head()
    accept = base64.b64encode(hashlib.sha1(_WS_KEY + _WS_GUID).digest()).decode()
    if status != 101 or headers.get("sec-websocket-accept") != accept:
        raise RuntimeError(f"WebSocket upgrade of {endpoint.path} failed: {status} {headers}")
    frame = _masked_frame(_WS_PAYLOAD)
    echo = bytes((0x81, len(_WS_PAYLOAD))) + _WS_PAYLOAD

    def exchange() -> bytes:
        conn.send(frame)
        got = conn.read_exact(len(echo))
        if got != echo:
            raise RuntimeError(f"WebSocket echo answered {got!r}, not {echo!r}")
        return got

    return exchange


@dataclass
class Count:
    """The counted phases of one endpoint on one server."""

    short: int
    long: int
    requests: int

    @property
    def per_request(self) -> float:
        return (self.long - self.short) / self.requests


class CountedServer:
    """One server process under callgrind (instrumentation switched on once
    it answers), whose instruction counter is read with vgdb."""

    def __init__(self, spec: suite.ServerSpec, python: str, static_dir: str, workdir: Path, tools: tuple[str, str]) -> None:
        self.spec = spec
        self.valgrind, self.vgdb = tools
        self.epoll_waits = _epoll_waits()
        self.python = python
        self.static_dir = static_dir
        # Chosen at start: servers queued behind others start minutes later.
        self.port = 0
        self.dir = workdir / spec.name
        self.dir.mkdir()
        self.out_file = self.dir / "callgrind.out"
        self.vgdb_prefix = str(self.dir / "vgdb")
        self.log_path = self.dir / "stderr.log"
        self.dumps = 0
        self.process: Optional[subprocess.Popen[bytes]] = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> None:
        self.port = _harness.free_port()
        argv = [
            self.valgrind,
            "--tool=callgrind",
            # Start-up (imports) runs uninstrumented, several times faster.
            "--instr-atstart=no",
            "--vgdb=yes",
            f"--vgdb-prefix={self.vgdb_prefix}",
            f"--callgrind-out-file={self.out_file}",
            self.python,
            str(suite.APPS_DIR / self.spec.app),
            "--port",
            str(self.port),
            "--static-dir",
            self.static_dir,
            *self.spec.args,
        ]
        env = dict(os.environ, PYTHONHASHSEED="0")
        env["GLIBC_TUNABLES"] = ":".join(filter(None, (env.get("GLIBC_TUNABLES"), _GLIBC_TUNABLES)))
        env.update(self.spec.env)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=_harness.REPO_DIR,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        deadline = _Deadline(_STARTUP_TIMEOUT, f"{self.spec.name} start-up")
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited at start-up (status {self.process.returncode})")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/plaintext", timeout=5) as response:
                    response.read()
                break
            except OSError:
                deadline.left()
                time.sleep(0.2)
        self._command("instrumentation", "on")

    def _command(self, *words: str) -> None:
        assert self.process is not None
        done = subprocess.run(
            [self.vgdb, f"--pid={self.process.pid}", f"--vgdb-prefix={self.vgdb_prefix}", *words],
            capture_output=True,
            text=True,
            timeout=_VGDB_TIMEOUT,
        )
        if done.returncode:
            raise RuntimeError(f"vgdb {' '.join(words)} failed ({done.returncode}): {done.stdout}{done.stderr}")

    def wait_idle(self, deadline: _Deadline) -> None:
        """Return once the server's main thread is blocked waiting for I/O
        (an epoll wait with a timeout other than zero), its work done."""
        assert self.process is not None
        path = Path(f"/proc/{self.process.pid}/syscall")
        seen = 0
        while True:
            fields = path.read_text().split()
            # "nr arg1 ... arg6 sp pc" in a system call; the timeout is arg4.
            blocked = fields[0].isdigit() and int(fields[0]) in self.epoll_waits and int(fields[4], 16) != 0
            seen = seen + 1 if blocked else 0
            if seen >= _IDLE_SAMPLES:
                return
            deadline.left()
            time.sleep(_IDLE_POLL_SECONDS)

    def read_counter(self, deadline: _Deadline) -> int:
        """Instructions executed since the last read (a callgrind dump zeroes
        the counters), read once the server is idle."""
        self.wait_idle(deadline)
        self._command("dump")
        self.dumps += 1
        path = Path(f"{self.out_file}.{self.dumps}")
        match = re.search(r"^summary:\s*(\d+)", path.read_text(errors="replace"), re.M)
        if match is None:
            raise RuntimeError(f"no instruction count in callgrind's dump {path}")
        path.unlink()
        return int(match.group(1))

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            # valgrind writes its last dump on the way out: give it time.
            _harness.stop_process(process, timeout=60)


def _commit() -> str:
    """The repository's commit, marked when src/ differs from it (squall's
    numbers are those of the working tree)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=_harness.REPO_DIR, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=_harness.REPO_DIR, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} + uncommitted src changes" if dirty else head


def count_endpoint(server: CountedServer, endpoint: suite.Endpoint, warmup: int, requests: int, deadline: _Deadline) -> Count:
    """Check ``endpoint``'s first answer, warm up, then count two phases.

    Every request is sent once the server is idle, so each one costs the
    same: one wake-up of the loop, the request, and the work that follows its
    answer. (Sent as soon as the answer is in, the next request would race
    that work, and the count would depend on timing: repeat runs of Tornado
    differed by 1-2%, a pause of a few milliseconds moved it by 15%.)
    """
    conn = _Connection(server.port, deadline)
    try:
        exchange = (_websocket_exchange if endpoint.websocket else _http_exchange)(conn, endpoint, server.port)

        def run(n: int) -> None:
            for _ in range(n):
                server.wait_idle(deadline)
                exchange()

        first = exchange()
        if not endpoint.check(first):
            raise RuntimeError(f"{server.spec.name} answers {endpoint.path} wrongly: {first[:200]!r}")
        run(warmup - 1)
        server.read_counter(deadline)
        run(warmup)
        short = server.read_counter(deadline)
        run(warmup + requests)
        long = server.read_counter(deadline)
    finally:
        conn.close()
    return Count(short, long, requests)


_print_lock = threading.Lock()


def _say(text: str) -> None:
    with _print_lock:
        print(text, file=sys.stderr, flush=True)


def count_server(server: CountedServer, endpoints: Sequence[suite.Endpoint], args: argparse.Namespace) -> dict[str, Count]:
    """Start ``server`` under callgrind, count every endpoint, stop it."""
    deadline = _Deadline(args.timeout, f"{server.spec.name} run")
    started = time.monotonic()
    counts: dict[str, Count] = {}
    try:
        server.start()
        _say(f"  {server.spec.name:<15} up after {time.monotonic() - started:.0f} s")
        for endpoint in endpoints:
            count = count_endpoint(server, endpoint, args.warmup, args.requests, deadline)
            counts[endpoint.name] = count
            _say(f"  {server.spec.name:<15} {endpoint.name:<10} {count.per_request:>12,.0f} instructions/request")
    except Exception as exc:
        why = f"no result within --timeout {args.timeout:g} s ({exc})" if isinstance(exc, TimeoutError) else str(exc)
        raise RuntimeError(f"{server.spec.name}: {why}\n--- server stderr (last lines) ---\n{server.log_tail()}") from exc
    finally:
        server.stop()
    _say(f"  {server.spec.name:<15} done in {time.monotonic() - started:.0f} s")
    return counts


def markdown(counts: dict[str, dict[str, Count]], names: Sequence[str], endpoints: Sequence[str]) -> str:
    """The table of instructions per request, then each server's count / squall's."""
    def cell(endpoint: str, name: str) -> str:
        count = counts.get(name, {}).get(endpoint)
        return f"{count.per_request:,.0f}" if count else "failed"

    out = [
        "User-space instructions per request (websocket: per echoed message) in the server process.",
        "",
        "| endpoint | " + " | ".join(names) + " |",
        "| --- |" + " ---: |" * len(names),
    ]
    out += [f"| {e} | " + " | ".join(cell(e, n) for n in names) + " |" for e in endpoints]
    others = [n for n in names if n != "squall"]
    if "squall" in names and others:
        out += [
            "",
            "Each server's instructions per request / squall's (above 1: squall executes fewer).",
            "",
            "| endpoint | " + " | ".join(others) + " |",
            "| --- |" + " ---: |" * len(others),
        ]
        for endpoint in endpoints:
            base = counts.get("squall", {}).get(endpoint)
            values = []
            for name in others:
                count = counts.get(name, {}).get(endpoint)
                values.append(f"{count.per_request / base.per_request:.2f}" if count and base else "-")
            out.append(f"| {endpoint} | " + " | ".join(values) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(suite.SERVERS), metavar="SERVER", help=f"servers to count (default: {' '.join(suite.DEFAULT_SERVERS)}; also tornado-uvloop)")
    parser.add_argument("--endpoints", nargs="+", choices=list(suite.ENDPOINTS), metavar="ENDPOINT", help=f"endpoints to count (default: all of {' '.join(suite.ENDPOINTS)})")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="servers counted at once, one valgrind each (default 2)")
    parser.add_argument("--warmup", type=int, default=_WARMUP, help=f"requests before counting, also the short phase (default {_WARMUP})")
    parser.add_argument("--requests", type=int, default=_REQUESTS, help=f"requests the two counted phases differ by (default {_REQUESTS})")
    parser.add_argument("--timeout", type=float, default=_RUN_TIMEOUT, help=f"seconds one server's run may take (default {_RUN_TIMEOUT:g})")
    args = parser.parse_args()
    if args.jobs < 1 or args.warmup < 1 or args.requests < 1 or args.timeout <= 0:
        parser.error(f"-j, --warmup and --requests must be >= 1 and --timeout > 0 (got {args.jobs}, {args.warmup}, {args.requests}, {args.timeout})")

    try:
        tools = ensure_valgrind()
        _epoll_waits()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        sys.exit(f"icount.py: {exc}")
    peers_python = _harness.peers_python(suite.PEERS)
    names = args.only or suite.DEFAULT_SERVERS
    endpoints = [suite.ENDPOINTS[e] for e in (args.endpoints or suite.ENDPOINTS)]
    info = _harness.machine_info()
    found = suite.versions(peers_python, wrk=False)
    found["valgrind"] = subprocess.run([tools[0], "--version"], capture_output=True, text=True).stdout.strip()
    found["squall commit"] = _commit()

    counts: dict[str, dict[str, Count]] = {}
    errors: dict[str, str] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="squall-icount-") as tmp:
        workdir = Path(tmp)
        static_dir = workdir / "static"
        static_dir.mkdir()
        (static_dir / suite.STATIC_NAME).write_bytes(suite.static_bytes())
        servers = [
            CountedServer(suite.SERVERS[name], sys.executable if suite.SERVERS[name].squall else peers_python, str(static_dir), workdir, tools)
            for name in names
        ]
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            jobs = {pool.submit(count_server, server, endpoints, args): server.spec.name for server in servers}
            try:
                for job in concurrent.futures.as_completed(jobs):
                    try:
                        counts[jobs[job]] = job.result()
                    except Exception as exc:  # one broken server must not lose the others' counts
                        errors[jobs[job]] = str(exc)
                        _say(f"FAILED {exc}")
            except BaseException:
                # Interrupted: stop the running servers, which ends their
                # clients' connections, and drop the queued ones.
                for job in jobs:
                    job.cancel()
                for server in servers:
                    server.stop()
                raise
    elapsed = time.monotonic() - started

    endpoint_names = [e.name for e in endpoints]
    header = (
        f"{info['time']}, {info['cpu']} ({info['cpus']} CPUs), Python {info['python']}; "
        f"callgrind, PYTHONHASHSEED=0, one keep-alive connection per endpoint: {args.warmup} warm-up requests, "
        f"then (phase of {args.warmup + args.requests} - phase of {args.warmup}) / {args.requests}; "
        f"{elapsed / 60:.1f} min with -j {args.jobs}.\n"
        "Versions: " + ", ".join(f"{k} {v}" for k, v in found.items()) + "\n"
    )
    report = header + "\n" + markdown(counts, names, endpoint_names) + "\n"
    if errors:
        report += "\nFailed:\n\n```\n" + "\n\n".join(errors.values()) + "\n```\n"
    print(report)
    suite.RESULTS_DIR.mkdir(exist_ok=True)
    (suite.RESULTS_DIR / "icount.md").write_text(report)
    payload = {
        "machine": info,
        "versions": found,
        "settings": vars(args),
        "elapsed_s": round(elapsed, 1),
        "results": {
            endpoint: {
                name: {
                    "instructions_per_request": round(c.per_request),
                    "short_phase": c.short,
                    "long_phase": c.long,
                    "requests": c.requests,
                }
                for name in names
                if (c := counts.get(name, {}).get(endpoint))
            }
            for endpoint in endpoint_names
        },
        "errors": errors,
    }
    (suite.RESULTS_DIR / "icount.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"results: {suite.RESULTS_DIR / 'icount.json'}, {suite.RESULTS_DIR / 'icount.md'}", file=sys.stderr)
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
