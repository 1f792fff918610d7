"""The tar writer's headers and gzip stream, read by tarfile, GNU tar, bsdtar and gzip."""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import pytest

from chalicelib.archive import tarwriter
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
