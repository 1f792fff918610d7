"""The scheduled sweep: expire, purge, time out, and remove leftovers.

Every action is a conditional write or an idempotent delete, so two sweeps may run at once.
An artifact is deleted only after its download moved DONE -> EXPIRED, which happens only
once its expiry has passed; links never outlive that expiry (links.issue and redeem), so
no valid link ever points at a deleted artifact. DynamoDB's TTL and the bucket's lifecycle
rules are backstops behind this sweep, not the mechanism.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from botocore.exceptions import ClientError

from chalicelib import artifacts, clock, notify, service
from chalicelib.audit import Action
from chalicelib.models import ACTIVE_STATES, Download, ErrorInfo, State
from chalicelib.runtime import Runtime
from chalicelib.store import StateConflict

log = logging.getLogger(__name__)
ACTOR = "system:cleanup"
BATCH = 200


@dataclass
class Report:
    expired: list[str] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)
    uploads_aborted: int = 0
    temporaries_removed: int = 0


def run(runtime: Runtime, now: datetime | None = None) -> Report:
    now = now or clock.now()
    report = Report()
    for download in runtime.downloads.due(now, BATCH):
        if download.state in ACTIVE_STATES:
            _time_out(runtime, download, report)
        elif download.state is State.DONE:
            _expire(runtime, download, now, report)
        else:
            _purge(runtime, download, report)
    _remove_leftovers(runtime, now, report)
    log.info("cleanup: %s", asdict(report))
    return report


def _expire(runtime: Runtime, download: Download, now: datetime, report: Report) -> None:
    if download.expires_at is None or clock.parse(download.expires_at) > now:
        return  # not expired: its artifact stays, whatever the index said
    try:
        runtime.downloads.transition(download.id, [State.DONE], State.EXPIRED)
    except StateConflict:
        return  # another sweep, or its owner, got there first
    artifacts.remove_everything(runtime.s3, runtime.settings.artifact_bucket, download.id)
    runtime.audit.record(download.tenant, Action.EXPIRED, ACTOR, download.id)
    report.expired.append(download.id)


def _time_out(runtime: Runtime, download: Download, report: Report) -> None:
    error = ErrorInfo("Timeout", "the download did not finish before its deadline")
    try:
        failed = runtime.downloads.transition(
            download.id, ACTIVE_STATES, State.FAILED, error=asdict(error), finished_at=clock.iso(clock.now())
        )
    except StateConflict:
        return
    service.stop_execution(runtime, download.id, "Timeout", error.message)
    artifacts.remove_everything(runtime.s3, runtime.settings.artifact_bucket, download.id)
    runtime.audit.record(download.tenant, Action.TIMED_OUT, ACTOR, download.id)
    notify.download_finished(runtime, failed)
    report.timed_out.append(download.id)


def _purge(runtime: Runtime, download: Download, report: Report) -> None:
    if runtime.downloads.delete(download.id, [download.state]):
        artifacts.remove_everything(runtime.s3, runtime.settings.artifact_bucket, download.id)
        runtime.audit.record(download.tenant, Action.PURGED, ACTOR, download.id, state=download.state.value)
        report.purged.append(download.id)


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
        download_id = artifacts.owner_of(key)
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
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=artifacts.TEMPORARY_PREFIX
    ):
        stale = [
            {"Key": item["Key"]}
            for item in page.get("Contents", [])
            if leftover(item["Key"], item["LastModified"])
        ]
        if stale:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": stale, "Quiet": True})
            report.temporaries_removed += len(stale)
