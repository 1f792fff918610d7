"""The `zip` type as the API declares it: S3 objects under the caller's scope, in one archive.

Its name, params schema and checks, its artifact's format and name, and its plan (Prepare's,
and a dry run's: a listing of the sources, no writer). How it is built, the members deflated,
stored or copied and the archive options' surveys and tar streams, is
chalicelib/downloadtypes/archive.py's and archiveoptions.py's, with the writers, the deflate
engine and the source reader they import: the type hands a Build its builders through the
delegates below, which load that machinery when a Build first calls them, so the API creating
a zip never does (docs/performance.md, "Cold start").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.archive import levels
from chalicelib.core.errors import (
    DuplicateKeys,
    EmptyKeys,
    InvalidParams,
    MaxContentSizeExceeded,
    NothingToDownload,
    SourceMissing,
    TooManyFiles,
    TooManyKeys,
)
from chalicelib.core.models import Download, Principal, Progress
from chalicelib.core.names import UniqueNames
from chalicelib.core.settings import Settings
from chalicelib.downloadtypes import archiveparams
from chalicelib.downloadtypes.base import (
    Carried,
    DownloadType,
    Limits,
    Plan,
    ProgressTracker,
    SegmentBuild,
    SegmentPlan,
    StreamRun,
    Surveyed,
)
from chalicelib.downloadtypes.scope import Scope
from chalicelib.s3.manifest import Entry

if TYPE_CHECKING:
    from chalicelib.archive.zipwriter import Piece
    from chalicelib.runtime import Runtime

PARAMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "keys": {
            "type": "array",
            "items": {"type": "string", "maxLength": 1024},
            "description": "Object keys in the source bucket (or s3://<source bucket>/<key>).",
        },
        "prefixes": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 1024},
            "description": "Key prefixes whose objects are all included.",
        },
        "compression": {"enum": ["store", "deflate"], "default": "deflate"},
        "compression_level": {
            "type": "integer",
            "minimum": min(levels.LEVELS),
            "maximum": max(levels.LEVELS),
            "default": levels.DEFAULT_LEVEL,
            "description": "Deflate effort: 0 is fastest (ISA-L), 1-3 within 5% of zlib-6's size (zlib-ng "
            "4-6), 3 smallest. Ignored by store.",
        },
        **archiveparams.PARAMS_PROPERTIES,
    },
}


def check_params(params: dict[str, Any], principal: Principal, settings: Settings) -> dict[str, Any]:
    """Refusals the API answers at once (after the schema): empty, too many, duplicate, out of scope."""
    keys: list[str] = params.get("keys", [])
    prefixes: list[str] = params.get("prefixes", [])
    if not keys and not prefixes:
        raise EmptyKeys("give at least one key or prefix")
    if any(not key.strip() for key in keys):
        raise EmptyKeys("keys must not be empty strings")
    named = len(keys) + len(prefixes)
    if named > settings.max_keys:
        raise TooManyKeys(
            f"a request may name at most {settings.max_keys} keys and prefixes; it named {named}",
            limit=settings.max_keys,
        )
    scope = Scope.of(principal, settings.source_bucket)
    resolved = [scope.resolve(key) for key in keys]
    duplicates = sorted({key for key in resolved if resolved.count(key) > 1})
    if duplicates:
        raise DuplicateKeys(f"duplicate keys: {', '.join(duplicates)}", keys=duplicates)
    return {
        "keys": resolved,
        "prefixes": _distinct_prefixes([scope.resolve(prefix) for prefix in prefixes]),
        "compression": params.get("compression", "deflate"),
        "compression_level": params.get("compression_level", levels.DEFAULT_LEVEL),
    }


def _distinct_prefixes(prefixes: list[str]) -> list[str]:
    """Exact repeats are dropped (first one kept); a prefix inside another is refused, since
    the objects under both would be listed twice and it is not clear which was meant."""
    unique = list(dict.fromkeys(prefixes))
    ordered = sorted(unique)  # a prefix sorts just before every key that starts with it
    overlapping: list[tuple[str, str]] = []
    for index, outer in enumerate(ordered):
        for inner in ordered[index + 1 :]:
            if not inner.startswith(outer):
                break
            overlapping.append((outer, inner))
    if overlapping:
        pairs = "; ".join(f"{inner!r} lies inside {outer!r}" for outer, inner in overlapping[:5])
        named = sorted({prefix for pair in overlapping for prefix in pair})
        raise InvalidParams(
            f"params/prefixes: prefixes must not overlap: {pairs}", path="params/prefixes", prefixes=named
        )
    return unique


def plan(runtime: Runtime, download: Download, limits: Limits | None = None) -> Plan:
    """Expand keys and prefixes into manifest entries, enforcing the size and count limits.

    A dry run's `limits` collects a broken limit and the count goes on (only the totals: no
    entry is kept past a broken limit, so memory stays bounded by the limits)."""
    limits = limits or Limits()
    s3, params = runtime.s3, download.params
    source_bucket = runtime.settings.source_bucket
    max_bytes, max_files = runtime.settings.max_content_bytes, runtime.settings.max_files
    scope = Scope(source_bucket, f"{download.tenant}/")
    options = archiveparams.Options.of(params)
    names = UniqueNames(options.reserved_names)
    skipped: list[str] = []
    seen: set[str] = set()
    entries: list[Entry] = []
    total = files = 0

    def add(key: str, size: int, etag: str) -> None:
        nonlocal total, files
        if key in seen:
            return
        seen.add(key)
        total += size
        files += 1
        if total > max_bytes:
            limits.exceeded(
                MaxContentSizeExceeded(
                    f"sources exceed the maximum content size of {max_bytes} bytes", max_bytes=max_bytes
                )
            )
        if files > max_files:
            limits.exceeded(
                TooManyFiles(f"sources exceed the maximum of {max_files} files", max_files=max_files)
            )
        if not limits.any_broken:
            entries.append(Entry(key=key, size=size, etag=etag, name=names.claim(scope.entry_name(key))))

    for key in params.get("keys", []):
        if limits.out_of_time():
            break
        try:
            head = s3.head_object(Bucket=source_bucket, Key=key)
        except ClientError as error:
            if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                if options.skips:
                    skipped.append(key)
                    continue
                raise SourceMissing(f"source object not found: {key}", key=key) from None
            raise
        add(key, int(head["ContentLength"]), head["ETag"])
    paginator = s3.get_paginator("list_objects_v2")
    for prefix in params.get("prefixes", []):
        for page in paginator.paginate(Bucket=source_bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if item["Key"].endswith("/") and item["Size"] == 0:
                    continue  # a console "folder" marker, not a file
                add(item["Key"], int(item["Size"]), item["ETag"])
            if limits.out_of_time():
                break
        if not limits.complete:
            break
    if limits.any_broken or not limits.complete:  # a dry run's count: totals, no entries
        return Plan(totals=Progress(files_total=files, bytes_total=total), skipped=skipped)
    if not entries:
        raise NothingToDownload(
            "none of the named sources exist" if skipped else "the given prefixes hold no objects"
        )
    if options.skips and not limits.collect:  # a dry run stores nothing
        archiveparams.prepare_skip(skipped, runtime, download)
    return Plan(
        totals=Progress(files_total=len(entries), bytes_total=sum(entry.size for entry in entries)),
        entries=entries,
        skipped=skipped,
    )


# The builders a Build calls, each importing the build machinery when it first runs.


def _render(
    runtime: Runtime, download: Download, entries: Iterator[Entry], tracker: ProgressTracker
) -> Iterator[Piece]:
    from chalicelib.downloadtypes import archive

    return archive.RENDER(runtime, download, entries, tracker)


class _Segments:
    """The plain zip's segment plan (`archive.ZipSegments`)."""

    def accepts(self, params: dict[str, Any]) -> bool:
        return archiveparams.segmentable(params)

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
        from chalicelib.downloadtypes import archive

        return archive.SEGMENTS.build(
            runtime, download, entries, tracker, start=start, carried=carried, stop=stop
        )

    def closing(
        self, download: Download, placed: Iterator[tuple[int, list[Any]]], offset: int
    ) -> Iterator[Piece]:
        from chalicelib.downloadtypes import archive

        return archive.SEGMENTS.closing(download, placed, offset)


