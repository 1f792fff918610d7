"""The link page and link answers, rendered from records alone: escaping, headers,
negotiation, the state pages and the claim's cookie."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest
from chalice.app import Response

from chalicelib.api import linkpage
from chalicelib.api.links import Claimed, Reading
from chalicelib.core.errors import LinkGone, LinkNotFound, LinkNotReady, problem
from chalicelib.core.models import Artifact, Download, Progress, State
from chalicelib.storage.links import Link
from tests.support import records

HOSTILE = "<script>alert(\"owned\")</script>' onload='x' & <img src=x onerror=alert(1)>.zip"
URL = "https://api.example.com/v1/links/" + "T" * 43
MIB = 1024 * 1024
DONE = State.DONE
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def a_link(**changes: Any) -> Link:
    fields: dict[str, Any] = {
        "token_hash": "ab" * 32,
        "download_id": "0" * 32,
        "tenant": "acme",
        "user_id": "alice",
        "created_at": "2026-11-29T10:00:00.000Z",
        "expires_at": "2099-11-30T10:00:00.000Z",
        "max_uses": 3,
        "uses": 1,
    }
    return Link(**{**fields, **changes})


def a_download(filename: str = "report.zip", state: State = State.DONE) -> Download:
    return records.download(
        filename=filename,
        state=state,
        retention_seconds=86_400,
        progress=Progress(
            files_done=1, files_total=2, bytes_done=3 * 1024 * 1024, bytes_total=8 * 1024 * 1024
        ),
        artifact=Artifact("artifacts/x.zip", 1536, "f" * 64, "application/zip")
        if state is State.DONE
        else None,
        expires_at="2099-12-01T10:00:00.000Z",
    )


def ready(filename: str = "report.zip") -> Reading:
    return Reading(a_link(), a_download(filename), None, 900, file_origin="https://bucket.s3.amazonaws.com")


class Elements(HTMLParser):
    """The tags of a page, and its text."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def named(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]

    def meta(self, key: str, value: str) -> str | None:
        return next(attrs.get("content") for attrs in self.named("meta") if attrs.get(key) == value)


def page_of(response: Response) -> Elements:
    assert isinstance(response.body, str)
    return Elements(response.body)


def test_a_hostile_file_name_is_shown_as_text_never_as_markup() -> None:
    response = linkpage.answer(ready(HOSTILE), BROWSER, URL)
    page = page_of(response)
    assert {tag for tag, _ in page.tags} <= {
        "html", "head", "meta", "title", "style", "body", "main", "h1", "dl", "dt", "dd", "code",
        "time", "form", "button", "p",
    }  # fmt: skip
    assert not page.named("script")
    assert not page.named("img")
    assert HOSTILE in page.text  # the h1 (and the title) show the name exactly
    assert page.meta("property", "og:title") == HOSTILE
    assert all("onload" not in attrs and "onerror" not in attrs for _, attrs in page.tags)


def test_the_ready_page_shows_the_facts_and_a_form_that_posts_to_the_link() -> None:
    response = linkpage.answer(ready(), BROWSER, URL)
    assert response.status_code == 200
    page = page_of(response)
    text = " ".join(page.text)
    for shown in (
        "report.zip",
        "1.5 KiB",
        "1,536 bytes",
        "application/zip",
        "f" * 64,
        "2099-11-30 10:00 UTC",
    ):
        assert shown in text, shown
    assert "2 of 3" in text  # uses left
    assert page.named("form") == [{"method": "post", "action": "/v1/links/" + "T" * 43}]
    assert page.named("button") == [{"type": "submit", "id": "download"}]
    assert page.meta("name", "viewport") == "width=device-width, initial-scale=1"
    assert page.meta("name", "robots") == "noindex, nofollow"
    assert page.meta("property", "og:type") == "website"
    assert "1.5 KiB" in (page.meta("property", "og:description") or "")


def test_the_page_headers_lock_it_down() -> None:
    headers = linkpage.answer(ready(), BROWSER, URL).headers
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    policy = {
        part.split()[0]: part.split()[1:] for part in str(headers["Content-Security-Policy"]).split("; ")
    }
    assert policy["default-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["form-action"] == ["'self'", "https://bucket.s3.amazonaws.com"]
    assert "script-src" not in policy  # default-src 'none': no script at all
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Sunset"] == "Mon, 30 Nov 2099 10:00:00 GMT"


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (BROWSER, True),
        ("text/html", True),
        ("application/json", False),
        ("*/*", False),
        (None, False),
        ("application/json, text/html;q=0", False),
    ],
)
def test_negotiation_gives_the_page_only_to_what_lists_html(accept: str | None, html: bool) -> None:
    response = linkpage.answer(ready(), accept, URL)
    assert str(response.headers["Content-Type"]).startswith("text/html" if html else "application/json")


def test_json_facts_have_the_contracts_fields() -> None:
    body = linkpage.answer(ready(), "application/json", URL).body
    assert body == {
        "link_id": "link:" + "ab" * 8,
        "download_id": "0" * 32,
        "filename": "report.zip",
        "size": 1536,
        "content_type": "application/zip",
        "sha256": "f" * 64,
        "expires_at": "2099-11-30T10:00:00.000Z",
        "artifact_expires_at": "2099-12-01T10:00:00.000Z",
        "max_uses": 3,
        "uses": 1,
        "uses_left": 2,
        "claim_window_seconds": 900,
        "claim": {"method": "POST", "url": URL},
    }


