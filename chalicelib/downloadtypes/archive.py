"""How the `zip` type is built: its members streamed, deflated, stored or copied by S3.

The type's declaration (name, params, checks, plan) is chalicelib/downloadtypes/ziptype.py,
which the API loads; this module, with the writers, the deflate engine and the source reader,
only when a Build first calls the builders it hands on (`SEGMENTS`, `RENDER`, `STREAM`,
`SURVEY`, at the end).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from chalicelib.archive import deflate, integrity, zipwriter
from chalicelib.archive.zipwriter import CopyRange, Member, Piece, Streaming, ZipLayout
from chalicelib.core import clock
from chalicelib.core.models import Download
from chalicelib.core.settings import Settings
from chalicelib.downloadtypes import archiveoptions, archiveparams
from chalicelib.downloadtypes.base import ProgressTracker, SegmentBuild
from chalicelib.s3 import sources
from chalicelib.s3.manifest import Entry

if TYPE_CHECKING:
    from chalicelib.runtime import Runtime


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
        return archiveparams.segmentable(params)

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


# What chalicelib/downloadtypes/ziptype.py's delegates hand a Build: the plain zip's segment
# plan, and the format, manifest and on_missing options wrapping `members` and `layout_for`.
SEGMENTS = ZipSegments()
RENDER = archiveoptions.renderer(members, layout_for)
STREAM = archiveoptions.TarRuns()
SURVEY = archiveoptions.ZipSurvey(SEGMENTS, layout_for)