class _Stream:
    """A tar or tar.gz across Lambda runs (`archiveoptions.TarRuns`)."""

    def accepts(self, params: dict[str, Any]) -> bool:
        return archiveparams.Options.of(params).streamed

    def run(
        self,
        runtime: Runtime,
        download: Download,
        entries: Callable[[int], Iterator[Entry]],
        carried: Carried | None,
        tracker: ProgressTracker,
        stop: Callable[[], bool],
    ) -> StreamRun:
        from chalicelib.downloadtypes import archive

        return archive.STREAM.run(runtime, download, entries, carried, tracker, stop)


class _Survey:
    """A zip with `manifest` or `on_missing: skip` across Lambda runs (`archiveoptions.ZipSurvey`)."""

    def accepts(self, params: dict[str, Any]) -> bool:
        return archiveparams.Options.of(params).surveyed

    def survey(
        self,
        runtime: Runtime,
        download: Download,
        entries: Callable[[int], Iterator[Entry]],
        at: int,
        part: int,
        tracker: ProgressTracker,
        stop: Callable[[], bool],
    ) -> Surveyed:
        from chalicelib.downloadtypes import archive

        return archive.SURVEY.survey(runtime, download, entries, at, part, tracker, stop)

    def segments(self, runtime: Runtime, download: Download, parts: int) -> SegmentPlan:
        from chalicelib.downloadtypes import archive

        return archive.SURVEY.segments(runtime, download, parts)


TYPE = DownloadType(
    name="zip",
    description="An archive (zip, tar or tar.gz) of objects from your source scope, by key and by prefix.",
    params_schema=PARAMS_SCHEMA,
    formats=list(archiveparams.FORMATS),
    check=archiveparams.checked(check_params),
    plan=plan,
    render=_render,
    artifact_format=archiveparams.artifact_format,
    default_name=lambda download_id, params: f"zip-{download_id[:12]}",
    segments=_Segments(),
    stream=_Stream(),
    survey=_Survey(),
    limits=("max_files", "max_content_bytes", "max_keys"),
)
