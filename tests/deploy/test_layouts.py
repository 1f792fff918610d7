"""One layout for the code, the deployed template, the local stack and the functions'
policies: the table's (chalicelib/storage/layout.py) and the artifact bucket's
(chalicelib/s3/layout.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
from chalice.package import YAMLTemplateSerializer
from moto import mock_aws

from chalicelib.s3 import layout as s3_layout
from chalicelib.storage import layout
from satchel_local.stack import REGION, create_table
from scripts import package as packaging

ROOT = Path(__file__).resolve().parents[2]
INDEX_PREFIXES = (layout.OWNER, layout.DUE, layout.LINKS_OF, layout.KEYS_OF)


def test_the_deployed_template_takes_the_table_schema_and_ttl_from_the_layout() -> None:
    properties = packaging.merge_template()["Resources"][packaging.TABLE]["Properties"]
    for name, value in layout.TABLE_KEYS.items():
        assert properties[name] == value, name
    assert properties["TimeToLiveSpecification"] == {"AttributeName": layout.TTL, "Enabled": True}


def test_the_local_stack_creates_its_table_from_the_layout() -> None:
    with mock_aws():
        create_table(boto3.session.Session(region_name=REGION), "satchel-layout")
        table = boto3.client("dynamodb", region_name=REGION).describe_table(TableName="satchel-layout")[
            "Table"
        ]
    expected = layout.TABLE_KEYS
    assert table["KeySchema"] == expected["KeySchema"]
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(expected["AttributeDefinitions"], key=str)
    indexes = [
        {name: index[name] for name in ("IndexName", "KeySchema", "Projection")}
        for index in table["GlobalSecondaryIndexes"]
    ]
    assert indexes == expected["GlobalSecondaryIndexes"]


def _leading_keys(policy: Any) -> list[str]:
    if isinstance(policy, dict):
        found = list(policy.get("dynamodb:LeadingKeys", []))
        return found + [key for value in policy.values() for key in _leading_keys(value)]
    if isinstance(policy, list):
        return [key for value in policy for key in _leading_keys(value)]
    return []


def test_the_functions_policies_name_the_layouts_prefixes_and_indexes() -> None:
    prefixes: set[str] = set()
    for path in sorted((ROOT / ".chalice" / "policies").glob("*.json")):
        text = path.read_text()
        prefixes.update(_leading_keys(json.loads(text)))
        for index in text.split("/index/")[1:]:
            assert index.split('"', 1)[0] in (layout.OWNER_INDEX, layout.DUE_INDEX), path.name
    assert prefixes, "no policy limits its table access by key prefix"
    allowed = {f"{prefix}*" for prefix in layout.PARTITION_PREFIXES + INDEX_PREFIXES}
    assert prefixes <= allowed


def test_the_lifecycle_rules_expire_the_layouts_prefixes() -> None:
    path = ROOT / "deploy" / "template.yaml"
    template = YAMLTemplateSerializer().load_template(path.read_text(), str(path))
    bucket = template["Resources"]["ArtifactsBucket"]["Properties"]
    rules = {rule["Id"]: rule.get("Prefix") for rule in bucket["LifecycleConfiguration"]["Rules"]}
    assert rules["TemporaryObjects"] == s3_layout.TEMPORARY_PREFIX
    assert rules["ExpiredArtifacts"] == s3_layout.ARTIFACTS_PREFIX


def test_the_functions_policies_grant_only_the_layouts_prefixes() -> None:
    granted: set[str] = set()
    for path in sorted((ROOT / ".chalice" / "policies").glob("*.json")):
        for part in path.read_text().split("${ArtifactsBucket.Arn}/")[1:]:
            granted.add(part.split('"', 1)[0])
    assert granted == {f"{s3_layout.ARTIFACTS_PREFIX}*", f"{s3_layout.TEMPORARY_PREFIX}*"}
