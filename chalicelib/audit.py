"""The audit trail: who created, fetched, cancelled, deleted or linked what, and when.

Records are kept per tenant, ordered by time, so a tenant's trail is one query.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from chalicelib import clock
from chalicelib.models import Principal, plain


class Action(StrEnum):
    CREATED = "download.created"
    FETCHED_FILE = "download.file"
    FETCHED_URL = "download.url"
    CANCELLED = "download.cancelled"
    DELETED = "download.deleted"
    LINK_CREATED = "link.created"
    LINK_USED = "link.used"
    LINK_REVOKED = "link.revoked"


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
    def __init__(self, table: Any) -> None:
        self._table = table

    def record(self, tenant: str, action: Action, actor: str, download_id: str, **details: Any) -> Event:
        event = Event(clock.iso(clock.now()), tenant, action.value, actor, download_id, details)
        self._table.put_item(
            Item={
                "pk": f"AUDIT#{tenant}",
                "sk": f"{event.at}#{secrets.token_hex(4)}",
                "at": event.at,
                "tenant": tenant,
                "action": event.action,
                "actor": actor,
                "download_id": download_id,
                "details": details,
            }
        )
        return event

    def events(self, tenant: str, *, download_id: str | None = None) -> list[Event]:
        """The tenant's trail, oldest first (optionally for one download)."""
        query: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": f"AUDIT#{tenant}"},
        }
        if download_id:
            query["FilterExpression"] = "download_id = :id"
            query["ExpressionAttributeValues"][":id"] = download_id
        found: list[Event] = []
        while True:
            page = self._table.query(**query)
            for raw in page.get("Items", []):
                item = plain(raw)
                found.append(
                    Event(
                        item["at"],
                        item["tenant"],
                        item["action"],
                        item["actor"],
                        item["download_id"],
                        item["details"],
                    )
                )
            if "LastEvaluatedKey" not in page:
                return found
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
