"""The zip format writer: ZIP64 exactly when needed, checked by an independent reader (zipfile).

A member over 4 GiB is exercised for its records without its bytes: the archive is written
to a sparse file, with a hole where the member's data would be.
"""

from __future__ import annotations

import io
import json
import random
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chalicelib.archive import deflate, zipwriter
from chalicelib.archive.zipwriter import CopyRange, Piece, ZipLayout
from chalicelib.core.errors import ChecksumMismatch

GIB = 1024**3
WHEN = datetime(2024, 5, 17, 13, 45, 10, tzinfo=UTC)


def write_sparse(path: Path, pieces: Iterable[Piece]) -> int:
    """Bytes as they are, a CopyRange as a hole of its length (zeros, taking no disk)."""
    with path.open("wb") as file:
        for piece in pieces:
            if isinstance(piece, CopyRange):
                file.seek(piece.length, io.SEEK_CUR)
            else:
                file.write(piece)
        return file.tell()


def plain(pieces: Iterable[Piece]) -> bytes:
    """Pieces that are all bytes (no CopyRange), joined."""
    out = bytearray()
    for piece in pieces:
        assert isinstance(piece, bytes)
        out += piece
    return bytes(out)


def test_a_member_over_4_gib_gets_zip64_records_and_the_members_after_it_too(tmp_path: Path) -> None:
    big = 5 * GIB + 123
    layout = ZipLayout(WHEN)
    fake_crc = 0x1234ABCD  # S3's checksum would say; the hole's zeros are never read
    pieces: list[Piece] = [
        *layout.known("huge.bin", fake_crc, big, [CopyRange("b", "k", "e", 0, big)]),
        *layout.streamed("after.txt", 11, [b"hello world"], deflate.compressor(1)),
        *layout.known("small.txt", zlib.crc32(b"tiny"), 4, [b"tiny"]),
    ]
    pieces.extend(zipwriter.closing(layout.members, layout.offset))
    path = tmp_path / "big.zip"
    size = write_sparse(path, pieces)
    assert size > 5 * GIB

    with zipfile.ZipFile(path) as archive:
        huge, after, small = archive.infolist()
        assert (huge.filename, huge.file_size, huge.compress_size, huge.CRC) == (
            "huge.bin",
            big,
            big,
            fake_crc,
        )
        assert huge.header_offset == 0
        assert huge.extract_version == 45  # ZIP64
        assert after.header_offset > 4 * GIB  # its offset needs the ZIP64 extra
        assert archive.read("after.txt") == b"hello world"
        assert archive.read("small.txt") == b"tiny"
        assert small.date_time == (2024, 5, 17, 13, 45, 10)
        with archive.open("huge.bin") as member:  # the local header parses: ZIP64 extra and all
            assert member.read(16) == bytes(16)

    with path.open("rb") as file:
        local = file.read(30 + len("huge.bin") + 20)
    assert struct.unpack("<II", local[18:26]) == (0xFFFFFFFF, 0xFFFFFFFF)
    assert struct.unpack("<HHQQ", local[38:]) == (1, 16, big, big)


def test_no_zip64_record_below_the_limits() -> None:
    layout = ZipLayout(WHEN)
    data = plain(layout.streamed("a.txt", 3, [b"abc"], deflate.compressor(1)))
    data += plain(layout.known("b.txt", zlib.crc32(b"de"), 2, [b"de"]))
    data += b"".join(zipwriter.closing(layout.members, layout.offset))
    assert struct.pack("<I", 0x06064B50) not in data  # no ZIP64 end record
    assert struct.pack("<HH", 1, 16) not in data
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("a.txt") == b"abc"
        assert archive.read("b.txt") == b"de"
        assert all(info.extract_version == 20 for info in archive.infolist())


