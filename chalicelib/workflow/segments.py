"""Parallel builds: a large artifact is built in segments by a Map state, then joined by Assemble.

Prepare splits the manifest, in order, into segments (each its own manifest under
`tmp/<id>/segments/`) and hands the Map only their numbers; only a type with a segment plan
(`DownloadType.segments`, chalicelib/downloadtypes/base.py) is split. Each BuildSegment has
the plan lay its pieces out from offset 0 into a temporary object, and writes the records
the plan kept beside it. Assemble copies the segment objects into the artifact with
`UploadPartCopy`, then writes what the plan closes with from the records and the offset each
segment landed at. For the zip type (the only one with a plan): its members, then the
central directory, byte for byte the zip a single Build lays out. Everything lives under
`tmp/<id>/`, which Finalize and Fail already remove.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from chalicelib import downloadtypes
from chalicelib.archive import integrity
from chalicelib.archive.assembly import Assembler
from chalicelib.archive.integrity import Check
from chalicelib.archive.zipwriter import CopyRange
from chalicelib.core import observability
from chalicelib.core.errors import Cancelled, retried_when_transient
from chalicelib.core.models import Download, Progress
from chalicelib.core.settings import Settings
from chalicelib.downloadtypes.base import DownloadType, SegmentPlan
from chalicelib.runtime import Runtime
from chalicelib.s3 import artifacts, layout, manifest
from chalicelib.s3.manifest import Entry
from chalicelib.s3.multipart import MultipartWriter
from chalicelib.workflow.payloads import Built, Prepared, SegmentBuilt, SegmentInput, counts
from chalicelib.workflow.progress import ProgressTracker


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


def parallel_groups(settings: Settings, download: Download, entries: list[Entry]) -> list[list[Entry]] | None:
    """The segments this download is built in, in parallel; None when one Build builds it."""
    if not downloadtypes.get(download.type).can_segment(download.params):
        return None
    total = sum(entry.size for entry in entries)
    if total <= settings.parallel_min_bytes and len(entries) <= settings.parallel_min_files:
        return None
    found = groups(entries, settings)
    return found if len(found) >= 2 else None


def split(runtime: Runtime, download: Download, entries: list[Entry]) -> list[int] | None:
    """Prepare: the segments' numbers when this download is built in parallel, else None."""
    settings = runtime.settings
    found = parallel_groups(settings, download, entries)
    if found is None:
        return None
    for index, group in enumerate(found):
        key = layout.segment_manifest_key(download.id, index)
        manifest.write(runtime.s3, settings.artifact_bucket, key, group)
    return list(range(len(found)))


def _load(runtime: Runtime, download_id: str) -> Download:
    download = runtime.downloads.require(download_id)
    observability.bind(download)
    return download


@retried_when_transient
def build_segment(runtime: Runtime, event: SegmentInput) -> SegmentBuilt:
    """One Map iteration: the segment's pieces into tmp/<id>/segments/<n>/, its records beside them."""
    download_id, index = event["download_id"], int(event["index"])
    settings, s3 = runtime.settings, runtime.s3
    download = _load(runtime, download_id)
    kind = downloadtypes.get(download.type)
    plan = _plan(kind)
    key = layout.segment_object_key(download_id, index)
    artifacts.abort_uploads_of(s3, settings.artifact_bucket, key)  # a retry starts over
    tracker = ProgressTracker(
        runtime.downloads,
        download_id,
        Progress(**event["totals"]),
        settings.progress_every_bytes,
        shared=True,
    )
    content_type = kind.artifact_format(download.params).content_type
    writer = MultipartWriter(s3, settings.artifact_bucket, key, settings.part_size, content_type)
    entries = manifest.read(s3, settings.artifact_bucket, layout.segment_manifest_key(download_id, index))
    try:
        segment = plan.build(runtime, download, entries, tracker)
        Assembler(s3, writer, settings.read_chunk_bytes).write_all(segment.pieces)
        tracker.flush()
        writer.complete()
    except Cancelled:
        writer.abort()
        artifacts.remove_everything(s3, settings.artifact_bucket, download_id)
        raise
    except BaseException:
        writer.abort()
        raise
    records = segment.records()
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    # Written even when empty: a retried segment must not leave an earlier attempt's checks.
    checks = layout.segment_checks_key(download_id, index)
    integrity.write(s3, settings.artifact_bucket, checks, segment.checks())
    s3.put_object(
        Bucket=settings.artifact_bucket,
        Key=layout.segment_directory_key(download_id, index),
        Body=text.encode("utf-8"),
        ContentType="application/x-ndjson",
    )
    return {"index": index, "size": writer.size, "files": len(records)}


