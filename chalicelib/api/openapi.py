"""The OpenAPI 3.1 document of Satchel's whole API, served at GET /openapi.json.

Built from the code it describes, so it cannot drift: the request bodies are
`requests.REQUEST_SCHEMA` (one variant per registered type, with its params schema) and
`links.REQUEST_SCHEMA`; states, page sizes and header names come from their modules.
tests/unit/api/test_openapi.py checks it against the app's routes and authorizers and against the
shapes the API answers with; tests/e2e/test_fuzz.py fuzzes the running stack from it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Literal

from chalicelib import downloadtypes
from chalicelib.api import requests
from chalicelib.core.models import Artifact, ErrorInfo, Progress, State
from chalicelib.notify import events
from chalicelib.storage import idempotency, links

JsonSchema = dict[str, Any]
Operation = dict[str, Any]
Access = Literal["bearer", "public"]
Headers = dict[str, str]  # header name: name of its component in #/components/headers

OPENAPI_VERSION = "3.1.0"
BEARER = "bearer"
JSON = "application/json"
_SCHEMAS = "#/components/schemas/"
_RESPONSES = "#/components/responses/"
_PARAMETERS = "#/components/parameters/"


def document(server_url: str = "/") -> dict[str, Any]:
    """The whole document, for an API served under `server_url` (the stage's path prefix).

    A fresh copy each call: callers may change it without touching the cached original.
    """
    return copy.deepcopy(_build(server_url))


@functools.cache
def _build(server_url: str) -> dict[str, Any]:
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Satchel",
            "version": "1",
            "summary": "Serverless downloads: ask for an archive, follow its progress, fetch it by link.",
        },
        "servers": [{"url": server_url}],
        "paths": _paths(),
        "webhooks": _webhooks(),
        "components": {
            "schemas": _schemas(),
            "responses": _responses(),
            "parameters": _parameters(),
            "headers": _headers(),
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: `Authorization: Bearer <key>`.",
                }
            },
        },
    }


# --- references ---------------------------------------------------------------------------


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"{kind}{name}"}


def _schema_ref(name: str) -> dict[str, str]:
    return _ref(_SCHEMAS, name)


def _json_content(schema: JsonSchema) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def _nullable(schema: JsonSchema) -> JsonSchema:
    return {"oneOf": [schema, {"type": "null"}]}


# --- webhooks -------------------------------------------------------------------------------

_WEBHOOK_HEADERS = {
    "webhook-id": "The event's id, the same at every attempt: drop repeats by it.",
    "webhook-timestamp": "The attempt's time, Unix seconds (refuse one more than 5 minutes away).",
    "webhook-signature": (
        "`v1,<base64 HMAC-SHA256 of id.timestamp.body>` per signing secret (`whsec_...`), "
        "space-separated: two during a rotation."
    ),
}


def _webhooks() -> dict[str, dict[str, Operation]]:
    """What a `callback_url` receives: one entry per event type (notify/events.py's TYPES),
    as Standard Webhooks 1.0 signs and sends it (docs/events.md)."""
    return {
        kind: {
            "post": {
                "operationId": kind.replace(".", "_"),
                "summary": f"The `{kind}` event",
                "parameters": [
                    {
                        "name": name,
                        "in": "header",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": text,
                    }
                    for name, text in _WEBHOOK_HEADERS.items()
                ],
                "requestBody": {
                    "required": True,
                    "content": _json_content(_schema_ref(_event_schema(kind))),
                },
                "responses": {
                    "2XX": {"description": "Delivered. Any other answer, or none within 10 s, is retried."}
                },
            }
        }
        for kind in events.TYPES
    }


def _event_schema(kind: str) -> str:
    return "LinkClaimedEvent" if kind == events.LINK_CLAIMED else "DownloadEvent"


def _event(kinds: list[str], data: JsonSchema) -> JsonSchema:
    return {
        "type": "object",
        "required": ["type", "timestamp", "data"],
        "properties": {"type": {"type": "string", "enum": kinds}, "timestamp": _TIMESTAMP, "data": data},
    }


def _event_schemas() -> dict[str, JsonSchema]:
    download_kinds = [kind for kind in events.TYPES if _event_schema(kind) == "DownloadEvent"]
    nullable_string: JsonSchema = {"type": ["string", "null"]}
    return {
        "DownloadEvent": _event(
            download_kinds,
            _object(
                id={"type": "string"},
                type={"type": "string"},
                tenant={"type": "string"},
                user_id={"type": "string"},
                state={"type": "string", "enum": [state.value for state in State]},
                error=_nullable(_record(ErrorInfo)),
                created_at=_TIMESTAMP,
                finished_at=nullable_string,
                expires_at=nullable_string,
                url=nullable_string,
                client_reference=nullable_string,
            ),
        ),
        "LinkClaimedEvent": _event(
            [events.LINK_CLAIMED],
            _object(
                link_id={"type": "string"},
                download_id={"type": "string"},
                tenant={"type": "string"},
                user_id={"type": "string"},
                claimed_at=_TIMESTAMP,
                use={"type": "integer", "minimum": 1},
                client_reference=nullable_string,
            ),
        ),
    }


# --- paths --------------------------------------------------------------------------------


def _paths() -> dict[str, dict[str, Operation]]:
    return {
        "/downloads": {"post": _create_download(), "get": _list_downloads()},
        "/downloads/{download_id}": {"get": _get_download(), "delete": _delete_download()},
        "/downloads/{download_id}/file": {"get": _download_file()},
        "/downloads/{download_id}/url": {"get": _download_url()},
        "/downloads/{download_id}/links": {"post": _create_link(), "get": _list_links()},
        "/downloads/{download_id}/deliveries": {"get": _list_deliveries()},
        "/links/{token}": {
            "get": _read_link("readLink", "Read a link: its file's facts (the link page for browsers)"),
            "head": _read_link("headLink", "GET's status and headers, without a body"),
            "post": _claim_link(),
            "delete": _revoke_link(),
        },
        "/types": {"get": _list_types()},
        "/health": {"get": _health()},
        "/openapi.json": {"get": _openapi_document()},
    }


def _operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    access: Access = "bearer",
    parameters: list[dict[str, Any]] | None = None,
    body: JsonSchema | None = None,
    body_required: bool = True,
) -> Operation:
    """One operation; `bearer` ones answer 401 and 403 from the authorizer as well."""
    result: Operation = {"operationId": operation_id, "summary": summary}
    if parameters:
        result["parameters"] = parameters
    if body is not None:
        result["requestBody"] = {"required": body_required, "content": _json_content(body)}
    if access == "bearer":
        result["security"] = [{BEARER: []}]
        responses = {
            **responses,
            "401": _ref(_RESPONSES, "Unauthorized"),
            "403": _ref(_RESPONSES, "Forbidden"),
        }
    else:
        result["security"] = []
    result["responses"] = dict(sorted(responses.items()))
    return result


def _ok(
    description: str, schema: JsonSchema, status: str = "200", headers: Headers | None = None
) -> dict[str, Any]:
    """A success answering JSON."""
    return {status: _answer(description, headers, schema)}


def _no_content(status: str, description: str, headers: Headers | None = None) -> dict[str, Any]:
    return {status: _answer(description, headers)}


def _answer(description: str, headers: Headers | None, schema: JsonSchema | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = _json_content(schema)
    if headers:
        answer["headers"] = {
            name: _ref("#/components/headers/", component) for name, component in headers.items()
        }
    return answer


def _refusals(*names: str) -> dict[str, Any]:
    """Shared error responses by name (see _responses), keyed by their status."""
    return {_ERRORS[name].status: _ref(_RESPONSES, name) for name in names}


def _redirect(description: str) -> dict[str, Any]:
    return _no_content("302", description, {"Location": "Location", **_NO_STORE})


_NO_STORE: Headers = {"Cache-Control": "CacheControl"}
_DOWNLOAD_ID = _ref(_PARAMETERS, "DownloadId")
_TOKEN = _ref(_PARAMETERS, "Token")


def _create_download() -> Operation:
    created = _ok(
        "Accepted: the download is PENDING; `link` is there when one was asked for.",
        _schema_ref("CreatedDownload"),
        "202",
        {"Location": "Location", "Idempotent-Replayed": "IdempotentReplayed"},
    )
    return _operation(
        "createDownload",
        "Start a download",
        {
            **created,
            **_refusals(
                "BadRequest",
                "IdempotencyConflict",
                "PayloadTooLarge",
                "UnsupportedMediaType",
                "UnprocessableContent",
                "TooManyRequests",
                "ServiceUnavailable",
            ),
        },
        parameters=[_ref(_PARAMETERS, "IdempotencyKey")],
        body=_schema_ref("DownloadRequest"),
    )


def _list_downloads() -> Operation:
    return _operation(
        "listDownloads",
        "Your downloads, newest first",
        {**_ok("A page of your downloads.", _schema_ref("DownloadPage")), **_refusals("BadRequest")},
        parameters=[_ref(_PARAMETERS, name) for name in ("State", "Limit", "Cursor")],
    )


def _get_download() -> Operation:
    return _operation(
        "getDownload",
        "A download, its state and progress",
        {**_ok("The download.", _schema_ref("Download")), **_refusals("NotFound")},
        parameters=[_DOWNLOAD_ID],
    )


def _delete_download() -> Operation:
    return _operation(
        "deleteDownload",
        "Cancel a running download, or delete a finished one's file",
        {
            **_ok("It was running: now CANCELLED.", _schema_ref("Download"), "202"),
            **_no_content("204", "It had finished: its file is deleted (the record stays, EXPIRED)."),
            **_refusals("NotFound"),
        },
        parameters=[_DOWNLOAD_ID],
    )


def _download_file() -> Operation:
    return _operation(
        "getDownloadFile",
        "Fetch the file: a redirect to a short-lived presigned URL",
        {
            **_redirect("To the file (`Content-Disposition: attachment`, RFC 6266 UTF-8 name)."),
            **_refusals("NotFound", "NotDone", "Expired"),
        },
        parameters=[_DOWNLOAD_ID],
    )


def _download_url() -> Operation:
    return _operation(
        "getDownloadUrl",
        "The file's presigned URL, as JSON",
        {
            **_ok("A presigned URL, valid until `expires_at`.", _schema_ref("FileUrl"), headers=_NO_STORE),
            **_refusals("NotFound", "NotDone", "Expired"),
        },
        parameters=[_DOWNLOAD_ID],
    )


def _create_link() -> Operation:
    return _operation(
        "createDownloadLink",
        "Hand out a link to the file (it may be made before the download is DONE)",
        {
            **_ok("The link; its token is shown only now.", _schema_ref("Link"), "201", _NO_STORE),
            **_refusals(
                "BadRequest",
                "NotFound",
                "LinkConflict",
                "PayloadTooLarge",
                "UnsupportedMediaType",
                "UnprocessableContent",
            ),
        },
        parameters=[_DOWNLOAD_ID],
        body=_schema_ref("LinkRequest"),
        body_required=False,  # no body: the defaults
    )


def _list_links() -> Operation:
    return _operation(
        "listDownloadLinks",
        "The download's links (never their tokens)",
        {**_ok("The links, oldest first.", _schema_ref("LinkList")), **_refusals("NotFound")},
        parameters=[_DOWNLOAD_ID],
    )


def _list_deliveries() -> Operation:
    return _operation(
        "listDownloadDeliveries",
        "The download's webhook deliveries: one per event, with its attempts and last answer",
        {**_ok("The deliveries, oldest first.", _schema_ref("DeliveryList")), **_refusals("NotFound")},
        parameters=[_DOWNLOAD_ID],
    )


_LINK_HEADERS: Headers = {**_NO_STORE, "Sunset": "Sunset"}
_HTML: dict[str, Any] = {"text/html": {"schema": {"type": "string", "description": "The link page."}}}


def _read_link(operation_id: str, summary: str) -> Operation:
    ready = _ok(
        "The link can be claimed: its file's facts (JSON), or the link page (HTML, for an "
        "`Accept` that lists `text/html`). Reading never spends a use.",
        _schema_ref("LinkFacts"),
        headers=_LINK_HEADERS,
    )
    ready["200"]["content"].update(_HTML)
    return _operation(
        operation_id,
        summary,
        {**ready, **_link_refusals()},
        access="public",
        parameters=[_TOKEN, _ref(_PARAMETERS, "ClaimId")],
    )


def _link_refusals() -> dict[str, Any]:
    """A link's refusals, as JSON or, for browsers, as the page that says why."""
    answers = {}
    for name in ("LinkNotFound", "LinkGone", "TooEarly"):
        refusal = _ERRORS[name]
        headers = {**refusal.headers, **({"Sunset": "Sunset"} if name != "LinkNotFound" else {})}
        answer = _answer(refusal.description, headers, _schema_ref(refusal.schema))
        answer["content"].update(copy.deepcopy(_HTML))
        answers[refusal.status] = answer
    return answers


def _claim_link() -> Operation:
    claimed = _ok(
        "Claimed (`Accept: application/json`): a fresh presigned URL and the claim id.",
        _schema_ref("LinkClaim"),
        headers={**_LINK_HEADERS, "Set-Cookie": "SetCookie"},
    )
    redirect = _no_content(
        "303",
        "Claimed: to a freshly presigned URL of the file (RFC 6266 `Content-Disposition`).",
        {"Location": "Location", "Set-Cookie": "SetCookie", **_LINK_HEADERS},
    )
    return _operation(
        "claimLink",
        "Claim a link: spends one use, unless the claimant's claim window is still open",
        {**claimed, **redirect, **_link_refusals()},
        access="public",
        parameters=[_TOKEN, _ref(_PARAMETERS, "ClaimId")],
    )


def _revoke_link() -> Operation:
    return _operation(
        "revokeLink",
        "Revoke a link (its download's owner, or the tenant admin)",
        {**_no_content("204", "Revoked."), **_refusals("LinkNotFound")},
        parameters=[_TOKEN],
    )


def _list_types() -> Operation:
    page = {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": _schema_ref("DownloadType")}},
    }
    return _operation("listTypes", "The download types and their parameters", _ok("The types.", page))


def _health() -> Operation:
    status = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": "ok"}},
    }
    return _operation("health", "Liveness", _ok("Up.", status), access="public")


def _openapi_document() -> Operation:
    this = {"type": "object", "required": ["openapi", "info", "paths"]}
    return _operation("openapiDocument", "This document", _ok("OpenAPI 3.1.", this), access="public")


# --- parameters and headers ---------------------------------------------------------------


def _parameters() -> dict[str, dict[str, Any]]:
    return {
        "DownloadId": {
            "name": "download_id",
            "in": "path",
            "required": True,
            "description": "32 lowercase hex digits (128 random bits).",
            "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        },
        "Token": {
            "name": "token",
            "in": "path",
            "required": True,
            "description": "A link's token (256 random bits, URL-safe base64), as its creation answered it.",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"},
        },
        "ClaimId": {
            "name": "Satchel-Claim",
            "in": "header",
            "required": False,
            "description": (
                "The `claim_id` of an earlier claim of this link (or the `satchel_claim` cookie): "
                "within its window a claim spends no use."
            ),
            "schema": {"type": "string"},
        },
        "IdempotencyKey": {
            "name": idempotency.HEADER,
            "in": "header",
            "required": False,
            "description": (
                "Retries with the same key and body answer the first download; "
                "the same key with another body answers 409."
            ),
            # 1-255 printable ASCII characters, no space at either end (HTTP would trim it).
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "pattern": "^[!-~]([ -~]*[!-~])?$",
            },
        },
        "State": {
            "name": "state",
            "in": "query",
            "required": False,
            "description": "Only downloads in this state (case-insensitive).",
            "schema": {"type": "string", "enum": [state.value for state in State]},
        },
        "Limit": {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": requests.MAX_PAGE,
                "default": requests.DEFAULT_PAGE,
            },
        },
        "Cursor": {
            "name": "cursor",
            "in": "query",
            "required": False,
            "description": "`next_cursor` of the previous page (empty: the first page).",
            "schema": {"type": "string"},
        },
    }


