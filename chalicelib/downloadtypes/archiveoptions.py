"""The `zip` type's archive options as a Build writes them: `format` (zip, tar, tar.gz),
`manifest` and `on_missing` (declared, for the API, in chalicelib/downloadtypes/archiveparams.py).

- `manifest: true` adds `SHA256SUMS` at the archive's root, in `sha256sum -c` format
  (`<hex>  <name>`, the names as they are in the archive). The SHA-256 of a member needs its
  bytes, so Build first reads every source once and hashes it (a *survey*), a bounded
  number at a time, each read pinned to the ETag Prepare saw. That costs one more read of
  every source's bytes from S3 through the worker: for server-side copied store members, a
  read pass where none was needed; for members the worker deflates anyway, a second read.
  Nothing is held: each source is hashed as it streams.
- `on_missing: skip` leaves out sources that are gone: keys that did not exist at Prepare,
  and sources that vanished before Build (found by the survey, a HEAD each when no manifest
  is asked). They are listed in the download's `skipped` and in `MISSING.txt` at the root.
  A source that vanishes after the survey is left out where the build meets it, as its
  member is about to be written (its GET, or the HEAD of one S3 copies): nothing of it is
  written, it is added to `skipped` and to `MISSING.txt` (after the others), and it is not in
  `SHA256SUMS` (`LeftOut`; a zip's runs: `_LeavingOut`, a tar's: `TarStream`). The runs after
  it learn of it from the saved run state (`gone`), so a retried run writes the same bytes.
  One found gone once its member is begun fails `SourceMissing` (`begun`): the rest of a
  member an earlier run stopped inside (its header written), or a member S3 copies whose
  copy finds it gone after its header. `fail` (the default) fails the download
  `SourceMissing`.
- `tar` is POSIX pax (chalicelib/archive/tarwriter.py); a member of at least
  `server_copy_min_bytes` is copied by S3 into the artifact (the Digest step then hashes
  it), as store zips do. `tar.gz` is one gzip stream through chalicelib/archive/deflate.py's engine.

The parallel segments (chalicelib/workflow/segments.py) join plain zip segments only. A tar
or tar.gz is built across Lambda runs (`TarRuns`, through chalicelib/workflow/streamruns.py),
its survey too; so is a zip with `manifest` or `on_missing: skip` (`ZipSurvey`: the survey,
then the plain zip's runs, chalicelib/workflow/runs.py). `renderer` builds any of them in
one run, as the type's `render`: no Build uses it now, and the tests compare the runs' bytes
with its.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.archive import deflate, integrity, tarwriter, zipwriter
from chalicelib.archive.zipwriter import CopyRange, Piece, Streaming, ZipLayout
from chalicelib.core import clock
from chalicelib.core.errors import Cancelled, SourceMissing
from chalicelib.core.models import Download
from chalicelib.core.settings import Settings
from chalicelib.downloadtypes.archiveparams import MISSING_NAME, SUMS_NAME, Options
from chalicelib.downloadtypes.base import (
    Carried,
    ProgressTracker,
    Renderer,
    SegmentBuild,
    SegmentPlan,
    StreamRun,
    Surveyed,
)
from chalicelib.s3 import layout, manifest, sources
from chalicelib.s3.manifest import Entry

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

    from chalicelib.runtime import Runtime

# The zip type's own builders, handed in (the zip type, archive.py, imports this module).
ZipMembers = Callable[["Runtime", Download, Iterator[Entry], "ProgressTracker", ZipLayout], Iterator[Piece]]
LayoutFor = Callable[[Download], ZipLayout]
LayoutAt = Callable[[Download, int], ZipLayout]


@dataclass(frozen=True)
class Survey:
    """What Build found before writing: the sources still there, those gone, SHA-256 when asked."""

    present: list[Entry]
    missing: list[Entry]
    sha256: dict[str, str]


def renderer(members: ZipMembers, layout_for: LayoutFor) -> Renderer:
    """The zip type's render: the chosen format, with SHA256SUMS and MISSING.txt when asked."""

    def render(
        runtime: Runtime, download: Download, entries: Iterator[Entry], tracker: ProgressTracker
    ) -> Iterator[Piece]:
        options = Options.of(download.params)
        if not (options.manifest or options.skips):  # streamed from the manifest, not surveyed
            yield from _pieces(runtime, download, entries, iter(()), tracker, options, None)
            return
        found = survey(runtime, list(entries), options)
        recorded = _record_skipped(runtime, download, found, tracker) if options.skips else []
        left = LeftOut(runtime, download.id, recorded, tracker) if options.skips else None
        late = left.keys if left else []  # complete once the sources are written: read after them
        own = _lazily(lambda: _own_files(download, found, late, options))
        yield from _pieces(runtime, download, iter(found.present), own, tracker, options, left)

    def _pieces(
        runtime: Runtime,
        download: Download,
        entries: Iterator[Entry],
        extras: Iterable[tuple[str, bytes]],
        tracker: ProgressTracker,
        options: Options,
        left: LeftOut | None,
    ) -> Iterator[Piece]:
        if options.format == "zip":
            layout = layout_for(download)
            yield from _laid_out(runtime, download, entries, tracker, layout, left)
            for name, data in extras:
                yield from layout.known(name, zlib.crc32(data), len(data), [data] if data else [])
            yield from zipwriter.closing(layout.members, layout.offset)
            _write_checks(runtime, download, layout.unverified)
            return
        when = int(clock.parse(download.created_at).timestamp())
        copy = options.format == "tar"
        leave_out = left.add if left else None
        tar = TarStream(
            runtime, entries, tracker, copy=copy, extras=extras, mtime=when, leave_out=leave_out
        ).pieces()
        if options.format == "tar":
            yield from tar
        else:
            level = int(download.params.get("compression_level", deflate.DEFAULT_LEVEL))
            yield from tarwriter.gzipped(tar, level)
        _write_checks(runtime, download, ())  # a tar has no CRC-32s to check

    def _laid_out(
        runtime: Runtime,
        download: Download,
        entries: Iterator[Entry],
        tracker: ProgressTracker,
        layout: ZipLayout,
        left: LeftOut | None,
    ) -> Iterator[Piece]:
        """The members; with `left`, a source found gone as its member is about to be written
        is left out, and the members go on with the next source in the same layout."""
        if left is None:
            yield from members(runtime, download, entries, tracker, layout)
            return
        rest = list(entries)  # the sources the survey found: a list already
        while True:
            laid = len(layout.members)
            try:
                yield from members(runtime, download, iter(rest), tracker, layout)
                return
            except SourceMissing as gone:
                at = len(layout.members) - laid  # the members before it are whole
                if at >= len(rest) or rest[at].key != gone.details.get("key"):
                    raise begun(gone) from gone
                left.add(rest[at])
                rest = rest[at + 1 :]

    return render


