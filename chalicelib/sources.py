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
import contextvars
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from chalicelib.errors import SourceChanged, SourceMissing
from chalicelib.manifest import Entry


@dataclass(frozen=True)
class Window:
    """How far reading may run ahead: requests in flight, and bytes held for later."""

    workers: int
    window_bytes: int
    chunk_bytes: int

    def prefetches(self, entry: Entry) -> bool:
        # Objects up to one read chunk are fetched whole: streaming them gains nothing.
        return entry.size <= self.chunk_bytes


@dataclass(frozen=True)
class Source:
    entry: Entry
    content_type: str
    chunks: Iterator[bytes]


def translate(error: ClientError, key: str) -> Exception:
    """S3's answer for a missing or changed object as the domain error the workflow reports."""
    code = str(error.response["Error"]["Code"])
    if code in ("NoSuchKey", "404", "NotFound"):
        return SourceMissing(f"source object not found: {key}", key=key)
    if code in ("PreconditionFailed", "412"):
        return SourceChanged(f"source object changed while building: {key}")
    unknown: Exception = error  # botocore is untyped here
    return unknown


def open_object(s3: Any, bucket: str, key: str, etag: str, byte_range: str | None = None) -> dict[str, Any]:
    """GetObject of exactly the version Prepare saw (IfMatch on its ETag)."""
    extra = {"Range": byte_range} if byte_range else {}
    try:
        response: dict[str, Any] = s3.get_object(Bucket=bucket, Key=key, IfMatch=etag, **extra)
    except ClientError as error:
        raise translate(error, key) from None
    return response


def stream(body: Any, chunk_bytes: int) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(chunk_bytes)
    finally:
        body.close()


def _fetch_whole(s3: Any, bucket: str, entry: Entry) -> tuple[str, bytes]:
    response = open_object(s3, bucket, entry.key, entry.etag)
    with response["Body"] as body:
        data: bytes = body.read()
    return str(response.get("ContentType", "")), data


def _streamed(s3: Any, bucket: str, entry: Entry, chunk_bytes: int) -> Source:
    response = open_object(s3, bucket, entry.key, entry.etag)
    return Source(entry, str(response.get("ContentType", "")), stream(response["Body"], chunk_bytes))


def fetch(s3: Any, bucket: str, entries: Iterable[Entry], window: Window) -> Iterator[Source]:
    """The sources in order; small ones fetched ahead, concurrently, within the window."""
    if window.workers <= 1:  # one request at a time, none ahead: a round trip per file
        yield from (_streamed(s3, bucket, entry, window.chunk_bytes) for entry in entries)
        return
    upcoming = iter(entries)
    pending: collections.deque[tuple[Entry, Future[tuple[str, bytes]] | None]] = collections.deque()
    held = 0
    with ThreadPoolExecutor(max_workers=window.workers, thread_name_prefix="fetch") as pool:
        try:
            while True:
                # Top the window up: requests in flight, bytes fetched but not yet consumed.
                while len(pending) < 4 * window.workers and held < window.window_bytes:
                    entry = next(upcoming, None)
                    if entry is None:
                        break
                    if window.prefetches(entry):
                        pending.append((entry, _submit(pool, _fetch_whole, s3, bucket, entry)))
                        held += entry.size
                    else:
                        pending.append((entry, None))
                if not pending:
                    return
                entry, future = pending.popleft()
                if future is None:
                    yield _streamed(s3, bucket, entry, window.chunk_bytes)
                    continue
                content_type, data = future.result()
                held -= entry.size
                yield Source(entry, content_type, iter((data,)) if data else iter(()))
        finally:
            for _, future in pending:
                if future is not None:
                    future.cancel()


_T = TypeVar("_T")


def _submit(pool: ThreadPoolExecutor, work: Callable[..., _T], *args: Any) -> Future[_T]:
    """Run `work` in the pool within a copy of the caller's context: context variables (a
    tracer's, or the local stack's record of which function makes a call) follow the work."""
    return pool.submit(contextvars.copy_context().run, work, *args)


def full_object_crc32(head: dict[str, Any]) -> int | None:
    """The object's CRC-32 from S3's checksum, if S3 holds one for the whole object.

    A multipart object's checksum is COMPOSITE (a checksum of part checksums, "…-N") unless
    it was uploaded as FULL_OBJECT; a single PUT's CRC32 is the whole object's.
    """
    value = head.get("ChecksumCRC32")
    if not value or "-" in value or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None
    return int.from_bytes(base64.b64decode(value), "big")


def crc32(s3: Any, bucket: str, entry: Entry, chunk_bytes: int) -> int:
    """The CRC-32 of an object, from S3's checksum where it has one, else by reading it."""
    try:
        head = s3.head_object(Bucket=bucket, Key=entry.key, IfMatch=entry.etag, ChecksumMode="ENABLED")
    except ClientError as error:
        raise translate(error, entry.key) from None
    known = full_object_crc32(head)
    if known is not None:
        return known
    value = 0
    for chunk in stream(open_object(s3, bucket, entry.key, entry.etag)["Body"], chunk_bytes):
        value = zlib.crc32(chunk, value)
    return value


def crc32s(
    s3: Any, bucket: str, entries: Iterable[Entry], workers: int, chunk_bytes: int
) -> Iterator[tuple[Entry, int]]:
    """(entry, CRC-32) in order, looked up (or computed) `workers` at a time."""
    upcoming = iter(entries)
    pending: collections.deque[tuple[Entry, Future[int]]] = collections.deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="crc") as pool:
        try:
            while True:
                while len(pending) < 2 * workers:
                    entry = next(upcoming, None)
                    if entry is None:
                        break
                    pending.append((entry, _submit(pool, crc32, s3, bucket, entry, chunk_bytes)))
                if not pending:
                    return
                entry, future = pending.popleft()
                yield entry, future.result()
        finally:
            for _, future in pending:
                future.cancel()
