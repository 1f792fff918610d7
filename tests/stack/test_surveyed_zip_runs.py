"""A zip with `manifest` or `on_missing: skip` is built across Lambda runs: the survey a part a
run, then the sources found as the plain zip's runs build them, SHA256SUMS and MISSING.txt
and the central directory in the last run; the very bytes of a build in one run.

The budget is the real mechanism, as in test_continuation.py and test_tar_runs.py:
SATCHEL_HANDOFF_RESERVE_MS above the functions' timeout makes every run short of time once
it has surveyed an entry, or written a member.
"""

from __future__ import annotations

import hashlib
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from chalicelib.core import clients, clock
from chalicelib.downloadtypes.base import DownloadType
from chalicelib.runtime import Runtime
from chalicelib.workflow import steps
from chalicelib.workflow.payloads import Prepared, Start
from tests.support import executions
from tests.support.archive_readers import files_under, run
from tests.support.faults import Fault, Injector
from tests.support.stack import Satchel

MIB = 1024 * 1024
# Above the functions' 900 s timeout: every run is short of time once it has done something.
ALWAYS_SHORT = str(10_000 * 1000)


def _build(satchel: Satchel, params: dict[str, Any], created_at: datetime) -> tuple[dict[str, Any], bytes]:
    with pytest.MonkeyPatch.context() as patch:
        # SHA256SUMS and MISSING.txt are stamped with the download's creation time: two
        # downloads created at one moment give the same bytes.
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
    return done, body


