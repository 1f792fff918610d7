"""The download lifecycle as the API sees it: create, read, list, cancel or delete, fetch,
and the links that hand a download to others.

Every function takes the caller's principal and checks access itself: another tenant's
download does not exist (404); another user's is forbidden (403) unless the caller is
the tenant's admin. Every create, fetch, cancel, delete and link change is audited.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import downloadtypes
from chalicelib.core import clock, observability
from chalicelib.core.errors import (
    DownloadExpired,
    DownloadNotFound,
    DownloadNotReady,
    Forbidden,
    IdempotencyKeyInUse,
    InvalidCallbackUrl,
    InvalidParams,
    InvalidQuery,
    LinkGone,
    MalformedRequest,
    QuotaExceeded,
    StartFailed,
)
from chalicelib.core.models import ACTIVE_STATES, Download, ErrorInfo, Principal, State
from chalicelib.core.names import safe_filename
from chalicelib.core.schemas import Schema
from chalicelib.core.settings import Settings
from chalicelib.notify import callbacks
from chalicelib.notify import dispatch as notify
from chalicelib.runtime import Runtime
from chalicelib.s3 import artifacts
from chalicelib.storage import links
from chalicelib.storage.audit import Action, link_actor, user_actor
from chalicelib.storage.downloads import StateConflict
from chalicelib.storage.idempotency import Claim, fingerprint

log = logging.getLogger(__name__)
_ID = re.compile(r"^[0-9a-f]{32}$")
DEFAULT_PAGE = 20
MAX_PAGE = 100

REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "minLength": 1, "maxLength": 64},
        "params": {"type": "object"},
        "filename": {"type": "string", "minLength": 1, "maxLength": 255},
        "expires_in": {"type": "integer", "minimum": 1, "description": "Seconds the artifact is kept."},
        "link": links.REQUEST_SCHEMA,
        "callback_url": {
            "type": "string",
            "minLength": 1,
            "maxLength": 2048,
            "description": "https URL that receives a signed POST when the download finishes.",
        },
    },
}
_REQUEST = Schema(REQUEST_SCHEMA)


def new_id() -> str:
    return secrets.token_hex(16)  # 128 random bits


@dataclass(frozen=True)
class Created:
    download: Download
    link: links.IssuedLink | None = None
    # True when an Idempotency-Key replay returned the download an earlier request made.
    replayed: bool = False


def create(runtime: Runtime, principal: Principal, body: Any, idempotency_key: str | None = None) -> Created:
    download, link_request = _new_download(runtime, principal, body)
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
            return _create_and_start(runtime, principal, download, link_request)
    except BaseException as error:
        # Nothing was started: the key must not replay (or answer 409 for) a download that
        # never runs, so a retry of this request really runs.
        if claim:
            _release(runtime, claim, download.id)
        if isinstance(error, ClientError | BotoCoreError):
            log.warning("could not create download %s", download.id, exc_info=True)
            raise StartFailed("the download could not be started; try again") from error
        raise


def _create_and_start(
    runtime: Runtime, principal: Principal, download: Download, link_request: dict[str, int] | None
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
        runtime.audit.record(download.tenant, Action.CREATED, actor, download.id, type=download.type)
        observability.record_created(runtime.settings.stage, download)
        issued = None
        if link_request is not None:
            issued = _issue_link(runtime, principal, download, link_request)
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


def _new_download(
    runtime: Runtime, principal: Principal, body: Any
) -> tuple[Download, dict[str, int] | None]:
    """Validate the request; the download it asks for (not yet stored) and its link request."""
    if not isinstance(body, dict):
        raise MalformedRequest("the request body must be a JSON object")
    _REQUEST.check(body)
    settings = runtime.settings
    kind = downloadtypes.get(body["type"])
    params = kind.validate(body.get("params", {}), principal, settings)
    retention = body.get("expires_in", settings.retention_default_seconds)
    if not settings.retention_min_seconds <= retention <= settings.retention_max_seconds:
        raise InvalidParams(
            f"expires_in must lie between {settings.retention_min_seconds} and "
            f"{settings.retention_max_seconds} seconds",
            path="expires_in",
        )
    link_request = None
    if "link" in body:
        link_request = _check_link_request(runtime, body["link"], root="link")
    callback_url = body.get("callback_url")
    if callback_url is not None:
        _check_callback_url(settings, callback_url)
    download_id = new_id()
    download = Download(
        id=download_id,
        type=kind.name,
        params=params,
        filename=_filename(kind, download_id, params, body.get("filename")),
        tenant=principal.tenant,
        user_id=principal.user_id,
        state=State.PENDING,
        created_at=clock.iso(clock.now()),
        retention_seconds=retention,
        callback_url=callback_url,
    )
    return download, link_request


def _check_callback_url(settings: Settings, url: str) -> None:
    if not (settings.webhook_secret or settings.webhook_secret_parameter):
        raise InvalidCallbackUrl("callbacks are not configured on this deployment", path="callback_url")
    callbacks.check(url, settings.callback_allow_loopback, settings.callback_port_numbers)


def _filename(
    kind: downloadtypes.DownloadType, download_id: str, params: dict[str, Any], given: str | None
) -> str:
    extension = kind.artifact_format(params).extension
    return safe_filename(given, kind.default_name(download_id, params) + extension, extension)


def _replay(runtime: Runtime, download_id: str) -> Download:
    download = runtime.downloads.get(download_id)
    if download is None:  # the first request claimed the key and is still creating it
        raise IdempotencyKeyInUse("a request with this Idempotency-Key is still being processed; retry")
    return download


def _start(runtime: Runtime, download: Download) -> None:
    """Start the download's workflow, named for the download; StartFailed (503) when it
    surely did not start, after marking the download FAILED (which frees its quota slot)."""
    try:
        runtime.stepfunctions.start_execution(
            stateMachineArn=runtime.settings.state_machine_arn,
            name=download.id,
            input=json.dumps({"download_id": download.id}),
        )
        return
    except ClientError as error:
        if error.response["Error"]["Code"] == "ExecutionAlreadyExists":
            return  # botocore's retry of a start whose answer was lost: the name is ours alone
        failure: Exception = error
        # A 5xx may come after the execution was started; a 4xx (throttling too) did not start it.
        ambiguous = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) >= 500
    except BotoCoreError as error:  # no answer: connection lost or timed out, maybe after the start
        failure, ambiguous = error, True
    log.warning("could not start the workflow of %s", download.id, exc_info=failure)
    if ambiguous and _execution_exists(runtime, download.id):
        return
    if _abandon(runtime, download):
        raise StartFailed("the download could not be started; try again") from failure


def _execution_exists(runtime: Runtime, download_id: str) -> bool:
    arn = execution_arn(runtime.settings.state_machine_arn, download_id)
    try:
        runtime.stepfunctions.describe_execution(executionArn=arn)
    except Exception:  # noqa: BLE001 - unknown counts as not started: see _abandon
        log.warning("could not tell whether %s started", download_id, exc_info=True)
        return False
    return True


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
        )
    except StateConflict as conflict:
        current = conflict.current
        return current is None or current.state is State.PENDING
    except Exception:
        log.exception("could not mark download %s FAILED; cleanup will time it out", download.id)
        return True
    notify.download_finished(runtime, failed)
    return True


def get(runtime: Runtime, principal: Principal, download_id: str) -> Download:
    download = runtime.downloads.get(download_id) if _ID.match(download_id) else None
    if download is None or download.tenant != principal.tenant:
        raise DownloadNotFound(f"no download {download_id}")
    if download.user_id != principal.user_id and not principal.is_admin:
        raise Forbidden("this download belongs to another user")
    return download


@dataclass(frozen=True)
class Page:
    items: list[Download]
    next_cursor: str | None


def list_own(runtime: Runtime, principal: Principal, query: dict[str, str]) -> Page:
    unknown = set(query) - {"state", "limit", "cursor"}
    if unknown:
        raise InvalidQuery(f"unknown query parameters: {', '.join(sorted(unknown))}")
    state = None
    if "state" in query:
        try:
            state = State(query["state"].upper())
        except ValueError:
            raise InvalidQuery(f"state must be one of {', '.join(s.value for s in State)}") from None
    raw_limit = query.get("limit", str(DEFAULT_PAGE))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise InvalidQuery(f"limit must be an integer from 1 to {MAX_PAGE}")
    items, cursor = runtime.downloads.list_owned(
        principal.tenant, principal.user_id, state=state, limit=int(raw_limit), cursor=query.get("cursor")
    )
    return Page(items, cursor)


def cancel_or_delete(runtime: Runtime, principal: Principal, download_id: str) -> Download | None:
    """Cancel a download that has not finished (returns it), or delete a finished one's
    artifact (returns None). The record stays, for audit."""
    download = get(runtime, principal, download_id)
    actor = user_actor(principal)
    if download.state in ACTIVE_STATES:
        try:
            cancelled = runtime.downloads.transition(
                download_id, ACTIVE_STATES, State.CANCELLED, finished_at=clock.iso(clock.now())
            )
        except StateConflict as conflict:
            download = conflict.current or download  # it finished meanwhile: delete instead
        else:
            runtime.audit.record(download.tenant, Action.CANCELLED, actor, download_id)
            stop_execution(runtime, download_id, "Cancelled", "cancelled by its owner")
            notify.download_finished(runtime, cancelled)
            return cancelled
    if download.state is State.DONE:
        # Expired meanwhile (StateConflict)? The artifact goes all the same.
        with contextlib.suppress(StateConflict):
            runtime.downloads.transition(download_id, [State.DONE], State.EXPIRED)
    artifacts.remove_everything(runtime.s3, runtime.settings.artifact_bucket, download_id)
    runtime.audit.record(download.tenant, Action.DELETED, actor, download_id, state=download.state.value)
    return None


def stop_execution(runtime: Runtime, download_id: str, error: str, cause: str) -> None:
    """Stop a download's workflow, best effort: its new state is already recorded."""
    arn = execution_arn(runtime.settings.state_machine_arn, download_id)
    try:
        runtime.stepfunctions.stop_execution(executionArn=arn, error=error, cause=cause)
    except Exception:  # noqa: BLE001 - best effort: the state change is already recorded
        # Finished, not started yet, or the call failed: the build notices the download has
        # left RUNNING through its next progress write and stops by itself either way.
        log.warning("could not stop the execution of %s", download_id, exc_info=True)