def test_a_member_announced_over_4_gib_streams_with_a_zip64_descriptor() -> None:
    layout = ZipLayout(WHEN)
    data = b"".join(layout.streamed("big.csv", 5 * GIB, [b"x" * 1000], deflate.compressor(2)))
    descriptor = data[-24:]
    assert descriptor[:4] == struct.pack("<I", 0x08074B50)
    crc, compressed, size = struct.unpack("<IQQ", descriptor[4:])
    assert (crc, size) == (zlib.crc32(b"x" * 1000), 1000)
    data += b"".join(zipwriter.closing(layout.members, layout.offset))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("big.csv") == b"x" * 1000
        assert archive.infolist()[0].compress_size == compressed


def test_more_than_65535_members_get_the_zip64_end_record() -> None:
    layout = ZipLayout(WHEN)
    body = bytearray()
    for index in range(70_000):
        for piece in layout.known(f"{index}", 0, 0, []):
            assert isinstance(piece, bytes)
            body += piece
    body += b"".join(zipwriter.closing(layout.members, layout.offset))
    assert struct.pack("<I", 0x06064B50) in body
    with zipfile.ZipFile(io.BytesIO(bytes(body))) as archive:
        names = archive.namelist()
    assert len(names) == 70_000
    assert names[-1] == "69999"


def test_members_move_by_their_segments_offset() -> None:
    layout = ZipLayout(WHEN, start=0)
    first = plain(layout.known("one", zlib.crc32(b"1"), 1, [b"1"]))
    second_layout = ZipLayout(WHEN, start=0)
    second = plain(second_layout.known("two", zlib.crc32(b"22"), 2, [b"22"]))
    records = [*layout.members, *(member.moved(len(first)) for member in second_layout.members)]
    whole = first + second + b"".join(zipwriter.closing(records, len(first) + len(second)))
    with zipfile.ZipFile(io.BytesIO(whole)) as archive:
        assert archive.read("two") == b"22"
    assert zipwriter.Member.from_json(records[1].to_json()) == records[1]


def test_precompressed_sources_are_recognised_by_extension_or_type() -> None:
    assert deflate.is_precompressed("photos/cat.JPG")
    assert deflate.is_precompressed("blob", "video/mp4")
    assert deflate.is_precompressed("blob", "image/png; charset=binary")
    assert not deflate.is_precompressed("report.csv", "text/csv")
    assert not deflate.is_precompressed("sound", "audio/wav")
    assert not deflate.is_precompressed("picture.svg", "image/svg+xml")


def test_a_stored_member_has_its_crc_and_size_in_the_local_header_and_no_descriptor() -> None:
    layout = ZipLayout(WHEN)
    body = b"stored bytes" * 100
    data = plain(layout.known("s.bin", zlib.crc32(body), len(body), [body[:500], body[500:]]))
    flags, method = struct.unpack("<HH", data[6:10])
    crc, compressed, size = struct.unpack("<III", data[14:26])
    assert (flags & 0x0008, method) == (0, zipwriter.STORED)
    assert (crc, compressed, size) == (zlib.crc32(body), len(body), len(body))
    assert struct.pack("<I", 0x08074B50) not in data  # no data descriptor signature
    assert layout.unverified == []  # every byte passed through: checked here


def test_bytes_that_pass_through_are_checked_against_the_crc_announced() -> None:
    layout = ZipLayout(WHEN)
    with pytest.raises(ChecksumMismatch):
        plain(layout.known("wrong.bin", zlib.crc32(b"other"), 5, [b"bytes"]))


def test_a_copied_member_is_listed_for_the_digest_step_to_check() -> None:
    layout = ZipLayout(WHEN, start=0)
    list(layout.known("a.txt", zlib.crc32(b"abc"), 3, [b"abc"]))
    pieces = list(layout.known("big.bin", 0xCAFE, 10, [CopyRange("b", "k", "e", 0, 10)]))
    header = pieces[0]
    assert isinstance(header, bytes)
    (check,) = layout.unverified
    assert (check.name, check.size, check.crc) == ("big.bin", 10, 0xCAFE)
    assert check.offset == 30 + len("a.txt") + 3 + len(header)  # where its data starts


