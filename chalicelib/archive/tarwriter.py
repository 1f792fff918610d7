"""The tar format (POSIX pax) and its gzip framing, as pieces, never holding a member.

A member is its header block(s), its bytes, then zeros up to the next 512-byte block; the
archive ends with two zero blocks. Headers come from the standard library's `tarfile` in
PAX_FORMAT: a name that is not ASCII or longer than 100 bytes, and a size of 8 GiB or more
(past the ustar header's 11 octal digits), go into a pax extended header (`path`, `size`),
which GNU tar, bsdtar, 7-Zip and Python read. Headers name no user, group or device, and
carry one given time, so the same sources give the same bytes.

Unlike zip, a tar header needs no checksum of the member, so a member's bytes can be a range
that S3 copies (zipwriter.CopyRange) whatever its size. `tar.gz` is one gzip stream (RFC
1952) over the whole tar, deflated by chalicelib.archive.deflate's chunked engine.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from chalicelib.archive import deflate
from chalicelib.archive.zipwriter import Piece

BLOCK = 512
END = bytes(2 * BLOCK)
_FILE_MODE = 0o644
# Magic, deflate, no flags, no time (0: "none"), no extra flags, OS "Unix".
_GZIP_HEADER = b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + b"\x00\x03"


def header(name: str, size: int, mtime: int) -> bytes:
    """The header block(s) of a regular file `name` of `size` bytes."""
    import tarfile  # deferred: a cold start that builds no tar never loads it

    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = _FILE_MODE
    info.type = tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def padding(size: int) -> bytes:
    """Zeros from the end of a member of `size` bytes to its last block's end."""
    return bytes(-size % BLOCK)


def member(name: str, data: bytes, mtime: int) -> Iterator[bytes]:
    """A whole small member (the archive's own files, such as SHA256SUMS)."""
    yield header(name, len(data), mtime)
    if data:
        yield data
    yield padding(len(data))


def gzipped(pieces: Iterable[Piece], level: int) -> Iterator[bytes]:
    """The pieces (bytes only: a copied range cannot be compressed) as one gzip stream,
    deflated in chunks on every core like a zip member; the trailer's CRC-32 is combined."""
    engine = deflate.ChunkedDeflate(level)
    yield _GZIP_HEADER
    yield from engine.stream(_bytes_only(pieces))
    yield struct.pack("<II", engine.crc, engine.size & 0xFFFFFFFF)


def _bytes_only(pieces: Iterable[Piece]) -> Iterator[bytes]:
    for piece in pieces:
        if not isinstance(piece, bytes):
            raise TypeError("a gzip stream is made of bytes the worker read, not copied ranges")
        yield piece
