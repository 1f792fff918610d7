"""Notifications: the EventBridge event and the signed callback when a download finishes,
retried with backoff, and callback URLs that would reach inside the network refused."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest

from chalicelib.api import downloads
from chalicelib.core.errors import ConfigurationError, InvalidCallbackUrl
from chalicelib.core.settings import Settings
from chalicelib.notify import callbacks
from chalicelib.notify import dispatch as notify
from chalicelib.runtime import Runtime
from satchel_local.stack import REGION
from tests.conftest import USERS, WEBHOOK_SECRET, Satchel

ENVIRONMENT = {
    "SATCHEL_TABLE": "t",
    "SATCHEL_ARTIFACT_BUCKET": "a",
    "SATCHEL_SOURCE_BUCKET": "s",
    "SATCHEL_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:m",
}


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
    thread = threading.Thread(target=server.serve_forever, daemon=True)
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


def test_a_finished_download_calls_back_signed(satchel: Satchel, receiver: Receiver) -> None:
    satchel.put_source("acme/called.txt", b"call me")
    created = satchel.create({"keys": ["acme/called.txt"]}, callback_url=receiver.url)
    assert created.status == 202, created.body
    assert "callback_url" not in created.json or created.json["callback_url"] == receiver.url

    done = satchel.wait(created.json["id"])

    [call] = receiver.wait_for(1)
    payload = verified(call)
    assert payload["id"] == done["id"]
    assert payload["state"] == "DONE"
    assert (payload["tenant"], payload["user_id"], payload["error"]) == ("acme", "alice", None)
    assert payload["expires_at"] == done["expires_at"]
    assert call.headers["Content-Type"] == "application/json"
    assert call.headers[callbacks.EVENT_HEADER] == f"{done['id']}.DONE"


def test_a_failed_download_calls_back_with_its_error(satchel: Satchel, receiver: Receiver) -> None:
    created = satchel.create({"keys": ["acme/never-there.txt"]}, callback_url=receiver.url)

    failed = satchel.wait(created.json["id"])

    assert failed["state"] == "FAILED"
    payload = verified(receiver.wait_for(1)[0])
    assert payload["state"] == "FAILED"
    assert payload["error"] == {"code": "SourceMissing", "message": failed["error"]["message"]}


def test_a_tampered_body_does_not_verify(receiver: Receiver) -> None:
    outcome = callbacks.deliver(
        receiver.url,
        {"id": "d1", "state": "DONE"},
        "secret-one",
        allow_loopback=True,
        attempts=1,
        timeout_seconds=2,
        backoff_ms=1,
    )
    assert outcome.delivered
    [call] = receiver.received
    verified(call, "secret-one")
    with pytest.raises(AssertionError):
        verified(Received(call.headers, call.body.replace(b"DONE", b"FAIL")), "secret-one")
    with pytest.raises(AssertionError):
        verified(call, "another-secret")


def deliver(url: str, attempts: int = 3, timeout: float = 2) -> callbacks.Delivery:
    return callbacks.deliver(
        url,
        {"id": "d1", "state": "DONE"},
        WEBHOOK_SECRET,
        allow_loopback=True,
        attempts=attempts,
        timeout_seconds=timeout,
        backoff_ms=50,
    )


def test_server_errors_and_throttling_are_retried_with_backoff(receiver: Receiver) -> None:
    receiver.statuses = [503, 429, 200]

    outcome = deliver(receiver.url)

    assert (outcome.delivered, outcome.attempts, outcome.status) == (True, 3, 200)
    stamps = [int(call.headers[callbacks.TIMESTAMP_HEADER]) for call in receiver.received]
    assert len(stamps) == 3
    for call in receiver.received:  # every attempt is signed afresh, over the same body
        verified(call)
    assert len({call.body for call in receiver.received}) == 1


def test_backoff_grows_between_attempts(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver.statuses = [500, 500, 500]
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)

    outcome = deliver(receiver.url)

    assert (outcome.delivered, outcome.attempts, outcome.error) == (False, 3, "HTTP 500")
    assert [seconds for seconds in slept if seconds] == [0.05, 0.1]  # the receiver sleeps 0


def test_a_client_error_is_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [410]

    outcome = deliver(receiver.url)

    assert (outcome.delivered, outcome.attempts, outcome.status) == (False, 1, 410)
    assert len(receiver.received) == 1


def test_a_slow_receiver_times_out_and_is_retried(receiver: Receiver) -> None:
    receiver.delay_seconds = 1.0

    outcome = deliver(receiver.url, attempts=2, timeout=0.2)

    assert not outcome.delivered
    assert outcome.attempts == 2
    assert outcome.error is not None
    assert "Timeout" in outcome.error


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.statuses = [302]

    outcome = deliver(receiver.url)

    assert (outcome.delivered, outcome.attempts, outcome.status) == (False, 1, 302)


def test_an_undeliverable_callback_is_audited_and_the_download_still_finishes(
    satchel: Satchel, receiver: Receiver
) -> None:
    receiver.statuses = [500, 500, 500]
    satchel.put_source("acme/unheard.txt", b"nobody listens")
    created = satchel.create({"keys": ["acme/unheard.txt"]}, callback_url=receiver.url)

    assert satchel.wait(created.json["id"])["state"] == "DONE"
    assert len(receiver.wait_for(3)) == 3
    [audited] = [e for e in Runtime.from_env().audit.events("acme") if e.action == "callback.failed"]
    assert audited.download_id == created.json["id"]
    assert (audited.details["attempts"], audited.details["status"]) == (3, 500)


# --- Where a callback may go ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1/hook", "private, loopback or reserved"),
        ("https://localhost:8443/hook", "private, loopback or reserved"),
        ("https://[::1]/hook", "private, loopback or reserved"),
        ("https://[::ffff:127.0.0.1]/hook", "private, loopback or reserved"),
        ("https://169.254.169.254/latest/meta-data/", "private, loopback or reserved"),
        ("https://[fd00:ec2::254]/latest/", "private, loopback or reserved"),
        ("https://10.1.2.3/hook", "private, loopback or reserved"),
        ("https://172.16.0.1/hook", "private, loopback or reserved"),
        ("https://192.168.0.10/hook", "private, loopback or reserved"),
        ("https://100.64.0.1/hook", "private, loopback or reserved"),
        ("https://0.0.0.0/hook", "private, loopback or reserved"),
        ("https://224.0.0.1/hook", "private, loopback or reserved"),
        ("http://93.184.216.34/hook", "must be https"),
        ("ftp://93.184.216.34/hook", "must be https"),
        ("https://user:pw@93.184.216.34/hook", "credentials"),
        ("https:///hook", "no host"),
        ("https://93.184.216.34:99999/hook", "bad port"),
        ("https://no-such-host.invalid/hook", "cannot resolve"),
        ("https://93.184.216.34:8443/hook", "port 8443 is not allowed (allowed: 443)"),
        ("https://93.184.216.34:80/hook", "port 80 is not allowed"),
        ("https://[2002:a00:1::1]/hook", "private, loopback or reserved"),  # 6to4 of 10.0.0.1
        ("https://[2002:5db8:d822::1]/hook", "private, loopback or reserved"),  # 6to4 of a public one
        ("https://[2001:0:5db8:d822::1]/hook", "private, loopback or reserved"),  # Teredo
        ("https://[64:ff9b::a9fe:a9fe]/hook", "private, loopback or reserved"),  # NAT64 of metadata
        ("https://[64:ff9b::5db8:d822]/hook", "private, loopback or reserved"),  # NAT64 of a public one
        ("https://[64:ff9b:1::a00:1]/hook", "private, loopback or reserved"),  # local-use NAT64
        ("https://[::ffff:a9fe:a9fe]/hook", "private, loopback or reserved"),  # mapped metadata
        ("https://[::ffff:10.0.0.1]/hook", "private, loopback or reserved"),
        ("https://[::a00:1]/hook", "private, loopback or reserved"),  # compatible 10.0.0.1
        ("https://[::7f00:1]/hook", "private, loopback or reserved"),  # compatible 127.0.0.1
        ("https://[::]/hook", "private, loopback or reserved"),
    ],
)
def test_callback_urls_inside_the_network_are_refused(url: str, reason: str) -> None:
    with pytest.raises(InvalidCallbackUrl) as refused:
        callbacks.check(url, allow_loopback=False)
    assert reason in refused.value.message


def test_a_public_https_url_is_called_at_the_address_that_was_checked() -> None:
    target = callbacks.check("https://93.184.216.34:8443/in?x=1", allow_loopback=False, ports=(443, 8443))
    assert (target.scheme, target.address, target.port, target.path) == (
        "https",
        "93.184.216.34",
        8443,
        "/in?x=1",
    )


def test_mapped_and_compatible_addresses_of_public_ipv4_are_allowed() -> None:
    for url in ("https://[::ffff:93.184.216.34]/hook", "https://[::5db8:d822]/hook"):
        assert callbacks.check(url, allow_loopback=False).port == 443


def test_loopback_receivers_may_use_any_port_where_loopback_is_allowed() -> None:
    for url in ("http://127.0.0.1:9000/hook", "http://[::1]:8080/hook", "https://127.0.0.1:8443/hook"):
        assert callbacks.check(url, allow_loopback=True).port in (9000, 8080, 8443)
    with pytest.raises(InvalidCallbackUrl, match="private, loopback or reserved"):
        callbacks.check("https://[::ffff:127.0.0.1]:8443/hook", allow_loopback=False)


@pytest.mark.parametrize("raw", ["", "0", "443,x", "70000", ","])
def test_callback_ports_setting_is_checked(raw: str) -> None:
    environment = {**ENVIRONMENT, "SATCHEL_CALLBACK_PORTS": raw}
    if raw == "":
        assert Settings.from_env(environment).callback_port_numbers == (443,)
        return
    with pytest.raises(ConfigurationError, match="SATCHEL_CALLBACK_PORTS"):
        Settings.from_env(environment)


def test_configured_callback_ports_are_allowed() -> None:
    settings = Settings.from_env({**ENVIRONMENT, "SATCHEL_CALLBACK_PORTS": "8443, 443"})
    assert settings.callback_port_numbers == (443, 8443)
    target = callbacks.check("https://93.184.216.34:8443/", False, settings.callback_port_numbers)
    assert target.port == 8443


def test_loopback_over_http_only_where_allowed() -> None:
    assert callbacks.check("http://127.0.0.1:9/hook", allow_loopback=True).address == "127.0.0.1"
    with pytest.raises(InvalidCallbackUrl):
        callbacks.check("http://127.0.0.1:9/hook", allow_loopback=False)
    with pytest.raises(InvalidCallbackUrl):  # loopback allowed, but private never
        callbacks.check("http://10.0.0.1/hook", allow_loopback=True)


def test_a_name_that_resolves_inside_at_delivery_is_not_called(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the URL was fine at creation; at delivery its name points at metadata."""

    def rebound(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebound)

    outcome = deliver("https://hooks.example.com/satchel")

    assert (outcome.delivered, outcome.attempts) == (False, 1)
    assert outcome.error is not None
    assert "private, loopback or reserved" in outcome.error
    assert receiver.received == []


