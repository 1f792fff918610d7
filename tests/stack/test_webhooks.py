"""Webhooks end to end in the stack: events recorded with the transitions that cause them,
queued, and sent by the `deliver` function (polled here as Lambda's event source polls it),
every one verified with Standard Webhooks' reference verifier. Retries, the dead-letter
queue, the owner's view of the deliveries, and that no API call or step waits on a receiver.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from datetime import timedelta
from typing import Any, cast

import boto3
import pytest
from botocore.retries import standard

from chalicelib.api import downloads
from chalicelib.core import clock
from chalicelib.core.errors import WebhookSecretMissing
from chalicelib.core.models import Principal
from chalicelib.notify import events
from chalicelib.runtime import Runtime
from chalicelib.storage import layout
from chalicelib.storage.downloads import EFFECTS_LEASE
from chalicelib.triggers import cleanup
from satchel_local.stack import REGION
from tests.support.faults import Fault, Injector
from tests.support.receiver import Receiver, closed_port_url, free_port, serving, verified
from tests.support.stack import USERS, Satchel
from tests.support.webhooks import deliver_queued, deliver_until, deliveries, poller, queue_counts

JSON = {"Accept": "application/json"}


class NeverStarted:
    """A Step Functions client whose StartExecution answer was lost: the download stays PENDING."""

    def start_execution(self, **kwargs: Any) -> dict[str, Any]:
        return {}


def pending_download(callback_url: str, reference: str = "pending-ref") -> str:
    runtime = dataclasses.replace(Runtime.from_env(), stepfunctions=cast(Any, NeverStarted()))
    body = {
        "type": "zip",
        "params": {"keys": ["acme/hooks/a.txt"]},
        "callback_url": callback_url,
        "client_reference": reference,
    }
    return downloads.create(runtime, USERS["alice"], body).download.id


def finished(satchel: Satchel, url: str, key: str = "acme/hooks/a.txt", **extra: Any) -> dict[str, Any]:
    satchel.put_source("acme/hooks/a.txt", b"hook me\n" * 10)
    created = satchel.create({"keys": [key]}, callback_url=url, **extra)
    assert created.status == 202, created.body
    done: dict[str, Any] = satchel.wait(created.json["id"])
    if "link" in created.json:
        done["link"] = created.json["link"]
    return done


def test_every_event_type_is_delivered_and_verifies(satchel: Satchel, receiver: Receiver) -> None:
    done = finished(satchel, receiver.url, client_reference="order-7", link={"max_uses": 2})
    assert done["state"] == "DONE"
    assert done["client_reference"] == "order-7"  # stored and shown
    failed = finished(satchel, receiver.url, key="acme/hooks/missing.txt", client_reference="order-8")
    assert failed["state"] == "FAILED"
    pending = pending_download(receiver.url, "order-9")
    assert satchel.call("DELETE", f"/downloads/{pending}").status == 202
    # Not fetched yet, an hour before it expires (SATCHEL_EXPIRING_UNUSED_SECONDS' default).
    warned = cleanup.run(Runtime.from_env(), clock.parse(done["expires_at"]) - timedelta(seconds=3599))
    assert warned.warned == [done["id"]]
    claimed = satchel.call("POST", f"/links/{done['link']['token']}", user=None, headers=JSON)
    assert claimed.status == 200, claimed.body
    report = cleanup.run(Runtime.from_env(), clock.parse(done["expires_at"]) + timedelta(seconds=1))
    assert done["id"] in report.expired

    deliver_queued(satchel.stack)

    calls = receiver.wait_for(6)
    payloads = {call.headers["webhook-id"]: verified(call) for call in calls}
    [link] = satchel.call("GET", f"/downloads/{done['id']}/links").json["items"]
    assert set(payloads) == {
        f"{done['id']}.completed",
        f"{done['id']}.expired",
        f"{done['id']}.expiring_unused",
        f"{failed['id']}.failed",
        f"{pending}.cancelled",
        f"{link['link_id']}.claimed.1",
    }
    assert len(calls) == 6  # each once
    assert {payload["type"] for payload in payloads.values()} == set(events.TYPES)
    completed = payloads[f"{done['id']}.completed"]
    assert completed["timestamp"] == done["finished_at"]
    assert completed["data"] == {
        "id": done["id"],
        "type": "zip",
        "tenant": "acme",
        "user_id": "alice",
        "state": "DONE",
        "error": None,
        "created_at": done["created_at"],
        "finished_at": done["finished_at"],
        "expires_at": done["expires_at"],
        "url": f"/downloads/{done['id']}/file",
        "client_reference": "order-7",
    }
    assert payloads[f"{failed['id']}.failed"]["data"]["error"]["code"] == "SourceMissing"
    assert payloads[f"{pending}.cancelled"]["data"]["client_reference"] == "order-9"
    assert payloads[f"{done['id']}.expired"]["data"]["state"] == "EXPIRED"
    claim = payloads[f"{link['link_id']}.claimed.1"]["data"]
    assert (claim["download_id"], claim["use"], claim["client_reference"]) == (done["id"], 1, "order-7")
    assert done["link"]["token"] not in json.dumps(claim)
    # The owner sees each delivery of the download, delivered at the first attempt.
    items = satchel.call("GET", f"/downloads/{done['id']}/deliveries").json["items"]
    assert sorted(item["type"] for item in items) == [
        "download.completed",
        "download.expired",
        "download.expiring_unused",
        "link.claimed",
    ]
    assert {(item["state"], item["attempts"], item["last_status"]) for item in items} == {
        ("delivered", 1, 204)
    }
    assert queue_counts(satchel.stack.deliveries_queue_url) == (0, 0)


def test_a_receiver_that_is_down_then_recovers_gets_the_event_once_recorded(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The backoff compressed to a second (deployed: 30 s doubling to an hour, for 26 hours).
    monkeypatch.setenv("SATCHEL_DELIVERY_MAX_DELAY_SECONDS", "1")
    port = free_port()
    done = finished(satchel, closed_port_url(port))  # nothing listens there yet
    deliver_until(satchel.stack, lambda: deliveries(done["id"])[0].attempts >= 2)
    [down] = deliveries(done["id"])
    assert (down.state, down.last_status) == ("pending", None)
    assert down.last_error is not None
    assert "Connection" in down.last_error
    assert down.next_attempt_at is not None

    with serving(port) as receiver:
        receiver.statuses = [500, 503]  # back, but not well yet
        deliver_until(satchel.stack, lambda: deliveries(done["id"])[0].state == "delivered")
        calls = receiver.received
        assert [call.headers["webhook-id"] for call in calls] == [f"{done['id']}.completed"] * 3
        assert all(verified(call)["data"]["id"] == done["id"] for call in calls)
    [recorded] = deliveries(done["id"])
    assert (recorded.state, recorded.last_status, recorded.last_error) == ("delivered", 204, None)
    assert recorded.attempts == 2 + len(calls)
    assert queue_counts(satchel.stack.deliveries_queue_url) == (0, 0)


def test_after_the_retry_window_the_event_is_dead_lettered(
    satchel: Satchel, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SATCHEL_DELIVERY_WINDOW_SECONDS", "3")
    monkeypatch.setenv("SATCHEL_DELIVERY_MAX_DELAY_SECONDS", "1")
    receiver.statuses = [500] * 50
    done = finished(satchel, receiver.url)

    deliver_until(satchel.stack, lambda: deliveries(done["id"])[0].state == "failed")

    [record] = deliveries(done["id"])
    assert record.attempts == len(receiver.received) >= 1
    assert (record.last_status, record.next_attempt_at) == (500, None)
    sqs = boto3.client("sqs", region_name=REGION)
    [dead] = sqs.receive_message(QueueUrl=satchel.stack.deliveries_dead_letter_queue_url)["Messages"]
    assert json.loads(dead["Body"]) == {"download_id": done["id"], "event_id": f"{done['id']}.completed"}
    assert queue_counts(satchel.stack.deliveries_queue_url) == (0, 0)
    shown = satchel.call("GET", f"/downloads/{done['id']}/deliveries").json["items"]
    assert [(item["state"], item["last_status"]) for item in shown] == [("failed", 500)]


def test_no_api_call_or_step_waits_on_a_sleeping_receiver(
    satchel: Satchel, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver.delay_seconds = 20
    monkeypatch.setenv("SATCHEL_DELIVERY_BUDGET_SECONDS", "2")
    # Finalize and Fail record and queue; they never call the receiver.
    done = finished(satchel, receiver.url, link={})
    failed = finished(satchel, receiver.url, key="acme/hooks/missing.txt")
    assert (done["state"], failed["state"]) == ("DONE", "FAILED")
    assert receiver.received == []
    for download_id in (done["id"], failed["id"]):
        [record] = deliveries(download_id)
        assert (record.state, record.attempts, record.queued) == ("pending", 0, True)

    halt = threading.Event()
    source = poller(satchel.stack, halt)
    source.thread.start()
    try:
        assert receiver.wait_for(1, timeout=30)  # the deliver function now waits on the receiver
        cancelling = pending_download(receiver.url)
        started = time.monotonic()
        reply = satchel.call("DELETE", f"/downloads/{cancelling}")
        assert time.monotonic() - started < 1.0
        assert reply.status == 202
        started = time.monotonic()
        claim = satchel.call("POST", f"/links/{done['link']['token']}", user=None, headers=JSON)
        assert time.monotonic() - started < 1.0
        assert claim.status == 200
        # The attempt in flight ends at its budget, recorded; the receiver is still asleep.
        deadline = time.monotonic() + 30
        while not (cut := attempted(done["id"], failed["id"])):
            assert time.monotonic() < deadline, "no attempt ended"
            time.sleep(0.1)
        assert cut[0].last_error == "no answer within 2 s"
    finally:
        halt.set()
        source.thread.join(timeout=30)
    assert not source.thread.is_alive()


def attempted(*download_ids: str) -> list[Any]:
    return [record for download_id in download_ids for record in deliveries(download_id) if record.attempts]


def test_a_crash_between_done_and_the_queue_leaves_the_event_owed_to_cleanup(
    satchel: Satchel, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)
    injector = Injector(satchel.stack.table)
    injector.install()
    with injector.armed(Fault("sqs.SendMessage", "internal", step="app.finalize")) as arming:
        done = finished(satchel, receiver.url)
    assert injector.fired(arming) > 0
    assert done["state"] == "DONE"  # a notification never fails a finished download
    [record] = deliveries(done["id"])
    assert (record.state, record.queued) == ("pending", False)
    table = boto3.resource("dynamodb", region_name=REGION).Table(satchel.stack.table)
    item = table.get_item(Key=layout.download_key(done["id"]))["Item"]
    assert item["pending_effects"] == {"notify"}
    assert queue_counts(satchel.stack.deliveries_queue_url) == (0, 0)

    report = cleanup.run(Runtime.from_env(), clock.now() + EFFECTS_LEASE + timedelta(seconds=1))

    assert done["id"] in report.followed_up
    deliver_queued(satchel.stack)
    [call] = receiver.wait_for(1)
    assert verified(call)["type"] == "download.completed"
    assert call.headers["webhook-id"] == f"{done['id']}.completed"
    assert "pending_effects" not in table.get_item(Key=layout.download_key(done["id"]))["Item"]
    # A sweep later finds nothing owed: no second event.
    cleanup.run(Runtime.from_env(), clock.now() + 2 * EFFECTS_LEASE)
    assert deliver_queued(satchel.stack) == 0
    assert len(receiver.received) == 1


def test_the_deliveries_are_the_owners_to_see(satchel: Satchel, receiver: Receiver) -> None:
    done = finished(satchel, receiver.url)
    reply = satchel.call("GET", f"/downloads/{done['id']}/deliveries")
    assert reply.status == 200
    [item] = reply.json["items"]
    assert set(item) == {
        "event_id", "type", "state", "url", "attempts", "last_status", "last_error",
        "last_attempt_at", "next_attempt_at", "created_at",
    }  # fmt: skip
    assert (item["state"], item["attempts"], item["url"]) == ("pending", 0, receiver.url)
    assert "whsec_" not in reply.body.decode()
    assert satchel.call("GET", f"/downloads/{done['id']}/deliveries", "bob").status == 403
    assert satchel.call("GET", f"/downloads/{done['id']}/deliveries", "dave").status == 404
    assert satchel.call("GET", f"/downloads/{done['id']}/deliveries", "carol").status == 200
    assert satchel.call("GET", "/downloads/0123456789abcdef0123456789abcdef/deliveries").status == 404
    assert satchel.call("GET", f"/downloads/{done['id']}/deliveries", user=None).status == 401
    without = satchel.create({"keys": ["acme/hooks/a.txt"]})
    assert satchel.call("GET", f"/downloads/{without.json['id']}/deliveries").json == {"items": []}


def test_events_on_the_bus_carry_the_webhooks_payload(satchel: Satchel, receiver: Receiver) -> None:
    bus, sqs = boto3.client("events", region_name=REGION), boto3.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName="observed-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bus.put_rule(Name="observe", EventPattern=json.dumps({"source": [events.SOURCE]}))
    bus.put_targets(Rule="observe", Targets=[{"Id": "queue", "Arn": arn}])
    finished(satchel, receiver.url, client_reference="bus-ref")

    deliver_queued(satchel.stack)

    [message] = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]
    event = json.loads(message["Body"])
    assert (event["source"], event["detail-type"]) == ("satchel", "download.completed")
    [call] = receiver.wait_for(1)
    assert event["detail"] == verified(call)  # one payload, on the bus and in the webhook


def test_the_api_refuses_callbacks_it_may_not_make(satchel: Satchel) -> None:
    satchel.put_source("acme/ssrf.txt", b"x")
    for url in (
        "https://169.254.169.254/latest/meta-data/iam/",
        "https://10.0.0.5/x",
        "http://93.184.216.34/x",
    ):
        reply = satchel.create({"keys": ["acme/ssrf.txt"]}, callback_url=url)
        assert reply.status == 422, url
        assert reply.json["Code"] == "InvalidCallbackUrl"
    too_long = satchel.create({"keys": ["acme/ssrf.txt"]}, client_reference="r" * 257)
    assert too_long.status in (400, 422), too_long.body
    assert satchel.call("GET", "/downloads").json["items"] == []
    # A tenant with no signing secret (the test stack seeds acme's and globex's) may not ask.
    body = {"type": "zip", "params": {"keys": ["initech/a.txt"]}, "callback_url": "http://127.0.0.1:9/x"}
    with pytest.raises(WebhookSecretMissing):
        downloads.create(Runtime.from_env(), Principal("initech", "milton"), body)
