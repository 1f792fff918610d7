"""Bad input gets a clear error with a stable code, and creates nothing."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.runtime import Runtime
from chalicelib.triggers import inbound as triggers
from tests.support.stack import Satchel


def assert_error(reply: Any, status: int, code: str) -> dict[str, Any]:
    assert reply.status == status, reply.body
    body: dict[str, Any] = reply.json
    assert body["Code"] == code
    assert body["Message"]
    return body


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, "EmptyKeys"),
        ({"keys": []}, "EmptyKeys"),
        ({"keys": [], "prefixes": []}, "EmptyKeys"),
        ({"keys": ["  "]}, "EmptyKeys"),
        ({"keys": ["acme/a.txt", "acme/b.txt", "acme/a.txt"]}, "DuplicateKeys"),
    ],
)
def test_empty_and_duplicate_keys_are_400(satchel: Satchel, params: dict[str, Any], code: str) -> None:
    assert_error(satchel.create(params), 400, code)
    assert satchel.call("GET", "/downloads").json["items"] == []


def test_duplicate_keys_are_named(satchel: Satchel) -> None:
    body = assert_error(
        satchel.create({"keys": ["acme/a", "s3://satchel-test-sources/acme/a"]}), 400, "DuplicateKeys"
    )
    assert body["keys"] == ["acme/a"]


def test_unknown_type_is_422(satchel: Satchel) -> None:
    reply = satchel.call("POST", "/downloads", body={"type": "tarball", "params": {"keys": ["acme/a"]}})
    assert "zip" in assert_error(reply, 422, "UnknownType")["Message"]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"type": "zip", "params": {"keys": ["acme/a"], "compression": "lzma"}}, "params/compression"),
        ({"type": "zip", "params": {"keys": "acme/a"}}, "params/keys"),
        ({"type": "zip", "params": {"keys": ["acme/a"], "extra": 1}}, "params"),
        ({"type": "zip", "params": {"keys": ["acme/a"]}, "expires_in": "soon"}, "expires_in"),
        ({"params": {"keys": ["acme/a"]}}, "(root)"),
        ({"type": "zip", "params": {"keys": ["acme/a"]}, "colour": "red"}, "(root)"),
    ],
)
def test_invalid_params_are_422_with_the_failing_path(satchel: Satchel, body: Any, path: str) -> None:
    reply = satchel.call("POST", "/downloads", body=body)
    assert assert_error(reply, 422, "InvalidParams")["path"] == path


def test_retention_outside_bounds_is_422(satchel: Satchel) -> None:
    reply = satchel.create({"keys": ["acme/a"]}, expires_in=10 * 365 * 24 * 3600)
    assert assert_error(reply, 422, "InvalidParams")["path"] == "expires_in"


@pytest.mark.parametrize("raw", ["{not json", "", "[1, 2]", '"zip"', "null"])
def test_malformed_body_is_400(satchel: Satchel, raw: str) -> None:
    assert_error(satchel.call("POST", "/downloads", raw=raw), 400, "MalformedRequest")


@pytest.mark.parametrize(
    "key",
    [
        "globex/secret.txt",
        "acme",
        "acmecorp/file.txt",
        "acme/../globex/secret.txt",
        "s3://some-other-bucket/acme/a.txt",
        "/acme/a.txt",
    ],
)
def test_source_outside_scope_is_403_naming_it(satchel: Satchel, key: str) -> None:
    body = assert_error(satchel.create({"keys": ["acme/fine.txt", key]}), 403, "SourceNotAllowed")
    assert body["key"] == key
    assert key in body["Message"]


def test_prefix_outside_scope_is_403(satchel: Satchel) -> None:
    assert_error(satchel.create({"prefixes": ["globex/"]}), 403, "SourceNotAllowed")
    assert_error(satchel.create({"prefixes": ["acm"]}), 403, "SourceNotAllowed")


def test_missing_or_bad_key_is_refused(satchel: Satchel) -> None:
    assert satchel.call("GET", "/downloads", user=None).status == 401
    assert satchel.call("GET", "/downloads", user="mallory").status == 403
    reply = satchel.client.http.get("/downloads", headers={"Authorization": "Basic abc"})
    assert reply.status_code == 403


def test_health_needs_no_key(satchel: Satchel) -> None:
    assert satchel.call("GET", "/health", user=None).json == {"status": "ok"}


def test_unknown_download_is_404(satchel: Satchel) -> None:
    for path in ("/downloads/" + "0" * 32, "/downloads/not-an-id", "/downloads/" + "0" * 32 + "/file"):
        assert_error(satchel.call("GET", path), 404, "DownloadNotFound")
    assert_error(satchel.call("DELETE", "/downloads/" + "f" * 32), 404, "DownloadNotFound")


def test_types_lists_zip_with_its_schema(satchel: Satchel) -> None:
    types = satchel.call("GET", "/types").json["items"]
    zip_type = next(item for item in types if item["name"] == "zip")
    assert zip_type["params"]["properties"]["compression"]["enum"] == ["store", "deflate"]
    assert zip_type["formats"] == ["zip", "tar", "tar.gz"]


_EXPORT_FILTER = (
    '{"type": "export", "params": {"index": "Transaction", '
    '"filters": [{"column": "amount", "op": "eq", "value": %s}]}}'
)


@pytest.mark.parametrize(
    "number",
    ["1e400", "-1e400", "NaN", "Infinity", "1e200", "-1e-200", "1" * 39, "-" + "9" * 39],
)
def test_numbers_dynamodb_cannot_store_are_422_naming_the_path(satchel: Satchel, number: str) -> None:
    reply = satchel.call("POST", "/downloads", raw=_EXPORT_FILTER % number)
    assert assert_error(reply, 422, "InvalidParams")["path"] == "params/filters/0/value"
    # Nothing was stored that would break the caller's listing afterwards.
    listing = satchel.call("GET", "/downloads")
    assert listing.status == 200, listing.body
    assert listing.json["items"] == []


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ('{"type": "zip", "params": {"keys": ["acme/a"]}, "expires_in": 1e400}', "expires_in"),
        ('{"type": "zip", "params": {"keys": ["acme/a"]}, "link": {"max_uses": -1e400}}', "link/max_uses"),
        ('{"type": "zip", "params": {"keys": ["acme/a"], "x": [0, NaN]}}', "params/x/1"),
    ],
)
def test_unstorable_numbers_anywhere_in_the_body_are_422(satchel: Satchel, raw: str, path: str) -> None:
    assert assert_error(satchel.call("POST", "/downloads", raw=raw), 422, "InvalidParams")["path"] == path


def test_numbers_dynamodb_can_store_are_accepted(satchel: Satchel) -> None:
    for number in ("1e125", "-1e-130", "9" * 38, "0.1", "0", "-0.0", "1.7976931348623157e100"):
        reply = satchel.call("POST", "/downloads", raw=_EXPORT_FILTER.replace("Transaction", "Nope") % number)
        # Past the number check: the unknown index is what is refused.
        assert assert_error(reply, 422, "InvalidParams")["path"] == "params/index", number


def test_repeated_prefixes_are_kept_once(satchel: Satchel) -> None:
    reply = satchel.create(
        {"prefixes": ["acme/reports/", "s3://satchel-test-sources/acme/reports/", "acme/reports/"]}
    )
    assert reply.status == 202, reply.body
    assert reply.json["params"]["prefixes"] == ["acme/reports/"]


@pytest.mark.parametrize(
    ("prefixes", "named"),
    [
        (["acme/reports/", "acme/reports/2024/"], ["acme/reports/", "acme/reports/2024/"]),
        (["acme/a", "acme/b/", "acme/ab"], ["acme/a", "acme/ab"]),
        (["acme/x/1", "acme/", "acme/y"], ["acme/", "acme/x/1", "acme/y"]),
    ],
)
def test_overlapping_prefixes_are_422_naming_them(
    satchel: Satchel, prefixes: list[str], named: list[str]
) -> None:
    body = assert_error(satchel.create({"prefixes": prefixes}), 422, "InvalidParams")
    assert body["path"] == "params/prefixes"
    assert body["prefixes"] == named
    assert all(prefix in body["Message"] for prefix in named)
    assert satchel.call("GET", "/downloads").json["items"] == []


SECURITY_HEADERS = {
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}


def assert_security_headers(reply: Any, what: str) -> None:
    headers = {name.lower(): value for name, value in reply.headers.items()}
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, f"{what}: {name} is {headers.get(name)!r}"


def test_every_answer_carries_the_security_headers(satchel: Satchel) -> None:
    satchel.put_source("acme/headers.txt", b"headers")
    created = satchel.create({"keys": ["acme/headers.txt"]}, link={"max_uses": 2})
    assert created.status == 202, created.body
    assert_security_headers(created, "202 with a link token")
    done = satchel.wait(created.json["id"])
    assert done["state"] == "DONE"
    token = created.json["link"]["token"]
    answers = {
        "200 health": satchel.call("GET", "/health", user=None),
        "200 openapi": satchel.call("GET", "/openapi.json", user=None),
        "200 list": satchel.call("GET", "/downloads"),
        "200 download": satchel.call("GET", f"/downloads/{done['id']}"),
        "201 link": satchel.call("POST", f"/downloads/{done['id']}/links", body={}),
        "302 file": satchel.call("GET", f"/downloads/{done['id']}/file"),
        "200 link": satchel.call("GET", f"/links/{token}", user=None),
        "303 claim": satchel.call("POST", f"/links/{token}", user=None),
        "200 links": satchel.call("GET", f"/downloads/{done['id']}/links"),
        "400": satchel.call("POST", "/downloads", raw="{"),
        "403": satchel.call("GET", f"/downloads/{done['id']}", user="bob"),
        "404": satchel.call("GET", "/downloads/" + "0" * 32),
        "405": satchel.call("PUT", "/health", user=None),
        "422": satchel.call("POST", "/downloads", body={"type": "nope"}),
        "204 revoke": satchel.call("DELETE", f"/links/{token}"),
        "204 delete": satchel.call("DELETE", f"/downloads/{done['id']}"),
    }
    for what, reply in answers.items():
        assert reply.status == int(what.split()[0]), (what, reply.status, reply.body)
        assert_security_headers(reply, what)


def test_a_queued_request_with_an_unstorable_number_is_rejected(satchel: Satchel) -> None:
    body = '{"tenant": "acme", "user_id": "alice", "request": ' + _EXPORT_FILTER % "-1e400" + "}"
    record = {"messageId": "m-1", "body": body}
    assert triggers.handle_messages(Runtime.from_env(), [record]) == {
        "batchItemFailures": [{"itemIdentifier": "m-1"}]
    }
    listing = satchel.call("GET", "/downloads")
    assert listing.status == 200, listing.body
    assert listing.json["items"] == []
