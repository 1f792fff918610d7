"""The zip format, written by hand so an archive can be laid out without seeing its bytes.

A writer here never holds a member: it emits *pieces*, either bytes it made (headers,
compressed data, the central directory) or a `CopyRange` of a source object that S3
copies server-side. Offsets are counted from `start`, so a segment can be laid out alone
and its members moved to their place in the whole archive when the segments are joined.

ZIP64 records are written exactly when a field does not fit: a member of 4 GiB or more (or
at an offset past 4 GiB), or more than 65,534 members, or a central directory past 4 GiB.
(A streamed member's header is written before its compressed size is known: one whose
source is within deflate's worst-case growth of 4 GiB gets ZIP64 sizes to be safe.)

A member whose bytes pass through the worker and that is too large for one Lambda run
stops between two of its chunks (`ZipLayout.stop`): its header and bytes so far are written,
and `carried` says where it stopped (`Streaming`, with the member's `method`); a later run's
layout goes on with it (`resumed`) and records it at the offset of its header. A deflated
one carries its deflate stream (CRC, sizes, last 32 KiB) and ends with its descriptor, its
header never having needed its CRC or sizes (ZIP64 sizes are decided from the size the
manifest announced). A stored one (see below) carries the CRC-32 of its bytes so far, to
check against the CRC its header announced once the last byte has passed; and if S3 could
not give that CRC, the first pass that reads the source for it may stop between two chunks
too, before the header is written (`checksum`; for a member S3 copies, between two ranges
read in parallel: `checksum_ranges`), carrying that pass's CRC so far. A member
held in memory for its CRC (`hold`, below 16 MiB) may stop while it is read, likewise before
its header: what it held is dropped, and it goes on as such a first pass.

A STORED member never has a data descriptor: Java's `ZipInputStream` (and Commons
Compress) refuse one ("only DEFLATED entries can have EXT descriptor"). Its CRC-32 and size
go in the local header, so they must be known before its bytes (`known`); only deflated
members are `streamed` with a descriptor. A stored member whose bytes pass through the
writer is checked against the CRC announced as they pass (ChecksumMismatch, before any
upload completes); one copied by S3 is listed in `unverified`, for the Digest step to check
in the finished artifact (chalicelib/archive/integrity.py).
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from chalicelib.archive.deflate import Carried, ChunkedDeflate
from chalicelib.archive.integrity import Check
from chalicelib.core.errors import ChecksumMismatch

STORED = 0
DEFLATED = 8
LIMIT_32 = 0xFFFFFFFF
LIMIT_16 = 0xFFFF

_UTF8_NAMES = 0x0800
_DATA_DESCRIPTOR = 0x0008
_VERSION_MADE_BY = (3 << 8) | 45  # Unix, spec 4.5
_VERSION_PLAIN = 20
_VERSION_ZIP64 = 45
_FILE_MODE = 0o100644 << 16  # a regular file, rw-r--r--, in the external attributes

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_DESCRIPTOR_32 = struct.Struct("<IIII")
_DESCRIPTOR_64 = struct.Struct("<IIQQ")
_ZIP64_END = struct.Struct("<IQHHIIQQQQ")
_ZIP64_LOCATOR = struct.Struct("<IIQI")
_END = struct.Struct("<IHHHHIIH")


@dataclass(frozen=True)
class CopyRange:
    """Bytes [start, end) of a source object, pinned to its ETag: copied, not read, when it can be."""

    bucket: str
    key: str
    etag: str
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


Piece = bytes | CopyRange


@dataclass(frozen=True)
class Member:
    """One central directory record; `offset` is where its local header starts."""

    name: str
    method: int
    crc: int
    compressed_size: int
    size: int
    offset: int
    dos_time: int
    dos_date: int
    flags: int

    def moved(self, by: int) -> Member:
        return replace(self, offset=self.offset + by)

    def to_json(self) -> list[str | int]:
        return [
            self.name,
            self.method,
            self.crc,
            self.compressed_size,
            self.size,
            self.offset,
            self.dos_time,
            self.dos_date,
            self.flags,
        ]

    @classmethod
    def from_json(cls, raw: list[str | int]) -> Member:
        name, *numbers = raw
        return cls(str(name), *(int(number) for number in numbers))


def dos_timestamp(when: datetime) -> tuple[int, int]:
    """(time, date) in MS-DOS format; zip cannot say anything before 1980."""
    when = max(when.replace(tzinfo=None), datetime(1980, 1, 1))
    time = (when.hour << 11) | (when.minute << 5) | (when.second // 2)
    date = ((when.year - 1980) << 9) | (when.month << 5) | when.day
    return time, date


def may_need_zip64(size: int) -> bool:
    """Whether a member of `size` bytes needs ZIP64 sizes, deflate's worst-case growth included."""
    # Deflate grows incompressible data by 5 bytes per 64 KiB stored block at worst.
    return size + size // 8192 + 1024 >= LIMIT_32


