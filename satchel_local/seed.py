"""Demo data for the local stack: tenants, users with fresh API keys, and source objects.

The objects are small and deterministic (the same bytes on every run) so a test can
compare an archive with them; the keys are random on every run, as real keys are.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalicelib.core import clock
from chalicelib.core.models import Principal
from chalicelib.storage.keys import KeyStore
from chalicelib.storage.secrets import WebhookSecrets
from satchel_local import demodata

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_s3.client import S3Client

# The design asks for two users in one tenant, a tenant admin, and a user in another tenant.
PRINCIPALS: dict[str, Principal] = {
    "alice": Principal("acme", "alice"),
    "bob": Principal("acme", "bob"),
    "carol": Principal("acme", "carol", frozenset({Principal.ADMIN_ROLE})),
    "dave": Principal("globex", "dave"),
}


def _csv(quarter: int) -> bytes:
    rows = ["month,region,revenue"]
    rows += [
        f"{3 * (quarter - 1) + month},{region},{1000 * quarter + 37 * month + len(region)}"
        for month in (1, 2, 3)
        for region in ("north", "south", "east", "west")
    ]
    return ("\n".join(rows) + "\n").encode()


def _noise(size: int) -> bytes:
    # A fixed seed: the same "photo" every run, so the bytes can be checked, yet incompressible.
    return random.Random(20240601).randbytes(size)


# Nested paths, a non-ASCII name and one binary object: what a zip must get right.
SOURCES: dict[str, bytes] = {
    "acme/reports/2024/q1.csv": _csv(1),
    "acme/reports/2024/q2.csv": _csv(2),
    "acme/photos/été ☃.txt": "Bonjour de l'été ☃ — UTF-8 names survive the zip.\n".encode() * 40,
    "acme/photos/2024/summer/sunset.raw": _noise(192 * 1024),
    "globex/plans/roadmap.md": b"# Globex roadmap\n\n- acme must never see this file\n",
}


# What the printed curl session zips: a nested path and a non-ASCII name among them.
DEMO_KEYS = ("acme/reports/2024/q1.csv", "acme/reports/2024/q2.csv", "acme/photos/été ☃.txt")


@dataclass(frozen=True)
class User:
    name: str
    principal: Principal
    api_key: str

    def describe(self) -> dict[str, Any]:
        """The user's entry in .satchel-local.json."""
        return {
            "tenant": self.principal.tenant,
            "user_id": self.principal.user_id,
            "roles": sorted(self.principal.roles),
            "api_key": self.api_key,
        }


def seed_users(keys: KeyStore) -> dict[str, User]:
    users = {name: User(name, principal, secrets.token_urlsafe(24)) for name, principal in PRINCIPALS.items()}
    for user in users.values():
        keys.add(user.api_key, user.principal)
    return users


def tenants() -> list[str]:
    """The seeded users' tenants, each once."""
    return sorted({principal.tenant for principal in PRINCIPALS.values()})


def seed_webhook_secrets(store: WebhookSecrets) -> dict[str, str]:
    """A webhook signing secret for each seeded tenant, as its admin would make one: by tenant."""
    now = clock.now()
    return {tenant: store.rotate(tenant, now, grace_seconds=0).secret for tenant in tenants()}


def seed_sources(s3: S3Client, bucket: str) -> None:
    for key, body in SOURCES.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


# The demo dataset `export` reads: enough rows that an export is worth its progress bar.
DEMO_ROWS = 100_000


def seed_dataset(stage: str, region: str, rows: int = DEMO_ROWS) -> None:
    """`rows` transactions for acme, a few for globex."""
    demodata.seed(stage, "acme", rows, region)
    demodata.seed(stage, "globex", min(rows, 500), region)


def tenant_sources(tenant: str) -> dict[str, bytes]:
    """The seeded objects a user of `tenant` may zip."""
    return {key: body for key, body in SOURCES.items() if key.startswith(f"{tenant}/")}
