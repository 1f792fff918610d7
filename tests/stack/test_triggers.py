"""Downloads started by events: SQS messages, EventBridge events and S3 request manifests
go through the API's create path and checks, and a bad message never blocks the others.
Each acts only for whom its sender may act for, never as a tenant admin unless a service
principal, and the audit trail records where it came from."""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import pytest
import requests
from chalice.test import Client

from chalicelib.core import clients
from chalicelib.core.models import Download
from chalicelib.runtime import Runtime
from chalicelib.storage.audit import AuditLog
from chalicelib.triggers import inbound as triggers
from satchel_local.stack import MOTO_SENDER_ID
from tests.support.stack import Satchel


def sqs_event(*bodies: str, sender: str = MOTO_SENDER_ID) -> tuple[dict[str, Any], list[str]]:
    """An SQS batch as Lambda delivers it, each message with its own id, all from `sender`
    (the local stack and the tests bind moto's sender to the demo tenants)."""
    ids = [str(uuid.uuid4()) for _ in bodies]
    records = [
        {
            "messageId": message_id,
            "receiptHandle": f"handle-{message_id}",
            "body": body,
            "attributes": {"ApproximateReceiveCount": "1", "SenderId": sender},
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


def request_event(satchel: Satchel, tenant: str, detail: dict[str, Any]) -> dict[str, Any]:
    """A request event as the request bus's rule hands it over, from `tenant`'s source."""
    return satchel.client.events.generate_cw_event(
        f"satchel.requests.{tenant}", triggers.REQUESTED, detail, []
    )


def rejections(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The messages of the triggers' "rejected ..." log lines so far."""
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return [line["message"] for line in lines if line.get("message", "").startswith("rejected")]


def test_an_eventbridge_request_starts_a_download(satchel: Satchel) -> None:
    satchel.put_source("acme/evented.txt", b"from an event")
    detail = {
        "tenant": "acme",  # may be left out: the source names the tenant
        "user_id": "alice",
        "request": {"type": "zip", "params": {"keys": ["acme/evented.txt"]}},
    }
    event = request_event(satchel, "acme", detail)

    satchel.client.lambda_.invoke("events", event)
    satchel.client.lambda_.invoke("events", event)  # the same event again: no second download

    [download] = listed(satchel, "alice")
    assert satchel.wait(download["id"])["state"] == "DONE"


def test_a_rejected_event_is_logged_and_dropped(satchel: Satchel, capsys: pytest.CaptureFixture[str]) -> None:
    detail = {"tenant": "acme", "user_id": "alice", "request": {"type": "zip", "params": {"keys": []}}}
    event = request_event(satchel, "acme", detail)

    satchel.client.lambda_.invoke("events", event)

    assert listed(satchel, "alice") == []
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    [rejection] = [line for line in lines if line.get("message", "").startswith("rejected event")]
    assert "EmptyKeys" in rejection["message"]
    assert rejection["level"] == "WARNING"


def object_created(satchel: Satchel, key: str, bucket: str | None = None) -> dict[str, Any]:
    detail = {"bucket": {"name": bucket or satchel.stack.source_bucket}, "object": {"key": key}}
    return satchel.client.events.generate_cw_event("aws.s3", triggers.OBJECT_CREATED, detail, [])


def test_a_manifest_dropped_in_a_users_folder_starts_a_download_for_that_user(satchel: Satchel) -> None:
    satchel.put_source("acme/manifested.txt", b"from a manifest")
    manifest = {"request": {"type": "zip", "params": {"keys": ["acme/manifested.txt"]}}}
    satchel.put_source("requests/acme/bob/nightly.json", json.dumps(manifest).encode())

    event = object_created(satchel, "requests/acme/bob/nightly.json")
    satchel.client.lambda_.invoke("manifests", event)
    satchel.client.lambda_.invoke("manifests", event)  # redelivered: the same download

    [download] = listed(satchel, "bob")
    assert satchel.wait(download["id"], user="bob")["state"] == "DONE"


def test_manifests_act_only_for_the_user_of_their_folder(
    satchel: Satchel, capsys: pytest.CaptureFixture[str]
) -> None:
    satchel.put_source("globex/theirs.txt", b"globex")
    satchel.put_source("acme/mine.txt", b"acme")
    theirs = {"type": "zip", "params": {"keys": ["globex/theirs.txt"]}}
    mine = {"type": "zip", "params": {"keys": ["acme/mine.txt"]}}
    manifests = {
        # In bob's folder, naming another tenant or another user: refused.
        "requests/acme/bob/impostor.json": {"tenant": "globex", "user_id": "dave", "request": theirs},
        "requests/acme/bob/as-alice.json": {"user_id": "alice", "request": mine},
        # Directly under the tenant: no user to act for, whatever it names.
        "requests/acme/no-user.json": {"user_id": "bob", "request": mine},
        # A folder that is no user of the tenant.
        "requests/acme/mallory/x.json": {"request": mine},
        "requests/acme/bob/garbage.json": None,
        "elsewhere/acme/bob/x.json": {"request": mine},
    }
    for key, body in manifests.items():
        satchel.put_source(key, b"{not json" if body is None else json.dumps(body).encode())
    capsys.readouterr()

    for key in manifests:
        satchel.client.lambda_.invoke("manifests", object_created(satchel, key))
    satchel.client.lambda_.invoke("manifests", object_created(satchel, "requests/acme/bob/gone.json"))
    satchel.client.lambda_.invoke(
        "manifests", object_created(satchel, "requests/acme/bob/x.json", bucket="other")
    )

    assert every_download() == []
    codes = [message.split(": ", 1)[1].split(" ", 1)[0] for message in rejections(capsys)]
    assert codes == [
        "SenderNotAllowed",
        "SenderNotAllowed",
        "SenderNotAllowed",
        "UnknownPrincipal",
        "MalformedRequest",
    ]


def test_a_request_event_acts_only_within_the_tenant_of_its_source(
    satchel: Satchel, capsys: pytest.CaptureFixture[str]
) -> None:
    satchel.put_source("globex/theirs.txt", b"globex")
    request = {"type": "zip", "params": {"keys": ["globex/theirs.txt"]}}
    capsys.readouterr()

    # acme's sender naming globex's user: the source binds it to acme.
    impostor = request_event(satchel, "acme", {"tenant": "globex", "user_id": "dave", "request": request})
    satchel.client.lambda_.invoke("events", impostor)
    # From acme's source, globex's user is nobody in acme.
    satchel.client.lambda_.invoke(
        "events", request_event(satchel, "acme", {"user_id": "dave", "request": request})
    )
    # A source naming no tenant (the old `satchel.requests`), or not a request source at all.
    for source in ("satchel.requests", "satchel.requests.", "aws.s3", "satchel.requests.ACME"):
        event = satchel.client.events.generate_cw_event(
            source, triggers.REQUESTED, {"tenant": "globex", "user_id": "dave", "request": request}, []
        )
        satchel.client.lambda_.invoke("events", event)

    assert every_download() == []
    codes = [message.split(": ", 1)[1].split(" ", 1)[0] for message in rejections(capsys)]
    assert codes == ["SenderNotAllowed", "UnknownPrincipal"] + ["SenderNotAllowed"] * 4


def test_a_request_on_the_default_bus_reaches_no_function(satchel: Satchel) -> None:
    """Only the request bus has a rule for requests: one put on the default bus, where any
    principal of the account with events:PutEvents may put events, is never delivered."""
    events = boto3.client("events")
    sqs = boto3.client("sqs")
    entry = {
        "Source": "satchel.requests.acme",
        "DetailType": triggers.REQUESTED,
        "Detail": json.dumps(
            {"user_id": "alice", "request": {"type": "zip", "params": {"keys": ["acme/x"]}}}
        ),
    }

    events.put_events(Entries=[entry])  # the default bus
    assert (
        sqs.receive_message(QueueUrl=satchel.stack.events_queue_url, WaitTimeSeconds=0).get("Messages")
        is None
    )
    assert (
        sqs.receive_message(QueueUrl=satchel.stack.manifests_queue_url, WaitTimeSeconds=0).get("Messages")
        is None
    )

    events.put_events(Entries=[{**entry, "EventBusName": satchel.stack.request_bus}])
    [delivered] = sqs.receive_message(QueueUrl=satchel.stack.events_queue_url, WaitTimeSeconds=0)["Messages"]
    assert json.loads(delivered["Body"])["source"] == "satchel.requests.acme"


def test_an_unknown_queue_sender_is_refused(satchel: Satchel, capsys: pytest.CaptureFixture[str]) -> None:
    satchel.put_source("acme/queued.txt", b"q")
    good = request("acme", "alice", {"keys": ["acme/queued.txt"]})
    unknown, unknown_ids = sqs_event(good, sender="AROASTRANGERROLE:session")
    missing, missing_ids = sqs_event(good, sender="")
    capsys.readouterr()

    assert failures(satchel.client, unknown) == unknown_ids
    assert failures(satchel.client, missing) == missing_ids

    assert every_download() == []
    assert [message.split(": ", 1)[1].split(" ", 1)[0] for message in rejections(capsys)] == [
        "SenderNotAllowed",
        "SenderNotAllowed",
    ]


def test_a_queue_sender_acts_only_for_the_tenants_and_users_it_is_bound_to(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    satchel.put_source("acme/queued.txt", b"q")
    satchel.put_source("globex/queued.txt", b"g")
    monkeypatch.setenv(
        "SATCHEL_QUEUE_SENDERS", json.dumps({"AROAETLROLE": ["acme/alice"], "AIDAOPS": ["globex"]})
    )
    event, ids = sqs_event(
        request("acme", "alice", {"keys": ["acme/queued.txt"]}),
        request("acme", "bob", {"keys": ["acme/queued.txt"]}),  # another user of its tenant
        request("globex", "dave", {"keys": ["globex/queued.txt"]}),  # another tenant
        sender="AROAETLROLE:nightly-run",  # a session of the bound role
    )
    ops, ops_ids = sqs_event(
        request("globex", "dave", {"keys": ["globex/queued.txt"]}),  # any user of its tenant
        request("acme", "alice", {"keys": ["acme/queued.txt"]}),
        sender="AIDAOPS",
    )

    assert failures(satchel.client, event) == ids[1:]
    assert failures(satchel.client, ops) == ops_ids[1:]

    assert [d.user_id for d in owned("acme", "alice")] == ["alice"]
    assert owned("acme", "bob") == []
    assert [d.user_id for d in owned("globex", "dave")] == ["dave"]


def audit_request(tenant: str, user_id: str) -> dict[str, Any]:
    return {"tenant": tenant, "user_id": user_id, "request": {"type": "audit", "params": {}}}


def test_a_trigger_never_acts_as_a_tenant_admin(satchel: Satchel, capsys: pytest.CaptureFixture[str]) -> None:
    """carol is acme's admin: through the API she may export the audit trail, which only an
    admin may; a queue message, a request event or a manifest naming her may not."""
    assert satchel.call("POST", "/downloads", "carol", {"type": "audit", "params": {}}).status == 202
    capsys.readouterr()

    event, ids = sqs_event(json.dumps(audit_request("acme", "carol")))
    assert failures(satchel.client, event) == ids
    satchel.client.lambda_.invoke("events", request_event(satchel, "acme", audit_request("acme", "carol")))
    satchel.put_source("requests/acme/carol/audit.json", json.dumps(audit_request("acme", "carol")).encode())
    satchel.client.lambda_.invoke("manifests", object_created(satchel, "requests/acme/carol/audit.json"))

    assert [message.split(": ", 1)[1].split(" ", 1)[0] for message in rejections(capsys)] == ["Forbidden"] * 3
    [by_api] = owned("acme", "carol")  # the API's own, nothing more
    assert satchel.wait(by_api.id, "carol")["state"] == "DONE"


def test_a_service_principal_keeps_the_admin_role_it_is_configured_with(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "SATCHEL_SERVICE_PRINCIPALS", json.dumps([{"tenant": "acme", "user_id": "carol", "roles": ["admin"]}])
    )
    event, _ = sqs_event(json.dumps(audit_request("acme", "carol")))

    assert failures(satchel.client, event) == []

    [download] = owned("acme", "carol")
    assert download.type == "audit"
    assert satchel.wait(download.id, "carol")["state"] == "DONE"


def test_the_audit_trail_records_where_each_download_came_from(satchel: Satchel) -> None:
    satchel.put_source("acme/sourced.txt", b"s")
    params = {"keys": ["acme/sourced.txt"]}
    by_api = satchel.create(params).json["id"]
    queued, [message_id] = sqs_event(request("acme", "alice", params, filename="queued.zip"))
    assert failures(satchel.client, queued) == []
    event = request_event(satchel, "acme", {"user_id": "alice", "request": {"type": "zip", "params": params}})
    satchel.client.lambda_.invoke("events", event)
    satchel.put_source(
        "requests/acme/alice/m.json", json.dumps({"request": {"type": "zip", "params": params}}).encode()
    )
    etag = boto3.client("s3").head_object(
        Bucket=satchel.stack.source_bucket, Key="requests/acme/alice/m.json"
    )["ETag"]
    satchel.client.lambda_.invoke("manifests", object_created(satchel, "requests/acme/alice/m.json"))

    created = [
        e
        for e in AuditLog(clients.table(satchel.stack.table)).events("acme")
        if e.action == "download.created"
    ]
    assert [e.actor for e in created] == ["user:alice"] * 4
    assert created[0].download_id == by_api
    assert [e.details["source"] for e in created] == [
        {"kind": "api"},
        {"kind": "queue", "queue": "satchel-requests", "sender": MOTO_SENDER_ID, "message_id": message_id},
        {
            "kind": "bus",
            "bus": satchel.stack.request_bus,
            "event_id": event["id"],
            "source": "satchel.requests.acme",
        },
        {
            "kind": "manifest",
            "bucket": satchel.stack.source_bucket,
            "key": "requests/acme/alice/m.json",
            "etag": etag,
        },
    ]
    for download in listed(satchel, "alice"):
        satchel.wait(download["id"])

    # The tenant's admin sees it in the audit export, in a column of its own.
    export = satchel.call("POST", "/downloads", "carol", {"type": "audit", "params": {"format": "ndjson"}})
    done = satchel.wait(export.json["id"], "carol")
    assert done["state"] == "DONE"
    location = satchel.call("GET", done["url"], "carol").headers["Location"]
    rows = [json.loads(line) for line in requests.get(location, timeout=30).content.splitlines()]
    sources = [row["source"] for row in rows if row["action"] == "download.created"]
    assert sources[:4] == [e.details["source"] for e in created]
    assert all("source" not in row["details"] for row in rows)
