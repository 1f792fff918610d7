"""The `zip` type's archive options: `format` (zip, tar, tar.gz), `manifest` and `on_missing`.

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
  A source that vanishes after the survey, before its own read, ends that Build attempt
  with `TransientError`: the state machine's Retry runs Build again, whose survey leaves it
  out. `fail` (the default) fails the download `SourceMissing`.
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
from chalicelib.archive.zipwriter import CopyRange, Piece, ZipLayout
from chalicelib.core import clock
from chalicelib.core.errors import Cancelled, SourceMissing, TransientError
from chalicelib.core.models import Download, Principal
from chalicelib.core.settings import Settings
from chalicelib.downloadtypes.base import (
    ArtifactFormat,
    Carried,
    Check,
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

FORMATS: dict[str, ArtifactFormat] = {
    "zip": ArtifactFormat(".zip", "application/zip"),
    "tar": ArtifactFormat(".tar", "application/x-tar"),
    "tar.gz": ArtifactFormat(".tar.gz", "application/gzip"),
}
SUMS_NAME = "SHA256SUMS"
MISSING_NAME = "MISSING.txt"

PARAMS_PROPERTIES: dict[str, Any] = {
    "format": {
        "enum": list(FORMATS),
        "default": "zip",
        "description": "zip, or POSIX pax tar (tar.gz: one gzip stream). The file's extension follows.",
    },
    "manifest": {
        "type": "boolean",
        "default": False,
        "description": f"Add {SUMS_NAME} at the root, in `sha256sum -c` format "
        "(each source is read once more to hash it).",
    },
    "on_missing": {
        "enum": ["fail", "skip"],
        "default": "fail",
        "description": "fail: a missing source fails the download (SourceMissing). skip: it is left "
        f"out and listed in the download's `skipped` and in {MISSING_NAME} in the archive.",
    },
}


@dataclass(frozen=True)
class Options:
    format: str = "zip"
    manifest: bool = False
    on_missing: str = "fail"

    @classmethod
    def of(cls, params: dict[str, Any]) -> Options:
        return cls(
            format=str(params.get("format", "zip")),
            manifest=bool(params.get("manifest", False)),
            on_missing=str(params.get("on_missing", "fail")),
        )

    @property
    def skips(self) -> bool:
        return self.on_missing == "skip"

    @property
    def reserved_names(self) -> tuple[str, ...]:
        """Root names the archive's own files take: a source with such a name gets ' (2)'."""
        return (SUMS_NAME,) * self.manifest + (MISSING_NAME,) * self.skips

    def to_params(self) -> dict[str, Any]:
        return {"format": self.format, "manifest": self.manifest, "on_missing": self.on_missing}


def checked(check: Check) -> Check:
    """`check` with the options' defaults filled into the normalised params."""

    def check_with_options(
        params: dict[str, Any], principal: Principal, settings: Settings
    ) -> dict[str, Any]:
        return {**check(params, principal, settings), **Options.of(params).to_params()}

    return check_with_options


def artifact_format(params: dict[str, Any]) -> ArtifactFormat:
    return FORMATS[Options.of(params).format]


