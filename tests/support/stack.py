"""Fixtures: the whole stack in moto (real ASL, real handlers), a Chalice test client,
and a driver that speaks the API as the seeded users."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

from app import app
from chalicelib.core import clients
from chalicelib.storage.keys import KeyStore
from chalicelib.storage.secrets import WebhookSecrets
from chalicelib.workflow.progress import ProgressTracker
from satchel_local import lambdas
from satchel_local.seed import PRINCIPALS, seed_webhook_secrets
from satchel_local.stack import MOTO_CONFIG, REGION, Stack, provision

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_s3.client import S3Client

USERS = PRINCIPALS  # alice and bob (acme), carol (acme admin), dave (globex)
TERMINAL = {"DONE", "FAILED", "CANCELLED", "EXPIRED"}
# The test stage's signing secret (.chalice/config.json).


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    dummy_aws_environment(monkeypatch)


def dummy_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    with running_stack(monkeypatch) as created:
        yield created


@contextlib.contextmanager
def running_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """The stack in moto, for as long as the block runs (a test, or a module of tests)."""
    lambdas.install()
    with mock_aws(config=cast(Any, MOTO_CONFIG)):
        clients.reset()
        created = provision("test")
        for name, value in created.environment().items():
            monkeypatch.setenv(name, value)
        # As the test stage in .chalice/config.json sets them: the Lambda dispatch reads
        # os.environ, which the test client only overlays during its own calls.
        monkeypatch.setenv("SATCHEL_STAGE", "test")
        monkeypatch.setenv("SATCHEL_CALLBACK_ALLOW_LOOPBACK", "true")
        monkeypatch.setenv("SATCHEL_DELIVERY_BASE_DELAY_SECONDS", "1")
        keys = KeyStore(clients.table(created.table))
        for name, principal in USERS.items():
            keys.add(api_key_of(name), principal)
        # Each test tenant's signing secret, as its admin made it: stack.webhook_secrets["acme"].
        store = WebhookSecrets(clients.table(created.table), clients.kms(), created.kms_key_id)
        created = dataclasses.replace(created, webhook_secrets=seed_webhook_secrets(store))
        try:
            yield created
        finally:
            _stop_everything(created)
            clients.reset()


def _stop_everything(created: Stack) -> None:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    running = sfn.list_executions(stateMachineArn=created.state_machine_arn, statusFilter="RUNNING")
    for execution in running["executions"]:
        # moto fails to stop an execution that ends meanwhile (its worker is gone): let it end.
        with contextlib.suppress(Exception):
            sfn.stop_execution(executionArn=execution["executionArn"])
    lambdas.wait_idle(timeout=30)


def api_key_of(user: str) -> str:
    return f"test-key-{user}-0123456789abcdef"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class Satchel:
    """The API as the seeded users see it."""

    def __init__(self, client: Client, stack: Stack) -> None:
        self.client = client
        self.stack = stack
        self.s3 = boto3.client("s3", region_name=REGION)

    def call(
        self,
        method: str,
        path: str,
        user: str | None = "alice",
        body: Any = None,
        raw: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        headers = {"Content-Type": "application/json", **(headers or {})}
        if user is not None:
            headers["Authorization"] = f"Bearer {api_key_of(user)}"
        payload = raw if raw is not None else (json.dumps(body) if body is not None else None)
        http = self.client.http
        response = getattr(http, method.lower())(path, headers=headers, body=payload)
        return Reply(response.status_code, dict(response.headers), response.body)

    def create(self, params: dict[str, Any], user: str = "alice", **extra: Any) -> Reply:
        return self.call("POST", "/downloads", user, {"type": "zip", "params": params, **extra})

    def put_source(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=self.stack.source_bucket, Key=key, Body=body)

    def wait(
        self, download_id: str, user: str = "alice", until: set[str] = TERMINAL, timeout: float = 60
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            reply = self.call("GET", f"/downloads/{download_id}", user)
            assert reply.status == 200, reply.body
            if reply.json["state"] in until:
                if until is TERMINAL:
                    self.wait_execution(download_id, deadline - time.monotonic())
                    # Read again: moto applies an update's actions one by one, unlocked, so
                    # a read racing the last write may have seen it half done.
                    reply = self.call("GET", f"/downloads/{download_id}", user)
                return reply.json
            if time.monotonic() > deadline:
                raise AssertionError(f"download {download_id} still {reply.json['state']}")
            time.sleep(0.05)

    def wait_for_bytes(self, download_id: str, timeout: float = 60) -> Any:
        """The download once its build is writing bytes (or once it has left RUNNING), polled
        at the pace of `wait`: a tight loop of reads would starve the build of moto's DynamoDB,
        which every stack serialises (satchel_local/serialise.py)."""
        deadline = time.monotonic() + timeout
        while True:
            download = self.wait(download_id, until={"RUNNING", "DONE", "FAILED"}, timeout=timeout)
            if download["state"] != "RUNNING" or download["progress"]["bytes_done"] > 0:
                return download
            if time.monotonic() > deadline:
                raise AssertionError(f"download {download_id} wrote no bytes in {timeout} s")
            time.sleep(0.05)

    def wait_execution(self, download_id: str, timeout: float) -> str:
        """Wait for the workflow itself to end, not only the record (Fail runs after FAILED)."""
        sfn = boto3.client("stepfunctions", region_name=REGION)
        arn = self.stack.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{download_id}"
        deadline = time.monotonic() + max(timeout, 1)
        while True:
            status: str = sfn.describe_execution(executionArn=arn)["status"]
            if status != "RUNNING" or time.monotonic() > deadline:
                return status
            time.sleep(0.05)

    def open_uploads(self) -> list[Any]:
        uploads: list[Any] = self.s3.list_multipart_uploads(Bucket=self.stack.artifact_bucket).get(
            "Uploads", []
        )
        return uploads

    def artifact_objects(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.stack.artifact_bucket).get("Contents", [])
        return [item["Key"] for item in listed]


@pytest.fixture
def satchel(stack: Stack) -> Iterator[Satchel]:
    with Client(app, stage_name="test") as client:
        yield Satchel(client, stack)


@pytest.fixture
def slow_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small chunks and frequent progress writes: a build long enough to act on midway."""
    monkeypatch.setenv("SATCHEL_READ_CHUNK_BYTES", str(64 * 1024))
    monkeypatch.setenv("SATCHEL_PROGRESS_EVERY_BYTES", str(64 * 1024))
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * 1024 * 1024))


@pytest.fixture
def build_held_midway(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """The build waits after its first progress write with bytes in it until the test sets
    the event it is given: whatever the machine's load, what the test does meanwhile (a
    cancel, a sweep) then finds the build under way, not finished."""
    released = threading.Event()
    recorded = ProgressTracker.flush

    def flush(self: ProgressTracker) -> None:
        recorded(self)
        if self.current.bytes_done and not released.is_set():
            assert released.wait(60), "the test never released the build"

    monkeypatch.setattr(ProgressTracker, "flush", flush)
    return released


@pytest.fixture
def s3() -> Iterator[S3Client]:
    """A bare moto S3 with one bucket, `bucket`, for tests of the S3 plumbing alone."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="bucket")
        yield client