def test_head_has_the_status_and_headers_of_get_and_no_body() -> None:
    for accept in (BROWSER, "application/json"):
        get, head = linkpage.answer(ready(), accept, URL), linkpage.answer(ready(), accept, URL, head=True)
        assert (head.status_code, head.headers, head.body) == (get.status_code, get.headers, "")


def test_the_not_ready_page_shows_progress_and_refreshes_itself() -> None:
    refusal = LinkNotReady(
        "not ready", retry_after=7, state="RUNNING", progress={"bytes_done": 3, "bytes_total": 8}
    )
    reading = Reading(a_link(), a_download(state=State.RUNNING), refusal, 900)
    response = linkpage.answer(reading, BROWSER, URL)
    assert (response.status_code, response.headers["Retry-After"]) == (425, "7")
    page = page_of(response)
    assert page.meta("http-equiv", "refresh") == "7"
    assert page.meta("name", "satchel-code") == "LinkNotReady"
    assert page.named("progress") == [{"id": "progress", "max": "8", "value": "3"}]
    assert not page.named("form")


@pytest.mark.parametrize(
    ("reason", "sentence"),
    [
        ("used_up", "used as many times as it allows"),
        ("expired", "It has expired"),
        ("revoked", "revoked by its owner"),
        ("download_gone", "no longer available"),
    ],
)
def test_gone_pages_say_why(reason: str, sentence: str) -> None:
    reading = Reading(a_link(), a_download(), LinkGone("gone", reason=reason), 900)
    response = linkpage.answer(reading, BROWSER, URL)
    assert response.status_code == 410
    page = page_of(response)
    assert sentence in " ".join(page.text)
    assert page.meta("name", "satchel-code") == "LinkGone"
    assert not page.named("form")
    json_body = linkpage.answer(reading, "application/json", URL).body
    assert json_body == problem("LinkGone", 410, "gone", reason=reason)


def test_an_unknown_link_is_a_404_page_without_sunset() -> None:
    response = linkpage.answer(Reading(None, None, LinkNotFound("no such link"), 900), BROWSER, URL)
    assert response.status_code == 404
    assert "Sunset" not in response.headers
    assert page_of(response).meta("name", "satchel-code") == "LinkNotFound"


def claim(**changes: Any) -> Claimed:
    fields: dict[str, Any] = {
        "link": a_link(),
        "download": a_download(),
        "url": "https://bucket.s3.amazonaws.com/artifacts/x.zip?X-Amz-Signature=s",
        "url_expires_at": "2099-11-29T10:05:00.000Z",
        "claim_id": "C" * 22,
        "claim_expires_at": "2099-11-29T10:15:00.000Z",
        "use": 2,
    }
    return Claimed(**{**fields, **changes})


def test_a_form_claim_is_a_303_with_a_scoped_http_only_cookie() -> None:
    response = linkpage.claimed(claim(), BROWSER, URL, secure=True)
    assert response.status_code == 303
    assert response.headers["Location"] == claim().url
    cookie = [part.strip() for part in str(response.headers["Set-Cookie"]).split(";")]
    assert cookie[0] == "satchel_claim=" + "C" * 22
    assert {"HttpOnly", "SameSite=Lax", "Secure", "Path=/v1/links/" + "T" * 43} <= set(cookie)
    assert "Secure" not in str(linkpage.claimed(claim(), BROWSER, URL, secure=False).headers["Set-Cookie"])


def test_a_json_claim_answers_the_url_and_the_claim() -> None:
    response = linkpage.claimed(claim(), "application/json", URL, secure=True)
    assert response.status_code == 200
    assert response.body == {
        "url": claim().url,
        "expires_at": "2099-11-29T10:05:00.000Z",
        "claim_id": "C" * 22,
        "claim_expires_at": "2099-11-29T10:15:00.000Z",
        "use": 2,
    }


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Satchel-Claim": "abc"}, "abc"),
        ({"cookie": "other=1; satchel_claim=xyz"}, "xyz"),
        ({"cookie": 'bad"cookie=;;'}, None),
        ({}, None),
    ],
)
def test_the_presented_claim_comes_from_the_header_or_the_cookie(
    headers: dict[str, str], expected: str | None
) -> None:
    assert linkpage.presented_claim(headers) == expected


@pytest.mark.parametrize(
    ("size", "shown"), [(0, "0 bytes"), (1023, "1023 bytes"), (1536, "1.5 KiB"), (5 * 1024**3, "5.0 GiB")]
)
def test_sizes_read_as_people_read_them(size: int, shown: str) -> None:
    assert linkpage.human_size(size) == shown


@pytest.mark.parametrize(
    ("size", "shown"),
    [(520, "520 bytes"), (1536, "1.5 KiB (1,536 bytes)"), (5 * 1024**3, "5.0 GiB (5,368,709,120 bytes)")],
)
def test_the_page_gives_exact_bytes_only_where_the_unit_rounds_them(size: int, shown: str) -> None:
    assert linkpage.size_text(size) == shown


@pytest.mark.parametrize(("retry_after", "said"), [(1, "every second"), (5, "every 5 seconds")])
def test_the_not_ready_page_says_how_often_it_refreshes(retry_after: int, said: str) -> None:
    refusal = LinkNotReady("not ready", retry_after=retry_after, state="PENDING")
    reading = Reading(a_link(), a_download(state=State.PENDING), refusal, 900)
    body = linkpage.answer(reading, BROWSER, URL).body
    assert isinstance(body, str)
    assert f"This page refreshes itself {said}." in body
