"""HTTP shapes: JSON bodies in; JSON answers, and errors as RFC 9457 problems
(`application/problem+json`, chalicelib/core/errors.py: problem) that keep `Code` and `Message`."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from chalice.app import Request, Response

from chalicelib.core import disclosure
from chalicelib.core.errors import (
    MalformedRequest,
    RequestTooLarge,
    SatchelError,
    TransientError,
    is_transient,
    problem,
)
from chalicelib.core.models import check_numbers

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 256 * 1024
PROBLEM_JSON = "application/problem+json"
# Statuses that pass with time: their answers always say when to come back (RFC 9110 10.2.3).
RETRY_STATUSES = frozenset({425, 429, 503})
DEFAULT_RETRY_AFTER_SECONDS = 5
# On every answer: many carry a token, a presigned URL or someone's download, and none is
# worth caching, leaking through a Referer, or sniffed into something else than its type.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def json_body(raw: str | bytes | None) -> Any:
    if not raw:
        raise MalformedRequest("the request needs a JSON body")
    if len(raw) > MAX_BODY_BYTES:
        raise RequestTooLarge(f"the request body exceeds {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
        # Lone surrogates ("\ud800") parse, but no store or hash can encode them.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
        check_numbers(body)  # 1e400 parses (as inf), but DynamoDB cannot store it
    except (ValueError, UnicodeError) as error:
        raise MalformedRequest(f"the request body is not valid JSON: {error}") from None
    except RecursionError:
        raise MalformedRequest("the request body is nested too deeply") from None
    return body


def optional_json_body(raw: str | bytes | None) -> Any:
    """A JSON body where none means `{}`."""
    return json_body(raw) if raw else {}


def respond(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        body=body,
        status_code=status,
        headers={"Content-Type": "application/json", **SECURITY_HEADERS, **(headers or {})},
    )


def security_headers(request: Request, get_response: Callable[[Request], Response]) -> Response:
    """Chalice HTTP middleware: SECURITY_HEADERS on every answer a route gives, including the
    ones built without respond() (204, 302) and Chalice's own (405, 415), which it also
    turns into problems like every other error."""
    response = as_problem(get_response(request))
    present = {name.lower() for name in response.headers}
    for name, value in SECURITY_HEADERS.items():
        if name.lower() not in present:
            response.headers[name] = value
    return response


def error_response(error: Exception) -> Response:
    """Domain errors answer with their own status and code. An AWS service that stayed busy
    or failing through botocore's retries (throttled, a 5xx, not reached: `is_transient`) is
    a 503 `TransientError` with Retry-After, which a client may simply retry; anything else
    is a 500. Neither message says anything of the error (it may carry ARNs, the account id,
    the service and operation): the detail is logged beside the reference the message quotes."""
    if isinstance(error, SatchelError):
        return problem_response(error.body(), error.status, error.headers())
    reference = disclosure.new_reference()
    if is_transient(error):
        log.warning("an AWS service was busy or failing; reference %s", reference, exc_info=error)
        busy = TransientError(f"a service Satchel depends on was busy; try again (reference {reference})")
        return problem_response(busy.body(), busy.status)
    log.exception("unhandled error; reference %s", reference)
    message = f"an internal error occurred; reference {reference}"
    return problem_response(problem(disclosure.INTERNAL_ERROR, 500, message), 500)


def problem_response(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    """A problem answer; one whose status passes with time carries Retry-After."""
    extra = {"Content-Type": PROBLEM_JSON, **(headers or {})}
    if status in RETRY_STATUSES and "Retry-After" not in extra:
        extra["Retry-After"] = str(DEFAULT_RETRY_AFTER_SECONDS)
    return respond(body, status, extra)


def as_problem(response: Response) -> Response:
    """Chalice's own error answers ({"Code", "Message"}: MethodNotAllowedError, UnsupportedMediaType,
    BadRequest, InternalServerError) as problems; any other answer as it is."""
    body = response.body
    if response.status_code < 400 or not isinstance(body, dict) or "type" in body:
        return response
    if not isinstance(body.get("Code"), str) or not isinstance(body.get("Message"), str):
        return response
    details = {name: value for name, value in body.items() if name not in ("Code", "Message")}
    response.body = problem(body["Code"], response.status_code, body["Message"], **details)
    headers = {name: value for name, value in response.headers.items() if name.lower() != "content-type"}
    response.headers = {**headers, "Content-Type": PROBLEM_JSON}
    return response
