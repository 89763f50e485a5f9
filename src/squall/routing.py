"""Request routing: match an HTTP request to the object that will handle it.

A router is an `.httputil.HTTPServerConnectionDelegate`, so it can be given to
`.HTTPServer` directly. `RuleRouter` keeps an ordered list of `Rule` objects,
each a `Matcher` (what to look at: the path, the host, anything) and a target
(what handles a match: a `~.web.RequestHandler` subclass when used inside an
`.Application`, another router, any connection delegate, or a plain callable
taking the request)::

    router = RuleRouter([
        Rule(PathMatches("/app.*"), Application([(r"/app/page", PageHandler)])),
        Rule(HostMatches("api\\.example\\.com"), api_router),
        ("/health", health_callable),          # a tuple is read as a Rule
    ])
    HTTPServer(router)

Rules are compiled once when added. The first rule whose matcher accepts the
request wins, exactly as a linear scan would decide; internally a run of rules
whose path pattern is a plain string (no regex syntax) is looked up in a dict,
so the common case costs one dict access however many routes there are.

`ReversibleRuleRouter` also remembers named rules so that `reverse_url` can
rebuild a URL from a name and the values of its groups.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any, Optional, Union

from squall import httputil
from squall.log import app_log
from squall.util import import_object

try:  # the regex parser behind re: public as sre_parse before 3.11
    from re import _constants as _sre, _parser as _sre_parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _sre
    import sre_parse as _sre_parser

__all__ = [
    "Router",
    "ReversibleRouter",
    "RuleRouter",
    "ReversibleRuleRouter",
    "Rule",
    "Matcher",
    "AnyMatches",
    "HostMatches",
    "DefaultHostMatches",
    "PathMatches",
    "URLSpec",
    "url",
]

# Characters that give a regex pattern a meaning beyond its literal text (see
# the `re` module's syntax); a path pattern without any of them, unescaped,
# matches exactly one path and can be found by dict look-up.
_REGEX_SPECIALS = frozenset(".^$*+?{}[]|()")


class Router(httputil.HTTPServerConnectionDelegate):
    """Base of all routers: picks the `~.httputil.HTTPMessageDelegate` for a request.

    Subclasses implement `find_handler`. As a connection delegate, a router
    can serve an `.HTTPServer` by itself.
    """

    def find_handler(
        self, request: httputil.HTTPServerRequest, **kwargs: Any
    ) -> Optional[httputil.HTTPMessageDelegate]:
        """Return the message delegate that will process ``request``, or None.

        ``kwargs`` carry what an outer router learned while matching (for
        instance ``path_args``). Returning None lets an outer router try its
        next rule; at the top level it produces a 404 response.
        """
        raise NotImplementedError()

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        return _RoutingDelegate(self, server_conn, request_conn)


class ReversibleRouter(Router):
    """A router that can also turn a route name back into a URL."""

    def reverse_url(self, name: str, *args: Any) -> Optional[str]:
        """Return the URL for the route called ``name`` with ``args`` filled in.

        Returns None when this router has no route of that name.
        """
        raise NotImplementedError()


class _RoutingDelegate(httputil.HTTPMessageDelegate):
    """Builds the request once its headers are in, then hands the rest of the
    message to whichever delegate the router chose."""

    __slots__ = ("router", "server_conn", "request_conn", "delegate")

    def __init__(
        self, router: Router, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> None:
        self.server_conn = server_conn
        self.request_conn = request_conn
        self.router = router
        self.delegate: Optional[httputil.HTTPMessageDelegate] = None

    def headers_received(
        self,
        start_line: Union[httputil.RequestStartLine, httputil.ResponseStartLine],
        headers: httputil.HTTPHeaders,
    ) -> Optional[Awaitable[None]]:
        request = httputil.HTTPServerRequest._for_server(
            start_line, headers, self.request_conn, self.server_conn  # type: ignore[arg-type]
        )
        delegate = self.router.find_handler(request)
        if delegate is None:
            app_log.debug(
                "Delegate for %s %s request not found",
                start_line.method,
                start_line.path,
            )
            delegate = _NotFoundDelegate(self.request_conn)
        self.delegate = delegate
        request_conn = self.request_conn
        if getattr(request_conn, "_delegate", None) is self:
            # squall's HTTP server reads the delegate of the message from
            # the connection for each event: point it at the chosen one, so
            # that the rest of the message skips this forwarding layer.
            request_conn._delegate = delegate  # type: ignore[attr-defined]
        return delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Optional[Awaitable[None]]:
        assert self.delegate is not None
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        assert self.delegate is not None
        self.delegate.finish()

    def on_connection_close(self) -> None:
        # The connection may close before the headers arrived (no delegate yet).
        if self.delegate is not None:
            self.delegate.on_connection_close()


class _NotFoundDelegate(httputil.HTTPMessageDelegate):
    """Answers 404 when no rule of a bare router (not an Application) matched."""

    def __init__(self, connection: httputil.HTTPConnection) -> None:
        self.connection = connection

    def finish(self) -> None:
        self.connection.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", 404, "Not Found"),
            httputil.HTTPHeaders(),
        )
        self.connection.finish()


class _RuleList(list):  # type: ignore[type-arg]
    """The ``rules`` list of a `RuleRouter`: any change to it drops the
    router's compiled look-up plan, so callers may edit it as a plain list."""

    def __init__(self, owner: "RuleRouter", items: Iterable["Rule"] = ()) -> None:
        super().__init__(items)
        self._owner = owner

    def _changed(self) -> None:
        self._owner._plan = None


