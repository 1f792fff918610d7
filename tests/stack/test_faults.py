"""No fault leaves anything stuck.

Each test makes one AWS operation fail at one point (tests/support/faults.py: throttling, 500,
connection error, read timeout after the fact), lets the system react (botocore's retries,
the state machine's Retry, a client's retry of its request, the next cleanup sweep), and
then checks every invariant at once (`assert_nothing_stuck`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer
from botocore.retries import standard
from chalice.test import Client
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

from app import app
from chalicelib.api.downloads import new_id
from chalicelib.core import clients, clock
from chalicelib.core.models import ACTIVE_STATES, Download, State
from chalicelib.runtime import Runtime
from chalicelib.s3 import layout as artifacts
from chalicelib.storage import secrets
from chalicelib.storage.deliveries import DELIVERED, FAILED, PENDING
from chalicelib.storage.downloads import EFFECTS_LEASE
from chalicelib.triggers import cleanup
from chalicelib.triggers import inbound as triggers
from satchel_local import demodata, eventsources, lambdas
from satchel_local.stack import MOTO_SENDER_ID, REGION, Stack
from tests.support import faults
from tests.support.faults import CALLER, KINDS, Fault, Injector
from tests.support.receiver import serving, verified
from tests.support.stack import TERMINAL, Reply, Satchel, dummy_aws_environment, running_stack

SOURCE = "acme/faults/a.txt"
SOURCE_B = "acme/faults/b.txt"
# Deflated in 3 chunks of 1 MiB: a Build short of time stops inside it after the first.
SOURCE_LARGE = "acme/faults/large.txt"
# Compressed already (random bytes, .jpg): stored as read in 3 chunks of 1 MiB, and a Build
# short of time stops inside it after the first as well.
SOURCE_LARGE_STORED = "acme/faults/large.jpg"
# What a 5xx answer or a download's error must never show: ARNs, the account, raw botocore
# text, a traceback.
_INTERNALS = re.compile(
    r"arn:aws|123456789012|botocore|ClientError|EndpointConnectionError|ReadTimeoutError|"
    r"Traceback|An error occurred \(|Could not connect|Read timeout",
)
_ACTIVE = {state.value for state in ACTIVE_STATES}
_PLAIN = TypeDeserializer()


class _FastSleep:
    """The ASL's Retry intervals (1 s, 2 s, 4 s) as 1/100 of them: the same retries, quickly."""

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(seconds / 100)


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[Stack, Injector]]:
    """One stack for the whole suite (provisioning is most of a test's time otherwise); each
    test checks the invariants for what it changed, against a snapshot taken before it."""
    with pytest.MonkeyPatch.context() as patch:
        dummy_aws_environment(patch)
        patch.setattr(retrier_decl, "time", _FastSleep)
        # botocore's backoff between its own attempts: none; the attempts themselves are real.
        patch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)
        with running_stack(patch) as stack:
            injector = Injector(stack.table, tables=(demodata.table_name(stack.stage),))
            s3 = boto3.client("s3", region_name=REGION)
            s3.put_object(Bucket=stack.source_bucket, Key=SOURCE, Body=b"fault injection\n" * 64)
            s3.put_object(Bucket=stack.source_bucket, Key=SOURCE_B, Body=b"second source\n" * 64)
            large = b"".join(b"%d large source line\n" % index for index in range(120_000))
            s3.put_object(Bucket=stack.source_bucket, Key=SOURCE_LARGE, Body=large)
            photo = random.Random(7).randbytes(2 * 1024 * 1024 + 512 * 1024)
            s3.put_object(
                Bucket=stack.source_bucket, Key=SOURCE_LARGE_STORED, Body=photo, ChecksumAlgorithm="CRC32"
            )
            yield stack, injector


@pytest.fixture
def injector(shared: tuple[Stack, Injector]) -> Injector:
    # Fresh clients for each test, as a new Lambda container has: botocore's retry quota
    # (a token bucket per client) drained by earlier tests' faults would cut retries short.
    clients.reset()
    secrets.forget_plaintexts()  # nor decrypted webhook secrets: its first signing asks KMS
    shared[1].install()
    return shared[1]


@pytest.fixture
def satchel(shared: tuple[Stack, Injector]) -> Iterator[Satchel]:
    with Client(app, stage_name="test") as client:
        yield Satchel(client, shared[0])


# -- the invariants -------------------------------------------------------------------------


def _items(satchel: Satchel) -> list[dict[str, Any]]:
    """The table's downloads, quota counters and idempotency keys (not audit or links): only
    the attributes the invariants read, so the scan stays cheap as the suite's table grows."""
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    arguments: dict[str, Any] = {
        "TableName": satchel.stack.table,
        "ConsistentRead": True,
        "FilterExpression": "begins_with(pk, :d) OR begins_with(pk, :q) OR begins_with(pk, :i)",
        "ProjectionExpression": "pk, id, #state, tenant, user_id, active, download_id, #error, callback_url",
        "ExpressionAttributeNames": {"#state": "state", "#error": "error"},
        "ExpressionAttributeValues": {
            ":d": {"S": "DOWNLOAD#"},
            ":q": {"S": "QUOTA#"},
            ":i": {"S": "IDEMPOTENCY#"},
        },
    }
    found: list[dict[str, Any]] = []
    while True:
        page = dynamodb.scan(**arguments)
        found.extend(
            {name: _PLAIN.deserialize(value) for name, value in item.items()} for item in page["Items"]
        )
        if "LastEvaluatedKey" not in page:
            return found
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _execution_status(satchel: Satchel, download_id: str) -> str | None:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = satchel.stack.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{download_id}"
    try:
        status: str = sfn.describe_execution(executionArn=arn)["status"]
    except sfn.exceptions.ExecutionDoesNotExist:
        return None
    return status


