"""The scheduled sweep: expired downloads lose their files, stuck ones time out, old records
and leftovers go; two sweeps may run at once, and none deletes a file a link may still reach."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, urlsplit

import pytest

from chalicelib.api import downloads as api_downloads
from chalicelib.api import links as api_links
from chalicelib.core import clients, clock
from chalicelib.core.errors import DownloadExpired, LinkGone
from chalicelib.core.models import Download, State
from chalicelib.runtime import Runtime
from chalicelib.s3 import layout as artifacts
from chalicelib.storage import downloads as store
from chalicelib.storage import layout as storage_layout
from chalicelib.storage.audit import Action, AuditLog, Event
from chalicelib.storage.downloads import DownloadStore, Lifetimes
from chalicelib.triggers import cleanup
from chalicelib.workflow import steps as workflow
from chalicelib.workflow.payloads import FailInput
from satchel_local import lambdas
from tests.support import records
from tests.support.serialised import SerialisedWrites
from tests.support.stack import USERS, Satchel

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_events.client import EventBridgeClient
    from mypy_boto3_s3.client import S3Client

MIB = 1024 * 1024


@pytest.fixture
def short_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    """Artifacts may be kept for as little as a second, so they expire within a test."""
    monkeypatch.setenv("SATCHEL_RETENTION_MIN_SECONDS", "1")


def finished(satchel: Satchel, key: str, user: str = "alice", **extra: Any) -> dict[str, Any]:
    satchel.put_source(key, b"kept for a while: " + key.encode())
    download: dict[str, Any] = satchel.wait(
        satchel.create({"keys": [key]}, user=user, **extra).json["id"], user=user
    )
    assert download["state"] == "DONE"
    return download


def artifact_exists(satchel: Satchel, download_id: str) -> bool:
    key = artifacts.artifact_key(download_id)
    listed = satchel.s3.list_objects_v2(Bucket=satchel.stack.artifact_bucket, Prefix=key)
    return any(item["Key"] == key for item in listed.get("Contents", []))


def actions(download_id: str) -> list[str]:
    return [e.action for e in Runtime.from_env().audit.events("acme") if e.download_id == download_id]


def expiry(download: dict[str, Any]) -> datetime:
    return clock.parse(download["expires_at"])


@pytest.mark.usefixtures("short_retention")
def test_the_schedule_expires_a_download_its_file_answers_410_and_the_object_is_gone(
    satchel: Satchel,
) -> None:
    download = finished(satchel, "acme/brief.txt", expires_in=1)
    link = satchel.call("POST", f"/downloads/{download['id']}/links", body={"max_uses": 5}).json
    assert artifact_exists(satchel, download["id"])

    time.sleep(max(0.0, (expiry(download) - clock.now()).total_seconds()) + 0.05)
    report = satchel.client.lambda_.invoke(
        "cleanup", satchel.client.events.generate_cw_event("aws.events", "Scheduled Event", {}, [])
    ).payload

    assert report["expired"] == [download["id"]]
    assert satchel.call("GET", f"/downloads/{download['id']}").json["state"] == "EXPIRED"
    for suffix in ("file", "url"):
        gone = satchel.call("GET", f"/downloads/{download['id']}/{suffix}")
        assert gone.status == 410
        assert gone.json["Code"] == "DownloadExpired"
    assert satchel.call("GET", f"/links/{link['token']}", user=None).status == 410
    assert not artifact_exists(satchel, download["id"])
    assert satchel.artifact_objects() == []
    assert Action.EXPIRED.value in actions(download["id"])


def test_a_download_is_never_expired_before_its_time(satchel: Satchel) -> None:
    download = finished(satchel, "acme/keep.txt")
    runtime = Runtime.from_env()

    assert cleanup.run(runtime).expired == []
    # Even if the index said it was due (a clock skewed, an item edited), its expiry rules.
    table = clients.table(runtime.settings.table)
    table.update_item(
        Key={"pk": f"DOWNLOAD#{download['id']}", "sk": "DOWNLOAD"},
        UpdateExpression="SET gsi2sk = :past",
        ExpressionAttributeValues={":past": f"2000-01-01T00:00:00.000Z#{download['id']}"},
    )
    assert cleanup.run(runtime).expired == []
    assert satchel.call("GET", f"/downloads/{download['id']}").json["state"] == "DONE"
    assert artifact_exists(satchel, download["id"])
    # And the index is put right: it no longer takes a share of every sweep.
    assert [found.download.id for found in runtime.downloads.due(clock.now(), 10)] == []

    assert cleanup.run(runtime, expiry(download) + timedelta(seconds=1)).expired == [download["id"]]
    assert not artifact_exists(satchel, download["id"])


@pytest.mark.usefixtures("slow_build")
def test_a_build_past_its_deadline_is_stopped_and_fails_with_timeout(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, build_held_midway: threading.Event
) -> None:
    # Held until the sweep has run, so the sweep finds it mid-build.
    monkeypatch.setenv("SATCHEL_BUILD_DEADLINE_SECONDS", "1")
    satchel.put_source("acme/slow/a.bin", os.urandom(24 * MIB))
    satchel.put_source("acme/slow/b.bin", os.urandom(24 * MIB))
    download_id = satchel.create({"prefixes": ["acme/slow/"], "compression": "deflate"}).json["id"]
    running = satchel.wait_for_bytes(download_id)  # well into the build: its upload is open
    assert running["state"] == "RUNNING", "the build finished before its deadline"

    # A sweep past the deadline (its clock given, not waited for).
    try:
        report = cleanup.run(Runtime.from_env(), clock.parse(running["created_at"]) + timedelta(seconds=2))
    finally:
        build_held_midway.set()

    assert report.timed_out == [download_id]
    assert satchel.wait_execution(download_id, 30) in {"ABORTED", "FAILED"}
    assert lambdas.wait_idle(timeout=30)
    failed = satchel.call("GET", f"/downloads/{download_id}").json
    assert failed["state"] == "FAILED"
    assert failed["error"]["code"] == "Timeout"
    assert satchel.open_uploads() == []
    assert satchel.artifact_objects() == []
    assert Action.TIMED_OUT.value in actions(download_id)
    # Its quota slot is free again: the user may start as many downloads as before.
    assert Runtime.from_env().downloads.active_count("acme", "alice") == 0


def pending_download(runtime: Runtime, created_at: datetime, download_id: str | None = None) -> Download:
    """A download recorded but never started, as when its start_execution was lost."""
    fields = {"id": download_id} if download_id else {}
    return records.stored(runtime, user="bob", created_at=created_at, filename="orphan.zip", **fields)


def test_a_download_that_never_started_times_out_and_frees_its_slot(satchel: Satchel) -> None:
    runtime = Runtime.from_env()
    orphan = pending_download(runtime, clock.now() - timedelta(hours=3))

    report = cleanup.run(runtime)

    assert report.timed_out == [orphan.id]
    failed = satchel.call("GET", f"/downloads/{orphan.id}", "bob").json
    assert (failed["state"], failed["error"]["code"]) == ("FAILED", "Timeout")
    assert runtime.downloads.active_count("acme", "bob") == 0
    assert cleanup.run(runtime).timed_out == []  # once


def test_finished_records_are_purged_after_their_retention(satchel: Satchel) -> None:
    failed = satchel.wait(satchel.create({"keys": ["acme/not-there.txt"]}).json["id"])
    expired = finished(satchel, "acme/deleted.txt")
    assert satchel.call("DELETE", f"/downloads/{expired['id']}").status == 204  # EXPIRED, kept for audit
    runtime = Runtime.from_env()
    retention = timedelta(seconds=runtime.settings.record_retention_seconds)

    assert cleanup.run(runtime, clock.now() + retention - timedelta(minutes=1)).purged == []
    report = cleanup.run(runtime, clock.now() + retention + timedelta(minutes=1))

    assert sorted(report.purged) == sorted([failed["id"], expired["id"]])
    for download_id in report.purged:
        assert satchel.call("GET", f"/downloads/{download_id}").status == 404
        assert Action.PURGED.value in actions(download_id)


def test_leftovers_of_finished_downloads_go_and_an_active_builds_stay(satchel: Satchel) -> None:
    bucket, runtime = satchel.stack.artifact_bucket, Runtime.from_env()
    active = pending_download(runtime, clock.now())
    ended = satchel.wait(satchel.create({"keys": ["acme/not-there.txt"]}).json["id"])
    assert ended["state"] == "FAILED"
    for download_id in (active.id, ended["id"]):  # as a crashed worker leaves them
        satchel.s3.create_multipart_upload(Bucket=bucket, Key=artifacts.artifact_key(download_id))
        satchel.s3.put_object(
            Bucket=bucket, Key=f"{artifacts.temporary_prefix(download_id)}m.jsonl", Body=b""
        )
    satchel.s3.put_object(Bucket=bucket, Key=f"{artifacts.TEMPORARY_PREFIX}stray.bin", Body=b"")

    report = cleanup.run(runtime)

    assert (report.uploads_aborted, report.temporaries_removed) == (1, 1)
    assert [upload["Key"] for upload in satchel.open_uploads()] == [artifacts.artifact_key(active.id)]
    kept = [f"{artifacts.temporary_prefix(active.id)}m.jsonl", f"{artifacts.TEMPORARY_PREFIX}stray.bin"]
    assert sorted(satchel.artifact_objects()) == sorted(kept)

    # Objects of no download on record go once they are older than any build may run.
    later = clock.now() + timedelta(seconds=runtime.settings.stale_upload_seconds + 60)
    assert cleanup.run(runtime, later).temporaries_removed >= 1
    assert f"{artifacts.TEMPORARY_PREFIX}stray.bin" not in satchel.artifact_objects()


@pytest.mark.usefixtures("short_retention")
def test_two_sweeps_at_once_expire_each_download_exactly_once(satchel: Satchel) -> None:
    downloads = [finished(satchel, f"acme/pair/{n}.txt", expires_in=1) for n in range(6)]
    base = Runtime.from_env()
    runtime = replace(
        base,
        downloads=DownloadStore(
            SerialisedWrites(clients.table(base.settings.table)).typed,
            Lifetimes(base.settings.build_deadline_seconds, base.settings.record_retention_seconds),
        ),
    )
    later = max(expiry(download) for download in downloads) + timedelta(seconds=1)
    barrier = threading.Barrier(2)

    def sweep(_: int) -> cleanup.Report:
        barrier.wait()
        return cleanup.run(runtime, later)

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(sweep, range(2))

    assert sorted(first.expired + second.expired) == sorted(download["id"] for download in downloads)
    for download in downloads:
        assert actions(download["id"]).count(Action.EXPIRED.value) == 1
        assert not artifact_exists(satchel, download["id"])


def presigned_until(url: str) -> datetime:
    query = parse_qs(urlsplit(url).query)
    signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=clock.now().tzinfo)
    return signed + timedelta(seconds=int(query["X-Amz-Expires"][0]))


@pytest.mark.usefixtures("short_retention")
def test_cleanup_racing_fetches_never_leaves_a_url_to_a_deleted_file(satchel: Satchel) -> None:
    """Fetches and links keep coming while the sweep runs across the expiry: every URL handed
    out expires no later than the artifact, and once it is gone every fetch answers 410."""
    download = finished(satchel, "acme/raced.txt", expires_in=3)
    link = satchel.call("POST", f"/downloads/{download['id']}/links", body={"max_uses": 1000}).json
    assert "token" in link, link
    runtime, alice = Runtime.from_env(), USERS["alice"]
    deadline = expiry(download)
    handed_out: list[datetime] = []
    refused: list[str] = []
    stop = threading.Event()

    def fetch() -> None:
        while not stop.is_set():
            try:
                url = api_downloads.file_url(runtime, alice, download["id"], 300, Action.FETCHED_URL).url
                handed_out.append(presigned_until(url))
                claimed = api_links.claim(runtime, link["token"], None)
                if isinstance(claimed, api_links.Reading):
                    assert isinstance(claimed.refusal, LinkGone), claimed.refusal
                    refused.append(claimed.refusal.code)
                else:
                    handed_out.append(presigned_until(claimed.url))
            except DownloadExpired as gone:
                refused.append(gone.code)
            time.sleep(0.01)

    fetchers = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in fetchers:
        thread.start()
    expired: list[str] = []
    try:
        while not expired and clock.now() < deadline + timedelta(seconds=10):
            expired = cleanup.run(runtime).expired
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        stop.set()
        for thread in fetchers:
            thread.join()

    assert expired == [download["id"]]
    assert handed_out, "no fetch succeeded before the expiry"
    assert max(handed_out) <= deadline
    assert refused
    assert not artifact_exists(satchel, download["id"])
    assert satchel.call("GET", f"/downloads/{download['id']}/file").status == 410


class BrokenAudit(AuditLog):
    """The audit log, unreachable for one download: work that fails after its transition."""

    def __init__(self, audit: AuditLog, broken: str) -> None:
        self._audit = audit
        self._broken = broken

    def record(self, tenant: str, action: Action, actor: str, download_id: str, **details: Any) -> Event:
        if download_id == self._broken:
            raise ConnectionError("the audit table did not answer")
        return self._audit.record(tenant, action, actor, download_id, **details)


def overdue(runtime: Runtime, count: int, shard: int = 0) -> list[str]:
    """`count` downloads of bob's, never started and past their deadline, in one due shard."""
    long_ago = clock.now() - timedelta(hours=3)
    # The shard is the id's last four hex digits modulo 4 (store._due).
    ids = [api_downloads.new_id()[:-1] + str(shard) for _ in range(count)]
    for download_id in ids:
        pending_download(runtime, long_ago, download_id)
    return ids


