"""A download's webhook deliveries, as its owner sees them (GET /downloads/{id}/deliveries)."""

from __future__ import annotations

from typing import Any

from chalicelib.api import access
from chalicelib.core.models import Principal
from chalicelib.runtime import Runtime


def list_for_owner(runtime: Runtime, principal: Principal, download_id: str) -> list[dict[str, Any]]:
    """One item per event owed a webhook: state, attempts, the last answer; never the secret
    nor the signed body. Refused as GET /downloads/{id} is (404, 403)."""
    download = access.require(runtime, principal, download_id)
    return [delivery.to_api() for delivery in runtime.deliveries.of_download(download.id)]
