"""Each sign-in mode, through the app, to the same principal:

- `oidc`: the bearer authorizer checks a JWT signed by a loopback identity provider, and the
  route acts as the token's tenant and user;
- `iam`: API Gateway has verified SigV4 (AWS_IAM); the request reaches the API handler with
  the caller's `requestContext.identity.userArn`, which the mapping table turns into a
  principal, or refuses 403 `UnmappedPrincipal`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from app import app
from chalicelib.core.models import Principal
from chalicelib.runtime import Runtime
from satchel_local.lambdas import Context
from tests.support.identityprovider import AUDIENCE, ISSUER, IdentityProvider, serving
from tests.support.stack import Satchel

ROLE = "arn:aws:iam::123456789012:role/reporting"
SESSION = "arn:aws:sts::123456789012:assumed-role/reporting/nightly-job"


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[IdentityProvider]:
    with serving() as served:
        monkeypatch.setenv("SATCHEL_AUTH_MODE", "oidc")
        monkeypatch.setenv("SATCHEL_OIDC_ISSUER", ISSUER)
        monkeypatch.setenv("SATCHEL_OIDC_AUDIENCE", AUDIENCE)
        monkeypatch.setenv("SATCHEL_OIDC_JWKS_URL", served.url)
        yield served


def test_an_oidc_stage_acts_as_the_tokens_principal(satchel: Satchel, provider: IdentityProvider) -> None:
    satchel.put_source("acme/oidc/a.txt", b"a")
    token = provider.token(sub="erin", tenant="acme")
    bearer = {"Authorization": f"Bearer {token}"}
    created = satchel.call(
        "POST", "/downloads", None, {"type": "zip", "params": {"keys": ["acme/oidc/a.txt"]}}, headers=bearer
    )
    assert created.status == 202, created.body
    assert (created.json["tenant"], created.json["user_id"]) == ("acme", "erin")

    # Another tenant's token sees none of it; an expired one and an API key are refused.
    other = {"Authorization": f"Bearer {provider.token(sub='dave', tenant='globex')}"}
    assert satchel.call("GET", f"/downloads/{created.json['id']}", None, headers=other).status == 404
    expired = {"Authorization": f"Bearer {provider.token(lifetime=-300)}"}
    assert satchel.call("GET", "/downloads", None, headers=expired).status == 403
    assert satchel.call("GET", "/downloads", "alice").status == 403  # an API key is no JWT


def _iam_event(method: str, path: str, arn: str | None, body: Any = None) -> dict[str, Any]:
    identity = {"sourceIp": "127.0.0.1", "userArn": arn, "caller": "AROAEXAMPLE:nightly-job" if arn else None}
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": {"host": "api.example.test", "content-type": "application/json"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {"resourcePath": path, "httpMethod": method, "identity": identity, "stage": "api"},
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


def _call(event: dict[str, Any]) -> tuple[int, Any]:
    answer = app(event, Context("satchel-api", 30))
    return answer["statusCode"], json.loads(answer["body"]) if answer["body"] else None


def test_an_iam_stage_maps_the_callers_role_to_its_principal(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SATCHEL_AUTH_MODE", "iam")
    Runtime.from_env().identities.map(ROLE, Principal("acme", "reporting", frozenset({"admin"})))
    satchel.put_source("acme/iam/a.txt", b"a")

    status, created = _call(
        _iam_event("POST", "/downloads", SESSION, {"type": "zip", "params": {"keys": ["acme/iam/a.txt"]}})
    )
    assert status == 202, created
    assert (created["tenant"], created["user_id"]) == ("acme", "reporting")
    # The admin role came along: the tenant's keys are the role's to list.
    status, keys = _call(_iam_event("GET", "/keys", SESSION))
    assert status == 200
    assert {item["tenant"] for item in keys["items"]} == {"acme"}


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:sts::123456789012:assumed-role/unmapped/session",
        "arn:aws:iam::999999999999:role/reporting",  # the same name in another account
        None,  # no IAM caller at all
        "not-an-arn",
    ],
)
def test_an_iam_stage_refuses_unmapped_callers(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, arn: str | None
) -> None:
    monkeypatch.setenv("SATCHEL_AUTH_MODE", "iam")
    Runtime.from_env().identities.map(ROLE, Principal("acme", "reporting"))
    status, body = _call(_iam_event("GET", "/downloads", arn))
    assert (status, body["Code"]) == (403, "UnmappedPrincipal")
    assert "123456789012" not in body["Message"]
    assert "999999999999" not in body["Message"]
