"""The Digest step's read-back: the SHA-256 of the whole object, read a chunk at a time, with
every member's CRC-32 checked on the way, and the body closed whatever happens."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import pytest

from chalicelib.archive.integrity import Check
from chalicelib.core.errors import ChecksumMismatch
from chalicelib.workflow.digest import object_sha256

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

DATA = bytes(range(256)) * 40 + b"tail"


class Body:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sizes: list[int] = []
        self.closed = False

    def iter_chunks(self, chunk_bytes: int) -> Iterator[bytes]:
        for start in range(0, len(self.data), chunk_bytes):
            self.sizes.append(chunk_bytes)
            yield self.data[start : start + chunk_bytes]

    def close(self) -> None:
        self.closed = True


class S3:
    def __init__(self, data: bytes) -> None:
        self.body = Body(data)
        self.asked: list[tuple[str, str]] = []

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        self.asked.append((Bucket, Key))
        return {"Body": self.body}

    @property
    def typed(self) -> S3Client:
        """This fake where the code expects the boto3 client (it answers the one call used)."""
        return cast("S3Client", self)


def _check(offset: int, size: int, crc: int | None = None) -> Check:
    member = DATA[offset : offset + size]
    return Check("member", offset, size, zlib.crc32(member) if crc is None else crc)


def test_the_sha256_is_of_the_whole_object_read_in_chunks_of_the_given_size() -> None:
    s3 = S3(DATA)
    assert object_sha256(s3.typed, "artifacts", "d/a.zip", 1000) == hashlib.sha256(DATA).hexdigest()
    assert s3.asked == [("artifacts", "d/a.zip")]
    assert s3.body.sizes == [1000] * 11
    assert s3.body.closed


def test_members_whose_crcs_match_pass_across_chunk_boundaries() -> None:
    checks = [_check(0, 10), _check(990, 1500), _check(len(DATA) - 4, 4)]
    assert object_sha256(S3(DATA).typed, "b", "k", 1000, checks) == hashlib.sha256(DATA).hexdigest()


def test_a_member_whose_crc_does_not_match_fails_and_the_body_is_closed() -> None:
    s3 = S3(DATA)
    with pytest.raises(ChecksumMismatch):
        object_sha256(s3.typed, "b", "k", 1000, [_check(990, 1500, crc=0)])
    assert s3.body.closed


def test_a_member_past_the_end_of_the_object_fails() -> None:
    with pytest.raises(ChecksumMismatch):
        object_sha256(S3(DATA).typed, "b", "k", 1000, [_check(len(DATA) - 4, 100, crc=1)])
