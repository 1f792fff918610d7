"""`SatchelClient`: every route of the Satchel API, plus waiting and resumable fetching."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3.util import Retry

from satchel_client.auth import BearerAuth
from satchel_client.errors import (
    ApiError,
    DownloadFailed,
    NetworkError,
    SatchelError,
    VerificationError,
    WaitTimeout,
)
from satchel_client.models import DONE, Artifact, Download, DownloadType, FetchResult, FileUrl, Link, Page
from satchel_client.transfer import (
    FetchObserver,
    SilentObserver,
    Sink,
    Throttle,
    is_complete,
    part_path,
    stream_rest,
    target_path,
)

Compression = Literal["store", "deflate"]
ArchiveFormat = Literal["zip", "tar", "tar.gz"]
OnMissing = Literal["fail", "skip"]
Timeout = float | tuple[float, float]

DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 30.0)  # (connect, read) seconds
DEFAULT_RETRIES = 3
# Worth another try: the gateway or a dependency was briefly unavailable. 429 is not here:
# it means "over your quota", which retrying does not fix within a request's lifetime.
RETRY_STATUSES = frozenset({502, 503, 504})
# A create whose key is still in flight (409 IdempotencyKeyInUse) is sent again this many
# times, waiting as its Retry-After says (at most this long each time).
IN_FLIGHT_ATTEMPTS = 5
MAX_IN_FLIGHT_WAIT_SECONDS = 5
# A broken transfer is resumed from where it stopped, this many times within one fetch.
FETCH_ATTEMPTS = 5
# A body that breaks mid-way surfaces as one of these, from requests or from urllib3's raw stream.
_BROKEN_TRANSFER = (requests.RequestException, urllib3.exceptions.HTTPError)


@dataclass(frozen=True)
class Backoff:
    """Delays between polls: `initial`, then times `factor` each time, never above `maximum`."""

    initial: float = 0.25
    factor: float = 1.5
    maximum: float = 2.0

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay
            delay = min(delay * self.factor, self.maximum)


def _retry(retries: int, *, retry_unsafe: bool) -> Retry:
    # Connection errors are always retried (nothing was sent). Read errors and 5xx answers
    # only for methods safe to repeat; `retry_unsafe` adds POST, for routes where repeating
    # is safe because the request carries an Idempotency-Key.
    methods = Retry.DEFAULT_ALLOWED_METHODS | ({"POST"} if retry_unsafe else set())
    return Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=0.3,
        backoff_max=4.0,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=methods,
        # Off: urllib3 would otherwise retry any 429 or 413 that has a Retry-After, and sleep
        # for as long as it says (a quota's "30 s" per attempt); 503s back off as above.
        respect_retry_after_header=False,
        raise_on_status=False,  # the last answer is returned, and becomes an ApiError with its body
    )


def _session(retry: Retry) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = f"satchel-client/{version()} {requests.utils.default_user_agent()}"
    return session


def version() -> str:
    """This client's version, as installed."""
    try:
        return metadata.version("satchel")
    except metadata.PackageNotFoundError:  # run from a checkout without `pip install -e .`
        return "dev"


