"""Rows to an artifact: what the export, audit and listing types share.

The row and byte caps, the artifact's format from the params, and the streaming render:
`RowWriter` turns pages of rows into the artifact's bytes and keeps, as JSON, all it needs to
go on in a later Lambda run (chalicelib/workflow/rowruns.py): the rows and bytes so far (the
caps count across runs) and its encoder's and compressor's state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from chalicelib.core.errors import MaxContentSizeExceeded
from chalicelib.core.settings import Settings
from chalicelib.downloadtypes import rowformats
from chalicelib.downloadtypes.base import ArtifactFormat, Limits, ProgressTracker, RowPage


def check_row_count(rows: int, settings: Settings, limits: Limits | None = None) -> int:
    """Refuse in Prepare, before anything is built, a file known to hold too many rows (a
    dry run's `limits` notes it instead)."""
    if rows > settings.max_rows:
        (limits or Limits()).exceeded(_too_many_rows(settings.max_rows))
    return rows


def _too_many_rows(limit: int) -> MaxContentSizeExceeded:
    return MaxContentSizeExceeded(f"the file would hold more than {limit} rows", max_rows=limit)


class RowWriter:
    """Pages of rows to the artifact's bytes in the params' format and compression, tracking
    progress. The row and byte caps hold while it streams: a count taken in Prepare may have
    grown, and a listing's is never known before. Each page fails or passes the caps
    whichever run writes it, so a build of many runs fails at the very page one run would."""

    def __init__(
        self,
        params: dict[str, Any],
        tracker: ProgressTracker,
        settings: Settings,
        state: dict[str, Any] | None = None,
    ) -> None:
        state = state or {}
        self._tracker = tracker
        self._settings = settings
        self.rows = int(state.get("rows", 0))
        self.bytes = int(state.get("bytes", 0))
        self._encoder = rowformats.RowEncoder(params["format"], params["columns"], state.get("encoder"))
        self._gzip = rowformats.Gzip(state=state.get("gzip")) if params.get("compression") == "gzip" else None

    @property
    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rows": self.rows, "bytes": self.bytes, "encoder": self._encoder.state}
        if self._gzip is not None:
            state["gzip"] = self._gzip.state
        return state

    def page(self, rows: list[dict[str, Any]]) -> bytes:
        data = self._encoder.page(rows)
        return self._counted(self._gzip.compress(data) if self._gzip else data, len(rows))

    def end(self) -> bytes:
        data = self._encoder.end()
        if self._gzip is not None:
            data = self._gzip.compress(data) + self._gzip.end()
        data = self._counted(data, 0)
        self._tracker.advance(files=1)
        return data

    def _counted(self, data: bytes, rows: int) -> bytes:
        settings = self._settings
        self.rows += rows
        self.bytes += len(data)
        if self.rows > settings.max_rows:
            raise _too_many_rows(settings.max_rows)
        if self.bytes > settings.max_table_bytes:
            raise MaxContentSizeExceeded(
                f"the file would exceed {settings.max_table_bytes} bytes", max_bytes=settings.max_table_bytes
            )
        self._tracker.advance(rows=rows, bytes_=len(data))
        return data


def render_rows(
    pages: Iterable[list[dict[str, Any]]],
    params: dict[str, Any],
    tracker: ProgressTracker,
    settings: Settings,
) -> Iterator[bytes]:
    """Every page's bytes, then the ending, in one go (`RowWriter`)."""
    writer = RowWriter(params, tracker, settings)
    for page in pages:
        data = writer.page(page)
        if data:
            yield data
    ending = writer.end()
    if ending:
        yield ending


def pages_of(source: Iterable[RowPage]) -> Iterator[list[dict[str, Any]]]:
    """A row source's pages without their cursors."""
    for page, _ in source:
        yield page


def artifact_format(params: dict[str, Any]) -> ArtifactFormat:
    row_format = rowformats.FORMATS[params.get("format", "csv")]
    if params.get("compression") == "gzip":
        return ArtifactFormat(row_format.extension + ".gz", rowformats.GZIP_CONTENT_TYPE)
    return ArtifactFormat(row_format.extension, row_format.content_type)
