"""Server-side assembly obeys S3's part rules, and concurrent fetching keeps manifest order."""

from __future__ import annotations

import os
import time
import zlib
from typing import TYPE_CHECKING, Any

import pytest

from chalicelib.archive import assembly
from chalicelib.archive.zipwriter import CopyRange
from chalicelib.s3 import sources
from chalicelib.s3.manifest import Entry
from chalicelib.s3.multipart import MultipartWriter
from tests.support.recording import Recording

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_s3.client import S3Client

MIB = 1024 * 1024


def put(s3: S3Client, key: str, body: bytes) -> CopyRange:
    etag = s3.put_object(Bucket="bucket", Key=key, Body=body)["ETag"]
    return CopyRange("bucket", key, etag, 0, len(body))


def test_the_head_of_a_range_tops_the_written_part_up_to_5_mib_and_the_rest_is_copied(s3: S3Client) -> None:
    source = os.urandom(12 * MIB)
    rng = put(s3, "src", source)
    recording = Recording(s3)
    writer = MultipartWriter(recording.typed, "bucket", "out", 8 * MIB, "application/zip")
    assembler = assembly.Assembler(recording.typed, writer, MIB)
    assembler.write_all([b"header", rng, b"trailer"])
    assert writer.complete() is None  # S3 copied bytes the writer never saw
    head = 5 * MIB - len(b"header")
    assert recording.parts == [("write", 5 * MIB, 0), ("copy", head, len(source) - 1), ("write", 7, 0)]
    assert assembler.bytes_read == head
    assert s3.get_object(Bucket="bucket", Key="out")["Body"].read() == b"header" + source + b"trailer"


def test_a_range_too_short_to_copy_is_read_through(s3: S3Client) -> None:
    rng = put(s3, "src", os.urandom(9 * MIB))
    recording = Recording(s3)
    writer = MultipartWriter(recording.typed, "bucket", "out", 5 * MIB, "application/zip")
    assembly.Assembler(recording.typed, writer, MIB).write_all([b"x", rng])
    assert writer.complete() is not None  # every byte seen: the digest is known
    assert [kind for kind, *_ in recording.parts] == ["write", "write"]


def test_ranges_larger_than_a_copy_part_are_split_evenly(
    s3: S3Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(assembly, "S3_MAX_PART_SIZE", 12 * MIB)
    source = os.urandom(25 * MIB)
    recording = Recording(s3)
    writer = MultipartWriter(recording.typed, "bucket", "out", 5 * MIB, "application/zip")
    assembly.Assembler(recording.typed, writer, MIB).write_all([put(s3, "src", source)])
    writer.complete()
    copies = [last - first + 1 for kind, first, last in recording.parts if kind == "copy"]
    assert len(copies) == 3
    assert sum(copies) == len(source)
    assert min(copies) >= 5 * MIB
    assert s3.get_object(Bucket="bucket", Key="out")["Body"].read() == source


def test_fetching_keeps_manifest_order_and_runs_ahead_concurrently(
    s3: S3Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = []
    for index in range(30):
        body = os.urandom(1000 + index) if index != 7 else os.urandom(3 * MIB)
        etag = s3.put_object(Bucket="bucket", Key=f"k{index}", Body=body)["ETag"]
        entries.append(Entry(key=f"k{index}", size=len(body), etag=etag, name=f"k{index}"))
    in_flight = peak = 0
    original = s3.get_object

    def slow_get(**kwargs: Any) -> Any:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        time.sleep(0.01)
        in_flight -= 1
        return original(**kwargs)

    monkeypatch.setattr(s3, "get_object", slow_get)
    window = sources.Window(workers=4, window_bytes=MIB, chunk_bytes=MIB)
    got = [
        (source.entry.key, sum(map(len, source.chunks)))
        for source in sources.fetch(s3, "bucket", entries, window)
    ]
    assert got == [(entry.key, entry.size) for entry in entries]
    assert peak > 1


def test_crc32_comes_from_s3_when_it_has_one_and_from_the_bytes_otherwise(
    s3: S3Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = os.urandom(100_000)
    etag = s3.put_object(Bucket="bucket", Key="single", Body=body, ChecksumAlgorithm="CRC32")["ETag"]
    calls: list[str] = []
    original = s3.get_object

    def recording_get(**kwargs: Any) -> Any:
        calls.append(kwargs["Key"])
        return original(**kwargs)

    monkeypatch.setattr(s3, "get_object", recording_get)

    single = sources.lookup_crc32(s3, "bucket", Entry("single", len(body), etag, "single"))
    assert single is not None
    assert single.crc == zlib.crc32(body)
    assert calls == []  # from the checksum: not read
    upload = s3.create_multipart_upload(Bucket="bucket", Key="multi")["UploadId"]
    part = s3.upload_part(Bucket="bucket", Key="multi", UploadId=upload, PartNumber=1, Body=body)
    etag = s3.complete_multipart_upload(
        Bucket="bucket",
        Key="multi",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )["ETag"]
    multi = Entry("multi", len(body), etag, "multi")
    assert sources.lookup_crc32(s3, "bucket", multi) is None  # S3 cannot tell: the bytes must
    spans = sources.range_crc32s(s3, "bucket", "multi", etag, (0, len(body)), (MIB, 1), MIB)
    assert sources.combine_crc32(spans) == zlib.crc32(body)
    assert calls == ["multi"]
    assert sources.full_object_crc32({"ChecksumCRC32": "AAAAAQ==-3", "ChecksumType": "COMPOSITE"}) is None
