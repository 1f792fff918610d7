"""Parallel builds: a large artifact is built in segments by a Map state, then joined by Assemble.

Prepare splits the manifest, in order, into segments (each its own manifest under
`tmp/<id>/segments/`) and hands the Map only their numbers; only a type with a segment plan
(`DownloadType.segments`, chalicelib/downloadtypes/base.py) is split. Each BuildSegment has
the plan lay its pieces out from offset 0 into a temporary object, and writes the records
the plan kept beside it. Assemble copies the segment objects into the artifact with
`UploadPartCopy`, then writes what the plan closes with from the records and the offset each
segment landed at. For the zip type (the only one with a plan): its members, then the
central directory, byte for byte the zip a single Build lays out. Like BuildSegment, Assemble
takes as many Lambda runs as it needs (`_Joining`; AssembleHandsOn loops). Everything lives
under `tmp/<id>/`, which Finalize and Fail already remove.
"""

from __future__ import annotations

import contextvars
import json
import math
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

from chalicelib import downloadtypes
from chalicelib.archive import integrity
from chalicelib.archive.assembly import Assembler, CopyHandedOn, one_part
from chalicelib.archive.integrity import Check
from chalicelib.archive.zipwriter import CopyRange
from chalicelib.core import observability
from chalicelib.core.errors import Cancelled, TooManyParts, retried_when_transient
from chalicelib.core.models import Download, Progress
from chalicelib.core.settings import S3_MIN_PART_SIZE, Settings
from chalicelib.downloadtypes.base import DownloadType, SegmentPlan
from chalicelib.runtime import Runtime
from chalicelib.s3 import artifacts, layout, manifest, multipart
from chalicelib.s3.manifest import Entry
from chalicelib.s3.multipart import MultipartWriter, Saved
from chalicelib.workflow import runs
from chalicelib.workflow.payloads import (
    AssembleRun,
    Assembling,
    SegmentBuilt,
    SegmentInput,
    SegmentList,
    counts,
)
from chalicelib.workflow.progress import ProgressTracker

# S3's bound on the parts of one multipart upload: the joined artifact and each segment's
# object are one each. It, not the payload or the execution's history, bounds a download.
S3_MAX_PARTS = 10_000


def groups(entries: list[Entry], settings: Settings) -> list[list[Entry]]:
    """Consecutive runs of entries, each closed once it holds the segment's bytes or files.

    Never more than max_segments: the limits grow (to what the total needs, then doubling).
    """
    most_bytes = max(settings.segment_bytes, math.ceil(sum(e.size for e in entries) / settings.max_segments))
    most_files = max(settings.segment_files, math.ceil(len(entries) / settings.max_segments))
    while True:
        found = _runs(entries, most_bytes, most_files)
        if len(found) <= settings.max_segments:
            return found
        most_bytes, most_files = 2 * most_bytes, 2 * most_files


def _runs(entries: list[Entry], most_bytes: int, most_files: int) -> list[list[Entry]]:
    found: list[list[Entry]] = [[]]
    size = 0
    for entry in entries:
        if size >= most_bytes or len(found[-1]) >= most_files:
            found.append([])
            size = 0
        found[-1].append(entry)
        size += entry.size
    return found


# Most bytes a zip adds to a member, headers and descriptor (ZIP64, a long name): an upper bound.
_MEMBER_OVERHEAD = 2 * 1024
_MAX_COPY_PART = 5 * 1024**3
_MIB = 1024 * 1024
# S3's largest object: what one multipart upload can hold, whatever its parts.
S3_MAX_OBJECT_BYTES = 5 * 1024**4
# The largest part the worker writes: S3's largest object in 10,000 parts (525 MiB). The
# worker holds one part in memory (chalicelib/s3/multipart.py), so this bounds its memory too.
MAX_WRITTEN_PART = math.ceil(S3_MAX_OBJECT_BYTES / S3_MAX_PARTS / _MIB) * _MIB


