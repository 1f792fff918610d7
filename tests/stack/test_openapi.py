"""The OpenAPI document as the running API serves it."""

from __future__ import annotations

from chalicelib.api import openapi
from tests.support.stack import Satchel


def test_served_at_openapi_json_without_a_key(satchel: Satchel) -> None:
    reply = satchel.call("GET", "/openapi.json", user=None)
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json == openapi.document("/")
