"""The download resource: its states, its record in DynamoDB, and its API shape."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from chalicelib.core.errors import InvalidParams, UnknownPrincipal
from chalicelib.core.names import PRINCIPAL_ID_PATTERN, is_principal_id


class State(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


ACTIVE_STATES = frozenset({State.PENDING, State.RUNNING})


@dataclass(frozen=True)
class Principal:
    tenant: str
    user_id: str
    roles: frozenset[str] = frozenset()

    ADMIN_ROLE = "admin"

    def __post_init__(self) -> None:
        # Every way in (keys, service principals, events, key records) builds one of these.
        for name, value in (("tenant", self.tenant), ("user_id", self.user_id)):
            if not is_principal_id(value):
                raise UnknownPrincipal(
                    f"{name} {str(value)[:70]!r} is not a valid id: ids match {PRINCIPAL_ID_PATTERN}",
                    field=name,
                )

    @property
    def is_admin(self) -> bool:
        return self.ADMIN_ROLE in self.roles


@dataclass(frozen=True)
class Progress:
    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    # Exports count rows: zips leave these at 0.
    rows_done: int = 0
    rows_total: int = 0


@dataclass(frozen=True)
class Artifact:
    key: str
    size: int
    sha256: str
    content_type: str


@dataclass(frozen=True)
class ErrorInfo:
    code: str
    message: str


@dataclass(frozen=True)
class Download:
    id: str
    type: str
    params: dict[str, Any]
    filename: str
    tenant: str
    user_id: str
    state: State
    created_at: str
    retention_seconds: int
    progress: Progress = field(default_factory=Progress)
    artifact: Artifact | None = None
    error: ErrorInfo | None = None
    started_at: str | None = None
    finished_at: str | None = None
    expires_at: str | None = None
    callback_url: str | None = None
    # The caller's own reference from the create request, echoed in every event about it.
    client_reference: str | None = None
    # Sources left out because they were missing (zip `on_missing: skip`), by key.
    skipped: list[str] = field(default_factory=list)
    # When its file or URL was first handed out (API or link), and when the sweep took on
    # warning that no one had (`download.expiring_unused`, the event's timestamp).
    first_fetched_at: str | None = None
    expiring_unused_at: str | None = None

    # Kept in the record, never shown: how long it is kept, whether it was fetched or warned of.
    _INTERNAL = ("retention_seconds", "first_fetched_at", "expiring_unused_at")

    def to_api(self, api_prefix: str = "") -> dict[str, Any]:
        data = asdict(self)
        for name in self._INTERNAL:
            del data[name]
        if data["artifact"]:
            del data["artifact"]["key"]
        data["state"] = self.state.value
        data["url"] = f"{api_prefix}/downloads/{self.id}/file" if self.state is State.DONE else None
        return data

    def to_item(self) -> dict[str, Any]:
        item = {name: value for name, value in asdict(self).items() if value is not None}
        item["state"] = self.state.value
        stored: dict[str, Any] = storable(item)
        return stored

    @classmethod
    def from_item(cls, raw: dict[str, Any]) -> Download:
        item = plain(raw)
        artifact = item.get("artifact")
        error = item.get("error")
        return cls(
            id=item["id"],
            type=item["type"],
            params=item["params"],
            filename=item["filename"],
            tenant=item["tenant"],
            user_id=item["user_id"],
            state=State(item["state"]),
            created_at=item["created_at"],
            retention_seconds=int(item["retention_seconds"]),
            progress=Progress(**item.get("progress", {})),
            artifact=Artifact(**artifact) if artifact else None,
            error=ErrorInfo(**error) if error else None,
            started_at=item.get("started_at"),
            finished_at=item.get("finished_at"),
            expires_at=item.get("expires_at"),
            callback_url=item.get("callback_url"),
            client_reference=item.get("client_reference"),
            skipped=list(item.get("skipped", [])),
            first_fetched_at=item.get("first_fetched_at"),
            expiring_unused_at=item.get("expiring_unused_at"),
        )


def storable(value: Any) -> Any:
    """JSON values as DynamoDB takes them: numbers as Decimal (boto3 refuses floats)."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


# What a DynamoDB number can be: 38 significant digits, magnitudes from 1e-130 to below 1e126.
NUMBER_DIGITS = 38
NUMBER_EXPONENTS = range(-130, 126)


def _number_storable(value: int | float) -> bool:
    if isinstance(value, int):
        # boto3 stores an int as it is, all its digits significant (no rounding allowed).
        return len(str(abs(value))) <= NUMBER_DIGITS
    if not math.isfinite(value):
        return False
    number = Decimal(repr(value))  # what storable() makes of it: at most 17 digits
    return number.is_zero() or number.adjusted() in NUMBER_EXPONENTS


def check_numbers(value: Any, path: str = "") -> None:
    """Refuse (422, naming the path) the JSON numbers DynamoDB cannot store: infinities, NaN,
    more than 38 digits, or out of its range. Stored, they would fail every later read."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        if not _number_storable(value):
            where = path or "(root)"
            raise InvalidParams(
                f"{where}: numbers must be finite, with at most {NUMBER_DIGITS} digits and a "
                "magnitude between 1e-130 and 1e125",
                path=where,
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            check_numbers(item, f"{path}/{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_numbers(item, f"{path}/{index}" if path else str(index))


def plain(value: Any) -> Any:
    """DynamoDB hands numbers back as Decimal: integers become int, the rest float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
