"""Builds that outlast one Lambda run: a step hands on before its run ends, and the state
machine runs it again (BuildHandsOn, SegmentHandsOn) from where it stopped.

A build through a segment plan (the plain zip: `DownloadType.segments`) lays out its members
run by run, as segments are laid out: each run's members from offset 0, placed at the size
the upload had when the run began, their records kept per run under `tmp/<id>/.../runs/<n>/`
(s3/layout.py). Before pulling the next manifest entry a run asks its `Budget` whether less
than `handoff_reserve_ms` is left of the Lambda run; if so it stops at that member boundary
(it always writes at least one member). A large stored member copied by S3 may also stop
between two copied parts (`CopyHandedOn`): the rest of its range is carried on; and one
whose CRC-32 S3 cannot give, before its header, between two ranges of the first pass that
reads it for that CRC (chalicelib/downloadtypes/archive.py). A member
whose bytes pass through the worker may stop between two of its read chunks (the plan asks
the same budget: `build(stop=)`), deflated or stored (in a store zip, a member below the
copy threshold; in a deflate zip, a file compressed already, whatever its size): its header
and bytes so far are written (or, for a stored one whose CRC-32 is still being read, none
of it: chalicelib/downloadtypes/archive.py `_through`), and the plan says where it stopped
(`SegmentBuild.carried`: for the zip plan the member's method, the source's offset, the
CRC-32 and sizes so far, and a deflated one's last 32 KiB).
The next run's members are then laid out from that member's header (`placed` is its
offset), and the plan goes on with it before the next entry. (A state saved before the
member's method was carried is not read: no deployed execution was handing on inside a
member when it was added.)

What the next run needs is saved in S3, never in the payload (which carries the run's
number): the multipart upload's id, its part size (the plan's, fixed for the upload) and
its parts (number, ETag), the bytes held short of a part, the next manifest entry, the
offset each run began at, the progress, a member's range still to copy or the member it
stopped inside, and the sources the plan left out (`LeavesOut`: a zip with `on_missing:
skip` leaves out a source found gone after its survey; the last run hands them to the
closing in the download's `skipped`). Run n reads only what run n-1 saved and writes only
run n's and run n+1's keys, with part numbers following run n-1's: a retried run writes the
very same keys and part numbers again, so Step Functions' Retry duplicates nothing. (Parts
a failed attempt wrote beyond them are left out of the completed upload, which lists its
parts.) A last run writes what the next steps read (checks, a segment's directory,
`finished.json`) before it completes the upload, so a retry that finds the upload gone
because an earlier attempt completed it (the answer lost) reports what that attempt saved.
The SHA-256 of the earlier runs' bytes is not carried: a build of more than one run ends
with `sha256` None, and the Digest step hashes the artifact.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from botocore.exceptions import ClientError

from chalicelib.archive import integrity
from chalicelib.archive.assembly import Assembler, CopyHandedOn
from chalicelib.archive.integrity import Check
from chalicelib.archive.zipwriter import CopyRange, Member, Piece
from chalicelib.core.errors import Cancelled
from chalicelib.core.models import Download, Progress
from chalicelib.core.settings import Settings
from chalicelib.downloadtypes.base import SegmentBuild, SegmentPlan
from chalicelib.runtime import Runtime
from chalicelib.s3 import artifacts, layout, manifest, multipart
from chalicelib.s3.manifest import Entry
from chalicelib.s3.multipart import MultipartWriter, Saved
from chalicelib.workflow.progress import ProgressTracker

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_s3.client import S3Client

# When a handler is called without a Lambda context (a step called directly): no deadline.
_NO_DEADLINE_MS = 2**62
# A run's central directory records are written to S3 this many at a time as its members are
# laid out (`directory-<k>.jsonl` beside the run's `directory.jsonl`, which holds the rest),
# so a worker holds at most this many whatever the file count; `_runs` reads them back one
# batch at a time. 1,000 rather than more: the Build worker's peak RSS at 10,000 files was 4
# MiB higher with batches of 5,000 (what the allocator keeps of a batch once it is written),
# and a PUT per 1,000 members is nothing beside their GETs.
RECORDS_BATCH = 1_000


@dataclass(frozen=True)
class Budget:
    """What is left of the Lambda run, and how much of it to keep for handing on."""

    remaining_ms: Callable[[], int]
    reserve_ms: int

    def low(self) -> bool:
        return self.remaining_ms() < self.reserve_ms

    @classmethod
    def of(cls, context: Any, settings: Settings) -> Budget:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is None:
            return cls(lambda: _NO_DEADLINE_MS, settings.handoff_reserve_ms)
        return cls(remaining, settings.handoff_reserve_ms)


@dataclass(frozen=True)
class Target:
    """What a build writes: the artifact itself (`segment` None) or one segment's object."""

    download_id: str
    segment: int | None
    key: str
    manifest_key: str
    content_type: str
    # The upload's part size, for the first run to create it with (segments.part_size_for);
    # later runs take the one saved with the upload. None: SATCHEL_PART_SIZE.
    part_size: int | None = None

    def run_key(self, run: int, name: str) -> str:
        return layout.run_key(self.download_id, self.segment, run, name)


