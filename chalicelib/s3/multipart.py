"""Streaming an artifact into an S3 multipart upload with bounded memory.

At most one part (plus the chunk being written) is held at a time: the buffer never grows
past the part size, and a full one is uploaded as it is, never copied first. The one buffer
is filled again for the next part rather than freed and grown anew: a part of 8 to 105
MiB allocated and freed per part leaves the allocator holding fragments of the old ones
(the Build worker's peak RSS rose by more than the part itself), and a buffer grown in
place for every part re-copies it as it grows. The part size
is the plan's (chalicelib/workflow/segments.py: at least SATCHEL_PART_SIZE, larger when the
upload would otherwise pass S3's 10,000 parts: 105 MiB for 1 TiB), fixed for the upload's
life and carried in `Saved` from one Lambda run to the next. The SHA-256 of the
whole object is computed on the way through, so Finalize never reads the artifact back;
unless some parts were copied server-side (`copy_part`): then the writer has not seen
every byte, and `complete` returns None for the digest.

A part is handed to botocore as a stream over the buffer (`PartBody`), not as the bytearray
itself. Over HTTPS (S3 on AWS) botocore sends a part with a trailing CRC-32 (aws-chunked)
and first wraps a bytes-like body in `io.BytesIO`, which copies a bytearray whole: every
part would be held twice while it was sent (210 MiB at 105 MiB parts). A stream is read a
chunk at a time, by the checksum, the signer and the connection alike.
"""

from __future__ import annotations

import contextvars
import hashlib
import io
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, CopySourceTypeDef

log = logging.getLogger(__name__)


# The most a read of a part's stream gives. botocore asks for 1 MiB at a time (the checksum,
# the signer, the aws-chunked framing): each such read would be a 1 MiB object of its own,
# and three copies of it in the framing. A shorter read is allowed (the framing's chunks are
# then 64 KiB, well above S3's least of 8 KiB) and its copies stay in the allocator's heap.
PART_READ_BYTES = 64 * 1024


