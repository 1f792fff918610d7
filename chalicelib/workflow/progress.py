"""Progress of a running build, written to the record as it goes.

Each write is conditional on the download still RUNNING, which is also how a build learns
that it was cancelled: the write fails and the build stops.

`bytes_total` is never 0 while `bytes_done` grows. A zip knows it from the start (the
sources' sizes). An export does not (its rows' encoded size is learnt as they are encoded):
its `bytes_total` is an *estimate*, the bytes so far scaled by rows_total / rows_done, never
below `bytes_done`, and exact once the last row is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from chalicelib.core.errors import Cancelled
from chalicelib.core.models import Progress
from chalicelib.storage.downloads import DownloadStore

_MAX_SECONDS_BETWEEN_WRITES = 2.0


class ProgressTracker:
    def __init__(
        self,
        downloads: DownloadStore,
        download_id: str,
        totals: Progress,
        every_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        shared: bool = False,
        done: Progress | None = None,
    ) -> None:
        self._downloads = downloads
        self._download_id = download_id
        # `done`: what earlier Lambda runs of the same build did (chalicelib/workflow/runs.py).
        self.current = done or replace(totals, files_done=0, bytes_done=0, rows_done=0)
        self._every_bytes = every_bytes
        self._clock = clock
        # Shared: one of several parallel builders of the download, each adding what it did.
        self._shared = shared
        self._written = self.current
        self._written_at = clock()
        self._estimating = totals.bytes_total == 0  # the size is learnt while building

    def advance(self, *, files: int = 0, bytes_: int = 0, rows: int = 0) -> None:
        self.current = replace(
            self.current,
            files_done=self.current.files_done + files,
            bytes_done=self.current.bytes_done + bytes_,
            rows_done=self.current.rows_done + rows,
        )
        if self._estimating:
            self.current = replace(self.current, bytes_total=_estimate(self.current))
        due = self.current.bytes_done - self._written.bytes_done >= self._every_bytes
        stale = self._clock() - self._written_at >= _MAX_SECONDS_BETWEEN_WRITES
        if due or stale:
            self.flush()

    def flush(self) -> None:
        if self._shared:
            files = self.current.files_done - self._written.files_done
            bytes_ = self.current.bytes_done - self._written.bytes_done
            written = self._downloads.add_progress(self._download_id, files, bytes_)
        else:
            written = self._downloads.record_progress(self._download_id, self.current)
        if not written:
            raise Cancelled("the download was cancelled while it was being built")
        self._written = self.current
        self._written_at = self._clock()


def _estimate(progress: Progress) -> int:
    """The final size, from the bytes per row so far; at least what is done already."""
    done, rows_done, rows_total = progress.bytes_done, progress.rows_done, progress.rows_total
    if rows_done and rows_total > rows_done:
        return max(done, round(done * rows_total / rows_done))
    return done