def segmentable(params: dict[str, Any]) -> bool:
    """Only a plain zip is joined from parallel segments."""
    return Options.of(params) == Options()


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
        present: Iterator[Entry] = entries  # streamed from the manifest, unless surveyed first
        extras: list[tuple[str, bytes]] = []
        if options.manifest or options.skips:
            found = survey(runtime, list(entries), options)
            skipped = _record_skipped(runtime, download, found, tracker) if options.skips else []
            present, extras = iter(found.present), _extras(found, skipped, options)
        pieces = _pieces(runtime, download, present, extras, tracker, options)
        try:
            yield from pieces
        except SourceMissing as gone:
            if not options.skips:
                raise
            # Gone after the survey saw it: the Build's Retry surveys again and leaves it out.
            raise TransientError(f"{gone.message}; the build starts again without it") from gone

    def _pieces(
        runtime: Runtime,
        download: Download,
        entries: Iterator[Entry],
        extras: list[tuple[str, bytes]],
        tracker: ProgressTracker,
        options: Options,
    ) -> Iterator[Piece]:
        if options.format == "zip":
            layout = layout_for(download)
            yield from members(runtime, download, entries, tracker, layout)
            for name, data in extras:
                yield from layout.known(name, zlib.crc32(data), len(data), [data] if data else [])
            yield from zipwriter.closing(layout.members, layout.offset)
            _write_checks(runtime, download, layout.unverified)
            return
        when = int(clock.parse(download.created_at).timestamp())
        tar = tar_pieces(runtime, entries, extras, tracker, when, copy=options.format == "tar")
        if options.format == "tar":
            yield from tar
        else:
            level = int(download.params.get("compression_level", deflate.DEFAULT_LEVEL))
            yield from tarwriter.gzipped(tar, level)
        _write_checks(runtime, download, ())  # a tar has no CRC-32s to check

    return render


def _write_checks(runtime: Runtime, download: Download, checks: Iterable[integrity.Check]) -> None:
    """The checks Digest makes of copied members, written even when there are none: Digest
    reads them whenever S3 copied a part, and a retried Build must not leave an earlier
    attempt's."""
    key = layout.checks_key(download.id)
    integrity.write(runtime.s3, runtime.settings.artifact_bucket, key, checks)


def _extras(found: Survey, skipped: list[str], options: Options) -> list[tuple[str, bytes]]:
    """The archive's own files, after the sources: (name at the root, bytes)."""
    extras = []
    if options.manifest:
        # Safe names hold no backslash or newline (names.py): no line needs sha256sum's escaping.
        lines = (f"{found.sha256[entry.name]}  {entry.name}\n" for entry in found.present)
        extras.append((SUMS_NAME, "".join(lines).encode("utf-8")))
    if skipped:
        extras.append((MISSING_NAME, "".join(f"{key}\n" for key in skipped).encode("utf-8")))
    return extras


def tar_pieces(
    runtime: Runtime,
    entries: Iterable[Entry],
    extras: list[tuple[str, bytes]],
    tracker: ProgressTracker,
    mtime: int,
    *,
    copy: bool,
) -> Iterator[Piece]:
    """A pax tar of the sources then the extras (stamped `mtime`); with `copy`, large members
    are copied by S3."""
    return TarStream(runtime, iter(entries), tracker, copy=copy, extras=extras, mtime=mtime).pieces()


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
    ) -> None:
        self._runtime = runtime
        self._entries = entries
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
            entry = next(entries)
            if self._copied(entry):
                yield from self._copy_of(entry, self.at.offset)
            else:
                stopped_at = yield from self._bytes_of(entry, self._range_of(entry), self.at.offset)
                if stopped_at is not None:
                    self._stopped(index, stopped_at)
                    return
            yield tarwriter.padding(entry.size)
            index, wrote = index + 1, True
        window = sources.Window(
            settings.fetch_concurrency, settings.fetch_window_bytes, settings.read_chunk_bytes
        )
        order, read = itertools.tee(entries)
        fetched = sources.fetch(self._runtime.s3, bucket, (e for e in read if not self._copied(e)), window)
        for entry in order:
            if wrote and self._stop():
                self._stopped(index, 0)
                return
            self.current = index
            if self._copied(entry):
                # Entry times are the sources' LastModified, as in a zip: the same sources,
                # the same bytes.
                modified = sources.last_modified(self._runtime.s3, bucket, entry)
                yield tarwriter.header(entry.name, entry.size, int(modified.timestamp()))
                yield from self._copy_of(entry, 0)
            else:
                source = next(fetched)
                yield tarwriter.header(entry.name, entry.size, int(source.modified.timestamp()))
                stopped_at = yield from self._bytes_of(entry, source.chunks, 0)
                if stopped_at is not None:
                    self._stopped(index, stopped_at)
                    return
            yield tarwriter.padding(entry.size)
            index, wrote = index + 1, True
        for name, data in self._extras:
            yield from tarwriter.member(name, data, self._mtime)
        yield tarwriter.END

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
    SHA256SUMS and MISSING.txt the last run writes from the survey's parts."""

    def accepts(self, params: dict[str, Any]) -> bool:
        return Options.of(params).format != "zip"

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
        )
        try:
            yield from self._tar.pieces()
        except SourceMissing as gone:
            if not self._options.skips:
                raise
            # Gone after the survey saw it, as in a build in one run: Build's Retry goes again
            # (a first run's retry surveys again and leaves it out; a later run's finds it gone
            # again, and the download fails).
            raise TransientError(f"{gone.message}; the build starts again without it") from gone

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
            _record_skipped(self._runtime, self._download, self._found(), self._tracker)

    def _looks(self) -> Iterator[tuple[Entry, bool, str]]:
        return _looks(self._runtime, self._download.id, self._entries(0), self._parts)

    def _present(self, start: int) -> Iterator[Entry]:
        present = (entry for entry, there, _ in self._looks() if there)
        return itertools.islice(present, start, None)

    def _found(self) -> Survey:
        return _found(self._looks())

    def _extras(self) -> Iterator[tuple[str, bytes]]:
        """SHA256SUMS and MISSING.txt, from the survey's parts: read only by the last run."""
        found = self._found()
        skipped = skipped_keys(self._download, found) if self._options.skips else []
        yield from _extras(found, skipped, self._options)

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


