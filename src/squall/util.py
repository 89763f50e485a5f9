"""Small utilities shared by every squall module.

Nothing here touches the network or the event loop: attribute-style dicts,
the `Configurable` factory pattern (used by `.IOLoop`, `.Resolver` and
`.AsyncHTTPClient` to pick an implementation at runtime), dotted-name imports,
a bounded multi-member gzip decompressor, and helpers for exceptions.
"""

from __future__ import annotations

import asyncio
import doctest
import importlib
import inspect
import os
import re
import types
import warnings
import zlib
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, NoReturn, Optional, Union


def _load_speedups() -> Any:
    """The optional C module ``squall._speedups``, or ``None`` when it was
    not built (no compiler at install time) or ``SQUALL_NO_SPEEDUPS`` is set
    to a non-empty value other than ``0`` in the environment."""
    if os.environ.get("SQUALL_NO_SPEEDUPS", "0") not in ("", "0"):
        return None
    try:
        from squall import _speedups
    except ImportError:
        return None
    return _speedups


# Every module with a C version of a function takes it from here.
_speedups = _load_speedups()

__all__ = [
    "ArgReplacer",
    "Configurable",
    "GzipDecompressor",
    "ObjectDict",
    "TimeoutError",
    "basestring_type",
    "bytes_type",
    "errno_from_exception",
    "exec_in",
    "import_object",
    "raise_exc_info",
    "re_unescape",
    "timedelta_to_seconds",
    "unicode_type",
]

# Aliases kept for code written for Python 2 era Tornado; on Python 3 every
# string is text and there is one bytes type.
bytes_type = bytes
unicode_type = str
basestring_type = str

#: The exception raised by `.gen.with_timeout`, `.IOLoop.run_sync` and the
#: other timeouts of this package. It is `asyncio.TimeoutError` (which is the
#: builtin `TimeoutError` on Python 3.11 and later), so ``except
#: TimeoutError`` catches squall's timeouts and asyncio's alike.
TimeoutError = asyncio.TimeoutError



