"""Who is calling: API keys (`Authorization: Bearer <key>`) to principals, and back.

The authorizer resolves the key once per request (API Gateway may cache the answer) and
passes the principal to the route in the authorizer context, whose values must be strings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from chalicelib.core.errors import UnknownPrincipal
from chalicelib.core.models import Principal
from chalicelib.storage.keys import KeyStore

log = logging.getLogger(__name__)
_BEARER = "bearer "
_MAX_KEY_LENGTH = 256


def bearer_key(header: str | None) -> str | None:
    if not header or header[: len(_BEARER)].lower() != _BEARER:
        return None
    key = header[len(_BEARER) :].strip()
    return key if 0 < len(key) <= _MAX_KEY_LENGTH else None


def authenticate(keys: KeyStore, header: str | None) -> Principal | None:
    key = bearer_key(header)
    if not key:
        return None
    try:
        return keys.principal_for(key)
    except UnknownPrincipal:
        # A key record written by hand with an id outside the pattern: refused, never a 500.
        log.warning("an API key names a tenant or user id outside the allowed pattern")
        return None


def to_context(principal: Principal) -> dict[str, str]:
    return {
        "tenant": principal.tenant,
        "user_id": principal.user_id,
        "roles": ",".join(sorted(principal.roles)),
    }


def from_context(context: Mapping[str, Any]) -> Principal:
    authorizer = context.get("authorizer") or {}
    roles = authorizer.get("roles") or ""
    return Principal(
        tenant=authorizer["tenant"],
        user_id=authorizer["user_id"],
        roles=frozenset(role for role in roles.split(",") if role),
    )