@dataclass(frozen=True)
class Upload:
    """An upper bound on one multipart upload: the bytes the worker writes in parts of the
    part size, the parts that do not depend on it (copied by S3, closed early before a copy,
    the last), and the bytes S3 copies."""

    written: int
    fixed: int
    copied: int = 0

    def parts(self, part_size: int) -> int:
        return math.ceil(self.written / part_size) + self.fixed


def part_size_for(upload: Upload, configured: int) -> int:
    """The part size of an upload: the smallest at least `configured` that keeps it within
    S3's 10,000 parts, rounded up to a MiB. Fixed for the whole upload (a later Lambda run
    takes it from the saved state). TooManyParts if no part size up to `MAX_WRITTEN_PART`
    fits, or the object would pass S3's 5 TiB."""
    if upload.written + upload.copied > S3_MAX_OBJECT_BYTES:
        raise TooManyParts(
            f"this download would be an object of up to {upload.written + upload.copied} bytes, "
            f"more than S3's largest ({S3_MAX_OBJECT_BYTES} bytes): download less at once",
            parts=upload.parts(MAX_WRITTEN_PART),
            limit=S3_MAX_PARTS,
        )
    room = S3_MAX_PARTS - upload.fixed
    needed = math.ceil(upload.written / room / _MIB) * _MIB if room > 0 else MAX_WRITTEN_PART + 1
    size = max(configured, needed)
    if size > max(configured, MAX_WRITTEN_PART):
        raise TooManyParts(
            f"this download would need more than S3's {S3_MAX_PARTS} parts in one upload, even "
            f"in parts of {MAX_WRITTEN_PART} bytes ({upload.fixed} of them copied by S3 or "
            "closed before a copy): raise SATCHEL_SEGMENT_BYTES, or download less at once",
            parts=upload.parts(max(configured, MAX_WRITTEN_PART)),
            limit=S3_MAX_PARTS,
        )
    return size


def _copies(entries: list[Entry], settings: Settings) -> int:
    """The parts members copied by S3 take: the part each closes and one per 5 GiB of it."""
    return sum(
        1 + math.ceil(entry.size / _MAX_COPY_PART)
        for entry in entries
        if entry.size >= settings.server_copy_min_bytes
    )


def single_upload(entries: list[Entry], settings: Settings) -> Upload:
    """One Build's upload: every byte in parts (a copied member counted as written too, to be
    safe), each copy closing one part, and the central directory."""
    size = sum(entry.size + 2 * _MEMBER_OVERHEAD for entry in entries)
    return Upload(written=size, fixed=_copies(entries, settings) + 1)


def segment_upload(group: list[Entry], settings: Settings) -> Upload:
    """One segment's object: its bytes in parts, plus, for each member S3 copies, the part
    it closes and one per 5 GiB of it."""
    size = sum(entry.size + _MEMBER_OVERHEAD for entry in group)
    return Upload(written=size, fixed=_copies(group, settings) + 1)


def joined_upload(found: list[list[Entry]]) -> Upload:
    """The joined artifact: a segment of at least 5 MiB is copied in parts of up to 5 GiB
    (closing the part written before it, if smaller segments were read through); smaller
    ones are read into parts (counted at 5 MiB each, to be safe); then the central
    directory, written in parts of the part size."""
    copied = small = read = copied_bytes = 0
    for group in found:
        size = sum(entry.size + _MEMBER_OVERHEAD for entry in group)
        if size >= S3_MIN_PART_SIZE:
            copied += math.ceil(size / _MAX_COPY_PART)
            copied_bytes += size
        else:
            small, read = small + 1, read + size
    closed = min(small, len(found) - small)  # a written part closed before a copied segment
    directory = sum(len(group) for group in found) * _MEMBER_OVERHEAD
    fixed = copied + closed + math.ceil(read / S3_MIN_PART_SIZE) + 1
    return Upload(written=directory, fixed=fixed, copied=copied_bytes + read)


