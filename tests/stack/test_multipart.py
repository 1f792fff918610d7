"""The multipart writer holds at most one part, and leaves no upload open on failure."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import zlib
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.s3.multipart import MultipartWriter, PartCopy, Saved
from tests.support.recording import Recording

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_s3.client import S3Client

MIB = 1024 * 1024


def test_parts_are_exactly_part_size_and_the_sha256_is_of_the_whole(s3: S3Client) -> None:
    recording = Recording(s3)
    writer = MultipartWriter(recording.typed, "bucket", "k", 5 * MIB, "application/zip")
    data = os.urandom(12 * MIB + 123)
    for start in range(0, len(data), 700_000):  # chunks that do not divide the part size
        writer.write(data[start : start + 700_000])
        assert writer.buffered < 5 * MIB  # never more than one part held
    digest = writer.complete()
    assert [size for kind, size, _ in recording.parts if kind == "write"] == [5 * MIB, 5 * MIB, 2 * MIB + 123]
    assert digest == hashlib.sha256(data).hexdigest()
    assert s3.get_object(Bucket="bucket", Key="k")["Body"].read() == data
    assert writer.size == len(data)


def test_the_buffer_a_written_part_leaves_is_reused_and_then_copies_follow(s3: S3Client) -> None:
    """The writer fills the same buffer again for each part: what a written part leaves in
    it is no part held, so copied parts may follow it, alone or several at once."""
    source = os.urandom(6 * MIB)
    etag = s3.put_object(Bucket="bucket", Key="source", Body=source)["ETag"]
    writer = MultipartWriter(s3, "bucket", "k", 6 * MIB, "application/zip")
    head, middle = os.urandom(6 * MIB), os.urandom(5 * MIB + 7)
    writer.write(head)  # one whole part, written
    assert writer.buffered == 0
    copy_source: Any = {"Bucket": "bucket", "Key": "source"}
    writer.copy_part(copy_source, 0, 5 * MIB - 1, etag)
    writer.write(middle)  # into the same buffer: short of a part, held
    assert writer.buffered == 5 * MIB + 7
    writer.flush()  # a part of its own (at least 5 MiB: S3's least but for the last)
    writer.copy_parts(
        [PartCopy(copy_source, 0, 5 * MIB - 1, etag), PartCopy(copy_source, MIB, 6 * MIB - 1, etag)], 2
    )
    writer.write(b"tail")
    writer.complete()
    expected = head + source[: 5 * MIB] + middle + source[: 5 * MIB] + source[MIB:] + b"tail"
    assert s3.get_object(Bucket="bucket", Key="k")["Body"].read() == expected


def test_empty_artifact_completes_with_one_empty_part(s3: S3Client) -> None:
    writer = MultipartWriter(s3, "bucket", "empty", 5 * MIB, "application/zip")
    assert writer.complete() == hashlib.sha256(b"").hexdigest()
    assert s3.head_object(Bucket="bucket", Key="empty")["ContentLength"] == 0


def test_abort_leaves_no_upload(s3: S3Client) -> None:
    writer = MultipartWriter(s3, "bucket", "k", 5 * MIB, "application/zip")
    writer.write(os.urandom(6 * MIB))
    writer.abort()
    assert s3.list_multipart_uploads(Bucket="bucket").get("Uploads", []) == []
    assert "Contents" not in s3.list_objects_v2(Bucket="bucket")


class Failing(Exception):
    """The error a build was raising when it aborted its upload."""


def fail_building(writer: MultipartWriter, message: str) -> None:
    """As the build steps do: abort the upload on any error, then let the error go on."""
    try:
        raise Failing(message)
    except Failing:
        writer.abort()
        raise


def test_an_upload_already_aborted_does_not_mask_the_error_that_aborted_it(s3: S3Client) -> None:
    writer = MultipartWriter(s3, "bucket", "k", 5 * MIB, "application/zip")
    writer.write(os.urandom(6 * MIB))
    # A concurrent abort (a retried step, the cleanup sweep) got there first.
    s3.abort_multipart_upload(Bucket="bucket", Key="k", UploadId=writer.upload_id)

    with pytest.raises(Failing, match="the source vanished"):
        fail_building(writer, "the source vanished")
    assert s3.list_multipart_uploads(Bucket="bucket").get("Uploads", []) == []


class RefusingAbort(Recording):
    def abort_multipart_upload(self, **kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, "AbortMultipartUpload")


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_an_abort_that_fails_is_logged_and_the_original_error_propagates(s3: S3Client) -> None:
    writer = MultipartWriter(RefusingAbort(s3).typed, "bucket", "k", 5 * MIB, "application/zip")
    # On the module's own logger: whether chalicelib's loggers propagate depends on what
    # ran before in this process (chalicelib/core/observability.py).
    kept, logger = Kept(), logging.getLogger("chalicelib.s3.multipart")
    logger.addHandler(kept)
    try:
        with pytest.raises(Failing, match="the build broke"):
            fail_building(writer, "the build broke")
    finally:
        logger.removeHandler(kept)
    assert any(writer.upload_id in line for line in kept.lines), kept.lines


def test_a_saved_upload_goes_on_in_another_writer_and_a_retry_rewrites_the_same_parts(s3: S3Client) -> None:
    first, second = os.urandom(7 * MIB), os.urandom(6 * MIB)
    writer = MultipartWriter(s3, "bucket", "k", 5 * MIB, "application/zip")
    writer.write(first)
    saved = writer.saved()  # one 5 MiB part done, 2 MiB held
    assert (len(saved.parts), len(saved.held), saved.size) == (1, 2 * MIB, 7 * MIB)

    # A run that failed after writing part 2 of its own, then its retry from the same state.
    failed = MultipartWriter(s3, "bucket", "k", 5 * MIB, "application/zip", resumed=saved)
    failed.write(os.urandom(6 * MIB))
    assert failed.parts == 2
    retried = MultipartWriter(s3, "bucket", "k", 5 * MIB, "application/zip", resumed=saved)
    retried.write(second)
    assert retried.complete() is None  # the earlier runs' bytes were not hashed here: Digest does
    assert s3.get_object(Bucket="bucket", Key="k")["Body"].read() == first + second
    assert retried.size == len(first + second)


def _resumed_upload() -> Saved:
    """An upload already created (this client reaches no S3 but for UploadPart)."""
    return Saved(upload_id="upload", parts=[], size=0, held=b"", part_size=8 * MIB)


def _over_https(parts: list[bytes], *, drain_only: bool = False) -> Any:
    """An S3 client for an HTTPS endpoint whose requests never leave botocore: each
    UploadPart's body, as botocore would send it to S3 on AWS (aws-chunked, its CRC-32 in a
    trailer), is read a few KiB at a time; `parts` gets the part decoded, once its trailer is
    checked against it, unless the body is only to be drained (`drain_only`)."""
    import boto3
    from botocore.awsrequest import AWSResponse

    client: Any = boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url="https://127.0.0.1:9",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )

    class Empty:
        def stream(self, **_: Any) -> Any:
            return iter(())

        def read(self, *_: Any) -> bytes:
            return b""

    def send(request: Any, **_: Any) -> AWSResponse:
        assert request.headers["Content-Encoding"] == b"aws-chunked"
        body, encoded = request.body, bytearray()
        while block := body.read(64 * 1024):
            if not drain_only:
                encoded += block
        if not drain_only:
            decoded, rest = bytearray(), bytes(encoded)
            while True:
                size_line, rest = rest.split(b"\r\n", 1)
                size = int(size_line, 16)
                if size == 0:
                    break
                decoded += rest[:size]
                rest = rest[size + 2 :]
            name, value = rest.strip().split(b":", 1)
            assert name == b"x-amz-checksum-crc32"
            expected = base64.b64encode(zlib.crc32(decoded).to_bytes(4, "big"))
            assert value == expected
            parts.append(bytes(decoded))
        return AWSResponse(request.url, 200, {"ETag": f'"{len(parts)}"'}, Empty())

    client.meta.events.register("before-send.s3.UploadPart", send)
    return client


def test_a_part_is_sent_to_s3_over_https_as_its_bytes_with_their_crc32_and_never_copied_whole() -> None:
    """On AWS botocore sends each part aws-chunked with a trailing CRC-32, and would copy a
    bytearray body whole first (io.BytesIO): the part must reach it as a stream over the
    writer's buffer, read a chunk at a time, so a part is held once while it is sent."""
    import tracemalloc

    sent: list[bytes] = []
    client = _over_https(sent)
    writer = MultipartWriter(client, "bucket", "k", 8 * MIB, "application/zip", _resumed_upload())
    data = os.urandom(8 * MIB) + b"tail"
    writer.write(data)  # the first part is sent as it fills
    writer.flush()
    assert sent == [data[: 8 * MIB], b"tail"]

    writer = MultipartWriter(
        _over_https(sent, drain_only=True), "bucket", "k", 8 * MIB, "application/zip", _resumed_upload()
    )
    part = os.urandom(8 * MIB)
    tracemalloc.start()
    try:
        writer.write(part)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The buffer's 8 MiB (its growth is traced) and a few copies of one 64 KiB read (the
    # aws-chunked framing), not a second copy of the part.
    assert 8 * MIB < peak < 8 * MIB + 1 * MIB, peak
