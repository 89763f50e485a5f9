"""Tests for squall.util."""

import asyncio
import datetime
import errno
import gzip
import re
import sys
import zlib

import pytest

import squall.escape
from squall.util import (
    _websocket_mask,
    ArgReplacer,
    Configurable,
    GzipDecompressor,
    ObjectDict,
    TimeoutError,
    errno_from_exception,
    exec_in,
    import_object,
    raise_exc_info,
    re_unescape,
    timedelta_to_seconds,
)


def test_object_dict_attribute_access():
    d = ObjectDict(a=1)
    assert d.a == 1
    d.b = 2
    assert d["b"] == 2
    with pytest.raises(AttributeError):
        d.missing
    assert getattr(d, "missing", "default") == "default"


class Shape(Configurable):
    @classmethod
    def configurable_base(cls):
        return Shape

    @classmethod
    def configurable_default(cls):
        return Square

    def initialize(self, size=1, color="black"):
        self.size = size
        self.color = color


class Square(Shape):
    pass


class Circle(Shape):
    pass


@pytest.fixture
def restore_shape():
    saved = Shape._save_configuration()
    yield
    Shape._restore_configuration(saved)


def test_configurable_default_and_configure(restore_shape):
    assert type(Shape(3)) is Square
    assert Shape(3).size == 3
    Shape.configure(Circle, color="red")
    shape = Shape(size=2)
    assert type(shape) is Circle
    assert (shape.size, shape.color) == (2, "red")
    # Constructor arguments win over configured ones.
    assert Shape(color="blue").color == "blue"
    # Subclasses built directly ignore the configuration.
    assert Square().color == "black"
    Shape.configure(__name__ + ".Square")
    assert type(Shape()) is Square
    assert Shape.configured_class() is Square


def test_configure_rejects_unrelated_class(restore_shape):
    with pytest.raises(ValueError, match="Invalid subclass"):
        Shape.configure(dict)


def _gzip_stream(*members):
    return b"".join(gzip.compress(m) for m in members)


def _drain(data, max_length, read_size):
    decompressor = GzipDecompressor()
    out = bytearray()
    for i in range(0, len(data), read_size):
        chunk = data[i : i + read_size]
        while chunk:
            piece = decompressor.decompress(chunk, max_length)
            assert len(piece) <= max_length
            out += piece
            chunk = decompressor.unconsumed_tail
    assert decompressor.flush() == b""
    return bytes(out)


@pytest.mark.parametrize("max_length", [1, 7, 1000, 1 << 16])
@pytest.mark.parametrize("read_size", [1, 13, 4096])
def test_gzip_multi_member_bounded(max_length, read_size):
    members = [b"first member " * 50, b"", b"x", bytes(range(256)) * 4]
    assert _drain(_gzip_stream(*members), max_length, read_size) == b"".join(members)


def test_gzip_bomb_is_bounded_and_flush_refuses_tail():
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = compressor.compress(b"\0" * (8 << 20)) + compressor.flush()
    decompressor = GzipDecompressor()
    assert len(decompressor.decompress(bomb, 4096)) == 4096
    assert decompressor.unconsumed_tail
    with pytest.raises(ValueError, match="unconsumed_tail"):
        decompressor.flush()


@pytest.mark.parametrize("trailer", [b"\0", b"garbage", b"\x1f"])
def test_gzip_trailing_garbage_is_an_error(trailer):
    with pytest.raises(zlib.error):
        _drain(gzip.compress(b"hello") + trailer, 1024, 1024)


def test_gzip_truncated_and_not_gzip():
    data = gzip.compress(b"hello world")
    with pytest.raises(zlib.error):
        _drain(data[:-3], 1024, 1024)
    with pytest.raises(zlib.error):
        _drain(zlib.compress(b"zlib, not gzip"), 1024, 1024)


def test_gzip_empty_stream_and_unbounded_is_deprecated():
    assert GzipDecompressor().flush() == b""
    decompressor = GzipDecompressor()
    with pytest.warns(DeprecationWarning):
        assert decompressor.decompress(_gzip_stream(b"a", b"b")) == b"ab"
    with pytest.raises(ValueError, match="-1"):
        decompressor.decompress(b"", -1)


def test_import_object():
    assert import_object("squall.escape.utf8") is squall.escape.utf8
    assert import_object("squall.escape") is squall.escape
    assert import_object("re") is re
    with pytest.raises(ImportError):
        import_object("squall.escape.no_such_name")
    with pytest.raises(ImportError):
        import_object("squall_no_such_package.x")


def test_re_unescape_round_trips_and_rejects_classes():
    for s in ["/favicon.ico", "Hello, World!", "!$@#%;", "a\nb"]:
        assert re_unescape(re.escape(s)) == s
    for bad in ["\\d", "\\b", "\\Z"]:
        with pytest.raises(ValueError, match=re.escape(bad[1])):
            re_unescape(bad)


def test_arg_replacer():
    def f(x, y, callback=None, z=None):
        pass

    replacer = ArgReplacer(f, "callback")
    assert replacer.arg_pos == 2
    assert replacer.get_old_value((1, 2, "old"), {}) == "old"
    assert replacer.replace("new", (1, 2, "old", 3), {}) == ("old", [1, 2, "new", 3], {})
    kwargs = {"callback": "old"}
    assert replacer.replace("new", (1,), kwargs) == ("old", (1,), {"callback": "new"})
    assert replacer.get_old_value((1,), {}, default="d") == "d"
    assert replacer.replace("new", (1, 2), {}) == (None, (1, 2), {"callback": "new"})


def test_raise_exc_info_reraises_same_object():
    class TwoArgs(Exception):
        def __init__(self, a, b):
            super().__init__()

    try:
        raise TwoArgs(1, 2)
    except TwoArgs:
        info = sys.exc_info()
    with pytest.raises(TwoArgs) as caught:
        raise_exc_info(info)
    assert caught.value is info[1]


def test_errno_from_exception():
    assert errno_from_exception(OSError(errno.ECONNRESET, "reset")) == errno.ECONNRESET
    assert errno_from_exception(Exception(errno.EPIPE)) == errno.EPIPE
    assert errno_from_exception(Exception()) is None


def test_exec_in_does_not_inherit_future_flags():
    namespace = {}
    exec_in("def f(x: int) -> int:\n    return x\n", namespace)
    assert namespace["f"].__annotations__ == {"x": int, "return": int}


def test_timedelta_and_timeout_alias():
    assert timedelta_to_seconds(datetime.timedelta(hours=1, milliseconds=500)) == 3600.5
    assert TimeoutError is asyncio.TimeoutError


def test_websocket_mask():
    assert _websocket_mask(b"abcd", b"") == b""
    assert _websocket_mask(b"abcd", b"54321") == b"TVPVP"
    assert _websocket_mask(b"\xff\xfb\xfd\xfc", b"\x00\x01\x02\x03\x04\x05") == (
        b"\xff\xfa\xff\xff\xfb\xfe"
    )
    data = bytes(range(256)) * 3
    assert _websocket_mask(b"\x01\x80\x00\xff", _websocket_mask(b"\x01\x80\x00\xff", data)) == data
    expected = bytes(b ^ b"\x01\x80\x00\xff"[i % 4] for i, b in enumerate(data))
    assert _websocket_mask(b"\x01\x80\x00\xff", data) == expected
    for bad in (b"", b"abc", b"abcde"):
        with pytest.raises(ValueError, match="4 bytes"):
            _websocket_mask(bad, b"data")