def _invalidating(name: str) -> Callable[..., Any]:
    method = getattr(list, name)

    def wrapper(self: _RuleList, *args: Any, **kwargs: Any) -> Any:
        result = method(self, *args, **kwargs)
        self._changed()
        return result

    wrapper.__name__ = name
    return wrapper


for _name in (
    "append", "extend", "insert", "remove", "pop", "clear", "sort", "reverse",
    "__setitem__", "__delitem__", "__iadd__", "__imul__",
):
    setattr(_RuleList, _name, _invalidating(_name))
del _name


_RuleSpec = Union["Rule", Sequence[Any]]


class RuleRouter(Router):
    """A router that tries an ordered list of `Rule` objects, first match wins.

    ``rules`` may hold `Rule` instances or tuples ``(matcher, target[,
    target_kwargs[, name]])``; a tuple whose first item is a string uses
    ``PathMatches(that string)`` as its matcher. A target given as a string is
    imported (``"package.module.Name"``).

    What a target may be:

    * a `Router`: its ``find_handler`` is asked in turn (nested routing);
    * an `~.httputil.HTTPServerConnectionDelegate`: its ``start_request`` is used;
    * a callable taking the `~.httputil.HTTPServerRequest` once its body is read.

    Subclasses extend `get_target_delegate` for other kinds of target.
    """

    def __init__(self, rules: Optional[Sequence[_RuleSpec]] = None) -> None:
        self._plan: Optional[list[Any]] = None
        self.rules: list[Rule] = []
        if rules:
            self.add_rules(rules)

    @property  # type: ignore[no-redef]
    def rules(self) -> list["Rule"]:
        """The rules, in the order they are tried; edit it like any list."""
        return self._rules

    @rules.setter
    def rules(self, value: Iterable["Rule"]) -> None:
        self._rules = _RuleList(self, value)
        self._plan = None

    def add_rules(self, rules: Sequence[_RuleSpec]) -> None:
        """Append ``rules`` (see the class description for the accepted forms)."""
        for spec in rules:
            if isinstance(spec, (tuple, list)):
                if not 2 <= len(spec) <= 4:
                    raise ValueError(
                        "a rule must be (matcher, target[, target_kwargs[, name]]),"
                        " got %r" % (spec,)
                    )
                if isinstance(spec[0], (str, re.Pattern)):
                    spec = Rule(PathMatches(spec[0]), *spec[1:])
                else:
                    spec = Rule(*spec)
            elif not isinstance(spec, Rule):
                raise TypeError("a rule must be a Rule or a tuple, got %r" % (spec,))
            self.rules.append(self.process_rule(spec))

    def process_rule(self, rule: "Rule") -> "Rule":
        """Hook called on each rule as it is added; returns the rule to store."""
        return rule

    def find_handler(
        self, request: httputil.HTTPServerRequest, **kwargs: Any
    ) -> Optional[httputil.HTTPMessageDelegate]:
        plan = self._plan
        if plan is None:
            plan = self._plan = _compile_plan(self._rules)
        path = request.path
        for step in plan:
            kind = type(step)
            if kind is dict:
                candidates = step.get(path)
                if candidates is None:
                    continue
                for rule in candidates:
                    if rule.target_kwargs:
                        delegate = self.get_target_delegate(
                            rule.target, request, target_kwargs=rule.target_kwargs
                        )
                    else:
                        delegate = self.get_target_delegate(rule.target, request)
                    if delegate is not None:
                        return delegate
                continue
            if kind is _SegmentIndex:
                # The rules that can match a path under its first segment.
                end = path.find("/", 1)
                rules = step.by_segment.get(path[1:] if end < 0 else path[1:end])
                if rules is None:
                    rules = step.anywhere
            else:
                rules = (step,)
            for rule in rules:
                target_params = rule.matcher.match(request)
                if target_params is not None:
                    if rule.target_kwargs:
                        target_params["target_kwargs"] = rule.target_kwargs
                    delegate = self.get_target_delegate(rule.target, request, **target_params)
                    if delegate is not None:
                        return delegate
        return None

    def get_target_delegate(
        self, target: Any, request: httputil.HTTPServerRequest, **target_params: Any
    ) -> Optional[httputil.HTTPMessageDelegate]:
        """Return the message delegate for a matched ``target``, or None.

        ``target_params`` are what the matcher returned (plus
        ``target_kwargs`` from the rule). Override to support new target types.
        """
        if isinstance(target, Router):
            return target.find_handler(request, **target_params)
        if isinstance(target, httputil.HTTPServerConnectionDelegate):
            assert request.connection is not None
            return target.start_request(request.server_connection, request.connection)
        if callable(target):
            assert request.connection is not None
            return _CallableAdapter(partial(target, **target_params), request.connection)
        return None


