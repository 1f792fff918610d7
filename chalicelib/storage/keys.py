"""API keys, and the principals who hold them.

A key is stored only as its SHA-256 (`hash_secret`, also used for link tokens and
idempotency keys): a leaked table does not leak usable secrets.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from chalicelib.core.models import Principal
from chalicelib.storage import layout

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_dynamodb.service_resource import Table


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class KeyStore:
    """API keys, stored by their SHA-256, and each key's principal by name."""

    def __init__(self, table: Table) -> None:
        self._table = table

    def principal_for(self, api_key: str) -> Principal | None:
        found = self._table.get_item(Key=layout.api_key_key(hash_secret(api_key)))
        item: dict[str, Any] | None = found.get("Item")
        if not item or item.get("disabled"):
            return None
        return Principal(item["tenant"], item["user_id"], frozenset(item.get("roles", [])))

    def add(self, api_key: str, principal: Principal) -> None:
        """Store a key for `principal`, and the principal itself (events act as it by name)."""
        about = {"tenant": principal.tenant, "user_id": principal.user_id, "roles": sorted(principal.roles)}
        self._table.put_item(Item={**layout.api_key_key(hash_secret(api_key)), **about})
        self._table.put_item(Item={**layout.user_key(principal.tenant, principal.user_id), **about})

    def principal_named(self, tenant: str, user_id: str) -> Principal | None:
        """The principal of a user who holds a key in `tenant`, None if there is none."""
        found = self._table.get_item(Key=layout.user_key(tenant, user_id), ConsistentRead=True)
        item: dict[str, Any] | None = found.get("Item")
        if not item or item.get("disabled"):
            return None
        return Principal(item["tenant"], item["user_id"], frozenset(item.get("roles", [])))
