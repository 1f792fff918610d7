"""Downloads started by events: SQS messages, EventBridge events and S3 request manifests
go through the API's create path and checks, and a bad message never blocks the others."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.core import clients
from chalicelib.core.models import Download
from chalicelib.runtime import Runtime
from chalicelib.triggers import inbound as triggers
from tests.support.stack import Satchel


def sqs_event(*bodies: str) -> tuple[dict[str, Any], list[str]]:
    """An SQS batch as Lambda delivers it, each message with its own id."""
    ids = [str(uuid.uuid4()) for _ in bodies]
    records = [
        {
            "messageId": message_id,
            "receiptHandle": f"handle-{message_id}",
            "body": body,
            "attributes": {"ApproximateReceiveCount": "1"},
            "messageAttributes": {},
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:satchel-requests",
            "awsRegion": "us-east-1",
        }
        for message_id, body in zip(ids, bodies, strict=True)
    ]
    return {"Records": records}, ids


def request(tenant: str, user_id: str, params: dict[str, Any], **extra: Any) -> str:
    return json.dumps(
        {"tenant": tenant, "user_id": user_id, "request": {"type": "zip", "params": params, **extra}}
    )


def failures(client: Client, event: dict[str, Any]) -> list[str]:
    payload = client.lambda_.invoke("requests", event).payload
    return [item["itemIdentifier"] for item in payload["batchItemFailures"]]


def listed(satchel: Satchel, user: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = satchel.call("GET", "/downloads", user).json["items"]
    return items


def test_a_queued_request_becomes_a_finished_download_of_its_user(satchel: Satchel) -> None:
    satchel.put_source("acme/queued/report.txt", b"from the queue")
    event, _ = sqs_event(request("acme", "alice", {"keys": ["acme/queued/report.txt"]}, filename="q.zip"))

    assert failures(satchel.client, event) == []

    [download] = listed(satchel, "alice")
    assert (download["type"], download["filename"], download["user_id"]) == ("zip", "q.zip", "alice")
    assert satchel.wait(download["id"])["state"] == "DONE"
    assert listed(satchel, "bob") == []


def test_only_the_bad_messages_of_a_batch_are_reported(satchel: Satchel) -> None:
    satchel.put_source("acme/batch/a.txt", b"a")
    satchel.put_source("globex/batch/g.txt", b"g")
    event, ids = sqs_event(
        request("acme", "alice", {"keys": ["acme/batch/a.txt"]}),  # good
        "not json at all",
        json.dumps({"tenant": "acme", "user_id": "alice"}),  # no request
        request("acme", "mallory", {"keys": ["acme/batch/a.txt"]}),  # no such user
        request("acme", "bob", {"keys": ["globex/batch/g.txt"]}),  # another tenant's source
        request("acme", "bob", {"keys": []}),  # empty keys
        json.dumps({"tenant": "acme", "user_id": "bob", "request": {"type": "nope"}}),  # unknown type
        request("globex", "alice", {"keys": ["globex/batch/g.txt"]}),  # alice is not in globex
    )

    reported = failures(satchel.client, event)

    assert reported == ids[1:]
    [started] = listed(satchel, "alice")
    assert satchel.wait(started["id"])["state"] == "DONE"
    assert listed(satchel, "bob") == []
    assert listed(satchel, "dave") == []


def test_a_message_delivered_twice_starts_one_download(satchel: Satchel) -> None:
    satchel.put_source("acme/twice.txt", b"once")
    event, _ = sqs_event(request("acme", "bob", {"keys": ["acme/twice.txt"]}))

    assert failures(satchel.client, event) == []
    assert failures(satchel.client, event) == []  # SQS delivers at least once

    [download] = listed(satchel, "bob")
    assert satchel.wait(download["id"], user="bob")["state"] == "DONE"


def test_a_service_principal_acts_without_a_key_within_its_tenant(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "SATCHEL_SERVICE_PRINCIPALS", json.dumps([{"tenant": "acme", "user_id": "exporter", "roles": []}])
    )
    satchel.put_source("acme/nightly.txt", b"nightly")
    satchel.put_source("globex/nightly.txt", b"not yours")
    event, ids = sqs_event(
        request("acme", "exporter", {"keys": ["acme/nightly.txt"]}),
        request("acme", "exporter", {"keys": ["globex/nightly.txt"]}),
        request("globex", "exporter", {"keys": ["globex/nightly.txt"]}),  # not a principal there
    )

    assert failures(satchel.client, event) == ids[1:]

    [download] = owned("acme", "exporter")
    assert download.params["keys"] == ["acme/nightly.txt"]
    assert owned("globex", "exporter") == []


def owned(tenant: str, user_id: str) -> list[Download]:
    found, _ = Runtime.from_env().downloads.list_owned(tenant, user_id, state=None, limit=100, cursor=None)
    return found


def every_download() -> list[dict[str, Any]]:
    table = clients.table(Runtime.from_env().settings.table)
    return [item for item in table.scan()["Items"] if item.get("sk") == "DOWNLOAD"]


def test_an_eventbridge_request_starts_a_download(satchel: Satchel) -> None:
    satchel.put_source("acme/evented.txt", b"from an event")
    detail = {
        "tenant": "acme",
        "user_id": "alice",
        "request": {"type": "zip", "params": {"keys": ["acme/evented.txt"]}},
    }
    event = satchel.client.events.generate_cw_event("satchel.requests", triggers.REQUESTED, detail, [])

    satchel.client.lambda_.invoke("events", event)
    satchel.client.lambda_.invoke("events", event)  # the same event again: no second download

    [download] = listed(satchel, "alice")
    assert satchel.wait(download["id"])["state"] == "DONE"


def test_a_rejected_event_is_logged_and_dropped(satchel: Satchel, capsys: pytest.CaptureFixture[str]) -> None:
    detail = {"tenant": "acme", "user_id": "alice", "request": {"type": "zip", "params": {"keys": []}}}
    event = satchel.client.events.generate_cw_event("satchel.requests", triggers.REQUESTED, detail, [])

    satchel.client.lambda_.invoke("events", event)

    assert listed(satchel, "alice") == []
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    [rejection] = [line for line in lines if line.get("message", "").startswith("rejected event")]
    assert "EmptyKeys" in rejection["message"]
    assert rejection["level"] == "WARNING"


def object_created(satchel: Satchel, key: str, bucket: str | None = None) -> dict[str, Any]:
    detail = {"bucket": {"name": bucket or satchel.stack.source_bucket}, "object": {"key": key}}
    return satchel.client.events.generate_cw_event("aws.s3", triggers.OBJECT_CREATED, detail, [])


def test_a_manifest_dropped_under_the_request_prefix_starts_a_download(satchel: Satchel) -> None:
    satchel.put_source("acme/manifested.txt", b"from a manifest")
    manifest = {"user_id": "bob", "request": {"type": "zip", "params": {"keys": ["acme/manifested.txt"]}}}
    satchel.put_source("requests/acme/nightly.json", json.dumps(manifest).encode())

    event = object_created(satchel, "requests/acme/nightly.json")
    satchel.client.lambda_.invoke("events", event)
    satchel.client.lambda_.invoke("events", event)  # redelivered: the same download

    [download] = listed(satchel, "bob")
    assert satchel.wait(download["id"], user="bob")["state"] == "DONE"


def test_manifests_act_only_for_the_tenant_of_their_prefix(satchel: Satchel) -> None:
    satchel.put_source("globex/theirs.txt", b"globex")
    impostor = {
        "tenant": "globex",
        "user_id": "dave",
        "request": {"type": "zip", "params": {"keys": ["globex/theirs.txt"]}},
    }
    satchel.put_source("requests/acme/impostor.json", json.dumps(impostor).encode())
    satchel.put_source("requests/acme/garbage.json", b"{not json")
    satchel.put_source("elsewhere/acme/x.json", json.dumps(impostor).encode())

    for key in ("requests/acme/impostor.json", "requests/acme/garbage.json", "elsewhere/acme/x.json"):
        satchel.client.lambda_.invoke("events", object_created(satchel, key))
    satchel.client.lambda_.invoke("events", object_created(satchel, "requests/acme/gone.json"))
    satchel.client.lambda_.invoke("events", object_created(satchel, "requests/acme/x.json", bucket="other"))

    assert listed(satchel, "dave") == []
    assert every_download() == []
