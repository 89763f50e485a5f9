"""A small wrk runner for squall's HTTP benchmarks, shared by the bench_* scripts.

What it does for a benchmark script:

* `ensure_wrk` finds ``wrk`` (installing Debian's package when run as root).
* `peers_python` returns the interpreter of ``benchmarks/.venv-peers``, a
  virtualenv for the *other* servers squall is compared with (Tornado,
  uvicorn, ...), created and filled with ``pip`` on first use so that peers
  never leak into squall's own environment.
* `Server` starts one server process pinned to a CPU core (``taskset``) and
  waits until it answers HTTP.
* `measure` runs ``wrk`` (pinned to another core) against every server in
  interleaved rounds (A B C, A B C, ...) so that a burst of load from other
  processes on a shared machine hits all servers alike, and reports the
  median of the rounds.
* `markdown_table` and `write_json` format the results.

Single numbers on a shared machine are noisy; compare ratios within one run.
Besides requests per second, each round records the CPU time the server
process spent per request (user + system, from ``/proc``): when other
processes compete for the server's core, throughput drops but CPU time per
request barely moves, so it is the steadier measure of a server's cost.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
PEERS_VENV = BENCH_DIR / ".venv-peers"
RESULTS_DIR = BENCH_DIR / "results"

# A server gets this long to start answering before the run is abandoned.
_STARTUP_TIMEOUT = 30.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_wrk() -> str:
    """Return the path of ``wrk``, installing it with apt-get if missing and
    running as root; raise `RuntimeError` otherwise."""
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        path = shutil.which("wrk")
        if path:
            return path
    raise RuntimeError("wrk is not installed (apt-get install wrk)")


def peers_python(packages: Sequence[str]) -> str:
    """Return the Python of ``benchmarks/.venv-peers`` with ``packages``
    installed (pip requirement strings), creating the virtualenv on first use.

    A stamp file records what was installed, so later runs start at once.
    """
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    stamp = PEERS_VENV / ".installed"
    wanted = sorted(packages)
    have = stamp.read_text().split("\n") if stamp.exists() else []
    if [p for p in wanted if p not in have]:
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *wanted],
            check=True,
        )
        stamp.write_text("\n".join(sorted(set(have) | set(wanted))))
    return str(python)


def has_taskset() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(argv: Sequence[str], core: Optional[int]) -> list[str]:
    """``argv`` run on CPU ``core`` (if taskset exists and there are cores to spare)."""
    if core is None or not has_taskset():
        return list(argv)
    return ["taskset", "-c", str(core), *argv]


@dataclass
class Server:
    """One server under test: ``argv`` must serve HTTP on ``port``."""

    name: str
    argv: list[str]
    port: int
    path: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self, core: Optional[int] = 0) -> None:
        env = dict(os.environ)
        env.update(self.env)
        self.process = subprocess.Popen(
            pinned(self.argv, core), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"{self.name} exited at startup:\n{err}")
            try:
                with urllib.request.urlopen(self.url, timeout=1) as response:
                    response.read()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.name} did not answer on {self.url}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        self.process = None
        stop_process(process)
        if process.stderr is not None:
            process.stderr.close()


def stop_process(process: "subprocess.Popen[Any]", timeout: float = 5) -> None:
    """Stop a process this harness started: SIGTERM, then SIGKILL if it has
    not exited after ``timeout`` seconds; waits for it either way."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Round:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    cpu_us_per_request: float = 0.0


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    rounds: list[Round]


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15.
    return (int(fields[11]) + int(fields[12])) / _TICKS


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s)", text.strip())
    if m is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(output: str) -> Round:
    """Pull requests/s, median and 99th-percentile latency and the error
    count out of ``wrk --latency`` output."""
    rps = float(re.search(r"Requests/sec:\s*([0-9.]+)", output).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if m:
        errors += sum(int(g) for g in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if m:
        errors += int(m.group(1))
    return Round(rps, p50, p99, errors, requests)


def run_wrk(
    url: str,
    duration: float,
    connections: int,
    threads: int = 1,
    core: Optional[int] = 1,
    script: Optional[str] = None,
    server_pid: Optional[int] = None,
) -> Round:
    """Run wrk once against ``url`` and return its numbers (with the CPU
    time per request of process ``server_pid``, if given)."""
    argv = [
        ensure_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        # wrk takes whole seconds.
        f"-d{max(1, round(duration))}s",
        "--latency",
    ]
    if script:
        argv += ["-s", script]
    argv.append(url)
    before = process_cpu_seconds(server_pid) if server_pid else 0.0
    out = subprocess.run(pinned(argv, core), check=True, capture_output=True, text=True).stdout
    result = parse_wrk(out)
    if server_pid and result.requests:
        spent = process_cpu_seconds(server_pid) - before
        result.cpu_us_per_request = spent / result.requests * 1e6
    return result


def measure(
    servers: Sequence[Server],
    rounds: int = 3,
    duration: float = 5.0,
    warmup: float = 1.0,
    connections: int = 64,
    server_core: Optional[int] = 0,
    client_core: Optional[int] = 1,
    log: bool = True,
) -> dict[str, Result]:
    """Benchmark ``servers`` in interleaved rounds; return the medians.

    Every server is started (on ``server_core``), warmed up, and then each
    round runs wrk once against each server in turn.
    """
    results: dict[str, list[Round]] = {s.name: [] for s in servers}
    try:
        for server in servers:
            server.start(server_core)
            if warmup:
                run_wrk(server.url, warmup, connections, core=client_core)
        for i in range(rounds):
            for server in servers:
                assert server.process is not None
                r = run_wrk(
                    server.url, duration, connections, core=client_core, server_pid=server.process.pid
                )
                results[server.name].append(r)
                if log:
                    print(
                        f"  round {i + 1}/{rounds} {server.name:<16} {r.rps:>10.0f} req/s"
                        f"  p99 {r.p99_ms:7.2f} ms  cpu {r.cpu_us_per_request:6.1f} us/req"
                        f"  errors {r.errors}",
                        file=sys.stderr,
                    )
    finally:
        for server in servers:
            server.stop()
    return {
        name: Result(
            name,
            statistics.median(r.rps for r in rs),
            statistics.median(r.p50_ms for r in rs),
            statistics.median(r.p99_ms for r in rs),
            statistics.median(r.cpu_us_per_request for r in rs),
            rs,
        )
        for name, rs in results.items()
    }


def markdown_table(results: dict[str, Result], subject: str, baselines: Sequence[str] = ()) -> str:
    """A markdown table of ``results``, with ``subject``'s throughput relative
    to each server (``subject / this``, req/s) and the same ratio computed
    from server CPU time per request (``this / subject``, CPU)."""
    subject = results[subject]  # type: ignore[assignment]
    lines = [
        f"| server | req/s (median) | p50 ms | p99 ms | CPU us/req | {subject.name} / this (req/s)"  # type: ignore[attr-defined]
        f" | {subject.name} / this (CPU) |",  # type: ignore[attr-defined]
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        ratio = subject.rps / r.rps if r.rps else float("nan")  # type: ignore[attr-defined]
        cpu_ratio = (
            r.cpu_us_per_request / subject.cpu_us_per_request  # type: ignore[attr-defined]
            if subject.cpu_us_per_request  # type: ignore[attr-defined]
            else float("nan")
        )
        lines.append(
            f"| {name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.cpu_us_per_request:.1f}"
            f" | {ratio:.2f} | {cpu_ratio:.2f} |"
        )
    return "\n".join(lines)


def write_json(name: str, payload: dict) -> Path:
    """Write ``payload`` (results converted with `dataclasses.asdict`) to
    ``benchmarks/results/<name>.json`` and return the path."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"

    def convert(value: object) -> object:
        if isinstance(value, Result):
            return asdict(value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    path.write_text(json.dumps(convert(payload), indent=2) + "\n")
    return path


def machine_info() -> dict[str, object]:
    """A few facts about the machine, recorded next to the numbers."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
