"""Segments of a parallel build close at their bytes or files and never exceed the maximum."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.core.errors import TooManyParts
from chalicelib.core.models import Download, State
from chalicelib.core.settings import Settings
from chalicelib.s3.manifest import Entry
from chalicelib.workflow import segments


def test_segments_close_at_their_bytes_or_files_and_never_exceed_the_maximum() -> None:
    settings = Settings(
        table="t", artifact_bucket="a", source_bucket="s", state_machine_arn="arn",
        segment_bytes=100, segment_files=3, max_segments=4,
    )  # fmt: skip
    entries = [Entry(f"k{i}", 40, "e", f"k{i}") for i in range(10)]
    found = segments.groups(entries, settings)
    assert [len(group) for group in found] == [3, 3, 3, 1]
    assert [entry for group in found for entry in group] == entries
    many = [Entry(f"k{i}", 1, "e", f"k{i}") for i in range(100)]
    assert len(segments.groups(many, settings)) == 4  # 25 files each, not 34 segments of 3


GIB = 1024**3


def _download(params: dict[str, Any] | None = None) -> Download:
    return Download(
        id="d" * 32,
        type="zip",
        params=params or {"keys": ["k"], "prefixes": [], "compression": "deflate"},
        filename="x.zip",
        tenant="acme",
        user_id="alice",
        state=State.RUNNING,
        created_at="2026-01-01T00:00:00.000Z",
        retention_seconds=60,
    )


def test_a_terabyte_zip_plans_past_the_old_cap_of_100_segments_within_s3s_parts() -> None:
    settings = Settings(table="t", artifact_bucket="a", source_bucket="s", state_machine_arn="arn")
    entries = [Entry(f"k{i}", GIB, "e", f"k{i}") for i in range(1024)]  # 1 TiB in 1 GiB files
    found = segments.plan(_download(), entries, settings)
    assert found is not None
    assert len(found) == 1024  # one 1 GiB file per segment: 512 MiB closes each
    assert segments.parts_needed(found, settings) <= segments.S3_MAX_PARTS


def test_a_plan_past_s3s_10000_parts_fails_too_many_parts_before_any_build() -> None:
    settings = Settings(table="t", artifact_bucket="a", source_bucket="s", state_machine_arn="arn")
    # A tar is one stream: 100 GiB in 8 MiB parts is 12,800 parts.
    entries = [Entry(f"k{i}", GIB, "e", f"k{i}") for i in range(100)]
    tar = {"keys": ["k"], "prefixes": [], "compression": "deflate", "format": "tar"}
    with pytest.raises(TooManyParts) as refused:
        segments.plan(_download(tar), entries, settings)
    assert refused.value.code == "TooManyParts"
    assert "SATCHEL_PART_SIZE" in refused.value.message
    larger = Settings(
        table="t", artifact_bucket="a", source_bucket="s", state_machine_arn="arn", part_size=64 * 1024**2
    )
    assert segments.plan(_download(tar), entries, larger) is None  # one Build, 1,600 parts


def test_segments_are_bounded_by_s3s_parts_not_by_a_count_of_100() -> None:
    settings = Settings(
        table="t", artifact_bucket="a", source_bucket="s", state_machine_arn="arn", segment_files=1,
        parallel_min_files=1,
    )  # fmt: skip
    small = [Entry(f"k{i}", 10, "e", f"k{i}") for i in range(9_000)]
    assert len(segments.plan(_download(), small, settings) or []) == 9_000
    # Segments of 6 GiB are copied in two parts each: 5,001 of them pass 10,000 parts.
    large = [Entry(f"k{i}", 6 * GIB, "e", f"k{i}") for i in range(5_001)]
    with pytest.raises(TooManyParts):
        segments.plan(_download(), large, settings)
    assert segments.plan(_download(), large[:4_900], settings) is not None
