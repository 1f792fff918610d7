"""Each tenant's webhook signing secrets, stored encrypted with KMS.

A tenant has one record (layout.webhook_secret_key): its current secret and, for a grace
period after a rotation, the previous one, so receivers can switch over without dropping a
delivery (both sign meanwhile: Standard Webhooks' space-separated `v1,` signatures).

Secrets are Standard Webhooks secrets, `whsec_` + base64 of 32 random bytes. Only KMS
ciphertexts are stored, each encrypted with the encryption context
{"satchel:tenant": <tenant>}: KMS binds the ciphertext to it, so a ciphertext copied into
another tenant's record does not decrypt there (WebhookSecretUnreadable), nor does a
tampered one. A plaintext leaves this module only as the answer to the admin who rotated
(shown once) and to the code that signs; it is never logged.

Rotation is a conditional write on the record's `version`: of two rotations that read the
same record, one wins and the other is refused with 409 `WebhookSecretConflict` (it is not
retried: its caller would be shown a secret that was already rotated out). A write whose
answer was lost is read back: if it landed (botocore's retry of it then fails the condition),
the rotation is answered as done, never a 5xx or a 409 for a secret that now signs. A rotation
within the grace period of the one before ends that older secret at once: at most two sign.

`signing` reads the record on every call (a rotation takes effect at once) but asks KMS to
decrypt each ciphertext at most once per process: plaintexts are cached by (tenant,
ciphertext), so a tampered or moved ciphertext is never answered from the cache.
"""

from __future__ import annotations

import base64
import logging
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.core import clock
from chalicelib.core.errors import ConfigurationError, WebhookSecretConflict, WebhookSecretUnreadable
from chalicelib.core.settings import ENV_KMS_KEY_ID
from chalicelib.storage import layout

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_dynamodb.service_resource import Table
    from mypy_boto3_kms.client import KMSClient

log = logging.getLogger(__name__)

PREFIX = "whsec_"
SECRET_BYTES = 32
CONTEXT_KEY = "satchel:tenant"
# KMS's answers for a ciphertext it will not decrypt with this key and context (an
# AccessDenied is the role's policy, not the ciphertext: it stays a ClientError).
_UNREADABLE = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def encryption_context(tenant: str) -> dict[str, str]:
    return {CONTEXT_KEY: tenant}


@dataclass(frozen=True)
class SecretInfo:
    """What may be told about a tenant's secrets: never the secrets themselves."""

    created_at: str
    previous_valid_until: str | None  # None when no previous secret still signs

    def to_api(self) -> dict[str, Any]:
        return {"created_at": self.created_at, "previous_valid_until": self.previous_valid_until}


@dataclass(frozen=True)
class IssuedSecret:
    """A new secret, as its rotation answers it: the plaintext is shown this once."""

    secret: str = field(repr=False)  # never in a log line or a traceback
    created_at: str
    previous_valid_until: str | None  # None for a tenant's first secret

    def to_api(self) -> dict[str, Any]:
        return {
            "secret": self.secret,
            "created_at": self.created_at,
            "previous_valid_until": self.previous_valid_until,
        }


