"""Per-user limits on active downloads, and request size limits."""

from __future__ import annotations

import json
import os

import pytest

from chalicelib import clients
from chalicelib.store import DownloadStore
from tests.conftest import Satchel

MIB = 1024 * 1024


@pytest.fixture
def slow(monkeypatch: pytest.MonkeyPatch, satchel: Satchel) -> None:
    monkeypatch.setenv("SATCHEL_PROGRESS_EVERY_BYTES", str(64 * 1024))
    monkeypatch.setenv("SATCHEL_READ_CHUNK_BYTES", str(64 * 1024))
    satchel.put_source("acme/slow.bin", os.urandom(16 * MIB))


def active(satchel: Satchel, user: str) -> int:
    return DownloadStore(clients.table(satchel.stack.table)).active_count("acme", user)


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
