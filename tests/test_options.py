"""Tests for squall.options: defining, parsing, config files, help, mocking."""

from __future__ import annotations

import datetime
import io
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

import squall.options
from squall.options import Error, OptionParser

SRC = str(Path(__file__).resolve().parent.parent / "src")


class Email:
    """A custom option type: built from a string, rejects bad ones."""

    def __init__(self, value: str) -> None:
        if "@" not in value:
            raise ValueError("not an email address")
        self.value = value


def _typed() -> OptionParser:
    options = OptionParser()
    options.define("str", type=str)
    options.define("int", type=int)
    options.define("float", type=float)
    options.define("flag", type=bool)
    options.define("when", type=datetime.datetime)
    options.define("delay", type=datetime.timedelta)
    options.define("email", type=Email)
    options.define("ints", type=int, multiple=True)
    options.define("strs", type=str, multiple=True)
    return options


def test_type_is_inferred_from_default() -> None:
    options = OptionParser()
    options.define("port", default=80)
    options.define("ratio", default=0.5)
    options.define("debug", default=False)
    options.define("name")
    assert options.parse_command_line(["prog", "--port=443", "--ratio=2", "--debug", "--name=x"]) == []
    assert (options.port, options.ratio, options.debug, options.name) == (443, 2.0, True, "x")


def test_all_types_from_command_line() -> None:
    options = _typed()
    options.parse_command_line(
        [
            "prog",
            "--str=asdf",
            "--int=42",
            "--float=1.5",
            "--flag=false",
            "--when=2013-04-28 05:16",
            "--delay=1h 30s",
            "--email=a@b.c",
            "--ints=1,3,5:7",
            "--strs=a,b,c",
        ]
    )
    assert options.str == "asdf"
    assert options.int == 42
    assert options.float == 1.5
    assert options.flag is False
    assert options.when == datetime.datetime(2013, 4, 28, 5, 16)
    assert options.delay == datetime.timedelta(hours=1, seconds=30)
    assert isinstance(options.email, Email) and options.email.value == "a@b.c"
    assert options.ints == [1, 3, 5, 6, 7]
    assert options.strs == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45", datetime.timedelta(seconds=45)),
        ("45s", datetime.timedelta(seconds=45)),
        ("5m", datetime.timedelta(minutes=5)),
        ("1.5h", datetime.timedelta(minutes=90)),
        ("1h 30m", datetime.timedelta(minutes=90)),
        ("2d3h", datetime.timedelta(days=2, hours=3)),
        ("1 hours", datetime.timedelta(hours=1)),
        ("1w", datetime.timedelta(weeks=1)),
        ("250ms", datetime.timedelta(milliseconds=250)),
        ("10us", datetime.timedelta(microseconds=10)),
        ("-1h", datetime.timedelta(hours=-1)),
        ("2 MIN", datetime.timedelta(minutes=2)),
    ],
)
def test_timedelta_units(text: str, expected: datetime.timedelta) -> None:
    options = _typed()
    options.parse_command_line(["prog", f"--delay={text}"])
    assert options.delay == expected


@pytest.mark.parametrize(
    "text",
    ["Sun Apr 28 05:16:00 2013", "2013-04-28 05:16:00", "2013-04-28T05:16", "20130428 05:16", "2013-04-28", "20130428"],
)
def test_datetime_formats(text: str) -> None:
    options = _typed()
    options.parse_command_line(["prog", f"--when={text}"])
    assert options.when.date() == datetime.date(2013, 4, 28)


@pytest.mark.parametrize(("text", "value"), [("true", True), ("1", True), ("yes", True), ("on", True), ("False", False), ("0", False), ("f", False), ("no", False), ("off", False)])
def test_bool_words(text: str, value: bool) -> None:
    options = _typed()
    options.parse_command_line(["prog", f"--flag={text}"])
    assert options.flag is value


@pytest.mark.parametrize(
    ("arg", "names"),
    [
        ("--int=abc", ("'int'", "'abc'")),
        ("--float=x1", ("'float'", "'x1'")),
        ("--flag=maybe", ("'flag'", "'maybe'")),
        ("--delay=5x", ("'delay'", "'5x'")),
        ("--delay=", ("'delay'", "''")),
        ("--when=yesterday", ("'when'", "'yesterday'")),
        ("--email=nobody", ("'email'", "'nobody'")),
        ("--ints=1,x", ("'ints'", "'x'")),
        ("--ints=3:1", ("'ints'", "'3:1'")),
    ],
)
def test_bad_value_names_option_and_value(arg: str, names: tuple[str, str]) -> None:
    options = _typed()
    with pytest.raises(Error) as info:
        options.parse_command_line(["prog", arg])
    for name in names:
        assert name in str(info.value)
    # Still a ValueError, like the failed conversion it reports.
    assert isinstance(info.value, ValueError)


