"""Logs, metrics and tracing without the stack: a route's log keys, the metrics of a finished
download, and X-Ray switched on or off in a fresh interpreter with a Lambda's environment."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider
from chalice.app import Request

from chalicelib.core import observability
from chalicelib.core.errors import ConfigurationError
from chalicelib.core.models import Download, ErrorInfo, State
from chalicelib.core.settings import ENV_TRACING, Telemetry
from tests.stack.test_observability import _logs, _metrics, _of
from tests.support import records

ROOT = Path(__file__).resolve().parents[3]


def _request(path: str, download_id: str, tenant: str) -> Request:
    return Request(
        {
            "httpMethod": "GET",
            "path": path.replace("{download_id}", download_id),
            "headers": {},
            "multiValueQueryStringParameters": None,
            "pathParameters": {"download_id": download_id},
            "requestContext": {
                "httpMethod": "GET",
                "resourcePath": path,
                "authorizer": {"tenant": tenant, "user_id": "alice"},
            },
            "stageVariables": None,
            "body": None,
            "isBase64Encoded": False,
        }
    )


def test_a_route_that_names_a_download_logs_it_with_the_callers_tenant(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def view(request: Request) -> str:
        logging.getLogger("chalicelib.api.downloads").info("inside the route")
        return "answer"

    event = _request("/downloads/{download_id}", "f" * 32, "globex")
    assert observability.middleware(event, view) == "answer"
    logging.getLogger("chalicelib.api.downloads").info("outside the route")

    inside, outside = _logs(capsys.readouterr().out)
    assert (inside["message"], inside["download_id"], inside["tenant"]) == (
        "inside the route",
        "f" * 32,
        "globex",
    )
    assert outside["message"] == "outside the route"
    assert "download_id" not in outside


def _download(state: State, error: ErrorInfo | None = None) -> Download:
    return records.download(
        id="a" * 32,
        state=state,
        created_at="2025-01-01T00:00:00.000Z",
        started_at="2025-01-01T00:00:01.000Z",
        finished_at="2025-01-01T00:00:02.500Z",
        error=error,
    )


def test_a_cancelled_download_counts_as_finished_and_nothing_else(capsys: pytest.CaptureFixture[str]) -> None:
    observability.record_finished("prod", _download(State.CANCELLED))

    metrics = _of(_metrics(capsys.readouterr().out), "a" * 32)
    assert set(metrics) == {"DownloadsFinished"}
    assert metrics["DownloadsFinished"].dimensions == {"stage": "prod", "state": "CANCELLED"}


def test_metrics_that_cannot_be_written_fail_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(self: AmazonCloudWatchEMFProvider, raise_on_empty_metrics: bool = False) -> None:
        raise OSError("stdout is gone")

    monkeypatch.setattr(AmazonCloudWatchEMFProvider, "flush_metrics", broken)
    with observability.handling():  # as in a handler, whose logging is Powertools'
        observability.record_finished("test", _download(State.FAILED, ErrorInfo("SourceMissing", "gone")))

    errors = [line for line in _logs(capsys.readouterr().out) if line["level"] == "ERROR"]
    assert [line["message"] for line in errors] == [
        "could not write the metrics ['DownloadsFinished']",
        "could not write the metrics ['Failures']",
    ]
    assert "stdout is gone" in errors[0]["exception"]


# A Lambda function's environment, but no X-Ray daemon: the trace segments go nowhere.
_LAMBDA_ENVIRONMENT = {
    "LAMBDA_TASK_ROOT": str(ROOT),
    "AWS_LAMBDA_FUNCTION_NAME": "satchel-test-build",
    "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
    "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:9",
    "AWS_DEFAULT_REGION": "us-east-1",
}


_PROBE = """
import json, sys
from chalice.app import LambdaFunctionEvent
import app
from chalicelib.core import observability

class Context:
    function_name = "satchel-test-build"
    aws_request_id = "request-1"

def step(event):
    found = {"powertools": "aws_lambda_powertools" in sys.modules, "xray": "aws_xray_sdk" in sys.modules}
    if observability.tracer() is not None:
        from aws_xray_sdk.core import xray_recorder
        subsegment = xray_recorder.current_subsegment()
        found["subsegment"] = subsegment.name
        found["annotations"] = subsegment.annotations
    return found

event = LambdaFunctionEvent({"download_id": "d" * 32}, Context())
print(json.dumps(observability.middleware(event, step)))
"""


def _probe(**environment: str) -> dict[str, Any]:
    env = {"PATH": "/usr/bin:/bin", **_LAMBDA_ENVIRONMENT, **environment}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return found


def test_tracing_is_off_unless_switched_on_and_then_the_xray_sdk_is_never_imported() -> None:
    assert Telemetry.from_env({}).tracing is False
    assert _probe() == {"powertools": True, "xray": False}
    assert _probe(**{ENV_TRACING: "false"}) == {"powertools": True, "xray": False}


def test_switched_on_each_invocation_is_a_subsegment_annotated_with_its_download() -> None:
    found = _probe(**{ENV_TRACING: "true"})
    assert found["xray"] is True
    assert found["subsegment"] == "## satchel-test-build"
    assert found["annotations"] == {
        "ColdStart": True,
        "Service": "satchel",
        "download_id": "d" * 32,
    }


def test_powertools_keeps_tracing_off_outside_lambda_even_when_switched_on() -> None:
    found = _probe(**{ENV_TRACING: "true", "LAMBDA_TASK_ROOT": "", "AWS_LAMBDA_FUNCTION_NAME": ""})
    assert "subsegment" not in found


def test_a_tracing_switch_that_is_neither_true_nor_false_is_refused() -> None:
    assert Telemetry.from_env({ENV_TRACING: "TRUE"}).tracing is True
    with pytest.raises(ConfigurationError, match="SATCHEL_TRACING must be true or false"):
        Telemetry.from_env({ENV_TRACING: "yes"})
