"""Reading sources: in manifest order, with the next ones already on their way.

One GET at a time costs a round trip per file, which is what a zip of many small objects
is made of. Here a small thread pool keeps a bounded window of requests in flight: small
objects are fetched whole ahead of their turn (at most `window_bytes` of them held at
once), large ones are streamed when their turn comes, chunk by chunk. Every read is
pinned to the ETag Prepare saw, so a changed object fails the build instead of
slipping into it.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import contextvars
import re
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import ClientError

from chalicelib.core.errors import SourceChanged, SourceMissing
from chalicelib.s3.manifest import Entry

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import (
        GetObjectOutputTypeDef,
        GetObjectRequestTypeDef,
        HeadObjectOutputTypeDef,
    )


@dataclass(frozen=True)
class Window:
    """How far reading may run ahead: requests in flight, and bytes held for later."""

    workers: int
    window_bytes: int
    chunk_bytes: int

    def prefetches(self, entry: Entry) -> bool:
        # Objects up to one read chunk are fetched whole: streaming them gains nothing.
        return entry.size <= self.chunk_bytes


def _nothing_to_close() -> None:
    pass


@dataclass(frozen=True)
class Source:
    entry: Entry
    content_type: str
    modified: datetime
    chunks: Iterator[bytes]
    # Releases the response if `chunks` is dropped before it is read (a generator that never
    # started runs no `finally`).
    discard: Callable[[], None] = _nothing_to_close


def translate(error: ClientError, key: str) -> Exception:
    """S3's answer for a missing or changed object as the domain error the workflow reports."""
    code = str(error.response["Error"]["Code"])
    if code in ("NoSuchKey", "404", "NotFound"):
        return SourceMissing(f"source object not found: {key}", key=key)
    if code in ("PreconditionFailed", "412"):
        return SourceChanged(f"source object changed while building: {key}")
    unknown: Exception = error  # botocore is untyped here
    return unknown


def open_object(
    s3: S3Client, bucket: str, key: str, etag: str, byte_range: str | None = None
) -> GetObjectOutputTypeDef:
    """GetObject of exactly the version Prepare saw (IfMatch on its ETag)."""
    request: GetObjectRequestTypeDef = {"Bucket": bucket, "Key": key, "IfMatch": etag}
    if byte_range:
        request["Range"] = byte_range
    try:
        response = s3.get_object(**request)
    except ClientError as error:
        raise translate(error, key) from None
    return response


def stream(body: Any, chunk_bytes: int) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(chunk_bytes)
    finally:
        body.close()


def _fetch_whole(s3: S3Client, bucket: str, entry: Entry, chunk_bytes: int) -> Source:
    response = open_object(s3, bucket, entry.key, entry.etag)
    with response["Body"] as body:
        data: bytes = body.read()
    chunks = iter((data,)) if data else iter(())
    return Source(entry, str(response.get("ContentType", "")), response["LastModified"], chunks)


def _streamed(s3: S3Client, bucket: str, entry: Entry, chunk_bytes: int) -> Source:
    response = open_object(s3, bucket, entry.key, entry.etag)
    chunks = stream(response["Body"], chunk_bytes)
    content_type = str(response.get("ContentType", ""))
    return Source(entry, content_type, response["LastModified"], chunks, response["Body"].close)


def fetch(s3: S3Client, bucket: str, entries: Iterable[Entry], window: Window) -> Iterator[Source]:
    """The sources in order; small ones fetched ahead, concurrently, within the window."""
    if window.workers <= 1:  # one request at a time, none ahead: a round trip per file
        yield from (_streamed(s3, bucket, entry, window.chunk_bytes) for entry in entries)
        return
    upcoming = iter(entries)
    pending: collections.deque[tuple[Entry, Future[Source] | None]] = collections.deque()
    held = 0
    with _pool(window.workers, "fetch") as pool:
        try:
            while True:
                # Top the window up: requests in flight, bytes fetched but not yet consumed.
                while len(pending) < 4 * window.workers and held < window.window_bytes:
                    entry = next(upcoming, None)
                    if entry is None:
                        break
                    if window.prefetches(entry):
                        pending.append(
                            (entry, _submit(pool, _fetch_whole, s3, bucket, entry, window.chunk_bytes))
                        )
                        held += entry.size
                    else:
                        pending.append((entry, None))
                if not pending:
                    return
                entry, future = pending.popleft()
                if future is None:
                    yield _streamed(s3, bucket, entry, window.chunk_bytes)
                    continue
                source = future.result()
                held -= entry.size
                yield source
        finally:
            for _, future in pending:
                if future is not None:
                    future.cancel()


_T = TypeVar("_T")
_E = TypeVar("_E")


