"""API keys' lifecycle: a tenant admin issues, lists, rotates and disables the tenant's keys
through the API; disabled and expired keys are refused by the authorizer with their own
Code; a key's last use is recorded, at most once per window."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app import bearer
from chalicelib.api import auth
from chalicelib.core import clients, clock
from chalicelib.core.models import Principal
from chalicelib.runtime import Runtime
from chalicelib.storage.keys import KeyStore
from satchel_local.stack import Stack
from tests.support.stack import Reply, Satchel


def _with_key(satchel: Satchel, method: str, path: str, key: str, body: object = None) -> Reply:
    return satchel.call(method, path, None, body, headers={"Authorization": f"Bearer {key}"})


def _store(stack: Stack) -> KeyStore:
    return KeyStore(clients.table(stack.table))


def test_an_admin_issues_a_key_that_works_and_is_shown_once(satchel: Satchel) -> None:
    issued = satchel.call(
        "POST", "/keys", "carol", {"user_id": "erin", "roles": ["analyst"], "expires_in": 3600}
    )
    assert issued.status == 201, issued.body
    key = issued.json["api_key"]
    assert key.startswith("sat_")
    assert issued.json["prefix"] == key[:8]
    assert (issued.json["tenant"], issued.json["user_id"], issued.json["roles"]) == (
        "acme",
        "erin",
        ["analyst"],
    )
    assert issued.json["expires_at"] > clock.iso(clock.now())
    assert issued.headers["Cache-Control"] == "no-store"

    assert _with_key(satchel, "GET", "/downloads", key).status == 200

    listed = satchel.call("GET", "/keys", "carol")
    assert listed.status == 200
    items = listed.json["items"]
    assert {item["user_id"] for item in items} >= {"alice", "bob", "carol", "erin"}
    assert {item["tenant"] for item in items} == {"acme"}  # never globex's
    assert not any("api_key" in item for item in items)
    assert key not in listed.body.decode()
    erin = next(item for item in items if item["user_id"] == "erin")
    assert set(erin) == {
        "id", "prefix", "tenant", "user_id", "roles", "created_at", "expires_at", "disabled", "last_used_at"
    }  # fmt: skip
    assert erin["last_used_at"] is not None  # the request above was its first use


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/keys"), ("GET", "/keys"), ("DELETE", "/keys/0123456789abcdef")]
)
def test_only_a_tenant_admin_manages_keys(satchel: Satchel, method: str, path: str) -> None:
    refused = satchel.call(method, path, "alice", {} if method == "POST" else None)
    assert (refused.status, refused.json["Code"]) == (403, "Forbidden")


def test_another_tenants_key_does_not_exist(satchel: Satchel, stack: Stack) -> None:
    _store(stack).add("globex-admin-key-0123456789", Principal("globex", "gina", frozenset({"admin"})))
    alice = next(
        item for item in satchel.call("GET", "/keys", "carol").json["items"] if item["user_id"] == "alice"
    )
    for method, path in (("DELETE", f"/keys/{alice['id']}"), ("POST", f"/keys/{alice['id']}/rotate")):
        refused = _with_key(satchel, method, path, "globex-admin-key-0123456789")
        assert (refused.status, refused.json["Code"]) == (404, "KeyNotFound")
    assert satchel.call("GET", "/downloads", "alice").status == 200  # still good
    assert (satchel.call("DELETE", "/keys/not-an-id", "carol").json["Code"]) == "KeyNotFound"


def test_a_disabled_key_is_refused_with_its_code(satchel: Satchel) -> None:
    key = satchel.call("POST", "/keys", "carol", {"user_id": "frank"}).json
    disabled = satchel.call("DELETE", f"/keys/{key['id']}", "carol")
    assert disabled.status == 200
    assert disabled.json["disabled"] is True
    assert _with_key(satchel, "GET", "/downloads", key["api_key"]).status == 403
    verdict = auth.authorize(Runtime.from_env(), f"Bearer {key['api_key']}")
    assert (verdict.principal, verdict.refusal) == (None, "KeyDisabled")
    # As the authorizer Lambda answers API Gateway: an explicit Deny carrying the code.
    arn = "arn:aws:execute-api:us-east-1:123456789012:abc123/api/GET/downloads"
    event = {"type": "TOKEN", "authorizationToken": f"Bearer {key['api_key']}", "methodArn": arn}
    answer = bearer(event, None)
    assert answer["context"] == {"code": "KeyDisabled"}
    assert answer["policyDocument"]["Statement"][0]["Effect"] == "Deny"


def test_an_expired_key_is_refused_with_its_code(satchel: Satchel, stack: Stack) -> None:
    past = clock.iso(clock.later(-1))
    _store(stack).add("expired-key-0123456789abcdef", Principal("acme", "gus"), expires_at=past)
    assert _with_key(satchel, "GET", "/downloads", "expired-key-0123456789abcdef").status == 403
    verdict = auth.authorize(Runtime.from_env(), "Bearer expired-key-0123456789abcdef")
    assert verdict.refusal == "KeyExpired"
    assert auth.authorize(Runtime.from_env(), "Bearer no-such-key-0123456789").refusal == "KeyUnknown"
    assert auth.authorize(Runtime.from_env(), None).refusal == "Unauthorized"


def test_rotation_issues_a_new_key_and_disables_the_old(satchel: Satchel) -> None:
    old = satchel.call("POST", "/keys", "carol", {"user_id": "hana", "roles": ["analyst"]}).json
    rotated = satchel.call("POST", f"/keys/{old['id']}/rotate", "carol", {"expires_in": 600})
    assert rotated.status == 201, rotated.body
    new = rotated.json
    assert new["id"] != old["id"]
    assert new["api_key"] != old["api_key"]
    assert (new["user_id"], new["roles"]) == ("hana", ["analyst"])
    assert _with_key(satchel, "GET", "/downloads", new["api_key"]).status == 200
    assert _with_key(satchel, "GET", "/downloads", old["api_key"]).status == 403


def test_a_rotation_with_grace_keeps_the_old_key_working_until_the_grace_ends(
    satchel: Satchel, stack: Stack
) -> None:
    old = satchel.call("POST", "/keys", "carol", {"user_id": "hana", "roles": ["analyst"]}).json
    before = clock.now()
    rotated = satchel.call("POST", f"/keys/{old['id']}/rotate", "carol", {"grace_seconds": 3600})
    assert rotated.status == 201, rotated.body
    new = rotated.json

    # Both work while callers switch over.
    assert _with_key(satchel, "GET", "/downloads", new["api_key"]).status == 200
    assert _with_key(satchel, "GET", "/downloads", old["api_key"]).status == 200
    record = _store(stack).find("acme", old["id"])
    assert record is not None
    assert record.expires_at is not None
    assert not record.disabled
    ends = clock.parse(record.expires_at)
    assert before + timedelta(seconds=3599) <= ends <= clock.now() + timedelta(seconds=3600)
    # Then the old one is refused as any expired key, and the new one goes on.
    assert record.refusal(ends) == "KeyExpired"
    assert record.refusal(ends - timedelta(seconds=1)) is None
    listed = {key["id"]: key for key in satchel.call("GET", "/keys", "carol").json["items"]}
    assert listed[old["id"]]["expires_at"] == record.expires_at
    trail = [e for e in Runtime.from_env().audit.events("acme") if e.details.get("key_id") == old["id"]]
    assert [e.details.get("grace_seconds") for e in trail if e.action == "key.rotated"] == [3600]


def test_a_grace_never_lengthens_the_old_keys_life(satchel: Satchel, stack: Stack) -> None:
    old = satchel.call("POST", "/keys", "carol", {"user_id": "hana", "expires_in": 120}).json
    rotated = satchel.call("POST", f"/keys/{old['id']}/rotate", "carol", {"grace_seconds": 3600})
    assert rotated.status == 201, rotated.body
    record = _store(stack).find("acme", old["id"])
    assert record is not None
    assert record.expires_at == old["expires_at"]


@pytest.mark.parametrize("grace", [-1, 604801, "60", 1.5, None])
def test_an_invalid_grace_is_refused_and_nothing_is_rotated(satchel: Satchel, grace: object) -> None:
    old = satchel.call("POST", "/keys", "carol", {"user_id": "hana"}).json
    refused = satchel.call("POST", f"/keys/{old['id']}/rotate", "carol", {"grace_seconds": grace})
    assert (refused.status, refused.json["Code"], refused.json["field"]) == (
        422,
        "InvalidParams",
        "grace_seconds",
    )
    assert _with_key(satchel, "GET", "/downloads", old["api_key"]).status == 200
    keys = [key for key in satchel.call("GET", "/keys", "carol").json["items"] if key["user_id"] == "hana"]
    assert len(keys) == len({key["id"] for key in keys})
    assert old["id"] in {key["id"] for key in keys}


@pytest.mark.parametrize(
    "body",
    [
        {"expires_in": 1},
        {"expires_in": "3600"},
        {"user_id": "Not An Id"},
        {"roles": "admin"},
        {"tenant": "globex"},
    ],
)
def test_invalid_key_requests_are_refused(satchel: Satchel, body: dict[str, object]) -> None:
    refused = satchel.call("POST", "/keys", "carol", body)
    assert (refused.status, refused.json["Code"]) == (422, "InvalidParams")


def test_last_use_is_written_at_most_once_per_window(stack: Stack) -> None:
    keys = _store(stack)
    record = keys.add("window-key-0123456789abcdef", Principal("acme", "ivy"))
    now = clock.now()
    assert keys.touch(record, now, every=300) is True
    assert keys.touch(record, clock.later(299, now), every=300) is False  # within the window: no write
    assert keys.touch(record, clock.later(301, now), every=300) is True
    stamped = keys.find("acme", record.key_id)
    assert stamped is not None
    assert stamped.last_used_at == clock.iso(clock.later(301, now))


def test_a_failed_last_use_write_never_fails_the_request(stack: Stack) -> None:
    keys = _store(stack)
    record = keys.add("gone-key-0123456789abcdef", Principal("acme", "jo"))
    clients.table(stack.table).delete_item(Key={"pk": f"APIKEY#{record.key_hash}", "sk": "APIKEY"})
    assert keys.touch(record, clock.now()) is False  # the conditional write lost: no exception


def test_the_key_lifecycle_is_in_the_tenants_audit_trail(satchel: Satchel) -> None:
    issued = satchel.call("POST", "/keys", "carol", {"user_id": "kim"}).json
    rotated = satchel.call("POST", f"/keys/{issued['id']}/rotate", "carol").json
    satchel.call("DELETE", f"/keys/{rotated['id']}", "carol")
    trail = [event for event in Runtime.from_env().audit.events("acme") if event.action.startswith("key.")]
    assert [(event.action, event.actor, event.details["key_id"]) for event in trail] == [
        ("key.issued", "user:carol", issued["id"]),
        ("key.rotated", "user:carol", issued["id"]),
        ("key.disabled", "user:carol", rotated["id"]),
    ]
    assert trail[1].details["successor"] == rotated["id"]
    assert issued["api_key"] not in str([event.details for event in trail])
