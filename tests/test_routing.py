"""Tests for squall.routing: matchers, rule order, the exact-path index, reversing."""

from __future__ import annotations

import re
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from squall import httputil
from squall.routing import (
    AnyMatches,
    DefaultHostMatches,
    HostMatches,
    Matcher,
    PathMatches,
    ReversibleRuleRouter,
    Router,
    Rule,
    RuleRouter,
    URLSpec,
    _literal_path,
    url,
)


def make_request(uri: str, host: str = "example.com", **headers: str) -> httputil.HTTPServerRequest:
    all_headers = httputil.HTTPHeaders({"Host": host})
    for name, value in headers.items():
        all_headers[name.replace("_", "-")] = value
    return httputil.HTTPServerRequest(
        start_line=httputil.RequestStartLine("GET", uri, "HTTP/1.1"), headers=all_headers
    )


class Recorder(Router):
    """A router target that reports what it was asked to find."""

    def __init__(self, label: str, answer: bool = True) -> None:
        self.label = label
        self.answer = answer
        self.calls: list[dict[str, Any]] = []

    def find_handler(self, request: httputil.HTTPServerRequest, **kwargs: Any) -> Optional[Any]:
        self.calls.append(kwargs)
        return self.label if self.answer else None


def test_path_matches_anchors_both_ends() -> None:
    matcher = PathMatches("/foo")
    assert matcher.regex.pattern == "/foo$"
    assert matcher.match(make_request("/foo")) == {}
    assert matcher.match(make_request("/foo?x=1")) == {}
    assert matcher.match(make_request("/foobar")) is None
    assert matcher.match(make_request("/x/foo")) is None


def test_path_groups_are_unquoted_bytes() -> None:
    matcher = PathMatches(r"/item/([^/]+)/(\d+)?")
    assert matcher.match(make_request("/item/a%2Fb+c/")) == {
        "path_args": [b"a/b+c", None],
        "path_kwargs": {},
    }
    named = PathMatches(r"/user/(?P<name>[^/]+)/(x)")
    # With named groups, unnamed ones are not passed.
    assert named.match(make_request("/user/%C3%A9/x")) == {
        "path_args": [],
        "path_kwargs": {"name": b"\xc3\xa9"},
    }


def test_compiled_pattern_is_used_as_given() -> None:
    matcher = PathMatches(re.compile("/CASE", re.IGNORECASE))
    assert matcher.match(make_request("/case")) == {}
    assert matcher.match(make_request("/case/more")) == {}  # not anchored by us


def test_bad_pattern_type_is_refused() -> None:
    with pytest.raises(TypeError, match="42"):
        PathMatches(42)  # type: ignore[arg-type]


def test_host_matches_host_name_without_port() -> None:
    matcher = HostMatches(r"www\.example\.com")
    assert matcher.match(make_request("/", host="www.example.com:8080")) == {}
    assert matcher.match(make_request("/", host="WWW.example.com")) == {}
    assert matcher.match(make_request("/", host="www.example.com.evil")) is None


def test_default_host_matches_reads_the_application_each_time() -> None:
    class App:
        default_host: Optional[str] = "www.example.com"

    app = App()
    matcher = DefaultHostMatches(app, re.compile(r"www\.example\.com$"))
    assert matcher.match(make_request("/", host="127.0.0.1")) == {}
    # A request through a proxy has a real host name: never the default.
    assert matcher.match(make_request("/", host="127.0.0.1", X_Real_Ip="1.2.3.4")) is None
    app.default_host = "other.com"
    assert matcher.match(make_request("/", host="127.0.0.1")) is None
    app.default_host = None
    assert matcher.match(make_request("/", host="127.0.0.1")) is None