def _lazily(make: Callable[[], Iterable[tuple[str, bytes]]]) -> Iterator[tuple[str, bytes]]:
    """The archive's own files, made only when the writer reaches them (after the sources)."""
    yield from make()


def _write_checks(runtime: Runtime, download: Download, checks: Iterable[integrity.Check]) -> None:
    """The checks Digest makes of copied members, written even when there are none: Digest
    reads them whenever S3 copied a part, and a retried Build must not leave an earlier
    attempt's."""
    key = layout.checks_key(download.id)
    integrity.write(runtime.s3, runtime.settings.artifact_bucket, key, checks)


def _own_files(
    download: Download, found: Survey, late: Iterable[str], options: Options
) -> list[tuple[str, bytes]]:
    """The archive's own files, after the sources: (name at the root, bytes). `late` are the
    sources found gone as their member was about to be written (the survey saw them): listed
    in MISSING.txt after the others, and not in SHA256SUMS (the survey's hash is of bytes the
    archive does not hold)."""
    late = list(late)
    gone = set(late)
    extras = []
    if options.manifest:
        # Safe names hold no backslash or newline (names.py): no line needs sha256sum's escaping.
        present = (entry for entry in found.present if entry.key not in gone)
        lines = (f"{found.sha256[entry.name]}  {entry.name}\n" for entry in present)
        extras.append((SUMS_NAME, "".join(lines).encode("utf-8")))
    skipped = skipped_keys(download, found, late) if options.skips else []
    if skipped:
        extras.append((MISSING_NAME, "".join(f"{key}\n" for key in skipped).encode("utf-8")))
    return extras


def begun(gone: SourceMissing) -> SourceMissing:
    """A source gone once its member was begun (its header written in an earlier run, or its
    bytes being copied by S3): the archive cannot leave it out any more, and the download fails."""
    key = str(gone.details.get("key", ""))
    return SourceMissing(
        f"source object vanished while its member was being written: {key} "
        "(a member begun cannot be left out)",
        key=key,
    )


