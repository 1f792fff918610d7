"""The tenant's own settings, for its admins: its webhook signing secret.

`POST /tenant/webhook-secret` creates the tenant's first secret or rotates it (the old one
signs on for a grace period, `grace_seconds`, at most SATCHEL_WEBHOOK_SECRET_GRACE_SECONDS,
which is also the default); the answer shows the new secret, once. `GET` tells when it was
made and until when the previous one signs, never a secret. Only a tenant admin may do
either (403 otherwise), and only for the admin's own tenant; both are audited.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from chalicelib.core import clock
from chalicelib.core.errors import Forbidden, InvalidParams, MalformedRequest, WebhookSecretNotFound
from chalicelib.core.models import Principal

# app.py declares two routes with SECRET_PATH, so every function imports this module: the
# audit trail is imported by the two calls that write to it (docs/performance.md, "Cold start").
if TYPE_CHECKING:
    from chalicelib.runtime import Runtime
    from chalicelib.storage.secrets import IssuedSecret, SecretInfo

log = logging.getLogger(__name__)

SECRET_PATH = "/tenant/webhook-secret"


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("only a tenant admin may manage the tenant's webhook secret")


def grace_seconds(body: Any, maximum: int) -> int:
    """The rotation's grace period: the body's `grace_seconds` (0 to `maximum`), else `maximum`."""
    if not isinstance(body, dict):
        raise MalformedRequest("the request body must be a JSON object")
    unknown = sorted(set(body) - {"grace_seconds"})
    if unknown:
        raise InvalidParams(f"unknown fields: {', '.join(unknown)}", path=unknown[0])
    grace = body.get("grace_seconds", maximum)
    if type(grace) is not int or not 0 <= grace <= maximum:  # bool is no count
        raise InvalidParams(f"grace_seconds must be an integer from 0 to {maximum}", path="grace_seconds")
    return grace


def rotate_secret(runtime: Runtime, principal: Principal, body: Any) -> IssuedSecret:
    from chalicelib.storage.audit import Action, user_actor

    _require_admin(principal)
    grace = grace_seconds(body, runtime.settings.webhook_secret_grace_seconds)
    issued = runtime.webhook_secrets.rotate(principal.tenant, clock.now(), grace)
    actor, details = (
        user_actor(principal),
        {"first": issued.previous_valid_until is None, "grace_seconds": grace},
    )
    try:
        runtime.audit.record(principal.tenant, Action.WEBHOOK_SECRET_ROTATED, actor, "", **details)
    except Exception:
        # The new secret is stored and signs from now: failing would leave the tenant's
        # webhooks signed with a secret nobody was shown (and a retry would end the old one
        # at once). The entry goes to the log instead, whole, for the trail to be completed from.
        log.exception(
            "audit entry not written",
            extra={
                "audit": {
                    "tenant": principal.tenant,
                    "action": Action.WEBHOOK_SECRET_ROTATED.value,
                    "actor": actor,
                    "download_id": "",
                    **details,
                }
            },
        )
    return issued


def describe_secret(runtime: Runtime, principal: Principal) -> SecretInfo:
    from chalicelib.storage.audit import Action, user_actor

    _require_admin(principal)
    info = runtime.webhook_secrets.describe(principal.tenant, clock.now())
    if info is None:
        raise WebhookSecretNotFound(
            f"the tenant has no webhook secret yet; a tenant admin creates one with POST {SECRET_PATH}"
        )
    runtime.audit.record(principal.tenant, Action.WEBHOOK_SECRET_READ, user_actor(principal), "")
    return info
