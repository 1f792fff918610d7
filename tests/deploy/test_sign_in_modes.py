"""A stage's sign-in mode in the packaged template: `keys` and `oidc` stages put the bearer
authorizer (a Lambda token authorizer) on every private route; an `iam` stage puts API
Gateway's AWS_IAM authorization there instead (`x-amazon-apigateway-authtype: awsSigv4`,
which API Gateway imports as AuthorizationType AWS_IAM), and no route keeps the authorizer.

The mode reaches `chalice package` as the stage's environment (Chalice loads the app with the
stage's `environment_variables` set): here it is set in the environment the packaging runs in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app import app
from scripts import package as packaging
from tests.support.stack_template import packaged

PUBLIC = {("/health", "get"), ("/openapi.json", "get"), ("/links/{token}", "get"), ("/links/{token}", "head")}
PUBLIC |= {("/links/{token}", "post")}


def _api_body(sam: dict[str, Any]) -> dict[str, Any]:
    apis = [spec for spec in sam["Resources"].values() if spec["Type"] == "AWS::Serverless::Api"]
    assert len(apis) == 1
    body: dict[str, Any] = apis[0]["Properties"]["DefinitionBody"]
    return body


def _security(body: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    """(path, method) -> the security schemes the route requires."""
    return {
        (path, method): [name for requirement in operation.get("security", []) for name in requirement]
        for path, item in body["paths"].items()
        for method, operation in item.items()
        if method != "options"
    }


def _private_routes() -> set[tuple[str, str]]:
    return {
        (path, method.lower())
        for path, methods in app.routes.items()
        for method in methods
        if (path, method.lower()) not in PUBLIC
    }


@pytest.fixture(scope="module")
def iam_sam(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    with pytest.MonkeyPatch.context() as patched:
        patched.setenv("SATCHEL_AUTH_MODE", "iam")
        out: Path = tmp_path_factory.mktemp("iam-package")
        built = packaging.package("prod", out)
        sam: dict[str, Any] = json.loads(built.sam_template.read_text())
    return sam


def test_a_keys_stage_puts_the_bearer_authorizer_on_every_private_route() -> None:
    body = _api_body(packaged().sam)
    security = _security(body)
    assert {route for route, schemes in security.items() if schemes} == _private_routes()
    assert {scheme for schemes in security.values() for scheme in schemes} == {"bearer"}
    assert body["securityDefinitions"]["bearer"]["x-amazon-apigateway-authtype"] == "custom"


def test_an_iam_stage_puts_aws_iam_on_every_private_route(iam_sam: dict[str, Any]) -> None:
    body = _api_body(iam_sam)
    security = _security(body)
    assert {route for route, schemes in security.items() if schemes} == _private_routes()
    assert {scheme for schemes in security.values() for scheme in schemes} == {"sigv4"}
    assert body["securityDefinitions"]["sigv4"] == {
        "in": "header",
        "type": "apiKey",
        "name": "Authorization",
        "x-amazon-apigateway-authtype": "awsSigv4",
    }
    assert "bearer" not in body["securityDefinitions"]
    for route in PUBLIC:
        assert security[route] == [], route
