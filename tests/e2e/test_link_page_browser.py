"""A shared link in a real browser: Debian's chromium driven by Selenium, against the local
stack started as `make run` starts it (a subprocess, loopback only).

What a person sees and does: the link page (file name, size, sha256, uses left, expiry),
kept as a screenshot (build/test-artifacts/), a click on Download, and the file the browser
saves, checked byte for byte. Around it, what breaks single-use links elsewhere: a chat's
preview bot and a HEAD before the click (they must not spend the use), a page opened before
the file is built (425, refreshing itself until it is ready), a retry in another tab (the
claim cookie: no second use), another person (410), unknown and revoked links.

The build is held back for the not-ready page by a gate in front of Prepare
(tests/support/buildgate.py), not by timing. Chromium missing fails these tests.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from chalicelib.core.settings import INTEGER_VARIABLES
from chalicelib.s3 import layout
from tests.e2e.test_local_stack import PROJECT_DIR, LocalStack, _wait_done, aws, call, running_stack
from tests.support import buildgate
from tests.support.browser import Browser, open_browser, require_chromium, sha256_of

ARTIFACTS = PROJECT_DIR / "build" / "test-artifacts"
SCREENSHOT = ARTIFACTS / "link-page.png"
PHONE_SCREENSHOT = ARTIFACTS / "link-page-phone.png"
PAGE_DEADLINE_SECONDS = 30.0
RETRY_AFTER_SECONDS = 1  # the stack's Retry-After: the not-ready page refreshes every second
KEYS = ["acme/reports/2024/q1.csv", "acme/reports/2024/q2.csv"]
SLACKBOT = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
PREVIEWERS = (
    SLACKBOT,
    "Mozilla/5.0 (compatible; Microsoft Teams) SkypeUriPreview Preview/0.5",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    require_chromium()  # before the stack: say what is missing first
    directory = tmp_path_factory.mktemp("browser-stack")
    environment = {
        buildgate.GATE_VARIABLE: str(directory / "build-gate"),
        INTEGER_VARIABLES["link_retry_after_seconds"]: str(RETRY_AFTER_SECONDS),
    }
    with running_stack(directory, demo_rows=100, environment=environment) as started:
        yield started
        assert started.stop(signal.SIGINT) == 0, started.output()
        assert "Traceback" not in started.output(), started.output()


@pytest.fixture
def browsers(tmp_path: Path) -> Iterator[Callable[..., Browser]]:
    """Opens browsers, each a profile of its own (another person); all quit after the test."""
    opened: list[Browser] = []

    def open_one(**size: int) -> Browser:
        opened.append(open_browser(tmp_path / f"browser-{len(opened)}", **size))
        return opened[-1]

    yield open_one
    for browser in opened:
        browser.quit()


def shared_download(stack: LocalStack, max_uses: int = 1, *, wait: bool = True) -> tuple[dict[str, Any], str]:
    """A zip of two reports with a link (as `POST /downloads` with `link` makes them)."""
    request = {
        "type": "zip",
        "params": {"keys": KEYS},
        "filename": "q1-q2 reports.zip",
        "link": {"max_uses": max_uses, "expires_in": 3600},
    }
    created = call("POST", f"{stack.api}/downloads", stack.key("alice"), request)
    assert created.status == 202, created.body
    download = _wait_done(stack, created.json["id"], stack.key("alice")) if wait else created.json
    return download, str(created.json["link"]["url"])


def facts(link: str) -> dict[str, Any]:
    """The link as JSON (what the page shows), read without spending anything."""
    answer = requests.get(link, headers={"Accept": "application/json"}, timeout=10)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


def uses(stack: LocalStack, download_id: str) -> list[int]:
    """The uses of each of the download's links, as its owner sees them."""
    listed = call("GET", f"{stack.api}/downloads/{download_id}/links", stack.key("alice"))
    assert listed.status == 200, listed.body
    return [int(item["uses"]) for item in listed.json["items"]]


def expected_file(stack: LocalStack, download: dict[str, Any]) -> bytes:
    """The artifact itself, read from the emulated bucket, to compare the browser's file with."""
    stored = aws(stack, "s3").get_object(
        Bucket=stack.state["artifact_bucket"], Key=layout.artifact_key(download["id"])
    )
    body: bytes = stored["Body"].read()
    return body


