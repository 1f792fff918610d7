"""The `export` and `audit` types through the real workflow."""

from __future__ import annotations

import csv
import gzip
import io
import json
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from chalicelib.core.errors import problem
from satchel_local import demodata
from satchel_local.stack import REGION
from tests.support.stack import Satchel

MIB = 1024 * 1024


def export(satchel: Satchel, user: str = "alice", **params: Any) -> dict[str, Any]:
    reply = satchel.call("POST", "/downloads", user, {"type": "export", "params": params})
    assert reply.status == 202, reply.body
    done: dict[str, Any] = satchel.wait(reply.json["id"], user=user)
    assert done["state"] == "DONE", done
    return done


def fetch(
    satchel: Satchel, download: dict[str, Any], user: str = "alice"
) -> tuple[bytes, dict[str, list[str]]]:
    location = satchel.call("GET", download["url"], user).headers["Location"]
    return requests.get(location, timeout=30).content, parse_qs(urlparse(location).query)


def expected(count: int, columns: list[str] = demodata.COLUMNS) -> list[dict[str, Any]]:
    return [{column: demodata.row("acme", number)[column] for column in columns} for number in range(count)]


@pytest.fixture
def rows(stack: Any) -> int:
    demodata.seed("test", "acme", 250, REGION)
    demodata.seed("test", "globex", 7, REGION)
    return 250


def test_types_lists_every_builtin_type(satchel: Satchel) -> None:
    types = {item["name"]: item for item in satchel.call("GET", "/types").json["items"]}
    assert set(types) == {"zip", "export", "audit", "listing"}
    assert types["export"]["formats"] == ["csv", "ndjson", "json"]
    assert types["export"]["params"]["required"] == ["index"]
    assert types["audit"]["required_role"] == "admin"


def test_csv_export_has_every_row_of_the_tenant_and_only_those(satchel: Satchel, rows: int) -> None:
    done = export(satchel, index="Transaction")
    assert done["filename"] == f"Transaction_Export-{done['id']}.csv"
    assert done["artifact"]["content_type"] == "text/csv; charset=utf-8"
    assert done["progress"] == {
        "files_done": 1,
        "files_total": 1,
        "bytes_done": done["artifact"]["size"],
        "bytes_total": done["artifact"]["size"],  # an estimate while building, exact at the end
        "rows_done": rows,
        "rows_total": rows,
    }
    body, query = fetch(satchel, done)
    assert f'filename="Transaction_Export-{done["id"]}.csv"' in query["response-content-disposition"][0]
    parsed = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    assert parsed[0] == demodata.COLUMNS
    assert body.count(b"\r\n") >= rows + 1  # RFC 4180 line ends
    want = [
        [str(value).lower() if isinstance(value, bool) else str(value) for value in record.values()]
        for record in expected(rows)
    ]
    assert parsed[1:] == want
    assert "Line\nBreak Ltd" in {record[2] for record in parsed[1:]}  # quoted, not split


def test_ndjson_gzip_export(satchel: Satchel, rows: int) -> None:
    done = export(satchel, index="Transaction", format="ndjson", compression="gzip")
    assert done["filename"].endswith(".ndjson.gz")
    assert done["artifact"]["content_type"] == "application/gzip"
    body, _ = fetch(satchel, done)
    records = [json.loads(line) for line in gzip.decompress(body).splitlines()]
    assert records == json.loads(json.dumps(expected(rows), default=float))


def test_json_export_of_chosen_columns_and_filters(satchel: Satchel, rows: int) -> None:
    columns = ["id", "amount", "status"]
    filters = [
        {"column": "status", "op": "eq", "value": "settled"},
        {"column": "amount", "op": "gte", "value": 100.5},
    ]
    done = export(satchel, index="Transaction", format="json", columns=columns, filters=filters)
    body, _ = fetch(satchel, done)
    want = [
        record
        for record in expected(rows, columns)
        if record["status"] == "settled" and record["amount"] >= Decimal("100.5")
    ]
    assert want
    assert json.loads(body) == json.loads(json.dumps(want, default=float))
    assert done["progress"]["rows_total"] == done["progress"]["rows_done"] == len(want)


def test_a_tenant_without_rows_gets_an_empty_file(satchel: Satchel, rows: int) -> None:
    done = export(
        satchel,
        user="dave",
        index="Transaction",
        format="json",
        filters=[{"column": "id", "op": "eq", "value": "none"}],
    )
    assert fetch(satchel, done, "dave")[0] == b"[]"


def test_a_large_export_spans_several_multipart_parts(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))
    demodata.seed("test", "acme", 3000, REGION, padding=2000)  # ~6.3 MB of CSV
    done = export(satchel, index="Transaction", columns=["id", "merchant"])
    assert done["artifact"]["size"] > 5 * MIB
    head = satchel.s3.head_object(
        Bucket=satchel.stack.artifact_bucket, Key=f"artifacts/{done['id']}", PartNumber=1
    )
    assert head["PartsCount"] == 2
    body, _ = fetch(satchel, done)
    assert len(list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))) == 3001


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"index": "Nope"}, "params/index"),
        ({}, "params"),
        ({"index": "Transaction", "format": "xml"}, "params/format"),
        ({"index": "Transaction", "columns": ["id", "secret"]}, "params/columns"),
        ({"index": "Transaction", "columns": []}, "params/columns"),
        (
            {"index": "Transaction", "filters": [{"column": "secret", "op": "eq", "value": 1}]},
            "params/filters",
        ),
        (
            {"index": "Transaction", "filters": [{"column": "id", "op": "like", "value": "x"}]},
            "params/filters/0/op",
        ),
        ({"index": "Transaction", "compression": "zip"}, "params/compression"),
    ],
)
def test_export_params_are_validated(satchel: Satchel, params: dict[str, Any], path: str) -> None:
    reply = satchel.call("POST", "/downloads", body={"type": "export", "params": params})
    assert reply.status == 422, reply.body
    assert reply.json["Code"] == "InvalidParams"
    assert reply.json["path"] == path


