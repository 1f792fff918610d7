"""Idempotency keys: a retried POST /downloads returns the download the first one made.

As the IETF draft (draft-ietf-httpapi-idempotency-key-header) has it: the header is a
Structured Field String (`Idempotency-Key: "8e03978e"`); a bare value (`Idempotency-Key:
8e03978e`) is taken too, as the clients written before the draft send it. Anything else is
400 `InvalidIdempotencyKey`. The key is scoped to its user and remembered with a hash of the
request body: the same key with the same body is a replay, with another body a mistake (422
`IdempotencyKeyReused`), and while the first request is still being processed a retry is
409 `IdempotencyKeyInUse`.
"""

from __future__ import annotations

import hashlib
import json
import re
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


# RFC 8941 sf-string: DQUOTE *( unescaped / "\\" ( DQUOTE / "\\" ) ) DQUOTE, printable ASCII.
_SF_STRING = re.compile(r'"((?:[ !#-\[\]-~]|\\["\\])*)"')
_SF_ESCAPE = re.compile(r"\\(.)")


def check_key(raw: str | None) -> str | None:
    """The key a header value names (None when there is none); 400 when it is malformed."""
    if raw is None:
        return None
    quoted = _SF_STRING.fullmatch(raw)
    if raw.startswith('"') and quoted is None:
        raise InvalidIdempotencyKey(f"{HEADER} is not a valid Structured Field String (RFC 8941)")
    key = _SF_ESCAPE.sub(r"\1", quoted.group(1)) if quoted else raw
    if not 1 <= len(key) <= _MAX_LENGTH or not key.isascii() or not key.isprintable():
        raise InvalidIdempotencyKey(
            f'{HEADER} must be a string of 1 to {_MAX_LENGTH} printable ASCII characters, e.g. "a1b2c3"'
        )
    return key


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
        """The download this key already made (same body), None if the key is new; 422 if the
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
        request bound it to first (or 422 if that request had another body)."""
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
