"""The `zip` download type: S3 objects under the caller's scope, streamed into one archive."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.archive import deflate, integrity, zipwriter
from chalicelib.archive.zipwriter import CopyRange, Member, Piece, Streaming, ZipLayout
from chalicelib.core import clock
from chalicelib.core.errors import (
    DuplicateKeys,
    EmptyKeys,
    InvalidParams,
    MaxContentSizeExceeded,
    NothingToDownload,
    SourceMissing,
    TooManyFiles,
    TooManyKeys,
)
from chalicelib.core.models import Download, Principal, Progress
from chalicelib.core.names import UniqueNames
from chalicelib.core.settings import Settings
from chalicelib.downloadtypes import archiveoptions
from chalicelib.downloadtypes.base import DownloadType, Limits, Plan, ProgressTracker, SegmentBuild
from chalicelib.downloadtypes.scope import Scope
from chalicelib.s3 import sources
from chalicelib.s3.manifest import Entry

if TYPE_CHECKING:
    from chalicelib.runtime import Runtime

PARAMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "keys": {
            "type": "array",
            "items": {"type": "string", "maxLength": 1024},
            "description": "Object keys in the source bucket (or s3://<source bucket>/<key>).",
        },
        "prefixes": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 1024},
            "description": "Key prefixes whose objects are all included.",
        },
        "compression": {"enum": ["store", "deflate"], "default": "deflate"},
        "compression_level": {
            "type": "integer",
            "minimum": min(deflate.LEVELS),
            "maximum": max(deflate.LEVELS),
            "default": deflate.DEFAULT_LEVEL,
            "description": "Deflate effort: 0 is fastest (ISA-L), 1-3 within 5% of zlib-6's size (zlib-ng "
            "4-6), 3 smallest. Ignored by store.",
        },
        **archiveoptions.PARAMS_PROPERTIES,
    },
}


def check_params(params: dict[str, Any], principal: Principal, settings: Settings) -> dict[str, Any]:
    """Refusals the API answers at once (after the schema): empty, too many, duplicate, out of scope."""
    keys: list[str] = params.get("keys", [])
    prefixes: list[str] = params.get("prefixes", [])
    if not keys and not prefixes:
        raise EmptyKeys("give at least one key or prefix")
    if any(not key.strip() for key in keys):
        raise EmptyKeys("keys must not be empty strings")
    named = len(keys) + len(prefixes)
    if named > settings.max_keys:
        raise TooManyKeys(
            f"a request may name at most {settings.max_keys} keys and prefixes; it named {named}",
            limit=settings.max_keys,
        )
    scope = Scope.of(principal, settings.source_bucket)
    resolved = [scope.resolve(key) for key in keys]
    duplicates = sorted({key for key in resolved if resolved.count(key) > 1})
    if duplicates:
        raise DuplicateKeys(f"duplicate keys: {', '.join(duplicates)}", keys=duplicates)
    return {
        "keys": resolved,
        "prefixes": _distinct_prefixes([scope.resolve(prefix) for prefix in prefixes]),
        "compression": params.get("compression", "deflate"),
        "compression_level": params.get("compression_level", deflate.DEFAULT_LEVEL),
    }


def _distinct_prefixes(prefixes: list[str]) -> list[str]:
    """Exact repeats are dropped (first one kept); a prefix inside another is refused, since
    the objects under both would be listed twice and it is not clear which was meant."""
    unique = list(dict.fromkeys(prefixes))
    ordered = sorted(unique)  # a prefix sorts just before every key that starts with it
    overlapping: list[tuple[str, str]] = []
    for index, outer in enumerate(ordered):
        for inner in ordered[index + 1 :]:
            if not inner.startswith(outer):
                break
            overlapping.append((outer, inner))
    if overlapping:
        pairs = "; ".join(f"{inner!r} lies inside {outer!r}" for outer, inner in overlapping[:5])
        named = sorted({prefix for pair in overlapping for prefix in pair})
        raise InvalidParams(
            f"params/prefixes: prefixes must not overlap: {pairs}", path="params/prefixes", prefixes=named
        )
    return unique


def plan(runtime: Runtime, download: Download, limits: Limits | None = None) -> Plan:
    """Expand keys and prefixes into manifest entries, enforcing the size and count limits.

    A dry run's `limits` collects a broken limit and the count goes on (only the totals: no
    entry is kept past a broken limit, so memory stays bounded by the limits)."""
    limits = limits or Limits()
    s3, params = runtime.s3, download.params
    source_bucket = runtime.settings.source_bucket
    max_bytes, max_files = runtime.settings.max_content_bytes, runtime.settings.max_files
    scope = Scope(source_bucket, f"{download.tenant}/")
    options = archiveoptions.Options.of(params)
    names = UniqueNames(options.reserved_names)
    skipped: list[str] = []
    seen: set[str] = set()
    entries: list[Entry] = []
    total = files = 0

    def add(key: str, size: int, etag: str) -> None:
        nonlocal total, files
        if key in seen:
            return
        seen.add(key)
        total += size
        files += 1
        if total > max_bytes:
            limits.exceeded(
                MaxContentSizeExceeded(
                    f"sources exceed the maximum content size of {max_bytes} bytes", max_bytes=max_bytes
                )
            )
        if files > max_files:
            limits.exceeded(
                TooManyFiles(f"sources exceed the maximum of {max_files} files", max_files=max_files)
            )
        if not limits.any_broken:
            entries.append(Entry(key=key, size=size, etag=etag, name=names.claim(scope.entry_name(key))))

    for key in params.get("keys", []):
        if limits.out_of_time():
            break
        try:
            head = s3.head_object(Bucket=source_bucket, Key=key)
        except ClientError as error:
            if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                if options.skips:
                    skipped.append(key)
                    continue
                raise SourceMissing(f"source object not found: {key}", key=key) from None
            raise
        add(key, int(head["ContentLength"]), head["ETag"])
    paginator = s3.get_paginator("list_objects_v2")
    for prefix in params.get("prefixes", []):
        for page in paginator.paginate(Bucket=source_bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if item["Key"].endswith("/") and item["Size"] == 0:
                    continue  # a console "folder" marker, not a file
                add(item["Key"], int(item["Size"]), item["ETag"])
            if limits.out_of_time():
                break
        if not limits.complete:
            break
    if limits.any_broken or not limits.complete:  # a dry run's count: totals, no entries
        return Plan(totals=Progress(files_total=files, bytes_total=total), skipped=skipped)
    if not entries:
        raise NothingToDownload(
            "none of the named sources exist" if skipped else "the given prefixes hold no objects"
        )
    if options.skips and not limits.collect:  # a dry run stores nothing
        archiveoptions.prepare_skip(skipped, runtime, download)
    return Plan(
        totals=Progress(files_total=len(entries), bytes_total=sum(entry.size for entry in entries)),
        entries=entries,
        skipped=skipped,
    )


def _counted(chunks: Iterator[bytes], tracker: ProgressTracker) -> Iterator[bytes]:
    for chunk in chunks:
        tracker.advance(bytes_=len(chunk))
        yield chunk
    tracker.advance(files=1)


class _Read:
    """A deflated member's source bytes, counted as they are read; when the member stops
    between two chunks, what was read past the stop is taken back (the next run reads it)."""

    def __init__(self, chunks: Iterator[bytes], tracker: ProgressTracker) -> None:
        self._tracker = tracker
        self.bytes = 0
        self.chunks = _counted(self._seen(chunks), tracker)

    def _seen(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.bytes += len(chunk)
            yield chunk

    def stopped_at(self, compressed_from: int) -> None:
        self._tracker.advance(bytes_=compressed_from - self.bytes)


def _window(settings: Settings) -> sources.Window:
    return sources.Window(settings.fetch_concurrency, settings.fetch_window_bytes, settings.read_chunk_bytes)


def _deflated(
    runtime: Runtime, level: int, entries: Iterator[Entry], tracker: ProgressTracker, layout: ZipLayout
) -> Iterator[Piece]:
    """Every member through the worker, deflated unless it is compressed already (then stored)."""
    settings = runtime.settings
    for source in sources.fetch(runtime.s3, settings.source_bucket, entries, _window(settings)):
        entry = source.entry
        if deflate.is_precompressed(entry.name, source.content_type):
            yield from _stored_through(runtime, source, tracker, layout)
            if layout.carried is not None:  # the Lambda run ends inside this member (runs.py)
                return
            continue
        read = _Read(source.chunks, tracker)
        engine = deflate.compressor(level)
        whole = CopyRange(settings.source_bucket, entry.key, entry.etag, 0, entry.size)
        yield from layout.streamed(entry.name, entry.size, read.chunks, engine, source.modified, whole)
        if layout.carried is not None:  # the Lambda run ends inside this member (runs.py)
            read.stopped_at(engine.size)
            return


def _resumed(
    runtime: Runtime,
    level: int,
    carried: Streaming,
    tracker: ProgressTracker,
    layout: ZipLayout,
    *,
    store: bool,
) -> Iterator[Piece]:
    """The rest of a member an earlier run stopped in: its source read from where that run
    stopped (pinned to the ETag Prepare saw); a deflated one's deflate stream carried on, a
    stored one's CRC-32 so far (of its bytes written, or of its first pass: in a `store`
    zip, one at or above the copy threshold is then copied, as `_stored` decides)."""
    if carried.method == zipwriter.STORED and not carried.header_size:
        if store and carried.rest.end >= runtime.settings.server_copy_min_bytes:
            yield from _copied(runtime, carried, tracker, layout)
        else:
            yield from _checksummed(runtime, carried, tracker, layout)
        return
    rest = carried.rest
    response = sources.open_object(
        runtime.s3, rest.bucket, rest.key, rest.etag, f"bytes={rest.start}-{rest.end - 1}"
    )
    chunks = sources.stream(response["Body"], runtime.settings.read_chunk_bytes)
    if carried.method == zipwriter.STORED:
        yield from layout.resumed(carried, _counted(chunks, tracker))
        if layout.carried is not None:
            response["Body"].close()  # read no further than the stop
        return
    read = _Read(chunks, tracker)
    engine = deflate.compressor(level, carried.so_far)
    yield from layout.resumed(carried, read.chunks, engine)
    if layout.carried is not None:
        read.stopped_at(engine.size - rest.start)


# The most a stored member is held in memory for its CRC-32 when S3 cannot give it (above
# it, the member is read in a first pass instead): bounded whatever the copy threshold.
HOLD_MAX_BYTES = 16 * 1024 * 1024


def _hold_below(settings: Settings) -> int:
    return min(settings.server_copy_min_bytes, HOLD_MAX_BYTES + 1)


def _stored_through(
    runtime: Runtime, source: sources.Source, tracker: ProgressTracker, layout: ZipLayout
) -> Iterator[Piece]:
    """A stored member of a deflate zip (a file compressed already): its CRC-32 looked up
    here (in a store zip, `_stored` looks them up ahead, in parallel), then `_through`."""
    entry = source.entry
    known = None
    if entry.size > runtime.settings.read_chunk_bytes:  # smaller ones are fetched whole already
        known = sources.lookup_crc32(runtime.s3, runtime.settings.source_bucket, entry)
    yield from _through(runtime, source, known, tracker, layout)


def _through(
    runtime: Runtime,
    source: sources.Source,
    known: sources.Checked | None,
    tracker: ProgressTracker,
    layout: ZipLayout,
) -> Iterator[Piece]:
    """A stored member whose bytes pass through the worker. Its CRC-32 goes in the header,
    before its bytes (no data descriptor: see chalicelib/archive/zipwriter.py), so it is
    known first: `known` from S3 (a full-object checksum, or part checksums combined) if
    S3 could tell, else from the bytes themselves, held in memory below `_hold_below` (16
    MiB, and the copy threshold), read in a first pass at or above it.

    Where a Lambda run short of time (`layout.stop`) may stop inside it, always between two
    read chunks, never before the first:
    - its bytes, whichever way its CRC came: the header and the chunks so far are written,
      and the next run reads the rest of the source (a ranged GET) and checks the CRC of
      all of them against the CRC the header announced;
    - the first pass, and the hold, before the header: nothing of the member is written,
      since its header cannot be before its CRC is known. A held member stopped so drops
      what it held and goes on as a first pass from where the hold stopped (the CRC of the
      bytes held so far is carried), then reads its bytes again: a stop costs at most 16
      MiB read twice, and no run has to read a whole held member once it is short of time.
    """
    settings, entry = runtime.settings, source.entry
    whole = CopyRange(settings.source_bucket, entry.key, entry.etag, 0, entry.size)
    if known is not None:
        body = _counted(source.chunks, tracker)
        yield from layout.known(entry.name, known.crc, entry.size, body, source.modified, whole)
    elif entry.size >= _hold_below(settings):
        source.discard()  # the response opened for it would idle through the first pass
        member = layout.stored(entry.name, entry.size, source.modified, whole)
        yield from _checksummed(runtime, member, tracker, layout)
    else:
        yield from _held(source, tracker, layout, whole)
    if layout.carried is not None:
        source.discard()  # read no further than the stop


def _checksummed(
    runtime: Runtime, member: Streaming, tracker: ProgressTracker, layout: ZipLayout
) -> Iterator[Piece]:
    """A stored member S3 has no CRC-32 for: a first pass reads its source (from where an
    earlier run's stopped) for the CRC its header needs, then its bytes are read again
    through the worker; either read may stop between two chunks (`layout.stop`)."""
    s3, rest, chunk = runtime.s3, member.rest, runtime.settings.read_chunk_bytes
    passing = sources.open_object(s3, rest.bucket, rest.key, rest.etag, f"bytes={rest.start}-{rest.end - 1}")
    crc = layout.checksum(member, sources.stream(passing["Body"], chunk))
    if crc is None:
        passing["Body"].close()  # read no further than the stop
        return
    response = sources.open_object(s3, rest.bucket, rest.key, rest.etag)
    yield from layout.known_as(member, crc, _counted(sources.stream(response["Body"], chunk), tracker))
    if layout.carried is not None:
        response["Body"].close()


def _held(
    source: sources.Source, tracker: ProgressTracker, layout: ZipLayout, whole: CopyRange
) -> Iterator[Piece]:
    """A stored member held whole (it is small, or below the hold limit with no CRC S3 could
    give): the CRC from its bytes, then the bytes, each chunk let go once written."""
    entry = source.entry
    member = layout.stored(entry.name, entry.size, source.modified, whole)
    held = layout.hold(member, source.chunks)
    if held is None:  # stopped while holding: carried on as a first pass (`_through`)
        return
    crc, chunks = held
    yield from layout.known_as(member, crc, _counted(_drained(chunks), tracker))


def _drained(chunks: list[bytes]) -> Iterator[bytes]:
    """The chunks in order, each dropped from the list as it is taken."""
    chunks.reverse()
    while chunks:
        yield chunks.pop()


# A first pass over a copied member reads ranges of this many bytes (several at a time,
# `SATCHEL_FETCH_CONCURRENCY` up to `FIRST_PASS_WORKERS`); a run short of time stops it
# between two of them.
FIRST_PASS_RANGE_BYTES = 8 * 1024 * 1024
# Bounded apart from the fetch window: the S3 client's pool (chalicelib/core/clients.py)
# holds connections for the fetching and the CRC look-ups, each up to the maximum, and a
# few more; a first pass runs while both may have requests in flight.
FIRST_PASS_WORKERS = 4


def _stored(
    runtime: Runtime, entries: Iterator[Entry], tracker: ProgressTracker, layout: ZipLayout
) -> Iterator[Piece]:
    """Large members copied by S3, the others through the worker (`_through`); every CRC-32
    up front.

    The CRCs are looked up ahead, in parallel, from S3 (a full-object checksum, or part
    checksums combined). Where S3 cannot tell, the bytes do: for a member below the copy
    threshold, read through the worker (`_through`); for a copied one, a first pass
    (`_copied`). Either may stop between two reads when the run is short of time. A CRC
    from S3 is checked as the bytes pass for a member read through the worker, and by the
    Digest step for a copied one (a CRC from a first pass, too).
    """
    settings = runtime.settings
    bucket, copy_min, chunk = (
        settings.source_bucket,
        settings.server_copy_min_bytes,
        settings.read_chunk_bytes,
    )
    order, small, large = itertools.tee(entries, 3)
    fetched = sources.fetch(runtime.s3, bucket, (e for e in small if e.size < copy_min), _window(settings))
    looked_up = (e for e in large if e.size > chunk)
    checked = sources.crc32s(runtime.s3, bucket, looked_up, settings.fetch_concurrency)
    for entry in order:
        found = next(checked)[1] if entry.size > chunk else None
        known = found if isinstance(found, sources.Checked) else None
        if entry.size >= copy_min:
            if found is None:  # a read chunk at or above the copy threshold: looked up all the same
                found = sources.look_up(runtime.s3, bucket, entry)
            whole = CopyRange(bucket, entry.key, entry.etag, 0, entry.size)
            if isinstance(found, sources.Checked):
                yield from layout.known(entry.name, found.crc, entry.size, [whole], found.modified)
                tracker.advance(files=1, bytes_=entry.size)
                continue
            member = layout.stored(entry.name, entry.size, found.modified, whole)
            yield from _copied(runtime, member, tracker, layout)
        else:
            yield from _through(runtime, next(fetched), known, tracker, layout)
        if layout.carried is not None:  # the Lambda run ends inside this member (runs.py)
            return


def _copied(
    runtime: Runtime, member: Streaming, tracker: ProgressTracker, layout: ZipLayout
) -> Iterator[Piece]:
    """A member copied by S3 whose CRC-32 S3 cannot give: a first pass reads its source (from
    where an earlier run's stopped) in ranges, several at a time, each range's CRC combined
    in order (`ZipLayout.checksum_ranges`), and may stop between two ranges, nothing of the
    member written yet (its header needs the CRC). Then S3 copies it, as any large member;
    the Digest step checks its CRC in the artifact."""
    settings, rest = runtime.settings, member.rest
    ranges = (FIRST_PASS_RANGE_BYTES, max(1, min(settings.fetch_concurrency, FIRST_PASS_WORKERS)))
    span, chunk = (rest.start, rest.end), settings.read_chunk_bytes
    passing = sources.range_crc32s(runtime.s3, rest.bucket, rest.key, rest.etag, span, ranges, chunk)
    with contextlib.closing(passing):  # a stop leaves ranges in flight: those not begun are cancelled
        crc = layout.checksum_ranges(member, passing)
    if crc is None:
        return
    whole = replace(rest, start=0)
    # Laid out as copied (no source to read through the worker), as `layout.known` does.
    yield from layout.known_as(replace(member, rest=CopyRange("", "", "", 0, rest.end)), crc, [whole])
    tracker.advance(files=1, bytes_=rest.end)


def members(
    runtime: Runtime,
    download: Download,
    entries: Iterator[Entry],
    tracker: ProgressTracker,
    layout: ZipLayout,
) -> Iterator[Piece]:
    """The entries' local records as pieces; `layout` keeps their central directory records."""
    if download.params.get("compression", "deflate") == "store":
        return _stored(runtime, entries, tracker, layout)
    level = int(download.params.get("compression_level", deflate.DEFAULT_LEVEL))
    return _deflated(runtime, level, entries, tracker, layout)


def layout_for(download: Download, start: int = 0) -> ZipLayout:
    """Members are stamped with their source's LastModified, so the same request over the same
    sources gives the same bytes (the download's creation time is only a fallback)."""
    return ZipLayout(clock.parse(download.created_at), start)


@dataclass(frozen=True)
class _ZipSegment:
    pieces: Iterator[Piece]
    layout: ZipLayout

    def records(self) -> list[Any]:
        return [member.to_json() for member in self.layout.members]

    def take_records(self, batch: int) -> list[Any]:
        members = self.layout.members
        if len(members) <= batch:
            return []
        taken = (len(members) - 1) // batch * batch
        records = [member.to_json() for member in members[:taken]]
        del members[:taken]
        return records

    def checks(self) -> list[integrity.Check]:
        return list(self.layout.unverified)

    def carried(self) -> tuple[int, Any] | None:
        """The member the run stopped in (deflated, or stored through the worker): where its
        header is, and the member as JSON with its header at 0 (the next run's layout starts
        there)."""
        carried = self.layout.carried
        if carried is None:
            return None
        return carried.offset, carried.moved(-carried.offset).to_json()


def _continued(
    runtime: Runtime,
    download: Download,
    carried: Streaming,
    entries: Iterator[Entry],
    tracker: ProgressTracker,
    layout: ZipLayout,
) -> Iterator[Piece]:
    level = int(download.params.get("compression_level", deflate.DEFAULT_LEVEL))
    store = download.params.get("compression", "deflate") == "store"
    yield from _resumed(runtime, level, carried, tracker, layout, store=store)
    if layout.carried is None:
        yield from members(runtime, download, entries, tracker, layout)


class ZipSegments:
    """A plain zip is joined from parallel segments: each lays its members out from offset 0,
    and the join moves their central directory records by where each segment landed, so the
    result is byte for byte the zip a single Build lays out."""

    def accepts(self, params: dict[str, Any]) -> bool:
        return archiveoptions.segmentable(params)

    def build(
        self,
        runtime: Runtime,
        download: Download,
        entries: Iterator[Entry],
        tracker: ProgressTracker,
        *,
        start: int = 0,
        carried: Any = None,
        stop: Callable[[], bool] | None = None,
    ) -> SegmentBuild:
        layout = layout_for(download, start)
        layout.stop = stop
        if carried is None:
            return _ZipSegment(members(runtime, download, entries, tracker, layout), layout)
        resumed = Streaming.from_json(carried)
        return _ZipSegment(_continued(runtime, download, resumed, entries, tracker, layout), layout)

    def closing(
        self, download: Download, placed: Iterator[tuple[int, list[Any]]], offset: int
    ) -> Iterator[bytes]:
        moved = (Member.from_json(raw).moved(at) for at, records in placed for raw in records)
        return zipwriter.closing(moved, offset)


TYPE = DownloadType(
    name="zip",
    description="An archive (zip, tar or tar.gz) of objects from your source scope, by key and by prefix.",
    params_schema=PARAMS_SCHEMA,
    formats=list(archiveoptions.FORMATS),
    check=archiveoptions.checked(check_params),
    plan=plan,
    # The format, manifest and on_missing options wrap `members` and `layout_for`.
    render=archiveoptions.renderer(members, layout_for),
    artifact_format=archiveoptions.artifact_format,
    default_name=lambda download_id, params: f"zip-{download_id[:12]}",
    segments=ZipSegments(),
    stream=archiveoptions.TarRuns(),
    survey=archiveoptions.ZipSurvey(ZipSegments(), layout_for),
    limits=("max_files", "max_content_bytes", "max_keys"),
)
