"""A global, typed configuration registry filled from the command line and
from Python config files.

Any module can declare the options it needs, next to the code that uses them::

    from squall.options import define, options

    define("port", default=8888, help="port to listen on")
    define("debug", default=False, group="application")

    def main() -> None:
        options.parse_command_line()
        app.listen(options.port)

An option's type comes from ``type=`` or else from its default (``str`` when
neither is given). Values are parsed from strings on the command line
(``--port=80``, ``--debug``) and may be set from a config file that is plain
Python (``port = 80``). Names are case-sensitive and ``-`` and ``_`` are
interchangeable: ``--log-file-prefix`` and ``options.log_file_prefix`` name
the same option.

Supported types: ``str``, ``int``, ``float``, ``bool`` (``true``/``false``,
``yes``/``no``, ``on``/``off``, ``1``/``0``, ``t``/``f``, ``y``/``n``; any
other word is an error rather than silently true), `datetime.datetime`,
`datetime.timedelta` (``"45s"``, ``"1h 30m"``, ``"250ms"``) and any callable
that builds a value from a string (e.g. a class). A value that cannot be
parsed raises `Error` (also a ``ValueError``) naming the option and the
value. With
``multiple=True`` the value is a list read from a comma-separated string;
integer lists also accept inclusive ranges (``1,3,5:7``).

Importing this module also defines the logging options of
`squall.log.define_logging_options`, and the final parse configures logging
unless ``--logging=none`` is given.
"""

from __future__ import annotations

import datetime
import numbers
import os
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from squall.escape import to_unicode
from squall.log import define_logging_options

__all__ = [
    "Error",
    "OptionParser",
    "options",
    "define",
    "parse_command_line",
    "parse_config_file",
    "print_help",
    "add_parse_callback",
]


class Error(Exception):
    """A misuse of the option registry: an unknown or duplicate option, or a
    value of the wrong type or that cannot be parsed."""


class _BadValueError(Error, ValueError):
    """A string that cannot be parsed as its option's type.

    Also a ``ValueError``, so code that caught the bare ``ValueError`` of a
    failed ``int()`` or ``float()`` conversion keeps working.
    """


# The file of this module, to tell definitions made by squall.options itself
# (the built-in ``help`` option) from those made by the application.
_OWN_FILE = sys._getframe(0).f_code.co_filename

# Layout of print_help: option names are padded to this column, and help
# text is wrapped to this width (an 80-column terminal).
_HELP_NAME_WIDTH = 30
_HELP_LINE_WIDTH = 79

# Date and time layouts accepted for datetime options, tried in order (the
# same list as Tornado's options module, so existing command lines parse).
_DATETIME_FORMATS = (
    "%a %b %d %H:%M:%S %Y",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y%m%d %H:%M:%S",
    "%Y%m%d %H:%M",
    "%Y-%m-%d",
    "%Y%m%d",
    "%H:%M:%S",
    "%H:%M",
)

# Units accepted in timedelta options, all spellings lower-case; a number
# without a unit is seconds.
_TIMEDELTA_UNITS = {
    **dict.fromkeys(("w", "week", "weeks"), "weeks"),
    **dict.fromkeys(("d", "day", "days"), "days"),
    **dict.fromkeys(("h", "hr", "hour", "hours"), "hours"),
    **dict.fromkeys(("m", "min", "minute", "minutes"), "minutes"),
    **dict.fromkeys(("", "s", "sec", "second", "seconds"), "seconds"),
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), "milliseconds"),
    **dict.fromkeys(("us", "microsecond", "microseconds"), "microseconds"),
}
# One "<number><unit>" term of a timedelta, e.g. "1.5h" or "30 s".
_TIMEDELTA_TERM_RE = re.compile(
    r"\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-zA-Z]*)\s*"
)

_TRUE_WORDS = frozenset(("true", "t", "1", "yes", "y", "on"))
_FALSE_WORDS = frozenset(("false", "f", "0", "no", "n", "off"))


def _parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE_WORDS | _FALSE_WORDS)}")


def _parse_datetime(text: str) -> datetime.datetime:
    for layout in _DATETIME_FORMATS:
        try:
            return datetime.datetime.strptime(text, layout)
        except ValueError:
            continue
    raise ValueError("unrecognized date/time format")


def _parse_timedelta(text: str) -> datetime.timedelta:
    if not text.strip():
        raise ValueError("empty duration")
    total = datetime.timedelta()
    pos = 0
    while pos < len(text):
        m = _TIMEDELTA_TERM_RE.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"cannot read a duration at {text[pos:]!r}")
        unit = _TIMEDELTA_UNITS.get(m.group(2).lower())
        if unit is None:
            raise ValueError(f"unknown time unit {m.group(2)!r}")
        total += datetime.timedelta(**{unit: float(m.group(1))})
        pos = m.end()
    return total


