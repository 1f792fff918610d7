"""Checks of members whose CRC-32 no worker computed from their bytes.

A stored member copied by S3 (`UploadPartCopy`) is announced with a CRC-32 taken from S3's
metadata or combined from part checksums, never from bytes the builder read. Each such
member is a `Check` (where its data lies in the artifact, its size, the CRC announced),
kept in a small JSON-lines object under `tmp/<id>/` (s3/layout.py: checks_key; not in the
state payload). The Digest
step, which reads the finished artifact once for its SHA-256 anyway, computes each listed
range's CRC-32 on the way (`Verifier`) and fails the download on any mismatch. Digest
may take several Lambda runs to read a large artifact: a Verifier's `state` (where it is,
the partial CRC-32 of the member it is in) is saved by one run and resumed by the next.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from chalicelib.core.errors import ChecksumMismatch

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_s3.client import S3Client


@dataclass(frozen=True)
class Check:
    """A member's data at [offset, offset + size) of the archive should have CRC-32 `crc`."""

    name: str
    offset: int
    size: int
    crc: int

    @property
    def end(self) -> int:
        return self.offset + self.size

    def moved(self, by: int) -> Check:
        return replace(self, offset=self.offset + by)


def write(s3: S3Client, bucket: str, key: str, checks: Iterable[Check]) -> None:
    body = "".join(json.dumps([c.name, c.offset, c.size, c.crc], ensure_ascii=False) + "\n" for c in checks)
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode("utf-8"), ContentType="application/x-ndjson")


def read(s3: S3Client, bucket: str, key: str) -> Iterator[Check]:
    """The checks written at `key`. Every zip build writes its checks, even none: a missing
    object is an error, never "nothing to check"."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    for line in body.iter_lines():
        if line:
            name, offset, size, crc = json.loads(line)
            yield Check(str(name), int(offset), int(size), int(crc))


@dataclass(frozen=True)
class VerifierState:
    """Where a Verifier stands, for another run to go on from: the bytes it has seen, the
    first check not yet complete (every earlier one was verified), and the CRC-32 so far of
    each check from there on that has begun (at most one, as members do not overlap)."""

    position: int
    next: int
    running: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"position": self.position, "next": self.next, "running": list(self.running)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> VerifierState:
        return cls(int(raw["position"]), int(raw["next"]), tuple(int(crc) for crc in raw["running"]))


class Verifier:
    """Fed the artifact's bytes in order, checks every listed range's CRC-32 as it passes.

    Given the same checks and a `state` an earlier Verifier had, it goes on from there."""

    def __init__(self, checks: Iterable[Check], state: VerifierState | None = None) -> None:
        self._checks = sorted(checks, key=lambda check: check.offset)
        self._running = [0] * len(self._checks)
        self._next = 0  # the first check not yet complete
        self._position = 0
        self.verified = 0
        if state is not None:
            self._resume(state)

    def _resume(self, state: VerifierState) -> None:
        begun = state.next + len(state.running)
        if state.next < 0 or begun > len(self._checks) or state.position < 0:
            raise ValueError(f"a verifier's state for other checks: {state}")
        self._running[state.next : begun] = state.running
        self._next = self.verified = state.next
        self._position = state.position

    @property
    def state(self) -> VerifierState:
        begun = self._next
        while begun < len(self._checks) and self._checks[begun].offset < self._position:
            begun += 1
        return VerifierState(self._position, self._next, tuple(self._running[self._next : begun]))

    @property
    def position(self) -> int:
        """How many bytes it has been fed (by every run)."""
        return self._position

    def update(self, chunk: bytes) -> None:
        start, end = self._position, self._position + len(chunk)
        view = memoryview(chunk)
        index = self._next
        while index < len(self._checks) and self._checks[index].offset < end:
            check = self._checks[index]
            low, high = max(check.offset, start), min(check.end, end)
            if low < high:
                self._running[index] = zlib.crc32(view[low - start : high - start], self._running[index])
            index += 1
        self._position = end
        self._settle(end)

    def finish(self) -> None:
        """After the last byte: every check must have been complete and right."""
        self._settle(self._position)
        if self._next < len(self._checks):
            missing = self._checks[self._next]
            raise ChecksumMismatch(f"member {missing.name!r} lies past the end of the archive")

    def _settle(self, upto: int) -> None:
        while self._next < len(self._checks) and self._checks[self._next].end <= upto:
            check = self._checks[self._next]
            if self._running[self._next] != check.crc:
                raise ChecksumMismatch(
                    f"member {check.name!r} does not have the CRC-32 its headers announce; "
                    "the archive was not shipped"
                )
            self._next += 1
            self.verified += 1
