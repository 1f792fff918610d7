"""Idempotency keys: a retried POST /downloads returns the download the first one made.

The key is scoped to its user and remembered with a hash of the request body: the same
key with the same body is a replay; with another body it is a mistake (409).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.core import clock
from chalicelib.core.errors import IdempotencyKeyReused, InvalidIdempotencyKey
from chalicelib.core.models import Principal
from chalicelib.storage import layout
from chalicelib.storage.keys import hash_secret

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_dynamodb.service_resource import Table

HEADER = "Idempotency-Key"
_MAX_LENGTH = 255


def check_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not 1 <= len(raw) <= _MAX_LENGTH or not raw.isascii() or not raw.isprintable():
        raise InvalidIdempotencyKey(f"{HEADER} must be 1 to {_MAX_LENGTH} printable ASCII characters")
    return raw


def fingerprint(body: Any) -> str:
    """The same JSON, whatever its key order or spacing, has the same fingerprint."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Claim:
    principal: Principal
    key: str
    request_hash: str


class IdempotencyStore:
    def __init__(self, table: Table) -> None:
        self._table = table

    @staticmethod
    def _key(claim: Claim) -> dict[str, str]:
        return layout.idempotency_key(claim.principal.tenant, claim.principal.user_id, hash_secret(claim.key))

    def existing(self, claim: Claim) -> str | None:
        """The download this key already made (same body), None if the key is new; 409 if the
        key was used with another body."""
        found = self._table.get_item(Key=self._key(claim), ConsistentRead=True)
        item: dict[str, Any] | None = found.get("Item")
        if not item:
            return None
        if item["request_hash"] != claim.request_hash:
            raise IdempotencyKeyReused(f"this {HEADER} was already used with a different request body")
        download_id: str = item["download_id"]
        return download_id

    def claim(self, claim: Claim, download_id: str, ttl_seconds: int) -> str | None:
        """Bind the key to `download_id`. None if it is ours; else the download a racing
        request bound it to first (or 409 if that request had another body)."""
        try:
            self._table.put_item(
                Item={
                    **self._key(claim),
                    "request_hash": claim.request_hash,
                    "download_id": download_id,
                    layout.TTL: int(clock.later(ttl_seconds).timestamp()),
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return self.existing(claim)
            raise
        return None

    def release(self, claim: Claim, download_id: str | None = None) -> None:
        """Forget the key: the request it guarded was refused, so a retry must run again.
        With `download_id`, only while the key is bound to that download (a claim whose
        answer was lost may or may not have been written; another request's stays)."""
        if download_id is None:
            self._table.delete_item(Key=self._key(claim))
            return
        try:
            self._table.delete_item(
                Key=self._key(claim),
                ConditionExpression="download_id = :mine",
                ExpressionAttributeValues={":mine": download_id},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
