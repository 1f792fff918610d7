"""Another tenant's download does not exist; another user's is forbidden, unless admin."""

from __future__ import annotations

import pytest

from tests.support.stack import Satchel


@pytest.fixture
def alices_download(satchel: Satchel) -> str:
    satchel.put_source("acme/shared/plan.txt", b"the plan")
    created = satchel.create({"keys": ["acme/shared/plan.txt"]}, user="alice")
    assert created.status == 202
    download_id: str = created.json["id"]
    assert satchel.wait(download_id)["state"] == "DONE"
    return download_id


@pytest.mark.parametrize(
    ("user", "status"),
    [("alice", 200), ("carol", 200), ("bob", 403), ("dave", 404)],
)
def test_get_file_and_url_by_principal(
    satchel: Satchel, alices_download: str, user: str, status: int
) -> None:
    base = f"/downloads/{alices_download}"
    assert satchel.call("GET", base, user).status == status
    assert satchel.call("GET", f"{base}/url", user).status == status
    assert satchel.call("GET", f"{base}/file", user).status == (302 if status == 200 else status)
    codes = {403: "Forbidden", 404: "DownloadNotFound"}
    if status in codes:
        assert satchel.call("GET", base, user).json["Code"] == codes[status]


def test_only_owner_or_admin_may_delete(satchel: Satchel, alices_download: str) -> None:
    path = f"/downloads/{alices_download}"
    assert satchel.call("DELETE", path, "dave").status == 404
    assert satchel.call("DELETE", path, "bob").status == 403
    assert satchel.call("GET", path, "alice").json["state"] == "DONE"
    assert satchel.call("DELETE", path, "carol").status == 204
    assert satchel.call("GET", path, "alice").json["state"] == "EXPIRED"


def test_listing_shows_only_the_callers_own(satchel: Satchel, alices_download: str) -> None:
    assert [item["id"] for item in satchel.call("GET", "/downloads", "alice").json["items"]] == [
        alices_download
    ]
    for user in ("bob", "carol", "dave"):
        assert satchel.call("GET", "/downloads", user).json == {"items": [], "next_cursor": None}


def test_foreign_tenant_cannot_zip_another_tenants_sources(satchel: Satchel) -> None:
    satchel.put_source("acme/private.txt", b"acme only")
    reply = satchel.create({"keys": ["acme/private.txt"]}, user="dave")
    assert reply.status == 403
    assert reply.json["Code"] == "SourceNotAllowed"
    assert reply.json["key"] == "acme/private.txt"
