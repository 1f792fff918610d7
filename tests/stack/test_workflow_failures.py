"""A download that cannot be built ends FAILED with the error's class name, and leaves
nothing behind: no open multipart upload, no temporary object, no artifact."""

from __future__ import annotations

import pytest

from chalicelib.core.errors import problem
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
        assert reply.json == problem("DownloadNotReady", 409, "download state is not DONE", state="FAILED")


def test_failed_download_delete_is_204_and_keeps_the_record(satchel: Satchel) -> None:
    created = satchel.create({"keys": ["acme/absent.txt"]})
    download_id = created.json["id"]
    satchel.wait(download_id)
    assert satchel.call("DELETE", f"/downloads/{download_id}").status == 204
    assert satchel.call("GET", f"/downloads/{download_id}").json["state"] == "FAILED"
