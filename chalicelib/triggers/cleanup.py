"""The scheduled sweep: expire, purge, time out, warn, and remove leftovers.

A DONE download is due first SATCHEL_EXPIRING_UNUSED_SECONDS before its expiry: if no one
has fetched it by then, it is marked warned with the owed `download.expiring_unused` event
(in one conditional write), then filed under its expiry like any other.

Every action is a conditional write or an idempotent delete, so two sweeps may run at once.
Each download is handled on its own (one that fails is logged and counted, the rest go on),
the due index's shards are read round robin (store.due), and the work owed after a
committed transition is recorded with it and retried by later sweeps until done
(chalicelib/workflow/effects.py). An artifact is deleted only after its download moved
DONE -> EXPIRED, which happens only once its expiry has passed; links never outlive that
expiry (links.issue and redeem), so no valid link ever points at a deleted artifact.
DynamoDB's TTL and the bucket's lifecycle rules are backstops behind this sweep, not the
mechanism.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from chalicelib.core import clock
from chalicelib.core.models import ACTIVE_STATES, Download, ErrorInfo, State
from chalicelib.runtime import Runtime
from chalicelib.s3 import layout
from chalicelib.storage.audit import Action
from chalicelib.storage.downloads import Due, StateConflict
from chalicelib.workflow.effects import EXPIRING_UNUSED, NOTIFY, PURGE, REMOVE, STOP, audit, follow_up

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

log = logging.getLogger(__name__)
BATCH = 200


@dataclass
class Report:
    expired: list[str] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)
    # DONE downloads no one has fetched, announced before they expire (download.expiring_unused).
    warned: list[str] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)
    # Downloads whose owed work, left by an earlier sweep or step, this sweep finished.
    followed_up: list[str] = field(default_factory=list)
    # Downloads this sweep could not finish with (logged; the next sweep tries again).
    failed: list[str] = field(default_factory=list)
    failures: int = 0
    uploads_aborted: int = 0
    temporaries_removed: int = 0


def run(runtime: Runtime, now: datetime | None = None, batch: int = BATCH) -> Report:
    """One sweep over at most `batch` due downloads; each is handled on its own, so one that
    fails is logged and counted and the rest go on."""
    now = now or clock.now()
    report = Report()
    for found in runtime.downloads.due(now, batch):
        try:
            _handle(runtime, found, now, report)
        except Exception:  # one download must not abandon the sweep
            log.exception("cleanup could not finish with download %s", found.download.id)
            report.failed.append(found.download.id)
            report.failures += 1
    try:
        _remove_leftovers(runtime, now, report)
    except Exception:  # the next sweep lists the bucket again
        log.exception("cleanup could not remove leftover uploads and temporary objects")
        report.failures += 1
    log.info("cleanup: %s", asdict(report))
    return report


def _handle(runtime: Runtime, found: Due, now: datetime, report: Report) -> None:
    download = found.download
    if found.effects:
        claimed = runtime.downloads.claim(found, now)
        if claimed is not None:  # else another sweep has just taken it on
            follow_up(runtime, claimed.download, claimed.effects)
            report.followed_up.append(download.id)
    elif download.state in ACTIVE_STATES:
        _time_out(runtime, download, report)
    elif download.state is State.DONE:
        _expire(runtime, found, now, report)
    else:
        _purge(runtime, found, now, report)


def _expire(runtime: Runtime, found: Due, now: datetime, report: Report) -> None:
    download = found.download
    if download.expires_at is None:
        return
    expires = clock.parse(download.expires_at)
    if expires > now:
        # Not expired: its artifact stays. Due for its warning, or filed under its next due time.
        settled = bool(download.first_fetched_at or download.expiring_unused_at)
        warn_at = runtime.downloads.unused_warning_at(expires, settled)
        if warn_at is None or warn_at > now:
            runtime.downloads.refile(found, warn_at or expires)
            return
        claimed = runtime.downloads.claim_unused_warning(found, now, (EXPIRING_UNUSED,), warn_at)
        if claimed is not None:  # else fetched meanwhile, or another sweep took it on
            follow_up(runtime, claimed.download, claimed.effects)
            report.warned.append(download.id)
        return
    effects = (REMOVE, audit(Action.EXPIRED), NOTIFY)
    try:
        expired = runtime.downloads.transition(download.id, [State.DONE], State.EXPIRED, effects=effects)
    except StateConflict:
        return  # another sweep, or its owner, got there first
    report.expired.append(download.id)
    follow_up(runtime, expired, effects)


def _time_out(runtime: Runtime, download: Download, report: Report) -> None:
    error = ErrorInfo("Timeout", "the download did not finish before its deadline")
    effects = (STOP, REMOVE, audit(Action.TIMED_OUT), NOTIFY)
    try:
        failed = runtime.downloads.transition(
            download.id,
            ACTIVE_STATES,
            State.FAILED,
            effects=effects,
            error=asdict(error),
            finished_at=clock.iso(clock.now()),
        )
    except StateConflict:
        return
    report.timed_out.append(download.id)
    follow_up(runtime, failed, effects)


def _purge(runtime: Runtime, found: Due, now: datetime, report: Report) -> None:
    # Claimed first, so two sweeps never both audit it; the record goes last, once the rest is done.
    claimed = runtime.downloads.claim(found, now, effects=(REMOVE, audit(Action.PURGED), PURGE))
    if claimed is not None:
        follow_up(runtime, claimed.download, claimed.effects)
        report.purged.append(found.download.id)


class _Leftovers:
    """Decides whether an upload or object of the artifacts bucket is left over.

    One that belongs to an active download never is: that download's deadline ends it. One
    whose download has finished is at once: every step that ends a download removes its
    uploads and temporaries, so what remains was left by a crash. One that belongs to no
    download on record is once it is older than `stale_upload_seconds`.
    """

    def __init__(self, runtime: Runtime, cutoff: datetime) -> None:
        self._downloads = runtime.downloads
        self._cutoff = cutoff
        self._states: dict[str, State | None] = {}

    def __call__(self, key: str, since: datetime) -> bool:
        download_id = layout.owner_of(key)
        if download_id is not None and download_id not in self._states:
            download = self._downloads.get(download_id)
            self._states[download_id] = download.state if download else None
        state = self._states.get(download_id) if download_id else None
        if state is None:
            return since < self._cutoff
        return state not in ACTIVE_STATES


def _remove_leftovers(runtime: Runtime, now: datetime, report: Report) -> None:
    """Uploads and temporary objects that no build will finish or remove: a crashed worker's."""
    s3, bucket = runtime.s3, runtime.settings.artifact_bucket
    leftover = _Leftovers(runtime, now - timedelta(seconds=runtime.settings.stale_upload_seconds))
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            if leftover(upload["Key"], upload["Initiated"]):
                try:
                    s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                    report.uploads_aborted += 1
                except ClientError as error:
                    if error.response["Error"]["Code"] != "NoSuchUpload":
                        raise
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=layout.TEMPORARY_PREFIX):
        stale: list[ObjectIdentifierTypeDef] = [
            {"Key": item["Key"]}
            for item in page.get("Contents", [])
            if leftover(item["Key"], item["LastModified"])
        ]
        if stale:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": stale, "Quiet": True})
            report.temporaries_removed += len(stale)