@dataclass(frozen=True)
class Pending:
    """A stored member's range still to copy, and the check its data gets once it is whole."""

    bucket: str
    key: str
    etag: str
    start: int
    end: int
    name: str
    data_at: int
    size: int
    crc: int

    @property
    def rest(self) -> CopyRange:
        return CopyRange(self.bucket, self.key, self.etag, self.start, self.end)

    @property
    def check(self) -> Check:
        return Check(self.name, self.data_at, self.size, self.crc)


@dataclass(frozen=True)
class Carried:
    """A member the plan stopped inside, between two chunks read through the worker (deflated
    or stored: the plan's JSON says which): `at` is where its header is in the upload,
    `member` the plan's JSON for it (header at 0)."""

    at: int
    member: Any


@dataclass(frozen=True)
class Outcome:
    done: bool
    run: int  # the next run's number, when not done
    size: int
    sha256: str | None
    progress: Progress
    files: int


@dataclass(frozen=True)
class _State:
    """What run n saved for run n+1 (the held bytes are an object of their own)."""

    upload_id: str
    parts: list[tuple[int, str]]
    size: int
    part_size: int | None  # None: saved before uploads had their own (SATCHEL_PART_SIZE)
    next: int
    placed: list[int]
    progress: Progress
    files: int
    pending: Pending | None
    carried: Carried | None = None
    # Batches of records each run in `placed` wrote as it went (RECORDS_BATCH: none in a
    # state saved before there were any).
    batches: list[int] = field(default_factory=list)
    # The sources earlier runs left out (LeavesOut), for the closing's list of them.
    gone: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> _State:
        pending = raw.get("pending")
        return cls(
            upload_id=str(raw["upload_id"]),
            parts=[(int(number), str(etag)) for number, etag in raw["parts"]],
            size=int(raw["size"]),
            part_size=int(raw["part_size"]) if raw.get("part_size") else None,
            next=int(raw["next"]),
            placed=[int(offset) for offset in raw["placed"]],
            progress=Progress(**raw["progress"]),
            files=int(raw["files"]),
            pending=Pending(**pending) if pending else None,
            carried=Carried(**raw["carried"]) if raw.get("carried") else None,
            batches=[int(count) for count in raw.get("batches", [0] * len(raw["placed"]))],
            gone=[str(key) for key in raw.get("gone", [])],
        )


class _Budgeted:
    """The manifest's entries until the budget runs low (never before the first one)."""

    def __init__(self, entries: Iterable[Entry], budget: Budget) -> None:
        self._entries = entries
        self._budget = budget
        self.taken = 0
        self.exhausted = False

    def __iter__(self) -> Iterator[Entry]:
        for entry in self._entries:
            if self.taken and self._budget.low():
                return
            self.taken += 1
            yield entry
        self.exhausted = True


Trackers = Callable[[Progress | None], ProgressTracker]


@runtime_checkable
class LeavesOut(Protocol):
    """A segment build that may leave sources out (a zip with `on_missing: skip`:
    chalicelib/downloadtypes/archiveoptions.py): after its pieces, the keys of the sources it
    found gone as their member was about to be written, in order. Each was an entry taken."""

    def left_out(self) -> list[str]: ...


