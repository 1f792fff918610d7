"""JSON Schema checks answer InvalidParams naming the first failing path and the rule, never
the offending value; an integer is an int, not 2.0 or True."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.core.errors import InvalidParams
from chalicelib.core.schemas import Schema

PARAMS = Schema(
    {
        "type": "object",
        "properties": {
            "keys": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2},
            "compression": {"enum": ["store", "deflate"]},
            "level": {"type": "integer", "minimum": 1, "maximum": 9},
        },
        "required": ["keys"],
    },
    root="params",
)


def _refusal(schema: Schema, instance: Any) -> InvalidParams:
    with pytest.raises(InvalidParams) as refused:
        schema.check(instance)
    return refused.value


def test_a_valid_instance_passes() -> None:
    PARAMS.check({"keys": ["a", "b"], "compression": "store", "level": 9})


@pytest.mark.parametrize(
    ("instance", "path", "message"),
    [
        ({"keys": "a"}, "params/keys", "must be of type array"),
        ({"keys": ["a", "b", "c"]}, "params/keys", "must have at most 2 items"),
        ({"keys": ["a" * 9]}, "params/keys/0", "must be at most 8 characters long"),
        ({"keys": [], "compression": "zstd"}, "params/compression", "must be one of 'store', 'deflate'"),
        ({"keys": [], "level": 0}, "params/level", "must be at least 1"),
        ({"keys": [], "level": 10}, "params/level", "must be at most 9"),
        ({"keys": [], "level": 2.0}, "params/level", "must be of type integer"),
        ({"keys": [], "level": True}, "params/level", "must be of type integer"),
    ],
)
def test_a_refusal_names_the_path_and_the_rule(instance: dict[str, Any], path: str, message: str) -> None:
    refused = _refusal(PARAMS, instance)
    assert refused.message == f"{path}: {message}"
    assert refused.details == {"path": path}


def test_a_refusal_of_the_whole_body_names_the_root() -> None:
    refused = _refusal(Schema({"type": "object"}), ["not", "an", "object"])
    assert refused.message == "(root): must be of type object"
    assert refused.details == {"path": "(root)"}


def test_the_message_never_echoes_the_value_and_is_cut_to_200_characters() -> None:
    secret = "s3cr3t-" * 100
    refused = _refusal(PARAMS, {"keys": [secret]})
    assert "s3cr3t" not in refused.message
    long_pattern = "x" * 300
    refused = _refusal(Schema({"type": "string", "pattern": long_pattern}), "y")
    assert len(refused.message.removeprefix("(root): ")) == 200
    assert refused.message.endswith("…")


def test_an_invalid_schema_is_refused_when_first_used() -> None:
    from jsonschema.exceptions import SchemaError

    broken = Schema({"type": "no such type"})
    with pytest.raises(SchemaError):
        broken.check({})