def parts_needed(found: list[list[Entry]], settings: Settings) -> int:
    """An upper bound on the parts of the largest upload the plan makes, each in its part size."""
    uploads = [segment_upload(group, settings) for group in found] + [joined_upload(found)]
    return max(upload.parts(part_size_for(upload, settings.part_size)) for upload in uploads)


def single_parts_needed(entries: list[Entry], settings: Settings) -> int:
    """The same bound for one Build's upload."""
    upload = single_upload(entries, settings)
    return upload.parts(part_size_for(upload, settings.part_size))


def plan(download: Download, entries: list[Entry], settings: Settings) -> list[list[Entry]] | None:
    """The segments this download is built in (None: one Build), each upload checked against
    S3's parts and object size (TooManyParts) before anything is built. Stores nothing: a dry
    run may ask too."""
    found = _split(download, entries, settings)
    if found is None:
        part_size_for(single_upload(entries, settings), settings.part_size)
    else:
        for group in found:
            part_size_for(segment_upload(group, settings), settings.part_size)
        part_size_for(joined_upload(found), settings.part_size)
    return found


def part_size(download: Download, entries: list[Entry], settings: Settings) -> int:
    """The part size of the upload Build or Assemble writes (Prepare hands it on): larger
    than SATCHEL_PART_SIZE when the plan needs it to stay within S3's 10,000 parts."""
    found = _split(download, entries, settings)
    upload = single_upload(entries, settings) if found is None else joined_upload(found)
    return part_size_for(upload, settings.part_size)


def split(runtime: Runtime, download: Download, entries: list[Entry]) -> SegmentList | None:
    """Prepare: where the Map finds this download's segments when it is built in parallel
    (their manifests, and the list its ItemReader reads, written to S3), else None."""
    settings = runtime.settings
    found = plan(download, entries, settings)
    if found is None:
        return None
    bucket = settings.artifact_bucket
    for index, group in enumerate(found):
        manifest.write(runtime.s3, bucket, layout.segment_manifest_key(download.id, index), group)
    key = layout.segment_list_key(download.id)
    # The Map's ItemReader reads this JSON array: one item per segment, its number.
    runtime.s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=json.dumps(list(range(len(found)))).encode(),
        ContentType="application/json",
    )
    return {
        "bucket": bucket,
        "key": key,
        "count": len(found),
        "concurrency": settings.map_concurrency,
    }


def _split(download: Download, entries: list[Entry], settings: Settings) -> list[list[Entry]] | None:
    if not downloadtypes.get(download.type).can_segment(download.params):
        return None
    total = sum(entry.size for entry in entries)
    if total <= settings.parallel_min_bytes and len(entries) <= settings.parallel_min_files:
        return None
    found = groups(entries, settings)
    return found if len(found) >= 2 else None


def _load(runtime: Runtime, download_id: str) -> Download:
    download = runtime.downloads.require(download_id)
    observability.bind(download)
    return download


@retried_when_transient
def build_segment(runtime: Runtime, event: SegmentInput, budget: runs.Budget | None = None) -> SegmentBuilt:
    """One Map child's run: the segment's pieces into tmp/<id>/segments/<n>/, its records
    beside them; or, when its Lambda run is running out, as far as it got (`done` false)."""
    download_id, index, run = event["download_id"], int(event["index"]), int(event.get("run", 0))
    settings = runtime.settings
    download = _load(runtime, download_id)
    kind = downloadtypes.get(download.type)
    manifest_key = layout.segment_manifest_key(download_id, index)
    part_size = None  # a later run goes on in the part size its upload was created with
    if run == 0:
        group = list(manifest.read(runtime.s3, settings.artifact_bucket, manifest_key))
        part_size = part_size_for(segment_upload(group, settings), settings.part_size)
    target = runs.Target(
        download_id=download_id,
        segment=index,
        key=layout.segment_object_key(download_id, index),
        manifest_key=manifest_key,
        content_type=kind.artifact_format(download.params).content_type,
        part_size=part_size,
    )
    totals = Progress(**event["totals"])

    def tracker(done: Progress | None) -> ProgressTracker:
        # Shared: each segment adds what it did; every run starts counting from nothing.
        return ProgressTracker(
            runtime.downloads, download_id, totals, settings.progress_every_bytes, shared=True
        )

    budget = budget or runs.Budget.of(None, settings)
    outcome = runs.Run(runtime, download, _plan(kind), target, run, budget, tracker).go()
    output: SegmentBuilt = {
        "download_id": download_id,
        "totals": event["totals"],
        "index": index,
        "done": outcome.done,
        "size": outcome.size,
        "files": outcome.files,
    }
    if not outcome.done:
        output["run"] = outcome.run
    return output


