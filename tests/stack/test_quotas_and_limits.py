"""Per-user and per-tenant limits on active downloads, and request size limits."""

from __future__ import annotations

import json
import os

import pytest

from chalicelib.core import clients
from chalicelib.runtime import Runtime
from chalicelib.storage.downloads import DownloadStore
from tests.support import records
from tests.support.stack import Satchel

MIB = 1024 * 1024


@pytest.fixture
def slow(monkeypatch: pytest.MonkeyPatch, satchel: Satchel) -> None:
    monkeypatch.setenv("SATCHEL_PROGRESS_EVERY_BYTES", str(64 * 1024))
    monkeypatch.setenv("SATCHEL_READ_CHUNK_BYTES", str(64 * 1024))
    satchel.put_source("acme/slow.bin", os.urandom(16 * MIB))


def active(satchel: Satchel, user: str) -> int:
    return DownloadStore(clients.table(satchel.stack.table)).active_count("acme", user)


def tenant_active(satchel: Satchel, tenant: str = "acme") -> int:
    return DownloadStore(clients.table(satchel.stack.table)).tenant_active_count(tenant)


def pending_or_running(satchel: Satchel, user: str) -> int:
    listed = satchel.call("GET", "/downloads?limit=100", user).json["items"]
    return sum(1 for download in listed if download["state"] in {"PENDING", "RUNNING"})


def test_active_downloads_are_limited_per_tenant_across_its_users(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SATCHEL_MAX_ACTIVE_PER_TENANT", "3")
    satchel.put_source("acme/ok.txt", b"ok")
    # Active for as long as the test needs: recorded PENDING, never started.
    alices = [never_started("alice") for _ in range(2)]
    bobs = [never_started("bob")]
    assert tenant_active(satchel) == 3

    refused = satchel.create({"keys": ["acme/ok.txt"]}, user="bob")  # far below his own limit
    assert refused.status == 429
    assert refused.json["Code"] == "QuotaExceeded"
    assert (refused.json["scope"], refused.json["limit"]) == ("tenant", 3)
    assert "tenant" in refused.json["Message"]
    assert int(refused.headers["Retry-After"]) > 0
    assert satchel.create({"keys": ["acme/ok.txt"]}, user="alice").status == 429
    assert (active(satchel, "alice"), active(satchel, "bob"), tenant_active(satchel)) == (2, 1, 3)
    dave = satchel.create({"keys": ["globex/none.txt"]}, user="dave")
    assert dave.status == 202  # another tenant is not affected

    assert satchel.call("DELETE", f"/downloads/{alices[0]}").status == 202  # frees alice's and acme's
    again = satchel.create({"keys": ["acme/ok.txt"]}, user="bob")
    assert again.status == 202
    assert satchel.wait(again.json["id"], user="bob")["state"] == "DONE"
    satchel.wait(dave.json["id"], user="dave")
    for user, download_id in [("alice", alices[1]), ("bob", bobs[0])]:
        assert satchel.call("DELETE", f"/downloads/{download_id}", user).status == 202
    assert (tenant_active(satchel), tenant_active(satchel, "globex")) == (0, 0)
    assert (active(satchel, "alice"), active(satchel, "bob")) == (0, 0)


def never_started(user: str) -> str:
    """A download recorded PENDING whose workflow never started: it stays active."""
    runtime = Runtime.from_env()
    download = records.stored(runtime, user=user, key="acme/ok.txt", filename="waiting.zip")
    return download.id


@pytest.mark.usefixtures("slow")
def test_both_counters_match_the_pending_and_running_downloads_after_cancel_fail_and_done(
    satchel: Satchel,
) -> None:
    satchel.put_source("acme/ok.txt", b"ok")
    cancelled = satchel.create({"keys": ["acme/slow.bin"], "compression": "store"}).json["id"]
    done = satchel.create({"keys": ["acme/ok.txt"]}).json["id"]
    failed = satchel.create({"keys": ["acme/missing.txt"]}, user="bob").json["id"]
    waiting = never_started("bob")
    assert satchel.call("DELETE", f"/downloads/{cancelled}").status == 202
    assert satchel.wait(done)["state"] == "DONE"
    assert satchel.wait(failed, user="bob")["state"] == "FAILED"
    assert satchel.wait(cancelled)["state"] == "CANCELLED"

    assert (pending_or_running(satchel, "alice"), pending_or_running(satchel, "bob")) == (0, 1)
    assert (active(satchel, "alice"), active(satchel, "bob"), tenant_active(satchel)) == (0, 1, 1)
    assert satchel.call("DELETE", f"/downloads/{waiting}", "bob").status == 202
    for user in ("alice", "bob"):
        assert active(satchel, user) == pending_or_running(satchel, user) == 0
    assert tenant_active(satchel) == 0


@pytest.mark.usefixtures("slow")
def test_active_downloads_are_limited_per_user(satchel: Satchel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SATCHEL_MAX_ACTIVE_PER_USER", "2")
    params = {"keys": ["acme/slow.bin"], "compression": "store"}
    running = [satchel.create(params).json["id"] for _ in range(2)]
    assert active(satchel, "alice") == 2

    refused = satchel.create(params)
    assert refused.status == 429
    assert refused.json["Code"] == "QuotaExceeded"
    assert refused.json["limit"] == 2
    assert int(refused.headers["Retry-After"]) > 0
    assert satchel.create(params, user="bob").status == 202  # others are not affected

    assert satchel.call("DELETE", f"/downloads/{running[0]}").status == 202  # frees a slot
    again = satchel.create(params)
    assert again.status == 202
    for download_id in (running[1], again.json["id"]):
        satchel.wait(download_id)
    satchel.wait(running[0])
    assert active(satchel, "alice") == 0


def test_finished_and_failed_downloads_free_their_slots(satchel: Satchel) -> None:
    satchel.put_source("acme/ok.txt", b"ok")
    ok = satchel.create({"keys": ["acme/ok.txt"]}).json["id"]
    failed = satchel.create({"keys": ["acme/missing.txt"]}).json["id"]
    assert satchel.wait(ok)["state"] == "DONE"
    assert satchel.wait(failed)["state"] == "FAILED"
    assert active(satchel, "alice") == 0


def test_too_many_keys_is_413(satchel: Satchel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SATCHEL_MAX_KEYS", "3")
    reply = satchel.create({"keys": [f"acme/{i}" for i in range(3)], "prefixes": ["acme/p/"]})
    assert reply.status == 413
    assert reply.json["Code"] == "TooManyKeys"
    assert "at most 3" in reply.json["Message"]
    assert len(reply.body) < 500  # the message does not echo the request


def test_an_oversized_body_is_413(satchel: Satchel) -> None:
    body = json.dumps({"type": "zip", "params": {"keys": ["acme/" + "k" * 1000] * 300}})
    reply = satchel.call("POST", "/downloads", raw=body)
    assert reply.status == 413
    assert reply.json["Code"] == "RequestTooLarge"


def test_an_overlong_key_is_422_without_echoing_it(satchel: Satchel) -> None:
    reply = satchel.create({"keys": ["acme/" + "k" * 5000]})
    assert reply.status == 422
    assert reply.json["path"] == "params/keys/0"
    assert len(reply.body) < 1000