class LeftOut:
    """The sources a build finds gone as their member is about to be written (`on_missing:
    skip`), after the survey saw them: each is added to the download's `skipped`, after the
    keys already there (`recorded`), and taken out of the progress totals. `keys` are those
    left out so far (by earlier Lambda runs too, from their saved state)."""

    def __init__(
        self,
        runtime: Runtime,
        download_id: str,
        recorded: list[str],
        tracker: ProgressTracker,
        keys: Iterable[str] = (),
    ) -> None:
        self._runtime = runtime
        self._download_id = download_id
        self.recorded = list(recorded)
        self._tracker = tracker
        self.keys = list(keys)

    def add(self, entry: Entry) -> None:
        self.keys.append(entry.key)
        skipped = list(dict.fromkeys([*self.recorded, entry.key]))
        # A retried run finds the key recorded already by the attempt before: nothing to write.
        if skipped != self.recorded and not self._runtime.downloads.record_skipped(
            self._download_id, skipped
        ):
            raise Cancelled("the download was cancelled while it was being built")
        self.recorded = skipped
        current = self._tracker.current
        self._tracker.current = replace(
            current, files_total=current.files_total - 1, bytes_total=current.bytes_total - entry.size
        )


@dataclass(frozen=True)
class TarAt:
    """Where a tar goes on: at its `entry`-th source (of the manifest, or of those a survey
    found), `offset` bytes into its data (0: its header is not written yet; more: the header
    and that many bytes are)."""

    entry: int = 0
    offset: int = 0


