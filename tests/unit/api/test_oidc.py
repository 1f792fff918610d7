"""OIDC sign-in: tokens signed with an RSA key whose JWKS a loopback server publishes, checked
by chalicelib/api/oidc.py and mapped to principals; every forged or broken token is refused
with its stable code."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

from chalicelib.api import oidc
from chalicelib.core.errors import ConfigurationError
from chalicelib.core.settings import SignIn
from tests.support.identityprovider import (
    AUDIENCE,
    ISSUER,
    IdentityProvider,
    hs256,
    serving,
    tampered,
    unsigned,
)


@pytest.fixture
def provider() -> Iterator[IdentityProvider]:
    with serving() as served:
        yield served


def _sign_in(provider: IdentityProvider, **changes: object) -> SignIn:
    return SignIn.from_env(
        {
            "SATCHEL_AUTH_MODE": "oidc",
            "SATCHEL_OIDC_ISSUER": ISSUER,
            "SATCHEL_OIDC_AUDIENCE": AUDIENCE,
            "SATCHEL_OIDC_JWKS_URL": provider.url,
            **{name: str(value) for name, value in changes.items()},
        }
    )


def _jwks(sign_in: SignIn) -> oidc.Jwks:
    return oidc.Jwks(
        sign_in.oidc_jwks_url, sign_in.oidc_jwks_cache_seconds, sign_in.oidc_jwks_refresh_seconds
    )


def _refusal(sign_in: SignIn, token: str, jwks: oidc.Jwks | None = None) -> str:
    with pytest.raises(oidc.TokenRefused) as refused:
        oidc.authenticate(sign_in, token, jwks or _jwks(sign_in))
    return refused.value.code


def test_a_valid_token_maps_to_its_principal(provider: IdentityProvider) -> None:
    sign_in = _sign_in(provider)
    principal = oidc.authenticate(sign_in, provider.token(roles=["admin", "analyst"]), _jwks(sign_in))
    assert (principal.tenant, principal.user_id) == ("acme", "erin")
    assert principal.roles == frozenset({"admin", "analyst"})
    assert principal.is_admin


def test_cognito_claims_map_by_configuration(provider: IdentityProvider) -> None:
    sign_in = _sign_in(
        provider,
        SATCHEL_OIDC_TENANT_CLAIM="custom:tenant",
        SATCHEL_OIDC_USER_CLAIM="cognito:username",
        SATCHEL_OIDC_ROLES_CLAIM="cognito:groups",
        SATCHEL_OIDC_ADMIN_VALUE="satchel-admins",
    )
    token = provider.token(
        tenant=None,
        claims={"custom:tenant": "globex", "cognito:username": "dave", "cognito:groups": ["satchel-admins"]},
        token_use="id",
    )
    principal = oidc.authenticate(sign_in, token, _jwks(sign_in))
    assert (principal.tenant, principal.user_id, principal.is_admin) == ("globex", "dave", True)


def test_a_single_tenant_issuer_names_the_tenant_in_the_settings(provider: IdentityProvider) -> None:
    sign_in = _sign_in(provider, SATCHEL_OIDC_TENANT="initech")
    principal = oidc.authenticate(sign_in, provider.token(tenant=None), _jwks(sign_in))
    assert principal.tenant == "initech"


def test_roles_may_be_a_space_separated_string(provider: IdentityProvider) -> None:
    sign_in = _sign_in(provider)
    principal = oidc.authenticate(sign_in, provider.token(roles="analyst admin Bad#Role"), _jwks(sign_in))
    assert principal.roles == frozenset({"analyst", "admin"})


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        ({"exp": -120}, "TokenExpired"),  # past the 60 s of allowed skew
        ({"aud": "another-client"}, "InvalidToken"),
        ({"iss": "https://evil.example.test/pool"}, "InvalidToken"),
        ({"exp": None}, "InvalidToken"),  # exp is required
        ({"nbf": 600}, "InvalidToken"),
        ({"tenant": None}, "UnmappedPrincipal"),
        ({"tenant": "Acme Corp"}, "UnmappedPrincipal"),
        ({"tenant": "acme#x"}, "UnmappedPrincipal"),
        ({"sub": "auth0|abc"}, "UnmappedPrincipal"),
    ],
)
def test_bad_claims_are_refused(provider: IdentityProvider, claims: dict[str, object], code: str) -> None:
    # `exp` and `nbf` are given as seconds from now, read when the test runs (not when the
    # run collected it: a long run would have let them pass by then).
    timed = {name: int(time.time()) + cast(int, claims[name]) for name in ("exp", "nbf") if claims.get(name)}
    assert _refusal(_sign_in(provider), provider.token(claims={**claims, **timed})) == code


def test_clock_skew_within_the_leeway_is_accepted(provider: IdentityProvider) -> None:
    sign_in = _sign_in(provider)
    token = provider.token(exp=int(time.time()) - 30)  # expired 30 s ago, leeway 60 s
    assert oidc.authenticate(sign_in, token, _jwks(sign_in)).user_id == "erin"
    assert _refusal(dataclasses.replace(sign_in, oidc_leeway_seconds=0), token) == "TokenExpired"


def test_a_token_signed_with_an_unknown_key_is_refused(provider: IdentityProvider) -> None:
    stranger = IdentityProvider()  # its own key, kid "key-1" too: the signature cannot verify
    assert _refusal(_sign_in(provider), stranger.token()) == "InvalidToken"
    assert _refusal(_sign_in(provider), stranger.token(header={"kid": "nobody"})) == "InvalidToken"


def test_alg_none_is_refused_even_with_a_known_kid(provider: IdentityProvider) -> None:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "erin", "tenant": "acme", "exp": int(time.time()) + 60}
    assert _refusal(_sign_in(provider), unsigned(claims)) == "InvalidToken"


def test_an_hmac_token_keyed_with_the_public_key_is_refused(provider: IdentityProvider) -> None:
    # Algorithm confusion: the public key's bytes as an HMAC secret.
    public = provider.keys[0].as_pem(private=False)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "erin", "tenant": "acme", "exp": int(time.time()) + 60}
    forged = hs256({"alg": "HS256", "kid": "key-1", "typ": "JWT"}, claims, public)
    assert _refusal(_sign_in(provider), forged) == "InvalidToken"


def test_a_tampered_payload_is_refused(provider: IdentityProvider) -> None:
    assert _refusal(_sign_in(provider), tampered(provider.token(), tenant="globex")) == "InvalidToken"
    assert _refusal(_sign_in(provider), "not.a.token") == "InvalidToken"
    assert _refusal(_sign_in(provider), "garbage") == "InvalidToken"


def test_the_jwks_is_fetched_once_and_cached(provider: IdentityProvider) -> None:
    sign_in = _sign_in(provider)
    jwks = _jwks(sign_in)
    for _ in range(5):
        oidc.authenticate(sign_in, provider.token(), jwks)
    assert provider.requests == 1


def test_an_unknown_kid_refetches_the_jwks_at_most_once_per_refresh_interval(
    provider: IdentityProvider,
) -> None:
    sign_in = _sign_in(provider)
    now = [1000.0]
    jwks = dataclasses.replace(_jwks(sign_in), clock=lambda: now[0])
    oidc.authenticate(sign_in, provider.token(), jwks)
    assert provider.requests == 1

    now[0] += 61  # past the refresh interval (60 s)
    newest = provider.rotate()  # the issuer rotated its keys: a kid the cache has not seen
    assert oidc.authenticate(sign_in, provider.token(newest), jwks).user_id == "erin"
    assert provider.requests == 2

    # Forged kids in a burst: no more fetches until the interval has passed.
    for attempt in range(10):
        assert _refusal(sign_in, provider.token(header={"kid": f"forged-{attempt}"}), jwks) == "InvalidToken"
    assert provider.requests == 2
    now[0] += 61
    assert _refusal(sign_in, provider.token(header={"kid": "forged-again"}), jwks) == "InvalidToken"
    assert provider.requests == 3


def test_an_unreachable_issuer_refuses_tokens_without_an_exception(provider: IdentityProvider) -> None:
    sign_in = _sign_in(provider, SATCHEL_OIDC_JWKS_URL="http://127.0.0.1:9/.well-known/jwks.json")
    assert _refusal(sign_in, provider.token()) == "InvalidToken"
    nonsense: list[dict[str, Any]] = [{"keys": [{"kty": "RSA"}]}, {"keys": "none"}, {}]
    for answer in nonsense:
        jwks = oidc.Jwks(provider.url, 3600, 60, fetch=functools.partial(_answering, answer))
        assert _refusal(sign_in, provider.token(), jwks) == "InvalidToken"


def _answering(answer: dict[str, Any], url: str) -> dict[str, Any]:
    return answer


def test_a_future_iat_is_refused(provider: IdentityProvider) -> None:
    assert _refusal(_sign_in(provider), provider.token(iat=int(time.time()) + 600)) == "InvalidToken"


@pytest.mark.parametrize(
    "changes",
    [
        {"SATCHEL_OIDC_ALGORITHMS": "none"},
        {"SATCHEL_OIDC_ALGORITHMS": "RS256,HS256"},
        {"SATCHEL_OIDC_AUDIENCE": ""},
        {"SATCHEL_OIDC_TENANT": "Not An Id"},
        {"SATCHEL_OIDC_LEEWAY_SECONDS": "-5"},
        {"SATCHEL_AUTH_MODE": "password"},
    ],
)
def test_settings_refuse_unsafe_or_incomplete_configuration(
    provider: IdentityProvider, changes: dict[str, str]
) -> None:
    with pytest.raises(ConfigurationError):
        _sign_in(provider, **changes)


def test_cognito_issuers_default_to_their_jwks_url() -> None:
    pool = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123"
    sign_in = SignIn.from_env(
        {"SATCHEL_AUTH_MODE": "oidc", "SATCHEL_OIDC_ISSUER": pool, "SATCHEL_OIDC_AUDIENCE": "client"}
    )
    assert sign_in.oidc_jwks_url == f"{pool}/.well-known/jwks.json"
