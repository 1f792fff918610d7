"""GET /downloads: the caller's own, newest first, a page at a time."""

from __future__ import annotations

import pytest

from tests.support.stack import Satchel


@pytest.fixture
def five_downloads(satchel: Satchel) -> list[str]:
    satchel.put_source("acme/page.txt", b"page")
    ids = [satchel.create({"keys": ["acme/page.txt"]}).json["id"] for _ in range(5)]
    for download_id in ids:
        assert satchel.wait(download_id)["state"] == "DONE"
    return ids


def test_pages_walk_every_download_newest_first(satchel: Satchel, five_downloads: list[str]) -> None:
    seen: list[dict[str, str]] = []
    cursor = None
    pages = 0
    while True:
        path = "/downloads?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = satchel.call("GET", path).json
        pages += 1
        assert len(page["items"]) <= 2
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [item["id"] for item in seen] == list(reversed(five_downloads))
    created = [item["created_at"] for item in seen]
    assert created == sorted(created, reverse=True)


def test_state_filter(satchel: Satchel, five_downloads: list[str]) -> None:
    satchel.call("DELETE", f"/downloads/{five_downloads[0]}")
    done = satchel.call("GET", "/downloads?state=DONE&limit=3").json
    assert [item["id"] for item in done["items"]] == list(reversed(five_downloads[1:]))[:3]
    assert done["next_cursor"]
    rest = satchel.call("GET", f"/downloads?state=DONE&limit=3&cursor={done['next_cursor']}").json
    assert [item["id"] for item in rest["items"]] == [five_downloads[1]]
    assert rest["next_cursor"] is None
    expired = satchel.call("GET", "/downloads?state=expired").json
    assert [item["id"] for item in expired["items"]] == [five_downloads[0]]


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=101", "limit=abc", "cursor=%%%", "cursor=eyJ4IjoxfQ", "state=SLEEPING", "colour=red"],
)
def test_bad_query_is_400(satchel: Satchel, query: str) -> None:
    reply = satchel.call("GET", f"/downloads?{query}")
    assert reply.status == 400, reply.body
    assert reply.json["Code"] in {"InvalidQuery", "InvalidCursor"}
