"""A row writer's state carries a build across Lambda runs (chalicelib/workflow/rowruns.py):
cut the pages into runs anywhere, carry the state through JSON between them, and the bytes
are those of one run, in every format and compression; the caps count across the cut."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import random
import zlib
from decimal import Decimal
from typing import Any

import pytest

from chalicelib.core.errors import MaxContentSizeExceeded
from chalicelib.core.models import Progress
from chalicelib.core.settings import Settings
from chalicelib.downloadtypes.rows import RowWriter

COLUMNS = ["id", "amount", "note"]
CASES = [(fmt, compression) for fmt in ("csv", "ndjson", "json") for compression in ("none", "gzip")]


class Tracker:
    def __init__(self) -> None:
        self.current = Progress()

    def advance(self, *, files: int = 0, bytes_: int = 0, rows: int = 0) -> None:
        self.current = Progress(
            files_done=self.current.files_done + files,
            bytes_done=self.current.bytes_done + bytes_,
            rows_done=self.current.rows_done + rows,
        )


def _pages(seed: int) -> list[list[dict[str, Any]]]:
    chance = random.Random(seed)
    pages: list[list[dict[str, Any]]] = []
    number = 0
    for _ in range(6):
        page = []
        for _ in range(chance.choice([0, 1, 40, 300])):  # empty pages too
            # Text that repeats (deflate finds it across a page's end) and text that does not.
            note = ("same words again " * chance.randint(0, 30)) + os.urandom(chance.randint(0, 50)).hex()
            page.append({"id": f"r{number}", "amount": Decimal(number) / 4, "note": note})
            number += 1
        pages.append(page)
    return pages


def _settings(**overrides: Any) -> Settings:
    required = {
        "SATCHEL_TABLE": "t",
        "SATCHEL_ARTIFACT_BUCKET": "a",
        "SATCHEL_SOURCE_BUCKET": "s",
        "SATCHEL_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:m",
    }
    return Settings.from_env({**required, **{key: str(value) for key, value in overrides.items()}})


def _built(
    pages: list[list[dict[str, Any]]], params: dict[str, Any], cuts: set[int], settings: Settings
) -> bytes:
    """The pages written in runs that end after each page numbered in `cuts`."""
    out = b""
    state: dict[str, Any] | None = None
    writer = RowWriter(params, Tracker(), settings)
    for index, page in enumerate(pages):
        out += writer.page(page)
        if index in cuts:
            state = json.loads(json.dumps(writer.state))  # as S3 holds it
            writer = RowWriter(params, Tracker(), settings, state)
    return out + writer.end()


@pytest.mark.parametrize(("fmt", "compression"), CASES)
def test_any_cut_into_runs_gives_the_bytes_of_one_run(fmt: str, compression: str) -> None:
    settings = _settings()
    params = {"format": fmt, "compression": compression, "columns": COLUMNS}
    for seed in range(4):
        pages = _pages(seed)
        whole = _built(pages, params, set(), settings)
        for cuts in ({0}, {2}, set(range(len(pages))), {1, 4}):
            assert _built(pages, params, cuts, settings) == whole, (seed, cuts)
        text = whole
        if compression == "gzip":
            text = gzip.decompress(whole)
            assert zlib.decompress(whole, 31) == text
        rows = [row for page in pages for row in page]
        if fmt == "csv":
            read = list(csv.reader(io.StringIO(text.decode("utf-8"), newline="")))
            assert read == [COLUMNS] + [[row["id"], str(row["amount"]), row["note"]] for row in rows]
        elif fmt == "json":
            assert [row["id"] for row in json.loads(text)] == [row["id"] for row in rows]
        else:
            assert [json.loads(line)["id"] for line in text.splitlines()] == [row["id"] for row in rows]


def test_gzip_in_chunks_stays_near_one_stream() -> None:
    """Each page is compressed on its own, primed with the 32 KiB before it: little is lost."""
    pages = _pages(7) * 4
    params = {"format": "ndjson", "compression": "gzip", "columns": COLUMNS}
    chunked = _built(pages, params, set(), _settings())
    plain = _built(pages, {**params, "compression": "none"}, set(), _settings())
    assert gzip.decompress(chunked) == plain
    assert len(chunked) <= 1.05 * len(gzip.compress(plain, 1))


@pytest.mark.parametrize(("fmt", "compression"), CASES)
def test_the_row_cap_counts_across_runs(fmt: str, compression: str) -> None:
    pages = [[{"id": str(page * 10 + row)} for row in range(10)] for page in range(5)]
    params = {"format": fmt, "compression": compression, "columns": ["id"]}
    settings = _settings(SATCHEL_MAX_ROWS=35)
    for cuts in (set(), {0, 1, 2}, {2}):
        with pytest.raises(MaxContentSizeExceeded, match="more than 35 rows"):
            _built(pages, params, cuts, settings)
    assert _built([*pages[:3], pages[3][:5]], params, {0, 1, 2}, settings)  # exactly 35: written


def test_the_byte_cap_counts_across_runs() -> None:
    pages = [[{"id": "x" * 100}] for _ in range(5)]
    params = {"format": "ndjson", "compression": "none", "columns": ["id"]}
    settings = _settings(SATCHEL_MAX_TABLE_BYTES=4 * 110)  # each row is 110 bytes
    with pytest.raises(MaxContentSizeExceeded, match="bytes"):
        _built(pages, params, {0, 1, 2, 3}, settings)
    assert len(_built(pages[:4], params, {0, 1, 2}, settings)) == 440
