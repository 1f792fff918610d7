"""The integration suite runs against a deployed stage, over HTTP, and only when told where.

Set SATCHEL_INTEGRATION_URL (the stack's EndpointURL output) and SATCHEL_INTEGRATION_KEY
(a user's API key; scripts/add_api_key.py makes one), and SATCHEL_INTEGRATION_PREFIX (a
prefix in that user's scope holding a few small objects). SATCHEL_INTEGRATION_OTHER_KEY,
a key of another user, adds the ownership checks across users. Without them, these tests
are deselected when collected (`N deselected`, not skipped): `make test` never needs AWS.
"""

from __future__ import annotations

import os

import pytest

URL = "SATCHEL_INTEGRATION_URL"
KEY = "SATCHEL_INTEGRATION_KEY"
OTHER_KEY = "SATCHEL_INTEGRATION_OTHER_KEY"
PREFIX = "SATCHEL_INTEGRATION_PREFIX"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"integration: against a deployed stage; needs {URL} and {KEY}")
    config.addinivalue_line("markers", f"other_user: also needs {OTHER_KEY}, another user's key")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    configured = bool(os.environ.get(URL) and os.environ.get(KEY))
    other_user = bool(os.environ.get(OTHER_KEY))
    keep, drop = [], []
    for item in items:
        if item.get_closest_marker("integration") is None:
            keep.append(item)
        elif not configured or (item.get_closest_marker("other_user") and not other_user):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
