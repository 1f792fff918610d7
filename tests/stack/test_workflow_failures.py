"""A download that cannot be built ends FAILED with the error's class name, and leaves
nothing behind: no open multipart upload, no temporary object, no artifact."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from chalicelib.core.errors import SourceMissing, TransientError, retried_when_transient
from tests.support.stack import Satchel


def assert_failed_cleanly(satchel: Satchel, download_id: str, code: str) -> dict[str, object]:
    final = satchel.wait(download_id)
    assert final["state"] == "FAILED", final
    assert final["error"]["code"] == code
    assert final["error"]["message"]
    assert final["artifact"] is None
    assert final["url"] is None
    assert final["finished_at"]
    assert satchel.wait_execution(download_id, 30) == "FAILED"
    assert satchel.open_uploads() == []
    assert satchel.artifact_objects() == []
    return dict(final)


def test_missing_source_fails_with_source_missing(satchel: Satchel) -> None:
    satchel.put_source("acme/here.txt", b"present")
    created = satchel.create({"keys": ["acme/here.txt", "acme/not-here.txt"]})
    assert created.status == 202
    final = assert_failed_cleanly(satchel, created.json["id"], "SourceMissing")
    assert "acme/not-here.txt" in str(final["error"])


def test_over_the_size_limit_fails_with_max_content_size_exceeded(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SATCHEL_MAX_CONTENT_BYTES", "1000")
    satchel.put_source("acme/big/one.bin", b"x" * 600)
    satchel.put_source("acme/big/two.bin", b"y" * 600)
    created = satchel.create({"prefixes": ["acme/big/"]})
    assert created.status == 202
    assert_failed_cleanly(satchel, created.json["id"], "MaxContentSizeExceeded")


def test_too_many_files_fails(satchel: Satchel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SATCHEL_MAX_FILES", "2")
    for index in range(3):
        satchel.put_source(f"acme/many/{index}.txt", b"x")
    created = satchel.create({"prefixes": ["acme/many/"]})
    assert_failed_cleanly(satchel, created.json["id"], "TooManyFiles")


def test_empty_prefix_fails_with_nothing_to_download(satchel: Satchel) -> None:
    created = satchel.create({"prefixes": ["acme/nothing-here/"]})
    assert_failed_cleanly(satchel, created.json["id"], "NothingToDownload")


def test_file_and_url_of_a_failed_download_are_409_naming_the_state(satchel: Satchel) -> None:
    created = satchel.create({"keys": ["acme/absent.txt"]})
    download_id = created.json["id"]
    satchel.wait(download_id)
    for suffix in ("file", "url"):
        reply = satchel.call("GET", f"/downloads/{download_id}/{suffix}")
        assert reply.status == 409
        assert reply.json == {
            "Code": "DownloadNotReady",
            "Message": "download state is not DONE",
            "state": "FAILED",
        }


def test_failed_download_delete_is_204_and_keeps_the_record(satchel: Satchel) -> None:
    created = satchel.create({"keys": ["acme/absent.txt"]})
    download_id = created.json["id"]
    satchel.wait(download_id)
    assert satchel.call("DELETE", f"/downloads/{download_id}").status == 204
    assert satchel.call("GET", f"/downloads/{download_id}").json["state"] == "FAILED"


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
