"""The link use cases: issue a link to a download, read one, claim one, list and revoke them.

Issuing, listing and revoking check the caller's access to the download; reading and
claiming need no principal, the token is the capability. Reading never spends a use (chat
previewers and mail scanners read every link they see); a claim spends one, unless its
claimant presents a claim whose window is still open. Every link change and claim is
audited, and each claim is announced (`link.claimed`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from chalicelib.api import access, requests
from chalicelib.api.requests import LinkRequest
from chalicelib.core import clock
from chalicelib.core.errors import LinkGone, LinkNotFound, SatchelError
from chalicelib.core.models import Download, Principal, State
from chalicelib.notify import dispatch
from chalicelib.runtime import Runtime
from chalicelib.s3 import artifacts
from chalicelib.storage import links as stored
from chalicelib.storage.audit import Action, link_actor, user_actor

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Reading:
    """What a link says to whoever reads it: its download's facts when it can be claimed,
    else why not (`refusal`: LinkNotFound 404, LinkGone 410, LinkNotReady 425)."""

    link: stored.Link | None
    download: Download | None
    refusal: SatchelError | None
    claim_window_seconds: int
    claim_open: bool = False  # the reader presented a claim whose window is still open
    file_origin: str | None = None  # where a claim's redirect goes (the bucket's origin)

    def facts(self, claim_url: str) -> dict[str, Any]:
        """The JSON answer of a link that can be claimed."""
        assert self.link is not None
        assert self.download is not None
        assert self.download.artifact is not None
        artifact = self.download.artifact
        return {
            "link_id": self.link.link_id,
            "download_id": self.download.id,
            "filename": self.download.filename,
            "size": artifact.size,
            "content_type": artifact.content_type,
            "sha256": artifact.sha256,
            "expires_at": self.link.expires_at,
            "artifact_expires_at": self.download.expires_at,
            "max_uses": self.link.max_uses,
            "uses": self.link.uses,
            "uses_left": max(self.link.max_uses - self.link.uses, 0),
            "claim_window_seconds": self.claim_window_seconds,
            "claim": {"method": "POST", "url": claim_url},
        }


@dataclass(frozen=True)
class Claimed:
    """A claim's answer: a fresh presigned URL, and the claim that may fetch it again."""

    link: stored.Link
    download: Download
    url: str
    url_expires_at: str
    claim_id: str
    claim_expires_at: str
    use: int | None  # the use this claim spent; None for a re-claim, which spends none

    def to_api(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "expires_at": self.url_expires_at,
            "claim_id": self.claim_id,
            "claim_expires_at": self.claim_expires_at,
            "use": self.use,
        }


def read(runtime: Runtime, token: str, claim_id: str | None = None) -> Reading:
    """The link's facts, or why it cannot be claimed; never spends a use."""
    window = runtime.settings.link_claim_window_seconds
    try:
        link = stored.find(runtime.links, token)
    except LinkNotFound as error:
        return Reading(None, None, error, window)
    now = clock.iso(clock.now())
    claim = stored.claim_hash(claim_id) if claim_id else None
    open_claim = claim is not None and link.claim_open(claim, now)
    download = runtime.downloads.get(link.download_id)
    try:
        usable = stored.check_usable(
            link, download, now, runtime.settings.link_retry_after_seconds, spend=not open_claim
        )
    except SatchelError as error:
        return Reading(link, download, error, window, open_claim)
    return Reading(link, usable, None, window, open_claim, _file_origin(runtime, usable))


def _file_origin(runtime: Runtime, download: Download) -> str:
    """The origin of the presigned URLs of this download (signing is local: no request)."""
    assert download.artifact is not None, "a usable link's download has its artifact"
    url = urlsplit(
        artifacts.presign(
            runtime.s3,
            runtime.settings.artifact_bucket,
            download.artifact.key,
            filename=download.filename,
            content_type=download.artifact.content_type,
            ttl_seconds=60,
        )
    )
    return f"{url.scheme}://{url.netloc}"


def claim(runtime: Runtime, token: str, claim_id: str | None) -> Claimed | Reading:
    """Claim the link: a fresh URL of its file. A new claim spends one use and opens a claim
    window; `claim_id` of an open window re-claims without spending. A refusal comes back as
    the Reading that says why."""
    reading = read(runtime, token, claim_id)
    if reading.refusal is not None:
        return reading
    link, download = reading.link, reading.download
    assert link is not None
    assert download is not None
    now = clock.now()
    try:
        if reading.claim_open and claim_id:
            return _hand_out(runtime, link, download, claim_id, link.claims[_hash(claim_id)], None, now)
        claim_id = stored.new_claim_id()
        until = clock.iso(clock.later(runtime.settings.link_claim_window_seconds, now))
        # LinkGone: lost the race for the last use, or revoked meanwhile, or the file's last
        # second ran out while its URL was signed.
        used = stored.redeem(runtime.links, link, _hash(claim_id), clock.iso(now), until)
        claimed = _hand_out(runtime, used, download, claim_id, until, used.uses, now)
    except LinkGone as error:
        return Reading(link, download, error, reading.claim_window_seconds)
    _announce(runtime, claimed)
    return claimed


def _hash(claim_id: str) -> str:
    hashed = stored.claim_hash(claim_id)
    assert hashed is not None, "claim ids are made by stored.new_claim_id"
    return hashed


def _hand_out(
    runtime: Runtime,
    link: stored.Link,
    download: Download,
    claim_id: str,
    until: str,
    use: int | None,
    now: datetime,
) -> Claimed:
    signed = artifacts.presign_download(
        runtime.s3, runtime.settings.artifact_bucket, download, runtime.settings.file_url_ttl_seconds
    )
    if signed is None:
        raise LinkGone("the download has expired", state=State.EXPIRED.value, reason="download_gone")
    access.handed_out(runtime, download, now)
    details: dict[str, Any] = {"use": use, "uses": link.uses} if use is not None else {"reclaim": True}
    try:
        runtime.audit.record(link.tenant, Action.LINK_USED, link.link_id, link.download_id, **details)
    except Exception:
        if use is None:
            raise  # a re-claim spent nothing: its claimant may simply try again
        # The use is spent: failing now would cost the claimant it (no claim id, no URL). The
        # entry goes to the log instead, whole, for the trail to be completed from.
        log.exception(
            "audit entry not written",
            extra={
                "audit": {
                    "tenant": link.tenant,
                    "action": Action.LINK_USED.value,
                    "actor": link.link_id,
                    "download_id": link.download_id,
                    **details,
                }
            },
        )
    return Claimed(link, download, signed.url, clock.iso(signed.until), claim_id, until, use)


def _announce(runtime: Runtime, claimed: Claimed) -> None:
    """`link.claimed`: on the bus, and queued for the download's webhook. Best-effort: the
    claim never waits on a receiver nor fails for want of one (dispatch logs a failure)."""
    assert claimed.use is not None
    dispatch.link_claimed(
        runtime, claimed.download, claimed.link.link_id, claimed.use, clock.iso(clock.now())
    )


def list_for_owner(runtime: Runtime, principal: Principal, download_id: str) -> list[dict[str, Any]]:
    """The download's links as its owner sees them: never the token."""
    download = access.require(runtime, principal, download_id)
    return [
        {
            "link_id": link.link_id,
            "created_at": link.created_at,
            "expires_at": link.expires_at,
            "max_uses": link.max_uses,
            "uses": link.uses,
            "revoked": link.revoked,
        }
        for link in runtime.links.of_download(download.id)
    ]


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
