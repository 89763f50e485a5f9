"""squall's benchmark suite: the same endpoints on every server, one command, one table.

    .venv/bin/python benchmarks/suite.py                      # full run (~15 min)
    .venv/bin/python benchmarks/suite.py --duration 2 --rounds 1 \\
        --only squall tornado --endpoints plaintext json        # quick look
    .venv/bin/python benchmarks/suite.py --profile squall/plaintext   # py-spy profile

Servers (``benchmarks/apps/``; all answer the endpoints in ``apps/_common.py``):

* ``squall``: squall's full ``web.Application``/``RequestHandler`` stack on uvloop;
* ``squall-asyncio``: the same app on the stdlib asyncio loop (``SQUALL_LOOP=asyncio``);
* ``tornado``: the *same handler code* on Tornado 6.6.1 (its default asyncio loop);
* ``tornado-uvloop``: Tornado on uvloop (not in the default set; ``--only``);
* ``starlette``: Starlette on uvicorn (httptools + uvloop);
* ``asgi-raw``: a hand-written ASGI callable on uvicorn (httptools + uvloop);
* ``aiohttp``: aiohttp.web on uvloop;
* ``limit``: an httptools + uvloop protocol answering canned bytes, the ceiling.

Peers are installed by pip into ``benchmarks/.venv-peers`` on first use (squall
runs from ``src/`` with this interpreter). Every server process is pinned to
CPU 0 and the load generator to CPU 1 (``taskset``): ``wrk`` for HTTP (installed
with apt-get when missing), ``benchmarks/_wsload.py`` for WebSocket echo.
Rounds are interleaved (each round runs every endpoint on every server), so a
burst of load from elsewhere on the machine hits all servers alike; each cell
is the median of the rounds. Every server's answers are checked before any
load is put on it, so no server is fast by answering wrong.

Besides throughput, every run records the server process's CPU time per
request (``/proc``): when other processes take the cores, throughput drops
but CPU time per request barely moves, so the CPU ratios are the steadier
comparison on a shared machine.

Writes ``benchmarks/results/suite.json`` and ``suite.md`` (the tables, also
printed), and with ``--profile`` ``profile-<server>-<endpoint>.txt`` (py-spy's
collapsed stacks summarised per function).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness  # noqa: E402

BENCH_DIR = _harness.BENCH_DIR
APPS_DIR = BENCH_DIR / "apps"
RESULTS_DIR = _harness.RESULTS_DIR
sys.path.insert(0, str(APPS_DIR))

from _common import ITEMS, JSON_MESSAGE, PLAINTEXT  # noqa: E402

PEERS = [
    "tornado==6.6.1",
    "uvicorn[standard]",
    "uvloop",
    "httptools",
    "starlette",
    "jinja2",
    "aiohttp",
    "py-spy",
]
PEER_DISTRIBUTIONS = ["tornado", "uvicorn", "uvloop", "httptools", "starlette", "jinja2", "aiohttp", "websockets"]

SERVER_CORE = 0
CLIENT_CORE = 1
# The sizes: a 10 KB request body for the echo, a 1 MB static file.
ECHO_BODY = (b"squall-bench-" * 788)[:10_240]
STATIC_SIZE = 1_048_576
STATIC_NAME = "1mb.bin"
USER_PATH = "/user/42?name=squall"
# A load run may take this much longer than asked (wrk start/stop, slow
# connection set-up) before it is abandoned.
_RUN_SLACK = 30.0
# Below this many seconds a wrk run mostly measures its own start-up.
_MIN_DURATION = 1.0


@dataclass(frozen=True)
class Endpoint:
    """One endpoint: how to request it and how to tell a right answer."""

    name: str
    path: str
    check: Callable[[bytes], bool]
    method: str = "GET"
    body: bytes = b""
    websocket: bool = False


def _page_ok(body: bytes) -> bool:
    # Every item rendered once and escaped; whitespace may differ by engine.
    return body.count(b"<li>item ") == len(ITEMS) and b"&lt;b&gt;&amp;amp; friends" in body


def static_bytes() -> bytes:
    """The static file's content: the same 1 MB on every run, and
    incompressible (nothing in the path compresses it)."""
    import random

    return random.Random(1_000_000).randbytes(STATIC_SIZE)


ENDPOINTS = {
    e.name: e
    for e in (
        Endpoint("plaintext", "/plaintext", lambda b: b == PLAINTEXT),
        Endpoint("json", "/json", lambda b: json.loads(b) == JSON_MESSAGE),
        Endpoint("params", USER_PATH, lambda b: b == b"user 42 name squall"),
        Endpoint("echo-10k", "/echo", lambda b: b == ECHO_BODY, method="POST", body=ECHO_BODY),
        Endpoint("static-1m", f"/static/{STATIC_NAME}", lambda b: b == static_bytes()),
        Endpoint("template", "/template", _page_ok),
        Endpoint("websocket", "/ws", lambda b: True, websocket=True),
    )
}


@dataclass(frozen=True)
class ServerSpec:
    name: str
    app: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    squall: bool = False


SERVERS = {
    s.name: s
    for s in (
        ServerSpec("squall", "tornado_api.py", ("--framework", "squall"), squall=True),
        ServerSpec(
            "squall-asyncio",
            "tornado_api.py",
            ("--framework", "squall"),
            (("SQUALL_LOOP", "asyncio"),),
            squall=True,
        ),
        ServerSpec("tornado", "tornado_api.py", ("--framework", "tornado")),
        ServerSpec("tornado-uvloop", "tornado_api.py", ("--framework", "tornado", "--uvloop")),
        ServerSpec("starlette", "starlette_app.py"),
        ServerSpec("asgi-raw", "asgi_raw.py"),
        ServerSpec("aiohttp", "aiohttp_app.py"),
        ServerSpec("limit", "limit.py"),
    )
}
DEFAULT_SERVERS = ["squall", "squall-asyncio", "tornado", "starlette", "asgi-raw", "aiohttp", "limit"]
# Servers that are not squall and not the synthetic ceiling: the peers the
# p99 target is read against.
PYTHON_PEERS = ("tornado", "tornado-uvloop", "starlette", "asgi-raw", "aiohttp")

# The throughput targets: squall (full stack) over each peer, per
# HTTP endpoint and for WebSocket echo.
HTTP_TARGETS = {"tornado": 5.0, "starlette": 1.5, "asgi-raw": 1.0}
WS_TARGETS = {"tornado": 3.0, "aiohttp": 1.2}


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    # CPU time (user + system) the server spent per request or message.
    cpu_us: float = float("nan")


@dataclass
class Cell:
    """The rounds of one endpoint on one server, and their medians."""

    samples: list[Sample] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return statistics.median(s.rps for s in self.samples) if self.samples else float("nan")

    @property
    def p99_ms(self) -> float:
        return statistics.median(s.p99_ms for s in self.samples) if self.samples else float("nan")

    @property
    def cpu_us(self) -> float:
        return statistics.median(s.cpu_us for s in self.samples) if self.samples else float("nan")

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.samples)


class Server:
    """One server process, pinned, with its output kept in a log file
    (a pipe nobody reads could fill up and stall the server)."""

    def __init__(self, spec: ServerSpec, python: str, static_dir: str, log_dir: Path) -> None:
        self.spec = spec
        self.port = _harness.free_port()
        self.argv = [
            python,
            str(APPS_DIR / spec.app),
            "--port",
            str(self.port),
            "--static-dir",
            static_dir,
            *spec.args,
        ]
        self.log_path = log_dir / f"{spec.name}.log"
        self.process: Optional[subprocess.Popen[bytes]] = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        env = dict(os.environ)
        env.update(self.spec.env)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                _harness.pinned(self.argv, SERVER_CORE),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30.0
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited at start-up:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url("/plaintext"), timeout=1) as response:
                    response.read()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.spec.name} did not answer on port {self.port}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            _harness.stop_process(process)

    def server_pid(self) -> int:
        """The PID of the Python process (taskset execs, so it is the same)."""
        assert self.process is not None
        return self.process.pid


def _fetch(server: Server, endpoint: Endpoint) -> bytes:
    request = urllib.request.Request(
        server.url(endpoint.path),
        data=endpoint.body or None,
        method=endpoint.method,
        headers={"Content-Type": "application/octet-stream"} if endpoint.body else {},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def _check_websocket(server: Server) -> None:
    # A short load run doubles as the check: it fails on a bad handshake.
    result = _ws_load(server, duration=0.2, warmup=0.0, connections=1, window=1)
    if result.errors or result.rps <= 0:
        raise RuntimeError(f"{server.spec.name}: WebSocket echo does not work ({result})")


def check_answers(server: Server, endpoints: Sequence[Endpoint]) -> None:
    """Raise unless ``server`` answers every endpoint right."""
    for endpoint in endpoints:
        if endpoint.websocket:
            _check_websocket(server)
            continue
        body = _fetch(server, endpoint)
        if not endpoint.check(body):
            raise RuntimeError(f"{server.spec.name} answers {endpoint.path} wrongly: {body[:200]!r}")


def _ws_load(server: Server, duration: float, warmup: float, connections: int, window: int) -> Sample:
    argv = [
        sys.executable,
        str(BENCH_DIR / "_wsload.py"),
        "--port",
        str(server.port),
        "--connections",
        str(connections),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
        "--window",
        str(window),
    ]
    out = subprocess.run(
        _harness.pinned(argv, CLIENT_CORE),
        check=True,
        capture_output=True,
        text=True,
        timeout=duration + warmup + _RUN_SLACK,
    ).stdout
    numbers = json.loads(out)
    return Sample(numbers["msgs_per_s"], numbers["p50_ms"], numbers["p99_ms"], numbers["errors"])


def _cpu_seconds(server: Server) -> float:
    return _harness.process_cpu_seconds(server.server_pid())


def _wrk_script(endpoint: Endpoint, directory: Path) -> Optional[str]:
    if not endpoint.body:
        return None
    body_file = directory / f"{endpoint.name}.body"
    body_file.write_bytes(endpoint.body)
    script = directory / f"{endpoint.name}.lua"
    script.write_text(
        f'wrk.method = "{endpoint.method}"\n'
        'wrk.headers["Content-Type"] = "application/octet-stream"\n'
        f'local f = io.open("{body_file}", "rb")\n'
        "wrk.body = f:read(\"*all\")\n"
        "f:close()\n"
    )
    return str(script)


def _load(server: Server, endpoint: Endpoint, args: argparse.Namespace, duration: float, scripts: dict[str, Optional[str]]) -> Sample:
    if endpoint.websocket:
        before = _cpu_seconds(server)
        sample = _ws_load(server, duration, 0.0, args.ws_connections, args.ws_window)
        # The client counts over ``duration`` after its connections are up;
        # the CPU time also covers the handshakes, a negligible share.
        messages = sample.rps * duration
        if messages:
            sample.cpu_us = (_cpu_seconds(server) - before) / messages * 1e6
        return sample
    r = _harness.run_wrk(
        server.url(endpoint.path),
        duration,
        args.connections,
        core=CLIENT_CORE,
        script=scripts[endpoint.name],
        server_pid=server.server_pid(),
    )
    return Sample(r.rps, r.p50_ms, r.p99_ms, r.errors, r.cpu_us_per_request)


def run_suite(servers: Sequence[Server], endpoints: Sequence[Endpoint], args: argparse.Namespace, workdir: Path) -> dict[str, dict[str, Cell]]:
    """Start, check, warm and measure every server; interleaved rounds."""
    scripts = {e.name: _wrk_script(e, workdir) for e in endpoints}
    cells = {e.name: {s.spec.name: Cell() for s in servers} for e in endpoints}
    for server in servers:
        server.start()
        check_answers(server, endpoints)
    if args.warmup > 0:
        for endpoint in endpoints:
            for server in servers:
                _load(server, endpoint, args, args.warmup, scripts)
    for i in range(args.rounds):
        for endpoint in endpoints:
            for server in servers:
                sample = _load(server, endpoint, args, args.duration, scripts)
                cells[endpoint.name][server.spec.name].samples.append(sample)
                print(
                    f"  round {i + 1}/{args.rounds} {endpoint.name:<10} {server.spec.name:<15}"
                    f" {sample.rps:>10.0f}/s  p99 {sample.p99_ms:8.2f} ms  cpu {sample.cpu_us:7.1f} us"
                    f"  errors {sample.errors}",
                    file=sys.stderr,
                    flush=True,
                )
    return cells


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def targets_report(cells: dict[str, dict[str, Cell]]) -> tuple[list[str], list[dict[str, object]]]:
    """The issue's targets, each met or missed, as text lines and records."""
    lines: list[str] = []
    records: list[dict[str, object]] = []
    for endpoint, row in cells.items():
        if "squall" not in row:
            continue
        squall = row["squall"]
        targets = WS_TARGETS if ENDPOINTS[endpoint].websocket else HTTP_TARGETS
        for peer, target in targets.items():
            if peer not in row:
                continue
            ratio = _ratio(squall.rps, row[peer].rps)
            met = ratio >= target
            records.append({"endpoint": endpoint, "vs": peer, "ratio": round(ratio, 3), "target": target, "met": met})
            cpu_ratio = _ratio(row[peer].cpu_us, squall.cpu_us)
            records[-1]["cpu_ratio"] = round(cpu_ratio, 3)
            lines.append(
                f"{'met ' if met else 'MISS'} {endpoint:<10} squall/{peer:<10} {ratio:5.2f}x (target >= {target}x);"
                f" by CPU time {cpu_ratio:5.2f}x"
            )
        peers = [row[p].p99_ms for p in PYTHON_PEERS if p in row]
        if peers:
            best = min(peers)
            met = squall.p99_ms <= best
            records.append({"endpoint": endpoint, "vs": "best peer p99", "squall_p99_ms": squall.p99_ms, "best_peer_p99_ms": best, "met": met})
            lines.append(f"{'met ' if met else 'MISS'} {endpoint:<10} p99 {squall.p99_ms:.2f} ms vs best Python peer {best:.2f} ms")
    return lines, records


