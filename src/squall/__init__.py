"""squall: an asyncio-native async networking library, HTTP/1.1 server and web
framework that speaks Tornado's public API.

Replace ``tornado`` with ``squall`` in a Tornado application's imports and it runs;
squall adds connection-pooled clients, thread-pooled WSGI, pub/sub fan-out and
safe protocol limits on top.
"""

# ``version`` is a human-readable string; ``version_info`` a four-tuple that
# compares as numbers (the last part is 0 for a final release), as in Tornado.
version = "0.1.0"
version_info = (0, 1, 0, 0)

__all__ = [
    "auth",
    "autoreload",
    "concurrent",
    "curl_httpclient",
    "escape",
    "gen",
    "http1connection",
    "httpclient",
    "httpserver",
    "httputil",
    "ioloop",
    "iostream",
    "locale",
    "locks",
    "log",
    "netutil",
    "options",
    "platform",
    "process",
    "queues",
    "routing",
    "simple_httpclient",
    "tcpclient",
    "tcpserver",
    "template",
    "testing",
    "util",
    "web",
    "websocket",
    "wsgi",
]

# squall's own modules beyond Tornado's set, also loaded on first attribute
# access (kept out of ``__all__`` so ``from squall import *`` stays Tornado's).
_EXTRAS = frozenset(
    {"cli", "idempotency", "offload", "pytest_plugin", "realtime", "watchdog"}
)


def __getattr__(name: str) -> object:
    # ``squall.web`` etc. work after a bare ``import squall``, as with Tornado,
    # without importing every submodule up front.
    if name in __all__ or name in _EXTRAS:
        import importlib

        return importlib.import_module("." + name, __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
