"""OIDC sign-in: a JWT from the stage's issuer (a Cognito user pool or any OIDC provider),
checked and mapped to a principal.

A token is accepted when, in this order:
1. its header names an algorithm the stage allows (SATCHEL_OIDC_ALGORITHMS: asymmetric only,
   never `none`) and a `kid` the issuer's JWKS holds (fetched on first use, cached for
   SATCHEL_OIDC_JWKS_CACHE_SECONDS, fetched again for an unknown `kid` at most once every
   SATCHEL_OIDC_JWKS_REFRESH_SECONDS, so forged kids cannot make the authorizer hammer the
   issuer);
2. its signature verifies with that key;
3. `iss` is the issuer, `aud` holds the audience (a Cognito ID token's `aud` is the app
   client id), `exp` is in the future and `nbf`/`iat` not in it, each within
   SATCHEL_OIDC_LEEWAY_SECONDS of clock skew.

Its principal: tenant = the claim SATCHEL_OIDC_TENANT_CLAIM (Cognito: `custom:tenant`), or
SATCHEL_OIDC_TENANT for an issuer that serves one tenant; user = SATCHEL_OIDC_USER_CLAIM
(default `sub`); roles = SATCHEL_OIDC_ROLES_CLAIM (a list, or a space- or comma-separated
string; Cognito: `cognito:groups`), where the value SATCHEL_OIDC_ADMIN_VALUE means the tenant
admin role. A tenant or user that is not a valid id refuses the token: ids are never mangled
into someone else's.

Refusals carry a stable code: `TokenExpired`, `InvalidToken` (any other failed check: which
one is logged, not answered) or `UnmappedPrincipal`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import ExpiredTokenError, JoseError
from joserfc.jwk import KeySet

from chalicelib.core.errors import UnknownPrincipal
from chalicelib.core.models import Principal
from chalicelib.core.names import is_principal_id
from chalicelib.core.settings import SignIn

log = logging.getLogger(__name__)

TOKEN_EXPIRED = "TokenExpired"
INVALID_TOKEN = "InvalidToken"
UNMAPPED_PRINCIPAL = "UnmappedPrincipal"
_FETCH_TIMEOUT_SECONDS = 3
_MAX_JWKS_BYTES = 256 * 1024


class TokenRefused(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def _fetch(url: str) -> dict[str, Any]:
    # urllib, not requests: nothing else is needed, and the authorizer stays small. The URL is
    # the stage's own setting, never taken from a token.
    with urllib.request.urlopen(url, timeout=_FETCH_TIMEOUT_SECONDS) as answer:
        document: dict[str, Any] = json.loads(answer.read(_MAX_JWKS_BYTES))
    return document


@dataclass
class Jwks:
    """One issuer's signing keys, cached for the life of the process (a warm Lambda)."""

    url: str
    cache_seconds: int
    refresh_seconds: int
    fetch: Callable[[str], dict[str, Any]] = _fetch
    clock: Callable[[], float] = time.monotonic
    _keys: KeySet | None = None
    _fetched_at: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)
    fetches: int = 0

    def key(self, kid: str) -> Any:
        """The key with this id, fetching the set when it is stale, or when the id is unknown
        and the last fetch is older than `refresh_seconds`. None if the issuer has no such key."""
        with self._lock:
            age = self.clock() - self._fetched_at
            if self._keys is None or age >= self.cache_seconds:
                self._load()
            found = self._find(kid)
            if found is None and self.clock() - self._fetched_at >= self.refresh_seconds:
                self._load()  # the issuer may have rotated its keys since
                found = self._find(kid)
            return found

    def _find(self, kid: str) -> Any:
        if self._keys is None:
            return None
        return next((key for key in self._keys.keys if key.kid == kid), None)

    def _load(self) -> None:
        self.fetches += 1
        self._fetched_at = self.clock()  # also on failure: a failing issuer is not asked again at once
        document = self.fetch(self.url)
        self._keys = KeySet.import_key_set(document)  # type: ignore[arg-type]


