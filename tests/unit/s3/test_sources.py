"""Which S3 checksums are a whole object's CRC-32, one test per shape S3 answers in; the
part-checksum combination; and the first reading pass when neither will do."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import threading
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from chalicelib.s3 import sources
from chalicelib.s3.manifest import Entry

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_s3.client import S3Client

MIB = 1024 * 1024
FIXTURES = Path(__file__).parents[2] / "support" / "fixtures"


def b64(value: int) -> str:
    return base64.b64encode(value.to_bytes(4, "big")).decode()


def test_a_full_object_checksum_is_trusted_even_for_a_multipart_object() -> None:
    head = {"ChecksumCRC32": b64(0xDEADBEEF), "ChecksumType": "FULL_OBJECT", "ETag": '"abc-3"'}
    assert sources.full_object_crc32(head) == 0xDEADBEEF


def test_a_composite_checksum_is_never_trusted() -> None:
    head = {"ChecksumCRC32": b64(1) + "-3", "ChecksumType": "COMPOSITE", "ETag": '"abc-3"'}
    assert sources.full_object_crc32(head) is None
    assert sources.full_object_crc32({**head, "ChecksumCRC32": b64(1)}) is None  # the word suffices


def test_a_single_put_without_a_checksum_type_is_trusted() -> None:
    head = {"ChecksumCRC32": b64(42), "ETag": '"2a44eeaa8055cf79b9eddf285f34fc7e"'}
    assert sources.full_object_crc32(head) == 42
    assert sources.full_object_crc32(head, parts_count=None) == 42


def test_an_unmarked_checksum_of_an_object_uploaded_in_parts_is_not_trusted() -> None:
    # moto's answer: no ChecksumType, no "-N" on the value; the ETag or PartsCount gives it away.
    assert sources.full_object_crc32({"ChecksumCRC32": b64(7), "ETag": '"489c1e8b-3"'}) is None
    assert sources.full_object_crc32({"ChecksumCRC32": b64(7), "ETag": '"plain"'}, parts_count=2) is None


def test_the_recorded_real_s3_composite_answer_is_not_trusted() -> None:
    head = json.loads((FIXTURES / "s3_head_object_composite.json").read_text())
    assert head["ChecksumType"] == "COMPOSITE"
    assert sources.full_object_crc32(head) is None


def test_no_checksum_at_all_is_not_a_checksum() -> None:
    assert sources.full_object_crc32({"ETag": '"plain"'}) is None


def test_part_checksums_combine_into_the_whole_objects_crc() -> None:
    data = os.urandom(3 * MIB + 12345)
    cuts = [0, MIB, 2 * MIB + 7, len(data)]
    parts = [(zlib.crc32(data[a:b]), b - a) for a, b in itertools.pairwise(cuts)]
    assert sources.combine_crc32(parts) == zlib.crc32(data)
    assert sources.combine_crc32([]) == 0


class PartsListingS3:
    """GetObjectAttributes as real S3 answers it for a CRC32 multipart object, two pages."""

    def __init__(self, data: bytes, part: int) -> None:
        self.parts: list[dict[str, Any]] = [
            {
                "PartNumber": n + 1,
                "Size": len(data[i : i + part]),
                "ChecksumCRC32": b64(zlib.crc32(data[i : i + part])),
            }
            for n, i in enumerate(range(0, len(data), part))
        ]
        self.calls: list[dict[str, Any]] = []

    def get_object_attributes(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        marker = kwargs["PartNumberMarker"]
        page = [p for p in self.parts if p["PartNumber"] > marker][:2]
        truncated = page[-1]["PartNumber"] < len(self.parts)
        listed: dict[str, Any] = {"Parts": page, "IsTruncated": truncated, "TotalPartsCount": len(self.parts)}
        if truncated:
            listed["NextPartNumberMarker"] = page[-1]["PartNumber"]
        return {"ObjectParts": listed}

    @property
    def typed(self) -> S3Client:
        """This fake where the code expects the boto3 client (it answers the one call used)."""
        return cast("S3Client", self)


def test_part_checksums_listed_by_get_object_attributes_are_combined_page_by_page() -> None:
    data = os.urandom(5 * MIB + 3)
    fake = PartsListingS3(data, MIB)
    assert sources.part_crc32s(fake.typed, "bucket", Entry("k", len(data), "e", "k")) == zlib.crc32(data)
    assert [call["PartNumberMarker"] for call in fake.calls] == [0, 2, 4]
    # A listing that does not add up to the object is not used.
    assert sources.part_crc32s(fake.typed, "bucket", Entry("k", len(data) + 1, "e", "k")) is None


class RangedS3:
    """Answers ranged GetObject of one object, pinned to its ETag, counting requests in flight."""

    def __init__(self, data: bytes, etag: str) -> None:
        self.data, self.etag = data, etag
        self.ranges: list[tuple[int, int]] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self.most_in_flight = 0

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        assert kwargs["IfMatch"] == self.etag
        first, last = (int(bound) for bound in kwargs["Range"].removeprefix("bytes=").split("-"))
        with self._lock:
            self.ranges.append((first, last + 1))
            self._in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self._in_flight)
        return {"Body": _Body(self.data[first : last + 1], self._done)}

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1

    @property
    def typed(self) -> S3Client:
        return cast("S3Client", self)


class _Body:
    def __init__(self, data: bytes, closed: Callable[[], None]) -> None:
        self._data, self._closed = data, closed

    def iter_chunks(self, size: int) -> Iterator[bytes]:
        for start in range(0, len(self._data), size):
            yield self._data[start : start + size]

    def close(self) -> None:
        self._closed()


def test_ranges_read_in_parallel_combine_into_the_crc_of_the_whole_for_odd_range_sizes() -> None:
    data = os.urandom(100_003)
    for start, range_bytes, workers in [(0, 1, 1), (0, 7, 3), (13, 4097, 4), (0, 65_536, 8), (5, 100_000, 2)]:
        fake = RangedS3(data if range_bytes > 1 else data[:997], '"etag"')
        size = len(fake.data)
        ranges = list(
            sources.range_crc32s(fake.typed, "b", "k", '"etag"', (start, size), (range_bytes, workers), 1000)
        )
        assert sources.combine_crc32(ranges) == zlib.crc32(fake.data[start:])
        # Consecutive ranges of at most range_bytes, from start to the end, each read once.
        assert [length for _, length in ranges] == [
            min(range_bytes, size - first) for first in range(start, size, range_bytes)
        ]
        assert sorted(fake.ranges) == [
            (first, min(first + range_bytes, size)) for first in range(start, size, range_bytes)
        ]
        assert fake.most_in_flight <= workers


def test_a_first_pass_stopped_between_ranges_goes_on_from_there() -> None:
    from chalicelib.archive.zipwriter import CopyRange, ZipLayout

    data = os.urandom(50_001)
    fake = RangedS3(data, '"etag"')
    when = datetime(2024, 1, 2, tzinfo=UTC)
    source = CopyRange("b", "k", '"etag"', 0, len(data))
    layout = ZipLayout(when, stop=lambda: True)
    member = layout.stored("k", len(data), when, source)
    passes = 0
    while True:  # a run a range: each goes on from the member the last one carried
        passes += 1
        span = (member.rest.start, member.rest.end)
        with contextlib.closing(
            sources.range_crc32s(fake.typed, "b", "k", '"etag"', span, (9_999, 3), 4096)
        ) as ranges:
            crc = layout.checksum_ranges(member, ranges)
        if crc is not None:
            break
        assert layout.carried is not None
        assert layout.offset == 0  # nothing of it written
        member, layout = layout.carried, ZipLayout(when, stop=lambda: True)
    assert passes == 6  # 50,001 bytes in ranges of 9,999: a stop between each two
    assert crc == zlib.crc32(data)