class SatchelClient:
    """A Satchel API, as one user sees it: the owner of `api_key`, or whoever `auth` signs in as
    (satchel_client.auth: `BearerAuth(oidc_token)`, `SigV4Auth(region)`).

    Requests time out (`timeout`, seconds, or (connect, read)) and are retried with
    backoff on connection errors and 502/503/504, `retries` times. Creating a download sends
    an `Idempotency-Key`, so its retries never create two downloads. Errors are raised as
    `ApiError` (the API refused: status, `code`, `message`), `NetworkError` (no answer),
    `DownloadFailed` (it ended FAILED/CANCELLED/EXPIRED), `WaitTimeout` and
    `VerificationError`, all `SatchelError`s.
    """

    def __init__(
        self,
        api_url: str,
        api_key: str | None = None,
        *,
        auth: AuthBase | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        if (api_key is None) == (auth is None):
            raise ValueError("give an API key or an auth (a bearer token, SigV4), and only one")
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self._auth: AuthBase = auth if auth is not None else BearerAuth(str(api_key))
        self._http = _session(_retry(retries, retry_unsafe=True))
        self._once = _session(_retry(retries, retry_unsafe=False))

    def close(self) -> None:
        self._http.close()
        self._once.close()

    def __enter__(self) -> SatchelClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # -- the routes ---------------------------------------------------------------------

    def create(
        self,
        type: str,
        params: Mapping[str, Any],
        *,
        filename: str | None = None,
        expires_in: int | None = None,
        link: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Download:
        """POST /downloads: start a download of any registered type; it answers PENDING."""
        body: dict[str, Any] = {"type": type, "params": dict(params)}
        optional = {"filename": filename, "expires_in": expires_in, "link": link}
        body.update({name: value for name, value in optional.items() if value is not None})
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        for attempt in range(IN_FLIGHT_ATTEMPTS):
            try:
                return Download.from_api(
                    self._json("POST", "/downloads", body=body, headers=headers, expect=(202,))
                )
            except ApiError as error:
                # 409 IdempotencyKeyInUse: a retry met the first request still being processed
                # (its answer was lost); once that one is done, the same key replays it.
                if error.code != "IdempotencyKeyInUse" or attempt + 1 == IN_FLIGHT_ATTEMPTS:
                    raise
                time.sleep(min(error.retry_after or 1, MAX_IN_FLIGHT_WAIT_SECONDS))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def create_zip(
        self,
        keys: Sequence[str] = (),
        prefixes: Sequence[str] = (),
        *,
        compression: Compression | None = None,
        filename: str | None = None,
        expires_in: int | None = None,
        link: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        archive_format: ArchiveFormat | None = None,
        manifest: bool | None = None,
        on_missing: OnMissing | None = None,
    ) -> Download:
        """An archive of source objects, by key and by prefix; None leaves an option to the service
        (deflate, zip, no SHA256SUMS, a missing source fails the download)."""
        params: dict[str, Any] = {"keys": list(keys), "prefixes": list(prefixes)}
        options = {
            "compression": compression,
            "format": archive_format,
            "manifest": manifest,
            "on_missing": on_missing,
        }
        params.update({name: value for name, value in options.items() if value is not None})
        return self.create(
            "zip",
            params,
            filename=filename,
            expires_in=expires_in,
            link=link,
            idempotency_key=idempotency_key,
        )

    def get(self, download_id: str) -> Download:
        return Download.from_api(self._json("GET", f"/downloads/{_segment(download_id)}"))

    def list_page(
        self, *, state: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Page:
        """One page of GET /downloads, newest first."""
        query = {"state": state, "limit": limit, "cursor": cursor}
        data = self._json("GET", "/downloads", params={k: v for k, v in query.items() if v is not None})
        return Page(tuple(Download.from_api(item) for item in data["items"]), data.get("next_cursor"))

    def list(self, *, state: str | None = None, page_size: int | None = None) -> Iterator[Download]:
        """Every download of the caller (in `state`, if given), newest first, page after page."""
        cursor: str | None = None
        while True:
            page = self.list_page(state=state, limit=page_size, cursor=cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def cancel(self, download_id: str) -> Download | None:
        """DELETE /downloads/{id}: cancels a running download (returned, CANCELLED), or deletes
        a finished one's file (None; the record stays, EXPIRED)."""
        response = self._request("DELETE", f"/downloads/{_segment(download_id)}", expect=(202, 204))
        return Download.from_api(_json_of(response)) if response.status_code == 202 else None

    delete = cancel

    def file_url(self, download_id: str) -> FileUrl:
        """GET /downloads/{id}/url: a presigned URL of the file, for fetching without the key."""
        return FileUrl.from_api(self._json("GET", f"/downloads/{_segment(download_id)}/url"))

    def file_redirect(self, download_id: str) -> str:
        """GET /downloads/{id}/file: where its 302 points (a short-lived presigned URL)."""
        path = f"/downloads/{_segment(download_id)}/file"
        response = self._request("GET", path, expect=(302,), allow_redirects=False)
        return str(response.headers["Location"])

    def create_link(
        self, download_id: str, *, expires_in: int | None = None, max_uses: int | None = None
    ) -> Link:
        """POST /downloads/{id}/links: a URL anyone may use, `max_uses` times, until it expires."""
        asked = {"expires_in": expires_in, "max_uses": max_uses}
        body = {name: value for name, value in asked.items() if value is not None}
        # once=True: this POST has no idempotency key, and a repeat would mint a second link.
        path = f"/downloads/{_segment(download_id)}/links"
        return Link.from_api(self._json("POST", path, body=body, expect=(201,), once=True))

    def revoke_link(self, token: str) -> None:
        self._request("DELETE", f"/links/{_segment(token)}", expect=(204,))

    def types(self) -> tuple[DownloadType, ...]:
        return tuple(DownloadType.from_api(item) for item in self._json("GET", "/types")["items"])

    # -- API keys (tenant admins) -----------------------------------------------------------

    def create_key(
        self, user_id: str | None = None, *, roles: Sequence[str] = (), expires_in: int | None = None
    ) -> dict[str, Any]:
        """POST /keys: a new key in your tenant; the answer's `api_key` is shown this once."""
        body: dict[str, Any] = {"roles": list(roles)}
        if user_id is not None:
            body["user_id"] = user_id
        if expires_in is not None:
            body["expires_in"] = expires_in
        # once=True: a repeat would issue a second key.
        answer: dict[str, Any] = self._json("POST", "/keys", body=body, expect=(201,), once=True)
        return answer

    def list_keys(self) -> tuple[dict[str, Any], ...]:
        """GET /keys: your tenant's keys (id, prefix, user, roles, dates, disabled), never the keys."""
        return tuple(self._json("GET", "/keys")["items"])

    def rotate_key(
        self, key_id: str, *, expires_in: int | None = None, grace_seconds: int | None = None
    ) -> dict[str, Any]:
        """POST /keys/{id}/rotate: a new key for the same user and roles; the old one is
        disabled, or expires after `grace_seconds`."""
        body: dict[str, int] = {} if expires_in is None else {"expires_in": expires_in}
        if grace_seconds is not None:
            body["grace_seconds"] = grace_seconds
        path = f"/keys/{_segment(key_id)}/rotate"
        answer: dict[str, Any] = self._json("POST", path, body=body, expect=(201,), once=True)
        return answer

    def disable_key(self, key_id: str) -> dict[str, Any]:
        """DELETE /keys/{id}: refused from the authorizer's cache time on."""
        answer: dict[str, Any] = self._json("DELETE", f"/keys/{_segment(key_id)}")
        return answer

    # -- waiting and fetching -------------------------------------------------------------

    def wait(
        self,
        download_id: str,
        *,
        timeout: float | None = None,
        backoff: Backoff | None = None,
        on_update: Callable[[Download], None] | None = None,
    ) -> Download:
        """Poll until the download finishes; return it when DONE.

        Raises `DownloadFailed` (naming the state and error code) when it ends FAILED,
        CANCELLED or EXPIRED, and `WaitTimeout` after `timeout` seconds (None: no limit).
        `on_update` sees every answer, e.g. to draw its progress.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delays = (backoff or Backoff()).delays()
        while True:
            download = self.get(download_id)
            if on_update is not None:
                on_update(download)
            if download.state == DONE:
                return download
            if download.finished:
                raise DownloadFailed(download)
            delay = next(delays)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(download, timeout or 0.0)
                delay = min(delay, remaining)
            time.sleep(delay)

    def fetch(
        self,
        download_id: str,
        path: str | os.PathLike[str] | None = None,
        *,
        observer: FetchObserver | None = None,
        rate_limit: int | None = None,
        attempts: int = FETCH_ATTEMPTS,
    ) -> FetchResult:
        """Save a DONE download's file at `path` and verify its sha256.

        `path` None: the download's filename in the working directory; a directory: that
        name inside it. The bytes go to `path.part` first; an interrupted fetch (this
        process killed, the network gone) leaves it, and the next fetch asks only for the
        rest with an HTTP Range request. A broken connection is resumed the same way, up
        to `attempts` times. A file already at `path` with the right sha256 is kept as is.
        Raises `VerificationError`, after removing the bytes, if they are not the file.
        """
        observer = observer or SilentObserver()
        download = self.get(download_id)
        artifact = self._artifact(download)
        target = target_path(download, path)
        if is_complete(target, artifact.size, artifact.sha256):
            return FetchResult(target, artifact.size, artifact.sha256, resumed_from=0, transferred=0)
        part = part_path(target)
        with Sink(part) as sink:
            observer.begin(sink.size, artifact.size)
            if sink.size < artifact.size:
                self._transfer(download.id, sink, artifact.size, observer, Throttle(rate_limit), attempts)
            size, sha256, kept = sink.size, sink.hexdigest(), sink.kept
        if (size, sha256) != (artifact.size, artifact.sha256):
            part.unlink()
            raise VerificationError(part, artifact.sha256, sha256, size, artifact.size)
        os.replace(part, target)
        return FetchResult(target, size, sha256, resumed_from=kept, transferred=size - kept)

    def _artifact(self, download: Download) -> Artifact:
        if download.unsuccessful:
            raise DownloadFailed(download)
        if download.state != DONE or download.artifact is None:
            # Not there yet: the API's own refusal (409 DownloadNotReady) says so best.
            self.file_url(download.id)
            raise SatchelError(f"download {download.id} is {download.state} and has no file yet")
        return download.artifact

    def _transfer(
        self,
        download_id: str,
        sink: Sink,
        total: int,
        observer: FetchObserver,
        throttle: Throttle,
        attempts: int,
    ) -> None:
        attempts = max(attempts, 1)
        for attempt in range(1, attempts + 1):
            # A fresh URL each time: presigned URLs expire, and a resume may come much later.
            url = self.file_url(download_id).url
            try:
                self._stream(url, sink, total, observer, throttle)
            except _BROKEN_TRANSFER as error:
                broken = NetworkError.from_exception(_origin(url), error)
                if attempt == attempts:
                    raise broken from error
                observer.retry(sink.size, broken.reason)
                time.sleep(0.5 * attempt)
            if sink.size >= total:
                return
        raise NetworkError(
            _origin(url), f"the transfer stopped at byte {sink.size} of {total} after {attempts} attempts"
        )

    def _stream(self, url: str, sink: Sink, total: int, observer: FetchObserver, throttle: Throttle) -> None:
        # No auth: a presigned URL is its own credential, and the API key must not leave the API.
        stream_rest(self._http, url, sink, total, observer, throttle, self.timeout)

    # -- plumbing -------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        expect: tuple[int, ...] = (200,),
        once: bool = False,
        allow_redirects: bool = True,
    ) -> requests.Response:
        session = self._once if once else self._http
        try:
            response = session.request(
                method,
                self.api_url + path,
                json=body,
                params=params,
                headers=dict(headers or {}),
                auth=self._auth,
                timeout=self.timeout,
                allow_redirects=allow_redirects,
            )
        except requests.RequestException as error:
            raise NetworkError.from_exception(self.api_url, error) from error
        if response.status_code not in expect:
            raise ApiError.from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return _json_of(self._request(method, path, **kwargs))


def _json_of(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise SatchelError(
            f"{response.request.method} {response.url} answered {response.status_code} without JSON"
        ) from None


def _segment(value: str) -> str:
    """A path segment, escaped: an id or token must not be able to change the route."""
    return quote(value, safe="")


def _origin(url: str) -> str:
    parsed = urlsplit(url)
    return f"{parsed.scheme}://{parsed.netloc}"
