"""The OpenAPI 3.1 document of Satchel's whole API, served at GET /openapi.json.

Built from the code it describes, so it cannot drift: the request bodies are
`requests.REQUEST_SCHEMA` (one variant per registered type, with its params schema) and
`links.REQUEST_SCHEMA`; every bound and default the server enforces comes from the stage's
Settings (Bounds below); states, page sizes and header names come from their modules.

Written for the tools integrators use: `openapi-python-client` and `openapi-typescript`
generate clients from it, and the recommended rulesets of Spectral and of Redocly CLI find
nothing in it (tests/e2e/test_generated_clients.py). So: no `allOf` (generators merge it into duplicate
models), every object a client parses is a named component, per-type shapes are a `oneOf`
discriminated by `type`, and every component is used.

To add a route: a function returning `_operation(...)` (with its tag) in `_paths()`; a new
refusal is a Refusal in `_ERRORS`, a new header one in `_headers()`.
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
from chalicelib.api import keys as apikeys
from chalicelib.api import requests
from chalicelib.core.errors import PROBLEM_TYPES
from chalicelib.core.models import Artifact, ErrorInfo, Progress, State
from chalicelib.core.settings import Settings
from chalicelib.notify import events
from chalicelib.storage import idempotency, links

JsonSchema = dict[str, Any]
Operation = dict[str, Any]
Access = Literal["bearer", "public"]
Headers = dict[str, str]  # header name: name of its component in #/components/headers

OPENAPI_VERSION = "3.1.0"
BEARER = "bearer"
JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
_SCHEMAS = "#/components/schemas/"
_RESPONSES = "#/components/responses/"
_PARAMETERS = "#/components/parameters/"
_HEADERS = "#/components/headers/"

TAGS = {
    "downloads": "Ask for a download, follow it, fetch or cancel it.",
    "links": "Links to a download's file, to hand out: read them freely, claim them to download.",
    "service": "The service itself: its types, its health, this document.",
    "tenant": "A tenant admin's own tenant: its API keys and its webhook signing secret.",
}


@dataclass(frozen=True)
class Bounds:
    """What the server enforces that a client should know up front (the stage's Settings)."""

    retention_min_seconds: int
    retention_max_seconds: int
    retention_default_seconds: int
    link_max_ttl_seconds: int
    link_default_ttl_seconds: int
    link_max_uses: int
    max_keys: int
    max_active_per_user: int
    max_active_per_tenant: int

    @classmethod
    def of(cls, settings: Settings | None = None) -> Bounds:
        """The settings' bounds; without settings, the defaults a stage has unless configured."""
        if settings is None:
            return cls(**_DEFAULTS)
        return cls(**{field.name: getattr(settings, field.name) for field in dataclasses.fields(cls)})


_DEFAULTS: dict[str, Any] = {
    setting.name: setting.default
    for setting in dataclasses.fields(Settings)
    if setting.name in {bound.name for bound in dataclasses.fields(Bounds)}
}


def document(server_url: str = "/", settings: Settings | None = None) -> dict[str, Any]:
    """The whole document, for an API served under `server_url` (the stage's path prefix) with
    these settings' bounds (the defaults when None).

    A fresh copy each call: callers may change it without touching the cached original.
    """
    return copy.deepcopy(_build(server_url, Bounds.of(settings)))


@functools.cache
def _build(server_url: str, bounds: Bounds) -> dict[str, Any]:
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Satchel",
            "version": "1",
            "summary": "Serverless downloads: ask for an archive, follow its progress, fetch it by link.",
            "description": (
                "Ask for a download (a zip of stored objects, or an export of a dataset), follow its "
                "state and progress, fetch the file through an expiring URL or hand out links. Errors "
                "are RFC 9457 problems (`application/problem+json`) that keep Satchel's `Code` and "
                f"`Message`; each `type` is `{PROBLEM_TYPES}<Code>`, listed in the manual's error page."
            ),
            "contact": {"name": "Satchel maintainers", "url": "https://satchel.dev/"},
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": server_url, "description": "This stage."}],
        "tags": [{"name": name, "description": description} for name, description in TAGS.items()],
        "paths": _paths(),
        "webhooks": _webhooks(),
        "components": {
            "schemas": _schemas(bounds),
            "responses": _responses(bounds),
            "parameters": _parameters(),
            "headers": _headers(bounds),
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "An API key, or on a stage that signs in with OIDC an ID or access token "
                        "(a JWT): `Authorization: Bearer <credential>`. An IAM stage takes SigV4 "
                        "signatures instead (docs: Sign-in)."
                    ),
                }
            },
        },
    }


# --- references ---------------------------------------------------------------------------


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"{kind}{name}"}


def _schema_ref(name: str) -> dict[str, str]:
    return _ref(_SCHEMAS, name)