def test_value_required_and_unknown_option(capsys: pytest.CaptureFixture[str]) -> None:
    options = _typed()
    with pytest.raises(Error, match="'int' requires a value"):
        options.parse_command_line(["prog", "--int"])
    with pytest.raises(Error, match="Unrecognized command line option: 'nope'"):
        options.parse_command_line(["prog", "--nope=1"])
    assert "Usage:" in capsys.readouterr().err


def test_remaining_arguments_and_double_dash() -> None:
    base = OptionParser()
    base.define("verbose", default=False)
    sub = OptionParser()
    sub.define("foo", type=str)
    rest = base.parse_command_line(["prog", "--verbose", "subcommand", "--foo=bar"])
    assert rest == ["subcommand", "--foo=bar"] and base.verbose is True
    assert sub.parse_command_line(rest) == []
    assert sub.foo == "bar"
    assert base.parse_command_line(["prog", "--", "--verbose"]) == ["--verbose"]
    assert base.parse_command_line(["prog", "-verbose=0"]) == []
    assert base.verbose is False


def test_dash_and_underscore_are_interchangeable() -> None:
    for defined in ("foo-bar", "foo_bar"):
        for flag in ("--foo-bar=a", "--foo_bar=a"):
            options = OptionParser()
            options.define(defined)
            options.parse_command_line(["prog", flag])
            assert options.foo_bar == "a"
            assert options["foo-bar"] == options["foo_bar"] == "a"
            assert "foo-bar" in options and "foo_bar" in options
            assert "foo" not in options


def test_redefinition_names_the_first_definer() -> None:
    options = OptionParser()
    options.define("foo-bar")
    with pytest.raises(Error, match=r"Option 'foo-bar' already defined in .*test_options\.py"):
        options.define("foo_bar")
    with pytest.raises(Error, match="'help' already defined"):
        options.define("help")


def test_introspection_keeps_original_names() -> None:
    options = OptionParser()
    options.define("with-dash", default=1, group="g")
    options.define("with_underscore", default=2, group="g")
    options.define("plain", default=3)
    assert sorted(options) == ["help", "plain", "with-dash", "with_underscore"]
    assert dict(options.items()) == options.as_dict() == {
        "help": None,
        "plain": 3,
        "with-dash": 1,
        "with_underscore": 2,
    }
    assert options.groups() == {"g", "", __file__}
    assert options.group_dict("g") == {"with-dash": 1, "with_underscore": 2}
    assert options.group_dict(__file__) == {"plain": 3}
    assert options.group_dict("nonexistent") == {}
    assert len(options.group_dict("")) == 4


def test_attribute_and_item_assignment() -> None:
    seen: list[int] = []
    options = OptionParser()
    options.define("foo", default=1, callback=seen.append)
    options.define("many", type=int, multiple=True)
    options.foo = 2
    options["foo"] = 3
    assert options.foo == 3 and seen == [2, 3]
    options.foo = None
    assert options.foo is None
    with pytest.raises(Error, match="'foo' is required to be a int"):
        options.foo = "2"
    with pytest.raises(Error, match="list of int"):
        options.many = [1, "2"]
    assert options.many == []
    with pytest.raises(AttributeError, match="nope"):
        options.nope = 1
    with pytest.raises(AttributeError, match="nope"):
        options.nope  # noqa: B018


def test_parse_callbacks_run_on_final_parses_only() -> None:
    calls: list[str] = []
    options = OptionParser()
    options.add_parse_callback(lambda: calls.append("cb"))
    options.parse_command_line(["prog"], final=False)
    assert calls == []
    options.parse_command_line(["prog"])
    options.parse_command_line(["prog"])
    assert calls == ["cb", "cb"]
    options.run_parse_callbacks()
    assert calls == ["cb", "cb", "cb"]