class PlaintextCache:
    """Decrypted secrets by (tenant, ciphertext), bounded; shared by the process's stores."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, bytes], str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, tenant: str, ciphertext: bytes) -> str | None:
        with self._lock:
            found = self._items.get((tenant, ciphertext))
            if found is not None:
                self._items.move_to_end((tenant, ciphertext))
            return found

    def put(self, tenant: str, ciphertext: bytes, plaintext: str) -> None:
        with self._lock:
            self._items[(tenant, ciphertext)] = plaintext
            self._items.move_to_end((tenant, ciphertext))
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_PROCESS_CACHE = PlaintextCache()


def forget_plaintexts() -> None:
    """Empty the process's cache, as a new Lambda container starts: its first signing asks
    KMS again (the fault tests start each test so, to reach the Decrypt call)."""
    _PROCESS_CACHE.clear()


@dataclass(frozen=True)
class _Record:
    version: int
    current: bytes
    created_at: str
    previous: bytes | None
    previous_valid_until: str | None

    def previous_signs(self, now: datetime) -> bool:
        return (
            self.previous is not None
            and self.previous_valid_until is not None
            and now < clock.parse(self.previous_valid_until)
        )


def _binary(value: Any) -> bytes:
    """A Binary attribute as bytes (boto3's resource wraps them in its Binary type)."""
    return bytes(value.value if hasattr(value, "value") else value)


class WebhookSecrets:
    def __init__(
        self, table: Table, kms: KMSClient, key_id: str, cache: PlaintextCache | None = None
    ) -> None:
        self._table = table
        self._kms = kms
        self._key_id = key_id
        self._cache = _PROCESS_CACHE if cache is None else cache

    def rotate(self, tenant: str, now: datetime, grace_seconds: int) -> IssuedSecret:
        """Create the tenant's first secret, or replace its current one, which then signs
        for `grace_seconds` more (0: not at all). WebhookSecretConflict if another rotation
        of the same tenant's secret won the race."""
        if grace_seconds < 0:
            raise ValueError("grace_seconds must not be negative")
        existing = self._read(tenant)
        secret = new_secret()
        created_at = clock.iso(now)
        version = (existing.version if existing else 0) + 1
        ciphertext = self._encrypt(tenant, secret)
        item: dict[str, Any] = {
            **layout.webhook_secret_key(tenant),
            "tenant": tenant,
            "version": version,
            "current": ciphertext,
            "created_at": created_at,
        }
        valid_until = None
        if existing is not None:
            valid_until = clock.iso(now + timedelta(seconds=grace_seconds))
            if grace_seconds > 0:
                item["previous"] = existing.current
                item["previous_valid_until"] = valid_until
        condition: dict[str, Any] = (
            {"ConditionExpression": f"attribute_not_exists({layout.PK})"}
            if existing is None
            else {
                "ConditionExpression": "version = :seen",
                "ExpressionAttributeValues": {":seen": existing.version},
            }
        )
        issued = IssuedSecret(secret, created_at, valid_until)
        try:
            self._table.put_item(Item=item, **condition)
        except (ClientError, BotoCoreError) as error:
            # A write whose answer was lost (a read timeout, a 500) may have landed, and then
            # botocore's retry of it fails the condition: the record says which. A rotation
            # that landed is answered, or its secret would sign unknown to anyone.
            if self._landed(tenant, version, ciphertext):
                log.warning("the rotation of tenant %s was stored though its write failed: %s", tenant, error)
                return issued
            if (
                isinstance(error, ClientError)
                and error.response["Error"]["Code"] == "ConditionalCheckFailedException"
            ):
                raise WebhookSecretConflict(
                    "another request rotated the tenant's webhook secret at the same time and won; "
                    "rotate again to get a secret you know"
                ) from None
            raise
        return issued

    def _landed(self, tenant: str, version: int, ciphertext: bytes) -> bool:
        """Whether the record holds this rotation's write (a KMS ciphertext is never made twice)."""
        try:
            record = self._read(tenant)
        except (ClientError, BotoCoreError):
            return False  # unknown: the write's own error stands
        return record is not None and record.version == version and record.current == ciphertext

    def describe(self, tenant: str, now: datetime) -> SecretInfo | None:
        """When the current secret was made and until when the previous one signs; None
        when the tenant has none. Reads the record only, never KMS."""
        record = self._read(tenant)
        if record is None:
            return None
        until = record.previous_valid_until if record.previous_signs(now) else None
        return SecretInfo(record.created_at, until)

    def signing(self, tenant: str, now: datetime) -> list[str]:
        """The secrets that sign the tenant's deliveries now: the current one first, then
        the previous one while its grace lasts; [] when the tenant has none."""
        record = self._read(tenant)
        if record is None:
            return []
        ciphertexts = [record.current]
        if record.previous_signs(now) and record.previous is not None:
            ciphertexts.append(record.previous)
        return [self._decrypt(tenant, ciphertext) for ciphertext in ciphertexts]

    def _read(self, tenant: str) -> _Record | None:
        # Consistent: a rotation signs from the very next delivery, and races are seen.
        found = self._table.get_item(Key=layout.webhook_secret_key(tenant), ConsistentRead=True)
        item: dict[str, Any] | None = found.get("Item")
        if not item:
            return None
        return _Record(
            version=int(item["version"]),
            current=_binary(item["current"]),
            created_at=str(item["created_at"]),
            previous=_binary(item["previous"]) if "previous" in item else None,
            previous_valid_until=item.get("previous_valid_until"),
        )

    def _key(self) -> str:
        if not self._key_id:
            raise ConfigurationError(f"{ENV_KMS_KEY_ID} is not set: webhook secrets cannot be stored or read")
        return self._key_id

    def _encrypt(self, tenant: str, secret: str) -> bytes:
        answer = self._kms.encrypt(
            KeyId=self._key(), Plaintext=secret.encode("ascii"), EncryptionContext=encryption_context(tenant)
        )
        return answer["CiphertextBlob"]

    def _decrypt(self, tenant: str, ciphertext: bytes) -> str:
        cached = self._cache.get(tenant, ciphertext)
        if cached is not None:
            return cached
        try:
            answer = self._kms.decrypt(
                KeyId=self._key(), CiphertextBlob=ciphertext, EncryptionContext=encryption_context(tenant)
            )
        except ClientError as error:
            if error.response["Error"]["Code"] not in _UNREADABLE:
                raise  # throttled, KMS unreachable: the caller retries
            log.error(
                "KMS refused to decrypt a webhook secret of tenant %s: %s",
                tenant,
                error.response["Error"]["Code"],
            )
            raise WebhookSecretUnreadable(
                "the tenant's webhook secret cannot be decrypted; a tenant admin must rotate it"
            ) from None
        plaintext = answer["Plaintext"].decode("ascii")
        self._cache.put(tenant, ciphertext, plaintext)
        return plaintext