def _zip64_extra(*values: int) -> bytes:
    return struct.pack(f"<HH{len(values)}Q", 1, 8 * len(values), *values)


def unicode_path_extra(name: bytes) -> bytes:
    """Info-ZIP Unicode Path extra field (0x7075) for a non-ASCII name, else nothing.

    The UTF-8 flag (bit 11) already says the name is UTF-8; readers that ignore the flag (older
    Windows Explorer, some 7-Zip and Java versions) honour this field instead: version 1, the
    CRC-32 of the header's name field, then the UTF-8 name.
    """
    if name.isascii():
        return b""
    body = struct.pack("<BI", 1, zlib.crc32(name)) + name
    return struct.pack("<HH", 0x7075, len(body)) + body


@dataclass(frozen=True)
class Streaming:
    """A member stopped between two chunks of its source (`rest`: what is left of it):
    what its record needs, and its data so far (`so_far`: CRC-32 and sizes of the bytes
    written; deflated, the deflate stream's primer too). `method` is DEFLATED (a descriptor
    follows; the header says nothing) or STORED (the header announced `crc` and the source's
    size, `rest.end`; `so_far.crc` is checked against it at the end). A stored member whose
    CRC-32 S3 could not give may also stop in the first pass that reads it for its header
    (`ZipLayout.checksum`): then `header_size` is 0, nothing of it is written yet, and
    `so_far` is that pass's CRC and length.

    Saved states from before `method` was carried are not read: no deployed execution was
    handing on a member when it was added (a build so stopped would end FAILED)."""

    name: str
    method: int
    offset: int  # of its local header, counted as the layout's offsets are
    header_size: int
    zip64: bool
    flags: int
    dos_time: int
    dos_date: int
    crc: int  # STORED: the CRC-32 its header announced; DEFLATED: 0 (the descriptor says it)
    so_far: Carried
    rest: CopyRange

    def moved(self, by: int) -> Streaming:
        return replace(self, offset=self.offset + by)

    def to_json(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["so_far"]["primer"] = base64.b64encode(self.so_far.primer).decode("ascii")
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Streaming:
        so_far = {**raw["so_far"], "primer": base64.b64decode(raw["so_far"]["primer"])}
        return cls(**{**raw, "so_far": Carried(**so_far), "rest": CopyRange(**raw["rest"])})


_NOTHING_YET = Carried(0, 0, 0, b"")


class ZipLayout:
    """Lays out members one after another from offset `start`, remembering each member's record."""

    def __init__(self, when: datetime, start: int = 0, stop: Callable[[], bool] | None = None) -> None:
        self.offset = start
        self.members: list[Member] = []
        # Members whose bytes S3 copied: their CRC is checked in the finished artifact.
        self.unverified: list[Check] = []
        self._when = when
        # Asked between the chunks of a member read through the worker: the Lambda run
        # must end (runs.py).
        self.stop = stop
        # The member a stop left unfinished: nothing may follow it in this layout.
        self.carried: Streaming | None = None

    def _header(
        self,
        name: bytes,
        method: int,
        crc: int,
        size: int,
        compressed: int,
        flags: int,
        zip64: bool,
        stamp: tuple[int, int],
    ) -> bytes:
        extra = b""
        if zip64:
            extra = _zip64_extra(size, compressed)
            size = compressed = LIMIT_32
        version = _VERSION_ZIP64 if extra else _VERSION_PLAIN
        extra += unicode_path_extra(name)
        fixed = _LOCAL.pack(
            0x04034B50,
            version,
            flags,
            method,
            *stamp,
            crc,
            compressed,
            size,
            len(name),
            len(extra),
        )
        return fixed + name + extra

    def _stamp(self, modified: datetime | None) -> tuple[int, int]:
        return dos_timestamp(modified or self._when)

    def _record(
        self,
        name: str,
        method: int,
        crc: int,
        compressed: int,
        size: int,
        flags: int,
        stamp: tuple[int, int],
    ) -> None:
        self.members.append(Member(name, method, crc, compressed, size, self.offset, *stamp, flags))

    def known(
        self,
        name: str,
        crc: int,
        size: int,
        body: Iterable[Piece],
        modified: datetime | None = None,
        source: CopyRange | None = None,
    ) -> Iterator[Piece]:
        """A stored member whose CRC and size are known up front: the header says all, no descriptor.

        Bytes that pass through here are checked against `crc` (ChecksumMismatch); if any
        piece is a CopyRange, the member goes to `unverified` instead. `source` (its object,
        the whole of it) says `body` is that object's bytes, read through the worker: `stop`
        may then end the member between two of its chunks.
        """
        yield from self.known_as(self.stored(name, size, modified, source), crc, body)

    def stored(
        self, name: str, size: int, modified: datetime | None = None, source: CopyRange | None = None
    ) -> Streaming:
        """A stored member to lay out here, its header not written yet (`header_size` 0)."""
        flags, stamp = _UTF8_NAMES, self._stamp(modified)
        rest = source or CopyRange("", "", "", 0, size)
        return Streaming(name, STORED, self.offset, 0, size >= LIMIT_32, flags, *stamp, 0, _NOTHING_YET, rest)

    def checksum(self, member: Streaming, chunks: Iterable[bytes]) -> int | None:
        """The CRC-32 a stored member's header needs, when S3 could not give it: a first pass
        over its source's bytes (`chunks`, from `member.rest.start` on), writing nothing. None
        if `stop` ended the pass between two chunks: `carried` is then the member, its header
        still unwritten and `so_far` the pass's CRC and length, for a later layout to go on."""
        return self._first_pass(member, _running(member.so_far, chunks, None))

    def checksum_ranges(self, member: Streaming, ranges: Iterable[tuple[int, int]]) -> int | None:
        """`checksum` from the (CRC-32, length) of consecutive ranges of its source, from
        `member.rest.start` on (read in parallel: chalicelib/s3/sources.py `range_crc32s`),
        combined in order; `stop` may end it between two ranges, carried the same way."""
        return self._first_pass(member, _combined(member.so_far, ranges))

    def hold(self, member: Streaming, chunks: Iterable[bytes]) -> tuple[int, list[bytes]] | None:
        """A stored member's bytes (`chunks`, all of them) held in memory for the CRC-32 its
        header needs, then that CRC and the chunks, to lay out with `known_as`. None if `stop`
        ended the reading between two chunks: the held bytes are dropped (none is written
        before the CRC is known), and `carried` is the member as a first pass (`checksum`)
        that has read that far, for a later layout to go on with (reading the source again)."""
        held: list[bytes] = []
        crc = self._first_pass(member, _running(member.so_far, chunks, held))
        return None if crc is None else (crc, held)

    def _first_pass(self, member: Streaming, progress: Iterable[tuple[int, int]]) -> int | None:
        """The pass's CRC at its end, from `progress`: (CRC-32, bytes read) so far, after each
        chunk or range; a stop between two of them carries the member (see `checksum`)."""
        crc, read = member.so_far.crc, member.so_far.size
        for crc, read in progress:
            if self.stop is not None and read < member.rest.end and self.stop():
                so_far = Carried(crc, read, 0, b"")
                self.carried = replace(member, so_far=so_far, rest=replace(member.rest, start=read))
                return None
        if read != member.rest.end:
            raise ValueError(f"member {member.name!r} had {read} bytes, not the {member.rest.end} announced")
        return crc

    def known_as(self, member: Streaming, crc: int, body: Iterable[Piece]) -> Iterator[Piece]:
        """`member` (from `stored`, or carried with its header unwritten) with its CRC now known:
        its header here, then `body`, all of its bytes."""
        size, stamp = member.rest.end, (member.dos_time, member.dos_date)
        header = self._header(
            member.name.encode("utf-8"), STORED, crc, size, size, member.flags, member.zip64, stamp
        )
        member = replace(
            member, offset=self.offset, header_size=len(header), crc=crc, so_far=_NOTHING_YET,
            rest=replace(member.rest, start=0),
        )  # fmt: skip
        read = bool(member.rest.key)  # its source's bytes through the worker: it may stop
        if not read:
            # Recorded before its bytes: a run handed on inside its copy names it (runs.py).
            self._record(member.name, STORED, crc, size, size, member.flags, stamp)
        yield header
        yield from self._stored(member, body, self.stop if read else None, recorded=not read)

    def _stored(
        self, member: Streaming, body: Iterable[Piece], stop: Callable[[], bool] | None, *, recorded: bool
    ) -> Iterator[Piece]:
        from isal import isal_zlib  # deferred, as in chalicelib/archive/deflate.py; its CRC-32 is 10x zlib's

        size = member.rest.end
        seen, written = member.so_far.crc, member.so_far.size
        copied = False
        for piece in body:
            if isinstance(piece, CopyRange):
                written += piece.length
                copied = True
            else:
                seen = isal_zlib.crc32(piece, seen)
                written += len(piece)
            yield piece
            # Asked after a chunk, not before the next: nothing is read past the stop.
            if stop is not None and written < size and stop():
                so_far = Carried(seen, written, written, b"")
                self.carried = replace(member, so_far=so_far, rest=replace(member.rest, start=written))
                self.offset = member.offset + member.header_size + written
                return
        if written != size:
            raise ValueError(f"member {member.name!r} had {written} bytes, not the {size} announced")
        if copied:
            self.unverified.append(Check(member.name, member.offset + member.header_size, size, member.crc))
        elif seen != member.crc:
            raise ChecksumMismatch(f"member {member.name!r} does not have the CRC-32 its source announced")
        if not recorded:
            self.members.append(
                Member(
                    member.name, STORED, member.crc, size, size, member.offset, member.dos_time,
                    member.dos_date, member.flags,
                )
            )  # fmt: skip
        self.offset = member.offset + member.header_size + size

    def streamed(
        self,
        name: str,
        size: int,
        chunks: Iterable[bytes],
        compressor: ChunkedDeflate,
        modified: datetime | None = None,
        source: CopyRange | None = None,
    ) -> Iterator[bytes]:
        """A deflated member whose CRC and compressed size are learnt on the way: a data
        descriptor follows it. (Stored members are always `known`: see the module's docstring.)

        `size` is the expected size (from the manifest): it decides ZIP64 before a byte is seen.
        `compressor` deflates the member in chunks, in parallel (chalicelib/archive/deflate.py).
        `source` (its object, the whole of it) lets `stop` end the member between two chunks.
        """
        flags, stamp = _UTF8_NAMES | _DATA_DESCRIPTOR, self._stamp(modified)
        zip64 = may_need_zip64(size)
        # With a descriptor the header's CRC and sizes are zero (ZIP64: 0xFFFFFFFF, zeros in the extra).
        header = self._header(name.encode("utf-8"), DEFLATED, 0, 0, 0, flags, zip64, stamp)
        yield header
        begun = Streaming(
            name, DEFLATED, self.offset, len(header), zip64, flags, *stamp, 0, compressor.carried(),
            source or CopyRange("", "", "", 0, 0),
        )  # fmt: skip
        yield from self._deflated(begun, chunks, compressor, self.stop if source else None)

    def resumed(
        self, carried: Streaming, chunks: Iterable[bytes], compressor: ChunkedDeflate | None = None
    ) -> Iterator[Piece]:
        """The rest of a member an earlier layout stopped in (`carried`, moved to this layout's
        offsets): `chunks` are its source from `carried.rest.start`; a deflated one's
        `compressor` goes on from `carried.so_far`. It may stop again."""
        if carried.method == STORED:
            if not carried.header_size:
                raise ValueError(f"member {carried.name!r} has no header yet: its first pass goes on")
            yield from self._stored(carried, chunks, self.stop, recorded=False)
            return
        if compressor is None:
            raise ValueError(f"member {carried.name!r} is deflated: it goes on with its compressor")
        yield from self._deflated(carried, chunks, compressor, self.stop)

    def _deflated(
        self,
        member: Streaming,
        chunks: Iterable[bytes],
        compressor: ChunkedDeflate,
        stop: Callable[[], bool] | None,
    ) -> Iterator[bytes]:
        yield from compressor.stream(chunks, stop)
        crc, seen, written = compressor.crc, compressor.size, compressor.compressed_size
        if compressor.stopped:
            rest = replace(member.rest, start=seen)
            self.carried = replace(member, so_far=compressor.carried(), rest=rest)
            self.offset = member.offset + member.header_size + written
            return
        if not member.zip64 and (seen >= LIMIT_32 or written >= LIMIT_32):
            raise ValueError(f"member {member.name!r} grew past 4 GiB after its header was written")
        packed = _DESCRIPTOR_64 if member.zip64 else _DESCRIPTOR_32
        descriptor = packed.pack(0x08074B50, crc, written, seen)
        yield descriptor
        self.members.append(
            Member(
                member.name, DEFLATED, crc, written, seen, member.offset, member.dos_time,
                member.dos_date, member.flags,
            )
        )  # fmt: skip
        self.offset = member.offset + member.header_size + written + len(descriptor)


def _running(start: Carried, chunks: Iterable[bytes], held: list[bytes] | None) -> Iterator[tuple[int, int]]:
    """(CRC-32, length) of the bytes so far after each chunk, from `start`'s (each chunk
    kept in `held` as it passes, if given)."""
    from isal import isal_zlib  # deferred, as in chalicelib/archive/deflate.py

    crc, read = start.crc, start.size
    for chunk in chunks:
        crc = isal_zlib.crc32(chunk, crc)
        read += len(chunk)
        if held is not None:
            held.append(chunk)
        yield crc, read


def _combined(start: Carried, ranges: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """(CRC-32, length) of the bytes so far after each range, from `start`'s: each range's
    CRC joined on with `crc32_combine` (O(log length), no byte read again)."""
    from isal import isal_zlib  # deferred, as in chalicelib/archive/deflate.py

    crc, read = start.crc, start.size
    for range_crc, length in ranges:
        crc = isal_zlib.crc32_combine(crc, range_crc, length)
        read += length
        yield crc, read


def central_directory(members: Iterable[Member]) -> Iterator[bytes]:
    """The central directory records, ZIP64 extras only where a field overflows."""
    for member in members:
        name = member.name.encode("utf-8")
        large = [v for v in (member.size, member.compressed_size, member.offset) if v >= LIMIT_32]
        extra = _zip64_extra(*large) if large else b""
        version = _VERSION_ZIP64 if extra else _VERSION_PLAIN
        extra += unicode_path_extra(name)
        fixed = _CENTRAL.pack(
            0x02014B50,
            _VERSION_MADE_BY,
            version,
            member.flags,
            member.method,
            member.dos_time,
            member.dos_date,
            member.crc,
            min(member.compressed_size, LIMIT_32),
            min(member.size, LIMIT_32),
            len(name),
            len(extra),
            0,
            0,
            0,
            _FILE_MODE,
            min(member.offset, LIMIT_32),
        )
        yield fixed + name + extra


def end_of_archive(count: int, directory_offset: int, directory_size: int) -> bytes:
    """The end records: ZIP64 end record and locator first when a count or offset overflows."""
    zip64 = count >= LIMIT_16 or directory_offset >= LIMIT_32 or directory_size >= LIMIT_32
    records = b""
    if zip64:
        end64_offset = directory_offset + directory_size
        records = _ZIP64_END.pack(
            0x06064B50,
            44,
            _VERSION_MADE_BY,
            _VERSION_ZIP64,
            0,
            0,
            count,
            count,
            directory_size,
            directory_offset,
        ) + _ZIP64_LOCATOR.pack(0x07064B50, 0, end64_offset, 1)
    return records + _END.pack(
        0x06054B50,
        0,
        0,
        min(count, LIMIT_16),
        min(count, LIMIT_16),
        min(directory_size, LIMIT_32),
        min(directory_offset, LIMIT_32),
        0,
    )


def closing(members: Iterable[Member], directory_offset: int) -> Iterator[bytes]:
    """The central directory of `members` at `directory_offset`, then the end records."""
    count = size = 0
    for record in central_directory(members):
        count += 1
        size += len(record)
        yield record
    yield end_of_archive(count, directory_offset, size)
