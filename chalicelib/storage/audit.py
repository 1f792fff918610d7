"""The audit trail: who created, fetched, cancelled, deleted or linked what, and when.

Records are kept per tenant, ordered by time, so a tenant's trail is one query.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from chalicelib.core import clock
from chalicelib.core.models import Principal, plain
from chalicelib.storage import layout
from chalicelib.storage.queries import KeyedPage, query_count, query_pages, query_pages_from

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_dynamodb.service_resource import Table


class Action(StrEnum):
    CREATED = "download.created"
    FETCHED_FILE = "download.file"
    FETCHED_URL = "download.url"
    CANCELLED = "download.cancelled"
    DELETED = "download.deleted"
    LINK_CREATED = "link.created"
    LINK_USED = "link.used"
    LINK_REVOKED = "link.revoked"
    EXPIRED = "download.expired"
    TIMED_OUT = "download.timed_out"
    PURGED = "download.purged"
    CALLBACK_DELIVERED = "callback.delivered"
    CALLBACK_FAILED = "callback.failed"
    # Tenant-wide, about no download (their download_id is "").
    WEBHOOK_SECRET_ROTATED = "webhook_secret.rotated"
    WEBHOOK_SECRET_READ = "webhook_secret.read"
    # API keys (no download: download_id is empty; details name the key by id, never the key).
    KEY_ISSUED = "key.issued"
    KEY_ROTATED = "key.rotated"
    KEY_DISABLED = "key.disabled"


def user_actor(principal: Principal) -> str:
    return f"user:{principal.user_id}"


def link_actor(token_hash: str) -> str:
    # A prefix of the token's hash names the link without making it usable.
    return f"link:{token_hash[:16]}"


@dataclass(frozen=True)
class Event:
    at: str
    tenant: str
    action: str
    actor: str
    download_id: str
    details: dict[str, Any]


class AuditLog:
    def __init__(self, table: Table) -> None:
        self._table = table

    def record(self, tenant: str, action: Action, actor: str, download_id: str, **details: Any) -> Event:
        event = Event(clock.iso(clock.now()), tenant, action.value, actor, download_id, details)
        self._table.put_item(
            Item={
                **layout.audit_key(tenant, event.at, secrets.token_hex(4)),
                "at": event.at,
                "tenant": tenant,
                "action": event.action,
                "actor": actor,
                "download_id": download_id,
                "details": details,
            }
        )
        return event

    def _query(self, tenant: str) -> dict[str, Any]:
        return {
            "KeyConditionExpression": f"{layout.PK} = :pk",
            "ExpressionAttributeValues": {":pk": layout.audit_partition(tenant)},
        }

    def _rows_query(self, tenant: str) -> dict[str, Any]:
        return {
            **self._query(tenant),
            "ProjectionExpression": "#at, #action, actor, download_id, details",
            "ExpressionAttributeNames": {"#at": "at", "#action": "action"},
        }

    def pages(self, tenant: str) -> Iterator[list[dict[str, Any]]]:
        """The tenant's trail, oldest first, a page at a time, as plain rows."""
        for page in query_pages(self._table, self._rows_query(tenant)):
            yield [plain(item) for item in page]

    def pages_from(self, tenant: str, start: dict[str, Any] | None) -> Iterator[KeyedPage]:
        """The trail's pages from `start` (a page's LastEvaluatedKey), each with the next one's."""
        for page, following in query_pages_from(self._table, self._rows_query(tenant), start):
            yield [plain(item) for item in page], following

    def count(self, tenant: str) -> int:
        return query_count(self._table, self._query(tenant))

    def events(self, tenant: str) -> list[Event]:
        """The tenant's whole trail, oldest first."""
        return [
            Event(row["at"], tenant, row["action"], row["actor"], row["download_id"], row["details"])
            for page in self.pages(tenant)
            for row in page
        ]
