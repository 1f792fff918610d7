"""Getting a file through a shared link: read it, claim it, save it, resume it, verify it.

A link needs no API key (its token is the capability) and is read and claimed in two steps:
`GET` shows the file (name, size, sha256, uses left) and never spends a use; `POST` is the
claim, which spends one and answers a short-lived URL of the file plus a claim id. Within
the claim window the same claimant may claim again with that id (header `Satchel-Claim`)
without spending another use: that is how an interrupted transfer resumes.

So the claim id is kept beside the partial file (`FILE.part.claim`, with the link and the
file's size and sha256), and the next `get` of the same link into the same place presents it
and asks only for the missing bytes. The file appears at `FILE` only once its sha256 is the
link's; the claim file goes with the partial file once it is complete.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import requests

from satchel_client.client import (
    _BROKEN_TRANSFER,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    FETCH_ATTEMPTS,
    Timeout,
    _origin,
    _retry,
    _session,
)
from satchel_client.errors import ApiError, NetworkError, SatchelError, VerificationError, retry_after
from satchel_client.models import Claim, FetchResult, SharedFile
from satchel_client.transfer import (
    PART_SUFFIX,
    FetchObserver,
    SilentObserver,
    Sink,
    Throttle,
    is_complete,
    part_path,
    stream_rest,
)

CLAIM_HEADER = "Satchel-Claim"
CLAIM_SUFFIX = ".claim"
JSON = "application/json"
NOT_READY = 425
DEFAULT_NAME = "download"
# While waiting for a link's file to be built: never poll faster or slower than this,
# whatever Retry-After says.
MIN_POLL_SECONDS, MAX_POLL_SECONDS = 1.0, 30.0
_LINK_PATH = re.compile(r"/links/[^/?#]+/?")


class LinkNotReady(SatchelError):
    """The link's file is still being built (425); `retry_after` seconds is the server's advice."""

    def __init__(self, url: str, retry_after: int | None, body: dict[str, Any], waited: float = 0.0) -> None:
        self.url, self.retry_after, self.body, self.waited = url, retry_after, body, waited
        after = f"; retry after {retry_after} s" if retry_after else ""
        still = f" after waiting {waited:.0f} s" if waited else ""
        super().__init__(f"the file of {url} is not ready yet{still}{after}")


def link_url(text: str) -> str:
    """The link as given, checked: an http(s) URL whose path is /links/TOKEN (maybe under a stage)."""
    parsed = urlsplit(text.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"not a link (an http:// or https:// URL ending in /links/TOKEN): {text!r}")
    match = _LINK_PATH.search(parsed.path)
    if match is None or match.end() != len(parsed.path):
        raise ValueError(f"not a Satchel link (its path must end in /links/TOKEN): {text!r}")
    return text.strip().rstrip("/")


def target_for(shared: SharedFile, path: str | os.PathLike[str] | None) -> Path:
    """Where a get saves: `path`; inside it if it is a directory; by default the link's file name,
    here. Only the last part of the server's name counts: it must not choose the directory."""
    name = Path(shared.filename).name
    if name in ("", ".", ".."):
        name = DEFAULT_NAME
    if path is None:
        return Path(name)
    target = Path(path)
    return target / name if target.is_dir() else target


def claim_path(part: Path) -> Path:
    return part.with_name(part.name + CLAIM_SUFFIX)


