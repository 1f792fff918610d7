"""The deflate engine, and which sources are not worth deflating.

ISA-L (`isal`), through its zlib-compatible public interface. On this project's benchmark
(`make bench`, README "Performance") its level 2, the default, deflates a mixed corpus
about 13 times faster than stdlib zlib at level 6, for output about a fifth larger; level 3
is smaller by 3% but slower by half or more. Levels are ISA-L's: 0 (fastest) to 3.
Files that are compressed already are stored: deflating them again costs time and saves
nothing.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator
from typing import Protocol

LEVELS = (0, 1, 2, 3)
DEFAULT_LEVEL = 2
# ISA-L's output (levels 1-3) depends on how its input is cut, not only on the bytes: fed
# in blocks of one fixed size, the same bytes always deflate to the same bytes (README,
# "Deterministic"), however S3's responses arrive.
BLOCK_BYTES = 1024 * 1024
_RAW_DEFLATE = -15  # zip members are raw deflate streams: no zlib header or trailer

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


class Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self) -> bytes: ...


def compressor(level: int) -> Compressor:
    from isal import isal_zlib  # deferred: a cold start that builds no zip never loads it

    engine: Compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, _RAW_DEFLATE)
    return engine


def blocks(chunks: Iterable[bytes], size: int = BLOCK_BYTES) -> Iterator[bytes]:
    """The same bytes in blocks of exactly `size` (the last one shorter)."""
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
