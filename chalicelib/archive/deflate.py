"""The deflate engine: a member compressed in chunks, on every core, as one deflate stream.

A member is cut into chunks of `CHUNK_BYTES` (1 MiB). Each chunk is compressed on its own,
in a thread pool as wide as the machine's cores (the engines release the GIL while they
compress), by a fresh compressor primed with the previous chunk's last 32 KiB (`zdict`, as
pigz does: matches may reach back across the cut, so the chunks cost almost nothing in
size). Every chunk but the last ends on a full flush (an empty stored block, byte-aligned,
BFINAL clear) and the last on Z_FINISH, so the chunks' outputs, concatenated, are one valid
deflate stream that any inflater reads. Each chunk's CRC-32 is computed beside it and the
member's is combined from them (`crc32_combine`, which both zlib-ng and ISA-L export).

The output depends only on the bytes and the chunk size, never on how many threads ran or
how S3's responses were cut: the same sources always give the same archive. Nor on how many
Lambda runs it took: a stream may stop between two chunks (`stream(stop=)`) and a later run
go on from there (`Carried`: the CRC and sizes so far, and the last 32 KiB the next chunk is
primed with), its chunks then exactly those one run would have made.

`compression_level` (0 fastest to 3 smallest) names an engine and its own level, chosen by
`make bench` (docs/performance.md): 0 is ISA-L level 2, about 15 times zlib level 6's speed
per core at a fifth more size; 1-3 are zlib-ng levels 4, 5 and 6, within 5% of zlib level
6's size at 2-3.5 times its speed per core. Files that are compressed already are stored:
deflating them again costs time and saves nothing.
"""

from __future__ import annotations

import functools
import os
import posixpath
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType

from chalicelib.archive.levels import DEFAULT_LEVEL as DEFAULT_LEVEL
from chalicelib.archive.levels import LEVELS as LEVELS


@dataclass(frozen=True)
class Engine:
    """A deflate library (`isal` or `zlib-ng`) and its own level."""

    library: str
    level: int

    def module(self) -> ModuleType:
        # Deferred: a cold start that builds no zip loads neither library.
        if self.library == "isal":
            from isal import isal_zlib

            return isal_zlib
        from zlib_ng import zlib_ng

        return zlib_ng


