"""The integrity verifier follows an archive's members across chunk boundaries."""

from __future__ import annotations

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
