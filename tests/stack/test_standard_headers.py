"""Standard headers on the API's answers: the caller's quotas on every create
(draft-ietf-httpapi-ratelimit-headers), Retry-After where a refusal passes with time, and
Sunset (RFC 8594) with the artifact's expiry. Idempotency-Key is tests/stack/test_idempotency.py's;
Retry-After on a 503 StartFailed is tests/stack/test_faults.py's."""

from __future__ import annotations

from datetime import UTC
from email.utils import parsedate_to_datetime

import pytest

from chalicelib.core import clock
from chalicelib.workflow import executions
from tests.support.stack import Satchel

SOURCE = "acme/headers.txt"
POLICY = '"user";q={user};qu="concurrent-requests", "tenant";q={tenant};qu="concurrent-requests"'


@pytest.fixture(autouse=True)
def source(satchel: Satchel) -> None:
    satchel.put_source(SOURCE, b"headers")


@pytest.fixture
def quota(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("SATCHEL_MAX_ACTIVE_PER_USER", "2")
    monkeypatch.setenv("SATCHEL_MAX_ACTIVE_PER_TENANT", "5")
    return 2


def test_every_create_answer_carries_the_callers_quota_and_what_is_left(satchel: Satchel, quota: int) -> None:
    policy = POLICY.format(user=quota, tenant=5)
    first = satchel.create({"keys": [SOURCE]})
    assert first.status == 202, first.body
    assert first.headers["RateLimit-Policy"] == policy
    # The counts include the download just made (it may already have finished: then its
    # slot is free again, so r is read back rather than assumed).
    user_left = int(first.headers["RateLimit"].split(";r=")[1].split(",")[0])
    assert user_left in (quota - 1, quota)
    assert first.headers["RateLimit"] == f'"user";r={user_left}, "tenant";r={user_left + 3}'

    refused = satchel.create({"keys": [SOURCE]}, expires_in=1)  # a refusal carries them too
    assert refused.status == 422
    assert refused.headers["RateLimit-Policy"] == policy
    assert refused.headers["RateLimit"].startswith('"user";r=')
    satchel.wait(first.json["id"])


def test_a_create_over_the_quota_is_429_with_retry_after_and_nothing_left(
    satchel: Satchel, quota: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hold every new download in PENDING: the workflow is not started (as if Step Functions
    # were slow to run it), so the quota fills deterministically.
    monkeypatch.setattr(executions, "start", lambda runtime, download_id: None)
    held = [satchel.create({"keys": [SOURCE]}) for _ in range(quota)]
    assert [reply.status for reply in held] == [202] * quota
    assert held[-1].headers["RateLimit"] == '"user";r=0, "tenant";r=3'
    refused = satchel.create({"keys": [SOURCE]})
    assert refused.status == 429
    assert refused.json["Code"] == "QuotaExceeded"
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit"] == '"user";r=0, "tenant";r=3'
    for reply in held:
        assert satchel.call("DELETE", f"/downloads/{reply.json['id']}").status == 202


def test_sunset_is_the_artifacts_expiry_once_there_is_one(satchel: Satchel) -> None:
    created = satchel.create({"keys": [SOURCE]}, expires_in=3600)
    assert "Sunset" not in created.headers  # no file yet
    done = satchel.wait(created.json["id"])
    assert done["state"] == "DONE"
    answers = {
        "get": satchel.call("GET", f"/downloads/{done['id']}"),
        "url": satchel.call("GET", f"/downloads/{done['id']}/url"),
        "file": satchel.call("GET", f"/downloads/{done['id']}/file"),
    }
    for what, reply in answers.items():
        assert reply.status in (200, 302), (what, reply.body)
        sunset = parsedate_to_datetime(reply.headers["Sunset"])
        assert reply.headers["Sunset"].endswith(" GMT"), what  # an HTTP-date
        assert sunset == clock.parse(done["expires_at"]).replace(microsecond=0).astimezone(UTC), what

    failed = satchel.wait(satchel.create({"keys": ["acme/no/such.txt"]}).json["id"])
    assert failed["state"] == "FAILED"
    assert "Sunset" not in satchel.call("GET", f"/downloads/{failed['id']}").headers