def _compile_plan(rules: Sequence["Rule"]) -> list[Any]:
    """Turn the rule list into steps: a generic rule, or a dict of exact-path
    rules keyed by path (each value keeps rule order).

    An exact-path rule joins the earliest dict it can reach by moving back
    over generic rules that cannot match its path (plain `PathMatches` whose
    regex rejects it) and dicts without its path: those rules would have
    been passed over for that path anyway, so first-match results are the
    same, and a literal path behind the static-file rules costs one dict
    look-up instead of a regex match per rule.
    """
    plan: list[Any] = []
    for rule in rules:
        matcher = rule.matcher
        literal = matcher._literal_path if type(matcher) is PathMatches else None
        if literal is None:
            plan.append(rule)
            continue
        # The earliest position whose following steps all pass this path by.
        reach = len(plan)
        while reach:
            step = plan[reach - 1]
            if type(step) is dict:
                if literal in step:
                    break
            elif type(step.matcher) is not PathMatches or step.matcher.regex.match(literal):
                break
            reach -= 1
        if reach and type(plan[reach - 1]) is dict:
            home = plan[reach - 1]
        elif reach < len(plan) and type(plan[reach]) is dict:
            home = plan[reach]
        else:
            home = {}
            plan.insert(reach, home)
        home.setdefault(literal, []).append(rule)
    return _index_segments(plan)


class _SegmentIndex:
    """A run of pattern rules, indexed by the first path segment their
    matches must have: ``/user/([0-9]+)`` only matches paths in ``/user/``,
    so a request for ``/static/app.css`` never tries it. Rules whose first
    segment is not fixed (a custom matcher, ``/(.*)``) are tried for every
    path, and every list keeps the rules' order, so the first rule to match
    is the same as when trying them all."""

    __slots__ = ("by_segment", "anywhere")

    def __init__(self, rules: list["Rule"]) -> None:
        segments = [_first_segment(rule.matcher) for rule in rules]
        self.anywhere = [rule for rule, keys in zip(rules, segments) if keys is None]
        self.by_segment: dict[str, list[Rule]] = {}
        for keys in segments:
            for key in keys or ():
                self.by_segment[key] = [
                    rule for rule, other in zip(rules, segments) if other is None or key in other
                ]


# Fewer pattern rules in a row than this are tried one by one: an index
# costs a look-up, which only pays when it saves a regex match or more.
_MIN_INDEXED_RUN = 2


def _index_segments(plan: list[Any]) -> list[Any]:
    """Replace each run of pattern rules in ``plan`` by a `_SegmentIndex`."""
    out: list[Any] = []
    run: list[Rule] = []
    for step in plan + [None]:
        if step is not None and type(step) is not dict:
            run.append(step)
            continue
        if len(run) >= _MIN_INDEXED_RUN and any(_first_segment(r.matcher) for r in run):
            out.append(_SegmentIndex(run))
        else:
            out.extend(run)
        run = []
        if step is not None:
            out.append(step)
    return out


