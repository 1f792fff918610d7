"""Settings parse their JSON values once; the runtime is built once per process, and again
when the environment or the clients change."""

from __future__ import annotations

import json

import pytest

from chalicelib.core import clients
from chalicelib.core.errors import ConfigurationError
from chalicelib.core.models import Principal
from chalicelib.core.settings import Dataset, Settings
from chalicelib.runtime import Runtime

ENVIRONMENT = {
    "SATCHEL_TABLE": "t",
    "SATCHEL_ARTIFACT_BUCKET": "a",
    "SATCHEL_SOURCE_BUCKET": "s",
    "SATCHEL_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:m",
}
DATASETS = {"Transaction": {"table": "acme-tx", "columns": ["id", "amount"], "description": "Cards"}}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)


def test_datasets_and_service_principals_are_typed_values() -> None:
    principals = [
        {"tenant": "acme", "user_id": "nightly", "roles": ["admin"]},
        {"tenant": "b", "user_id": "c"},
    ]
    settings = Settings.from_env(
        {
            **ENVIRONMENT,
            "SATCHEL_DATASETS": json.dumps(DATASETS),
            "SATCHEL_SERVICE_PRINCIPALS": json.dumps(principals),
        }
    )
    assert settings.datasets == {
        "Transaction": Dataset("Transaction", "acme-tx", "tenant", ["id", "amount"], None, "Cards")
    }
    assert settings.service_principals == (
        Principal("acme", "nightly", frozenset({"admin"})),
        Principal("b", "c", frozenset()),
    )
    empty = Settings.from_env(ENVIRONMENT)
    assert empty.datasets == {}
    assert empty.service_principals == ()


@pytest.mark.parametrize(
    "raw", ["{", '{"T": {"columns": ["a"]}}', '{"not an id": {"table": "t", "columns": ["a"]}}']
)
def test_a_bad_dataset_configuration_fails_when_settings_are_read(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="dataset"):
        Settings.from_env({**ENVIRONMENT, "SATCHEL_DATASETS": raw})


@pytest.mark.usefixtures("environment")
def test_the_runtime_is_built_once_while_nothing_changes() -> None:
    first = Runtime.from_env()
    assert Runtime.from_env() is first
    assert first.s3 is clients.s3()


@pytest.mark.usefixtures("environment")
def test_the_runtime_is_rebuilt_when_the_environment_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    first = Runtime.from_env()
    monkeypatch.setenv("SATCHEL_MAX_KEYS", "7")
    second = Runtime.from_env()
    assert second is not first
    assert second.settings.max_keys == 7
    monkeypatch.setenv("SATCHEL_DATASETS", json.dumps(DATASETS))
    assert set(Runtime.from_env().settings.datasets) == {"Transaction"}
    monkeypatch.delenv("SATCHEL_DATASETS")
    monkeypatch.delenv("SATCHEL_MAX_KEYS")
    assert Runtime.from_env().settings == first.settings


@pytest.mark.usefixtures("environment")
def test_the_runtime_is_rebuilt_when_the_clients_are_reset() -> None:
    first = Runtime.from_env()
    clients.reset()
    second = Runtime.from_env()
    assert second is not first
    assert second.s3 is clients.s3()
    assert second.s3 is not first.s3


def test_the_expiring_unused_warning_may_be_turned_off_but_not_negative() -> None:
    assert Settings.from_env(ENVIRONMENT).expiring_unused_seconds == 3600
    assert (
        Settings.from_env({**ENVIRONMENT, "SATCHEL_EXPIRING_UNUSED_SECONDS": "0"}).expiring_unused_seconds
        == 0
    )
    with pytest.raises(ConfigurationError, match="expiring_unused_seconds"):
        Settings.from_env({**ENVIRONMENT, "SATCHEL_EXPIRING_UNUSED_SECONDS": "-1"})
    with pytest.raises(ConfigurationError, match="build_deadline_seconds"):  # others still may not be 0
        Settings.from_env({**ENVIRONMENT, "SATCHEL_BUILD_DEADLINE_SECONDS": "0"})


def test_the_s3_connection_pool_holds_every_request_a_build_may_have_in_flight() -> None:
    """A store build fetches sources and looks up CRCs at once, each up to the fetch cap, while
    the calling thread uploads: a smaller pool would drop a connection per request above it."""
    from chalicelib.core.settings import MAX_FETCH_CONCURRENCY

    assert Settings.from_env(ENVIRONMENT).fetch_concurrency <= MAX_FETCH_CONCURRENCY
    pooled = clients.s3().meta.config.max_pool_connections
    assert pooled >= 2 * MAX_FETCH_CONCURRENCY + 1
    highest = {**ENVIRONMENT, "SATCHEL_FETCH_CONCURRENCY": str(MAX_FETCH_CONCURRENCY)}
    assert Settings.from_env(highest).fetch_concurrency == MAX_FETCH_CONCURRENCY
    with pytest.raises(ConfigurationError, match="SATCHEL_FETCH_CONCURRENCY"):
        Settings.from_env({**ENVIRONMENT, "SATCHEL_FETCH_CONCURRENCY": str(MAX_FETCH_CONCURRENCY + 1)})


def test_the_s3_pool_holds_every_request_a_store_build_makes_at_once() -> None:
    """Sources fetched and CRCs looked up (each up to the concurrency's maximum), a copied
    member's first-pass ranges, and the part upload: none waits for, or drops, a connection."""
    from chalicelib.core import clients
    from chalicelib.core.settings import MAX_FETCH_CONCURRENCY
    from chalicelib.downloadtypes import archive

    at_once = 2 * MAX_FETCH_CONCURRENCY + archive.FIRST_PASS_WORKERS + 1
    assert at_once <= clients.S3_MAX_POOL_CONNECTIONS
