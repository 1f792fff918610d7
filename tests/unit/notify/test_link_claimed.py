"""The link.claimed callback's body and headers (docs/events.md), and the state change's, unchanged."""

from __future__ import annotations

import json

import pytest

from chalicelib.core.models import Download, State
from chalicelib.notify import callbacks
from chalicelib.notify import dispatch as notify
from tests.support.receiver import Receiver, verified

DETAIL = {
    "link_id": "link:0123456789abcdef",
    "download_id": "d-1",
    "tenant": "acme",
    "claimed_at": "2026-11-29T15:00:00Z",
    "use": 2,
}


def test_the_body_is_the_events_detail_with_its_type() -> None:
    assert notify.link_claimed_payload(DETAIL) == {**DETAIL, "type": "link.claimed"}


def test_the_body_carries_only_the_documented_fields() -> None:
    body = notify.link_claimed_payload({**DETAIL, "claimant": "203.0.113.9"})
    assert set(body) == {"type", "link_id", "download_id", "tenant", "claimed_at", "use"}


@pytest.mark.parametrize("missing", notify.LINK_CLAIMED_FIELDS)
def test_an_event_without_a_field_is_refused(missing: str) -> None:
    detail = {name: value for name, value in DETAIL.items() if name != missing}
    with pytest.raises(ValueError, match=missing):
        notify.link_claimed_payload(detail)


def test_the_state_change_body_is_unchanged() -> None:
    download = Download(
        id="d-1",
        type="zip",
        params={},
        filename="a.zip",
        tenant="acme",
        user_id="alice",
        state=State.DONE,
        created_at="2026-11-29T14:00:00Z",
        retention_seconds=3600,
    )
    assert set(notify.payload(download)) == {
        "id",
        "type",
        "tenant",
        "user_id",
        "state",
        "error",
        "finished_at",
        "expires_at",
    }
    assert notify.payload(download)["type"] == "zip"


def test_a_link_claimed_callback_is_signed_and_names_its_event(receiver: Receiver) -> None:
    body = notify.link_claimed_payload(DETAIL)
    outcome = callbacks.deliver(
        receiver.url,
        body,
        "secret-one",
        allow_loopback=True,
        attempts=1,
        timeout_seconds=2,
        backoff_ms=1,
        event_id="link:0123456789abcdef.claimed.2",
    )
    assert outcome.delivered
    [call] = receiver.received
    assert verified(call, "secret-one") == body
    assert json.loads(call.body)["type"] == "link.claimed"
    assert call.headers[callbacks.EVENT_HEADER] == "link:0123456789abcdef.claimed.2"
