"""JSON Schema checks that answer 422 InvalidParams naming the first failing path."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from chalicelib.errors import InvalidParams


class Schema:
    def __init__(self, schema: dict[str, Any], root: str = "") -> None:
        """`root` names where the instance sits in the request body ('params'); '' is the body."""
        Draft202012Validator.check_schema(schema)
        self.schema = schema
        self._validator = Draft202012Validator(schema)
        self._root = root

    def check(self, instance: Any) -> None:
        errors = sorted(self._validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
        if errors:
            error = errors[0]
            parts = [self._root, *(str(part) for part in error.absolute_path)]
            path = "/".join(part for part in parts if part) or "(root)"
            raise InvalidParams(f"{path}: {error.message}", path=path)