def _content(schema: JsonSchema, media_type: str = JSON) -> dict[str, Any]:
    return {media_type: {"schema": schema}}


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
                "description": (
                    f"Satchel POSTs a `{kind}` event to the download's `callback_url`, signed "
                    "(`webhook-signature`, with the tenant's signing secret) rather than "
                    "authenticated by a security scheme: verify the signature."
                ),
                # Explicitly none: an HMAC over the body is no scheme OpenAPI can describe;
                # the three webhook-* headers below carry it.
                "security": [],
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
                    "content": _content(_schema_ref(_event_schema(kind))),
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
                finished_at=_NULLABLE_TIMESTAMP,
                expires_at=_NULLABLE_TIMESTAMP,
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
        "/tenant/webhook-secret": {"post": _rotate_webhook_secret(), "get": _describe_webhook_secret()},
        "/types": {"get": _list_types()},
        **_key_paths(),
        "/health": {"get": _health()},
        "/openapi.json": {"get": _openapi_document()},
    }


def _operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    tag: str,
    description: str | None = None,
    access: Access = "bearer",
    parameters: list[dict[str, Any]] | None = None,
    body: JsonSchema | None = None,
    body_required: bool = True,
    uses_aws: bool = True,
) -> Operation:
    """One operation; `bearer` ones answer 401 and 403 from the authorizer as well, and every
    one API Gateway's 429 `Throttled` unless it documents a 429 of its own. One that calls
    AWS (`uses_aws`) may answer 503 when a service stays busy through the retries."""
    result: Operation = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "description": description or summary + ".",
    }
    if parameters:
        result["parameters"] = parameters
    if body is not None:
        result["requestBody"] = {"required": body_required, "content": _content(body)}
    if access == "bearer":
        result["security"] = [{BEARER: []}]
        responses = {
            **responses,
            "401": _ref(_RESPONSES, "Unauthorized"),
            "403": _ref(_RESPONSES, "Forbidden"),
        }
    else:
        result["security"] = []
    # The stage's token bucket covers every route (deploy/template.yaml's MethodSettings).
    # createDownload's 429 stays QuotaExceeded, the one its callers act on; its schema
    # (QuotaError) fits the throttle's answer as well.
    responses = {"429": _ref(_RESPONSES, "Throttled"), **responses}
    if uses_aws:  # chalicelib/api/http.py error_response: TransientError
        responses = {"503": _ref(_RESPONSES, "ServiceUnavailable"), **responses}
    result["responses"] = dict(sorted(responses.items()))
    return result


def _ok(
    description: str, schema: JsonSchema, status: str = "200", headers: Headers | None = None
) -> dict[str, Any]:
    """A success answering JSON."""
    return {status: _answer(description, headers, schema)}


def _no_content(status: str, description: str, headers: Headers | None = None) -> dict[str, Any]:
    return {status: _answer(description, headers)}


def _answer(
    description: str, headers: Headers | None, schema: JsonSchema | None = None, media_type: str = JSON
) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = _content(schema, media_type)
    if headers:
        answer["headers"] = {name: _ref(_HEADERS, component) for name, component in headers.items()}
    return answer


def _refusals(*names: str) -> dict[str, Any]:
    """Shared error responses by name (see _ERRORS), keyed by their status."""
    return {_ERRORS[name].status: _ref(_RESPONSES, name) for name in names}


def _redirect(description: str, headers: Headers | None = None) -> dict[str, Any]:
    return _no_content("302", description, {"Location": "Location", **_NO_STORE, **(headers or {})})


def _linked(answers: dict[str, Any], status: str, expression: str, *operation_ids: str) -> dict[str, Any]:
    """OpenAPI links from the answer `status` to operations of the download (or link) it names:
    where a client, or a stateful fuzzer, goes next with the id or token `expression` picks."""
    parameter = "token" if expression.endswith("/token") else "download_id"
    answers[status]["links"] = {
        operation_id[0].upper() + operation_id[1:]: {
            "operationId": operation_id,
            "parameters": {parameter: expression},
        }
        for operation_id in operation_ids
    }
    return answers


_OF_A_DOWNLOAD = (
    "getDownload",
    "deleteDownload",
    "getDownloadUrl",
    "getDownloadFile",
    "createDownloadLink",
    "listDownloadLinks",
)
_OF_A_LINK = ("readLink", "claimLink", "revokeLink")
_NO_STORE: Headers = {"Cache-Control": "CacheControl"}
_SUNSET: Headers = {"Sunset": "ArtifactSunset"}
_DOWNLOAD_ID = _ref(_PARAMETERS, "DownloadId")
_TOKEN = _ref(_PARAMETERS, "Token")


