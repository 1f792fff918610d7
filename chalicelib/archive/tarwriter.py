"""The tar format (POSIX pax) and its gzip framing, as pieces, never holding a member.

A member is its header block(s), its bytes, then zeros up to the next 512-byte block; the
archive ends with two zero blocks. Headers come from the standard library's `tarfile` in
PAX_FORMAT: a name that is not ASCII or longer than 100 bytes, and a size of 8 GiB or more
(past the ustar header's 11 octal digits), go into a pax extended header (`path`, `size`),
which GNU tar, bsdtar, 7-Zip and Python read. Headers name no user, group or device, and
carry one given time, so the same sources give the same bytes.

Unlike zip, a tar header needs no checksum of the member, so a member's bytes can be a range
that S3 copies (zipwriter.CopyRange) whatever its size. `tar.gz` is one gzip stream (RFC
1952) over the whole tar, deflated in chunks as chalicelib.archive.deflate's engine deflates a
member; a stream may stop between two chunks and go on in a later Lambda run (`Gzip`).
"""

from __future__ import annotations

import functools
import itertools
import struct
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType

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
    """The pieces (bytes only: a copied range cannot be compressed) as one whole gzip stream."""
    return Gzip(level).stream(pieces, ends=lambda: True)


@dataclass(frozen=True)
class GzipCarry:
    """A gzip stream stopped between two runs: what the next run needs to go on with it.

    `crc` and `size` are those of the bytes compressed so far (the trailer's, once whole),
    `window` the last 32 KiB of them (the next chunk's primer) and `tail` the bytes taken
    since, short of a chunk or held back as the last one, not compressed yet."""

    crc: int
    size: int
    window: bytes
    tail: bytes


class Gzip:
    """One gzip stream (RFC 1952) over a tar, written in as many runs as it takes.

    The bytes are cut into chunks of exactly `chunk_bytes` counted from the stream's start,
    compressed as chalicelib.archive.deflate's engine compresses a member (each primed with
    the previous chunk's last 32 KiB, every one but the last ending on a full flush, on
    every core), so the output depends only on the bytes: a stream written in several runs
    is byte for byte the stream written in one. The chunk held back to learn whether it is
    the last is, when a run stops, carried uncompressed (`carry`), with the window and the
    running CRC-32 and length; the next run's chunks follow it.
    """

    def __init__(
        self,
        level: int,
        carried: GzipCarry | None = None,
        chunk_bytes: int = deflate.CHUNK_BYTES,
        workers: int | None = None,
    ) -> None:
        if level not in deflate.ENGINES:
            raise ValueError(f"deflate level {level} is not one of {deflate.LEVELS}")
        self._engine = deflate.ENGINES[level]
        self._chunk_bytes = chunk_bytes
        self._workers = workers or deflate.cores()
        self._carried = carried
        self.carry: GzipCarry | None = None  # once a stream stopped short of its end

    def stream(self, pieces: Iterable[Piece], ends: Callable[[], bool]) -> Iterator[bytes]:
        """The compressed bytes of `pieces`; asked once they are exhausted, `ends` says whether
        the stream ends there (trailer) or goes on in a later run (`carry`)."""
        carried = self._carried
        module = self._engine.module()
        crc, size = (carried.crc, carried.size) if carried else (0, 0)
        primer, tail = (carried.window, carried.tail) if carried else (b"", b"")
        if carried is None:
            yield _GZIP_HEADER
        pending: deque[tuple[Future[tuple[bytes, int]], int]] = deque()
        held: bytes | None = None  # one chunk held back: only the next one tells if it is the last
        in_flight = 2 * self._workers
        try:
            for chunk in deflate.blocks(itertools.chain((tail,), _bytes_only(pieces)), self._chunk_bytes):
                if held is not None:
                    work = _pool(self._workers).submit(
                        deflate.compress_chunk, self._engine, held, primer, False
                    )
                    pending.append((work, len(held)))
                    primer = held[-deflate.WINDOW_BYTES :]
                    while len(pending) >= in_flight:
                        crc, size = yield from _settle(module, crc, size, *pending.popleft())
                held = chunk
            while pending:
                crc, size = yield from _settle(module, crc, size, *pending.popleft())
        finally:
            for work, _ in pending:  # the reader stopped early: drop what has not started
                work.cancel()
        if not ends():
            self.carry = GzipCarry(crc, size, primer, held or b"")
            return
        last = held or b""
        out, chunk_crc = deflate.compress_chunk(self._engine, last, primer, True)
        crc, size = module.crc32_combine(crc, chunk_crc, len(last)), size + len(last)
        if out:
            yield out
        yield struct.pack("<II", crc, size & 0xFFFFFFFF)


def _settle(
    module: ModuleType, crc: int, size: int, work: Future[tuple[bytes, int]], length: int
) -> Generator[bytes, None, tuple[int, int]]:
    out, chunk_crc = work.result()
    if out:
        yield out
    return module.crc32_combine(crc, chunk_crc, length), size + length


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    """One pool per width for the life of the process (a warm Lambda reuses it)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="gzip")


def _bytes_only(pieces: Iterable[Piece]) -> Iterator[bytes]:
    for piece in pieces:
        if not isinstance(piece, bytes):
            raise TypeError("a gzip stream is made of bytes the worker read, not copied ranges")
        yield piece
