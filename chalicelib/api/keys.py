"""A tenant admin's API keys routes: issue, list, rotate and disable the tenant's own keys.

Only the tenant admin role may (403 `Forbidden` otherwise); another tenant's key id answers
404 `KeyNotFound`, as an id that does not exist. A key is shown once, in the answer that
issues it; lists show its id and first characters. Operators manage every tenant's keys
with `python -m scripts.keys` (docs/sign-in.md).
"""

from __future__ import annotations

import re
from typing import Any

from chalicelib.core import clock
from chalicelib.core.errors import Forbidden, InvalidParams, KeyNotFound, MalformedRequest
from chalicelib.core.models import Principal
from chalicelib.core.names import PRINCIPAL_ID_PATTERN, is_principal_id
from chalicelib.runtime import Runtime
from chalicelib.storage.audit import Action, user_actor
from chalicelib.storage.keys import IssuedKey, KeyRecord

MIN_LIFETIME_SECONDS = 60
MAX_LIFETIME_SECONDS = 400 * 24 * 3600  # a key lives at most this long: rotation is not optional
# How long a rotated key may keep working beside its successor, for callers to switch over
# (a week at most; 0, the default: disabled at once, as a rotation after a leak needs).
MAX_GRACE_SECONDS = 7 * 24 * 3600
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")

REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "user_id": {"type": "string", "pattern": PRINCIPAL_ID_PATTERN},
        "roles": {"type": "array", "items": {"type": "string", "pattern": PRINCIPAL_ID_PATTERN}},
        "expires_in": {
            "type": "integer",
            "minimum": MIN_LIFETIME_SECONDS,
            "maximum": MAX_LIFETIME_SECONDS,
            "description": "Seconds until the key expires; none: it does not expire.",
        },
    },
}


ROTATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "expires_in": REQUEST_SCHEMA["properties"]["expires_in"],
        "grace_seconds": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_GRACE_SECONDS,
            "default": 0,
            "description": "Seconds the old key keeps working beside the new one (never past its own "
            "expiry); 0: it is disabled at once.",
        },
    },
}


def _admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("only a tenant admin manages API keys")


def _expires_at(body: dict[str, Any]) -> str | None:
    lifetime = body.get("expires_in")
    if lifetime is None:
        return None
    if type(lifetime) is not int or not MIN_LIFETIME_SECONDS <= lifetime <= MAX_LIFETIME_SECONDS:
        raise InvalidParams(
            f"expires_in must be whole seconds from {MIN_LIFETIME_SECONDS} to {MAX_LIFETIME_SECONDS}",
            field="expires_in",
        )
    return clock.iso(clock.later(lifetime))


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise MalformedRequest("the request body must be a JSON object")
    unknown = sorted(set(body) - set(REQUEST_SCHEMA["properties"]))
    if unknown:
        raise InvalidParams(f"unknown fields: {', '.join(unknown)}", field=unknown[0])
    return body


def create(runtime: Runtime, caller: Principal, body: Any) -> IssuedKey:
    """A new key in the caller's tenant, for `user_id` (default: the caller) with `roles`."""
    _admin(caller)
    body = _object(body)
    user_id = body.get("user_id", caller.user_id)
    if not is_principal_id(user_id):
        raise InvalidParams(f"user_id must match {PRINCIPAL_ID_PATTERN}", field="user_id")
    roles = body.get("roles", [])
    if not isinstance(roles, list) or not all(is_principal_id(role) for role in roles):
        raise InvalidParams(f"roles must be a list of names matching {PRINCIPAL_ID_PATTERN}", field="roles")
    principal = Principal(caller.tenant, user_id, frozenset(roles))
    issued = runtime.keys.issue(principal, expires_at=_expires_at(body))
    _audit(runtime, caller, Action.KEY_ISSUED, issued.record)
    return issued


def list_own(runtime: Runtime, caller: Principal) -> list[dict[str, Any]]:
    _admin(caller)
    return [record.to_api() for record in runtime.keys.list(caller.tenant)]


def _require(runtime: Runtime, caller: Principal, key_id: str) -> KeyRecord:
    _admin(caller)
    record = runtime.keys.find(caller.tenant, key_id) if _KEY_ID.match(key_id) else None
    if record is None:
        raise KeyNotFound(f"no API key {key_id}")
    return record


def rotate(runtime: Runtime, caller: Principal, key_id: str, body: Any) -> IssuedKey:
    """A new key for the same user and roles; the old one is disabled, or expires at the end
    of `grace_seconds`."""
    record = _require(runtime, caller, key_id)
    if not isinstance(body, dict):
        raise MalformedRequest("the request body must be a JSON object")
    unknown = sorted(set(body) - set(ROTATION_SCHEMA["properties"]))
    if unknown:
        raise InvalidParams("a rotation takes only expires_in and grace_seconds", field=unknown[0])
    grace = body.get("grace_seconds", 0)
    if type(grace) is not int or not 0 <= grace <= MAX_GRACE_SECONDS:
        raise InvalidParams(
            f"grace_seconds must be whole seconds from 0 to {MAX_GRACE_SECONDS}", field="grace_seconds"
        )
    issued = runtime.keys.rotate(record, expires_at=_expires_at(body), grace_seconds=grace)
    _audit(runtime, caller, Action.KEY_ROTATED, record, successor=issued.record.key_id, grace_seconds=grace)
    return issued


def disable(runtime: Runtime, caller: Principal, key_id: str) -> KeyRecord:
    disabled = runtime.keys.disable(_require(runtime, caller, key_id))
    _audit(runtime, caller, Action.KEY_DISABLED, disabled)
    return disabled


def _audit(
    runtime: Runtime, caller: Principal, action: Action, record: KeyRecord, **details: str | int
) -> None:
    runtime.audit.record(
        caller.tenant,
        action,
        user_actor(caller),
        "",
        key_id=record.key_id,
        user_id=record.principal.user_id,
        **details,
    )
