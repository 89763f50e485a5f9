"""What every benchmark app serves, kept in one place so all servers answer alike.

Every app under ``benchmarks/apps/`` is started as
``python <app>.py --port PORT --static-dir DIR [...]`` and serves the same
endpoints (``ENDPOINTS`` in ``benchmarks/suite.py`` requests them):

* ``GET /plaintext``: ``Hello, World!`` as ``text/plain``;
* ``GET /json``: ``{"message": "Hello, World!"}``;
* ``GET /user/<int>?name=<str>``: ``user <int> name <str>`` (a path and a
  query argument read by the framework);
* ``POST /echo``: the request body sent back;
* ``GET /static/<file>``: a file from ``--static-dir`` (the suite writes a
  1 MB one);
* ``GET /template``: ``templates/page.*`` rendered with ``TITLE`` and
  ``ITEMS`` (autoescaped, so every item costs an escape);
* ``/ws``: a WebSocket that echoes each message.

Only the standard library here: the apps run in different virtualenvs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PLAINTEXT = b"Hello, World!"
JSON_MESSAGE = {"message": "Hello, World!"}
TITLE = "Benchmark <page>"
# Twenty items, each with characters HTML escaping must replace.
ITEMS = [f"item {i} <b>&amp; friends</b>" for i in range(20)]
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def arg_parser(description: str, static: bool = True) -> argparse.ArgumentParser:
    """A parser for the command line every app accepts (``--static-dir``
    only when ``static``); an app may add options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    if static:
        parser.add_argument("--static-dir", required=True, help="directory served under /static/")
    return parser
