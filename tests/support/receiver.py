"""A callback receiver on loopback (the `receiver` fixture, registered by tests/conftest.py) and
the check a receiver makes of a callback's signature."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chalicelib.notify import callbacks
from tests.support.stack import WEBHOOK_SECRET

_POLL_SECONDS = 0.01  # how often the server looks for shutdown()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A callback receiver on loopback that answers with the statuses it is given, in turn."""

    url: str
    statuses: list[int] = field(default_factory=list)
    delay_seconds: float = 0.0
    received: list[Received] = field(default_factory=list)

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving() as state:
        yield state


@contextlib.contextmanager
def serving() -> Iterator[Receiver]:
    """A receiver for as long as the block runs (the fixture's, or a scenario's own)."""
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append(Received(dict(self.headers.items()), body))
            time.sleep(state.delay_seconds)
            status = state.statuses.pop(0) if state.statuses else 204
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/satchel?source=test"
    # shutdown() waits for serve_forever to look at its flag, once every poll interval: 0.5 s
    # by default, which every test using a receiver would spend in its teardown.
    thread = threading.Thread(target=server.serve_forever, args=(_POLL_SECONDS,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def verified(received: Received, secret: str = WEBHOOK_SECRET) -> dict[str, Any]:
    """What a receiver does: recompute the signature over the timestamp and the raw body."""
    timestamp = received.headers[callbacks.TIMESTAMP_HEADER]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(received.headers[callbacks.SIGNATURE_HEADER], f"v1={expected}")
    assert abs(int(timestamp) - time.time()) < 60
    payload: dict[str, Any] = json.loads(received.body)
    return payload
