"""Tests for squall.log: loggers, LogFormatter and the logging options."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from squall import log
from squall.log import LogFormatter, define_logging_options, enable_pretty_logging
from squall.options import OptionParser

SRC = str(Path(__file__).resolve().parent.parent / "src")
LINE_RE = re.compile(r"^\[(\w) (\d{6} \d{2}:\d{2}:\d{2}) test_log:(\d+)\] (.*)$", re.S)


def _record(msg: object, *args: object, level: int = logging.ERROR, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord("t", level, __file__, 42, msg, args, exc_info)  # type: ignore[arg-type]


def test_logger_names() -> None:
    assert log.access_log.name == "squall.access"
    assert log.app_log.name == "squall.application"
    assert log.gen_log.name == "squall.general"


def test_default_format_line() -> None:
    out = LogFormatter(color=False).format(_record("hello %s", "world"))
    m = LINE_RE.match(out)
    assert m is not None, out
    assert m.group(1) == "E"
    assert m.group(3) == "42"
    assert m.group(4) == "hello world"


def test_bytes_message_is_shown_as_repr() -> None:
    out = LogFormatter(color=False).format(_record(b"\xe9"))
    assert out.endswith("] b'\\xe9'")


def test_unicode_message() -> None:
    out = LogFormatter(color=False).format(_record("\u00e9"))
    assert out.endswith("] \u00e9")


def test_exception_with_undecodable_bytes_is_indented() -> None:
    try:
        raise ValueError(b"\xe9")
    except ValueError:
        record = _record("caught", exc_info=sys.exc_info())
    out = LogFormatter(color=False).format(record)
    first, *rest = out.split("\n")
    assert first.endswith("] caught")
    assert rest and all(line.startswith("    ") for line in rest)
    assert re.search(r"ValueError: b'\\xe9'", out)


def test_multiline_message_and_stack_info_are_indented() -> None:
    record = _record("one\ntwo")
    record.stack_info = "Stack (most recent call last):\n  here"
    out = LogFormatter(color=False).format(record)
    assert out.split("\n")[1:] == ["    two", "    Stack (most recent call last):", "      here"]


def test_bad_message_arguments_do_not_raise() -> None:
    out = LogFormatter(color=False).format(_record("%d", "not a number"))
    assert "Bad message" in out


def test_custom_fmt_datefmt_and_styles() -> None:
    record = _record("hi")
    assert LogFormatter(fmt="%(levelname)s|%(message)s", color=False).format(record) == "ERROR|hi"
    brace = LogFormatter(fmt="{levelname}:{message}:{asctime}", datefmt="%Y", style="{", color=False)
    assert re.fullmatch(r"ERROR:hi:\d{4}", brace.format(record))
    dollar = LogFormatter(fmt="${levelname}${color}${message}", style="$", color=False)
    assert dollar.format(record) == "ERRORhi"
    with pytest.raises(ValueError):
        LogFormatter(fmt="no fields here", style="{")


def test_no_colour_when_stderr_is_not_a_terminal() -> None:
    formatter = LogFormatter(color=True)
    assert "\033" not in formatter.format(_record("plain"))


@contextlib.contextmanager
def _stderr_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Swapped inside the test body: pytest re-installs its own capture of
    # sys.stderr between fixture set-up and the test call.
    primary, secondary = os.openpty()
    stream = os.fdopen(secondary, "w")
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr(sys, "stderr", stream)
    try:
        yield
    finally:
        monkeypatch.undo()
        stream.close()
        os.close(primary)


@pytest.mark.skipif(log.curses is None, reason="needs curses")
def test_colour_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    with _stderr_on_a_terminal(monkeypatch):
        default = LogFormatter()
        custom = LogFormatter(colors={logging.ERROR: 6})
        plain = LogFormatter(color=False)
    out = default.format(_record("coloured"))
    assert out.startswith("\033[31m[E ")  # red for errors
    reset = default._normal
    assert reset and reset in out and out.endswith(reset + " coloured")
    assert custom.format(_record("x")).startswith("\033[36m")
    # Levels without a colour, and color=False, print no escape codes.
    assert custom.format(_record("x", level=logging.INFO)).startswith("[I ")
    assert "\033" not in plain.format(_record("x"))


def _fresh(name: str) -> logging.Logger:
    logger = logging.Logger(name)
    logger.propagate = False
    return logger


def _close(logger: logging.Logger) -> None:
    for handler in logger.handlers:
        handler.close()


def test_enable_pretty_logging_size_rotated_file(tmp_path: Path) -> None:
    options = OptionParser()
    define_logging_options(options)
    options.log_file_prefix = str(tmp_path / "app.log")
    options.log_file_max_size = 200
    options.log_file_num_backups = 2
    logger = _fresh("size")
    enable_pretty_logging(options, logger)
    try:
        assert len(logger.handlers) == 1
        assert logger.level == logging.INFO
        for i in range(20):
            logger.error("line %d", i)
        logger.debug("too detailed")
    finally:
        _close(logger)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["app.log", "app.log.1", "app.log.2"]
    text = (tmp_path / "app.log").read_text("utf-8")
    assert re.search(r"^\[E [^]]*\] line 19$", text, re.M)
    assert "too detailed" not in text and "\033" not in text


def test_enable_pretty_logging_time_rotated_file(tmp_path: Path) -> None:
    options = OptionParser()
    define_logging_options(options)
    options.log_file_prefix = str(tmp_path / "t.log")
    options.log_rotate_mode = "time"
    options.log_rotate_when = "D"
    options.logging = "debug"
    logger = _fresh("time")
    enable_pretty_logging(options=options, logger=logger)
    try:
        assert isinstance(logger.handlers[0], logging.handlers.TimedRotatingFileHandler)
        logger.debug("hello")
    finally:
        _close(logger)
    assert re.match(r"^\[D [^]]*\] hello$", (tmp_path / "t.log").read_text("utf-8"))


def test_enable_pretty_logging_rejects_unknown_rotate_mode() -> None:
    options = OptionParser()
    define_logging_options(options)
    options.log_file_prefix = "unused"
    options.log_rotate_mode = "weekly"
    with pytest.raises(ValueError, match="'weekly'"):
        enable_pretty_logging(options, _fresh("bad"))


def test_enable_pretty_logging_none_leaves_logger_alone() -> None:
    options = OptionParser()
    define_logging_options(options)
    options.logging = "none"
    logger = _fresh("none")
    enable_pretty_logging(options, logger)
    assert logger.handlers == [] and logger.level == logging.NOTSET


def test_enable_pretty_logging_stderr_handler_rules(tmp_path: Path) -> None:
    options = OptionParser()
    define_logging_options(options)
    logger = _fresh("stderr")
    enable_pretty_logging(options, logger)
    assert [type(h) for h in logger.handlers] == [logging.StreamHandler]
    # With another destination, stderr is only added when asked for.
    options.log_file_prefix = str(tmp_path / "x.log")
    logger = _fresh("file-only")
    enable_pretty_logging(options, logger)
    assert len(logger.handlers) == 1
    _close(logger)
    options.log_to_stderr = True
    logger = _fresh("both")
    enable_pretty_logging(options, logger)
    assert len(logger.handlers) == 2
    _close(logger)


def test_define_logging_options_defaults() -> None:
    options = OptionParser()
    define_logging_options(options)
    assert options.logging == "info"
    assert options.log_to_stderr is None
    assert options.log_file_prefix is None
    assert options.log_file_max_size == 100 * 1000 * 1000
    assert options.log_file_num_backups == 10
    assert options.log_rotate_when == "midnight"
    assert options.log_rotate_interval == 1
    assert options.log_rotate_mode == "size"


def _logs_hello(statement: str, *args: str) -> bool:
    program = (
        "from squall.options import options, parse_command_line;"
        f"{statement};import logging; logging.info('hello')"
    )
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.run(
        [sys.executable, "-c", program, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout
    return b"hello" in proc.stdout


def test_parse_command_line_configures_logging_in_a_real_process() -> None:
    assert not _logs_hello("pass")
    assert _logs_hello("parse_command_line()")
    assert not _logs_hello("parse_command_line()", "--logging=None")
    assert not _logs_hello("options.logging = None; parse_command_line()")
    assert _logs_hello("options.logging = None; parse_command_line()", "--logging=info")