def test_a_download_that_fails_does_not_stop_the_sweep_and_is_counted(satchel: Satchel) -> None:
    base = Runtime.from_env()
    broken, *others = overdue(base, 3)
    runtime = replace(base, audit=BrokenAudit(base.audit, broken))

    report = cleanup.run(runtime)

    assert sorted(report.timed_out) == sorted([broken, *others])  # every transition was made
    assert (report.failed, report.failures) == ([broken], 1)
    for download_id in others:
        assert actions(download_id) == [Action.TIMED_OUT.value]
        assert satchel.call("GET", f"/downloads/{download_id}", "bob").json["state"] == "FAILED"
    assert actions(broken) == []
    assert base.downloads.active_count("acme", "bob") == 0


def test_work_left_undone_after_a_transition_is_done_by_the_next_sweep(satchel: Satchel) -> None:
    base = Runtime.from_env()
    (broken,) = overdue(base, 1)
    assert cleanup.run(replace(base, audit=BrokenAudit(base.audit, broken))).failed == [broken]
    assert satchel.call("GET", f"/downloads/{broken}", "bob").json["state"] == "FAILED"  # committed
    assert actions(broken) == []

    assert cleanup.run(base).followed_up == []  # still held by the sweep that failed, for a while
    later = clock.now() + store.EFFECTS_LEASE + timedelta(seconds=1)
    report = cleanup.run(base, later)

    assert (report.followed_up, report.timed_out, report.failed) == ([broken], [], [])
    assert actions(broken) == [Action.TIMED_OUT.value]
    # Done is done: later sweeps neither repeat it nor find the download due before its retention.
    assert cleanup.run(base, later + store.EFFECTS_LEASE * 2).followed_up == []
    assert actions(broken) == [Action.TIMED_OUT.value]


