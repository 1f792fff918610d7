"""A build writes its central directory records to S3 in batches as it lays members out
(chalicelib/workflow/runs.py, RECORDS_BATCH), so its memory does not grow with the file
count: with batches of one or two records, in one run, across runs and in segments, the
archive is byte for byte the one a build holding every record writes."""

from __future__ import annotations

import hashlib
import io
import itertools
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from chalicelib.core.settings import Settings
from chalicelib.workflow import runs
from tests.support.stack import Satchel


def _bodies(satchel: Satchel, prefix: str, count: int) -> dict[str, bytes]:
    bodies = {f"{prefix}{index}.txt": (f"record {index} " * 500).encode() for index in range(count)}
    for key, body in bodies.items():
        satchel.put_source(key, body)
    return bodies


def _build(satchel: Satchel, params: dict[str, Any]) -> bytes:
    created = satchel.create(params)
    assert created.status == 202, created.body
    done = satchel.wait(created.json["id"], timeout=180)
    assert done["state"] == "DONE", done
    body = requests.get(satchel.call("GET", done["url"]).headers["Location"], timeout=60).content
    assert hashlib.sha256(body).hexdigest() == done["artifact"]["sha256"]
    return body


def _batches_written(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys of the record batches the runs write (Finalize removes them afterwards)."""
    written: list[str] = []
    original = runs.Run._put

    def put(self: runs.Run, key: str, body: bytes, content_type: str = "application/json") -> None:
        if key.rsplit("/", 1)[-1].startswith("directory-"):
            written.append(key)
        original(self, key, body, content_type)

    monkeypatch.setattr(runs.Run, "_put", put)
    return written


def _every_third_entry_short(monkeypatch: pytest.MonkeyPatch) -> None:
    """A budget that runs low at every third question: each run lays out three members."""
    asked = itertools.count(1)

    def of(cls: type[runs.Budget], context: Any, settings: Settings) -> runs.Budget:
        return cls(lambda: 0 if next(asked) % 3 == 0 else 10**9, 1)

    monkeypatch.setattr(runs.Budget, "of", classmethod(of))


def _members(body: bytes) -> Iterator[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(body)) as opened:
        assert opened.testzip() is None
        for info in opened.infolist():
            yield info.filename, opened.read(info)


def test_records_written_in_batches_give_the_same_archive_in_one_run_across_runs_and_in_segments(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = _bodies(satchel, "acme/batches/", 7)
    params = {"prefixes": ["acme/batches/"]}
    whole = _build(satchel, params)  # the default batch: every record held until the end
    assert dict(_members(whole)) == {key.removeprefix("acme/"): body for key, body in bodies.items()}
    written = _batches_written(monkeypatch)
    assert written == []  # none written in batches so far

    monkeypatch.setattr(runs, "RECORDS_BATCH", 2)
    assert _build(satchel, params) == whole
    # A member's record is laid out once its bytes are (a deflated member's CRC comes last),
    # and the latest is always kept: records 1-2 and 3-4 are written, 5-7 held to the end.
    assert [key.rsplit("/", 1)[-1] for key in written] == ["directory-0.jsonl", "directory-1.jsonl"]

    written.clear()
    monkeypatch.setattr(runs, "RECORDS_BATCH", 1)
    _every_third_entry_short(monkeypatch)
    assert _build(satchel, params) == whole
    # Runs of 3, 3 and 1 members: each run of 3 writes its first record in a batch of its own.
    assert [key.split("/runs/")[1] for key in written] == [f"{run:05d}/directory-0.jsonl" for run in (0, 1)]

    written.clear()
    monkeypatch.setenv("SATCHEL_PARALLEL_MIN_FILES", "1")
    monkeypatch.setenv("SATCHEL_SEGMENT_FILES", "4")
    assert _build(satchel, params) == whole
    assert any("/segments/" in key for key in written)
