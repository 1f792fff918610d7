"""What a handler needs to do its work: settings and the clients built from them.

Built once per process from the environment, and again when that changes: `from_env` keys
its cache on the SATCHEL_* variables (what Settings reads) and on the clients in use, so a
test that monkeypatches the environment or re-points the clients (`clients.reset()`) gets a
runtime built from what it set. Tests may also hand in their own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from chalicelib.core import clients
from chalicelib.core.settings import Settings
from chalicelib.storage.audit import AuditLog
from chalicelib.storage.deliveries import DeliveryStore
from chalicelib.storage.downloads import DownloadStore, Lifetimes
from chalicelib.storage.idempotency import IdempotencyStore
from chalicelib.storage.identities import IdentityStore
from chalicelib.storage.keys import KeyStore
from chalicelib.storage.links import LinkStore

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_events.client import EventBridgeClient
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_stepfunctions.client import SFNClient

    from chalicelib.storage.secrets import WebhookSecrets

_PREFIX = "SATCHEL_"  # every variable Settings reads (chalicelib/core/settings.py)


@dataclass(frozen=True)
class _Key:
    environment: tuple[tuple[str, str], ...]
    s3: S3Client  # clients.reset() makes new clients, and a new table resource: compared by identity

    def same(self, other: _Key) -> bool:
        return self.environment == other.environment and self.s3 is other.s3


def _environment() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((name, value) for name, value in os.environ.items() if name.startswith(_PREFIX)))


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    s3: S3Client
    stepfunctions: SFNClient
    events: EventBridgeClient
    sqs: SQSClient
    downloads: DownloadStore
    keys: KeyStore
    links: LinkStore
    idempotency: IdempotencyStore
    audit: AuditLog
    identities: IdentityStore
    deliveries: DeliveryStore

    @cached_property
    def webhook_secrets(self) -> WebhookSecrets:
        # Built on first use: most functions never sign, and need no KMS client (nor the
        # store's module: imported here, off every function's cold start).
        from chalicelib.storage.secrets import WebhookSecrets

        return WebhookSecrets(clients.table(self.settings.table), clients.kms(), self.settings.kms_key_id)

    @classmethod
    def from_env(cls) -> Runtime:
        global _built
        key = _Key(_environment(), clients.s3())
        built = _built
        if built is None or not built[0].same(key):
            # From the same snapshot as the key: the cached settings are the key's, even when
            # another thread changes the environment meanwhile.
            built = _built = (key, cls.build(Settings.from_env(dict(key.environment))))
        return built[1]

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        table = clients.table(settings.table)
        return cls(
            settings=settings,
            s3=clients.s3(),
            stepfunctions=clients.stepfunctions(),
            events=clients.events(),
            sqs=clients.sqs(),
            downloads=DownloadStore(
                table,
                Lifetimes(
                    settings.build_deadline_seconds,
                    settings.record_retention_seconds,
                    settings.expiring_unused_seconds,
                ),
                max_active_per_tenant=settings.max_active_per_tenant,
            ),
            keys=KeyStore(table),
            links=LinkStore(table),
            idempotency=IdempotencyStore(table),
            audit=AuditLog(table),
            identities=IdentityStore(table),
            deliveries=DeliveryStore(
                table, settings.delivery_window_seconds + settings.record_retention_seconds
            ),
        )


_built: tuple[_Key, Runtime] | None = None
