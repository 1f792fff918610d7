"""A deployed stage, over HTTP: the main round trip, links, and ownership.

    SATCHEL_INTEGRATION_URL=https://<id>.execute-api.<region>.amazonaws.com/api/ \
    SATCHEL_INTEGRATION_KEY=<a user's key> SATCHEL_INTEGRATION_PREFIX=<tenant>/satchel-integration/ \
    make integration

Every download these tests make is deleted at the end (its record stays, EXPIRED, for audit).
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.integration.conftest import KEY, OTHER_KEY, PREFIX, URL

pytestmark = pytest.mark.integration
TIMEOUT = float(os.environ.get("SATCHEL_INTEGRATION_TIMEOUT", "300"))
TERMINAL = {"DONE", "FAILED", "CANCELLED", "EXPIRED"}


class Stage:
    def __init__(self, url: str, key: str) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.http = requests.Session()
        self.created: list[str] = []

    def call(
        self, method: str, path: str, body: Any = None, key: str | None = "", **headers: str
    ) -> requests.Response:
        if key is not None:
            headers["Authorization"] = f"Bearer {key or self.key}"
        return self.http.request(
            method, f"{self.url}{path}", json=body, headers=headers, allow_redirects=False, timeout=60
        )

    def create(self, params: dict[str, Any], **extra: Any) -> dict[str, Any]:
        reply = self.call("POST", "/downloads", {"type": "zip", "params": params, **extra})
        assert reply.status_code == 202, reply.text
        download: dict[str, Any] = reply.json()
        self.created.append(download["id"])
        return download

    def wait(self, download_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT
        while True:
            reply = self.call("GET", f"/downloads/{download_id}")
            assert reply.status_code == 200, reply.text
            download: dict[str, Any] = reply.json()
            if download["state"] in TERMINAL:
                return download
            assert time.monotonic() < deadline, f"{download_id} still {download['state']} after {TIMEOUT} s"
            time.sleep(1)


@pytest.fixture(scope="module")
def stage() -> Iterator[Stage]:
    live = Stage(os.environ[URL], os.environ[KEY])
    try:
        yield live
    finally:
        for download_id in live.created:
            live.call("DELETE", f"/downloads/{download_id}")


@pytest.fixture(scope="module")
def prefix() -> str:
    value = os.environ.get(PREFIX)
    assert value, f"set {PREFIX}: a prefix in the key's scope (<tenant>/...) holding a few small objects"
    return value


@pytest.fixture(scope="module")
def done(stage: Stage, prefix: str) -> dict[str, Any]:
    download = stage.create({"prefixes": [prefix]}, filename="integration.zip")
    finished = stage.wait(download["id"])
    assert finished["state"] == "DONE", finished
    return finished


def fetch(url: str) -> bytes:
    reply = requests.get(url, timeout=120)
    assert reply.status_code == 200, reply.text[:500]
    return reply.content


def test_health_needs_no_key_and_everything_else_does(stage: Stage) -> None:
    assert stage.call("GET", "/health", key=None).status_code == 200
    assert stage.call("GET", "/downloads", key=None).status_code == 401
    assert stage.call("GET", "/downloads", key=f"not-a-key-{uuid.uuid4().hex}").status_code == 403


def test_round_trip(stage: Stage, prefix: str, done: dict[str, Any]) -> None:
    assert done["progress"]["files_done"] == done["progress"]["files_total"] > 0
    assert done["url"].endswith(f"/downloads/{done['id']}/file")

    redirect = stage.call("GET", f"/downloads/{done['id']}/file")
    assert redirect.status_code == 302, redirect.text
    archive = fetch(redirect.headers["Location"])
    assert len(archive) == done["artifact"]["size"]
    assert hashlib.sha256(archive).hexdigest() == done["artifact"]["sha256"]
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        assert opened.testzip() is None
        assert len(opened.namelist()) == done["progress"]["files_total"]

    url = stage.call("GET", f"/downloads/{done['id']}/url")
    assert url.status_code == 200, url.text
    assert fetch(url.json()["url"]) == archive

    listed = stage.call("GET", "/downloads?state=DONE&limit=100")
    assert done["id"] in [item["id"] for item in listed.json()["items"]]


def test_idempotent_create_and_delete(stage: Stage, prefix: str) -> None:
    key = f"integration-{uuid.uuid4().hex}"
    first = stage.call(
        "POST", "/downloads", {"type": "zip", "params": {"prefixes": [prefix]}}, **{"Idempotency-Key": key}
    )
    assert first.status_code == 202, first.text
    stage.created.append(first.json()["id"])
    again = stage.call(
        "POST", "/downloads", {"type": "zip", "params": {"prefixes": [prefix]}}, **{"Idempotency-Key": key}
    )
    assert again.status_code == 202
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["id"] == first.json()["id"]

    assert stage.wait(first.json()["id"])["state"] == "DONE"
    assert stage.call("DELETE", f"/downloads/{first.json()['id']}").status_code == 204
    assert stage.call("GET", f"/downloads/{first.json()['id']}/file").status_code == 410


def test_links_are_counted_and_revocable(stage: Stage, done: dict[str, Any]) -> None:
    created = stage.call("POST", f"/downloads/{done['id']}/links", {"max_uses": 1, "expires_in": 600})
    assert created.status_code == 201, created.text
    link = created.json()
    first = requests.get(link["url"], allow_redirects=False, timeout=60)
    assert first.status_code == 302, first.text
    assert hashlib.sha256(fetch(first.headers["Location"])).hexdigest() == done["artifact"]["sha256"]
    assert requests.get(link["url"], allow_redirects=False, timeout=60).status_code == 410

    other = stage.call("POST", f"/downloads/{done['id']}/links", {"max_uses": 5}).json()
    assert stage.call("DELETE", f"/links/{other['token']}").status_code == 204
    assert requests.get(other["url"], allow_redirects=False, timeout=60).status_code == 410
    assert stage.call("GET", f"/links/{uuid.uuid4().hex}", key=None).status_code == 404


def test_unknown_downloads_are_404(stage: Stage) -> None:
    assert stage.call("GET", f"/downloads/{uuid.uuid4().hex}").status_code == 404
    assert stage.call("DELETE", f"/downloads/{uuid.uuid4().hex}").status_code == 404


@pytest.mark.other_user
def test_another_user_can_neither_see_nor_touch_a_download(stage: Stage, done: dict[str, Any]) -> None:
    other = os.environ[OTHER_KEY]
    for method, path in (
        ("GET", f"/downloads/{done['id']}"),
        ("GET", f"/downloads/{done['id']}/file"),
        ("GET", f"/downloads/{done['id']}/url"),
        ("POST", f"/downloads/{done['id']}/links"),
        ("DELETE", f"/downloads/{done['id']}"),
    ):
        # 404 from another tenant, 403 from another user of the same tenant.
        assert stage.call(method, path, {} if method == "POST" else None, key=other).status_code in {403, 404}
    mine = stage.call("GET", "/downloads?limit=100", key=other).json()["items"]
    assert done["id"] not in [item["id"] for item in mine]
    assert stage.wait(done["id"])["state"] == "DONE"  # untouched