# An engine for each of `levels.LEVELS` (tests/unit/archive/test_deflate.py holds they agree).
ENGINES = {0: Engine("isal", 2), 1: Engine("zlib-ng", 4), 2: Engine("zlib-ng", 5), 3: Engine("zlib-ng", 6)}
CHUNK_BYTES = 1024 * 1024
# What a chunk is primed with: deflate's whole window, so no match is lost at the cut.
WINDOW_BYTES = 32 * 1024
_RAW_DEFLATE = -15  # zip members are raw deflate streams: no zlib header or trailer


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    """One pool per width for the life of the process (a warm Lambda reuses it)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="deflate")


def cores() -> int:
    """The cores this process may run on (a Lambda's vCPUs: 1 at 1,769 MB, 6 at 10,240 MB)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def compress_chunk(engine: Engine, chunk: bytes, primer: bytes, final: bool) -> tuple[bytes, int]:
    """One chunk's deflate blocks (ending on a full flush unless `final`) and its CRC-32."""
    module = engine.module()
    if primer:
        strategy = module.Z_DEFAULT_STRATEGY
        compressor = module.compressobj(
            engine.level, module.DEFLATED, _RAW_DEFLATE, module.DEF_MEM_LEVEL, strategy, primer
        )
    else:
        compressor = module.compressobj(engine.level, module.DEFLATED, _RAW_DEFLATE)
    out: bytes = compressor.compress(chunk)
    out += compressor.flush(module.Z_FINISH if final else module.Z_FULL_FLUSH)
    crc: int = module.crc32(chunk)
    return out, crc


@dataclass(frozen=True)
class Carried:
    """Where a member's deflate stream stopped: its CRC-32 and sizes so far, and the last
    `WINDOW_BYTES` of its data (the next chunk's primer)."""

    crc: int
    size: int
    compressed_size: int
    primer: bytes


class ChunkedDeflate:
    """One member's deflate stream: `stream` yields its compressed bytes in order; once it
    is exhausted, `crc`, `size` and `compressed_size` are the member's.

    At most `in_flight` chunks (twice the workers by default) are read ahead and being
    compressed at once, so memory is bounded by about 2 x in_flight x chunk_bytes whatever
    the member's size. A member of one chunk is compressed in the calling thread.
    """

    def __init__(
        self,
        level: int = DEFAULT_LEVEL,
        chunk_bytes: int = CHUNK_BYTES,
        workers: int | None = None,
        in_flight: int | None = None,
        carried: Carried | None = None,
    ) -> None:
        if level not in ENGINES:
            raise ValueError(f"deflate level {level} is not one of {LEVELS}")
        if chunk_bytes < WINDOW_BYTES:
            raise ValueError(f"a deflate chunk must be at least {WINDOW_BYTES} bytes")
        self.engine = ENGINES[level]
        self.chunk_bytes = chunk_bytes
        self._workers = workers
        self._in_flight = in_flight
        # Carried on from an earlier run: `data` then starts at a chunk boundary, `size` in.
        self.crc = carried.crc if carried else 0
        self.size = carried.size if carried else 0
        self.compressed_size = carried.compressed_size if carried else 0
        self._primer = carried.primer if carried else b""
        self.stopped = False

    @functools.cached_property
    def workers(self) -> int:
        # Asked only once a member has a second chunk: most members are one chunk, compressed
        # in the calling thread, which need no pool and no system call (sched_getaffinity).
        return self._workers or cores()

    @functools.cached_property
    def in_flight(self) -> int:
        return self._in_flight or 2 * self.workers

    def carried(self) -> Carried:
        """Where the stream stopped (`stopped`), for a later run to go on from."""
        return Carried(self.crc, self.size, self.compressed_size, self._primer)

    def stream(self, data: Iterable[bytes], stop: Callable[[], bool] | None = None) -> Iterator[bytes]:
        """The compressed bytes. `stop` is asked before each chunk but the first and the last:
        when it says so, the stream ends after the chunks already compressing, with `stopped`
        set and no final block; `carried()` then tells a later run where to go on from."""
        module = self.engine.module()
        pending: deque[tuple[Future[tuple[bytes, int]], int]] = deque()
        held: bytes | None = None  # one chunk held back: only the next one tells if it is the last
        primer = self._primer
        submitted = 0
        try:
            for chunk in blocks(data, self.chunk_bytes):
                if held is not None:
                    if submitted and stop is not None and stop():
                        self.stopped = True
                        break
                    future = _pool(self.workers).submit(compress_chunk, self.engine, held, primer, False)
                    pending.append((future, len(held)))
                    submitted += 1
                    primer = held[-WINDOW_BYTES:]
                    while len(pending) >= self.in_flight:
                        yield from self._settle(module, *pending.popleft())
                held = chunk
            if self.stopped:  # `held` and what follows it are read again by the next run
                while pending:
                    yield from self._settle(module, *pending.popleft())
                self._primer = primer
                return
            last = held if held is not None else b""
            if pending:
                final = _pool(self.workers).submit(compress_chunk, self.engine, last, primer, True)
                pending.append((final, len(last)))
                while pending:
                    yield from self._settle(module, *pending.popleft())
            else:
                out, crc = compress_chunk(self.engine, last, primer, True)
                yield from self._account(module, out, crc, len(last))
        finally:
            for future, _ in pending:  # the reader stopped early: drop what has not started
                future.cancel()

    def _settle(self, module: ModuleType, future: Future[tuple[bytes, int]], length: int) -> Iterator[bytes]:
        out, crc = future.result()
        yield from self._account(module, out, crc, length)

    def _account(self, module: ModuleType, out: bytes, crc: int, length: int) -> Iterator[bytes]:
        self.crc = module.crc32_combine(self.crc, crc, length)
        self.size += length
        self.compressed_size += len(out)
        if out:
            yield out


def compressor(level: int = DEFAULT_LEVEL, carried: Carried | None = None) -> ChunkedDeflate:
    """A fresh member's deflate at `level` (one per member: it keeps the member's CRC-32), or
    one going on from where an earlier run's stopped (`carried`)."""
    return ChunkedDeflate(level, carried=carried)


# Formats that carry their own compression (lower case, with the dot).
PRECOMPRESSED_EXTENSIONS = frozenset(
    {
        ".7z",
        ".aac",
        ".apk",
        ".avif",
        ".br",
        ".bz2",
        ".docx",
        ".epub",
        ".flac",
        ".gif",
        ".gz",
        ".heic",
        ".jar",
        ".jpeg",
        ".jpg",
        ".lz4",
        ".lzma",
        ".m4a",
        ".m4v",
        ".mkv",
        ".mov",
        ".mp3",
        ".mp4",
        ".odp",
        ".ods",
        ".odt",
        ".ogg",
        ".opus",
        ".parquet",
        ".png",
        ".pptx",
        ".rar",
        ".tgz",
        ".webm",
        ".webp",
        ".whl",
        ".xlsx",
        ".xz",
        ".zip",
        ".zst",
    }
)
_PRECOMPRESSED_TYPES = frozenset(
    {
        "application/gzip",
        "application/x-gzip",
        "application/zip",
        "application/x-7z-compressed",
        "application/x-bzip2",
        "application/x-rar-compressed",
        "application/x-xz",
        "application/zstd",
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/heic",
    }
)
_PRECOMPRESSED_FAMILIES = ("video/", "audio/")
_UNCOMPRESSED_AUDIO = frozenset({"audio/wav", "audio/x-wav", "audio/wave", "audio/aiff", "audio/x-aiff"})


def blocks(chunks: Iterable[bytes], size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The same bytes in blocks of exactly `size` (the last one shorter): a member's chunks
    never depend on how S3's responses were cut."""
    held = bytearray()
    for chunk in chunks:
        if not held and len(chunk) == size:
            yield chunk
            continue
        held += chunk
        while len(held) >= size:
            yield bytes(held[:size])
            del held[:size]
    if held:
        yield bytes(held)


def is_precompressed(name: str, content_type: str = "") -> bool:
    """Whether a source is compressed already, by its extension or its content type."""
    if posixpath.splitext(name.lower())[1] in PRECOMPRESSED_EXTENSIONS:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    if media in _PRECOMPRESSED_TYPES:
        return True
    return media.startswith(_PRECOMPRESSED_FAMILIES) and media not in _UNCOMPRESSED_AUDIO