def test_audit_is_for_tenant_admins(satchel: Satchel) -> None:
    reply = satchel.call("POST", "/downloads", "alice", {"type": "audit", "params": {}})
    assert reply.status == 403
    assert reply.json == problem("Forbidden", 403, "type 'audit' requires the 'admin' role", role="admin")


def test_audit_export_lists_the_tenants_trail(satchel: Satchel, rows: int) -> None:
    first = export(satchel, index="Transaction")
    satchel.call("GET", f"/downloads/{first['id']}/url")
    reply = satchel.call("POST", "/downloads", "carol", {"type": "audit", "params": {"format": "csv"}})
    done = satchel.wait(reply.json["id"], user="carol")
    assert done["filename"] == f"Audit_Export-{done['id']}.csv"
    body, _ = fetch(satchel, done, "carol")
    trail = list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))
    assert [(row["action"], row["actor"], row["download_id"]) for row in trail] == [
        ("download.created", "user:alice", first["id"]),
        ("download.url", "user:alice", first["id"]),
        ("download.created", "user:carol", done["id"]),
    ]


def test_listing_type_lists_objects_under_a_prefix(satchel: Satchel) -> None:
    satchel.put_source("acme/listed/a.txt", b"a")
    satchel.put_source("acme/listed/sub/b.txt", b"bb")
    satchel.put_source("acme/other.txt", b"c")
    reply = satchel.call(
        "POST", "/downloads", body={"type": "listing", "params": {"prefix": "acme/listed/", "format": "json"}}
    )
    done = satchel.wait(reply.json["id"])
    assert done["filename"] == f"Listing-{done['id']}.json"
    rows = json.loads(fetch(satchel, done)[0])
    assert [(row["key"], row["size"]) for row in rows] == [
        ("acme/listed/a.txt", 1),
        ("acme/listed/sub/b.txt", 2),
    ]
    outside = satchel.call("POST", "/downloads", body={"type": "listing", "params": {"prefix": "globex/"}})
    assert outside.status == 403


def failed(satchel: Satchel, body: dict[str, Any], user: str = "alice") -> dict[str, Any]:
    reply = satchel.call("POST", "/downloads", user, body)
    assert reply.status == 202, reply.body
    done: dict[str, Any] = satchel.wait(reply.json["id"], user=user)
    assert done["state"] == "FAILED", done
    assert done["artifact"] is None
    assert satchel.open_uploads() == []
    assert [key for key in satchel.artifact_objects() if done["id"] in key] == []
    return done


def test_an_export_of_more_rows_than_the_cap_fails_before_it_is_built(
    satchel: Satchel, rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SATCHEL_MAX_ROWS", str(rows - 1))
    done = failed(satchel, {"type": "export", "params": {"index": "Transaction"}})
    assert done["error"]["code"] == "MaxContentSizeExceeded"
    assert str(rows - 1) in done["error"]["message"]
    assert done["progress"]["bytes_done"] == 0  # refused in Prepare: nothing was written

    monkeypatch.setenv("SATCHEL_MAX_ROWS", str(rows))  # exactly at the cap: built
    assert export(satchel, index="Transaction")["progress"]["rows_done"] == rows


def test_an_export_larger_than_the_byte_cap_fails(
    satchel: Satchel, rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SATCHEL_MAX_TABLE_BYTES", "4096")
    done = failed(satchel, {"type": "export", "params": {"index": "Transaction", "format": "json"}})
    assert done["error"]["code"] == "MaxContentSizeExceeded"
    assert "4096 bytes" in done["error"]["message"]


def test_a_listing_over_the_row_cap_fails(satchel: Satchel, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("a", "b", "c"):
        satchel.put_source(f"acme/capped/{name}.txt", name.encode())
    monkeypatch.setenv("SATCHEL_MAX_ROWS", "2")
    done = failed(satchel, {"type": "listing", "params": {"prefix": "acme/capped/"}})
    assert done["error"]["code"] == "MaxContentSizeExceeded"

    monkeypatch.setenv("SATCHEL_MAX_ROWS", "3")
    reply = satchel.call("POST", "/downloads", body={"type": "listing", "params": {"prefix": "acme/capped/"}})
    assert satchel.wait(reply.json["id"])["state"] == "DONE"


def test_an_audit_over_the_row_cap_fails(satchel: Satchel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SATCHEL_MAX_ROWS", "1")
    satchel.put_source("acme/audited.txt", b"x")
    assert satchel.create({"keys": ["acme/audited.txt"]}).status == 202  # one row in the trail
    done = failed(satchel, {"type": "audit", "params": {}}, user="carol")  # and its own: two
    assert done["error"]["code"] == "MaxContentSizeExceeded"
