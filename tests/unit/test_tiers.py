"""The tiers hold: the unit tier refuses the emulator, and every test is marked with the tier
of its directory (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from tests.conftest import HERE, tier_of, xdist_group_of


@pytest.mark.parametrize("fixture", ["stack", "satchel", "s3"])
def test_a_unit_test_asking_for_the_stack_fails_and_says_where_it_belongs(
    request: pytest.FixtureRequest, fixture: str
) -> None:
    with pytest.raises(pytest.fail.Exception, match=rf"`{fixture}` fixture.*tests/stack/"):
        request.getfixturevalue(fixture)


def test_a_unit_test_starting_moto_fails_before_any_call_is_mocked() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"mock_aws.*tests/stack/"), mock_aws():
        boto3.client("s3", region_name="us-east-1").list_buckets()


def test_each_test_carries_the_marker_of_its_tier(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("unit") is not None
    assert request.node.get_closest_marker("stack") is None


def test_a_file_outside_a_tiers_directory_is_refused() -> None:
    assert tier_of(HERE / "deploy" / "test_iam.py") == "deploy"
    assert tier_of(HERE / "unit" / "core" / "test_names.py") == "unit"
    for stray in (HERE / "test_stray.py", HERE / "support" / "test_stray.py"):
        with pytest.raises(pytest.UsageError, match="belongs in a tier's directory"):
            tier_of(stray)
    assert tier_of(Path(HERE / "e2e" / ".." / "e2e" / "test_fuzz.py")) == "e2e"


def test_in_parallel_each_e2e_and_deploy_file_is_one_group_and_the_rest_spreads() -> None:
    assert xdist_group_of(HERE / "e2e" / "test_readers.py") == "e2e/test_readers.py"
    assert xdist_group_of(HERE / "deploy" / "test_iam.py") == "deploy/test_iam.py"
    assert xdist_group_of(HERE / "stack" / "test_faults.py") is None
    assert xdist_group_of(HERE / "unit" / "core" / "test_names.py") is None