def _create_download() -> Operation:
    created = _ok(
        "Accepted: the download is PENDING; `link` is there when one was asked for.",
        _schema_ref("CreatedDownload"),
        "202",
        {"Location": "Location", "Idempotent-Replayed": "IdempotentReplayed", **_RATE_LIMITS},
    )
    _linked(created, "202", "$response.body#/id", *_OF_A_DOWNLOAD)
    planned = _ok(
        "`dry_run: true`: the plan, and nothing started, stored or counted against a quota.",
        _schema_ref("DryRunPlan"),
        "200",
        dict(_RATE_LIMITS),
    )
    return _operation(
        "createDownload",
        "Start a download",
        {
            **planned,
            **created,
            **_refusals(
                "CreateBadRequest",
                "IdempotencyKeyInUse",
                "PayloadTooLarge",
                "UnsupportedMediaType",
                "CreateUnprocessable",
                "QuotaExceeded",
                "ServiceUnavailable",
            ),
        },
        tag="downloads",
        description=(
            "Starts a download of one of the registered types (GET /types). Every answer carries "
            "`RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers): how many "
            "downloads you, and your tenant, may have PENDING or RUNNING at once, and how many "
            "more you may start now. With an `Idempotency-Key`, a retry with the same body answers "
            "the first download; the same key with another body is 422, and 409 while the first "
            "request is still being processed."
        ),
        parameters=[_ref(_PARAMETERS, "IdempotencyKey")],
        body=_schema_ref("DownloadRequest"),
    )


def _list_downloads() -> Operation:
    return _operation(
        "listDownloads",
        "Your downloads, newest first",
        {
            **_linked(
                _ok("A page of your downloads.", _schema_ref("DownloadPage")),
                "200",
                "$response.body#/items/0/id",
                *_OF_A_DOWNLOAD,
            ),
            **_refusals("BadRequest"),
        },
        tag="downloads",
        parameters=[_ref(_PARAMETERS, name) for name in ("State", "Limit", "Cursor")],
    )


def _get_download() -> Operation:
    return _operation(
        "getDownload",
        "A download, its state and progress",
        {
            **_ok(
                "The download (`Sunset`: when its file expires).", _schema_ref("Download"), headers=_SUNSET
            ),
            **_refusals("NotFound"),
        },
        tag="downloads",
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
        tag="downloads",
        parameters=[_DOWNLOAD_ID],
    )


def _download_file() -> Operation:
    return _operation(
        "getDownloadFile",
        "Fetch the file: a redirect to a short-lived presigned URL",
        {
            **_redirect("To the file (`Content-Disposition: attachment`, RFC 6266 UTF-8 name).", _SUNSET),
            **_refusals("NotFound", "NotDone", "Expired"),
        },
        tag="downloads",
        parameters=[_DOWNLOAD_ID],
    )


def _download_url() -> Operation:
    return _operation(
        "getDownloadUrl",
        "The file's presigned URL, as JSON",
        {
            **_ok(
                "A presigned URL, valid until `expires_at`.",
                _schema_ref("FileUrl"),
                headers={**_NO_STORE, **_SUNSET},
            ),
            **_refusals("NotFound", "NotDone", "Expired"),
        },
        tag="downloads",
        parameters=[_DOWNLOAD_ID],
    )


def _create_link() -> Operation:
    return _operation(
        "createDownloadLink",
        "Hand out a link to the file (it may be made before the download is DONE)",
        {
            **_linked(
                _ok("The link; its token is shown only now.", _schema_ref("Link"), "201", _NO_STORE),
                "201",
                "$response.body#/token",
                *_OF_A_LINK,
            ),
            **_refusals(
                "BadRequest",
                "NotFound",
                "LinkConflict",
                "PayloadTooLarge",
                "UnsupportedMediaType",
                "UnprocessableContent",
            ),
        },
        tag="links",
        parameters=[_DOWNLOAD_ID],
        body=_schema_ref("LinkRequest"),
        body_required=False,  # no body: the defaults
    )


def _list_links() -> Operation:
    return _operation(
        "listDownloadLinks",
        "The download's links (never their tokens)",
        {**_ok("The links, oldest first.", _schema_ref("LinkList")), **_refusals("NotFound")},
        tag="links",
        parameters=[_DOWNLOAD_ID],
    )


def _list_deliveries() -> Operation:
    return _operation(
        "listDownloadDeliveries",
        "The download's webhook deliveries: one per event, with its attempts and last answer",
        {**_ok("The deliveries, oldest first.", _schema_ref("DeliveryList")), **_refusals("NotFound")},
        tag="downloads",
        parameters=[_DOWNLOAD_ID],
    )


_LINK_HEADERS: Headers = {**_NO_STORE, "Sunset": "LinkSunset"}
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
        {**ready, **_refusals("LinkPageNotFound", "LinkGone", "LinkNotReady")},
        tag="links",
        access="public",
        parameters=[_TOKEN, _ref(_PARAMETERS, "ClaimId")],
    )


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
        {**claimed, **redirect, **_refusals("LinkPageNotFound", "LinkGone", "LinkNotReady")},
        tag="links",
        access="public",
        parameters=[_TOKEN, _ref(_PARAMETERS, "ClaimId")],
    )


