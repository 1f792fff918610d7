"""The local stack's demo OIDC issuer, checked by the real authorizer's token checks
(chalicelib/api/oidc.py) with the settings the local stack gives the API, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.api import oidc
from chalicelib.core.models import Principal
from chalicelib.core.settings import SignIn
from satchel_local.issuer import DemoIssuer, TokenRequestError

NOW = 1_790_000_000


@pytest.fixture(scope="module")
def issuer() -> DemoIssuer:
    return DemoIssuer(url="http://127.0.0.1:8002")


def _sign_in(issuer: DemoIssuer) -> SignIn:
    # The environment the local stack hands the API.
    return SignIn.from_env(issuer.environment())


def _authenticate(issuer: DemoIssuer, token: str, now: int = NOW) -> Principal:
    jwks = oidc.Jwks(issuer.url + "/.well-known/jwks.json", 3600, 60, fetch=lambda url: issuer.jwks())
    return oidc.authenticate(_sign_in(issuer), token, jwks, now)


@pytest.mark.parametrize(
    ("user", "principal"),
    [
        ("alice", Principal("acme", "alice")),
        ("carol", Principal("acme", "carol", frozenset({Principal.ADMIN_ROLE}))),
        ("dave", Principal("globex", "dave")),
    ],
)
def test_a_demo_token_is_the_seeded_users_principal(
    issuer: DemoIssuer, user: str, principal: Principal
) -> None:
    assert _authenticate(issuer, issuer.token(user, now=NOW)) == principal


def test_the_settings_trust_the_issuer_and_its_claims(issuer: DemoIssuer) -> None:
    sign_in = _sign_in(issuer)
    assert (sign_in.mode, sign_in.oidc_issuer, sign_in.oidc_audience) == ("oidc", issuer.url, "satchel-local")
    assert sign_in.oidc_jwks_url == issuer.discovery()["jwks_uri"]
    assert sign_in.oidc_tenant == ""  # each token names its tenant


def test_a_negative_lifetime_is_an_expired_token(issuer: DemoIssuer) -> None:
    token = issuer.token("alice", expires_in=-61, now=NOW)
    with pytest.raises(oidc.TokenRefused) as refused:
        _authenticate(issuer, token)
    assert refused.value.code == oidc.TOKEN_EXPIRED
    # Within the authorizer's 60 s of clock skew it still passes, as any issuer's would.
    assert _authenticate(issuer, issuer.token("alice", expires_in=-59, now=NOW)).user_id == "alice"


def test_another_demo_issuers_tokens_are_refused(issuer: DemoIssuer) -> None:
    other = DemoIssuer(url=issuer.url)  # same URL, its own key: a restarted stack's tokens
    with pytest.raises(oidc.TokenRefused) as refused:
        _authenticate(issuer, other.token("alice", now=NOW))
    assert refused.value.code == oidc.INVALID_TOKEN


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "InvalidRequest"),
        (b"not json", "InvalidRequest"),
        (b'{"user": 1}', "InvalidRequest"),
        (b'{"user": "mallory"}', "UnknownUser"),
        (b'{"user": "alice", "expires_in": true}', "InvalidRequest"),
        (b'{"user": "alice", "expires_in": 86401}', "InvalidRequest"),
        (b'{"user": "alice", "expires_in": -86401}', "InvalidRequest"),
    ],
)
def test_a_bad_token_request_is_refused_with_a_code(issuer: DemoIssuer, body: bytes, code: str) -> None:
    with pytest.raises(TokenRequestError) as refused:
        issuer.answer_token_request(body)
    assert refused.value.code == code


def test_a_token_request_answers_an_id_token(issuer: DemoIssuer) -> None:
    answer: dict[str, Any] = issuer.answer_token_request(b'{"user": "bob", "expires_in": 120}')
    assert (answer["token_type"], answer["expires_in"]) == ("Bearer", 120)
    assert oidc.principal_of(_sign_in(issuer), _claims(issuer, answer["id_token"])).user_id == "bob"


def _claims(issuer: DemoIssuer, token: str) -> dict[str, Any]:
    jwks = oidc.Jwks("unused", 3600, 60, fetch=lambda url: issuer.jwks())
    return oidc.verify(_sign_in(issuer), token, jwks)
