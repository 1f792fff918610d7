"""The table's layout (chalicelib/storage/layout.py): keys that cannot collide and a schema
that declares what the keys use (tests/deploy/test_layouts.py holds the template, the local
stack and the policies to it)."""

from __future__ import annotations

import ast
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chalicelib.storage import layout

ROOT = Path(__file__).resolve().parents[3]


INDEX_PREFIXES = (layout.OWNER, layout.DUE, layout.LINKS_OF, layout.KEYS_OF)


IDS = [
    "0123456789abcdef0123456789abcdef",
    "ffffffffffffffffffffffffffff0000",
    "abcdefabcdefabcdefabcdefabcd0003",
]


def _keys(tenant: str, user: str, secret_hash: str, download_id: str) -> dict[str, dict[str, str]]:
    """One key of each kind of record."""
    return {
        "download": layout.download_key(download_id),
        "quota": layout.quota_key(tenant, user),
        "tenant_quota": layout.tenant_quota_key(tenant),
        "api_key": layout.api_key_key(secret_hash),
        "user": layout.user_key(tenant, user),
        "link": layout.link_key(secret_hash),
        "idempotency": layout.idempotency_key(tenant, user, secret_hash),
        "audit": layout.audit_key(tenant, "2026-01-01T00:00:00.000Z", "00ff00ff"),
        "webhook_secret": layout.webhook_secret_key(tenant),
        "iam_principal": layout.iam_principal_key(f"arn:aws:iam::123456789012:role/{tenant}-{user}"),
        "delivery": layout.delivery_key(download_id, f"{download_id}.completed"),
    }


def test_partition_prefixes_are_distinct_and_none_starts_another() -> None:
    prefixes = layout.PARTITION_PREFIXES + INDEX_PREFIXES
    assert len(set(prefixes)) == len(prefixes)
    for first, second in itertools.permutations(prefixes, 2):
        assert not second.startswith(first), (first, second)
    assert all(prefix.endswith("#") for prefix in prefixes)


def test_every_kind_of_record_has_its_own_prefix() -> None:
    keys = _keys("acme", "alice", "a" * 64, IDS[0])
    prefixes = {
        kind: next(p for p in layout.PARTITION_PREFIXES if key[layout.PK].startswith(p))
        for kind, key in keys.items()
    }
    # The two quota counters share a prefix; their sort keys tell them apart.
    assert prefixes.pop("tenant_quota") == prefixes["quota"]
    assert len(set(prefixes.values())) == len(prefixes)
    assert set(prefixes.values()) == set(layout.PARTITION_PREFIXES)
    assert all(set(key) == {layout.PK, layout.SK} for key in keys.values())


def test_keys_of_different_records_never_collide() -> None:
    found: dict[tuple[str, str], str] = {}
    for tenant, user, secret, download_id in itertools.product(
        ["acme", "globex"], ["alice", "acme"], ["a" * 64, "b" * 64], IDS
    ):
        for kind, key in _keys(tenant, user, secret, download_id).items():
            pair = (key[layout.PK], key[layout.SK])
            assert found.setdefault(pair, kind) == kind, pair
    # A tenant's counter is never a user's, even a user named like a tenant.
    assert layout.tenant_quota_key("acme") != layout.quota_key("acme", "acme")
    assert layout.tenant_quota_key("acme")[layout.SK] != layout.quota_key("acme", "x")[layout.SK]


def test_a_download_key_round_trips_and_other_keys_are_not_downloads() -> None:
    for download_id in IDS:
        assert layout.download_id_of(layout.download_key(download_id)[layout.PK]) == download_id
    for kind, key in _keys("acme", "alice", "a" * 64, IDS[0]).items():
        if kind != "download":
            assert layout.download_id_of(key[layout.PK]) is None, kind


def test_the_owner_index_lists_a_users_downloads_newest_last_in_key_order() -> None:
    older = layout.owner_entry("acme", "alice", "2026-01-01T00:00:00.000Z", IDS[1])
    newer = layout.owner_entry("acme", "alice", "2026-01-02T00:00:00.000Z", IDS[0])
    assert older[layout.OWNER_PK] == newer[layout.OWNER_PK] == layout.owner_partition("acme", "alice")
    assert older[layout.OWNER_SK] < newer[layout.OWNER_SK]
    assert layout.owner_partition("acme", "alice") != layout.owner_partition("acme", "bob")
    assert layout.owner_partition("acme", "alice").startswith(layout.OWNER)


def test_the_due_index_spreads_downloads_over_its_shards_and_orders_them_by_time() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    shards = {layout.due_shard(f"{'0' * 28}{n:04x}") for n in range(16)}
    assert shards == set(range(layout.DUE_SHARDS))
    for download_id in IDS:
        entry = layout.due_entry(download_id, when)
        assert entry[layout.DUE_PK] == layout.due_partition(int(download_id[-4:], 16) % layout.DUE_SHARDS)
        assert entry[layout.DUE_PK].startswith(layout.DUE)
        assert entry[layout.DUE_SK].endswith(f"#{download_id}")
        later = layout.due_entry(download_id, when + timedelta(milliseconds=1))  # clock.iso's precision
        assert entry[layout.DUE_SK] < later[layout.DUE_SK]
        assert later[layout.DUE_PK] == entry[layout.DUE_PK]  # a download never changes shard


def test_the_audit_trail_is_one_partition_per_tenant_ordered_by_time() -> None:
    first = layout.audit_key("acme", "2026-01-01T00:00:00.000Z", "ffffffff")
    second = layout.audit_key("acme", "2026-01-01T00:00:00.001Z", "00000000")
    assert first[layout.PK] == second[layout.PK] == layout.audit_partition("acme")
    assert first[layout.SK] < second[layout.SK]
    assert layout.audit_partition("acme") != layout.audit_partition("globex")


def _key_attributes(schema: list[dict[str, str]]) -> list[str]:
    return [key["AttributeName"] for key in schema]


def test_the_schema_declares_exactly_the_attributes_its_keys_use() -> None:
    table = layout.TABLE_KEYS
    used = _key_attributes(table["KeySchema"])
    for index in table["GlobalSecondaryIndexes"]:
        used += _key_attributes(index["KeySchema"])
    declared = [definition["AttributeName"] for definition in table["AttributeDefinitions"]]
    assert sorted(declared) == sorted(set(used))
    assert used[:2] == [layout.PK, layout.SK]
    indexes = {
        index["IndexName"]: _key_attributes(index["KeySchema"]) for index in table["GlobalSecondaryIndexes"]
    }
    assert indexes == {
        layout.OWNER_INDEX: [layout.OWNER_PK, layout.OWNER_SK],
        layout.DUE_INDEX: [layout.DUE_PK, layout.DUE_SK],
    }
    # What the key functions write is what the schema declares.
    assert set(layout.owner_entry("acme", "alice", "t", IDS[0])) == {layout.OWNER_PK, layout.OWNER_SK}
    assert set(layout.due_entry(IDS[0], datetime(2026, 1, 1, tzinfo=UTC))) == {layout.DUE_PK, layout.DUE_SK}


def _string_constants(path: Path) -> list[tuple[int, str]]:
    return [
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


@pytest.mark.parametrize(
    "path",
    [
        path
        for path in sorted((ROOT / "chalicelib").rglob("*.py"))
        if path != ROOT / "chalicelib/storage/layout.py"
    ],
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_no_other_module_spells_a_key_prefix(path: Path) -> None:
    prefixes = layout.PARTITION_PREFIXES + INDEX_PREFIXES
    spelled = [(line, text) for line, text in _string_constants(path) if text.startswith(prefixes)]
    assert spelled == []
