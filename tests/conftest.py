"""The tiers, by directory (docs/development.md): each test is marked with its tier here, so no
test file needs a decorator, and `pytest -m unit` (or `make test-fast`: `pytest tests/unit`)
picks a tier. The fixtures that build the stack live in tests/support/stack.py."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.support.stack", "tests.support.receiver"]

HERE = Path(__file__).resolve().parent
# A tier is the first directory under tests/; its marker is registered in pyproject.toml.
TIERS = ("unit", "stack", "e2e", "deploy", "integration")


def tier_of(path: Path) -> str:
    """The tier of a test file: the directory under tests/ it sits in."""
    parts = path.resolve().relative_to(HERE).parts
    if len(parts) < 2 or parts[0] not in TIERS:
        raise pytest.UsageError(f"{path}: a test belongs in a tier's directory, tests/<{'|'.join(TIERS)}>/")
    return parts[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(tier_of(item.path))
