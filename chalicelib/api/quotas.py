"""The caller's quotas as headers on every create answer (draft-ietf-httpapi-ratelimit-headers).

Satchel's quota is on downloads PENDING or RUNNING at once, per user and per tenant (the
settings `max_active_per_user`, `max_active_per_tenant`): a concurrency quota, unit
`concurrent-requests`, with no time window, so neither `w` nor `t` is given.

    RateLimit-Policy: "user";q=10;qu="concurrent-requests", "tenant";q=100;qu="concurrent-requests"
    RateLimit: "user";r=7, "tenant";r=93
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError
from chalice.app import Response

from chalicelib.api.http import error_response
from chalicelib.core.models import Principal
from chalicelib.runtime import Runtime

log = logging.getLogger(__name__)
POLICY = "RateLimit-Policy"
LIMIT = "RateLimit"
USER, TENANT = "user", "tenant"
_UNIT = "concurrent-requests"


def policy(runtime: Runtime) -> str:
    settings = runtime.settings
    return ", ".join(
        f'"{name}";q={quota};qu="{_UNIT}"'
        for name, quota in ((USER, settings.max_active_per_user), (TENANT, settings.max_active_per_tenant))
    )


def remaining(runtime: Runtime, principal: Principal) -> str:
    """How many more downloads the caller may start now, by policy (consistent reads)."""
    settings, store = runtime.settings, runtime.downloads
    user = settings.max_active_per_user - store.active_count(principal.tenant, principal.user_id)
    tenant = settings.max_active_per_tenant - store.tenant_active_count(principal.tenant)
    return f'"{USER}";r={max(user, 0)}, "{TENANT}";r={max(tenant, 0)}'


def with_quota_headers(runtime: Runtime, principal: Principal, answer: Callable[[], Response]) -> Response:
    """The answer (or the error it raised, as its problem answer) with the quota headers. The
    counts are read after the create, so they include it; when they cannot be read, the answer
    goes without `RateLimit` rather than failing a create that succeeded."""
    try:
        response = answer()
    except Exception as error:  # noqa: BLE001 - error_response logs and 500s the unknown
        response = error_response(error)
    response.headers[POLICY] = policy(runtime)
    try:
        response.headers[LIMIT] = remaining(runtime, principal)
    except (ClientError, BotoCoreError):
        log.warning("could not read the quota counts for RateLimit", exc_info=True)
    return response
