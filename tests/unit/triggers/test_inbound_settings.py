"""A misconfigured event source fails at start-up, before any event is read."""

from __future__ import annotations

import pytest

from chalicelib.core.errors import ConfigurationError
from chalicelib.core.settings import (
    ENV_ARTIFACT_BUCKET,
    ENV_SOURCE_BUCKET,
    ENV_STATE_MACHINE_ARN,
    ENV_TABLE,
    Settings,
)

REQUIRED = {name: "x" for name in (ENV_TABLE, ENV_ARTIFACT_BUCKET, ENV_SOURCE_BUCKET, ENV_STATE_MACHINE_ARN)}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SATCHEL_SERVICE_PRINCIPALS", "not json"),
        ("SATCHEL_SERVICE_PRINCIPALS", '{"tenant": "acme"}'),
        ("SATCHEL_SERVICE_PRINCIPALS", '[{"tenant": "acme"}]'),
        ("SATCHEL_SERVICE_PRINCIPALS", '[{"tenant": "acme", "user_id": "x", "roles": "admin"}]'),
        ("SATCHEL_REQUEST_PREFIX", "requests"),
    ],
)
def test_a_misconfigured_event_source_fails_at_start_up(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        Settings.from_env({**REQUIRED, variable: value})