def markdown(cells: dict[str, dict[str, Cell]], names: Sequence[str]) -> str:
    """Tables: throughput, p99 and server CPU time per endpoint and server;
    then squall's ratio to each, by throughput and by CPU time."""
    out = [
        "Requests/s (WebSocket: echoed messages/s), median of the rounds; below it the p99 latency (ms)"
        " and the server's CPU time per request (µs, user + system).",
        "",
        "| endpoint | " + " | ".join(names) + " |",
        "| --- |" + " ---: |" * len(names),
    ]
    for endpoint, row in cells.items():
        values = []
        for name in names:
            cell = row[name]
            flag = " (errors)" if cell.errors else ""
            values.append(f"{cell.rps:,.0f}<br>p99 {cell.p99_ms:.1f}<br>{cell.cpu_us:.0f} µs{flag}")
        out.append(f"| {endpoint} | " + " | ".join(values) + " |")
    if "squall" in names:
        others = [n for n in names if n != "squall"]
        out += [
            "",
            "squall (full stack, uvloop) / each server, requests/s; a target from the issue in brackets.",
            "",
            "| endpoint | " + " | ".join(others) + " |",
            "| --- |" + " ---: |" * len(others),
        ]
        for endpoint, row in cells.items():
            targets = WS_TARGETS if ENDPOINTS[endpoint].websocket else HTTP_TARGETS
            values = []
            for name in others:
                ratio = _ratio(row["squall"].rps, row[name].rps)
                target = targets.get(name)
                mark = f" [{'ok' if ratio >= target else 'miss'} >={target}]" if target else ""
                values.append(f"{ratio:.2f}{mark}")
            out.append(f"| {endpoint} | " + " | ".join(values) + " |")
        out += [
            "",
            "The same by CPU cost: each server's CPU time per request / squall's (steadier than"
            " throughput when other processes compete for the cores).",
            "",
            "| endpoint | " + " | ".join(others) + " |",
            "| --- |" + " ---: |" * len(others),
        ]
        for endpoint, row in cells.items():
            values = [f"{_ratio(row[name].cpu_us, row['squall'].cpu_us):.2f}" for name in others]
            out.append(f"| {endpoint} | " + " | ".join(values) + " |")
    return "\n".join(out)


