"""A store zip's member copied by S3 (at or above SATCHEL_SERVER_COPY_MIN_BYTES) whose CRC-32
S3 cannot give (here: put without any checksum) is read in a first pass for the CRC its
header needs: ranged GETs, several at a time, each range's CRC combined in order. A run
short of time stops that pass between two ranges, nothing of the member written yet, and
the next run goes on from the offset reached; the member is then copied by S3, and the
Digest step checks its CRC in the artifact.

The budget is the real mechanism, as in tests/stack/test_continuation.py: with
SATCHEL_HANDOFF_RESERVE_MS above the functions' timeout, every run is short of time once it
has done something (a member, or one range of a first pass).
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Generator, Iterable
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from chalicelib.archive import integrity
from chalicelib.archive.zipwriter import Streaming, ZipLayout
from chalicelib.downloadtypes import archive
from chalicelib.runtime import Runtime
from chalicelib.s3 import sources
from chalicelib.workflow import segments
from chalicelib.workflow.payloads import SegmentBuilt, SegmentInput
from chalicelib.workflow.runs import Budget
from satchel_local.stack import REGION
from tests.support import archive_readers, executions
from tests.support.stack import Satchel

MIB = 1024 * 1024
# Above the functions' 900 s timeout: every run is short of time once it has done something.
ALWAYS_SHORT = str(10_000 * 1000)
RANGE = 3 * MIB
PREFIX = "acme/firstpass-copied/"
COPIED = "firstpass-copied/b.bin"


def _put_without_crc(satchel: Satchel) -> dict[str, bytes]:
    """a.txt, b.bin (10 MiB and a bit: copied, 4 ranges of 3 MiB), c.txt; no checksums."""
    bodies = {
        f"{PREFIX}a.txt": b"first\n" * 100,
        f"{PREFIX}b.bin": os.urandom(10 * MIB + 123),
        f"{PREFIX}c.txt": b"last\n" * 100,
    }
    plain = boto3.client(
        "s3", region_name=REGION, config=Config(request_checksum_calculation="when_required")
    )
    bucket = satchel.stack.source_bucket
    for key, body in bodies.items():
        plain.put_object(Bucket=bucket, Key=key, Body=body)
    head = satchel.s3.head_object(Bucket=bucket, Key=f"{PREFIX}b.bin", ChecksumMode="ENABLED")
    assert "ChecksumCRC32" not in head  # only its bytes can tell
    return bodies


def _build(satchel: Satchel) -> tuple[str, bytes]:
    created = satchel.create({"prefixes": [PREFIX], "compression": "store"})
    assert created.status == 202, created.body
    done = satchel.wait(created.json["id"], timeout=180)
    assert done["state"] == "DONE", done
    body = requests.get(satchel.call("GET", done["url"]).headers["Location"], timeout=60).content
    assert hashlib.sha256(body).hexdigest() == done["artifact"]["sha256"]
    progress = done["progress"]  # every byte counted once, however many runs read it
    assert (progress["files_done"], progress["bytes_done"]) == (3, progress["bytes_total"])
    return created.json["id"], body


class _Watch:
    """What the runs did: each first pass's span and outcome, the members Digest checked."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.spans: list[tuple[int, int]] = []
        self.passes: list[int | None] = []
        self.digest_checked: list[str] = []
        ranges, checksum_ranges = sources.range_crc32s, ZipLayout.checksum_ranges
        watch = self

        def spanned(*args: Any) -> Generator[tuple[int, int], None, None]:
            watch.spans.append(args[4])  # range_crc32s's `span`
            return ranges(*args)

        def passed(layout: ZipLayout, member: Streaming, crcs: Iterable[tuple[int, int]]) -> int | None:
            crc = checksum_ranges(layout, member, crcs)
            watch.passes.append(crc)
            return crc

        class Recording(integrity.Verifier):
            def __init__(self, checks: Iterable[integrity.Check], state: Any = None) -> None:
                listed = list(checks)
                watch.digest_checked += [check.name for check in listed]
                super().__init__(listed, state)

        monkeypatch.setattr(sources, "range_crc32s", spanned)
        monkeypatch.setattr(ZipLayout, "checksum_ranges", passed)
        monkeypatch.setattr(integrity, "Verifier", Recording)


@pytest.fixture
def one_run(satchel: Satchel, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, bytes], bytes]:
    """The sources, and their store zip built in one run (its first pass whole)."""
    monkeypatch.setenv("SATCHEL_SERVER_COPY_MIN_BYTES", str(10 * MIB))
    monkeypatch.setattr(archive, "FIRST_PASS_RANGE_BYTES", RANGE)
    bodies = _put_without_crc(satchel)
    with pytest.MonkeyPatch.context() as patch:
        watch = _Watch(patch)
        download_id, at_once = _build(satchel)
    assert executions.runs_of(satchel, download_id, "Build") == 1
    assert watch.spans == [(0, 10 * MIB + 123)]
    assert len(watch.passes) == 1
    assert watch.passes[0] is not None
    assert COPIED in watch.digest_checked  # copied: Digest checks the CRC the pass gave
    with zipfile.ZipFile(io.BytesIO(at_once)) as opened:
        member = opened.getinfo(COPIED)
        assert member.compress_type == zipfile.ZIP_STORED
        assert not member.flag_bits & 0x08  # its CRC in its header: no data descriptor
        assert watch.passes[0] == member.CRC
    return bodies, at_once


def test_a_copied_members_first_pass_spans_runs_between_its_ranges(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, one_run: tuple[dict[str, bytes], bytes]
) -> None:
    bodies, at_once = one_run
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    watch = _Watch(monkeypatch)
    download_id, in_runs = _build(satchel)
    end = 10 * MIB + 123
    # b.bin's pass: a range a run (nothing of it written), from where the last one stopped.
    assert watch.spans == [(0, end), (RANGE, end), (2 * RANGE, end), (3 * RANGE, end)]
    assert watch.passes[:3] == [None, None, None]
    assert watch.passes[3] == zipfile.ZipFile(io.BytesIO(at_once)).getinfo(COPIED).CRC
    # a.txt; b.bin's ranges 1, 2, 3; its range 4, header and copy, and c.txt (a run going on
    # with a member takes the next entry whatever its budget).
    assert executions.runs_of(satchel, download_id, "Build") == 5
    assert executions.failures_of(satchel, download_id) == []
    assert COPIED in watch.digest_checked
    assert in_runs == at_once
    archive_readers.every_zip_reader_accepts(
        in_runs, tmp_path, {key.removeprefix("acme/"): body for key, body in bodies.items()}
    )


def test_a_run_retried_after_a_fault_in_the_first_pass_gives_the_same_bytes(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, one_run: tuple[dict[str, bytes], bytes]
) -> None:
    bodies, at_once = one_run
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    watch = _Watch(monkeypatch)
    ranges = sources.range_crc32s  # the watching one
    failed: list[tuple[int, int]] = []

    def failing_once(*args: Any) -> Generator[tuple[int, int], None, None]:
        # The pass's third run: its GET fails as S3 fails (a 500 past botocore's retries)
        # once, after two runs of the pass saved their CRC so far.
        if args[4][0] == 2 * RANGE and not failed:
            failed.append(args[4])
            answer = {"Error": {"Code": "InternalError"}, "ResponseMetadata": {"HTTPStatusCode": 500}}
            raise ClientError(answer, "GetObject")
        yield from ranges(*args)

    monkeypatch.setattr(sources, "range_crc32s", failing_once)
    download_id, in_runs = _build(satchel)
    assert failed == [(2 * RANGE, 10 * MIB + 123)]
    assert executions.failures_of(satchel, download_id) == ["TransientError"]
    # Retry ran the failed run's task again (not entering the state again) from the state
    # the run before it saved: its pass from where the failed attempt's began.
    assert executions.runs_of(satchel, download_id, "Build") == 5
    end = 10 * MIB + 123
    assert watch.spans == [(0, end), (RANGE, end), (2 * RANGE, end), (3 * RANGE, end)]
    assert watch.passes[:3] == [None, None, None]
    assert watch.passes[3] == zipfile.ZipFile(io.BytesIO(at_once)).getinfo(COPIED).CRC
    assert in_runs == at_once
    archive_readers.every_zip_reader_accepts(
        in_runs, tmp_path, {key.removeprefix("acme/"): body for key, body in bodies.items()}
    )


def test_a_segments_copied_member_spans_runs_in_its_first_pass_too(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, one_run: tuple[dict[str, bytes], bytes]
) -> None:
    bodies, at_once = one_run
    monkeypatch.setenv("SATCHEL_PARALLEL_MIN_FILES", "1")
    monkeypatch.setenv("SATCHEL_SEGMENT_FILES", "2")
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    watch = _Watch(monkeypatch)
    seen: list[tuple[int, int, bool]] = []
    original = segments.build_segment

    def counted(runtime: Runtime, event: SegmentInput, budget: Budget | None = None) -> SegmentBuilt:
        built = original(runtime, event, budget)
        seen.append((event["index"], event.get("run", 0), built["done"]))
        return built

    monkeypatch.setattr(segments, "build_segment", counted)
    _, in_runs = _build(satchel)
    # Segment 0: a.txt; b.bin's ranges 1, 2, 3; its range 4, header and copy. Segment 1: c.txt.
    assert sorted(seen) == [
        (0, 0, False),
        (0, 1, False),
        (0, 2, False),
        (0, 3, False),
        (0, 4, True),
        (1, 0, True),
    ]
    assert watch.passes[:3] == [None, None, None]
    assert COPIED in watch.digest_checked
    assert in_runs == at_once
    archive_readers.every_zip_reader_accepts(
        in_runs, tmp_path, {key.removeprefix("acme/"): body for key, body in bodies.items()}
    )


def test_a_source_gone_between_two_runs_of_a_copied_members_first_pass_is_left_out(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Nothing of b.bin is written while its first pass goes on: gone then, with `on_missing:
    skip` it is left out by the run that goes on with it, and listed in MISSING.txt."""
    monkeypatch.setenv("SATCHEL_SERVER_COPY_MIN_BYTES", str(10 * MIB))
    monkeypatch.setattr(archive, "FIRST_PASS_RANGE_BYTES", RANGE)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    bodies = _put_without_crc(satchel)
    gone = f"{PREFIX}b.bin"
    checksum_ranges = ZipLayout.checksum_ranges
    stops: list[str] = []

    def stopped_then_deleted(
        layout: ZipLayout, member: Streaming, crcs: Iterable[tuple[int, int]]
    ) -> int | None:
        crc = checksum_ranges(layout, member, crcs)
        if crc is None and not stops:  # its first pass stopped between two ranges
            stops.append(member.name)
            satchel.s3.delete_object(Bucket=satchel.stack.source_bucket, Key=gone)
        return crc

    monkeypatch.setattr(ZipLayout, "checksum_ranges", stopped_then_deleted)
    created = satchel.create({"prefixes": [PREFIX], "compression": "store", "on_missing": "skip"})
    assert created.status == 202, created.body
    done = satchel.wait(created.json["id"], timeout=180)
    assert done["state"] == "DONE", done
    assert stops == [COPIED]
    assert done["skipped"] == [gone]
    body = requests.get(satchel.call("GET", done["url"]).headers["Location"], timeout=60).content
    with zipfile.ZipFile(io.BytesIO(body)) as opened:
        missing = opened.read("MISSING.txt")
    assert gone.encode() in missing
    expected = {key.removeprefix("acme/"): data for key, data in bodies.items() if key != gone}
    archive_readers.every_zip_reader_accepts(body, tmp_path, {**expected, "MISSING.txt": missing})