def _headers() -> dict[str, dict[str, Any]]:
    return {
        "Location": {"description": "Where to go next.", "schema": {"type": "string"}},
        "RetryAfter": {
            "description": "Seconds to wait before trying again.",
            "schema": {"type": "integer", "minimum": 0},
        },
        "IdempotentReplayed": {
            "description": "`true` when this answers a retry with the same Idempotency-Key and body.",
            "schema": {"type": "string", "enum": ["true"]},
        },
        "CacheControl": {"description": "`no-store`: the URL is short-lived.", "schema": {"type": "string"}},
        "Sunset": {
            "description": "When the link expires (HTTP-date, RFC 8594).",
            "schema": {"type": "string"},
        },
        "SetCookie": {
            "description": "`satchel_claim`: the claim id, HttpOnly, for the link's path and claim window.",
            "schema": {"type": "string"},
        },
    }


# --- error responses ----------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """A shared error response: its status, what it means, its body's schema, its headers."""

    status: str
    description: str
    schema: str = "Error"
    headers: Headers = field(default_factory=dict)


_RETRY_AFTER: Headers = {"Retry-After": "RetryAfter"}
_ERRORS: dict[str, Refusal] = {
    "BadRequest": Refusal(
        "400", "Malformed: not JSON, empty or duplicate keys, a bad query or Idempotency-Key."
    ),
    "Unauthorized": Refusal("401", "No API key (answered by API Gateway, as a Gateway Response)."),
    "Forbidden": Refusal(
        "403",
        "An unknown API key (answered by the authorizer), another user's download, "
        "or a type or source you may not use.",
    ),
    "NotFound": Refusal("404", "No such download (another tenant's downloads do not exist for you)."),
    "LinkNotFound": Refusal("404", "No such link."),
    "NotDone": Refusal("409", "The download is not DONE; `state` says what it is.", "NotDoneError"),
    "IdempotencyConflict": Refusal("409", "This Idempotency-Key was used with another body."),
    "LinkConflict": Refusal("409", "The download is FAILED, CANCELLED or EXPIRED: no link to it."),
    "Expired": Refusal("410", "The download expired: its file is deleted."),
    "LinkGone": Refusal(
        "410", "The link is used up, expired or revoked, or its file is gone (`reason`).", "LinkGoneError"
    ),
    "PayloadTooLarge": Refusal("413", "The body, or the number of keys in it, is too large."),
    "UnsupportedMediaType": Refusal("415", "The body must be `application/json`."),
    "UnprocessableContent": Refusal("422", "Invalid params or expiry, or an unknown type."),
    "TooEarly": Refusal(
        "425", "The download is not DONE yet: retry later.", "LinkNotReadyError", headers=_RETRY_AFTER
    ),
    "TooManyRequests": Refusal(
        "429",
        "You, or your tenant, have too many active downloads (`QuotaExceeded`; `scope` is "
        "`user` or `tenant`, `limit` the limit).",
        headers=_RETRY_AFTER,
    ),
    "ServiceUnavailable": Refusal("503", "The workflow could not be started: retry."),
}


