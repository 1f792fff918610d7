"""The download lifecycle as the API sees it: create, read, list, cancel or delete, fetch.

Every function takes the caller's principal and checks access itself (chalicelib/api/access.py).
Every create, fetch, cancel and delete is audited.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.api import access, links, requests, tenants
from chalicelib.api.requests import CreateRequest, LinkRequest
from chalicelib.core import clock, observability
from chalicelib.core.errors import (
    DownloadExpired,
    DownloadNotReady,
    IdempotencyKeyInUse,
    InvalidParams,
    QuotaExceeded,
    StartFailed,
    WebhookSecretMissing,
)
from chalicelib.core.models import ACTIVE_STATES, Download, ErrorInfo, Principal, State
from chalicelib.core.names import safe_filename
from chalicelib.runtime import Runtime
from chalicelib.s3 import artifacts
from chalicelib.storage.audit import Action, user_actor
from chalicelib.storage.downloads import StateConflict
from chalicelib.storage.idempotency import Claim, fingerprint
from chalicelib.storage.links import IssuedLink
from chalicelib.workflow import executions
from chalicelib.workflow.effects import NOTIFY, follow_up_or_leave

log = logging.getLogger(__name__)


def new_id() -> str:
    return secrets.token_hex(16)  # 128 random bits


@dataclass(frozen=True)
class Created:
    download: Download
    link: IssuedLink | None = None
    # True when an Idempotency-Key replay returned the download an earlier request made.
    replayed: bool = False


def create(
    runtime: Runtime,
    principal: Principal,
    body: Any,
    idempotency_key: str | None = None,
    source: Mapping[str, str] | None = None,
) -> Created:
    """`source` says where the request came from, for the audit trail: a trigger's queue, bus
    or manifest (chalicelib/triggers/inbound.py); None is the API."""
    request = requests.create_request(runtime.settings, principal, body)
    if request.dry_run:  # only POST /downloads answers a plan (app.py); an event must not start one
        raise InvalidParams("dry_run is answered by POST /downloads only", path="dry_run")
    if request.callback_url is not None:
        # Before the key is claimed and a quota slot taken: this refusal leaves nothing behind.
        _require_webhook_secret(runtime, principal)
    download = new_download(principal, request)
    claim = Claim(principal, idempotency_key, fingerprint(body)) if idempotency_key else None
    try:
        if claim:
            earlier = runtime.idempotency.existing(claim) or runtime.idempotency.claim(
                claim, download.id, runtime.settings.idempotency_ttl_seconds
            )
            # Bound to this very download: our own claim, whose answer was lost and which
            # botocore sent again. Any other download: another request's, replayed, never
            # ours to release.
            if earlier and earlier != download.id:
                return Created(_replay(runtime, earlier), replayed=True)
        # Scoped, not bound to the invocation: one invocation may create several (a batch of requests).
        with observability.download_keys(download):
            return _create_and_start(runtime, principal, download, request.link, source or {"kind": "api"})
    except BaseException as error:
        # Nothing was started: the key must not replay (or answer 409 for) a download that
        # never runs, so a retry of this request really runs.
        if claim:
            _release(runtime, claim, download.id)
        if isinstance(error, ClientError | BotoCoreError):
            log.warning("could not create download %s", download.id, exc_info=True)
            raise StartFailed("the download could not be started; try again") from error
        raise


def _require_webhook_secret(runtime: Runtime, principal: Principal) -> None:
    """A callback is signed with the tenant's secret: without one, no callback can be asked for."""
    try:
        secret = runtime.webhook_secrets.describe(principal.tenant, clock.now())
    except (ClientError, BotoCoreError) as error:
        # As any other failure to create: the caller may retry (nothing was stored).
        log.warning("could not read the webhook secret of tenant %s", principal.tenant, exc_info=True)
        raise StartFailed("the download could not be started; try again") from error
    if secret is None:
        raise WebhookSecretMissing(
            "callback_url needs the tenant's webhook signing secret, and the tenant has none yet; "
            f"a tenant admin creates one with POST {tenants.SECRET_PATH}",
            path="callback_url",
        )


def _create_and_start(
    runtime: Runtime,
    principal: Principal,
    download: Download,
    link_request: LinkRequest | None,
    source: Mapping[str, str],
) -> Created:
    try:
        runtime.downloads.create(download, runtime.settings.max_active_per_user)
    except QuotaExceeded:
        raise
    except BaseException:
        # An attempt whose answer was lost (a read timeout that botocore retried) may have
        # stored it: then it holds a quota slot that nothing would free.
        _abandon(runtime, download)
        raise
    try:
        actor = user_actor(principal)
        runtime.audit.record(
            download.tenant, Action.CREATED, actor, download.id, type=download.type, source=dict(source)
        )
        observability.record_created(runtime.settings.stage, download)
        issued = None
        if link_request is not None:
            issued = links.issue(runtime, principal, download, link_request)
    except BaseException:
        _abandon(runtime, download)
        raise
    _start(runtime, download)
    return Created(download, issued)


def _release(runtime: Runtime, claim: Claim, download_id: str) -> None:
    """Release the key if this request bound it (its claim may have been written even when
    the answer was an error); a key another request holds stays."""
    try:
        runtime.idempotency.release(claim, download_id)
    except Exception:
        log.exception("could not release an Idempotency-Key claim")