class TarStream:
    """A pax tar of `entries` (the sources from `at` on), which stops when `stop` says so.

    It stops only once it has written something in this run: before a next entry, and (with
    `split_members`, as a tar.gz does, whose members all pass through the worker) between two
    chunks of a member's bytes. `stopped` then says so and `at` where the next run goes on; a
    member copied by S3 may also be handed on between copied parts (assembly.CopyHandedOn),
    at `current`. The end (the extras, the two zero blocks) is written only by a run that
    took every entry, so a stream never stops once it has ended.

    With `leave_out` (`on_missing: skip`), a source found gone as its member is about to be
    written (its GET, or the HEAD of one S3 copies) is handed to it and left out: nothing of
    it is written, and the stream goes on with the next entry (`at` counts it as taken). One
    found gone once its header is written (the rest of a member an earlier run stopped in)
    fails `SourceMissing` (`begun`).
    """

    def __init__(
        self,
        runtime: Runtime,
        entries: Iterator[Entry],
        tracker: ProgressTracker,
        *,
        copy: bool,
        at: TarAt | None = None,
        extras: Iterable[tuple[str, bytes]] | None = None,
        mtime: int = 0,
        stop: Callable[[], bool] | None = None,
        split_members: bool = False,
        leave_out: Callable[[Entry], None] | None = None,
    ) -> None:
        self._runtime = runtime
        self._entries = entries
        self._leave_out = leave_out
        self._tracker = tracker
        self._copy = copy
        self._extras = extras if extras is not None else ()
        self._mtime = mtime
        self._stop = stop or (lambda: False)
        self._split = split_members
        self.at = at or TarAt()
        self.current = self.at.entry  # the entry being written
        self.stopped = False

    def _copied(self, entry: Entry) -> bool:
        return self._copy and entry.size >= self._runtime.settings.server_copy_min_bytes

    def pieces(self) -> Iterator[Piece]:
        settings = self._runtime.settings
        bucket = settings.source_bucket
        index, entries = self.at.entry, self._entries
        wrote = False  # whether this run wrote anything yet: it always writes something
        if self.at.offset:
            resumed = next(entries)
            if self._copied(resumed):
                yield from self._copy_of(resumed, self.at.offset)
            else:
                stopped_at = yield from self._bytes_of(resumed, self._rest_of(resumed), self.at.offset)
                if stopped_at is not None:
                    self._stopped(index, stopped_at)
                    return
            yield tarwriter.padding(resumed.size)
            index, wrote = index + 1, True
        window = sources.Window(
            settings.fetch_concurrency, settings.fetch_window_bytes, settings.read_chunk_bytes
        )
        order, fetched = self._fetching(entries, window)
        while (entry := next(order, None)) is not None:
            if wrote and self._stop():
                self._stopped(index, 0)
                return
            self.current = index
            source: sources.Source | None = None  # None: S3 copies its bytes
            try:
                if self._copied(entry):
                    # Entry times are the sources' LastModified, as in a zip: the same sources,
                    # the same bytes.
                    modified = sources.last_modified(self._runtime.s3, bucket, entry).timestamp()
                else:
                    source = next(fetched)
                    modified = source.modified.timestamp()
            except SourceMissing as gone:
                if self._leave_out is None or gone.details.get("key") != entry.key:
                    raise
                self._leave_out(entry)
                index += 1
                if not self._copied(entry):  # the fetch ended with its error: a new one goes on
                    order, fetched = self._fetching(order, window)
                continue
            yield tarwriter.header(entry.name, entry.size, int(modified))
            if source is None:
                yield from self._copy_of(entry, 0)
            else:
                stopped_at = yield from self._bytes_of(entry, source.chunks, 0)
                if stopped_at is not None:
                    self._stopped(index, stopped_at)
                    return
            yield tarwriter.padding(entry.size)
            index, wrote = index + 1, True
        for name, data in self._extras:
            yield from tarwriter.member(name, data, self._mtime)
        yield tarwriter.END

    def _fetching(
        self, entries: Iterator[Entry], window: sources.Window
    ) -> tuple[Iterator[Entry], Iterator[sources.Source]]:
        """The entries, and the sources read through the worker among them, fetched ahead."""
        order, read = itertools.tee(entries)
        bucket = self._runtime.settings.source_bucket
        fetched = sources.fetch(self._runtime.s3, bucket, (e for e in read if not self._copied(e)), window)
        return order, fetched

    def _rest_of(self, entry: Entry) -> Iterator[bytes]:
        try:
            return self._range_of(entry)
        except SourceMissing as gone:
            if self._leave_out is None:
                raise
            raise begun(gone) from gone

    def _stopped(self, index: int, offset: int) -> None:
        self.stopped, self.at = True, TarAt(index, offset)

    def _copy_of(self, entry: Entry, start: int) -> Iterator[Piece]:
        yield CopyRange(self._runtime.settings.source_bucket, entry.key, entry.etag, start, entry.size)
        # Counted once whole (a copy handed on is counted by the run that finishes it).
        self._tracker.advance(files=1, bytes_=entry.size)

    def _range_of(self, entry: Entry) -> Iterator[bytes]:
        """The rest of a member a run stopped in, from where it stopped."""
        settings = self._runtime.settings
        response = sources.open_object(
            self._runtime.s3, settings.source_bucket, entry.key, entry.etag, f"bytes={self.at.offset}-"
        )
        return sources.stream(response["Body"], settings.read_chunk_bytes)

    def _bytes_of(
        self, entry: Entry, chunks: Iterator[bytes], offset: int
    ) -> Generator[bytes, None, int | None]:
        """A member's bytes from `offset`; where it stopped (None: at its end)."""
        written = offset
        for chunk in chunks:
            if self._split and written > offset and self._stop():
                close = getattr(chunks, "close", None)  # a streamed source's response
                if close is not None:
                    close()
                return written
            written += len(chunk)
            self._tracker.advance(bytes_=len(chunk))
            yield chunk
        if written != entry.size:
            # The header announced entry.size: an archive with other bytes would be corrupt.
            raise ValueError(f"source {entry.key!r} had {written} bytes, not the {entry.size} listed")
        self._tracker.advance(files=1)
        return None


class TarRuns:
    """A tar or tar.gz is built across Lambda runs (chalicelib/workflow/streamruns.py): a run
    stops before a next entry, between two parts of a member S3 copies (tar), or between two
    chunks of a member (tar.gz); the next goes on from there, a tar.gz's gzip stream with it
    (tarwriter.Gzip), so the bytes are those of a build in one run.

    With `manifest` or `on_missing: skip` the sources are surveyed first, and the survey is
    done across runs too: a run surveys entries until it must stop (always at least one),
    writes what it found to `tmp/<id>/survey/<part>.jsonl` and hands on; the run that ends the
    survey records what is skipped and goes on with the tar of the sources present, whose
    SHA256SUMS and MISSING.txt the last run writes from the survey's parts. A source found
    gone after the survey, as its member is about to be written (`on_missing: skip`), is left
    out there (`TarStream`'s `leave_out`, `LeftOut`); the keys left out are carried in the
    saved state (`gone`) to the last run, which lists them in MISSING.txt after the others and
    leaves them out of SHA256SUMS. A retried run goes on from the same state and leaves out
    the same sources: the same bytes."""

    def accepts(self, params: dict[str, Any]) -> bool:
        return Options.of(params).streamed

    def run(
        self,
        runtime: Runtime,
        download: Download,
        entries: Callable[[int], Iterator[Entry]],
        carried: Carried | None,
        tracker: ProgressTracker,
        stop: Callable[[], bool],
    ) -> StreamRun:
        return _TarRun(runtime, download, entries, carried, tracker, stop)


