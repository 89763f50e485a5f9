"""Seed scenario: a fire-and-forget gen.coroutine program from a blog post
prints the same lines under squall as under Tornado."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = """\
from {package} import gen, ioloop
@gen.coroutine
def dosth():
    print('dosth 222222222222222222222')
    yield gen.sleep(1)
    print('slept for 1 second 22222222')
    print('dosth over 2222222222222222')
@gen.coroutine
def test():
    print('test 111111111111111')
    dosth()
    print('test over 1111111111')
print('start')
ioloop.IOLoop.current().run_sync(test)
print('over')
"""

SRC = Path(__file__).resolve().parents[2] / "src"


def run_program(package):
    env = dict(os.environ, PYTHONPATH=str(SRC))
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(package=package)],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


def test_seed_program_matches_tornado():
    squall_out, squall_err = run_program("squall")
    # run_sync returns as soon as test() is done: dosth's sleep never ends.
    assert squall_out.splitlines() == [
        "start",
        "test 111111111111111",
        "dosth 222222222222222222222",
        "test over 1111111111",
        "over",
    ]
    assert squall_err == ""
    pytest.importorskip("tornado")
    tornado_out, _ = run_program("tornado")
    assert squall_out == tornado_out
