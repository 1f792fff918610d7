"""What a caller asks for, checked and parsed into typed requests before anything is stored.

A malformed body is 400 `MalformedRequest`; a body or query that breaks the rules is 422
(`InvalidParams`, `InvalidCallbackUrl`) or 400 `InvalidQuery`, naming what is wrong. The
checks run in a fixed order, so the same request always gets the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalicelib import downloadtypes
from chalicelib.core.errors import InvalidParams, InvalidQuery, MalformedRequest
from chalicelib.core.models import Principal, State
from chalicelib.core.schemas import Schema
from chalicelib.core.settings import Settings
from chalicelib.notify import callbacks
from chalicelib.storage import links

DEFAULT_PAGE = 20
MAX_PAGE = 100

REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "minLength": 1, "maxLength": 64},
        "params": {"type": "object"},
        "filename": {"type": "string", "minLength": 1, "maxLength": 255},
        "expires_in": {"type": "integer", "minimum": 1, "description": "Seconds the artifact is kept."},
        "link": links.REQUEST_SCHEMA,
        "callback_url": {
            "type": "string",
            "minLength": 1,
            "maxLength": 2048,
            "description": "https URL that receives a signed POST when the download finishes.",
        },
        "dry_run": {
            "type": "boolean",
            "description": "Answer 200 with the plan (totals, segments, limits broken); start nothing.",
        },
        "client_reference": {
            "type": "string",
            "minLength": 1,
            "maxLength": 256,
            "description": "The caller's own reference, echoed in every event about the download.",
        },
    },
}
_REQUEST = Schema(REQUEST_SCHEMA)

# A link request: `expires_in` and `max_uses`, each present only when asked for.
LinkRequest = dict[str, int]


@dataclass(frozen=True)
class CreateRequest:
    """A download request that passed every check: its type's params are validated."""

    kind: downloadtypes.DownloadType
    params: dict[str, Any]
    filename: str | None  # as given; the download's name is made from it once its id is known
    retention_seconds: int
    link: LinkRequest | None
    callback_url: str | None
    dry_run: bool = False
    client_reference: str | None = None


@dataclass(frozen=True)
class ListQuery:
    state: State | None
    limit: int
    cursor: str | None


def create_request(settings: Settings, principal: Principal, body: Any) -> CreateRequest:
    if not isinstance(body, dict):
        raise MalformedRequest("the request body must be a JSON object")
    _REQUEST.check(body)
    kind = downloadtypes.get(body["type"])
    params = kind.validate(body.get("params", {}), principal, settings)
    retention = body.get("expires_in", settings.retention_default_seconds)
    if not settings.retention_min_seconds <= retention <= settings.retention_max_seconds:
        raise InvalidParams(
            f"expires_in must lie between {settings.retention_min_seconds} and "
            f"{settings.retention_max_seconds} seconds",
            path="expires_in",
        )
    link = None
    if "link" in body:
        link = link_request(settings, body["link"], root="link")
    callback_url = body.get("callback_url")
    if callback_url is not None:
        _check_callback_url(settings, callback_url)
    return CreateRequest(
        kind,
        params,
        body.get("filename"),
        retention,
        link,
        callback_url,
        body.get("dry_run", False),
        body.get("client_reference"),
    )


def link_request(settings: Settings, body: Any, root: str = "") -> LinkRequest:
    if not isinstance(body, dict):
        raise MalformedRequest("the request body must be a JSON object")
    return links.check_request(
        body, max_ttl=settings.link_max_ttl_seconds, max_uses=settings.link_max_uses, root=root
    )


def list_query(query: dict[str, str]) -> ListQuery:
    unknown = set(query) - {"state", "limit", "cursor"}
    if unknown:
        raise InvalidQuery(f"unknown query parameters: {', '.join(sorted(unknown))}")
    state = None
    if "state" in query:
        try:
            state = State(query["state"].upper())
        except ValueError:
            raise InvalidQuery(f"state must be one of {', '.join(s.value for s in State)}") from None
    raw_limit = query.get("limit", str(DEFAULT_PAGE))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise InvalidQuery(f"limit must be an integer from 1 to {MAX_PAGE}")
    return ListQuery(state, int(raw_limit), query.get("cursor"))


def _check_callback_url(settings: Settings, url: str) -> None:
    # Whether the tenant can sign is checked on create (WebhookSecretMissing): it needs a read.
    callbacks.check(url, settings.callback_allow_loopback, settings.callback_port_numbers)
