"""The client and command sign in each way a stage may ask: an API key, an OIDC bearer token,
or SigV4 with AWS credentials (botocore, service `execute-api`); and `satchel keys` manages
a tenant's keys through the API."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path

import botocore.auth
import pytest
import requests
from botocore.credentials import Credentials

from satchel_client import SatchelClient
from satchel_client import cli as satchel_cli
from satchel_client.auth import BearerAuth, SigV4Auth
from tests.unit.client.test_client import Answer, FakeApi

KEY = {
    "id": "0123456789abcdef",
    "prefix": "sat_AbCd",
    "tenant": "acme",
    "user_id": "erin",
    "roles": ["analyst"],
    "created_at": "2026-01-01T00:00:00.000Z",
    "expires_at": None,
    "disabled": False,
    "last_used_at": None,
}


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi() as fake:
        yield fake


@pytest.fixture
def shell(api: FakeApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeApi:
    monkeypatch.setenv("SATCHEL_API_URL", api.url)
    for name in ("SATCHEL_API_KEY", "SATCHEL_TOKEN", "SATCHEL_SIGV4", "AWS_PROFILE", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-example")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.chdir(tmp_path)
    return api


def test_sigv4_matches_the_aws_test_suites_known_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    # aws-sig-v4-test-suite "get-vanilla": the signature AWS publishes for this request.
    at = datetime.datetime(2015, 8, 30, 12, 36, 0)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *args, **kwargs: at)
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    signer = SigV4Auth("us-east-1", credentials=credentials, service="service")
    signed = signer(requests.Request("GET", "https://example.amazonaws.com/").prepare())
    assert signed.headers["X-Amz-Date"] == "20150830T123600Z"
    assert signed.headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    )


def test_the_sigv4_client_signs_every_api_request_for_execute_api(shell: FakeApi) -> None:
    shell.on("GET", "/types", Answer(200, {"items": []}))
    shell.on("POST", "/keys", Answer(201, {**KEY, "api_key": "sat_secret"}))
    with SatchelClient(shell.url, auth=SigV4Auth("eu-west-1")) as client:
        client.types()
        client.create_key("erin", roles=["analyst"])
    for seen in shell.requests_to("GET", "/types") + shell.requests_to("POST", "/keys"):
        authorization = seen.headers["Authorization"]
        assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
        scope, signed, signature = authorization.removeprefix("AWS4-HMAC-SHA256 ").split(", ")
        assert scope.endswith("/eu-west-1/execute-api/aws4_request")
        assert {"host", "x-amz-date", "x-amz-security-token"} <= set(
            signed.removeprefix("SignedHeaders=").split(";")
        )
        assert len(signature.removeprefix("Signature=")) == 64
        assert seen.headers["X-Amz-Security-Token"] == "session-token-example"
        assert seen.headers["X-Amz-Date"].endswith("Z")
    post = shell.requests_to("POST", "/keys")[0]
    assert "content-type;host" in post.headers["Authorization"]  # the body's type is signed too


def test_sigv4_signatures_change_with_the_body(shell: FakeApi) -> None:
    signer = SigV4Auth("eu-west-1")
    first = signer(requests.Request("POST", f"{shell.url}/keys", json={"user_id": "a"}).prepare())
    second = signer(requests.Request("POST", f"{shell.url}/keys", json={"user_id": "b"}).prepare())
    assert first.headers["Authorization"] != second.headers["Authorization"]


def test_sigv4_without_a_region_says_so(shell: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="region"):
        SigV4Auth()
    assert satchel_cli.main(["--sigv4", "types"]) == 2


def test_a_bearer_token_is_sent_as_the_credential(shell: FakeApi) -> None:
    shell.on("GET", "/types", Answer(200, {"items": []}))
    assert satchel_cli.main(["types", "--token", "eyJ.header.sig"]) == 0
    with SatchelClient(shell.url, auth=BearerAuth("eyJ.other.sig")) as client:
        client.types()
    sent = [seen.headers["Authorization"] for seen in shell.requests_to("GET", "/types")]
    assert sent == ["Bearer eyJ.header.sig", "Bearer eyJ.other.sig"]


def test_the_command_signs_with_sigv4_from_the_environment(
    shell: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    shell.on("GET", "/types", Answer(200, {"items": []}))
    monkeypatch.setenv("SATCHEL_SIGV4", "true")
    assert satchel_cli.main(["types", "--region", "ap-southeast-2"]) == 0
    authorization = shell.requests_to("GET", "/types")[0].headers["Authorization"]
    assert "/ap-southeast-2/execute-api/aws4_request" in authorization


@pytest.mark.parametrize(
    ("argv", "environ"),
    [
        (["--api-key", "k", "--token", "t", "types"], {}),
        (["--token", "t", "--sigv4", "types"], {}),
        (["types"], {"SATCHEL_API_KEY": "k", "SATCHEL_TOKEN": "t"}),
        (["types"], {}),  # no credential at all
    ],
)
def test_one_way_to_sign_in_at_a_time(
    shell: FakeApi, monkeypatch: pytest.MonkeyPatch, argv: list[str], environ: dict[str, str]
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert satchel_cli.main(argv) == 2
    assert not shell.seen


def test_a_client_needs_exactly_one_credential() -> None:
    with pytest.raises(ValueError, match="only one"):
        SatchelClient("http://127.0.0.1:9", "key", auth=BearerAuth("token"))
    with pytest.raises(ValueError, match="only one"):
        SatchelClient("http://127.0.0.1:9")


def test_keys_commands(
    shell: FakeApi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SATCHEL_API_KEY", "admin-key")
    shell.on(
        "GET", "/keys", Answer(200, {"items": [KEY, {**KEY, "id": "fedcba9876543210", "disabled": True}]})
    )
    shell.on("POST", "/keys", Answer(201, {**KEY, "api_key": "sat_the-secret"}))
    shell.on(
        "POST",
        "/keys/0123456789abcdef/rotate",
        Answer(201, {**KEY, "id": "1111111111111111", "api_key": "sat_new"}),
    )
    shell.on("DELETE", "/keys/0123456789abcdef", Answer(200, {**KEY, "disabled": True}))

    assert satchel_cli.main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert "0123456789abcdef  sat_AbCd…  acme/erin  analyst" in listed
    assert "disabled" in listed
    assert "active" in listed

    assert (
        satchel_cli.main(["keys", "create", "--user", "erin", "--role", "analyst", "--expires-in", "3600"])
        == 0
    )
    assert capsys.readouterr().out.strip() == "sat_the-secret"  # the key alone on stdout, for scripts
    assert shell.requests_to("POST", "/keys")[0].body == {
        "user_id": "erin",
        "roles": ["analyst"],
        "expires_in": 3600,
    }

    assert satchel_cli.main(["--json", "keys", "rotate", "0123456789abcdef"]) == 0
    assert json.loads(capsys.readouterr().out)["api_key"] == "sat_new"
    assert satchel_cli.main(["keys", "rotate", "0123456789abcdef", "--grace", "3600"]) == 0
    rotated = capsys.readouterr()
    assert rotated.out.strip() == "sat_new"
    assert "works for 3600 s more" in rotated.err
    assert [r.body for r in shell.requests_to("POST", "/keys/0123456789abcdef/rotate")] == [
        {},
        {"grace_seconds": 3600},
    ]
    assert satchel_cli.main(["keys", "disable", "0123456789abcdef"]) == 0
    assert "disabled key 0123456789abcdef" in capsys.readouterr().out

    shell.on(
        "DELETE", "/keys/ffffffffffffffff", Answer(404, {"Code": "KeyNotFound", "Message": "no API key"})
    )
    assert satchel_cli.main(["keys", "disable", "ffffffffffffffff"]) == 3
    assert "satchel keys list" in capsys.readouterr().err