def new_download(principal: Principal, request: CreateRequest, download_id: str | None = None) -> Download:
    """The download a checked request asks for, not yet stored (a new id unless given)."""
    download_id = download_id or new_id()
    kind, params = request.kind, request.params
    extension = kind.artifact_format(params).extension
    filename = safe_filename(request.filename, kind.default_name(download_id, params) + extension, extension)
    return Download(
        id=download_id,
        type=kind.name,
        params=params,
        filename=filename,
        tenant=principal.tenant,
        user_id=principal.user_id,
        state=State.PENDING,
        created_at=clock.iso(clock.now()),
        retention_seconds=request.retention_seconds,
        callback_url=request.callback_url,
        client_reference=request.client_reference,
    )


def _replay(runtime: Runtime, download_id: str) -> Download:
    download = runtime.downloads.get(download_id)
    if download is None:  # the first request claimed the key and is still creating it
        raise IdempotencyKeyInUse("a request with this Idempotency-Key is still being processed; retry")
    return download


def _start(runtime: Runtime, download: Download) -> None:
    """Start the download's workflow; StartFailed (503) when it surely did not start, after
    marking the download FAILED (which frees its quota slot)."""
    try:
        executions.start(runtime, download.id)
    except (ClientError, BotoCoreError) as failure:
        if _abandon(runtime, download):
            raise StartFailed("the download could not be started; try again") from failure


def _abandon(runtime: Runtime, download: Download) -> bool:
    """Mark a download that was not started FAILED (StartFailed), freeing its quota slot.

    Safe even if its execution did start after all: Prepare then finds it no longer PENDING
    and the workflow ends, cleaning up. False when the download already left PENDING (its
    workflow runs, or its owner cancelled it): then nothing failed. If even this write
    fails, the download stays PENDING until cleanup times it out at its build deadline.
    """
    failure = ErrorInfo("StartFailed", "the download could not be started")
    try:
        failed = runtime.downloads.transition(
            download.id,
            [State.PENDING],
            State.FAILED,
            error=asdict(failure),
            finished_at=clock.iso(clock.now()),
            effects=(NOTIFY,),
        )
    except StateConflict as conflict:
        current = conflict.current
        return current is None or current.state is State.PENDING
    except Exception:
        log.exception("could not mark download %s FAILED; cleanup will time it out", download.id)
        return True
    follow_up_or_leave(runtime, failed, (NOTIFY,))
    return True


def get(runtime: Runtime, principal: Principal, download_id: str) -> Download:
    return access.require(runtime, principal, download_id)


@dataclass(frozen=True)
class Page:
    items: list[Download]
    next_cursor: str | None


def list_own(runtime: Runtime, principal: Principal, query: dict[str, str]) -> Page:
    asked = requests.list_query(query)
    items, cursor = runtime.downloads.list_owned(
        principal.tenant, principal.user_id, state=asked.state, limit=asked.limit, cursor=asked.cursor
    )
    return Page(items, cursor)


def cancel_or_delete(runtime: Runtime, principal: Principal, download_id: str) -> Download | None:
    """Cancel a download that has not finished (returns it), or delete a finished one's
    artifact (returns None). The record stays, for audit."""
    download = access.require(runtime, principal, download_id)
    actor = user_actor(principal)
    if download.state in ACTIVE_STATES:
        try:
            cancelled = runtime.downloads.transition(
                download_id,
                ACTIVE_STATES,
                State.CANCELLED,
                effects=(NOTIFY,),  # recorded and queued, never waiting on a receiver
                finished_at=clock.iso(clock.now()),
            )
        except StateConflict as conflict:
            download = conflict.current or download  # it finished meanwhile: delete instead
        else:
            runtime.audit.record(download.tenant, Action.CANCELLED, actor, download_id)
            executions.stop(runtime, download_id, "Cancelled", "cancelled by its owner")
            follow_up_or_leave(runtime, cancelled, (NOTIFY,))
            return cancelled
    if download.state is State.DONE:
        # Expired meanwhile (StateConflict)? The artifact goes all the same.
        with contextlib.suppress(StateConflict):
            runtime.downloads.transition(download_id, [State.DONE], State.EXPIRED)
    artifacts.remove_everything(runtime.s3, runtime.settings.artifact_bucket, download_id)
    runtime.audit.record(download.tenant, Action.DELETED, actor, download_id, state=download.state.value)
    return None


@dataclass(frozen=True)
class FileUrl:
    url: str
    expires_at: str
    # When the artifact itself goes (the download's expires_at): the answer's Sunset.
    artifact_expires_at: str | None = None


def _expired() -> DownloadExpired:
    return DownloadExpired("the download has expired and its file was deleted", state=State.EXPIRED.value)


def file_url(
    runtime: Runtime, principal: Principal, download_id: str, ttl_seconds: int, action: Action
) -> FileUrl:
    """A presigned GET of the artifact, valid `ttl_seconds` at most and never past expiry."""
    download = access.require(runtime, principal, download_id)
    now = clock.now()
    remaining = access.seconds_left(download, now)
    if download.state is State.EXPIRED or (download.state is State.DONE and remaining < 1):
        raise _expired()
    if download.state is not State.DONE:
        raise DownloadNotReady("download state is not DONE", state=download.state.value)
    if download.artifact is None:
        raise DownloadNotReady("download is DONE but has no artifact", state=download.state.value)
    signed = artifacts.presign_download(runtime.s3, runtime.settings.artifact_bucket, download, ttl_seconds)
    if signed is None:  # the last second ran out while signing
        raise _expired()
    runtime.audit.record(download.tenant, action, user_actor(principal), download_id)
    access.handed_out(runtime, download, now)
    return FileUrl(signed.url, clock.iso(signed.until), download.expires_at)