def test_the_shards_are_read_round_robin_so_a_backlog_in_one_starves_no_other(satchel: Satchel) -> None:
    runtime = Runtime.from_env()
    backlog = overdue(runtime, 6, shard=0)
    (lonely,) = overdue(runtime, 1, shard=3)

    first = cleanup.run(runtime, batch=4)

    assert len(first.timed_out) == 4
    assert lonely in first.timed_out
    second = cleanup.run(runtime, batch=4)
    assert sorted(first.timed_out + second.timed_out) == sorted([*backlog, lonely])


class UnreachableS3:
    """S3 that lists nothing: removing a download's objects fails."""

    def __init__(self, s3: S3Client) -> None:
        self._s3 = s3

    def get_paginator(self, name: str) -> Any:
        raise ConnectionError(f"S3 did not answer {name}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


class RecordedEvents:
    """EventBridge, remembering which downloads each event was about."""

    def __init__(self, events: EventBridgeClient) -> None:
        self._events = events
        self.about: list[str] = []

    def put_events(self, **kwargs: Any) -> Any:
        self.about.extend(json.loads(entry["Detail"])["data"]["id"] for entry in kwargs["Entries"])
        return self._events.put_events(**kwargs)


def test_work_the_fail_step_left_undone_is_done_by_the_next_sweep(satchel: Satchel) -> None:
    base = Runtime.from_env()
    download = pending_download(base, clock.now())
    bucket = satchel.stack.artifact_bucket
    satchel.s3.create_multipart_upload(Bucket=bucket, Key=artifacts.artifact_key(download.id))
    broken = replace(base, s3=cast("S3Client", UnreachableS3(base.s3)))
    event: FailInput = {"download_id": download.id, "error": {"Error": "SourceMissing", "Cause": "gone"}}

    with pytest.raises(ConnectionError):
        workflow.fail(broken, event)
    assert satchel.call("GET", f"/downloads/{download.id}", "bob").json["state"] == "FAILED"
    assert len(satchel.open_uploads()) == 1  # not removed, nor was anyone told

    events = RecordedEvents(base.events)
    later = clock.now() + store.EFFECTS_LEASE + timedelta(seconds=1)
    report = cleanup.run(replace(base, events=cast("EventBridgeClient", events)), later)

    assert report.followed_up == [download.id]
    assert satchel.open_uploads() == []
    assert events.about == [download.id]
    assert cleanup.run(replace(base, events=cast("EventBridgeClient", events)), later).followed_up == []
    assert events.about == [download.id]


def test_the_last_strike_never_wipes_work_a_later_transition_owes(satchel: Satchel) -> None:
    """A transition that comes in while a follow-up is striking off its work (a delete during
    an expiry's follow-up) records its own owed work: the follow-up's last strike removes only
    its own piece, and the download stays due for the next sweep."""
    download = finished(satchel, "acme/struck.txt")
    runtime = Runtime.from_env()
    expired = runtime.downloads.transition(
        download["id"], [State.DONE], State.EXPIRED, effects={"artifact", "audit"}
    )
    runtime.downloads.effect_done(expired, "artifact", last=False)
    # Meanwhile: another transition owes its own work, before the follow-up's last strike.
    runtime.downloads.transition(download["id"], [State.EXPIRED], State.EXPIRED, effects={"purge"})

    runtime.downloads.effect_done(expired, "audit", last=True)

    item = clients.table(satchel.stack.table).get_item(Key=storage_layout.download_key(download["id"]))
    assert set(cast("set[str]", item["Item"]["pending_effects"])) == {"purge"}
    due = runtime.downloads.due(clock.now() + store.EFFECTS_LEASE + timedelta(seconds=1), 1000)
    assert download["id"] in {found.download.id for found in due}


def test_the_last_strike_of_work_owed_alone_settles_the_download(satchel: Satchel) -> None:
    download = finished(satchel, "acme/settled.txt")
    runtime = Runtime.from_env()
    expired = runtime.downloads.transition(download["id"], [State.DONE], State.EXPIRED, effects={"artifact"})

    runtime.downloads.effect_done(expired, "artifact", last=True)

    item = clients.table(satchel.stack.table).get_item(Key=storage_layout.download_key(download["id"]))
    assert "pending_effects" not in item["Item"]
    due = runtime.downloads.due(clock.now() + store.EFFECTS_LEASE + timedelta(seconds=1), 1000)
    assert download["id"] not in {found.download.id for found in due}
