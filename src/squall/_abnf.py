"""The HTTP/1.1 grammar (RFC 9110, RFC 9112, RFC 3986) as compiled regexes and small parsers.

Everything that arrives from the wire is matched against these patterns
before any ``int()``, ``strip()`` or ``split()`` touches it, in the manner of
h11's ``_abnf.py``.  Each pattern quotes the ABNF rule it implements.

The patterns work on ``str`` in which each character stands for one byte
(wire bytes decoded as latin-1), which is how :mod:`squall.httputil` and
:mod:`squall.http1connection` carry header blocks.  Every pattern here is
either free of nested quantifiers or anchored so that a failed match costs
time linear in its input: no input can make them backtrack quadratically.

The helpers at the end (`parse_content_length`, `parse_chunk_size`,
`is_transfer_encoding_chunked`, `parse_transfer_encoding`) are the checks the
HTTP/1 connection needs on message framing; they accept ``str`` or ``bytes``
and raise `ValueError` naming the bad input, which the connection maps to a
400 response.
"""

import re
from typing import Union

__all__ = [
    "MAX_CHUNK_SIZE_DIGITS",
    "MAX_CONTENT_LENGTH",
    "parse_chunk_size",
    "parse_content_length",
    "parse_transfer_encoding",
    "is_transfer_encoding_chunked",
]

# --- Core rules (RFC 5234 appendix B.1) ---------------------------------

#   VCHAR = %x21-7E   (visible US-ASCII characters)
_VCHAR = r"\x21-\x7e"
#   obs-text = %x80-FF   (RFC 9110 5.5)
_OBS_TEXT = r"\x80-\xff"

VCHAR = "[" + _VCHAR + "]"
obs_text = "[" + _OBS_TEXT + "]"

# --- RFC 9110 -----------------------------------------------------------

#   OWS = *( SP / HTAB )                                   (5.6.3)
OWS = r"[ \t]*"

#   tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
#           "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA     (5.6.2)
_TCHAR = r"!#$%&'*+\-.^_`|~0-9A-Za-z"
tchar = "[" + _TCHAR + "]"
#   token = 1*tchar
token = tchar + "+"

#   field-name = token                                     (5.1)
field_name = token

#   field-vchar   = VCHAR / obs-text                       (5.5)
#   field-content = field-vchar [ 1*( SP / HTAB / field-vchar ) field-vchar ]
#   field-value   = *field-content
_FIELD_VCHAR = _VCHAR + _OBS_TEXT
field_vchar = "[" + _FIELD_VCHAR + "]"
field_content = "{0}(?:[ \\t{1}]*{0})?".format(field_vchar, _FIELD_VCHAR)
# field-value = *field-content collapses to "empty, or one field-content":
# two adjacent field-contents are themselves one field-content.
field_value = "(?:" + field_content + ")?"

#   quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE   (5.6.4)
#   qdtext        = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
#   quoted-pair   = "\" ( HTAB / SP / VCHAR / obs-text )
quoted_string = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'

# --- RFC 3986 (URI pieces used by Host and request-target) ---------------

#   unreserved  = ALPHA / DIGIT / "-" / "." / "_" / "~"
#   pct-encoded = "%" HEXDIG HEXDIG
#   sub-delims  = "!" / "$" / "&" / "'" / "(" / ")" / "*" / "+" / "," / ";" / "="
uri_unreserved = r"[A-Za-z0-9\-._~]"
uri_pct_encoded = r"%[0-9A-Fa-f]{2}"
uri_sub_delims = r"[!$&'()*+,;=]"
#   IP-literal = "[" ( IPv6address / IPvFuture ) "]"; kept loose here (the
#   characters of an IPv6 address or IPvFuture) since the socket layer, not
#   the grammar, decides whether the address exists.
_ip_literal = r"\[[0-9A-Za-z:._~!$&'()*+,;=\-]+\]"
#   reg-name = *( unreserved / pct-encoded / sub-delims ); IPv4address is a
#   reg-name syntactically, so it needs no rule of its own.
_reg_name = "(?:{}|{}|{})*".format(uri_unreserved, uri_pct_encoded, uri_sub_delims)
uri_host = "(?:{}|{})".format(_ip_literal, _reg_name)
#   port = *DIGIT
uri_port = r"[0-9]*"
#   Host = uri-host [ ":" port ]                           (RFC 9110 7.2)
host = "{}(?::{})?".format(uri_host, uri_port)

# --- RFC 9112 -----------------------------------------------------------

