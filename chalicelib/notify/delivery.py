"""The `deliver` function: webhooks sent from the deliveries queue, signed per Standard Webhooks 1.0.

Each message names a delivery record (chalicelib/storage/deliveries.py), which holds the
event's body and the delivery's state; a message for a record already delivered or given
up on is dropped, so a repeated message sends nothing. One attempt per receipt:

- the URL is checked again (chalicelib/notify/callbacks.py: DNS may have changed since the
  download was created) and the request goes to the checked address; a refused URL is final;
- headers `webhook-id` (the event's id, the same at every attempt), `webhook-timestamp`
  (this attempt's) and `webhook-signature`: `v1,<base64>` per signing secret of the tenant,
  space-separated (two during a rotation), over `id.timestamp.body`;
- one wall-clock budget for the whole attempt, and at most 4 KiB of the answer read;
- a 2xx answer is delivered. Anything else (no answer in time, no connection, any other
  status) is tried again: the message is made visible again after an exponential backoff
  with jitter (ChangeMessageVisibility) and reported as a batch item failure. Once the
  event is older than the retry window, or out of attempts, the record is marked failed, the
  message goes to the dead-letter queue (alarmed) and is deleted.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.core import clock
from chalicelib.core.errors import ConfigurationError, InvalidCallbackUrl
from chalicelib.notify import callbacks
from chalicelib.storage.deliveries import DELIVERED, FAILED, FINAL_STATES, PENDING, Delivery

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from chalicelib.runtime import Runtime

log = logging.getLogger(__name__)

USER_AGENT = "Satchel-Webhooks/1"


class RetryLater(Exception):
    """The attempt failed and the message was made visible again later: a batch item failure."""


@dataclass(frozen=True)
class Outcome:
    state: str  # the record's state after this receipt
    answer: callbacks.Answer | None = None


def handle_messages(
    runtime: Runtime, records: Iterable[dict[str, Any]], jitter: Callable[[float], float] | None = None
) -> PartialItemFailureResponse:
    """An SQS batch from the deliveries queue: one attempt per message; the messages to try
    again are reported as batch item failures (the event source has ReportBatchItemFailures)."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType

    processor = BatchProcessor(EventType.SQS, raise_on_entire_batch_failure=False)
    with processor(list(records), functools.partial(_handle_message, runtime, jitter)):
        processor.process()
    return processor.response()


def _handle_message(runtime: Runtime, jitter: Callable[[float], float] | None, record: SQSRecord) -> str:
    try:
        named = json.loads(record.body)
        download_id, event_id = str(named["download_id"]), str(named["event_id"])
    except (ValueError, KeyError, TypeError):
        log.warning("dropped message %s: it names no delivery", record.message_id)
        return "dropped"
    outcome = deliver(runtime, download_id, event_id, record.receipt_handle, record.body, jitter)
    if outcome.state == PENDING:
        raise RetryLater(f"event {event_id}: {outcome.answer}")
    return outcome.state


def deliver(
    runtime: Runtime,
    download_id: str,
    event_id: str,
    receipt_handle: str,
    body: str,
    jitter: Callable[[float], float] | None = None,
    now: datetime | None = None,
) -> Outcome:
    """One receipt of a message: an attempt, unless the delivery is final or out of time."""
    delivery = runtime.deliveries.get(download_id, event_id)
    if delivery is None:
        log.info("delivery %s of download %s is gone; nothing to send", event_id, download_id)
        return Outcome("gone")
    if delivery.state in FINAL_STATES:
        return Outcome(delivery.state)
    settings = runtime.settings
    now = now or clock.now()
    if _out_of_time(runtime, delivery, now):
        _dead_letter(runtime, delivery, body, f"not delivered after {delivery.attempts} attempts")
        return Outcome(FAILED)
    answer = attempt(runtime, delivery, now)
    at = clock.iso(now)
    if answer.delivered:
        runtime.deliveries.attempted(
            delivery, state=DELIVERED, status=answer.status, error=None, at=at, next_at=None
        )
        log.info("delivered event %s", event_id, extra={"attempts": delivery.attempts + 1})
        return Outcome(DELIVERED, answer)
    if answer.status is None and answer.error and answer.error.startswith(_REFUSED):
        runtime.deliveries.attempted(
            delivery, state=FAILED, status=None, error=answer.error, at=at, next_at=None
        )
        log.warning("event %s not delivered: %s", event_id, answer.error)
        return Outcome(FAILED, answer)
    delay = backoff(
        delivery.attempts + 1,
        settings.delivery_base_delay_seconds,
        settings.delivery_max_delay_seconds,
        jitter,
    )
    error = answer.error or f"HTTP {answer.status}"
    next_at = clock.iso(now + timedelta(seconds=delay))
    runtime.deliveries.attempted(
        delivery, state=PENDING, status=answer.status, error=error, at=at, next_at=next_at
    )
    if settings.deliveries_queue_url:
        runtime.sqs.change_message_visibility(
            QueueUrl=settings.deliveries_queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=delay
        )
    log.info("event %s not delivered (%s); next attempt in %d s", event_id, error, delay)
    return Outcome(PENDING, answer)