def settle(satchel: Satchel, timeout: float = 60) -> None:
    """Wait until no execution runs and no handler is busy: the system has done what it will."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    deadline = time.monotonic() + timeout
    while sfn.list_executions(stateMachineArn=satchel.stack.state_machine_arn, statusFilter="RUNNING")[
        "executions"
    ]:
        assert time.monotonic() < deadline, "an execution is still running"
        time.sleep(0.05)
    assert lambdas.wait_idle(timeout=timeout)


@dataclass(frozen=True)
class Snapshot:
    """What the table held before a test: its checks look only at what the test changed."""

    downloads: frozenset[str]
    keys: frozenset[str]
    quota_gaps: dict[str, int]  # quota count minus PENDING+RUNNING downloads, per owner

    @classmethod
    def take(cls, satchel: Satchel) -> Snapshot:
        items = _items(satchel)
        return cls(
            frozenset(item["id"] for item in items if item["pk"].startswith("DOWNLOAD#")),
            frozenset(item["pk"] for item in items if item["pk"].startswith("IDEMPOTENCY#")),
            _quota_gaps(items),
        )


def _quota_gaps(items: list[dict[str, Any]]) -> dict[str, int]:
    gaps: dict[str, int] = {}
    for item in items:
        if item["pk"].startswith("QUOTA#"):
            gaps[item["pk"]] = gaps.get(item["pk"], 0) + int(item["active"])
        elif item["pk"].startswith("DOWNLOAD#") and item["state"] in _ACTIVE:
            owner = f"QUOTA#{item['tenant']}#{item['user_id']}"
            gaps[owner] = gaps.get(owner, 0) - 1
    return {owner: gap for owner, gap in gaps.items() if gap}


def assert_nothing_stuck(satchel: Satchel, before: Snapshot, replies: list[Reply]) -> None:
    """Every invariant, checked once the system has settled (`settle`)."""
    settle(satchel)
    items = _items(satchel)
    downloads = {item["id"]: item for item in items if item["pk"].startswith("DOWNLOAD#")}
    new = {
        download_id: item for download_id, item in downloads.items() if download_id not in before.downloads
    }
    # 1. Nothing non-terminal without a running execution (cleanup's deadline is a backstop only).
    for download_id, item in new.items():
        if item["state"] in _ACTIVE:
            assert _execution_status(satchel, download_id) == "RUNNING", (download_id, item["state"])
    # 2. Each user's quota count is their PENDING + RUNNING downloads.
    assert _quota_gaps(items) == before.quota_gaps, "a quota count drifted from the active downloads"
    # 3. An Idempotency-Key is released, or bound to a download whose workflow was started.
    for item in items:
        if item["pk"].startswith("IDEMPOTENCY#") and item["pk"] not in before.keys:
            bound = item["download_id"]
            assert bound in downloads, f"a key is bound to {bound}, which was never stored"
            assert _execution_status(satchel, bound) is not None, f"a key replays {bound}, never started"
    # 4. A finished download leaves no upload and no temporary object; only DONE keeps its artifact.
    uploads = {artifacts.owner_of(upload["Key"]) for upload in satchel.open_uploads()}
    objects = satchel.artifact_objects()
    for download_id, item in new.items():
        if item["state"] in TERMINAL:
            assert download_id not in uploads, f"{item['state']} download {download_id} has an open upload"
            leftovers = [key for key in objects if key.startswith(artifacts.temporary_prefix(download_id))]
            assert leftovers == [], (item["state"], leftovers)
            if item["state"] != "DONE":
                assert artifacts.artifact_key(download_id) not in objects, item["state"]
        message = str((item.get("error") or {}).get("message", ""))
        assert not _INTERNALS.search(message), f"error.message shows AWS internals: {message}"
    # 6. A webhook owed is queued, or still owed to the next sweep, which queues it.
    told = [key for key, item in new.items() if item["state"] in TERMINAL and item.get("callback_url")]
    runtime = Runtime.from_env()
    if not all(_queued(runtime, download_id) for download_id in told):
        cleanup.run(runtime, clock.now() + EFFECTS_LEASE + timedelta(seconds=1))
    lost = [download_id for download_id in told if not _queued(runtime, download_id)]
    assert not lost, f"the webhooks of {lost} are lost"
    # 5. No 5xx shows AWS internals, and every 5xx has a stable Code.
    for reply in replies:
        if reply.status >= 500:
            assert isinstance(reply.json, dict), reply.body
            assert reply.json.get("Code"), reply.body
            assert not _INTERNALS.search(reply.body.decode("utf-8", "replace")), reply.body


def _queued(runtime: Runtime, download_id: str) -> bool:
    return any(delivery.queued for delivery in runtime.deliveries.of_download(download_id))


# -- the scenarios: each drives one area, with the fault armed around the part under test ---

Armed = Callable[[], AbstractContextManager[Any]]
_unique = itertools.count()


def _until_accepted(call: Callable[[], Reply], replies: list[Reply], tries: int = 3) -> Reply:
    """A client's retry: again after a 5xx, 409 (key in flight) or 429, as the answer invites."""
    for _ in range(tries):
        reply = call()
        replies.append(reply)
        if reply.status < 500 and reply.status not in (409, 429):
            break
    return reply


def _create(
    satchel: Satchel,
    key: str | None = None,
    keys: tuple[str, ...] = (SOURCE,),
    params: dict[str, Any] | None = None,
    **extra: Any,
) -> Reply:
    body = {"type": "zip", "params": {"keys": list(keys), **(params or {})}, **extra}
    return satchel.call("POST", "/downloads", body=body, headers={"Idempotency-Key": key} if key else {})


def scenario_create(satchel: Satchel, faulted: Armed, replies: list[Reply]) -> None:
    """POST with an Idempotency-Key; the client retries the same request after a refusal."""
    key = f"create-{next(_unique)}"
    with faulted():
        first = _create(satchel, key)
    replies.append(first)
    retried = _until_accepted(lambda: _create(satchel, key), replies)
    assert retried.status == 202, retried.body
    if first.status == 202:
        assert retried.json["id"] == first.json["id"]  # a replay, not a second download
    assert satchel.wait(retried.json["id"])["state"] == "DONE"


def _built(
    satchel: Satchel,
    faulted: Armed,
    replies: list[Reply],
    keys: tuple[str, ...],
    params: dict[str, Any] | None = None,
) -> Any:
    with faulted():
        reply = _create(satchel, keys=keys, params=params)
        replies.append(reply)
        assert reply.status == 202, reply.body
        return satchel.wait(reply.json["id"])


def scenario_download(satchel: Satchel, faulted: Armed, replies: list[Reply]) -> None:
    final = _built(satchel, faulted, replies, (SOURCE,))
    assert final["state"] == "DONE", final


def scenario_parallel_download(satchel: Satchel, faulted: Armed, replies: list[Reply]) -> None:
    final = _built(satchel, faulted, replies, (SOURCE, SOURCE_B))
    assert final["state"] == "DONE", final


