"""The deliver function's logic against a real loopback receiver, with the record store and
SQS as in-memory fakes: every delivery verified by Standard Webhooks' own verifier, retries
with backoff and jitter, the retry window and the dead-letter queue, the URL re-checked."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from botocore.exceptions import ClientError
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from chalicelib.core import clock
from chalicelib.core.models import Download, ErrorInfo, State
from chalicelib.core.settings import Settings
from chalicelib.notify import delivery, dispatch, events
from chalicelib.runtime import Runtime
from chalicelib.storage.deliveries import DELIVERED, FAILED, PENDING, Delivery
from tests.support import records
from tests.support.receiver import WEBHOOK_SECRET, Receiver, closed_port_url, verified

QUEUE = "https://sqs.example/deliveries"
DEAD_LETTERS = "https://sqs.example/deliveries-dead-letters"
SECOND_SECRET = "whsec_" + "c2Vjb25kLXNlY3JldC1vZi10aGUtcm90YXRpb24hIQ=="


class FakeDeliveries:
    """The DeliveryStore's interface, in memory."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], Delivery] = {}

    def record(self, new: Delivery, now_epoch: int) -> Delivery:
        return self.records.setdefault((new.download_id, new.event_id), new)

    def get(self, download_id: str, event_id: str) -> Delivery | None:
        return self.records.get((download_id, event_id))

    def mark_queued(self, found: Delivery) -> None:
        self._set(found, queued=True)

    def attempted(self, found: Delivery, *, state: str, status: int | None, error: str | None,
                  at: str, next_at: str | None) -> None:  # fmt: skip
        current = self.records[(found.download_id, found.event_id)]
        self._set(found, state=state, attempts=current.attempts + 1, last_status=status,
                  last_error=error, last_attempt_at=at, next_attempt_at=next_at)  # fmt: skip

    def give_up(self, found: Delivery, error: str) -> None:
        self._set(found, state=FAILED, last_error=error, next_attempt_at=None)

    def _set(self, found: Delivery, **fields: Any) -> None:
        key = (found.download_id, found.event_id)
        self.records[key] = dataclasses.replace(self.records[key], **fields)


class FakeSqs:
    def __init__(self) -> None:
        self.visibility: list[int] = []
        self.sent: list[tuple[str, str]] = []

    def change_message_visibility(self, QueueUrl: str, ReceiptHandle: str, VisibilityTimeout: int) -> None:
        assert (QueueUrl, ReceiptHandle) == (QUEUE, "receipt")
        self.visibility.append(VisibilityTimeout)

    def send_message(self, QueueUrl: str, MessageBody: str) -> None:
        self.sent.append((QueueUrl, MessageBody))


class OneSecret:
    def __init__(self, secret: str) -> None:
        self.secret = secret

    def signing(self, tenant: str, now: datetime) -> list[str]:
        return [self.secret]


KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/k"


class UnreadableSecret:
    """KMS refuses the decrypt (a key disabled or a grant revoked)."""

    def signing(self, tenant: str, now: datetime) -> list[str]:
        raise ClientError(
            {
                "Error": {
                    "Code": "DisabledException",
                    "Message": "arn:aws:kms:us-east-1:123456789012:key/k is disabled",
                }
            },
            "Decrypt",
        )


class Stand:
    """A runtime whose deliveries and queue are the fakes; the rest is never touched."""

    def __init__(self, secret: str = WEBHOOK_SECRET, **settings: Any) -> None:
        self.deliveries = FakeDeliveries()
        self.sqs = FakeSqs()
        self.settings = Settings(
            table="t",
            artifact_bucket="a",
            source_bucket="s",
            state_machine_arn="arn:aws:states:us-east-1:123456789012:stateMachine:m",
            deliveries_queue_url=QUEUE,
            deliveries_dead_letter_queue_url=DEAD_LETTERS,
            **{"callback_allow_loopback": True, **settings},
        )
        unused = cast(Any, None)
        self.runtime = Runtime(
            settings=self.settings,
            s3=unused,
            stepfunctions=unused,
            events=unused,
            sqs=cast(Any, self.sqs),
            downloads=unused,
            keys=unused,
            links=unused,
            idempotency=unused,
            audit=unused,
            identities=unused,
            deliveries=cast(Any, self.deliveries),
        )
        # Every tenant signs with `secret` (the real store reads the table and KMS).
        self.runtime.__dict__["webhook_secrets"] = OneSecret(secret)

    def owe(self, url: str, created: datetime | None = None) -> Delivery:
        event = events.of_download(finished_download(), "/api")
        owed = Delivery(
            download_id=event.download_id,
            event_id=event.id,
            type=event.type,
            tenant=event.tenant,
            url=url,
            body=event.body(),
            created_at=clock.iso(created or clock.now()),
        )
        return self.deliveries.record(owed, 0)

    def deliver(self, owed: Delivery, now: datetime | None = None, jitter: float = 1.0) -> delivery.Outcome:
        return delivery.deliver(
            self.runtime,
            owed.download_id,
            owed.event_id,
            "receipt",
            dispatch.message(owed),
            lambda top: top * jitter,
            now,
        )

    def current(self, owed: Delivery) -> Delivery:
        found = self.deliveries.get(owed.download_id, owed.event_id)
        assert found is not None
        return found


