"""Notifications end to end in the stack: the signed callback and the EventBridge event when a
download finishes, and the API's refusal of callbacks it cannot make."""

from __future__ import annotations

import json
from dataclasses import replace

import boto3
import pytest

from chalicelib.api import downloads
from chalicelib.core.errors import InvalidCallbackUrl
from chalicelib.notify import callbacks
from chalicelib.notify import dispatch as notify
from chalicelib.runtime import Runtime
from satchel_local.stack import REGION
from tests.support.receiver import Receiver, verified
from tests.support.stack import USERS, Satchel


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