def _responses() -> dict[str, dict[str, Any]]:
    return {
        name: _answer(refusal.description, refusal.headers, _schema_ref(refusal.schema))
        for name, refusal in _ERRORS.items()
    }


# --- schemas ------------------------------------------------------------------------------


def _schemas() -> dict[str, JsonSchema]:
    types = downloadtypes.all_types()
    return {
        "DownloadRequest": _download_request(types),
        **{_request_name(kind): _typed_request(kind) for kind in types},
        **{_params_name(kind): copy.deepcopy(kind.params_schema) for kind in types},
        "LinkRequest": copy.deepcopy(links.REQUEST_SCHEMA),
        "Download": _download(),
        "CreatedDownload": {
            "allOf": [_schema_ref("Download")],
            "properties": {"link": _schema_ref("Link")},
        },
        "DownloadPage": {
            "type": "object",
            "required": ["items", "next_cursor"],
            "properties": {
                "items": {"type": "array", "items": _schema_ref("Download")},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
        "FileUrl": _object(url={"type": "string"}, expires_at=_TIMESTAMP),
        "Link": _object(
            url={"type": "string"},
            token={"type": "string"},
            expires_at=_TIMESTAMP,
            max_uses={"type": "integer", "minimum": 1},
        ),
        "LinkFacts": _object(
            link_id={"type": "string"},
            download_id={"type": "string"},
            filename={"type": "string"},
            size=_COUNT,
            content_type={"type": "string"},
            sha256={"type": "string"},
            expires_at=_TIMESTAMP,
            artifact_expires_at=_nullable(_TIMESTAMP),
            max_uses={"type": "integer", "minimum": 1},
            uses=_COUNT,
            uses_left=_COUNT,
            claim_window_seconds=_COUNT,
            claim=_object(method={"type": "string", "enum": ["POST"]}, url={"type": "string"}),
        ),
        "LinkClaim": _object(
            url={"type": "string"},
            expires_at=_TIMESTAMP,
            claim_id={"type": "string"},
            claim_expires_at=_TIMESTAMP,
            use={
                "type": ["integer", "null"],
                "description": "The use this claim spent; null for a re-claim.",
            },
        ),
        "LinkList": {
            "type": "object",
            "required": ["items"],
            "properties": {
                "items": {
                    "type": "array",
                    "items": _object(
                        link_id={"type": "string"},
                        created_at=_TIMESTAMP,
                        expires_at=_TIMESTAMP,
                        max_uses={"type": "integer", "minimum": 1},
                        uses=_COUNT,
                        revoked={"type": "boolean"},
                    ),
                }
            },
        },
        **_event_schemas(),
        "DeliveryList": {
            "type": "object",
            "required": ["items"],
            "properties": {
                "items": {
                    "type": "array",
                    "items": _object(
                        event_id={"type": "string", "description": "The `webhook-id` of the event."},
                        type={"type": "string", "enum": list(events.TYPES)},
                        state={"type": "string", "enum": ["pending", "delivered", "failed"]},
                        url={"type": "string"},
                        attempts=_COUNT,
                        last_status={"type": ["integer", "null"]},
                        last_error={"type": ["string", "null"]},
                        last_attempt_at=_nullable(_TIMESTAMP),
                        next_attempt_at=_nullable(_TIMESTAMP),
                        created_at=_TIMESTAMP,
                    ),
                }
            },
        },
        "DownloadType": _object(
            name={"type": "string"},
            description={"type": "string"},
            params={"type": "object", "description": "JSON Schema (2020-12) of the type's `params`."},
            formats={"type": "array", "items": {"type": "string"}},
            required_role={"type": ["string", "null"], "description": "The role a caller needs, if any."},
        ),
        **_error_schemas(),
    }


_TIMESTAMP: JsonSchema = {"type": "string", "description": "ISO 8601, UTC (`2026-11-23T09:00:00.000Z`)."}
_COUNT: JsonSchema = {"type": "integer", "minimum": 0}


def _object(**properties: JsonSchema) -> JsonSchema:
    """An object with all these properties, and maybe more."""
    return {"type": "object", "required": list(properties), "properties": properties}


def _request_name(kind: downloadtypes.DownloadType) -> str:
    return f"{kind.name.capitalize()}DownloadRequest"


def _params_name(kind: downloadtypes.DownloadType) -> str:
    return f"{kind.name.capitalize()}Params"


def _download_request(types: list[downloadtypes.DownloadType]) -> JsonSchema:
    variants = {kind.name: f"{_SCHEMAS}{_request_name(kind)}" for kind in types}
    return {
        "oneOf": [{"$ref": target} for target in variants.values()],
        "discriminator": {"propertyName": "type", "mapping": variants},
    }


def _typed_request(kind: downloadtypes.DownloadType) -> JsonSchema:
    """requests.REQUEST_SCHEMA narrowed to one type: `type` is its name, `params` its schema."""
    schema = copy.deepcopy(requests.REQUEST_SCHEMA)
    properties = schema["properties"]
    properties["type"] = {**properties["type"], "const": kind.name}
    properties["params"] = {**_schema_ref(_params_name(kind)), "description": kind.description}
    return schema


def _download() -> JsonSchema:
    """models.Download.to_api() (tests/unit/api/test_openapi.py checks the two have the same keys)."""
    properties: dict[str, JsonSchema] = {
        "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "type": {"type": "string"},
        "params": {"type": "object"},
        "filename": {"type": "string"},
        "tenant": {"type": "string"},
        "user_id": {"type": "string"},
        "state": {"type": "string", "enum": [state.value for state in State]},
        "progress": _record(Progress),
        "artifact": _nullable(_record(Artifact, hidden=("key",))),
        "error": _nullable(_record(ErrorInfo)),
        "created_at": _TIMESTAMP,
        "started_at": _nullable(_TIMESTAMP),
        "finished_at": _nullable(_TIMESTAMP),
        "expires_at": _nullable(_TIMESTAMP),
        "callback_url": {"type": ["string", "null"]},
        "client_reference": {"type": ["string", "null"], "description": "Echoed in every event."},
        "url": {"type": ["string", "null"], "description": "The file endpoint's path once DONE."},
        "skipped": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Keys of sources left out because they were missing (zip `on_missing: skip`).",
        },
    }
    return _object(**properties)


def _record(cls: type[Any], hidden: tuple[str, ...] = ()) -> JsonSchema:
    """A dataclass of models.py with `str` and `int` fields, as asdict() shows it."""
    types = {"str": {"type": "string"}, "int": _COUNT}
    shown = (field for field in dataclasses.fields(cls) if field.name not in hidden)
    return _object(**{field.name: types[_type_name(field.type)] for field in shown})


def _type_name(annotation: Any) -> str:
    # A string under `from __future__ import annotations`, else the class itself.
    return annotation if isinstance(annotation, str) else str(annotation.__name__)


def _error_schemas() -> dict[str, JsonSchema]:
    error = _object(Code={"type": "string"}, Message={"type": "string"})
    error["description"] = (
        "`Code` is the error's stable name; some errors add details (`path`, `key`, `state`)."
    )
    return {
        "Error": error,
        "NotDoneError": {
            "allOf": [_schema_ref("Error")],
            "required": ["state"],
            "properties": {"state": {"type": "string", "enum": [state.value for state in State]}},
        },
        "LinkGoneError": {
            "allOf": [_schema_ref("Error")],
            "properties": {
                "reason": {"type": "string", "enum": ["used_up", "expired", "revoked", "download_gone"]},
                "state": {"type": "string"},
            },
        },
        "LinkNotReadyError": {
            "allOf": [_schema_ref("Error")],
            "required": ["progress"],
            "properties": {"state": {"type": "string"}, "progress": _record(Progress)},
        },
    }