def _revoke_link() -> Operation:
    return _operation(
        "revokeLink",
        "Revoke a link (its download's owner, or the tenant admin)",
        {**_no_content("204", "Revoked."), **_refusals("LinkNotFound")},
        tag="links",
        parameters=[_TOKEN],
    )


# --- the tenant's webhook secret (chalicelib/api/tenants.py), for tenant admins -------------


def _secret_info() -> JsonSchema:
    return _object(
        created_at={"type": "string", "format": "date-time"},
        previous_valid_until=_nullable({"type": "string", "format": "date-time"}),
    )


def _secret_refusal(description: str) -> dict[str, Any]:
    return _answer(description, None, _schema_ref("Error"))


def _rotate_webhook_secret() -> Operation:
    issued = _secret_info()
    issued["properties"]["secret"] = {
        "type": "string",
        "pattern": "^whsec_",
        "description": "Shown only now.",
    }
    issued["required"] = [*issued["required"], "secret"]
    grace = {"type": "integer", "minimum": 0, "description": "Seconds the old secret still signs."}
    return _operation(
        "rotateWebhookSecret",
        "Make or rotate the tenant's webhook signing secret (tenant admins)",
        {
            **_ok("The new secret, shown this once.", issued, "201", _NO_STORE),
            "409": _secret_refusal("`WebhookSecretConflict`: another rotation won the race; rotate again."),
            **_refusals("BadRequest", "UnsupportedMediaType", "UnprocessableContent"),
        },
        body={"type": "object", "additionalProperties": False, "properties": {"grace_seconds": grace}},
        body_required=False,
        tag="tenant",
    )


def _describe_webhook_secret() -> Operation:
    return _operation(
        "describeWebhookSecret",
        "When the tenant's webhook secret was made; never the secret (tenant admins)",
        {
            **_ok("The secret's dates.", _secret_info()),
            "404": _secret_refusal("`WebhookSecretNotFound`: the tenant has no secret yet."),
        },
        tag="tenant",
    )


def _list_types() -> Operation:
    return _operation(
        "listTypes",
        "The download types and their parameters",
        _ok("The types.", _schema_ref("TypeList")),
        tag="service",
    )


def _health() -> Operation:
    return _operation(
        "health",
        "Liveness",
        _ok("Up.", _schema_ref("Health")),
        tag="service",
        access="public",
        uses_aws=False,
    )


def _openapi_document() -> Operation:
    this = {
        "type": "object",
        "required": ["openapi", "info", "paths"],
        "properties": {
            "openapi": {"type": "string", "const": OPENAPI_VERSION},
            "info": {"type": "object"},
            "paths": {"type": "object"},
        },
    }
    return _operation(
        "openapiDocument",
        "This document",
        _ok("OpenAPI 3.1.", this),
        tag="service",
        access="public",
        uses_aws=False,
    )


# --- parameters and headers ---------------------------------------------------------------

# An Idempotency-Key: a Structured Field String of 1-255 printable ASCII characters (the
# IETF draft), or the same bare, as clients before the draft send it (no quote first, no
# space at either end: HTTP would trim it).
_IDEMPOTENCY_KEY = r'^(?:[!#-~](?:[ -~]{0,253}[!-~])?|"(?:[ !#-\[\]-~]|\\["\\]){1,255}")$'


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
                'A Structured Field String (`"8e03978e-40d5"`, the IETF Idempotency-Key draft), or the '
                "same unquoted. Retries with the same key and body answer the first download; the same "
                "key with another body answers 422, and 409 while the first request is in flight. "
                "A malformed key is 400."
            ),
            "schema": {"type": "string", "pattern": _IDEMPOTENCY_KEY},
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
            "description": "How many downloads a page has at most.",
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


_RETRY_AFTER: Headers = {"Retry-After": "RetryAfter"}
_RATE_LIMITS: Headers = {"RateLimit-Policy": "RateLimitPolicy", "RateLimit": "RateLimit"}


def _headers(bounds: Bounds) -> dict[str, dict[str, Any]]:
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
        "LinkSunset": {
            "description": "When the link expires (HTTP-date, RFC 8594).",
            "schema": {"type": "string"},
        },
        "ArtifactSunset": {
            "description": "When the download's file expires (HTTP-date, RFC 8594), once it has one.",
            "schema": {"type": "string"},
        },
        "SetCookie": {
            "description": "`satchel_claim`: the claim id, HttpOnly, for the link's path and claim window.",
            "schema": {"type": "string"},
        },
        "RateLimitPolicy": {
            "description": (
                "The quotas on downloads PENDING or RUNNING at once (draft-ietf-httpapi-ratelimit-"
                f'headers): `"user";q={bounds.max_active_per_user};qu="concurrent-requests", '
                f'"tenant";q={bounds.max_active_per_tenant};qu="concurrent-requests"`.'
            ),
            "schema": {"type": "string"},
        },
        "RateLimit": {
            "description": (
                'How many more downloads may start now, per policy: `"user";r=3, "tenant";r=57`. '
                "Absent when the counts could not be read."
            ),
            "schema": {"type": "string"},
        },
    }