_REFUSED = "refused: "
# What the owner sees as the attempt's error: never the AWS error itself (it is logged).
_UNSIGNED = "not sent: the signing secret could not be read"


def attempt(runtime: Runtime, delivery: Delivery, now: datetime) -> callbacks.Answer:
    """Check the URL, sign, and POST once; the answer (never raised for the receiver's sake)."""
    settings = runtime.settings
    try:
        target = callbacks.check(
            delivery.url, settings.callback_allow_loopback, settings.callback_port_numbers
        )
    except InvalidCallbackUrl as refused:
        return callbacks.Answer(None, f"{_REFUSED}{refused.message}")
    try:
        secrets = runtime.webhook_secrets.signing(delivery.tenant, now)
    except (BotoCoreError, ClientError, ConfigurationError):
        # The table or KMS did not answer, or refused (a key disabled, a grant revoked): a
        # failed attempt like any other, so the backoff and the retry window apply, and the
        # event is dead-lettered in time instead of coming back at every visibility timeout.
        log.exception("the signing secret of tenant %s could not be read", delivery.tenant)
        return callbacks.Answer(None, _UNSIGNED)
    if not secrets:
        return callbacks.Answer(None, "not sent: the tenant has no signing secret")
    body = delivery.body.encode("utf-8")
    headers = signed_headers(secrets, delivery, now)
    return callbacks.post(target, body, headers, settings.delivery_budget_seconds)


def signed_headers(secrets: list[str], delivery: Delivery, now: datetime) -> dict[str, str]:
    """Standard Webhooks' headers: one `v1,` signature per secret, space-separated."""
    from standardwebhooks import Webhook  # deferred: only the deliver function signs

    if not secrets:
        raise LookupError(f"no signing secret for tenant {delivery.tenant}")
    signatures = [Webhook(secret).sign(delivery.event_id, now, delivery.body) for secret in secrets]
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": delivery.event_id,
        "webhook-timestamp": str(math.floor(now.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


def backoff(
    attempts: int, base_seconds: int, max_seconds: int, jitter: Callable[[float], float] | None = None
) -> int:
    """Seconds before the next attempt, after `attempts` failed ones: exponential (base,
    2 x base, 4 x base, ...) capped at `max_seconds`, with jitter over the upper half of that
    ("equal jitter": between half of it and all of it), so receivers coming back from an
    outage are not hit by every sender at once. The lower bound keeps the attempt budget
    from being spent early: with the defaults the retry window, not the budget, ends retries.
    `jitter(top)` picks a value from 0 to `top` (random unless given)."""
    ceiling = min(max_seconds, base_seconds * (1 << min(attempts - 1, 30)))
    pick: Callable[[float], float] = jitter or (lambda top: random.uniform(0, top))  # not a secret
    return max(1, min(max_seconds, math.ceil(ceiling / 2 + pick(ceiling / 2))))


def _out_of_time(runtime: Runtime, delivery: Delivery, now: datetime) -> bool:
    settings = runtime.settings
    age = (now - clock.parse(delivery.created_at)).total_seconds()
    return age > settings.delivery_window_seconds or delivery.attempts >= settings.delivery_max_attempts


def _dead_letter(runtime: Runtime, delivery: Delivery, body: str, reason: str) -> None:
    """Give up: the message goes to the dead-letter queue (its alarm tells the operator), the
    record says failed, and the message is deleted from the queue (the handler returns
    normally). In that order: if either write fails, the message comes back with the record
    still pending and the next receipt gives up again (the dead letter at least once); the
    other way round, a failed send would leave a failed record that no receipt dead-letters."""
    queue = runtime.settings.deliveries_dead_letter_queue_url
    if queue:
        runtime.sqs.send_message(QueueUrl=queue, MessageBody=body)
    runtime.deliveries.give_up(delivery, delivery.last_error or reason)
    log.warning("gave up on event %s after %d attempts", delivery.event_id, delivery.attempts)