def scenario_large_download(satchel: Satchel, faulted: Armed, replies: list[Reply]) -> None:
    final = _built(satchel, faulted, replies, (SOURCE_LARGE,))
    assert final["state"] == "DONE", final


def scenario_large_stored_download(satchel: Satchel, faulted: Armed, replies: list[Reply]) -> None:
    final = _built(satchel, faulted, replies, (SOURCE_LARGE_STORED,))
    assert final["state"] == "DONE", final


def scenario_tar_download(satchel: Satchel, faulted: Armed, replies: list[Reply]) -> None:
    final = _built(satchel, faulted, replies, (SOURCE, SOURCE_B), {"format": "tar.gz"})
    assert final["state"] == "DONE", final


def scenario_surveyed_download(satchel: Satchel, faulted: Armed, replies: list[Reply]) -> None:
    params = {"manifest": True, "on_missing": "skip"}
    final = _built(satchel, faulted, replies, (SOURCE, SOURCE_B), params)
    assert final["state"] == "DONE", final


def scenario_export_in_runs(satchel: Satchel, faulted: Armed, replies: list[Reply]) -> None:
    """An export of two DynamoDB pages (~1.2 MB of rows), built in two runs (`small_segments`
    makes every run short of time)."""
    demodata.seed(satchel.stack.stage, "acme", 400, REGION, padding=3000)
    with faulted():
        reply = satchel.call(
            "POST", "/downloads", body={"type": "export", "params": {"index": "Transaction"}}
        )
        replies.append(reply)
        assert reply.status == 202, reply.body
        final = satchel.wait(reply.json["id"])
    assert final["state"] == "DONE", final
    assert final["progress"]["rows_done"] == 400


def scenario_failing_download(satchel: Satchel, faulted: Armed, replies: list[Reply]) -> None:
    final = _built(satchel, faulted, replies, (SOURCE, "acme/faults/missing.txt"))
    assert (final["state"], final["error"]["code"]) == ("FAILED", "SourceMissing"), final


def scenario_cancel(satchel: Satchel, faulted: Armed, replies: list[Reply]) -> None:
    download_id = _create(satchel).json["id"]
    with faulted():
        first = satchel.call("DELETE", f"/downloads/{download_id}")
    replies.append(first)
    if first.status >= 500:
        _until_accepted(lambda: satchel.call("DELETE", f"/downloads/{download_id}"), replies)
    assert satchel.wait(download_id)["state"] in {"CANCELLED", "DONE", "EXPIRED"}


def scenario_delete(satchel: Satchel, faulted: Armed, replies: list[Reply]) -> None:
    download_id = _create(satchel).json["id"]
    assert satchel.wait(download_id)["state"] == "DONE"
    with faulted():
        first = satchel.call("DELETE", f"/downloads/{download_id}")
    replies.append(first)
    final = (
        first
        if first.status < 500
        else _until_accepted(lambda: satchel.call("DELETE", f"/downloads/{download_id}"), replies)
    )
    assert final.status == 204, final.body
    assert satchel.call("GET", f"/downloads/{download_id}").json["state"] == "EXPIRED"


def scenario_link(satchel: Satchel, faulted: Armed, replies: list[Reply]) -> None:
    """A read, then a claim: a fault in either is a clean 5xx and a retry gets the file; the
    claim's event is best-effort (a fault there still answers 303)."""
    created = _create(satchel, link={"max_uses": 5})
    token = created.json["link"]["token"]
    assert satchel.wait(created.json["id"])["state"] == "DONE"

    def read() -> Reply:
        return satchel.call("GET", f"/links/{token}", user=None)

    def claim() -> Reply:
        return satchel.call("POST", f"/links/{token}", user=None)

    with faulted():
        looked = read()
        first = claim()
    replies += [looked, first]
    if looked.status >= 500:
        assert _until_accepted(read, replies).status == 200
    final = first if first.status < 500 else _until_accepted(claim, replies)
    assert final.status == 303, final.body


def scenario_notified_download(satchel: Satchel, faulted: Armed, replies: list[Reply]) -> None:
    """A download that asked for a webhook: Finalize records the event and queues it; a
    fault there never fails the DONE download, and what it left owed, a sweep does
    (checked by `assert_nothing_stuck`)."""
    with faulted():
        reply = _create(satchel, callback_url="http://127.0.0.1:9/never-called")
        replies.append(reply)
        assert reply.status == 202, reply.body
        final = satchel.wait(reply.json["id"])
    assert final["state"] == "DONE", final


def scenario_deliver(satchel: Satchel, faulted: Armed, replies: list[Reply]) -> None:
    """The deliver function sends a queued webhook; a fault reading or updating its record
    fails the message (a batch item failure) and Lambda's next receipt delivers it: at least
    once, always with the one webhook-id."""
    with serving() as receiver:
        created = _create(satchel, callback_url=receiver.url)
        download_id = created.json["id"]
        assert satchel.wait(download_id)["state"] == "DONE"
        event_id = f"{download_id}.completed"
        body = json.dumps({"download_id": download_id, "event_id": event_id})
        message = {"MessageId": f"m-{next(_unique)}", "ReceiptHandle": "r", "Body": body, "Attributes": {}}
        arn = f"arn:aws:sqs:{REGION}:123456789012:satchel-deliveries"
        event = json.dumps({"Records": [eventsources.sqs_record(cast(Any, message), arn)]})

        def invoke() -> bool:
            """One receipt of the message; whether Lambda would receive it again."""
            payload, failed = lambdas.run_handler("app.deliver", "deliver", event, 60)
            return failed or bool(json.loads(payload)["batchItemFailures"])

        with faulted():
            again = invoke()
        if again:
            assert not invoke()
        calls = receiver.wait_for(1)
        assert calls
        assert {call.headers["webhook-id"] for call in calls} == {event_id}
        assert all(verified(call)["type"] == "download.completed" for call in calls)
        [delivery] = Runtime.from_env().deliveries.of_download(download_id)
        assert (delivery.state, delivery.last_status) == ("delivered", 204)


