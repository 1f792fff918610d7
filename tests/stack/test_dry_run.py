"""`dry_run: true`: the plan of a create, with nothing started, stored or counted.

Each test compares what the table, the buckets and Step Functions hold before and after, so
"nothing was started" is measured, not assumed; and the limits a dry run reports are the
ones the real run then fails with.
"""

from __future__ import annotations

import itertools
from typing import Any

import boto3
import pytest

from chalicelib.api import downloads
from chalicelib.core import clients
from chalicelib.core.errors import InvalidParams
from chalicelib.core.models import Principal
from chalicelib.downloadtypes import base
from chalicelib.runtime import Runtime
from chalicelib.storage.downloads import DownloadStore
from satchel_local.stack import REGION
from tests.support.stack import Satchel


def footprint(satchel: Satchel) -> dict[str, Any]:
    """Everything a create would leave behind: records, objects, uploads, executions, quota."""
    table = clients.table(satchel.stack.table)
    items = table.scan()["Items"]
    s3 = satchel.s3
    objects = s3.list_objects_v2(Bucket=satchel.stack.artifact_bucket).get("KeyCount", 0)
    uploads = len(s3.list_multipart_uploads(Bucket=satchel.stack.artifact_bucket).get("Uploads", []))
    sfn = boto3.client("stepfunctions", region_name=REGION)
    executions = len(sfn.list_executions(stateMachineArn=satchel.stack.state_machine_arn)["executions"])
    store = DownloadStore(table)
    return {
        "items": len(items),
        "objects": objects,
        "uploads": uploads,
        "executions": executions,
        "active": (store.active_count("acme", "alice"), store.tenant_active_count("acme")),
    }


def dry_run(satchel: Satchel, params: dict[str, Any], user: str = "alice", **extra: Any) -> Any:
    before = footprint(satchel)
    answer = satchel.create(params, user=user, dry_run=True, **extra)
    assert footprint(satchel) == before, "a dry run left something behind"
    return answer


def test_a_dry_run_answers_the_plan_and_starts_nothing(satchel: Satchel) -> None:
    for index in range(3):
        satchel.put_source(f"acme/plan/{index}.txt", b"x" * (index + 1) * 100)
    satchel.put_source("acme/one.txt", b"1")

    answer = dry_run(satchel, {"keys": ["acme/one.txt"], "prefixes": ["acme/plan/"]}, filename="report")

    assert answer.status == 200
    plan = answer.json
    assert plan["dry_run"] is True
    assert plan["totals"] == {"files_total": 4, "bytes_total": 1 + 100 + 200 + 300, "rows_total": 0}
    assert (plan["segments"], plan["parallel"], plan["complete"], plan["would_start"]) == (
        1,
        False,
        True,
        True,
    )
    assert plan["problems"] == []
    assert plan["filename"] == "report.zip"
    assert plan["limits"] == {"max_files": 1_000_000, "max_content_bytes": 1024**4, "max_keys": 1000}
    assert "Location" not in answer.headers
    # The same request without dry_run starts and builds exactly what was planned.
    created = satchel.create({"keys": ["acme/one.txt"], "prefixes": ["acme/plan/"]}, filename="report")
    assert created.status == 202
    done = satchel.wait(created.json["id"])
    assert done["state"] == "DONE"
    assert (done["progress"]["files_total"], done["progress"]["bytes_total"]) == (4, 601)