def test_each_member_carries_its_own_modification_time() -> None:
    layout = ZipLayout(WHEN)
    data = plain(
        layout.known("old.txt", zlib.crc32(b"o"), 1, [b"o"], datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC))
    )
    data += plain(
        layout.streamed("new.txt", 1, [b"n"], deflate.compressor(1), datetime(2030, 1, 1, tzinfo=UTC))
    )
    data += b"".join(zipwriter.closing(layout.members, layout.offset))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        old, new = archive.infolist()
    assert old.date_time == (2001, 2, 3, 4, 5, 6)
    assert new.date_time == (2030, 1, 1, 0, 0, 0)


def test_a_deflated_member_is_the_same_bytes_however_its_source_arrives() -> None:
    """The engine cuts its input into fixed chunks, whatever pieces S3's reads arrive in."""
    draw = random.Random(1)
    data = b"".join(
        b"row,%d,%s\n" % (i, draw.randbytes(draw.randint(0, 20)).hex().encode()) for i in range(300_000)
    )

    def member(cuts: list[int]) -> bytes:
        pieces, start, index = [], 0, 0
        while start < len(data):
            size = cuts[index % len(cuts)]
            pieces.append(data[start : start + size])
            start, index = start + size, index + 1
        return b"".join(ZipLayout(WHEN).streamed("rows.csv", len(data), pieces, deflate.compressor(2)))

    whole = member([len(data)])
    assert member([1024 * 1024]) == whole
    assert member([65_536, 1_000, 777_777]) == whole


def test_a_streamed_members_carried_state_goes_through_json_unchanged() -> None:
    from chalicelib.archive.deflate import Carried
    from chalicelib.archive.zipwriter import CopyRange as Range
    from chalicelib.archive.zipwriter import Streaming

    member = Streaming(
        "a/b.txt", zipwriter.DEFLATED, 0, 41, False, 0x0808, 1, 2, 0,
        Carried(7, 1024, 300, bytes(range(256)) * 128), Range("bucket", "a/b.txt", '"etag"', 1024, 5000),
    )  # fmt: skip
    raw = json.loads(json.dumps(member.to_json()))
    assert Streaming.from_json(raw) == member
    assert member.moved(10).offset == 10


def _stored_in_runs(data: bytes, chunk: int, stops: int) -> tuple[bytes, int]:
    """A stored member (and a small one after it) laid out by as many layouts as it takes
    when each stops after `stops` chunks of its own, each going on where the last stopped."""
    from chalicelib.archive.zipwriter import Streaming

    source = CopyRange("bucket", "big.jpg", '"etag"', 0, len(data))

    def stopper() -> Callable[[], bool]:
        asked = 0

        def stop() -> bool:
            nonlocal asked
            asked += 1
            return asked >= stops

        return stop

    def cut(start: int) -> list[bytes]:
        return [data[at : at + chunk] for at in range(start, len(data), chunk)]

    layout = ZipLayout(WHEN, stop=stopper())
    out = plain(layout.known("big.jpg", zlib.crc32(data), len(data), cut(0), WHEN, source))
    members, layouts = list(layout.members), 1
    while layout.carried is not None:
        carried = Streaming.from_json(json.loads(json.dumps(layout.carried.to_json())))
        assert carried.method == zipwriter.STORED
        assert carried.so_far.size == carried.rest.start
        assert carried.so_far.crc == zlib.crc32(data[: carried.rest.start])
        layout = ZipLayout(WHEN, carried.offset, stop=stopper())
        out += plain(layout.resumed(carried, cut(carried.rest.start)))
        members += layout.members
        layouts += 1
    layout.members = members
    out += plain(layout.known("after.txt", zlib.crc32(b"after"), 5, [b"after"], WHEN))
    out += plain(zipwriter.closing(layout.members, layout.offset))
    return out, layouts


