"""The link use cases: issue a link to a download, follow one, revoke one.

Issuing and revoking check the caller's access to the download; following needs no
principal, the token is the capability. Every link change and use is audited.
"""

from __future__ import annotations

from typing import Any

from chalicelib.api import access, requests
from chalicelib.api.requests import LinkRequest
from chalicelib.core import clock
from chalicelib.core.errors import LinkGone
from chalicelib.core.models import Download, Principal, State
from chalicelib.runtime import Runtime
from chalicelib.s3 import artifacts
from chalicelib.storage import links as stored
from chalicelib.storage.audit import Action, link_actor, user_actor


def issue(
    runtime: Runtime, principal: Principal, download: Download, request: LinkRequest
) -> stored.IssuedLink:
    """A new link to a download the principal may act on (checked by the caller)."""
    issued = stored.issue(
        runtime.links,
        download,
        expires_in=request.get("expires_in", runtime.settings.link_default_ttl_seconds),
        max_uses=request.get("max_uses", 1),
    )
    runtime.audit.record(
        download.tenant,
        Action.LINK_CREATED,
        user_actor(principal),
        download.id,
        link=link_actor(issued.link.token_hash),
        max_uses=issued.link.max_uses,
        expires_at=issued.link.expires_at,
    )
    return issued


def create(runtime: Runtime, principal: Principal, download_id: str, body: Any) -> stored.IssuedLink:
    request = requests.link_request(runtime.settings, body if body is not None else {})
    return issue(runtime, principal, access.require(runtime, principal, download_id), request)


def follow(runtime: Runtime, token: str) -> str:
    """Use a link once: a fresh presigned URL of its download's artifact."""
    link = stored.find(runtime.links, token)
    download = runtime.downloads.get(link.download_id)
    used = stored.redeem(runtime.links, link, download, runtime.settings.link_retry_after_seconds)
    assert download is not None  # redeem refuses a link whose download is gone
    remaining = access.seconds_left(download, clock.now())
    if remaining < 1:
        raise LinkGone("the download has expired", state=State.EXPIRED.value)
    url = artifacts.presign_download(
        runtime.s3,
        runtime.settings.artifact_bucket,
        download,
        min(runtime.settings.file_url_ttl_seconds, remaining),
    )
    runtime.audit.record(
        link.tenant, Action.LINK_USED, link_actor(link.token_hash), link.download_id, uses=used.uses
    )
    return url


def revoke(runtime: Runtime, principal: Principal, token: str) -> None:
    link = stored.find_owned(runtime.links, principal, token)
    runtime.links.revoke(link.token_hash)
    runtime.audit.record(
        link.tenant,
        Action.LINK_REVOKED,
        user_actor(principal),
        link.download_id,
        link=link_actor(link.token_hash),
    )
