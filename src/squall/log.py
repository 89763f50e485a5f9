"""Logging set-up: squall's loggers, a readable (coloured) formatter, and
command-line options that configure the root logger.

squall logs to three standard :mod:`logging` loggers, so applications route
them like any other:

* ``squall.access``: one line per HTTP request served.
* ``squall.application``: errors from application code (uncaught exceptions
  in handlers and callbacks).
* ``squall.general``: everything else squall itself has to say (protocol
  errors from peers, internal warnings).

Nothing is printed until logging is configured: call
`enable_pretty_logging` (``squall.options.parse_command_line`` does it by
default), or configure :mod:`logging` yourself.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from squall.escape import to_unicode

if TYPE_CHECKING:
    from squall.options import OptionParser

curses: ModuleType | None
try:
    import curses
except ImportError:  # Windows, or Python built without curses
    curses = None

colorama: ModuleType | None
try:
    import colorama
except ImportError:
    colorama = None

__all__ = [
    "access_log",
    "app_log",
    "gen_log",
    "LogFormatter",
    "enable_pretty_logging",
    "define_logging_options",
]

access_log = logging.getLogger("squall.access")
app_log = logging.getLogger("squall.application")
gen_log = logging.getLogger("squall.general")

# ANSI select-graphic-rendition sequences used when the terminal database is
# not available (e.g. colorama on Windows): "2;3N" is a faint foreground
# colour N, "0" resets.
_ANSI_COLOR = "\033[2;3%dm"
_ANSI_RESET = "\033[0m"

# Log rotation modes understood by enable_pretty_logging.
_ROTATE_BY_SIZE = "size"
_ROTATE_BY_TIME = "time"


def _stderr_supports_color() -> bool:
    """Whether sys.stderr is a terminal that understands colour codes."""
    try:
        if hasattr(sys.stderr, "isatty") and sys.stderr.isatty():
            if curses is not None:
                # Ask about the terminal we will write to (the default fd is
                # stdout's, which may be redirected while stderr is not).
                curses.setupterm(fd=sys.stderr.fileno())
                if curses.tigetnum("colors") > 0:
                    return True
            elif colorama is not None:
                wrapped = getattr(colorama.initialise, "wrapped_stderr", None)
                if sys.stderr is wrapped:
                    return True
    except Exception:
        # A broken or unknown terminal (curses.error, no TERM...) just means
        # no colour; it must never stop logging from being set up.
        return False
    return False


def _safe_text(value: Any) -> str:
    """``value`` as text; undecodable bytes are shown as their repr."""
    try:
        return to_unicode(value)
    except UnicodeDecodeError:
        return repr(value)


class LogFormatter(logging.Formatter):
    """The log formatter squall installs: one compact line per record,
    coloured by level when the output is a colour terminal.

    The default format looks like ``[I 240101 12:00:00 web:2405] 200 GET /``:
    the level's first letter, the date and time, the module and line number,
    then the message. Tracebacks and multi-line messages are indented under
    their record, so each record stays visually one block.

    Arguments:

    * ``fmt``: the format string, with two extra fields ``color`` and
      ``end_color`` that switch the terminal colour on and off (empty when
      colour is not used). The default is `DEFAULT_FORMAT`.
    * ``datefmt``: the ``time.strftime`` format for ``asctime``
      (`DEFAULT_DATE_FORMAT` by default).
    * ``style``: ``"%"``, ``"{"`` or ``"$"``, as for `logging.Formatter`;
      ``fmt`` must be written in that style.
    * ``color``: use colour when stderr is a colour terminal. Pass False
      for files and pipes.
    * ``colors``: the colour number (0-7, curses numbering) for each logging
      level; `DEFAULT_COLORS` by default.

    Records whose message is undecodable bytes, or whose exception carries
    such bytes, are still formatted (the bytes appear as their repr).
    """

    DEFAULT_FORMAT = (
        "%(color)s[%(levelname)1.1s %(asctime)s %(module)s:%(lineno)d]%(end_color)s %(message)s"
    )
    DEFAULT_DATE_FORMAT = "%y%m%d %H:%M:%S"
    DEFAULT_COLORS = {
        logging.DEBUG: 4,  # blue
        logging.INFO: 2,  # green
        logging.WARNING: 3,  # yellow
        logging.ERROR: 1,  # red
        logging.CRITICAL: 5,  # magenta
    }

    def __init__(
        self,
        fmt: str = DEFAULT_FORMAT,
        datefmt: str = DEFAULT_DATE_FORMAT,
        style: str = "%",
        color: bool = True,
        colors: dict[int, int] = DEFAULT_COLORS,
    ) -> None:
        super().__init__(fmt, datefmt, style)  # type: ignore[arg-type]
        self._colors: dict[int, str] = {}
        self._normal = ""
        if color and _stderr_supports_color():
            self._colors, self._normal = self._color_codes(colors)

    @staticmethod
    def _color_codes(colors: dict[int, int]) -> tuple[dict[int, str], str]:
        """The escape sequence for each level and the reset sequence."""
        if curses is not None:
            set_fg = curses.tigetstr("setaf") or curses.tigetstr("setf") or b""
            codes = {
                level: curses.tparm(set_fg, number).decode("ascii")
                for level, number in colors.items()
            }
            return codes, (curses.tigetstr("sgr0") or b"").decode("ascii")
        return {level: _ANSI_COLOR % number for level, number in colors.items()}, _ANSI_RESET

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record``; never raises for a bad message."""
        try:
            record.message = _safe_text(record.getMessage())
        except Exception as e:
            # A bad format string or arguments should be visible in the log,
            # not crash the caller or vanish.
            record.message = f"Bad message ({e!r}): {record.__dict__!r}"
        record.asctime = self.formatTime(record, self.datefmt)
        color = self._colors.get(record.levelno)
        if color is None:
            record.color = record.end_color = ""
        else:
            record.color = color
            record.end_color = self._normal
        formatted = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        extra: list[str] = []
        if record.exc_text:
            extra.extend(_safe_text(line) for line in record.exc_text.split("\n"))
        if record.stack_info:
            extra.extend(self.formatStack(record.stack_info).split("\n"))
        if extra:
            formatted = "\n".join([formatted.rstrip(), *extra])
        return formatted.replace("\n", "\n    ")


