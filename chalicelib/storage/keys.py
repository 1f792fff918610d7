"""API keys, and the principals who hold them: issued, listed, disabled, rotated, expired.

A key is stored only as its SHA-256 (`hash_secret`, also used for link tokens and
idempotency keys): a leaked table does not leak usable secrets. Its record (`APIKEY#<hash>`)
names the principal, an id (`key_id`, 16 hex digits, what lists and commands address), the
key's first characters (`prefix`, so a person can tell keys apart), `created_at`, an optional
`expires_at`, `disabled`, and `last_used_at`. It also sits in its tenant's partition of the
`by_owner` index (storage/layout.py: `KEYS#<tenant>`), which is how keys are listed and found
by id; an id is looked up only within the caller's tenant.

`check` is the authorizer's one read. It answers a `KeyCheck`: the principal, or the stable
code of the refusal (`KeyUnknown`, `KeyDisabled`, `KeyExpired`). Last use is recorded by
`touch`, at most once per key per `every` seconds (a conditional write that loses quietly),
so a busy key costs one write every few minutes, and a failed write never fails a request.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.core import clock
from chalicelib.core.models import Principal
from chalicelib.storage import layout
from chalicelib.storage.queries import query_pages

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_dynamodb.service_resource import Table

log = logging.getLogger(__name__)

KEY_PREFIX = "sat_"  # what an issued key starts with, so scanners and people can spot one
PREFIX_CHARS = 8  # KEY_PREFIX and four characters of the secret: tells keys apart, reveals nothing
LAST_USED_EVERY_SECONDS = 300

# The authorizer's refusals, by their stable Code.
KEY_UNKNOWN = "KeyUnknown"
KEY_DISABLED = "KeyDisabled"
KEY_EXPIRED = "KeyExpired"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh API key: 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _key_id(key_hash: str) -> str:
    # Taken from the hash, so keys stored before ids existed have one too.
    return key_hash[:16]


@dataclass(frozen=True)
class KeyRecord:
    """What is known about a key, never the key itself."""

    key_id: str
    prefix: str
    principal: Principal
    created_at: str
    expires_at: str | None
    disabled: bool
    last_used_at: str | None
    key_hash: str

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> KeyRecord:
        key_hash = str(item[layout.PK]).removeprefix(layout.API_KEY)
        return cls(
            key_id=str(item.get("key_id") or _key_id(key_hash)),
            prefix=str(item.get("prefix", "")),
            principal=Principal(item["tenant"], item["user_id"], frozenset(item.get("roles", []))),
            created_at=str(item.get("created_at", "")),
            expires_at=item.get("expires_at") or None,
            disabled=bool(item.get("disabled")),
            last_used_at=item.get("last_used_at") or None,
            key_hash=key_hash,
        )

    def refusal(self, now: datetime) -> str | None:
        """The code this key is refused with at `now`, None if it is good."""
        if self.disabled:
            return KEY_DISABLED
        if self.expires_at is not None and clock.parse(self.expires_at) <= now:
            return KEY_EXPIRED
        return None

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.key_id,
            "prefix": self.prefix,
            "tenant": self.principal.tenant,
            "user_id": self.principal.user_id,
            "roles": sorted(self.principal.roles),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "disabled": self.disabled,
            "last_used_at": self.last_used_at,
        }


@dataclass(frozen=True)
class IssuedKey:
    """A key just made: the only time the key itself is at hand."""

    api_key: str
    record: KeyRecord

    def to_api(self) -> dict[str, Any]:
        return {**self.record.to_api(), "api_key": self.api_key}


@dataclass(frozen=True)
class KeyCheck:
    principal: Principal | None
    refusal: str | None
    record: KeyRecord | None = None


class KeyStore:
    """API keys, stored by their SHA-256, and each key's principal by name."""

    def __init__(self, table: Table) -> None:
        self._table = table

    # -- the authorizer -------------------------------------------------------------------

    def check(self, api_key: str, now: datetime | None = None) -> KeyCheck:
        found = self._table.get_item(Key=layout.api_key_key(hash_secret(api_key)))
        item: dict[str, Any] | None = found.get("Item")
        if not item:
            return KeyCheck(None, KEY_UNKNOWN)
        record = KeyRecord.from_item(item)  # UnknownPrincipal for an id outside the pattern
        refusal = record.refusal(now or clock.now())
        return KeyCheck(None if refusal else record.principal, refusal, record)

    def principal_for(self, api_key: str) -> Principal | None:
        return self.check(api_key).principal

    def touch(self, record: KeyRecord, now: datetime, every: int = LAST_USED_EVERY_SECONDS) -> bool:
        """Record that the key was used at `now`, unless that was recorded less than `every`
        seconds ago. True when this call wrote. Never raises: a request is not refused
        because its key's last use could not be noted."""
        stamp, stale = clock.iso(now), clock.iso(clock.later(-every, now))
        try:
            self._table.update_item(
                Key=layout.api_key_key(record.key_hash),
                UpdateExpression="SET last_used_at = :now",
                ConditionExpression=(
                    "attribute_exists(pk) AND (attribute_not_exists(last_used_at) OR last_used_at < :stale)"
                ),
                ExpressionAttributeValues={":now": stamp, ":stale": stale},
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                log.warning("could not record the last use of key %s: %s", record.key_id, error)
            return False
        except BotoCoreError as error:
            log.warning("could not record the last use of key %s: %s", record.key_id, error)
            return False
        return True

    # -- the lifecycle ----------------------------------------------------------------------

    def add(
        self,
        api_key: str,
        principal: Principal,
        *,
        expires_at: str | None = None,
        now: datetime | None = None,
    ) -> KeyRecord:
        """Store a key for `principal`, and the principal itself (events act as it by name)."""
        created_at = clock.iso(now or clock.now())
        key_hash = hash_secret(api_key)
        key_id = _key_id(key_hash)
        about = {"tenant": principal.tenant, "user_id": principal.user_id, "roles": sorted(principal.roles)}
        item: dict[str, Any] = {
            **layout.api_key_key(key_hash),
            **layout.keys_entry(principal.tenant, created_at, key_id),
            **about,
            "key_id": key_id,
            "prefix": api_key[:PREFIX_CHARS],
            "created_at": created_at,
            "disabled": False,
        }
        if expires_at is not None:
            item["expires_at"] = expires_at
        self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
        self._table.put_item(Item={**layout.user_key(principal.tenant, principal.user_id), **about})
        return KeyRecord.from_item(item)

    def issue(
        self, principal: Principal, *, expires_at: str | None = None, now: datetime | None = None
    ) -> IssuedKey:
        api_key = new_key()
        return IssuedKey(api_key, self.add(api_key, principal, expires_at=expires_at, now=now))

    def list(self, tenant: str) -> list[KeyRecord]:
        """The tenant's keys, newest first (the index is eventually consistent: a key made a
        moment ago may be missing for that moment)."""
        arguments: dict[str, Any] = {
            "IndexName": layout.OWNER_INDEX,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": layout.OWNER_PK},
            "ExpressionAttributeValues": {":pk": layout.keys_partition(tenant)},
            "ScanIndexForward": False,
        }
        return [KeyRecord.from_item(item) for page in query_pages(self._table, arguments) for item in page]

    def find(self, tenant: str, key_id: str) -> KeyRecord | None:
        """The tenant's key with this id; None for another tenant's (it does not exist for them)."""
        return next((record for record in self.list(tenant) if record.key_id == key_id), None)

    def disable(self, record: KeyRecord, now: datetime | None = None) -> KeyRecord:
        """Refused from the next check on (API Gateway may answer from its cache until its TTL)."""
        answer = self._table.update_item(
            Key=layout.api_key_key(record.key_hash),
            UpdateExpression="SET disabled = :yes, disabled_at = :now",
            ConditionExpression="attribute_exists(pk) AND tenant = :tenant",
            ExpressionAttributeValues={
                ":yes": True,
                ":now": clock.iso(now or clock.now()),
                ":tenant": record.principal.tenant,
            },
            ReturnValues="ALL_NEW",
        )
        return KeyRecord.from_item(answer["Attributes"])

    def rotate(
        self,
        record: KeyRecord,
        *,
        expires_at: str | None,
        grace_seconds: int = 0,
        now: datetime | None = None,
    ) -> IssuedKey:
        """A new key for the same principal; once it is stored, the old one is disabled, or,
        with a grace period, made to expire at its end (never later than it already would)."""
        now = now or clock.now()
        issued = self.issue(record.principal, expires_at=expires_at, now=now)
        if grace_seconds <= 0:
            self.disable(record, now)
            return issued
        until = now + timedelta(seconds=grace_seconds)
        if record.expires_at is not None:
            until = min(until, clock.parse(record.expires_at))
        self._table.update_item(
            Key=layout.api_key_key(record.key_hash),
            UpdateExpression="SET expires_at = :until",
            ConditionExpression="attribute_exists(pk) AND tenant = :tenant",
            ExpressionAttributeValues={":until": clock.iso(until), ":tenant": record.principal.tenant},
        )
        return issued

    def index_unlisted(self, now: datetime | None = None) -> int:
        """Give keys stored before keys had ids (no place in `by_owner`) their id and place, so
        they can be listed, rotated and disabled; their `created_at` becomes `now` and their
        prefix stays unknown. A scan of the whole table: an operator's one-off. How many."""
        stamp = clock.iso(now or clock.now())
        arguments: dict[str, Any] = {
            "FilterExpression": "begins_with(#pk, :keys) AND attribute_not_exists(#owner)",
            "ExpressionAttributeNames": {"#pk": layout.PK, "#owner": layout.OWNER_PK},
            "ExpressionAttributeValues": {":keys": layout.API_KEY},
        }
        indexed = 0
        while True:
            page = self._table.scan(**arguments)
            for item in page.get("Items", []):
                record = KeyRecord.from_item(item)
                entry = layout.keys_entry(record.principal.tenant, stamp, record.key_id)
                self._table.update_item(
                    Key=layout.api_key_key(record.key_hash),
                    UpdateExpression=(
                        "SET key_id = :id, created_at = if_not_exists(created_at, :at), "
                        "#owner = :owner, #order = :order"
                    ),
                    ExpressionAttributeNames={"#owner": layout.OWNER_PK, "#order": layout.OWNER_SK},
                    ExpressionAttributeValues={
                        ":id": record.key_id,
                        ":at": stamp,
                        ":owner": entry[layout.OWNER_PK],
                        ":order": entry[layout.OWNER_SK],
                    },
                )
                indexed += 1
            if "LastEvaluatedKey" not in page:
                return indexed
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def principal_named(self, tenant: str, user_id: str) -> Principal | None:
        """The principal of a user who holds a key in `tenant`, None if there is none."""
        found = self._table.get_item(Key=layout.user_key(tenant, user_id), ConsistentRead=True)
        item: dict[str, Any] | None = found.get("Item")
        if not item or item.get("disabled"):
            return None
        return Principal(item["tenant"], item["user_id"], frozenset(item.get("roles", [])))