def scenario_trigger(satchel: Satchel, faulted: Armed, replies: list[Reply]) -> None:
    """An SQS message starts a download; a message reported failed is delivered again."""
    message = {"tenant": "acme", "user_id": "alice", "request": {"type": "zip", "params": {"keys": [SOURCE]}}}
    record = {
        "messageId": f"m-{next(_unique)}",
        "body": json.dumps(message),
        "attributes": {"SenderId": MOTO_SENDER_ID},  # bound to the test tenants
    }
    before = Snapshot.take(satchel).downloads
    with faulted():
        outcome = triggers.handle_messages(Runtime.from_env(), [record])
    if outcome["batchItemFailures"]:
        assert triggers.handle_messages(Runtime.from_env(), [record]) == {"batchItemFailures": []}
    started = [
        item
        for item in _items(satchel)
        if item["pk"].startswith("DOWNLOAD#") and item["id"] not in before and item["state"] != "FAILED"
    ]
    assert len(started) == 1, started  # one download for the message, however often it came
    assert satchel.wait(started[0]["id"])["state"] == "DONE"


def scenario_manifest(satchel: Satchel, faulted: Armed, replies: list[Reply]) -> None:
    """A manifest dropped in alice's folder starts a download; an invocation that failed (a
    start refused among them) is tried again by Lambda, and starts one download."""
    key = f"requests/acme/alice/fault-{next(_unique)}.json"
    satchel.put_source(key, json.dumps({"request": {"type": "zip", "params": {"keys": [SOURCE]}}}).encode())
    detail = {"bucket": {"name": satchel.stack.source_bucket}, "object": {"key": key}}
    event = {
        **satchel.client.events.generate_cw_event("aws.s3", triggers.OBJECT_CREATED, detail, []),
        "id": f"manifest-{next(_unique)}",
    }
    before = Snapshot.take(satchel).downloads

    def invoke() -> bool:
        _, failed = lambdas.run_handler("app.handle_manifest", "manifests", json.dumps(event), 60)
        return failed

    with faulted():
        failed = invoke()
    if failed:
        assert not invoke()  # EventBridge's retry of an invocation that failed
    started = [
        item
        for item in _items(satchel)
        if item["pk"].startswith("DOWNLOAD#") and item["id"] not in before and item["state"] != "FAILED"
    ]
    assert len(started) == 1, started  # one download for the manifest, however often it came
    assert satchel.wait(started[0]["id"])["state"] == "DONE"


def scenario_cleanup(satchel: Satchel, faulted: Armed, replies: list[Reply]) -> None:
    """An overdue PENDING download and a leftover upload of a FAILED one: a sweep removes
    both; if a fault breaks one sweep, the next one (the schedule's) finishes the work."""
    failed_id = _create(satchel, keys=("acme/faults/missing.txt",)).json["id"]
    satchel.wait(failed_id)
    satchel.s3.create_multipart_upload(
        Bucket=satchel.stack.artifact_bucket, Key=artifacts.artifact_key(failed_id)
    )
    runtime = Runtime.from_env()
    overdue = _pending_download(runtime)
    later = clock.later(runtime.settings.build_deadline_seconds + 60)
    # A failed sweep is what the next sweep recovers from.
    with faulted(), contextlib.suppress(Exception):
        cleanup.run(runtime, later)
    cleanup.run(Runtime.from_env(), later)
    assert runtime.downloads.require(overdue).state is State.FAILED


def _pending_download(runtime: Runtime) -> str:
    """A download recorded but never started (as after a lost start): cleanup's to time out."""
    orphan = Download(
        id=new_id(),
        type="zip",
        params={"keys": [SOURCE], "prefixes": [], "compression": "store"},
        filename="orphan.zip",
        tenant="acme",
        user_id="bob",
        state=State.PENDING,
        created_at=clock.iso(clock.now()),
        retention_seconds=3600,
    )
    runtime.downloads.create(orphan, 10)
    return orphan.id


# -- KMS: rotating a tenant's webhook secret (Encrypt), signing a delivery with it (Decrypt) --

_SECRET_PATH = "/tenant/webhook-secret"


def _signing(tenant: str = "acme") -> list[str]:
    """The secrets that sign the tenant's deliveries now: every stored ciphertext decrypts."""
    return Runtime.from_env().webhook_secrets.signing(tenant, clock.now())


def scenario_rotate_secret(satchel: Satchel, faulted: Armed, replies: list[Reply]) -> None:
    """carol, acme's admin, rotates its secret with a grace period (a record read, KMS Encrypt,
    one conditional write, the audit). A fault is a clean refusal after which the secret the
    receivers know still signs first (no half-written record, no secret nobody was shown);
    or the rotation happened and its answer shows the new secret. A retry rotates."""
    before = _signing()
    assert before, "the seeded tenant has a secret"

    def rotate() -> Reply:
        return satchel.call("POST", _SECRET_PATH, user="carol", body={"grace_seconds": 3600})

    with faulted():
        first = rotate()
    replies.append(first)
    if first.status == 201:
        assert _signing() == [first.json["secret"], before[0]]
        return
    assert first.status >= 400, first.body
    assert first.json["Code"], first.body
    assert not _INTERNALS.search(first.body.decode()), first.body
    assert _signing()[0] == before[0], "a refused rotation left a secret nobody was shown signing"
    retried = _until_accepted(rotate, replies)
    assert retried.status == 201, retried.body
    assert _signing() == [retried.json["secret"], before[0]]


def test_a_rotation_whose_audit_entry_fails_still_answers_the_secret_that_now_signs(
    satchel: Satchel, injector: Injector, capsys: pytest.CaptureFixture[str]
) -> None:
    """The secret's record is written, then the audit's (the caller's 2nd PutItem) fails on
    every attempt: a 5xx would leave a secret nobody was shown signing the tenant's webhooks.
    The answer is the secret; the entry goes to the log, whole."""
    before = _signing()
    with injector.armed(Fault("dynamodb.PutItem", "throttle", at=2, step=CALLER)) as arming:
        reply = satchel.call("POST", _SECRET_PATH, user="carol", body={"grace_seconds": 60})
    assert injector.fired(arming) == faults.ATTEMPTS
    assert reply.status == 201, reply.body
    assert _signing() == [reply.json["secret"], before[0]]
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    [entry] = [line["audit"] for line in lines if line.get("message") == "audit entry not written"]
    assert (entry["tenant"], entry["action"], entry["actor"]) == (
        "acme",
        "webhook_secret.rotated",
        "user:carol",
    )
    assert reply.json["secret"] not in out


