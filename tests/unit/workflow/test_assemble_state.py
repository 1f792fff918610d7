"""What an Assemble run saves for the next one (chalicelib/workflow/segments.py `_Joined`):
it comes back as it was saved, whatever it holds, and stays small beside 9,000 segments;
and which segments it copies at once (`_together`)."""

from __future__ import annotations

import dataclasses
import json
from collections import deque

from chalicelib.archive.zipwriter import CopyRange
from chalicelib.workflow.segments import S3_MAX_PARTS, _Joined, _together


def _joined(rest: CopyRange | None, segments: int = 3) -> _Joined:
    return _Joined(
        upload_id="upload-1",
        parts=[(number, f'"etag-{number}"') for number in range(1, segments + 1)],
        size=3 * 512 * 1024**2 + 17,
        part_size=105 * 1024**2,
        next=segments,
        placed=[index * 512 * 1024**2 for index in range(segments)],
        rest=rest,
    )


def test_a_saved_state_comes_back_as_it_was_with_a_segments_rest_to_copy() -> None:
    rest = CopyRange(
        "artifacts-bucket", "tmp/x/segments/00002/members.zip", '"abc"', 5 * 1024**3, 7 * 1024**3
    )
    saved = _joined(rest)
    loaded = _Joined.from_json(saved.to_json())
    assert loaded == saved
    assert loaded.rest is not None
    assert loaded.rest.length == 2 * 1024**3
    assert all(isinstance(number, int) and isinstance(etag, str) for number, etag in loaded.parts)


def test_a_saved_state_between_two_segments_has_no_rest() -> None:
    saved = _joined(None)
    assert _Joined.from_json(saved.to_json()) == saved
    assert json.loads(saved.to_json())["rest"] is None


def test_the_state_of_the_largest_plan_stays_well_under_a_megabyte() -> None:
    # 9,000 segments and S3's 10,000 parts: saved in S3, never in the payload.
    parts = [(number, f'"{number:032x}-1"') for number in range(1, S3_MAX_PARTS + 1)]
    largest = dataclasses.replace(_joined(None, segments=9_000), parts=parts)
    assert len(largest.to_json()) < 1024**2
    assert _Joined.from_json(largest.to_json()) == largest


def _segment(index: int, size: int) -> CopyRange:
    return CopyRange("bucket", f"tmp/x/segments/{index:05d}/members.zip", f'"{index}"', 0, size)


def test_segments_of_one_part_each_after_a_part_boundary_are_copied_together() -> None:
    mib = 1024**2
    sizes = [512 * mib, 512 * mib, 5 * mib, 512 * mib, 4 * mib, 512 * mib, 6 * 1024**3]
    ahead = deque(_segment(index, size) for index, size in enumerate(sizes))
    assert [source.length for source in _together(ahead, 0, workers=2)] == sizes[:2]  # `workers` at most
    assert [source.length for source in _together(ahead, 0, workers=8)] == sizes[2:4]
    # Under 5 MiB (read through) or over 5 GiB (several parts): one by one, as are any
    # after bytes held short of a part (the next is topped up through the worker).
    assert _together(ahead, 0, workers=8) == []
    ahead.popleft()
    assert _together(ahead, 100, workers=8) == []
    assert [source.length for source in _together(ahead, 0, workers=8)] == [512 * mib]
    assert _together(ahead, 0, workers=8) == []
    assert len(ahead) == 1
