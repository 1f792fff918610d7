"""The operator's tool, `python -m scripts.keys`, on a table: keys issued, listed, rotated and
disabled for any tenant, and IAM callers mapped, as the authorizer and handler then read them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import boto3
import pytest
from moto import mock_aws

from chalicelib.core import clock
from chalicelib.core.models import Principal
from chalicelib.storage.identities import IdentityStore
from chalicelib.storage.keys import KeyStore, hash_secret
from satchel_local.stack import REGION, create_table
from scripts import keys as keys_script

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_dynamodb.service_resource import Table

TABLE = "satchel-keys-script"


@pytest.fixture
def table() -> Iterator[Table]:
    with mock_aws():
        create_table(boto3.session.Session(region_name=REGION), TABLE)
        yield boto3.resource("dynamodb", region_name=REGION).Table(TABLE)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert keys_script.main(["--table", TABLE, "--region", REGION, *argv]) == 0
    return capsys.readouterr().out.strip()


def test_create_list_rotate_disable(table: Table, capsys: pytest.CaptureFixture[str]) -> None:
    store = KeyStore(table)
    key = _run(capsys, "create", "--tenant", "acme", "--user", "erin", "--admin", "--expires-in", "3600")
    assert key.startswith("sat_")
    checked = store.check(key)
    assert checked.principal == Principal("acme", "erin", frozenset({"admin"}))
    assert checked.record is not None
    assert checked.record.expires_at is not None

    listed = _run(capsys, "list", "--tenant", "acme")
    assert checked.record.key_id in listed
    assert key not in listed
    assert _run(capsys, "list", "--tenant", "globex") == ""

    successor = _run(capsys, "rotate", "--tenant", "acme", checked.record.key_id)
    assert store.check(key).refusal == "KeyDisabled"
    assert store.check(successor).principal == Principal("acme", "erin", frozenset({"admin"}))

    rotated = store.check(successor).record
    assert rotated is not None
    new_id = rotated.key_id
    assert "disabled" in _run(capsys, "disable", "--tenant", "acme", new_id)
    assert store.check(successor).refusal == "KeyDisabled"
    with pytest.raises(SystemExit, match="no key"):
        keys_script.main(["--table", TABLE, "--region", REGION, "disable", "--tenant", "globex", new_id])


def test_a_rotation_with_a_grace_period_leaves_the_old_key_working_until_it_ends(
    table: Table, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KeyStore(table)
    now = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
    monkeypatch.setattr(clock, "now", lambda: now)
    key = _run(capsys, "create", "--tenant", "acme", "--user", "erin")
    old = store.check(key).record
    assert old is not None

    successor = _run(capsys, "rotate", "--tenant", "acme", old.key_id, "--grace", "600")
    assert store.check(key).principal == Principal("acme", "erin", frozenset())  # still works
    assert store.check(successor).principal == Principal("acme", "erin", frozenset())
    monkeypatch.setattr(clock, "now", lambda: now + timedelta(seconds=601))
    assert store.check(key).refusal == "KeyExpired"
    assert store.check(successor).principal == Principal("acme", "erin", frozenset())

    for bad in ("-1", str(7 * 24 * 3600 + 1)):
        with pytest.raises(SystemExit, match="--grace must be"):
            keys_script.main(
                [
                    "--table",
                    TABLE,
                    "--region",
                    REGION,
                    "rotate",
                    "--tenant",
                    "acme",
                    old.key_id,
                    "--grace",
                    bad,
                ]
            )


def test_map_and_unmap_an_iam_role(table: Table, capsys: pytest.CaptureFixture[str]) -> None:
    identities = IdentityStore(table)
    session = "arn:aws:sts::123456789012:assumed-role/etl/run-42"
    said = _run(capsys, "map-iam", session, "--tenant", "acme", "--user", "etl", "--role", "exporter")
    assert said == "mapped arn:aws:iam::123456789012:role/etl to acme/etl"
    assert identities.principal_for("arn:aws:iam::123456789012:role/etl") == Principal(
        "acme", "etl", frozenset({"exporter"})
    )
    _run(capsys, "unmap-iam", "arn:aws:iam::123456789012:role/etl")
    assert identities.principal_for("arn:aws:iam::123456789012:role/etl") is None
    with pytest.raises(SystemExit, match="not an IAM"):
        keys_script.main(["--table", TABLE, "map-iam", "nonsense", "--tenant", "acme", "--user", "x"])


def test_keys_made_before_ids_are_indexed_once(table: Table, capsys: pytest.CaptureFixture[str]) -> None:
    # A record as keys were stored before their lifecycle: no id, no place in by_owner.
    legacy = "legacy-key-0123456789abcdef"
    item = {"pk": f"APIKEY#{hash_secret(legacy)}", "sk": "APIKEY", "tenant": "acme", "user_id": "old"}
    table.put_item(Item={**item, "roles": ["admin"]})
    store = KeyStore(table)
    assert store.list("acme") == []
    assert _run(capsys, "index-legacy") == "indexed 1 key(s)"
    assert _run(capsys, "index-legacy") == "indexed 0 key(s)"
    (record,) = store.list("acme")
    assert record.key_id == hash_secret(legacy)[:16]
    assert store.check(legacy).principal == Principal("acme", "old", frozenset({"admin"}))
    _run(capsys, "disable", "--tenant", "acme", record.key_id)
    assert store.check(legacy).refusal == "KeyDisabled"
