"""Least privilege, proven on real calls: every AWS call each function makes is allowed by
that function's own policy in the packaged template, on the resource it touches, and each
policy allows no action its function does not make.

The calls are recorded while the stack runs real flows (a zip built, fetched, linked,
replayed, refused over quota, cancelled, deleted, and one that fails, each telling its
webhook (recorded and queued, then sent by the deliver function, which signs with a key
read from SSM), the claim of a link told the same way; downloads asked for by
SQS messages, an EventBridge event and a request manifest in S3, and by a message and an
event whose workflow Step Functions refuses to start; and a cleanup sweep that expires,
times out and purges). A call is attributed to the
function running it: Lambda functions through the context variable satchel_local.lambdas
sets around each handler, the authorizer and the API handler through Chalice's local
gateway. Each is looked up in the template by its `Handler` string.

Deleting table items is held to the key prefixes the code deletes under: a policy that lets
a function delete items under a prefix no recorded call deleted fails the test.

`SATCHEL_IAM_TABLE=1 pytest -s tests/deploy/test_iam.py` prints what each function called, and on what.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, cast

import pytest
from botocore.client import BaseClient
from chalice import local as chalice_local
from moto.core.exceptions import AWSError
from moto.stepfunctions.parser.models import StepFunctionsParserBackend
from standardwebhooks import Webhook

from chalicelib import downloadtypes
from chalicelib.api import downloads
from chalicelib.core import clients, clock, settings
from chalicelib.notify import events
from chalicelib.runtime import Runtime
from chalicelib.triggers import inbound as triggers
from satchel_local import eventsources, lambdas
from satchel_local.seed import PRINCIPALS
from satchel_local.stack import MOTO_SENDER_ID, Stack, webhook_secrets_alias
from statemachine.definition import function_name
from tests.support.stack import Satchel, api_key_of
from tests.support.stack_template import (
    ACCOUNT,
    REGION,
    Resolver,
    allows,
    functions,
    kms_key_arn,
    packaged,
    role_of,
    statements,
)

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_stepfunctions.client import SFNClient

MIB = 1024 * 1024
API_HANDLER = "app.app"
AUTHORIZER = "app.bearer"
REQUESTS = "app.handle_requests"
EVENTS = "app.handle_event"
MANIFESTS = "app.handle_manifest"
DELIVER = "app.deliver"
CLEANUP = "app.sweep"
STACK_STAGE = "test"  # the stage the stack fixture provisions

# Actions a function's policy grants for paths these flows do not reach, each with the path.
# Everything else a policy grants must have been used.
NOT_EXERCISED: dict[str, dict[str, str]] = {
    API_HANDLER: {
        "s3:AbortMultipartUpload": "deleting a download whose build left an upload open",
    },
    "app.prepare": {
        "dynamodb:GetItem": "a retried Prepare, the download already RUNNING: the conflict reads it",
        "s3:ListBucketMultipartUploads": "cancelled while preparing: remove_everything",
        "s3:AbortMultipartUpload": "cancelled while preparing: remove_everything",
        "s3:DeleteObject": "cancelled while preparing: remove_everything",
    },
    "app.fail": {
        "s3:AbortMultipartUpload": "a Build that died (timeout, crash) without aborting its upload",
    },
    "app.build": {
        "s3:GetObjectAttributes": "a source whose S3 checksum is composite: its part CRCs, combined",
    },
    "app.build_segment": {
        "s3:GetObjectAttributes": "a source whose S3 checksum is composite: its part CRCs, combined",
        "s3:AbortMultipartUpload": "a segment that failed, or a retried one, aborts its upload",
        "s3:DeleteObject": "cancelled while building a segment: remove_everything",
        "s3:ListBucket": "cancelled while building a segment: remove_everything",
    },
    "app.digest": {
        "dynamodb:GetItem": "a Digest that hands on: cancelled? (the flows' artifacts take one run)",
        "s3:ListBucketMultipartUploads": "cancelled while Digest hands on: remove_everything",
        "s3:AbortMultipartUpload": "cancelled while Digest hands on: remove_everything",
        "s3:DeleteObject": "cancelled while Digest hands on: remove_everything",
        "s3:ListBucket": "cancelled while Digest hands on: remove_everything",
    },
    "app.assemble": {
        "s3:AbortMultipartUpload": "an Assemble that failed, or a retried one, aborts its upload",
        "s3:DeleteObject": "cancelled before Assemble: remove_everything",
        "s3:ListBucket": "cancelled before Assemble: remove_everything",
    },
    # Not the code's calls: Lambda's own, made with the function's role.
    REQUESTS: {
        "sqs:ReceiveMessage": "Lambda's SQS event source polls the requests queue",
        "sqs:DeleteMessage": "Lambda's SQS event source deletes the messages not reported as failed",
        "sqs:GetQueueAttributes": "Lambda's SQS event source reads the queue's attributes",
    },
    EVENTS: {
        "sqs:SendMessage": "Lambda dead-letters an event the function still failed on after its retries",
    },
    MANIFESTS: {
        "sqs:SendMessage": "Lambda dead-letters an event the function still failed on after its retries",
    },
    DELIVER: {
        "sqs:ReceiveMessage": "Lambda's SQS event source polls the deliveries queue",
        "sqs:DeleteMessage": "Lambda's SQS event source deletes the messages not reported as failed",
        "sqs:GetQueueAttributes": "Lambda's SQS event source reads the queue's attributes",
        "sqs:ChangeMessageVisibility": "a receiver that did not accept an event: the retry's backoff",
        "sqs:SendMessage": "an event given up on after the retry window: its dead letter",
    },
}


# IAM condition keys and their values, as a hashable tuple.
Context = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class Request:
    """One IAM authorization an AWS call needs."""

    action: str
    resource: str
    context: Context = ()

    def context_dict(self) -> dict[str, list[str]]:
        return {key: list(values) for key, values in self.context}


@dataclass(frozen=True)
class Call:
    handler: str
    service: str
    operation: str
    requests: tuple[Request, ...]


# --- From boto3 operations to IAM actions and resources --------------------------------

_S3_OBJECT_ACTIONS = {
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "GetObjectAttributes": "s3:GetObjectAttributes",
    "DeleteObject": "s3:DeleteObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListParts": "s3:ListMultipartUploadParts",
}
_S3_BUCKET_ACTIONS = {
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
}
_DYNAMODB_ITEM_ACTIONS = {"GetItem", "PutItem", "UpdateItem", "DeleteItem"}
_TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


def _plain(value: Any) -> str:
    """A DynamoDB value as a string, typed ({"S": ...}) or not."""
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("S", "N", "B"):
        return str(next(iter(value.values())))
    return str(value)


class TableSchema:
    """The partition key of the table and of each index: what dynamodb:LeadingKeys sees."""

    def __init__(self, table: dict[str, Any]) -> None:
        def hash_key(schema: list[dict[str, str]]) -> str:
            return next(key["AttributeName"] for key in schema if key["KeyType"] == "HASH")

        self.keys: dict[str | None, str] = {None: hash_key(table["KeySchema"])}
        for index in table.get("GlobalSecondaryIndexes", []):
            self.keys[index["IndexName"]] = hash_key(index["KeySchema"])

    def leading_keys(self, operation: str, params: dict[str, Any]) -> list[str] | None:
        attribute = self.keys[params.get("IndexName")]
        if "Key" in params:
            return [_plain(params["Key"][attribute])]
        if "Item" in params:
            return [_plain(params["Item"][attribute])]
        if operation == "Query":
            return self._queried_key(params, attribute)
        return None

    @staticmethod
    def _queried_key(params: dict[str, Any], attribute: str) -> list[str] | None:
        expression = params.get("KeyConditionExpression")
        if isinstance(expression, str):
            names = params.get("ExpressionAttributeNames", {})
            for name, placeholder in re.findall(r"(#?\w+)\s*=\s*(:\w+)", expression):
                if names.get(name, name) == attribute:
                    return [_plain(params["ExpressionAttributeValues"][placeholder])]
            return None
        pending: list[Any] = [expression]
        while pending:  # a boto3.dynamodb.conditions expression: find Key(attribute).eq(value)
            condition = pending.pop()
            shape = condition.get_expression()
            if shape["operator"] == "=" and getattr(shape["values"][0], "name", None) == attribute:
                return [_plain(shape["values"][1])]
            pending.extend(value for value in shape["values"] if hasattr(value, "get_expression"))
        return None


def dataset_arns(config: str) -> list[str]:
    """What a deployment puts into DatasetTableArns for this SATCHEL_DATASETS."""
    arns = set()
    for dataset in json.loads(config).values():
        arns.add(_table_arn(dataset["table"]))
        if dataset.get("index"):
            arns.add(_table_arn(dataset["table"], dataset["index"]))
    return sorted(arns)


def _leading_keys(values: list[str] | None) -> Context:
    return (("dynamodb:LeadingKeys", tuple(values)),) if values else ()


def _table_arn(name: str, index: str | None = None) -> str:
    arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
    return f"{arn}/index/{index}" if index else arn


def iam_requests(service: str, operation: str, params: dict[str, Any], schema: TableSchema) -> list[Request]:
    if service == "s3":
        bucket = params["Bucket"]
        if operation in _S3_OBJECT_ACTIONS:
            return [Request(_S3_OBJECT_ACTIONS[operation], f"arn:aws:s3:::{bucket}/{params['Key']}")]
        if operation in _S3_BUCKET_ACTIONS:
            context: Context = (("s3:prefix", (params["Prefix"],)),) if "Prefix" in params else ()
            return [Request(_S3_BUCKET_ACTIONS[operation], f"arn:aws:s3:::{bucket}", context)]
        if operation == "DeleteObjects":
            objects = params["Delete"]["Objects"]
            return [Request("s3:DeleteObject", f"arn:aws:s3:::{bucket}/{item['Key']}") for item in objects]
        if operation in ("CopyObject", "UploadPartCopy"):
            source = params["CopySource"]
            source_arn = (
                f"arn:aws:s3:::{source['Bucket']}/{source['Key']}"
                if isinstance(source, dict)
                else f"arn:aws:s3:::{source.split('?')[0]}"
            )
            return [
                Request("s3:PutObject", f"arn:aws:s3:::{bucket}/{params['Key']}"),
                Request("s3:GetObject", source_arn),
            ]
    if service == "dynamodb":
        if operation in _DYNAMODB_ITEM_ACTIONS or operation in ("Query", "Scan"):
            context = _leading_keys(schema.leading_keys(operation, params))
            arn = _table_arn(params["TableName"], params.get("IndexName"))
            return [Request(f"dynamodb:{operation}", arn, context)]
        if operation == "TransactWriteItems":
            found = []
            for item in params["TransactItems"]:
                ((kind, spec),) = item.items()
                context = _leading_keys(schema.leading_keys(_TRANSACT_ACTIONS[kind], spec))
                found.append(
                    Request(f"dynamodb:{_TRANSACT_ACTIONS[kind]}", _table_arn(spec["TableName"]), context)
                )
            return found
    if service == "events" and operation == "PutEvents":
        found = []
        for entry in params["Entries"]:
            bus = entry.get("EventBusName", "default")
            arn = bus if bus.startswith("arn:") else f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{bus}"
            context = (("events:source", (entry["Source"],)), ("events:detail-type", (entry["DetailType"],)))
            found.append(Request("events:PutEvents", arn, context))
        return found
    if service == "kms" and operation in ("Encrypt", "Decrypt"):
        # The stack's one key, which the local stack names by its alias.
        assert params["KeyId"] == webhook_secrets_alias(STACK_STAGE), params
        encryption_context: dict[str, str] = params.get("EncryptionContext", {})
        context = (
            ("kms:EncryptionContextKeys", tuple(sorted(encryption_context))),
            *(
                (f"kms:EncryptionContext:{key}", (value,))
                for key, value in sorted(encryption_context.items())
            ),
        )
        return [Request(f"kms:{operation}", kms_key_arn("WebhookSecretsKey"), context)]
    if service == "sqs" and operation in ("SendMessage", "ChangeMessageVisibility", "DeleteMessage"):
        # A queue URL ends with its account and name: https://<endpoint>/<account>/<name>.
        name = params["QueueUrl"].rstrip("/").rsplit("/", 1)[1]
        return [Request(f"sqs:{operation}", f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}")]
    if service == "stepfunctions":
        if operation == "StartExecution":
            return [Request("states:StartExecution", params["stateMachineArn"])]
        if operation in ("StopExecution", "DescribeExecution"):
            return [Request(f"states:{operation}", params["executionArn"])]
    raise AssertionError(
        f"{service}.{operation} is not mapped to IAM here: add it to tests/deploy/test_iam.py's iam_requests"
    )


# --- Recording -------------------------------------------------------------------------


# The calls the state machine makes itself (not its functions), held to StateMachineRole.
STATE_MACHINE = "StateMachine"


class Recorder:
    def __init__(self, schema: TableSchema) -> None:
        self.schema = schema
        self.calls: list[Call] = []
        # Calls made with no function running: the test's own, or moto's interpreter (Invoke).
        self.unattributed_in_threads: list[str] = []
        self._lock = threading.Lock()

    def record(self, service: str, operation: str, params: dict[str, Any]) -> None:
        handler = lambdas.current_handler.get()
        if handler is None:
            if threading.current_thread() is not threading.main_thread():
                with self._lock:
                    self.unattributed_in_threads.append(f"{service}.{operation}")
            if service != "s3" or threading.current_thread() is threading.main_thread():
                return
            # The interpreter's own S3 calls (the Distributed Map's ItemReader): the state
            # machine's role makes them.
            handler = STATE_MACHINE
        call = Call(handler, service, operation, tuple(iam_requests(service, operation, params, self.schema)))
        with self._lock:
            self.calls.append(call)

    def actions(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = defaultdict(set)
        for call in self.calls:
            found[call.handler].update(request.action for request in call.requests)
        return dict(found)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch, stack: Stack) -> Recorder:
    table = packaged().sam["Resources"]["Table"]["Properties"]
    recorder = Recorder(TableSchema(table))

    original_call = BaseClient._make_api_call

    def make_api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
        recorder.record(client.meta.service_model.service_name, operation, params)
        return original_call(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", make_api_call)

    # A presigned URL makes no call, but is only good if its signer may GetObject.
    s3 = clients.s3()
    original_presign = s3.generate_presigned_url

    def presign(ClientMethod: str, Params: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        recorder.record("s3", s3.meta.method_to_api_mapping[ClientMethod], Params or {})
        return original_presign(ClientMethod, Params or {}, **kwargs)

    monkeypatch.setattr(s3, "generate_presigned_url", presign)

    def as_handler(handler: str, method: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            token = lambdas.current_handler.set(handler)
            try:
                return method(*args, **kwargs)
            finally:
                lambdas.current_handler.reset(token)

        return run

    gateway = chalice_local.LocalGateway.handle_request
    monkeypatch.setattr(chalice_local.LocalGateway, "handle_request", as_handler(API_HANDLER, gateway))
    authorize = chalice_local.LocalGatewayAuthorizer.authorize
    monkeypatch.setattr(chalice_local.LocalGatewayAuthorizer, "authorize", as_handler(AUTHORIZER, authorize))
    return recorder


class Receiver(BaseHTTPRequestHandler):
    """A webhook receiver on loopback: verifies each delivery (Standard Webhooks), answers 204."""

    received: list[dict[str, Any]]
    secret: str

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(Webhook(self.secret).verify(body, dict(self.headers.items())))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Callbacks:
    url: str
    received: list[dict[str, Any]]
    stack: Stack

    def deliver(self) -> None:
        """What Lambda's event source does with the deliveries queue: poll it into `deliver`."""
        source = eventsources.SqsEventSource(
            "deliveries",
            threading.Event(),
            self.stack.deliveries_queue_url,
            function_name(self.stack.stage, "deliver"),
        )
        while source.poll_once():
            pass

    def link_claims(self) -> list[dict[str, Any]]:
        return [payload["data"] for payload in self.received if payload["type"] == events.LINK_CLAIMED]

    def states(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = defaultdict(set)
        for payload in self.received:
            if payload["type"] != events.LINK_CLAIMED:
                found[payload["data"]["id"]].add(payload["data"]["state"])
        return dict(found)


@pytest.fixture
def callbacks(stack: Stack) -> Iterator[Callbacks]:
    """Webhooks signed with acme's own secret, which the deliver function reads from the table
    and decrypts with the stack's KMS key, as a deployment does."""
    received: list[dict[str, Any]] = []
    handler = type(
        "IamReceiver", (Receiver,), {"received": received, "secret": stack.webhook_secrets["acme"]}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Callbacks(f"http://127.0.0.1:{server.server_address[1]}/satchel", received, stack)
    finally:
        server.shutdown()
        server.server_close()


def run_flows(satchel: Satchel, monkeypatch: pytest.MonkeyPatch, callback_url: str) -> None:
    """What users do: every route that touches AWS, and the workflow's success and failure."""
    satchel.put_source("acme/iam/a.csv", b"a,b\n1,2\n" * 200)
    satchel.put_source("acme/iam/more/b.txt", b"b" * 5000)

    def post(body: dict[str, Any], key: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {api_key_of('alice')}", "Content-Type": "application/json"}
        if key:
            headers["Idempotency-Key"] = key
        return satchel.client.http.post("/downloads", headers=headers, body=json.dumps(body))

    # A zip with a link, by key and prefix, built to DONE; replayed by its Idempotency-Key.
    body = {
        "type": "zip",
        "params": {"keys": ["acme/iam/a.csv"], "prefixes": ["acme/iam/more/"]},
        "link": {},
        "callback_url": callback_url,
    }
    created = post(body, key="iam-round-trip")
    assert created.status_code == 202, created.body
    download = json.loads(created.body)
    assert satchel.wait(download["id"])["state"] == "DONE"
    assert post(body, key="iam-round-trip").headers.get("Idempotent-Replayed") == "true"

    # Read it every way.
    assert satchel.call("GET", f"/downloads/{download['id']}/file").status == 302
    assert satchel.call("GET", f"/downloads/{download['id']}/url").status == 200
    assert satchel.call("GET", "/downloads?limit=5&state=DONE").status == 200
    assert satchel.call("GET", "/types").status == 200
    assert satchel.call("GET", "/downloads", user=None).status == 401
    assert satchel.client.http.get("/downloads", headers={"Authorization": "Bearer nope"}).status_code == 403

    # Links: the one made with it, used up; another, revoked.
    token = download["link"]["token"]
    assert satchel.call("GET", f"/links/{token}", user=None).status == 200
    assert satchel.call("POST", f"/links/{token}", user=None).status == 303
    assert satchel.call("POST", f"/links/{token}", user=None).status == 410
    assert satchel.call("GET", f"/downloads/{download['id']}/deliveries").status == 200
    other = satchel.call("POST", f"/downloads/{download['id']}/links", body={"max_uses": 2}).json["token"]
    assert satchel.call("GET", f"/downloads/{download['id']}/links").status == 200
    assert satchel.call("DELETE", f"/links/{other}").status == 204
    assert satchel.call("GET", f"/links/{other}", user=None).status == 410

    # A tenant admin's keys: issued, listed, rotated, disabled.
    issued = satchel.call("POST", "/keys", "carol", {"user_id": "erin", "expires_in": 3600}).json
    assert satchel.call("GET", "/keys", "carol").status == 200
    rotated = satchel.call("POST", f"/keys/{issued['id']}/rotate", "carol").json
    assert satchel.call("DELETE", f"/keys/{rotated['id']}", "carol").status == 200

    # A large zip: segments built in parallel and joined by Assemble, the large member copied
    # by S3 (its CRC-32 from S3's checksum), and the artifact hashed by Digest; every run
    # short of time (above the functions' 900 s), so segments and Digest hand on.
    monkeypatch.setenv("SATCHEL_SERVER_COPY_MIN_BYTES", str(10 * MIB))
    monkeypatch.setenv("SATCHEL_PARALLEL_MIN_FILES", "1")
    monkeypatch.setenv("SATCHEL_SEGMENT_FILES", "1")
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", str(10_000 * 1000))
    satchel.put_source("acme/iam/parallel/a.bin", os.urandom(11 * MIB))
    satchel.put_source("acme/iam/parallel/b.txt", b"b" * 5000)
    parallel = satchel.create({"prefixes": ["acme/iam/parallel/"], "compression": "store"}).json["id"]
    assert satchel.wait(parallel)["state"] == "DONE"
    for name in (
        "SATCHEL_SERVER_COPY_MIN_BYTES",
        "SATCHEL_PARALLEL_MIN_FILES",
        "SATCHEL_SEGMENT_FILES",
        "SATCHEL_HANDOFF_RESERVE_MS",
    ):
        monkeypatch.delenv(name)

    # A cancel while running, and, meanwhile, a create over quota with an Idempotency-Key
    # (the key is released). The refusal waits for bytes to flow: moto undoes a failed
    # transaction by restoring a copy of the whole table, which would revert a concurrent
    # PENDING -> RUNNING (DynamoDB itself has no such race).
    monkeypatch.setenv("SATCHEL_MAX_ACTIVE_PER_USER", "1")
    monkeypatch.setenv("SATCHEL_READ_CHUNK_BYTES", str(64 * 1024))
    monkeypatch.setenv("SATCHEL_PROGRESS_EVERY_BYTES", str(64 * 1024))
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))
    satchel.put_source("acme/iam/large/a.bin", os.urandom(12 * MIB))
    satchel.put_source("acme/iam/large/b.bin", os.urandom(12 * MIB))
    running = satchel.create(
        {"prefixes": ["acme/iam/large/"], "compression": "store"}, callback_url=callback_url
    ).json["id"]
    while True:
        state = satchel.wait(running, until={"RUNNING", "DONE", "FAILED"})
        assert state["state"] == "RUNNING", "the large build finished before it could be cancelled"
        if state["progress"]["bytes_done"] > 0:
            break
    refused = post({"type": "zip", "params": {"keys": ["acme/iam/a.csv"]}}, key="iam-over-quota")
    assert refused.status_code == 429, refused.body
    assert satchel.call("DELETE", f"/downloads/{running}").status == 202
    assert satchel.wait_execution(running, 30) in {"ABORTED", "FAILED"}
    assert lambdas.wait_idle(timeout=30)
    monkeypatch.delenv("SATCHEL_MAX_ACTIVE_PER_USER")

    # The tenant admin rotates the tenant's webhook secret (encrypted with KMS), and reads when.
    rotated = satchel.call("POST", "/tenant/webhook-secret", "carol", {"grace_seconds": 60})
    assert rotated.status == 201, rotated.body
    assert satchel.call("GET", "/tenant/webhook-secret", "carol").status == 200

    # The other registered types, reading the audit trail and a dataset.
    registered = {kind.name for kind in downloadtypes.all_types()}
    if "audit" in registered:
        audit = satchel.call("POST", "/downloads", "carol", {"type": "audit", "params": {}})
        assert audit.status == 202, audit.body
        assert satchel.wait(audit.json["id"], user="carol")["state"] == "DONE"
    if "export" in registered:
        index = next(iter(json.loads(os.environ[settings.ENV_DATASETS])))
        export = satchel.call("POST", "/downloads", body={"type": "export", "params": {"index": index}})
        assert export.status == 202, export.body
        assert satchel.wait(export.json["id"])["state"] == "DONE"

    # Delete a finished one; and one that fails (its source does not exist).
    assert satchel.call("DELETE", f"/downloads/{download['id']}").status == 204
    failing = satchel.create({"keys": ["acme/iam/missing.csv"]}, callback_url=callback_url).json["id"]
    failed = satchel.wait(failing)
    assert failed["state"] == "FAILED"
    assert failed["error"]["code"] == "SourceMissing"


def invoke(handler: str, event: dict[str, Any]) -> Any:
    """Run a function as Lambda runs it, from its `Handler` string, in this process."""
    name = handler.removeprefix("app.")
    payload, failed = lambdas.run_handler(handler, name, json.dumps(event), timeout=300)
    assert not failed, payload
    return json.loads(payload)


def invoke_failing(handler: str, event: dict[str, Any]) -> str:
    """Run a function that fails (so that Lambda tries its event again): the error's type."""
    name = handler.removeprefix("app.")
    payload, failed = lambdas.run_handler(handler, name, json.dumps(event), timeout=300)
    assert failed, payload
    error_type: str = json.loads(payload)["errorType"]
    return error_type


def newest(satchel: Satchel, user: str) -> Any:
    reply = satchel.call("GET", "/downloads?limit=1", user)
    assert reply.status == 200, reply.body
    return reply.json["items"][0]


class NeverStarted:
    """A Step Functions client whose StartExecution answer was lost: no execution exists."""

    def start_execution(self, **kwargs: Any) -> dict[str, Any]:
        return {}


def never_started(user: str, **request: Any) -> str:
    """A download left PENDING, its workflow never started (made by the test, not recorded)."""
    runtime = dataclasses.replace(Runtime.from_env(), stepfunctions=cast("SFNClient", NeverStarted()))
    body = {"type": "zip", "params": {"keys": ["acme/iam/a.csv"]}, **request}
    return downloads.create(runtime, PRINCIPALS[user], body).download.id


def run_trigger_flows(satchel: Satchel, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """Downloads asked for by an SQS batch, an EventBridge event and a manifest dropped in S3,
    and refused ones; returns the ids of those started, and of those left PENDING."""
    request = {"type": "zip", "params": {"keys": ["acme/iam/a.csv"]}}
    good = {"tenant": "acme", "user_id": "alice", "request": request, "idempotency_key": "iam-sqs"}
    # Carol's one active download fills her quota: her request is refused, and its
    # idempotency key released so that a redelivery may succeed once she has room.
    monkeypatch.setenv("SATCHEL_MAX_ACTIVE_PER_USER", "1")
    stuck = [never_started("carol")]
    over_quota = {"tenant": "acme", "user_id": "carol", "request": request, "idempotency_key": "iam-carol"}
    # Refusals over quota come first, while no workflow runs: moto undoes a failed
    # transaction by restoring a copy of the whole table, which would revert a concurrent
    # PENDING -> RUNNING (DynamoDB itself has no such race).
    refused = satchel.client.events.generate_cw_event(
        triggers.REQUEST_SOURCE_PREFIX + "acme", triggers.REQUESTED, over_quota, []
    )
    invoke(EVENTS, {**refused, "id": str(uuid.uuid4())})
    bodies = [
        json.dumps(over_quota),
        "not json",
        json.dumps({"tenant": "acme", "user_id": "nobody", "request": request}),
        json.dumps(good),
    ]
    batch = satchel.client.events.generate_sqs_event(bodies, queue_name="satchel-requests")
    for record in batch["Records"]:
        record["messageId"] = str(uuid.uuid4())
        record["attributes"]["SenderId"] = MOTO_SENDER_ID
    answer = invoke(REQUESTS, batch)
    rejected = [record["messageId"] for record in batch["Records"][:-1]]
    assert answer == {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in rejected]}
    by_message = newest(satchel, "alice")
    started = [by_message["id"]]

    # The same message delivered again (SQS is at least once): the same download.
    again = satchel.client.events.generate_sqs_event([json.dumps(good)], queue_name="satchel-requests")
    again["Records"][0]["attributes"]["SenderId"] = MOTO_SENDER_ID
    assert invoke(REQUESTS, again) == {"batchItemFailures": []}
    assert newest(satchel, "alice")["id"] == by_message["id"]

    monkeypatch.delenv("SATCHEL_MAX_ACTIVE_PER_USER")

    asked = {"tenant": "acme", "user_id": "alice", "request": {**request, "filename": "asked.zip"}}
    event = satchel.client.events.generate_cw_event(
        triggers.REQUEST_SOURCE_PREFIX + "acme", triggers.REQUESTED, asked, []
    )
    invoke(EVENTS, {**event, "id": str(uuid.uuid4())})
    by_event = newest(satchel, "alice")
    assert by_event["filename"] == "asked.zip"
    started.append(by_event["id"])

    # A manifest dropped in bob's folder under the request prefix, acting as bob.
    bucket, key = satchel.stack.source_bucket, f"{settings.Settings.request_prefix}acme/bob/iam.json"
    satchel.put_source(key, json.dumps({"request": request}).encode())
    detail = {"bucket": {"name": bucket}, "object": {"key": key}}
    created = satchel.client.events.generate_cw_event(
        "aws.s3", triggers.OBJECT_CREATED, detail, [f"arn:aws:s3:::{bucket}"]
    )
    invoke(MANIFESTS, {**created, "id": str(uuid.uuid4())})
    by_manifest = newest(satchel, "bob")
    assert by_manifest["user_id"] == "bob"
    started.append(by_manifest["id"])

    for download_id in started:
        user = "bob" if download_id == by_manifest["id"] else "alice"
        assert satchel.wait(download_id, user)["state"] == "DONE"
    return started, stuck


class ExecutionLimitExceeded(AWSError):
    """What Step Functions answers when the account runs as many executions as it may."""

    TYPE = "ExecutionLimitExceeded"
    STATUS = 400


def run_start_failures(satchel: Satchel, monkeypatch: pytest.MonkeyPatch, callback_url: str) -> list[str]:
    """A message, an event and a manifest whose workflow Step Functions refuses to start: each download
    ends FAILED `StartFailed`, is announced and told to its callback, and its idempotency
    key is released. Returns their ids."""
    request = {"type": "zip", "params": {"keys": ["acme/iam/a.csv"]}, "callback_url": callback_url}

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ExecutionLimitExceeded("the account runs as many executions as it may")

    failed = []
    with monkeypatch.context() as patched:
        patched.setattr(StepFunctionsParserBackend, "start_execution", refuse)
        message = {
            "tenant": "acme",
            "user_id": "alice",
            "request": request,
            "idempotency_key": "iam-no-start",
        }
        batch = satchel.client.events.generate_sqs_event([json.dumps(message)], queue_name="satchel-requests")
        batch["Records"][0]["messageId"] = message_id = str(uuid.uuid4())
        batch["Records"][0]["attributes"]["SenderId"] = MOTO_SENDER_ID
        assert invoke(REQUESTS, batch) == {"batchItemFailures": [{"itemIdentifier": message_id}]}
        failed.append(newest(satchel, "alice"))

        detail = {"tenant": "acme", "user_id": "bob", "request": request}
        event = satchel.client.events.generate_cw_event(
            triggers.REQUEST_SOURCE_PREFIX + "acme", triggers.REQUESTED, detail, []
        )
        assert invoke_failing(EVENTS, {**event, "id": str(uuid.uuid4())}) == "StartFailed"
        failed.append(newest(satchel, "bob"))

        bucket, key = (
            satchel.stack.source_bucket,
            f"{settings.Settings.request_prefix}acme/alice/no-start.json",
        )
        satchel.put_source(key, json.dumps({"request": request}).encode())
        detail = {"bucket": {"name": bucket}, "object": {"key": key}}
        created = satchel.client.events.generate_cw_event("aws.s3", triggers.OBJECT_CREATED, detail, [])
        assert invoke_failing(MANIFESTS, {**created, "id": str(uuid.uuid4())}) == "StartFailed"
        failed.append(newest(satchel, "alice"))
    for download in failed:
        assert download["state"] == "FAILED", download
        assert download["error"]["code"] == "StartFailed", download
    return [download["id"] for download in failed]


def unused_deletes(
    handler: str, policy: list[dict[str, Any]], calls: list[Call], table_arn: str
) -> list[str]:
    """The key prefixes a policy lets `handler` delete table items under that none of its
    recorded calls deleted under; a grant to delete without a key condition counts too."""
    deletes = [
        request
        for call in calls
        if call.handler == handler
        for request in call.requests
        if request.action == "dynamodb:DeleteItem"
    ]
    found = []
    for statement in policy:
        action = statement["Action"]
        if "dynamodb:DeleteItem" not in ([action] if isinstance(action, str) else action):
            continue
        condition = statement.get("Condition", {}).get("ForAllValues:StringLike", {})
        if "dynamodb:LeadingKeys" not in condition:
            found.append(f"{statement.get('Sid')}: any item")
            continue
        for prefix in condition["dynamodb:LeadingKeys"]:
            alone = {
                **statement,
                "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [prefix]}},
            }
            if not any(
                allows([alone], request.action, request.resource, request.context_dict())
                for request in deletes
                if request.resource == table_arn
            ):
                found.append(f"{statement.get('Sid')}: {prefix}")
    return found


def run_cleanup(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, callback_url: str, stuck: list[str]
) -> Any:
    """A sweep, a long time later: done downloads expire, stuck ones time out, the records
    of finished ones are purged, and a crashed worker's upload and temporaries go."""
    assert lambdas.wait_idle(timeout=30)
    told = never_started("alice", callback_url=callback_url)
    stuck = [*stuck, told]
    s3, bucket = satchel.s3, satchel.stack.artifact_bucket
    s3.create_multipart_upload(Bucket=bucket, Key=f"artifacts/{told}")
    s3.create_multipart_upload(Bucket=bucket, Key="tmp/crashed/segment-0")
    s3.put_object(Bucket=bucket, Key="tmp/crashed/manifest.json", Body=b"{}")

    later = clock.now() + timedelta(seconds=Runtime.from_env().settings.record_retention_seconds + 86400)
    with monkeypatch.context() as patched:
        patched.setattr(clock, "now", lambda: later)
        sweep = satchel.client.events.generate_cw_event("aws.events", "Scheduled Event", {}, [])
        report = invoke(CLEANUP, sweep)
    assert sorted(report["timed_out"]) == sorted(stuck)
    assert report["expired"]
    assert report["purged"]
    assert report["uploads_aborted"] == 1
    assert report["temporaries_removed"] == 1
    assert not satchel.open_uploads()
    return report


def test_every_call_is_allowed_to_its_function_and_nothing_more(
    satchel: Satchel, recorder: Recorder, callbacks: Callbacks, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_flows(satchel, monkeypatch, callbacks.url)
    started, stuck = run_trigger_flows(satchel, monkeypatch)
    not_started = run_start_failures(satchel, monkeypatch, callbacks.url)
    report = run_cleanup(satchel, monkeypatch, callbacks.url, stuck)
    callbacks.deliver()
    assert set(started) <= set(report["expired"])
    # Every terminal state was told: by Finalize, Fail, the API (cancel) and cleanup (timeout).
    states = callbacks.states()
    assert set().union(*states.values()) == {"DONE", "FAILED", "CANCELLED"}, states
    assert [states.get(download_id) for download_id in report["timed_out"]].count({"FAILED"}) == 1
    assert [states.get(download_id) for download_id in not_started] == [{"FAILED"}] * 3, states
    assert [claim["use"] for claim in callbacks.link_claims()] == [1]  # told by the claim

    template = packaged().sam
    by_handler = functions(template)
    made = recorder.actions()
    if os.environ.get("SATCHEL_IAM_TABLE"):
        for handler in sorted(made):
            calls = sorted({f"{c.service}.{c.operation}" for c in recorder.calls if c.handler == handler})
            resources = sorted(
                {
                    f"{r.action} {r.resource}"
                    for c in recorder.calls
                    if c.handler == handler
                    for r in c.requests
                }
            )
            print(handler, calls, *resources, sep="\n  ")
    assert set(made) >= {
        API_HANDLER,
        AUTHORIZER,
        "app.prepare",
        "app.build",
        "app.finalize",
        "app.fail",
        REQUESTS,
        EVENTS,
        MANIFESTS,
        DELIVER,
        CLEANUP,
    }
    assert made.get(STATE_MACHINE) == {"s3:GetObject"}  # the Distributed Map's ItemReader
    functions_made = set(made) - {STATE_MACHINE}
    assert functions_made <= set(by_handler), f"functions the stack lacks: {functions_made - set(by_handler)}"
    assert set(recorder.unattributed_in_threads) <= {"lambda.Invoke", "s3.GetObject"}, (
        recorder.unattributed_in_threads
    )

    stack = satchel.stack
    names = {
        "Table": stack.table,
        "ArtifactsBucket": stack.artifact_bucket,
        "SourceBucket": stack.source_bucket,
    }
    datasets = {
        "DatasetTableArns": ",".join(dataset_arns(os.environ.get(settings.ENV_DATASETS, "{}"))),
    }
    for parameters in ({}, {"SourceBucketName": stack.source_bucket}):  # a bucket made, or one given
        resolver = Resolver(template, names, {**parameters, **datasets})
        policies = {
            handler: resolver.resolve(statements(template, role_of(template, function_id)))
            for handler, function_id in by_handler.items()
        }
        policies[STATE_MACHINE] = resolver.resolve(statements(template, "StateMachineRole"))
        refused = sorted(
            {
                f"{call.handler}: {call.service}.{call.operation} needs {request.action} "
                f"on {request.resource}" + (f" with {request.context_dict()}" if request.context else "")
                for call in recorder.calls
                for request in call.requests
                if not allows(
                    policies[call.handler], request.action, request.resource, request.context_dict()
                )
            }
        )
        assert not refused, "\n".join(refused)

    for handler, function_id in by_handler.items():
        granted = {
            action
            for statement in policies[handler]
            for action in (
                [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
            )
            if not action.startswith(("logs:", "xray:"))
        }
        unused = granted - made.get(handler, set()) - set(NOT_EXERCISED.get(handler, {}))
        assert not unused, f"{function_id} ({handler}) is granted actions it never used: {sorted(unused)}"
        assert set(NOT_EXERCISED.get(handler, {})) <= granted, (
            f"{handler}: NOT_EXERCISED names ungranted actions"
        )
        table = _table_arn(stack.table)
        unused_prefixes = unused_deletes(handler, policies[handler], recorder.calls, table)
        assert not unused_prefixes, (
            f"{function_id} ({handler}) may delete items it never deletes: {unused_prefixes}"
        )
