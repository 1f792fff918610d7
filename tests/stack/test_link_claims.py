"""Links as people share them: previews and reads never spend a use; a claim does, once per
claimant and claim window; every state answers its own page or JSON."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from http.cookies import SimpleCookie
from typing import Any

import boto3
import pytest
import requests

from chalicelib.core import clock
from chalicelib.notify import events
from chalicelib.storage.keys import hash_secret
from chalicelib.storage.links import LinkStore
from satchel_local.stack import REGION
from tests.support.stack import Satchel

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
SLACKBOT = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"
FORM = {"Content-Type": "application/x-www-form-urlencoded", "Accept": BROWSER}
CONTENT = b"a,b\n1,2\n" * 100


@pytest.fixture
def done_id(satchel: Satchel) -> str:
    satchel.put_source("acme/shared/report.csv", CONTENT)
    download_id: str = satchel.create({"keys": ["acme/shared/report.csv"]}, filename="R&D 'Q3'").json["id"]
    assert satchel.wait(download_id)["state"] == "DONE"
    return download_id


def new_token(satchel: Satchel, download_id: str, **body: Any) -> str:
    reply = satchel.call("POST", f"/downloads/{download_id}/links", body=body)
    assert reply.status == 201, reply.body
    token: str = reply.json["token"]
    return token


def get(satchel: Satchel, token: str, **headers: str) -> Any:
    return satchel.client.http.get(f"/links/{token}", headers=headers)


def claim(satchel: Satchel, token: str, cookie: str | None = None, **headers: str) -> Any:
    sent = {**FORM, **headers}
    if cookie:
        sent["Cookie"] = f"satchel_claim={cookie}"
    return satchel.client.http.post(f"/links/{token}", headers=sent, body="")


def claim_cookie(response: Any) -> str:
    cookie = SimpleCookie(response.headers["Set-Cookie"])
    return cookie["satchel_claim"].value


def uses_of(satchel: Satchel, download_id: str) -> list[int]:
    return [item["uses"] for item in satchel.call("GET", f"/downloads/{download_id}/links").json["items"]]


def page(response: Any) -> str:
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    return bytes(response.body).decode("utf-8")


def test_previews_and_heads_spend_nothing_and_the_person_gets_the_file(
    satchel: Satchel, done_id: str
) -> None:
    token = new_token(satchel, done_id, max_uses=1)
    preview = get(satchel, token, **{"User-Agent": SLACKBOT, "Accept": "*/*"})
    assert preview.status_code == 200
    facts = json.loads(preview.body)
    assert (facts["filename"], facts["uses_left"]) == ("R&D 'Q3'.zip", 1)
    scanner = get(satchel, token, **{"User-Agent": SLACKBOT, "Accept": BROWSER})
    assert scanner.status_code == 200
    assert '<meta property="og:title" content="R&amp;D &#x27;Q3&#x27;.zip">' in page(scanner)
    head = satchel.client.http.head(f"/links/{token}", headers={"Accept": BROWSER})
    assert (head.status_code, head.body) == (200, b"")
    assert head.headers["Content-Security-Policy"] == scanner.headers["Content-Security-Policy"]
    assert uses_of(satchel, done_id) == [0]

    person = claim(satchel, token)
    assert person.status_code == 303, person.body
    artifact = requests.get(person.headers["Location"], timeout=30)
    assert "filename=\"R&D 'Q3'.zip\"" in artifact.headers["Content-Disposition"]
    assert hashlib.sha256(artifact.content).hexdigest() == facts["sha256"]
    assert uses_of(satchel, done_id) == [1]


def test_a_reclaim_within_the_window_spends_nothing_even_when_used_up(satchel: Satchel, done_id: str) -> None:
    token = new_token(satchel, done_id, max_uses=1)
    first = claim(satchel, token)
    assert first.status_code == 303
    cookie = claim_cookie(first)
    again = claim(satchel, token, cookie)
    assert again.status_code == 303, again.body
    assert again.headers["Location"] != first.headers["Location"] or again.headers["Location"]
    assert claim_cookie(again) == cookie
    assert uses_of(satchel, done_id) == [1]
    # The page, read with the claim, still offers the file; without it the link is used up.
    assert get(satchel, token, Accept=BROWSER, Cookie=f"satchel_claim={cookie}").status_code == 200
    assert get(satchel, token, Accept=BROWSER).status_code == 410

    # A JSON client sends its claim id back in a header.
    as_json = claim(satchel, token, **{"Accept": "application/json", "Satchel-Claim": cookie})
    assert as_json.status_code == 200, as_json.body
    body = json.loads(as_json.body)
    assert (body["claim_id"], body["use"]) == (cookie, None)
    assert uses_of(satchel, done_id) == [1]


def test_json_claims_answer_the_url_the_claim_and_the_use(satchel: Satchel, done_id: str) -> None:
    token = new_token(satchel, done_id, max_uses=3)
    first = claim(satchel, token, Accept="application/json", **{"Content-Type": "application/json"})
    assert first.status_code == 200
    body = json.loads(first.body)
    assert set(body) == {"url", "expires_at", "claim_id", "claim_expires_at", "use"}
    assert body["use"] == 1
    assert len(body["claim_id"]) == 22  # 128 bits
    window = clock.parse(body["claim_expires_at"]) - clock.now()
    assert timedelta(seconds=890) < window <= timedelta(seconds=900)
    second = json.loads(claim(satchel, token, Accept="application/json").body)
    assert (second["use"], second["claim_id"] != body["claim_id"]) == (2, True)


def test_a_second_claimant_is_refused_when_no_use_is_left(satchel: Satchel, done_id: str) -> None:
    token = new_token(satchel, done_id, max_uses=1)
    assert claim(satchel, token).status_code == 303
    other = claim(satchel, token)
    assert other.status_code == 410
    assert "used as many times as it allows" in page(other)
    forged = claim(satchel, token, "A" * 22, Accept="application/json")
    assert forged.status_code == 410
    assert json.loads(forged.body)["Code"] == "LinkGone"


def test_a_claim_after_its_window_needs_a_use(
    satchel: Satchel, done_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SATCHEL_LINK_CLAIM_WINDOW_SECONDS", "60")
    token = new_token(satchel, done_id, max_uses=2)
    cookie = claim_cookie(claim(satchel, token))
    assert claim(satchel, token, cookie).status_code == 303
    assert uses_of(satchel, done_id) == [1]

    later = clock.now() + timedelta(seconds=61)
    monkeypatch.setattr(clock, "now", lambda: later)
    after = claim(satchel, token, cookie)
    assert after.status_code == 303  # a new claim: the second use
    assert claim_cookie(after) != cookie
    assert uses_of(satchel, done_id) == [2]
    table = boto3.resource("dynamodb", region_name=REGION).Table(satchel.stack.table)
    stored = table.get_item(Key={"pk": f"LINK#{hash_secret(token)}", "sk": "LINK"})["Item"]
    assert len(stored["claims"]) == 1  # the closed claim was struck off by the new claim's write
    assert cookie not in repr(stored)  # claim ids are kept only hashed
    assert claim(satchel, token, cookie).status_code == 410  # the old claim is over, no use left
    assert claim(satchel, token, claim_cookie(after)).status_code == 303  # the new one is open


def test_the_not_ready_page_refreshes_and_shows_progress(satchel: Satchel, slow_build: None) -> None:
    satchel.put_source("acme/big.bin", b"x" * (8 * 1024 * 1024))
    created = satchel.create({"keys": ["acme/big.bin"], "compression": "store"}, link={"max_uses": 1})
    token = created.json["link"]["token"]
    early = get(satchel, token, Accept=BROWSER)
    assert early.status_code == 425
    assert early.headers["Retry-After"] == "5"
    text = page(early)
    assert '<meta http-equiv="refresh" content="5">' in text
    assert '<meta name="satchel-code" content="LinkNotReady">' in text
    as_json = get(satchel, token, Accept="application/json")
    body = json.loads(as_json.body)
    assert (as_json.status_code, body["Code"]) == (425, "LinkNotReady")
    assert set(body["progress"]) >= {"bytes_done", "bytes_total", "files_done", "files_total"}
    assert claim(satchel, token).status_code in (425, 303)  # DONE meanwhile, or not yet: never spent early
    assert satchel.wait(created.json["id"])["state"] == "DONE"


@pytest.mark.parametrize("reason", ["used_up", "expired", "revoked", "download_gone"])
def test_every_gone_link_says_why(
    satchel: Satchel, done_id: str, monkeypatch: pytest.MonkeyPatch, reason: str
) -> None:
    token = new_token(satchel, done_id, max_uses=1, expires_in=600)
    if reason == "used_up":
        assert claim(satchel, token).status_code == 303
    elif reason == "expired":
        later = clock.now() + timedelta(seconds=601)
        monkeypatch.setattr(clock, "now", lambda: later)
    elif reason == "revoked":
        assert satchel.call("DELETE", f"/links/{token}").status == 204
    else:
        assert satchel.call("DELETE", f"/downloads/{done_id}").status == 204
    for method in ("GET", "POST"):
        response = get(satchel, token, Accept=BROWSER) if method == "GET" else claim(satchel, token)
        assert response.status_code == 410, (method, response.body)
        assert '<meta name="satchel-code" content="LinkGone">' in page(response)
        assert "Sunset" in response.headers
        as_json = json.loads(get(satchel, token, Accept="application/json").body)
        assert (as_json["Code"], as_json["reason"]) == ("LinkGone", reason)


@pytest.mark.parametrize("token", ["A" * 43, "short", "%3Cscript%3E"])
def test_an_unknown_link_is_a_404_page(satchel: Satchel, token: str) -> None:
    for response in (get(satchel, token, Accept=BROWSER), claim(satchel, token)):
        assert response.status_code == 404
        assert '<meta name="satchel-code" content="LinkNotFound">' in page(response)
        assert "<script>" not in page(response)
    as_json = get(satchel, token)
    assert (as_json.status_code, json.loads(as_json.body)["Code"]) == (404, "LinkNotFound")


def test_link_answers_carry_sunset_and_the_page_its_headers(satchel: Satchel, done_id: str) -> None:
    token = new_token(satchel, done_id, max_uses=1, expires_in=3600)
    expires = [
        item["expires_at"] for item in satchel.call("GET", f"/downloads/{done_id}/links").json["items"]
    ]
    sunset = datetime.strptime(get(satchel, token).headers["Sunset"], "%a, %d %b %Y %H:%M:%S GMT")
    assert clock.iso(sunset.replace(tzinfo=clock.now().tzinfo))[:19] == expires[0][:19]
    html = get(satchel, token, Accept=BROWSER)
    policy = html.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert (html.headers["Referrer-Policy"], html.headers["X-Content-Type-Options"]) == (
        "no-referrer",
        "nosniff",
    )
    assert html.headers["Cache-Control"] == "no-store"
    assert f'action="/links/{token}"' in page(html)
    claimed = claim(satchel, token)
    assert "Sunset" in claimed.headers
    assert f"Path=/links/{token}" in claimed.headers["Set-Cookie"]
    assert "Secure" not in claimed.headers["Set-Cookie"]  # served over http here
    secure = claim(satchel, new_token(satchel, done_id), **{"X-Forwarded-Proto": "https"})
    assert "Secure" in secure.headers["Set-Cookie"]


def test_the_listing_shows_each_link_but_never_its_token(satchel: Satchel, done_id: str) -> None:
    tokens = [new_token(satchel, done_id, max_uses=uses) for uses in (1, 2)]
    assert satchel.call("DELETE", f"/links/{tokens[1]}").status == 204
    reply = satchel.call("GET", f"/downloads/{done_id}/links")
    assert reply.status == 200
    items = reply.json["items"]
    assert [set(item) for item in items] == [
        {"link_id", "created_at", "expires_at", "max_uses", "uses", "revoked"}
    ] * 2
    assert [(item["max_uses"], item["revoked"]) for item in items] == [(1, False), (2, True)]
    assert not any(token in reply.body.decode() for token in tokens)
    assert satchel.call("GET", f"/downloads/{done_id}/links", "bob").status == 403
    assert satchel.call("GET", f"/downloads/{done_id}/links", "dave").status == 404
    assert satchel.call("GET", f"/downloads/{done_id}/links", "carol").status == 200


def test_a_claim_is_announced_on_eventbridge(satchel: Satchel, done_id: str) -> None:
    bus, sqs = boto3.client("events", region_name=REGION), boto3.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName="observed-claims")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    bus.put_rule(
        Name="claims",
        EventPattern=json.dumps({"source": [events.SOURCE], "detail-type": [events.LINK_CLAIMED]}),
    )
    bus.put_targets(Rule="claims", Targets=[{"Id": "queue", "Arn": queue_arn}])
    token = new_token(satchel, done_id, max_uses=2)
    cookie = claim_cookie(claim(satchel, token))
    assert claim(satchel, token, cookie).status_code == 303  # a re-claim: no event
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    [event] = [json.loads(message["Body"]) for message in messages]
    [link_id] = [item["link_id"] for item in satchel.call("GET", f"/downloads/{done_id}/links").json["items"]]
    assert event["detail-type"] == "link.claimed"
    assert set(event["detail"]) == {"type", "timestamp", "data"}
    data = event["detail"]["data"]
    assert set(data) == {
        "link_id",
        "download_id",
        "tenant",
        "user_id",
        "claimed_at",
        "use",
        "client_reference",
    }
    assert (data["link_id"], data["download_id"]) == (link_id, done_id)
    assert (data["tenant"], data["user_id"], data["use"]) == ("acme", "alice", 1)
    assert event["detail"]["timestamp"] == data["claimed_at"]
    assert token not in json.dumps(event)


def test_a_link_issued_before_claims_existed_can_be_claimed(
    satchel: Satchel, done_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Links live for days: one written without the `claims` map still claims, once each."""
    added: list[str] = []
    original = LinkStore._add_claims_map

    def spy(store: LinkStore, token_hash: str) -> None:
        added.append(token_hash)
        original(store, token_hash)

    monkeypatch.setattr(LinkStore, "_add_claims_map", spy)
    token = new_token(satchel, done_id, max_uses=2)
    table = boto3.resource("dynamodb", region_name=REGION).Table(satchel.stack.table)
    key = {"pk": f"LINK#{hash_secret(token)}", "sk": "LINK"}
    table.update_item(Key=key, UpdateExpression="REMOVE claims")
    assert "claims" not in table.get_item(Key=key)["Item"]
    first = claim(satchel, token)
    assert first.status_code == 303, first.body
    assert claim(satchel, token, claim_cookie(first)).status_code == 303
    assert uses_of(satchel, done_id) == [1]
    assert added == [hash_secret(token)]  # the map was added once, by the first claim


