"""Scenario: the chat example in real browsers.

Two headless Chromium sessions (Selenium) open examples/chat, each joins
under a name, and for each transport (long polling, then WebSocket, chosen
with the page's toggle) one sends a message that the other sees, received
over that transport. Screenshots of both windows go to the test's tmp dir
(and to ``$SQUALL_SCREENSHOT_DIR`` when set, to look at them).

Needs Debian's ``chromium`` and ``chromium-driver`` and Selenium (the test
extra); scripts/test installs them as root. Elsewhere the test is skipped
with the reason, except in CI (``CI`` set), where it must run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHAT = ROOT / "examples" / "chat" / "app.py"
# Bounds for one browser-side wait; generous, as the machine is shared.
WAIT_S = 20
# Flags that keep Chromium from reaching for the network (which stalls it
# on a machine without one) and from needing a sandbox or a GPU.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=960,720",
]


def _require(what: str, present: bool) -> None:
    if present:
        return
    if os.environ.get("CI"):
        pytest.fail("%s is not installed (scripts/test installs it as root)" % what)
    pytest.skip("%s is not installed (run scripts/test as root to install it)" % what)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def chat_url() -> Iterator[str]:
    """The chat example in its own process, as ``scripts/demo`` runs it."""
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen(
        [sys.executable, str(CHAT), "--port=%d" % port, "--logging=warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = "http://127.0.0.1:%d/" % port
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    pytest.fail("the chat app did not start:\n" + out)
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture
def browsers(tmp_path: Path) -> Iterator[list[Any]]:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    _require("chromium", chromium is not None)
    _require("chromium-driver (chromedriver)", driver_path is not None)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _require("selenium", False)
        raise
    drivers: list[Any] = []
    try:
        for n in range(2):
            options = webdriver.ChromeOptions()
            options.binary_location = chromium  # type: ignore[assignment]
            for flag in CHROMIUM_FLAGS:
                options.add_argument(flag)
            profile = tmp_path / ("profile-%d" % n)
            profile.mkdir()
            options.add_argument("--user-data-dir=%s" % profile)
            service = Service(executable_path=driver_path, log_output=subprocess.DEVNULL)
            driver = webdriver.Chrome(options=options, service=service)
            driver.set_page_load_timeout(WAIT_S)
            drivers.append(driver)
        yield drivers
    finally:
        for driver in drivers:
            driver.quit()


def _wait(driver: Any, condition: Any, what: str) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(condition)
    except TimeoutException:
        raise AssertionError("timed out waiting for " + what) from None


def _join(driver: Any, url: str, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    field = _wait(driver, lambda d: d.find_element(By.ID, "name-input"), "the name prompt")
    field.send_keys(name)
    driver.find_element(By.ID, "join-button").click()
    _wait(driver, lambda d: d.find_element(By.ID, "message-input").is_enabled(), "the composer")


def _use(driver: Any, transport: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "transport-" + transport).click()
    _wait(
        driver,
        lambda d: "live-" + transport in d.find_element(By.ID, "status").get_attribute("class"),
        "the %s transport to be live" % transport,
    )


def _say(driver: Any, text: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "message-input")
    box.send_keys(text)
    driver.find_element(By.ID, "send-button").click()


def _received(driver: Any, text: str) -> dict[str, str]:
    """Wait for the message ``text`` and return how the page shows it."""
    script = """
        for (const row of document.querySelectorAll('#messages .message')) {
            if (row.querySelector('.text').textContent === arguments[0]) {
                return {name: row.querySelector('.name').textContent,
                        received: row.dataset.received, mine: row.classList.contains('mine')};
            }
        }
        return null;
    """
    return _wait(driver, lambda d: d.execute_script(script, text), "the message %r" % text)  # type: ignore[no-any-return]


def test_two_browsers_chat_over_both_transports(chat_url: str, browsers: list[Any], tmp_path: Path) -> None:
    ann, bob = browsers
    _join(ann, chat_url, "Ann")
    _join(bob, chat_url, "Bob")
    for transport in ("poll", "ws"):
        _use(ann, transport)
        _use(bob, transport)
        text = "hello from Ann over %s" % transport
        _say(ann, text)
        seen = _received(bob, text)
        assert seen == {"name": "Ann", "received": transport, "mine": False}
        assert _received(ann, text)["mine"] is True
        # And back the other way.
        reply = "Bob answers over %s <b>not bold</b>" % transport
        _say(bob, reply)
        assert _received(ann, reply)["received"] == transport
    # Markup in a message is shown as text, never interpreted.
    assert bob.execute_script("return document.querySelectorAll('#messages b').length") == 0
    # A late joiner gets the scrollback, in order.
    bob.refresh()
    texts = _wait(
        bob,
        lambda d: d.execute_script(
            "const t = [...document.querySelectorAll('#messages .text')].map(e => e.textContent);"
            "return t.length === 4 ? t : null;"
        ),
        "the scrollback",
    )
    assert texts[0] == "hello from Ann over poll" and texts[3].startswith("Bob answers over ws")
    for name, driver in (("ann", ann), ("bob", bob)):
        assert driver.save_screenshot(str(tmp_path / ("chat-%s.png" % name)))
        if os.environ.get("SQUALL_SCREENSHOT_DIR"):
            driver.save_screenshot(os.path.join(os.environ["SQUALL_SCREENSHOT_DIR"], "chat-%s.png" % name))
