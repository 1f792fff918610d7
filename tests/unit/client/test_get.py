"""`satchel get LINK`: read a shared link, claim it, save its file, resume, verify.

Against the scripted loopback server of test_client.py, playing the link routes as the
contract has them (GET never spends; POST claims and answers a URL and a claim id; a
resume presents the claim id in `Satchel-Claim`) and the file store. The real stack and
its real counting of uses are in tests/e2e/test_link_get_e2e.py.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from satchel_client import ApiError, VerificationError
from satchel_client import cli as satchel_cli
from satchel_client.links import (
    MAX_POLL_SECONDS,
    MIN_POLL_SECONDS,
    LinkClient,
    LinkNotReady,
    SavedClaim,
    claim_path,
    link_url,
    load_claim,
    parse_time,
    poll_delay,
    save_claim,
    target_for,
)
from satchel_client.models import SharedFile
from satchel_client.transfer import part_path
from tests.unit.client.test_client import ARTIFACT, FILE_PATH, SHA256, Answer, FakeApi

LINK_PATH = "/links/tok3n"
CLAIM_ID = "c" * 32
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def shown(api: FakeApi, **changes: Any) -> dict[str, Any]:
    """The link as GET shows it (JSON)."""
    body: dict[str, Any] = {
        "link_id": "lnk_1",
        "download_id": "d1",
        "filename": "reports.zip",
        "size": len(ARTIFACT),
        "content_type": "application/zip",
        "sha256": SHA256,
        "expires_at": "2026-11-24T09:00:00Z",
        "artifact_expires_at": "2026-11-30T09:00:00Z",
        "max_uses": 1,
        "uses": 0,
        "uses_left": 1,
        "claim_window_seconds": 900,
        "claim": {"method": "POST", "url": api.url + LINK_PATH},
    }
    return {**body, **changes}


def claimed(api: FakeApi, use: int = 1, window: timedelta = timedelta(minutes=15)) -> dict[str, Any]:
    return {
        "url": api.url + FILE_PATH,
        "expires_at": "2026-11-23T09:05:00Z",
        "claim_id": CLAIM_ID,
        "claim_expires_at": (datetime.now(UTC) + window).isoformat().replace("+00:00", "Z"),
        "use": use,
    }


def serve_link(api: FakeApi, **changes: Any) -> None:
    api.on("GET", LINK_PATH, Answer(200, shown(api, **changes)))
    api.on("POST", LINK_PATH, Answer(200, claimed(api)))


def gone() -> Answer:
    return Answer(410, {"Code": "LinkGone", "Message": "the link has been used up"})


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi() as fake:
        yield fake


@pytest.fixture
def links() -> Iterator[LinkClient]:
    with LinkClient(timeout=(2.0, 5.0), retries=1, sleep=lambda seconds: None) as client:
        yield client


def saved_claim(api: FakeApi, until: datetime, **changes: Any) -> SavedClaim:
    fields: dict[str, Any] = {
        "link": api.url + LINK_PATH,
        "claim_id": CLAIM_ID,
        "claim_expires_at": until.isoformat(),
        "filename": "reports.zip",
        "size": len(ARTIFACT),
        "sha256": SHA256,
    }
    return SavedClaim(**{**fields, **changes})


# -- the pure parts ----------------------------------------------------------------------


def test_a_link_is_an_http_url_ending_in_links_token() -> None:
    assert link_url(" https://satchel.example.com/links/abc/ ") == "https://satchel.example.com/links/abc"
    assert link_url("http://127.0.0.1:9/api/links/abc") == "http://127.0.0.1:9/api/links/abc"  # a stage
    for wrong in (
        "abc",
        "ftp://h/links/abc",
        "https:///links/abc",
        "https://h/links/",
        "https://h/links/a/b",
    ):
        with pytest.raises(ValueError, match="link"):
            link_url(wrong)


def test_the_target_is_the_links_file_name_and_the_server_cannot_choose_the_directory(
    tmp_path: Path,
) -> None:
    def named(filename: str) -> SharedFile:
        return SharedFile.from_api("u", {"filename": filename, "sha256": SHA256})

    assert target_for(named("reports.zip"), None) == Path("reports.zip")
    assert target_for(named("../../etc/passwd"), None) == Path("passwd")
    assert target_for(named(".."), None) == Path("download")
    assert target_for(named("reports.zip"), tmp_path) == tmp_path / "reports.zip"
    assert target_for(named("reports.zip"), tmp_path / "mine.zip") == tmp_path / "mine.zip"


def test_a_claim_is_kept_for_its_link_only_and_readable_by_its_owner_only(tmp_path: Path) -> None:
    api_url = "http://127.0.0.1:9"
    saved = SavedClaim(f"{api_url}/links/a", CLAIM_ID, "2026-11-23T09:15:00.000Z", "r.zip", 10, SHA256)
    path = tmp_path / "r.zip.part.claim"
    save_claim(path, saved)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_claim(path, f"{api_url}/links/a") == saved
    assert load_claim(path, f"{api_url}/links/b") is None  # another link's claim never resumes
    assert load_claim(tmp_path / "none.claim", f"{api_url}/links/a") is None
    path.write_text('{"link": "x"}')
    assert load_claim(path, "x") is None  # not a claim file this client wrote
    assert saved.open_at(datetime(2026, 11, 23, 9, 14, tzinfo=UTC))
    assert not saved.open_at(datetime(2026, 11, 23, 9, 15, tzinfo=UTC))
    assert parse_time("2026-11-23T09:15:00Z") == datetime(2026, 11, 23, 9, 15, tzinfo=UTC)
    assert parse_time("soon") is None


def test_polls_follow_retry_after_within_bounds() -> None:
    assert poll_delay(5, None) == 5
    assert poll_delay(None, None) == MIN_POLL_SECONDS
    assert poll_delay(0, None) == MIN_POLL_SECONDS
    assert poll_delay(3600, None) == MAX_POLL_SECONDS
    assert poll_delay(5, remaining=2.0) == 2.0  # never past the --timeout


# -- a get, over HTTP ----------------------------------------------------------------------


def test_a_get_reads_then_claims_once_then_saves_the_verified_file(
    api: FakeApi, links: LinkClient, tmp_path: Path
) -> None:
    serve_link(api)
    target = tmp_path / "out.zip"

    got = links.get(api.url + LINK_PATH, target)

    assert target.read_bytes() == ARTIFACT
    assert (got.use, got.reclaimed, got.fetched.sha256, got.fetched.resumed_from) == (1, False, SHA256, 0)
    assert not part_path(target).exists()
    assert not claim_path(part_path(target)).exists()  # nothing left to resume
    (read,) = api.requests_to("GET", LINK_PATH)
    (claim,) = api.requests_to("POST", LINK_PATH)
    assert read.headers["Accept"] == claim.headers["Accept"] == "application/json"
    assert "Satchel-Claim" not in claim.headers  # a first claim: nothing to present
    (file_request,) = api.requests_to("GET", FILE_PATH)
    assert "Range" not in file_request.headers
    assert "Authorization" not in file_request.headers


def test_an_interrupted_get_resumes_with_its_claim_id_and_a_range(
    api: FakeApi, links: LinkClient, tmp_path: Path
) -> None:
    serve_link(api)
    target = tmp_path / "out.zip"
    part = part_path(target)
    part.write_bytes(ARTIFACT[:1000])
    save_claim(claim_path(part), saved_claim(api, datetime.now(UTC) + timedelta(minutes=10)))

    got = links.get(api.url + LINK_PATH, target)

    assert target.read_bytes() == ARTIFACT
    assert (got.reclaimed, got.fetched.resumed_from, got.fetched.transferred) == (
        True,
        1000,
        len(ARTIFACT) - 1000,
    )
    assert api.requests_to("GET", LINK_PATH)[0].headers["Satchel-Claim"] == CLAIM_ID  # read as its claimant
    assert api.requests_to("POST", LINK_PATH)[0].headers["Satchel-Claim"] == CLAIM_ID
    assert api.requests_to("GET", FILE_PATH)[0].headers["Range"] == "bytes=1000-"


def test_a_claim_whose_window_had_passed_is_a_new_claim(
    api: FakeApi, links: LinkClient, tmp_path: Path
) -> None:
    api.on("GET", LINK_PATH, Answer(200, shown(api, max_uses=2, uses=1, uses_left=1)))
    api.on("POST", LINK_PATH, Answer(200, {**claimed(api, use=2), "claim_id": "d" * 32}))
    part = part_path(tmp_path / "out.zip")
    part.write_bytes(ARTIFACT[:1000])
    save_claim(claim_path(part), saved_claim(api, datetime.now(UTC) - timedelta(seconds=1)))

    got = links.get(api.url + LINK_PATH, tmp_path / "out.zip")

    assert (got.reclaimed, got.use, got.fetched.resumed_from) == (False, 2, 1000)
    assert (tmp_path / "out.zip").read_bytes() == ARTIFACT


def test_a_used_up_link_still_resumes_for_its_claimant_within_the_window(
    api: FakeApi, links: LinkClient, tmp_path: Path
) -> None:
    """GET says 410 (no use left), but the claim kept beside the partial file is still open:
    its facts say what the file must be, and the claim with its id gets the rest."""
    api.on("GET", LINK_PATH, gone())
    api.on("POST", LINK_PATH, Answer(200, claimed(api)))
    part = part_path(tmp_path / "reports.zip")
    part.write_bytes(ARTIFACT[:5000])
    save_claim(claim_path(part), saved_claim(api, datetime.now(UTC) + timedelta(minutes=10)))

    got = links.get(api.url + LINK_PATH, tmp_path)  # a directory: the claim is found in it

    assert (tmp_path / "reports.zip").read_bytes() == ARTIFACT
    assert got.reclaimed
    assert api.requests_to("POST", LINK_PATH)[0].headers["Satchel-Claim"] == CLAIM_ID


def test_a_used_up_link_whose_claim_window_has_passed_is_refused(
    api: FakeApi, links: LinkClient, tmp_path: Path
) -> None:
    api.on("GET", LINK_PATH, gone())
    part = part_path(tmp_path / "reports.zip")
    part.write_bytes(ARTIFACT[:5000])
    save_claim(claim_path(part), saved_claim(api, datetime.now(UTC) - timedelta(seconds=1)))

    with pytest.raises(ApiError) as refused:
        links.get(api.url + LINK_PATH, tmp_path / "reports.zip")

    assert (refused.value.status, refused.value.code) == (410, "LinkGone")
    assert api.requests_to("POST", LINK_PATH) == []


def test_a_partial_file_that_is_not_the_links_is_refused_and_removed(
    api: FakeApi, links: LinkClient, tmp_path: Path
) -> None:
    serve_link(api)
    target = tmp_path / "out.zip"
    part = part_path(target)
    part.write_bytes(b"X" + ARTIFACT[1:1000])  # the first byte corrupted
    save_claim(claim_path(part), saved_claim(api, datetime.now(UTC) + timedelta(minutes=10)))

    with pytest.raises(VerificationError):
        links.get(api.url + LINK_PATH, target)

    assert not target.exists()
    assert not part.exists()
    assert load_claim(claim_path(part), api.url + LINK_PATH) is not None  # a retry spends no use


def test_a_broken_transfer_is_claimed_again_with_the_same_claim_id(
    api: FakeApi, links: LinkClient, tmp_path: Path
) -> None:
    serve_link(api)
    api.file_cuts = [100_000]

    got = links.get(api.url + LINK_PATH, tmp_path / "out.zip")

    assert (tmp_path / "out.zip").read_bytes() == ARTIFACT
    first, second = api.requests_to("POST", LINK_PATH)
    assert "Satchel-Claim" not in first.headers
    assert second.headers["Satchel-Claim"] == CLAIM_ID
    assert api.requests_to("GET", FILE_PATH)[1].headers["Range"] == "bytes=100000-"
    assert got.use == 1


def test_a_file_already_in_place_is_not_claimed(api: FakeApi, links: LinkClient, tmp_path: Path) -> None:
    serve_link(api)
    (tmp_path / "reports.zip").write_bytes(ARTIFACT)

    got = links.get(api.url + LINK_PATH, tmp_path)

    assert (got.use, got.fetched.transferred) == (0, 0)
    assert api.requests_to("POST", LINK_PATH) == []


def test_not_ready_says_when_to_retry_or_waits_at_that_pace(api: FakeApi, tmp_path: Path) -> None:
    not_ready = Answer(
        425,
        {"Code": "LinkNotReady", "Message": "building", "progress": {"files_done": 1, "files_total": 2}},
        {"Retry-After": "7"},
    )
    api.on("GET", LINK_PATH, not_ready, not_ready, Answer(200, shown(api)))
    api.on("POST", LINK_PATH, Answer(200, claimed(api)))
    slept: list[float] = []
    seen: list[LinkNotReady] = []
    with LinkClient(sleep=slept.append) as links:
        with pytest.raises(LinkNotReady) as refused:
            links.get(api.url + LINK_PATH, tmp_path)
        assert refused.value.retry_after == 7
        assert refused.value.body["progress"]["files_total"] == 2
        assert api.requests_to("POST", LINK_PATH) == []  # nothing claimed

        links.get(api.url + LINK_PATH, tmp_path, wait=True, on_wait=seen.append)

    assert slept == [7.0]
    assert len(seen) == 1
    assert (tmp_path / "reports.zip").read_bytes() == ARTIFACT


def test_waiting_gives_up_after_its_timeout(api: FakeApi, tmp_path: Path) -> None:
    api.on("GET", LINK_PATH, Answer(425, {"Code": "LinkNotReady", "Message": "b"}, {"Retry-After": "1"}))
    with LinkClient(sleep=lambda seconds: None) as links, pytest.raises(LinkNotReady):
        links.get(api.url + LINK_PATH, tmp_path, wait=True, timeout=0.05)


# -- the command --------------------------------------------------------------------------


@pytest.fixture
def keyless(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A shell with no API URL or key anywhere: a link needs none."""
    for name in ("SATCHEL_API_URL", "SATCHEL_API_KEY", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_command_saves_the_file_without_an_api_key(
    api: FakeApi, keyless: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    serve_link(api)

    assert satchel_cli.main(["--json", "get", api.url + LINK_PATH]) == 0

    out = json.loads(capsys.readouterr().out)
    assert (out["path"], out["sha256"], out["verified"], out["use"]) == ("reports.zip", SHA256, True, 1)
    assert (keyless / "reports.zip").read_bytes() == ARTIFACT
    assert all("Authorization" not in seen.headers for seen in api.seen)


@pytest.mark.parametrize(
    ("answer", "exit_code", "says"),
    [
        (Answer(404, {"Code": "LinkNotFound", "Message": "no such link"}), 3, "404 LinkNotFound"),
        (gone(), 3, "410 LinkGone"),
        (Answer(425, {"Code": "LinkNotReady", "Message": "b"}, {"Retry-After": "30"}), 3, "retry after 30 s"),
        (Answer(503, {"Code": "Unavailable", "Message": "down"}), 5, "the API failed"),
    ],
)
def test_the_command_says_why_it_got_nothing(
    api: FakeApi,
    keyless: Path,
    capsys: pytest.CaptureFixture[str],
    answer: Answer,
    exit_code: int,
    says: str,
) -> None:
    api.on("GET", LINK_PATH, answer)

    assert satchel_cli.main(["get", api.url + LINK_PATH]) == exit_code

    assert says in capsys.readouterr().err
    assert api.requests_to("POST", LINK_PATH) == []
    assert list(keyless.iterdir()) == []


def test_the_command_refuses_a_corrupt_partial_file(
    api: FakeApi, keyless: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    serve_link(api)
    part = keyless / "reports.zip.part"
    part.write_bytes(b"not the file")

    assert satchel_cli.main(["get", api.url + LINK_PATH]) == 6

    assert "does not match" in capsys.readouterr().err
    assert not (keyless / "reports.zip").exists()
    assert not part.exists()


def test_the_command_refuses_what_is_not_a_link(keyless: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert satchel_cli.main(["get", "reports.zip"]) == 2
    assert "not a link" in capsys.readouterr().err
