"""`download.expiring_unused`: the cleanup sweep announces, once, a DONE download no one has
fetched, SATCHEL_EXPIRING_UNUSED_SECONDS before it expires; one that was fetched (its URL,
or a link claimed) is never announced, and either still expires, and loses its file, only
at its expiry. Sweeps are run at chosen times, not waited for."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from chalicelib.api import downloads as api_downloads
from chalicelib.core import clients, clock
from chalicelib.notify import dispatch, events
from chalicelib.runtime import Runtime
from chalicelib.s3 import layout as artifacts
from chalicelib.storage import layout as keys
from chalicelib.storage.audit import Action
from chalicelib.storage.downloads import EFFECTS_LEASE, DownloadStore
from chalicelib.triggers import cleanup
from satchel_local.stack import REGION
from tests.support.receiver import Receiver, verified
from tests.support.stack import USERS, Satchel
from tests.support.webhooks import deliver_queued

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_sqs.client import SQSClient

JSON = {"Accept": "application/json"}
LEAD = timedelta(seconds=3600)  # the setting's default


@pytest.fixture
def bus_events() -> tuple[SQSClient, str]:
    """A queue that gets every Satchel event put on the bus."""
    bus, sqs = boto3.client("events", region_name=REGION), boto3.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName="observed-expiring")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bus.put_rule(Name="observe-expiring", EventPattern=json.dumps({"source": [events.SOURCE]}))
    bus.put_targets(Rule="observe-expiring", Targets=[{"Id": "queue", "Arn": arn}])
    return sqs, queue


def on_bus(observed: tuple[SQSClient, str]) -> list[tuple[str, str]]:
    """(detail-type, download id) of every event on the bus so far."""
    sqs, queue = observed
    found = []
    while messages := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            event = json.loads(message["Body"])
            data = event["detail"]["data"]
            found.append((event["detail-type"], data.get("id") or data.get("download_id")))
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    return found


def finished(satchel: Satchel, url: str, key: str, **extra: Any) -> dict[str, Any]:
    satchel.put_source(key, b"waiting to be fetched\n")
    created = satchel.create({"keys": [key]}, callback_url=url, **extra)
    assert created.status == 202, created.body
    done: dict[str, Any] = satchel.wait(created.json["id"])
    assert done["state"] == "DONE"
    if "link" in created.json:
        done["link"] = created.json["link"]
    return done


def artifact_exists(satchel: Satchel, download_id: str) -> bool:
    key = artifacts.artifact_key(download_id)
    listed = satchel.s3.list_objects_v2(Bucket=satchel.stack.artifact_bucket, Prefix=key)
    return any(item["Key"] == key for item in listed.get("Contents", []))


def expiry(download: dict[str, Any]) -> datetime:
    return clock.parse(download["expires_at"])


def webhooks(receiver: Receiver) -> dict[str, list[dict[str, Any]]]:
    """The verified payloads received, by webhook-id."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    for call in receiver.received:
        by_id.setdefault(call.headers["webhook-id"], []).append(verified(call))
    return by_id


def test_an_unfetched_download_is_announced_once_before_it_expires(
    satchel: Satchel, receiver: Receiver, bus_events: tuple[SQSClient, str]
) -> None:
    idle = finished(satchel, receiver.url, "acme/idle.txt", client_reference="idle-ref")
    fetched = finished(satchel, receiver.url, "acme/fetched.txt")
    linked = finished(satchel, receiver.url, "acme/linked.txt", link={"max_uses": 2})
    assert satchel.call("GET", f"/downloads/{fetched['id']}/url", headers=JSON).status == 200
    claimed = satchel.call("POST", f"/links/{linked['link']['token']}", user=None, headers=JSON)
    assert claimed.status == 200, claimed.body
    runtime = Runtime.from_env()
    ids = {idle["id"], fetched["id"], linked["id"]}
    warn_at = max(expiry(download) for download in (idle, fetched, linked)) - LEAD

    assert cleanup.run(runtime, warn_at - timedelta(minutes=5)).warned == []  # not yet
    report = cleanup.run(runtime, warn_at + timedelta(seconds=1))
    assert report.warned == [idle["id"]]
    assert report.expired == []
    assert cleanup.run(runtime, warn_at + timedelta(seconds=2)).warned == []  # once
    assert cleanup.run(runtime, expiry(idle) - timedelta(seconds=5)).warned == []
    assert all(artifact_exists(satchel, download_id) for download_id in ids)
    assert satchel.call("GET", f"/downloads/{idle['id']}").json["state"] == "DONE"

    deliver_queued(satchel.stack)
    received = webhooks(receiver)
    [warning] = received.pop(f"{idle['id']}.expiring_unused")
    assert warning["type"] == events.EXPIRING_UNUSED
    assert warning["timestamp"] == clock.iso(expiry(idle) - LEAD)
    assert warning["data"]["id"] == idle["id"]
    assert warning["data"]["state"] == "DONE"
    assert warning["data"]["expires_at"] == idle["expires_at"]
    assert warning["data"]["client_reference"] == "idle-ref"
    assert not any(webhook_id.endswith(".expiring_unused") for webhook_id in received)
    assert [about for kind, about in on_bus(bus_events) if kind == events.EXPIRING_UNUSED] == [idle["id"]]
    types = sorted(
        item["type"] for item in satchel.call("GET", f"/downloads/{idle['id']}/deliveries").json["items"]
    )
    assert types == [events.COMPLETED, events.EXPIRING_UNUSED]

    # Still expires, and loses its file, at its expiry: not at the warning.
    later = max(expiry(download) for download in (idle, fetched, linked)) + timedelta(seconds=1)
    report = cleanup.run(runtime, later)
    assert sorted(report.expired) == sorted(ids)
    assert report.warned == []
    assert not any(artifact_exists(satchel, download_id) for download_id in ids)
    deliver_queued(satchel.stack)
    received = webhooks(receiver)
    assert len(received[f"{idle['id']}.expiring_unused"]) == 1
    assert received[f"{idle['id']}.expired"][0]["data"]["state"] == "EXPIRED"
    assert [about for kind, about in on_bus(bus_events) if kind == events.EXPIRING_UNUSED] == []


