"""`on_missing: skip` and a source that vanishes AFTER the survey saw it, before its member is
written: it is left out where the build meets it (nothing of it written), listed in the
download's `skipped` and in MISSING.txt after the others, and not in SHA256SUMS. The archive is
the very one built when the source was already gone at the survey, whether the build meets it
in one Lambda run or in one of many (the runs after it learn of it from the saved state).

The sources are deleted as the survey ends (`survey_part`, patched), so only the build meets
them gone. With SATCHEL_HANDOFF_RESERVE_MS above the functions' timeout every run is short of
time once it has done something (as in test_surveyed_zip_runs.py): the survey an entry a run,
then a member a run, and a vanished source is met by a later run than the survey's last.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterable
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config

from chalicelib.archive import assembly
from chalicelib.archive.zipwriter import Streaming, ZipLayout
from chalicelib.core import clients, clock
from chalicelib.downloadtypes import archive, archiveoptions
from chalicelib.downloadtypes.archiveoptions import LeftOut, TarStream
from chalicelib.downloadtypes.base import DownloadType
from chalicelib.runtime import Runtime
from chalicelib.s3.manifest import Entry
from chalicelib.workflow import runs, steps
from chalicelib.workflow.payloads import Prepared, Start
from satchel_local.stack import REGION
from tests.support import executions
from tests.support.archive_readers import every_zip_reader_accepts, files_under, run
from tests.support.faults import Fault, Injector
from tests.support.stack import Satchel

MIB = 1024 * 1024
# Above the functions' 900 s timeout: every run is short of time once it has done something.
ALWAYS_SHORT = str(10_000 * 1000)


def _sources(satchel: Satchel, prefix: str, count: int, big: tuple[int, ...] = ()) -> dict[str, bytes]:
    """`count` texts, those at `big` of 10 MiB (S3 copies them, `SATCHEL_SERVER_COPY_MIN_BYTES`
    set so: a store zip's members, and a tar's)."""
    bodies = {
        f"{prefix}{index}.txt": (f"member {index} " * (300 + 77 * index)).encode() for index in range(count)
    }
    for index in big:
        pattern = bytes(range(index, 256))
        bodies[f"{prefix}{index}.txt"] = (pattern * (10 * MIB // len(pattern) + 1))[: 10 * MIB]
    for key, body in bodies.items():
        satchel.put_source(key, body)
    return bodies


def _done(satchel: Satchel, params: dict[str, Any], created_at: datetime) -> tuple[dict[str, Any], bytes]:
    with pytest.MonkeyPatch.context() as patch:
        # SHA256SUMS and MISSING.txt (and a tar's entries for them) are stamped with the
        # download's creation time: two downloads created at one moment give the same bytes.
        patch.setattr(clock, "now", lambda: created_at)
        created = satchel.create(params)
    assert created.status == 202, created.body
    done = satchel.wait(created.json["id"], timeout=240)
    assert done["state"] == "DONE", done
    body = requests.get(satchel.call("GET", done["url"]).headers["Location"], timeout=60).content
    assert len(body) == done["artifact"]["size"]
    assert hashlib.sha256(body).hexdigest() == done["artifact"]["sha256"]
    progress = done["progress"]  # the totals are what the archive holds, and were reached
    assert progress["files_done"] == progress["files_total"]
    assert progress["bytes_done"] == progress["bytes_total"]
    assert satchel.open_uploads() == []
    return done, body


def _deleted_after_prepare(monkeypatch: pytest.MonkeyPatch, satchel: Satchel, keys: list[str]) -> None:
    """Gone before Build: the survey finds them missing (the archive to compare with)."""
    original = steps.prepare

    def then_deleted(runtime: Runtime, event: Start) -> Prepared:
        prepared = original(runtime, event)
        for key in keys:
            satchel.s3.delete_object(Bucket=satchel.stack.source_bucket, Key=key)
        return prepared

    monkeypatch.setattr(steps, "prepare", then_deleted)


def _deleted_after_survey(monkeypatch: pytest.MonkeyPatch, satchel: Satchel, keys: list[str]) -> None:
    """Gone once the survey has seen them present: deleted by the run that ends the survey,
    after its last part is written and before any member."""
    original = archiveoptions.survey_part

    def then_deleted(*args: Any) -> tuple[int, bool]:
        taken, exhausted = original(*args)
        if exhausted:
            for key in keys:
                satchel.s3.delete_object(Bucket=satchel.stack.source_bucket, Key=key)
        return taken, exhausted

    monkeypatch.setattr(archiveoptions, "survey_part", then_deleted)


def _gone_at_survey_and_after(
    satchel: Satchel,
    monkeypatch: pytest.MonkeyPatch,
    bodies: dict[str, bytes],
    gone: list[str],
    params: dict[str, Any],
) -> tuple[dict[str, Any], bytes, bytes]:
    """The archive with `gone` deleted before Build (found by the survey), then the same
    download with them deleted after the survey: (the latter's record, its bytes, the former's)."""
    created_at = clock.now()
    with pytest.MonkeyPatch.context() as patch:
        _deleted_after_prepare(patch, satchel, gone)
        before, at_survey = _done(satchel, params, created_at)
    assert before["skipped"] == [*params["keys"][len(bodies) :], *gone]
    for key in gone:
        satchel.put_source(key, bodies[key])
    _deleted_after_survey(monkeypatch, satchel, gone)
    done, after = _done(satchel, params, created_at)
    return done, after, at_survey


def _expected(
    bodies: dict[str, bytes], gone: list[str], missing: list[str], manifest: bool
) -> dict[str, bytes]:
    present = {key: body for key, body in bodies.items() if key not in gone}
    expected = {key.removeprefix("acme/"): body for key, body in present.items()}
    expected["MISSING.txt"] = "".join(f"{key}\n" for key in missing).encode()
    if manifest:
        expected["SHA256SUMS"] = "".join(
            f"{hashlib.sha256(body).hexdigest()}  {key.removeprefix('acme/')}\n"
            for key, body in present.items()
        ).encode()
    return expected


def _sums_check(into: Path, expected: dict[str, bytes]) -> None:
    checked = run("sha256sum", "-c", "SHA256SUMS", cwd=into)
    assert checked.count(": OK") == len(expected) - 2  # every source, not SHA256SUMS nor MISSING.txt


def _zip_accepted(body: bytes, tmp_path: Path, expected: dict[str, bytes]) -> None:
    """Python, unzip, 7-Zip, bsdtar and Java read it; `sha256sum -c` over what bsdtar extracted."""
    every_zip_reader_accepts(body, tmp_path, expected)
    if "SHA256SUMS" in expected:
        _sums_check(tmp_path / "extracted", expected)


def _tar_accepted(body: bytes, tmp_path: Path, expected: dict[str, bytes], suffix: str) -> None:
    """Python's tarfile, GNU tar, bsdtar and 7-Zip read it; `sha256sum -c` over GNU tar's extraction."""
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(body)) as opened:
        for member in opened.getmembers():
            extracted = opened.extractfile(member)
            assert extracted is not None, member.name
            members[member.name] = extracted.read()
    assert members == expected
    path = tmp_path / f"built{suffix}"
    path.write_bytes(body)
    for reader in ("tar", "bsdtar"):
        into = tmp_path / reader
        into.mkdir()
        run(reader, "-xf", path, cwd=into)
        assert files_under(into) == expected
    assert "Everything is Ok" in run("7z", "t", path)
    if "SHA256SUMS" in expected:
        _sums_check(tmp_path / "tar", expected)


def _deleted_once_its_first_pass_stops(
    monkeypatch: pytest.MonkeyPatch, satchel: Satchel, gone: str
) -> list[str]:
    """`gone` is deleted when the first of the build's first passes stops between two chunks
    (a run ends inside it); the names of the members stopped so, filled as the build runs."""
    checksum = ZipLayout.checksum
    stops: list[str] = []

    def stopped_then_deleted(self: ZipLayout, member: Streaming, chunks: Iterable[bytes]) -> int | None:
        crc = checksum(self, member, chunks)
        if crc is None and not stops:
            stops.append(member.name)
            satchel.s3.delete_object(Bucket=satchel.stack.source_bucket, Key=gone)
        return crc

    monkeypatch.setattr(ZipLayout, "checksum", stopped_then_deleted)
    return stops


@pytest.mark.parametrize(
    ("compression", "manifest", "short", "big"),
    [
        ("deflate", True, True, ()),  # met by a later run than the survey's last
        ("deflate", False, False, ()),  # met in the run that ends the survey, which builds it all
        # 3.txt S3 would copy, found gone by the HEAD for its CRC-32; 4.txt S3 copies.
        ("store", True, False, (3, 4)),
        ("store", False, True, (3, 4)),
    ],
)
def test_a_zip_leaves_out_a_source_gone_after_the_survey(
    satchel: Satchel,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    compression: str,
    manifest: bool,
    short: bool,
    big: tuple[int, ...],
) -> None:
    prefix = f"acme/vanish-zip-{compression}-{manifest}-{short}/"
    monkeypatch.setenv("SATCHEL_SERVER_COPY_MIN_BYTES", str(10 * MIB))
    bodies = _sources(satchel, prefix, 5, big)
    never, gone = f"{prefix}never.txt", [f"{prefix}1.txt", f"{prefix}3.txt"]
    params = {
        "keys": [*bodies, never],
        "compression": compression,
        "manifest": manifest,
        "on_missing": "skip",
    }
    if short:
        monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    done, after, at_survey = _gone_at_survey_and_after(satchel, monkeypatch, bodies, gone, params)
    assert done["skipped"] == [never, *gone]
    assert done["progress"]["files_total"] == len(bodies) - len(gone)
    assert executions.failures_of(satchel, done["id"]) == []  # no attempt failed or went again
    if short:  # the survey an entry a run, then the sources left out and written in later runs
        assert executions.runs_of(satchel, done["id"], "Build") > len(bodies) + 1
    elif big:  # S3 copied 4.txt (after the build went on past 3.txt): Digest hashed the zip
        assert executions.runs_of(satchel, done["id"], "Build") == 1
        assert executions.runs_of(satchel, done["id"], "Digest") == 1
    assert after == at_survey
    _zip_accepted(after, tmp_path, _expected(bodies, gone, [never, *gone], manifest))


@pytest.mark.parametrize(
    ("fmt", "suffix", "short", "big"),
    [
        # 3.txt S3 would copy into the tar, found gone by the HEAD for its time; 4.txt S3 copies.
        ("tar", ".tar", True, (3, 4)),
        ("tar.gz", ".tar.gz", True, ()),
        ("tar", ".tar", False, ()),
    ],
)
def test_a_tar_leaves_out_a_source_gone_after_the_survey(
    satchel: Satchel,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fmt: str,
    suffix: str,
    short: bool,
    big: tuple[int, ...],
) -> None:
    prefix = f"acme/vanish-{fmt}-{short}/"
    monkeypatch.setenv("SATCHEL_SERVER_COPY_MIN_BYTES", str(10 * MIB))
    bodies = _sources(satchel, prefix, 5, big)
    never, gone = f"{prefix}never.txt", [f"{prefix}1.txt", f"{prefix}3.txt"]
    params = {"keys": [*bodies, never], "format": fmt, "manifest": True, "on_missing": "skip"}
    if short:
        monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    done, after, at_survey = _gone_at_survey_and_after(satchel, monkeypatch, bodies, gone, params)
    assert done["skipped"] == [never, *gone]
    assert done["progress"]["files_total"] == len(bodies) - len(gone)
    assert executions.failures_of(satchel, done["id"]) == []
    assert after == at_survey
    _tar_accepted(after, tmp_path, _expected(bodies, gone, [never, *gone], True), suffix)


def _faulted_at_the_skip(
    monkeypatch: pytest.MonkeyPatch, injector: Injector, fault: Fault, stack: ExitStack
) -> list[Any]:
    """`fault` armed as the first source is left out (its record first: the calls it makes
    then count), and kept armed to the end: returns its arming, to count what fired."""
    original = LeftOut.add
    arming: list[Any] = []

    def armed_then_left_out(self: LeftOut, entry: Entry) -> None:
        if not arming:
            arming.extend(stack.enter_context(injector.armed(fault)))
        original(self, entry)

    monkeypatch.setattr(LeftOut, "add", armed_then_left_out)
    return arming


@pytest.mark.parametrize(
    ("fmt", "fault"),
    [
        # The skip's own record in the download fails: the run fails before it hands on.
        ("zip", Fault("dynamodb.UpdateItem", "internal", at=1, step="app.build")),
        # The run that left it out fails saving what the next run needs (after its parts).
        ("tar.gz", Fault("s3.PutObject", "internal", at=1, step="app.build")),
    ],
)
def test_a_run_retried_around_a_late_skip_writes_the_same_bytes(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fmt: str, fault: Fault
) -> None:
    prefix = f"acme/vanish-retry-{fmt}/"
    bodies = _sources(satchel, prefix, 4)
    never, gone = f"{prefix}never.txt", [f"{prefix}2.txt"]
    params = {"keys": [*bodies, never], "format": fmt, "manifest": True, "on_missing": "skip"}
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    clients.reset()
    injector = Injector(satchel.stack.table)
    injector.install()
    with ExitStack() as stack:
        arming = _faulted_at_the_skip(monkeypatch, injector, fault, stack)
        done, after, at_survey = _gone_at_survey_and_after(satchel, monkeypatch, bodies, gone, params)
        assert injector.fired(arming) > 0
    # One attempt failed; Retry ran that run again from the same saved state.
    assert executions.failures_of(satchel, done["id"]) == ["TransientError"]
    assert done["skipped"] == [never, *gone]
    assert after == at_survey
    expected = _expected(bodies, gone, [never, *gone], True)
    if fmt == "zip":
        _zip_accepted(after, tmp_path, expected)
    else:
        _tar_accepted(after, tmp_path, expected, ".tar.gz")


def test_with_on_missing_fail_a_source_gone_after_the_survey_fails_the_download(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = "acme/vanish-fail/"
    bodies = _sources(satchel, prefix, 3)
    _deleted_after_survey(monkeypatch, satchel, [f"{prefix}1.txt"])
    created = satchel.create({"keys": list(bodies), "manifest": True})  # on_missing: fail
    assert created.status == 202, created.body
    failed = satchel.wait(created.json["id"], timeout=120)
    assert failed["state"] == "FAILED", failed
    assert failed["error"]["code"] == "SourceMissing"
    assert f"{prefix}1.txt" in failed["error"]["message"]
    assert failed["skipped"] == []
    satchel.wait_execution(failed["id"], timeout=60)
    assert satchel.open_uploads() == []


def test_a_source_gone_inside_its_member_fails_source_missing_not_a_retry(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tar.gz member read across runs: its header and first bytes are written when its
    source vanishes. It cannot be left out any more: FAILED `SourceMissing`, at once."""
    prefix = "acme/vanish-inside/"
    large = b"".join(hashlib.sha256(str(index).encode()).hexdigest().encode() for index in range(80_000))
    bodies = {f"{prefix}a.txt": b"first\n" * 100, f"{prefix}b.log": large[: 5 * MIB // 2]}
    for key, body in bodies.items():
        satchel.put_source(key, body)
    original = TarStream._stopped

    def stopped_then_deleted(self: TarStream, index: int, offset: int) -> None:
        original(self, index, offset)
        if offset:  # inside b.log
            satchel.s3.delete_object(Bucket=satchel.stack.source_bucket, Key=f"{prefix}b.log")

    monkeypatch.setattr(TarStream, "_stopped", stopped_then_deleted)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    params = {"keys": list(bodies), "format": "tar.gz", "on_missing": "skip"}
    created = satchel.create(params)
    assert created.status == 202, created.body
    failed = satchel.wait(created.json["id"], timeout=120)
    assert failed["state"] == "FAILED", failed
    assert failed["error"]["code"] == "SourceMissing"
    assert "while its member was being written" in failed["error"]["message"]
    satchel.wait_execution(failed["id"], timeout=60)
    assert executions.failures_of(satchel, failed["id"]) == ["SourceMissing"]  # never retried
    assert satchel.open_uploads() == []


def _unchecksummed(satchel: Satchel, prefix: str) -> dict[str, bytes]:
    """b.png (stored as read in a deflate zip) with no checksum S3 can give: a first pass
    reads it for its CRC-32 before its header (streamed: above HOLD_MAX_BYTES, 1 MiB here),
    and a run short of time stops that pass, or its bytes, between two chunks."""
    bodies = {
        f"{prefix}a.txt": b"first\n" * 100,
        f"{prefix}b.png": bytes(range(256)) * (3 * MIB // 256 + 77),
        f"{prefix}c.txt": b"last\n" * 100,
    }
    for key, body in bodies.items():
        _put_unchecksummed(satchel, key, body)
    return bodies


def _put_unchecksummed(satchel: Satchel, key: str, body: bytes) -> None:
    config = Config(request_checksum_calculation="when_required")
    plain = boto3.client("s3", region_name=REGION, config=config)
    plain.put_object(Bucket=satchel.stack.source_bucket, Key=key, Body=body)


def test_a_zip_leaves_out_a_source_gone_between_two_runs_of_its_first_pass(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Nothing of b.png is written while its first pass goes on: gone then, it is left out
    by the run that goes on with it, as one gone before its member began."""
    monkeypatch.setattr(archive, "HOLD_MAX_BYTES", MIB)
    prefix = "acme/vanish-firstpass/"
    bodies = _unchecksummed(satchel, prefix)
    gone = f"{prefix}b.png"
    params = {"keys": list(bodies), "on_missing": "skip"}
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    created_at = clock.now()
    with pytest.MonkeyPatch.context() as patch:
        _deleted_after_prepare(patch, satchel, [gone])
        _, at_survey = _done(satchel, params, created_at)
    _put_unchecksummed(satchel, gone, bodies[gone])
    stops = _deleted_once_its_first_pass_stops(monkeypatch, satchel, gone)
    done, after = _done(satchel, params, created_at)
    assert stops == ["vanish-firstpass/b.png"]
    assert done["skipped"] == [gone]
    assert executions.failures_of(satchel, done["id"]) == []
    assert after == at_survey
    _zip_accepted(after, tmp_path, _expected(bodies, [gone], [gone], False))


def test_a_zip_fails_source_missing_when_a_source_goes_inside_its_member(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """b.png's header and first bytes are written when it vanishes: FAILED `SourceMissing`."""
    monkeypatch.setattr(archive, "HOLD_MAX_BYTES", MIB)
    prefix = "acme/vanish-inside-zip/"
    bodies = _unchecksummed(satchel, prefix)
    hand_on = runs.Run._hand_on

    def handed_on_then_deleted(self: runs.Run, *args: Any) -> runs.Outcome:
        carried = args[-2]  # the member the run stopped in (runs.Run._hand_on's signature)
        if isinstance(carried, runs.Carried) and carried.member["header_size"]:
            satchel.s3.delete_object(Bucket=satchel.stack.source_bucket, Key=f"{prefix}b.png")
        return hand_on(self, *args)

    monkeypatch.setattr(runs.Run, "_hand_on", handed_on_then_deleted)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    created = satchel.create({"keys": list(bodies), "on_missing": "skip"})
    assert created.status == 202, created.body
    failed = satchel.wait(created.json["id"], timeout=120)
    assert failed["state"] == "FAILED", failed
    assert failed["error"]["code"] == "SourceMissing"
    assert f"while its member was being written: {prefix}b.png" in failed["error"]["message"]
    satchel.wait_execution(failed["id"], timeout=60)
    assert executions.failures_of(satchel, failed["id"]) == ["SourceMissing"]  # never retried
    assert satchel.open_uploads() == []


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_the_one_run_render_leaves_out_a_source_gone_after_its_survey_too(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fmt: str
) -> None:
    """The type's `render` (Build in one run, as before builds handed on; tests compare with
    it) leaves it out in place as the runs do."""
    monkeypatch.setattr(DownloadType, "can_survey", lambda self, params: False)
    monkeypatch.setattr(DownloadType, "can_stream", lambda self, params: False)
    prefix = f"acme/vanish-render-{fmt}/"
    bodies = _sources(satchel, prefix, 5)
    never, gone = f"{prefix}never.txt", [f"{prefix}1.txt", f"{prefix}3.txt"]
    params = {"keys": [*bodies, never], "format": fmt, "manifest": True, "on_missing": "skip"}
    created_at = clock.now()
    with pytest.MonkeyPatch.context() as patch:
        _deleted_after_prepare(patch, satchel, gone)
        _, at_survey = _done(satchel, params, created_at)
    for key in gone:
        satchel.put_source(key, bodies[key])
    original = archiveoptions.survey

    def surveyed_then_deleted(*args: Any) -> archiveoptions.Survey:
        found = original(*args)
        for key in gone:
            satchel.s3.delete_object(Bucket=satchel.stack.source_bucket, Key=key)
        return found

    monkeypatch.setattr(archiveoptions, "survey", surveyed_then_deleted)
    done, after = _done(satchel, params, created_at)
    assert executions.runs_of(satchel, done["id"], "Build") == 1
    assert done["skipped"] == [never, *gone]
    assert after == at_survey
    expected = _expected(bodies, gone, [never, *gone], True)
    if fmt == "zip":
        _zip_accepted(after, tmp_path, expected)
    else:
        _tar_accepted(after, tmp_path, expected, ".tar")


def test_a_run_that_leaves_out_the_member_it_resumed_then_hands_on_inside_a_copy_loses_no_entry(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """a.bin (no checksum S3 can give) stops in its first pass, and is gone then: the next run
    leaves it out, goes on with b.bin, which S3 copies, and hands on inside its copy. The runs
    after it go on with c.bin (the entry after b.bin), laid out after the copy."""
    monkeypatch.setattr(archive, "HOLD_MAX_BYTES", MIB)
    monkeypatch.setattr(assembly, "S3_MAX_PART_SIZE", 6 * MIB)  # b.bin's copy: 3 parts, a run each
    monkeypatch.setenv("SATCHEL_SERVER_COPY_MIN_BYTES", str(10 * MIB))
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))
    prefix = "acme/vanish-resumed-copy/"
    gone = f"{prefix}a.bin"
    bodies = {
        gone: bytes(range(256)) * (2 * MIB // 256 + 77),
        f"{prefix}b.bin": os.urandom(20 * MIB),
        f"{prefix}c.bin": os.urandom(2 * MIB + 100),
        f"{prefix}d.txt": b"last\n" * 100,
    }
    _put_unchecksummed(satchel, gone, bodies[gone])
    for key in list(bodies)[1:]:
        satchel.s3.put_object(
            Bucket=satchel.stack.source_bucket, Key=key, Body=bodies[key], ChecksumAlgorithm="CRC32"
        )
    params = {"keys": list(bodies), "compression": "store", "on_missing": "skip"}
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    created_at = clock.now()
    with pytest.MonkeyPatch.context() as patch:
        _deleted_after_prepare(patch, satchel, [gone])
        _, at_survey = _done(satchel, params, created_at)
    _put_unchecksummed(satchel, gone, bodies[gone])
    stops = _deleted_once_its_first_pass_stops(monkeypatch, satchel, gone)
    done, after = _done(satchel, params, created_at)
    assert stops == ["vanish-resumed-copy/a.bin"]
    assert done["skipped"] == [gone]
    assert executions.failures_of(satchel, done["id"]) == []
    # The survey, an entry a run, the last going on with a.bin's first pass (its chunk 1);
    # a.bin left out, b.bin's header and first copied part; its second; its third, c.bin's
    # header and chunk 1; its chunk 2; its last 100 bytes and d.txt.
    assert executions.runs_of(satchel, done["id"], "Build") == 3 + 1 + 5
    assert after == at_survey
    _zip_accepted(after, tmp_path, _expected(bodies, [gone], [gone], False))
