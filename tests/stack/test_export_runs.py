"""Exports hand on between Lambda runs: with a budget so small that every run is short of
time after its first page of rows, Build loops through the state machine (BuildHandsOn) and
still writes the very bytes of a build in one run, in every format, gzipped or not; the row
cap counts across runs; a retried run writes the same parts again.

The budget is the real mechanism (as in test_continuation.py): the local dispatcher's Lambda
context counts down from the function's timeout, and SATCHEL_HANDOFF_RESERVE_MS, set above
that timeout, makes every run find itself short of time after a page.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import zlib
from typing import Any

import pytest
import requests

from chalicelib.core import clients
from chalicelib.downloadtypes import listing
from satchel_local import demodata
from satchel_local.stack import REGION
from tests.support import executions
from tests.support.faults import Fault, Injector
from tests.support.stack import Satchel

MIB = 1024 * 1024
# Above the functions' 900 s timeout: every run is short of time once it has a page.
ALWAYS_SHORT = str(10_000 * 1000)
PADDING = 6000  # bytes of merchant name per row: DynamoDB's 1 MB pages hold ~160 rows


def _finished(satchel: Satchel, body: dict[str, Any], user: str = "alice") -> dict[str, Any]:
    reply = satchel.call("POST", "/downloads", user, body)
    assert reply.status == 202, reply.body
    done: dict[str, Any] = satchel.wait(reply.json["id"], user=user, timeout=300)
    return done


def _built(satchel: Satchel, body: dict[str, Any], user: str = "alice") -> tuple[dict[str, Any], bytes]:
    done = _finished(satchel, body, user)
    assert done["state"] == "DONE", done
    location = satchel.call("GET", done["url"], user).headers["Location"]
    content = requests.get(location, timeout=60).content
    assert hashlib.sha256(content).hexdigest() == done["artifact"]["sha256"]  # Digest hashed the runs' bytes
    assert len(content) == done["artifact"]["size"] == done["progress"]["bytes_done"]
    return done, content


def _nothing_left_of(satchel: Satchel, download_id: str) -> None:
    """Only the artifact (if any) remains: the runs' state went with the other temporaries."""
    assert [
        key for key in satchel.artifact_objects() if download_id in key and not key.startswith("artifacts/")
    ] == []
    assert [upload for upload in satchel.open_uploads() if download_id in upload["Key"]] == []


def _export(fmt: str, compression: str) -> dict[str, Any]:
    return {"type": "export", "params": {"index": "Transaction", "format": fmt, "compression": compression}}


def _expected(count: int) -> list[dict[str, Any]]:
    return [
        {column: demodata.row("acme", number, PADDING)[column] for column in demodata.COLUMNS}
        for number in range(count)
    ]


def _parsed(fmt: str, text: bytes) -> list[dict[str, Any]]:
    """The rows as an independent reader sees them (csv module, json), values as JSON has them."""
    if fmt == "csv":
        read = list(csv.DictReader(io.StringIO(text.decode("utf-8"), newline="")))
        assert list(read[0]) == demodata.COLUMNS
        return read
    if fmt == "ndjson":
        assert text.endswith(b"\n")
        return [json.loads(line) for line in text.decode("utf-8").split("\n")[:-1]]
    parsed: list[dict[str, Any]] = json.loads(text)
    return parsed


