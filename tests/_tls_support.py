"""Shared scaffolding of the TLS server tests (test_tls_server, test_https_fast).

Servers listen on 127.0.0.1 port 0 with the package's self-signed test
certificate; each test body runs on a fresh asyncio or uvloop loop, and
whatever the test started is stopped afterwards, even when it fails.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from squall.tcpserver import TCPServer

uvloop = pytest.importorskip("uvloop")

CERT_DIR = os.path.join(os.path.dirname(__file__), "..", "src", "squall", "test")
CERTFILE = os.path.join(CERT_DIR, "test.crt")
KEYFILE = os.path.join(CERT_DIR, "test.key")
SERVER_SSL = {"certfile": CERTFILE, "keyfile": KEYFILE}
# Generous for a loaded 2-core machine; a healthy run takes well under a second.
SOCKET_TIMEOUT = 10.0
TEST_TIMEOUT = 30.0

# Servers started by the running test; run() stops them whatever happens.
LISTENING: list[TCPServer] = []


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_name(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


def listen(server: TCPServer) -> int:
    """Start ``server`` on a free loopback port (stopped by `run`); the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server.add_sockets([sock])
    LISTENING.append(server)
    return int(sock.getsockname()[1])


def run(loop_name: str, main: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``main()`` on a new loop of the named kind, within TEST_TIMEOUT."""
    loop = uvloop.new_event_loop() if loop_name == "uvloop" else asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(main(), TEST_TIMEOUT))
    finally:
        # A failed test must fail, not hang: with a server still listening
        # and handshakes pending, uvloop's close() can wait forever.
        while LISTENING:
            server = LISTENING.pop()
            server.stop()
            close_all = getattr(server, "close_all_connections", None)
            if close_all is not None:
                loop.run_until_complete(close_all())
        loop.run_until_complete(cancel_all_tasks())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


async def cancel_all_tasks() -> None:
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def client_context(certificate: bool = False) -> ssl.SSLContext:
    """A client context that accepts the self-signed test certificate
    (with ``certificate``, also presenting it as the client's)."""
    # Not create_default_context(): loading the system's CA store costs tens
    # of milliseconds per client, and the test certificate is not checked.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if certificate:
        context.load_cert_chain(CERTFILE, KEYFILE)
    return context
