"""A step leaves a transient AWS failure as TransientError, which the state machine retries,
and any other error unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from chalicelib.core.errors import SourceMissing, TransientError, retried_when_transient


def _error_id(error: Exception) -> str:
    if isinstance(error, ClientError):
        return str(error.response["Error"]["Code"])
    return type(error).__name__


def _client_error(code: str, status: int, operation: str = "UploadPart", **extra: Any) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "raw"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError({**response, **extra}, operation)


@pytest.mark.parametrize(
    "error",
    [
        _client_error("SlowDown", 503),
        _client_error("ThrottlingException", 400, "StartExecution"),
        _client_error("ProvisionedThroughputExceededException", 400, "UpdateItem"),
        _client_error("InternalError", 500),
        _client_error("NoSuchUpload", 404, "CompleteMultipartUpload"),
        _client_error("ServiceUnavailable", 503, "GetItem"),
        _client_error(
            "TransactionCanceledException",
            400,
            "TransactWriteItems",
            CancellationReasons=[{"Code": "None"}, {"Code": "ThrottlingError"}],
        ),
        EndpointConnectionError(endpoint_url="https://s3.eu-west-1.amazonaws.com/"),
        ReadTimeoutError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com/"),
    ],
    ids=_error_id,
)
def test_a_step_leaves_a_transient_aws_failure_as_transient_error(error: Exception) -> None:
    @retried_when_transient
    def step() -> None:
        raise error

    with pytest.raises(TransientError) as raised:
        step()
    assert raised.value.__cause__ is error
    # What a FAILED download would show: no endpoint, no raw AWS text.
    assert "amazonaws" not in raised.value.message
    assert "raw" not in raised.value.message


@pytest.mark.parametrize(
    "error",
    [
        _client_error("AccessDenied", 403),
        _client_error("NoSuchKey", 404, "GetObject"),
        _client_error(
            "TransactionCanceledException",
            400,
            "TransactWriteItems",
            CancellationReasons=[{"Code": "ConditionalCheckFailed"}],
        ),
        SourceMissing("source object not found: acme/x"),
        ValueError("a bug"),
    ],
    ids=_error_id,
)
def test_a_step_passes_any_other_error_unchanged(error: Exception) -> None:
    @retried_when_transient
    def step() -> None:
        raise error

    with pytest.raises(type(error)) as raised:
        step()
    assert raised.value is error
