"""Rows to bytes: CSV, NDJSON or a JSON array, optionally gzip-compressed, a page at a time.

Memory holds one page of rows and its encoding, whatever the row count. The libraries
were chosen by `bench/exports.py`: csv.writer for CSV, orjson for JSON, and zlib at level
1 for gzip (see the README's numbers).

The encoders (`RowEncoder`, `Gzip`) keep as JSON all that crosses a page's end, so a build
that hands on between Lambda runs goes on from it and writes the bytes of one run
(chalicelib/workflow/rowruns.py).
"""

from __future__ import annotations

import base64
import csv
import io
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

GZIP_LEVEL = 1


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


def _record(row: dict[str, Any], columns: list[str], option: int = 0) -> bytes:
    return orjson.dumps({column: row.get(column) for column in columns}, default=_json_default, option=option)


class RowEncoder:
    """A format's bytes, a page of rows at a time, then its ending.

    What it has written so far is its `state` (JSON), all a later Lambda run needs to go on
    (chalicelib/workflow/rowruns.py): `started`, whether the CSV header or the JSON array's
    opening bracket is out. NDJSON needs nothing. The bytes are the same however the pages
    are split between runs."""

    def __init__(self, format_name: str, columns: list[str], state: dict[str, Any] | None = None) -> None:
        if format_name not in FORMATS:
            raise ValueError(f"unknown row format {format_name!r}")
        self.format = format_name
        self.columns = columns
        self.started = bool((state or {}).get("started", False))

    @property
    def state(self) -> dict[str, Any]:
        return {"started": self.started}

    def page(self, rows: list[dict[str, Any]]) -> bytes:
        columns = self.columns
        if self.format == "ndjson":
            return b"".join(_record(row, columns, orjson.OPT_APPEND_NEWLINE) for row in rows)
        if self.format == "json":
            if not rows:
                return b""
            opening = b"," if self.started else b"["
            self.started = True
            return opening + b",".join(_record(row, columns) for row in rows)
        buffer = io.StringIO()
        writer = csv.writer(buffer)  # RFC 4180: quoted as needed, CRLF line ends
        if not self.started:
            writer.writerow(columns)
            self.started = True
        writer.writerows([_csv_cell(row.get(column)) for column in columns] for row in rows)
        return buffer.getvalue().encode("utf-8")

    def end(self) -> bytes:
        if self.format == "json":
            return b"]" if self.started else b"[]"
        return self.page([]) if self.format == "csv" else b""  # a CSV without rows: its header


def encode(
    pages: Iterable[list[dict[str, Any]]], columns: list[str], format_name: str
) -> Iterator[tuple[bytes, int]]:
    """(bytes, rows in them) for each page of rows, then the ending if it has bytes."""
    encoder = RowEncoder(format_name, columns)
    for page in pages:
        yield encoder.page(page), len(page)
    ending = encoder.end()
    if ending:
        yield ending, 0


# gzip's header as zlib writes it at level 1 (no name, no time, Unix), and deflate's final
# block when it holds nothing: what `Gzip.end` closes the stream with.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\x03"
_FINAL_EMPTY_BLOCK = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS).flush()
_WINDOW = 32 * 1024  # deflate's window: what a chunk may refer back to


class Gzip:
    """One gzip member, compressed a chunk at a time: each chunk its own deflate blocks, ended
    on a byte boundary (a sync flush) and primed with the 32 KiB before it (as pigz does).

    Nothing crosses a chunk's end but that window, the CRC-32 and the length, so they are the
    whole `state` a later Lambda run needs, and the bytes are the same whichever chunk a run
    ended at: exactly those of one run."""

    def __init__(self, level: int = GZIP_LEVEL, state: dict[str, Any] | None = None) -> None:
        state = state or {}
        self._level = level
        self.started = bool(state.get("started", False))
        self.crc = int(state.get("crc", 0))
        self.length = int(state.get("length", 0))
        self.window = base64.b64decode(state.get("window", ""))

    @property
    def state(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "crc": self.crc,
            "length": self.length,
            "window": base64.b64encode(self.window).decode("ascii"),
        }

    def _header(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        return _GZIP_HEADER

    def compress(self, data: bytes) -> bytes:
        header = self._header()
        if not data:
            return header
        if self.window:
            compressor = zlib.compressobj(self._level, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=self.window)
        else:
            compressor = zlib.compressobj(self._level, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        self.crc = zlib.crc32(data, self.crc)
        self.length += len(data)
        self.window = (self.window + data[-_WINDOW:])[-_WINDOW:]
        return header + body

    def end(self) -> bytes:
        trailer = struct.pack("<II", self.crc, self.length & 0xFFFFFFFF)
        return self._header() + _FINAL_EMPTY_BLOCK + trailer


def gzip(chunks: Iterable[tuple[bytes, int]], level: int = GZIP_LEVEL) -> Iterator[tuple[bytes, int]]:
    compressor = Gzip(level)
    for data, rows in chunks:
        yield compressor.compress(data), rows
    yield compressor.end(), 0
