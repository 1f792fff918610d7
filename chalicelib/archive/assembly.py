"""Server-side assembly: pieces of an archive into one multipart upload, S3 doing the copying.

A part is either uploaded by the worker or copied by S3 (`UploadPartCopy`) from a range of
another object, never both, and every part but the last must be at least 5 MiB. So a
range is copied only where that rule allows: what the worker has written since the last
copied part is topped up to 5 MiB with the head of the range (read through the worker),
the rest is copied, in parts of at most 5 GiB. A range too short for that is read through.
At a member boundary that costs about 5 MiB of worker traffic; the bulk never touches it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from chalicelib.archive.zipwriter import CopyRange, Piece
from chalicelib.core.settings import S3_MIN_PART_SIZE
from chalicelib.s3 import sources
from chalicelib.s3.multipart import MultipartWriter, PartCopy

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import CopySourceTypeDef

S3_MAX_PART_SIZE = 5 * 1024**3


class CopyHandedOn(Exception):
    """Raised by `copy` between two copied parts when `stop` says the run must end: `rest`
    is what is still to copy, `began_at` where the range's first byte landed in the upload."""

    def __init__(self, rest: CopyRange, began_at: int) -> None:
        super().__init__(f"handed on with {rest.length} bytes of {rest.key} still to copy")
        self.rest = rest
        self.began_at = began_at


class Assembler:
    def __init__(
        self,
        s3: S3Client,
        writer: MultipartWriter,
        chunk_bytes: int,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        self._s3 = s3
        self.writer = writer
        self._chunk_bytes = chunk_bytes
        # Asked between copied parts of one range: a range larger than one Lambda run can
        # copy is handed on mid-member (CopyHandedOn), at a part boundary.
        self._stop = stop
        self.bytes_read = 0  # source bytes that passed through the worker for ranges
        self.bytes_copied = 0

    def write_all(self, pieces: Iterable[Piece]) -> None:
        for piece in pieces:
            if isinstance(piece, CopyRange):
                self.copy(piece)
            else:
                self.writer.write(piece)

    def copy(self, source: CopyRange) -> None:
        began_at = self.writer.size
        pending = self.writer.buffered
        head = S3_MIN_PART_SIZE - pending if 0 < pending < S3_MIN_PART_SIZE else 0
        if source.length - head < S3_MIN_PART_SIZE:
            self._read(source, source.start, source.end)
            return
        if head:
            self._read(source, source.start, source.start + head)
        self.writer.flush()
        start = source.start + head
        count = math.ceil((source.end - start) / S3_MAX_PART_SIZE)
        step = math.ceil((source.end - start) / count)  # even parts: each ≥ 5 MiB
        copy_source: CopySourceTypeDef = {"Bucket": source.bucket, "Key": source.key}
        for first in range(start, source.end, step):
            if first > start and self._stop is not None and self._stop():
                raise CopyHandedOn(replace(source, start=first), began_at)
            last = min(first + step, source.end) - 1
            try:
                self.writer.copy_part(copy_source, first, last, source.etag)
            except ClientError as error:
                raise sources.translate(error, source.key) from None
            self.bytes_copied += last - first + 1

    def copy_at_once(self, whole: Sequence[CopyRange], workers: int) -> None:
        """Ranges of one part each (`one_part`), with nothing held short of a part: copied by
        S3 `workers` at a time, their part numbers fixed in advance. For Satchel's own
        objects (Assemble's segments): S3's errors are not translated into a source's."""
        if self.writer.buffered or not all(one_part(source) for source in whole):
            raise ValueError("only whole parts, with nothing held short of one, are copied at once")
        copies = [
            PartCopy({"Bucket": source.bucket, "Key": source.key}, source.start, source.end - 1, source.etag)
            for source in whole
        ]
        self.writer.copy_parts(copies, workers)
        self.bytes_copied += sum(source.length for source in whole)

    def _read(self, source: CopyRange, start: int, end: int) -> None:
        if start == end:
            return
        response = sources.open_object(
            self._s3, source.bucket, source.key, source.etag, f"bytes={start}-{end - 1}"
        )
        for chunk in sources.stream(response["Body"], self._chunk_bytes):
            self.bytes_read += len(chunk)
            self.writer.write(chunk)


def one_part(source: CopyRange) -> bool:
    """Whether `copy` would copy this range as exactly one part (after a part boundary)."""
    return S3_MIN_PART_SIZE <= source.length <= S3_MAX_PART_SIZE