def _notified(satchel: Satchel, url: str) -> str:
    """A DONE download whose webhook Finalize queued: its id. The deliveries queue and its
    dead letters are emptied first: no poller drains them here, and what earlier tests left
    would hide this test's messages (PurgeQueue is allowed once a minute only)."""
    for queue in (satchel.stack.deliveries_queue_url, satchel.stack.deliveries_dead_letter_queue_url):
        _drain(queue)
    created = _create(satchel, callback_url=url)
    assert created.status == 202, created.body
    assert satchel.wait(created.json["id"])["state"] == "DONE"
    return str(created.json["id"])


def _drain(queue: str, keep: Callable[[dict[str, Any]], bool] = lambda message: False) -> list[Any]:
    """Delete the queue's visible messages but those to `keep` (left in flight): the kept."""
    sqs = boto3.client("sqs", region_name=REGION)
    kept: list[Any] = []
    while received := sqs.receive_message(
        QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=600, AttributeNames=["All"]
    ).get("Messages", []):
        for message in received:
            if keep(json.loads(message["Body"])):
                kept.append(message)
            else:
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    return kept


def _receipt(satchel: Satchel, download_id: str) -> Callable[[], bool]:
    """One receipt of the download's message, as the deliveries queue hands it to Lambda (its
    real receipt handle: ChangeMessageVisibility acts on it); whether Lambda would receive it
    again (a batch item failure, or the invocation failed)."""
    sqs = boto3.client("sqs", region_name=REGION)
    url = satchel.stack.deliveries_queue_url
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    [found] = _drain(url, keep=lambda body: body.get("download_id") == download_id)
    event = json.dumps({"Records": [eventsources.sqs_record(found, arn)]})

    def invoke() -> bool:
        payload, failed = lambdas.run_handler("app.deliver", "deliver", event, 60)
        return failed or bool(json.loads(payload)["batchItemFailures"])

    return invoke


def _delivery(download_id: str) -> Any:
    [delivery] = Runtime.from_env().deliveries.of_download(download_id)
    return delivery


def scenario_deliver_retried(satchel: Satchel, faulted: Armed, replies: list[Reply]) -> None:
    """The receiver refuses the first attempt (503): the deliver function records it, puts the
    message back after its backoff (ChangeMessageVisibility) and a later receipt delivers.
    A fault anywhere there (KMS Decrypt included: an unsigned attempt is a failed one) leaves
    the record pending, with a next attempt once one was made, until a receipt delivers it;
    the receiver verifies every request with Standard Webhooks' own verifier."""
    with serving() as receiver:
        receiver.statuses.append(503)
        download_id = _notified(satchel, receiver.url)
        invoke = _receipt(satchel, download_id)
        with faulted():
            for _ in range(4):
                if not invoke():
                    break
                delivery = _delivery(download_id)
                assert delivery.state == PENDING, delivery
                assert delivery.attempts == 0 or delivery.next_attempt_at, delivery
        delivery = _delivery(download_id)
        assert (delivery.state, delivery.last_status) == (DELIVERED, 204), delivery
        calls = receiver.received
        assert calls
        assert {call.headers["webhook-id"] for call in calls} == {delivery.event_id}
        assert all(verified(call)["type"] == "download.completed" for call in calls)


def scenario_deliver_give_up(satchel: Satchel, faulted: Armed, replies: list[Reply]) -> None:
    """A receiver that never accepts, one attempt allowed: the next receipt gives up, the
    record ends failed and the message is in the dead-letter queue (alarmed), whatever
    fault came in between: never failed without the dead letter (which may come twice, when
    the record's write after it failed)."""
    with serving() as receiver, pytest.MonkeyPatch.context() as patch:
        receiver.statuses.extend([503] * 10)
        download_id = _notified(satchel, receiver.url)
        patch.setenv("SATCHEL_DELIVERY_MAX_ATTEMPTS", "1")
        invoke = _receipt(satchel, download_id)
        with faulted():
            for _ in range(4):
                if not invoke():
                    break
                assert _delivery(download_id).state == PENDING or _dead_letters(satchel, download_id)
        assert _delivery(download_id).state == FAILED
        assert _dead_letters(satchel, download_id), "given up on, and not in the dead-letter queue"


def _dead_letters(satchel: Satchel, download_id: str) -> int:
    """The dead-letter queue's messages for the download (left there, visible again at once)."""
    sqs = boto3.client("sqs", region_name=REGION)
    url = satchel.stack.deliveries_dead_letter_queue_url
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    return sum(json.loads(m["Body"])["download_id"] == download_id for m in received.get("Messages", []))


# -- the matrix: area -> (scenario, where its calls run, the operations it calls) -----------

Scenario = Callable[[Satchel, Armed, list[Reply]], None]

# Assemble's calls, in one run or handing on between runs (the same step either way).
_ASSEMBLE_CALLS = (
    "dynamodb.GetItem",
    "dynamodb.UpdateItem",
    "s3.CompleteMultipartUpload",
    "s3.CreateMultipartUpload",
    "s3.GetObject",
    "s3.HeadObject",
    "s3.ListMultipartUploads",
    "s3.PutObject",
    "s3.UploadPart",
)