def enable_pretty_logging(
    options: OptionParser | None = None, logger: logging.Logger | None = None
) -> None:
    """Configure ``logger`` (the root logger by default) from ``options``.

    ``options`` defaults to the global ``squall.options.options`` and must
    hold the options `define_logging_options` defines. Sets the level from
    ``--logging`` (nothing is done at all when it is ``none``), adds a
    rotating file handler when ``--log_file_prefix`` is given, and a coloured
    stderr handler when ``--log_to_stderr`` is true or (by default) when the
    logger has no other handler.

    Raises ``ValueError`` when ``--log_rotate_mode`` is neither ``size`` nor
    ``time``.
    """
    if options is None:
        from squall.options import options as global_options

        options = global_options
    level = options.logging
    if level is None or level.lower() == "none":
        return
    if logger is None:
        logger = logging.getLogger()
    logger.setLevel(getattr(logging, level.upper()))
    if options.log_file_prefix:
        mode = options.log_rotate_mode
        channel: logging.Handler
        if mode == _ROTATE_BY_SIZE:
            channel = logging.handlers.RotatingFileHandler(
                filename=options.log_file_prefix,
                mode="a",
                maxBytes=options.log_file_max_size,
                backupCount=options.log_file_num_backups,
                encoding="utf-8",
            )
        elif mode == _ROTATE_BY_TIME:
            channel = logging.handlers.TimedRotatingFileHandler(
                filename=options.log_file_prefix,
                when=options.log_rotate_when,
                interval=options.log_rotate_interval,
                backupCount=options.log_file_num_backups,
                encoding="utf-8",
            )
        else:
            raise ValueError(
                f"The value of log_rotate_mode option should be {_ROTATE_BY_SIZE!r} "
                f"or {_ROTATE_BY_TIME!r}, not {mode!r}."
            )
        channel.setFormatter(LogFormatter(color=False))
        logger.addHandler(channel)
    if options.log_to_stderr or (options.log_to_stderr is None and not logger.handlers):
        stderr_channel = logging.StreamHandler()
        stderr_channel.setFormatter(LogFormatter())
        logger.addHandler(stderr_channel)


def define_logging_options(options: OptionParser | None = None) -> None:
    """Define the logging options on ``options`` (the global
    ``squall.options.options`` by default) and have `enable_pretty_logging`
    run when its command line or config file is parsed.

    The options: ``logging`` (level, or ``none`` to leave logging alone),
    ``log_to_stderr``, ``log_file_prefix``, ``log_file_max_size``,
    ``log_file_num_backups``, ``log_rotate_mode`` (``size`` or ``time``),
    ``log_rotate_when`` and ``log_rotate_interval``.
    """
    if options is None:
        from squall.options import options as global_options

        options = global_options
    options.define(
        "logging",
        default="info",
        help="Minimum level to log; 'none' leaves the logging configuration alone.",
        metavar="debug|info|warning|error|none",
    )
    options.define(
        "log_to_stderr",
        type=bool,
        default=None,
        help="Send log output to stderr (colourised when possible). By default "
        "this happens only when no other log destination is configured.",
    )
    options.define(
        "log_file_prefix",
        type=str,
        default=None,
        metavar="PATH",
        help="Path of the log file; rotated files get a numeric or date suffix.",
    )
    options.define(
        "log_file_max_size",
        type=int,
        default=100 * 1000 * 1000,
        help="Size in bytes at which the log file is rotated (rotate mode 'size').",
    )
    options.define(
        "log_file_num_backups",
        type=int,
        default=10,
        help="Number of rotated log files to keep.",
    )
    options.define(
        "log_rotate_when",
        type=str,
        default="midnight",
        help="Unit of log_rotate_interval for rotate mode 'time': one of "
        "'S', 'M', 'H', 'D', 'W0'-'W6' or 'midnight' (see "
        "logging.handlers.TimedRotatingFileHandler).",
    )
    options.define(
        "log_rotate_interval",
        type=int,
        default=1,
        help="Number of log_rotate_when units between rotations (rotate mode 'time').",
    )
    options.define(
        "log_rotate_mode",
        type=str,
        default=_ROTATE_BY_SIZE,
        help="Rotate the log file by 'size' or by 'time'.",
    )
    options.add_parse_callback(lambda: enable_pretty_logging(options))
