"""What the API answers with, as typed, immutable values.

Each value keeps the JSON it was parsed from in `raw`, so a caller (and `satchel --json`)
can still see fields this client does not know yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PENDING, RUNNING, DONE, FAILED, CANCELLED, EXPIRED = (
    "PENDING",
    "RUNNING",
    "DONE",
    "FAILED",
    "CANCELLED",
    "EXPIRED",
)
STATES = (PENDING, RUNNING, DONE, FAILED, CANCELLED, EXPIRED)
# A download in one of these never changes again (except DONE -> EXPIRED).
FINISHED_STATES = frozenset({DONE, FAILED, CANCELLED, EXPIRED})
# Finished without a file to fetch.
UNSUCCESSFUL_STATES = frozenset({FAILED, CANCELLED, EXPIRED})


def _int(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    return int(value) if value is not None else 0


def _str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return str(value) if value is not None else None


@dataclass(frozen=True)
class Progress:
    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0

    @classmethod
    def from_api(cls, data: Mapping[str, Any] | None) -> Progress:
        data = data or {}
        return cls(*(_int(data, name) for name in ("files_done", "files_total", "bytes_done", "bytes_total")))


@dataclass(frozen=True)
class Artifact:
    size: int
    sha256: str
    content_type: str

    @classmethod
    def from_api(cls, data: Mapping[str, Any] | None) -> Artifact | None:
        if not data:
            return None
        return cls(_int(data, "size"), str(data["sha256"]), str(data.get("content_type", "")))


@dataclass(frozen=True)
class Failure:
    """Why a download ended FAILED: `code` is a stable name such as `SourceMissing`."""

    code: str
    message: str

    @classmethod
    def from_api(cls, data: Mapping[str, Any] | None) -> Failure | None:
        if not data:
            return None
        return cls(str(data.get("code", "")), str(data.get("message", "")))


@dataclass(frozen=True)
class Link:
    url: str
    token: str
    expires_at: str | None
    max_uses: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Link:
        return cls(
            str(data["url"]), str(data["token"]), _str(data, "expires_at"), _int(data, "max_uses"), dict(data)
        )


@dataclass(frozen=True)
class FileUrl:
    """A presigned URL of a download's file; it works without an API key until `expires_at`."""

    url: str
    expires_at: str | None

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> FileUrl:
        return cls(str(data["url"]), _str(data, "expires_at"))


@dataclass(frozen=True)
class Download:
    id: str
    type: str
    state: str
    progress: Progress
    artifact: Artifact | None
    error: Failure | None
    filename: str | None
    url: str | None
    created_at: str | None
    finished_at: str | None
    expires_at: str | None
    # Only in the answer to a create that asked for a link: its token is shown once.
    link: Link | None
    # Keys of sources left out because they were missing (`on_missing: skip`).
    skipped: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Download:
        link = data.get("link")
        return cls(
            id=str(data["id"]),
            type=str(data.get("type", "")),
            state=str(data["state"]),
            progress=Progress.from_api(data.get("progress")),
            artifact=Artifact.from_api(data.get("artifact")),
            error=Failure.from_api(data.get("error")),
            filename=_str(data, "filename"),
            url=_str(data, "url"),
            created_at=_str(data, "created_at"),
            finished_at=_str(data, "finished_at"),
            expires_at=_str(data, "expires_at"),
            link=Link.from_api(link) if link else None,
            skipped=tuple(str(key) for key in data.get("skipped") or ()),
            raw=dict(data),
        )

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def unsuccessful(self) -> bool:
        return self.state in UNSUCCESSFUL_STATES


@dataclass(frozen=True)
class Page:
    items: tuple[Download, ...]
    next_cursor: str | None


@dataclass(frozen=True)
class DownloadType:
    name: str
    description: str
    params: dict[str, Any]  # the JSON Schema of the type's params
    formats: tuple[str, ...]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> DownloadType:
        return cls(
            name=str(data["name"]),
            description=str(data.get("description", "")),
            params=dict(data.get("params") or {}),
            formats=tuple(str(name) for name in data.get("formats") or ()),
            raw=dict(data),
        )


@dataclass(frozen=True)
class FetchResult:
    path: Path
    size: int
    sha256: str
    # Bytes that were already on disk from an earlier, interrupted fetch (0: a fresh one).
    resumed_from: int
    # Bytes this call transferred; 0 when the file was already there and verified.
    transferred: int

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "size": self.size,
            "sha256": self.sha256,
            "verified": True,  # a FetchResult exists only for a verified file
            "resumed_from": self.resumed_from,
            "transferred": self.transferred,
        }


@dataclass(frozen=True)
class SharedFile:
    """What a link shows before it is claimed (GET /links/{token} as JSON): reading spends nothing."""

    url: str  # the link itself
    filename: str
    size: int
    sha256: str
    content_type: str
    expires_at: str | None
    max_uses: int
    uses: int
    uses_left: int
    claim_window_seconds: int
    claim_url: str  # where the claim (a POST) goes
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, url: str, data: Mapping[str, Any]) -> SharedFile:
        claim = data.get("claim") or {}
        return cls(
            url=url,
            filename=str(data.get("filename") or ""),
            size=_int(data, "size"),
            sha256=str(data["sha256"]),
            content_type=str(data.get("content_type") or ""),
            expires_at=_str(data, "expires_at"),
            max_uses=_int(data, "max_uses"),
            uses=_int(data, "uses"),
            uses_left=_int(data, "uses_left"),
            claim_window_seconds=_int(data, "claim_window_seconds"),
            claim_url=str(claim.get("url") or url),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Claim:
    """The answer to a claim (POST /links/{token} as JSON): a presigned URL of the file, and the
    claim id that lets the same claimant claim again until `claim_expires_at` without a use."""

    url: str
    expires_at: str | None
    claim_id: str
    claim_expires_at: str | None
    use: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Claim:
        return cls(
            url=str(data["url"]),
            expires_at=_str(data, "expires_at"),
            claim_id=str(data.get("claim_id") or ""),
            claim_expires_at=_str(data, "claim_expires_at"),
            use=_int(data, "use"),
            raw=dict(data),
        )