# --- error responses ----------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """A shared error response: its status, what it means, its body's schema, its headers,
    and whether browsers get the link page instead (the link routes)."""

    status: str
    description: str
    schema: str = "Error"
    headers: Headers = field(default_factory=dict)
    page: bool = False


_ERRORS: dict[str, Refusal] = {
    "BadRequest": Refusal("400", "Malformed: not JSON, or a bad query (`InvalidQuery`, `InvalidCursor`)."),
    "CreateBadRequest": Refusal(
        "400",
        "Malformed: not JSON, empty or duplicate keys (`EmptyKeys`, `DuplicateKeys`), or a malformed "
        "Idempotency-Key (`InvalidIdempotencyKey`).",
        headers=_RATE_LIMITS,
    ),
    "Unauthorized": Refusal("401", "No API key (answered by API Gateway, as a Gateway Response)."),
    "Forbidden": Refusal(
        "403",
        "An unknown API key (answered by the authorizer), another user's download, "
        "or a type or source you may not use.",
    ),
    "NotFound": Refusal("404", "No such download (another tenant's downloads do not exist for you)."),
    "LinkNotFound": Refusal("404", "No such link."),
    "LinkPageNotFound": Refusal("404", "No such link.", page=True),
    "NotDone": Refusal("409", "The download is not DONE; `state` says what it is.", "NotDoneError"),
    "IdempotencyKeyInUse": Refusal(
        "409",
        "The first request with this Idempotency-Key is still being processed "
        "(`IdempotencyKeyInUse`): retry.",
        headers={**_RETRY_AFTER, **_RATE_LIMITS},
    ),
    "LinkConflict": Refusal(
        "409", "The download is FAILED, CANCELLED or EXPIRED: no link to it.", "NotDoneError"
    ),
    "Expired": Refusal("410", "The download expired: its file is deleted."),
    "LinkGone": Refusal(
        "410",
        "The link is used up, expired or revoked, or its file is gone (`reason`).",
        "LinkGoneError",
        {"Sunset": "LinkSunset"},
        page=True,
    ),
    "PayloadTooLarge": Refusal("413", "The body, or the number of keys in it, is too large."),
    "UnsupportedMediaType": Refusal("415", "The body must be `application/json`."),
    "UnprocessableContent": Refusal("422", "Invalid params or expiry (`InvalidParams`)."),
    "CreateUnprocessable": Refusal(
        "422",
        "Invalid params or expiry, an unknown type, or an Idempotency-Key used before with "
        "another body (`IdempotencyKeyReused`).",
        headers=_RATE_LIMITS,
    ),
    "LinkNotReady": Refusal(
        "425",
        "The download is not DONE yet: retry later.",
        "LinkNotReadyError",
        {**_RETRY_AFTER, "Sunset": "LinkSunset"},
        page=True,
    ),
    "QuotaExceeded": Refusal(
        "429",
        "You, or your tenant, have too many active downloads (`QuotaExceeded`; `scope` is "
        "`user` or `tenant`, `limit` the limit); or the stage's request rate is passed "
        "(`Throttled`: API Gateway answers it before Satchel runs, without `scope` or `limit`).",
        "QuotaError",
        {**_RETRY_AFTER, **_RATE_LIMITS},
    ),
    "Throttled": Refusal(
        "429",
        "Over the stage's request rate (`Throttled`): API Gateway answers it before Satchel runs.",
        headers=_RETRY_AFTER,
    ),
    "ServiceUnavailable": Refusal(
        "503",
        "An AWS service Satchel depends on stayed busy (`TransientError`), or the workflow could "
        "not be started (`StartFailed`): retry after `Retry-After`.",
        headers=_RETRY_AFTER,
    ),
}


def _responses(bounds: Bounds) -> dict[str, dict[str, Any]]:
    answers = {}
    for name, refusal in _ERRORS.items():
        answer = _answer(refusal.description, refusal.headers, _schema_ref(refusal.schema), PROBLEM_JSON)
        if refusal.page:
            answer["content"].update(copy.deepcopy(_HTML))
        answers[name] = answer
    return answers


# --- schemas ------------------------------------------------------------------------------


def _schemas(bounds: Bounds) -> dict[str, JsonSchema]:
    types = downloadtypes.all_types()
    return {
        "DownloadRequest": _discriminated({kind.name: _request_name(kind) for kind in types}),
        **{_request_name(kind): _typed_request(kind, bounds) for kind in types},
        **{_params_name(kind): _params(kind, bounds) for kind in types},
        **{_stored_params_name(kind): _stored_params(kind, bounds) for kind in types},
        "LinkRequest": _link_request(bounds),
        "Download": _discriminated({kind.name: _download_name(kind) for kind in types}),
        **{_download_name(kind): _download(kind) for kind in types},
        "CreatedDownload": _discriminated({kind.name: _created_name(kind) for kind in types}),
        **{_created_name(kind): _created(kind) for kind in types},
        "DownloadState": {
            "type": "string",
            "enum": [state.value for state in State],
            "description": "PENDING -> RUNNING -> DONE | FAILED | CANCELLED; DONE later becomes EXPIRED.",
        },
        "Progress": _record(Progress),
        "Artifact": _record(Artifact, hidden=("key",)),
        "DownloadError": _record(ErrorInfo),
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
            max_uses=_max_uses(bounds),
        ),
        "LinkFacts": _object(
            link_id={"type": "string"},
            download_id={"type": "string"},
            filename={"type": "string"},
            size=_COUNT,
            content_type={"type": "string"},
            sha256={"type": "string"},
            expires_at=_TIMESTAMP,
            artifact_expires_at=_NULLABLE_TIMESTAMP,
            max_uses=_max_uses(bounds),
            uses=_COUNT,
            uses_left=_COUNT,
            claim_window_seconds=_COUNT,
            claim=_schema_ref("LinkClaimAction"),
        ),
        "LinkClaimAction": _object(method={"type": "string", "enum": ["POST"]}, url={"type": "string"}),
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
            "properties": {"items": {"type": "array", "items": _schema_ref("LinkSummary")}},
        },
        "LinkSummary": _object(
            link_id={"type": "string"},
            created_at=_TIMESTAMP,
            expires_at=_TIMESTAMP,
            max_uses=_max_uses(bounds),
            uses=_COUNT,
            revoked={"type": "boolean"},
        ),
        "TypeList": {
            "type": "object",
            "required": ["items"],
            "properties": {"items": {"type": "array", "items": _schema_ref("DownloadType")}},
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
                        last_attempt_at=_NULLABLE_TIMESTAMP,
                        next_attempt_at=_NULLABLE_TIMESTAMP,
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
        "Health": _object(status={"type": "string", "enum": ["ok"]}),
        "DryRunPlan": _object(
            dry_run={"type": "boolean", "enum": [True]},
            type={"type": "string"},
            filename={"type": "string"},
            totals=_object(files_total=_COUNT, bytes_total=_COUNT, rows_total=_COUNT),
            segments={
                "type": ["integer", "null"],
                "minimum": 0,
                "description": "1: one Build run; more: built in parallel; 0: it would not start; "
                "null: not known (the listing stopped at the dry run's time budget).",
            },
            parallel={"type": ["boolean", "null"]},
            complete={"type": "boolean", "description": "False: the totals are lower bounds."},
            would_start={"type": "boolean"},
            limits={
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "description": "The type's limits as configured (max_files, max_content_bytes, max_rows...).",
            },
            problems={
                "type": "array",
                "items": _schema_ref("Error"),
                "description": "Each limit the run would break, or what would fail it, with its Code.",
            },
            skipped={"type": "array", "items": {"type": "string"}},
        ),
        **_error_schemas(),
    }


_TIMESTAMP: JsonSchema = {
    "type": "string",
    "format": "date-time",
    "description": "RFC 3339, UTC (`2026-11-23T09:00:00.000Z`).",
}
_NULLABLE_TIMESTAMP: JsonSchema = {**_TIMESTAMP, "type": ["string", "null"]}
_COUNT: JsonSchema = {"type": "integer", "minimum": 0}


def _object(**properties: JsonSchema) -> JsonSchema:
    """An object with all these properties, and maybe more."""
    return {"type": "object", "required": list(properties), "properties": properties}


def _discriminated(variants: dict[str, str]) -> JsonSchema:
    """One of the per-type schemas, chosen by `type` (the type's name)."""
    return {
        "oneOf": [_schema_ref(name) for name in variants.values()],
        "discriminator": {
            "propertyName": "type",
            "mapping": {kind: f"{_SCHEMAS}{name}" for kind, name in variants.items()},
        },
    }


def _name(kind: downloadtypes.DownloadType) -> str:
    return kind.name.capitalize()


def _request_name(kind: downloadtypes.DownloadType) -> str:
    return f"{_name(kind)}DownloadRequest"


def _params_name(kind: downloadtypes.DownloadType) -> str:
    return f"{_name(kind)}Params"


def _stored_params_name(kind: downloadtypes.DownloadType) -> str:
    return f"{_name(kind)}DownloadParams"


def _download_name(kind: downloadtypes.DownloadType) -> str:
    return f"{_name(kind)}Download"


def _created_name(kind: downloadtypes.DownloadType) -> str:
    return f"Created{_name(kind)}Download"


def _max_uses(bounds: Bounds) -> JsonSchema:
    return {"type": "integer", "minimum": 1, "maximum": bounds.link_max_uses}


def _link_request(bounds: Bounds) -> JsonSchema:
    """links.REQUEST_SCHEMA with the stage's bounds and defaults (links.check_request's checks)."""
    schema = copy.deepcopy(links.REQUEST_SCHEMA)
    properties = schema["properties"]
    properties["expires_in"] |= {
        "maximum": bounds.link_max_ttl_seconds,
        "default": bounds.link_default_ttl_seconds,
    }
    properties["max_uses"] |= {"maximum": bounds.link_max_uses, "default": 1}
    return schema


def _params(kind: downloadtypes.DownloadType, bounds: Bounds) -> JsonSchema:
    """The type's params schema; the zip type's key lists with the stage's limit (TooManyKeys)."""
    schema = copy.deepcopy(kind.params_schema)
    for name in ("keys", "prefixes"):
        listed = schema.get("properties", {}).get(name)
        if listed is not None and listed.get("type") == "array":
            listed["maxItems"] = bounds.max_keys
            listed["description"] = (
                f"{listed.get('description', '')} Keys and prefixes together: at most {bounds.max_keys} "
                "(413 TooManyKeys)."
            ).strip()
    return schema


def _stored_params(kind: downloadtypes.DownloadType, bounds: Bounds) -> JsonSchema:
    """A download's `params` as the server keeps them: what was asked, with the defaults filled
    in and what it resolved added (an export's `columns`, full keys), so more properties may be
    there than a request may send."""
    schema = _params(kind, bounds)
    schema.pop("additionalProperties", None)
    schema["description"] = "The request's params, with the defaults and what the server resolved."
    return schema


def _typed_request(kind: downloadtypes.DownloadType, bounds: Bounds) -> JsonSchema:
    """requests.REQUEST_SCHEMA narrowed to one type: `type` is its name, `params` its schema,
    with the stage's bounds and defaults (requests.create_request's checks)."""
    schema = copy.deepcopy(requests.REQUEST_SCHEMA)
    properties = schema["properties"]
    properties["type"] = {"type": "string", "const": kind.name, "description": kind.description}
    properties["params"] = _schema_ref(_params_name(kind))
    properties["expires_in"] |= {
        "minimum": bounds.retention_min_seconds,
        "maximum": bounds.retention_max_seconds,
        "default": bounds.retention_default_seconds,
    }
    properties["link"] = _schema_ref("LinkRequest")
    return schema


def _download_properties(kind: downloadtypes.DownloadType) -> dict[str, JsonSchema]:
    """models.Download.to_api() (tests/unit/api/test_openapi.py checks the two have the same keys)."""
    return {
        "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "type": {"type": "string", "const": kind.name},
        "params": _schema_ref(_stored_params_name(kind)),
        "filename": {"type": "string"},
        "tenant": {"type": "string"},
        "user_id": {"type": "string"},
        "state": _schema_ref("DownloadState"),
        "progress": _schema_ref("Progress"),
        "artifact": _nullable(_schema_ref("Artifact")),
        "error": _nullable(_schema_ref("DownloadError")),
        "created_at": _TIMESTAMP,
        "started_at": _NULLABLE_TIMESTAMP,
        "finished_at": _NULLABLE_TIMESTAMP,
        "expires_at": _NULLABLE_TIMESTAMP,
        "callback_url": {"type": ["string", "null"]},
        "client_reference": {"type": ["string", "null"], "description": "Echoed in every event."},
        "url": {"type": ["string", "null"], "description": "The file endpoint's path once DONE."},
        "skipped": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Keys of sources left out because they were missing (zip `on_missing: skip`).",
        },
    }


