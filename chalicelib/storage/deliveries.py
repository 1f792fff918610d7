"""Webhook deliveries: one record per event owed to a download's callback URL.

The record is the delivery's state (the queue message only names it), so a message sent or
received twice changes nothing: the `deliver` function reads the record first and skips
an event already delivered or given up on. Records sit under their download
(layout.delivery_key), where its owner lists them; DynamoDB's TTL removes them after the
download's record retention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.core.models import plain
from chalicelib.storage import layout
from chalicelib.storage.queries import query_pages

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"  # given up on: refused URL, or out of attempts or time
FINAL_STATES = frozenset({DELIVERED, FAILED})

# Shown to the owner (GET /downloads/{id}/deliveries); never the secret, never the body.
API_FIELDS = (
    "event_id",
    "type",
    "state",
    "url",
    "attempts",
    "last_status",
    "last_error",
    "last_attempt_at",
    "next_attempt_at",
    "created_at",
)


@dataclass(frozen=True)
class Delivery:
    download_id: str
    event_id: str
    type: str
    tenant: str
    url: str
    body: str  # the exact payload sent (and signed) at every attempt
    created_at: str
    state: str = PENDING
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None
    last_attempt_at: str | None = None
    next_attempt_at: str | None = None
    # Set once its queue message was sent: a repeat of the recording step then sends none.
    queued: bool = False

    def to_api(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in API_FIELDS}

    @classmethod
    def from_item(cls, raw: dict[str, Any]) -> Delivery:
        item = plain(raw)
        return cls(
            download_id=item["download_id"],
            event_id=item["event_id"],
            type=item["type"],
            tenant=item["tenant"],
            url=item["url"],
            body=item["body"],
            created_at=item["created_at"],
            state=item.get("state", PENDING),
            attempts=int(item.get("attempts", 0)),
            last_status=item.get("last_status"),
            last_error=item.get("last_error"),
            last_attempt_at=item.get("last_attempt_at"),
            next_attempt_at=item.get("next_attempt_at"),
            queued=bool(item.get("queued", False)),
        )


def _conditional_failure(error: ClientError) -> bool:
    return bool(error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")


class DeliveryStore:
    def __init__(self, table: Table, retention_seconds: int) -> None:
        self._table = table
        self._retention_seconds = retention_seconds

    def record(self, delivery: Delivery, now_epoch: int) -> Delivery:
        """Store a new delivery, once per event: the one already stored if there is one."""
        item: dict[str, Any] = {
            **layout.delivery_key(delivery.download_id, delivery.event_id),
            "download_id": delivery.download_id,
            "event_id": delivery.event_id,
            "type": delivery.type,
            "tenant": delivery.tenant,
            "url": delivery.url,
            "body": delivery.body,
            "created_at": delivery.created_at,
            "state": delivery.state,
            "attempts": 0,
            layout.TTL: now_epoch + self._retention_seconds,
        }
        try:
            self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as error:
            if not _conditional_failure(error):
                raise
            existing = self.get(delivery.download_id, delivery.event_id)
            if existing is not None:
                return existing
            raise
        return delivery

    def get(self, download_id: str, event_id: str) -> Delivery | None:
        found = self._table.get_item(Key=layout.delivery_key(download_id, event_id), ConsistentRead=True)
        item = found.get("Item")
        return Delivery.from_item(item) if item else None

    def of_download(self, download_id: str) -> list[Delivery]:
        query = {
            "KeyConditionExpression": f"{layout.PK} = :pk",
            "ExpressionAttributeValues": {":pk": layout.deliveries_partition(download_id)},
            "ConsistentRead": True,
        }
        found = [Delivery.from_item(item) for page in query_pages(self._table, query) for item in page]
        return sorted(found, key=lambda delivery: (delivery.created_at, delivery.event_id))

    def mark_queued(self, delivery: Delivery) -> None:
        self._update(delivery, {"queued": True})

    def attempted(
        self,
        delivery: Delivery,
        *,
        state: str,
        status: int | None,
        error: str | None,
        at: str,
        next_at: str | None,
    ) -> None:
        """Record one attempt: its outcome, and when the next one is due (None: no next one)."""
        self._update(
            delivery,
            {
                "state": state,
                "attempts": delivery.attempts + 1,
                "last_status": status,
                "last_error": error,
                "last_attempt_at": at,
                "next_attempt_at": next_at,
            },
        )

    def give_up(self, delivery: Delivery, error: str) -> None:
        self._update(delivery, {"state": FAILED, "last_error": error, "next_attempt_at": None})

    def _update(self, delivery: Delivery, fields: dict[str, Any]) -> None:
        names = {f"#f{index}": name for index, name in enumerate(fields)}
        sets = [f"#f{index} = :f{index}" for index, value in enumerate(fields.values()) if value is not None]
        removes = [f"#f{index}" for index, value in enumerate(fields.values()) if value is None]
        values = {f":f{index}": value for index, value in enumerate(fields.values()) if value is not None}
        expression = ("SET " + ", ".join(sets) if sets else "") + (
            " REMOVE " + ", ".join(removes) if removes else ""
        )
        arguments: dict[str, Any] = {
            "Key": layout.delivery_key(delivery.download_id, delivery.event_id),
            "UpdateExpression": expression.strip(),
            # Never a stub brought back after the record was removed.
            "ConditionExpression": "attribute_exists(pk)",
            "ExpressionAttributeNames": names,
        }
        if values:
            arguments["ExpressionAttributeValues"] = values
        try:
            self._table.update_item(**arguments)
        except ClientError as error:
            if not _conditional_failure(error):
                raise