def _first_segment(matcher: "Matcher") -> Optional[tuple[str, ...]]:
    """The first path segment(s) a matching path can have, or None when
    that is not fixed (or the matcher is not a plain `PathMatches`).

    A segment is fixed when the pattern starts with literal text holding a
    second ``/`` (``/static/(.*)``), or is literal text only
    (``/(favicon\\.ico)``, which ``$`` also lets match with a trailing
    newline, hence two keys then).
    """
    if type(matcher) is not PathMatches:
        return None
    regex = matcher.regex
    if not isinstance(regex.pattern, str) or regex.flags & re.IGNORECASE:
        return None
    try:
        items = list(_sre_parser.parse(regex.pattern, regex.flags))
    except Exception:  # a pattern re compiled but this parser refuses
        return None
    text: list[str] = []
    whole = _literal_text(items, text, top=True)
    head = "".join(text)
    if not head.startswith("/"):
        return None
    end = head.find("/", 1)
    if end > 0:
        return (head[1:end],)
    if whole and not regex.flags & re.MULTILINE:
        return (head[1:], head[1:] + "\n")
    return None


def _literal_text(items: list[Any], out: list[str], top: bool) -> bool:
    """Append the literal text ``items`` (a parsed pattern) starts with to
    ``out``; True when that text is all of it, up to a final ``$``."""
    last = len(items) - 1
    for i, (op, arg) in enumerate(items):
        if op is _sre.LITERAL:
            out.append(chr(arg))
        elif op is _sre.SUBPATTERN and not arg[1] & re.IGNORECASE:
            # An unrepeated group: its text is part of every match.
            if not _literal_text(list(arg[-1]), out, top=False):
                return False
        elif op is _sre.AT and arg is _sre.AT_BEGINNING and i == 0 and top:
            continue
        elif op is _sre.AT and arg is _sre.AT_END and i == last and top:
            return True
        else:
            return False
    # Without a final "$" (a compiled pattern) more text may follow.
    return not top


class ReversibleRuleRouter(ReversibleRouter, RuleRouter):
    """A `RuleRouter` that remembers named rules for `reverse_url`.

    Names are looked up here first, then in any nested reversible routers,
    in rule order.
    """

    def __init__(self, rules: Optional[Sequence[_RuleSpec]] = None) -> None:
        self.named_rules: dict[str, Rule] = {}
        super().__init__(rules)

    def process_rule(self, rule: "Rule") -> "Rule":
        rule = super().process_rule(rule)
        if rule.name:
            if rule.name in self.named_rules:
                app_log.warning(
                    "Multiple handlers named %s; replacing previous value", rule.name
                )
            self.named_rules[rule.name] = rule
        return rule

    def reverse_url(self, name: str, *args: Any) -> Optional[str]:
        rule = self.named_rules.get(name)
        if rule is not None:
            return rule.matcher.reverse(*args)
        for rule in self.rules:
            if isinstance(rule.target, ReversibleRouter):
                found = rule.target.reverse_url(name, *args)
                if found is not None:
                    return found
        return None


class Rule:
    """One routing rule: a `Matcher`, a target and optional extras.

    ``target`` may be given as a dotted import string. ``target_kwargs`` are
    passed on to the target (for a `~.web.RequestHandler`, to its
    ``initialize``); ``name`` makes the rule reachable by `reverse_url`.
    """

    def __init__(
        self,
        matcher: "Matcher",
        target: Any,
        target_kwargs: Optional[dict[str, Any]] = None,
        name: Optional[str] = None,
    ) -> None:
        if not isinstance(matcher, Matcher):
            raise TypeError("Rule matcher must be a Matcher, got %r" % (matcher,))
        if isinstance(target, str):
            target = import_object(target)
        self.matcher: Matcher = matcher
        self.target = target
        self.target_kwargs: dict[str, Any] = target_kwargs if target_kwargs else {}
        self.name = name

    def reverse(self, *args: Any) -> Optional[str]:
        """Rebuild the URL this rule matches (see `Matcher.reverse`)."""
        return self.matcher.reverse(*args)

    def __repr__(self) -> str:
        return "%s(%r, %s, kwargs=%r, name=%r)" % (
            self.__class__.__name__,
            self.matcher,
            self.target,
            self.target_kwargs,
            self.name,
        )


