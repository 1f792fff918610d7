"""What callers are told about a failure: a domain error's own message, never raw AWS text
(ARNs, the account id, an error page); the detail goes to the log beside a reference."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.core.models import State
from chalicelib.runtime import Runtime
from satchel_local import lambdas
from tests.support import records
from tests.support.stack import Satchel

ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/satchel-test-build/satchel-test-build"


def denied(event: dict[str, Any], context: Any) -> None:
    """A worker whose S3 read is refused, as AWS words it."""
    raise ClientError(
        {
            "Error": {
                "Code": "AccessDenied",
                "Message": f"User: {ROLE_ARN} is not authorized to perform: s3:GetObject "
                f"on resource: arn:aws:s3:::satchel-sources/acme/a.txt",
            }
        },
        "GetObject",
    )


def log_lines(out: str) -> list[dict[str, Any]]:
    """The JSON log lines a handler wrote (chalicelib/core/observability.py), metrics left out."""
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [line for line in lines if "_aws" not in line]


def step_error(handler: str) -> dict[str, str]:
    """What the state machine's Catch hands to Fail when the Lambda `handler` raises."""
    payload, failed = lambdas.run_handler(handler, "satchel-test-build", b"{}", 30)
    assert failed
    return {"Error": json.loads(payload)["errorType"], "Cause": payload.decode("utf-8")}


def running_download() -> str:
    runtime = Runtime.from_env()
    download = records.stored(runtime, filename="denied.zip")
    runtime.downloads.transition(download.id, [State.PENDING], State.RUNNING)
    return download.id


def test_a_download_failed_by_an_aws_error_shows_a_generic_message_and_logs_the_detail(
    satchel: Satchel, capsys: pytest.CaptureFixture[str]
) -> None:
    download_id = running_download()
    error = step_error(f"{__name__}.denied")
    assert ROLE_ARN in error["Cause"]  # the raw text Fail is handed

    satchel.client.lambda_.invoke("fail", {"download_id": download_id, "error": error})

    shown = satchel.call("GET", f"/downloads/{download_id}").json
    assert shown["state"] == "FAILED"
    assert shown["error"] == {
        "code": "InternalError",
        "message": f"the download failed because of an internal error; reference {download_id}",
    }
    assert ROLE_ARN not in json.dumps(shown)
    logged = log_lines(capsys.readouterr().out)
    assert any(
        line["level"] == "ERROR" and line.get("download_id") == download_id and ROLE_ARN in line["message"]
        for line in logged
    ), logged
    # And where the step raised it, from the Lambda's stack trace in the Cause.
    assert any(
        line["level"] == "ERROR"
        and "where the failing step raised it" in line["message"]
        and "in denied" in line["message"]
        for line in logged
    ), logged
