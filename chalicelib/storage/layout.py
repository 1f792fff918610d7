"""The table's layout: every key Satchel writes, every index, and the schema declaring them.

One table holds every record. The partition key's prefix says what a record is:

| pk                                              | sk              | record                        |
|-------------------------------------------------|-----------------|-------------------------------|
| `DOWNLOAD#<id>`                                 | `DOWNLOAD`      | a download (storage/downloads) |
| `QUOTA#<tenant>#<user>`                         | `QUOTA`         | the user's active downloads   |
| `QUOTA#<tenant>`                                | `TENANT_QUOTA`  | the tenant's active downloads |
| `APIKEY#<sha256 of the key>`                    | `APIKEY`        | an API key (storage/keys)     |
| `USER#<tenant>#<user>`                          | `USER`          | a principal, by name          |
| `IAMPRINCIPAL#<normalised IAM ARN>`             | `IAMPRINCIPAL`  | an IAM caller's principal     |
| `LINK#<sha256 of the token>`                    | `LINK`          | a link (storage/links)        |
| `IDEMPOTENCY#<tenant>#<user>#<sha256 of key>`   | `IDEMPOTENCY`   | an idempotency key            |
| `AUDIT#<tenant>`                                | `<at>#<random>` | an audit event                |
| `WEBHOOK_SECRET#<tenant>`                       | `WEBHOOK_SECRET`| webhook secrets (storage/secrets) |
| `DELIVERY#<download id>`                        | `<event id>`    | a webhook delivery            |

A download also sits in two indexes: `by_owner` (`OWNER#<tenant>#<user>`, `<created>#<id>`)
lists a user's downloads newest first; `by_due` (`DUE#<shard>`, `<due time>#<id>`) holds it
under the time the sweep must next look at it. A link also sits in `by_owner`, in its
download's own partition (`LINKS#<download id>`, `<created>#<token hash>`), so the owner can
list a download's links without a second index; no download lists there. An API key also
sits in `by_owner`, in its tenant's keys (`KEYS#<tenant>`, `<created>#<key id>`), so a tenant
admin can list and address the tenant's keys by id. Tenant and user ids never hold '#'
(core/names.py), so no two of these keys can be the same.

TABLE_KEYS declares the keys and indexes: the local stack (satchel_local/stack.py) creates
its table from it and scripts/package.py puts it into the deployed template.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chalicelib.core import clock

PK = "pk"
SK = "sk"
OWNER_PK = "gsi1pk"
OWNER_SK = "gsi1sk"
DUE_PK = "gsi2pk"
DUE_SK = "gsi2sk"
# DynamoDB's TTL deletes a record some time after this epoch second (a backstop to cleanup).
TTL = "ttl"

OWNER_INDEX = "by_owner"
DUE_INDEX = "by_due"
# The due index's partitions: work is spread over this many keys, so no one key runs hot.
DUE_SHARDS = 4

# Partition key prefixes, one per kind of record.
DOWNLOAD = "DOWNLOAD#"
QUOTA = "QUOTA#"
API_KEY = "APIKEY#"
USER = "USER#"
LINK = "LINK#"
IDEMPOTENCY = "IDEMPOTENCY#"
AUDIT = "AUDIT#"
WEBHOOK_SECRET = "WEBHOOK_SECRET#"
IAM_PRINCIPAL = "IAMPRINCIPAL#"
DELIVERY = "DELIVERY#"
PARTITION_PREFIXES = (
    DOWNLOAD,
    QUOTA,
    API_KEY,
    USER,
    LINK,
    IDEMPOTENCY,
    AUDIT,
    WEBHOOK_SECRET,
    IAM_PRINCIPAL,
    DELIVERY,
)
# Index partition key prefixes.
OWNER = "OWNER#"
DUE = "DUE#"
LINKS_OF = "LINKS#"
KEYS_OF = "KEYS#"

# Sort keys of the records that are alone in their partition.
DOWNLOAD_SK = "DOWNLOAD"
QUOTA_SK = "QUOTA"
TENANT_QUOTA_SK = "TENANT_QUOTA"
API_KEY_SK = "APIKEY"
USER_SK = "USER"
LINK_SK = "LINK"
IDEMPOTENCY_SK = "IDEMPOTENCY"
WEBHOOK_SECRET_SK = "WEBHOOK_SECRET"
IAM_PRINCIPAL_SK = "IAMPRINCIPAL"

_SEPARATOR = "#"

TABLE_KEYS: dict[str, Any] = {
    "KeySchema": [
        {"AttributeName": PK, "KeyType": "HASH"},
        {"AttributeName": SK, "KeyType": "RANGE"},
    ],
    "AttributeDefinitions": [
        {"AttributeName": name, "AttributeType": "S"} for name in (PK, SK, OWNER_PK, OWNER_SK, DUE_PK, DUE_SK)
    ],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": OWNER_INDEX,
            "KeySchema": [
                {"AttributeName": OWNER_PK, "KeyType": "HASH"},
                {"AttributeName": OWNER_SK, "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        },
        {
            "IndexName": DUE_INDEX,
            "KeySchema": [
                {"AttributeName": DUE_PK, "KeyType": "HASH"},
                {"AttributeName": DUE_SK, "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        },
    ],
}


def _join(*parts: str) -> str:
    return _SEPARATOR.join(parts)


def download_key(download_id: str) -> dict[str, str]:
    return {PK: f"{DOWNLOAD}{download_id}", SK: DOWNLOAD_SK}


def download_id_of(pk: str) -> str | None:
    """The id in a download's partition key; None for any other key."""
    return pk.removeprefix(DOWNLOAD) if pk.startswith(DOWNLOAD) else None


