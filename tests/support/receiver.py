"""A webhook receiver on loopback (the `receiver` fixture, registered by tests/conftest.py) and
the check a receiver makes of a delivery: Standard Webhooks' own verifier, not Satchel's code.

The receiver answers with the statuses it is given, in turn (then 204), after `delay_seconds`;
or misbehaves as asked: `drip_seconds` sends its answer one byte at a time that far apart,
for ever; `answer_bytes` sends a 200 with a body that large, counting what it could send.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks import Webhook

from chalicelib.core import clock
from chalicelib.runtime import Runtime

# A fixed Standard Webhooks secret, for tests that sign without the stack (tests/unit).
WEBHOOK_SECRET = "whsec_c2F0Y2hlbC10ZXN0LW9ubHktd2ViaG9vay1rZXkhISE="

_POLL_SECONDS = 0.01  # how often the server looks for shutdown()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    statuses: list[int] = field(default_factory=list)
    delay_seconds: float = 0.0
    drip_seconds: float = 0.0
    answer_bytes: int = 0
    received: list[Received] = field(default_factory=list)
    # Bytes of the answer body the receiver got out before the client hung up.
    sent_bytes: int = 0
    # Set when a handler has finished (the client hung up, or the answer was sent).
    finished: threading.Event = field(default_factory=threading.Event)

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
def serving(port: int = 0) -> Iterator[Receiver]:
    """A receiver for as long as the block runs (the fixture's, or a scenario's own), on
    `port` (0: any free one)."""
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append(Received(dict(self.headers.items()), body))
            try:
                self._answer()
            except OSError:
                pass  # the client hung up: what the tests of a cut attempt expect
            finally:
                state.finished.set()

        def _answer(self) -> None:
            if state.drip_seconds:
                while True:  # never a whole status line: only the client's budget ends this
                    for byte in b"HTTP/1.1 200 OK\r\nX-Drip: 1\r\n":
                        self.wfile.write(bytes([byte]))
                        time.sleep(state.drip_seconds)
            if state.answer_bytes:
                self.send_response(200)
                self.send_header("Content-Length", str(state.answer_bytes))
                self.end_headers()
                chunk = b"x" * 65536
                while state.sent_bytes < state.answer_bytes:
                    self.wfile.write(chunk)
                    state.sent_bytes += len(chunk)
                return
            time.sleep(state.delay_seconds)
            status = state.statuses.pop(0) if state.statuses else 204
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def closed_port_url(port: int | None = None) -> str:
    """A loopback URL nothing listens on (yet): a connection there is refused at once."""
    return f"http://127.0.0.1:{port or free_port()}/hooks"


def verified(received: Received, secret: str | None = None) -> dict[str, Any]:
    """What a receiver does: Standard Webhooks' reference verifier over the raw body and the
    headers (id, timestamp within 5 minutes, a v1 signature by the secret); the payload.
    Without `secret`: the current secret of the tenant the event names, as the stack stores it."""
    if secret is None:
        tenant = json.loads(received.body)["data"]["tenant"]
        secret = Runtime.from_env().webhook_secrets.signing(tenant, clock.now())[0]
    payload: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    assert set(payload) == {"type", "timestamp", "data"}
    return payload