AREAS: dict[str, tuple[Scenario, str, tuple[str, ...]]] = {
    "create": (
        scenario_create,
        CALLER,
        (
            "dynamodb.GetItem",
            "dynamodb.PutItem",
            "dynamodb.TransactWriteItems",
            "dynamodb.UpdateItem",  # the key's last use (at most one write per key per window)
            "stepfunctions.StartExecution",
        ),
    ),
    "prepare": (scenario_download, "app.prepare", ("dynamodb.UpdateItem", "s3.HeadObject", "s3.PutObject")),
    "build": (
        scenario_download,
        "app.build",
        (
            "dynamodb.GetItem",
            "dynamodb.UpdateItem",
            "s3.CompleteMultipartUpload",
            "s3.CreateMultipartUpload",
            "s3.GetObject",
            "s3.ListMultipartUploads",
            "s3.PutObject",
            "s3.UploadPart",
        ),
    ),
    "finalize": (
        scenario_notified_download,
        "app.finalize",
        (
            "dynamodb.GetItem",
            "dynamodb.PutItem",
            "dynamodb.TransactWriteItems",
            "dynamodb.UpdateItem",
            "events.PutEvents",
            "s3.DeleteObjects",
            "s3.ListObjectsV2",
            "sqs.SendMessage",
        ),
    ),
    "fail": (
        scenario_failing_download,
        "app.fail",
        (
            "dynamodb.GetItem",
            "dynamodb.TransactWriteItems",
            "dynamodb.UpdateItem",
            "events.PutEvents",
            "s3.DeleteObject",
            "s3.ListMultipartUploads",
            "s3.ListObjectsV2",
        ),
    ),
    # Build handing on after every member (`handing_on`): the faults land in its second run,
    # the one that goes on from the saved upload (`_AT`).
    "build_runs": (
        scenario_parallel_download,
        "app.build",
        (
            "dynamodb.GetItem",
            "dynamodb.UpdateItem",
            "s3.CompleteMultipartUpload",
            "s3.CreateMultipartUpload",
            "s3.GetObject",
            "s3.ListMultipartUploads",
            "s3.PutObject",
            "s3.UploadPart",
        ),
    ),
    # Build stopping inside a deflated member (`handing_on`): the faults land in its second
    # run, the one that reads the rest of the source and goes on with the deflate stream.
    "build_member_runs": (
        scenario_large_download,
        "app.build",
        (
            "dynamodb.GetItem",
            "dynamodb.UpdateItem",
            "s3.CompleteMultipartUpload",
            "s3.CreateMultipartUpload",
            "s3.GetObject",
            "s3.ListMultipartUploads",
            "s3.PutObject",
            "s3.UploadPart",
        ),
    ),
    # Build stopping inside a member stored as read (`handing_on`): the faults land in its
    # second run, the one that reads the rest of the source on with the CRC-32 so far.
    "build_stored_member_runs": (
        scenario_large_stored_download,
        "app.build",
        (
            "dynamodb.GetItem",
            "dynamodb.UpdateItem",
            "s3.CompleteMultipartUpload",
            "s3.CreateMultipartUpload",
            "s3.GetObject",
            "s3.HeadObject",
            "s3.ListMultipartUploads",
            "s3.PutObject",
            "s3.UploadPart",
        ),
    ),
    # A tar.gz handing on after every member: a single stream's runs (workflow/streamruns.py).
    "build_tar_runs": (
        scenario_tar_download,
        "app.build",
        (
            "dynamodb.GetItem",
            "dynamodb.UpdateItem",
            "s3.CompleteMultipartUpload",
            "s3.CreateMultipartUpload",
            "s3.GetObject",
            "s3.ListMultipartUploads",
            "s3.PutObject",
            "s3.UploadPart",
        ),
    ),
    # A zip with `manifest` and `on_missing: skip` handing on after every entry surveyed and
    # every member: the survey's runs, then the zip's (workflow/steps.py `_build_surveyed`).
    "build_surveyed_runs": (
        scenario_surveyed_download,
        "app.build",
        (
            "dynamodb.GetItem",
            "dynamodb.UpdateItem",
            "s3.CompleteMultipartUpload",
            "s3.CreateMultipartUpload",
            "s3.GetObject",
            "s3.ListMultipartUploads",
            "s3.PutObject",
            "s3.UploadPart",
        ),
    ),
    # Digest reading the artifact back in runs of one small chunk (`handing_on`): the faults
    # land in its second run, the one that goes on from the saved state (`_AT`).
    # Each run reads the record (cancelled?) before it hands on, and each after the first as
    # it begins too (workflow/digest.py).
    "digest": (
        scenario_parallel_download,
        "app.digest",
        ("dynamodb.GetItem", "s3.GetObject", "s3.PutObject"),
    ),
    # An export's Build handing on after each page (`small_segments`): a second run goes on from
    # the saved cursor, row writer and upload (chalicelib/workflow/rowruns.py).
    "export_runs": (
        scenario_export_in_runs,
        "app.build",
        (
            "dynamodb.GetItem",
            "dynamodb.Query",
            "dynamodb.UpdateItem",
            "s3.CompleteMultipartUpload",
            "s3.CreateMultipartUpload",
            "s3.GetObject",
            "s3.ListMultipartUploads",
            "s3.PutObject",
            "s3.UploadPart",
        ),
    ),
    "build_segment": (
        scenario_parallel_download,
        "app.build_segment",
        (
            "dynamodb.GetItem",
            "dynamodb.UpdateItem",
            "s3.CompleteMultipartUpload",
            "s3.CreateMultipartUpload",
            "s3.GetObject",
            "s3.ListMultipartUploads",
            "s3.PutObject",
            "s3.UploadPart",
        ),
    ),
    "assemble": (scenario_parallel_download, "app.assemble", _ASSEMBLE_CALLS),
    # Assemble handing on after each segment (`small_segments`): the faults land in its second
    # run, the one that goes on from the saved upload and held bytes (`_AT`).
    "assemble_runs": (scenario_parallel_download, "app.assemble", _ASSEMBLE_CALLS),
    "cancel": (
        scenario_cancel,
        CALLER,
        (
            "dynamodb.GetItem",
            "dynamodb.PutItem",
            "dynamodb.TransactWriteItems",
            "dynamodb.UpdateItem",  # the owed event struck off once recorded
            "events.PutEvents",
            "stepfunctions.StopExecution",
        ),
    ),
    "delete": (
        scenario_delete,
        CALLER,
        (
            "dynamodb.GetItem",
            "dynamodb.PutItem",
            "dynamodb.UpdateItem",
            "s3.DeleteObject",
            "s3.ListMultipartUploads",
            "s3.ListObjectsV2",
        ),
    ),
    "link": (
        scenario_link,
        CALLER,
        ("dynamodb.GetItem", "dynamodb.PutItem", "dynamodb.UpdateItem", "events.PutEvents"),
    ),
    "deliver": (scenario_deliver, "app.deliver", ("dynamodb.GetItem", "dynamodb.UpdateItem", "kms.Decrypt")),
    "trigger": (
        scenario_trigger,
        CALLER,
        (
            "dynamodb.GetItem",
            "dynamodb.PutItem",
            "dynamodb.TransactWriteItems",
            "stepfunctions.StartExecution",
        ),
    ),
    "manifest": (
        scenario_manifest,
        "app.handle_manifest",
        (
            "dynamodb.GetItem",
            "dynamodb.PutItem",
            "dynamodb.TransactWriteItems",
            "s3.GetObject",
            "s3.HeadObject",
            "stepfunctions.StartExecution",
        ),
    ),
    "cleanup": (
        scenario_cleanup,
        CALLER,
        (
            "dynamodb.GetItem",
            "dynamodb.PutItem",
            "dynamodb.Query",
            "dynamodb.TransactWriteItems",
            "dynamodb.UpdateItem",
            "events.PutEvents",
            "s3.AbortMultipartUpload",
            "s3.DeleteObject",
            "s3.ListMultipartUploads",
            "s3.ListObjectsV2",
            "stepfunctions.StopExecution",
        ),
    ),
}
# -- KMS: the tenant's webhook secret, encrypted when rotated, decrypted to sign a delivery ---
AREAS |= {
    "secret_rotation": (
        scenario_rotate_secret,
        CALLER,
        (
            "dynamodb.GetItem",
            "dynamodb.PutItem",  # the secret's record, then the audit's
            "dynamodb.UpdateItem",  # the key's last use (never fails the request)
            "kms.Encrypt",
        ),
    ),
    "deliver_retried": (
        scenario_deliver_retried,
        "app.deliver",
        ("dynamodb.GetItem", "dynamodb.UpdateItem", "kms.Decrypt", "sqs.ChangeMessageVisibility"),
    ),
    "deliver_give_up": (
        scenario_deliver_give_up,
        "app.deliver",
        (
            "dynamodb.GetItem",
            "dynamodb.UpdateItem",
            "kms.Decrypt",
            "sqs.ChangeMessageVisibility",
            "sqs.SendMessage",
        ),
    ),
}
_PARALLEL = {"build_segment", "assemble", "assemble_runs"}
# Build's second run (of two, one source each) makes these calls of its operation first; the
# first run made the earlier ones (its record, its manifest and source, its saved state).
# CreateMultipartUpload and ListMultipartUploads come in the first run only.
_AT = {
    ("build_runs", "dynamodb.GetItem"): 2,
    ("build_runs", "dynamodb.UpdateItem"): 2,
    ("build_runs", "s3.GetObject"): 3,
    ("build_runs", "s3.PutObject"): 5,
    # The second run: its state, held bytes, then the ranged GET of the member's rest (the
    # 5th GetObject), its checks (the 5th PutObject), and the upload found by listing.
    ("build_member_runs", "dynamodb.GetItem"): 2,
    ("build_member_runs", "dynamodb.UpdateItem"): 2,
    ("build_member_runs", "s3.GetObject"): 5,
    ("build_member_runs", "s3.ListMultipartUploads"): 2,
    ("build_member_runs", "s3.PutObject"): 5,
    # The same for a member stored as read (its CRC-32 from S3's HEAD, in the first run).
    ("build_stored_member_runs", "dynamodb.GetItem"): 2,
    ("build_stored_member_runs", "dynamodb.UpdateItem"): 2,
    ("build_stored_member_runs", "s3.GetObject"): 5,
    ("build_stored_member_runs", "s3.ListMultipartUploads"): 2,
    ("build_stored_member_runs", "s3.PutObject"): 5,
    # A tar.gz's first run saves 3 objects (held bytes, what it carries, its state).
    ("build_tar_runs", "dynamodb.GetItem"): 2,
    ("build_tar_runs", "dynamodb.UpdateItem"): 2,
    ("build_tar_runs", "s3.GetObject"): 3,
    ("build_tar_runs", "s3.ListMultipartUploads"): 2,
    ("build_tar_runs", "s3.PutObject"): 4,
    # Digest's first run reads the checks and the artifact, reads the record and saves its
    # state; the second reads the record (2nd), the checks, then that state (4th), then the
    # artifact, and saves its own (2nd).
    ("digest", "dynamodb.GetItem"): 2,
    ("digest", "s3.GetObject"): 4,
    ("digest", "s3.PutObject"): 2,
    # An export's second run: its record, its query's next page, its saved state and held
    # bytes, the upload it goes on with, what it saves before completing.
    ("export_runs", "dynamodb.GetItem"): 2,
    ("export_runs", "dynamodb.Query"): 2,
    ("export_runs", "s3.GetObject"): 1,
    ("export_runs", "s3.ListMultipartUploads"): 2,
    ("export_runs", "s3.PutObject"): 3,
    # Assemble's second run (of three: a segment each, then the central directory): its
    # record's progress and its download, the upload found by listing, its saved state (after
    # the first run's read of segment 0), the next segment's head (after the first run's
    # look-up of both), its own saved held bytes. CreateMultipartUpload comes in the first
    # run only; UploadPart (the held bytes) and CompleteMultipartUpload in the last.
    ("assemble_runs", "dynamodb.GetItem"): 2,
    ("assemble_runs", "dynamodb.UpdateItem"): 2,
    ("assemble_runs", "s3.GetObject"): 2,
    ("assemble_runs", "s3.HeadObject"): 3,
    ("assemble_runs", "s3.ListMultipartUploads"): 2,
    ("assemble_runs", "s3.PutObject"): 3,
}
# The authorizer's key lookup comes first (the secret's record, 2nd); a retried delivery's
# second receipt reads its record 3rd (after the first receipt's record and secret); the
# give-up's write is its 2nd (after the failed attempt's).
_AT |= {
    ("secret_rotation", "dynamodb.GetItem"): 2,
    ("deliver_retried", "dynamodb.GetItem"): 3,
    ("deliver_give_up", "dynamodb.GetItem"): 3,
    ("deliver_give_up", "dynamodb.UpdateItem"): 2,
}
_AUTHENTICATED = {"create", "cancel", "delete"}
FAULT_POINTS = [(area, operation) for area, (_, _, operations) in AREAS.items() for operation in operations]
# What the docs state: "N fault points x K kinds".
MATRIX = (len(FAULT_POINTS), len(KINDS))