def test_the_api_refuses_a_callback_to_the_metadata_service(satchel: Satchel) -> None:
    satchel.put_source("acme/ssrf.txt", b"x")
    for url in (
        "https://169.254.169.254/latest/meta-data/iam/",
        "https://10.0.0.5/x",
        "http://93.184.216.34/x",
    ):
        reply = satchel.create({"keys": ["acme/ssrf.txt"]}, callback_url=url)
        assert reply.status == 422, url
        assert reply.json["Code"] == "InvalidCallbackUrl"
    assert satchel.call("GET", "/downloads").json["items"] == []


def test_without_a_signing_key_callbacks_are_refused(satchel: Satchel) -> None:
    runtime = Runtime.from_env()
    unsigned = replace(runtime, settings=replace(runtime.settings, webhook_secret=""))
    body = {"type": "zip", "params": {"keys": ["acme/a.txt"]}, "callback_url": "http://127.0.0.1:9/x"}

    with pytest.raises(InvalidCallbackUrl, match="not configured"):
        downloads.create(unsigned, USERS["alice"], body)


# --- The EventBridge event --------------------------------------------------------------


def test_every_terminal_state_is_published_to_eventbridge(satchel: Satchel) -> None:
    events, sqs = boto3.client("events", region_name=REGION), boto3.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName="observed-state-changes")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(
        Name="observe",
        EventPattern=json.dumps({"source": [notify.SOURCE], "detail-type": [notify.DETAIL_TYPE]}),
    )
    events.put_targets(Rule="observe", Targets=[{"Id": "queue", "Arn": queue_arn}])

    satchel.put_source("acme/published.txt", b"news")
    done = satchel.wait(satchel.create({"keys": ["acme/published.txt"]}).json["id"])
    failed = satchel.wait(satchel.create({"keys": ["acme/missing.txt"]}, user="bob").json["id"], user="bob")
    assert (done["state"], failed["state"]) == ("DONE", "FAILED")

    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    published = [json.loads(message["Body"]) for message in messages]
    details = {event["detail"]["id"]: event for event in published}
    assert set(details) == {done["id"], failed["id"]}
    assert details[failed["id"]]["detail"]["error"]["code"] == "SourceMissing"
    event = details[done["id"]]
    assert (event["source"], event["detail-type"]) == ("satchel", "Satchel Download State Changed")
    assert event["detail"] == {
        "id": done["id"],
        "type": "zip",
        "tenant": "acme",
        "user_id": "alice",
        "state": "DONE",
        "error": None,
        "finished_at": done["finished_at"],
        "expires_at": done["expires_at"],
    }
