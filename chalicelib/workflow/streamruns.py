"""Single-stream artifacts (a tar, a tar.gz) built across Lambda runs.

A tar has no offsets to lay out and no directory at its end, so unlike a zip built through a
segment plan (chalicelib/workflow/runs.py) a run only writes on where the last one stopped:
the type's `StreamPlan` decides where a run may stop (before a next entry, between copied
parts of a member, between two deflate chunks) and what the next run needs to go on
(`Carried`: where, and for a tar.gz the gzip stream's state and the bytes it had taken but
not compressed). The budget, the target and the outcome are runs.py's.

What the next run needs is saved in S3 under `tmp/<id>/runs/<n>/` (s3/layout.py), never in
the payload (which carries the run's number): the multipart upload's id and parts, the bytes
held short of a part, the progress, and what the plan carries. Run n reads only what run n-1
saved and writes only run n+1's keys, with part numbers following run n-1's, so a retried
run writes the very same keys and part numbers again and Step Functions' Retry duplicates
nothing. A last run saves what it reports (`finished.json`) before it completes the upload,
so a retry that finds the upload completed (its answer lost) reports that.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from chalicelib.archive import integrity
from chalicelib.archive.assembly import Assembler, CopyHandedOn
from chalicelib.core.errors import Cancelled
from chalicelib.core.models import Download, Progress
from chalicelib.downloadtypes.base import Carried, StreamPlan
from chalicelib.runtime import Runtime
from chalicelib.s3 import artifacts, layout, manifest, multipart
from chalicelib.s3.manifest import Entry
from chalicelib.s3.multipart import MultipartWriter, Saved
from chalicelib.workflow import runs
from chalicelib.workflow.progress import ProgressTracker
from chalicelib.workflow.runs import Budget, Outcome, SavedObjects, Target, Trackers


@dataclass(frozen=True)
class _State:
    """What run n saved for run n+1 (the held and carried bytes are objects of their own)."""

    upload_id: str
    parts: list[tuple[int, str]]
    size: int
    progress: Progress
    carried: dict[str, Any]
    part_size: int | None = None  # None: saved before uploads had their own (SATCHEL_PART_SIZE)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> _State:
        return cls(
            upload_id=str(raw["upload_id"]),
            parts=[(int(number), str(etag)) for number, etag in raw["parts"]],
            size=int(raw["size"]),
            progress=Progress(**raw["progress"]),
            carried=dict(raw["carried"]),
            part_size=int(raw["part_size"]) if raw.get("part_size") else None,
        )


class StreamRun(SavedObjects):
    """One Lambda run of a single-stream artifact (see the module's docstring)."""

    def __init__(
        self,
        runtime: Runtime,
        download: Download,
        plan: StreamPlan,
        target: Target,
        run: int,
        budget: Budget,
        trackers: Trackers,
    ) -> None:
        self._runtime = runtime
        self._bucket = runtime.settings.artifact_bucket
        self._download = download
        self._plan = plan
        self._target = target
        self._run = run
        self._budget = budget
        self._trackers = trackers

    def go(self) -> Outcome:
        started = self._start()
        if isinstance(started, Outcome):
            return started
        writer, state, carried = started
        tracker = self._trackers(state.progress if state else None)
        try:
            return self._go(writer, carried, tracker)
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

    def _start(self) -> tuple[MultipartWriter, _State | None, Carried | None] | Outcome:
        settings, target = self._runtime.settings, self._target
        if self._run == 0:
            # A retried first run starts over: whatever an earlier attempt left open goes first.
            artifacts.abort_uploads_of(self._runtime.s3, self._bucket, target.key)
            # The part size the plan chose (segments.part_size_for), the same in every run.
            part_size = target.part_size or settings.part_size
            writer = MultipartWriter(
                self._runtime.s3, self._bucket, target.key, part_size, target.content_type
            )
            return writer, None, None
        state = _State.from_json(json.loads(self._get(target.run_key(self._run, "state.json"))))
        if not self._open(state.upload_id):
            finished = self._finished()
            if finished is not None:
                return finished
        held = self._get(target.run_key(self._run, "held"))
        carried = Carried(state.carried, self._get(target.run_key(self._run, "carried")))
        part_size = state.part_size or settings.part_size
        saved = Saved(state.upload_id, state.parts, state.size, held, part_size)
        writer = MultipartWriter(
            self._runtime.s3, self._bucket, target.key, part_size, target.content_type, saved
        )
        return writer, state, carried

    def _open(self, upload_id: str) -> bool:
        return multipart.is_open(self._runtime.s3, self._bucket, self._target.key, upload_id)

    def _finished(self) -> Outcome | None:
        raw = runs.finished_record(
            self._runtime.s3, self._bucket, self._target.run_key(self._run, runs.FINISHED)
        )
        if raw is None:
            return None
        progress = Progress(**raw["progress"])
        return Outcome(True, self._run, int(raw["size"]), None, progress, progress.files_done)

    def _entries(self, start: int) -> Iterator[Entry]:
        read = manifest.read(self._runtime.s3, self._bucket, self._target.manifest_key)
        return itertools.islice(read, start, None)

    def _go(self, writer: MultipartWriter, carried: Carried | None, tracker: ProgressTracker) -> Outcome:
        share = self._plan.run(
            self._runtime, self._download, self._entries, carried, tracker, self._budget.low
        )
        pieces = share.pieces
        assembler = Assembler(
            self._runtime.s3, writer, self._runtime.settings.read_chunk_bytes, stop=self._budget.low
        )
        try:
            assembler.write_all(pieces)
        except CopyHandedOn as more:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
            following = share.carry(more.rest)
        else:
            following = share.carry(None)
        tracker.flush()
        if following is None:
            return self._finish(writer, tracker)
        return self._hand_on(writer, tracker, following)

    def _hand_on(self, writer: MultipartWriter, tracker: ProgressTracker, carried: Carried) -> Outcome:
        saved, following = writer.saved(), self._run + 1
        state = _State(
            saved.upload_id, saved.parts, saved.size, tracker.current, carried.state, saved.part_size
        )
        self._put(self._target.run_key(following, "held"), saved.held, "application/octet-stream")
        self._put(self._target.run_key(following, "carried"), carried.data, "application/octet-stream")
        self._put(self._target.run_key(following, "state.json"), json.dumps(asdict(state)).encode("utf-8"))
        progress = tracker.current
        return Outcome(False, following, writer.size, None, progress, progress.files_done)

    def _finish(self, writer: MultipartWriter, tracker: ProgressTracker) -> Outcome:
        target, progress = self._target, tracker.current
        # A tar has no CRC-32s to check; Digest reads the (empty) list all the same.
        integrity.write(self._runtime.s3, self._bucket, layout.checks_key(target.download_id), ())
        if self._run > 0:  # a first run's retry starts over: it needs none of this
            finished = {"size": writer.size, "progress": asdict(progress)}
            self._put(target.run_key(self._run, runs.FINISHED), json.dumps(finished).encode("utf-8"))
        sha256 = writer.complete()
        return Outcome(True, self._run, writer.size, sha256, progress, progress.files_done)