def _download(kind: downloadtypes.DownloadType) -> JsonSchema:
    schema = _object(**_download_properties(kind))
    schema["description"] = f"A `{kind.name}` download: {kind.description}"
    return schema


def _created(kind: downloadtypes.DownloadType) -> JsonSchema:
    """The download as its creation answers it: with `link` when one was asked for."""
    schema = _download(kind)
    schema["properties"]["link"] = _schema_ref("Link")
    return schema


def _record(cls: type[Any], hidden: tuple[str, ...] = ()) -> JsonSchema:
    """A dataclass of models.py with `str` and `int` fields, as asdict() shows it."""
    types = {"str": {"type": "string"}, "int": _COUNT}
    shown = (field for field in dataclasses.fields(cls) if field.name not in hidden)
    return _object(**{field.name: types[_type_name(field.type)] for field in shown})


def _type_name(annotation: Any) -> str:
    # A string under `from __future__ import annotations`, else the class itself.
    return annotation if isinstance(annotation, str) else str(annotation.__name__)


def _problem(
    description: str, optional: dict[str, JsonSchema] | None = None, **details: JsonSchema
) -> JsonSchema:
    """An RFC 9457 problem with Satchel's `Code` and `Message`, and these details beside
    (`optional` ones too, where some answers have them)."""
    properties: dict[str, JsonSchema] = {
        "type": {
            "type": "string",
            "format": "uri",
            "description": f"`{PROBLEM_TYPES}<Code>`: the manual's entry for the code.",
        },
        "title": {"type": "string", "description": "The code in words."},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "What went wrong, for this request (`Message`)."},
        "Code": {"type": "string", "description": "The error's stable name."},
        "Message": {"type": "string"},
    }
    schema = {
        "type": "object",
        "description": description,
        # `status` is optional (RFC 9457): API Gateway's catch-all answers cannot name theirs.
        "required": [name for name in [*properties, *details] if name != "status"],
        "properties": {**properties, **details, **(optional or {})},
    }
    return schema


