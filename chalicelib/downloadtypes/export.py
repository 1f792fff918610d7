"""The `export` download type: a dataset's rows for the caller's tenant, as a file named
like `Transaction_Export-<id>.csv`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from chalicelib.core import clients
from chalicelib.core.errors import InvalidParams
from chalicelib.core.models import Download, Principal, Progress
from chalicelib.core.settings import Settings
from chalicelib.downloadtypes import datasets, rowformats
from chalicelib.downloadtypes.base import DownloadType, Limits, Plan, ProgressTracker, RowPage
from chalicelib.downloadtypes.rows import artifact_format, check_row_count, pages_of, render_rows
from chalicelib.s3.manifest import Entry
from chalicelib.storage.queries import key_from_json, key_to_json

if TYPE_CHECKING:
    from chalicelib.runtime import Runtime

MAX_FILTERS = 10

PARAMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["index"],
    "properties": {
        "index": {
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "description": "The dataset, e.g. Transaction.",
        },
        "format": {"enum": list(rowformats.FORMATS), "default": "csv"},
        "compression": {"enum": ["none", "gzip"], "default": "none"},
        "columns": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 255},
            "minItems": 1,
            "uniqueItems": True,
            "description": "Columns in this order; default: all of the dataset's.",
        },
        "filters": {
            "type": "array",
            "maxItems": MAX_FILTERS,
            "description": "Rows must match every filter.",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["column", "op", "value"],
                "properties": {
                    "column": {"type": "string", "minLength": 1, "maxLength": 255},
                    "op": {"enum": list(datasets.FILTER_OPERATORS)},
                    "value": {"type": ["string", "number", "boolean"]},
                },
            },
        },
    },
}


def check_params(params: dict[str, Any], principal: Principal, settings: Settings) -> dict[str, Any]:
    known = settings.datasets
    dataset = known.get(params["index"])
    if dataset is None:
        names = ", ".join(sorted(known)) or "none are configured"
        raise InvalidParams(f"params/index: unknown index; known: {names}", path="params/index")
    columns = params.get("columns", dataset.columns)
    for where, names_used in (
        ("columns", columns),
        ("filters", [f["column"] for f in params.get("filters", [])]),
    ):
        unknown = [name for name in names_used if name not in dataset.columns]
        if unknown:
            raise InvalidParams(
                f"params/{where}: not columns of {dataset.name}: {', '.join(unknown[:5])}",
                path=f"params/{where}",
            )
    return {
        "index": dataset.name,
        "format": params.get("format", "csv"),
        "compression": params.get("compression", "none"),
        "columns": columns,
        "filters": params.get("filters", []),
    }


def _query(runtime: Runtime, download: Download) -> datasets.Query:
    dataset = runtime.settings.datasets[download.params["index"]]
    return datasets.Query(dataset, download.tenant, download.params["columns"], download.params["filters"])


def plan(runtime: Runtime, download: Download, limits: Limits | None = None) -> Plan:
    query = _query(runtime, download)
    rows = query.count(clients.table(query.dataset.table))
    return Plan(totals=Progress(files_total=1, rows_total=check_row_count(rows, runtime.settings, limits)))


def rows(runtime: Runtime, download: Download, cursor: Any) -> Iterator[RowPage]:
    """The query's pages from `cursor` (the LastEvaluatedKey a page ended at, as JSON)."""
    query = _query(runtime, download)
    start = key_from_json(cursor) if cursor is not None else None
    for page, following in query.pages(clients.table(query.dataset.table), start):
        yield page, key_to_json(following) if following is not None else None


def render(
    runtime: Runtime, download: Download, entries: Iterator[Entry], tracker: ProgressTracker
) -> Iterator[bytes]:
    return render_rows(pages_of(rows(runtime, download, None)), download.params, tracker, runtime.settings)


TYPE = DownloadType(
    name="export",
    description="Rows of a dataset for your tenant, as CSV, NDJSON or a JSON array, optionally gzipped.",
    params_schema=PARAMS_SCHEMA,
    formats=list(rowformats.FORMATS),
    check=check_params,
    plan=plan,
    render=render,
    rows=rows,
    artifact_format=artifact_format,
    default_name=lambda download_id, params: f"{params['index']}_Export-{download_id}",
)
