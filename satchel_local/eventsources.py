"""Lambda's event sources, emulated: queues polled into functions, and a schedule.

Deployed, Lambda polls the requests queue for the `requests` function, EventBridge invokes
the `events` function (request bus) and the `manifests` function (S3's events on the default
bus), and a schedule invokes `cleanup`. moto does none of it the way
Lambda does: its own SQS event source mapping runs inside SendMessage and ignores
batchItemFailures, its EventBridge delivers to queues but never to functions, and it runs
no schedules. So here:

- the requests queue is polled as Lambda's SQS event source mapping polls it: a long poll
  for up to ten messages, one invocation with the batch, then only the messages not named
  in batchItemFailures are deleted. A failed message becomes visible again once its
  visibility timeout passes, and the queue's redrive policy dead-letters it in the end;
- the queue the request bus's rule delivers to is polled into the `events` function, one
  event per invocation as EventBridge invokes it; an event whose invocation fails stays
  in the queue to be tried again, then dead-lettered; the manifests' queue is polled into
  the `manifests` function the same way;
- the deliveries queue is polled into the `deliver` function as the requests queue is: a
  message it retries later was made invisible by the function itself (its backoff);
- `cleanup` is invoked every few seconds with a scheduled event.

Every invocation goes through moto's Lambda Invoke, so it reaches the real handler by
the same dispatch as the workflow's steps (satchel_local.lambdas).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.config import Config

from chalicelib.core import clients
from satchel_local.stack import Stack
from statemachine.definition import function_name

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_lambda.client import LambdaClient
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_sqs.type_defs import (
        DeleteMessageBatchRequestEntryTypeDef,
        MessageAttributeValueOutputTypeDef,
        MessageTypeDef,
    )

log = logging.getLogger(__name__)

BATCH_SIZE = 10  # what app.py declares for the requests function, and SQS's maximum
# A long poll this short still answers as soon as a message arrives; it bounds how long a
# stop waits for a poller to notice.
_WAIT_SECONDS = 1
_PAUSE_AFTER_ERROR_SECONDS = 1.0
# Lambda's Invoke waits for the handler however long it runs (up to its timeout); an Invoke
# is never retried: a retry would run the handler twice.
_INVOKE_CONFIG = Config(read_timeout=960, connect_timeout=5, retries={"total_max_attempts": 1})


def _invoke(lambdas: LambdaClient, function: str, event: dict[str, Any]) -> tuple[Any, str | None]:
    """Invoke synchronously: (the decoded payload, the FunctionError or None)."""
    response = lambdas.invoke(FunctionName=function, Payload=json.dumps(event).encode("utf-8"))
    raw = response["Payload"].read()
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = raw.decode("utf-8", errors="replace")
    return payload, response.get("FunctionError")


def _message_attribute(value: MessageAttributeValueOutputTypeDef) -> dict[str, Any]:
    """An SQS message attribute as Lambda's SQS event spells it."""
    attribute: dict[str, Any] = {
        "stringListValues": value.get("StringListValues", []),
        "binaryListValues": [
            base64.b64encode(item).decode("ascii") for item in value.get("BinaryListValues", [])
        ],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        attribute["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode("ascii")
    return attribute


def sqs_record(message: MessageTypeDef, queue_arn: str) -> dict[str, Any]:
    """A received message as one of the Records Lambda hands an SQS-triggered function."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: _message_attribute(value) for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": queue_arn.split(":")[3],
    }


def failed_message_ids(message_ids: Iterable[str], payload: Any, function_error: str | None) -> set[str]:
    """The messages Lambda leaves in the queue after the function answered a batch so.

    As Lambda reads a partial batch response: an error, an answer that is not an object, or
    a failure naming no message of the batch fails the whole batch; no answer, an empty
    object or an empty (or null) batchItemFailures means every message succeeded.
    """
    batch = set(message_ids)
    if function_error is not None:
        return batch
    if payload is None:
        return set()
    if not isinstance(payload, dict):
        return batch
    failures = payload.get("batchItemFailures") or []
    if not isinstance(failures, list):
        return batch
    failed: set[str] = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(identifier, str) or identifier not in batch:
            return batch
        failed.add(identifier)
    return failed


def scheduled_event(rule_arn: str, now: datetime | None = None) -> dict[str, Any]:
    """What EventBridge's scheduler sends a function on each tick of a rate rule."""
    arn = rule_arn.split(":")
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": arn[4],
        "time": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": arn[3],
        "resources": [rule_arn],
        "detail": {},
    }


class _Worker:
    """Runs `step` in a thread until asked to stop; an error is logged and retried after a pause."""

    def __init__(self, name: str, halt: threading.Event) -> None:
        self.name = name
        self._halt = halt
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                self.step()
            except Exception:  # a poller outlives any one failure, as Lambda's does
                log.exception("%s failed; trying again", self.name)
                self._halt.wait(_PAUSE_AFTER_ERROR_SECONDS)

    def step(self) -> None:
        raise NotImplementedError


class _QueuePoller(_Worker):
    def __init__(self, name: str, halt: threading.Event, queue_url: str, function: str) -> None:
        super().__init__(name, halt)
        # Clients are made here, in the starting thread: creating them is not thread-safe.
        self._sqs: SQSClient = clients.session().client("sqs")
        self._lambda: LambdaClient = clients.session().client("lambda", config=_INVOKE_CONFIG)
        self.queue_url = queue_url
        self.function = function
        self.queue_arn: str = self._sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]

    def _receive(self) -> list[MessageTypeDef]:
        received = self._sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=BATCH_SIZE,
            WaitTimeSeconds=_WAIT_SECONDS,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return received.get("Messages", [])

    def _delete(self, messages: list[MessageTypeDef]) -> None:
        if not messages:
            return
        entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
            {"Id": str(index), "ReceiptHandle": m["ReceiptHandle"]} for index, m in enumerate(messages)
        ]
        answer = self._sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        for failure in answer.get("Failed", []):
            log.warning("%s: could not delete a message: %s", self.name, failure.get("Message"))


