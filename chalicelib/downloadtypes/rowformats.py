"""Rows to bytes: CSV, NDJSON or a JSON array, optionally gzip-compressed, a page at a time.

Memory holds one page of rows and its encoding, whatever the row count. The libraries
were chosen by `bench/exports.py`: csv.writer for CSV, orjson for JSON, and zlib at level
1 for gzip (see the README's numbers).
"""

from __future__ import annotations

import base64
import csv
import io
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

GZIP_LEVEL = 1
_GZIP_WBITS = 31  # zlib's way of asking for a gzip header and trailer


@dataclass(frozen=True)
class RowFormat:
    name: str
    extension: str
    content_type: str


FORMATS = {
    "csv": RowFormat("csv", ".csv", "text/csv; charset=utf-8"),
    "ndjson": RowFormat("ndjson", ".ndjson", "application/x-ndjson"),
    "json": RowFormat("json", ".json", "application/json"),
}
GZIP_CONTENT_TYPE = "application/gzip"


def plain_value(value: Any) -> Any:
    """A DynamoDB value as JSON would have it."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if hasattr(value, "value") and isinstance(value.value, bytes):  # boto3's Binary
        return base64.b64encode(value.value).decode("ascii")
    if isinstance(value, set | frozenset):
        return sorted(plain_value(item) for item in value)
    if isinstance(value, dict):
        return {key: plain_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_value(item) for item in value]
    return value


def _csv_cell(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int:  # the common case first: this runs once per cell
        return value
    if value is None:
        return ""
    if kind is bool:
        return "true" if value else "false"
    if kind is Decimal:
        return str(value)  # exactly as stored: "10.50" stays "10.50"
    value = plain_value(value)
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode("utf-8")
    return value


def _json_default(value: Any) -> Any:
    """orjson calls this only for what it cannot encode itself (Decimal, sets, Binary)."""
    converted = plain_value(value)
    if converted is value:
        raise TypeError(f"cannot encode {type(value).__name__}")
    return converted


def _csv(pages: Iterable[list[dict[str, Any]]], columns: list[str]) -> Iterator[tuple[bytes, int]]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # RFC 4180: quoted as needed, CRLF line ends
    writer.writerow(columns)
    for page in pages:
        writer.writerows([_csv_cell(row.get(column)) for column in columns] for row in page)
        yield buffer.getvalue().encode("utf-8"), len(page)
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode("utf-8"), 0


def _record(row: dict[str, Any], columns: list[str], option: int = 0) -> bytes:
    return orjson.dumps({column: row.get(column) for column in columns}, default=_json_default, option=option)


def _ndjson(pages: Iterable[list[dict[str, Any]]], columns: list[str]) -> Iterator[tuple[bytes, int]]:
    for page in pages:
        yield b"".join(_record(row, columns, orjson.OPT_APPEND_NEWLINE) for row in page), len(page)


def _json(pages: Iterable[list[dict[str, Any]]], columns: list[str]) -> Iterator[tuple[bytes, int]]:
    separator = b"["
    for page in pages:
        if page:
            yield separator + b",".join(_record(row, columns) for row in page), len(page)
            separator = b","
    yield (b"]" if separator == b"," else b"[]"), 0


_ENCODERS = {"csv": _csv, "ndjson": _ndjson, "json": _json}


def encode(
    pages: Iterable[list[dict[str, Any]]], columns: list[str], format_name: str
) -> Iterator[tuple[bytes, int]]:
    """(bytes, rows in them) for each page of rows."""
    return _ENCODERS[format_name](pages, columns)


def gzip(chunks: Iterable[tuple[bytes, int]], level: int = GZIP_LEVEL) -> Iterator[tuple[bytes, int]]:
    compressor = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
    for data, rows in chunks:
        yield compressor.compress(data), rows
    yield compressor.flush(), 0