class ObjectDict(dict[str, Any]):
    """A `dict` whose keys can also be read and written as attributes.

    ``d.key`` is ``d["key"]``; a missing key raises `AttributeError` (so
    `getattr` with a default and `hasattr` behave as for any object).
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


# Gzip framing for zlib: 16 selects the gzip header and trailer, MAX_WBITS the
# largest (32 KiB) window, which any conforming gzip stream may use (RFC 1952).
_GZIP_WBITS = 16 + zlib.MAX_WBITS


class GzipDecompressor:
    """Streaming gzip decompressor with bounded output.

    Feed compressed data to `decompress` with a ``max_length``: it returns at
    most that many bytes, and any input it did not get to is left in
    `unconsumed_tail`, which the caller passes to `decompress` again (so a
    small compressed body can never expand into unbounded memory in one call).
    Streams made of several gzip members one after another (RFC 1952 section
    2.2) are decompressed as one. Data after the last member that is not
    itself a gzip member raises `zlib.error`, as does a stream that stops in
    the middle of a member (reported by `flush`).
    """

    def __init__(self) -> None:
        self._decompressor = zlib.decompressobj(_GZIP_WBITS)
        # True once the current member has been given at least one byte, so
        # that `flush` can tell a truncated member from no member at all.
        self._member_started = False
        self._tail = b""

    def decompress(self, value: bytes, max_length: int = 0) -> bytes:
        """Decompress a chunk, returning at most ``max_length`` bytes.

        Input that could not be processed within ``max_length`` is kept in
        `unconsumed_tail`; call `decompress` again with it before feeding
        more data. Calling without ``max_length`` (unbounded output) is
        deprecated, because a few kilobytes of input can expand to gigabytes.
        """
        if max_length < 0:
            raise ValueError(f"max_length must not be negative, got {max_length!r}")
        if not max_length:
            warnings.warn(
                "GzipDecompressor.decompress without max_length is deprecated",
                DeprecationWarning,
                stacklevel=2,
            )
        pieces = []
        produced = 0
        data = value
        while data:
            budget = max_length - produced if max_length else 0
            if max_length and budget <= 0:
                break
            if self._decompressor.eof:
                # The previous member is complete: what follows must be the
                # start of another member.
                self._decompressor = zlib.decompressobj(_GZIP_WBITS)
                self._member_started = False
            self._member_started = True
            chunk = self._decompressor.decompress(data, budget)
            pieces.append(chunk)
            produced += len(chunk)
            if self._decompressor.eof:
                data = self._decompressor.unused_data
            else:
                data = self._decompressor.unconsumed_tail
                break
        self._tail = data
        return b"".join(pieces)

    @property
    def unconsumed_tail(self) -> bytes:
        """The input left over by the last `decompress` call because of
        ``max_length``; pass it to `decompress` again."""
        return self._tail

    def flush(self) -> bytes:
        """Finish the stream and return any output still buffered.

        Raises `zlib.error` if the stream ended in the middle of a gzip
        member, and `ValueError` if `unconsumed_tail` was not fed back in
        (flushing then would decompress without the caller's bound).
        """
        if self._tail:
            raise ValueError(
                "GzipDecompressor.flush called with %d bytes of unconsumed_tail "
                "still to decompress" % len(self._tail)
            )
        output = self._decompressor.flush()
        if self._member_started and not self._decompressor.eof:
            raise zlib.error("incomplete or truncated gzip stream")
        return output


def import_object(name: str) -> Any:
    """Import an object by its dotted name and return it.

    ``import_object("squall.escape.utf8")`` is ``squall.escape.utf8``;
    ``import_object("squall.escape")`` is the module itself. Raises
    `ImportError` if the module or the attribute does not exist.
    """
    if not isinstance(name, str):
        raise TypeError(f"import_object expects a dotted name string, got {name!r}")
    if "." not in name:
        return importlib.import_module(name)
    module_name, _, attribute = name.rpartition(".")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        pass
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ImportError(f"No module named {attribute}") from None


def exec_in(
    code: Union[str, types.CodeType], glob: dict[str, Any], loc: Optional[dict[str, Any]] = None
) -> None:
    """Execute ``code`` (source text or a code object) in the given namespaces.

    Source text is compiled without inheriting the caller's ``from __future__``
    imports, so the code behaves the same whoever runs it.
    """
    if isinstance(code, str):
        code = compile(code, "<string>", "exec", dont_inherit=True)
    exec(code, glob, loc)


def raise_exc_info(
    exc_info: tuple[Optional[type], Optional[BaseException], Optional[types.TracebackType]],
) -> NoReturn:
    """Re-raise an exception from a `sys.exc_info` triple, keeping its
    traceback (the exception object itself is raised, not a copy)."""
    try:
        if exc_info[1] is None:
            raise TypeError("raise_exc_info called with no exception in exc_info")
        raise exc_info[1].with_traceback(exc_info[2])
    finally:
        # The frame holding exc_info would otherwise keep the traceback (and
        # every frame it references) alive in a reference cycle.
        exc_info = (None, None, None)


def errno_from_exception(e: BaseException) -> Optional[int]:
    """Return the errno of an `OSError`-like exception, or None.

    Uses the ``errno`` attribute when set, else the first constructor
    argument (as some socket and SSL errors carry it), else None.
    """
    errno: Optional[int] = getattr(e, "errno", None)
    if errno is not None:
        return errno
    if e.args:
        first: Optional[int] = e.args[0]
        return first
    return None


_RE_UNESCAPE = re.compile(r"\\(?:([a-zA-Z0-9])|(.))", re.DOTALL)


def _re_unescape_replacement(match: re.Match[str]) -> str:
    if match.group(1):
        # \d, \b, \Z, ... are classes or assertions, not escaped literals.
        raise ValueError(f"cannot unescape '\\\\{match.group(1)}'")
    return match.group(2)


def re_unescape(s: str) -> str:
    r"""Undo `re.escape`: turn ``\.`` back into ``.`` and so on.

    Raises `ValueError` on an escaped letter or digit (``\d``, ``\b``...),
    which stands for a character class or assertion rather than a literal.
    """
    return _RE_UNESCAPE.sub(_re_unescape_replacement, s)


def timedelta_to_seconds(td: timedelta) -> float:
    """Return the total number of seconds in a `datetime.timedelta`."""
    return td.total_seconds()


class Configurable:
    """Base class for interfaces whose implementation is chosen at runtime.

    A configurable interface is a class that defines `configurable_base`
    (returning itself) and `configurable_default` (the implementation used
    unless another is configured). Constructing the base, ``Base(...)``,
    builds an instance of the configured implementation; `configure` selects
    another one, optionally with keyword arguments merged into every
    construction. Implementations can always be constructed directly.

    Subclasses set themselves up in `initialize` (not ``__init__``), which
    receives the constructor arguments.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        base = cls.configurable_base()
        init_kwargs: dict[str, Any] = {}
        if cls is base:
            impl = cls.configured_class()
            configured_kwargs = base.__dict__.get("_squall_configured_kwargs")
            if configured_kwargs:
                init_kwargs.update(configured_kwargs)
        else:
            impl = cls
        init_kwargs.update(kwargs)
        if impl.configurable_base() is not base:
            # The implementation is itself configurable (a nested level):
            # let its own base pick the final class.
            return impl(*args, **init_kwargs)
        instance = super().__new__(impl)
        # ``initialize`` stands in for ``__init__`` so that the arguments can
        # be merged with the configured ones before any setup runs.
        instance.initialize(*args, **init_kwargs)
        return instance

    @classmethod
    def configurable_base(cls) -> type[Configurable]:
        """Return the base class of this configurable hierarchy (usually the
        class that defines this method)."""
        raise NotImplementedError()

    @classmethod
    def configurable_default(cls) -> type[Configurable]:
        """Return the implementation used when none was configured."""
        raise NotImplementedError()

    def initialize(self) -> None:
        """Set up a new instance; receives the constructor's arguments.

        Subclasses override this (with their own signature) instead of
        ``__init__``.
        """

    @classmethod
    def configure(cls, impl: Union[None, str, type[Configurable]], **kwargs: Any) -> None:
        """Choose the implementation constructed by ``Base(...)``.

        ``impl`` is a subclass, its dotted name, or None for the default;
        ``kwargs`` are passed to every construction of the base (arguments
        given to the constructor take precedence).
        """
        base = cls.configurable_base()
        if isinstance(impl, str):
            impl = import_object(impl)
        if impl is not None and not (isinstance(impl, type) and issubclass(impl, cls)):
            raise ValueError(f"Invalid subclass of {cls}: {impl!r}")
        base._squall_configured_impl = impl  # type: ignore[attr-defined]
        base._squall_configured_kwargs = kwargs  # type: ignore[attr-defined]

    @classmethod
    def configured_class(cls) -> type[Configurable]:
        """Return the implementation that ``Base(...)`` currently builds."""
        base = cls.configurable_base()
        # Read the base's own __dict__: a configuration belongs to one level
        # of the hierarchy and must not be inherited by nested bases.
        impl = base.__dict__.get("_squall_configured_impl")
        if impl is None:
            impl = cls.configurable_default()
            base._squall_configured_impl = impl  # type: ignore[attr-defined]
        return impl

    @classmethod
    def _save_configuration(cls) -> tuple[Optional[type[Configurable]], dict[str, Any]]:
        base = cls.configurable_base()
        return (
            base.__dict__.get("_squall_configured_impl"),
            base.__dict__.get("_squall_configured_kwargs") or {},
        )

    @classmethod
    def _restore_configuration(
        cls, saved: tuple[Optional[type[Configurable]], dict[str, Any]]
    ) -> None:
        base = cls.configurable_base()
        base._squall_configured_impl = saved[0]  # type: ignore[attr-defined]
        base._squall_configured_kwargs = saved[1]  # type: ignore[attr-defined]


def _positional_names(func: Callable[..., Any]) -> list[str]:
    code = getattr(func, "__code__", None)
    if code is not None:
        return list(code.co_varnames[: code.co_argcount])
    return [
        p.name
        for p in inspect.signature(func).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


class ArgReplacer:
    """Find and replace one named argument in calls to a given function.

    The argument may be passed by position or by keyword; `get_old_value`
    reads it and `replace` substitutes a new value, wherever it was passed.
    """

    def __init__(self, func: Callable[..., Any], name: str) -> None:
        self.name = name
        names = _positional_names(func)
        self.arg_pos: Optional[int] = names.index(name) if name in names else None

    def get_old_value(
        self, args: Sequence[Any], kwargs: dict[str, Any], default: Any = None
    ) -> Any:
        """Return the value of the argument in this call, or ``default``."""
        if self.arg_pos is not None and len(args) > self.arg_pos:
            return args[self.arg_pos]
        return kwargs.get(self.name, default)

    def replace(
        self, new_value: Any, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> tuple[Any, Sequence[Any], dict[str, Any]]:
        """Replace the argument by ``new_value``.

        Returns ``(old_value, args, kwargs)``; ``old_value`` is None when the
        argument was not passed, in which case it is added to ``kwargs``.
        ``kwargs`` is modified in place.
        """
        if self.arg_pos is not None and len(args) > self.arg_pos:
            new_args = list(args)
            old_value = new_args[self.arg_pos]
            new_args[self.arg_pos] = new_value
            return old_value, new_args, kwargs
        old_value = kwargs.get(self.name)
        kwargs[self.name] = new_value
        return old_value, args, kwargs


# RFC 6455 section 5.3: a frame's masking key is always four bytes.
_WEBSOCKET_MASK_LENGTH = 4


def _websocket_mask_python(mask: bytes, data: bytes) -> bytes:
    """XOR ``data`` with the 4-byte WebSocket ``mask`` repeated over it.

    Masking is its own inverse. The whole payload is XORed as one big
    integer, which is linear in its length and far faster than a Python
    loop over bytes.
    """
    if len(mask) != _WEBSOCKET_MASK_LENGTH:
        raise ValueError(f"a WebSocket mask must be 4 bytes, got {len(mask)}: {bytes(mask)!r}")
    length = len(data)
    if not length:
        return b""
    key = (bytes(mask) * (length // _WEBSOCKET_MASK_LENGTH + 1))[:length]
    masked = int.from_bytes(data, "little") ^ int.from_bytes(key, "little")
    return masked.to_bytes(length, "little")


_websocket_mask = _websocket_mask_python


def doctests() -> doctest.DocTestSuite:  # type: ignore[valid-type]
    """Return this module's doctests as a `unittest` suite."""
    return doctest.DocTestSuite()