def finished_download(state: State = State.DONE) -> Download:
    return records.download(
        id="0123456789abcdef0123456789abcdef",
        state=state,
        finished_at="2026-11-29T10:01:00.000Z",
        expires_at="2026-11-29T11:01:00.000Z",
        error=ErrorInfo("SourceMissing", "gone") if state is State.FAILED else None,
        callback_url="http://127.0.0.1:1/hook",
        client_reference="order-42",
    )


def test_a_delivery_is_signed_per_standard_webhooks_and_recorded_delivered(receiver: Receiver) -> None:
    stand = Stand()
    owed = stand.owe(receiver.url)

    outcome = stand.deliver(owed)

    assert outcome.state == DELIVERED
    [call] = receiver.received
    payload = verified(call, WEBHOOK_SECRET)  # the reference verifier accepts it
    assert payload["type"] == "download.completed"
    assert payload["data"]["client_reference"] == "order-42"
    assert call.headers["webhook-id"] == f"{owed.download_id}.completed"
    assert call.headers["Content-Type"] == "application/json"
    assert call.body == owed.body.encode()
    record = stand.current(owed)
    assert (record.state, record.attempts, record.last_status, record.next_attempt_at) == (
        DELIVERED,
        1,
        204,
        None,
    )
    assert stand.sqs.visibility == []


def test_a_tampered_body_or_another_secret_does_not_verify(receiver: Receiver) -> None:
    stand = Stand()
    stand.deliver(stand.owe(receiver.url))
    [call] = receiver.received
    with pytest.raises(WebhookVerificationError):
        Webhook(WEBHOOK_SECRET).verify(call.body.replace(b"completed", b"cancelled"), call.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECOND_SECRET).verify(call.body, call.headers)
    with pytest.raises(WebhookVerificationError):  # the id is signed too
        Webhook(WEBHOOK_SECRET).verify(call.body, {**call.headers, "webhook-id": "other.completed"})


