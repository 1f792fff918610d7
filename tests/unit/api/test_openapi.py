"""The OpenAPI document: valid, and describing exactly the routes the app has.

The fuzz run (test_fuzz.py) checks the answers against it; these tests check the
document against the app itself: its routes, which of them need a key, the shape of a
download, and that GET /openapi.json serves it.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from openapi_spec_validator import OpenAPIV31SpecValidator

from app import app
from chalicelib import downloadtypes
from chalicelib.api import openapi, requests
from chalicelib.core.models import Download, State
from chalicelib.notify import events

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


def test_download_schema_has_the_fields_of_the_api_shape() -> None:
    download = Download(
        id="0" * 32,
        type="zip",
        params={},
        filename="a.zip",
        tenant="acme",
        user_id="alice",
        state=State.PENDING,
        created_at="2026-01-01T00:00:00.000Z",
        retention_seconds=60,
    )
    schema = openapi.document()["components"]["schemas"]["Download"]
    assert set(schema["properties"]) == set(download.to_api())
    assert set(schema["required"]) == set(download.to_api())


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
        assert set(variant["properties"]) >= set(requests.REQUEST_SCHEMA["properties"])


def test_document_is_built_once_and_handed_out_as_copies() -> None:
    first, second = openapi.document("/api"), openapi.document("/api")
    assert first == second
    assert first is not second
    first["paths"].clear()
    assert openapi.document("/api")["paths"]
    assert openapi.document("/api")["servers"] == [{"url": "/api"}]


def test_the_webhooks_section_documents_every_event_as_sent() -> None:
    """Each event type is there, and real payloads (notify/events.py's) match its schema."""
    document = openapi.document()
    assert set(document["webhooks"]) == set(events.TYPES)
    schemas = document["components"]["schemas"]
    download = Download(
        id="0123456789abcdef0123456789abcdef",
        type="zip",
        params={},
        filename="a.zip",
        tenant="acme",
        user_id="alice",
        state=State.DONE,
        created_at="2026-11-29T10:00:00.000Z",
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