def _parse_str(text: str) -> str:
    return to_unicode(text)


_PARSERS: dict[Any, Callable[[str], Any]] = {
    bool: _parse_bool,
    datetime.datetime: _parse_datetime,
    datetime.timedelta: _parse_timedelta,
    str: _parse_str,
}


class _Unset:
    """Marks an option that was never given a value (its default applies)."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


class _Option:
    """One defined option: its metadata and current value."""

    def __init__(
        self,
        name: str,
        default: Any,
        type: type,
        help: str | None,
        metavar: str | None,
        multiple: bool,
        file_name: str,
        group_name: str,
        callback: Callable[[Any], None] | None,
    ) -> None:
        if default is None and multiple:
            default = []
        self.name = name
        self.default = default
        self.type = type
        self.help = help
        self.metavar = metavar
        self.multiple = multiple
        self.file_name = file_name
        self.group_name = group_name
        self.callback = callback
        self._value: Any = _UNSET

    def value(self) -> Any:
        return self.default if self._value is _UNSET else self._value

    def _convert(self, text: str) -> Any:
        parser = _PARSERS.get(self.type, self.type)
        try:
            return parser(text)
        except (ValueError, TypeError) as e:
            raise _BadValueError(
                f"Option {self.name!r}: cannot parse {text!r} as {self.type.__name__} ({e})"
            ) from e

    def parse(self, text: str) -> Any:
        """Set the value from its string form (command line or config file)."""
        if not self.multiple:
            value = self._convert(text)
        else:
            value = []
            integral = isinstance(self.type, type) and issubclass(self.type, numbers.Integral)
            for part in text.split(","):
                low, colon, high = part.partition(":")
                if integral and colon:
                    first, last = self._convert(low), self._convert(high)
                    if last < first:
                        raise _BadValueError(
                            f"Option {self.name!r}: range {part!r} ends before it starts"
                        )
                    value.extend(range(first, last + 1))
                else:
                    value.append(self._convert(part))
        self._value = value
        if self.callback is not None:
            self.callback(value)
        return self.value()

    def set(self, value: Any) -> None:
        """Set the value from a Python object, which must have the right type
        (or be None)."""
        if self.multiple:
            if not isinstance(value, list) or any(
                item is not None and not isinstance(item, self.type) for item in value
            ):
                raise Error(
                    f"Option {self.name!r} is required to be a list of "
                    f"{self.type.__name__}, not {value!r}"
                )
        elif value is not None and not isinstance(value, self.type):
            raise Error(
                f"Option {self.name!r} is required to be a {self.type.__name__} "
                f"({type(value)} given: {value!r})"
            )
        self._value = value
        if self.callback is not None:
            self.callback(value)


def _normalize_name(name: str) -> str:
    return name.replace("_", "-")


class OptionParser:
    """A collection of options, usually the global `options` instance.

    Options are read as attributes (``options.port``, always with
    underscores) or items (``options["log-file-prefix"]``, dashes or
    underscores). Assigning to a defined option checks its type and runs its
    callback; an unknown name raises ``AttributeError``. ``name in options``,
    iteration (over the names as defined), `items`, `as_dict`, `groups` and
    `group_dict` describe what is defined.

    Every parser has a ``help`` option: ``--help`` prints `print_help` to
    stderr and exits.
    """

    def __init__(self) -> None:
        # Stored through __dict__ because __setattr__ is reserved for options.
        self.__dict__["_options"] = {}
        self.__dict__["_parse_callbacks"] = []
        self.define(
            "help",
            type=bool,
            help="show this help information and exit",
            callback=self._help_callback,
        )

    def __getattr__(self, name: str) -> Any:
        # Read through __dict__: during copy or unpickling _options may not
        # exist yet, and self._options would recurse into __getattr__.
        option = self.__dict__.get("_options", {}).get(_normalize_name(name))
        if isinstance(option, _Option):
            return option.value()
        raise AttributeError(f"Unrecognized option {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        option = self._options.get(_normalize_name(name))
        if option is None:
            raise AttributeError(f"Unrecognized option {name!r}")
        option.set(value)

    def __iter__(self) -> Iterator[str]:
        return (option.name for option in self._options.values())

    def __contains__(self, name: str) -> bool:
        return _normalize_name(name) in self._options

    def __getitem__(self, name: str) -> Any:
        return self.__getattr__(name)

    def __setitem__(self, name: str, value: Any) -> None:
        self.__setattr__(name, value)

    def items(self) -> Iterable[tuple[str, Any]]:
        """``(name, value)`` pairs for all options."""
        return [(option.name, option.value()) for option in self._options.values()]

    def groups(self) -> set[str]:
        """The names of all option groups (a group defaults to the file that
        defined the option; options squall defines itself have group "")."""
        return {option.group_name for option in self._options.values()}

    def group_dict(self, group: str) -> dict[str, Any]:
        """``{name: value}`` for the options in ``group`` (all options when
        ``group`` is empty). Handy to pass a group as keyword arguments, e.g.
        ``Application(**options.group_dict("application"))``."""
        return {
            option.name: option.value()
            for option in self._options.values()
            if not group or option.group_name == group
        }

    def as_dict(self) -> dict[str, Any]:
        """``{name: value}`` for all options."""
        return {option.name: option.value() for option in self._options.values()}

    def define(
        self,
        name: str,
        default: Any = None,
        type: type | None = None,
        help: str | None = None,
        metavar: str | None = None,
        multiple: bool = False,
        group: str | None = None,
        callback: Callable[[Any], None] | None = None,
    ) -> None:
        """Define a new option.

        ``type`` is the value's type (``str``, ``int``, ``float``, ``bool``,
        ``datetime``, ``timedelta`` or any callable that parses a string);
        when omitted it is the type of ``default``, or ``str``. With
        ``multiple=True`` the value is a list of that type, given as a
        comma-separated string. ``help`` and ``metavar`` appear in
        `print_help`; ``group`` groups options there and for `group_dict`
        (the defining file by default). ``callback`` is called with the new
        value whenever the option is set or parsed.

        Raises `Error` when the name (with ``-`` and ``_`` treated alike) is
        already defined, naming the file that defined it first.
        """
        normalized = _normalize_name(name)
        existing = self._options.get(normalized)
        if existing is not None:
            where = existing.file_name or "squall.options"
            raise Error(f"Option {normalized!r} already defined in {where}")
        caller = sys._getframe(1)
        if caller.f_code.co_filename == _OWN_FILE and caller.f_code.co_name == "define":
            # Called through the module-level define(): the definer is its caller.
            caller = caller.f_back or caller
        file_name = caller.f_code.co_filename
        if file_name == _OWN_FILE:
            file_name = ""
        if type is None:
            type = default.__class__ if default is not None and not multiple else str
        self._options[normalized] = _Option(
            name,
            default=default,
            type=type,
            help=help,
            metavar=metavar,
            multiple=multiple,
            file_name=file_name,
            group_name=group or file_name,
            callback=callback,
        )

    def parse_command_line(
        self, args: list[str] | None = None, final: bool = True
    ) -> list[str]:
        """Parse options from ``args`` (``sys.argv`` by default; ``args[0]``
        is the program name and is skipped).

        Options are written ``--name=value``; a bool option may be given as
        just ``--name``. Parsing stops at the first argument that does not
        start with ``-``, or after ``--``; the remaining arguments are
        returned. An unknown option prints the help to stderr and raises
        `Error`, as does a value that cannot be parsed.

        When ``final`` is true (the default) the parse callbacks run
        afterwards (see `add_parse_callback`); pass False when another parse
        (e.g. of a config file) follows.
        """
        if args is None:
            args = sys.argv
        remaining: list[str] = []
        for index in range(1, len(args)):
            arg = args[index]
            if not arg.startswith("-"):
                remaining = args[index:]
                break
            if arg == "--":
                remaining = args[index + 1 :]
                break
            name, equals, value = arg.lstrip("-").partition("=")
            option = self._options.get(_normalize_name(name))
            if option is None:
                self.print_help()
                raise Error(f"Unrecognized command line option: {_normalize_name(name)!r}")
            if not equals:
                if option.type is not bool:
                    raise Error(f"Option {option.name!r} requires a value (--{name}=VALUE)")
                value = "true"
            option.parse(value)
        if final:
            self.run_parse_callbacks()
        return remaining

    def parse_config_file(self, path: str, final: bool = True) -> None:
        """Set options from the Python file at ``path``.

        The file is executed (UTF-8) with ``__file__`` set to its absolute
        path, and every global whose name is a defined option sets it. Other
        names are ignored, so the file may import and compute freely. A
        string value for an option of another type, or for a ``multiple``
        option, is parsed as on the command line; other values must have the
        option's type.

        ``final`` is as for `parse_command_line`.
        """
        config: dict[str, Any] = {"__file__": os.path.abspath(path)}
        with open(path, "rb") as f:
            source = f.read().decode("utf-8")
        exec(compile(source, path, "exec"), config, config)
        for name, value in config.items():
            option = self._options.get(_normalize_name(name))
            if option is None:
                continue
            if option.multiple and not isinstance(value, (list, str)):
                raise Error(
                    f"Option {option.name!r} is required to be a list of "
                    f"{option.type.__name__} or a comma-separated string, not {value!r}"
                )
            if isinstance(value, str) and (option.type is not str or option.multiple):
                option.parse(value)
            else:
                option.set(value)
        if final:
            self.run_parse_callbacks()

    def print_help(self, file: TextIO | None = None) -> None:
        """Print the usage line and every option, grouped, with its help and
        default, to ``file`` (stderr by default)."""
        out = sys.stderr if file is None else file
        print(f"Usage: {sys.argv[0] if sys.argv else 'program'} [OPTIONS]", file=out)
        print("\nOptions:\n", file=out)
        by_group: dict[str, list[_Option]] = {}
        for option in self._options.values():
            by_group.setdefault(option.group_name, []).append(option)
        for group_name, group in sorted(by_group.items()):
            if group_name:
                print(f"\n{os.path.normpath(group_name)} options:\n", file=out)
            for option in sorted(group, key=lambda o: o.name):
                self._print_option(option, out)
        print(file=out)

    @staticmethod
    def _print_option(option: _Option, out: TextIO) -> None:
        flag = "--" + _normalize_name(option.name)
        if option.metavar:
            flag += "=" + option.metavar
        description = option.help or ""
        if option.default is not None and option.default != "":
            description += f" (default {option.default})"
        indent = " " * (_HELP_NAME_WIDTH + 4)
        lines = textwrap.wrap(description, _HELP_LINE_WIDTH - len(indent)) or [""]
        if len(flag) > _HELP_NAME_WIDTH:
            print(f"  {flag}", file=out)
            first = indent + lines[0]
        else:
            first = f"  {flag:<{_HELP_NAME_WIDTH}}  {lines[0]}"
        print(first.rstrip(), file=out)
        for line in lines[1:]:
            print(indent + line, file=out)

    def _help_callback(self, value: bool) -> None:
        if value:
            self.print_help()
            sys.exit(0)

    def add_parse_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every final parse (of the command line
        or a config file), in the order the callbacks were added."""
        self._parse_callbacks.append(callback)

    def run_parse_callbacks(self) -> None:
        """Run the parse callbacks now (a final parse does this)."""
        for callback in list(self._parse_callbacks):
            callback()

    def mockable(self) -> _Mockable:
        """An object through which ``mock.patch.object`` can replace option
        values for a test and restore them afterwards::

            with mock.patch.object(options.mockable(), "port", 8080):
                ...

        (Patching the parser directly would not work: options are not
        ordinary attributes.) Use a new one for each patch.
        """
        return _Mockable(self)