def test_a_dry_run_lists_every_limit_it_breaks_and_the_real_run_fails_with_them(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SATCHEL_MAX_FILES", "3")
    monkeypatch.setenv("SATCHEL_MAX_CONTENT_BYTES", "500")
    for index in range(5):
        satchel.put_source(f"acme/big/{index}.bin", b"y" * 200)

    plan = dry_run(satchel, {"prefixes": ["acme/big/"]}).json

    # Counted to the end, past both limits: the caller learns how far over they are.
    assert plan["totals"]["files_total"] == 5
    assert plan["totals"]["bytes_total"] == 1000
    assert plan["would_start"] is False
    assert plan["segments"] == 0
    codes = {problem["Code"]: problem for problem in plan["problems"]}
    assert set(codes) == {"MaxContentSizeExceeded", "TooManyFiles"}
    assert codes["TooManyFiles"]["max_files"] == 3
    assert codes["MaxContentSizeExceeded"]["max_bytes"] == 500
    assert plan["limits"]["max_files"] == 3

    created = satchel.create({"prefixes": ["acme/big/"]})
    failed = satchel.wait(created.json["id"])
    assert failed["state"] == "FAILED"
    assert failed["error"]["code"] in codes  # the first limit the real run meets


def test_a_dry_run_reports_what_would_fail_the_run(satchel: Satchel) -> None:
    plan = dry_run(satchel, {"keys": ["acme/not-there.txt"]}).json
    assert plan["would_start"] is False
    assert [problem["Code"] for problem in plan["problems"]] == ["SourceMissing"]

    skipped = dry_run(satchel, {"keys": ["acme/not-there.txt", "acme/kept.txt"], "on_missing": "skip"})
    # acme/kept.txt does not exist either: nothing is left to download.
    assert [problem["Code"] for problem in skipped.json["problems"]] == ["NothingToDownload"]

    satchel.put_source("acme/kept.txt", b"kept")
    kept = dry_run(satchel, {"keys": ["acme/not-there.txt", "acme/kept.txt"], "on_missing": "skip"}).json
    assert (kept["would_start"], kept["skipped"], kept["totals"]["files_total"]) == (
        True,
        ["acme/not-there.txt"],
        1,
    )


def test_a_dry_run_is_checked_as_a_create_is(satchel: Satchel) -> None:
    assert satchel.create({"keys": []}, dry_run=True).status == 400  # EmptyKeys, as a create
    outside = satchel.create({"keys": ["globex/secret.txt"]}, dry_run=True)
    assert (outside.status, outside.json["Code"]) == (403, "SourceNotAllowed")
    audit = satchel.call("POST", "/downloads", "alice", {"type": "audit", "dry_run": True})
    assert audit.status == 403  # the type's role, before any plan
    bad = satchel.call(
        "POST", "/downloads", "alice", {"type": "zip", "params": {"keys": ["acme/a"]}, "dry_run": 1}
    )
    assert (bad.status, bad.json["Code"]) == (422, "InvalidParams")
    assert "dry_run" in bad.json["Message"]


def test_a_dry_run_plans_parallel_segments(satchel: Satchel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SATCHEL_PARALLEL_MIN_FILES", "4")
    monkeypatch.setenv("SATCHEL_SEGMENT_FILES", "3")
    for index in range(10):
        satchel.put_source(f"acme/many/{index:02}.txt", b"z")
    plan = dry_run(satchel, {"prefixes": ["acme/many/"]}).json
    assert (plan["segments"], plan["parallel"]) == (4, True)  # 3 + 3 + 3 + 1


def test_a_dry_run_of_an_export_counts_rows_against_the_row_cap(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b", "c"):
        assert satchel.create({"keys": [f"acme/{name}"]}, user="carol").status == 202  # audit rows
    monkeypatch.setenv("SATCHEL_MAX_ROWS", "2")
    plan = satchel.call("POST", "/downloads", "carol", {"type": "audit", "dry_run": True}).json
    assert plan["totals"]["rows_total"] >= 3
    assert plan["limits"]["max_rows"] == 2
    assert [problem["Code"] for problem in plan["problems"]] == ["MaxContentSizeExceeded"]


def test_a_dry_run_stops_listing_at_its_budget(satchel: Satchel, monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = itertools.count(step=100)  # each look at the clock: 100 s later, past the 20 s budget
    monkeypatch.setattr(base, "_monotonic", lambda: float(next(ticks)))
    for index in range(3):
        satchel.put_source(f"acme/slow/{index}.txt", b"s")
    plan = dry_run(satchel, {"prefixes": ["acme/slow/"]}).json
    assert plan["complete"] is False
    assert plan["totals"]["files_total"] == 3  # one page: a lower bound
    assert plan["segments"] is None  # not known until every source is listed


def test_an_event_cannot_ask_for_a_dry_run(satchel: Satchel) -> None:
    """Triggers create through downloads.create, which has no plan to answer with: refused."""
    before = footprint(satchel)
    with pytest.raises(InvalidParams, match="dry_run"):
        downloads.create(
            Runtime.from_env(),
            Principal("acme", "alice"),
            {"type": "zip", "params": {"keys": ["acme/a"]}, "dry_run": True},
        )
    assert footprint(satchel) == before