def test_during_a_rotation_both_secrets_sign_in_one_header(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand = Stand()

    class Rotating:
        def signing(self, tenant: str, now: datetime) -> list[str]:
            assert tenant == "acme"
            return [SECOND_SECRET, WEBHOOK_SECRET]

    monkeypatch.setattr(Runtime, "webhook_secrets", property(lambda runtime: Rotating()))
    stand.deliver(stand.owe(receiver.url))

    [call] = receiver.received
    assert len(call.headers["webhook-signature"].split(" ")) == 2
    assert all(part.startswith("v1,") for part in call.headers["webhook-signature"].split(" "))
    verified(call, WEBHOOK_SECRET)
    verified(call, SECOND_SECRET)


def test_a_failed_attempt_is_recorded_and_the_message_comes_back_after_a_backoff(
    receiver: Receiver,
) -> None:
    stand = Stand(delivery_base_delay_seconds=10, delivery_max_delay_seconds=45)
    receiver.statuses = [500, 503, 429, 500, 500]
    owed = stand.owe(receiver.url)
    start = clock.now()

    for attempt in range(5):
        outcome = stand.deliver(owed, start + timedelta(seconds=attempt))
        assert outcome.state == PENDING

    # Exponential from the base, capped at the maximum (the jitter here picks the top).
    assert stand.sqs.visibility == [10, 20, 40, 45, 45]
    record = stand.current(owed)
    assert (record.state, record.attempts, record.last_status, record.last_error) == (
        PENDING,
        5,
        500,
        "HTTP 500",
    )
    assert record.next_attempt_at == clock.iso(start + timedelta(seconds=4 + 45))
    assert stand.deliver(owed).state == DELIVERED  # the receiver is back: 204
    ids = {call.headers["webhook-id"] for call in receiver.wait_for(6)}
    assert ids == {owed.event_id}  # one id across every attempt: the receiver drops repeats
    assert stand.current(owed).attempts == 6


def test_the_jitter_spreads_the_delay_over_the_upper_half_of_its_ceiling() -> None:
    assert delivery.backoff(1, 30, 3600, lambda top: 0.0) == 15
    assert delivery.backoff(1, 1, 1, lambda top: 0.0) == 1  # never zero: SQS counts seconds
    assert delivery.backoff(3, 30, 3600, lambda top: top / 2) == 90
    assert delivery.backoff(40, 30, 3600, lambda top: top) == 3600
    spread = {delivery.backoff(5, 30, 3600) for _ in range(200)}
    assert 240 <= min(spread) <= max(spread) <= 480
    assert len(spread) > 20  # random, not one value


def test_by_default_the_window_not_the_attempt_budget_ends_the_retries() -> None:
    """Even if every delay drew the shortest jitter, the attempts would outlast the 26 h
    window: an event is retried for the whole window."""
    settings = Stand().settings
    assert settings.delivery_window_seconds >= 24 * 3600
    shortest = sum(
        delivery.backoff(
            attempt,
            settings.delivery_base_delay_seconds,
            settings.delivery_max_delay_seconds,
            lambda top: 0.0,
        )
        for attempt in range(1, settings.delivery_max_attempts)
    )
    assert shortest > settings.delivery_window_seconds


def test_a_receiver_that_is_down_is_retried_until_it_recovers() -> None:
    stand = Stand()
    owed = stand.owe(closed_port_url())
    outcome = stand.deliver(owed)
    assert outcome.state == PENDING
    assert outcome.answer is not None
    assert outcome.answer.error is not None
    assert "Connection" in outcome.answer.error
    assert stand.current(owed).last_status is None


def test_past_the_retry_window_the_event_is_dead_lettered(receiver: Receiver) -> None:
    stand = Stand(delivery_window_seconds=60)
    receiver.statuses = [500]
    created = clock.now() - timedelta(seconds=30)
    owed = stand.owe(receiver.url, created)
    assert stand.deliver(owed).state == PENDING

    outcome = stand.deliver(owed, created + timedelta(seconds=61))

    assert outcome.state == FAILED
    assert len(receiver.received) == 1  # no attempt once out of time
    record = stand.current(owed)
    assert (record.state, record.last_error, record.next_attempt_at) == (FAILED, "HTTP 500", None)
    [(queue, body)] = stand.sqs.sent
    assert queue == DEAD_LETTERS
    assert stand.deliver(owed).state == FAILED  # a repeat of the message sends nothing
    assert len(receiver.received) == 1
    assert json.loads(body) == {"download_id": owed.download_id, "event_id": owed.event_id}


def test_an_unreadable_secret_is_a_failed_attempt_backed_off_and_dead_lettered_in_time(
    receiver: Receiver,
) -> None:
    """Not an error that returns the message at every visibility timeout until the queue's
    receive limit: the backoff and the retry window apply, and nothing unsigned is sent."""
    stand = Stand(delivery_base_delay_seconds=10, delivery_window_seconds=60)
    stand.runtime.__dict__["webhook_secrets"] = UnreadableSecret()
    created = clock.now()
    owed = stand.owe(receiver.url, created)

    outcome = stand.deliver(owed, created)

    assert outcome.state == PENDING
    assert stand.sqs.visibility == [10]
    record = stand.current(owed)
    assert (record.attempts, record.last_status) == (1, None)
    assert record.last_error == "not sent: the signing secret could not be read"  # no AWS internals
    assert stand.deliver(owed, created + timedelta(seconds=61)).state == FAILED
    [(queue, _)] = stand.sqs.sent
    assert queue == DEAD_LETTERS
    assert receiver.received == []


def test_out_of_attempts_the_event_is_dead_lettered(receiver: Receiver) -> None:
    stand = Stand(delivery_max_attempts=2)
    receiver.statuses = [500, 500]
    owed = stand.owe(receiver.url)
    assert [stand.deliver(owed).state for _ in range(3)] == [PENDING, PENDING, FAILED]
    assert len(receiver.received) == 2
    assert [queue for queue, _ in stand.sqs.sent] == [DEAD_LETTERS]


class FailingSends(FakeSqs):
    """SQS refuses the first `failures` sends (throttled)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def send_message(self, QueueUrl: str, MessageBody: str) -> None:
        if self.failures:
            self.failures -= 1
            raise ClientError(
                {"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "SendMessage"
            )
        super().send_message(QueueUrl, MessageBody)


def test_a_dead_letter_that_could_not_be_sent_is_sent_by_the_next_receipt(receiver: Receiver) -> None:
    """Giving up is the dead letter first, then the record: a send that failed leaves the
    record pending, so the message's next receipt gives up again and the alarm hears of it
    (the other way round, the record said failed and no receipt ever sent the dead letter)."""
    stand = Stand(delivery_max_attempts=1)
    failing = FailingSends(1)
    stand.sqs = failing
    stand.runtime = dataclasses.replace(stand.runtime, sqs=cast(Any, failing))
    stand.runtime.__dict__["webhook_secrets"] = OneSecret(WEBHOOK_SECRET)
    receiver.statuses = [500]
    owed = stand.owe(receiver.url)
    assert stand.deliver(owed).state == PENDING

    with pytest.raises(ClientError):
        stand.deliver(owed)
    assert stand.current(owed).state == PENDING

    assert stand.deliver(owed).state == FAILED
    assert [queue for queue, _ in failing.sent] == [DEAD_LETTERS]
    assert len(receiver.received) == 1


def test_a_delivered_event_is_never_sent_again(receiver: Receiver) -> None:
    stand = Stand()
    owed = stand.owe(receiver.url)
    assert stand.deliver(owed).state == DELIVERED
    assert stand.deliver(owed).state == DELIVERED
    assert len(receiver.received) == 1


def test_a_url_refused_at_delivery_is_final_and_never_called(monkeypatch: pytest.MonkeyPatch) -> None:
    stand = Stand(callback_allow_loopback=False)
    owed = stand.owe("http://127.0.0.1:9/hook")  # fine where it was checked; not here
    outcome = stand.deliver(owed)
    assert outcome.state == FAILED
    record = stand.current(owed)
    assert record.last_error is not None
    assert "loopback" in record.last_error
    assert stand.sqs.visibility == []


def test_a_batch_reports_only_the_messages_to_retry(receiver: Receiver) -> None:
    stand = Stand()
    good = stand.owe(receiver.url)
    receiver.statuses = [204]
    failing = dataclasses.replace(good, event_id=f"{good.download_id}.failed", url=closed_port_url())
    stand.deliveries.record(failing, 0)

    def record(message_id: str, owed: Delivery) -> dict[str, Any]:
        body = json.dumps({"download_id": owed.download_id, "event_id": owed.event_id})
        return {"messageId": message_id, "receiptHandle": "receipt", "body": body, "attributes": {}}

    garbage = {"messageId": "m3", "receiptHandle": "receipt", "body": "not json", "attributes": {}}
    answer = delivery.handle_messages(
        stand.runtime, [record("m1", good), record("m2", failing), garbage], lambda top: top
    )

    assert answer == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    assert stand.current(good).state == DELIVERED
    assert stand.current(failing).state == PENDING


@pytest.mark.parametrize(
    ("state", "kind", "suffix"),
    [
        (State.DONE, "download.completed", "completed"),
        (State.FAILED, "download.failed", "failed"),
        (State.CANCELLED, "download.cancelled", "cancelled"),
        (State.EXPIRED, "download.expired", "expired"),
    ],
)
def test_each_terminal_state_has_its_event(state: State, kind: str, suffix: str) -> None:
    download = finished_download(state)
    event = events.of_download(download, "/api")
    assert (event.type, event.id) == (kind, f"{download.id}.{suffix}")
    assert kind in events.TYPES
    assert set(event.data) == {
        "id", "type", "tenant", "user_id", "state", "error", "created_at",
        "finished_at", "expires_at", "url", "client_reference",
    }  # fmt: skip
    assert event.data["url"] == (f"/api/downloads/{download.id}/file" if state is State.DONE else None)
    # Deterministic: the same event built again is byte-equal (same id, timestamp, body).
    assert events.of_download(download, "/api").body() == event.body()
    assert event.timestamp == (download.expires_at if state is State.EXPIRED else download.finished_at)


def test_an_active_download_has_no_event() -> None:
    with pytest.raises(ValueError, match="no event"):
        events.of_download(finished_download(State.RUNNING))


def test_the_link_claimed_event() -> None:
    event = events.link_claimed(finished_download(), "link123", 2, "2026-11-29T10:05:00.000Z")
    assert event.id == "link123.claimed.2"
    assert event.payload() == {
        "type": "link.claimed",
        "timestamp": "2026-11-29T10:05:00.000Z",
        "data": {
            "link_id": "link123",
            "download_id": "0123456789abcdef0123456789abcdef",
            "tenant": "acme",
            "user_id": "alice",
            "claimed_at": "2026-11-29T10:05:00.000Z",
            "use": 2,
            "client_reference": "order-42",
        },
    }
