"""Resumable, verified file transfer.

Bytes land in `PATH.part`, appended to across attempts and across runs, with a running
sha256 of everything in it; `PATH` itself appears only once that sha256 is the download's.
So a file at `PATH` is always complete, and an interrupted fetch leaves a `.part` that
the next fetch continues with a Range request instead of starting over.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol

import requests

from satchel_client.errors import ApiError
from satchel_client.models import Download

CHUNK_BYTES = 64 * 1024
PART_SUFFIX = ".part"


class FetchObserver(Protocol):
    """What a fetch reports as it goes (the command draws its progress bar from this)."""

    def begin(self, offset: int, total: int) -> None:
        """About to transfer; `offset` > 0 means resuming with that many bytes kept."""

    def advance(self, done: int) -> None:
        """`done` bytes of the file are on disk."""

    def retry(self, offset: int, reason: str) -> None:
        """The connection broke at `offset`; the next attempt resumes there."""


class SilentObserver:
    def begin(self, offset: int, total: int) -> None:
        pass

    def advance(self, done: int) -> None:
        pass

    def retry(self, offset: int, reason: str) -> None:
        pass


def target_path(download: Download, path: str | os.PathLike[str] | None) -> Path:
    """Where a fetch saves: `path`; inside it if it is a directory; by default, here."""
    # Only the last part of the server's filename: it must not choose the directory.
    name = Path(download.filename or f"{download.id}.zip").name
    if path is None:
        return Path(name)
    target = Path(path)
    return target / name if target.is_dir() else target


def part_path(target: Path) -> Path:
    return target.with_name(target.name + PART_SUFFIX)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_complete(path: Path, size: int, sha256: str) -> bool:
    """Whether `path` already holds exactly this file (a repeated fetch then does nothing)."""
    return path.is_file() and path.stat().st_size == size and file_sha256(path) == sha256


class Sink:
    """The partial file, opened for appending, and the sha256 of all it holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._digest = hashlib.sha256()
        self.size = 0
        if path.exists():  # an earlier fetch was interrupted: its bytes count, and are hashed once
            with path.open("rb") as existing:
                for chunk in iter(lambda: existing.read(1024 * 1024), b""):
                    self._digest.update(chunk)
                    self.size += len(chunk)
        self.kept = self.size  # bytes from an earlier run that this one did not transfer
        self._file: BinaryIO = path.open("ab")

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        # Flushed at once: whatever is counted is on disk if this process is killed now.
        self._file.flush()
        self._digest.update(chunk)
        self.size += len(chunk)

    def restart(self) -> None:
        """Throw the bytes away (the server answered the whole file, not the range asked for)."""
        self._file.truncate(0)
        self._digest = hashlib.sha256()
        self.size = self.kept = 0

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    def __enter__(self) -> Sink:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._file.close()


class Throttle:
    """At most `rate` bytes a second (None: as fast as the network goes), like curl's --limit-rate."""

    def __init__(
        self,
        rate: int | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self._clock, self._sleep = clock, sleep
        self._started = clock()
        self._sent = 0

    @property
    def chunk_bytes(self) -> int:
        # Small chunks under a low limit, so the pace (and the bar) is even, not bursty.
        return CHUNK_BYTES if not self.rate else max(1024, min(CHUNK_BYTES, self.rate // 8))

    def pace(self, sent: int) -> None:
        if not self.rate:
            return
        self._sent += sent
        ahead = self._sent / self.rate - (self._clock() - self._started)
        if ahead > 0:
            self._sleep(ahead)


def content_range_start(response: requests.Response) -> int | None:
    """The first byte of a 206's body, from `Content-Range: bytes START-END/TOTAL`."""
    value = response.headers.get("Content-Range", "")
    unit, _, rest = value.partition(" ")
    start = rest.split("-", 1)[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def stream_into(
    response: requests.Response, sink: Sink, throttle: Throttle, advance: Callable[[int], None]
) -> None:
    # The raw stream, not iter_content: the sha256 is of the stored bytes, so nothing may
    # decode them on the way (a Content-Encoding would otherwise be undone).
    for chunk in response.raw.stream(throttle.chunk_bytes, decode_content=False):
        sink.write(chunk)
        advance(sink.size)
        throttle.pace(len(chunk))


def stream_rest(
    session: requests.Session,
    url: str,
    sink: Sink,
    total: int,
    observer: FetchObserver,
    throttle: Throttle,
    timeout: float | tuple[float, float],
) -> None:
    """Append what `sink` lacks of the file at `url` (a presigned URL: sent without credentials),
    asking for the rest with a Range; a server that answers another range starts it over."""
    offset = sink.size
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
        if response.status_code not in (200, 206):
            raise ApiError.from_response(response)
        if offset and (response.status_code == 200 or content_range_start(response) != offset):
            # The whole file (or some other range) came back: keep nothing from before.
            sink.restart()
            observer.begin(0, total)
            if response.status_code != 200:
                return  # this body starts elsewhere; the next attempt asks from byte 0
        stream_into(response, sink, throttle, observer.advance)
