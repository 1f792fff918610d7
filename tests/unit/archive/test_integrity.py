"""The integrity verifier follows an archive's members across chunk boundaries."""

from __future__ import annotations

import json
import os
import zlib

import pytest

from chalicelib.archive import integrity
from chalicelib.core.errors import ChecksumMismatch


def test_the_verifier_follows_members_across_chunk_boundaries() -> None:
    data = os.urandom(10_000)
    checks = [
        integrity.Check("a", 10, 2_000, zlib.crc32(data[10:2_010])),
        integrity.Check("b", 2_010, 5_000, zlib.crc32(data[2_010:7_010])),
        integrity.Check("c", 9_000, 1_000, zlib.crc32(data[9_000:])),
    ]
    verifier = integrity.Verifier(reversed(checks))
    for start in range(0, len(data), 777):
        verifier.update(data[start : start + 777])
    verifier.finish()
    assert verifier.verified == 3

    wrong = integrity.Verifier([integrity.Check("b", 2_010, 5_000, 0)])
    with pytest.raises(ChecksumMismatch, match="'b'"):
        wrong.update(data)
    short = integrity.Verifier([integrity.Check("c", 9_000, 2_000, 0)])
    short.update(data)
    with pytest.raises(ChecksumMismatch, match="past the end"):
        short.finish()


def test_a_verifier_goes_on_from_a_saved_state_wherever_it_stopped() -> None:
    data = os.urandom(10_000)
    checks = [
        integrity.Check("a", 10, 2_000, zlib.crc32(data[10:2_010])),
        integrity.Check("b", 2_010, 5_000, zlib.crc32(data[2_010:7_010])),
        integrity.Check("c", 9_000, 1_000, zlib.crc32(data[9_000:])),
    ]
    for stop in (0, 10, 11, 2_010, 4_000, 7_010, 8_999, 9_500, 10_000):
        first = integrity.Verifier(checks)
        first.update(data[:stop])
        saved = json.loads(json.dumps(first.state.to_json()))
        # Another run, another process: only the checks and the JSON carry over.
        resumed = integrity.Verifier(reversed(checks), integrity.VerifierState.from_json(saved))
        assert resumed.position == stop
        resumed.update(data[stop:])
        resumed.finish()
        assert resumed.verified == 3, stop


def test_a_saved_state_holds_only_the_member_being_read() -> None:
    data = os.urandom(10_000)
    checks = [integrity.Check("a", 10, 2_000, zlib.crc32(data[10:2_010])), integrity.Check("b", 5_000, 10, 0)]
    verifier = integrity.Verifier(checks)
    verifier.update(data[:1_000])
    assert verifier.state == integrity.VerifierState(1_000, 0, (zlib.crc32(data[10:1_000]),))
    verifier.update(data[1_000:3_000])
    assert verifier.state == integrity.VerifierState(3_000, 1, ())


def test_a_mismatch_after_a_resume_is_caught() -> None:
    data = os.urandom(10_000)
    checks = [integrity.Check("b", 2_010, 5_000, zlib.crc32(data[2_010:7_010]) ^ 1)]
    first = integrity.Verifier(checks)
    first.update(data[:3_000])
    resumed = integrity.Verifier(checks, first.state)
    with pytest.raises(ChecksumMismatch, match="'b'"):
        resumed.update(data[3_000:])


def test_a_state_that_does_not_fit_the_checks_is_refused() -> None:
    with pytest.raises(ValueError, match="other checks"):
        integrity.Verifier([], integrity.VerifierState(100, 0, (5,)))