def page_text(browser: Browser) -> str:
    return str(browser.driver.find_element(By.TAG_NAME, "body").text)


def meta(browser: Browser, selector: str) -> str | None:
    found = browser.driver.find_elements(By.CSS_SELECTOR, f"meta[{selector}]")
    return str(found[0].get_attribute("content")) if found else None


def status_of(link: str, method: str = "GET") -> int:
    return requests.request(method, link, headers={"Accept": BROWSER_ACCEPT}, timeout=10).status_code


def click_download(browser: Browser) -> None:
    button = browser.driver.find_element(By.ID, "download")
    form = button.find_element(By.XPATH, "./ancestor::form")
    assert (form.get_attribute("method") or "").lower() == "post"  # a click claims; reading never does
    button.click()


def test_the_link_page_shows_the_file_and_the_browser_saves_it(
    stack: LocalStack, browsers: Callable[..., Browser]
) -> None:
    started = time.monotonic()
    download, link = shared_download(stack)
    shown = facts(link)
    browser = browsers(width=900, height=620)  # the screenshot: the page, little around it

    browser.driver.get(link)

    text = page_text(browser)
    assert browser.driver.title == shown["filename"] == "q1-q2 reports.zip"
    assert shown["filename"] in text
    assert f"{shown['size']:,} bytes" in text
    assert browser.driver.find_element(By.ID, "sha256").text == shown["sha256"]
    assert browser.driver.find_element(By.ID, "uses-left").text == "1 of 1"
    expires = datetime.fromisoformat(shown["expires_at"])
    assert expires.strftime("%Y-%m-%d") in text  # the absolute expiry
    assert re.search(r"\bin (59|60) minutes\b|\bin 1 hour\b", text), text  # and the relative one
    assert meta(browser, 'property="og:title"') == shown["filename"]
    assert meta(browser, 'name="robots"') is not None
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.driver.save_screenshot(str(SCREENSHOT))
    assert uses(stack, download["id"]) == [0]  # the browser read the page: nothing spent

    click_download(browser)
    saved = browser.wait_for_download()

    assert saved.name == shown["filename"]  # RFC 6266 Content-Disposition, as sent by the bucket
    assert saved.read_bytes() == expected_file(stack, download)
    assert sha256_of(saved) == shown["sha256"] == download["artifact"]["sha256"]
    assert saved.stat().st_size == shown["size"]
    assert uses(stack, download["id"]) == [1]
    print(f"browser: page, screenshot, click and saved file in {time.monotonic() - started:.1f} s")


def test_the_page_fits_a_phone(stack: LocalStack, browsers: Callable[..., Browser]) -> None:
    _, link = shared_download(stack)
    phone = browsers()
    phone.emulate_phone(width=390, height=844)

    phone.driver.get(link)

    assert meta(phone, 'name="viewport"') is not None
    width, overflow = phone.driver.execute_script(
        "const page = document.documentElement;return [page.clientWidth, page.scrollWidth - page.clientWidth]"
    )
    assert width == 390
    assert overflow == 0, "the page scrolls sideways on a phone"
    button = phone.driver.find_element(By.ID, "download")
    assert button.is_displayed()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    phone.driver.save_screenshot(str(PHONE_SCREENSHOT))


def test_a_preview_bot_and_a_head_do_not_spend_a_single_use_link(
    stack: LocalStack, browsers: Callable[..., Browser]
) -> None:
    download, link = shared_download(stack)

    # What a chat does with a pasted link, and what mail scanners do: read it, as bots.
    for agent in PREVIEWERS:
        preview = requests.get(link, headers={"User-Agent": agent, "Accept": BROWSER_ACCEPT}, timeout=10)
        assert preview.status_code == 200, preview.text
        assert f'<meta property="og:title" content="{download["filename"]}">' in preview.text
        assert preview.headers["Cache-Control"] == "no-store"
    bare = requests.get(link, headers={"User-Agent": SLACKBOT}, timeout=10)  # no Accept: JSON
    assert (bare.status_code, bare.json()["uses_left"]) == (200, 1)
    head = requests.head(link, headers={"User-Agent": SLACKBOT, "Accept": BROWSER_ACCEPT}, timeout=10)
    assert (head.status_code, head.content) == (200, b"")
    assert uses(stack, download["id"]) == [0]

    person = browsers()
    person.driver.get(link)
    click_download(person)
    saved = person.wait_for_download()

    assert sha256_of(saved) == download["artifact"]["sha256"]
    assert uses(stack, download["id"]) == [1]


