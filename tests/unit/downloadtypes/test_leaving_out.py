"""A surveyed zip with `on_missing: skip` leaves out, in the Lambda run that meets it, a source
found gone as its member is about to be written: the members after it are laid out where a
zip without it has them, and their records reach runs.py in whole batches as ever, in order,
however many sources are left out and wherever (tests/stack/test_vanished_sources.py builds
real archives; this counts the records of a run of thousands, which a stack test would not).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from chalicelib.archive.zipwriter import CopyRange, Piece
from chalicelib.core.errors import SourceMissing
from chalicelib.core.models import Download, Progress, State
from chalicelib.downloadtypes import archive, archiveoptions
from chalicelib.downloadtypes.base import ProgressTracker, SegmentBuild
from chalicelib.runtime import Runtime
from chalicelib.s3.manifest import Entry
from chalicelib.workflow.runs import LeavesOut

BATCH = 1_000


@dataclass
class _Downloads:
    recorded: list[list[str]] = field(default_factory=list)

    def record_skipped(self, download_id: str, keys: list[str]) -> bool:
        self.recorded.append(keys)
        return True


@dataclass
class _Runtime:
    downloads: _Downloads = field(default_factory=_Downloads)


@dataclass
class _Tracker:
    current: Progress

    def advance(self, *, files: int = 0, bytes_: int = 0, rows: int = 0) -> None:
        self.current = Progress(
            files_done=self.current.files_done + files,
            files_total=self.current.files_total,
            bytes_done=self.current.bytes_done + bytes_,
            bytes_total=self.current.bytes_total,
        )


class _Build:
    """A member an entry: its bytes (the entry's size), recorded as [name, offset] once whole;
    a source in `gone` raises SourceMissing before anything of it, as the zip's GET does.
    Records are taken as the zip type takes them: whole batches, never the last one."""

    def __init__(self, entries: Iterator[Entry], start: int, gone: set[str]) -> None:
        self._entries = entries
        self._gone = gone
        self.offset = start
        self.members: list[list[Any]] = []

    @property
    def pieces(self) -> Iterator[Piece]:
        return self._pieces()

    def _pieces(self) -> Iterator[Piece]:
        for entry in self._entries:
            if entry.key in self._gone:
                raise SourceMissing(f"source object not found: {entry.key}", key=entry.key)
            at = self.offset
            yield b"h" * 10  # its header
            yield CopyRange("b", entry.key, '"e"', 0, entry.size)  # its bytes, copied
            self.offset += 10 + entry.size
            self.members.append([entry.name, at])

    def records(self) -> list[Any]:
        return list(self.members)

    def take_records(self, batch: int) -> list[Any]:
        taken = (len(self.members) - 1) // batch * batch if len(self.members) > batch else 0
        records, self.members = self.members[:taken], self.members[taken:]
        return records

    def checks(self) -> list[Any]:
        return []

    def carried(self) -> tuple[int, Any] | None:
        return None


@dataclass
class _Plain:
    gone: set[str]
    builds: list[int] = field(default_factory=list)

    def accepts(self, params: dict[str, Any]) -> bool:
        return True

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
        self.builds.append(start)
        return _Build(entries, start, self.gone)

    def closing(
        self, download: Download, placed: Iterator[tuple[int, list[Any]]], offset: int
    ) -> Iterable[Piece]:
        return []


def _download() -> Download:
    return Download(
        id="d",
        type="zip",
        params={"on_missing": "skip"},
        filename="x.zip",
        tenant="t",
        user_id="u",
        state=State.RUNNING,
        created_at="2026-01-01T00:00:00.000Z",
        retention_seconds=60,
        skipped=["t/never"],  # what Prepare (and the survey) recorded
    )


def _entries(count: int) -> list[Entry]:
    return [Entry(key=f"t/{index}", size=index % 7, etag='"e"', name=str(index)) for index in range(count)]


def _run(entries: list[Entry], gone: set[str]) -> tuple[list[list[Any]], Any, _Plain, _Runtime, _Tracker]:
    """One run through the surveyed zip's plan, as runs.Run drives it: the records taken
    after each piece (each batch a list), then what is left."""
    plain, runtime = _Plain(gone), _Runtime()
    tracker = _Tracker(Progress(files_total=len(entries), bytes_total=sum(e.size for e in entries)))
    plan = archiveoptions.ZipSurvey(plain, archive.layout_for).segments(
        runtime,  # type: ignore[arg-type]
        _download(),
        1,
    )
    segment = plan.build(runtime, _download(), iter(entries), tracker, start=100)  # type: ignore[arg-type]
    batches = []
    for _ in segment.pieces:
        taken = segment.take_records(BATCH)
        if taken:
            batches.append(taken)
    return [*batches, segment.records()], segment, plain, runtime, tracker


def test_sources_left_out_anywhere_leave_the_others_where_a_zip_without_them_has_them() -> None:
    entries = _entries(3_500)
    gone = {"t/0", "t/5", "t/999", "t/1000", "t/1001", "t/2500", "t/3499"}
    batches, segment, plain, runtime, tracker = _run(entries, gone)
    assert all(len(batch) % BATCH == 0 for batch in batches[:-1])
    records = [record for batch in batches for record in batch]
    kept = [entry for entry in entries if entry.key not in gone]
    offsets, at = [], 100
    for entry in kept:
        offsets.append([entry.name, at])
        at += 10 + entry.size
    assert records == offsets
    order = [entry.key for entry in entries if entry.key in gone]
    assert isinstance(segment, LeavesOut)
    assert segment.left_out() == order
    # A new build of the plain plan after each, from where the last member ended.
    assert len(plain.builds) == 1 + len(gone)
    # Each into the download's `skipped`, after what was there; out of the totals.
    assert runtime.downloads.recorded[-1] == ["t/never", *order]
    assert tracker.current.files_total == len(kept)
    assert tracker.current.bytes_total == sum(entry.size for entry in kept)


def test_a_source_gone_that_is_not_the_next_member_is_not_left_out() -> None:
    """(A SourceMissing for another source than the one about to be written cannot be placed.)"""
    plain, runtime = _Plain(set()), _Runtime()
    tracker = _Tracker(Progress(files_total=2, bytes_total=2))
    plan = archiveoptions.ZipSurvey(plain, archive.layout_for).segments(
        runtime,  # type: ignore[arg-type]
        _download(),
        1,
    )
    segment = plan.build(runtime, _download(), iter(_entries(2)), tracker)  # type: ignore[arg-type]
    pieces = segment.pieces
    assert isinstance(pieces, Generator)
    next(pieces)
    with pytest.raises(SourceMissing, match="while its member was being written: t/elsewhere"):
        pieces.throw(SourceMissing("source object not found: t/elsewhere", key="t/elsewhere"))
    assert runtime.downloads.recorded == []
