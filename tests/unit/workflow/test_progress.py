"""Progress as a status bar shows it: `bytes_total` is never 0 while `bytes_done` grows."""

from __future__ import annotations

from typing import Any

from chalicelib.core.models import Progress
from chalicelib.core.settings import Settings
from chalicelib.downloadtypes.rows import render_rows
from chalicelib.workflow.progress import ProgressTracker

_SETTINGS = Settings.from_env(
    {
        "SATCHEL_TABLE": "t",
        "SATCHEL_ARTIFACT_BUCKET": "a",
        "SATCHEL_SOURCE_BUCKET": "s",
        "SATCHEL_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:m",
    }
)


class RecordingStore:
    """The download store's progress writes, kept (every write succeeds: not cancelled)."""

    def __init__(self) -> None:
        self.written: list[Progress] = []

    def record_progress(self, download_id: str, progress: Progress) -> bool:
        self.written.append(progress)
        return True

    def add_progress(self, download_id: str, files: int, bytes_: int) -> bool:
        raise AssertionError("an export has one builder")


def _pages(rows: int, per_page: int) -> Any:
    for start in range(0, rows, per_page):
        yield [
            {"id": index, "note": "x" * (index % 50)} for index in range(start, min(rows, start + per_page))
        ]


def test_an_exports_bytes_total_is_an_estimate_never_0_and_exact_at_the_end() -> None:
    store = RecordingStore()
    rows = 5_000
    tracker = ProgressTracker(store, "d", Progress(files_total=1, rows_total=rows), every_bytes=4096)  # type: ignore[arg-type]
    params = {"columns": ["id", "note"], "format": "csv", "compression": "none"}
    size = sum(len(chunk) for chunk in render_rows(_pages(rows, 250), params, tracker, _SETTINGS))
    tracker.flush()
    assert len(store.written) > 3  # written as it went
    for progress in store.written:
        assert progress.bytes_total >= progress.bytes_done
        assert progress.bytes_done == 0 or progress.bytes_total > 0
    midway = [p for p in store.written if 0 < p.rows_done < rows]
    assert midway
    assert all(p.bytes_total > p.bytes_done for p in midway)  # an estimate of the whole, not "so far"
    assert store.written[-1].bytes_total == store.written[-1].bytes_done == size


def test_a_known_bytes_total_is_left_as_it_is() -> None:
    store = RecordingStore()
    tracker = ProgressTracker(store, "d", Progress(files_total=2, bytes_total=1000), every_bytes=1)  # type: ignore[arg-type]
    tracker.advance(bytes_=400)
    tracker.advance(files=1, bytes_=600)
    assert [p.bytes_total for p in store.written] == [1000, 1000]
