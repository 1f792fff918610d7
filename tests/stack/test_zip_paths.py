"""The three ways a zip is built agree: streamed through the worker, assembled server-side
(UploadPartCopy, CRC-32 from S3's checksum), and in parallel segments joined by Assemble."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
import zlib
from typing import Any

import pytest
import requests

from chalicelib.core.errors import SourceChanged
from tests.support.stack import Satchel

MIB = 1024 * 1024
# Small enough for a quick test, large enough to be copied (two 5 MiB parts at least).
COPY_MIN = 10 * MIB


def _text(size: int, seed: int) -> bytes:
    line = f"{seed:04d},alpha,beta,{seed * 7},gamma\n".encode()
    return (line * (size // len(line) + 1))[:size]


SMALL = {f"acme/mix/small/{index:03d}.csv": _text(2_000 + index * 37, index) for index in range(40)}
LARGE_WITH_CRC = {"acme/mix/large/a.bin": os.urandom(11 * MIB), "acme/mix/large/c.csv": _text(12 * MIB, 3)}
LARGE_WITHOUT_CRC = {"acme/mix/large/b.bin": os.urandom(13 * MIB)}  # multipart: no full-object CRC32
PRECOMPRESSED = {"acme/mix/photo.jpg": os.urandom(300_000)}


def _put_multipart(satchel: Satchel, key: str, body: bytes) -> None:
    s3, bucket = satchel.s3, satchel.stack.source_bucket
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    for number, start in enumerate(range(0, len(body), 6 * MIB), 1):
        part = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=body[start : start + 6 * MIB]
        )
        parts.append({"PartNumber": number, "ETag": part["ETag"]})
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})


@pytest.fixture
def sources(satchel: Satchel) -> dict[str, bytes]:
    for key, body in {**SMALL, **LARGE_WITH_CRC, **PRECOMPRESSED}.items():
        satchel.put_source(key, body)
    for key, body in LARGE_WITHOUT_CRC.items():
        _put_multipart(satchel, key, body)
    head = satchel.s3.head_object(
        Bucket=satchel.stack.source_bucket, Key="acme/mix/large/b.bin", ChecksumMode="ENABLED"
    )
    assert "ChecksumCRC32" not in head  # so its CRC-32 must be computed by reading it
    return {**SMALL, **LARGE_WITH_CRC, **LARGE_WITHOUT_CRC, **PRECOMPRESSED}


def build(satchel: Satchel, params: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    created = satchel.create({"prefixes": ["acme/mix/"], **params})
    assert created.status == 202, created.body
    done = satchel.wait(created.json["id"], timeout=120)
    assert done["state"] == "DONE", done
    archive = requests.get(satchel.call("GET", done["url"]).headers["Location"], timeout=60).content
    assert len(archive) == done["artifact"]["size"]
    assert hashlib.sha256(archive).hexdigest() == done["artifact"]["sha256"]
    assert done["progress"]["files_done"] == done["progress"]["files_total"]
    assert done["progress"]["bytes_done"] == done["progress"]["bytes_total"]
    assert satchel.open_uploads() == []
    assert f"artifacts/{done['id']}" in satchel.artifact_objects()
    assert [key for key in satchel.artifact_objects() if key.startswith("tmp/")] == []  # no segment left
    return done, archive


def members(archive: bytes) -> dict[str, tuple[int, bytes]]:
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        assert opened.testzip() is None
        return {info.filename: (info.compress_type, opened.read(info)) for info in opened.infolist()}


def executed_states(satchel: Satchel, download_id: str) -> set[str]:
    import boto3

    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    arn = satchel.stack.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{download_id}"
    events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    return {e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e}


def test_streamed_server_side_and_parallel_archives_hold_the_same_members(
    satchel: Satchel, sources: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = {key.removeprefix("acme/"): body for key, body in sources.items()}
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))

    # Streamed: nothing is large enough to copy.
    monkeypatch.setenv("SATCHEL_SERVER_COPY_MIN_BYTES", str(1024 * MIB))
    streamed_store, streamed_bytes = build(satchel, {"compression": "store"})
    # Server-side: the large members are copied by S3, and the artifact hashed by Digest.
    monkeypatch.setenv("SATCHEL_SERVER_COPY_MIN_BYTES", str(COPY_MIN))
    server_side, server_side_bytes = build(satchel, {"compression": "store"})
    # Parallel: segments of at most 10 files, built by the Map and joined by Assemble.
    monkeypatch.setenv("SATCHEL_PARALLEL_MIN_FILES", "10")
    monkeypatch.setenv("SATCHEL_SEGMENT_FILES", "10")
    parallel_store, parallel_store_bytes = build(satchel, {"compression": "store"})
    parallel_deflate, parallel_deflate_bytes = build(satchel, {"compression_level": 1})
    monkeypatch.setenv("SATCHEL_PARALLEL_MIN_FILES", "100000")
    _, streamed_deflate_bytes = build(satchel, {})

    assert "Digest" not in executed_states(satchel, streamed_store["id"])
    assert {"Build", "Digest"} <= executed_states(satchel, server_side["id"])
    # BuildSegment runs in the Distributed Map's child executions, not in this history.
    assert {"BuildSegments", "Assemble"} <= executed_states(satchel, parallel_store["id"])
    assert "Build" not in executed_states(satchel, parallel_store["id"])

    stored = {name: body for name, (_, body) in members(streamed_bytes).items()}
    assert stored == expected
    for archive in (server_side_bytes, parallel_store_bytes):
        assert members(archive) == members(streamed_bytes)
    # The same bytes whoever copies: no stored member has a data descriptor, times are the sources'.
    assert server_side_bytes == parallel_store_bytes == streamed_bytes

    deflated = members(streamed_deflate_bytes)
    assert {name: body for name, (_, body) in deflated.items()} == expected
    assert {name: body for name, (_, body) in members(parallel_deflate_bytes).items()} == expected
    assert deflated["mix/photo.jpg"][0] == zipfile.ZIP_STORED  # compressed already: stored
    assert deflated["mix/large/c.csv"][0] == zipfile.ZIP_DEFLATED
    assert parallel_deflate["params"]["compression_level"] == 1


def test_a_failing_segment_fails_the_download_and_leaves_nothing(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, body in SMALL.items():
        satchel.put_source(key, body)
    monkeypatch.setenv("SATCHEL_PARALLEL_MIN_FILES", "10")
    monkeypatch.setenv("SATCHEL_SEGMENT_FILES", "10")

    def changed(*args: Any, **kwargs: Any) -> None:
        raise SourceChanged("source object changed while building: acme/mix/small/001.csv")

    monkeypatch.setattr("chalicelib.workflow.segments.Assembler.write_all", changed)
    created = satchel.create({"prefixes": ["acme/mix/"]})
    failed = satchel.wait(created.json["id"], timeout=60)
    assert failed["state"] == "FAILED"
    assert failed["error"]["code"] == "SourceChanged"
    assert satchel.open_uploads() == []
    assert satchel.artifact_objects() == []


def test_stored_members_have_their_crc_in_the_local_header(
    satchel: Satchel, sources: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No stored member has a data descriptor, whatever its size: streaming unzippers read them."""
    monkeypatch.setenv("SATCHEL_SERVER_COPY_MIN_BYTES", str(COPY_MIN))
    _, archive = build(satchel, {"compression": "store"})
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        for info in opened.infolist():
            assert not info.flag_bits & 0x08, info.filename
            assert zlib.crc32(sources[f"acme/{info.filename}"]) == info.CRC
