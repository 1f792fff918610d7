"""No path marks a corrupt archive DONE: a wrong CRC-32 from S3 is caught, before a byte is
shipped, by the worker (members it streams) or by Digest (members S3 copied); and the same
request over the same sources gives the same bytes."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from typing import Any

import pytest
import requests

from chalicelib.downloadtypes import archive as archives
from chalicelib.s3 import sources
from tests.support.stack import Satchel

MIB = 1024 * 1024
COPY_MIN = 10 * MIB
SOURCES = {
    "acme/integrity/large.bin": os.urandom(11 * MIB),  # copied by S3
    "acme/integrity/medium.bin": os.urandom(3 * MIB),  # streamed, stored
    "acme/integrity/photo.jpg": os.urandom(2 * MIB),  # stored even in a deflate zip
    "acme/integrity/notes.txt": b"notes\n" * 1000,
}


@pytest.fixture
def seeded(satchel: Satchel, monkeypatch: pytest.MonkeyPatch) -> Satchel:
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))
    monkeypatch.setenv("SATCHEL_SERVER_COPY_MIN_BYTES", str(COPY_MIN))
    for key, body in SOURCES.items():
        satchel.put_source(key, body)
    return satchel


def _wrong_crc_from_s3(monkeypatch: pytest.MonkeyPatch, victim: str) -> None:
    """S3's checksum of `victim` is off by one: what a composite CRC taken for the object's does."""
    original = sources.full_object_crc32

    def lying(head: dict[str, Any], parts_count: int | None = None) -> int | None:
        value = original(head, parts_count)
        if value is not None and head.get("ContentLength") == len(SOURCES[victim]):
            return value ^ 1
        return value

    monkeypatch.setattr(sources, "full_object_crc32", lying)


def _assert_failed_and_nothing_left(satchel: Satchel, download_id: str) -> None:
    failed = satchel.wait(download_id, timeout=120)
    assert failed["state"] == "FAILED", failed
    assert failed["error"]["code"] == "ChecksumMismatch"
    assert failed["artifact"] is None
    assert failed["url"] is None
    assert satchel.open_uploads() == []
    assert satchel.artifact_objects() == []  # no artifact, no temporaries


@pytest.mark.parametrize("parallel", [False, True], ids=["one-build", "segments"])
def test_a_wrong_s3_checksum_of_a_copied_member_is_caught_by_digest(
    seeded: Satchel, monkeypatch: pytest.MonkeyPatch, parallel: bool
) -> None:
    _wrong_crc_from_s3(monkeypatch, "acme/integrity/large.bin")
    if parallel:
        monkeypatch.setenv("SATCHEL_PARALLEL_MIN_FILES", "2")
        monkeypatch.setenv("SATCHEL_SEGMENT_FILES", "2")
    created = seeded.create({"prefixes": ["acme/integrity/"], "compression": "store"})
    assert created.status == 202, created.body
    _assert_failed_and_nothing_left(seeded, created.json["id"])


@pytest.mark.parametrize("compression", ["store", "deflate"])
def test_a_wrong_s3_checksum_of_a_streamed_stored_member_fails_the_build(
    seeded: Satchel, monkeypatch: pytest.MonkeyPatch, compression: str
) -> None:
    victim = "acme/integrity/medium.bin" if compression == "store" else "acme/integrity/photo.jpg"
    _wrong_crc_from_s3(monkeypatch, victim)
    created = seeded.create({"prefixes": ["acme/integrity/"], "compression": compression})
    _assert_failed_and_nothing_left(seeded, created.json["id"])


def _built(satchel: Satchel, params: dict[str, Any]) -> tuple[str, bytes]:
    created = satchel.create(params)
    done = satchel.wait(created.json["id"], timeout=120)
    assert done["state"] == "DONE", done
    archive = requests.get(satchel.call("GET", done["url"]).headers["Location"], timeout=60).content
    assert hashlib.sha256(archive).hexdigest() == done["artifact"]["sha256"]
    return str(done["artifact"]["sha256"]), archive


@pytest.mark.parametrize(
    ("compression", "archive_format"),
    [("store", "zip"), ("deflate", "zip"), ("store", "tar"), ("deflate", "tar.gz")],
)
def test_the_same_request_over_the_same_sources_gives_the_same_bytes(
    seeded: Satchel, compression: str, archive_format: str
) -> None:
    params = {"prefixes": ["acme/integrity/"], "compression": compression, "format": archive_format}
    first_sha, first = _built(seeded, params)
    second_sha, second = _built(seeded, params)
    assert first_sha == second_sha
    assert first == second
    # And a changed source changes the archive (its bytes and its LastModified).
    seeded.put_source("acme/integrity/notes.txt", b"changed\n")
    third_sha, _ = _built(seeded, params)
    assert third_sha != first_sha


def test_a_member_s3_cannot_checksum_is_held_up_to_16_mib_and_read_twice_above(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streamed store members (nothing copied) whose sources were uploaded in parts: moto
    gives no usable CRC, so the bytes tell it: held in memory when small, a first reading
    pass when large, whatever the copy threshold."""
    monkeypatch.setenv("SATCHEL_SERVER_COPY_MIN_BYTES", str(1024 * MIB))
    bodies = {"acme/held/medium.bin": os.urandom(6 * MIB), "acme/held/large.bin": os.urandom(17 * MIB)}
    s3, bucket = satchel.s3, satchel.stack.source_bucket
    for key, body in bodies.items():  # in parts, no checksum at all
        upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        parts = [
            {"PartNumber": n, "ETag": s3.upload_part(
                Bucket=bucket, Key=key, UploadId=upload, PartNumber=n, Body=body[start : start + 5 * MIB]
            )["ETag"]}
            for n, start in enumerate(range(0, len(body), 5 * MIB), 1)
        ]  # fmt: skip
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
        )
    first_passes: list[str] = []
    original = archives._checksummed

    def recording(runtime: Any, member: Any, *rest: Any) -> Any:
        first_passes.append(member.name)  # a first pass for its CRC, then its bytes read again
        return original(runtime, member, *rest)

    monkeypatch.setattr(archives, "_checksummed", recording)
    _, archive = _built(satchel, {"prefixes": ["acme/held/"], "compression": "store"})
    assert first_passes == ["held/large.bin"]  # the medium one was held, not read twice
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        for info in opened.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            assert not info.flag_bits & 0x08
            assert opened.read(info) == bodies[f"acme/{info.filename}"]
