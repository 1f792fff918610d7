"""A tar or tar.gz is built across Lambda runs: with a budget so small that every run hands
on as soon as it has written something, Build loops through the state machine (BuildHandsOn)
and still writes the very bytes of a build in one run, which every reader opens.

The budget is the real mechanism, as in test_continuation.py: the local dispatcher's Lambda
context counts down from the function's timeout, and SATCHEL_HANDOFF_RESERVE_MS above that
timeout makes every run short of time once it has written a member (or a copied part, or a
chunk of a tar.gz member's bytes).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import tarfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from chalicelib.archive import assembly
from chalicelib.core import clients, clock
from chalicelib.downloadtypes.archiveoptions import TarStream
from chalicelib.runtime import Runtime
from chalicelib.workflow import steps, streamruns
from chalicelib.workflow.payloads import Prepared, Start
from chalicelib.workflow.runs import Outcome
from satchel_local import lambdas
from tests.support import executions
from tests.support.archive_readers import files_under, run
from tests.support.faults import Fault, Injector
from tests.support.stack import Satchel

MIB = 1024 * 1024
# Above the functions' 900 s timeout: every run is short of time once it has written something.
ALWAYS_SHORT = str(10_000 * 1000)


def _build(satchel: Satchel, params: dict[str, Any], created_at: datetime | None = None) -> tuple[str, bytes]:
    with pytest.MonkeyPatch.context() as patch:
        if created_at is not None:
            # The archive's own files (SHA256SUMS, MISSING.txt) are stamped with the download's
            # creation time: two downloads created at one moment give the same bytes.
            patch.setattr(clock, "now", lambda: created_at)
        created = satchel.create(params)
    assert created.status == 202, created.body
    done = satchel.wait(created.json["id"], timeout=240)
    assert done["state"] == "DONE", done
    body = requests.get(satchel.call("GET", done["url"]).headers["Location"], timeout=60).content
    assert len(body) == done["artifact"]["size"]
    assert hashlib.sha256(body).hexdigest() == done["artifact"]["sha256"]
    progress = done["progress"]
    assert progress["files_done"] == progress["files_total"]
    assert progress["bytes_done"] == progress["bytes_total"]
    assert satchel.open_uploads() == []
    return created.json["id"], body


def _readers_accept(body: bytes, tmp_path: Path, expected: dict[str, bytes], suffix: str) -> None:
    """GNU tar and bsdtar list and extract it, byte for byte; Python's tarfile reads it."""
    path = tmp_path / f"built{suffix}"
    path.write_bytes(body)
    if suffix == ".tar.gz":
        run("gzip", "-t", path)
        assert gzip.decompress(body)[-1024:] == bytes(1024)  # one stream, ending as a tar ends
    listed = run("tar", "-tvf", path)
    assert all(name in listed for name in expected)
    assert sorted(run("bsdtar", "-tf", path).splitlines()) == sorted(expected)
    for reader, command in {"gnu": ("tar", "-xf"), "bsdtar": ("bsdtar", "-xf")}.items():
        into = tmp_path / reader
        into.mkdir()
        run(*command, path, "-C", into)
        assert files_under(into) == expected, reader
    with tarfile.open(fileobj=io.BytesIO(body)) as opened:
        read = {}
        for member in opened.getmembers():
            extracted = opened.extractfile(member)
            assert extracted is not None
            read[member.name] = extracted.read()
    assert read == expected


def _texts(satchel: Satchel, prefix: str, count: int) -> dict[str, bytes]:
    # Sizes that are no multiple of 512: every member ends with padding.
    bodies = {
        f"{prefix}{index}.txt": (f"member {index} " * (300 + 77 * index)).encode() for index in range(count)
    }
    for key, body in bodies.items():
        satchel.put_source(key, body)
    return bodies


def _extracted(bodies: dict[str, bytes]) -> dict[str, bytes]:
    return {key.removeprefix("acme/"): body for key, body in bodies.items()}


@pytest.mark.parametrize(("fmt", "suffix"), [("tar", ".tar"), ("tar.gz", ".tar.gz")])
def test_a_tar_hands_on_after_each_member_and_writes_the_same_bytes(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fmt: str, suffix: str
) -> None:
    bodies = _texts(satchel, f"acme/tarruns-{fmt}/", 5)
    params = {"prefixes": [f"acme/tarruns-{fmt}/"], "format": fmt}
    at_once_id, at_once = _build(satchel, params)
    assert executions.runs_of(satchel, at_once_id, "Build") == 1
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    download_id, in_runs = _build(satchel, params)
    assert executions.runs_of(satchel, download_id, "Build") == 5  # one member per run
    assert executions.runs_of(satchel, download_id, "Digest") == 1  # no run saw every byte
    assert in_runs == at_once
    _readers_accept(in_runs, tmp_path, _extracted(bodies), suffix)
    # Finalize removed every run's saved state with the download's other temporaries.
    listed = satchel.s3.list_objects_v2(Bucket=satchel.stack.artifact_bucket, Prefix=f"tmp/{download_id}/")
    assert listed.get("KeyCount", 0) == 0