def _left_out(segment: SegmentBuild) -> list[str]:
    return segment.left_out() if isinstance(segment, LeavesOut) else []


class SavedObjects:
    """What a run saves for the next one, and reads of what the last one saved: objects in
    the artifact bucket (Run here, StreamRun in streamruns.py)."""

    _runtime: Runtime
    _bucket: str

    def _put(self, key: str, body: bytes, content_type: str = "application/json") -> None:
        self._runtime.s3.put_object(Bucket=self._bucket, Key=key, Body=body, ContentType=content_type)

    def _get(self, key: str) -> bytes:
        body: bytes = self._runtime.s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        return body


class Run(SavedObjects):
    """One Lambda run of a build through a segment plan (see the module's docstring)."""

    def __init__(
        self,
        runtime: Runtime,
        download: Download,
        plan: SegmentPlan,
        target: Target,
        run: int,
        budget: Budget,
        trackers: Trackers,
    ) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self._bucket = runtime.settings.artifact_bucket
        self._download = download
        self._plan = plan
        self._target = target
        self._run = run
        self._budget = budget
        self._trackers = trackers

    def _start(self) -> tuple[MultipartWriter, _State | None] | Outcome:
        settings, target = self._settings, self._target
        if self._run == 0:
            # A retried first run starts over: whatever an earlier attempt left open goes first.
            artifacts.abort_uploads_of(self._runtime.s3, self._bucket, target.key)
            part_size = target.part_size or settings.part_size
            s3, bucket = self._runtime.s3, self._bucket
            writer = MultipartWriter(s3, bucket, target.key, part_size, target.content_type)
            return writer, None
        state = _State.from_json(json.loads(self._get(target.run_key(self._run, "state.json"))))
        if not self._open(state.upload_id):
            finished = self._finished()
            if finished is not None:
                return finished
        held = self._get(target.run_key(self._run, "held"))
        part_size = state.part_size or settings.part_size
        saved = Saved(state.upload_id, state.parts, state.size, held, part_size)
        writer = MultipartWriter(
            self._runtime.s3, self._bucket, target.key, part_size, target.content_type, saved
        )
        return writer, state

    def _open(self, upload_id: str) -> bool:
        return multipart.is_open(self._runtime.s3, self._bucket, self._target.key, upload_id)

    def _finished(self) -> Outcome | None:
        raw = finished_record(self._runtime.s3, self._bucket, self._target.run_key(self._run, FINISHED))
        if raw is None:
            return None
        return Outcome(
            True, self._run, int(raw["size"]), None, Progress(**raw["progress"]), int(raw["files"])
        )

    def go(self) -> Outcome:
        started = self._start()
        if isinstance(started, Outcome):
            return started
        writer, state = started
        tracker = self._trackers(state.progress if state else None)
        try:
            outcome = self._go(writer, state, tracker)
        except Cancelled:
            writer.abort()
            artifacts.remove_everything(self._runtime.s3, self._bucket, self._target.download_id)
            raise
        except BaseException:
            # The first run's retry starts over; a later run's retry goes on with this upload
            # (and if the error is final, MarkFailed removes it with everything else).
            if self._run == 0:
                writer.abort()
            raise
        return outcome

    def _go(self, writer: MultipartWriter, state: _State | None, tracker: ProgressTracker) -> Outcome:
        target = self._target
        start = state.next if state else 0
        placed = list(state.placed) if state else []
        batches = list(state.batches) if state else []
        written: list[int] = []  # the sizes of the batches of records this run wrote so far
        files = state.files if state else 0
        pending = state.pending if state else None
        carried = state.carried if state else None
        gone = list(state.gone) if state else []
        assembler = Assembler(
            self._runtime.s3, writer, self._settings.read_chunk_bytes, stop=self._budget.low
        )
        checks: list[Check] = []
        records: list[Any] = []
        exhausted = False
        if pending is not None:
            try:
                assembler.copy(pending.rest)
            except CopyHandedOn as more:
                pending = Pending(**{**asdict(pending), "start": more.rest.start})
            else:
                checks.append(pending.check)
                tracker.advance(files=1, bytes_=pending.size)
                pending = None
        # Where this run's members are laid out from: the header of a member an earlier run
        # stopped inside, else the upload's end (after a member carried on, if any).
        run_offset = carried.at if carried else writer.size
        if pending is None:
            entries = itertools.islice(
                manifest.read(self._runtime.s3, self._bucket, target.manifest_key), start, None
            )
            budgeted = _Budgeted(entries, self._budget)
            segment = self._plan.build(
                self._runtime, self._download, iter(budgeted), tracker,
                start=writer.size - run_offset, carried=carried.member if carried else None,
                stop=self._budget.low,
            )  # fmt: skip
            pieces = self._batched(segment.pieces, segment, written)
            try:
                assembler.write_all(pieces)
            except CopyHandedOn as more:
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()
                records = segment.records()
                # The zip plan (the only one) records a member before its bytes: the last one.
                member = Member.from_json(records[-1])
                rest = more.rest
                pending = Pending(
                    rest.bucket, rest.key, rest.etag, rest.start, rest.end,
                    member.name, more.began_at, member.size, member.crc,
                )  # fmt: skip
                left = _left_out(segment)
                start = _after_copy(start, sum(written) + len(records) + len(left), carried is not None)
                # A member this run resumed is whole (a member stops at most once a run, and
                # this one reached a later member): the next run lays out from the upload's
                # end after the copy, not from that member's header, and never resumes it again.
                carried = None
            else:
                records = segment.records()
                left = _left_out(segment)
                stopped = segment.carried()
                if stopped is None:
                    start += budgeted.taken
                    exhausted = budgeted.exhausted
                else:
                    # The sources left out were entries taken, as the members finished were.
                    finished = sum(written) + len(records) + len(left)
                    start = _next_entry(start, finished, carried is not None)
                carried = Carried(run_offset + stopped[0], stopped[1]) if stopped else None
            checks += [check.moved(run_offset) for check in segment.checks()]
            gone += left
        tracker.flush()
        files += sum(written) + len(records)
        placed.append(run_offset)
        batches.append(len(written))
        if exhausted and pending is None:
            # The last run's records and checks are still in memory: only earlier runs' are read.
            return self._finish(writer, tracker, placed, batches, files, records, checks, gone)
        self._put(target.run_key(self._run, "directory.jsonl"), _lines(records), "application/x-ndjson")
        integrity.write(self._runtime.s3, self._bucket, target.run_key(self._run, "checks.jsonl"), checks)
        return self._hand_on(writer, tracker, start, placed, batches, files, pending, carried, gone)

    def _batched(self, pieces: Iterator[Piece], segment: SegmentBuild, written: list[int]) -> Iterator[Piece]:
        """The pieces, the records laid out so far written to S3 in batches on the way (after a
        piece is written, so a retried run writes the same batches under the same keys)."""
        for piece in pieces:
            yield piece
            records = segment.take_records(RECORDS_BATCH)
            if records:
                key = self._target.run_key(self._run, f"directory-{len(written)}.jsonl")
                self._put(key, _lines(records), "application/x-ndjson")
                written.append(len(records))

    def _hand_on(
        self,
        writer: MultipartWriter,
        tracker: ProgressTracker,
        start: int,
        placed: list[int],
        batches: list[int],
        files: int,
        pending: Pending | None,
        carried: Carried | None,
        gone: list[str],
    ) -> Outcome:
        saved, following = writer.saved(), self._run + 1
        state = _State(
            upload_id=saved.upload_id,
            parts=saved.parts,
            size=saved.size,
            part_size=saved.part_size,
            next=start,
            placed=placed,
            progress=tracker.current,
            files=files,
            pending=pending,
            carried=carried,
            batches=batches,
            gone=gone,
        )
        self._put(self._target.run_key(following, "held"), saved.held, "application/octet-stream")
        self._put(self._target.run_key(following, "state.json"), state.to_json().encode("utf-8"))
        return Outcome(False, following, writer.size, None, tracker.current, files)

    def _runs(
        self, placed: list[int], batches: list[int], last: list[Any]
    ) -> Iterator[tuple[int, list[Any]]]:
        """Each run's records (one batch in memory at a time) with the offset the run began at."""
        for run, offset in enumerate(placed):
            for batch in range(batches[run]):
                yield offset, self._records(self._target.run_key(run, f"directory-{batch}.jsonl"))
            if run < len(placed) - 1:
                yield offset, self._records(self._target.run_key(run, "directory.jsonl"))
        yield placed[-1], last

    def _records(self, key: str) -> list[Any]:
        return [json.loads(line) for line in self._get(key).decode("utf-8").splitlines() if line]

    def _checks(self, placed: list[int], last: list[Check]) -> Iterator[Check]:
        s3, target = self._runtime.s3, self._target
        for run in range(len(placed) - 1):
            yield from integrity.read(s3, self._bucket, target.run_key(run, "checks.jsonl"))
        yield from last

    def _finish(
        self,
        writer: MultipartWriter,
        tracker: ProgressTracker,
        placed: list[int],
        batches: list[int],
        files: int,
        records: list[Any],
        checks: list[Check],
        gone: list[str],
    ) -> Outcome:
        s3, bucket, target = self._runtime.s3, self._bucket, self._target
        # Everything the next steps read is written before the upload completes: a retry
        # that finds it completed (its answer lost) then only reports what was saved.
        if target.segment is None:
            # The artifact: what the plan closes with (a zip's central directory, with its
            # list of the sources left out: those the runs left out are in `skipped`), then done.
            download = self._download
            if gone:
                download = replace(download, skipped=list(dict.fromkeys([*download.skipped, *gone])))
            closing = self._plan.closing(download, self._runs(placed, batches, records), writer.size)
            Assembler(s3, writer, self._settings.read_chunk_bytes).write_all(closing)
            integrity.write(s3, bucket, layout.checks_key(target.download_id), self._checks(placed, checks))
        else:
            # A segment: its runs' records, each line one run's, for Assemble to place.
            runs = self._runs(placed, batches, records)
            directory = "".join(json.dumps([offset, each]) + "\n" for offset, each in runs)
            key = layout.segment_directory_key(target.download_id, target.segment)
            self._put(key, directory.encode("utf-8"), "application/x-ndjson")
            checks_key = layout.segment_checks_key(target.download_id, target.segment)
            integrity.write(s3, bucket, checks_key, list(self._checks(placed, checks)))
        if self._run > 0:  # a first run's retry starts over: it needs none of this
            finished = {"size": writer.size, "files": files, "progress": asdict(tracker.current)}
            self._put(target.run_key(self._run, FINISHED), json.dumps(finished).encode("utf-8"))
        sha256 = writer.complete()
        return Outcome(True, self._run, writer.size, sha256, tracker.current, files)


