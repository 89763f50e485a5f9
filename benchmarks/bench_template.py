"""Template rendering speed of squall.template against tornado.template, in one process.

Each case is one set of templates (held by a ``DictLoader`` on both sides)
rendered with the same arguments by squall and by Tornado 6.6.1 (installed
in squall's dev virtualenv for behaviour comparison; it is only run here).
Before timing, the two outputs are compared byte for byte, so a speed-up
that changes the output fails the benchmark instead of being reported.

Cases:

* ``suite-page``: ``benchmarks/apps/templates/page.html``, the page the
  suite's ``/template`` endpoint serves (20 autoescaped items);
* ``suite-page+ns``: the same with the extra names ``RequestHandler``
  passes to every render (handler, request, ``_``, ``static_url``...), so
  the cost of merging a larger namespace shows;
* ``table``: a 50-row table, four autoescaped cells per row of mixed types
  (``str`` with and without markup, ``int``, ``float``, ``None``,
  ``bytes``), an ``{% if %}`` per row;
* ``raw``: ``{% raw %}`` output of pre-rendered fragments in a loop;
* ``inherit``: a child that ``{% extends %}`` a base with three blocks and
  ``{% include %}``\\ s a partial inside a loop;
* ``static``: a mostly static page with a handful of expressions and a
  ``{% set %}``.

Single renders are timed, squall's and Tornado's alternately, and each
side reports its median: a preemption or a burst of load from elsewhere
(the development machines are shared) spoils a few samples of both sides
rather than a whole round of one. Usage: ``.venv/bin/python
benchmarks/bench_template.py [--samples 5000] [--only CASE ...] [--profile
CASE]`` (``--profile`` runs cProfile over squall's renders of one case and
prints the top functions instead).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR / "src"))
sys.path.insert(0, str(REPO_DIR / "benchmarks" / "apps"))

import squall.template  # noqa: E402
import tornado.template  # noqa: E402
from _common import ITEMS, TEMPLATES_DIR, TITLE  # noqa: E402

_TABLE = """\
<table class="{{ css_class }}">
<caption>{{ caption }}</caption>
{% for row in rows %}
  <tr{% if row["odd"] %} class="odd"{% end %}>
    <td>{{ row["name"] }}</td><td>{{ row["count"] }}</td>
    <td>{{ row["price"] }}</td><td>{{ row["note"] }}</td>
  </tr>
{% end %}
</table>
"""

_RAW = """\
<div id="feed">
{% for fragment in fragments %}<section>{% raw fragment %}</section>
{% end %}</div>
"""

_BASE = """\
<!DOCTYPE html>
<html>
<head><title>{% block title %}Site{% end %}</title>
{% block head %}{% end %}</head>
<body>
<nav>{{ user }}</nav>
{% block body %}{% end %}
<footer>{{ footer }}</footer>
</body>
</html>
"""

_CHILD = """\
{% extends "base.html" %}
{% block title %}{{ title }} - Site{% end %}
{% block head %}<meta name="description" content="{{ description }}">{% end %}
{% block body %}
<ul>
{% for entry in entries %}{% include "entry.html" %}{% end %}
</ul>
{% end %}
"""

_ENTRY = """<li><a href="/e/{{ entry[0] }}">{{ entry[1] }}</a></li>
"""

_STATIC = """\
<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<link rel="stylesheet" href="/static/site.css">
</head>
<body>
{% set year = 2026 %}
<header><h1>About us</h1></header>
<main>
<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod
tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam,
quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo.</p>
<p>Duis aute irure dolor in reprehenderit in voluptate velit esse cillum
dolore eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non
proident, sunt in culpa qui officia deserunt mollit anim id est laborum.</p>
<p>Contact: {{ email }}</p>
</main>
<footer>&copy; {{ year }} {{ company }}</footer>
</body>
</html>
"""


class _Handler:
    """Stands for the request handler a web render passes as ``handler``."""


def _noop(*args: Any, **kwargs: Any) -> str:
    return ""


# The names RequestHandler.get_template_namespace adds to every render.
_HANDLER_NAMES: dict[str, Any] = {
    "handler": _Handler(),
    "request": object(),
    "current_user": None,
    "locale": object(),
    "_": _noop,
    "pgettext": _noop,
    "static_url": _noop,
    "xsrf_form_html": _noop,
    "reverse_url": _noop,
    "modules": object(),
}


def _cases() -> dict[str, tuple[dict[str, str], str, dict[str, Any]]]:
    """Case name -> (templates by name, the one to render, its arguments)."""
    page = (TEMPLATES_DIR / "page.html").read_text()
    notes: list[Any] = ["plain", "<i>markup</i> & \"quotes\"", None, b"bytes \xc3\xa9", "caf\u00e9 \u2603"]
    rows = [
        {
            "odd": i % 2,
            "name": f"product {i} <{i}>",
            "count": i * 7,
            "price": i * 1.25,
            "note": notes[i % len(notes)],
        }
        for i in range(50)
    ]
    fragments = [f"<p>fragment {i} with <b>bold</b> & text</p>" for i in range(30)]
    entries = [(i, f"entry {i}: \"quoted\" & <tagged>") for i in range(20)]
    return {
        "suite-page": ({"page.html": page}, "page.html", {"title": TITLE, "items": ITEMS}),
        "suite-page+ns": (
            {"page.html": page},
            "page.html",
            {**_HANDLER_NAMES, "title": TITLE, "items": ITEMS},
        ),
        "table": ({"table.html": _TABLE}, "table.html", {"css_class": "grid", "caption": "Stock & prices", "rows": rows}),
        "raw": ({"raw.html": _RAW}, "raw.html", {"fragments": fragments}),
        "inherit": (
            {"base.html": _BASE, "child.html": _CHILD, "entry.html": _ENTRY},
            "child.html",
            {
                "title": "Entries <all>",
                "description": 'A "list"',
                "user": "alice & bob",
                "footer": "\u00a9 squall",
                "entries": entries,
            },
        ),
        "static": (
            {"static.html": _STATIC},
            "static.html",
            {"title": "About", "email": "team@example.com", "company": "Squall & Co"},
        ),
    }


def _renderer(module: Any, templates: dict[str, str], name: str, kwargs: dict[str, Any]) -> Callable[[], bytes]:
    template = module.DictLoader(templates).load(name)
    return lambda: template.generate(**kwargs)


def _time(render: Callable[[], bytes], iterations: int) -> float:
    """Seconds per render over ``iterations`` renders (for the profiler)."""
    start = time.perf_counter()
    for _ in range(iterations):
        render()
    return (time.perf_counter() - start) / iterations


def _paired_samples(
    ours: Callable[[], bytes], theirs: Callable[[], bytes], samples: int
) -> tuple[list[float], list[float]]:
    """Time single renders, squall's and Tornado's alternately.

    One render takes microseconds, so a preemption or a burst of load from
    elsewhere spoils a few samples, not a whole round, and it falls on both
    sides alike; the median of each side is then a steady figure.
    """
    clock = time.perf_counter
    ours_times: list[float] = []
    theirs_times: list[float] = []
    for _ in range(samples):
        start = clock()
        ours()
        middle = clock()
        theirs()
        end = clock()
        ours_times.append(middle - start)
        theirs_times.append(end - middle)
    return ours_times, theirs_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000, help="timed renders per side and case")
    parser.add_argument("--warmup", type=int, default=200, help="untimed renders first")
    parser.add_argument("--iterations", type=int, default=2000, help="renders under --profile")
    parser.add_argument("--only", nargs="+", metavar="CASE", help="run only these cases")
    parser.add_argument("--profile", metavar="CASE", help="cProfile squall's renders of CASE")
    args = parser.parse_args()
    cases = _cases()
    if args.profile:
        templates, name, kwargs = cases[args.profile]
        render = _renderer(squall.template, templates, name, kwargs)
        profiler = cProfile.Profile()
        profiler.runcall(_time, render, args.iterations)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
        return
    selected = args.only or list(cases)
    unknown = [case for case in selected if case not in cases]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(cases)}")
    print(
        f"median of {args.samples} single renders per side, squall and Tornado alternating;"
        f" Python {sys.version.split()[0]}"
    )
    print()
    print("| case | output bytes | squall µs | tornado µs | tornado / squall |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for case in selected:
        templates, name, kwargs = cases[case]
        ours = _renderer(squall.template, templates, name, kwargs)
        theirs = _renderer(tornado.template, templates, name, kwargs)
        output = ours()
        if output != theirs():
            raise SystemExit(f"{case}: squall's output differs from Tornado's:\n{output!r}\n{theirs()!r}")
        for _ in range(args.warmup):
            ours()
            theirs()
        ours_times, theirs_times = _paired_samples(ours, theirs, args.samples)
        ours_median = statistics.median(ours_times)
        theirs_median = statistics.median(theirs_times)
        print(
            f"| {case} | {len(output):,} | {ours_median * 1e6:.1f} | {theirs_median * 1e6:.1f} "
            f"| {theirs_median / ours_median:.2f} |"
        )


if __name__ == "__main__":
    main()
