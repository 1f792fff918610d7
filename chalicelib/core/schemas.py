"""JSON Schema checks that answer 422 InvalidParams naming the first failing path.

Messages describe the rule, never echo the offending value: a request may be large.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from chalicelib.core.errors import InvalidParams

if TYPE_CHECKING:
    from jsonschema import ValidationError

_MAX_MESSAGE = 200


@functools.cache
def _validator_class() -> Any:
    """jsonschema is loaded on the first check, not at import: a third of the app's own import
    time, which a cold start of a function that validates nothing should not pay."""
    from jsonschema import Draft202012Validator, validators

    # JSON Schema counts 2.0 as an integer; DynamoDB and Python do not. An integer is an int.
    strict_integers = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
    )
    return validators.extend(Draft202012Validator, type_checker=strict_integers)  # type: ignore[no-untyped-call]


def _describe(error: ValidationError) -> str:
    rule, value = error.validator, error.validator_value
    messages = {
        "type": f"must be of type {value}",
        "enum": f"must be one of {', '.join(map(repr, value)) if isinstance(value, list) else value}",
        "maxLength": f"must be at most {value} characters long",
        "minLength": f"must be at least {value} characters long",
        "maxItems": f"must have at most {value} items",
        "minItems": f"must have at least {value} items",
        "minimum": f"must be at least {value}",
        "maximum": f"must be at most {value}",
    }
    message = messages.get(str(rule), error.message)
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"


class Schema:
    def __init__(self, schema: dict[str, Any], root: str = "") -> None:
        """`root` names where the instance sits in the request body ('params'); '' is the body."""
        self.schema = schema
        self._root = root

    @functools.cached_property
    def _validator(self) -> Any:
        validator = _validator_class()
        validator.check_schema(self.schema)
        return validator(self.schema)

    def check(self, instance: Any) -> None:
        from jsonschema.exceptions import best_match

        error = best_match(self._validator.iter_errors(instance))
        if error is not None:
            parts = [self._root, *(str(part) for part in error.absolute_path)]
            path = "/".join(part for part in parts if part) or "(root)"
            raise InvalidParams(f"{path}: {_describe(error)}", path=path)
