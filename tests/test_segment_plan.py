"""Parallel builds ask the download's type for its segment plan (`DownloadType.segments`),
through the registry: chalicelib/workflow/segments.py names no type."""

from __future__ import annotations

import ast
import io
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests

from chalicelib import downloadtypes
from chalicelib.archive.zipwriter import Piece
from chalicelib.core.models import Download
from chalicelib.downloadtypes import archive, export
from chalicelib.downloadtypes.base import ProgressTracker, SegmentBuild, SegmentPlan
from chalicelib.runtime import Runtime
from chalicelib.s3.manifest import Entry
from tests.conftest import Satchel

ROOT = Path(__file__).resolve().parent.parent


class Spy:
    """A segment plan that records its calls and hands them to the zip type's own."""

    def __init__(self, plan: SegmentPlan) -> None:
        self.plan = plan
        self.built: list[int] = []
        self.closed: list[list[int]] = []

    def accepts(self, params: dict[str, Any]) -> bool:
        return self.plan.accepts(params)

    def build(
        self, runtime: Runtime, download: Download, entries: Iterator[Entry], tracker: ProgressTracker
    ) -> SegmentBuild:
        self.built.append(len(self.built))
        return self.plan.build(runtime, download, entries, tracker)

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
    assert archive.TYPE.can_segment({"keys": ["a"]})
    assert not archive.TYPE.can_segment({"keys": ["a"], "format": "tar"})  # its plan refuses
    assert export.TYPE.segments is None
    assert not export.TYPE.can_segment({})
    refusing = replace(archive.TYPE, segments=Spy(archive.ZipSegments()))
    refusing.segments.accepts = lambda params: False  # type: ignore[method-assign, union-attr]
    assert not refusing.can_segment({"keys": ["a"]})


def test_a_parallel_build_goes_through_the_types_plan_whatever_its_name(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(archive.ZipSegments())
    # The zip type under another name, with a plan that records its calls.
    monkeypatch.setitem(downloadtypes._REGISTRY, "spied", replace(archive.TYPE, name="spied", segments=spy))
    bodies = {f"acme/seg/{index:02d}.txt": f"file {index}\n".encode() * 50 for index in range(9)}
    for key, body in bodies.items():
        satchel.put_source(key, body)
    monkeypatch.setenv("SATCHEL_PARALLEL_MIN_FILES", "4")
    monkeypatch.setenv("SATCHEL_SEGMENT_FILES", "3")

    created = satchel.call(
        "POST", "/downloads", "alice", {"type": "spied", "params": {"prefixes": ["acme/seg/"]}}
    )
    assert created.status == 202, created.body
    done = satchel.wait(created.json["id"], timeout=120)
    assert done["state"] == "DONE", done

    assert len(spy.built) == 3  # one call per segment of 3 files
    assert len(spy.closed) == 1
    assert spy.closed[0][0] == 0  # the first segment lands at the artifact's start
    archive_bytes = requests.get(satchel.call("GET", done["url"]).headers["Location"], timeout=60).content
    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as opened:
        assert opened.testzip() is None
        assert {name: opened.read(name) for name in opened.namelist()} == {
            key.removeprefix("acme/"): body for key, body in bodies.items()
        }