class _TarRun:
    def __init__(
        self,
        runtime: Runtime,
        download: Download,
        entries: Callable[[int], Iterator[Entry]],
        carried: Carried | None,
        tracker: ProgressTracker,
        stop: Callable[[], bool],
    ) -> None:
        self._runtime = runtime
        self._download = download
        self._entries = entries
        self._tracker = tracker
        self._stop = stop
        self._options = options = Options.of(download.params)
        state = carried.state if carried else {}
        # While surveying: entries surveyed so far and parts written; after: the parts.
        surveys = options.manifest or options.skips
        self._surveying = surveys and "at" not in state
        self._surveyed = int(state.get("surveyed", 0))
        self._parts = int(state.get("parts", 0))
        self._survey_stopped = False
        self._at = TarAt(**state["at"]) if "at" in state else TarAt()
        # The sources earlier runs left out, found gone after the survey (`on_missing: skip`).
        self._left = LeftOut(runtime, download.id, download.skipped, tracker, state.get("gone", ()))
        self._tar: TarStream | None = None
        self._gzip: tarwriter.Gzip | None = None
        if options.format == "tar.gz":
            level = int(download.params.get("compression_level", deflate.DEFAULT_LEVEL))
            self._gzip = tarwriter.Gzip(level, _gzip_carried(carried))

    @property
    def pieces(self) -> Iterator[Piece]:
        if self._gzip is None:
            return self._pieces()
        return self._gzip.stream(self._pieces(), ends=lambda: not self._stopped)

    @property
    def _stopped(self) -> bool:
        return self._survey_stopped or (self._tar is not None and self._tar.stopped)

    def _pieces(self) -> Iterator[Piece]:
        surveys = self._options.manifest or self._options.skips
        if self._surveying:
            self._survey()
            if self._survey_stopped:
                return
        gzipped = self._gzip is not None
        entries = self._present(self._at.entry) if surveys else self._entries(self._at.entry)
        self._tar = TarStream(
            self._runtime,
            entries,
            self._tracker,
            copy=not gzipped,
            at=self._at,
            extras=self._extras() if surveys else None,
            mtime=int(clock.parse(self._download.created_at).timestamp()),
            stop=self._stop,
            split_members=gzipped,
            leave_out=self._left.add if self._options.skips else None,
        )
        yield from self._tar.pieces()

    def _survey(self) -> None:
        """This run's share of the survey (at least one entry): written as a part of its own."""
        entries = self._entries(self._surveyed)
        taken, exhausted = survey_part(self._runtime, self._download, entries, self._parts, self._stop)
        self._surveyed, self._parts = self._surveyed + taken, self._parts + 1
        if not exhausted:
            self._survey_stopped = True
            return
        self._surveying = False
        if self._options.skips:
            # Recorded by the run that ends the survey (again by its retry: the same list).
            found = self._found()
            self._left.recorded = _record_skipped(self._runtime, self._download, found, self._tracker)

    def _looks(self) -> Iterator[tuple[Entry, bool, str]]:
        return _looks(self._runtime, self._download.id, self._entries(0), self._parts)

    def _present(self, start: int) -> Iterator[Entry]:
        present = (entry for entry, there, _ in self._looks() if there)
        return itertools.islice(present, start, None)

    def _found(self) -> Survey:
        return _found(self._looks())

    def _extras(self) -> Iterator[tuple[str, bytes]]:
        """SHA256SUMS and MISSING.txt, from the survey's parts and the sources left out since
        (this run's too: read only by the last run, once its sources are written)."""
        yield from _own_files(self._download, self._found(), self._left.keys, self._options)

    def carry(self, copy_rest: CopyRange | None) -> Carried | None:
        state: dict[str, Any] = {"parts": self._parts}
        if self._survey_stopped:
            state["surveyed"] = self._surveyed
        elif copy_rest is not None and self._tar is not None:
            state["at"] = asdict(TarAt(self._tar.current, copy_rest.start))
        elif self._tar is not None and self._tar.stopped:
            state["at"] = asdict(self._tar.at)
        else:
            return None
        if self._left.keys:
            state["gone"] = list(self._left.keys)
        gzip = self._gzip.carry if self._gzip else None
        if gzip is None:
            return Carried(state)
        state["gzip"] = {"crc": gzip.crc, "size": gzip.size, "window": len(gzip.window)}
        return Carried(state, gzip.window + gzip.tail)


