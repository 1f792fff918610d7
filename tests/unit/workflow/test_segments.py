"""Segments of a parallel build close at their bytes or files and never exceed the maximum."""

from __future__ import annotations

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