def test_first_matching_rule_wins_across_exact_and_regex_rules() -> None:
    catch_all = Recorder("catch-all")
    exact = Recorder("exact")
    later_exact = Recorder("later-exact")
    router = RuleRouter(
        [
            ("/a", exact),
            ("/.*", catch_all),
            ("/b", later_exact),
        ]
    )
    assert router.find_handler(make_request("/a")) == "exact"
    # "/b" is an exact rule, but the regex before it matches first.
    assert router.find_handler(make_request("/b")) == "catch-all"


def test_exact_rules_behind_regex_rules_keep_first_match_order() -> None:
    # The look-up plan moves exact paths ahead of regexes that cannot match
    # them; every answer must still be the first rule, in list order, whose
    # matcher matches and whose target accepts.
    specs: list[tuple[Any, Recorder]] = [
        (r"/static/(.*)", Recorder("static")),
        (r"/(favicon\.ico)", Recorder("favicon")),
        ("/plain", Recorder("no-plain", answer=False)),
        (r"/p.*n", Recorder("regex-plain")),
        ("/plain", Recorder("late-plain")),
        ("/json", Recorder("json")),
        ("/static/x", Recorder("shadowed")),
        (HostMatches("other"), Recorder("host")),
        ("/after-host", Recorder("after-host")),
        ("/json", Recorder("second-json")),
    ]
    router = RuleRouter(specs)
    for path in ["/plain", "/json", "/static/x", "/favicon.ico", "/after-host", "/pin", "/none"]:
        request = make_request(path)
        expected = None
        for matcher, target in specs:
            found = (PathMatches(matcher) if isinstance(matcher, str) else matcher).match(request)
            if found is not None and target.answer:
                expected = target.label
                break
        assert router.find_handler(request) == expected, path
    assert router.find_handler(make_request("/after-host", host="other")) == "host"


def test_rule_that_declines_lets_later_rules_try() -> None:
    declining = Recorder("no", answer=False)
    same_path = Recorder("second")
    router = RuleRouter([("/p", declining), ("/p", same_path)])
    assert router.find_handler(make_request("/p")) == "second"
    assert declining.calls == [{}]
    assert router.find_handler(make_request("/q")) is None


def test_target_kwargs_and_path_args_reach_the_target() -> None:
    target = Recorder("t")
    router = RuleRouter([Rule(PathMatches("/x/(.*)"), target, {"a": 1}), ("/y", target, {"b": 2})])
    router.find_handler(make_request("/x/%20"))
    router.find_handler(make_request("/y"))
    assert target.calls == [
        {"path_args": [b" "], "path_kwargs": {}, "target_kwargs": {"a": 1}},
        {"target_kwargs": {"b": 2}},
    ]


def test_editing_the_rules_list_is_seen_by_find_handler() -> None:
    first = Recorder("first")
    second = Recorder("second")
    router = RuleRouter([("/a", first)])
    assert router.find_handler(make_request("/a")) == "first"
    router.rules.insert(0, Rule(PathMatches("/a"), second))
    assert router.find_handler(make_request("/a")) == "second"
    del router.rules[0]
    assert router.find_handler(make_request("/a")) == "first"
    router.rules = [Rule(PathMatches("/b"), second)]
    assert router.find_handler(make_request("/a")) is None
    assert router.find_handler(make_request("/b")) == "second"
    router.add_rules([("/a", first)])
    assert router.find_handler(make_request("/a")) == "first"


def test_callable_target_gets_the_request_after_the_body() -> None:
    seen = []

    class Connection(httputil.HTTPConnection):
        pass

    router = RuleRouter([("/cb", seen.append)])
    request = make_request("/cb")
    request.connection = Connection()
    delegate = router.find_handler(request)
    assert delegate is not None
    delegate.headers_received(
        httputil.RequestStartLine("POST", "/cb", "HTTP/1.1"),
        httputil.HTTPHeaders({"Host": "h", "Content-Type": "application/x-www-form-urlencoded"}),
    )
    delegate.data_received(b"a=1&")
    delegate.data_received(b"b=2")
    delegate.finish()
    assert len(seen) == 1
    assert seen[0].body == b"a=1&b=2"
    assert seen[0].body_arguments == {"a": [b"1"], "b": [b"2"]}