class Matcher:
    """Decides whether a rule applies to a request."""

    def match(self, request: httputil.HTTPServerRequest) -> Optional[dict[str, Any]]:
        """Return None for no match, or a dict of parameters for the target.

        A `~.web.RequestHandler` target understands ``path_args`` and
        ``path_kwargs``; an empty dict means "matched, nothing to pass".
        """
        raise NotImplementedError()

    def reverse(self, *args: Any) -> Optional[str]:
        """Rebuild a URL from group values; None when this matcher cannot."""
        return None


class AnyMatches(Matcher):
    """Matches every request."""

    def match(self, request: httputil.HTTPServerRequest) -> Optional[dict[str, Any]]:
        return {}


def _anchor(pattern: Union[str, "re.Pattern[str]"]) -> "re.Pattern[str]":
    """Compile a string pattern so that it must match to the end."""
    if isinstance(pattern, str):
        if not pattern.endswith("$"):
            pattern += "$"
        return re.compile(pattern)
    if isinstance(pattern, re.Pattern):
        return pattern
    raise TypeError("expected a regex string or compiled pattern, got %r" % (pattern,))


class HostMatches(Matcher):
    """Matches requests whose host name (port excluded) matches a regex.

    A string pattern is anchored at both ends.
    """

    def __init__(self, host_pattern: Union[str, "re.Pattern[str]"]) -> None:
        self.host_pattern = _anchor(host_pattern)

    def match(self, request: httputil.HTTPServerRequest) -> Optional[dict[str, Any]]:
        if self.host_pattern.match(request.host_name):
            return {}
        return None


class DefaultHostMatches(Matcher):
    """Matches when the application's ``default_host`` matches ``host_pattern``.

    Requests that came through a proxy (they carry ``X-Real-Ip``) never
    match: their host name is real and is routed by `HostMatches` instead.
    The application's ``default_host`` is read at match time, so changing it
    takes effect at once.
    """

    def __init__(self, application: Any, host_pattern: "re.Pattern[str]") -> None:
        self.application = application
        self.host_pattern = host_pattern

    def match(self, request: httputil.HTTPServerRequest) -> Optional[dict[str, Any]]:
        if "X-Real-Ip" not in request.headers:
            default_host = self.application.default_host
            if default_host is not None and self.host_pattern.match(default_host):
                return {}
        return None


def _unquote_or_none(value: Optional[str]) -> Optional[bytes]:
    """Percent-decode a path group to bytes; an unmatched optional group stays None.

    ``+`` is kept as is: in a path it is a literal plus sign, not a space.
    """
    if value is None:
        return None
    if "%" not in value:
        # Nothing to decode (the usual id or slug): what unquote_to_bytes
        # would return, without its work.
        return value.encode("utf-8")
    return urllib.parse.unquote_to_bytes(value)


class PathMatches(Matcher):
    """Matches the request path against a regex (anchored at both ends).

    Groups become the handler's arguments: positional groups ``path_args``,
    named groups ``path_kwargs`` (when a pattern has named groups, its
    unnamed ones are dropped). Values are percent-decoded bytes, or None for
    an optional group that did not match.
    """

    def __init__(self, path_pattern: Union[str, "re.Pattern[str]"]) -> None:
        self.regex = _anchor(path_pattern)
        self._pieces, self._group_count = _reverse_template(self.regex)
        self._literal_path = (
            _literal_path(self.regex.pattern)
            if isinstance(path_pattern, str) and self.regex.groups == 0
            else None
        )

    def match(self, request: httputil.HTTPServerRequest) -> Optional[dict[str, Any]]:
        found = self.regex.match(request.path)
        if found is None:
            return None
        if not self.regex.groups:
            return {}
        if self.regex.groupindex:
            return {
                "path_args": [],
                "path_kwargs": {
                    str(k): _unquote_or_none(v) for k, v in found.groupdict().items()
                },
            }
        # A loop rather than a comprehension (a frame of its own on 3.11),
        # and the common group (no percent sign) decoded inline.
        path_args = []
        for value in found.groups():
            if value is not None and "%" not in value:
                path_args.append(value.encode("utf-8"))
            else:
                path_args.append(_unquote_or_none(value))
        return {"path_args": path_args, "path_kwargs": {}}

    def reverse(self, *args: Any) -> Optional[str]:
        """Fill the pattern's groups with ``args`` (percent-encoded).

        Raises ValueError when the pattern has regex syntax outside its groups
        that cannot be turned back into text, or when the number of
        arguments differs from the number of groups.
        """
        if self._pieces is None:
            raise ValueError("Cannot reverse url regex " + self.regex.pattern)
        if len(args) != self._group_count:
            raise ValueError(
                "url regex %r needs %d arguments, got %d"
                % (self.regex.pattern, self._group_count, len(args))
            )
        values = iter(args)
        out = []
        for piece in self._pieces:
            if piece is None:
                value = next(values)
                if not isinstance(value, (str, bytes)):
                    value = str(value)
                out.append(urllib.parse.quote(value))
            else:
                out.append(piece)
        return "".join(out)


