"""The OpenAPI document as the running API serves it, and its bounds as the server enforces them.

The bounds are read from the served document, not from the settings: a value the document
allows is accepted, one past it is refused, so what a generated client is told is what the
server does.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from chalicelib.api import openapi
from chalicelib.runtime import Runtime
from tests.support.stack import Reply, Satchel

SOURCE = "acme/bounds.txt"
MAX_KEYS = 3  # the stage's SATCHEL_MAX_KEYS here: a list past it stays small


def test_served_at_openapi_json_without_a_key(satchel: Satchel) -> None:
    reply = satchel.call("GET", "/openapi.json", user=None)
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json == openapi.document("/", Runtime.from_env().settings)


@pytest.fixture
def document(satchel: Satchel, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("SATCHEL_MAX_KEYS", str(MAX_KEYS))
    satchel.put_source(SOURCE, b"bounds")
    reply = satchel.call("GET", "/openapi.json", user=None)
    assert reply.status == 200, reply.body
    served: dict[str, Any] = reply.json
    return served


def extremes(schema: dict[str, Any]) -> dict[int, bool]:
    """A bounded integer's edges: value -> whether the document allows it."""
    low, high = schema["minimum"], schema["maximum"]
    return {low - 1: False, low: True, high: True, high + 1: False}


def agree(reply: Reply, allowed: bool, accepted: int, refused: int, what: str) -> None:
    expected = accepted if allowed else refused
    assert reply.status == expected, (what, reply.status, reply.body)
    if not allowed:
        assert reply.headers["Content-Type"] == "application/problem+json", what


def created(satchel: Satchel, reply: Reply) -> None:
    """Cancel what an accepted create started: the quota stays free for the next one."""
    if reply.status == 202:
        assert satchel.call("DELETE", f"/downloads/{reply.json['id']}").status in (202, 204)


def test_artifact_expiry_at_the_documents_extremes(satchel: Satchel, document: dict[str, Any]) -> None:
    schema = document["components"]["schemas"]["ZipDownloadRequest"]["properties"]["expires_in"]
    assert schema["minimum"] == 60  # what the server needs (the default setting), not 1
    for value, allowed in extremes(schema).items():
        reply = satchel.create({"keys": [SOURCE]}, expires_in=value)
        agree(reply, allowed, 202, 422, f"expires_in={value}")
        created(satchel, reply)


def test_link_bounds_at_the_documents_extremes(satchel: Satchel, document: dict[str, Any]) -> None:
    link = document["components"]["schemas"]["LinkRequest"]["properties"]
    assert link["max_uses"]["maximum"] == 1000
    download = satchel.create({"keys": [SOURCE]})
    assert download.status == 202, download.body
    path = f"/downloads/{download.json['id']}/links"
    for name in ("expires_in", "max_uses"):
        for value, allowed in extremes(link[name]).items():
            reply = satchel.call("POST", path, body={name: value})
            agree(reply, allowed, 201, 422, f"links {name}={value}")
            # The same bounds inside a create's `link`.
            reply = satchel.create({"keys": [SOURCE]}, link={name: value})
            agree(reply, allowed, 202, 422, f"create link.{name}={value}")
            created(satchel, reply)
    satchel.wait(download.json["id"])


def test_page_size_at_the_documents_extremes(satchel: Satchel, document: dict[str, Any]) -> None:
    schema = document["components"]["parameters"]["Limit"]["schema"]
    for value, allowed in extremes(schema).items():
        agree(satchel.call("GET", f"/downloads?limit={value}"), allowed, 200, 400, f"limit={value}")


def test_key_count_at_the_documents_limit(satchel: Satchel, document: dict[str, Any]) -> None:
    keys = document["components"]["schemas"]["ZipParams"]["properties"]["keys"]
    assert keys["maxItems"] == MAX_KEYS  # the stage's setting, served
    for count, allowed in ((keys["maxItems"], True), (keys["maxItems"] + 1, False)):
        names = [SOURCE] + [f"acme/bounds-{n}.txt" for n in range(count - 1)]
        reply = satchel.create({"keys": names, "on_missing": "skip"})
        agree(reply, allowed, 202, 413, f"{count} keys")
        created(satchel, reply)


def test_idempotency_keys_the_document_allows_are_the_ones_the_server_takes(
    satchel: Satchel, document: dict[str, Any]
) -> None:
    parameters = document["components"]["parameters"].values()
    (parameter,) = [p for p in parameters if p["name"] == "Idempotency-Key"]
    pattern = re.compile(parameter["schema"]["pattern"])
    candidates = ["k", "k" * 255, "k" * 256, '"k"', '"' + "k" * 255 + '"', '"' + "k" * 256 + '"']
    candidates += ['"say \\"hi\\""', '"unterminated', '"bad \\x"', '""', "clé", "a b"]
    # One body for all: a key sent quoted and bare is one key, and its retry a replay (202).
    body = {"type": "zip", "params": {"keys": [SOURCE]}}
    for key in candidates:
        reply = satchel.call("POST", "/downloads", body=body, headers={"Idempotency-Key": key})
        agree(reply, pattern.fullmatch(key) is not None, 202, 400, f"Idempotency-Key {key!r}")
        created(satchel, reply)
