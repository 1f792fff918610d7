"""What a handler needs to do its work: settings and the clients built from them.

Built per invocation from the environment (cheap: clients are cached), so a handler
always sees the current configuration and tests can hand in their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalicelib import clients
from chalicelib.audit import AuditLog
from chalicelib.idempotency import IdempotencyStore
from chalicelib.links import LinkStore
from chalicelib.settings import Settings
from chalicelib.store import DownloadStore, KeyStore, Lifetimes


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    s3: Any
    stepfunctions: Any
    events: Any
    downloads: DownloadStore
    keys: KeyStore
    links: LinkStore
    idempotency: IdempotencyStore
    audit: AuditLog

    @classmethod
    def from_env(cls) -> Runtime:
        settings = Settings.from_env()
        table = clients.table(settings.table)
        return cls(
            settings=settings,
            s3=clients.s3(),
            stepfunctions=clients.stepfunctions(),
            events=clients.events(),
            downloads=DownloadStore(
                table,
                Lifetimes(settings.build_deadline_seconds, settings.record_retention_seconds),
                max_active_per_tenant=settings.max_active_per_tenant,
            ),
            keys=KeyStore(table),
            links=LinkStore(table),
            idempotency=IdempotencyStore(table),
            audit=AuditLog(table),
        )
