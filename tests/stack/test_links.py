"""Links: handed to anyone, counted per use, refused when used up, expired or revoked."""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import boto3
import pytest
import requests

from chalicelib.core.errors import LinkNotFound, problem
from chalicelib.core.models import Principal
from chalicelib.runtime import Runtime
from chalicelib.storage import links
from chalicelib.storage.keys import hash_secret
from satchel_local.stack import REGION
from tests.support.stack import Satchel

MIB = 1024 * 1024


@pytest.fixture
def done_id(satchel: Satchel) -> str:
    satchel.put_source("acme/linked/report.csv", b"a,b\n1,2\n" * 100)
    download_id: str = satchel.create({"keys": ["acme/linked/report.csv"]}).json["id"]
    assert satchel.wait(download_id)["state"] == "DONE"
    return download_id


def new_link(satchel: Satchel, download_id: str, user: str = "alice", **body: Any) -> dict[str, Any]:
    reply = satchel.call("POST", f"/downloads/{download_id}/links", user, body)
    assert reply.status == 201, reply.body
    link: dict[str, Any] = reply.json
    return link


def follow(satchel: Satchel, token: str) -> Any:
    """A new claimant's claim (no cookie, no claim id): spends a use, 303 to the file."""
    return satchel.call("POST", f"/links/{token}", user=None)


def test_single_use_link_is_claimed_once_then_is_gone(satchel: Satchel, done_id: str) -> None:
    link = new_link(satchel, done_id)
    assert set(link) == {"url", "token", "expires_at", "max_uses"}
    assert link["max_uses"] == 1
    assert len(link["token"]) == 43  # 256 bits, URL-safe base64
    assert link["url"].endswith(f"/links/{link['token']}")

    first = follow(satchel, link["token"])
    assert first.status == 303
    location = first.headers["Location"]
    assert "/links/" not in location
    assert int(parse_qs(urlparse(location).query)["X-Amz-Expires"][0]) <= 300  # minutes, not hours
    artifact = requests.get(location, timeout=30).content
    assert len(artifact) == satchel.call("GET", f"/downloads/{done_id}").json["artifact"]["size"]

    second = follow(satchel, link["token"])
    assert second.status == 410
    assert second.json == problem("LinkGone", 410, "the link has been used up", reason="used_up")


def test_multi_use_link_counts_every_use(satchel: Satchel, done_id: str) -> None:
    token = new_link(satchel, done_id, max_uses=3)["token"]
    assert [follow(satchel, token).status for _ in range(4)] == [303, 303, 303, 410]