#   method = token                                         (3.1)
method = token
#   request-target = origin-form / absolute-form / authority-form /
#   asterisk-form (3.2).  As in Tornado, any run of visible characters is
#   accepted here: the path is validated by the router, and rejecting e.g.
#   a raw "|" or UTF-8 byte at this level would only break real clients.
request_target = "[{}]+".format(_FIELD_VCHAR)
#   HTTP-version = HTTP-name "/" DIGIT "." DIGIT           (2.3)
HTTP_version = r"HTTP/[0-9]\.[0-9]"
#   request-line = method SP request-target SP HTTP-version   (3)
request_line = "({}) ({}) ({})".format(method, request_target, HTTP_version)
#   status-code = 3DIGIT                                   (4)
status_code = r"[0-9]{3}"
#   reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )
reason_phrase = r"[\t {}]+".format(_FIELD_VCHAR)
#   status-line = HTTP-version SP status-code SP [ reason-phrase ]
status_line = "({}) ({}) ({})?".format(HTTP_version, status_code, reason_phrase)

#   chunk-size = 1*HEXDIG                                  (7.1)
chunk_size = r"[0-9A-Fa-f]+"
#   chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
#   chunk-ext-name = token
#   chunk-ext-val  = token / quoted-string
chunk_ext = r"(?:[ \t]*;[ \t]*{0}(?:[ \t]*=[ \t]*(?:{0}|{1}))?)*".format(
    token, quoted_string
)

# --- Compiled forms -----------------------------------------------------

TOKEN_RE = re.compile(token)
FIELD_NAME_RE = re.compile(field_name)
FIELD_VALUE_RE = re.compile(field_value)
HOST_RE = re.compile(host)
REQUEST_LINE_RE = re.compile(request_line)
STATUS_LINE_RE = re.compile(status_line)
QUOTED_STRING_RE = re.compile(quoted_string)

# One header line: ``field-name ":" OWS field-value OWS`` followed by CRLF or
# (leniently, as RFC 9112 2.2 permits) a bare LF, or by the end of the block.
# The value group is one character class, so the match is linear; the OWS is
# removed afterwards with ``strip(" \t")``, which the grammar allows because
# field-content can neither begin nor end with SP / HTAB.  The whole line is
# optional so that empty lines match too.
HEADER_LINE_RE = re.compile(
    "(?:({})[:]([\\t {}]*))?(?:\\r?\\n|\\Z)".format(token, _FIELD_VCHAR)
)

# A value that may hold OWS at either end but otherwise only field-vchars:
# what remains after ``strip(" \t")`` is a valid field-value.
LOOSE_FIELD_VALUE_RE = re.compile("[\\t {}]*".format(_FIELD_VCHAR))

# Characters that are never allowed in a field value in any text encoding:
# controls other than HTAB, and DEL (RFC 9110 5.5).
FORBIDDEN_VALUE_CHARS_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

_CHUNK_LINE_RE = re.compile("({}){}\\Z".format(chunk_size, chunk_ext))
_DIGITS_RE = re.compile(r"[0-9]+\Z")

# --- Framing helpers for the HTTP/1 connection ---------------------------

# Content-Length above 2**63 - 1 does not fit in a signed 64-bit integer,
# which is the limit llhttp and nginx (off_t) apply as well.
MAX_CONTENT_LENGTH = 2**63 - 1
_MAX_LENGTH_DIGITS = len(str(MAX_CONTENT_LENGTH))
# 16 hex digits are 64 bits; llhttp rejects chunk sizes that overflow a
# uint64 and h11 bounds the chunk-size line the same way.  Leading zeros
# are legal but a longer run is only ever an attack.
MAX_CHUNK_SIZE_DIGITS = 16
# A chunk-size line with extensions is bounded too (extensions are ignored,
# RFC 9112 7.1.1); 4096 bytes matches nginx's large_client_header_buffers
# default line size and is far beyond any real extension.
MAX_CHUNK_LINE_LENGTH = 4096

_Text = Union[str, bytes]


def _as_str(value: _Text) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, str):
        return value
    raise TypeError(f"expected str or bytes, got {value!r}")


