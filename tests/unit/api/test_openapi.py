"""The OpenAPI document: valid, and describing exactly the routes the app has.

The fuzz run (test_fuzz.py) checks the answers against it; these tests check the
document against the app itself: its routes, which of them need a key, the shape of a
download, and that GET /openapi.json serves it.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from openapi_spec_validator import OpenAPIV31SpecValidator

from app import app
from chalicelib import downloadtypes
from chalicelib.api import openapi, requests
from chalicelib.core.models import Principal, State
from chalicelib.core.settings import Settings, parse_datasets
from chalicelib.notify import events
from tests.support import records

Route = tuple[str, str]  # (path, METHOD)
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def documented_operations(document: dict[str, Any]) -> dict[Route, dict[str, Any]]:
    return {
        (path, method.upper()): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def app_routes() -> dict[Route, Any]:
    """(path, METHOD) -> Chalice's RouteEntry, for every route app.py declares."""
    return {
        (path, method): entry for path, methods in app.routes.items() for method, entry in methods.items()
    }


def secured(operation: dict[str, Any]) -> bool:
    # Every operation states its security: [{"bearer": []}] or [] (no credential).
    requirements: list[dict[str, list[str]]] = operation["security"]
    return any(requirements)


def test_document_is_valid_openapi_3_1() -> None:
    document = openapi.document()
    assert document["openapi"].startswith("3.1.")
    OpenAPIV31SpecValidator(document).validate()


def test_documents_exactly_the_routes_the_app_has() -> None:
    documented = set(documented_operations(openapi.document()))
    routed = set(app_routes())
    assert {
        "documented but not routed": sorted(documented - routed),
        "routed but not documented": sorted(routed - documented),
    } == {"documented but not routed": [], "routed but not documented": []}


def test_security_is_documented_where_the_authorizer_runs() -> None:
    operations = documented_operations(openapi.document())
    authorized = {route for route, entry in app_routes().items() if entry.authorizer is not None}
    documented = {route for route, operation in operations.items() if secured(operation)}
    assert documented == authorized
    public = set(operations) - documented
    assert {("/health", "GET"), ("/openapi.json", "GET"), ("/links/{token}", "GET")} <= public


def test_secured_operations_document_the_authorizers_refusals() -> None:
    for route, operation in documented_operations(openapi.document()).items():
        if secured(operation):
            assert {"401", "403"} <= set(operation["responses"]), route
        else:
            assert "401" not in operation["responses"], route