def execution_arn(state_machine_arn: str, download_id: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:") + f":{download_id}"


@dataclass(frozen=True)
class FileUrl:
    url: str
    expires_at: str


def file_url(
    runtime: Runtime, principal: Principal, download_id: str, ttl_seconds: int, action: Action
) -> FileUrl:
    """A presigned GET of the artifact, valid `ttl_seconds` at most and never past expiry."""
    download = get(runtime, principal, download_id)
    now = clock.now()
    remaining = _seconds_left(download, now)
    if download.state is State.EXPIRED or (download.state is State.DONE and remaining < 1):
        raise DownloadExpired("the download has expired and its file was deleted", state=State.EXPIRED.value)
    if download.state is not State.DONE:
        raise DownloadNotReady("download state is not DONE", state=download.state.value)
    if download.artifact is None:
        raise DownloadNotReady("download is DONE but has no artifact", state=download.state.value)
    ttl = min(ttl_seconds, remaining)
    url = artifacts.presign_download(runtime.s3, runtime.settings.artifact_bucket, download, ttl)
    runtime.audit.record(download.tenant, action, user_actor(principal), download_id)
    return FileUrl(url=url, expires_at=clock.iso(now + timedelta(seconds=ttl)))


def _check_link_request(runtime: Runtime, body: Any, root: str = "") -> dict[str, int]:
    settings = runtime.settings
    if not isinstance(body, dict):
        raise MalformedRequest("the request body must be a JSON object")
    return links.check_request(
        body, max_ttl=settings.link_max_ttl_seconds, max_uses=settings.link_max_uses, root=root
    )


def _issue_link(
    runtime: Runtime, principal: Principal, download: Download, request: dict[str, int]
) -> links.IssuedLink:
    issued = links.issue(
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


def create_link(runtime: Runtime, principal: Principal, download_id: str, body: Any) -> links.IssuedLink:
    request = _check_link_request(runtime, body if body is not None else {})
    return _issue_link(runtime, principal, get(runtime, principal, download_id), request)


def _seconds_left(download: Download, now: datetime) -> int:
    """Whole seconds until the artifact expires. Presigned URLs live at most this long, so
    none outlives the artifact, which cleanup may delete the moment expires_at has passed."""
    if not download.expires_at:
        return 0
    return int((clock.parse(download.expires_at) - now).total_seconds())


def follow_link(runtime: Runtime, token: str) -> str:
    """Use a link once: a fresh presigned URL of its download's artifact."""
    link = links.find(runtime.links, token)
    download = runtime.downloads.get(link.download_id)
    used = links.redeem(runtime.links, link, download, runtime.settings.link_retry_after_seconds)
    assert download is not None  # redeem refuses a link whose download is gone
    remaining = _seconds_left(download, clock.now())
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


def revoke_link(runtime: Runtime, principal: Principal, token: str) -> None:
    link = links.find_owned(runtime.links, principal, token)
    runtime.links.revoke(link.token_hash)
    runtime.audit.record(
        link.tenant,
        Action.LINK_REVOKED,
        user_actor(principal),
        link.download_id,
        link=link_actor(link.token_hash),
    )
