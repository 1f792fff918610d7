"""The client and the command, against a tiny scripted HTTP server on loopback.

The server answers each route as the test scripts it (the real API's shapes) and records
every request, so a test can check what went over the wire: the Idempotency-Key on a
retried create, the Range of a resumed fetch, no API key sent to a presigned file URL.
It also plays the file store: it serves an artifact, honours Range, and can cut a body
off half-way, as a dropped connection does. The real stack is driven in test_cli_e2e.py.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from satchel_client import (
    ApiError,
    Backoff,
    Download,
    DownloadFailed,
    NetworkError,
    SatchelClient,
    VerificationError,
    WaitTimeout,
)
from satchel_client import cli as satchel_cli
from satchel_client.config import UsageError, resolve
from satchel_client.transfer import Throttle, part_path

ARTIFACT = random.Random(7).randbytes(300_000)
SHA256 = hashlib.sha256(ARTIFACT).hexdigest()
FILE_PATH = "/store/artifact.zip"
FAST = Backoff(initial=0.01, factor=1.5, maximum=0.02)


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    cut_at: int | None = None  # file answers only: close the connection after this many body bytes


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeApi:
    def __init__(self) -> None:
        self.scripted: dict[tuple[str, str], list[Answer]] = {}
        self.fixed: dict[tuple[str, str], Answer] = {}
        self.seen: list[Seen] = []
        self.file_cuts: list[int] = []  # each file GET pops one: send only that many bytes
        self.ignore_range = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def on(self, method: str, path: str, *answers: Answer) -> None:
        """Answer with each of `answers` in turn, then with the last one for ever."""
        *first, last = answers
        self.scripted[(method, path)] = list(first)
        self.fixed[(method, path)] = last

    def requests_to(self, method: str, path: str) -> list[Seen]:
        return [seen for seen in self.seen if (seen.method, seen.path) == (method, path)]

    def answer(self, method: str, path: str) -> Answer:
        if (method, path) == ("GET", FILE_PATH):
            return Answer(200)  # the handler serves the file itself
        queue = self.scripted.get((method, path))
        if queue:
            return queue.pop(0)
        return self.fixed.get((method, path), Answer(404, {"Code": "NotScripted", "Message": path}))

    def __enter__(self) -> FakeApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet test output

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_DELETE(self) -> None:
            self._serve()

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            api.seen.append(
                Seen(self.command, self.path, dict(self.headers), json.loads(raw) if raw else None)
            )
            if (self.command, path) == ("GET", FILE_PATH):
                self._serve_file()
                return
            answer = api.answer(self.command, path)
            body = b"" if answer.body is None else json.dumps(answer.body).encode()
            self.send_response(answer.status)
            for name, value in {"Content-Type": "application/json", **answer.headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _serve_file(self) -> None:
            start = 0
            asked = self.headers.get("Range", "")
            if asked.startswith("bytes=") and not api.ignore_range:
                start = int(asked.removeprefix("bytes=").split("-")[0])
            body = ARTIFACT[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(ARTIFACT) - 1}/{len(ARTIFACT)}")
            self.send_header("Content-Length", str(len(body)))  # the whole rest, even when cut
            self.end_headers()
            cut = api.file_cuts.pop(0) if api.file_cuts else None
            self.wfile.write(body if cut is None else body[:cut])
            self.wfile.flush()
            self.close_connection = True

    return Handler


def download(download_id: str = "d1", state: str = "DONE", **changes: Any) -> dict[str, Any]:
    """A download as the API shows it."""
    done = state == "DONE"
    body: dict[str, Any] = {
        "id": download_id,
        "type": "zip",
        "params": {"keys": ["acme/a.csv"], "prefixes": [], "compression": "deflate"},
        "filename": "reports.zip",
        "state": state,
        "progress": {"files_done": 2, "files_total": 2, "bytes_done": 10, "bytes_total": 10},
        "artifact": {"size": len(ARTIFACT), "sha256": SHA256, "content_type": "application/zip"}
        if done
        else None,
        "error": None,
        "created_at": "2026-11-23T09:00:00.000Z",
        "finished_at": None,
        "expires_at": None,
        "url": f"/downloads/{download_id}/file" if done else None,
    }
    return {**body, **changes}


def serve_file(api: FakeApi, download_id: str = "d1") -> None:
    api.on("GET", f"/downloads/{download_id}", Answer(200, download(download_id)))
    file_url = {"url": api.url + FILE_PATH, "expires_at": "2026-11-23T10:00:00.000Z"}
    api.on("GET", f"/downloads/{download_id}/url", Answer(200, file_url))


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi() as fake:
        yield fake


@pytest.fixture
def client(api: FakeApi) -> Iterator[SatchelClient]:
    with SatchelClient(api.url, "the-key", timeout=(2.0, 5.0), retries=2) as satchel:
        yield satchel


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port nobody listens on: bound (so no one else takes it), never listening."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


# -- the routes -------------------------------------------------------------------------


def test_create_sends_its_body_and_one_idempotency_key_across_retries(
    api: FakeApi, client: SatchelClient
) -> None:
    unavailable = Answer(503, {"Code": "StartFailed", "Message": "try again"})
    api.on("POST", "/downloads", unavailable, Answer(202, download(state="PENDING")))

    created = client.create_zip(["acme/a.csv"], ["acme/photos/"], compression="store", filename="r.zip")

    assert created.id == "d1"
    assert created.state == "PENDING"
    first, second = api.requests_to("POST", "/downloads")
    assert first.body == {
        "type": "zip",
        "params": {"keys": ["acme/a.csv"], "prefixes": ["acme/photos/"], "compression": "store"},
        "filename": "r.zip",
    }
    assert first.headers["Authorization"] == "Bearer the-key"
    assert len(first.headers["Idempotency-Key"]) == 32
    # The retry is the same request: the service replays the first one's download.
    assert second.headers["Idempotency-Key"] == first.headers["Idempotency-Key"]
    assert second.body == first.body


def test_a_create_whose_key_is_in_flight_is_sent_again_after_retry_after(
    api: FakeApi, client: SatchelClient
) -> None:
    in_flight = Answer(
        409,
        {
            "type": "https://satchel.dev/problems/IdempotencyKeyInUse",
            "title": "Idempotency key in use",
            "status": 409,
            "detail": "still being processed",
            "Code": "IdempotencyKeyInUse",
            "Message": "still being processed",
        },
        {"Retry-After": "0", "Content-Type": "application/problem+json"},
    )
    api.on("POST", "/downloads", in_flight, Answer(202, download(state="PENDING")))
    assert client.create_zip(["acme/a.csv"], idempotency_key="mine").id == "d1"
    first, second = api.requests_to("POST", "/downloads")
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"] == "mine"


def test_a_problem_keeps_its_type_and_title(api: FakeApi, client: SatchelClient) -> None:
    body = {
        "type": "https://satchel.dev/problems/IdempotencyKeyReused",
        "title": "Idempotency key reused",
        "status": 422,
        "detail": "used with another body",
        "Code": "IdempotencyKeyReused",
        "Message": "used with another body",
    }
    api.on("POST", "/downloads", Answer(422, body, {"Content-Type": "application/problem+json"}))
    with pytest.raises(ApiError) as raised:
        client.create_zip(["acme/a.csv"], idempotency_key="mine")
    error = raised.value
    assert (error.status, error.code) == (422, "IdempotencyKeyReused")
    assert error.message == "used with another body"
    assert (error.type, error.title) == (body["type"], body["title"])
    assert len(api.requests_to("POST", "/downloads")) == 1  # a refusal is not sent again


def test_the_default_compression_is_the_services(api: FakeApi, client: SatchelClient) -> None:
    api.on("POST", "/downloads", Answer(202, download(state="PENDING")))
    client.create_zip(["acme/a.csv"], idempotency_key="mine")
    (seen,) = api.requests_to("POST", "/downloads")
    assert seen.body["params"] == {"keys": ["acme/a.csv"], "prefixes": []}
    assert seen.headers["Idempotency-Key"] == "mine"


def test_archive_options_are_sent_only_when_given(api: FakeApi, client: SatchelClient) -> None:
    api.on("POST", "/downloads", Answer(202, download(state="PENDING")))
    client.create_zip(["acme/a.csv"], archive_format="tar.gz", manifest=True, on_missing="skip")
    (seen,) = api.requests_to("POST", "/downloads")
    assert seen.body["params"] == {
        "keys": ["acme/a.csv"],
        "prefixes": [],
        "format": "tar.gz",
        "manifest": True,
        "on_missing": "skip",
    }


def test_a_link_is_not_requested_twice(api: FakeApi, client: SatchelClient) -> None:
    # No idempotency key on this POST: repeating it after a 503 could mint a second link.
    api.on("POST", "/downloads/d1/links", Answer(503, {"Code": "StartFailed", "Message": "later"}))
    with pytest.raises(ApiError) as raised:
        client.create_link("d1", max_uses=1)
    assert raised.value.status == 503
    assert len(api.requests_to("POST", "/downloads/d1/links")) == 1


def test_a_refusal_carries_status_code_and_message(api: FakeApi, client: SatchelClient) -> None:
    api.on("GET", "/downloads/nope", Answer(404, {"Code": "DownloadNotFound", "Message": "no download nope"}))
    with pytest.raises(ApiError) as raised:
        client.get("nope")
    assert (raised.value.status, raised.value.code, raised.value.message) == (
        404,
        "DownloadNotFound",
        "no download nope",
    )
    assert raised.value.is_refusal
    assert str(raised.value) == "404 DownloadNotFound: no download nope"


def test_over_quota_is_not_retried_and_says_when(api: FakeApi, client: SatchelClient) -> None:
    quota = Answer(429, {"Code": "QuotaExceeded", "Message": "10 active"}, {"Retry-After": "30"})
    api.on("POST", "/downloads", quota)
    with pytest.raises(ApiError) as raised:
        client.create_zip(["acme/a.csv"])
    assert raised.value.retry_after == 30
    assert len(api.requests_to("POST", "/downloads")) == 1


def test_ids_cannot_change_the_route(api: FakeApi, client: SatchelClient) -> None:
    api.on("GET", "/downloads/..%2Ftypes", Answer(200, download("../types")))
    assert client.get("../types").id == "../types"


def test_list_iterates_every_page(api: FakeApi, client: SatchelClient) -> None:
    first = Answer(200, {"items": [download("a"), download("b")], "next_cursor": "c1"})
    last = Answer(200, {"items": [download("c")], "next_cursor": None})
    api.on("GET", "/downloads", first, last)

    assert [item.id for item in client.list(state="DONE", page_size=2)] == ["a", "b", "c"]
    assert [seen.path for seen in api.seen] == [
        "/downloads?state=DONE&limit=2",
        "/downloads?state=DONE&limit=2&cursor=c1",
    ]


def test_cancel_a_running_download_or_delete_a_finished_ones_file(
    api: FakeApi, client: SatchelClient
) -> None:
    api.on("DELETE", "/downloads/run", Answer(202, download("run", "CANCELLED")))
    api.on("DELETE", "/downloads/done", Answer(204))
    cancelled = client.cancel("run")
    assert cancelled is not None
    assert cancelled.state == "CANCELLED"
    assert client.delete("done") is None


def test_urls_links_and_types(api: FakeApi, client: SatchelClient) -> None:
    serve_file(api)
    api.on("GET", "/downloads/d1/file", Answer(302, None, {"Location": api.url + FILE_PATH}))
    link = {"url": "http://x/links/t", "token": "t", "expires_at": "2026-11-24T00:00:00Z", "max_uses": 2}
    api.on("POST", "/downloads/d1/links", Answer(201, link))
    api.on("DELETE", "/links/t", Answer(204))
    kinds = {"items": [{"name": "zip", "description": "A zip.", "params": {}, "formats": ["zip"]}]}
    api.on("GET", "/types", Answer(200, kinds))

    assert client.file_url("d1").url == api.url + FILE_PATH
    assert client.file_redirect("d1") == api.url + FILE_PATH
    made = client.create_link("d1", max_uses=2, expires_in=600)
    assert (made.token, made.max_uses) == ("t", 2)
    assert api.requests_to("POST", "/downloads/d1/links")[0].body == {"expires_in": 600, "max_uses": 2}
    client.revoke_link("t")
    assert [kind.name for kind in client.types()] == ["zip"]


def test_no_answer_is_a_network_error_naming_the_reason(closed_port: int) -> None:
    unreachable = SatchelClient(f"http://127.0.0.1:{closed_port}", "k", retries=0)
    with unreachable, pytest.raises(NetworkError) as raised:
        unreachable.get("d1")
    assert "Connection refused" in str(raised.value)


# -- waiting ----------------------------------------------------------------------------


def test_wait_reports_each_poll_and_returns_the_done_download(api: FakeApi, client: SatchelClient) -> None:
    running = download(state="RUNNING", progress={"files_done": 1, "files_total": 2, "bytes_done": 5})
    api.on(
        "GET",
        "/downloads/d1",
        Answer(200, download(state="PENDING")),
        Answer(200, running),
        Answer(200, download()),
    )
    seen: list[Download] = []

    done = client.wait("d1", backoff=FAST, on_update=seen.append)

    assert done.state == "DONE"
    assert [item.state for item in seen] == ["PENDING", "RUNNING", "DONE"]
    assert seen[1].progress.files_done == 1


@pytest.mark.parametrize(
    ("state", "error", "expected"),
    [
        ("FAILED", {"code": "SourceMissing", "message": "no acme/a.csv"}, "ended FAILED: SourceMissing"),
        ("CANCELLED", None, "ended CANCELLED"),
        ("EXPIRED", None, "ended EXPIRED"),
    ],
)
def test_wait_raises_naming_the_final_state_and_code(
    api: FakeApi, client: SatchelClient, state: str, error: dict[str, str] | None, expected: str
) -> None:
    api.on("GET", "/downloads/d1", Answer(200, download(state=state, error=error)))
    with pytest.raises(DownloadFailed) as raised:
        client.wait("d1", backoff=FAST)
    assert raised.value.state == state
    assert raised.value.code == (error["code"] if error else None)
    assert expected in str(raised.value)


def test_wait_gives_up_after_its_timeout(api: FakeApi, client: SatchelClient) -> None:
    api.on("GET", "/downloads/d1", Answer(200, download(state="RUNNING")))
    with pytest.raises(WaitTimeout) as raised:
        client.wait("d1", timeout=0.1, backoff=FAST)
    assert raised.value.download.state == "RUNNING"
    assert "still RUNNING after 0.1 s" in str(raised.value)


def test_backoff_grows_to_its_maximum() -> None:
    delays = Backoff(initial=0.25, factor=2, maximum=1).delays()
    assert [next(delays) for _ in range(5)] == [0.25, 0.5, 1, 1, 1]


# -- fetching ---------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.begun: list[tuple[int, int]] = []
        self.retries: list[int] = []
        self.done = 0

    def begin(self, offset: int, total: int) -> None:
        self.begun.append((offset, total))

    def advance(self, done: int) -> None:
        self.done = done

    def retry(self, offset: int, reason: str) -> None:
        self.retries.append(offset)


def test_fetch_verifies_and_only_then_puts_the_file_in_place(
    api: FakeApi, client: SatchelClient, tmp_path: Path
) -> None:
    serve_file(api)
    recorder = Recorder()
    result = client.fetch("d1", tmp_path / "out.zip", observer=recorder)

    assert (tmp_path / "out.zip").read_bytes() == ARTIFACT
    assert not part_path(tmp_path / "out.zip").exists()
    assert (result.size, result.sha256, result.resumed_from, result.transferred) == (
        len(ARTIFACT),
        SHA256,
        0,
        len(ARTIFACT),
    )
    assert recorder.begun == [(0, len(ARTIFACT))]
    assert recorder.done == len(ARTIFACT)
    (file_request,) = api.requests_to("GET", FILE_PATH)
    assert "Authorization" not in file_request.headers  # the key never goes to the file store
    assert "Range" not in file_request.headers


def test_fetch_into_a_directory_uses_the_downloads_filename(
    api: FakeApi, client: SatchelClient, tmp_path: Path
) -> None:
    serve_file(api)
    assert client.fetch("d1", tmp_path).path == tmp_path / "reports.zip"


def test_a_broken_transfer_resumes_with_a_range_and_a_fresh_url(
    api: FakeApi, client: SatchelClient, tmp_path: Path
) -> None:
    serve_file(api)
    api.file_cuts = [100_000]
    recorder = Recorder()

    result = client.fetch("d1", tmp_path / "out.zip", observer=recorder)

    assert (tmp_path / "out.zip").read_bytes() == ARTIFACT
    assert recorder.retries == [100_000]
    first, second = api.requests_to("GET", FILE_PATH)
    assert "Range" not in first.headers
    assert second.headers["Range"] == "bytes=100000-"
    assert len(api.requests_to("GET", "/downloads/d1/url")) == 2  # presigned URLs expire: a new one
    assert result.transferred == len(ARTIFACT)


def test_a_fetch_continues_from_the_bytes_an_earlier_one_left(
    api: FakeApi, client: SatchelClient, tmp_path: Path
) -> None:
    serve_file(api)
    target = tmp_path / "out.zip"
    part_path(target).write_bytes(ARTIFACT[:123_456])
    recorder = Recorder()

    result = client.fetch("d1", target, observer=recorder)

    assert target.read_bytes() == ARTIFACT
    assert (result.resumed_from, result.transferred) == (123_456, len(ARTIFACT) - 123_456)
    assert recorder.begun == [(123_456, len(ARTIFACT))]
    assert api.requests_to("GET", FILE_PATH)[0].headers["Range"] == "bytes=123456-"


def test_a_partial_file_that_does_not_match_is_refused_and_removed(
    api: FakeApi, client: SatchelClient, tmp_path: Path
) -> None:
    serve_file(api)
    target = tmp_path / "out.zip"
    part_path(target).write_bytes(b"\0" * 1000)  # the right length of the wrong bytes

    with pytest.raises(VerificationError) as raised:
        client.fetch("d1", target)

    assert raised.value.expected == SHA256
    assert not target.exists()
    assert not part_path(target).exists()  # the next fetch starts from byte 0
    assert client.fetch("d1", target).transferred == len(ARTIFACT)
    assert target.read_bytes() == ARTIFACT


def test_a_part_longer_than_the_file_is_refused_without_a_request(
    api: FakeApi, client: SatchelClient, tmp_path: Path
) -> None:
    serve_file(api)
    target = tmp_path / "out.zip"
    part_path(target).write_bytes(ARTIFACT + b"more")
    with pytest.raises(VerificationError):
        client.fetch("d1", target)
    assert api.requests_to("GET", FILE_PATH) == []


def test_a_server_that_ignores_the_range_gets_the_file_from_the_start(
    api: FakeApi, client: SatchelClient, tmp_path: Path
) -> None:
    serve_file(api)
    api.ignore_range = True
    target = tmp_path / "out.zip"
    part_path(target).write_bytes(ARTIFACT[:5000])

    result = client.fetch("d1", target)

    assert target.read_bytes() == ARTIFACT
    assert (result.resumed_from, result.transferred) == (0, len(ARTIFACT))


def test_a_file_already_in_place_is_not_fetched_again(
    api: FakeApi, client: SatchelClient, tmp_path: Path
) -> None:
    serve_file(api)
    (tmp_path / "out.zip").write_bytes(ARTIFACT)
    assert client.fetch("d1", tmp_path / "out.zip").transferred == 0
    assert api.requests_to("GET", FILE_PATH) == []


def test_fetching_a_download_without_a_file(api: FakeApi, client: SatchelClient, tmp_path: Path) -> None:
    api.on("GET", "/downloads/gone", Answer(200, download("gone", "CANCELLED")))
    with pytest.raises(DownloadFailed):
        client.fetch("gone", tmp_path / "out.zip")
    api.on("GET", "/downloads/soon", Answer(200, download("soon", "RUNNING")))
    not_ready = {"Code": "DownloadNotReady", "Message": "download state is not DONE"}
    api.on("GET", "/downloads/soon/url", Answer(409, not_ready))
    with pytest.raises(ApiError) as raised:
        client.fetch("soon", tmp_path / "out.zip")
    assert raised.value.code == "DownloadNotReady"


def test_throttle_keeps_to_its_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    throttle = Throttle(1000, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        throttle.pace(500)
    assert now[0] == pytest.approx(2.0)  # 2000 bytes at 1000 bytes a second
    assert throttle.chunk_bytes == 1024


# -- where the command connects ---------------------------------------------------------


def _state_file(directory: Path, api_url: str = "http://127.0.0.1:8000") -> None:
    users = {"alice": {"api_key": "alice-key"}, "bob": {"api_key": "bob-key"}}
    (directory / ".satchel-local.json").write_text(json.dumps({"api_url": api_url, "users": users}))


def test_connection_from_flags_then_environment(tmp_path: Path) -> None:
    environ = {"SATCHEL_API_URL": "http://env", "SATCHEL_API_KEY": "env-key"}
    assert (
        resolve(api_url=None, api_key=None, as_user=None, environ=environ, cwd=tmp_path).api_key == "env-key"
    )
    flags = resolve(api_url="http://flag", api_key="flag-key", as_user=None, environ=environ, cwd=tmp_path)
    assert (flags.api_url, flags.api_key) == ("http://flag", "flag-key")


def test_connection_as_a_local_user_from_the_state_file_above(tmp_path: Path) -> None:
    _state_file(tmp_path)
    (tmp_path / "sub" / "dir").mkdir(parents=True)
    found = resolve(api_url=None, api_key=None, as_user="bob", environ={}, cwd=tmp_path / "sub" / "dir")
    assert (found.api_url, found.api_key) == ("http://127.0.0.1:8000", "bob-key")


def test_as_a_local_user_of_an_oidc_stack_is_a_token_the_demo_issuer_signs_for_them(tmp_path: Path) -> None:
    """On a stack started with `make run AUTH=oidc` the API takes no key: `--as bob` asks the
    stack's demo issuer (the real one, on loopback) for bob's token."""
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    from satchel_local.issuer import TOKEN_PATH, RunningIssuer

    running = RunningIssuer.start("127.0.0.1", 0)
    try:
        issuer = running.issuer
        _state_file(tmp_path)
        state = json.loads((tmp_path / ".satchel-local.json").read_text())
        state |= {"auth_mode": "oidc", "oidc": {"token_url": f"{issuer.url}{TOKEN_PATH}"}}
        (tmp_path / ".satchel-local.json").write_text(json.dumps(state))
        found = resolve(api_url=None, api_key=None, as_user="bob", environ={}, cwd=tmp_path)
        assert (found.api_url, found.api_key) == ("http://127.0.0.1:8000", None)
        assert found.token is not None
        claims = jwt.decode(found.token, RSAKey.import_key(issuer.jwks()["keys"][0])).claims
        assert (claims["sub"], claims["iss"]) == ("bob", issuer.url)
    finally:
        running.stop()
    with pytest.raises(UsageError) as raised:  # the stack has stopped: say so, and what to do
        resolve(api_url=None, api_key=None, as_user="bob", environ={}, cwd=tmp_path)
    assert "gave no token" in str(raised.value)
    assert "make run AUTH=oidc" in str(raised.value)


@pytest.mark.parametrize(
    ("as_user", "api_key", "state_file", "says"),
    [
        (None, None, False, "no API URL (--api-url or $SATCHEL_API_URL) and no API key"),
        ("alice", None, False, "`make run`"),
        ("zed", None, True, "no such user in"),
        ("alice", "k", True, "give only one of them"),
    ],
)
def test_connection_problems_say_what_to_do(
    tmp_path: Path, as_user: str | None, api_key: str | None, state_file: bool, says: str
) -> None:
    if state_file:
        _state_file(tmp_path)
    with pytest.raises(UsageError) as raised:
        resolve(api_url=None, api_key=api_key, as_user=as_user, environ={}, cwd=tmp_path)
    assert says in str(raised.value)


# -- the command: exit codes, output, progress ------------------------------------------


@pytest.fixture
def shell(api: FakeApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeApi:
    """The command's environment: the fake API in $SATCHEL_API_URL, run in an empty directory."""
    monkeypatch.setenv("SATCHEL_API_URL", api.url)
    monkeypatch.setenv("SATCHEL_API_KEY", "the-key")
    monkeypatch.chdir(tmp_path)
    for name in ("TTY_COMPATIBLE", "TTY_INTERACTIVE", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    return api


def test_zip_wait_and_fetch_with_json_output(shell: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    shell.on("POST", "/downloads", Answer(202, download(state="PENDING")))
    serve_file(shell)

    assert satchel_cli.main(["--json", "zip", "acme/a.csv", "--store", "--wait", "-o", "out.zip"]) == 0

    out = json.loads(capsys.readouterr().out)
    assert out["state"] == "DONE"
    assert out["file"] == {
        "path": "out.zip",
        "size": len(ARTIFACT),
        "sha256": SHA256,
        "verified": True,
        "resumed_from": 0,
        "transferred": len(ARTIFACT),
    }
    assert Path("out.zip").read_bytes() == ARTIFACT
    assert shell.requests_to("POST", "/downloads")[0].body["params"]["compression"] == "store"


def test_the_archive_options_of_the_zip_command(shell: FakeApi) -> None:
    shell.on("POST", "/downloads", Answer(202, download(state="PENDING")))
    assert satchel_cli.main(["zip", "acme/a.csv", "--format", "tar", "--manifest", "--skip-missing"]) == 0
    assert satchel_cli.main(["zip", "acme/a.csv"]) == 0
    given, defaults = (request.body["params"] for request in shell.requests_to("POST", "/downloads"))
    assert given == {
        "keys": ["acme/a.csv"],
        "prefixes": [],
        "format": "tar",
        "manifest": True,
        "on_missing": "skip",
    }
    assert defaults == {"keys": ["acme/a.csv"], "prefixes": []}  # the service's defaults


def test_status_names_the_sources_left_out(shell: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    shell.on("GET", "/downloads/d1", Answer(200, download(skipped=["acme/x.csv", "acme/y.csv"])))
    assert satchel_cli.main(["status", "d1"]) == 0
    assert "skipped   2 missing (see MISSING.txt): acme/x.csv, acme/y.csv" in capsys.readouterr().out


def test_plain_output_is_for_people_and_pipes(shell: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    shell.on("POST", "/downloads", Answer(202, download(state="PENDING")))
    assert satchel_cli.main(["zip", "acme/a.csv"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "d1\n"  # ID=$(satchel zip ...) works
    assert "created download d1" in captured.err
    assert "━" not in captured.err  # stderr is not a terminal: no bars


def test_progress_bars_on_a_terminal(
    shell: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    monkeypatch.setenv("COLUMNS", "120")
    running = download(state="RUNNING", progress={"files_done": 1, "files_total": 2, "bytes_done": 5})
    serve_file(shell)
    # After serve_file, which answers DONE: first RUNNING, so that the command waits.
    shell.on("GET", "/downloads/d1", Answer(200, running), Answer(200, download()))

    assert satchel_cli.main(["fetch", "d1", "-o", "out.zip"]) == 0

    err = capsys.readouterr().err
    assert "2/2 files" in err  # the build's bar
    assert "293.0/293.0 KiB" in err  # the fetch's bar
    assert "━" in err


def test_list_cancel_link_and_types(shell: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    shell.on("GET", "/downloads", Answer(200, {"items": [download("a"), download("b")], "next_cursor": None}))
    assert satchel_cli.main(["list", "--state", "done", "--limit", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["a", "DONE"]
    assert shell.seen[-1].path == "/downloads?state=DONE"

    shell.on("DELETE", "/downloads/a", Answer(204))
    assert satchel_cli.main(["--json", "cancel", "a"]) == 0
    assert json.loads(capsys.readouterr().out) == {"id": "a", "action": "deleted"}

    link = {"url": "http://x/links/t", "token": "t", "expires_at": "2026-11-24T00:00:00Z", "max_uses": 1}
    shell.on("POST", "/downloads/a/links", Answer(201, link))
    assert satchel_cli.main(["link", "a", "--max-uses", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "http://x/links/t\n"
    assert "usable once" in captured.err

    kinds = {"items": [{"name": "zip", "description": "A zip.", "params": {"properties": {"keys": {}}}}]}
    shell.on("GET", "/types", Answer(200, kinds))
    assert satchel_cli.main(["types"]) == 0
    assert "zip  A zip.\n  params: keys" in capsys.readouterr().out


def test_exit_codes(
    shell: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    shell.on(
        "GET", "/downloads/nope", Answer(404, {"Code": "DownloadNotFound", "Message": "no download nope"})
    )
    failed = download("bad", "FAILED", error={"code": "SourceMissing", "message": "no acme/a.csv"})
    shell.on("GET", "/downloads/bad", Answer(200, failed))
    shell.on("GET", "/downloads/slow", Answer(200, download("slow", "RUNNING")))
    serve_file(shell)
    Path("out.zip.part").write_bytes(b"x" * 10)

    with pytest.raises(SystemExit) as usage:
        satchel_cli.main(["zip", "--limit-rate", "fast"])
    assert usage.value.code == satchel_cli.Exit.USAGE
    assert satchel_cli.main(["zip"]) == satchel_cli.Exit.USAGE
    assert satchel_cli.main(["status", "nope"]) == satchel_cli.Exit.REFUSED
    assert satchel_cli.main(["wait", "bad"]) == satchel_cli.Exit.ENDED
    unreachable = ["--api-url", f"http://127.0.0.1:{closed_port}", "status", "d1"]
    assert satchel_cli.main(unreachable) == satchel_cli.Exit.UNAVAILABLE
    assert satchel_cli.main(["fetch", "d1", "-o", "out.zip"]) == satchel_cli.Exit.CORRUPT
    assert satchel_cli.main(["wait", "slow", "--timeout", "0.3"]) == satchel_cli.Exit.TIMEOUT
    monkeypatch.delenv("SATCHEL_API_KEY")
    assert satchel_cli.main(["status", "d1"]) == satchel_cli.Exit.USAGE

    err = capsys.readouterr().err
    assert "refused: 404 DownloadNotFound: no download nope\n  check the id: `satchel list`" in err
    assert "download bad ended FAILED: SourceMissing: no acme/a.csv" in err
    assert "Connection refused" in err
    assert "run the same command again to fetch the file from the start" in err
    assert "`satchel wait slow` waits again" in err


def test_a_json_error_says_what_and_why(shell: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    failed = download("bad", "FAILED", error={"code": "SourceMissing", "message": "no acme/a.csv"})
    shell.on("GET", "/downloads/bad", Answer(200, failed))
    assert satchel_cli.main(["--json", "wait", "bad"]) == 4
    error = json.loads(capsys.readouterr().out)["error"]
    assert (error["exit_code"], error["state"], error["code"]) == (4, "FAILED", "SourceMissing")
    assert error["download"]["id"] == "bad"


def test_an_interrupted_fetch_says_how_to_resume(
    shell: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_file(shell)
    Path("out.zip.part").write_bytes(ARTIFACT[:777])

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(SatchelClient, "fetch", interrupted)
    assert satchel_cli.main(["fetch", "d1", "-o", "out.zip"]) == satchel_cli.Exit.INTERRUPTED
    err = capsys.readouterr().err
    assert "777 bytes are kept in out.zip.part: run the same command again to resume" in err


def test_an_output_that_cannot_be_written(shell: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    serve_file(shell)
    assert satchel_cli.main(["fetch", "d1", "-o", "no/such/dir/out.zip"]) == satchel_cli.Exit.ERROR
    assert "cannot write no/such/dir/out.zip.part: No such file or directory" in capsys.readouterr().err


def test_server_failures_are_unavailable_not_refused() -> None:
    failure = satchel_cli.classify(ApiError(503, "StartFailed", "later"))
    assert failure.exit_code == satchel_cli.Exit.UNAVAILABLE
    refusal = satchel_cli.classify(ApiError(429, "QuotaExceeded", "10 active", retry_after=30))
    assert refusal.exit_code == satchel_cli.Exit.REFUSED
    assert "retry in 30 s" in refusal.hint