def _as_read(fmt: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if fmt == "csv":
        return [
            {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in row.items()}
            for row in rows
        ]
    loaded: list[dict[str, Any]] = json.loads(json.dumps(rows, default=float))
    return loaded


@pytest.mark.parametrize("compression", ["none", "gzip"])
@pytest.mark.parametrize("fmt", ["csv", "ndjson", "json"])
def test_an_export_hands_on_between_pages_and_writes_the_bytes_of_one_run(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, fmt: str, compression: str
) -> None:
    rows = 600  # ~3.7 MB: four DynamoDB pages
    demodata.seed("test", "acme", rows, REGION, padding=PADDING)
    at_once_done, at_once = _built(satchel, _export(fmt, compression))
    assert executions.runs_of(satchel, at_once_done["id"]) == 1
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    done, in_runs = _built(satchel, _export(fmt, compression))
    runs = executions.runs_of(satchel, done["id"])
    assert runs >= 3  # one page per run
    # No run saw every byte: Digest hashed the artifact (in runs of its own, under the same budget).
    assert executions.runs_of(satchel, done["id"], "Digest") >= 1
    assert in_runs == at_once
    assert done["progress"] == {**at_once_done["progress"], "rows_done": rows, "rows_total": rows}
    text = in_runs
    if compression == "gzip":
        assert done["artifact"]["content_type"] == "application/gzip"
        text = gzip.decompress(in_runs)
        assert zlib.decompress(in_runs, 31) == text  # one member, as zlib reads it too
    assert _parsed(fmt, text) == _as_read(fmt, _expected(rows))
    _nothing_left_of(satchel, done["id"])


def _listing(prefix: str, fmt: str = "csv") -> dict[str, Any]:
    return {"type": "listing", "params": {"prefix": prefix, "format": fmt}}


def test_the_row_cap_counts_across_runs_and_fails_at_the_row_one_run_fails_at(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A listing's rows are never counted before the build: only the build's cap stops it.
    monkeypatch.setattr(listing, "PAGE_KEYS", 2)
    for index in range(7):
        satchel.put_source(f"acme/capruns/{index}.txt", b"x" * (index + 1))
    monkeypatch.setenv("SATCHEL_MAX_ROWS", "5")
    at_once = _finished(satchel, _listing("acme/capruns/"))
    assert at_once["state"] == "FAILED"
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    capped = _finished(satchel, _listing("acme/capruns/"))
    assert capped["state"] == "FAILED"
    assert capped["error"] == at_once["error"]
    assert capped["error"]["code"] == "MaxContentSizeExceeded"
    assert "5 rows" in capped["error"]["message"]
    # Pages of 2 rows: runs 1 and 2 hand on with 4 rows; the third's page makes 6.
    assert executions.runs_of(satchel, capped["id"]) == 3
    assert capped["artifact"] is None
    _nothing_left_of(satchel, capped["id"])

    monkeypatch.setenv("SATCHEL_MAX_ROWS", "7")  # exactly at the cap: built, in 4 runs
    monkeypatch.delenv("SATCHEL_HANDOFF_RESERVE_MS")
    _, whole = _built(satchel, _listing("acme/capruns/"))
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    done, in_runs = _built(satchel, _listing("acme/capruns/"))
    assert executions.runs_of(satchel, done["id"]) == 4
    assert in_runs == whole
    read = list(csv.DictReader(io.StringIO(in_runs.decode("utf-8"), newline="")))
    assert [(row["key"], row["size"]) for row in read] == [
        (f"acme/capruns/{index}.txt", str(index + 1)) for index in range(7)
    ]


def test_a_listing_in_json_hands_on_and_closes_one_array(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listing, "PAGE_KEYS", 1)
    for name in ("a", "b", "c"):
        satchel.put_source(f"acme/jsonruns/{name}.txt", name.encode())
    _, whole = _built(satchel, _listing("acme/jsonruns/", "json"))
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    done, in_runs = _built(satchel, _listing("acme/jsonruns/", "json"))
    assert executions.runs_of(satchel, done["id"]) == 3
    assert in_runs == whole
    assert [row["key"] for row in json.loads(in_runs)] == [f"acme/jsonruns/{name}.txt" for name in "abc"]


def test_a_retried_run_writes_the_same_parts_again_and_duplicates_nothing(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ~12 MB of CSV in 5 MiB parts: part 1 is uploaded some runs in, part 2 later.
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))
    demodata.seed("test", "acme", 2000, REGION, padding=PADDING)
    body = _export("csv", "none")
    at_once_done, at_once = _built(satchel, body)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    clients.reset()
    injector = Injector(satchel.stack.table)
    injector.install()
    # A run that hands on saves two objects (held bytes, state): the 12th put is run 5's
    # state, after its page filled part 1 (six pages of ~1 MB make 5 MiB). It fails on every
    # attempt botocore makes: the run fails, and Retry runs it again from the same saved
    # state: the same page, the same part 1 again, the same keys.
    before = injector.calls.copy()
    with injector.armed(Fault("s3.PutObject", "internal", at=12, step="app.build")) as arming:
        done, in_runs = _built(satchel, body)
    made = injector.calls - before
    assert injector.fired(arming) > 0
    assert executions.failures_of(satchel, done["id"]) == ["TransientError"]
    runs = executions.runs_of(satchel, done["id"])
    assert runs >= 10
    # Part 1 by the failed attempt and by its retry, part 2, and the last one on completion.
    assert made[("app.build", "s3.UploadPart")] == 4
    # Two puts each: every run (all but the last for the next run, the last its checks and
    # what a retry of it needs), and the failed attempt (Retry is no new TaskStateEntered).
    assert made[("app.build", "s3.PutObject")] == 2 * runs + 2
    assert in_runs == at_once
    parts = [
        satchel.s3.head_object(
            Bucket=satchel.stack.artifact_bucket, Key=f"artifacts/{each['id']}", PartNumber=1
        )["PartsCount"]
        for each in (at_once_done, done)
    ]
    assert parts == [3, 3]  # two full parts and the rest, none twice
    assert len(list(csv.reader(io.StringIO(in_runs.decode("utf-8"), newline="")))) == 2001
    _nothing_left_of(satchel, done["id"])