def parse_content_length(value: _Text) -> int:
    """Parse a ``Content-Length`` header value (RFC 9110 8.6) into an int.

    ``value`` is the combined field value as received (``str`` or ``bytes``).
    A list of identical values (``"5, 5"``, which a proxy may produce by
    merging repeated fields) is accepted, as RFC 9110 8.6 allows; anything
    else that is not ``1*DIGIT`` is rejected, including signs (``"+1"``),
    surrounding or inner whitespace other than list OWS, underscores
    (``"1_0"``, which ``int()`` accepts), differing list members and values
    above `MAX_CONTENT_LENGTH`.

    Raises `ValueError` with a message naming the bad value.
    """
    text = _as_str(value)
    if _DIGITS_RE.match(text):
        # Bound the digit count before int(), whose cost grows with it.
        if len(text) > _MAX_LENGTH_DIGITS and len(text.lstrip("0")) > _MAX_LENGTH_DIGITS:
            raise ValueError(f"Content-Length too large: {text!r}")
        result = int(text)
        if result > MAX_CONTENT_LENGTH:
            raise ValueError(f"Content-Length too large: {text!r}")
        return result
    if "," not in text:
        raise ValueError(f"invalid Content-Length: {text!r}")
    members = {m.strip(" \t") for m in text.split(",")}
    if len(members) != 1:
        raise ValueError(f"conflicting Content-Length values: {text!r}")
    only = members.pop()
    if not _DIGITS_RE.match(only):
        raise ValueError(f"invalid Content-Length: {text!r}")
    return parse_content_length(only)


def parse_chunk_size(line: _Text) -> int:
    """Parse a chunk-size line (RFC 9112 7.1) and return the chunk size.

    ``line`` is the line without its trailing CRLF (a trailing CRLF or LF is
    tolerated and removed).  Chunk extensions (``;name=value``) are
    syntax-checked and ignored, as RFC 9112 7.1.1 requires of a recipient
    that does not understand them.  The size must be ``1*HEXDIG`` of at most
    `MAX_CHUNK_SIZE_DIGITS` digits: ``"0x2"``, ``"+2"``, ``"1_a"`` and
    ``" 2"`` are rejected, although ``int(x, 16)`` accepts them.

    Raises `ValueError` with a message naming the bad line.
    """
    text = _as_str(line)
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    if len(text) > MAX_CHUNK_LINE_LENGTH:
        raise ValueError(f"chunk-size line too long: {text[:64]!r}...")
    m = _CHUNK_LINE_RE.match(text)
    if m is None:
        raise ValueError(f"invalid chunk-size line: {text!r}")
    digits = m.group(1)
    if len(digits) > MAX_CHUNK_SIZE_DIGITS and len(digits.lstrip("0")) > MAX_CHUNK_SIZE_DIGITS:
        raise ValueError(f"chunk size too large: {digits!r}")
    return int(digits, 16)


# The parameters of a transfer-coding: *( OWS ";" OWS token BWS "=" BWS
# ( token / quoted-string ) ) (RFC 9110 10.1.4).
_TRANSFER_PARAMS_RE = re.compile(
    r"(?:[ \t]*;[ \t]*{0}[ \t]*=[ \t]*(?:{0}|{1}))*[ \t]*".format(token, quoted_string)
)


def parse_transfer_encoding(value: _Text) -> list[str]:
    """Split a ``Transfer-Encoding`` value into lower-cased coding names.

    Each list member must be a ``transfer-coding`` (a token, optionally with
    parameters, RFC 9112 6.1 / RFC 9110 10.1.4); empty members are skipped as
    RFC 9110 5.6.1 requires.  Raises `ValueError` naming the bad value.
    """
    text = _as_str(value)
    codings = []
    for member in text.split(","):
        member = member.strip(" \t")
        if not member:
            continue
        name, _, params = member.partition(";")
        name = name.rstrip(" \t")
        if not TOKEN_RE.fullmatch(name):
            raise ValueError(f"invalid Transfer-Encoding: {text!r}")
        if params and not _TRANSFER_PARAMS_RE.fullmatch(";" + params):
            raise ValueError(f"invalid Transfer-Encoding: {text!r}")
        codings.append(name.lower())
    return codings


def is_transfer_encoding_chunked(value: _Text) -> bool:
    """Return whether a ``Transfer-Encoding`` value means a chunked body.

    A request body is chunked exactly when the value is the single coding
    ``chunked`` (any case).  Any other coding, a list such as
    ``"gzip, chunked"`` (squall applies no transfer codings), or
    ``"chunked"`` twice raises `ValueError`: RFC 9112 6.1 says a server that
    receives a transfer coding it does not understand should answer 501, and
    6.3 that a request whose final coding is not chunked is a 400.  An empty
    value returns False.  Callers must separately reject a message that
    carries both Transfer-Encoding and Content-Length (RFC 9112 6.3).
    """
    codings = parse_transfer_encoding(value)
    if not codings:
        return False
    if codings == ["chunked"]:
        return True
    raise ValueError(f"unsupported Transfer-Encoding: {_as_str(value)!r}")
