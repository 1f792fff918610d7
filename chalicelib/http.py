"""HTTP shapes: JSON bodies in, JSON answers and `{"Code", "Message"}` errors out."""

from __future__ import annotations

import json
import logging
from typing import Any

from chalice.app import Response

from chalicelib import disclosure
from chalicelib.errors import MalformedRequest, RequestTooLarge, SatchelError

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 256 * 1024


def json_body(raw: str | bytes | None) -> Any:
    if not raw:
        raise MalformedRequest("the request needs a JSON body")
    if len(raw) > MAX_BODY_BYTES:
        raise RequestTooLarge(f"the request body exceeds {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
        # Lone surrogates ("\ud800") parse, but no store or hash can encode them.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
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
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def error_response(error: Exception) -> Response:
    """Domain errors answer with their own status and code; anything else is a 500 whose
    message says nothing of the error (it may carry ARNs, the account id): the detail is
    logged beside the reference the message quotes."""
    if isinstance(error, SatchelError):
        return respond(error.body(), error.status, error.headers())
    reference = disclosure.new_reference()
    log.exception("unhandled error; reference %s", reference)
    message = f"an internal error occurred; reference {reference}"
    return respond({"Code": disclosure.INTERNAL_ERROR, "Message": message}, 500)
