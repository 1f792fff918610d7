"""POST and GET /tenant/webhook-secret: a tenant admin makes or rotates the tenant's signing
secret (shown once), reads when it was made; nobody else may; and a download cannot ask for
a callback before its tenant has a secret.

The API's clock is set by the test (chalicelib.core.clock.now), so grace periods end exactly
when the test says, without sleeping."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.api import downloads
from chalicelib.core import clients, clock
from chalicelib.core.errors import StartFailed
from chalicelib.core.models import Principal
from chalicelib.runtime import Runtime
from chalicelib.storage.audit import AuditLog
from chalicelib.storage.idempotency import Claim, fingerprint
from chalicelib.storage.keys import KeyStore
from chalicelib.storage.secrets import WebhookSecrets
from tests.support.faults import CALLER, Fault, Injector
from tests.support.stack import Satchel, api_key_of

PATH = "/tenant/webhook-secret"
T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
DEFAULT_GRACE = 86400
ADMIN = frozenset({Principal.ADMIN_ROLE})
# Beside the seeded users: globex's admin, and a tenant that has no secret yet.
MORE_USERS = {
    "gina": Principal("globex", "gina", ADMIN),
    "ivy": Principal("initech", "ivy", ADMIN),
    "ian": Principal("initech", "ian"),
}


@pytest.fixture
def api(satchel: Satchel) -> Satchel:
    keys = KeyStore(clients.table(satchel.stack.table))
    for name, principal in MORE_USERS.items():
        keys.add(api_key_of(name), principal)
    return satchel


@pytest.fixture
def set_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], None]:
    def set_to(moment: datetime) -> None:
        monkeypatch.setattr(clock, "now", lambda: moment)

    set_to(T0)
    return set_to


def signing(tenant: str, now: datetime) -> list[str]:
    return Runtime.from_env().webhook_secrets.signing(tenant, now)


def test_an_admin_rotates_and_sees_the_new_secret_once(
    api: Satchel, set_clock: Callable[[datetime], None]
) -> None:
    seeded = api.stack.webhook_secrets["acme"]
    read = api.call("GET", PATH, "carol")
    assert read.status == 200, read.body
    assert set(read.json) == {"created_at", "previous_valid_until"}
    assert read.json["previous_valid_until"] is None
    assert seeded.encode() not in read.body

    rotated = api.call("POST", PATH, "carol")
    assert rotated.status == 201, rotated.body
    assert rotated.headers["Cache-Control"] == "no-store"
    new = rotated.json["secret"]
    assert new.startswith("whsec_")
    assert new != seeded
    until = clock.iso(T0 + timedelta(seconds=DEFAULT_GRACE))
    assert rotated.json == {"secret": new, "created_at": clock.iso(T0), "previous_valid_until": until}
    assert signing("acme", T0) == [new, seeded]

    read = api.call("GET", PATH, "carol")
    assert read.json == {"created_at": clock.iso(T0), "previous_valid_until": until}
    assert new.encode() not in read.body
    assert seeded.encode() not in read.body


def test_the_grace_period_asked_for_ends_the_old_secret_on_time(
    api: Satchel, set_clock: Callable[[datetime], None]
) -> None:
    seeded = api.stack.webhook_secrets["acme"]
    first = api.call("POST", PATH, "carol", {"grace_seconds": 60})
    assert first.status == 201, first.body
    assert first.json["previous_valid_until"] == clock.iso(T0 + timedelta(seconds=60))
    assert signing("acme", T0 + timedelta(seconds=59)) == [first.json["secret"], seeded]

    set_clock(T0 + timedelta(seconds=30))
    assert api.call("GET", PATH, "carol").json["previous_valid_until"] == first.json["previous_valid_until"]

    set_clock(T0 + timedelta(seconds=60))
    assert signing("acme", T0 + timedelta(seconds=60)) == [first.json["secret"]]
    assert api.call("GET", PATH, "carol").json == {"created_at": clock.iso(T0), "previous_valid_until": None}

    # Rotated again, with no grace at all: only the newest signs, from this instant.
    second = api.call("POST", PATH, "carol", {"grace_seconds": 0})
    assert second.status == 201, second.body
    assert signing("acme", T0 + timedelta(seconds=60)) == [second.json["secret"]]


@pytest.mark.parametrize("user", ["alice", "bob", "dave"])
def test_only_a_tenant_admin_may_read_or_rotate(api: Satchel, user: str) -> None:
    before = {tenant: signing(tenant, clock.now()) for tenant in ("acme", "globex")}
    for method in ("POST", "GET"):
        refused = api.call(method, PATH, user)
        assert refused.status == 403, refused.body
        assert refused.json["Code"] == "Forbidden"
        assert "admin" in refused.json["Message"]
    assert {tenant: signing(tenant, clock.now()) for tenant in ("acme", "globex")} == before


def test_an_admin_rotates_only_their_own_tenants_secret(
    api: Satchel, set_clock: Callable[[datetime], None]
) -> None:
    rotated = api.call("POST", PATH, "gina", {"grace_seconds": 0})
    assert rotated.status == 201, rotated.body
    assert signing("globex", T0) == [rotated.json["secret"]]
    assert signing("acme", T0) == [api.stack.webhook_secrets["acme"]]
    assert api.call("GET", PATH, "carol").json["created_at"] != clock.iso(T0)  # acme's: seeded earlier


def test_a_tenant_without_a_secret_answers_404(api: Satchel) -> None:
    missing = api.call("GET", PATH, "ivy")
    assert missing.status == 404, missing.body
    assert missing.json["Code"] == "WebhookSecretNotFound"
    assert f"POST {PATH}" in missing.json["Message"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"grace_seconds": -1}, 422, "InvalidParams"),
        ({"grace_seconds": DEFAULT_GRACE + 1}, 422, "InvalidParams"),
        ({"grace_seconds": "60"}, 422, "InvalidParams"),
        ({"grace_seconds": True}, 422, "InvalidParams"),
        ({"grace_seconds": 1.5}, 422, "InvalidParams"),
        ({"grace": 60}, 422, "InvalidParams"),
        ([60], 400, "MalformedRequest"),
    ],
)
def test_a_bad_grace_period_is_refused_and_nothing_rotates(
    api: Satchel, body: Any, status: int, code: str
) -> None:
    refused = api.call("POST", PATH, "carol", body)
    assert (refused.status, refused.json["Code"]) == (status, code), refused.body
    assert signing("acme", clock.now()) == [api.stack.webhook_secrets["acme"]]


def test_the_maximum_grace_is_a_setting(api: Satchel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SATCHEL_WEBHOOK_SECRET_GRACE_SECONDS", "120")
    assert api.call("POST", PATH, "carol", {"grace_seconds": 121}).status == 422
    rotated = api.call("POST", PATH, "carol")
    assert rotated.status == 201, rotated.body
    made = clock.parse(rotated.json["created_at"])
    assert clock.parse(rotated.json["previous_valid_until"]) - made == timedelta(seconds=120)


def test_reads_and_rotations_are_audited_refusals_are_not(api: Satchel) -> None:
    assert api.call("POST", PATH, "alice").status == 403
    assert api.call("POST", PATH, "carol", {"grace_seconds": 30}).status == 201
    assert api.call("GET", PATH, "carol").status == 200

    trail = [
        (event.action, event.actor, event.download_id, event.details)
        for event in AuditLog(clients.table(api.stack.table)).events("acme")
    ]
    assert trail == [
        ("webhook_secret.rotated", "user:carol", "", {"first": False, "grace_seconds": 30}),
        ("webhook_secret.read", "user:carol", "", {}),
    ]


def test_a_callback_needs_a_secret_and_the_refusal_leaves_nothing_behind(
    api: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SATCHEL_MAX_ACTIVE_PER_USER", "1")
    api.put_source("initech/a.txt", b"initech")
    request = {"type": "zip", "params": {"keys": ["initech/a.txt"]}, "callback_url": "http://127.0.0.1:9/cb"}
    headers = {"Idempotency-Key": "first-try"}

    refused = api.call("POST", "/downloads", "ian", request, headers=headers)
    assert refused.status == 409, refused.body
    assert refused.json["Code"] == "WebhookSecretMissing"
    assert "tenant admin" in refused.json["Message"]
    assert f"POST {PATH}" in refused.json["Message"]
    assert api.call("GET", "/downloads", "ian").json["items"] == []

    # Without a callback the tenant's users create downloads as before; and had the refusal
    # kept a quota slot, this one (ian may have one active download) would be 429.
    without = api.call("POST", "/downloads", "ian", {"type": "zip", "params": {"keys": ["initech/a.txt"]}})
    assert without.status == 202, without.body
    assert api.wait(without.json["id"], "ian")["state"] == "DONE"

    # Once the admin made one, the very same request (same key) runs: the key was not held.
    assert api.call("POST", PATH, "ivy").status == 201
    created = api.call("POST", "/downloads", "ian", request, headers=headers)
    assert created.status == 202, created.body
    assert "Idempotent-Replayed" not in created.headers
    assert api.wait(created.json["id"], "ian")["state"] == "DONE"


class Unavailable:
    """A table whose reads fail as DynamoDB's do when it is unavailable (after botocore's retries)."""

    def get_item(self, **_: Any) -> Any:
        error = {"Error": {"Code": "InternalServerError", "Message": "injected"}}
        raise ClientError(error, "GetItem")


def test_a_failure_to_read_the_secret_is_a_retryable_refusal(api: Satchel) -> None:
    runtime = dataclasses.replace(Runtime.from_env())
    runtime.__dict__["webhook_secrets"] = WebhookSecrets(
        Unavailable(),  # type: ignore[arg-type]
        clients.kms(),
        runtime.settings.kms_key_id,
    )
    request = {"type": "zip", "params": {"keys": ["initech/a.txt"]}, "callback_url": "http://127.0.0.1:9/cb"}
    with pytest.raises(StartFailed) as refused:
        downloads.create(runtime, MORE_USERS["ian"], request, "retry-me")
    assert refused.value.status == 503
    assert refused.value.headers() == {"Retry-After": "5"}
    assert api.call("GET", "/downloads", "ian").json["items"] == []
    claim = Claim(MORE_USERS["ian"], "retry-me", fingerprint(request))
    assert Runtime.from_env().idempotency.existing(claim) is None


@pytest.mark.parametrize("operation", ["kms.Encrypt", "dynamodb.PutItem"])
def test_a_rotation_kms_or_the_table_keeps_refusing_answers_503_and_changes_nothing(
    api: Satchel, set_clock: Callable[[datetime], None], operation: str
) -> None:
    """Throttled through botocore's retries: 503 TransientError with Retry-After, naming no
    AWS service; the secret is unchanged, and the rotation asked again succeeds."""
    seeded = api.stack.webhook_secrets["acme"]
    injector = Injector(api.stack.table)
    injector.install()
    with injector.armed(Fault(operation, "throttle", step=CALLER)) as arming:
        refused = api.call("POST", PATH, "carol")
        assert injector.fired(arming) > 0
    assert refused.status == 503, refused.body
    assert refused.headers["Retry-After"] == "5"
    assert refused.json["Code"] == "TransientError"
    for internal in ("Throttling", "Encrypt", "PutItem", "KMS", "DynamoDB"):
        assert internal not in refused.body.decode()
    assert signing("acme", T0) == [seeded]

    again = api.call("POST", PATH, "carol")
    assert again.status == 201, again.body
    assert signing("acme", T0) == [again.json["secret"], seeded]