class _Mockable:
    """Adapter for `OptionParser.mockable`: setting an attribute remembers the
    option's old value, deleting it restores that value (what
    ``mock.patch`` does on exit)."""

    def __init__(self, options: OptionParser) -> None:
        self.__dict__["_options"] = options
        self.__dict__["_originals"] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._options, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._originals:
            raise Error(f"mockable() object already patched {name!r}; use a new one")
        self._originals[name] = getattr(self._options, name)
        setattr(self._options, name, value)

    def __delattr__(self, name: str) -> None:
        setattr(self._options, name, self._originals.pop(name))


options = OptionParser()
"""The global option registry; the module-level functions act on it."""


def define(
    name: str,
    default: Any = None,
    type: type | None = None,
    help: str | None = None,
    metavar: str | None = None,
    multiple: bool = False,
    group: str | None = None,
    callback: Callable[[Any], None] | None = None,
) -> None:
    """Define an option in the global `options` (see `OptionParser.define`)."""
    options.define(
        name,
        default=default,
        type=type,
        help=help,
        metavar=metavar,
        multiple=multiple,
        group=group,
        callback=callback,
    )


def parse_command_line(args: list[str] | None = None, final: bool = True) -> list[str]:
    """Parse the global `options` from the command line (see
    `OptionParser.parse_command_line`)."""
    return options.parse_command_line(args, final=final)


def parse_config_file(path: str, final: bool = True) -> None:
    """Parse the global `options` from a config file (see
    `OptionParser.parse_config_file`)."""
    options.parse_config_file(path, final=final)


def print_help(file: TextIO | None = None) -> None:
    """Print the help for the global `options` (see `OptionParser.print_help`)."""
    options.print_help(file)


def add_parse_callback(callback: Callable[[], None]) -> None:
    """Add a parse callback to the global `options` (see
    `OptionParser.add_parse_callback`)."""
    options.add_parse_callback(callback)


define_logging_options(options)
