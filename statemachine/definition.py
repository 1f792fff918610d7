"""The one ASL file, and the placeholders that turn it into a deployable definition."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ASL_PATH = Path(__file__).resolve().parent / "download.asl.json"
APP_NAME = "satchel"

# Placeholder in the ASL -> the Chalice `@app.lambda_function` it names. Packaging fills
# the same placeholders through DefinitionSubstitutions.
FUNCTIONS: dict[str, str] = {
    "PrepareFunctionArn": "prepare",
    "BuildFunctionArn": "build",
    "FinalizeFunctionArn": "finalize",
    "FailFunctionArn": "fail",
    "BuildSegmentFunctionArn": "build_segment",
    "AssembleFunctionArn": "assemble",
    "DigestFunctionArn": "digest",
}

_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


def function_name(stage: str, name: str) -> str:
    """The name Chalice deploys a `@app.lambda_function(name=...)` under."""
    return f"{APP_NAME}-{stage}-{name}"


def placeholders(text: str | None = None) -> set[str]:
    return set(_PLACEHOLDER.findall(ASL_PATH.read_text() if text is None else text))


def render(values: dict[str, str]) -> str:
    """The ASL with every placeholder filled; a placeholder without a value is an error."""
    text = ASL_PATH.read_text()
    missing = placeholders(text) - set(values)
    if missing:
        raise KeyError(f"no value for placeholders: {sorted(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ASL_PATH.read_text())
    return data
