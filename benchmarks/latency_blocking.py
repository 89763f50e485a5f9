"""Does blocking work stall everyone else? The trivial endpoint's latency while a slow one is loaded.

    .venv/bin/python benchmarks/latency_blocking.py [--duration 10] [--slow-connections 8]

Each server (``benchmarks/apps/blocking_app.py``, pinned to CPU 0) has a
``/slow`` endpoint doing 50 ms of blocking work and a trivial ``/fast`` one.
One wrk (CPU 1) keeps ``--slow-connections`` requests to ``/slow`` in
flight; meanwhile a paced client (also CPU 1) requests ``/fast`` at a fixed
``--fast-rate`` over ``--fast-connections`` keep-alive connections and times
every answer from the moment the request was *due*, so a stalled loop shows
in full (no coordinated omission, unlike a closed-loop wrk whose own
requests wait while the server stalls); a request sent on schedule is timed
from when it was sent. Rows:

* ``squall executor``: the slow work goes through ``IOLoop.run_in_executor``,
  the way squall makes easy; target: ``/fast`` p99 < 5 ms;
* ``tornado inline``: the same work done inline, on the event loop, the
  classic Tornado failure: every fast request queues behind slow ones;
* ``squall inline`` and ``tornado executor`` for reference (it is where the
  work runs that matters, not which framework).

Results: ``benchmarks/results/latency_blocking.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness  # noqa: E402

APP = _harness.BENCH_DIR / "apps" / "blocking_app.py"
SERVER_CORE = 0
CLIENT_CORE = 1
# The target for the trivial endpoint's p99 under slow load.
TARGET_P99_MS = 5.0
# A paced request not answered within this long counts as an error.
_ANSWER_TIMEOUT = 10.0
# A paced client run may overrun its duration by this much before it is abandoned.
_RUN_SLACK = 30.0
ROWS = [
    ("squall", "executor"),
    ("tornado", "inline"),
    ("squall", "inline"),
    ("tornado", "executor"),
]


async def _paced(port: int, rate: float, connections: int, duration: float) -> dict[str, Any]:
    """GET /fast at ``rate`` per second over ``connections`` connections for
    ``duration`` seconds; latencies from each request's due time."""
    request = b"GET /fast HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    interval = connections / rate
    latencies: list[float] = []
    errors = 0

    async def one(offset: float, start: float) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        due = start + offset
        end = start + duration
        try:
            while due < end:
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                    # On schedule: the loop's timer may wake us late, which
                    # is the client's slack, not the server's.
                    sent = time.perf_counter()
                else:
                    # Behind schedule because answers came late: count from
                    # when the request was due.
                    sent = due
                writer.write(request)
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _ANSWER_TIMEOUT)
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                except (asyncio.TimeoutError, asyncio.IncompleteReadError, IndexError, ValueError):
                    errors += 1
                    return
                latencies.append(time.perf_counter() - sent)
                due += interval
                # A late answer makes the next requests due at once: the
                # backlog a stalled server built up is counted, not skipped.
        finally:
            writer.close()

    start = time.perf_counter() + 0.1
    await asyncio.gather(*(one(i * interval / connections, start) for i in range(connections)))
    ms = sorted(x * 1000.0 for x in latencies) or [float("nan")]
    return {
        "rps": len(latencies) / duration,
        "p50_ms": statistics.median(ms),
        "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        "max_ms": ms[-1],
        "errors": errors,
    }


def _paced_client(port: int, args: argparse.Namespace) -> dict[str, Any]:
    argv = [
        sys.executable,
        __file__,
        "--paced-client",
        str(port),
        "--fast-rate",
        str(args.fast_rate),
        "--fast-connections",
        str(args.fast_connections),
        "--duration",
        str(args.duration),
    ]
    out = subprocess.run(
        _harness.pinned(argv, CLIENT_CORE),
        check=True,
        capture_output=True,
        text=True,
        timeout=args.duration + _RUN_SLACK,
    ).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def run_row(framework: str, mode: str, python: str, args: argparse.Namespace) -> dict[str, Any]:
    port = _harness.free_port()
    server = _harness.Server(
        f"{framework}-{mode}",
        [python, str(APP), "--port", str(port), "--framework", framework, "--mode", mode],
        port,
        path="/fast",
    )
    server.start(SERVER_CORE)
    slow: dict[str, Any] = {}

    def load_slow() -> None:
        try:
            slow["round"] = _harness.run_wrk(
                f"http://127.0.0.1:{port}/slow",
                args.duration + 2,
                args.slow_connections,
                core=CLIENT_CORE,
            )
        except subprocess.CalledProcessError as e:
            slow["error"] = str(e)

    try:
        loader = threading.Thread(target=load_slow)
        loader.start()
        # Measure only while the slow load is on (it starts within a second).
        threading.Event().wait(1.0)
        fast = _paced_client(port, args)
        loader.join()
    finally:
        server.stop()
    slow_round = slow.get("round")
    return {
        "server": framework,
        "mode": mode,
        "fast_rps": fast["rps"],
        "fast_p50_ms": fast["p50_ms"],
        "fast_p99_ms": fast["p99_ms"],
        "fast_max_ms": fast["max_ms"],
        "fast_errors": fast["errors"],
        "slow_rps": slow_round.rps if slow_round else None,
        "slow_p99_ms": slow_round.p99_ms if slow_round else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of measurement per row")
    parser.add_argument("--slow-connections", type=int, default=8, help="slow requests kept in flight")
    parser.add_argument("--fast-connections", type=int, default=4, help="connections measuring /fast")
    parser.add_argument("--fast-rate", type=float, default=200.0, help="/fast requests per second")
    parser.add_argument("--paced-client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fast_rate <= 0 or args.fast_connections < 1 or args.duration <= 0:
        parser.error("--fast-rate, --fast-connections and --duration must be positive")
    if args.paced_client:
        result = asyncio.run(_paced(args.paced_client, args.fast_rate, args.fast_connections, args.duration))
        print(json.dumps(result))
        return
    _harness.ensure_wrk()
    peers = _harness.peers_python(["tornado==6.6.1"])
    results = []
    for framework, mode in ROWS:
        python = sys.executable if framework == "squall" else peers
        row = run_row(framework, mode, python, args)
        print(f"  {row}", file=sys.stderr, flush=True)
        results.append(row)
    lines = [
        f"/slow: {args.slow_connections} connections of 50 ms blocking work; /fast paced at "
        f"{args.fast_rate:g}/s over {args.fast_connections} connections for {args.duration:g} s.",
        "",
        "| server | slow work | /fast answered/s | /fast p50 ms | /fast p99 ms | /fast max ms | /slow req/s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        slow_rps = f"{r['slow_rps']:.0f}" if r["slow_rps"] is not None else "-"
        lines.append(
            f"| {r['server']} | {r['mode']} | {r['fast_rps']:,.0f} | {r['fast_p50_ms']:.2f} | "
            f"{r['fast_p99_ms']:.2f} | {r['fast_max_ms']:.2f} | {slow_rps} |"
        )
    squall = next(r for r in results if r["server"] == "squall" and r["mode"] == "executor")
    met = squall["fast_p99_ms"] < TARGET_P99_MS
    lines.append("")
    lines.append(
        f"{'met' if met else 'MISSED'}: squall (executor) /fast p99 {squall['fast_p99_ms']:.2f} ms "
        f"(target < {TARGET_P99_MS:g} ms)"
    )
    print("\n".join(lines))
    path = _harness.write_json(
        "latency_blocking", {"machine": _harness.machine_info(), "settings": vars(args), "results": results}
    )
    print(f"results: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
