"""Satchel's wiring: routes, the authorizer and the workflow's Lambda functions.

Each entry point parses, calls one chalicelib function, and shapes the answer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from chalice.app import (
    AuthRequest,
    AuthResponse,
    Chalice,
    CloudWatchEvent,
    IAMAuthorizer,
    Rate,
    Request,
    Response,
    SQSEvent,
)

from chalicelib.api.http import error_response, json_body, optional_json_body, respond, security_headers
from chalicelib.api.tenants import SECRET_PATH
from chalicelib.core import observability
from chalicelib.core.settings import EventSources, auth_mode
from chalicelib.triggers import senders
from chalicelib.workflow.payloads import (
    AssembleRun,
    Assembling,
    BuildRun,
    Digested,
    Digesting,
    DigestRun,
    Failed,
    FailInput,
    Finished,
    Prepared,
    SegmentBuilt,
    SegmentInput,
    Start,
)

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

    from chalicelib.core.models import Download, Principal
    from chalicelib.runtime import Runtime

# A cold start pays for what its own function runs, not for all of Satchel: each Lambda
# function imports this whole file, so only the wiring loads with it (Chalice registers
# routes and functions at import time), and each handler imports its chalicelib modules
# when it first runs (docs/performance.md, "Cold start"). tests/unit/test_cold_start.py
# holds which modules each entry point may load.

# Logs are Powertools' JSON lines, not Chalice's; every handler is observed
# (chalicelib/core/observability.py).
app = Chalice(app_name="satchel", configure_logs=False)
app.register_middleware(observability.middleware, "all")
app.register_middleware(security_headers, "http")  # Cache-Control: no-store and more, on every answer

# Event sources are fixed when the app is packaged (chalicelib/core/settings.py: EventSources).
SOURCES = EventSources.from_env()


def current_runtime() -> Runtime:
    """Settings, clients and stores, built once per environment (chalicelib/runtime.py)."""
    from chalicelib.runtime import Runtime

    return Runtime.from_env()


# API keys or OIDC tokens (SATCHEL_AUTH_MODE; chalicelib/api/auth.py). API Gateway caches an
# answer for ttl_seconds: a disabled key, or a token past its expiry, may pass that long.
@app.authorizer(ttl_seconds=60)
def bearer(request: AuthRequest) -> AuthResponse | dict[str, Any]:
    from chalicelib.api import auth

    verdict = auth.authorize(current_runtime(), request.token)
    if verdict.principal is None:
        return auth.deny(request.method_arn, verdict)
    return AuthResponse(
        routes=["*"],
        principal_id=f"{verdict.principal.tenant}/{verdict.principal.user_id}",
        context=auth.to_context(verdict.principal),
    )


# Fixed when the app is packaged: a stage on IAM sign-in has API Gateway check SigV4 (AWS_IAM).
signed_in = IAMAuthorizer() if auth_mode() == "iam" else bearer


def api(view: Callable[..., Response]) -> Callable[..., Response]:
    """Answer domain errors with their status and `{"Code", "Message"}`."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        try:
            return view(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - error_response logs and 500s the unknown
            return error_response(error)

    return wrapper


def request() -> Request:
    current = app.current_request
    assert current is not None, "only called while a route runs"
    return current


def caller() -> Principal:
    from chalicelib.api import auth

    return auth.caller(current_runtime(), request().context)


def _download(runtime: Runtime, download: Download, status: int = 200, **headers: str) -> Response:
    body = download.to_api(runtime.settings.api_prefix)
    return respond(body, status, {**_sunset(download.expires_at), **headers})


def _sunset(expires_at: str | None) -> dict[str, str]:
    """`Sunset` (RFC 8594): when the download's file goes, once it has one."""
    from chalicelib.api import linkpage

    return {"Sunset": linkpage.http_date(expires_at)} if expires_at else {}


def base_url(runtime: Runtime) -> str:
    """Where this API is reached from outside: the configured public URL, else the request's host."""
    if runtime.settings.public_url:
        return runtime.settings.public_url
    headers = request().headers
    host = headers.get("host")
    if not host:
        return runtime.settings.api_prefix
    scheme = headers.get("x-forwarded-proto", "http" if host.startswith(("127.", "localhost")) else "https")
    return f"{scheme}://{host}{runtime.settings.api_prefix}"


@app.route("/health", methods=["GET"])
@api
def health() -> Response:
    return respond({"status": "ok"})


@app.route("/openapi.json", methods=["GET"])
@api
def openapi_document() -> Response:
    from chalicelib.api import openapi

    settings = current_runtime().settings
    return respond(openapi.document(settings.api_prefix or "/", settings))


@app.route("/types", methods=["GET"], authorizer=signed_in)
@api
def list_types() -> Response:
    from chalicelib import downloadtypes

    return respond({"items": [kind.describe() for kind in downloadtypes.all_types()]})


@app.route("/downloads", methods=["POST"], authorizer=signed_in)
@api
def create_download() -> Response:
    from chalicelib.api import quotas

    runtime = current_runtime()
    return quotas.with_quota_headers(runtime, caller(), lambda: _create_download(runtime))


def _create_download(runtime: Runtime) -> Response:
    from chalicelib.api import downloads, dryrun
    from chalicelib.storage import idempotency

    body = json_body(request().raw_body)
    if dryrun.asked(body):  # the plan, and nothing started, stored or counted
        return respond(dryrun.plan(runtime, caller(), body).to_api())
    key = idempotency.check_key(request().headers.get(idempotency.HEADER))
    created = downloads.create(runtime, caller(), body, key)
    answer = created.download.to_api(runtime.settings.api_prefix)
    if created.link is not None:
        answer["link"] = created.link.to_api(base_url(runtime))
    headers = {"Location": f"{runtime.settings.api_prefix}/downloads/{created.download.id}"}
    if created.replayed:
        headers["Idempotent-Replayed"] = "true"
    return respond(answer, 202, headers)


@app.route("/downloads", methods=["GET"], authorizer=signed_in)
@api
def list_downloads() -> Response:
    from chalicelib.api import downloads

    runtime = current_runtime()
    page = downloads.list_own(runtime, caller(), dict(request().query_params or {}))
    items = [item.to_api(runtime.settings.api_prefix) for item in page.items]
    return respond({"items": items, "next_cursor": page.next_cursor})


@app.route("/downloads/{download_id}", methods=["GET"], authorizer=signed_in)
@api
def get_download(download_id: str) -> Response:
    from chalicelib.api import downloads

    runtime = current_runtime()
    return _download(runtime, downloads.get(runtime, caller(), download_id))


@app.route("/downloads/{download_id}", methods=["DELETE"], authorizer=signed_in)
@api
def delete_download(download_id: str) -> Response:
    from chalicelib.api import downloads

    runtime = current_runtime()
    cancelled = downloads.cancel_or_delete(runtime, caller(), download_id)
    if cancelled is None:
        return Response(body="", status_code=204)
    return _download(runtime, cancelled, 202)


@app.route("/downloads/{download_id}/file", methods=["GET"], authorizer=signed_in)
@api
def download_file(download_id: str) -> Response:
    from chalicelib.api import downloads
    from chalicelib.storage.audit import Action

    runtime = current_runtime()
    ttl = runtime.settings.file_url_ttl_seconds
    url = downloads.file_url(runtime, caller(), download_id, ttl, Action.FETCHED_FILE)
    headers: dict[str, str | list[str]] = {"Location": url.url, "Cache-Control": "no-store"}
    headers.update(_sunset(url.artifact_expires_at))
    return Response(body="", status_code=302, headers=headers)


@app.route("/downloads/{download_id}/url", methods=["GET"], authorizer=signed_in)
@api
def download_url(download_id: str) -> Response:
    from chalicelib.api import downloads
    from chalicelib.storage.audit import Action

    runtime = current_runtime()
    ttl = runtime.settings.json_url_ttl_seconds
    url = downloads.file_url(runtime, caller(), download_id, ttl, Action.FETCHED_URL)
    headers = {"Cache-Control": "no-store", **_sunset(url.artifact_expires_at)}
    return respond({"url": url.url, "expires_at": url.expires_at}, headers=headers)


@app.route("/downloads/{download_id}/links", methods=["POST"], authorizer=signed_in)
@api
def create_link(download_id: str) -> Response:
    from chalicelib.api import links

    runtime = current_runtime()
    issued = links.create(runtime, caller(), download_id, optional_json_body(request().raw_body))
    return respond(issued.to_api(base_url(runtime)), 201, {"Cache-Control": "no-store"})


@app.route("/downloads/{download_id}/links", methods=["GET"], authorizer=signed_in)
@api
def list_links(download_id: str) -> Response:
    from chalicelib.api import links

    return respond({"items": links.list_for_owner(current_runtime(), caller(), download_id)})


@app.route("/downloads/{download_id}/deliveries", methods=["GET"], authorizer=signed_in)
@api
def list_deliveries(download_id: str) -> Response:
    from chalicelib.api import deliveries

    return respond({"items": deliveries.list_for_owner(current_runtime(), caller(), download_id)})


# Reading a link never spends a use (previewers and scanners read every link); a claim does.
@app.route("/links/{token}", methods=["GET", "HEAD"])
@api
def read_link(token: str) -> Response:
    from chalicelib.api import linkpage, links

    runtime = current_runtime()
    headers = request().headers
    reading = links.read(runtime, token, linkpage.presented_claim(headers))
    url = f"{base_url(runtime)}/links/{token}"
    return linkpage.answer(reading, headers.get("accept"), url, head=request().method == "HEAD")


# Any body type: a form posts x-www-form-urlencoded, curl and wget often post none at all.
@app.route("/links/{token}", methods=["POST"], content_types=["*/*"])
@api
def claim_link(token: str) -> Response:
    from chalicelib.api import linkpage, links

    runtime = current_runtime()
    headers = request().headers
    outcome = links.claim(runtime, token, linkpage.presented_claim(headers))
    url = f"{base_url(runtime)}/links/{token}"
    if isinstance(outcome, links.Reading):
        return linkpage.answer(outcome, headers.get("accept"), url)
    secure = url.startswith("https://") or headers.get("x-forwarded-proto", "").lower() == "https"
    return linkpage.claimed(outcome, headers.get("accept"), url, secure=secure)


@app.route("/links/{token}", methods=["DELETE"], authorizer=signed_in)
@api
def revoke_link(token: str) -> Response:
    from chalicelib.api import links

    links.revoke(current_runtime(), caller(), token)
    return Response(body="", status_code=204)


# The tenant's webhook signing secret, for its admins: shown once, when made.
@app.route(SECRET_PATH, methods=["POST"], authorizer=signed_in)
@api
def rotate_webhook_secret() -> Response:
    from chalicelib.api import tenants

    issued = tenants.rotate_secret(current_runtime(), caller(), optional_json_body(request().raw_body))
    return respond(issued.to_api(), 201, {"Cache-Control": "no-store"})


@app.route(SECRET_PATH, methods=["GET"], authorizer=signed_in)
@api
def describe_webhook_secret() -> Response:
    from chalicelib.api import tenants

    return respond(tenants.describe_secret(current_runtime(), caller()).to_api())


# A tenant admin's API keys (chalicelib/api/keys.py); a key is shown once, when issued.
@app.route("/keys", methods=["POST"], authorizer=signed_in)
@api
def create_key() -> Response:
    from chalicelib.api import keys

    issued = keys.create(current_runtime(), caller(), optional_json_body(request().raw_body))
    return respond(issued.to_api(), 201)


@app.route("/keys", methods=["GET"], authorizer=signed_in)
@api
def list_keys() -> Response:
    from chalicelib.api import keys

    return respond({"items": keys.list_own(current_runtime(), caller())})


@app.route("/keys/{key_id}/rotate", methods=["POST"], authorizer=signed_in)
@api
def rotate_key(key_id: str) -> Response:
    from chalicelib.api import keys

    issued = keys.rotate(current_runtime(), caller(), key_id, optional_json_body(request().raw_body))
    return respond(issued.to_api(), 201)


@app.route("/keys/{key_id}", methods=["DELETE"], authorizer=signed_in)
@api
def disable_key(key_id: str) -> Response:
    from chalicelib.api import keys

    return respond(keys.disable(current_runtime(), caller(), key_id).to_api())


# Downloads started by events, and the sweep that cleans up after them all.
@app.on_sqs_message(queue=SOURCES.requests_queue, batch_size=10, name="requests")
def handle_requests(event: SQSEvent) -> PartialItemFailureResponse:
    from chalicelib.triggers import inbound

    return inbound.handle_messages(current_runtime(), [record.to_dict() for record in event])


# Request events: Chalice makes the rule on the default bus; deploy/template.yaml moves it to
# the request bus (SATCHEL_REQUEST_BUS), whose policy says who may put events there.
@app.on_cw_event(
    {"detail-type": [senders.REQUESTED], "source": [{"prefix": senders.REQUEST_SOURCE_PREFIX}]},
    name="events",
)
def handle_event(event: CloudWatchEvent) -> None:
    from chalicelib.triggers import inbound

    inbound.handle_event(current_runtime(), event.to_dict())


# Request manifests: S3 sends "Object Created" to the default bus only; deploy/template.yaml
# narrows the rule to the source bucket's request prefix.
@app.on_cw_event({"detail-type": [senders.OBJECT_CREATED], "source": ["aws.s3"]}, name="manifests")
def handle_manifest(event: CloudWatchEvent) -> None:
    from chalicelib.triggers import inbound

    inbound.handle_manifest(current_runtime(), event.to_dict())


# Webhooks, sent from the deliveries queue: signed, retried with backoff, then dead-lettered.
@app.on_sqs_message(queue=SOURCES.deliveries_queue, batch_size=10, name="deliver")
def deliver(event: SQSEvent) -> PartialItemFailureResponse:
    from chalicelib.notify import delivery

    return delivery.handle_messages(current_runtime(), [record.to_dict() for record in event])


@app.schedule(Rate(SOURCES.cleanup_rate_minutes, unit=Rate.MINUTES), name="cleanup")
def sweep(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib.triggers import cleanup

    return asdict(cleanup.run(current_runtime()))


# The workflow's steps; statemachine/download.asl.json names them by placeholder.
@app.lambda_function(name="prepare")
def prepare(event: Start, context: Any) -> Prepared:
    from chalicelib.workflow import steps

    return steps.prepare(current_runtime(), event)


@app.lambda_function(name="build")
def build(event: Prepared, context: Any) -> BuildRun:
    from chalicelib.workflow import steps
    from chalicelib.workflow.runs import Budget

    runtime = current_runtime()
    return steps.build(runtime, event, Budget.of(context, runtime.settings))


@app.lambda_function(name="finalize")
def finalize(event: Digested, context: Any) -> Finished:
    from chalicelib.workflow import steps

    return steps.finalize(current_runtime(), event)


@app.lambda_function(name="fail")
def fail(event: FailInput, context: Any) -> Failed:
    from chalicelib.workflow import steps

    return steps.fail(current_runtime(), event)


# Large zips in parallel segments, and the SHA-256 of artifacts S3 partly copied.
@app.lambda_function(name="build_segment")
def build_segment(event: SegmentInput, context: Any) -> SegmentBuilt:
    from chalicelib.workflow import segments
    from chalicelib.workflow.runs import Budget

    runtime = current_runtime()
    return segments.build_segment(runtime, event, Budget.of(context, runtime.settings))


@app.lambda_function(name="assemble")
def assemble(event: Assembling, context: Any) -> AssembleRun:
    from chalicelib.workflow import segments
    from chalicelib.workflow.runs import Budget

    runtime = current_runtime()
    return segments.assemble(runtime, event, Budget.of(context, runtime.settings))


@app.lambda_function(name="digest")
def digest(event: Digesting, context: Any) -> DigestRun:
    from chalicelib.workflow import digest as digests
    from chalicelib.workflow.runs import Budget

    runtime = current_runtime()
    return digests.digest(runtime, event, Budget.of(context, runtime.settings))
