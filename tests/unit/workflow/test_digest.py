"""The Digest step's read-back: the SHA-256 of the whole object, read a chunk at a time, with
every member's CRC-32 checked on the way, and the body closed whatever happens; and the same
read handed on between runs (a `Reading` saved as JSON), each run a ranged GET from where the
last one stopped."""

from __future__ import annotations

import hashlib
import itertools
import os
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import pytest

from chalicelib.archive.integrity import Check
from chalicelib.core.errors import ChecksumMismatch
from chalicelib.workflow.digest import Reading, Sha256, read_on
from chalicelib.workflow.runs import Budget

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

DATA = bytes(range(256)) * 40 + b"tail"


class Body:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sizes: list[int] = []
        self.closed = False

    def iter_chunks(self, chunk_bytes: int) -> Iterator[bytes]:
        for start in range(0, len(self.data), chunk_bytes):
            self.sizes.append(chunk_bytes)
            yield self.data[start : start + chunk_bytes]

    def close(self) -> None:
        self.closed = True


class S3:
    """Answers GetObject as S3 does, a `Range` of `bytes=<first>-` included."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.bodies: list[Body] = []
        self.asked: list[tuple[str, str, str | None]] = []

    def get_object(self, Bucket: str, Key: str, Range: str | None = None) -> dict[str, Any]:
        self.asked.append((Bucket, Key, Range))
        first = 0
        if Range is not None:
            first = int(Range.removeprefix("bytes=").removesuffix("-"))
            assert first < len(self.data), "S3 answers InvalidRange (416)"
        self.bodies.append(Body(self.data[first:]))
        return {"Body": self.bodies[-1], "ContentLength": len(self.data) - first}

    @property
    def typed(self) -> S3Client:
        """This fake where the code expects the boto3 client (it answers the one call used)."""
        return cast("S3Client", self)


def _check(offset: int, size: int, crc: int | None = None, data: bytes = DATA) -> Check:
    member = data[offset : offset + size]
    return Check("member", offset, size, zlib.crc32(member) if crc is None else crc)


def _low_after(chunks: int) -> Budget:
    """A budget that runs low once `chunks` chunks were read (asked once after each)."""
    left = itertools.count(chunks - 1, -1)
    return Budget(lambda: next(left), reserve_ms=1)


def _in_runs(s3: S3, chunk_bytes: int, checks: list[Check], per_run: int) -> tuple[str, int]:
    """The object read in runs of `per_run` chunks, each run's Reading going through JSON."""
    reading: Reading | None = None
    for run in itertools.count(1):
        read = read_on(s3.typed, "b", "k", chunk_bytes, checks, reading, _low_after(per_run))
        if isinstance(read, str):
            return read, run
        reading = Reading.from_json(read.to_json())
    raise AssertionError("unreachable")


def test_the_sha256_is_of_the_whole_object_read_in_chunks_of_the_given_size() -> None:
    s3 = S3(DATA)
    assert read_on(s3.typed, "artifacts", "d/a.zip", 1000) == hashlib.sha256(DATA).hexdigest()
    assert s3.asked == [("artifacts", "d/a.zip", None)]
    assert s3.bodies[0].sizes == [1000] * 11
    assert s3.bodies[0].closed


def test_an_empty_object_is_read_without_a_range() -> None:
    s3 = S3(b"")
    assert read_on(s3.typed, "b", "k", 1000, budget=_low_after(1)) == hashlib.sha256(b"").hexdigest()
    assert s3.asked == [("b", "k", None)]


def test_members_whose_crcs_match_pass_across_chunk_boundaries() -> None:
    checks = [_check(0, 10), _check(990, 1500), _check(len(DATA) - 4, 4)]
    assert read_on(S3(DATA).typed, "b", "k", 1000, checks) == hashlib.sha256(DATA).hexdigest()


def test_a_member_whose_crc_does_not_match_fails_and_the_body_is_closed() -> None:
    s3 = S3(DATA)
    with pytest.raises(ChecksumMismatch):
        read_on(s3.typed, "b", "k", 1000, [_check(990, 1500, crc=0)])
    assert s3.bodies[0].closed


def test_a_member_past_the_end_of_the_object_fails() -> None:
    with pytest.raises(ChecksumMismatch):
        read_on(S3(DATA).typed, "b", "k", 1000, [_check(len(DATA) - 4, 100, crc=1)])


def test_a_read_handed_on_between_runs_gives_the_same_sha256_and_checks() -> None:
    data = os.urandom(50_000)
    checks = [_check(at, size, data=data) for at, size in ((100, 7_000), (7_100, 30_000), (49_000, 1_000))]
    s3 = S3(data)
    sha256, runs = _in_runs(s3, 1000, checks, per_run=3)
    assert sha256 == hashlib.sha256(data).hexdigest()
    assert runs == 17  # 50 chunks, 3 a run
    # Each run a ranged GET from where the last one stopped, its body closed.
    assert [asked[2] for asked in s3.asked] == [None] + [f"bytes={3000 * run}-" for run in range(1, 17)]
    assert all(body.closed for body in s3.bodies)


def test_a_run_whose_budget_is_low_from_the_start_still_reads_a_chunk() -> None:
    sha256, runs = _in_runs(S3(DATA), 1000, [_check(990, 1500)], per_run=0)
    assert (sha256, runs) == (hashlib.sha256(DATA).hexdigest(), 11)


def test_the_last_chunk_finishes_the_read_even_when_the_budget_is_low() -> None:
    s3 = S3(DATA)
    # 11 chunks: the budget is low after the 11th, but nothing is left to hand on.
    assert read_on(s3.typed, "b", "k", 1000, budget=_low_after(11)) == hashlib.sha256(DATA).hexdigest()


def test_a_mismatch_in_a_later_run_fails_it() -> None:
    data = os.urandom(20_000)
    wrong = Check("late", 15_000, 4_000, zlib.crc32(data[15_000:19_000]) ^ 1)
    reading: Reading | None = None
    for _ in range(4):  # 4 chunks a run: bytes 16,000-19,999 are the fifth run's
        read = read_on(S3(data).typed, "b", "k", 1000, [wrong], reading, _low_after(4))
        assert isinstance(read, Reading)
        reading = Reading.from_json(read.to_json())
    with pytest.raises(ChecksumMismatch, match="'late'"):
        read_on(S3(data).typed, "b", "k", 1000, [wrong], reading, _low_after(4))


def test_a_run_read_again_from_the_same_state_goes_to_the_same_place() -> None:
    data = os.urandom(10_000)
    checks = [_check(500, 8_000, data=data)]
    first = read_on(S3(data).typed, "b", "k", 1000, checks, None, _low_after(2))
    assert isinstance(first, Reading)
    # A retried run: the same saved state, twice.
    again = [read_on(S3(data).typed, "b", "k", 1000, checks, first, _low_after(3)) for _ in range(2)]
    assert again[0] == again[1]
    assert isinstance(again[0], Reading)
    assert again[0].verifier.position == 5000
    assert read_on(S3(data).typed, "b", "k", 1000, checks, again[0]) == hashlib.sha256(data).hexdigest()


def test_a_sha256_state_saved_and_resumed_elsewhere_is_hashlibs_sha256() -> None:
    data = os.urandom(300_000)
    hashed = Sha256()
    for start in range(0, len(data), 65_537):  # not on 64-byte blocks: a partial block carries
        hashed = Sha256(hashed.saved())
        hashed.update(data[start : start + 65_537])
    assert len(hashed.saved()) == 104
    assert hashed.hexdigest() == hashlib.sha256(data).hexdigest()