_cached: dict[tuple[str, int, int], Jwks] = {}


def jwks_for(sign_in: SignIn) -> Jwks:
    """The process's JWKS cache for the stage's issuer."""
    key = (sign_in.oidc_jwks_url, sign_in.oidc_jwks_cache_seconds, sign_in.oidc_jwks_refresh_seconds)
    if key not in _cached:
        _cached[key] = Jwks(*key)
    return _cached[key]


def verify(sign_in: SignIn, token: str, jwks: Jwks, now: int | None = None) -> dict[str, Any]:
    """The token's claims, if it passes every check; TokenRefused otherwise."""
    try:
        header = jws.extract_compact(token.encode("ascii")).protected
    except (JoseError, ValueError, UnicodeError) as error:
        raise TokenRefused(INVALID_TOKEN, f"not a compact JWS: {error}") from None
    algorithm, kid = header.get("alg"), header.get("kid")
    if algorithm not in sign_in.oidc_algorithms:
        raise TokenRefused(INVALID_TOKEN, f"algorithm {algorithm!r} is not allowed")
    if not isinstance(kid, str):
        raise TokenRefused(INVALID_TOKEN, "no key id")
    try:
        key = jwks.key(kid)
    except (OSError, ValueError, KeyError, TypeError, JoseError) as error:
        # An issuer that is down or answers nonsense: its tokens are refused, never a 500.
        raise TokenRefused(INVALID_TOKEN, f"the issuer's keys could not be read: {error!r}") from None
    if key is None:
        raise TokenRefused(INVALID_TOKEN, f"unknown key id {kid[:40]!r}")
    try:
        decoded = jwt.decode(token, key, algorithms=[algorithm])
        registry = jwt.JWTClaimsRegistry(
            now=now,
            leeway=sign_in.oidc_leeway_seconds,
            iss={"essential": True, "value": sign_in.oidc_issuer},
            aud={"essential": True, "value": sign_in.oidc_audience},
            exp={"essential": True},
        )
        registry.validate(decoded.claims)
    except ExpiredTokenError:
        raise TokenRefused(TOKEN_EXPIRED, "the token has expired") from None
    except (JoseError, ValueError) as error:
        raise TokenRefused(INVALID_TOKEN, f"{type(error).__name__}: {error}") from None
    return dict(decoded.claims)


def _roles(value: Any, admin_value: str) -> frozenset[str]:
    if isinstance(value, str):
        values = value.replace(",", " ").split()
    elif isinstance(value, list):
        values = [item for item in value if isinstance(item, str)]
    else:
        values = []
    roles = {item for item in values if is_principal_id(item)}
    if admin_value in values:
        roles.add(Principal.ADMIN_ROLE)
    return frozenset(roles)


def principal_of(sign_in: SignIn, claims: dict[str, Any]) -> Principal:
    tenant = sign_in.oidc_tenant or claims.get(sign_in.oidc_tenant_claim)
    user_id = claims.get(sign_in.oidc_user_claim)
    if not isinstance(tenant, str) or not isinstance(user_id, str):
        raise TokenRefused(UNMAPPED_PRINCIPAL, "the token names no tenant or no user")
    try:
        return Principal(
            tenant, user_id, _roles(claims.get(sign_in.oidc_roles_claim), sign_in.oidc_admin_value)
        )
    except UnknownPrincipal as error:
        raise TokenRefused(UNMAPPED_PRINCIPAL, error.message) from None


def authenticate(sign_in: SignIn, token: str, jwks: Jwks | None = None, now: int | None = None) -> Principal:
    """The principal a valid token maps to; TokenRefused with its code otherwise."""
    claims = verify(sign_in, token, jwks or jwks_for(sign_in), now)
    return principal_of(sign_in, claims)
