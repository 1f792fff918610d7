"""What operators see: JSON log lines that name the download and its tenant, CloudWatch
metrics (EMF) as downloads are created and finish, and X-Ray tracing only when asked for."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import pytest

from chalicelib.core import clock
from tests.support.stack import Satchel


def _lines(out: str) -> list[dict[str, Any]]:
    found = []
    for line in out.splitlines():
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            found.append(parsed)
    return found


def _logs(out: str) -> list[dict[str, Any]]:
    return [line for line in _lines(out) if "_aws" not in line]


@dataclass(frozen=True)
class Metric:
    namespace: str
    name: str
    unit: str
    values: list[float]  # EMF's array form: a value per data point
    dimensions: dict[str, str]
    download_id: str


def _metrics(out: str) -> list[Metric]:
    found = []
    for line in _lines(out):
        for directive in line.get("_aws", {}).get("CloudWatchMetrics", []):
            (names,) = directive["Dimensions"]  # one dimension set per line
            for metric in directive["Metrics"]:
                found.append(
                    Metric(
                        namespace=directive["Namespace"],
                        name=metric["Name"],
                        unit=metric["Unit"],
                        values=line[metric["Name"]],
                        dimensions={name: line[name] for name in names},
                        download_id=line["download_id"],
                    )
                )
    return found


def _of(metrics: list[Metric], download_id: str) -> dict[str, Metric]:
    mine = [metric for metric in metrics if metric.download_id == download_id]
    by_name = {metric.name: metric for metric in mine}
    assert len(by_name) == len(mine), f"a metric was written twice: {mine}"
    return by_name


# --- Logs ---------------------------------------------------------------------------------


def test_a_workflow_step_logs_json_lines_with_the_download_id_and_tenant(
    satchel: Satchel, capsys: pytest.CaptureFixture[str]
) -> None:
    created = satchel.create({"keys": ["acme/not/there.txt"]})
    assert created.status == 202, created.body
    download_id = created.json["id"]
    assert satchel.wait(download_id)["state"] == "FAILED"
    logging.getLogger("chalicelib.workflow.steps").warning("after the workflow")

    lines = _logs(capsys.readouterr().out)
    ended = [line for line in lines if line["message"].startswith(f"download {download_id} ended")]
    assert len(ended) == 1, lines
    (line,) = ended
    assert line["download_id"] == download_id
    assert line["tenant"] == "acme"
    assert line["service"] == "satchel"
    assert line["level"] == "WARNING"
    assert line["name"] == "chalicelib.workflow.steps"
    assert line["function_name"]  # the Lambda context's keys as well
    assert line["function_request_id"]
    # The keys end with the invocation: a later line does not name the download.
    (after,) = [line for line in lines if line["message"] == "after the workflow"]
    assert "download_id" not in after
    assert "tenant" not in after


# --- Metrics ------------------------------------------------------------------------------


def test_a_finished_download_writes_its_metrics(satchel: Satchel, capsys: pytest.CaptureFixture[str]) -> None:
    satchel.put_source("acme/metrics/a.txt", b"a" * 10_000)
    created = satchel.create({"keys": ["acme/metrics/a.txt"]})
    assert created.status == 202, created.body
    done = satchel.wait(created.json["id"])
    assert done["state"] == "DONE", done

    metrics = _of(_metrics(capsys.readouterr().out), done["id"])
    assert set(metrics) == {"DownloadsCreated", "DownloadsFinished", "ArtifactBytes", "BuildDurationSeconds"}
    assert {metric.namespace for metric in metrics.values()} == {"Satchel"}
    created_metric = metrics["DownloadsCreated"]
    assert (created_metric.values, created_metric.unit) == ([1], "Count")
    assert created_metric.dimensions == {"stage": "test", "type": "zip"}
    finished = metrics["DownloadsFinished"]
    assert (finished.values, finished.unit, finished.dimensions) == (
        [1],
        "Count",
        {"stage": "test", "state": "DONE"},
    )
    size = metrics["ArtifactBytes"]
    assert (size.values, size.unit, size.dimensions) == (
        [done["artifact"]["size"]],
        "Bytes",
        {"stage": "test", "type": "zip"},
    )
    took = metrics["BuildDurationSeconds"]
    expected = (clock.parse(done["finished_at"]) - clock.parse(done["started_at"])).total_seconds()
    assert (took.values, took.unit, took.dimensions) == (
        [expected],
        "Seconds",
        {"stage": "test", "type": "zip"},
    )


def test_a_failed_download_counts_its_error_code(
    satchel: Satchel, capsys: pytest.CaptureFixture[str]
) -> None:
    created = satchel.create({"keys": ["acme/not/there.txt"]})
    assert created.status == 202, created.body
    failed = satchel.wait(created.json["id"])
    assert failed["error"]["code"] == "SourceMissing", failed

    metrics = _of(_metrics(capsys.readouterr().out), failed["id"])
    assert set(metrics) == {"DownloadsCreated", "DownloadsFinished", "Failures"}
    assert metrics["DownloadsFinished"].dimensions == {"stage": "test", "state": "FAILED"}
    failures = metrics["Failures"]
    assert (failures.values, failures.dimensions) == ([1], {"stage": "test", "code": "SourceMissing"})