@dataclass(frozen=True)
class SavedClaim:
    """What is kept beside a partial file: whose claim it is, and the file it must become."""

    link: str
    claim_id: str
    claim_expires_at: str | None
    filename: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "link": self.link,
            "claim_id": self.claim_id,
            "claim_expires_at": self.claim_expires_at,
            "file": {"filename": self.filename, "size": self.size, "sha256": self.sha256},
        }

    @classmethod
    def from_json(cls, data: Any) -> SavedClaim | None:
        """None for anything that is not a claim file this client wrote."""
        try:
            file = data["file"]
            return cls(
                link=str(data["link"]),
                claim_id=str(data["claim_id"]),
                claim_expires_at=None if data["claim_expires_at"] is None else str(data["claim_expires_at"]),
                filename=str(file["filename"]),
                size=int(file["size"]),
                sha256=str(file["sha256"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def open_at(self, now: datetime) -> bool:
        """Whether the claim window is still open at `now` (the server decides; this is for messages)."""
        until = parse_time(self.claim_expires_at)
        return until is not None and now < until

    def shared_file(self) -> SharedFile:
        """The file's facts as saved: used when the link itself no longer shows them (used up)."""
        return SharedFile(
            url=self.link,
            filename=self.filename,
            size=self.size,
            sha256=self.sha256,
            content_type="",
            expires_at=None,
            max_uses=0,
            uses=0,
            uses_left=0,
            claim_window_seconds=0,
            claim_url=self.link,
        )


def load_claim(path: Path, link: str) -> SavedClaim | None:
    """The claim kept at `path` for this link; None if there is none, or it is another link's."""
    try:
        saved = SavedClaim.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None
    return saved if saved is not None and saved.link == link else None


def save_claim(path: Path, saved: SavedClaim) -> None:
    # Written whole and renamed into place; readable by its owner only: the claim id is a
    # credential (it fetches the file again, within its window, without spending a use).
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(saved.to_json(), file, indent=2)
        file.write("\n")
    os.replace(partial, path)


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 time as the API writes it (`2026-11-23T09:00:00.000Z`), aware; None if not one."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def poll_delay(retry_after: int | None, remaining: float | None) -> float:
    """How long to wait before asking a not-ready link again: its Retry-After, within bounds."""
    delay = min(max(float(retry_after or MIN_POLL_SECONDS), MIN_POLL_SECONDS), MAX_POLL_SECONDS)
    return delay if remaining is None else max(min(delay, remaining), 0.0)


@dataclass(frozen=True)
class GetResult:
    """A link's file, saved and verified; `use` is the use this get claimed (0: none was needed)."""

    link: str
    fetched: FetchResult
    use: int
    reclaimed: bool  # the saved claim id was presented: a resume within the window

    def to_json(self) -> dict[str, Any]:
        return {"link": self.link, **self.fetched.to_json(), "use": self.use, "reclaimed": self.reclaimed}


class LinkClient:
    """Reads, claims and saves shared links; no API key: the link is the credential."""

    def __init__(
        self,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.timeout = timeout
        self._clock, self._sleep = clock, sleep
        # Reading is safe to repeat; a claim spends a use, so its POST is never repeated
        # after it may have arrived (connection errors before sending still are).
        self._http = _session(_retry(retries, retry_unsafe=False))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LinkClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # -- the two requests -----------------------------------------------------------------

    def inspect(self, url: str, claim_id: str | None = None) -> SharedFile:
        """GET the link as JSON: what it holds. Spends nothing. Raises `LinkNotReady` (425) and
        `ApiError` (404 LinkNotFound, 410 LinkGone)."""
        response = self._send("GET", url, claim_id)
        if response.status_code == NOT_READY:
            raise LinkNotReady(url, retry_after(response), _body(response))
        if response.status_code != 200:
            raise ApiError.from_response(response)
        return SharedFile.from_api(url, _json_of(response))

    def claim(self, url: str, claim_id: str | None = None) -> Claim:
        """POST the link as JSON: a URL of the file. Spends a use, unless `claim_id` is this
        claimant's and its window is open."""
        response = self._send("POST", url, claim_id)
        if response.status_code == NOT_READY:
            raise LinkNotReady(url, retry_after(response), _body(response))
        if response.status_code != 200:
            raise ApiError.from_response(response)
        return Claim.from_api(_json_of(response))

    def wait_ready(
        self,
        url: str,
        *,
        timeout: float | None = None,
        claim_id: str | None = None,
        on_wait: Callable[[LinkNotReady], None] | None = None,
    ) -> SharedFile:
        """Ask until the link's file is built, at the pace its Retry-After sets; `LinkNotReady`
        after `timeout` seconds (None: no limit)."""
        started = time.monotonic()
        while True:
            try:
                return self.inspect(url, claim_id)
            except LinkNotReady as not_ready:
                waited = time.monotonic() - started
                remaining = None if timeout is None else timeout - waited
                if remaining is not None and remaining <= 0:
                    raise LinkNotReady(url, not_ready.retry_after, not_ready.body, waited) from None
                if on_wait is not None:
                    on_wait(not_ready)
                self._sleep(poll_delay(not_ready.retry_after, remaining))

    # -- the whole get --------------------------------------------------------------------

    def get(
        self,
        link: str,
        path: str | os.PathLike[str] | None = None,
        *,
        wait: bool = False,
        timeout: float | None = None,
        observer: FetchObserver | None = None,
        rate_limit: int | None = None,
        attempts: int = FETCH_ATTEMPTS,
        on_wait: Callable[[LinkNotReady], None] | None = None,
        on_file: Callable[[SharedFile], None] | None = None,
    ) -> GetResult:
        """Save the link's file at `path` (default: its file name, here) and verify its sha256.

        A `.part` left by an interrupted get of the same link is continued with a Range request,
        claimed again with the claim id kept beside it (no use spent within the claim window).
        A file already at `path` with the link's sha256 is kept as is, and nothing is claimed.
        Raises `VerificationError` (the partial bytes removed, the claim kept for a retry),
        `LinkNotReady`, `ApiError` (404, 410) and `NetworkError`.
        """
        observer = observer or SilentObserver()
        url = link_url(link)
        shared, saved = self._look(url, path, wait=wait, timeout=timeout, on_wait=on_wait)
        if on_file is not None:
            on_file(shared)
        target = target_for(shared, path)
        if is_complete(target, shared.size, shared.sha256):
            fetched = FetchResult(target, shared.size, shared.sha256, resumed_from=0, transferred=0)
            return GetResult(url, fetched, use=0, reclaimed=False)
        part = part_path(target)
        kept_claim = claim_path(part)
        saved = load_claim(kept_claim, url) or saved
        if saved is not None and (saved.size, saved.sha256) != (shared.size, shared.sha256):
            saved = None  # a claim of another file once behind this link: it does not resume
        claim = self._claim(url, shared, kept_claim, saved)
        with Sink(part) as sink:
            observer.begin(sink.size, shared.size)
            if sink.size < shared.size:
                self._transfer(
                    shared.claim_url, claim, sink, shared.size, observer, Throttle(rate_limit), attempts
                )
            size, sha256, kept = sink.size, sink.hexdigest(), sink.kept
        if (size, sha256) != (shared.size, shared.sha256):
            # The claim file stays: within its window, the next get starts over without a use.
            part.unlink()
            raise VerificationError(part, shared.sha256, sha256, size, shared.size)
        os.replace(part, target)
        kept_claim.unlink(missing_ok=True)
        fetched = FetchResult(target, size, sha256, resumed_from=kept, transferred=size - kept)
        # A re-claim keeps its claim id; a claim whose window had passed was a new one.
        reclaimed = saved is not None and claim.claim_id in ("", saved.claim_id)
        return GetResult(url, fetched, use=claim.use, reclaimed=reclaimed)

    def _look(
        self,
        url: str,
        path: str | os.PathLike[str] | None,
        *,
        wait: bool,
        timeout: float | None,
        on_wait: Callable[[LinkNotReady], None] | None,
    ) -> tuple[SharedFile, SavedClaim | None]:
        """The link's file, as the link shows it to this claimant (a claim kept from an earlier
        get is presented: within its window the link shows the file even with no use left);
        or, should the link still refuse while that claim is open, as the claim saved it."""
        kept = self._kept_claim(url, path)
        claim_id = kept.claim_id if kept else None
        try:
            if wait:
                return self.wait_ready(url, timeout=timeout, claim_id=claim_id, on_wait=on_wait), kept
            return self.inspect(url, claim_id), kept
        except ApiError as refused:
            if refused.status != 410 or kept is None or not kept.open_at(self._clock()):
                raise
            return kept.shared_file(), kept

    def _kept_claim(self, url: str, path: str | os.PathLike[str] | None) -> SavedClaim | None:
        """A claim of this link kept by an earlier get into the same place, if there is one."""
        # Before the link is read its file's name is unknown: look beside the file asked
        # for, then for any claim of this link in the directory the file goes to.
        target = Path(path) if path is not None else Path.cwd()
        directory = target if target.is_dir() else target.parent
        candidates = [] if target.is_dir() else [claim_path(part_path(target))]
        candidates += sorted(directory.glob(f"*{PART_SUFFIX}{CLAIM_SUFFIX}"))
        for candidate in candidates:
            saved = load_claim(candidate, url)
            if saved is not None:
                return saved
        return None

    def _claim(self, url: str, shared: SharedFile, kept: Path, saved: SavedClaim | None) -> Claim:
        claim = self.claim(shared.claim_url, saved.claim_id if saved else None)
        # Kept before a byte is transferred: an interruption from here on resumes with it.
        save_claim(
            kept,
            SavedClaim(
                link=url,
                claim_id=claim.claim_id or (saved.claim_id if saved else ""),
                claim_expires_at=claim.claim_expires_at,
                filename=shared.filename,
                size=shared.size,
                sha256=shared.sha256,
            ),
        )
        return claim

    def _transfer(
        self,
        claim_url: str,
        claim: Claim,
        sink: Sink,
        total: int,
        observer: FetchObserver,
        throttle: Throttle,
        attempts: int,
    ) -> None:
        attempts = max(attempts, 1)
        file_url = claim.url
        for attempt in range(1, attempts + 1):
            try:
                stream_rest(self._http, file_url, sink, total, observer, throttle, self.timeout)
            except _BROKEN_TRANSFER as error:
                broken = NetworkError.from_exception(_origin(file_url), error)
                if attempt == attempts:
                    raise broken from error
                observer.retry(sink.size, broken.reason)
                self._sleep(0.5 * attempt)
                # A fresh URL, claimed again with this claim's id: no further use is spent.
                file_url = self.claim(claim_url, claim.claim_id).url
            if sink.size >= total:
                return
        raise NetworkError(
            _origin(file_url),
            f"the transfer stopped at byte {sink.size} of {total} after {attempts} attempts",
        )

    def _send(self, method: str, url: str, claim_id: str | None) -> requests.Response:
        headers = {"Accept": JSON}
        if claim_id:
            headers[CLAIM_HEADER] = claim_id
        try:
            return self._http.request(
                method, url, headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as error:
            raise NetworkError.from_exception(_origin(url), error) from error


def _body(response: requests.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _json_of(response: requests.Response) -> dict[str, Any]:
    data = _body(response)
    if not data:
        raise SatchelError(
            f"{response.request.method} {response.url} answered {response.status_code} without JSON"
        )
    return data