class PartBody(io.RawIOBase):
    """The first `size` bytes of a buffer as a seekable, read-only stream, copied out a read
    of at most PART_READ_BYTES at a time; the buffer is not held (no memoryview of it
    outlives a read), so it may be resized once the part is sent. `len()` is its size:
    botocore's Content-Length."""

    def __init__(self, buffer: bytearray, size: int) -> None:
        super().__init__()
        self._buffer = buffer
        self._size = size
        self._position = 0

    def __len__(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        # A raw stream may give less than asked (botocore reads until b""); all of it only
        # when asked for all.
        end = self._size if size < 0 else min(self._size, self._position + min(size, PART_READ_BYTES))
        with memoryview(self._buffer) as view:
            data = bytes(view[self._position : max(end, self._position)])
        self._position += len(data)
        return data

    def readinto(self, target: memoryview | bytearray) -> int:  # type: ignore[override]
        count = max(0, min(len(target), PART_READ_BYTES, self._size - self._position))
        with memoryview(self._buffer) as view:
            target[:count] = view[self._position : self._position + count]
        self._position += count
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position


@dataclass(frozen=True)
class PartCopy:
    """Bytes [first, last] of another object, pinned to its ETag, to be copied as one part."""

    source: CopySourceTypeDef
    first: int
    last: int
    if_match: str


@dataclass(frozen=True)
class Saved:
    """An upload in progress: its id, the parts done (number, ETag), the bytes written in all
    (held ones included), those held short of a part, and its part size."""

    upload_id: str
    parts: list[tuple[int, str]]
    size: int
    held: bytes
    part_size: int


class MultipartWriter:
    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        key: str,
        part_size: int,
        content_type: str,
        resumed: Saved | None = None,
    ) -> None:
        self._s3 = s3
        self.bucket = bucket
        self.key = key
        self._part_size = part_size
        # Bytes [0, _fill) of _buffer are the part being filled; past them, its last use's.
        self._buffer = bytearray()
        self._fill = 0
        self._parts: list[CompletedPartTypeDef] = []
        self._sha256 = hashlib.sha256()
        self._copied = False
        self.size = 0
        if resumed is None:
            created = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type)
            self.upload_id = created["UploadId"]
            return
        # Carried on from an earlier Lambda run (chalicelib/workflow/runs.py): its parts, and
        # the bytes it held short of a part. Parts go on from the next number, so a retried run
        # overwrites the very parts its failed attempt wrote. The hash of the earlier runs'
        # bytes is not carried: `complete` returns None (the Digest step hashes the artifact).
        self.upload_id = resumed.upload_id
        self._part_size = resumed.part_size
        self._parts = [{"PartNumber": number, "ETag": etag} for number, etag in resumed.parts]
        self._buffer = bytearray(resumed.held)
        self._fill = len(self._buffer)
        self.size = resumed.size
        self._copied = True

    def saved(self) -> Saved:
        """What a later run needs to go on with this upload (`MultipartWriter(..., resumed=)`)."""
        return Saved(
            upload_id=self.upload_id,
            parts=[(part["PartNumber"], part["ETag"]) for part in self._parts],
            size=self.size,
            held=bytes(memoryview(self._buffer)[: self._fill]),
            part_size=self._part_size,
        )

    @property
    def part_size(self) -> int:
        return self._part_size

    @property
    def buffered(self) -> int:
        """Bytes held in memory, waiting to fill a part."""
        return self._fill

    def write(self, data: bytes) -> None:
        self._sha256.update(data)
        self.size += len(data)
        view = memoryview(data)
        while view:
            taken = view[: self._part_size - self._fill]
            end = self._fill + len(taken)
            if end <= len(self._buffer):
                self._buffer[self._fill : end] = taken  # in place: the buffer's size is kept
            else:
                del self._buffer[self._fill :]
                self._buffer += taken
            self._fill = end
            view = view[len(taken) :]
            if self._fill == self._part_size:
                # The full buffer is the part's body, read through a stream over it (no copy:
                # a 105 MiB part is held once); once S3 has it, it takes the next part's bytes.
                self._upload()

    def _upload(self) -> None:
        """The bytes held, [0, _fill) of the buffer, as the next part; the buffer then takes
        the next part's bytes."""
        number = len(self._parts) + 1
        with PartBody(self._buffer, self._fill) as body:
            result = self._s3.upload_part(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
            )
        self._parts.append({"PartNumber": number, "ETag": result["ETag"]})
        self._fill = 0

    def flush(self) -> None:
        """Upload what is buffered as a part of its own (S3 wants 5 MiB, unless it is the last)."""
        if self._fill:
            self._upload()

    def copy_part(self, copy_source: CopySourceTypeDef, first: int, last: int, if_match: str) -> None:
        """Bytes [first, last] of another object as the next part, copied by S3 itself."""
        if self._fill:
            raise RuntimeError("flush() before copying: a part is either written or copied")
        number = len(self._parts) + 1
        result = self._s3.upload_part_copy(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            CopySource=copy_source,
            CopySourceRange=f"bytes={first}-{last}",
            CopySourceIfMatch=if_match,
        )
        self._parts.append({"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]})
        self.size += last - first + 1
        self._copied = True

    def copy_parts(self, copies: Sequence[PartCopy], workers: int) -> None:
        """Ranges of other objects as the next parts, copied by S3 `workers` at a time. Their
        part numbers are fixed before any is sent (the next ones, in order), so the order
        the copies finish in changes nothing, and a retried run sends the same numbers."""
        if self._fill:
            raise RuntimeError("flush() before copying: a part is either written or copied")
        if not copies:
            return
        first_number = len(self._parts) + 1

        def copy(number: int, part: PartCopy) -> str:
            result = self._s3.upload_part_copy(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                CopySource=part.source,
                CopySourceRange=f"bytes={part.first}-{part.last}",
                CopySourceIfMatch=part.if_match,
            )
            return result["CopyPartResult"]["ETag"]

        with ThreadPoolExecutor(max_workers=min(workers, len(copies)), thread_name_prefix="copy") as pool:
            # Each copy runs in a copy of the caller's context: context variables (a tracer's,
            # or the local stack's record of which function makes a call) follow it.
            futures = [
                pool.submit(contextvars.copy_context().run, copy, first_number + offset, part)
                for offset, part in enumerate(copies)
            ]
            etags = [future.result() for future in futures]
        for offset, (part, etag) in enumerate(zip(copies, etags, strict=True)):
            self._parts.append({"PartNumber": first_number + offset, "ETag": etag})
            self.size += part.last - part.first + 1
        self._copied = True

    @property
    def parts(self) -> int:
        return len(self._parts)

    def complete(self) -> str | None:
        """Upload what is buffered, complete the upload, and return the hex SHA-256 (None if
        parts were copied: the writer has not seen those bytes)."""
        if self._fill or not self._parts:
            self._upload()
        self._s3.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        return None if self._copied else self._sha256.hexdigest()

    def abort(self) -> None:
        """Abort the upload; never raises, since it runs while another error is on its way out.

        An upload already gone (NoSuchUpload: a concurrent abort, a retried step's clean-up)
        is what an abort wants. Any other failure is logged: the original error must reach
        the state machine's Catch, and the cleanup sweep removes an upload left open.
        """
        self._buffer.clear()
        self._fill = 0
        try:
            self._s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except Exception as error:  # noqa: BLE001 - an abort must not replace the error it follows
            if not _no_such_upload(error):
                log.warning("could not abort upload %s of %s", self.upload_id, self.key, exc_info=True)


def _no_such_upload(error: Exception) -> bool:
    return isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") == "NoSuchUpload"


def is_open(s3: S3Client, bucket: str, key: str, upload_id: str) -> bool:
    """Whether the multipart upload `upload_id` of `key` is still open (neither completed
    nor aborted): a later Lambda run goes on with it only then."""
    paginator = s3.get_paginator("list_multipart_uploads")
    for page in paginator.paginate(Bucket=bucket, Prefix=key):
        if any(upload["UploadId"] == upload_id for upload in page.get("Uploads", [])):
            return True
    return False
