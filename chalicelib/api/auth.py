"""Who is calling: a credential to a principal, by the stage's sign-in mode, and back.

- `keys` (default): `Authorization: Bearer <API key>`, looked up by its SHA-256
  (storage/keys.py); disabled and expired keys are refused.
- `oidc`: `Authorization: Bearer <JWT>` from the stage's issuer (api/oidc.py).
- `iam`: API Gateway checks the SigV4 signature (AWS_IAM authorization, no Lambda
  authorizer); the handler maps the caller's IAM principal (api/iam.py).

In the first two the authorizer resolves the credential once per request (API Gateway caches
its answer for the authorizer's TTL, app.py's `ttl_seconds`: a disabled key keeps working at
most that long) and passes the principal to the route in the authorizer context, whose values
must be strings. A refusal carries one stable code (`Verdict.refusal`) in the context of its
Deny, and the log says which check failed; the caller learns only the code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalicelib.api import iam
from chalicelib.core import clock
from chalicelib.core.errors import UnknownPrincipal
from chalicelib.core.models import Principal
from chalicelib.storage.keys import KEY_UNKNOWN, KeyStore

if TYPE_CHECKING:
    from chalicelib.runtime import Runtime

log = logging.getLogger(__name__)
_BEARER = "bearer "
# JWTs are longer than keys; a header longer than this is refused before any work.
_MAX_CREDENTIAL_LENGTH = 8192
MISSING_CREDENTIAL = "Unauthorized"
INVALID_KEY_RECORD = "KeyUnknown"
WRONG_MODE = "Unauthorized"


@dataclass(frozen=True)
class Verdict:
    principal: Principal | None
    refusal: str | None = None


def bearer_key(header: str | None) -> str | None:
    if not header or header[: len(_BEARER)].lower() != _BEARER:
        return None
    key = header[len(_BEARER) :].strip()
    return key if 0 < len(key) <= _MAX_CREDENTIAL_LENGTH else None


def check_key(keys: KeyStore, header: str | None, last_used_every: int | None = None) -> Verdict:
    """An API key's verdict; with `last_used_every`, a good key's last use is recorded too."""
    key = bearer_key(header)
    if not key:
        return Verdict(None, MISSING_CREDENTIAL)
    try:
        checked = keys.check(key)
    except UnknownPrincipal:
        # A key record written by hand with an id outside the pattern: refused, never a 500.
        log.warning("an API key names a tenant or user id outside the allowed pattern")
        return Verdict(None, INVALID_KEY_RECORD)
    if checked.refusal is not None:
        if checked.record is not None:
            log.info("refused key %s: %s", checked.record.key_id, checked.refusal)
        return Verdict(None, checked.refusal)
    if last_used_every is not None and checked.record is not None:
        keys.touch(checked.record, clock.now(), last_used_every)
    return Verdict(checked.principal)


def authenticate(keys: KeyStore, header: str | None) -> Principal | None:
    return check_key(keys, header).principal


def check_token(runtime: Runtime, header: str | None) -> Verdict:
    from chalicelib.api import oidc  # only a stage on OIDC loads the JOSE library

    token = bearer_key(header)
    if not token:
        return Verdict(None, MISSING_CREDENTIAL)
    try:
        return Verdict(oidc.authenticate(runtime.settings.sign_in, token))
    except oidc.TokenRefused as refused:
        log.info("refused a token: %s (%s)", refused.code, refused)
        return Verdict(None, refused.code)


def authorize(runtime: Runtime, header: str | None) -> Verdict:
    """The authorizer's verdict on an Authorization header, by the stage's mode."""
    sign_in = runtime.settings.sign_in
    if sign_in.mode == "keys":
        return check_key(runtime.keys, header, sign_in.key_last_used_seconds)
    if sign_in.mode == "oidc":
        return check_token(runtime, header)
    return Verdict(None, WRONG_MODE)  # an IAM stage's routes do not use this authorizer


def refusal_context(verdict: Verdict) -> dict[str, str]:
    return {"code": verdict.refusal or KEY_UNKNOWN}


def deny(method_arn: str, verdict: Verdict) -> dict[str, Any]:
    """The authorizer's refusal: an explicit Deny of every route of the stage (API Gateway
    caches the answer for the credential, whichever route it is used on next), with the code."""
    api, _, rest = method_arn.partition("/")
    stage = rest.split("/", 1)[0]
    every_route = f"{api}/{stage}/*" if api and stage else method_arn
    return {
        "principalId": "anonymous",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": [every_route]}],
        },
        "context": refusal_context(verdict),
    }


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


def caller(runtime: Runtime, context: Mapping[str, Any]) -> Principal:
    """The principal of a route's request: from the authorizer, or (IAM) from the mapping."""
    if runtime.settings.sign_in.mode == "iam":
        return iam.principal_of(runtime.identities, context)
    return from_context(context)
