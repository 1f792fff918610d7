"""The `audit` download type: the tenant's own audit trail, for its admins."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from chalicelib.core.models import Download, Principal, Progress
from chalicelib.core.settings import Settings
from chalicelib.downloadtypes.base import DownloadType, Limits, Plan, ProgressTracker, RowPage
from chalicelib.downloadtypes.rows import artifact_format, check_row_count, pages_of, render_rows
from chalicelib.s3.manifest import Entry
from chalicelib.storage.queries import key_from_json, key_to_json

if TYPE_CHECKING:
    from chalicelib.runtime import Runtime

# `source`: where a download.created came from ({kind: api}, or a trigger's queue, bus or
# manifest: chalicelib/triggers/inbound.py), beside the principal in `actor`.
COLUMNS = ["at", "action", "actor", "source", "download_id", "details"]

PARAMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "format": {"enum": ["csv", "json", "ndjson"], "default": "csv"},
        "compression": {"enum": ["none", "gzip"], "default": "none"},
    },
}


def check_params(params: dict[str, Any], principal: Principal, settings: Settings) -> dict[str, Any]:
    return {
        "index": "Audit",
        "format": params.get("format", "csv"),
        "compression": params.get("compression", "none"),
        "columns": COLUMNS,
    }


def plan(runtime: Runtime, download: Download, limits: Limits | None = None) -> Plan:
    rows = check_row_count(runtime.audit.count(download.tenant), runtime.settings, limits)
    return Plan(totals=Progress(files_total=1, rows_total=rows))


def rows(runtime: Runtime, download: Download, cursor: Any) -> Iterator[RowPage]:
    """The trail's pages from `cursor` (the LastEvaluatedKey a page ended at, as JSON)."""
    start = key_from_json(cursor) if cursor is not None else None
    for page, following in runtime.audit.pages_from(download.tenant, start):
        yield [_with_source(row) for row in page], key_to_json(following) if following is not None else None


def render(
    runtime: Runtime, download: Download, entries: Iterator[Entry], tracker: ProgressTracker
) -> Iterator[bytes]:
    return render_rows(pages_of(rows(runtime, download, None)), download.params, tracker, runtime.settings)


def _with_source(row: dict[str, Any]) -> dict[str, Any]:
    """The source recorded in the details, in its own column."""
    details = dict(row.get("details") or {})
    return {**row, "source": details.pop("source", None), "details": details}


TYPE = DownloadType(
    name="audit",
    description="Your tenant's audit trail: who created, fetched, cancelled, deleted or linked what.",
    params_schema=PARAMS_SCHEMA,
    formats=["csv", "json", "ndjson"],
    check=check_params,
    plan=plan,
    render=render,
    rows=rows,
    artifact_format=artifact_format,
    default_name=lambda download_id, params: f"Audit_Export-{download_id}",
    required_role="admin",
)