def test_a_retry_in_another_tab_spends_no_use_and_another_person_is_refused(
    stack: LocalStack, browsers: Callable[..., Browser]
) -> None:
    download, link = shared_download(stack)
    person, other = browsers(), browsers()
    other.driver.get(link)  # another person has the page open too, before anyone clicks
    person.driver.get(link)
    person.driver.switch_to.new_window("tab")
    person.driver.get(link)  # a second tab of the same person, also before the click
    first_tab, second_tab = person.driver.window_handles

    person.driver.switch_to.window(first_tab)
    click_download(person)
    first = person.wait_for_download()
    person.driver.switch_to.window(second_tab)
    click_download(person)  # the claim cookie makes this a re-claim within the window
    second = person.wait_for_download()

    assert sha256_of(first) == sha256_of(second) == download["artifact"]["sha256"]
    assert uses(stack, download["id"]) == [1]
    person.driver.get(link)  # for its claimant, within the window, the page still offers the file
    assert person.driver.find_elements(By.ID, "download")
    assert "again" in person.driver.find_element(By.ID, "uses-left").text

    click_download(other)  # no cookie: a claim of its own, and the only use is spent
    WebDriverWait(other.driver, PAGE_DEADLINE_SECONDS).until(
        lambda driver: driver.find_elements(By.ID, "code")
    )
    assert other.driver.find_element(By.ID, "code").text == "LinkGone"
    assert "used as many times as it allows" in page_text(other)
    assert not list(other.downloads.iterdir())
    assert uses(stack, download["id"]) == [1]
    assert status_of(link) == 410  # and for anyone without the claim: used up


def test_the_not_ready_page_refreshes_itself_into_the_ready_page(
    stack: LocalStack, browsers: Callable[..., Browser]
) -> None:
    lambdas, gate = aws(stack, "lambda"), Path(str(stack.state_file.parent / "build-gate"))
    buildgate.hold(lambdas, gate)
    try:
        download, link = shared_download(stack, wait=False)
        browser = browsers()

        browser.driver.get(link)

        assert status_of(link) == 425
        assert browser.driver.find_element(By.ID, "code").text == "LinkNotReady"
        assert "not ready yet" in browser.driver.title
        assert meta(browser, 'http-equiv="refresh"') == str(RETRY_AFTER_SECONDS)
        assert not browser.driver.find_elements(By.ID, "download")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.driver.save_screenshot(str(ARTIFACTS / "link-page-not-ready.png"))

        buildgate.release(gate)
        # The page reloads itself (meta refresh); nothing here reloads it.
        WebDriverWait(browser.driver, PAGE_DEADLINE_SECONDS).until(
            lambda driver: driver.find_elements(By.ID, "download")
        )
    finally:
        buildgate.release(gate)
        buildgate.restore(lambdas)

    click_download(browser)
    saved = browser.wait_for_download()
    done = _wait_done(stack, download["id"], stack.key("alice"))
    assert sha256_of(saved) == done["artifact"]["sha256"]


def test_unknown_and_revoked_links_say_so(stack: LocalStack, browsers: Callable[..., Browser]) -> None:
    download, link = shared_download(stack, max_uses=3)
    browser = browsers()
    unknown = re.sub(r"/links/[^/]+$", "/links/" + "A" * 43, link)

    browser.driver.get(unknown)
    assert status_of(unknown) == 404
    assert browser.driver.find_element(By.ID, "code").text == "LinkNotFound"
    assert "Link not found" in browser.driver.title

    assert call("DELETE", link, stack.key("alice")).status == 204
    browser.driver.get(link)
    assert status_of(link) == status_of(link, "HEAD") == 410
    assert browser.driver.find_element(By.ID, "code").text == "LinkGone"
    assert "revoked" in page_text(browser)
    assert uses(stack, download["id"]) == [0]
