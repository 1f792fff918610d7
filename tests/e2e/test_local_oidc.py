"""End to end: `python -m satchel_local --auth oidc` (`make run AUTH=oidc`), the local stack
whose API trusts a demo OIDC issuer on loopback (satchel_local/issuer.py), driven over HTTP
as docs/sign-in.md's "Try it locally" says: a token from the issuer's POST /token, then the
API with it. One stack for the module; its last test stops it with Ctrl-C.

Every refusal is API Gateway's answer (401 `Unauthorized` with no credential, 403
`Forbidden` otherwise); the authorizer's stable code (`InvalidToken`, `TokenExpired`) is in
its log line, which the test reads from the stack's output.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from satchel_local.server import SATCHEL_AS_ALICE
from tests.e2e.test_local_stack import (
    LocalStack,
    _port_open,
    call,
    example_workdir,
    fetched_zip_of_acme,
    refused_on_a_taken_port,
    run_example,
    running_stack,
)
from tests.support import cli

_REFUSED = re.compile(r"refused a token: (\w+)")


@pytest.fixture(scope="module")
def oidc_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    directory = tmp_path_factory.mktemp("oidc-stack")
    with running_stack(directory, demo_rows=10, arguments=["--auth", "oidc", "--issuer-port", "0"]) as stack:
        yield stack


def _oidc(stack: LocalStack) -> dict[str, Any]:
    oidc: dict[str, Any] = stack.state["oidc"]
    return oidc


def _token(stack: LocalStack, user: str, **extra: Any) -> str:
    reply = call("POST", _oidc(stack)["token_url"], body={"user": user, **extra})
    assert reply.status == 200, reply.body
    assert reply.json["token_type"] == "Bearer"
    return str(reply.json["id_token"])


def _claims(stack: LocalStack, user: str, expires_in: int = 600) -> dict[str, Any]:
    """What the demo issuer puts in a token for `user`, for a forger to copy."""
    now = int(time.time())
    oidc = _oidc(stack)
    return {
        "iss": oidc["issuer"],
        "aud": oidc["audience"],
        "sub": user,
        "tenant": stack.state["users"][user]["tenant"],
        "roles": [],
        "iat": now,
        "nbf": now,
        "exp": now + expires_in,
    }


def _last_refusal(stack: LocalStack) -> str | None:
    codes = _REFUSED.findall(stack.output())
    return codes[-1] if codes else None


def test_the_state_file_and_the_issuer_say_how_to_sign_in(oidc_stack: LocalStack) -> None:
    stack, oidc = oidc_stack, _oidc(oidc_stack)
    assert stack.state["auth_mode"] == "oidc"
    assert urlparse(oidc["issuer"]).hostname == "127.0.0.1"

    discovery = call("GET", oidc["discovery_url"])
    assert discovery.status == 200, discovery.body
    assert discovery.json["issuer"] == oidc["issuer"]
    assert discovery.json["jwks_uri"] == oidc["jwks_url"]
    assert discovery.json["token_endpoint"] == oidc["token_url"]

    jwks = call("GET", oidc["jwks_url"])
    assert jwks.status == 200, jwks.body
    [key] = jwks.json["keys"]
    assert (key["kty"], key["alg"], key["use"]) == ("RSA", "RS256", "sig")
    assert "d" not in key  # the public half only

    output = stack.output()
    assert "not an identity provider" in output
    assert "TOKEN=$(curl -s -X POST" in output


def test_the_issuer_signs_for_seeded_users_only(oidc_stack: LocalStack) -> None:
    token_url = _oidc(oidc_stack)["token_url"]
    for body, code in (
        ({"user": "mallory"}, "UnknownUser"),
        ({"user": ["alice"]}, "InvalidRequest"),
        ({"user": "alice", "expires_in": 10**9}, "InvalidRequest"),
        ({"user": "alice", "expires_in": "60"}, "InvalidRequest"),
    ):
        reply = call("POST", token_url, body=body)
        assert (reply.status, reply.json["Code"]) == (400, code), reply.body


def test_a_token_creates_and_fetches_a_download(oidc_stack: LocalStack) -> None:
    stack, alice = oidc_stack, _token(oidc_stack, "alice")
    download = fetched_zip_of_acme(stack, alice)

    # The token's claims are the principal: dave (tenant globex) does not see acme's download.
    dave = _token(stack, "dave")
    other = call("GET", f"{stack.api}/downloads/{download['id']}", dave)
    assert other.status == 404, other.body
    # carol's `roles: ["admin"]` is the tenant admin role: she may list her tenant's keys.
    assert call("GET", f"{stack.api}/keys", _token(stack, "carol")).status == 200
    assert call("GET", f"{stack.api}/keys", alice).status == 403


def test_no_token_a_forged_or_expired_one_and_api_keys_are_refused(oidc_stack: LocalStack) -> None:
    stack = oidc_stack
    url = f"{stack.api}/downloads"
    missing = call("GET", url)
    assert (missing.status, missing.json["Code"]) == (401, "Unauthorized"), missing.body

    demo_kid = call("GET", _oidc(stack)["jwks_url"]).json["keys"][0]["kid"]
    stranger = RSAKey.generate_key(2048, private=True)
    # The demo issuer's claims and key id, signed by another key: the signature fails.
    forged = jwt.encode({"alg": "RS256", "kid": demo_kid}, _claims(stack, "alice"), stranger)
    # Another issuer altogether, with its own key id the demo issuer's JWKS lacks.
    foreign = jwt.encode(
        {"alg": "RS256", "kid": "elsewhere"},
        {**_claims(stack, "alice"), "iss": "http://127.0.0.1:1/other-issuer"},
        stranger,
    )
    # Past the authorizer's 60 s of allowed clock skew.
    expired = _token(stack, "alice", expires_in=-300)
    api_key = stack.key("alice")  # seeded, valid in keys mode: not a token here

    for credential, code in (
        (forged, "InvalidToken"),
        (foreign, "InvalidToken"),
        (expired, "TokenExpired"),
        (api_key, "InvalidToken"),
    ):
        reply = call("GET", url, credential)
        assert (reply.status, reply.json["Code"]) == (403, "Forbidden"), reply.body
        # The authorizer logged its refusal before the answer was sent.
        assert _last_refusal(stack) == code

    # And a good token still passes after all that.
    assert call("GET", url, _token(stack, "bob")).status == 200


def test_the_manuals_curl_session_works_with_a_token(oidc_stack: LocalStack, tmp_path: Path) -> None:
    """docs/examples/local-env.sh gets alice a token when the stack is on OIDC."""
    workdir = example_workdir(oidc_stack, tmp_path / "examples")
    result = run_example(workdir, "quickstart.sh")
    assert result.returncode == 0, result.stdout + result.stderr
    assert zipfile.is_zipfile(workdir / "reports.zip")


def test_the_satchel_command_as_a_seeded_user_signs_in_with_the_issuers_token(
    oidc_stack: LocalStack, tmp_path: Path
) -> None:
    """`satchel --as alice` beside an OIDC stack's state file: the API refuses her API key,
    so the command asks the demo issuer for her token (satchel_client/config.py)."""
    (tmp_path / ".satchel-local.json").write_bytes(oidc_stack.state_file.read_bytes())
    satchel = str(Path(sys.executable).parent / "satchel")  # the repository's .venv/bin/satchel
    zipped = ["zip", "acme/reports/2024/q1.csv", "--wait"]
    created = cli.run([satchel, "--as", "alice", "--json", *zipped], tmp_path)
    assert created.returncode == 0, created.stderr
    download = json.loads(created.stdout)
    assert download["state"] == "DONE"
    # The line the stack's banner prints, run as printed (--json after the command).
    assert SATCHEL_AS_ALICE in oidc_stack.output()
    listed = cli.run([satchel, *SATCHEL_AS_ALICE.split()[1:], "--json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert download["id"] in [item["id"] for item in json.loads(listed.stdout)]
    # Bob signs in as himself: alice's download is not his to see.
    bobs = cli.run([satchel, "--as", "bob", "--json", "list"], tmp_path)
    assert bobs.returncode == 0, bobs.stderr
    assert download["id"] not in [item["id"] for item in json.loads(bobs.stdout)]


def test_ctrl_c_stops_the_issuer_too(oidc_stack: LocalStack) -> None:
    stack = oidc_stack
    issuer_port = urlparse(_oidc(stack)["issuer"]).port
    assert issuer_port is not None
    assert _port_open(issuer_port)
    assert stack.stop(signal.SIGINT) == 0, stack.output()
    assert not any(_port_open(port) for port in [*stack.ports(), issuer_port])
    assert not Path(stack.state_file).exists()


def test_a_taken_issuer_port_says_how_to_choose_another(tmp_path: Path) -> None:
    refused_on_a_taken_port(
        tmp_path, "--issuer-port", "ISSUER_PORT", "--auth", "oidc", "--port", "0", "--moto-port", "0"
    )