def test_the_matrix_is_what_the_docs_state(capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\nfault matrix: {MATRIX[0]} fault points x {MATRIX[1]} kinds ({', '.join(KINDS)})")
    assert len(set(FAULT_POINTS)) == MATRIX[0]
    assert MATRIX[1] == 4


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Two sources in two segments: the parallel path (Map, BuildSegment, Assemble); or in
    one Build that hands on after each member (every run is short of time), and then a
    Digest that hands on after each chunk."""
    area = request.node.callspec.params.get("area") if hasattr(request.node, "callspec") else None
    if area in _PARALLEL:
        monkeypatch.setenv("SATCHEL_PARALLEL_MIN_FILES", "1")
        monkeypatch.setenv("SATCHEL_SEGMENT_FILES", "1")
    if area in (
        "build_runs",
        "build_member_runs",
        "build_stored_member_runs",
        "build_tar_runs",
        "build_surveyed_runs",
        "digest",
        "export_runs",
        "assemble_runs",
    ):
        monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", str(10_000 * 1000))
    if area == "digest":
        # A few hundred bytes of archive: Digest hands on after each 100.
        monkeypatch.setenv("SATCHEL_READ_CHUNK_BYTES", "100")


@pytest.mark.parametrize("area", sorted(AREAS))
@pytest.mark.usefixtures("small_segments")
def test_each_area_calls_exactly_the_operations_its_matrix_faults(
    area: str, satchel: Satchel, injector: Injector
) -> None:
    """The matrix is the calls the code makes: a new call in an area fails this until listed."""
    scenario, step, operations = AREAS[area]
    made: Counter[tuple[str, str]] = Counter()

    @contextlib.contextmanager
    def recording() -> Iterator[None]:
        before = injector.calls.copy()
        try:
            yield
        finally:
            made.update(injector.calls - before)

    scenario(satchel, recording, [])
    settle(satchel)
    observed = sorted({operation for (where, operation) in made if where == step})
    assert observed == sorted(operations), f"{area} calls {observed}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("area", "operation"), FAULT_POINTS)
@pytest.mark.usefixtures("small_segments")
def test_no_fault_leaves_anything_stuck(
    area: str, operation: str, kind: str, satchel: Satchel, injector: Injector
) -> None:
    """The operation's first call in the area fails on every attempt botocore makes; after the
    system's own recovery (a step's Retry, the client's retry, the next sweep) nothing is stuck."""
    scenario, step, _ = AREAS[area]
    before = Snapshot.take(satchel)
    replies: list[Reply] = []
    # The key lookup of the authorizer comes first in authenticated areas: fault the area's own.
    at = 2 if operation == "dynamodb.GetItem" and area in _AUTHENTICATED else _AT.get((area, operation), 1)
    fault = Fault(operation, kind, at=at, step=step)
    arming: list[Any] = []
    scenario(satchel, lambda: _arm(injector, arming, fault), replies)
    assert injector.fired(arming) > 0, f"{operation} was never called in {area}"
    assert_nothing_stuck(satchel, before, replies)


@contextlib.contextmanager
def _arm(injector: Injector, arming: list[Any], fault: Fault) -> Iterator[None]:
    with injector.armed(fault) as armed:
        try:
            yield
        finally:
            arming.extend(armed)


# -- the recoveries the matrix relies on, shown one by one -----------------------------------


def _transient_failures(satchel: Satchel, download_id: str) -> list[str]:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = satchel.stack.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{download_id}"
    history = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    return [
        event["taskFailedEventDetails"]["error"]
        for event in history
        if event["type"] == "TaskFailed" and event["taskFailedEventDetails"]["error"] == "TransientError"
    ]


def test_the_state_machines_retry_carries_a_build_through_two_throttles_to_done(
    satchel: Satchel, injector: Injector
) -> None:
    before = Snapshot.take(satchel)
    # Two UploadPart calls in a row throttled on each of botocore's attempts: two Build runs fail.
    with injector.armed(Fault("s3.UploadPart", "throttle", calls=2, step="app.build")) as arming:
        created = _create(satchel)
        final = satchel.wait(created.json["id"])
    assert final["state"] == "DONE", final
    assert injector.fired(arming) == 2 * faults.ATTEMPTS
    assert _transient_failures(satchel, created.json["id"]) == ["TransientError", "TransientError"]
    assert_nothing_stuck(satchel, before, [created])


def test_a_throttle_that_outlasts_every_retry_fails_the_download_cleanly(
    satchel: Satchel, injector: Injector
) -> None:
    before = Snapshot.take(satchel)
    with injector.armed(Fault("s3.UploadPart", "throttle", calls=1000, step="app.build")):
        created = _create(satchel)
        final = satchel.wait(created.json["id"])
    assert final["state"] == "FAILED"
    assert final["error"]["code"] == "TransientError"
    assert final["error"]["message"] == "an AWS service was busy or failing (UploadPart: SlowDown)"
    assert len(_transient_failures(satchel, created.json["id"])) == 4  # the first run and 3 retries
    assert_nothing_stuck(satchel, before, [created])


@pytest.mark.parametrize("kind", ["internal", "connection"])
def test_a_start_that_surely_failed_is_503_start_failed_and_frees_everything(
    kind: str, satchel: Satchel, injector: Injector
) -> None:
    before = Snapshot.take(satchel)
    with injector.armed(Fault("stepfunctions.StartExecution", kind, step=CALLER)):
        refused = _create(satchel, key=f"start-fails-{kind}")
    assert refused.status == 503
    assert refused.json["Code"] == "StartFailed"
    assert int(refused.headers["Retry-After"]) > 0
    failed = [item for item in _items(satchel) if item["pk"].startswith("DOWNLOAD#")]
    failed = [item for item in failed if item["id"] not in before.downloads]
    assert [(item["state"], item["error"]["code"]) for item in failed] == [("FAILED", "StartFailed")]
    retried = _create(satchel, key=f"start-fails-{kind}")  # the key was released: this one runs
    assert retried.status == 202
    assert "Idempotent-Replayed" not in retried.headers
    assert satchel.wait(retried.json["id"])["state"] == "DONE"
    assert_nothing_stuck(satchel, before, [refused, retried])


def test_a_start_whose_answer_was_lost_is_found_by_its_name_and_runs(
    satchel: Satchel, injector: Injector
) -> None:
    before = Snapshot.take(satchel)
    # The execution starts, every answer is lost; DescribeExecution finds it by its name.
    with injector.armed(Fault("stepfunctions.StartExecution", "timeout", step=CALLER)) as arming:
        created = _create(satchel, key="start-lost")
    assert injector.fired(arming) == faults.ATTEMPTS
    assert created.status == 202, created.body
    assert satchel.wait(created.json["id"])["state"] == "DONE"
    assert _create(satchel, key="start-lost").json["id"] == created.json["id"]
    assert_nothing_stuck(satchel, before, [created])