def variants(schemas: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    """A discriminated oneOf's variants, by the type name that selects each."""
    mapping: dict[str, str] = schemas[name]["discriminator"]["mapping"]
    assert [ref["$ref"] for ref in schemas[name]["oneOf"]] == list(mapping.values())
    return {kind: schemas[target.rsplit("/", 1)[1]] for kind, target in mapping.items()}


def test_download_schema_has_the_fields_of_the_api_shape_per_type() -> None:
    download = records.download(retention_seconds=60)
    schemas = openapi.document()["components"]["schemas"]
    types = {kind.name for kind in downloadtypes.all_types()}
    for name, created in (("Download", False), ("CreatedDownload", True)):
        by_type = variants(schemas, name)
        assert set(by_type) == types
        for kind, schema in by_type.items():
            assert set(schema["properties"]) == set(download.to_api()) | ({"link"} if created else set())
            assert set(schema["required"]) == set(download.to_api())
            assert schema["properties"]["type"]["const"] == kind
            assert schema["properties"]["params"] == {
                "$ref": f"#/components/schemas/{kind.capitalize()}DownloadParams"
            }


def test_a_downloads_params_as_stored_fit_its_types_download_params() -> None:
    """What a type's check keeps (defaults filled in, columns resolved) is valid against the
    schema the document gives a download's `params`."""
    schemas = openapi.document()["components"]["schemas"]
    settings = Settings(
        table="t",
        artifact_bucket="a",
        source_bucket="sources",
        state_machine_arn="arn",
        datasets=parse_datasets('{"Transaction": {"table": "t", "columns": ["id", "amount"]}}'),
    )
    carol = Principal("acme", "carol", frozenset({"admin"}))  # audit needs the admin role
    asked = {"zip": {"keys": ["acme/a.csv"]}, "export": {"index": "Transaction"}, "audit": {}}
    asked["listing"] = {"prefix": "acme/"}
    for kind in downloadtypes.all_types():
        stored = kind.validate(asked[kind.name], carol, settings)
        schema = {**schemas[f"{kind.name.capitalize()}DownloadParams"], "components": {"schemas": schemas}}
        jsonschema.validate(stored, schema)


def test_no_all_of_anywhere_generators_make_duplicate_models_of_it() -> None:
    assert '"allOf"' not in json.dumps(openapi.document())


def test_every_timestamp_is_a_date_time() -> None:
    found: list[str] = []

    def walk(node: Any, name: str = "") -> None:
        if isinstance(node, dict):
            if name.endswith("_at") and "type" in node:
                found.append(name)
                assert node.get("format") == "date-time", (name, node)
            for key, value in node.items():
                walk(value, key if isinstance(value, dict) and key != "properties" else name)
        elif isinstance(node, list):
            for item in node:
                walk(item, name)

    walk(openapi.document()["components"]["schemas"])
    assert {"created_at", "expires_at", "started_at", "claim_expires_at"} <= set(found)


def test_bounds_and_defaults_are_the_stages_settings() -> None:
    settings = Settings(
        table="t",
        artifact_bucket="a",
        source_bucket="s",
        state_machine_arn="arn",
        retention_min_seconds=120,
        retention_max_seconds=3600,
        retention_default_seconds=600,
        link_max_ttl_seconds=900,
        link_default_ttl_seconds=300,
        link_max_uses=7,
        max_keys=12,
    )
    schemas = openapi.document("/", settings)["components"]["schemas"]
    expires_in = schemas["ZipDownloadRequest"]["properties"]["expires_in"]
    assert (expires_in["minimum"], expires_in["maximum"], expires_in["default"]) == (120, 3600, 600)
    link = schemas["LinkRequest"]["properties"]
    assert (link["expires_in"]["minimum"], link["expires_in"]["maximum"]) == (1, 900)
    assert link["expires_in"]["default"] == 300
    assert (link["max_uses"]["minimum"], link["max_uses"]["maximum"], link["max_uses"]["default"]) == (
        1,
        7,
        1,
    )
    assert schemas["ZipDownloadRequest"]["properties"]["link"] == {"$ref": "#/components/schemas/LinkRequest"}
    assert schemas["ZipParams"]["properties"]["keys"]["maxItems"] == 12
    assert schemas["Link"]["properties"]["max_uses"]["maximum"] == 7
    # Without settings: a stage's defaults, which the server enforces unless configured.
    defaults = openapi.document()["components"]["schemas"]["ZipDownloadRequest"]["properties"]
    assert defaults["expires_in"]["minimum"] == Settings.retention_min_seconds == 60


def test_every_refusal_is_a_problem_with_code_and_message() -> None:
    document = openapi.document()
    for name, response in document["components"]["responses"].items():
        schema_ref = response["content"]["application/problem+json"]["schema"]["$ref"]
        schema = document["components"]["schemas"][schema_ref.rsplit("/", 1)[1]]
        assert {"type", "title", "detail", "Code", "Message"} <= set(schema["required"]), name
        assert "status" in schema["properties"]
        if name in ("LinkNotReady", "QuotaExceeded", "ServiceUnavailable", "Throttled"):
            assert "Retry-After" in response["headers"], name


def test_every_operation_answers_429_as_the_stages_throttle_does() -> None:
    """API Gateway's token bucket covers every route (Throttled); createDownload's 429 is its
    quota's, the refusal its callers act on."""
    for route, operation in documented_operations(openapi.document()).items():
        expected = "QuotaExceeded" if route == ("/downloads", "POST") else "Throttled"
        assert operation["responses"]["429"] == {"$ref": f"#/components/responses/{expected}"}, route


def test_every_operation_that_calls_aws_answers_503_to_retry() -> None:
    """An AWS service busy through botocore's retries is a 503 TransientError with
    Retry-After on any route that calls AWS (chalicelib/api/http.py error_response)."""
    for route, operation in documented_operations(openapi.document()).items():
        if route in (("/health", "GET"), ("/openapi.json", "GET")):
            assert "503" not in operation["responses"], route
        else:
            assert operation["responses"]["503"] == {"$ref": "#/components/responses/ServiceUnavailable"}, (
                route
            )


def test_webhooks_say_they_are_signed_not_authenticated_by_a_scheme() -> None:
    for kind, item in openapi.document()["webhooks"].items():
        assert item["post"]["security"] == [], kind
        assert "webhook-signature" in item["post"]["description"], kind


def test_type_schema_has_the_fields_types_describe_themselves_with() -> None:
    schema = openapi.document()["components"]["schemas"]["DownloadType"]
    for kind in downloadtypes.all_types():
        assert set(schema["properties"]) == set(kind.describe()), kind.name


def test_request_body_offers_every_registered_type() -> None:
    schemas = openapi.document()["components"]["schemas"]
    mapping = schemas["DownloadRequest"]["discriminator"]["mapping"]
    types = {kind.name for kind in downloadtypes.all_types()}
    assert set(mapping) == types
    for name, target in mapping.items():
        variant = schemas[target.rsplit("/", 1)[1]]
        assert variant["properties"]["type"]["const"] == name
        assert set(variant["properties"]) == set(requests.REQUEST_SCHEMA["properties"])


def test_document_is_built_once_and_handed_out_as_copies() -> None:
    first, second = openapi.document("/api"), openapi.document("/api")
    assert first == second
    assert first is not second
    first["paths"].clear()
    assert openapi.document("/api")["paths"]
    assert openapi.document("/api")["servers"][0]["url"] == "/api"


def test_the_webhooks_section_documents_every_event_as_sent() -> None:
    """Each event type is there, and real payloads (notify/events.py's) match its schema."""
    document = openapi.document()
    assert set(document["webhooks"]) == set(events.TYPES)
    schemas = document["components"]["schemas"]
    download = records.download(
        id="0123456789abcdef0123456789abcdef",
        state=State.DONE,
        retention_seconds=60,
        finished_at="2026-11-29T10:01:00.000Z",
        expires_at="2026-11-29T10:02:00.000Z",
        client_reference="ref",
    )
    sent = [
        events.of_download(download),
        events.link_claimed(download, "link1", 1, "2026-11-29T10:01:30.000Z"),
    ]
    for event in sent:
        operation = document["webhooks"][event.type]["post"]
        reference = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = schemas[reference.rsplit("/", 1)[1]]
        jsonschema.validate(event.payload(), schema)  # inline: it refers to no other schema
        headers = {parameter["name"] for parameter in operation["parameters"]}
        assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
        assert set(schema["properties"]["data"]["required"]) == set(event.data)