def test_link_handed_out_before_done_answers_425_without_spending_a_use(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SATCHEL_PROGRESS_EVERY_BYTES", str(64 * 1024))
    monkeypatch.setenv("SATCHEL_READ_CHUNK_BYTES", str(64 * 1024))
    satchel.put_source("acme/big.bin", os.urandom(16 * MIB))
    created = satchel.create({"keys": ["acme/big.bin"], "compression": "store"}, link={"max_uses": 1})
    assert created.status == 202
    token = created.json["link"]["token"]
    early = follow(satchel, token)
    assert early.status == 425
    assert early.headers["Retry-After"] == "5"
    assert early.json["Code"] == "LinkNotReady"
    assert early.json["state"] in {"PENDING", "RUNNING"}
    assert satchel.wait(created.json["id"])["state"] == "DONE"
    assert follow(satchel, token).status == 303
    assert follow(satchel, token).status == 410


def test_expired_link_is_gone(satchel: Satchel, done_id: str) -> None:
    token = new_link(satchel, done_id, expires_in=1, max_uses=5)["token"]
    time.sleep(1.1)
    reply = follow(satchel, token)
    assert reply.status == 410
    assert reply.json["Message"] == "the link has expired"


def test_link_never_outlives_the_artifact(satchel: Satchel) -> None:
    satchel.put_source("acme/short.txt", b"short-lived")
    download_id = satchel.create({"keys": ["acme/short.txt"]}, expires_in=120).json["id"]
    done = satchel.wait(download_id)
    link = new_link(satchel, download_id, expires_in=7 * 24 * 3600)
    assert link["expires_at"] == done["expires_at"]


def test_revoked_link_is_gone_and_only_owner_or_admin_may_revoke(satchel: Satchel, done_id: str) -> None:
    token = new_link(satchel, done_id, max_uses=10)["token"]
    assert satchel.call("DELETE", f"/links/{token}", "dave").status == 404
    assert satchel.call("DELETE", f"/links/{token}", "bob").status == 403
    assert satchel.call("DELETE", f"/links/{token}", "alice").status == 204
    reply = follow(satchel, token)
    assert reply.status == 410
    assert reply.json["Message"] == "the link was revoked"
    admin_token = new_link(satchel, done_id)["token"]
    assert satchel.call("DELETE", f"/links/{admin_token}", "carol").status == 204
    assert follow(satchel, admin_token).status == 410


@pytest.mark.parametrize("token", ["A" * 43, "short", "x" * 500, "%00", "A" * 42 + "!"])
def test_unknown_links_are_404(satchel: Satchel, token: str) -> None:
    reply = follow(satchel, token)
    assert reply.status == 404
    assert reply.json["Code"] == "LinkNotFound"
    assert satchel.call("DELETE", f"/links/{token}").status == 404


def test_links_to_a_deleted_download_are_gone(satchel: Satchel, done_id: str) -> None:
    token = new_link(satchel, done_id, max_uses=2)["token"]
    assert satchel.call("DELETE", f"/downloads/{done_id}").status == 204
    reply = follow(satchel, token)
    assert reply.status == 410
    assert reply.json["state"] == "EXPIRED"


def test_no_link_to_a_failed_download(satchel: Satchel) -> None:
    download_id = satchel.create({"keys": ["acme/does-not-exist"]}).json["id"]
    assert satchel.wait(download_id)["state"] == "FAILED"
    reply = satchel.call("POST", f"/downloads/{download_id}/links", body={})
    assert reply.status == 409
    assert reply.json["Code"] == "DownloadUnavailable"
    assert reply.json["state"] == "FAILED"


def test_creating_links_checks_access(satchel: Satchel, done_id: str) -> None:
    assert satchel.call("POST", f"/downloads/{done_id}/links", "bob", {}).status == 403
    assert satchel.call("POST", f"/downloads/{done_id}/links", "dave", {}).status == 404
    assert satchel.call("POST", f"/downloads/{done_id}/links", "carol", {}).status == 201
    assert satchel.call("POST", "/downloads/" + "0" * 32 + "/links", "alice", {}).status == 404


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"max_uses": 0}, "max_uses"),
        ({"max_uses": 1001}, "max_uses"),
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": 8 * 24 * 3600}, "expires_in"),
        ({"expires_in": "1h"}, "expires_in"),
        ({"uses": 3}, "(root)"),
    ],
)
def test_link_requests_out_of_bounds_are_422(satchel: Satchel, done_id: str, body: Any, path: str) -> None:
    reply = satchel.call("POST", f"/downloads/{done_id}/links", body=body)
    assert reply.status == 422, reply.body
    assert reply.json["path"] == path


def test_link_inside_post_downloads_is_validated(satchel: Satchel) -> None:
    reply = satchel.create({"keys": ["acme/x"]}, link={"max_uses": -1})
    assert reply.status == 422
    assert reply.json["path"] == "link/max_uses"


def test_a_links_body_may_be_empty(satchel: Satchel, done_id: str) -> None:
    reply = satchel.client.http.post(
        f"/downloads/{done_id}/links", headers={"Authorization": "Bearer test-key-alice-0123456789abcdef"}
    )
    assert reply.status_code == 201


def test_tokens_are_stored_only_hashed(satchel: Satchel, done_id: str) -> None:
    token = new_link(satchel, done_id)["token"]
    table = boto3.resource("dynamodb", region_name=REGION).Table(satchel.stack.table)
    assert token not in repr(table.scan()["Items"])
    assert "test-key-alice" not in repr(table.scan()["Items"])


def test_revoking_a_link_deleted_meanwhile_is_404_and_leaves_no_stub(satchel: Satchel, done_id: str) -> None:
    token = new_link(satchel, done_id)["token"]
    runtime = Runtime.from_env()
    key = {"pk": f"LINK#{hash_secret(token)}", "sk": "LINK"}
    table = boto3.resource("dynamodb", region_name=REGION).Table(satchel.stack.table)
    found = links.find_owned(runtime.links, Principal("acme", "alice"), token)
    table.delete_item(Key=key)  # DynamoDB's TTL deletes it between the lookup and the revoke
    with pytest.raises(LinkNotFound):
        runtime.links.revoke(found.token_hash)
    assert "Item" not in table.get_item(Key=key, ConsistentRead=True)
    reply = follow(satchel, token)
    assert reply.status == 404, reply.body
    assert reply.json["Code"] == "LinkNotFound"
