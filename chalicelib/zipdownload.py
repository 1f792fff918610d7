"""The `zip` download type: S3 objects under the caller's scope, streamed into one archive."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from zipstream import ZIP_DEFLATED, ZIP_STORED, ZipStream

from chalicelib.downloadtypes import ArtifactFormat, DownloadType, Plan
from chalicelib.errors import (
    DuplicateKeys,
    EmptyKeys,
    MaxContentSizeExceeded,
    NothingToDownload,
    SourceChanged,
    SourceMissing,
    SourceNotAllowed,
    TooManyFiles,
    TooManyKeys,
)
from chalicelib.manifest import Entry
from chalicelib.models import Download, Principal, Progress
from chalicelib.names import UniqueNames, safe_path
from chalicelib.settings import Settings

if TYPE_CHECKING:
    from chalicelib.progress import ProgressTracker
    from chalicelib.runtime import Runtime

DEFLATE_LEVEL = 6

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
    },
}


@dataclass(frozen=True)
class Scope:
    """Where a principal may read sources from: `s3://<bucket>/<tenant>/...`."""

    bucket: str
    prefix: str

    @classmethod
    def of(cls, principal: Principal, source_bucket: str) -> Scope:
        return cls(source_bucket, f"{principal.tenant}/")

    def resolve(self, raw: str) -> str:
        """The object key for `raw`, or SourceNotAllowed naming it."""
        key = raw
        if raw.startswith("s3://"):
            bucket, _, key = raw[len("s3://") :].partition("/")
            if bucket != self.bucket:
                raise SourceNotAllowed(f"source is outside your allowed scope: {raw}", key=raw)
        if not key.startswith(self.prefix) or ".." in key.split("/"):
            raise SourceNotAllowed(f"source is outside your allowed scope: {raw}", key=raw)
        return key

    def entry_name(self, key: str) -> str:
        return safe_path(key[len(self.prefix) :])


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
        "prefixes": [scope.resolve(prefix) for prefix in prefixes],
        "compression": params.get("compression", "deflate"),
    }


def plan(runtime: Runtime, download: Download) -> Plan:
    """Expand keys and prefixes into manifest entries, enforcing the size and count limits."""
    s3, params = runtime.s3, download.params
    source_bucket = runtime.settings.source_bucket
    max_bytes, max_files = runtime.settings.max_content_bytes, runtime.settings.max_files
    scope = Scope(source_bucket, f"{download.tenant}/")
    names = UniqueNames()
    seen: set[str] = set()
    entries: list[Entry] = []
    total = 0

    def add(key: str, size: int, etag: str) -> None:
        nonlocal total
        if key in seen:
            return
        seen.add(key)
        total += size
        if total > max_bytes:
            raise MaxContentSizeExceeded(
                f"sources exceed the maximum content size of {max_bytes} bytes", max_bytes=max_bytes
            )
        if len(entries) >= max_files:
            raise TooManyFiles(f"sources exceed the maximum of {max_files} files")
        entries.append(Entry(key=key, size=size, etag=etag, name=names.claim(scope.entry_name(key))))

    for key in params.get("keys", []):
        try:
            head = s3.head_object(Bucket=source_bucket, Key=key)
        except ClientError as error:
            if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
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
    if not entries:
        raise NothingToDownload("the given prefixes hold no objects")
    return Plan(
        totals=Progress(files_total=len(entries), bytes_total=sum(entry.size for entry in entries)),
        entries=entries,
    )


def read_source(s3: Any, bucket: str, entry: Entry, chunk_size: int) -> Iterator[bytes]:
    """The object's bytes, exactly the version Prepare saw (IfMatch on its ETag)."""
    try:
        body = s3.get_object(Bucket=bucket, Key=entry.key, IfMatch=entry.etag)["Body"]
    except ClientError as error:
        code = error.response["Error"]["Code"]
        if code in ("NoSuchKey", "404"):
            raise SourceMissing(f"source object not found: {entry.key}", key=entry.key) from None
        if code in ("PreconditionFailed", "412"):
            raise SourceChanged(f"source object changed while building: {entry.key}") from None
        raise
    try:
        yield from body.iter_chunks(chunk_size)
    finally:
        body.close()


def render(
    runtime: Runtime, download: Download, entries: Iterator[Entry], tracker: ProgressTracker
) -> Iterator[bytes]:
    """The archive's bytes. Sources are opened one at a time, as the zip writer reaches them."""
    settings = runtime.settings

    def source(entry: Entry) -> Iterator[bytes]:
        for chunk in read_source(runtime.s3, settings.source_bucket, entry, settings.read_chunk_bytes):
            tracker.advance(bytes_=len(chunk))
            yield chunk
        tracker.advance(files=1)

    compression = download.params.get("compression", "deflate")
    archive = ZipStream(
        compress_type=ZIP_DEFLATED if compression == "deflate" else ZIP_STORED,
        compress_level=DEFLATE_LEVEL if compression == "deflate" else None,
    )
    for entry in entries:
        archive.add(source(entry), entry.name, size=entry.size)
    yield from archive


TYPE = DownloadType(
    name="zip",
    description="A zip archive of objects from your source scope, by key and by prefix.",
    params_schema=PARAMS_SCHEMA,
    formats=["zip"],
    check=check_params,
    plan=plan,
    render=render,
    artifact_format=lambda params: ArtifactFormat(".zip", "application/zip"),
    default_name=lambda download_id, params: f"zip-{download_id[:12]}",
)