def _gzip_carried(carried: Carried | None) -> tarwriter.GzipCarry | None:
    if carried is None:
        return None
    gzip, data = carried.state["gzip"], carried.data
    window = int(gzip["window"])
    return tarwriter.GzipCarry(int(gzip["crc"]), int(gzip["size"]), data[:window], data[window:])


def survey_part(
    runtime: Runtime, download: Download, entries: Iterator[Entry], part: int, stop: Callable[[], bool]
) -> tuple[int, bool]:
    """One Lambda run's share of a survey done across runs: `entries` (the manifest's from
    where the last share ended) until `stop` says so (at least one), written to
    `tmp/<id>/survey/<part>.jsonl` a line an entry ([present, SHA-256]). A retried run writes
    the same part again. Returns how many it surveyed, and whether that was the last."""
    settings = runtime.settings
    taken: list[Entry] = []
    exhausted = False

    def budgeted() -> Iterator[Entry]:
        nonlocal exhausted
        for entry in entries:
            if taken and stop():
                return
            taken.append(entry)
            yield entry
        exhausted = True

    found = survey(runtime, budgeted(), Options.of(download.params))
    missing = {entry.key for entry in found.missing}
    looked = ([entry.key not in missing, found.sha256.get(entry.name, "")] for entry in taken)
    lines = (json.dumps(line) + "\n" for line in looked)
    runtime.s3.put_object(
        Bucket=settings.artifact_bucket,
        Key=layout.survey_key(download.id, part),
        Body="".join(lines).encode("utf-8"),
        ContentType="application/x-ndjson",
    )
    return len(taken), exhausted


def _looks(
    runtime: Runtime, download_id: str, entries: Iterator[Entry], parts: int
) -> Iterator[tuple[Entry, bool, str]]:
    """Each manifest entry with what the survey's `parts` found: present, its SHA-256 (if asked)."""
    bucket = runtime.settings.artifact_bucket
    found = (
        json.loads(line)
        for part in range(parts)
        for line in runtime.s3.get_object(Bucket=bucket, Key=layout.survey_key(download_id, part))[
            "Body"
        ].iter_lines()
        if line
    )
    for entry, (present, sha256) in zip(entries, found, strict=True):
        yield entry, bool(present), str(sha256)


def _found(looks: Iterable[tuple[Entry, bool, str]]) -> Survey:
    found = Survey([], [], {})
    for entry, there, sha256 in looks:
        (found.present if there else found.missing).append(entry)
        if there and sha256:
            found.sha256[entry.name] = sha256
    return found