def test_a_stored_member_stopped_between_chunks_goes_on_into_the_same_bytes() -> None:
    data = random.Random(5).randbytes(10 * 1000 + 7)
    whole, once = _stored_in_runs(data, 1000, stops=10**6)
    assert once == 1
    split, layouts = _stored_in_runs(data, 1000, stops=1)
    assert layouts == 11  # a chunk a layout; never stopped after the last one
    assert split == whole
    with zipfile.ZipFile(io.BytesIO(split)) as opened:
        info = opened.getinfo("big.jpg")
        assert info.compress_type == zipfile.ZIP_STORED
        assert not info.flag_bits & 0x08  # no data descriptor
        assert opened.read("big.jpg") == data
        assert opened.read("after.txt") == b"after"


def test_a_stored_member_gone_on_with_checks_the_crc_its_header_announced() -> None:
    from chalicelib.archive.zipwriter import Streaming

    data = b"x" * 3000
    source = CopyRange("bucket", "big.jpg", '"etag"', 0, len(data))
    layout = ZipLayout(WHEN, stop=lambda: True)
    list(layout.known("big.jpg", zlib.crc32(data), len(data), [data[:1000], data[1000:]], WHEN, source))
    carried = layout.carried
    assert isinstance(carried, Streaming)
    going_on = ZipLayout(WHEN, carried.offset, stop=lambda: False)
    with pytest.raises(ChecksumMismatch):
        list(going_on.resumed(carried, [b"y" * 2000]))


def test_a_first_pass_for_a_stored_members_crc_stops_before_its_header_and_goes_on() -> None:
    from chalicelib.archive.zipwriter import Streaming

    data = random.Random(6).randbytes(5000)
    source = CopyRange("bucket", "big.png", '"etag"', 0, len(data))
    whole = plain(ZipLayout(WHEN).known("big.png", zlib.crc32(data), len(data), [data], WHEN, source))

    layout = ZipLayout(WHEN, 100, stop=lambda: True)
    member = layout.stored("big.png", len(data), WHEN, source)
    assert layout.checksum(member, [data[:1000], data[1000:]]) is None  # stopped after a chunk
    carried = Streaming.from_json(json.loads(json.dumps(layout.carried.to_json() if layout.carried else {})))
    assert (carried.header_size, carried.offset, carried.rest.start) == (0, 100, 1000)
    assert layout.offset == 100  # nothing of it written
    going_on = ZipLayout(WHEN, 100, stop=lambda: False)
    with pytest.raises(ValueError, match="first pass"):
        list(going_on.resumed(carried, [data[1000:]]))
    crc = going_on.checksum(carried, [data[1000:3000], data[3000:]])
    assert crc == zlib.crc32(data)
    assert plain(going_on.known_as(carried, crc, [data])) == whole
    assert going_on.members[0].offset == 100


def test_a_held_stored_member_stops_before_its_header_and_goes_on_as_a_first_pass() -> None:
    from chalicelib.archive.zipwriter import Streaming

    data = random.Random(7).randbytes(5000)
    source = CopyRange("bucket", "held.bin", '"etag"', 0, len(data))
    whole = plain(ZipLayout(WHEN).known("held.bin", zlib.crc32(data), len(data), [data], WHEN, source))

    held = ZipLayout(WHEN, 100, stop=lambda: False)
    member = held.stored("held.bin", len(data), WHEN, source)
    kept = held.hold(member, [data[:1000], data[1000:]])
    assert kept == (zlib.crc32(data), [data[:1000], data[1000:]])
    assert plain(held.known_as(member, kept[0], kept[1])) == whole

    layout = ZipLayout(WHEN, 100, stop=lambda: True)
    member = layout.stored("held.bin", len(data), WHEN, source)
    assert layout.hold(member, [data[:1000], data[1000:]]) is None  # stopped after a chunk
    assert (layout.offset, layout.members) == (100, [])  # nothing of it written, or recorded
    carried = Streaming.from_json(json.loads(json.dumps(layout.carried.to_json() if layout.carried else {})))
    assert (carried.header_size, carried.rest.start, carried.so_far.size) == (0, 1000, 1000)
    going_on = ZipLayout(WHEN, 100, stop=lambda: False)
    crc = going_on.checksum(carried, [data[1000:]])  # the first pass from where the hold stopped
    assert crc == zlib.crc32(data)
    assert plain(going_on.known_as(carried, crc, [data])) == whole
