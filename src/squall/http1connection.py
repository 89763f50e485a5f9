"""HTTP/1.x over an `~squall.iostream.IOStream`: the client side of
`squall.simple_httpclient`, and a server connection for code that already
holds a stream.

`squall.httpserver.HTTPServer` does not use these classes for the
connections it accepts: it serves them with a faster `asyncio.Protocol`
(in ``squall._http1server``) that implements the same
`~squall.httputil.HTTPConnection` interface and honours the same
`HTTP1ConnectionParameters`.
"""

from __future__ import annotations

import re
from typing import Optional

from squall import _abnf

__all__ = [
    "CR_OR_LF_RE",
    "DIGITS",
    "HEXDIGITS",
    "HTTP1ConnectionParameters",
    "is_transfer_encoding_chunked",
    "parse_hex_int",
    "parse_int",
]

# A CR or LF in a header name or value would end the line early and let the
# rest be read as another header or a body (response splitting).
CR_OR_LF_RE = re.compile(b"\r|\n")

# Only ASCII digits: ``int()`` also accepts signs, underscores, whitespace
# and non-ASCII digits, none of which HTTP allows in a length.
DIGITS = re.compile(r"[0-9]+")
HEXDIGITS = re.compile(r"[0-9a-fA-F]+")


def parse_int(s: str) -> int:
    """Parse a non-negative decimal integer made only of ASCII digits.

    Raises `ValueError` for anything else (``"+1"``, ``"1_0"``, ``" 1"``),
    although ``int()`` would accept it.
    """
    if not DIGITS.fullmatch(s):
        raise ValueError(f"not a decimal integer: {s!r}")
    return int(s)


def parse_hex_int(s: str) -> int:
    """Parse a non-negative hexadecimal integer made only of hex digits.

    Raises `ValueError` for anything else (``"0x1"``, ``"1_a"``).
    """
    if not HEXDIGITS.fullmatch(s):
        raise ValueError(f"not a hexadecimal integer: {s!r}")
    return int(s, 16)


def is_transfer_encoding_chunked(headers: "HTTPHeaders") -> bool:  # noqa: F821
    """Return whether ``headers`` declare a chunked body.

    Only the single coding ``chunked`` (any case) is supported: any other
    ``Transfer-Encoding`` value raises `~squall.httputil.HTTPInputError`
    (RFC 9112 6.1: a recipient must not guess at codings it does not apply).
    """
    from squall.httputil import HTTPInputError

    if "Transfer-Encoding" not in headers:
        return False
    value = headers["Transfer-Encoding"]
    if "Content-Length" in headers:
        raise HTTPInputError(
            "Message with both Transfer-Encoding and Content-Length"
        )
    try:
        return _abnf.is_transfer_encoding_chunked(value)
    except ValueError:
        raise HTTPInputError(f"Unsupported Transfer-Encoding {value}") from None


class HTTP1ConnectionParameters:
    """Settings for an HTTP/1.x connection (client or server).

    :arg bool no_keep_alive: close the connection after each request.
    :arg int chunk_size: largest piece of body passed to ``data_received``.
    :arg int max_header_size: largest request/response head, in bytes.
    :arg float header_timeout: seconds allowed for the head to arrive.
    :arg int max_body_size: largest body, in bytes.
    :arg float body_timeout: seconds allowed for the body to arrive.
    :arg bool decompress: decode ``Content-Encoding: gzip`` bodies.

    ``None`` means the default (see ``squall._http1server`` for the
    server's limits and their precedents).
    """

    def __init__(
        self,
        no_keep_alive: bool = False,
        chunk_size: Optional[int] = None,
        max_header_size: Optional[int] = None,
        header_timeout: Optional[float] = None,
        max_body_size: Optional[int] = None,
        body_timeout: Optional[float] = None,
        decompress: bool = False,
    ) -> None:
        for name, value in (
            ("chunk_size", chunk_size),
            ("max_header_size", max_header_size),
            ("max_body_size", max_body_size),
        ):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative int or None, got {value!r}")
        for name, value in (("header_timeout", header_timeout), ("body_timeout", body_timeout)):
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"{name} must be a positive number or None, got {value!r}")
        self.no_keep_alive = no_keep_alive
        self.chunk_size = chunk_size or 65536
        self.max_header_size = max_header_size or 65536
        self.header_timeout = header_timeout
        self.max_body_size = max_body_size
        self.body_timeout = body_timeout
        self.decompress = decompress