def _rendered_at_once(satchel: Satchel, params: dict[str, Any], created_at: datetime) -> bytes:
    """The same download built by the type's renderer in one Build run, as it was before
    these zips handed on (steps._build_at_once): the bytes the runs must give."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DownloadType, "can_survey", lambda self, params: False)
        done, body = _build(satchel, params, created_at)
    assert executions.runs_of(satchel, done["id"], "Build") == 1
    return body


def _readers_accept(body: bytes, tmp_path: Path, expected: dict[str, bytes]) -> None:
    """unzip and 7z test it, bsdtar lists it, the extraction is the sources, sha256sum agrees."""
    path = tmp_path / "built.zip"
    path.write_bytes(body)
    assert "No errors detected" in run("unzip", "-t", path)
    assert "Everything is Ok" in run("7z", "t", path)
    assert sorted(run("bsdtar", "-tf", path).splitlines()) == sorted(expected)
    into = tmp_path / "extracted"
    into.mkdir()
    run("unzip", "-q", path, "-d", into)
    assert files_under(into) == expected
    if "SHA256SUMS" in expected:
        checked = run("sha256sum", "-c", "SHA256SUMS", cwd=into)
        assert checked.count(": OK") == len(expected) - 1 - ("MISSING.txt" in expected)


def _texts(satchel: Satchel, prefix: str, count: int) -> dict[str, bytes]:
    bodies = {
        f"{prefix}{index}.txt": (f"member {index} " * (300 + 77 * index)).encode() for index in range(count)
    }
    for key, body in bodies.items():
        satchel.put_source(key, body)
    return bodies


def _sums(present: dict[str, bytes]) -> bytes:
    lines = (
        f"{hashlib.sha256(body).hexdigest()}  {key.removeprefix('acme/')}\n" for key, body in present.items()
    )
    return "".join(lines).encode()


@pytest.mark.parametrize("compression", ["deflate", "store"])
def test_a_zip_with_a_manifest_surveys_and_builds_across_runs(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, compression: str
) -> None:
    prefix = f"acme/zipsurvey-{compression}/"
    bodies = _texts(satchel, prefix, 4)
    params = {"prefixes": [prefix], "manifest": True, "compression": compression}
    created_at = clock.now()
    at_once_done, at_once = _build(satchel, params, created_at)
    assert executions.runs_of(satchel, at_once_done["id"], "Build") == 1
    assert at_once == _rendered_at_once(satchel, params, created_at)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    done, in_runs = _build(satchel, params, created_at)
    # The survey, an entry a run; the last of them goes on with the first member; then the
    # other three, a member a run (the last with SHA256SUMS and the central directory).
    assert executions.runs_of(satchel, done["id"], "Build") == 3 + 1 + 3
    assert executions.runs_of(satchel, done["id"], "Digest") == 1  # no run saw every byte
    assert in_runs == at_once
    expected = {key.removeprefix("acme/"): body for key, body in bodies.items()}
    _readers_accept(in_runs, tmp_path, {**expected, "SHA256SUMS": _sums(bodies)})
    # Finalize removed the survey's parts and every run's state with the other temporaries.
    listed = satchel.s3.list_objects_v2(Bucket=satchel.stack.artifact_bucket, Prefix=f"tmp/{done['id']}/")
    assert listed.get("KeyCount", 0) == 0


@pytest.mark.parametrize("manifest", [True, False])
def test_a_zip_that_skips_missing_sources_surveys_and_builds_across_runs(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, manifest: bool
) -> None:
    prefix = f"acme/zipskip-{manifest}/"
    bodies = _texts(satchel, prefix, 4)
    gone_at_prepare, gone_before_build = f"{prefix}never.txt", f"{prefix}1.txt"
    original = steps.prepare

    def then_deleted(runtime: Runtime, event: Start) -> Prepared:
        prepared = original(runtime, event)
        satchel.s3.delete_object(Bucket=satchel.stack.source_bucket, Key=gone_before_build)
        return prepared

    monkeypatch.setattr(steps, "prepare", then_deleted)
    params = {"keys": [*bodies, gone_at_prepare], "manifest": manifest, "on_missing": "skip"}
    created_at = clock.now()
    _, at_once = _build(satchel, params, created_at)
    satchel.put_source(gone_before_build, bodies[gone_before_build])
    assert at_once == _rendered_at_once(satchel, params, created_at)
    satchel.put_source(gone_before_build, bodies[gone_before_build])
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    done, in_runs = _build(satchel, params, created_at)
    assert done["skipped"] == [gone_at_prepare, gone_before_build]
    # The totals are what the archive holds (the progress reached them: _build).
    assert done["progress"]["files_total"] == 3
    # Survey: 4 entries, one a run, the last going on with the first member; then two more.
    assert executions.runs_of(satchel, done["id"], "Build") == 3 + 1 + 2
    assert in_runs == at_once
    present = {key: body for key, body in bodies.items() if key != gone_before_build}
    expected = {key.removeprefix("acme/"): body for key, body in present.items()}
    expected["MISSING.txt"] = f"{gone_at_prepare}\n{gone_before_build}\n".encode()
    if manifest:
        expected["SHA256SUMS"] = _sums(present)
    _readers_accept(in_runs, tmp_path, expected)


def test_a_retried_surveyed_zip_run_goes_on_from_the_same_state_and_duplicates_nothing(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # 3 MiB incompressible members, stored, in 5 MiB parts: each member is 3 read chunks of
    # 1 MiB, and a run short of time stops after every chunk but a member's last (the run
    # that writes that one begins the next member: its header and first chunk). The zip's
    # runs write 1, 1, 2, 1, 2, 1, 2, 1, 1 MiB (and headers): its fourth run passes 5 MiB
    # and uploads part 1, and so does its retry.
    bodies = {f"acme/zipretry/{index}.bin": os.urandom(3 * MIB) for index in range(4)}
    for key, body in bodies.items():
        satchel.put_source(key, body)
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))
    params = {"prefixes": ["acme/zipretry/"], "manifest": True, "compression": "store"}
    created_at = clock.now()
    _, at_once = _build(satchel, params, created_at)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    clients.reset()
    injector = Injector(satchel.stack.table)
    injector.install()
    # A survey run saves its part and where the next goes on (2 puts), the last its part and
    # the sources found (2); a zip run its records, checks, held bytes and state (4). The
    # survey's 4 runs (the last also the zip's first) make 12 puts, the zip's second and
    # third 8 more: the 22nd is the zip's fourth run's checks, after its part 1. It fails on
    # every attempt, and Retry runs that run again from the same saved state (the same part 1).
    with injector.armed(Fault("s3.PutObject", "internal", at=22, step="app.build")) as arming:
        done, in_runs = _build(satchel, params, created_at)
    assert injector.fired(arming) > 0
    assert executions.failures_of(satchel, done["id"]) == ["TransientError"]
    # The survey, an entry a run, the last going on with the first member's first chunk; then
    # a run per stop: after each member's first two chunks, 4 x 2. Retry ran one again
    # within its state.
    assert executions.runs_of(satchel, done["id"], "Build") == 3 + 1 + 4 * 2
    # Every part once, part 1 twice (the failed attempt's and its retry's, the same number).
    assert injector.calls[("app.build", "s3.UploadPart")] == math.ceil(len(in_runs) / (5 * MIB)) + 1
    assert in_runs == at_once
    expected = {key.removeprefix("acme/"): body for key, body in bodies.items()}
    _readers_accept(in_runs, tmp_path, {**expected, "SHA256SUMS": _sums(bodies)})


def test_a_surveyed_zip_whose_every_source_is_gone_holds_only_missing_txt(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bodies = _texts(satchel, "acme/zipallgone/", 2)
    original = steps.prepare

    def then_deleted(runtime: Runtime, event: Start) -> Prepared:
        prepared = original(runtime, event)
        for key in bodies:
            satchel.s3.delete_object(Bucket=satchel.stack.source_bucket, Key=key)
        return prepared

    monkeypatch.setattr(steps, "prepare", then_deleted)
    params = {"keys": list(bodies), "on_missing": "skip"}
    created_at = clock.now()
    at_once = _rendered_at_once(satchel, params, created_at)
    for key, body in bodies.items():
        satchel.put_source(key, body)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    done, in_runs = _build(satchel, params, created_at)
    assert done["skipped"] == list(bodies)
    assert done["progress"]["files_total"] == 0
    # The survey (HEADs), an entry a run; the run that ends it writes the empty zip's MISSING.txt.
    assert executions.runs_of(satchel, done["id"], "Build") == 2
    assert in_runs == at_once
    _readers_accept(in_runs, tmp_path, {"MISSING.txt": "".join(f"{k}\n" for k in bodies).encode()})
