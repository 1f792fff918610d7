"""A table type's Build across Lambda runs: exports, audit trails and listings hand on
between pages of rows, and BuildHandsOn runs Build again from where it stopped.

A run writes pages of rows (its type's `RowSource`, from a cursor: DynamoDB's
LastEvaluatedKey, S3's continuation token) through a `RowWriter` into the artifact's
multipart upload. After each page but the last it asks its `Budget` whether less than
`handoff_reserve_ms` is left of the Lambda run (it always writes at least one page); if so
it saves what the next run needs under `tmp/<id>/runs/<n+1>/` (s3/layout.py) and stops:
the cursor after its last page, the writer's state (rows and bytes so far, for the caps; the
CSV header or JSON bracket written; a gzip stream's CRC, length and last 32 KiB), the
progress, and the upload (its id and parts in `rows.json`, the bytes held short of a part
in `held`). The encodings are such that the bytes do not depend on where runs end
(chalicelib/downloadtypes/rowformats.py): a build of many runs writes those of one run.

As with a zip's runs (chalicelib/workflow/runs.py), run n reads only what run n-1 saved and
writes only run n+1's keys, with part numbers following run n-1's: a retried run writes the
same keys and parts again and duplicates nothing. A first run's retry starts over. A last run
of several saves `finished.json` before it completes the upload, so a retry that finds the
upload completed (the answer lost) reports what was saved; and, as its SHA-256 is not
carried, it ends with `sha256` None (the Digest step hashes the artifact, with no checks).
Everything lies under the download's temporary prefix: Finalize and MarkFailed remove it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from chalicelib.archive import integrity
from chalicelib.core.errors import Cancelled
from chalicelib.core.models import Download, Progress
from chalicelib.downloadtypes.base import DownloadType, RowSource
from chalicelib.downloadtypes.rows import RowWriter
from chalicelib.runtime import Runtime
from chalicelib.s3 import artifacts, layout, multipart
from chalicelib.s3.multipart import MultipartWriter, Saved
from chalicelib.workflow import segments
from chalicelib.workflow.payloads import Built, Prepared, counts
from chalicelib.workflow.progress import ProgressTracker
from chalicelib.workflow.runs import FINISHED, Budget, finished_record

STATE = "rows.json"
HELD = "held"


class RowRun:
    """One Lambda run of a table type's Build (see the module's docstring)."""

    def __init__(
        self, runtime: Runtime, event: Prepared, download: Download, kind: DownloadType, budget: Budget
    ) -> None:
        if kind.rows is None:
            raise ValueError(f"type {kind.name!r} has no row source")
        self._runtime = runtime
        self._s3 = runtime.s3
        self._bucket = runtime.settings.artifact_bucket
        self._event = event
        self._download = download
        self._source: RowSource = kind.rows
        self._content_type = kind.artifact_format(download.params).content_type
        self._budget = budget
        self._id = event["download_id"]
        self._key = layout.artifact_key(self._id)
        self.run = int(event.get("run", 0))

    def _run_key(self, run: int, name: str) -> str:
        return layout.run_key(self._id, None, run, name)

    def _put(self, key: str, body: bytes, content_type: str = "application/json") -> None:
        self._s3.put_object(Bucket=self._bucket, Key=key, Body=body, ContentType=content_type)

    def _get(self, key: str) -> bytes:
        body: bytes = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        return body

    def _built(self, size: int, sha256: str | None, progress: Progress) -> Built:
        return {
            "download_id": self._id,
            "artifact_key": self._key,
            "size": size,
            "sha256": sha256,
            "progress": counts(progress),
        }

    def go(self) -> tuple[Built, int | None]:
        """What is built so far, and the next run's number (None: done)."""
        settings = self._runtime.settings
        state: dict[str, Any] | None = None
        if self.run == 0:
            # A retried first run starts over: whatever an earlier attempt left open goes first.
            artifacts.abort_uploads_of(self._s3, self._bucket, self._key)
            # The rows' bytes are unknown ahead; the byte cap bounds them, so the part size
            # that keeps the cap within S3's 10,000 parts (segments.part_size_for) does too.
            bound = segments.Upload(written=settings.max_table_bytes, fixed=1)
            part_size = segments.part_size_for(bound, settings.part_size)
            writer = MultipartWriter(self._s3, self._bucket, self._key, part_size, self._content_type)
        else:
            state = json.loads(self._get(self._run_key(self.run, STATE)))
            upload = state["upload"]
            if not self._open(upload["upload_id"]):
                finished = self._finished()
                if finished is not None:
                    return finished, None
            held = self._get(self._run_key(self.run, HELD))
            saved = Saved(
                upload["upload_id"],
                [(int(number), str(etag)) for number, etag in upload["parts"]],
                int(upload["size"]),
                held,
                int(upload.get("part_size") or settings.part_size),
            )
            writer = MultipartWriter(
                self._s3, self._bucket, self._key, saved.part_size, self._content_type, saved
            )
        tracker = ProgressTracker(
            self._runtime.downloads,
            self._id,
            Progress(**self._event["totals"]),
            settings.progress_every_bytes,
            done=Progress(**state["progress"]) if state else None,
        )
        try:
            return self._go(writer, tracker, state)
        except Cancelled:
            writer.abort()
            artifacts.remove_everything(self._s3, self._bucket, self._id)
            raise
        except BaseException:
            # The first run's retry starts over; a later run's retry goes on with this upload
            # (and if the error is final, MarkFailed removes it with everything else).
            if self.run == 0:
                writer.abort()
            raise

    def _go(
        self, writer: MultipartWriter, tracker: ProgressTracker, state: dict[str, Any] | None
    ) -> tuple[Built, int | None]:
        settings = self._runtime.settings
        rows = RowWriter(self._download.params, tracker, settings, state["writer"] if state else None)
        cursor = state["cursor"] if state else None
        pages = self._source(self._runtime, self._download, cursor)
        try:
            for page, following in pages:
                writer.write(rows.page(page))
                cursor = following
                if following is not None and self._budget.low():
                    tracker.flush()
                    return self._hand_on(writer, tracker, rows, cursor)
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()
        writer.write(rows.end())
        tracker.flush()
        if self.run == 0:
            return self._built(writer.size, writer.complete(), tracker.current), None
        # Several runs: what a retry needs if the answer to completing is lost, and the
        # (empty) checks the Digest step reads, before the upload completes.
        integrity.write(self._s3, self._bucket, layout.checks_key(self._id), [])
        finished = {"size": writer.size, "progress": asdict(tracker.current)}
        self._put(self._run_key(self.run, FINISHED), json.dumps(finished).encode("utf-8"))
        writer.complete()
        return self._built(writer.size, None, tracker.current), None

    def _hand_on(
        self, writer: MultipartWriter, tracker: ProgressTracker, rows: RowWriter, cursor: Any
    ) -> tuple[Built, int | None]:
        saved, following = writer.saved(), self.run + 1
        state = {
            "cursor": cursor,
            "writer": rows.state,
            "progress": asdict(tracker.current),
            "upload": {
                "upload_id": saved.upload_id,
                "parts": saved.parts,
                "size": saved.size,
                "part_size": saved.part_size,
            },
        }
        self._put(self._run_key(following, HELD), saved.held, "application/octet-stream")
        self._put(self._run_key(following, STATE), json.dumps(state).encode("utf-8"))
        return self._built(writer.size, None, tracker.current), following

    def _open(self, upload_id: str) -> bool:
        return multipart.is_open(self._s3, self._bucket, self._key, upload_id)

    def _finished(self) -> Built | None:
        raw = finished_record(self._s3, self._bucket, self._run_key(self.run, FINISHED))
        if raw is None:
            return None
        return self._built(int(raw["size"]), None, Progress(**raw["progress"]))


def build(
    runtime: Runtime, event: Prepared, download: Download, kind: DownloadType, budget: Budget | None
) -> tuple[Built, int | None]:
    """Build's run for a table type: what is built so far, and the next run's number (None: done)."""
    return RowRun(runtime, event, download, kind, budget or Budget.of(None, runtime.settings)).go()