class _LeavingOut:
    """The surveyed zip's segment in one Lambda run, with `on_missing: skip`: a source found
    gone as its member is about to be written (its GET, or the HEAD that looks up its CRC-32)
    is left out there, and the run goes on with the next source, in a new build of the plain
    plan laid out from where the last member ended (`start`, counted as the pieces pass). So
    nothing of it is written, and the members after it are where a zip without it has them.

    Which source is gone: the members are laid out in the entries' order, so the entries
    handed on and not yet laid out (`_pulled`, a few ahead of the writer, as the plan fetches
    ahead) begin with it. One whose member was begun fails `SourceMissing` (`begun`): the
    member an earlier run stopped inside, its header written (one stopped in the first pass
    that reads it for its CRC-32, no header yet, is left out like any other); and a member S3
    copies, found gone by the copy after its header (the assembler raises that, outside these
    pieces). `left_out` names the sources this run left out (runs.py carries them on)."""

    def __init__(
        self,
        plain: SegmentPlan,
        runtime: Runtime,
        download: Download,
        entries: Iterator[Entry],
        tracker: ProgressTracker,
        start: int,
        carried: Any,
        stop: Callable[[], bool] | None,
    ) -> None:
        self._plain = plain
        self._runtime = runtime
        self._download = download
        self._entries = entries
        self._tracker = tracker
        self._stop = stop
        self._left = LeftOut(runtime, download.id, download.skipped, tracker)
        self._offset = start  # where the pieces so far end, as the layout counts
        self._carried = Streaming.from_json(carried) if carried is not None else None
        self._pulled: collections.deque[Entry] = collections.deque()
        self._popped = 0  # entries laid out and dropped from `_pulled`, in this build
        self._taken = 0  # records `take_records` took from this build
        self._held: list[Any] = []  # records of builds ended, and of whole batches, not yet taken
        self._checks: list[integrity.Check] = []  # of builds ended
        self._built = plain.build(
            runtime, download, self._fed([]), tracker, start=start, carried=carried, stop=stop
        )

    def _fed(self, first: list[Entry]) -> Iterator[Entry]:
        for entry in itertools.chain(first, self._entries):
            self._pulled.append(entry)
            yield entry

    @property
    def pieces(self) -> Iterator[Piece]:
        return self._pieces()

    def _pieces(self) -> Iterator[Piece]:
        while True:
            try:
                for piece in self._built.pieces:
                    self._offset += piece.length if isinstance(piece, CopyRange) else len(piece)
                    yield piece
                return
            except SourceMissing as gone:
                rest = self._gone(gone)
            # The build ended before the gone source's member: its members are whole.
            self._held += self._built.records()
            self._checks += self._built.checks()
            self._pulled, self._popped, self._taken, self._carried = collections.deque(), 0, 0, None
            self._built = self._plain.build(
                self._runtime, self._download, self._fed(rest), self._tracker,
                start=self._offset, carried=None, stop=self._stop,
            )  # fmt: skip

    def _laid(self) -> int:
        """How many of the entries handed on this build has laid out (not the carried member)."""
        return self._taken + len(self._built.records()) - (self._carried is not None)

    def _gone(self, gone: SourceMissing) -> list[Entry]:
        """The gone source left out; the entries after it, handed on already."""
        key, laid, carried = gone.details.get("key"), self._laid(), self._carried
        if laid < 0:  # the member an earlier run stopped inside
            if carried is None or carried.header_size or carried.rest.key != key:
                raise begun(gone) from gone
            rest = carried.rest
            self._left.add(Entry(key=rest.key, size=rest.end, etag=rest.etag, name=carried.name))
            return list(self._pulled)
        pulled, at = list(self._pulled), laid - self._popped
        if at >= len(pulled) or pulled[at].key != key:
            raise begun(gone) from gone
        self._left.add(pulled[at])
        return pulled[at + 1 :]

    def records(self) -> list[Any]:
        return self._held + self._built.records()

    def take_records(self, batch: int) -> list[Any]:
        taken = self._built.take_records(batch)
        self._taken += len(taken)
        while self._popped < self._taken - (self._carried is not None):
            self._pulled.popleft()  # laid out, its record taken: it cannot be the gone one
            self._popped += 1
        self._held += taken
        whole = len(self._held) // batch * batch
        records, self._held = self._held[:whole], self._held[whole:]
        return records

    def checks(self) -> list[integrity.Check]:
        return self._checks + self._built.checks()

    def carried(self) -> tuple[int, Any] | None:
        return self._built.carried()

    def left_out(self) -> list[str]:
        return list(self._left.keys)


class _SurveyedZip:
    """The segment plan of a zip whose sources were surveyed: the plain zip's over the sources
    found, closing with SHA256SUMS and MISSING.txt (from the survey's `parts`) as members,
    then the central directory of every run's members and theirs."""

    def __init__(self, plain: SegmentPlan, layout_for: LayoutAt, runtime: Runtime, parts: int) -> None:
        self._plain = plain
        self._layout_for = layout_for
        self._runtime = runtime
        self._parts = parts

    def accepts(self, params: dict[str, Any]) -> bool:
        return Options.of(params).format == "zip"

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
        if Options.of(download.params).skips:
            return _LeavingOut(self._plain, runtime, download, entries, tracker, start, carried, stop)
        return self._plain.build(runtime, download, entries, tracker, start=start, carried=carried, stop=stop)

    def closing(
        self, download: Download, placed: Iterator[tuple[int, list[Any]]], offset: int
    ) -> Iterator[Piece]:
        runtime, options = self._runtime, Options.of(download.params)
        bucket = runtime.settings.artifact_bucket
        entries = manifest.read(runtime.s3, bucket, layout.manifest_key(download.id))
        found = _found(_looks(runtime, download.id, entries, self._parts))
        # The sources the runs left out after the survey saw them: runs.py hands the download
        # on with them in `skipped` (from its saved state).
        present = {entry.key for entry in found.present}
        late = [key for key in download.skipped if key in present]
        zip_layout = self._layout_for(download, offset)
        for name, data in _own_files(download, found, late, options):
            yield from zip_layout.known(name, zlib.crc32(data), len(data), [data] if data else [])
        ours = [member.to_json() for member in zip_layout.members]
        yield from self._plain.closing(download, itertools.chain(placed, [(0, ours)]), zip_layout.offset)


