"""Satchel's events: one shape for webhooks and EventBridge, in the Standard Webhooks style.

    {"type": "download.completed", "timestamp": "<RFC 3339, UTC>", "data": {...}}

Each event has an id, the `webhook-id` a receiver drops repeats by: made from what the
event is about (`<download id>.completed`, `<link id>.claimed.<use>`), so an event sent
again, by a retry or by the cleanup sweep finishing owed work, has the same id. Its
timestamp is likewise taken from the record (when the download finished, expired, or the
link was claimed), not from the moment it is sent.

On EventBridge: Source `satchel`, DetailType the event's type, Detail the same payload.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chalicelib.core import clock
from chalicelib.core.models import Download, State

SOURCE = "satchel"

COMPLETED = "download.completed"
FAILED = "download.failed"
CANCELLED = "download.cancelled"
EXPIRED = "download.expired"
LINK_CLAIMED = "link.claimed"
# A DONE download no one has fetched, a set time (SATCHEL_EXPIRING_UNUSED_SECONDS) before it expires.
EXPIRING_UNUSED = "download.expiring_unused"
# Every type Satchel sends, in one place (the template's and the policies' lists follow it).
TYPES: tuple[str, ...] = (COMPLETED, FAILED, CANCELLED, EXPIRED, LINK_CLAIMED, EXPIRING_UNUSED)

# The event a download's terminal state tells.
BY_STATE: dict[State, str] = {
    State.DONE: COMPLETED,
    State.FAILED: FAILED,
    State.CANCELLED: CANCELLED,
    State.EXPIRED: EXPIRED,
}


@dataclass(frozen=True)
class Event:
    id: str  # the webhook-id
    type: str
    timestamp: str
    data: dict[str, Any]
    download_id: str  # the download it is about: its deliveries are listed under it
    tenant: str

    def payload(self) -> dict[str, Any]:
        return {"type": self.type, "timestamp": self.timestamp, "data": self.data}

    def body(self) -> str:
        """The payload as sent and signed: compact and in a fixed order, so a repeat is byte-equal."""
        return json.dumps(self.payload(), separators=(",", ":"), sort_keys=True)


def of_download(download: Download, api_prefix: str = "") -> Event:
    """The event a download's terminal state tells (ValueError for an active one)."""
    kind = BY_STATE.get(download.state)
    if kind is None:
        raise ValueError(f"download {download.id} is {download.state}: no event tells that")
    # Deterministic: a repeat of the same event carries the same timestamp.
    when = download.expires_at if download.state is State.EXPIRED else download.finished_at
    suffix = kind.split(".", 1)[1]
    return Event(
        f"{download.id}.{suffix}",
        kind,
        when or clock.iso(clock.now()),
        _download_data(download, api_prefix),
        download.id,
        download.tenant,
    )


def expiring_unused(download: Download, api_prefix: str = "") -> Event:
    """`download.expiring_unused`: the download's data (DONE), at the time the warning was
    due (its record's `expiring_unused_at`, set once), so a repeat is the same event."""
    if download.state is not State.DONE or download.expiring_unused_at is None:
        raise ValueError(f"download {download.id} is not a DONE download being warned of")
    return Event(
        f"{download.id}.expiring_unused",
        EXPIRING_UNUSED,
        download.expiring_unused_at,
        _download_data(download, api_prefix),
        download.id,
        download.tenant,
    )


def _download_data(download: Download, api_prefix: str) -> dict[str, Any]:
    return {
        "id": download.id,
        "type": download.type,
        "tenant": download.tenant,
        "user_id": download.user_id,
        "state": download.state.value,
        "error": None
        if download.error is None
        else {"code": download.error.code, "message": download.error.message},
        "created_at": download.created_at,
        "finished_at": download.finished_at,
        "expires_at": download.expires_at,
        "url": download.to_api(api_prefix)["url"],
        "client_reference": download.client_reference,
    }


def link_claimed(download: Download, link_id: str, use: int, claimed_at: str) -> Event:
    data = {
        "link_id": link_id,
        "download_id": download.id,
        "tenant": download.tenant,
        "user_id": download.user_id,
        "claimed_at": claimed_at,
        "use": use,
        "client_reference": download.client_reference,
    }
    return Event(f"{link_id}.claimed.{use}", LINK_CLAIMED, claimed_at, data, download.id, download.tenant)
