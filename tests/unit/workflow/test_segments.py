"""Segments of a parallel build close at their bytes or files and never exceed the maximum."""

from __future__ import annotations

from dataclasses import replace
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
SETTINGS = Settings(table="t", artifact_bucket="a", source_bucket="s", state_machine_arn="arn")


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


def test_a_single_stream_past_10000_parts_of_the_configured_size_gets_larger_parts() -> None:
    settings = Settings(table="t", artifact_bucket="a", source_bucket="s", state_machine_arn="arn")
    # A tar is one stream: 100 GiB in 8 MiB parts would be 12,800 parts; 11 MiB parts fit.
    entries = [Entry(f"k{i}", GIB, "e", f"k{i}") for i in range(100)]
    tar = {"keys": ["k"], "prefixes": [], "compression": "deflate", "format": "tar"}
    assert segments.plan(_download(tar), entries, settings) is None  # one Build
    assert segments.part_size(_download(tar), entries, settings) == 11 * MIB
    assert segments.single_parts_needed(entries, settings) <= segments.S3_MAX_PARTS
    larger = Settings(
        table="t", artifact_bucket="a", source_bucket="s", state_machine_arn="arn", part_size=64 * MIB
    )
    assert segments.part_size(_download(tar), entries, larger) == 64 * MIB  # never below the setting


MIB = 1024**2
TIB = 1024**4


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (GIB, 8 * MIB),  # 128 parts: the configured size
        (80 * GIB, 9 * MIB),  # 10,240 parts of 8 MiB would not fit: 8.2 MiB, rounded up
        (TIB, 105 * MIB),  # 1 TiB / 9,999 parts = 104.9 MiB, in whole MiB
    ],
)
def test_the_part_size_is_the_smallest_whole_mib_at_least_the_setting_that_fits_10000_parts(
    total: int, expected: int
) -> None:
    upload = segments.Upload(written=total, fixed=1)
    size = segments.part_size_for(upload, 8 * MIB)
    assert size == expected
    assert size % MIB == 0
    assert upload.parts(size) <= segments.S3_MAX_PARTS
    assert size == 8 * MIB or upload.parts(size - MIB) > segments.S3_MAX_PARTS  # the smallest


def test_the_part_size_leaves_room_for_the_parts_copies_take() -> None:
    # 1 TiB written and 4,000 parts copied by S3: 6,000 parts are left for the written bytes.
    upload = segments.Upload(written=TIB, fixed=4_000, copied=GIB)
    size = segments.part_size_for(upload, 8 * MIB)
    assert size == 175 * MIB
    assert upload.parts(size) <= segments.S3_MAX_PARTS


def test_an_upload_that_cannot_fit_one_s3_object_is_refused_too_many_parts() -> None:
    with pytest.raises(TooManyParts) as past_object:
        # 5 TiB of sources and their headers: more than S3's largest object.
        segments.part_size_for(segments.single_upload([Entry("k", 5 * TIB, "e", "k")], SETTINGS), 8 * MIB)
    assert past_object.value.code == "TooManyParts"
    assert "largest" in past_object.value.message
    # Within 5 TiB but with nearly every part taken by copies: no part the worker holds fits.
    with pytest.raises(TooManyParts) as no_room:
        segments.part_size_for(segments.Upload(written=TIB, fixed=9_990), 8 * MIB)
    assert "SATCHEL_SEGMENT_BYTES" in no_room.value.message
    assert segments.MAX_WRITTEN_PART == 525 * MIB


def test_a_5_tib_download_is_refused_before_any_build() -> None:
    settings = Settings(
        table="t", artifact_bucket="a", source_bucket="s", state_machine_arn="arn",
        max_content_bytes=10 * TIB,
    )  # fmt: skip
    tar = {"keys": ["k"], "prefixes": [], "compression": "deflate", "format": "tar"}
    entries = [Entry(f"k{i}", 512 * GIB, "e", f"k{i}") for i in range(10)]  # 5 TiB in one stream
    with pytest.raises(TooManyParts):
        segments.plan(_download(tar), entries, settings)


def test_each_segment_object_gets_the_part_size_its_bytes_need() -> None:
    settings = Settings(table="t", artifact_bucket="a", source_bucket="s", state_machine_arn="arn")
    # One 200 GiB member is a segment of its own: 25,600 parts of 8 MiB; 21 MiB parts fit.
    entries = [Entry("big", 200 * GIB, "e", "big"), *(Entry(f"k{i}", GIB, "e", f"k{i}") for i in range(3))]
    found = segments.plan(_download(), entries, settings)
    assert found is not None
    assert segments.part_size_for(segments.segment_upload(found[0], settings), settings.part_size) == 21 * MIB
    assert segments.parts_needed(found, settings) <= segments.S3_MAX_PARTS


def test_segments_are_bounded_by_s3s_parts_not_by_a_count_of_100() -> None:
    settings = Settings(
        table="t", artifact_bucket="a", source_bucket="s", state_machine_arn="arn", segment_files=1,
        parallel_min_files=1,
    )  # fmt: skip
    small = [Entry(f"k{i}", 10, "e", f"k{i}") for i in range(9_000)]
    assert len(segments.plan(_download(), small, settings) or []) == 9_000
    # Segments of 6 MiB are copied in a part each: 10,000 of them (and the directory's
    # part) pass 10,000 parts, whatever the part size.
    large = [Entry(f"k{i}", 6 * MIB, "e", f"k{i}") for i in range(10_000)]
    with pytest.raises(TooManyParts) as refused:
        segments.plan(_download(), large, replace(settings, max_segments=10_000))
    assert refused.value.details["parts"] > segments.S3_MAX_PARTS
    assert segments.plan(_download(), large[:9_000], settings) is not None
    # Past S3's largest object (5 TiB): refused, whatever the parts.
    huge = [Entry(f"k{i}", 6 * GIB, "e", f"k{i}") for i in range(900)]
    with pytest.raises(TooManyParts):
        segments.plan(_download(), huge, settings)
    assert segments.plan(_download(), huge[:800], settings) is not None  # 4.7 TiB