def versions(peers_python: str, wrk: bool = True) -> dict[str, str]:
    """Installed versions of the peers and squall's own (and wrk's, if ``wrk``)."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "v = {}\n"
        "for d in sys.argv[1:]:\n"
        "    try: v[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(v))\n"
    )
    found = json.loads(subprocess.run([peers_python, "-c", code, *PEER_DISTRIBUTIONS], check=True, capture_output=True, text=True).stdout)
    sys.path.insert(0, str(_harness.REPO_DIR / "src"))
    import squall

    found["squall"] = squall.version
    try:
        import uvloop

        found["uvloop (squall)"] = uvloop.__version__
    except ImportError:
        pass
    if wrk:
        found["wrk"] = subprocess.run([_harness.ensure_wrk(), "-v"], capture_output=True, text=True).stdout.split("\n")[0].strip()
    return found


# --- profiling ----------------------------------------------------------------

# py-spy samples this often (Hz): 2.5x its default for more samples per
# run, still a small fraction of a core for py-spy itself.
_PROFILE_RATE = 250
# Functions listed per table in the profile summary.
_PROFILE_TOP = 30


def summarize_collapsed(text: str, top: int = _PROFILE_TOP) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed
    stacks (``frame;frame;... count`` lines, leaf last)."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return "no samples\n"
    out = [f"{total} samples\n", "self%   incl%   function (file:line)"]
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"{100 * count / total:5.1f}  {100 * inclusive[frame] / total:6.1f}   {frame}")
    out += ["", "incl%   function (file:line)"]
    for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"{100 * count / total:6.1f}   {frame}")
    return "\n".join(out) + "\n"


def profile(server: Server, endpoint: Endpoint, args: argparse.Namespace, peers_python: str, workdir: Path) -> Path:
    """Record ``server`` with py-spy while ``endpoint`` is under load; write the summary."""
    py_spy = Path(peers_python).parent / "py-spy"
    scripts = {endpoint.name: _wrk_script(endpoint, workdir)}
    raw = workdir / "profile.collapsed"
    server.start()
    try:
        check_answers(server, [endpoint])
        if args.warmup > 0:
            _load(server, endpoint, args, args.warmup, scripts)
        recorder = subprocess.Popen(
            [
                str(py_spy),
                "record",
                "--pid",
                str(server.server_pid()),
                "--format",
                "raw",
                "--rate",
                str(_PROFILE_RATE),
                "--duration",
                str(max(1, round(args.duration))),
                "--output",
                str(raw),
                "--nonblocking",
                # One entry per function (its first line), not per line.
                "--function",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        sample = _load(server, endpoint, args, args.duration, scripts)
        _, err = recorder.communicate(timeout=args.duration + _RUN_SLACK)
        if recorder.returncode:
            raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')}")
    finally:
        server.stop()
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"profile-{server.spec.name}-{endpoint.name}.txt"
    header = f"{server.spec.name} {endpoint.name}: {sample.rps:,.0f}/s under load while profiled\n"
    path.write_text(header + summarize_collapsed(raw.read_text()))
    shutil.copy(raw, path.with_suffix(".collapsed"))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported (default 3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring, per endpoint and server")
    parser.add_argument("--only", nargs="+", choices=sorted(SERVERS), metavar="SERVER", help=f"servers to run (default: {' '.join(DEFAULT_SERVERS)}; also tornado-uvloop)")
    parser.add_argument("--endpoints", nargs="+", choices=list(ENDPOINTS), metavar="ENDPOINT", help=f"endpoints to run (default: all of {' '.join(ENDPOINTS)})")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--ws-connections", type=int, default=64, help="WebSocket clients (default 64)")
    parser.add_argument("--ws-window", type=int, default=1, help="messages each WebSocket client keeps in flight (default 1)")
    parser.add_argument("--profile", metavar="SERVER/ENDPOINT", help="instead of the suite: py-spy profile of one server under one endpoint's load")
    args = parser.parse_args()
    if args.duration < _MIN_DURATION or args.rounds < 1:
        parser.error(f"--duration must be >= {_MIN_DURATION} and --rounds >= 1 (got {args.duration}, {args.rounds})")

    _harness.ensure_wrk()
    peers_python = _harness.peers_python(PEERS)
    pythons = {name: sys.executable if spec.squall else peers_python for name, spec in SERVERS.items()}

    with tempfile.TemporaryDirectory(prefix="squall-bench-") as tmp:
        workdir = Path(tmp)
        static_dir = workdir / "static"
        static_dir.mkdir()
        (static_dir / STATIC_NAME).write_bytes(static_bytes())
        RESULTS_DIR.mkdir(exist_ok=True)
        log_dir = RESULTS_DIR / "logs"
        log_dir.mkdir(exist_ok=True)

        def make(name: str) -> Server:
            return Server(SERVERS[name], pythons[name], str(static_dir), log_dir)

        if args.profile:
            name, _, endpoint_name = args.profile.partition("/")
            if name not in SERVERS or endpoint_name not in ENDPOINTS:
                parser.error(f"--profile wants SERVER/ENDPOINT from {sorted(SERVERS)} and {list(ENDPOINTS)}, not {args.profile!r}")
            path = profile(make(name), ENDPOINTS[endpoint_name], args, peers_python, workdir)
            print(path.read_text())
            print(f"profile: {path}", file=sys.stderr)
            return

        names = args.only or DEFAULT_SERVERS
        endpoints = [ENDPOINTS[e] for e in (args.endpoints or ENDPOINTS)]
        servers = [make(name) for name in names]
        info = _harness.machine_info()
        found = versions(peers_python)
        started = time.monotonic()
        try:
            cells = run_suite(servers, endpoints, args, workdir)
        finally:
            for server in servers:
                server.stop()
        elapsed = time.monotonic() - started

    info["loadavg_after"] = os.getloadavg()
    table = markdown(cells, names)
    lines, records = targets_report(cells)
    header = (
        f"{info['time']}, {info['cpu']} ({info['cpus']} CPUs), Python {info['python']}; "
        f"servers on CPU {SERVER_CORE}, load generator on CPU {CLIENT_CORE}; "
        f"{args.rounds} rounds x {args.duration:g} s, {args.connections} connections "
        f"({args.ws_connections} WebSocket clients, {args.ws_window} in flight each); "
        f"load average before/after {tuple(round(x, 2) for x in info['loadavg'])}"  # type: ignore[union-attr]
        f" / {tuple(round(x, 2) for x in info['loadavg_after'])}.\n"
        "Versions: " + ", ".join(f"{k} {v}" for k, v in found.items()) + "\n"
    )
    report = header + "\n" + table + "\n\nTargets:\n\n```\n" + "\n".join(lines) + "\n```\n"
    print(report)
    (RESULTS_DIR / "suite.md").write_text(report)
    payload = {
        "machine": info,
        "versions": found,
        "settings": {k: v for k, v in vars(args).items() if k != "profile"},
        "elapsed_s": round(elapsed, 1),
        "results": {
            endpoint: {
                name: {
                    "rps": cell.rps,
                    "p99_ms": cell.p99_ms,
                    "cpu_us": cell.cpu_us,
                    "errors": cell.errors,
                    "rounds": [vars(s) for s in cell.samples],
                }
                for name, cell in row.items()
            }
            for endpoint, row in cells.items()
        },
        "targets": records,
    }
    (RESULTS_DIR / "suite.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"results: {RESULTS_DIR / 'suite.json'}, {RESULTS_DIR / 'suite.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
