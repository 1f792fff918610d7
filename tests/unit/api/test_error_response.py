"""An error the API does not know answers 500 with a reference; its detail goes to the log only."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from chalicelib.api.http import error_response
from chalicelib.core import observability
from tests.stack.test_error_messages import ACCOUNT, ROLE_ARN, denied, log_lines


def test_an_unknown_error_answers_500_with_a_reference_the_log_holds_beside_the_detail(
    capsys: pytest.CaptureFixture[str],
) -> None:
    observability.logger()  # as every handler does first: log lines are JSON on stdout
    try:
        denied({}, None)
    except ClientError as error:
        response = error_response(error)

    assert response.status_code == 500
    body = response.body
    assert body["Code"] == "InternalError"
    assert ACCOUNT not in json.dumps(body)
    reference = body["Message"].rsplit(" ", 1)[-1]
    assert body["Message"] == f"an internal error occurred; reference {reference}"
    (line,) = [line for line in log_lines(capsys.readouterr().out) if reference in line["message"]]
    assert line["level"] == "ERROR"
    assert ROLE_ARN in line["exception"]


@pytest.mark.parametrize(
    ("code", "status", "operation"),
    [
        ("ThrottlingException", 400, "Encrypt"),  # KMS
        ("ProvisionedThroughputExceededException", 400, "PutItem"),  # DynamoDB
        ("SlowDown", 503, "PutObject"),  # S3
        ("InternalServerError", 500, "StartExecution"),  # Step Functions
    ],
)
def test_an_aws_service_busy_through_the_retries_answers_503_to_try_again(
    capsys: pytest.CaptureFixture[str], code: str, status: int, operation: str
) -> None:
    observability.logger()
    arn = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/abc"
    error = ClientError(
        {"Error": {"Code": code, "Message": f"busy: {arn}"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )
    response = error_response(error)

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    body = response.body
    assert body["Code"] == "TransientError"
    for internal in (code, operation, ACCOUNT):
        assert internal not in json.dumps(body)
    reference = body["Message"].rsplit(" ", 1)[-1].rstrip(")")
    (line,) = [line for line in log_lines(capsys.readouterr().out) if reference in line["message"]]
    assert line["level"] == "WARNING"
    assert arn in line["exception"]
