"""The tiers, by directory (docs/development.md): each test is marked with its tier here, so no
test file needs a decorator, and `pytest -m unit` (or `make test-fast`: `pytest tests/unit`)
picks a tier. The fixtures that build the stack live in tests/support/stack.py.

In parallel (`pytest -n 2`, pytest-xdist with `--dist loadgroup` from pyproject.toml), a test
goes to whichever worker is free, except that the tests of one xdist group run in one worker,
one after another. Each e2e and deploy file is its own group: their module fixtures (a local
stack in a subprocess, a browser, the package) are then built once, not once per worker."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.support.stack", "tests.support.receiver"]

HERE = Path(__file__).resolve().parent
# A tier is the first directory under tests/; its marker is registered in pyproject.toml.
TIERS = ("unit", "stack", "e2e", "deploy", "integration")
# Tiers whose files run whole in one worker each (their xdist group: the file's path).
GROUPED_BY_FILE = ("e2e", "deploy")


def tier_of(path: Path) -> str:
    """The tier of a test file: the directory under tests/ it sits in."""
    parts = path.resolve().relative_to(HERE).parts
    if len(parts) < 2 or parts[0] not in TIERS:
        raise pytest.UsageError(f"{path}: a test belongs in a tier's directory, tests/<{'|'.join(TIERS)}>/")
    return parts[0]


def xdist_group_of(path: Path) -> str | None:
    """The xdist group a test file's tests share by default, if its tier groups by file."""
    if tier_of(path) not in GROUPED_BY_FILE:
        return None
    return path.resolve().relative_to(HERE).as_posix()


# tryfirst: pytest-xdist reads the xdist_group marks in its own hook of this name.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(tier_of(item.path))
        group = xdist_group_of(item.path)
        # A group named by the test or its module (`pytest.mark.xdist_group`) stands.
        if group is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))