def test_a_claim_whose_audit_entry_cannot_be_written_still_hands_out_the_spent_use(
    satchel: Satchel, done_id: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The use is spent before the entry is written: answering 500 then would leave the claimant
    with neither the file nor a claim to retry with. The entry goes to the log instead."""
    from chalicelib.storage.audit import AuditLog

    written = AuditLog.record

    def unwritable(self: AuditLog, tenant: str, action: Any, *args: Any, **details: Any) -> Any:
        if action.value == "link.used":
            raise ConnectionError("the table could not be reached")
        return written(self, tenant, action, *args, **details)

    token = new_token(satchel, done_id, max_uses=1)
    monkeypatch.setattr(AuditLog, "record", unwritable)
    claimed = claim(satchel, token)
    assert claimed.status_code == 303
    assert requests.get(claimed.headers["Location"], timeout=30).content
    assert uses_of(satchel, done_id) == [1]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    [entry] = [line["audit"] for line in lines if line.get("message") == "audit entry not written"]
    assert (entry["action"], entry["use"], entry["download_id"]) == ("link.used", 1, done_id)
    # A re-claim spent nothing, so its own failure is an error its claimant may retry.
    again = claim(satchel, token, cookie=claim_cookie(claimed))
    assert again.status_code == 500
    monkeypatch.setattr(AuditLog, "record", written)
    assert claim(satchel, token, cookie=claim_cookie(claimed)).status_code == 303
    assert uses_of(satchel, done_id) == [1]