def test_a_lead_of_zero_announces_nothing(
    satchel: Satchel, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, bus_events: tuple[SQSClient, str]
) -> None:
    monkeypatch.setenv("SATCHEL_EXPIRING_UNUSED_SECONDS", "0")
    idle = finished(satchel, receiver.url, "acme/idle-off.txt")
    runtime = Runtime.from_env()
    assert runtime.settings.expiring_unused_seconds == 0

    for before in (LEAD, timedelta(seconds=5)):
        report = cleanup.run(runtime, expiry(idle) - before)
        assert (report.warned, report.expired) == ([], [])
    assert cleanup.run(runtime, expiry(idle) + timedelta(seconds=1)).expired == [idle["id"]]

    deliver_queued(satchel.stack)
    assert sorted(webhooks(receiver)) == [f"{idle['id']}.completed", f"{idle['id']}.expired"]
    assert events.EXPIRING_UNUSED not in {kind for kind, _ in on_bus(bus_events)}


class UnwritableFetches(DownloadStore):
    """A store whose note of a fetch fails, as DynamoDB may."""

    def record_fetched(self, download_id: str, when: datetime) -> None:
        raise ConnectionError("DynamoDB did not answer")


def test_the_first_fetch_is_noted_once_and_a_failure_to_note_it_fails_nothing(
    satchel: Satchel, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    done = finished(satchel, receiver.url, "acme/noted.txt")
    base = Runtime.from_env()
    broken = replace(base, downloads=UnwritableFetches(clients.table(base.settings.table)))

    handed = api_downloads.file_url(broken, USERS["alice"], done["id"], 60, Action.FETCHED_URL)
    assert handed.url
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any(
        entry.get("message") == f"could not note that download {done['id']} was fetched"
        and entry.get("exception_name") == "ConnectionError"
        for entry in logged
    )
    assert base.downloads.require(done["id"]).first_fetched_at is None

    assert satchel.call("GET", f"/downloads/{done['id']}/url", headers=JSON).status == 200
    first = base.downloads.require(done["id"]).first_fetched_at
    assert first is not None
    assert satchel.call("GET", f"/downloads/{done['id']}/url", headers=JSON).status == 200
    assert base.downloads.require(done["id"]).first_fetched_at == first


@pytest.mark.parametrize("when", ["in the same sweep", "before the next sweep"])
def test_a_fetch_after_the_warning_was_claimed_stops_it(
    satchel: Satchel,
    receiver: Receiver,
    bus_events: tuple[SQSClient, str],
    monkeypatch: pytest.MonkeyPatch,
    when: str,
) -> None:
    """The sweep claims the warning while no one has fetched the download; the owner fetches
    it before the warning is sent (between the claim and the follow-up, or after a sweep that
    failed to send it and left it owed): no warning is sent, and none is owed after."""
    idle = finished(satchel, receiver.url, f"acme/raced-{when[:6]}.txt")
    runtime = Runtime.from_env()
    warn_at = expiry(idle) - LEAD + timedelta(seconds=1)
    claim = DownloadStore.claim_unused_warning

    def fetch() -> None:
        assert satchel.call("GET", f"/downloads/{idle['id']}/url", headers=JSON).status == 200

    if when == "in the same sweep":

        def claimed_then_fetched(self: DownloadStore, *args: Any, **kwargs: Any) -> Any:
            taken = claim(self, *args, **kwargs)
            fetch()
            return taken

        monkeypatch.setattr(DownloadStore, "claim_unused_warning", claimed_then_fetched)
        report = cleanup.run(runtime, warn_at)
        assert report.warned == [idle["id"]]  # claimed: it was unfetched then
    else:

        def unsent(*_: Any) -> None:
            raise ConnectionError("EventBridge did not answer")

        sent = dispatch.expiring_unused
        monkeypatch.setattr(dispatch, "expiring_unused", unsent)
        assert cleanup.run(runtime, warn_at).failed == [idle["id"]]  # claimed, left owed
        monkeypatch.setattr(dispatch, "expiring_unused", sent)
        fetch()
        cleanup.run(runtime, warn_at + EFFECTS_LEASE + timedelta(seconds=1))  # does what is owed

    record = clients.table(satchel.stack.table).get_item(Key=keys.download_key(idle["id"]))["Item"]
    assert "pending_effects" not in record, record  # nothing left owed
    cleanup.run(runtime, expiry(idle) - timedelta(seconds=5))
    deliver_queued(satchel.stack)
    assert sorted(webhooks(receiver)) == [f"{idle['id']}.completed"]
    assert events.EXPIRING_UNUSED not in {kind for kind, _ in on_bus(bus_events)}