def test_string_targets_are_imported() -> None:
    rule = Rule(PathMatches("/"), "squall.routing.AnyMatches")
    assert rule.target is AnyMatches


def test_bad_rules_are_refused_at_once() -> None:
    with pytest.raises(ValueError, match="'/only'"):
        RuleRouter([("/only",)])
    with pytest.raises(TypeError, match="'nope'"):
        RuleRouter(["nope"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="Matcher"):
        Rule("/x", None)  # type: ignore[arg-type]
    with pytest.raises(ImportError):
        Rule(PathMatches("/"), "squall.no_such_module.Handler")


@pytest.mark.parametrize(
    "pattern, literal",
    [
        ("/a", "/a"),
        ("^/a$", "/a"),
        (r"/favicon\.ico", "/favicon.ico"),
        (r"/a\-b\/c", "/a-b/c"),
        ("/a.b", None),
        ("/a/?", None),
        (r"/a\d", None),
        ("/a|/b", None),
        ("/(a)", None),
        ("/a[bc]", None),
        ("/a{2}", None),
        ("/a*", None),
    ],
)
def test_literal_path_detection(pattern: str, literal: Optional[str]) -> None:
    assert _literal_path(pattern) == literal
    if literal is not None:
        assert re.compile(pattern + ("" if pattern.endswith("$") else "$")).match(literal)


def test_reverse() -> None:
    assert url(r"/favicon\.ico", None).reverse() == "/favicon.ico"
    assert url(r"^/favicon\.ico$", None).reverse() == "/favicon.ico"
    assert url(r"^/api/v1/foo/(\w+)$", None).reverse("bar") == "/api/v1/foo/bar"
    assert url(r"/api\.v1/foo/([0-9]+)/icon\.png", None).reverse(5) == "/api.v1/foo/5/icon.png"
    assert url(r"/x/(.*)", None).reverse("a b/c+é") == "/x/a%20b/c%2B%C3%A9"
    assert url(r"/x/(.*)", None).reverse(b"\xe9") == "/x/%E9"
    # A literal percent sign outside the groups survives.
    assert url(r"/100%/(.*)", None).reverse("x") == "/100%/x"


def test_irreversible_patterns_raise_value_error() -> None:
    for pattern in [r"^/api/v\d+/foo/(\w+)$", "/a(?:b)?", r"/(a(b))"]:
        spec = url(pattern, None)
        with pytest.raises(ValueError, match="Cannot reverse"):
            spec.reverse()
    with pytest.raises(ValueError, match="needs 1 arguments, got 2"):
        url("/x/(.*)", None).reverse("a", "b")


def test_reversible_router_finds_names_in_nested_routers() -> None:
    inner = ReversibleRuleRouter([url("/inner/(.*)", None, name="inner")])
    outer = ReversibleRuleRouter([Rule(PathMatches("/inner.*"), inner), url("/top", None, name="top")])
    assert outer.reverse_url("top") == "/top"
    assert outer.reverse_url("inner", "x") == "/inner/x"
    assert outer.reverse_url("missing") is None


def test_reversible_router_warns_about_duplicate_names(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="squall.application"):
        router = ReversibleRuleRouter([url("/a", None, name="n"), url("/b", None, name="n")])
    assert router.reverse_url("n") == "/b"
    assert "Multiple handlers named n" in caplog.text


def test_urlspec_keeps_its_legacy_attributes() -> None:
    spec = URLSpec("/a/(.*)", Recorder, {"k": 1}, "name")
    assert spec.regex.pattern == "/a/(.*)$"
    assert spec.handler_class is Recorder
    assert spec.kwargs == {"k": 1}
    assert spec.target_kwargs == {"k": 1}
    assert repr(spec).startswith("URLSpec('/a/(.*)$', ")


def test_custom_matcher() -> None:
    class MethodMatches(Matcher):
        def __init__(self, method: str) -> None:
            self.method = method

        def match(self, request: httputil.HTTPServerRequest) -> Optional[dict[str, Any]]:
            return {} if request.method == self.method else None

    router = RuleRouter([Rule(MethodMatches("POST"), Recorder("post")), Rule(AnyMatches(), Recorder("any"))])
    assert router.find_handler(make_request("/")) == "any"


# Patterns for the differential test below: fixed first segments, literal
# whole paths, groups, optional parts, alternation, flags, catch-alls.
_INDEX_PATTERNS = [
    r"/static/(.*)", r"/(favicon\.ico)", r"/(robots\.txt)", r"/user/([0-9]+)",
    r"/user/(?P<name>[a-z]+)/x", r"/", r"/(.*)", r"/a(b)?/x", r"/ab?c/", r"(?i)/USER/(.*)",
    r"/(?i:st)atic/y", r"/x|/y/", r"^/api/v1/(.*)", r"/api", r"/a(?:b)/c", r"/\d+/x",
    r"/user", r"/user/", r"/us(er)/(.*)", r"(?m)/end",
]
_INDEX_PATHS = [
    "/static/a.css", "/static", "/favicon.ico", "/favicon.ico\n", "/robots.txt", "/user/42",
    "/user/bob/x", "/USER/9", "/", "", "/ab/x", "/a/x", "/ac/", "/abc/", "/x", "/y/", "/api",
    "/api/v1/q", "/abc/", "/12/x", "/user", "/user/", "/Static/y", "/end", "/end\nmore", "*",
    "http://h/user/1",
]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(_INDEX_PATTERNS), min_size=1, max_size=10),
    st.lists(st.booleans(), min_size=10, max_size=10),
)
def test_segment_index_gives_the_same_first_match_as_trying_every_rule(
    patterns: list[str], answers: list[bool]
) -> None:
    # Runs of pattern rules are indexed by first path segment; the answer
    # must be the one a plain first-match scan gives, for every path.
    specs = [
        (pattern, Recorder(f"{i}:{pattern}", answer=answers[i]))
        for i, pattern in enumerate(patterns)
    ]
    router = RuleRouter(specs)
    for path in _INDEX_PATHS:
        request = make_request("/") if not path else make_request(path)
        request.path = path
        expected = None
        for pattern, target in specs:
            if PathMatches(pattern).match(request) is not None and target.answer:
                expected = target.label
                break
        assert router.find_handler(request) == expected, (path, patterns)