def test_config_file_values_and_strings(tmp_path: Path) -> None:
    typed = tmp_path / "typed.cfg"
    typed.write_text(
        "import datetime\n"
        "str = '\u674e\u5eb7'\n"
        "int = 42\n"
        "when = datetime.datetime(2013, 4, 28)\n"
        "delay = datetime.timedelta(seconds=45)\n"
        "ints = [1, 2]\n"
        "unrelated = object()\n"
        "where = __file__\n",
        encoding="utf-8",
    )
    options = _typed()
    options.define("where")
    options.parse_config_file(str(typed))
    assert options.str == "\u674e\u5eb7"
    assert options.int == 42
    assert options.when == datetime.datetime(2013, 4, 28)
    assert options.delay == datetime.timedelta(seconds=45)
    assert options.ints == [1, 2]
    assert options.where == str(typed.resolve())

    strings = tmp_path / "strings.cfg"
    strings.write_text(
        "int = '7'\nflag = 'true'\ndelay = '2m'\nemail = 'x@y.z'\nints = '1:3'\nstrs = 'a,b'\nstr = '1,2'\nfoo_bar = 'a'\n"
    )
    options = _typed()
    options.define("foo-bar")
    options.parse_config_file(str(strings))
    assert (options.int, options.flag, options.delay) == (7, True, datetime.timedelta(minutes=2))
    assert options.email.value == "x@y.z"
    assert (options.ints, options.strs, options.str, options.foo_bar) == ([1, 2, 3], ["a", "b"], "1,2", "a")


def test_config_file_errors(tmp_path: Path) -> None:
    bad_list = tmp_path / "bad_list.cfg"
    bad_list.write_text("ints = 5\n")
    with pytest.raises(Error, match="'ints' is required to be a list of int"):
        _typed().parse_config_file(str(bad_list))
    bad_type = tmp_path / "bad_type.cfg"
    bad_type.write_text("float = [1]\n")
    with pytest.raises(Error, match="'float' is required to be a float"):
        _typed().parse_config_file(str(bad_type))
    calls: list[int] = []
    options = _typed()
    options.add_parse_callback(lambda: calls.append(1))
    empty = tmp_path / "empty.cfg"
    empty.write_text("")
    options.parse_config_file(str(empty), final=False)
    assert calls == []
    options.parse_config_file(str(empty))
    assert calls == [1]


def test_print_help_is_grouped_with_defaults() -> None:
    options = OptionParser()
    options.define("port", default=8888, help="port to listen on", group="server")
    options.define("with_underscore", help="x " * 60, metavar="THING", group="server")
    options.define("a_very_long_option_name_that_overflows", default="z")
    buf = io.StringIO()
    options.print_help(buf)
    text = buf.getvalue()
    assert text.startswith("Usage: ")
    assert "--port" in text and "port to listen on (default 8888)" in text
    assert "--with-underscore=THING" in text
    assert "\nserver options:\n" in text
    assert f"\n{os.path.normpath(__file__)} options:\n" in text
    assert "(default z)" in text
    assert "--help" in text and "show this help" in text
    assert "  --a-very-long-option-name-that-overflows\n" in text
    option_lines = [line for line in text.splitlines() if line.startswith("  ") and "overflows" not in line]
    assert option_lines and all(len(line) <= 79 for line in option_lines)


def test_help_flag_prints_and_exits(capsys: pytest.CaptureFixture[str]) -> None:
    options = OptionParser()
    with pytest.raises(SystemExit) as info:
        options.parse_command_line(["prog", "--help"])
    assert info.value.code == 0
    assert "Usage:" in capsys.readouterr().err


def test_mockable_patches_and_restores() -> None:
    options = OptionParser()
    options.define("foo", default=1)
    options.parse_command_line(["prog", "--foo=2"])
    with mock.patch.object(options.mockable(), "foo", 3):
        assert options.foo == 3
    assert options.foo == 2
    with mock.patch.object(options.mockable(), "foo", 4):
        options.foo = 5
        with mock.patch.object(options.mockable(), "foo", 6):
            assert options.foo == 6
        assert options.foo == 5
    assert options.foo == 2
    mockable = options.mockable()
    mockable.foo = 7
    with pytest.raises(Error, match="already patched"):
        mockable.foo = 8
    del mockable.foo
    assert options.foo == 2


def test_global_options_module_functions() -> None:
    program = (
        "import sys\n"
        "from squall.options import define, options, parse_command_line, add_parse_callback, print_help\n"
        "define('port', default=80, help='the port')\n"
        "add_parse_callback(lambda: print('callback', options.port))\n"
        "rest = parse_command_line(['prog', '--port=81', '--logging=none', 'x'])\n"
        "print('rest', rest)\n"
        "print_help(sys.stdout)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=SRC),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "callback 81" in proc.stdout and "rest ['x']" in proc.stdout
    assert "the port (default 80)" in proc.stdout
    assert "--log-file-prefix=PATH" in proc.stdout


def test_global_parse_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "g.cfg"
    cfg.write_text("logging = 'warning'\n")
    with mock.patch.object(squall.options.options.mockable(), "logging", "info"):
        squall.options.parse_config_file(str(cfg), final=False)
        assert squall.options.options.logging == "warning"


def test_parser_survives_copy() -> None:
    import copy

    options = OptionParser()
    options.define("port", default=1)
    clone = copy.copy(options)
    assert clone.port == 1
