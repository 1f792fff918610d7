"""link.claimed's callback in the stack: the claim puts its event on the bus, the bus's rule
delivers it to the link_webhook function (here through the queue satchel_local polls into
it, as `make run` does), and that function calls the download's callback_url, signed.
The claim itself never waits on the receiver."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from chalice.test import Client

import app as app_module
from chalicelib.core.settings import ENV_EVENT_BUS
from chalicelib.notify import callbacks
from chalicelib.notify import dispatch as notify
from satchel_local import eventsources
from satchel_local.stack import REGION, Stack
from statemachine.definition import function_name
from tests.support.receiver import Receiver, verified
from tests.support.stack import Satchel, running_stack

JSON = {"Accept": "application/json"}


def deliver_claims(stack: Stack) -> None:
    """EventBridge invoking link_webhook with each event its rule matched so far."""
    target = eventsources.EventBridgeTarget(
        "link-claims-queue",
        threading.Event(),
        stack.link_claims_queue_url,
        function_name(stack.stage, "link_webhook"),
    )
    target.step()


def queued(stack: Stack) -> dict[str, str]:
    """The link claims' queue's messages, waiting and in flight: none once all were handled."""
    attributes: dict[str, str] = boto3.client("sqs", region_name=REGION).get_queue_attributes(
        QueueUrl=stack.link_claims_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return attributes


def linked_download(satchel: Satchel, key: str, **extra: Any) -> tuple[str, str]:
    """A DONE download with a link: (download id, link token)."""
    satchel.put_source(key, b"shared by link\n")
    created = satchel.create({"keys": [key]}, link={"max_uses": 3}, **extra)
    assert created.status == 202, created.body
    assert satchel.wait(created.json["id"])["state"] == "DONE"
    return created.json["id"], created.json["link"]["token"]


def link_id_of(satchel: Satchel, download_id: str) -> str:
    [link] = satchel.call("GET", f"/downloads/{download_id}/links").json["items"]
    link_id: str = link["link_id"]
    return link_id


def claim(satchel: Satchel, token: str) -> dict[str, Any]:
    reply = satchel.call("POST", f"/links/{token}", user=None, headers=JSON)
    assert reply.status == 200, reply.body
    claimed: dict[str, Any] = reply.json
    return claimed


def test_a_claim_calls_back_signed_with_link_claimed(satchel: Satchel, receiver: Receiver) -> None:
    download_id, token = linked_download(satchel, "acme/hook/a.txt", callback_url=receiver.url)
    [done] = receiver.wait_for(1)
    assert verified(done)["state"] == "DONE"

    before = datetime.now(UTC).replace(microsecond=0)
    first, second = claim(satchel, token), claim(satchel, token)
    deliver_claims(satchel.stack)

    calls = receiver.wait_for(3)[1:]
    assert len(calls) == 2
    link_id = link_id_of(satchel, download_id)
    # Verified as a receiver verifies: the signature over the timestamp and the raw body.
    payloads = sorted((verified(call) for call in calls), key=lambda payload: payload["use"])
    assert payloads == [
        {
            "type": "link.claimed",
            "link_id": link_id,
            "download_id": download_id,
            "tenant": "acme",
            "claimed_at": payload["claimed_at"],
            "use": use,
        }
        for payload, use in zip(payloads, (1, 2), strict=True)
    ]
    assert (first["use"], second["use"]) == (1, 2)
    for payload in payloads:
        claimed_at = datetime.fromisoformat(payload["claimed_at"].replace("Z", "+00:00"))
        assert before <= claimed_at <= datetime.now(UTC)
    # Headers as a state change's: the event id names the link and the use, for dedup.
    assert sorted(call.headers[callbacks.EVENT_HEADER] for call in calls) == [
        f"{link_id}.claimed.1",
        f"{link_id}.claimed.2",
    ]
    assert all(call.headers["Content-Type"] == "application/json" for call in calls)
    assert all(call.headers["User-Agent"] == "Satchel-Callback/1" for call in calls)
    assert queued(satchel.stack) == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }


def test_a_download_without_a_callback_url_sends_nothing(
    satchel: Satchel, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoked: list[dict[str, Any]] = []
    original = app_module.link_webhook

    def spy(event: dict[str, Any], context: Any) -> Any:
        invoked.append(event)
        return original(event, context)

    monkeypatch.setattr(app_module, "link_webhook", spy)
    silent_id, silent = linked_download(satchel, "acme/hook/silent.txt")
    told_id, told = linked_download(satchel, "acme/hook/told.txt", callback_url=receiver.url)
    receiver.wait_for(1)  # the told download's DONE

    claim(satchel, silent)
    claim(satchel, told)
    deliver_claims(satchel.stack)

    # Both events reached the function, and each ended well (none left to retry)...
    assert sorted(event["detail"]["download_id"] for event in invoked) == sorted([silent_id, told_id])
    assert all(event["detail-type"] == notify.LINK_CLAIMED for event in invoked)
    assert queued(satchel.stack) == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }
    # ...and only the download that asked for callbacks was called back.
    claims = [verified(call) for call in receiver.wait_for(2) if b"link.claimed" in call.body]
    assert [payload["download_id"] for payload in claims] == [told_id]
    assert len(receiver.received) == 2


def test_a_claim_does_not_wait_for_a_slow_receiver(
    satchel: Satchel, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    download_id, token = linked_download(satchel, "acme/hook/slow.txt", callback_url=receiver.url)
    receiver.wait_for(1)  # the DONE callback, answered at once
    receiver.delay_seconds = 5.0
    # One attempt that waits out the receiver, not a timeout and retries.
    monkeypatch.setenv("SATCHEL_CALLBACK_TIMEOUT_SECONDS", "10")

    started = time.monotonic()
    claimed = claim(satchel, token)
    claim_seconds = time.monotonic() - started
    assert claim_seconds < 1.0, f"the claim took {claim_seconds:.2f} s"
    assert claimed["use"] == 1
    assert len(receiver.received) == 1  # nothing was sent on the claim's path

    # The webhook itself does wait for the receiver: it is the link_webhook function's time.
    started = time.monotonic()
    deliver_claims(satchel.stack)
    delivery_seconds = time.monotonic() - started
    [_, call] = receiver.received
    assert verified(call)["download_id"] == download_id
    assert delivery_seconds >= 5.0


def test_claims_on_a_bus_of_their_own_reach_the_function(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SATCHEL_EVENT_BUS names another bus: the claim's event goes there, and so does the
    function's rule (deploy/template.yaml's EventBusName), not to the default bus."""
    monkeypatch.setenv(ENV_EVENT_BUS, "satchel-events")
    with running_stack(monkeypatch) as stack, Client(app_module.app, stage_name="test") as client:
        satchel = Satchel(client, stack)
        events = boto3.client("events", region_name=REGION)
        on_default = [rule["Name"] for rule in events.list_rules(EventBusName="default")["Rules"]]
        assert f"satchel-{stack.stage}-link-claims" not in on_default
        download_id, token = linked_download(satchel, "acme/hook/bus.txt", callback_url=receiver.url)
        receiver.wait_for(1)

        claim(satchel, token)
        deliver_claims(stack)

        [_, call] = receiver.wait_for(2)
        assert verified(call)["download_id"] == download_id
