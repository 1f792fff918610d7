"""Parallel builds ask the download's type for its segment plan (`DownloadType.segments`),
through the registry: chalicelib/workflow/segments.py names no type."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from chalicelib.archive.zipwriter import Piece
from chalicelib.core.models import Download
from chalicelib.downloadtypes import archive, export, ziptype
from chalicelib.downloadtypes.base import ProgressTracker, SegmentBuild, SegmentPlan
from chalicelib.runtime import Runtime
from chalicelib.s3.manifest import Entry

ROOT = Path(__file__).resolve().parents[3]


class Spy:
    """A segment plan that records its calls and hands them to the zip type's own."""

    def __init__(self, plan: SegmentPlan) -> None:
        self.plan = plan
        self.built: list[int] = []
        self.closed: list[list[int]] = []

    def accepts(self, params: dict[str, Any]) -> bool:
        return self.plan.accepts(params)

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
        self.built.append(len(self.built))
        return self.plan.build(runtime, download, entries, tracker, start=start, carried=carried, stop=stop)

    def closing(
        self, download: Download, placed: Iterator[tuple[int, list[Any]]], offset: int
    ) -> Iterable[Piece]:
        seen = list(placed)
        self.closed.append([at for at, _ in seen])
        return self.plan.closing(download, iter(seen), offset)


def test_segments_imports_no_download_type() -> None:
    tree = ast.parse((ROOT / "chalicelib" / "workflow" / "segments.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {
        f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    types = {f"chalicelib.downloadtypes.{name}" for name in ("archive", "export", "listing", "audit")}
    assert not imported & types


def test_only_a_type_with_a_plan_that_accepts_the_params_is_segmented() -> None:
    assert ziptype.TYPE.can_segment({"keys": ["a"]})
    assert not ziptype.TYPE.can_segment({"keys": ["a"], "format": "tar"})  # its plan refuses
    assert export.TYPE.segments is None
    assert not export.TYPE.can_segment({})
    refusing = replace(ziptype.TYPE, segments=Spy(archive.ZipSegments()))
    refusing.segments.accepts = lambda params: False  # type: ignore[method-assign, union-attr]
    assert not refusing.can_segment({"keys": ["a"]})
