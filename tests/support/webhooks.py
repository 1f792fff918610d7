"""Driving the deliveries queue in the stack fixture, as Lambda's SQS event source does for the
deployed `deliver` function: poll, invoke with the batch, delete what did not fail."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import boto3

from chalicelib.runtime import Runtime
from chalicelib.storage.deliveries import Delivery
from satchel_local import eventsources
from satchel_local.stack import REGION, Stack
from statemachine.definition import function_name


def poller(stack: Stack, halt: threading.Event | None = None) -> eventsources.SqsEventSource:
    return eventsources.SqsEventSource(
        "deliveries-queue",
        halt or threading.Event(),
        stack.deliveries_queue_url,
        function_name(stack.stage, "deliver"),
    )


def deliver_queued(stack: Stack) -> int:
    """Invoke `deliver` with what the queue holds now, until a receive finds nothing visible."""
    source, handled = poller(stack), 0
    while count := source.poll_once():
        handled += count
    return handled


def deliver_until(stack: Stack, done: Callable[[], bool], timeout: float = 30) -> None:
    """Keep polling (each receive waits up to a second for a message to become visible again
    after its backoff) until `done()` holds."""
    source = poller(stack)
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the condition never held"
        source.poll_once()


def deliveries(download_id: str) -> list[Delivery]:
    return Runtime.from_env().deliveries.of_download(download_id)


def queue_counts(url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue."""
    attributes: dict[str, Any] = boto3.client("sqs", region_name=REGION).get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )
