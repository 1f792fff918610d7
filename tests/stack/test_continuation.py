"""No step needs to finish in one Lambda run: with a budget so small that every run hands on
after one member (or one copied part), Build and BuildSegment loop through the state
machine and still write the very bytes of a build in one run.

The budget is the real mechanism: the local dispatcher's Lambda context counts down from the
function's timeout (satchel_local/lambdas.py) and SATCHEL_HANDOFF_RESERVE_MS, set above that
timeout, makes every run find itself short of time after its first member.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config

from chalicelib.archive import assembly
from chalicelib.core import clients
from chalicelib.downloadtypes import archive
from chalicelib.runtime import Runtime
from chalicelib.workflow import segments
from chalicelib.workflow.payloads import SegmentBuilt, SegmentInput
from chalicelib.workflow.runs import Budget
from satchel_local.stack import REGION
from tests.support import archive_readers, executions
from tests.support.faults import Fault, Injector
from tests.support.stack import Satchel

MIB = 1024 * 1024
# Above the functions' 900 s timeout: every run is short of time once it has a member.
ALWAYS_SHORT = str(10_000 * 1000)


def _build(satchel: Satchel, params: dict[str, Any], timeout: float = 180) -> tuple[str, bytes]:
    created = satchel.create(params)
    assert created.status == 202, created.body
    done = satchel.wait(created.json["id"], timeout=timeout)
    assert done["state"] == "DONE", done
    body = requests.get(satchel.call("GET", done["url"]).headers["Location"], timeout=60).content
    assert hashlib.sha256(body).hexdigest() == done["artifact"]["sha256"]  # Digest hashed the runs' bytes
    return created.json["id"], body


def _readers_accept(body: bytes, tmp_path: Path, expected: dict[str, bytes]) -> None:
    with zipfile.ZipFile(io.BytesIO(body)) as opened:
        assert opened.testzip() is None
        assert {info.filename: opened.read(info) for info in opened.infolist()} == expected
    unzip = shutil.which("unzip")
    assert unzip, "unzip is needed to check the archive"
    path = tmp_path / "built.zip"
    path.write_bytes(body)
    tested = subprocess.run([unzip, "-t", str(path)], capture_output=True, text=True, check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def _texts(satchel: Satchel, prefix: str, count: int) -> dict[str, bytes]:
    bodies = {f"{prefix}{index}.txt": (f"member {index} " * 3000).encode() for index in range(count)}
    for key, body in bodies.items():
        satchel.put_source(key, body)
    return bodies


def test_a_deflated_build_hands_on_after_each_member_and_writes_the_same_bytes(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bodies = _texts(satchel, "acme/runs/", 6)
    params = {"prefixes": ["acme/runs/"]}
    _, at_once = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    download_id, in_runs = _build(satchel, params)
    assert executions.runs_of(satchel, download_id, "Build") == 6  # one member per run
    assert executions.runs_of(satchel, download_id, "Digest") == 1
    assert in_runs == at_once
    _readers_accept(in_runs, tmp_path, {key.removeprefix("acme/"): body for key, body in bodies.items()})
    assert satchel.artifact_objects() == sorted(f"artifacts/{d}" for d in _done(satchel))


def _done(satchel: Satchel) -> list[str]:
    listed = satchel.call("GET", "/downloads").json["items"]
    return [item["id"] for item in listed if item["state"] == "DONE"]


def test_a_stored_member_larger_than_a_run_is_copied_across_runs_part_by_part(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Copied parts of at most 6 MiB: the 22 MiB member's copy is three parts, one per run.
    monkeypatch.setattr(assembly, "S3_MAX_PART_SIZE", 6 * MIB)
    monkeypatch.setenv("SATCHEL_SERVER_COPY_MIN_BYTES", str(10 * MIB))
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))
    large = os.urandom(22 * MIB)
    satchel.s3.put_object(
        Bucket=satchel.stack.source_bucket, Key="acme/big/b.bin", Body=large, ChecksumAlgorithm="CRC32"
    )
    bodies = {"acme/big/a.txt": b"first\n" * 100, "acme/big/b.bin": large, "acme/big/c.txt": b"last\n" * 100}
    for key in ("acme/big/a.txt", "acme/big/c.txt"):
        satchel.put_source(key, bodies[key])
    params = {"prefixes": ["acme/big/"], "compression": "store"}
    _, at_once = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    download_id, in_runs = _build(satchel, params)
    # a.txt, then b.bin's header and first copied part; its second part; its third and c.txt.
    assert executions.runs_of(satchel, download_id, "Build") == 4
    assert in_runs == at_once
    _readers_accept(in_runs, tmp_path, {key.removeprefix("acme/"): body for key, body in bodies.items()})


def _segment_runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, bool]]:
    """BuildSegment's runs as they happen (segment, run, done): a child execution's history
    is its own, as on AWS, so they are counted here rather than read from the parent's."""
    seen: list[tuple[int, int, bool]] = []
    original = segments.build_segment

    def counted(runtime: Runtime, event: SegmentInput, budget: Budget | None = None) -> SegmentBuilt:
        built = original(runtime, event, budget)
        seen.append((event["index"], event.get("run", 0), built["done"]))
        return built

    monkeypatch.setattr(segments, "build_segment", counted)
    return seen


def test_segments_hand_on_too_and_join_into_the_same_bytes(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bodies = _texts(satchel, "acme/segruns/", 6)
    params = {"prefixes": ["acme/segruns/"]}
    _, at_once = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_PARALLEL_MIN_FILES", "1")
    monkeypatch.setenv("SATCHEL_SEGMENT_FILES", "2")
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    seen = _segment_runs(monkeypatch)
    download_id, in_runs = _build(satchel, params)
    # 3 segments of 2 members: each hands on after its first member, then finishes.
    assert sorted(seen) == [(index, run, run == 1) for index in range(3) for run in range(2)]
    # Assemble hands on too: a segment a run, then the central directory.
    assert executions.runs_of(satchel, download_id, "Assemble") == 4
    assert in_runs == at_once
    _readers_accept(in_runs, tmp_path, {key.removeprefix("acme/"): body for key, body in bodies.items()})


def test_a_retried_run_goes_on_from_the_same_state_and_duplicates_nothing(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # 3 MiB members in 5 MiB parts: the second run uploads part 1, and so does its retry.
    bodies = {f"acme/retried/{index}.bin": os.urandom(3 * MIB) for index in range(4)}
    for key, body in bodies.items():
        satchel.put_source(key, body)
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))
    params = {"prefixes": ["acme/retried/"]}
    _, at_once = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    clients.reset()
    injector = Injector(satchel.stack.table)
    injector.install()
    # Each member (3 chunks of deflate) stops after its first chunk, and the next run ends
    # it and begins the next: 5 runs. A run saves its records, checks, held bytes and state
    # (4 puts): the 10th put is the third run's checks, after its part 1 (1 + 4 + 1 MiB
    # written by then). It fails on every attempt: the run fails, and Retry runs it again
    # from the same saved state (the same part 1, written again).
    with injector.armed(Fault("s3.PutObject", "internal", at=10, step="app.build")) as arming:
        download_id, in_runs = _build(satchel, params)
    assert injector.fired(arming) > 0
    assert executions.failures_of(satchel, download_id) == ["TransientError"]
    assert executions.runs_of(satchel, download_id, "Build") == 5  # 5 runs; Retry ran the third again
    assert in_runs == at_once
    _readers_accept(in_runs, tmp_path, {key.removeprefix("acme/"): body for key, body in bodies.items()})


