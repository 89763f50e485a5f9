"""Tests for squall.web: handlers and applications served by a real HTTPServer
on a loopback port, spoken to with the standard library's http.client."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import http.client
import json
import logging
import socket
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Optional

import pytest

from squall import gen, locale, web
from squall.httpserver import HTTPServer
from squall.ioloop import IOLoop
from squall.testing import bind_unused_port
from squall.web import (
    Application,
    Finish,
    HTTPError,
    RedirectHandler,
    RequestHandler,
    UIModule,
    url,
)

# -- harness ----------------------------------------------------------------


class Response:
    def __init__(self, status: int, reason: str, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.code = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header_list(self, name: str) -> list[str]:
        return self.headers.get_all(name) or []

    def json(self) -> Any:
        return json.loads(self.body)


def _blocking_fetch(
    port: int, method: str, path: str, headers: dict[str, str], body: Optional[bytes]
) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, resp.reason, resp.headers, data)
    finally:
        conn.close()


async def fetch(
    port: int,
    path: str = "/",
    method: str = "GET",
    headers: Optional[dict[str, str]] = None,
    body: Optional[bytes] = None,
) -> Response:
    if body is None and method in ("POST", "PUT", "PATCH"):
        body = b""
    return await asyncio.to_thread(_blocking_fetch, port, method, path, headers or {}, body)


@contextlib.asynccontextmanager
async def serving(app: Any, **server_kwargs: Any) -> AsyncIterator[int]:
    server = HTTPServer(app, **server_kwargs)
    sock, port = bind_unused_port()
    server.add_sockets([sock])
    try:
        yield port
    finally:
        server.stop()
        await server.close_all_connections()


def run_app(
    handlers: list[Any], check: Callable[[int], Awaitable[None]], **settings: Any
) -> None:
    """Serve an Application built from ``handlers`` and run ``check(port)``."""

    async def main() -> None:
        app = Application(handlers, **settings)
        async with serving(app) as port:
            await check(port)

    asyncio.run(main())


def get_once(handler: type[RequestHandler], path: str = "/", **kwargs: Any) -> Response:
    """Serve ``handler`` at every path and make one request to it."""
    result: list[Response] = []

    async def check(port: int) -> None:
        result.append(await fetch(port, path, **kwargs))

    run_app([(r"/.*", handler)], check)
    return result[0]


# -- basics -------------------------------------------------------------------


class HelloHandler(RequestHandler):
    def get(self) -> None:
        self.write("Hello, world")


def test_hello_world_response_headers() -> None:
    response = get_once(HelloHandler)
    assert response.code == 200
    assert response.reason == "OK"
    assert response.body == b"Hello, world"
    assert response.headers["Content-Length"] == "12"
    assert response.headers["Content-Type"] == "text/html; charset=UTF-8"
    assert response.headers["Server"].startswith("SquallServer/")
    assert response.headers["Date"].endswith(" GMT")
    # An ETag by default, as in Tornado: a SHA-1 of the body.
    assert response.headers["Etag"] == '"%s"' % hashlib.sha1(b"Hello, world").hexdigest()


def test_sync_handler_runs_without_a_task() -> None:
    seen: list[Any] = []

    class Handler(RequestHandler):
        def get(self) -> None:
            seen.append(asyncio.current_task())
            self.write("ok")

    assert get_once(Handler).body == b"ok"
    assert seen == [None]


def test_async_and_gen_coroutine_handlers() -> None:
    class AsyncHandler(RequestHandler):
        async def prepare(self) -> None:
            await asyncio.sleep(0)
            self.prepared = True

        async def get(self) -> None:
            await asyncio.sleep(0)
            self.write("async %s" % self.prepared)

    class GenHandler(RequestHandler):
        @gen.coroutine
        def get(self) -> Any:
            yield gen.moment
            self.write("gen")

    async def check(port: int) -> None:
        assert (await fetch(port, "/async")).body == b"async True"
        assert (await fetch(port, "/gen")).body == b"gen"

    run_app([("/async", AsyncHandler), ("/gen", GenHandler)], check)


def test_head_sends_headers_only_and_unsupported_methods_405() -> None:
    class Handler(RequestHandler):
        def get(self) -> None:
            self.write("body")

        head = get

    async def check(port: int) -> None:
        head = await fetch(port, "/", method="HEAD")
        assert head.code == 200 and head.body == b""
        assert head.headers["Content-Length"] == "4"
        assert (await fetch(port, "/", method="POST")).code == 405
        assert (await fetch(port, "/", method="DELETE")).code == 405

    run_app([("/", Handler)], check)


def test_status_and_reason() -> None:
    class Handler(RequestHandler):
        def get(self) -> None:
            code = int(self.get_argument("code"))
            reason = self.get_argument("reason", None, strip=False)
            self.set_status(code, reason)
            self.write("x")

    async def check(port: int) -> None:
        r = await fetch(port, "/?code=201")
        assert (r.code, r.reason) == (201, "Created")
        r = await fetch(port, "/?code=299")
        assert (r.code, r.reason) == (299, "Unknown")
        r = await fetch(port, "/?code=200&reason=Fine%20Thanks")
        assert r.reason == "Fine Thanks"
        # A reason that could inject a header or markup is not sent.
        r = await fetch(port, "/?code=200&reason=OK%0D%0AX-Evil:%201")
        assert r.reason == "Unknown" and "X-Evil" not in r.headers
        r = await fetch(port, "/?code=400&reason=%3Cscript%3E")
        assert r.reason == "Unknown"

    run_app([("/", Handler)], check)


def test_set_status_refuses_non_int_codes() -> None:
    class Handler(RequestHandler):
        def get(self) -> None:
            errors = []
            for bad in ["200", 99, 1000]:
                try:
                    self.set_status(bad)  # type: ignore[arg-type]
                except (TypeError, ValueError) as e:
                    errors.append(type(e).__name__)
            self.write(",".join(errors))

    assert get_once(Handler).body == b"TypeError,ValueError,ValueError"


def test_headers_set_add_clear_and_injection() -> None:
    class Handler(RequestHandler):
        def get(self) -> None:
            self.set_header("X-Overwrite", "1")
            self.set_header("x-overwrite", 2)
            self.add_header("X-Multi", "a")
            self.add_header("X-Multi", b"b")
            self.set_header("X-Gone", "x")
            self.clear_header("X-Gone")
            self.clear_header("X-Never-Set")
            refused = 0
            for value in ["a\r\nX-Injected: 1", "a\nb", "a\x00b", "a\x7fb"]:
                try:
                    self.set_header("X-Bad", value)
                except ValueError as e:
                    assert "Unsafe header value" in str(e)
                    refused += 1
            for name in ["X-Bad\r\nX-Injected", "Bad Name", ""]:
                try:
                    self.set_header(name, "v")
                except ValueError:
                    refused += 1
            self.write(str(refused))

    response = get_once(Handler)
    assert response.body == b"7"
    assert response.headers["X-Overwrite"] == "2"
    assert response.header_list("X-Multi") == ["a", "b"]
    assert "X-Gone" not in response.headers
    assert "X-Injected" not in response.headers


# -- arguments ----------------------------------------------------------------


class ArgsHandler(RequestHandler):
    def get(self, *path_args: str) -> None:
        self.write(
            {
                "path_args": list(path_args),
                "foo": self.get_argument("foo", None),
                "all": self.get_arguments("foo"),
                "query": self.get_query_arguments("foo"),
                "body": self.get_body_arguments("foo"),
            }
        )

    post = get


def test_query_body_and_path_arguments() -> None:
    async def check(port: int) -> None:
        r = await fetch(port, "/args/a%2Fb/%C3%A9?foo=1&foo=%20two%20")
        assert r.headers["Content-Type"] == "application/json; charset=UTF-8"
        assert r.json() == {
            "path_args": ["a/b", "é"],
            "foo": "two",
            "all": ["1", "two"],
            "query": ["1", "two"],
            "body": [],
        }
        r = await fetch(
            port,
            "/args/x/y?foo=q",
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            body=b"foo=b%01ody",
        )
        # The body wins for the single value; control characters become spaces.
        assert r.json()["foo"] == "b ody"
        assert r.json()["all"] == ["q", "b ody"]

    run_app([(r"/args/([^/]+)/([^/]+)", ArgsHandler)], check)


def test_missing_and_undecodable_arguments_are_400(caplog: pytest.LogCaptureFixture) -> None:
    class Handler(RequestHandler):
        def get(self) -> None:
            self.write(self.get_argument("needed"))

    async def check(port: int) -> None:
        assert (await fetch(port, "/?needed=yes")).body == b"yes"
        with caplog.at_level(logging.WARNING, logger="squall.general"):
            assert (await fetch(port, "/")).code == 400
            assert (await fetch(port, "/?needed=%FF")).code == 400
        assert "Missing argument needed" in caplog.text
        assert "Invalid unicode in needed" in caplog.text

    run_app([("/", Handler)], check)


def test_argument_decoding_overrides_and_edge_values() -> None:
    # A single value takes a shorter path than several; both must honour an
    # overridden decode_argument, strip, and control characters.
    class Latin1(RequestHandler):
        def decode_argument(self, value: bytes, name: Optional[str] = None) -> Any:
            return value.decode("latin-1").upper() if value is not None else None

        def get(self, group: str) -> None:
            self.write({"group": group, "a": self.get_argument("a"), "all": self.get_arguments("a")})

    class Plain(RequestHandler):
        def get(self, group: Optional[str] = None) -> None:
            self.write({
                "group": group,
                "stripped": self.get_argument("a"),
                "raw": self.get_argument("a", strip=False),
                "query": self.get_query_argument("a", strip=False),
                "missing": self.get_argument("b", "dflt"),
            })

    async def check(port: int) -> None:
        r = await fetch(port, "/latin/%E9t%E9?a=%FF")
        assert r.json() == {"group": "\u00c9T\u00c9", "a": "\u00ff".upper(), "all": ["\u00ff".upper()]}
        r = await fetch(port, "/plain/x?a=%20b%07c%20")
        assert r.json() == {
            "group": "x", "stripped": "b c", "raw": " b c ", "query": " b c ", "missing": "dflt",
        }
        assert (await fetch(port, "/plain/%FF?a=1")).code == 400
        # An optional group that did not take part in the match is None.
        assert (await fetch(port, "/opt?a=1")).json()["group"] is None

    run_app(
        [(r"/latin/(.*)", Latin1), (r"/plain/(.*)", Plain), (r"/opt(/x)?", Plain)],
        check,
    )


def test_handler_init_is_cooperative_with_mixins() -> None:
    # RequestHandler.__init__ calls super().__init__() only for classes with
    # an __init__ after it in the MRO; mixins on either side must still run.
    class After:
        def __init__(self) -> None:
            super().__init__()
            self.after = True

    class Before:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.before = True

    class Report(RequestHandler):
        def get(self) -> None:
            self.write({"before": getattr(self, "before", False), "after": getattr(self, "after", False)})

    class WithAfter(Report, After):
        pass

    class WithBoth(Before, Report, After):
        pass

    class WithBefore(Before, Report):
        pass

    async def check(port: int) -> None:
        for _ in range(2):  # the second request uses the per-class answer
            assert (await fetch(port, "/plain")).json() == {"before": False, "after": False}
            assert (await fetch(port, "/after")).json() == {"before": False, "after": True}
            assert (await fetch(port, "/both")).json() == {"before": True, "after": True}
            assert (await fetch(port, "/before")).json() == {"before": True, "after": False}

    run_app(
        [("/plain", Report), ("/after", WithAfter), ("/both", WithBoth), ("/before", WithBefore)],
        check,
    )


def test_write_refuses_lists(caplog: pytest.LogCaptureFixture) -> None:
    class Handler(RequestHandler):
        def get(self) -> None:
            self.write([1, 2])  # type: ignore[arg-type]

    with caplog.at_level(logging.ERROR):
        response = get_once(Handler)
    assert response.code == 500
    assert "Lists not accepted" in caplog.text


# -- errors -------------------------------------------------------------------


def test_error_pages_and_logging(caplog: pytest.LogCaptureFixture) -> None:
    class Handler(RequestHandler):
        def get(self, what: str) -> None:
            if what == "http":
                raise HTTPError(410, "gone for %s", "good")
            if what == "reason":
                raise HTTPError(418, reason="Short And Stout")
            if what == "send":
                self.send_error(503)
                return
            if what == "finish":
                self.set_status(401)
                raise Finish("please log in")
            1 / 0

    async def check(port: int) -> None:
        with caplog.at_level(logging.WARNING):
            r = await fetch(port, "/http")
            assert r.code == 410
            assert r.body == b"<html><title>410: Gone</title><body>410: Gone</body></html>"
            r = await fetch(port, "/reason")
            assert (r.code, r.reason) == (418, "Short And Stout")
            assert b"418: Short And Stout" in r.body
            r = await fetch(port, "/send")
            assert r.code == 503
            r = await fetch(port, "/finish")
            assert (r.code, r.body) == (401, b"please log in")
            r = await fetch(port, "/zero")
            assert r.code == 500 and b"ZeroDivisionError" not in r.body
        assert "410 GET /http (127.0.0.1): gone for good" in caplog.text
        assert "Uncaught exception GET /zero" in caplog.text

    run_app([("/(.*)", Handler)], check)


def test_serve_traceback_and_custom_write_error(caplog: pytest.LogCaptureFixture) -> None:
    class Handler(RequestHandler):
        def get(self) -> None:
            raise ValueError("boom")

    class Custom(Handler):
        def write_error(self, status_code: int, **kwargs: Any) -> None:
            self.write({"status": status_code, "error": str(kwargs["exc_info"][1])})

    async def check(port: int) -> None:
        with caplog.at_level(logging.ERROR):
            r = await fetch(port, "/")
            assert r.code == 500
            assert r.headers["Content-Type"] == "text/plain"
            assert b"Traceback" in r.body and b"ValueError: boom" in r.body
            r = await fetch(port, "/custom")
            assert r.json() == {"status": 500, "error": "boom"}

    run_app([("/", Handler), ("/custom", Custom)], check, serve_traceback=True)


def test_bodiless_statuses() -> None:
    class Handler(RequestHandler):
        def get(self, code: str) -> None:
            if code == "204":
                self.set_status(204)
                self.set_header("Content-Language", "en")
            else:
                raise HTTPError(int(code))

    async def check(port: int) -> None:
        for code in ("204", "304"):
            r = await fetch(port, "/" + code)
            assert r.code == int(code) and r.body == b""
            assert "Content-Length" not in r.headers
            assert "Content-Type" not in r.headers
            assert "Content-Language" not in r.headers

    run_app([("/(.*)", Handler)], check)


def test_etag_and_if_none_match() -> None:
    class Handler(RequestHandler):
        def get(self) -> None:
            self.write("cached body")

    class NoEtag(Handler):
        def compute_etag(self) -> Optional[str]:
            return None

    async def check(port: int) -> None:
        first = await fetch(port, "/")
        etag = first.headers["Etag"]
        again = await fetch(port, "/", headers={"If-None-Match": etag})
        assert again.code == 304 and again.body == b""
        weak = await fetch(port, "/", headers={"If-None-Match": '"x", W/' + etag})
        assert weak.code == 304
        star = await fetch(port, "/", headers={"If-None-Match": "*"})
        assert star.code == 304
        other = await fetch(port, "/", headers={"If-None-Match": '"other"'})
        assert other.code == 200 and other.body == b"cached body"
        plain = await fetch(port, "/noetag", headers={"If-None-Match": "*"})
        assert plain.code == 200 and "Etag" not in plain.headers

    run_app([("/", Handler), ("/noetag", NoEtag)], check)


# -- cookies --------------------------------------------------------------------


def test_set_and_get_cookies() -> None:
    class Handler(RequestHandler):
        def get(self) -> None:
            self.set_cookie("plain", "v")
            self.set_cookie("special", "a;b")
            self.set_cookie("attrs", "1", domain="example.com", path="/p", max_age=10,
                            httponly=True, secure=True, samesite="Lax")
            self.set_cookie("days", "1", expires_days=2)
            self.set_cookie("replaced", "old", domain="example.com")
            self.set_cookie("replaced", "new")
            self.clear_cookie("gone", path="/x")
            self.write(self.get_cookie("in", "missing"))

    response = get_once(Handler, headers={"Cookie": 'in="quoted"; other=1'})
    assert response.body == b"quoted"
    cookies = sorted(response.header_list("Set-Cookie"))
    assert cookies[0] == "attrs=1; Domain=example.com; HttpOnly; Max-Age=10; Path=/p; SameSite=Lax; Secure"
    assert cookies[1].startswith("days=1; expires=") and cookies[1].endswith(" GMT; Path=/")
    assert cookies[2].startswith('gone=""; expires=') and cookies[2].endswith("; Path=/x")
    assert cookies[3:] == ["plain=v; Path=/", "replaced=new; Path=/", 'special="a\\073b"; Path=/']


def test_cookie_validation() -> None:
    class Handler(RequestHandler):
        def get(self) -> None:
            outcomes = []
            attempts: list[Callable[[], None]] = [
                lambda: self.set_cookie("bad name", "v"),
                lambda: self.set_cookie("bad;name", "v"),
                lambda: self.set_cookie("n", "v", domain="a\r\nb"),
                lambda: self.set_cookie("n", "v", path="/;x"),
                lambda: self.set_cookie("n", "bad value"),
                lambda: self.set_cookie("n", "v", max_age="1; Path=/x"),  # type: ignore[arg-type]
            ]
            for attempt in attempts:
                try:
                    attempt()
                    outcomes.append("accepted")
                except Exception as e:
                    outcomes.append(type(e).__name__)
            self.write(",".join(outcomes))

    response = get_once(Handler)
    assert response.body == b"CookieError,CookieError,CookieError,CookieError,ValueError,ValueError"
    assert not any("Path=/x" in c for c in response.header_list("Set-Cookie"))


def test_clear_all_cookies() -> None:
    class Handler(RequestHandler):
        def get(self) -> None:
            self.clear_all_cookies()

    response = get_once(Handler, headers={"Cookie": "a=1; b=2"})
    names = sorted(c.split("=")[0] for c in response.header_list("Set-Cookie"))
    assert names == ["a", "b"]


def test_signed_cookie_round_trip_and_tampering() -> None:
    class Set(RequestHandler):
        def get(self) -> None:
            self.set_signed_cookie("user", "alice")

    class Get(RequestHandler):
        def get(self) -> None:
            self.write(repr(self.get_signed_cookie("user")))

    async def check(port: int) -> None:
        header = (await fetch(port, "/set")).headers["Set-Cookie"]
        value = header.split(";")[0].split("=", 1)[1]
        assert value.startswith('"2|1:0|') or value.startswith("2|1:0|")
        cookie = "user=" + value
        assert (await fetch(port, "/get", headers={"Cookie": cookie})).body == b"b'alice'"
        forged = cookie.replace("YWxpY2U=", "bWFsbG9yeQ==").replace("8:", "12:")
        assert (await fetch(port, "/get", headers={"Cookie": forged})).body == b"None"

    run_app([("/set", Set), ("/get", Get)], check, cookie_secret="s3cret")


# -- redirects and decorators ---------------------------------------------------


def test_redirect_and_redirect_handler(caplog: pytest.LogCaptureFixture) -> None:
    class Handler(RequestHandler):
        def get(self) -> None:
            self.redirect("/target", permanent=bool(self.get_argument("p", "")))

    async def check(port: int) -> None:
        r = await fetch(port, "/r")
        assert (r.code, r.headers["Location"]) == (302, "/target")
        assert (await fetch(port, "/r?p=1")).code == 301
        r = await fetch(port, "/photos/cat.jpg?size=2")
        assert (r.code, r.headers["Location"]) == (301, "/pictures/cat.jpg?size=2")
        with caplog.at_level(logging.WARNING):
            # Path values must not turn the target into another site.
            for path in ["/root//evil.com", "/root/%5Cevil.com", "/root/%09/evil.com",
                         "/go/https:%2F%2Fevil.com", "/go/javascript:alert(1)"]:
                r = await fetch(port, path)
                assert r.code == 400, path
        assert "Redirect URL cannot change the scheme or netloc" in caplog.text
        r = await fetch(port, "/go/here")
        assert r.headers["Location"] == "here"

    run_app(
        [
            ("/r", Handler),
            (r"/photos/(.*)", RedirectHandler, {"url": "/pictures/{0}"}),
            (r"/root/(.*)", RedirectHandler, {"url": "/{0}"}),
            (r"/go/(.*)", RedirectHandler, {"url": "{0}", "permanent": False}),
        ],
        check,
    )


def test_addslash_removeslash_and_authenticated(caplog: pytest.LogCaptureFixture) -> None:
    class Add(RequestHandler):
        @web.addslash
        def get(self) -> None:
            self.write("added")

    class Remove(RequestHandler):
        @web.removeslash
        def get(self) -> None:
            self.write("removed")

    class Private(RequestHandler):
        @web.authenticated
        def get(self) -> None:
            self.write("secret")

        @web.authenticated
        def post(self) -> None:
            self.write("secret")

    async def check(port: int) -> None:
        r = await fetch(port, "/add?x=1")
        assert (r.code, r.headers["Location"]) == (301, "/add/?x=1")
        assert (await fetch(port, "/add/")).body == b"added"
        r = await fetch(port, "/remove/")
        assert (r.code, r.headers["Location"]) == (301, "/remove")
        with caplog.at_level(logging.WARNING):
            assert (await fetch(port, "//remove.evil/")).code == 403
        r = await fetch(port, "/private?a=b")
        assert (r.code, r.headers["Location"]) == (302, "/login?next=%2Fprivate%3Fa%3Db")
        assert (await fetch(port, "/private", method="POST")).code == 403

    run_app(
        [(r"/add/?", Add), (r"/+remove.*", Remove), ("/private", Private)],
        check,
        login_url="/login",
    )


# -- XSRF and cross-origin protection -------------------------------------------


def test_xsrf_protection(caplog: pytest.LogCaptureFixture) -> None:
    class Handler(RequestHandler):
        def get(self) -> None:
            self.write(self.xsrf_form_html())

        def post(self) -> None:
            self.write("posted")

    async def check(port: int) -> None:
        r = await fetch(port, "/")
        token = r.body.decode().split('value="')[1].split('"')[0]
        cookie = r.headers["Set-Cookie"].split(";")[0]
        assert cookie.startswith("_xsrf=")
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        ok = await fetch(port, "/", method="POST", headers={**form, "Cookie": cookie},
                         body=urllib.parse.urlencode({"_xsrf": token}).encode())
        assert ok.body == b"posted"
        by_header = await fetch(port, "/", method="POST", headers={"Cookie": cookie, "X-Xsrftoken": token})
        assert by_header.code == 200
        with caplog.at_level(logging.WARNING):
            assert (await fetch(port, "/", method="POST", headers={"Cookie": cookie})).code == 403
            assert (await fetch(port, "/", method="POST", headers={"X-Xsrftoken": token})).code == 403
        assert "'_xsrf' argument missing" in caplog.text
        assert "XSRF cookie does not match" in caplog.text

    run_app([("/", Handler)], check, xsrf_cookies=True)


def test_cross_origin_protection(caplog: pytest.LogCaptureFixture) -> None:
    class Handler(RequestHandler):
        def post(self) -> None:
            self.write("ok")

    async def check(port: int) -> None:
        own = "http://127.0.0.1:%d" % port
        cases = [
            ({}, 200),
            ({"Sec-Fetch-Site": "same-origin"}, 200),
            ({"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, 403),
            ({"Sec-Fetch-Site": "cross-site", "Origin": "https://partner.example"}, 200),
            ({"Origin": own}, 200),
            ({"Origin": "null"}, 403),
            ({"Origin": "https://evil.example"}, 403),
        ]
        with caplog.at_level(logging.WARNING):
            for headers, expected in cases:
                assert (await fetch(port, "/", method="POST", headers=headers)).code == expected, headers

    run_app([("/", Handler)], check, cross_origin_protection=True,
            trusted_origins=["https://partner.example"])


# -- users and locales ------------------------------------------------------------


def test_current_user_and_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, ...]] = []
    real_get = locale.get

    def recording_get(*codes: str) -> locale.Locale:
        asked.append(codes)
        return real_get(*codes)

    monkeypatch.setattr(locale, "get", recording_get)

    class Handler(RequestHandler):
        def get_current_user(self) -> Optional[str]:
            return self.get_argument("user", None)

        def get(self) -> None:
            self.write("%s %s" % (self.current_user, self.locale.code))

    async def check(port: int) -> None:
        r = await fetch(port, "/?user=bob", headers={"Accept-Language": "fr-FR;q=0.5, es, de;q=2"})
        assert r.body == b"bob en_US"
        r = await fetch(port, "/", headers={"Accept-Language": "fr;q=0, zz"})
        assert r.body == b"None en_US"
        await fetch(port, "/")

    run_app([("/", Handler)], check)
    # Ranked by weight; weight 0 and invalid weights drop a language.
    assert asked == [("es", "fr-FR"), ("zz",), ("en_US",)]


# -- templates and UI modules ------------------------------------------------------


def test_render_with_ui_modules_and_methods(tmp_path: Any) -> None:
    (tmp_path / "page.html").write_text(
        "<html><head></head><body>{{ shout('hi') }} {% module Box(3) %}{% module Box(4) %}</body></html>"
    )

    class Box(UIModule):
        def render(self, n: int) -> str:
            return "[%d]" % n

        def embedded_css(self) -> str:
            return ".box{}"

        def javascript_files(self) -> list[str]:
            return ["/js/box.js"]

    class Handler(RequestHandler):
        def get(self) -> None:
            self.render("page.html")

    async def check(port: int) -> None:
        r = await fetch(port, "/")
        assert r.body == (
            b'<html><head><style type="text/css">\n.box{}\n</style>\n</head><body>HI! [3][4]'
            b'<script src="/js/box.js" type="text/javascript"></script>\n</body></html>'
        )

    run_app(
        [("/", Handler)],
        check,
        template_path=str(tmp_path),
        ui_modules={"Box": Box},
        ui_methods={"shout": lambda handler, s: s.upper() + "!"},
    )
    RequestHandler._template_loaders.clear()


# -- output transforms, flushing, streaming ------------------------------------------


def test_gzip_setting() -> None:
    class Handler(RequestHandler):
        def get(self) -> None:
            self.write("x" * 5000)

    async def check(port: int) -> None:
        r = await fetch(port, "/", headers={"Accept-Encoding": "gzip"})
        assert r.headers["Content-Encoding"] == "gzip"
        assert r.headers["Vary"] == "Accept-Encoding"
        assert gzip.decompress(r.body) == b"x" * 5000
        plain = await fetch(port, "/")
        assert "Content-Encoding" not in plain.headers and plain.body == b"x" * 5000

    run_app([("/", Handler)], check, compress_response=True)


def test_flush_streams_a_chunked_response() -> None:
    class Handler(RequestHandler):
        async def get(self) -> None:
            for i in range(50):
                self.write(b"%06d" % i * 1000)
                await self.flush()

    async def check(port: int) -> None:
        r = await fetch(port, "/")
        assert r.headers["Transfer-Encoding"] == "chunked"
        assert r.body == b"".join(b"%06d" % i * 1000 for i in range(50))

    run_app([("/", Handler)], check)


def test_stream_request_body() -> None:
    @web.stream_request_body
    class Upload(RequestHandler):
        def prepare(self) -> None:
            self.pieces: list[bytes] = []

        async def data_received(self, chunk: bytes) -> None:
            await asyncio.sleep(0)
            self.pieces.append(chunk)

        def put(self) -> None:
            self.write({"size": sum(map(len, self.pieces)), "body_parsed": self.request.body == b""})

    async def check(port: int) -> None:
        r = await fetch(port, "/", method="PUT", body=b"z" * 300_000)
        assert r.json() == {"size": 300_000, "body_parsed": True}

    run_app([("/", Upload)], check)


def test_on_connection_close_stops_a_waiting_handler() -> None:
    async def main() -> None:
        events: dict[str, asyncio.Event] = {"waiting": asyncio.Event(), "closed": asyncio.Event()}

        class Handler(RequestHandler):
            async def get(self) -> None:
                events["waiting"].set()
                await events["closed"].wait()

            def on_connection_close(self) -> None:
                events["closed"].set()

        async with serving(Application([("/", Handler)])) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(events["waiting"].wait(), 5)
            writer.close()
            await asyncio.wait_for(events["closed"].wait(), 5)

    asyncio.run(main())


def test_work_cancelled_because_the_client_left_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    # A handler whose task is cancelled from on_connection_close (the
    # client hung up) sends no 500 and logs no error for a client who is gone.
    async def main() -> None:
        events = {"waiting": asyncio.Event(), "done": asyncio.Event()}

        class Handler(RequestHandler):
            async def get(self) -> None:
                self.task = asyncio.current_task()
                events["waiting"].set()
                try:
                    await asyncio.sleep(30)
                finally:
                    events["done"].set()

            def on_connection_close(self) -> None:
                self.task.cancel()

        async with serving(Application([("/", Handler)])) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(events["waiting"].wait(), 5)
            writer.close()
            await asyncio.wait_for(events["done"].wait(), 5)
            await asyncio.sleep(0.05)

    with caplog.at_level(logging.INFO, logger="squall"):
        asyncio.run(main())
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == []
    assert not any(" 500 " in r.getMessage() for r in caplog.records)


def test_watchdog_setting_reports_a_handler_that_blocks_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    import time

    from squall import watchdog

    class Blocking(RequestHandler):
        def get(self) -> None:
            time.sleep(0.4)
            self.write("done")

    async def main() -> None:
        app = Application([("/slow", Blocking)], watchdog=0.1)
        try:
            async with serving(app) as port:
                assert (await fetch(port, "/slow")).body == b"done"
                await asyncio.sleep(0.1)
        finally:
            watchdog.stop()

    with caplog.at_level(logging.WARNING, logger="squall"):
        asyncio.run(main())
    assert any("Blocking" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("value", [-1, "fast", float("nan")])
def test_watchdog_setting_rejects_bad_values(value: Any) -> None:
    with pytest.raises(ValueError, match="watchdog"):
        Application([], watchdog=value)


def test_a_body_that_does_not_parse_is_a_400_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []

    class Form(RequestHandler):
        def post(self) -> None:
            ran.append(self.get_body_argument("foo"))
            self.write("ok")

    async def check(port: int) -> None:
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "br"}
        bad = await fetch(port, "/", method="POST", headers=headers, body=b"not really brotli")
        assert bad.code == 400
        good = await fetch(port, "/", method="POST",
                           headers={"Content-Type": "application/x-www-form-urlencoded"}, body=b"foo=bar")
        assert (good.code, good.body) == (200, b"ok")

    with caplog.at_level(logging.INFO, logger="squall"):
        run_app([("/", Form)], check)
    assert ran == ["bar"]
    # One warning says what was wrong (the access log line for the 400 aside).
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "squall.general"]
    assert len(warnings) == 1 and "Invalid body" in warnings[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)


def test_asynchronous_decorator_finishes_from_a_callback() -> None:
    class Handler(RequestHandler):
        @web.asynchronous
        def get(self) -> None:
            IOLoop.current().call_later(0.01, self.done)

        def done(self) -> None:
            self.write("later")
            self.finish()

    assert get_once(Handler).body == b"later"


# -- application -------------------------------------------------------------------


def test_not_found_default_handler_and_host_rules() -> None:
    class Named(RequestHandler):
        def initialize(self, reply: str) -> None:
            self.reply = reply

        def get(self, *args: Any) -> None:
            self.write(self.reply + " " + self.reverse_url("item", 42))

    async def check(port: int) -> None:
        r = await fetch(port, "/nowhere")
        assert r.code == 404
        assert r.body == b"<html><title>404: Not Found</title><body>404: Not Found</body></html>"
        assert (await fetch(port, "/item/1")).body == b"any /item/42"
        assert (await fetch(port, "/item/1", headers={"Host": "api.example.com"})).body == b"api /item/42"

    async def main() -> None:
        app = Application([url(r"/item/(\d+)", Named, {"reply": "any"}, name="item")])
        app.add_handlers(r"api\.example\.com", [(r"/item/(\d+)", Named, {"reply": "api"})])
        async with serving(app) as port:
            await check(port)

    asyncio.run(main())

    class Teapot(RequestHandler):
        def get(self) -> None:
            self.set_status(418)
            self.write("custom")

    async def check_default(port: int) -> None:
        assert (await fetch(port, "/x")).body == b"custom"

    run_app([], check_default, default_handler_class=Teapot)


def test_access_log_and_log_function(caplog: pytest.LogCaptureFixture) -> None:
    logged: list[str] = []

    async def check(port: int) -> None:
        with caplog.at_level(logging.INFO, logger="squall.access"):
            await fetch(port, "/?q=1")
        await fetch(port, "/missing")

    run_app([("/", HelloHandler)], check)
    assert caplog.records[0].name == "squall.access"
    assert caplog.records[0].getMessage().startswith("200 GET /?q=1 (127.0.0.1) ")
    assert caplog.records[0].getMessage().endswith("ms")

    async def check_fn(port: int) -> None:
        await fetch(port, "/")

    run_app([("/", HelloHandler)], check_fn,
            log_function=lambda h: logged.append("%d %s" % (h.get_status(), h.request.path)))
    assert logged == ["200 /"]


def test_misconfiguration_raises_naming_the_value() -> None:
    with pytest.raises(ValueError, match="'/only'"):
        Application([("/only",)])
    with pytest.raises(TypeError, match="42"):
        Application([("/x", 42)])
    with pytest.raises(TypeError, match="kwargs-not-a-dict"):
        Application([("/x", HelloHandler, "kwargs-not-a-dict")])
    with pytest.raises(ImportError):
        Application([("/x", "no.such.Handler")])
    with pytest.raises(TypeError, match="cookie_secret"):
        Application(cookie_secret=12345)
    with pytest.raises(ValueError, match="key_version 3"):
        Application(cookie_secret={1: "a"}, key_version=3)
    with pytest.raises(ValueError, match="xsrf_cookie_version must be 1 or 2, got 5"):
        Application(xsrf_cookie_version=5)
    with pytest.raises(TypeError, match="default_handler_class"):
        Application(default_handler_class=object)
    with pytest.raises(TypeError, match="ui_modules"):
        Application(ui_modules="nope")


def test_application_is_callable_with_a_request() -> None:
    async def main() -> None:
        app = Application([("/", HelloHandler)])

        def on_request(request: Any) -> None:
            app(request)

        async with serving(on_request) as port:
            assert (await fetch(port, "/")).body == b"Hello, world"

    asyncio.run(main())


def test_listen_returns_a_running_server() -> None:
    async def main() -> None:
        app = Application([("/", HelloHandler)])
        sock, port = bind_unused_port()
        sock.close()
        server = app.listen(port, "127.0.0.1")
        try:
            assert (await fetch(port, "/")).body == b"Hello, world"
        finally:
            server.stop()
            await server.close_all_connections()

    asyncio.run(main())


def test_detach_hands_over_the_connection() -> None:
    class Handler(RequestHandler):
        async def get(self) -> None:
            stream = self.detach()
            await stream.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nraw")
            stream.close()

    assert get_once(Handler).body == b"raw"


def test_handler_instances_are_not_shared() -> None:
    class Counter(RequestHandler):
        def initialize(self) -> None:
            self.count = getattr(self, "count", 0) + 1

        def get(self) -> None:
            self.write(str(self.count))

    async def check(port: int) -> None:
        assert [(await fetch(port, "/")).body for _ in range(3)] == [b"1", b"1", b"1"]

    run_app([("/", Counter)], check)


def test_socket_level_keep_alive_pipelining() -> None:
    async def main() -> None:
        async with serving(Application([("/", HelloHandler)])) as port:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2 + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = await asyncio.to_thread(_read_all, s)
            assert data.count(b"HTTP/1.1 200 OK") == 3
            assert data.count(b"Hello, world") == 3

    asyncio.run(main())


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_access_log_follows_level_changes_and_disabling() -> None:
    # The access log reads the logger's enabled-for cache directly; every
    # change of level, or disabling the logger, must still be obeyed.
    access = logging.getLogger("squall.access")
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    collector = Collect()
    saved_level, saved_disabled = access.level, access.disabled
    access.addHandler(collector)

    async def check(port: int) -> None:
        access.setLevel(logging.INFO)
        await fetch(port, "/hello")
        access.setLevel(logging.WARNING)
        await fetch(port, "/hello")
        await fetch(port, "/missing")
        access.disabled = True
        await fetch(port, "/missing")
        access.disabled = False
        access.setLevel(logging.INFO)
        await fetch(port, "/hello")

    try:
        run_app([(r"/hello", HelloHandler)], check)
    finally:
        access.removeHandler(collector)
        access.setLevel(saved_level)
        access.disabled = saved_disabled
    assert [line.split(" ")[:3] for line in lines] == [
        ["200", "GET", "/hello"],
        ["404", "GET", "/missing"],
        ["200", "GET", "/hello"],
    ]


# -- the application router hands route parameters on as given ---------------


def test_route_parameters_reach_handlers_routers_and_overrides() -> None:
    from squall.routing import PathMatches, Rule, RuleRouter

    class Args(RequestHandler):
        def initialize(self, tag: str = "") -> None:
            self.tag = tag

        def get(self, *args: str, **kwargs: str) -> None:
            self.write({"tag": self.tag, "args": list(args), "kwargs": kwargs})

    seen: list[dict[str, Any]] = []

    class Recording(RuleRouter):
        def find_handler(self, request: Any, **kwargs: Any) -> Any:
            seen.append(kwargs)
            return super().find_handler(request, **kwargs)

    def answer(request: Any) -> None:
        from squall.httputil import HTTPHeaders, ResponseStartLine

        body = b"inner"
        request.connection.write_headers(
            ResponseStartLine("HTTP/1.1", 200, "OK"),
            HTTPHeaders({"Content-Length": str(len(body))}),
            body,
        )
        request.connection.finish()

    inner = Recording([Rule(PathMatches(r"/nested/.*"), answer)])

    class Delegating(Application):
        calls: list[tuple[Any, ...]] = []

        def get_handler_delegate(  # type: ignore[override]
            self, request: Any, target_class: Any, target_kwargs: Any = None,
            path_args: Any = None, path_kwargs: Any = None,
        ) -> Any:
            self.calls.append((target_class.__name__, target_kwargs, path_args, path_kwargs))
            return super().get_handler_delegate(
                request, target_class, target_kwargs, path_args, path_kwargs
            )

    handlers = [
        (r"/plain", Args),
        (r"/kw", Args, {"tag": "kw"}),
        (r"/user/(\d+)/(\w+)", Args),
        (r"/named/(?P<name>\w+)", Args, {"tag": "named"}),
        (r"/nested/(\d+)", inner),
    ]

    async def main() -> None:
        async with serving(Application(handlers)) as port:
            assert (await fetch(port, "/plain")).json() == {"tag": "", "args": [], "kwargs": {}}
            assert (await fetch(port, "/kw")).json()["tag"] == "kw"
            assert (await fetch(port, "/user/42/ann")).json()["args"] == ["42", "ann"]
            named = (await fetch(port, "/named/bob")).json()
            assert named == {"tag": "named", "args": [], "kwargs": {"name": "bob"}}
            assert (await fetch(port, "/nested/7")).body == b"inner"
            assert seen == [{"path_args": [b"7"], "path_kwargs": {}}]
        app = Delegating(handlers)
        async with serving(app) as port:
            assert (await fetch(port, "/user/1/x")).json()["args"] == ["1", "x"]
            assert (await fetch(port, "/named/al")).json()["kwargs"] == {"name": "al"}
            assert (await fetch(port, "/plain")).code == 200
        assert app.calls == [
            ("Args", None, [b"1", b"x"], {}),
            ("Args", {"tag": "named"}, [], {"name": b"al"}),
            ("Args", None, None, None),
        ]

    asyncio.run(main())
