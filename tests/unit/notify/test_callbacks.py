"""Callbacks without the stack: one POST within a wall-clock budget reading at most 4 KiB of
the answer, and callback URLs that would reach inside the network refused (the deliver
function: tests/unit/notify/test_delivery.py; end to end: tests/stack/test_callbacks.py)."""

from __future__ import annotations

import dataclasses
import socket
import time
from typing import Any

import pytest

from chalicelib.core.errors import ConfigurationError, InvalidCallbackUrl
from chalicelib.core.settings import Settings
from chalicelib.notify import callbacks
from tests.support.receiver import Receiver, closed_port_url

ENVIRONMENT = {
    "SATCHEL_TABLE": "t",
    "SATCHEL_ARTIFACT_BUCKET": "a",
    "SATCHEL_SOURCE_BUCKET": "s",
    "SATCHEL_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:m",
}


def post(url: str, budget: float = 2) -> callbacks.Answer:
    target = callbacks.check(url, allow_loopback=True)
    return callbacks.post(target, b'{"type":"t"}', {"Content-Type": "application/json"}, budget)


def test_a_2xx_answer_is_delivered_and_the_body_arrives_as_sent(receiver: Receiver) -> None:
    answer = post(receiver.url)
    assert answer.delivered
    assert answer.status == 204
    [call] = receiver.received
    assert call.body == b'{"type":"t"}'
    assert call.headers["Host"] == receiver.url.split("/")[2]


@pytest.mark.parametrize("status", [302, 400, 404, 500, 503])
def test_any_other_status_is_not_delivered_and_redirects_are_not_followed(
    receiver: Receiver, status: int
) -> None:
    receiver.statuses = [status]
    answer = post(receiver.url)
    assert (answer.delivered, answer.status) == (False, status)
    assert len(receiver.received) == 1


def test_a_refused_connection_is_an_answer_not_an_exception() -> None:
    answer = post(closed_port_url())
    assert (answer.delivered, answer.status) == (False, None)
    assert answer.error is not None
    assert "Connection" in answer.error


def test_https_to_a_receiver_that_speaks_no_tls_fails_the_attempt(receiver: Receiver) -> None:
    """The TLS path: the handshake fails against a plain-http receiver; an answer, not a raise."""
    plain = callbacks.check(receiver.url, allow_loopback=True)
    target = dataclasses.replace(plain, scheme="https")
    answer = callbacks.post(target, b"{}", {}, 2)
    assert (answer.delivered, answer.status) == (False, None)
    assert answer.error is not None
    assert "SSL" in answer.error


def test_a_dripping_receiver_is_cut_at_the_budget(receiver: Receiver) -> None:
    """A byte every 0.1 s keeps each read well within any per-read timeout; the watchdog
    ends the whole attempt at its wall-clock budget all the same."""
    receiver.drip_seconds = 0.1
    started = time.monotonic()

    answer = post(receiver.url, budget=1.5)

    elapsed = time.monotonic() - started
    assert 1.4 < elapsed < 3, elapsed
    assert (answer.delivered, answer.status) == (False, None)
    assert answer.error == "no answer within 1.5 s"
    assert receiver.finished.wait(5)  # the receiver saw the connection go


def test_a_slow_receiver_is_cut_at_the_budget(receiver: Receiver) -> None:
    receiver.delay_seconds = 5
    started = time.monotonic()
    answer = post(receiver.url, budget=1)
    assert time.monotonic() - started < 2.5
    assert answer.status is None


def test_only_the_first_bytes_of_a_huge_answer_are_read(receiver: Receiver) -> None:
    receiver.answer_bytes = 64 * 1024 * 1024
    started = time.monotonic()

    answer = post(receiver.url, budget=10)

    assert answer.delivered  # a 200 is a 200, however much came after it
    assert time.monotonic() - started < 3
    assert receiver.finished.wait(5)
    # What the receiver got out before the hang-up: what loopback's socket buffers took, a
    # few MiB at most, never the 64 MiB.
    assert receiver.sent_bytes < 16 * 1024 * 1024, receiver.sent_bytes
    assert callbacks.MAX_ANSWER_BYTES == 4096


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


def test_a_name_that_resolves_inside_at_delivery_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the URL was fine at creation; at delivery its name points at metadata.
    The deliver function checks it again before every attempt (tests/unit/notify/test_delivery.py)."""

    def rebound(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebound)

    with pytest.raises(InvalidCallbackUrl, match="private, loopback or reserved"):
        callbacks.check("https://hooks.example.com/satchel", allow_loopback=True)
