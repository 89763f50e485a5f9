"""The libcurl-based `AsyncHTTPClient` slot: `CurlAsyncHTTPClient` and `CurlError`.

Tornado offers an implementation on ``pycurl`` for features its simple client
lacks (proxies, digest authentication). squall's default client,
`squall.simple_httpclient.SimpleAsyncHTTPClient`, is the supported one; this
module keeps the names importable so that code which mentions them (for
example ``AsyncHTTPClient.configure("...curl_httpclient.CurlAsyncHTTPClient")``
behind a feature check) still imports, and constructing the client fails
with a message that says what to do instead.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Optional

from squall.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

__all__ = ["CurlAsyncHTTPClient", "CurlError"]

curl_log = logging.getLogger("squall.curl_httpclient")

#: Matches the characters that must never reach a header line passed to
#: libcurl (they would let a value inject further headers).
CR_OR_LF_RE = re.compile(b"\r|\n")

# Tornado's CurlAsyncHTTPClient default body limit (100 MiB).
_DEFAULT_MAX_BODY_SIZE = 100 * 1024 * 1024


class CurlError(HTTPClientError):
    """A libcurl failure: code 599 with libcurl's ``errno`` and message."""

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(599, message)
        self.errno = errno


class CurlAsyncHTTPClient(AsyncHTTPClient):
    """Placeholder for Tornado's ``pycurl`` client; constructing it raises.

    Without ``pycurl`` installed it raises `ImportError`; with it, it raises
    `NotImplementedError`, because squall does not ship a libcurl binding.
    Use `squall.simple_httpclient.SimpleAsyncHTTPClient` (the default), which
    also pools keep-alive connections.
    """

    def initialize(  # type: ignore[override]
        self,
        max_clients: int = 10,
        defaults: Optional[dict[str, Any]] = None,
        max_body_size: int = _DEFAULT_MAX_BODY_SIZE,
    ) -> None:
        try:
            import pycurl  # noqa: F401
        except ImportError:
            raise ImportError(
                "CurlAsyncHTTPClient needs pycurl, which is not installed; "
                "use squall.simple_httpclient.SimpleAsyncHTTPClient (the default) instead"
            ) from None
        raise NotImplementedError(
            "squall has no libcurl-based client; use "
            "squall.simple_httpclient.SimpleAsyncHTTPClient (the default) instead"
        )

    def close(self) -> None:
        """Nothing to release: construction never succeeds."""

    def fetch_impl(
        self, request: HTTPRequest, callback: Callable[[HTTPResponse], None]
    ) -> None:
        raise NotImplementedError("CurlAsyncHTTPClient cannot fetch")

    def handle_callback_exception(self, callback: Callable[..., Any]) -> None:
        """Log an exception raised by a callback (kept for API compatibility)."""
        curl_log.error("Exception in callback %r", callback, exc_info=True)
