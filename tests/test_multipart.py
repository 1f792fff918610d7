"""The multipart writer holds at most one part, and leaves no upload open on failure."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib.multipart import MultipartWriter

MIB = 1024 * 1024


class RecordingS3:
    """Wraps a real (moto) client, recording the size of each part uploaded."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.part_sizes: list[int] = []

    def upload_part(self, **kwargs: Any) -> Any:
        self.part_sizes.append(len(kwargs["Body"]))
        return self._client.upload_part(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="bucket")
        yield client


def test_parts_are_exactly_part_size_and_the_sha256_is_of_the_whole(s3: Any) -> None:
    recording = RecordingS3(s3)
    writer = MultipartWriter(recording, "bucket", "k", 5 * MIB, "application/zip")
    data = os.urandom(12 * MIB + 123)
    for start in range(0, len(data), 700_000):  # chunks that do not divide the part size
        writer.write(data[start : start + 700_000])
        assert writer.buffered < 5 * MIB  # never more than one part held
    digest = writer.complete()
    assert recording.part_sizes == [5 * MIB, 5 * MIB, 2 * MIB + 123]
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
