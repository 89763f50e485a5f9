"""Tests for squall.web.StaticFileHandler over a real server: conditional
requests, ranges, HEAD, types, versioned URLs, and refusing paths that leave
the static directory."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Optional

import pytest

from squall.web import Application, HTTPError, RequestHandler, StaticFileHandler

from test_web import fetch, serving

ROBOTS = b"User-agent: *\nDisallow: /\n"


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    root = tmp_path / "static"
    root.mkdir()
    (root / "robots.txt").write_bytes(ROBOTS)
    (root / "style.css").write_text("body {}")
    (root / "data.json.gz").write_bytes(b"\x1f\x8b fake")
    (root / "noext").write_bytes(b"?")
    (root / "dir").mkdir()
    (root / "dir" / "index.html").write_text("the index")
    (tmp_path / "secret.txt").write_text("secret")
    StaticFileHandler.reset()
    return root


def serve(static_dir: Path, check: Any, handlers: Optional[list[Any]] = None, **settings: Any) -> None:
    async def main() -> None:
        app = Application(handlers or [], static_path=str(static_dir), **settings)
        async with serving(app) as port:
            await check(port)

    asyncio.run(main())


def test_serves_files_with_type_etag_and_last_modified(static_dir: Path) -> None:
    async def check(port: int) -> None:
        r = await fetch(port, "/static/robots.txt")
        assert (r.code, r.body) == (200, ROBOTS)
        assert r.headers["Content-Type"] == "text/plain"
        assert r.headers["Etag"] == '"%s"' % hashlib.sha512(ROBOTS).hexdigest()
        assert r.headers["Accept-Ranges"] == "bytes"
        assert r.headers["Last-Modified"].endswith(" GMT")
        assert "Cache-Control" not in r.headers
        assert (await fetch(port, "/robots.txt")).body == ROBOTS
        assert (await fetch(port, "/static/style.css")).headers["Content-Type"] == "text/css"
        # A compressed file is sent as what it is, not as what it contains.
        assert (await fetch(port, "/static/data.json.gz")).headers["Content-Type"] == "application/gzip"
        assert (await fetch(port, "/static/noext")).headers["Content-Type"] == "application/octet-stream"
        assert (await fetch(port, "/static/missing.txt")).code == 404

    serve(static_dir, check)


def test_conditional_requests(static_dir: Path) -> None:
    async def check(port: int) -> None:
        first = await fetch(port, "/static/robots.txt")
        etag, modified = first.headers["Etag"], first.headers["Last-Modified"]
        r = await fetch(port, "/static/robots.txt", headers={"If-None-Match": etag})
        assert (r.code, r.body) == (304, b"")
        assert "Content-Length" not in r.headers
        r = await fetch(port, "/static/robots.txt", headers={"If-Modified-Since": modified})
        assert r.code == 304
        # If-None-Match decides when present, even if the date would match.
        r = await fetch(port, "/static/robots.txt",
                        headers={"If-None-Match": '"other"', "If-Modified-Since": modified})
        assert r.code == 200
        r = await fetch(port, "/static/robots.txt", headers={"If-Modified-Since": "garbage"})
        assert r.code == 200
        r = await fetch(port, "/static/robots.txt",
                        headers={"If-Modified-Since": "Fri, 01 Jan 1960 00:00:00 GMT"})
        assert r.code == 200

    serve(static_dir, check)


@pytest.mark.parametrize(
    "range_header, code, body, content_range",
    [
        ("bytes=0-9", 206, ROBOTS[:10], "bytes 0-9/26"),
        ("bytes=22-", 206, ROBOTS[22:], "bytes 22-25/26"),
        ("bytes=-4", 206, ROBOTS[-4:], "bytes 22-25/26"),
        ("bytes=1-1000", 206, ROBOTS[1:], "bytes 1-25/26"),
        ("bytes=0-", 200, ROBOTS, None),
        ("bytes=-1000", 200, ROBOTS, None),
        ("bytes=0-1000", 200, ROBOTS, None),
        ("bytes=26-", 416, b"", "bytes */26"),
        ("bytes=-0", 416, b"", "bytes */26"),
        ("bytes=10-3", 416, b"", "bytes */26"),
        ("garbage", 200, ROBOTS, None),
        ("bytes=0-1,3-4", 200, ROBOTS, None),
    ],
)
def test_ranges(static_dir: Path, range_header: str, code: int, body: bytes,
                content_range: Optional[str]) -> None:
    async def check(port: int) -> None:
        r = await fetch(port, "/static/robots.txt", headers={"Range": range_header})
        assert r.code == code
        assert r.body == body
        assert r.headers.get("Content-Range") == content_range
        if code != 416:
            assert r.headers["Content-Length"] == str(len(body))
        head = await fetch(port, "/static/robots.txt", method="HEAD", headers={"Range": range_header})
        assert head.code == code and head.body == b""
        assert head.headers.get("Content-Length") == r.headers.get("Content-Length")

    serve(static_dir, check)


def test_versioned_urls_are_cacheable(static_dir: Path) -> None:
    class UrlHandler(RequestHandler):
        def get(self, path: str) -> None:
            self.write(self.static_url(path))

    async def check(port: int) -> None:
        url = (await fetch(port, "/url/robots.txt")).body.decode()
        assert url == "/static/robots.txt?v=" + hashlib.sha512(ROBOTS).hexdigest()
        r = await fetch(port, url)
        assert r.headers["Cache-Control"] == "max-age=%d" % StaticFileHandler.CACHE_MAX_AGE
        assert "Expires" in r.headers
        # A missing file has no version; the URL is still produced.
        assert (await fetch(port, "/url/nothing.txt")).body == b"/static/nothing.txt"

    logging.getLogger("squall.general").disabled = True
    try:
        serve(static_dir, check, handlers=[(r"/url/(.*)", UrlHandler)])
    finally:
        logging.getLogger("squall.general").disabled = False


def test_version_hash_is_cached_until_reset(static_dir: Path) -> None:
    settings = {"static_path": str(static_dir)}
    first = StaticFileHandler.get_version(settings, "style.css")
    (static_dir / "style.css").write_text("body { color: red }")
    assert StaticFileHandler.get_version(settings, "style.css") == first
    StaticFileHandler.reset()
    assert StaticFileHandler.get_version(settings, "style.css") != first
    with pytest.raises(HTTPError) as raised:
        StaticFileHandler.get_version(settings, "../secret.txt")
    assert raised.value.status_code == 403


def test_path_traversal_and_symlinks_are_refused(static_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    os.symlink(static_dir.parent / "secret.txt", static_dir / "link.txt")
    os.symlink(static_dir / "robots.txt", static_dir / "inner-link.txt")

    async def check(port: int) -> None:
        with caplog.at_level(logging.WARNING):
            for path in ["/static/../secret.txt", "/static/%2E%2E/secret.txt", "/static/link.txt"]:
                r = await fetch(port, path)
                assert r.code == 403, path
                assert b"secret" not in r.body
            # A directory is not a file.
            assert (await fetch(port, "/static/dir")).code == 403
        assert "is not in root static directory" in caplog.text
        assert (await fetch(port, "/static/inner-link.txt")).body == ROBOTS

    serve(static_dir, check)


def test_default_filename(static_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def check(port: int) -> None:
        r = await fetch(port, "/static/dir")
        assert (r.code, r.headers["Location"]) == (301, "/static/dir/")
        assert (await fetch(port, "/static/dir/")).body == b"the index"

    serve(static_dir, check, static_handler_args={"default_filename": "index.html"})


def test_large_file_is_streamed_in_pieces(static_dir: Path) -> None:
    size = 5 * StaticFileHandler._CHUNK_SIZE + 123
    data = os.urandom(size)
    (static_dir / "big.bin").write_bytes(data)
    pieces: list[int] = []

    class CountingHandler(StaticFileHandler):
        @classmethod
        def get_content(cls, abspath: str, start: Optional[int] = None, end: Optional[int] = None) -> Any:
            for piece in super().get_content(abspath, start, end):
                pieces.append(len(piece))
                yield piece

    async def check(port: int) -> None:
        pieces.clear()
        r = await fetch(port, "/big/big.bin", headers={"Range": "bytes=100-"})
        assert r.body == data[100:]
        assert r.headers["Content-Length"] == str(size - 100)
        # Read in fixed pieces, never the whole file at once.
        assert pieces and max(pieces) == StaticFileHandler._CHUNK_SIZE

    async def main() -> None:
        app = Application([(r"/big/(.*)", CountingHandler, {"path": str(static_dir)})])
        async with serving(app) as port:
            await check(port)

    asyncio.run(main())


def test_custom_content_source() -> None:
    class MemoryHandler(StaticFileHandler):
        FILES = {"a.txt": b"from memory"}

        @classmethod
        def get_absolute_path(cls, root: str, path: str) -> str:
            return path

        def validate_absolute_path(self, root: str, absolute_path: str) -> Optional[str]:
            if absolute_path not in self.FILES:
                raise HTTPError(404)
            return absolute_path

        @classmethod
        def get_content(cls, abspath: str, start: Optional[int] = None, end: Optional[int] = None) -> bytes:
            return cls.FILES[abspath][start:end]

        @classmethod
        def get_content_version(cls, abspath: str) -> str:
            return "v1"

        def get_content_size(self) -> int:
            return len(self.FILES[self.absolute_path])

        def get_modified_time(self) -> None:
            return None

    async def main() -> None:
        app = Application([(r"/m/(.*)", MemoryHandler, {"path": "unused"})])
        async with serving(app) as port:
            r = await fetch(port, "/m/a.txt")
            assert (r.body, r.headers["Etag"]) == (b"from memory", '"v1"')
            assert (await fetch(port, "/m/a.txt", headers={"Range": "bytes=5-"})).body == b"memory"
            assert (await fetch(port, "/m/b.txt")).code == 404

    MemoryHandler.reset()
    asyncio.run(main())
