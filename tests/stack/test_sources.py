"""Sources' checksums as moto's S3 answers them."""

from __future__ import annotations

import base64
import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from boto3.s3.transfer import TransferConfig

from chalicelib.s3 import sources
from chalicelib.s3.manifest import Entry

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_s3.client import S3Client

MIB = 1024 * 1024


def test_an_object_uploaded_in_parts_is_read_for_its_crc_on_moto(s3: S3Client, tmp_path: Path) -> None:
    data = os.urandom(12 * MIB)
    path = tmp_path / "source.bin"
    path.write_bytes(data)
    config = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    boto3.client("s3", region_name="us-east-1").upload_file(
        str(path), "bucket", "multi", ExtraArgs={"ChecksumAlgorithm": "CRC32"}, Config=config
    )
    head = s3.head_object(Bucket="bucket", Key="multi", ChecksumMode="ENABLED")
    assert head.get("ChecksumType") is None  # moto: unmarked
    assert "-" not in head["ChecksumCRC32"]
    assert int.from_bytes(base64.b64decode(head["ChecksumCRC32"]), "big") != zlib.crc32(data)

    entry = Entry("multi", len(data), head["ETag"], "multi")
    assert isinstance(sources.look_up(s3, "bucket", entry), sources.Unchecked)  # only the bytes can tell
    ranges = sources.range_crc32s(s3, "bucket", "multi", entry.etag, (0, len(data)), (3 * MIB, 2), MIB)
    assert sources.combine_crc32(ranges) == zlib.crc32(data)


def test_a_single_put_checksum_is_used_without_reading(s3: S3Client) -> None:
    data = os.urandom(100_000)
    etag = s3.put_object(Bucket="bucket", Key="single", Body=data, ChecksumAlgorithm="CRC32")["ETag"]
    checked = sources.lookup_crc32(s3, "bucket", Entry("single", len(data), etag, "single"))
    assert checked is not None
    assert (checked.crc, checked.origin, checked.bytes_read) == (zlib.crc32(data), "s3", 0)