def _next_entry(start: int, records: int, resumed: bool) -> int:
    """The manifest entry after the member a run stopped inside. `start` is the first entry the
    run pulled; `records` the members it finished, the first of them the one it went on with
    (`resumed`) unless that one stopped again (then no entry was pulled, and none finished)."""
    if resumed and records == 0:
        return start
    return start + records - (1 if resumed else 0) + 1


def _after_copy(start: int, records: int, resumed: bool) -> int:
    """The manifest entry after the member a run handed on inside its copy. `start` is the
    first entry the run pulled; `records` the members it recorded (the copied one among them:
    a copy is recorded before its bytes) and the sources it left out; the first of them, if
    the run went on with a member an earlier run stopped inside (`resumed`), is not an entry
    this run pulled: `_next_entry` counted it already."""
    return start + records - (1 if resumed else 0)


FINISHED = "finished.json"


def finished_record(s3: S3Client, bucket: str, key: str) -> dict[str, Any] | None:
    """A retried last run whose upload is gone: if an earlier attempt completed it (the answer
    to CompleteMultipartUpload was lost), what that attempt saved at `key` just before; None
    if it never completed (then the resumed upload's own calls report what happened)."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    record: dict[str, Any] = json.loads(body)
    return record


def _lines(records: list[Any]) -> bytes:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode("utf-8")