@contextlib.contextmanager
def _pool(workers: int, name: str) -> Iterator[ThreadPoolExecutor]:
    """A pool for a generator's look-ahead. Its threads are not joined on the way out: a
    generator left unfinished (its consumer raised) is closed whenever it is collected,
    which may be on one of these very threads, and a thread cannot join itself. Work not
    started is cancelled; work under way ends by itself, its result unread."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    try:
        yield pool
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _submit(pool: ThreadPoolExecutor, work: Callable[..., _T], *args: Any) -> Future[_T]:
    """Run `work` in the pool within a copy of the caller's context: context variables (a
    tracer's, or the local stack's record of which function makes a call) follow the work."""
    return pool.submit(contextvars.copy_context().run, work, *args)


_MULTIPART_ETAG = re.compile(r'-\d+"?$')


def full_object_crc32(head: Mapping[str, Any], parts_count: int | None = None) -> int | None:
    """The object's CRC-32 from S3's checksum, only if it is the whole object's.

    S3 answers in these shapes (tests/unit/s3/test_sources.py has one of each):
    - `ChecksumType: FULL_OBJECT`: the whole object's CRC, whatever the upload (trusted);
    - `ChecksumType: COMPOSITE`, value `…-N`: a CRC of the part CRCs (not the object's);
    - no `ChecksumType`, plain ETag, no parts: a single PUT, whose CRC is the object's;
    - no `ChecksumType` on an object uploaded in parts (moto does this): composite, unmarked.
      Its ETag ends in `-N`, and HeadObject with PartNumber=1 says `PartsCount`.
    `parts_count` is that PartsCount, when the caller asked.
    """
    value = head.get("ChecksumCRC32")
    if not value or "-" in value:
        return None
    kind = head.get("ChecksumType")
    if kind is not None and kind != "FULL_OBJECT":
        return None
    if kind is None and (_MULTIPART_ETAG.search(str(head.get("ETag", ""))) or parts_count):
        return None
    return int.from_bytes(base64.b64decode(value), "big")


def combine_crc32(parts: Iterable[tuple[int, int]]) -> int:
    """The CRC-32 of a concatenation, from (CRC-32, length) of each part in order.

    ISA-L's `crc32_combine` (zlib's algorithm: the GF(2) matrix power of the length) does it
    in O(log length) per part, without a byte of the object.
    """
    from isal import isal_zlib  # deferred, as in chalicelib/archive/deflate.py

    value = 0
    for crc, length in parts:
        value = isal_zlib.crc32_combine(value, crc, length)
    return value


def part_crc32s(s3: S3Client, bucket: str, entry: Entry) -> int | None:
    """The whole object's CRC-32 combined from its parts' checksums, if S3 lists them all.

    GetObjectAttributes lists each part's size and CRC-32 for an object uploaded in parts
    with CRC32 checksums (real S3; moto 5.2 lists no parts, so there the bytes are read).
    """
    parts: list[tuple[int, int]] = []
    marker = 0
    while True:
        try:
            answer = s3.get_object_attributes(
                Bucket=bucket,
                Key=entry.key,
                ObjectAttributes=["ObjectParts"],
                MaxParts=1000,
                PartNumberMarker=marker,
            )
        except ClientError as error:
            raise translate(error, entry.key) from None
        listed = answer.get("ObjectParts") or {}
        for part in listed.get("Parts", []):
            if not part.get("ChecksumCRC32"):
                return None
            parts.append((int.from_bytes(base64.b64decode(part["ChecksumCRC32"]), "big"), int(part["Size"])))
        if not listed.get("IsTruncated"):
            break
        marker = int(listed["NextPartNumberMarker"])
    if not parts or sum(length for _, length in parts) != entry.size:
        return None
    return combine_crc32(parts)


@dataclass(frozen=True)
class Checked:
    """An object's CRC-32 and where it came from: `s3` (a full-object checksum), `parts`
    (combined part checksums) or `read` (the worker read the bytes: `bytes_read` of them)."""

    crc: int
    origin: str
    modified: datetime
    content_type: str
    bytes_read: int = 0


def _head(s3: S3Client, bucket: str, entry: Entry) -> HeadObjectOutputTypeDef:
    try:
        head = s3.head_object(Bucket=bucket, Key=entry.key, IfMatch=entry.etag, ChecksumMode="ENABLED")
    except ClientError as error:
        raise translate(error, entry.key) from None
    return head


def last_modified(s3: S3Client, bucket: str, entry: Entry) -> datetime:
    """When the version Prepare saw was written (a HEAD pinned to its ETag)."""
    modified: datetime = _head(s3, bucket, entry)["LastModified"]
    return modified


@dataclass(frozen=True)
class Unchecked:
    """An object S3 has no CRC-32 for (neither a full-object checksum nor part checksums):
    only its bytes can tell. What its HEAD said, for the member laid out once they have."""

    modified: datetime
    content_type: str


def lookup_crc32(s3: S3Client, bucket: str, entry: Entry) -> Checked | None:
    """The object's CRC-32 without reading it (S3's full-object checksum, or its part
    checksums combined), or None: then only its bytes can tell."""
    found = look_up(s3, bucket, entry)
    return found if isinstance(found, Checked) else None


def look_up(s3: S3Client, bucket: str, entry: Entry) -> Checked | Unchecked:
    """`lookup_crc32`, and when S3 cannot tell, what its HEAD said (`Unchecked`)."""
    head = _head(s3, bucket, entry)
    modified, content_type = head["LastModified"], str(head.get("ContentType", ""))
    parts_count = None
    unmarked = head.get("ChecksumCRC32") and head.get("ChecksumType") is None
    if unmarked and not _MULTIPART_ETAG.search(str(head.get("ETag", ""))):
        # No type, a plain ETag: a single PUT, unless a store that keeps no "-N" says parts.
        parts_count = _parts_count(s3, bucket, entry)
    known = full_object_crc32(head, parts_count)
    if known is not None:
        return Checked(known, "s3", modified, content_type)
    combined = part_crc32s(s3, bucket, entry)
    if combined is not None:
        return Checked(combined, "parts", modified, content_type)
    return Unchecked(modified, content_type)


def _parts_count(s3: S3Client, bucket: str, entry: Entry) -> int | None:
    try:
        # (Not pinned with IfMatch: moto compares it with the part's ETag. Only a count is read.)
        head = s3.head_object(Bucket=bucket, Key=entry.key, PartNumber=1)
    except ClientError as error:
        raise translate(error, entry.key) from None
    count = head.get("PartsCount")
    return int(count) if count is not None else None


def crc32s(
    s3: S3Client, bucket: str, entries: Iterable[Entry], workers: int
) -> Iterator[tuple[Entry, Checked | Unchecked]]:
    """(entry, its CRC-32 or `Unchecked`) in order, looked up `workers` at a time. Nothing
    is read here: where S3 cannot tell, the caller reads the bytes (a first pass of its own,
    `range_crc32s`, which a Lambda run short of time may stop between two ranges)."""
    return in_order(workers, lambda entry: look_up(s3, bucket, entry), entries, "crc")


def range_crc32s(
    s3: S3Client,
    bucket: str,
    key: str,
    etag: str,
    span: tuple[int, int],
    ranges: tuple[int, int],
    chunk_bytes: int,
) -> Generator[tuple[int, int], None, None]:
    """(CRC-32, length) of consecutive ranges of an object's bytes `span` [start, end), in
    order, for `combine_crc32`. `ranges` is (a range's size, the last one's up to it; how
    many are read at a time): ranged GETs pinned to the ETag, at most twice that many
    ahead (`in_order`).

    One GET streams at ~100-300 MB/s; several in flight read a large object that much
    faster. Each range is read chunk by chunk and only its CRC kept, so memory is a chunk
    a worker whatever the ranges' size. Close the generator to stop: ranges not begun are
    cancelled, those under way end by themselves (`_pool`).
    """

    def crc_of(bounds: tuple[int, int]) -> int:
        from isal import isal_zlib  # deferred, as in chalicelib/archive/deflate.py; it lets go of the GIL

        first, end = bounds
        response = open_object(s3, bucket, key, etag, f"bytes={first}-{end - 1}")
        value = read = 0
        for chunk in stream(response["Body"], chunk_bytes):
            value = isal_zlib.crc32(chunk, value)
            read += len(chunk)
        if read != end - first:
            raise ValueError(f"{key}: {read} bytes for range {first}-{end - 1}")
        return value

    (begin, stop), (range_bytes, workers) = span, ranges
    spans = ((first, min(first + range_bytes, stop)) for first in range(begin, stop, range_bytes))
    # Closed with this generator: ranges not begun are cancelled then (`in_order`).
    with contextlib.closing(in_order(workers, crc_of, spans, "firstpass")) as ordered:
        for (first, end), value in ordered:
            yield value, end - first


def in_order(
    workers: int, work: Callable[[_E], _T], entries: Iterable[_E], name: str
) -> Generator[tuple[_E, _T], None, None]:
    """(entry, work(entry)) in the entries' order, `workers` at a time and at most twice that
    many ahead (each within a copy of the caller's context: see `_submit`)."""
    upcoming = iter(entries)
    pending: collections.deque[tuple[_E, Future[_T]]] = collections.deque()
    with _pool(max(1, workers), name) as pool:
        try:
            while True:
                while len(pending) < 2 * max(1, workers):
                    entry = next(upcoming, None)
                    if entry is None:
                        break
                    pending.append((entry, _submit(pool, work, entry)))
                if not pending:
                    return
                entry, future = pending.popleft()
                yield entry, future.result()
        finally:
            for _, future in pending:
                future.cancel()