def test_first_segment_of_patterns() -> None:
    from squall.routing import _first_segment

    assert _first_segment(PathMatches(r"/static/(.*)")) == ("static",)
    assert _first_segment(PathMatches(r"/(favicon\.ico)")) == ("favicon.ico", "favicon.ico\n")
    assert _first_segment(PathMatches(r"^/api/v1/(.*)")) == ("api",)
    for pattern in [r"/(.*)", r"/a(b)?/x", r"(?i)/x/", r"/(?i:x)/y", r"/x|/y/", r"/\d+/x"]:
        assert _first_segment(PathMatches(pattern)) is None, pattern
    # A compiled pattern is not anchored at the end: only a "/" fixes it.
    assert _first_segment(PathMatches(re.compile("/lit"))) is None
    assert _first_segment(PathMatches(re.compile("/lit/x"))) == ("lit",)
    assert _first_segment(HostMatches("h")) is None


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="az09%+~/ é\u20ac", max_size=12))
def test_path_group_decoding_matches_unquote_to_bytes(value: str) -> None:
    # Groups without "%" skip unquote_to_bytes; the bytes must be the same.
    import urllib.parse

    from squall.routing import _unquote_or_none

    assert _unquote_or_none(value) == urllib.parse.unquote_to_bytes(value)
