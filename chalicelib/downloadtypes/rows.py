"""Rows to an artifact: what the export, audit and listing types share.

The row and byte caps, the artifact's format from the params, and the streaming render.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from chalicelib.core.errors import MaxContentSizeExceeded
from chalicelib.core.settings import Settings
from chalicelib.downloadtypes import rowformats
from chalicelib.downloadtypes.base import ArtifactFormat, Limits, ProgressTracker


def check_row_count(rows: int, settings: Settings, limits: Limits | None = None) -> int:
    """Refuse in Prepare, before anything is built, a file known to hold too many rows (a
    dry run's `limits` notes it instead)."""
    if rows > settings.max_rows:
        (limits or Limits()).exceeded(_too_many_rows(settings.max_rows))
    return rows


def _too_many_rows(limit: int) -> MaxContentSizeExceeded:
    return MaxContentSizeExceeded(f"the file would hold more than {limit} rows", max_rows=limit)


def render_rows(
    pages: Iterable[list[dict[str, Any]]],
    params: dict[str, Any],
    tracker: ProgressTracker,
    settings: Settings,
) -> Iterator[bytes]:
    """Rows to the artifact's bytes in the params' format and compression, tracking progress.
    The row and byte caps hold while it streams: a count taken in Prepare may have grown, and
    a listing's is never known before."""
    chunks = rowformats.encode(pages, params["columns"], params["format"])
    if params["compression"] == "gzip":
        chunks = rowformats.gzip(chunks)
    rows_seen = bytes_written = 0
    for data, rows in chunks:
        rows_seen += rows
        bytes_written += len(data)
        if rows_seen > settings.max_rows:
            raise _too_many_rows(settings.max_rows)
        if bytes_written > settings.max_table_bytes:
            raise MaxContentSizeExceeded(
                f"the file would exceed {settings.max_table_bytes} bytes", max_bytes=settings.max_table_bytes
            )
        tracker.advance(rows=rows, bytes_=len(data))
        if data:
            yield data
    tracker.advance(files=1)


def artifact_format(params: dict[str, Any]) -> ArtifactFormat:
    row_format = rowformats.FORMATS[params.get("format", "csv")]
    if params.get("compression") == "gzip":
        return ArtifactFormat(row_format.extension + ".gz", rowformats.GZIP_CONTENT_TYPE)
    return ArtifactFormat(row_format.extension, row_format.content_type)
