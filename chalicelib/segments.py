"""Parallel builds: a large zip is built in segments by a Map state, then joined by Assemble.

Prepare splits the manifest, in order, into segments (each its own manifest under
`tmp/<id>/segments/`) and hands the Map only their numbers. Each BuildSegment lays its
members out from offset 0 into a temporary object, and writes their central directory
records beside it. Assemble copies the segment objects into the artifact with
`UploadPartCopy`, moves each segment's records by the offset it landed at, and writes the
central directory: one valid zip, byte for byte the one a single Build lays out. Everything
lives under `tmp/<id>/`, which Finalize and Fail already remove.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, replace
from typing import Any

from chalicelib import artifacts, downloadtypes, integrity, manifest, observability, zipdownload, zipwriter
from chalicelib.assembly import Assembler
from chalicelib.errors import Cancelled, retried_when_transient
from chalicelib.integrity import Check
from chalicelib.manifest import Entry
from chalicelib.models import Download, Progress
from chalicelib.multipart import MultipartWriter
from chalicelib.progress import ProgressTracker
from chalicelib.runtime import Runtime
from chalicelib.settings import Settings
from chalicelib.zipwriter import CopyRange, Member

_ZIP = "application/zip"


def _prefix(download_id: str, index: int) -> str:
    return f"{artifacts.temporary_prefix(download_id)}segments/{index:05d}/"


def manifest_key(download_id: str, index: int) -> str:
    return f"{_prefix(download_id, index)}manifest.jsonl"


def object_key(download_id: str, index: int) -> str:
    return f"{_prefix(download_id, index)}members.zip"


def directory_key(download_id: str, index: int) -> str:
    return f"{_prefix(download_id, index)}directory.jsonl"


def checks_key(download_id: str, index: int) -> str:
    return f"{_prefix(download_id, index)}checks.jsonl"


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


def split(runtime: Runtime, download: Download, entries: list[Entry]) -> list[int] | None:
    """Prepare: the segments' numbers when this download is built in parallel, else None."""
    settings = runtime.settings
    if not downloadtypes.get(download.type).can_segment(download.params):
        return None
    total = sum(entry.size for entry in entries)
    if total <= settings.parallel_min_bytes and len(entries) <= settings.parallel_min_files:
        return None
    found = groups(entries, settings)
    if len(found) < 2:
        return None
    for index, group in enumerate(found):
        manifest.write(runtime.s3, settings.artifact_bucket, manifest_key(download.id, index), group)
    return list(range(len(found)))


def _load(runtime: Runtime, download_id: str) -> Download:
    download = runtime.downloads.require(download_id)
    observability.bind(download)
    return download


@retried_when_transient
def build_segment(runtime: Runtime, event: dict[str, Any]) -> dict[str, Any]:
    """One Map iteration: the segment's members into tmp/<id>/segments/<n>/, its records beside them."""
    download_id, index = event["download_id"], int(event["index"])
    settings, s3 = runtime.settings, runtime.s3
    download = _load(runtime, download_id)
    key = object_key(download_id, index)
    artifacts.abort_uploads_of(s3, settings.artifact_bucket, key)  # a retry starts over
    tracker = ProgressTracker(
        runtime.downloads,
        download_id,
        Progress(**event["totals"]),
        settings.progress_every_bytes,
        shared=True,
    )
    writer = MultipartWriter(s3, settings.artifact_bucket, key, settings.part_size, _ZIP)
    layout = zipdownload.layout_for(download)
    entries = manifest.read(s3, settings.artifact_bucket, manifest_key(download_id, index))
    try:
        pieces = zipdownload.members(runtime, download, entries, tracker, layout)
        Assembler(s3, writer, settings.read_chunk_bytes).write_all(pieces)
        tracker.flush()
        writer.complete()
    except Cancelled:
        writer.abort()
        artifacts.remove_everything(s3, settings.artifact_bucket, download_id)
        raise
    except BaseException:
        writer.abort()
        raise
    records = "".join(json.dumps(member.to_json(), ensure_ascii=False) + "\n" for member in layout.members)
    # Written even when empty: a retried segment must not leave an earlier attempt's checks.
    integrity.write(s3, settings.artifact_bucket, checks_key(download_id, index), layout.unverified)
    s3.put_object(
        Bucket=settings.artifact_bucket,
        Key=directory_key(download_id, index),
        Body=records.encode("utf-8"),
        ContentType="application/x-ndjson",
    )
    return {"index": index, "size": writer.size, "files": len(layout.members)}


def _directory(runtime: Runtime, download_id: str, index: int, offset: int) -> Iterator[Member]:
    body = runtime.s3.get_object(
        Bucket=runtime.settings.artifact_bucket, Key=directory_key(download_id, index)
    )
    for line in body["Body"].iter_lines():
        if line:
            yield Member.from_json(json.loads(line)).moved(offset)


def _records(runtime: Runtime, download_id: str, placed: list[tuple[int, int]]) -> Iterator[Member]:
    for index, offset in placed:
        yield from _directory(runtime, download_id, index, offset)


def _checks(runtime: Runtime, download_id: str, placed: list[tuple[int, int]]) -> Iterator[Check]:
    """Every segment's checks, moved to where the segment landed in the artifact."""
    bucket = runtime.settings.artifact_bucket
    for index, offset in placed:
        for check in integrity.read(runtime.s3, bucket, checks_key(download_id, index)):
            yield check.moved(offset)


@retried_when_transient
def assemble(runtime: Runtime, event: dict[str, Any]) -> dict[str, Any]:
    """After the Map: the segments copied into the artifact, then the whole central directory."""
    download_id = event["download_id"]
    settings, s3, bucket = runtime.settings, runtime.s3, runtime.settings.artifact_bucket
    totals = Progress(**event["totals"])
    done = replace(totals, files_done=totals.files_total, bytes_done=totals.bytes_total)
    if not runtime.downloads.record_progress(download_id, done):
        artifacts.remove_everything(s3, bucket, download_id)
        raise Cancelled("the download was cancelled while its segments were built")
    artifacts.abort_uploads_of(s3, bucket, artifacts.artifact_key(download_id))  # a retry starts over
    writer = MultipartWriter(s3, bucket, artifacts.artifact_key(download_id), settings.part_size, _ZIP)
    assembler = Assembler(s3, writer, settings.read_chunk_bytes)
    placed: list[tuple[int, int]] = []
    try:
        for index in event["segments"]:
            head = s3.head_object(Bucket=bucket, Key=object_key(download_id, index))
            size = int(head["ContentLength"])
            placed.append((index, writer.size))
            assembler.copy(CopyRange(bucket, object_key(download_id, index), head["ETag"], 0, size))
        directory_offset = writer.size
        assembler.write_all(zipwriter.closing(_records(runtime, download_id, placed), directory_offset))
        sha256 = writer.complete()
    except BaseException:
        writer.abort()
        raise
    integrity.write(s3, bucket, integrity.checks_key(download_id), _checks(runtime, download_id, placed))
    return {
        "download_id": download_id,
        "artifact_key": writer.key,
        "size": writer.size,
        "sha256": sha256,
        "progress": asdict(done),
    }
