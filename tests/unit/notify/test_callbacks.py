"""Callbacks without the stack: signed, retried with backoff, and callback URLs that would reach
inside the network refused (tests/stack/test_callbacks.py has them end to end)."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from chalicelib.core.errors import ConfigurationError, InvalidCallbackUrl
from chalicelib.core.settings import Settings
from chalicelib.notify import callbacks
from tests.support.receiver import Received, Receiver, verified
from tests.support.stack import WEBHOOK_SECRET

ENVIRONMENT = {
    "SATCHEL_TABLE": "t",
    "SATCHEL_ARTIFACT_BUCKET": "a",
    "SATCHEL_SOURCE_BUCKET": "s",
    "SATCHEL_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:m",
}


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


# --- The EventBridge event --------------------------------------------------------------