def _plan(kind: DownloadType) -> SegmentPlan:
    if kind.segments is None:  # split() never segments such a type: only a wrong input gets here
        raise TypeError(f"download type {kind.name!r} is not built in segments")
    return kind.segments


def _directory(runtime: Runtime, download_id: str, index: int) -> Iterator[tuple[int, list[Any]]]:
    """A segment's records, run by run (chalicelib/workflow/runs.py), each with its run's offset."""
    body = runtime.s3.get_object(
        Bucket=runtime.settings.artifact_bucket, Key=layout.segment_directory_key(download_id, index)
    )
    for line in body["Body"].iter_lines():
        if line:
            offset, records = json.loads(line)
            yield int(offset), records


def _records(
    runtime: Runtime, download_id: str, placed: list[tuple[int, int]]
) -> Iterator[tuple[int, list[Any]]]:
    """Each segment's records (one segment in memory at a time) with the offset they landed at."""
    for index, offset in placed:
        for at, records in _directory(runtime, download_id, index):
            yield offset + at, records


def _checks(runtime: Runtime, download_id: str, placed: list[tuple[int, int]]) -> Iterator[Check]:
    """Every segment's checks, moved to where the segment landed in the artifact."""
    bucket = runtime.settings.artifact_bucket
    for index, offset in placed:
        for check in integrity.read(runtime.s3, bucket, layout.segment_checks_key(download_id, index)):
            yield check.moved(offset)


@retried_when_transient
def assemble(runtime: Runtime, event: Assembling, budget: runs.Budget | None = None) -> AssembleRun:
    """After the Map: the segments copied into the artifact, then the whole central directory;
    or, when its Lambda run is running out, as far as it got (`done` false: AssembleHandsOn
    runs it again, `_Joining`)."""
    download_id = event["download_id"]
    s3, bucket = runtime.s3, runtime.settings.artifact_bucket
    totals = Progress(**event["totals"])
    done = replace(totals, files_done=totals.files_total, bytes_done=totals.bytes_total)
    # Every run: a download cancelled while it is assembled is discarded at the next run.
    if not runtime.downloads.record_progress(download_id, done):
        artifacts.remove_everything(s3, bucket, download_id)
        raise Cancelled("the download was cancelled while its segments were built")
    download = _load(runtime, download_id)
    budget = budget or runs.Budget.of(None, runtime.settings)
    return _Joining(runtime, download, event, budget).go()


@dataclass(frozen=True)
class _Joined:
    """What Assemble's run n saved for run n+1 (the held bytes are an object of their own):
    the upload, the next segment to copy, where each one copied so far landed, and the rest
    of the last one's range when the run stopped between two of its copied parts."""

    upload_id: str
    parts: list[tuple[int, str]]
    size: int
    part_size: int
    next: int
    placed: list[int]
    rest: CopyRange | None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode("utf-8")

    @classmethod
    def from_json(cls, body: bytes) -> _Joined:
        raw: dict[str, Any] = json.loads(body)
        return cls(
            upload_id=str(raw["upload_id"]),
            parts=[(int(number), str(etag)) for number, etag in raw["parts"]],
            size=int(raw["size"]),
            part_size=int(raw["part_size"]),
            next=int(raw["next"]),
            placed=[int(offset) for offset in raw["placed"]],
            rest=CopyRange(**raw["rest"]) if raw["rest"] else None,
        )


