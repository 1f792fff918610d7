"""Idempotency-Key as the IETF draft has it: a retried create returns the first download; a
reused key with another body is 422, a retry while the first request is in flight 409, a
malformed key 400."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from chalicelib.core import observability
from chalicelib.core.models import Principal
from chalicelib.runtime import Runtime
from chalicelib.storage.idempotency import Claim, fingerprint
from satchel_local.stack import REGION
from tests.support.stack import Reply, Satchel, api_key_of

BODY = {"type": "zip", "params": {"keys": ["acme/idem.txt"]}}


def post(
    satchel: Satchel, key: str | None, body: Any = BODY, user: str = "alice", raw: str | None = None
) -> Reply:
    headers = {"Authorization": f"Bearer {api_key_of(user)}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    response = satchel.client.http.post("/downloads", headers=headers, body=raw or json.dumps(body))
    return Reply(response.status_code, dict(response.headers), response.body)


def executions(satchel: Satchel) -> int:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    return len(sfn.list_executions(stateMachineArn=satchel.stack.state_machine_arn)["executions"])


@pytest.fixture(autouse=True)
def source(satchel: Satchel) -> None:
    satchel.put_source("acme/idem.txt", b"once")


def test_same_key_and_body_return_the_same_download(satchel: Satchel) -> None:
    first = post(satchel, "order-42")
    assert first.status == 202
    assert "Idempotent-Replayed" not in first.headers
    satchel.wait(first.json["id"])
    # The same JSON, written differently, is the same request.
    again = post(satchel, "order-42", raw='{"params": {"keys": ["acme/idem.txt"]},   "type": "zip"}')
    assert again.status == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert again.json["id"] == first.json["id"]
    assert again.json["state"] == "DONE"  # the download as it is now
    assert len(satchel.call("GET", "/downloads").json["items"]) == 1
    assert executions(satchel) == 1


def test_same_key_with_another_body_is_422(satchel: Satchel) -> None:
    first = post(satchel, "order-43")
    other = post(satchel, "order-43", {**BODY, "filename": "other.zip"})
    assert other.status == 422
    assert other.headers["Content-Type"] == "application/problem+json"
    assert other.json["Code"] == "IdempotencyKeyReused"
    assert other.json["type"] == "https://satchel.dev/problems/IdempotencyKeyReused"
    satchel.wait(first.json["id"])
    assert executions(satchel) == 1


def test_keys_are_scoped_to_their_user(satchel: Satchel) -> None:
    mine = post(satchel, "shared-key", user="alice")
    theirs = post(satchel, "shared-key", user="bob")
    assert theirs.status == 202
    assert theirs.json["id"] != mine.json["id"]
    assert theirs.json["user_id"] == "bob"
    for reply, user in ((mine, "alice"), (theirs, "bob")):
        satchel.wait(reply.json["id"], user=user)


def test_without_a_key_every_post_creates(satchel: Satchel) -> None:
    ids = {post(satchel, None).json["id"] for _ in range(2)}
    assert len(ids) == 2
    for download_id in ids:
        satchel.wait(download_id)


def test_a_structured_field_string_is_the_same_key_as_its_bare_value(satchel: Satchel) -> None:
    first = post(satchel, '"order-44"')
    assert first.status == 202
    again = post(satchel, "order-44")
    assert (again.status, again.headers.get("Idempotent-Replayed")) == (202, "true")
    assert again.json["id"] == first.json["id"]
    escaped = post(satchel, '"say \\"hi\\""')  # the key: say "hi"
    assert escaped.status == 202
    assert post(satchel, 'say "hi"').json["id"] == escaped.json["id"]
    for reply in (first, escaped):
        satchel.wait(reply.json["id"])


def test_a_retry_while_the_first_request_is_in_flight_is_409_with_retry_after(satchel: Satchel) -> None:
    """The first request bound the key to its download but has not stored the download yet."""
    runtime = Runtime.from_env()
    claim = Claim(Principal("acme", "alice"), "in-flight", fingerprint(BODY))  # keys are per user
    assert runtime.idempotency.claim(claim, "f" * 32, 60) is None
    reply = post(satchel, "in-flight")
    assert reply.status == 409
    assert reply.json["Code"] == "IdempotencyKeyInUse"
    assert int(reply.headers["Retry-After"]) >= 1
    assert executions(satchel) == 0


@pytest.mark.parametrize(
    "key", ["", "x" * 256, "clé", "line\nbreak", '"unterminated', '"bad \\x escape"', '""']
)
def test_malformed_keys_are_400(satchel: Satchel, key: str) -> None:
    reply = post(satchel, key)
    assert reply.status == 400
    assert reply.json["Code"] == "InvalidIdempotencyKey"


def test_a_refused_request_does_not_burn_its_key(satchel: Satchel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SATCHEL_MAX_ACTIVE_PER_USER", "1")
    blocking = post(satchel, None)
    refused = post(satchel, "retry-me")
    if refused.status == 202:  # the first one finished already; nothing to show
        pytest.fail("the first download finished before the quota could be shown")
    assert refused.status == 429
    satchel.wait(blocking.json["id"])
    retried = post(satchel, "retry-me")
    assert retried.status == 202
    assert "Idempotent-Replayed" not in retried.headers
    satchel.wait(retried.json["id"])


def test_an_unexpected_error_before_the_start_releases_the_key_and_the_slot(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug between claiming the key and starting (here: recording the metric) answers a
    generic 500; the key is released, the download FAILED and its quota slot freed."""
    calls = {"n": 0}
    real = observability.record_created

    def broken_once(stage: str, download: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("unexpected")
        real(stage, download)

    monkeypatch.setattr(observability, "record_created", broken_once)
    failed = post(satchel, "after-a-bug")
    assert failed.status == 500
    assert failed.json["Code"] == "InternalError"
    assert "unexpected" not in failed.body.decode()
    assert executions(satchel) == 0
    assert Runtime.from_env().downloads.active_count("acme", "alice") == 0
    retried = post(satchel, "after-a-bug")
    assert retried.status == 202, retried.body  # not 409 "in flight" for a day
    assert "Idempotent-Replayed" not in retried.headers
    assert satchel.wait(retried.json["id"])["state"] == "DONE"
    listed = satchel.call("GET", "/downloads").json["items"]
    assert sorted((item["state"], (item["error"] or {}).get("code")) for item in listed) == [
        ("DONE", None),
        ("FAILED", "StartFailed"),
    ]