def _error_schemas() -> dict[str, JsonSchema]:
    states = _schema_ref("DownloadState")
    return {
        "Error": _problem("A refusal; some add details (`path`, `key`, `limit`)."),
        "NotDoneError": _problem(
            "The download is not DONE (or never will be): `state` says what it is.", state=states
        ),
        "LinkGoneError": _problem(
            "The link cannot be claimed any more; `state` is the download's when it is gone.",
            {"state": {"type": "string"}},
            reason={"type": "string", "enum": ["used_up", "expired", "revoked", "download_gone"]},
        ),
        "LinkNotReadyError": _problem(
            "The link's download is not DONE yet.", state=states, progress=_schema_ref("Progress")
        ),
        # Optional: API Gateway's throttle answers createDownload's 429 too (`Throttled`,
        # without them), and a client reads it by this schema.
        "QuotaError": _problem(
            "Too many downloads PENDING or RUNNING at once (`QuotaExceeded`: `scope` and `limit` "
            "say whose and how many), or over the stage's request rate (`Throttled`, API "
            "Gateway's answer: neither).",
            {
                "scope": {"type": "string", "enum": ["user", "tenant"]},
                "limit": {"type": "integer", "minimum": 0},
            },
        ),
    }


# --- API keys (a tenant admin's; chalicelib/api/keys.py) -------------------------------------


