"""The `listing` download type: a table of the objects under a prefix of your scope.

The README walks through this module as the worked example of adding a type.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from chalicelib.core.models import Download, Principal, Progress
from chalicelib.core.settings import Settings
from chalicelib.downloadtypes.base import DownloadType, Limits, Plan, ProgressTracker, RowPage
from chalicelib.downloadtypes.rows import artifact_format, pages_of, render_rows
from chalicelib.downloadtypes.scope import Scope
from chalicelib.s3.manifest import Entry

if TYPE_CHECKING:
    from chalicelib.runtime import Runtime

COLUMNS = ["key", "size", "last_modified", "etag"]
# Keys per page (S3's most): a Build that outlasts a Lambda run hands on between pages.
PAGE_KEYS = 1000

# 1. The params, as JSON Schema: GET /types publishes it, POST /downloads enforces it (422).
PARAMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["prefix"],
    "properties": {
        "prefix": {"type": "string", "minLength": 1, "maxLength": 1024},
        "format": {"enum": ["csv", "ndjson", "json"], "default": "csv"},
    },
}


# 2. Checks beyond the schema, answered at once; returns the params to store.
def check_params(params: dict[str, Any], principal: Principal, settings: Settings) -> dict[str, Any]:
    prefix = Scope.of(principal, settings.source_bucket).resolve(params["prefix"])  # 403 outside scope
    return {
        "prefix": prefix,
        "format": params.get("format", "csv"),
        "compression": "none",
        "columns": COLUMNS,
    }


# 3. Prepare: totals for the progress bar (a listing cannot know its size up front).
def plan(runtime: Runtime, download: Download, limits: Limits | None = None) -> Plan:
    return Plan(totals=Progress(files_total=1))


# 4. Build: the rows a page at a time, each page with the cursor the next one starts from
# (a Build that outlasts a Lambda run goes on from there); render_rows does formats,
# progress and the caps.
def rows(runtime: Runtime, download: Download, cursor: Any) -> Iterator[RowPage]:
    arguments: dict[str, Any] = {
        "Bucket": runtime.settings.source_bucket,
        "Prefix": download.params["prefix"],
        "MaxKeys": PAGE_KEYS,
    }
    while True:
        if cursor is not None:
            arguments["ContinuationToken"] = cursor
        page = runtime.s3.list_objects_v2(**arguments)
        cursor = page.get("NextContinuationToken") if page.get("IsTruncated") else None
        listed = [
            {
                "key": item["Key"],
                "size": item["Size"],
                "last_modified": item["LastModified"].isoformat(),
                "etag": item["ETag"].strip('"'),
            }
            for item in page.get("Contents", [])
        ]
        yield listed, cursor
        if cursor is None:
            return


def render(
    runtime: Runtime, download: Download, entries: Iterator[Entry], tracker: ProgressTracker
) -> Iterator[bytes]:
    return render_rows(pages_of(rows(runtime, download, None)), download.params, tracker, runtime.settings)


# 5. The declaration; the registry (__init__.py) registers it.
TYPE = DownloadType(
    name="listing",
    description="A table (CSV, NDJSON or JSON) of the objects under a prefix of your source scope.",
    params_schema=PARAMS_SCHEMA,
    formats=["csv", "ndjson", "json"],
    check=check_params,
    plan=plan,
    render=render,
    rows=rows,
    artifact_format=artifact_format,
    default_name=lambda download_id, params: f"Listing-{download_id}",
)
