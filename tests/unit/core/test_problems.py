"""Every error code an answer can carry is an RFC 9457 problem type documented in docs/errors.md.

The codes are collected from where they are made: the domain errors (chalicelib/core/errors.py),
the generic 500, API Gateway's Gateway Responses (deploy/template.yaml), the local server's
405 and Chalice's own answers, and the codes a FAILED download's `error.code` may have.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest
from chalice.app import Response

from chalicelib.api.http import PROBLEM_JSON, as_problem, error_response
from chalicelib.core import disclosure, errors
from satchel_local.server import gateway_responses

DOCS = Path(__file__).resolve().parents[3] / "docs" / "errors.md"
ROW = re.compile(r"^\| `(\w+)` \| ([^|]*) \| `([^`]+)` \| [^|]+ \|$", re.MULTILINE)
CHALICE_CODES = {"MethodNotAllowedError": 405, "UnsupportedMediaType": 415, "BadRequest": 400}
LOCAL_SERVER_CODES = {"MethodNotAllowed": 405}
FAILED_ONLY_CODES = {"Timeout"}  # set by the sweep on an overdue download, never raised


def domain_errors() -> dict[str, int]:
    return {
        name: cls.status
        for name, cls in vars(errors).items()
        if inspect.isclass(cls) and issubclass(cls, errors.SatchelError) and cls is not errors.SatchelError
        if not name.startswith("_")
    }


def gateway_codes() -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for response in gateway_responses().values():
        body = response["ResponseTemplates"]["application/json"].replace(
            "$context.error.messageString", '"m"'
        )
        status = response.get("StatusCode")
        codes[json.loads(body)["Code"]] = int(status) if status else None
    return codes


def documented() -> dict[str, tuple[str, str]]:
    return {
        code: (status.strip(), uri) for code, status, uri in ROW.findall(DOCS.read_text(encoding="utf-8"))
    }


def test_every_code_has_its_documented_type_uri() -> None:
    codes = {
        **domain_errors(),
        disclosure.INTERNAL_ERROR: 500,
        "InternalServerError": 500,
        **CHALICE_CODES,
        **LOCAL_SERVER_CODES,
        **gateway_codes(),
        **dict.fromkeys(FAILED_ONLY_CODES),
    }
    assert len(domain_errors()) > 30  # the collection found the classes
    rows = documented()
    assert sorted(set(codes) - set(rows)) == [], "codes without a row in docs/errors.md"
    assert sorted(set(rows) - set(codes)) == [], "rows in docs/errors.md for no code"
    for code, (_, uri) in rows.items():
        assert uri == errors.problem_type(code) == f"https://satchel.dev/problems/{code}"
    for code, status in domain_errors().items():
        assert str(status) in rows[code][0].split(", "), code


@pytest.mark.parametrize("code", sorted(domain_errors()))
def test_each_domain_error_answers_a_problem(code: str) -> None:
    cls = getattr(errors, code)
    error = (
        cls("what went wrong", retry_after=3)
        if issubclass(cls, errors._RetryLater)
        else cls("what went wrong")
    )
    response = error_response(error)
    assert response.status_code == cls.status
    assert response.headers["Content-Type"] == PROBLEM_JSON
    body = response.body
    assert body["Code"] == code
    assert body["Message"] == body["detail"] == "what went wrong"
    assert body["type"] == errors.problem_type(code)
    assert body["status"] == cls.status
    assert body["title"] == errors.problem_title(code)
    if cls.status in (425, 429, 503):
        assert int(str(response.headers["Retry-After"])) >= 1


def test_titles_are_the_code_in_words() -> None:
    assert errors.problem_title("DownloadNotFound") == "Download not found"
    assert errors.problem_title("InvalidIdempotencyKey") == "Invalid idempotency key"
    assert errors.problem_title("Forbidden") == "Forbidden"


def test_chalices_own_errors_become_problems_and_keep_their_headers() -> None:
    chalice = Response(
        body={"Code": "MethodNotAllowedError", "Message": "Unsupported method: PUT"},
        status_code=405,
        headers={"Allow": "GET", "Content-Type": "application/json"},
    )
    answer = as_problem(chalice)
    assert answer.headers == {"Allow": "GET", "Content-Type": PROBLEM_JSON}
    assert answer.body == errors.problem("MethodNotAllowedError", 405, "Unsupported method: PUT")
    ok = Response(body={"Code": "not an error"}, status_code=200)
    assert as_problem(ok).body == {"Code": "not an error"}