def _key_paths() -> dict[str, dict[str, Operation]]:
    key = _object(
        id={"type": "string", "pattern": "^[0-9a-f]{16}$"},
        prefix={"type": "string", "description": "The key's first characters, to tell keys apart."},
        tenant={"type": "string"},
        user_id={"type": "string"},
        roles={"type": "array", "items": {"type": "string"}},
        created_at={"type": "string", "format": "date-time"},
        expires_at=_nullable({"type": "string", "format": "date-time"}),
        disabled={"type": "boolean"},
        last_used_at=_nullable({"type": "string", "format": "date-time"}),
    )
    # One object, not an allOf with sibling properties: generators drop such a model.
    issued = copy.deepcopy(key)
    issued["properties"]["api_key"] = {"type": "string", "description": "The key: shown this once only."}
    issued["required"] = [*issued.get("required", []), "api_key"]
    page = {"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": key}}}
    not_found = {"404": _answer("No such key in your tenant.", None, _schema_ref("Error"))}
    # A body is read before the caller's role is checked: a malformed one answers first.
    body_refusals = _refusals("BadRequest", "PayloadTooLarge", "UnsupportedMediaType", "UnprocessableContent")
    key_id = {"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}
    rotation = copy.deepcopy(apikeys.ROTATION_SCHEMA)
    return {
        "/keys": {
            "post": _operation(
                "createKey",
                "Issue an API key in your tenant (tenant admins)",
                {
                    **_ok("The key, shown once.", issued, "201", _NO_STORE),
                    **body_refusals,
                },
                body=copy.deepcopy(apikeys.REQUEST_SCHEMA),
                body_required=False,
                tag="tenant",
            ),
            "get": _operation(
                "listKeys",
                "Your tenant's API keys, never the keys (tenant admins)",
                _ok("The keys, newest first.", page),
                tag="tenant",
            ),
        },
        "/keys/{key_id}/rotate": {
            "post": _operation(
                "rotateKey",
                "Issue a new key for the same user and roles; this one is disabled, or expires "
                "after `grace_seconds` (tenant admins)",
                {**_ok("The new key, shown once.", issued, "201", _NO_STORE), **not_found, **body_refusals},
                parameters=[key_id],
                body=rotation,
                body_required=False,
                tag="tenant",
            )
        },
        "/keys/{key_id}": {
            "delete": _operation(
                "disableKey",
                "Disable an API key (refused from the authorizer's cache TTL on)",
                {**_ok("The disabled key.", key), **not_found},
                parameters=[key_id],
                tag="tenant",
            )
        },
    }