def _strip_anchors(pattern: str) -> str:
    if pattern.startswith("^"):
        pattern = pattern[1:]
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1]
    return pattern


def _reverse_template(
    regex: "re.Pattern[str]",
) -> tuple[Optional[list[Optional[str]]], Optional[int]]:
    """Split a path regex into literal text and group slots (None entries).

    Text outside groups is taken literally, backslash escapes of
    punctuation are undone; an escape like ``\\d`` outside a group, or any
    group that does not capture (so the slots would not line up with
    ``regex.groups``), makes the pattern irreversible: (None, None).
    """
    pattern = regex.pattern
    if not isinstance(pattern, str):
        return None, None
    pattern = _strip_anchors(pattern)
    pieces: list[Optional[str]] = []
    text: list[str] = []
    depth = 0
    i = 0
    n = len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\":
            if i + 1 >= n:
                return None, None
            escaped = pattern[i + 1]
            if depth == 0:
                if escaped.isalnum():
                    return None, None
                text.append(escaped)
            i += 2
            continue
        if char == "(":
            if depth == 0:
                if text:
                    pieces.append("".join(text))
                    text = []
                pieces.append(None)
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth == 0:
            text.append(char)
        i += 1
    if depth:
        return None, None
    if text:
        pieces.append("".join(text))
    slots = sum(1 for p in pieces if p is None)
    if slots != regex.groups:
        return None, None
    return pieces, slots


def _literal_path(pattern: str) -> Optional[str]:
    """The one path a pattern matches if it is plain text (escapes allowed), else None."""
    pattern = _strip_anchors(pattern)
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\":
            if i + 1 >= n or pattern[i + 1].isalnum():
                return None
            out.append(pattern[i + 1])
            i += 2
            continue
        if char in _REGEX_SPECIALS:
            return None
        out.append(char)
        i += 1
    return "".join(out)


class URLSpec(Rule):
    """A `Rule` matching the path against a regex: the classic
    ``(pattern, handler, kwargs, name)`` of an `.Application`'s handlers.

    ``regex``, ``handler_class`` and ``kwargs`` are kept for code written
    against older versions.
    """

    def __init__(
        self,
        pattern: Union[str, "re.Pattern[str]"],
        handler: Any,
        kwargs: Optional[dict[str, Any]] = None,
        name: Optional[str] = None,
    ) -> None:
        matcher = PathMatches(pattern)
        super().__init__(matcher, handler, kwargs, name)
        self.regex = matcher.regex
        self.handler_class = self.target
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return "%s(%r, %s, kwargs=%r, name=%r)" % (
            self.__class__.__name__,
            self.regex.pattern,
            self.handler_class,
            self.kwargs,
            self.name,
        )


url = URLSpec


class _CallableAdapter(httputil.HTTPMessageDelegate):
    """Runs a plain ``callable(request)`` target once the whole body is in."""

    def __init__(
        self,
        request_callback: Callable[[httputil.HTTPServerRequest], Any],
        request_conn: httputil.HTTPConnection,
    ) -> None:
        self.connection = request_conn
        self.request_callback = request_callback
        self.request: Optional[httputil.HTTPServerRequest] = None
        self._chunks: list[bytes] = []

    def headers_received(
        self,
        start_line: Union[httputil.RequestStartLine, httputil.ResponseStartLine],
        headers: httputil.HTTPHeaders,
    ) -> Optional[Awaitable[None]]:
        assert isinstance(start_line, httputil.RequestStartLine)
        self.request = httputil.HTTPServerRequest(
            connection=self.connection, start_line=start_line, headers=headers
        )
        return None

    def data_received(self, chunk: bytes) -> Optional[Awaitable[None]]:
        self._chunks.append(chunk)
        return None

    def finish(self) -> None:
        assert self.request is not None
        self.request.body = b"".join(self._chunks)
        self.request._parse_body()
        self.request_callback(self.request)

    def on_connection_close(self) -> None:
        self._chunks = []