def test_a_tar_member_larger_than_a_run_is_copied_across_runs_part_by_part(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Copied parts of at most 6 MiB: the 22 MiB member's copy takes three runs.
    monkeypatch.setattr(assembly, "S3_MAX_PART_SIZE", 6 * MIB)
    monkeypatch.setenv("SATCHEL_SERVER_COPY_MIN_BYTES", str(10 * MIB))
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))
    bodies = {
        "acme/tarbig/a.txt": b"first\n" * 100,
        "acme/tarbig/b.bin": os.urandom(22 * MIB + 123),
        "acme/tarbig/c.txt": b"last\n" * 100,
    }
    for key, body in bodies.items():
        satchel.put_source(key, body)
    params = {"prefixes": ["acme/tarbig/"], "format": "tar"}
    _, at_once = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    download_id, in_runs = _build(satchel, params)
    # a.txt; b.bin's header and its first copied part; its second; its third; c.txt.
    assert executions.runs_of(satchel, download_id, "Build") == 5
    assert in_runs == at_once
    _readers_accept(in_runs, tmp_path, _extracted(bodies), ".tar")


def test_a_tar_gz_member_larger_than_a_run_is_split_between_deflate_chunks(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # 512 KiB reads: a run stops after one read of the large member, mid-member, and the
    # next reads on from that offset; the gzip stream goes on between its 1 MiB chunks.
    monkeypatch.setenv("SATCHEL_READ_CHUNK_BYTES", str(512 * 1024))
    large = b"".join(hashlib.sha256(str(index).encode()).hexdigest().encode() for index in range(80_000))
    bodies = {
        "acme/targz/a.txt": b"first\n" * 100,
        "acme/targz/b.log": large[: 5 * MIB // 2 + 77],  # 2.5 MiB: five reads
        "acme/targz/c.txt": b"last\n" * 100,
    }
    for key, body in bodies.items():
        satchel.put_source(key, body)
    params = {"prefixes": ["acme/targz/"], "format": "tar.gz"}
    _, at_once = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    download_id, in_runs = _build(satchel, params)
    # a.txt, then b.log a read at a time (the last run with its end), then c.txt: more runs
    # than members, so some stopped inside b.log.
    assert executions.runs_of(satchel, download_id, "Build") == 1 + 6 + 1
    assert in_runs == at_once
    _readers_accept(in_runs, tmp_path, _extracted(bodies), ".tar.gz")


def test_a_retried_tar_gz_run_goes_on_from_the_same_state_and_duplicates_nothing(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # 3 MiB incompressible members in 5 MiB parts, each read whole (4 MiB reads): a run a
    # member, and the second run uploads part 1, as does its retry.
    bodies = {f"acme/tarretry/{index}.bin": os.urandom(3 * MIB) for index in range(4)}
    for key, body in bodies.items():
        satchel.put_source(key, body)
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))
    monkeypatch.setenv("SATCHEL_READ_CHUNK_BYTES", str(4 * MIB))
    params = {"prefixes": ["acme/tarretry/"], "format": "tar.gz"}
    _, at_once = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    clients.reset()
    injector = Injector(satchel.stack.table)
    injector.install()
    # A run saves its held bytes, what it carries and its state (3 puts): the 6th put is the
    # second run's state, after its part 1. It fails on every attempt: the run fails, and
    # Retry runs it again from the same saved state (the same part 1, written again).
    with injector.armed(Fault("s3.PutObject", "internal", at=6, step="app.build")) as arming:
        download_id, in_runs = _build(satchel, params)
    assert injector.fired(arming) > 0
    failures = [
        e["taskFailedEventDetails"]["error"]
        for e in executions.history(satchel, download_id)
        if e["type"] == "TaskFailed"
    ]
    assert failures == ["TransientError"]
    # A run a member; Retry ran the second again within its state (no state entered again).
    assert executions.runs_of(satchel, download_id, "Build") == 4
    # Every part once, part 1 twice (the failed attempt's and its retry's, the same number).
    assert injector.calls[("app.build", "s3.UploadPart")] == math.ceil(len(in_runs) / (5 * MIB)) + 1
    assert in_runs == at_once
    _readers_accept(in_runs, tmp_path, _extracted(bodies), ".tar.gz")


@pytest.mark.parametrize(("fmt", "suffix"), [("tar", ".tar"), ("tar.gz", ".tar.gz")])
def test_a_surveyed_tar_surveys_and_builds_across_runs(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fmt: str, suffix: str
) -> None:
    """`manifest` and `on_missing: skip`: the survey hands on too (an entry a run), then the
    tar of what is there; SHA256SUMS and MISSING.txt come from the survey's parts."""
    prefix = f"acme/tarsurvey-{fmt}/"
    bodies = _texts(satchel, prefix, 4)
    gone_at_prepare, gone_before_build = f"{prefix}never.txt", f"{prefix}1.txt"
    # Gone between Prepare and Build: only the survey finds it missing.
    original = steps.prepare

    def then_deleted(runtime: Runtime, event: Start) -> Prepared:
        prepared = original(runtime, event)
        satchel.s3.delete_object(Bucket=satchel.stack.source_bucket, Key=gone_before_build)
        return prepared

    monkeypatch.setattr(steps, "prepare", then_deleted)
    params = {
        "keys": [*bodies, gone_at_prepare],
        "format": fmt,
        "manifest": True,
        "on_missing": "skip",
    }
    created_at = clock.now()
    _, at_once = _build(satchel, params, created_at)
    satchel.put_source(gone_before_build, bodies[gone_before_build])
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    download_id, in_runs = _build(satchel, params, created_at)
    done = satchel.call("GET", f"/downloads/{download_id}").json
    assert done["skipped"] == [gone_at_prepare, gone_before_build]
    # Survey: 4 entries, one a run; the last of them goes on with the first member; then the
    # other two present members, one a run.
    assert executions.runs_of(satchel, download_id, "Build") == 3 + 1 + 2
    assert in_runs == at_once
    present = {key: body for key, body in bodies.items() if key != gone_before_build}
    sums = "".join(
        f"{hashlib.sha256(body).hexdigest()}  {key.removeprefix('acme/')}\n" for key, body in present.items()
    )
    expected = {
        **_extracted(present),
        "SHA256SUMS": sums.encode(),
        "MISSING.txt": f"{gone_at_prepare}\n{gone_before_build}\n".encode(),
    }
    _readers_accept(in_runs, tmp_path, expected, suffix)
    run("sha256sum", "-c", "SHA256SUMS", cwd=tmp_path / "gnu")


def test_a_tar_cancelled_between_runs_leaves_nothing(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    _texts(satchel, "acme/tarcancel/", 5)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    cancelled: list[int] = []
    go = streamruns.StreamRun.go

    def cancel_before_the_third_run(self: streamruns.StreamRun) -> Outcome:
        if self._run == 2 and not cancelled:
            reply = satchel.call("DELETE", f"/downloads/{self._download.id}")
            cancelled.append(reply.status)
        return go(self)

    monkeypatch.setattr(streamruns.StreamRun, "go", cancel_before_the_third_run)
    created = satchel.create({"prefixes": ["acme/tarcancel/"], "format": "tar.gz"})
    download_id = created.json["id"]
    assert satchel.wait_execution(download_id, 60) in {"ABORTED", "FAILED"}
    assert lambdas.wait_idle(timeout=30)
    assert cancelled == [202]
    final = satchel.call("GET", f"/downloads/{download_id}").json
    assert final["state"] == "CANCELLED"
    assert final["artifact"] is None
    # The upload carried on between runs, the saved state and held bytes: all gone.
    assert satchel.open_uploads() == []
    assert satchel.artifact_objects() == []


def test_a_tar_run_that_finishes_a_copy_then_hands_on_inside_the_next_copy_loses_no_entry(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A tar.gz copies nothing (every byte is deflated by the worker), so a gzip stream carried
    # between chunks never meets a copy handed on; in a tar, what a run goes on with is a
    # copy's rest. Here a run goes on with one (b.bin's), finishes it, and hands on inside the
    # next (c.bin's): as a run would that ran short of time only while S3 copies (the stream
    # never stops before a next entry; the assembler stops between any two copied parts).
    monkeypatch.setattr(assembly, "S3_MAX_PART_SIZE", 6 * MIB)
    monkeypatch.setenv("SATCHEL_SERVER_COPY_MIN_BYTES", str(10 * MIB))
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))
    bodies = {
        "acme/tarcopies/a.txt": b"first\n" * 100,
        "acme/tarcopies/b.bin": os.urandom(20 * MIB + 123),
        "acme/tarcopies/c.bin": os.urandom(20 * MIB + 456),
        "acme/tarcopies/d.txt": b"last\n" * 100,
    }
    for key, body in bodies.items():
        satchel.put_source(key, body)
    params = {"prefixes": ["acme/tarcopies/"], "format": "tar"}
    _, at_once = _build(satchel, params)
    original = TarStream.__init__

    def short_only_while_copying(self: TarStream, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._stop = lambda: False

    monkeypatch.setattr(TarStream, "__init__", short_only_while_copying)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    download_id, in_runs = _build(satchel, params)
    # a.txt, b.bin's header and first copied part; its second; its third, then c.bin's header
    # and first copied part; its second; its third and d.txt.
    assert executions.runs_of(satchel, download_id, "Build") == 5
    assert in_runs == at_once
    _readers_accept(in_runs, tmp_path, _extracted(bodies), ".tar")