@dataclass(frozen=True)
class _ZipSegment:
    """The plain zip's segment, a source gone since the survey made a retry (`on_missing: skip`)."""

    built: SegmentBuild

    @property
    def pieces(self) -> Iterator[Piece]:
        try:
            yield from self.built.pieces
        except SourceMissing as gone:
            # Gone after the survey saw it, as in a tar built across runs: Build's Retry goes
            # again (the run that ended the survey surveys again and leaves it out; a later
            # run finds it gone again, and the download fails).
            raise TransientError(f"{gone.message}; the build starts again without it") from gone

    def records(self) -> list[Any]:
        return self.built.records()

    def take_records(self, batch: int) -> list[Any]:
        return self.built.take_records(batch)

    def checks(self) -> list[integrity.Check]:
        return self.built.checks()

    def carried(self) -> tuple[int, Any] | None:
        return self.built.carried()


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
        built = self._plain.build(
            runtime, download, entries, tracker, start=start, carried=carried, stop=stop
        )
        return _ZipSegment(built) if Options.of(download.params).skips else built

    def closing(
        self, download: Download, placed: Iterator[tuple[int, list[Any]]], offset: int
    ) -> Iterator[Piece]:
        runtime, options = self._runtime, Options.of(download.params)
        bucket = runtime.settings.artifact_bucket
        entries = manifest.read(runtime.s3, bucket, layout.manifest_key(download.id))
        found = _found(_looks(runtime, download.id, entries, self._parts))
        skipped = skipped_keys(download, found) if options.skips else []
        zip_layout = self._layout_for(download, offset)
        for name, data in _extras(found, skipped, options):
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
        options = Options.of(params)
        return options.format == "zip" and (options.manifest or options.skips)

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


def skipped_keys(download: Download, found: Survey) -> list[str]:
    """Keys missing at Prepare (kept in the record) and those the survey found gone, once each.

    A retried Build computes the same list again: Prepare's keys are never in the manifest.
    """
    planned = {entry.key for entry in found.present + found.missing}
    earlier = [key for key in download.skipped if key not in planned]
    return list(dict.fromkeys(earlier + [entry.key for entry in found.missing]))


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


def prepare_skip(skipped: list[str], runtime: Runtime, download: Download) -> None:
    """Prepare: keep the keys that did not exist in the download (a retried Prepare rewrites them)."""
    if skipped != download.skipped and not runtime.downloads.record_skipped(download.id, skipped):
        raise Cancelled("the download was cancelled while it was being prepared")
