"""The multipart writer holds at most one part, and leaves no upload open on failure."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from chalicelib.multipart import MultipartWriter
from tests.recording import Recording

MIB = 1024 * 1024


def test_parts_are_exactly_part_size_and_the_sha256_is_of_the_whole(s3: Any) -> None:
    recording = Recording(s3)
    writer = MultipartWriter(recording, "bucket", "k", 5 * MIB, "application/zip")
    data = os.urandom(12 * MIB + 123)
    for start in range(0, len(data), 700_000):  # chunks that do not divide the part size
        writer.write(data[start : start + 700_000])
        assert writer.buffered < 5 * MIB  # never more than one part held
    digest = writer.complete()
    assert [size for kind, size, _ in recording.parts if kind == "write"] == [5 * MIB, 5 * MIB, 2 * MIB + 123]
    assert digest == hashlib.sha256(data).hexdigest()
    assert s3.get_object(Bucket="bucket", Key="k")["Body"].read() == data
    assert writer.size == len(data)


def test_empty_artifact_completes_with_one_empty_part(s3: Any) -> None:
    writer = MultipartWriter(s3, "bucket", "empty", 5 * MIB, "application/zip")
    assert writer.complete() == hashlib.sha256(b"").hexdigest()
    assert s3.head_object(Bucket="bucket", Key="empty")["ContentLength"] == 0


def test_abort_leaves_no_upload(s3: Any) -> None:
    writer = MultipartWriter(s3, "bucket", "k", 5 * MIB, "application/zip")
    writer.write(os.urandom(6 * MIB))
    writer.abort()
    assert s3.list_multipart_uploads(Bucket="bucket").get("Uploads", []) == []
    assert "Contents" not in s3.list_objects_v2(Bucket="bucket")