def _plan(kind: DownloadType) -> SegmentPlan:
    if kind.segments is None:  # split() never segments such a type: only a wrong input gets here
        raise TypeError(f"download type {kind.name!r} is not built in segments")
    return kind.segments


def _directory(runtime: Runtime, download_id: str, index: int) -> list[Any]:
    body = runtime.s3.get_object(
        Bucket=runtime.settings.artifact_bucket, Key=layout.segment_directory_key(download_id, index)
    )
    return [json.loads(line) for line in body["Body"].iter_lines() if line]


def _records(
    runtime: Runtime, download_id: str, placed: list[tuple[int, int]]
) -> Iterator[tuple[int, list[Any]]]:
    """Each segment's records (one segment in memory at a time) with the offset it landed at."""
    for index, offset in placed:
        yield offset, _directory(runtime, download_id, index)


def _checks(runtime: Runtime, download_id: str, placed: list[tuple[int, int]]) -> Iterator[Check]:
    """Every segment's checks, moved to where the segment landed in the artifact."""
    bucket = runtime.settings.artifact_bucket
    for index, offset in placed:
        for check in integrity.read(runtime.s3, bucket, layout.segment_checks_key(download_id, index)):
            yield check.moved(offset)


@retried_when_transient
def assemble(runtime: Runtime, event: Prepared) -> Built:
    """After the Map: the segments copied into the artifact, then the whole central directory."""
    download_id = event["download_id"]
    settings, s3, bucket = runtime.settings, runtime.s3, runtime.settings.artifact_bucket
    totals = Progress(**event["totals"])
    done = replace(totals, files_done=totals.files_total, bytes_done=totals.bytes_total)
    if not runtime.downloads.record_progress(download_id, done):
        artifacts.remove_everything(s3, bucket, download_id)
        raise Cancelled("the download was cancelled while its segments were built")
    download = _load(runtime, download_id)
    kind = downloadtypes.get(download.type)
    plan = _plan(kind)
    artifacts.abort_uploads_of(s3, bucket, layout.artifact_key(download_id))  # a retry starts over
    content_type = kind.artifact_format(download.params).content_type
    writer = MultipartWriter(s3, bucket, layout.artifact_key(download_id), settings.part_size, content_type)
    assembler = Assembler(s3, writer, settings.read_chunk_bytes)
    placed: list[tuple[int, int]] = []
    try:
        for index in event.get("segments", []):
            members = layout.segment_object_key(download_id, index)
            head = s3.head_object(Bucket=bucket, Key=members)
            size = int(head["ContentLength"])
            placed.append((index, writer.size))
            assembler.copy(CopyRange(bucket, members, head["ETag"], 0, size))
        directory_offset = writer.size
        closing = plan.closing(download, _records(runtime, download_id, placed), directory_offset)
        assembler.write_all(closing)
        sha256 = writer.complete()
    except BaseException:
        writer.abort()
        raise
    integrity.write(s3, bucket, layout.checks_key(download_id), _checks(runtime, download_id, placed))
    return {
        "download_id": download_id,
        "artifact_key": writer.key,
        "size": writer.size,
        "sha256": sha256,
        "progress": counts(done),
    }