class ZipSurvey:
    """A zip with `manifest` or `on_missing: skip` is built across Lambda runs too
    (chalicelib/workflow/steps.py): first the survey, a part a run as a tar's (`survey_part`),
    the run that ends it recording what is skipped; then, from that same run on, the sources
    found through the plain zip's segment plan (chalicelib/workflow/runs.py), whose last run
    writes SHA256SUMS and MISSING.txt as members before the central directory. The bytes are
    those of a build in one run."""

    def __init__(self, plain: SegmentPlan, layout_for: LayoutAt) -> None:
        self._plain = plain
        self._layout_for = layout_for

    def accepts(self, params: dict[str, Any]) -> bool:
        return Options.of(params).surveyed

    def survey(
        self,
        runtime: Runtime,
        download: Download,
        entries: Callable[[int], Iterator[Entry]],
        at: int,
        part: int,
        tracker: ProgressTracker,
        stop: Callable[[], bool],
    ) -> Surveyed:
        taken, exhausted = survey_part(runtime, download, entries(at), part, stop)
        if not exhausted:
            return Surveyed(at + taken, None)
        found = _found(_looks(runtime, download.id, entries(0), part + 1))
        if Options.of(download.params).skips:
            # Recorded by the run that ends the survey (again by its retry: the same list).
            _record_skipped(runtime, download, found, tracker)
        return Surveyed(at + taken, found.present)

    def segments(self, runtime: Runtime, download: Download, parts: int) -> SegmentPlan:
        return _SurveyedZip(self._plain, self._layout_for, runtime, parts)


def survey(runtime: Runtime, entries: Iterable[Entry], options: Options) -> Survey:
    """Which sources are still there (skip) and their SHA-256 (manifest), before any is written.

    Only with one of those options: otherwise the build meets a missing source as it always has.
    """
    settings = runtime.settings
    look = _hash if options.manifest else _head
    present: list[Entry] = []
    missing: list[Entry] = []
    sha256: dict[str, str] = {}
    looked = sources.in_order(
        settings.fetch_concurrency, lambda entry: look(runtime.s3, settings, entry), entries, "survey"
    )
    with contextlib.closing(looked):  # closed here, not by whichever thread collects it
        for entry, outcome in looked:
            if isinstance(outcome, SourceMissing):
                if not options.skips:
                    raise outcome
                missing.append(entry)
                continue
            present.append(entry)
            if outcome:
                sha256[entry.name] = outcome
    return Survey(present, missing, sha256)


def _head(s3: S3Client, settings: Settings, entry: Entry) -> str | SourceMissing:
    try:
        s3.head_object(Bucket=settings.source_bucket, Key=entry.key, IfMatch=entry.etag)
    except ClientError as error:
        found = sources.translate(error, entry.key)
        if isinstance(found, SourceMissing):
            return found
        raise found from None
    return ""


def _hash(s3: S3Client, settings: Settings, entry: Entry) -> str | SourceMissing:
    try:
        response = sources.open_object(s3, settings.source_bucket, entry.key, entry.etag)
    except SourceMissing as missing:
        return missing
    digest = hashlib.sha256()
    for chunk in sources.stream(response["Body"], settings.read_chunk_bytes):
        digest.update(chunk)
    return digest.hexdigest()


Look = Callable[["S3Client", Settings, Entry], "str | SourceMissing"]


def skipped_keys(download: Download, found: Survey, late: Iterable[str] = ()) -> list[str]:
    """Keys missing at Prepare (kept in the record), those the survey found gone, and those
    found gone after it (`late`, as their member was about to be written), once each.

    A retried Build computes the same list again: Prepare's keys are never in the manifest.
    """
    planned = {entry.key for entry in found.present + found.missing}
    earlier = [key for key in download.skipped if key not in planned]
    return list(dict.fromkeys(earlier + [entry.key for entry in found.missing] + list(late)))


def _record_skipped(
    runtime: Runtime, download: Download, found: Survey, tracker: ProgressTracker
) -> list[str]:
    """The skipped keys into the download; the totals without what is left out."""
    skipped = skipped_keys(download, found)
    if skipped != download.skipped and not runtime.downloads.record_skipped(download.id, skipped):
        raise Cancelled("the download was cancelled while it was being built")
    if found.missing:
        tracker.current = replace(
            tracker.current,
            files_total=tracker.current.files_total - len(found.missing),
            bytes_total=tracker.current.bytes_total - sum(entry.size for entry in found.missing),
        )
    return skipped
