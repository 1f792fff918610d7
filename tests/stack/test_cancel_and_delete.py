"""Cancelling a running build stops it and leaves nothing; deleting a finished download
removes its artifact while the record stays for audit."""

from __future__ import annotations

import os
import threading

import pytest

from satchel_local import lambdas
from tests.support.stack import Satchel

MIB = 1024 * 1024


@pytest.mark.usefixtures("slow_build")
def test_cancel_while_running_stops_the_build_and_leaves_nothing(
    satchel: Satchel, build_held_midway: threading.Event
) -> None:
    # Held until the cancel is in, so it lands mid-build (S3 copies these members a part at a
    # time, and could otherwise finish them all before it).
    satchel.put_source("acme/large/a.bin", os.urandom(24 * MIB))
    satchel.put_source("acme/large/b.bin", os.urandom(24 * MIB))
    created = satchel.create({"prefixes": ["acme/large/"], "compression": "store"})
    download_id = created.json["id"]

    running = satchel.wait_for_bytes(download_id)  # cancel once bytes flow into the upload
    assert running["state"] == "RUNNING", "the build finished before it could be cancelled"

    cancelled = satchel.call("DELETE", f"/downloads/{download_id}")
    build_held_midway.set()
    assert cancelled.status == 202
    assert cancelled.json["state"] == "CANCELLED"
    assert cancelled.json["finished_at"]

    # AWS ends a stopped execution ABORTED at once; moto lets the in-flight task finish, and
    # the build, seeing CANCELLED, raises Cancelled into the Catch. Either way it must end.
    assert satchel.wait_execution(download_id, 30) in {"ABORTED", "FAILED"}
    assert lambdas.wait_idle(timeout=30)
    final = satchel.call("GET", f"/downloads/{download_id}").json
    assert final["state"] == "CANCELLED"
    assert final["artifact"] is None
    assert final["progress"]["bytes_done"] < final["progress"]["bytes_total"]
    assert satchel.open_uploads() == []
    assert satchel.artifact_objects() == []
    assert satchel.call("GET", f"/downloads/{download_id}/file").json["state"] == "CANCELLED"
    # Cancelling again is a no-op on a finished download.
    assert satchel.call("DELETE", f"/downloads/{download_id}").status == 204


def test_file_before_done_is_409(satchel: Satchel, slow_build: None) -> None:
    satchel.put_source("acme/large/c.bin", os.urandom(16 * MIB))
    download_id = satchel.create({"keys": ["acme/large/c.bin"], "compression": "store"}).json["id"]
    for suffix in ("file", "url"):
        reply = satchel.call("GET", f"/downloads/{download_id}/{suffix}")
        assert reply.status == 409, reply.body
        assert reply.json["Code"] == "DownloadNotReady"
        assert reply.json["Message"] == "download state is not DONE"
        assert reply.json["state"] in {"PENDING", "RUNNING"}
    assert satchel.wait(download_id)["state"] == "DONE"


def test_delete_after_done_removes_the_artifact(satchel: Satchel) -> None:
    satchel.put_source("acme/doc.txt", b"document")
    download_id = satchel.create({"keys": ["acme/doc.txt"]}).json["id"]
    assert satchel.wait(download_id)["state"] == "DONE"
    assert satchel.artifact_objects() == [f"artifacts/{download_id}"]

    deleted = satchel.call("DELETE", f"/downloads/{download_id}")
    assert deleted.status == 204
    assert deleted.body == b""
    assert satchel.artifact_objects() == []
    record = satchel.call("GET", f"/downloads/{download_id}").json
    assert record["state"] == "EXPIRED"
    assert record["url"] is None
    for suffix in ("file", "url"):
        gone = satchel.call("GET", f"/downloads/{download_id}/{suffix}")
        assert gone.status == 410
        assert gone.json["Code"] == "DownloadExpired"
    assert satchel.call("DELETE", f"/downloads/{download_id}").status == 204
