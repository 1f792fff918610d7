"""Rows to bytes, a page at a time: CSV, NDJSON and a JSON array, each with its row counts,
DynamoDB's values (Decimal, sets, Binary) as JSON has them, and gzip as one member."""

from __future__ import annotations

import csv
import gzip
import io
import json
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary

from chalicelib.downloadtypes import rowformats

COLUMNS = ["id", "amount", "tags", "extra"]
PAGES: list[list[dict[str, Any]]] = [
    [
        {"id": "a", "amount": Decimal("10.50"), "tags": {"y", "x"}, "extra": {"n": Decimal(2)}},
        {"id": "b", "amount": Decimal(3), "tags": None, "extra": True},
    ],
    [],  # an empty page in the middle
    [{"id": "c", "amount": Decimal("0.25"), "tags": [1, 2], "flag": "not a column"}],
]


def _encoded(format_name: str, pages: list[list[dict[str, Any]]] = PAGES) -> tuple[bytes, list[int]]:
    chunks = list(rowformats.encode(pages, COLUMNS, format_name))
    return b"".join(data for data, _ in chunks), [rows for _, rows in chunks]


def test_plain_values_are_what_json_holds() -> None:
    assert rowformats.plain_value(Decimal(7)) == 7
    assert isinstance(rowformats.plain_value(Decimal(7)), int)
    assert rowformats.plain_value(Decimal("1.5")) == 1.5
    assert rowformats.plain_value(b"\x00\xff") == "AP8="
    assert rowformats.plain_value(Binary(b"\x00\xff")) == "AP8="
    assert rowformats.plain_value({"s": {Decimal(2), Decimal(1)}, "l": [Decimal("0.5")]}) == {
        "s": [1, 2],
        "l": [0.5],
    }


def test_csv_has_a_header_then_a_line_per_row_with_decimals_exactly_as_stored() -> None:
    data, rows = _encoded("csv")
    assert sum(rows) == 3
    assert data.endswith(b"\r\n")  # RFC 4180 line ends
    read = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    assert read == [
        COLUMNS,
        ["a", "10.50", '["x","y"]', '{"n":2}'],
        ["b", "3", "", "true"],
        ["c", "0.25", "[1,2]", ""],
    ]


def test_ndjson_is_a_line_per_row_with_only_the_columns() -> None:
    data, rows = _encoded("ndjson")
    assert rows == [2, 0, 1]
    lines = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    assert lines == [
        {"id": "a", "amount": 10.5, "tags": ["x", "y"], "extra": {"n": 2}},
        {"id": "b", "amount": 3, "tags": None, "extra": True},
        {"id": "c", "amount": 0.25, "tags": [1, 2], "extra": None},
    ]


def test_json_is_one_array_across_pages_and_an_empty_one_without_rows() -> None:
    data, rows = _encoded("json")
    assert sum(rows) == 3
    assert [row["id"] for row in json.loads(data)] == ["a", "b", "c"]
    assert _encoded("json", [])[0] == b"[]"
    assert _encoded("json", [[], []])[0] == b"[]"


def test_a_value_no_format_can_hold_is_refused() -> None:
    with pytest.raises(TypeError):
        _encoded("ndjson", [[{"id": object()}]])


def test_gzip_is_one_member_that_decompresses_to_the_same_bytes_and_rows() -> None:
    plain, rows = _encoded("csv")
    chunks = list(rowformats.gzip(rowformats.encode(PAGES, COLUMNS, "csv")))
    assert [count for _, count in chunks] == [*rows, 0]
    stream = b"".join(data for data, _ in chunks)
    assert stream[:3] == b"\x1f\x8b\x08"
    assert gzip.decompress(stream) == plain


def test_every_format_names_its_extension_and_content_type() -> None:
    assert {name: (f.extension, f.content_type) for name, f in rowformats.FORMATS.items()} == {
        "csv": (".csv", "text/csv; charset=utf-8"),
        "ndjson": (".ndjson", "application/x-ndjson"),
        "json": (".json", "application/json"),
    }