class _Joining(runs.SavedObjects):
    """One Lambda run of Assemble, saving and resuming as runs.Run does (runs.py's docstring):
    it stops when its budget runs low before a next segment, between two copied parts of one
    (CopyHandedOn), or before the central directory, having copied at least one part. Run n
    reads only `tmp/<id>/assemble/<n>/` and writes only run n+1's keys, with part numbers
    following run n-1's, so a retried run writes the same keys and parts again. A last run
    saves the checks and `finished.json` before it completes the upload.

    Segments that are one part each (5 MiB to 5 GiB: the usual 512 MiB ones) following a
    part boundary are copied `fetch_concurrency` at a time: their part numbers are the next
    ones in order, fixed before any copy is sent, so the order S3 finishes them in changes
    nothing. The others (one S3 copies in several parts, one topped up to a part through the
    worker, one read through) are copied one by one, as a single Build copies a member."""

    def __init__(self, runtime: Runtime, download: Download, event: Assembling, budget: runs.Budget) -> None:
        self._runtime = runtime
        self._bucket = runtime.settings.artifact_bucket
        self._download = download
        self._event = event
        self._run = int(event.get("assemble_run", 0))
        self._budget = budget
        self._key = layout.artifact_key(download.id)

    def _saved_key(self, run: int, name: str) -> str:
        return layout.assemble_run_key(self._download.id, run, name)

    def go(self) -> AssembleRun:
        started = self._start()
        if not isinstance(started, tuple):
            return started
        writer, joined = started
        try:
            return self._go(writer, joined)
        except BaseException:
            # The first run's retry starts over; a later run's retry goes on with this upload
            # (and if the error is final, MarkFailed removes it with everything else).
            if self._run == 0:
                writer.abort()
            raise

    def _start(self) -> tuple[MultipartWriter, _Joined | None] | AssembleRun:
        s3, bucket, settings = self._runtime.s3, self._bucket, self._runtime.settings
        kind = downloadtypes.get(self._download.type)
        content_type = kind.artifact_format(self._download.params).content_type
        if self._run == 0:
            artifacts.abort_uploads_of(s3, bucket, self._key)  # a retried first run starts over
            part_size = self._event.get("part_size", settings.part_size)  # the plan's (Prepare's)
            return MultipartWriter(s3, bucket, self._key, part_size, content_type), None
        joined = _Joined.from_json(self._get(self._saved_key(self._run, "state.json")))
        if not multipart.is_open(s3, bucket, self._key, joined.upload_id):
            finished = runs.finished_record(s3, bucket, self._saved_key(self._run, runs.FINISHED))
            if finished is not None:
                return self._output(True, int(finished["size"]), None)
        held = self._get(self._saved_key(self._run, "held"))
        saved = Saved(joined.upload_id, joined.parts, joined.size, held, joined.part_size)
        writer = MultipartWriter(s3, bucket, self._key, joined.part_size, content_type, saved)
        return writer, joined

    def _go(self, writer: MultipartWriter, joined: _Joined | None) -> AssembleRun:
        low, workers = self._budget.low, self._runtime.settings.fetch_concurrency
        segment_list = self._event.get("segments")
        count = segment_list["count"] if segment_list else 0
        index = joined.next if joined else 0
        placed = list(joined.placed) if joined else []
        assembler = Assembler(self._runtime.s3, writer, self._runtime.settings.read_chunk_bytes, stop=low)
        ahead: deque[CopyRange] = deque()  # the next segments, looked up `workers` at a time
        moved = False  # a run copies something before it may stop
        try:
            if joined is not None and joined.rest is not None:
                assembler.copy(joined.rest)
                moved = True
            while index < count:
                if moved and low():
                    return self._hand_on(writer, index, placed, None)
                if not ahead:
                    ahead.extend(self._look_up(range(index, min(index + workers, count)), workers))
                together = _together(ahead, writer.buffered, workers)
                if together:
                    at = writer.size
                    for source in together:
                        placed.append(at)
                        at += source.length
                    index += len(together)
                    assembler.copy_at_once(together, workers)
                else:  # topped up to a part through the worker, or read through, or over 5 GiB
                    placed.append(writer.size)
                    index += 1
                    assembler.copy(ahead.popleft())
                moved = True
        except CopyHandedOn as more:
            return self._hand_on(writer, index, placed, more.rest)
        if moved and low():  # the central directory in a run of its own
            return self._hand_on(writer, index, placed, None)
        return self._finish(writer, placed)

    def _look_up(self, indices: range, workers: int) -> list[CopyRange]:
        """The segments' objects, their sizes and ETags asked of S3 `workers` at a time."""
        s3, bucket = self._runtime.s3, self._bucket

        def look(index: int) -> CopyRange:
            members = layout.segment_object_key(self._download.id, index)
            head = s3.head_object(Bucket=bucket, Key=members)
            return CopyRange(bucket, members, head["ETag"], 0, int(head["ContentLength"]))

        with ThreadPoolExecutor(
            max_workers=max(1, min(workers, len(indices))), thread_name_prefix="head"
        ) as pool:
            # Each in a copy of this context: the local stack's record of the calling function follows.
            futures = [pool.submit(contextvars.copy_context().run, look, index) for index in indices]
            return [future.result() for future in futures]

    def _hand_on(
        self, writer: MultipartWriter, index: int, placed: list[int], rest: CopyRange | None
    ) -> AssembleRun:
        saved, following = writer.saved(), self._run + 1
        joined = _Joined(saved.upload_id, saved.parts, saved.size, saved.part_size, index, placed, rest)
        self._put(self._saved_key(following, "held"), saved.held, "application/octet-stream")
        self._put(self._saved_key(following, "state.json"), joined.to_json())
        return self._output(False, writer.size, None, following)

    def _finish(self, writer: MultipartWriter, placed: list[int]) -> AssembleRun:
        runtime, download = self._runtime, self._download
        s3, bucket = runtime.s3, self._bucket
        where = list(enumerate(placed))
        plan = _plan(downloadtypes.get(download.type))
        closing = plan.closing(download, _records(runtime, download.id, where), writer.size)
        Assembler(s3, writer, runtime.settings.read_chunk_bytes).write_all(closing)
        # Everything the next steps read is written before the upload completes: a retry that
        # finds it completed (its answer lost) then only reports what was saved.
        integrity.write(s3, bucket, layout.checks_key(download.id), _checks(runtime, download.id, where))
        if self._run > 0:  # a first run's retry starts over: it needs none of this
            self._put(self._saved_key(self._run, runs.FINISHED), json.dumps({"size": writer.size}).encode())
        sha256 = writer.complete()
        return self._output(True, writer.size, sha256)

    def _output(self, done: bool, size: int, sha256: str | None, following: int | None = None) -> AssembleRun:
        totals = Progress(**self._event["totals"])
        finished = replace(totals, files_done=totals.files_total, bytes_done=totals.bytes_total)
        output: AssembleRun = {
            "download_id": self._download.id,
            "totals": self._event["totals"],
            "parallel": self._event["parallel"],
            "artifact_key": self._key,
            "size": size,
            "sha256": sha256,
            "progress": counts(finished),
            "done": done,
        }
        if "segments" in self._event:  # what the next run reads
            output["segments"] = self._event["segments"]
        if "part_size" in self._event:
            output["part_size"] = self._event["part_size"]
        if following is not None:
            output["assemble_run"] = following
        return output


def _together(ahead: deque[CopyRange], held: int, workers: int) -> list[CopyRange]:
    """The next segments S3 may copy at once, taken from `ahead`: each one whole part, after a
    part boundary (no bytes `held` short of a part), so their part numbers are the next ones
    in order, fixed before any copy is sent."""
    together: list[CopyRange] = []
    while ahead and len(together) < workers and not held and one_part(ahead[0]):
        together.append(ahead.popleft())
    return together
