"""The tar writer's headers and gzip stream, read by tarfile, GNU tar, bsdtar and gzip."""

from __future__ import annotations

import functools
import gzip
import io
import random
import tarfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import pytest

from chalicelib.archive import deflate, tarwriter
from chalicelib.archive.zipwriter import CopyRange, Piece
from tests.support.archive_readers import run

GIB = 1024**3
WHEN = 1_715_953_510  # 2024-05-17T13:45:10Z


def write_sparse(path: Path, pieces: Iterable[Piece]) -> int:
    """Bytes as they are, a CopyRange as a hole of its length (zeros, taking no disk)."""
    with path.open("wb") as file:
        for piece in pieces:
            if isinstance(piece, CopyRange):
                file.seek(piece.length, io.SEEK_CUR)
            else:
                file.write(piece)
        file.truncate()
        return file.tell()


def test_a_member_over_8_gib_gets_a_pax_size_record_and_readers_list_it(tmp_path: Path) -> None:
    big = 9 * GIB + 7
    name = "données/" + "x" * 120 + ".bin"
    header = tarwriter.header(name, big, WHEN)
    # The ustar size field (11 octal digits) cannot hold 9 GiB: a pax record says it.
    assert f" size={big}\n".encode() in header
    assert f" path={name}\n".encode() in header
    path = tmp_path / "big.tar"
    pieces: list[Piece] = [
        header,
        CopyRange("b", "k", "e", 0, big),
        tarwriter.padding(big),
        *tarwriter.member("after.txt", b"after\n", WHEN),
        tarwriter.END,
    ]
    size = write_sparse(path, pieces)
    assert size % tarwriter.BLOCK == 0
    assert size > 9 * GIB
    with tarfile.open(path) as opened:
        first, after = opened.getmembers()
        assert (first.name, first.size, first.mtime, first.mode) == (name, big, WHEN, 0o644)
        assert after.name == "after.txt"
        extracted = opened.extractfile(after)
        assert extracted is not None
        assert extracted.read() == b"after\n"
    listed = run("tar", "-tvf", path)
    assert str(big) in listed
    assert name in listed
    assert name in run("bsdtar", "-tf", path)


def test_gzip_stream_is_one_member_that_gzip_readers_accept() -> None:
    data = [b"hello " * 1000, b"", bytes(range(256)) * 100]
    stream = b"".join(tarwriter.gzipped(data, 1))
    assert gzip.decompress(stream) == b"".join(data)
    assert stream[:4] == b"\x1f\x8b\x08\x00"
    assert zlib.crc32(b"".join(data)).to_bytes(4, "little") == stream[-8:-4]
    with pytest.raises(TypeError):
        list(tarwriter.gzipped([CopyRange("b", "k", "e", 0, 1)], 1))


def _data(size: int) -> bytes:
    """Compressible but not trivially so: words from a small vocabulary, seeded."""
    words = [b"alpha", b"beta", b"gamma", b"delta", b"\x00" * 7, bytes(range(40))]
    chosen = random.Random(size).choices(words, k=size // 4)
    return b" ".join(chosen)[:size]


def _one_member_engine(data: bytes, level: int, chunk_bytes: int) -> bytes:
    """The stream deflate.py's own engine writes for these bytes, framed as gzip."""
    engine = deflate.ChunkedDeflate(level, chunk_bytes=chunk_bytes)
    body = b"".join(engine.stream([data]))
    trailer = engine.crc.to_bytes(4, "little") + (engine.size & 0xFFFFFFFF).to_bytes(4, "little")
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + body + trailer


@pytest.mark.parametrize("cuts", [(), (1,), (40_000, 40_001), (65_536,), (10, 70_000, 200_000, 200_100)])
def test_a_gzip_stream_stopped_and_carried_on_is_the_stream_written_at_once(cuts: tuple[int, ...]) -> None:
    chunk = 64 * 1024  # small chunks: many cuts land inside, between and on chunk boundaries
    data = _data(300_000)
    at_once = b"".join(tarwriter.Gzip(2, chunk_bytes=chunk).stream([data], ends=lambda: True))
    assert at_once == _one_member_engine(data, 2, chunk)
    written, carried, start = b"", None, 0
    for end in (*cuts, len(data)):
        last = end == len(data)
        run_ = tarwriter.Gzip(2, carried, chunk_bytes=chunk)
        # Each run is fed in pieces of odd sizes: the chunks never depend on them.
        pieces = [data[at : min(at + 7_777, end)] for at in range(start, end, 7_777)]
        written += b"".join(run_.stream(pieces, ends=functools.partial(bool, last)))
        assert (run_.carry is None) == last
        if run_.carry is not None:
            assert len(run_.carry.window) <= 32 * 1024
            assert len(run_.carry.tail) <= chunk
        carried, start = run_.carry, end
    assert written == at_once
    assert gzip.decompress(written) == data