class SqsEventSource(_QueuePoller):
    """Lambda's SQS event source mapping, with ReportBatchItemFailures."""

    def step(self) -> None:
        self.poll_once()

    def poll_once(self) -> int:
        """One receive and one invocation with what came: how many messages that was."""
        messages = self._receive()
        if not messages:
            return 0
        event = {"Records": [sqs_record(message, self.queue_arn) for message in messages]}
        payload, error = _invoke(self._lambda, self.function, event)
        failed = failed_message_ids((m["MessageId"] for m in messages), payload, error)
        if error is not None:
            log.warning(
                "%s: %s failed on a batch of %d: %s", self.name, self.function, len(messages), payload
            )
        elif failed:
            log.info(
                "%s: %d of %d messages failed; they will be retried", self.name, len(failed), len(messages)
            )
        self._delete([m for m in messages if m["MessageId"] not in failed])
        return len(messages)


class EventBridgeTarget(_QueuePoller):
    """EventBridge invoking a function with each event its rules matched, one at a time."""

    def step(self) -> None:
        for message in self._receive():
            if self._halt.is_set():
                return  # the rest become visible again and wait for the next start
            try:
                event = json.loads(message["Body"])
            except ValueError:
                log.warning("%s: not an event, left to be dead-lettered: %.200s", self.name, message["Body"])
                continue
            # moto drops `account` when it renders an event for a target; EventBridge always
            # sends it, and Chalice's CloudWatchEvent requires it.
            event.setdefault("account", self.queue_arn.split(":")[4])
            payload, error = _invoke(self._lambda, self.function, event)
            if error is not None:
                log.warning(
                    "%s: %s failed on event %s: %s", self.name, self.function, event.get("id"), payload
                )
                continue
            self._delete([message])


class Schedule(_Worker):
    """A rate rule invoking a function every `interval` seconds."""

    def __init__(
        self, name: str, halt: threading.Event, function: str, interval: float, rule_arn: str
    ) -> None:
        super().__init__(name, halt)
        self._lambda: LambdaClient = clients.session().client("lambda", config=_INVOKE_CONFIG)
        self.function = function
        self.interval = interval
        self.rule_arn = rule_arn

    def step(self) -> None:
        if self._halt.wait(self.interval):
            return
        payload, error = _invoke(self._lambda, self.function, scheduled_event(self.rule_arn))
        if error is not None:
            log.warning("%s: %s failed: %s", self.name, self.function, payload)


class EventSources:
    """The pollers and the schedule of one stack, started and stopped together."""

    def __init__(self, stack: Stack, cleanup_interval: float) -> None:
        self._halt = threading.Event()
        account, region = stack.state_machine_arn.split(":")[4], stack.state_machine_arn.split(":")[3]
        self.workers: list[_Worker] = [
            SqsEventSource(
                "requests-queue", self._halt, stack.requests_queue_url, function_name(stack.stage, "requests")
            ),
            EventBridgeTarget(
                "events-queue", self._halt, stack.events_queue_url, function_name(stack.stage, "events")
            ),
            EventBridgeTarget(
                "manifests-queue",
                self._halt,
                stack.manifests_queue_url,
                function_name(stack.stage, "manifests"),
            ),
            SqsEventSource(
                "deliveries-queue",
                self._halt,
                stack.deliveries_queue_url,
                function_name(stack.stage, "deliver"),
            ),
        ]
        if cleanup_interval > 0:
            rule = f"arn:aws:events:{region}:{account}:rule/{function_name(stack.stage, 'cleanup')}"
            self.workers.append(
                Schedule(
                    "cleanup-schedule",
                    self._halt,
                    function_name(stack.stage, "cleanup"),
                    cleanup_interval,
                    rule,
                )
            )

    def start(self) -> None:
        for worker in self.workers:
            worker.thread.start()

    def request_stop(self) -> None:
        """Ask every worker to stop after what it is doing; returns at once."""
        self._halt.set()

    def join(self, timeout: float) -> bool:
        """Stop, and wait up to `timeout` seconds in all; whether every worker has stopped."""
        self.request_stop()
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        return not any(worker.thread.is_alive() for worker in self.workers)
