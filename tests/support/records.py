"""Download records for tests, as the store keeps them: one place that knows every field a
`Download` needs, so a test names only what it is about."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalicelib.api.downloads import new_id
from chalicelib.core import clock
from chalicelib.core.models import Download, State

if TYPE_CHECKING:
    from datetime import datetime

    from chalicelib.runtime import Runtime


def download(**fields: Any) -> Download:
    """A download record: alice's PENDING zip in acme, with whatever `fields` change."""
    defaults: dict[str, Any] = {
        "id": "0" * 32,
        "type": "zip",
        "params": {},
        "filename": "a.zip",
        "tenant": "acme",
        "user_id": "alice",
        "state": State.PENDING,
        "created_at": "2026-11-29T10:00:00.000Z",
        "retention_seconds": 3600,
    }
    return Download(**{**defaults, **fields})


def stored(
    runtime: Runtime,
    *,
    user: str = "alice",
    key: str = "acme/a.txt",
    created_at: datetime | None = None,
    **fields: Any,
) -> Download:
    """A PENDING zip of `key` created in the store (its quota slot taken) as the API creates
    one, with a fresh id; no workflow is started for it."""
    created = download(
        **{
            "id": new_id(),
            "params": {"keys": [key], "prefixes": [], "compression": "store"},
            "user_id": user,
            "created_at": clock.iso(created_at or clock.now()),
            **fields,
        }
    )
    runtime.downloads.create(created, runtime.settings.max_active_per_user)
    return created