def owner_partition(tenant: str, user_id: str) -> str:
    return f"{OWNER}{_join(tenant, user_id)}"


def owner_entry(tenant: str, user_id: str, created_at: str, download_id: str) -> dict[str, str]:
    """A download's place in `by_owner`: its owner's partition, ordered by creation."""
    return {OWNER_PK: owner_partition(tenant, user_id), OWNER_SK: _join(created_at, download_id)}


def due_shard(download_id: str) -> int:
    """The shard of `by_due` a download sits in: its id's last four hex digits, modulo the shards."""
    return int(download_id[-4:], 16) % DUE_SHARDS


def due_partition(shard: int) -> str:
    return f"{DUE}{shard}"


def due_entry(download_id: str, when: datetime) -> dict[str, str]:
    """A download's place in `by_due`: due at `when` (ISO timestamps sort as times)."""
    return {DUE_PK: due_partition(due_shard(download_id)), DUE_SK: _join(clock.iso(when), download_id)}


def quota_key(tenant: str, user_id: str) -> dict[str, str]:
    return {PK: f"{QUOTA}{_join(tenant, user_id)}", SK: QUOTA_SK}


def tenant_quota_key(tenant: str) -> dict[str, str]:
    # Its own sort key too: this key cannot be a user's.
    return {PK: f"{QUOTA}{tenant}", SK: TENANT_QUOTA_SK}


def api_key_key(key_hash: str) -> dict[str, str]:
    return {PK: f"{API_KEY}{key_hash}", SK: API_KEY_SK}


def user_key(tenant: str, user_id: str) -> dict[str, str]:
    return {PK: f"{USER}{_join(tenant, user_id)}", SK: USER_SK}


def keys_partition(tenant: str) -> str:
    return f"{KEYS_OF}{tenant}"


def keys_entry(tenant: str, created_at: str, key_id: str) -> dict[str, str]:
    """An API key's place in `by_owner`: its tenant's keys, ordered by creation."""
    return {OWNER_PK: keys_partition(tenant), OWNER_SK: _join(created_at, key_id)}


def iam_principal_key(arn: str) -> dict[str, str]:
    """An IAM caller's mapping (api/iam.py normalises the ARN first); ARNs hold no '#'."""
    return {PK: f"{IAM_PRINCIPAL}{arn}", SK: IAM_PRINCIPAL_SK}


def link_key(token_hash: str) -> dict[str, str]:
    return {PK: f"{LINK}{token_hash}", SK: LINK_SK}


def links_partition(download_id: str) -> str:
    return f"{LINKS_OF}{download_id}"


def links_entry(download_id: str, created_at: str, token_hash: str) -> dict[str, str]:
    """A link's place in `by_owner`: its download's links, ordered by creation."""
    return {OWNER_PK: links_partition(download_id), OWNER_SK: _join(created_at, token_hash)}


def idempotency_key(tenant: str, user_id: str, key_hash: str) -> dict[str, str]:
    """An idempotency key is scoped to its user: two users may send the same one."""
    return {PK: f"{IDEMPOTENCY}{_join(tenant, user_id, key_hash)}", SK: IDEMPOTENCY_SK}


def audit_partition(tenant: str) -> str:
    return f"{AUDIT}{tenant}"


def audit_key(tenant: str, at: str, nonce: str) -> dict[str, str]:
    """An audit event's key: the tenant's trail, ordered by time; `nonce` parts events of the
    same instant."""
    return {PK: audit_partition(tenant), SK: _join(at, nonce)}


def webhook_secret_key(tenant: str) -> dict[str, str]:
    """A tenant's webhook signing secrets: one record, rotated in place."""
    return {PK: f"{WEBHOOK_SECRET}{tenant}", SK: WEBHOOK_SECRET_SK}


def deliveries_partition(download_id: str) -> str:
    """A download's webhook deliveries, one per event, in their own partition (the owner lists
    them with one query; the deliver function's policy can be held to this prefix)."""
    return f"{DELIVERY}{download_id}"


def delivery_key(download_id: str, event_id: str) -> dict[str, str]:
    return {PK: deliveries_partition(download_id), SK: event_id}
