"""Every route, called by every kind of caller: the status each must get.

Callers: the owner (alice), a peer in the same tenant (bob), the tenant admin (carol), a
user of another tenant (dave), no key at all, and a key that does not exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from chalicelib.storage.keys import hash_secret
from tests.support.stack import Satchel, api_key_of

CALLERS = ("owner", "peer", "admin", "other_tenant", "no_key", "bad_key")
USER_OF = {"owner": "alice", "peer": "bob", "admin": "carol", "other_tenant": "dave"}


@dataclass(frozen=True)
class Row:
    method: str
    path: str  # {id} and {token} are filled per call
    expected: tuple[int, int, int, int, int, int]  # in CALLERS order
    fresh: bool = False  # the call destroys its target: give each caller a new one
    body: object = None


ROWS = [
    Row("GET", "/health", (200, 200, 200, 200, 200, 200)),
    Row("GET", "/openapi.json", (200, 200, 200, 200, 200, 200)),
    Row("GET", "/types", (200, 200, 200, 200, 401, 403)),
    Row(
        "POST",
        "/downloads",
        (202, 202, 202, 403, 401, 403),
        body={"type": "zip", "params": {"keys": ["acme/m.txt"]}},
    ),
    Row("GET", "/downloads", (200, 200, 200, 200, 401, 403)),
    Row("GET", "/downloads/{id}", (200, 403, 200, 404, 401, 403)),
    Row("GET", "/downloads/{id}/file", (302, 403, 302, 404, 401, 403)),
    Row("GET", "/downloads/{id}/url", (200, 403, 200, 404, 401, 403)),
    Row("POST", "/downloads/{id}/links", (201, 403, 201, 404, 401, 403), body={}),
    Row("GET", "/links/{token}", (200, 200, 200, 200, 200, 200)),  # the token is the credential
    Row("HEAD", "/links/{token}", (200, 200, 200, 200, 200, 200)),
    Row("POST", "/links/{token}", (303, 303, 303, 303, 303, 303)),
    Row("GET", "/downloads/{id}/links", (200, 403, 200, 404, 401, 403)),
    Row("GET", "/downloads/{id}/deliveries", (200, 403, 200, 404, 401, 403)),
    Row("DELETE", "/links/{token}", (204, 403, 204, 404, 401, 403), fresh=True),
    Row("DELETE", "/downloads/{id}", (204, 403, 204, 404, 401, 403), fresh=True),
]


def headers_for(caller: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if caller in USER_OF:
        headers["Authorization"] = f"Bearer {api_key_of(USER_OF[caller])}"
    elif caller == "bad_key":
        headers["Authorization"] = f"Bearer {hash_secret('nobody')}"
    return headers


class Targets:
    """Alice's DONE download and a link to it; new ones on demand."""

    def __init__(self, satchel: Satchel) -> None:
        self.satchel = satchel
        satchel.put_source("acme/m.txt", b"matrix")

    def download(self) -> str:
        download_id: str = self.satchel.create({"keys": ["acme/m.txt"]}).json["id"]
        assert self.satchel.wait(download_id)["state"] == "DONE"
        return download_id

    def link(self, download_id: str) -> str:
        reply = self.satchel.call("POST", f"/downloads/{download_id}/links", body={"max_uses": 100})
        token: str = reply.json["token"]
        return token


@pytest.mark.parametrize("row", ROWS, ids=[f"{row.method} {row.path}" for row in ROWS])
def test_route_by_caller(satchel: Satchel, row: Row) -> None:
    targets = Targets(satchel)
    shared_id = targets.download()
    shared_token = targets.link(shared_id)

    def target() -> tuple[str, str]:
        if not row.fresh:
            return shared_id, shared_token
        download_id = targets.download()
        return download_id, targets.link(download_id)

    call: Any = getattr(satchel.client.http, row.method.lower())
    statuses = {}
    for caller in CALLERS:
        download_id, token = target()
        path = row.path.replace("{id}", download_id).replace("{token}", token)
        body = None if row.body is None else json.dumps(row.body)
        response = call(path, headers=headers_for(caller), body=body)
        statuses[caller] = response.status_code
    assert statuses == dict(zip(CALLERS, row.expected, strict=True))