def _large_text(seed: int, size: int) -> bytes:
    """Compressible but not trivially (deflate keeps about a third): words drawn at random."""
    words = [f"w{seed}x{index}".encode() for index in range(4096)]
    picked = random.Random(seed).choices(words, k=size // 4)
    return b" ".join(picked)[:size]


def test_a_deflated_member_larger_than_a_run_is_split_between_its_chunks(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # 4.5 MiB: chunks of 1 MiB; every run stops after one chunk but the last (with the fifth).
    bodies = {
        "acme/bigdeflate/a.txt": b"first\n" * 100,
        "acme/bigdeflate/b.txt": _large_text(1, 4 * MIB + MIB // 2),
        "acme/bigdeflate/c.txt": b"last\n" * 100,
    }
    for key, body in bodies.items():
        satchel.put_source(key, body)
    params = {"prefixes": ["acme/bigdeflate/"]}
    _, at_once = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    download_id, in_runs = _build(satchel, params)
    # a.txt; b.txt's header and chunk 1; its chunks 2, 3, 4 (one a run); its last two and c.txt.
    assert executions.runs_of(satchel, download_id, "Build") == 5
    assert in_runs == at_once
    with zipfile.ZipFile(io.BytesIO(in_runs)) as opened:
        split = opened.getinfo("bigdeflate/b.txt")
        assert split.compress_type == zipfile.ZIP_DEFLATED
        assert split.compress_size < split.file_size // 2
    archive_readers.every_zip_reader_accepts(
        in_runs, tmp_path, {key.removeprefix("acme/"): body for key, body in bodies.items()}
    )


def test_a_segments_deflated_member_is_split_between_runs_too(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bodies = {
        "acme/segdeflate/a.txt": _large_text(2, 3 * MIB + 100),
        "acme/segdeflate/b.txt": b"middle\n" * 100,
        "acme/segdeflate/c.txt": _large_text(3, 2 * MIB + 100),
        "acme/segdeflate/d.txt": b"last\n" * 100,
    }
    for key, body in bodies.items():
        satchel.put_source(key, body)
    params = {"prefixes": ["acme/segdeflate/"]}
    _, at_once = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_PARALLEL_MIN_FILES", "1")
    monkeypatch.setenv("SATCHEL_SEGMENT_FILES", "2")
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    seen = _segment_runs(monkeypatch)
    _, in_runs = _build(satchel, params)
    # Segment 0: a.txt's chunk 1, chunk 2, then its last two and b.txt. Segment 1: c.txt's
    # chunk 1, then its last two and d.txt.
    assert sorted(seen) == [(0, 0, False), (0, 1, False), (0, 2, True), (1, 0, False), (1, 1, True)]
    assert in_runs == at_once
    archive_readers.every_zip_reader_accepts(
        in_runs, tmp_path, {key.removeprefix("acme/"): body for key, body in bodies.items()}
    )


def test_a_plan_past_10000_parts_of_the_configured_size_gets_larger_parts_across_runs(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # S3's 10,000 parts, scaled down to 4 so a small archive passes it: ~24 MiB of deflate
    # output in 5 MiB parts would take 5 parts; the plan picks 9 MiB parts (3, and 1 kept
    # for the last), and every run (one member each) goes on in that size.
    monkeypatch.setattr(segments, "S3_MAX_PARTS", 4)
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    bodies = {f"acme/bigparts/{index}.bin": os.urandom(8 * MIB) for index in range(3)}
    for key, body in bodies.items():
        satchel.put_source(key, body)
    download_id, body = _build(satchel, {"prefixes": ["acme/bigparts/"]}, timeout=300)
    head = satchel.s3.head_object(Bucket=satchel.stack.artifact_bucket, Key=f"artifacts/{download_id}")
    assert head["ETag"].strip('"').endswith("-3")  # three parts of 9 MiB, the last shorter
    assert len(body) > 2 * 9 * MIB
    first = satchel.s3.head_object(
        Bucket=satchel.stack.artifact_bucket, Key=f"artifacts/{download_id}", PartNumber=1
    )
    assert first["ContentLength"] == 9 * MIB
    _readers_accept(body, tmp_path, {key.removeprefix("acme/"): data for key, data in bodies.items()})


def _put_with_crc(satchel: Satchel, bodies: dict[str, bytes]) -> None:
    """Sources with S3's CRC-32 (as `aws s3 cp` and the SDKs upload): a stored member's CRC
    is then known before its bytes, and its bytes pass through the worker only once."""
    for key, body in bodies.items():
        satchel.s3.put_object(
            Bucket=satchel.stack.source_bucket, Key=key, Body=body, ChecksumAlgorithm="CRC32"
        )


def _stored_members(body: bytes, names: list[str]) -> None:
    with zipfile.ZipFile(io.BytesIO(body)) as opened:
        for name in names:
            stored = opened.getinfo(name)
            assert stored.compress_type == zipfile.ZIP_STORED
            assert not stored.flag_bits & 0x08  # no data descriptor: ZipInputStream reads it


def test_a_stored_member_larger_than_a_run_is_split_between_its_read_chunks(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # In a deflate zip a file compressed already is stored as read: 3.5 MiB of random bytes
    # named .jpg is 4 chunks of 1 MiB read through the worker, and every run but the last
    # of them stops after one.
    bodies = {
        "acme/bigstored/a.txt": b"first\n" * 100,
        "acme/bigstored/b.jpg": os.urandom(3 * MIB + MIB // 2),
        "acme/bigstored/c.txt": b"last\n" * 100,
    }
    _put_with_crc(satchel, bodies)
    params = {"prefixes": ["acme/bigstored/"]}
    _, at_once = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    download_id, in_runs = _build(satchel, params)
    # a.txt; b.jpg's header and chunk 1; its chunks 2 and 3 (one a run); its last and c.txt.
    assert executions.runs_of(satchel, download_id, "Build") == 5
    assert in_runs == at_once
    _stored_members(in_runs, ["bigstored/b.jpg"])
    archive_readers.every_zip_reader_accepts(
        in_runs, tmp_path, {key.removeprefix("acme/"): body for key, body in bodies.items()}
    )


def test_a_segments_stored_member_is_split_between_runs_too(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bodies = {
        "acme/segstored/a.jpg": os.urandom(3 * MIB + 100),
        "acme/segstored/b.txt": b"middle\n" * 100,
        "acme/segstored/c.zip": os.urandom(2 * MIB + 100),
        "acme/segstored/d.txt": b"last\n" * 100,
    }
    _put_with_crc(satchel, bodies)
    params = {"prefixes": ["acme/segstored/"]}
    _, at_once = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_PARALLEL_MIN_FILES", "1")
    monkeypatch.setenv("SATCHEL_SEGMENT_FILES", "2")
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    seen = _segment_runs(monkeypatch)
    _, in_runs = _build(satchel, params)
    # Segment 0: a.jpg's chunks 1, 2, 3 (one a run), then its last (100 bytes) and b.txt.
    # Segment 1: c.zip's chunks 1, 2, then its last and d.txt.
    assert sorted(seen) == [
        (0, 0, False), (0, 1, False), (0, 2, False), (0, 3, True),
        (1, 0, False), (1, 1, False), (1, 2, True),
    ]  # fmt: skip
    assert in_runs == at_once
    _stored_members(in_runs, ["segstored/a.jpg", "segstored/c.zip"])
    archive_readers.every_zip_reader_accepts(
        in_runs, tmp_path, {key.removeprefix("acme/"): body for key, body in bodies.items()}
    )


def test_a_retried_run_inside_a_stored_member_goes_on_from_the_same_state(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Two 4 MiB members stored as read (4 chunks of 1 MiB each), in 5 MiB parts.
    bodies = {f"acme/storedretry/{index}.mp4": os.urandom(4 * MIB) for index in range(2)}
    _put_with_crc(satchel, bodies)
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))
    params = {"prefixes": ["acme/storedretry/"]}
    _, at_once = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    clients.reset()
    injector = Injector(satchel.stack.table)
    injector.install()
    # Runs: 0.mp4's chunks 1, 2, 3 (one a run); its chunk 4 and 1.mp4's header and chunk 1;
    # 1.mp4's chunks 2, 3, 4. A run that hands on saves 4 objects (records, checks, held
    # bytes, state): the 14th put is the fourth run's checks, after its part 1 (5 MiB and two
    # headers written by then). It fails on every attempt: the run fails, and Retry runs it
    # again from the state the third run saved (the same part 1, written again).
    with injector.armed(Fault("s3.PutObject", "internal", at=14, step="app.build")) as arming:
        download_id, in_runs = _build(satchel, params)
    assert injector.fired(arming) > 0
    # Part 1 twice (the failed attempt's, its retry's), then the last part.
    assert injector.calls[("app.build", "s3.UploadPart")] == 3
    assert executions.failures_of(satchel, download_id) == ["TransientError"]
    assert executions.runs_of(satchel, download_id, "Build") == 7  # Retry ran the fourth again
    _the_bytes_of_one_run(in_runs, at_once, bodies, tmp_path)


def test_a_stored_members_first_pass_for_its_crc_is_split_between_runs_too(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A source with no checksum S3 can give (uploaded without one) is read once for the
    # CRC-32 its header needs, then again for its bytes. Above HOLD_MAX_BYTES (1 MiB here,
    # 16 MiB in use) that first pass streams, and a run short of time stops it between two
    # chunks as it stops the bytes.
    monkeypatch.setattr(archive, "HOLD_MAX_BYTES", MIB)
    plain = boto3.client(
        "s3", region_name=REGION, config=Config(request_checksum_calculation="when_required")
    )
    bodies = {
        "acme/firstpass/a.txt": b"first\n" * 100,
        "acme/firstpass/b.png": os.urandom(3 * MIB + MIB // 2),
        "acme/firstpass/c.txt": b"last\n" * 100,
    }
    for key, body in bodies.items():
        plain.put_object(Bucket=satchel.stack.source_bucket, Key=key, Body=body)
    head = satchel.s3.head_object(
        Bucket=satchel.stack.source_bucket, Key="acme/firstpass/b.png", ChecksumMode="ENABLED"
    )
    assert "ChecksumCRC32" not in head  # only its bytes can tell
    params = {"prefixes": ["acme/firstpass/"]}
    _, at_once = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    download_id, in_runs = _build(satchel, params)
    # a.txt; b.png's first pass, a chunk a run (nothing of it written yet); with the pass's
    # last chunk, its header and its bytes' chunk 1; chunks 2 and 3; its last and c.txt.
    assert executions.runs_of(satchel, download_id, "Build") == 8
    assert in_runs == at_once
    _stored_members(in_runs, ["firstpass/b.png"])
    archive_readers.every_zip_reader_accepts(
        in_runs, tmp_path, {key.removeprefix("acme/"): body for key, body in bodies.items()}
    )


def _plain_s3() -> Any:
    """A client that sends no checksum: S3 then has no CRC-32 to give for what it puts."""
    return boto3.client("s3", region_name=REGION, config=Config(request_checksum_calculation="when_required"))


def _the_bytes_of_one_run(in_runs: bytes, at_once: bytes, bodies: dict[str, bytes], tmp_path: Path) -> None:
    """Byte for byte the archive one run builds, every member STORED with no data
    descriptor, and every zip reader accepts it with each member's bytes."""
    assert in_runs == at_once
    members = {key.removeprefix("acme/"): body for key, body in bodies.items()}
    _stored_members(in_runs, list(members))
    archive_readers.every_zip_reader_accepts(in_runs, tmp_path, members)


def _exact_progress(satchel: Satchel, download_id: str) -> None:
    """The runs counted every byte once, whatever they stopped inside (and re-read)."""
    progress = satchel.call("GET", f"/downloads/{download_id}").json["progress"]
    assert progress["files_done"] == progress["files_total"]
    assert progress["bytes_done"] == progress["bytes_total"]


def test_a_store_zips_members_are_split_between_their_read_chunks(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Below the copy threshold (16 MiB), a store zip's members pass through the worker in
    # chunks of 1 MiB, their CRC-32 from S3 in their headers (no data descriptor).
    bodies = {
        "acme/storezip/a.txt": b"first\n" * 100,
        "acme/storezip/b.bin": os.urandom(2 * MIB + 100),
        "acme/storezip/c.txt": _large_text(4, 3 * MIB),
        "acme/storezip/d.txt": b"last\n" * 100,
    }
    _put_with_crc(satchel, bodies)
    params = {"prefixes": ["acme/storezip/"], "compression": "store"}
    _, at_once = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    download_id, in_runs = _build(satchel, params)
    # A run stops before a next entry once it has one, and inside a member after each chunk
    # but the last: a.txt; b.bin's header and chunk 1; its chunk 2; its last 100 bytes, then
    # c.txt's header and chunk 1; its chunk 2; its chunk 3 and d.txt. Five stops, six runs.
    assert executions.runs_of(satchel, download_id, "Build") == 6
    _exact_progress(satchel, download_id)
    _the_bytes_of_one_run(in_runs, at_once, bodies, tmp_path)


def test_a_store_zips_held_member_stops_while_held_then_goes_on_as_a_first_pass(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # With no CRC-32 from S3, a member below 16 MiB is held in memory for the CRC its header
    # needs. Nothing of it can be written before that CRC: a run short of time stops the
    # hold between two chunks, drops what it held and goes on as a first pass (its CRC so
    # far carried); then its bytes are read again, and may stop like any others.
    bodies = {
        "acme/storeheld/a.txt": b"first\n" * 100,
        "acme/storeheld/b.bin": os.urandom(2 * MIB + MIB // 2),
        "acme/storeheld/c.txt": b"last\n" * 100,
    }
    plain = _plain_s3()
    for key, body in bodies.items():
        plain.put_object(Bucket=satchel.stack.source_bucket, Key=key, Body=body)
    head = satchel.s3.head_object(
        Bucket=satchel.stack.source_bucket, Key="acme/storeheld/b.bin", ChecksumMode="ENABLED"
    )
    assert "ChecksumCRC32" not in head  # only its bytes can tell
    params = {"prefixes": ["acme/storeheld/"], "compression": "store"}
    _, at_once = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    download_id, in_runs = _build(satchel, params)
    # a.txt; b.bin held, chunk 1 (nothing of it written); the first pass, chunk 2; its last
    # half chunk, then b.bin's header and chunk 1; its chunk 2; its last and c.txt.
    assert executions.runs_of(satchel, download_id, "Build") == 6
    _exact_progress(satchel, download_id)
    _the_bytes_of_one_run(in_runs, at_once, bodies, tmp_path)


def test_a_store_zips_segments_split_their_members_between_runs_too(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bodies = {
        "acme/storeseg/a.bin": os.urandom(3 * MIB + 100),
        "acme/storeseg/b.txt": b"middle\n" * 100,
        "acme/storeseg/c.txt": _large_text(5, 2 * MIB + 100),
        "acme/storeseg/d.txt": b"last\n" * 100,
    }
    _put_with_crc(satchel, {key: body for key, body in bodies.items() if key != "acme/storeseg/c.txt"})
    # c.txt without a checksum: held for its CRC-32, in the second segment.
    _plain_s3().put_object(
        Bucket=satchel.stack.source_bucket, Key="acme/storeseg/c.txt", Body=bodies["acme/storeseg/c.txt"]
    )
    params = {"prefixes": ["acme/storeseg/"], "compression": "store"}
    _, at_once = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_PARALLEL_MIN_FILES", "1")
    monkeypatch.setenv("SATCHEL_SEGMENT_FILES", "2")
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    seen = _segment_runs(monkeypatch)
    download_id, in_runs = _build(satchel, params)
    # Segment 0: a.bin's chunks 1, 2, 3 (one a run), then its last (100 bytes) and b.txt.
    # Segment 1: c.txt held, chunk 1; its first pass, chunk 2; its last 100 bytes, then its
    # header and chunk 1; chunk 2; its last and d.txt.
    assert sorted(seen) == [
        (0, 0, False), (0, 1, False), (0, 2, False), (0, 3, True),
        (1, 0, False), (1, 1, False), (1, 2, False), (1, 3, False), (1, 4, True),
    ]  # fmt: skip
    _exact_progress(satchel, download_id)
    _the_bytes_of_one_run(in_runs, at_once, bodies, tmp_path)


def test_a_retried_run_inside_a_store_zips_member_goes_on_from_the_same_state(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A 7 MiB member (7 chunks of 1 MiB, one a run), then a small one, in 5 MiB parts.
    bodies = {"acme/storeretry/0.bin": os.urandom(7 * MIB), "acme/storeretry/1.txt": b"after\n" * 100}
    _put_with_crc(satchel, bodies)
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))
    params = {"prefixes": ["acme/storeretry/"], "compression": "store"}
    _, at_once = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    clients.reset()
    injector = Injector(satchel.stack.table)
    injector.install()
    # Runs: 0.bin's header and chunk 1; chunks 2 to 6, one a run; chunk 7 and 1.txt. The
    # fifth run (chunk 5) begins and ends inside 0.bin, and passes 5 MiB: it uploads part 1.
    # A run that hands on saves 4 objects (records, checks, held bytes, state): the 18th put
    # is the fifth run's checks, after its part 1. It fails on every attempt: the run fails,
    # and Retry runs it again from the state the fourth run saved (the same part 1 again,
    # the same ranged read of the source from 4 MiB).
    with injector.armed(Fault("s3.PutObject", "internal", at=18, step="app.build")) as arming:
        download_id, in_runs = _build(satchel, params)
    assert injector.fired(arming) > 0
    # Part 1 twice (the failed attempt's, its retry's), then the last part.
    assert injector.calls[("app.build", "s3.UploadPart")] == 3
    assert executions.failures_of(satchel, download_id) == ["TransientError"]
    assert executions.runs_of(satchel, download_id, "Build") == 7  # Retry ran the fifth again
    _exact_progress(satchel, download_id)
    _the_bytes_of_one_run(in_runs, at_once, bodies, tmp_path)


def _resumed_then_copied(satchel: Satchel, monkeypatch: pytest.MonkeyPatch, prefix: str) -> dict[str, bytes]:
    """Sources where a run resumes a member read through the worker (a.bin, stopped after its
    first chunk) and, once it is whole, hands on inside the next one, which S3 copies (b.bin,
    20 MiB in copied parts of at most 6 MiB: three, one a run); then c.bin, read through and
    stopped inside too, and d.txt. Every one with S3's CRC-32, so none is held or read twice."""
    monkeypatch.setattr(assembly, "S3_MAX_PART_SIZE", 6 * MIB)
    monkeypatch.setenv("SATCHEL_SERVER_COPY_MIN_BYTES", str(10 * MIB))
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))
    bodies = {
        f"{prefix}a.bin": os.urandom(MIB + 100),
        f"{prefix}b.bin": os.urandom(20 * MIB),
        f"{prefix}c.bin": os.urandom(2 * MIB + 100),
        f"{prefix}d.txt": b"last\n" * 100,
    }
    _put_with_crc(satchel, bodies)
    return bodies


def _resumed_then_copied_checked(
    satchel: Satchel,
    download_id: str,
    in_runs: bytes,
    at_once: bytes,
    bodies: dict[str, bytes],
    tmp_path: Path,
) -> None:
    _exact_progress(satchel, download_id)
    with zipfile.ZipFile(io.BytesIO(in_runs)) as opened:
        assert [info.filename for info in opened.infolist()] == [key.removeprefix("acme/") for key in bodies]
    _the_bytes_of_one_run(in_runs, at_once, bodies, tmp_path)


def test_a_run_that_resumes_a_member_then_hands_on_inside_a_copied_one_loses_no_entry(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bodies = _resumed_then_copied(satchel, monkeypatch, "acme/resumecopy/")
    params = {"prefixes": ["acme/resumecopy/"], "compression": "store"}
    _, at_once = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    download_id, in_runs = _build(satchel, params)
    # a.bin's header and chunk 1; its last 100 bytes, b.bin's header and first copied part
    # (the run that began inside a.bin hands on inside b.bin); its second part; its third,
    # then c.bin's header and chunk 1; its chunk 2; its last 100 bytes and d.txt.
    assert executions.runs_of(satchel, download_id, "Build") == 6
    _resumed_then_copied_checked(satchel, download_id, in_runs, at_once, bodies, tmp_path)


def test_a_segment_run_that_resumes_a_member_then_hands_on_inside_a_copied_one_loses_no_entry(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bodies = _resumed_then_copied(satchel, monkeypatch, "acme/segresumecopy/")
    params = {"prefixes": ["acme/segresumecopy/"], "compression": "store"}
    _, at_once = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_PARALLEL_MIN_FILES", "1")
    monkeypatch.setenv("SATCHEL_SEGMENT_FILES", "3")
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    seen = _segment_runs(monkeypatch)
    download_id, in_runs = _build(satchel, params)
    # Segment 0: a.bin's header and chunk 1; its last 100 bytes, b.bin's header and first
    # copied part; its second part; its third, then c.bin's header and chunk 1; its chunk 2;
    # its last 100 bytes. Segment 1: d.txt.
    assert sorted(seen) == [(0, run, run == 5) for run in range(6)] + [(1, 0, True)]
    _resumed_then_copied_checked(satchel, download_id, in_runs, at_once, bodies, tmp_path)


def test_a_retried_run_that_resumed_a_member_and_handed_on_inside_a_copy_goes_on_the_same(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bodies = _resumed_then_copied(satchel, monkeypatch, "acme/retriedresumecopy/")
    params = {"prefixes": ["acme/retriedresumecopy/"], "compression": "store"}
    _, at_once = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    clients.reset()
    injector = Injector(satchel.stack.table)
    injector.install()
    # A run that hands on saves 4 objects (records, checks, held bytes, state): the 6th put
    # is the second run's checks, after it finished a.bin, uploaded part 1 (a.bin and the
    # head of b.bin) and copied b.bin's first part. It fails on every attempt: the run fails,
    # and Retry runs it again from the state the first run saved (a.bin resumed again, the
    # same part 1 and copied part 2 again).
    with injector.armed(Fault("s3.PutObject", "internal", at=6, step="app.build")) as arming:
        download_id, in_runs = _build(satchel, params)
    assert injector.fired(arming) > 0
    assert executions.failures_of(satchel, download_id) == ["TransientError"]
    # The six runs of a build without the fault: Retry ran the second again within its state.
    assert executions.runs_of(satchel, download_id, "Build") == 6
    # b.bin's three copied parts, the first of them twice (the failed attempt's, its retry's).
    assert injector.calls[("app.build", "s3.UploadPartCopy")] == 4
    _resumed_then_copied_checked(satchel, download_id, in_runs, at_once, bodies, tmp_path)
