"""Celery tasks for squall's offload tests, and a launcher for the real
``celery worker`` subprocess that runs them (solo pool, bounded start-up)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from celery import Celery
from celery.backends.filesystem import FilesystemBackend

# Seconds a worker may take to start and answer its first task: a fresh
# interpreter importing Celery on a loaded two-core machine.
WORKER_START_TIMEOUT = 60.0
# Seconds a worker may take to exit after SIGTERM (warm shutdown) before it is killed.
WORKER_STOP_TIMEOUT = 10.0

app = Celery("squall_test_tasks")
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_prefetch_multiplier=1,
)


def configure(broker_url: str, backend_url: str, files_dir: str) -> None:
    """Point the app at the broker and result backends (here and in the worker).

    ``file_add`` stores its results in ``files_dir`` with Celery's file-system
    backend, which has no pub/sub: it is the one awaited by polling.
    """
    app.conf.update(broker_url=broker_url, result_backend=backend_url)
    file_add.backend = FilesystemBackend(app=app, url="file://" + files_dir)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def slow_add(x: int, y: int, delay: float) -> int:
    time.sleep(delay)
    return x + y


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task
def file_add(x: int, y: int) -> int:
    return x + y


if "SQUALL_CELERY_BROKER" in os.environ:
    # In the worker: configured by the test that started it.
    configure(
        os.environ["SQUALL_CELERY_BROKER"],
        os.environ["SQUALL_CELERY_BACKEND"],
        os.environ["SQUALL_CELERY_FILES"],
    )


@contextlib.contextmanager
def worker(
    module: str, cwd: Path, env: Mapping[str, str], ping: Any, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``celery -A module worker`` (solo pool) in ``cwd`` with ``env`` added.

    Returns once ``ping()`` (which sends a task and returns its AsyncResult)
    has an answer; its output goes to ``log_path``, shown if it fails.
    """
    root = Path(__file__).resolve().parents[1]
    paths = [str(cwd), str(root / "src"), os.environ.get("PYTHONPATH", "")]
    full_env = dict(os.environ, **env, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    command = [
        sys.executable, "-m", "celery", "-A", module, "worker",
        "--pool=solo", "--concurrency=1", "--loglevel=WARNING",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "-n", f"squall-test-{uuid.uuid4().hex[:8]}@%h",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        result = ping()
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while not result.ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"celery worker did not start (exit {proc.poll()}):\n{log_path.read_text(errors='replace')}"
                )
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(WORKER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
