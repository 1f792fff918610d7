"""The chunked deflate engine: one valid raw deflate stream, the right CRC-32, the same bytes
however many threads compress it, and bounded read-ahead."""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator

import pytest

from chalicelib.archive import deflate, levels
from chalicelib.archive.deflate import ChunkedDeflate

CHUNK = 64 * 1024  # small chunks: many of them in a test-sized member


def text(size: int, seed: int = 7) -> bytes:
    """Compressible, irregular bytes: CSV-like rows with random fields."""
    draw = random.Random(seed)
    rows = bytearray()
    while len(rows) < size:
        field = draw.randbytes(draw.randint(0, 12)).hex().encode()
        rows += b"%d,%s,%d\n" % (len(rows), field, draw.random() < 0.5)
    return bytes(rows[:size])


def pieces(data: bytes, cut: int) -> Iterator[bytes]:
    for start in range(0, len(data), cut):
        yield data[start : start + cut]


def inflate(stream: bytes) -> bytes:
    """A raw deflate stream (wbits -15) inflated by stdlib zlib, which must reach its end."""
    reader = zlib.decompressobj(-15)
    out = reader.decompress(stream) + reader.flush()
    assert reader.eof, "the stream has no final block"
    assert reader.unused_data == b"", "bytes after the final block"
    return out


def test_the_levels_the_schema_declares_are_the_engines() -> None:
    # The zip type's schema reads them from `levels`, which loads no engine.
    assert tuple(deflate.ENGINES) == levels.LEVELS == deflate.LEVELS
    assert levels.DEFAULT_LEVEL in deflate.ENGINES


@pytest.mark.parametrize("level", deflate.LEVELS)
def test_a_member_of_many_chunks_is_one_raw_deflate_stream_of_the_exact_bytes(level: int) -> None:
    data = text(11 * CHUNK + 1234)
    engine = ChunkedDeflate(level, chunk_bytes=CHUNK, workers=2)
    out = b"".join(engine.stream(pieces(data, 10_000)))
    assert inflate(out) == data
    assert engine.crc == zlib.crc32(data)
    assert engine.size == len(data)
    assert engine.compressed_size == len(out)
    assert len(out) < len(data) * 2 // 3  # it did compress


def test_only_the_last_chunk_is_final_and_the_others_end_on_a_full_flush() -> None:
    data = text(5 * CHUNK)
    outputs = list(ChunkedDeflate(2, chunk_bytes=CHUNK, workers=2).stream([data]))
    assert len(outputs) == 5
    for out in outputs[:-1]:
        assert out.endswith(b"\x00\x00\xff\xff")  # the empty stored block of a flush, byte-aligned
    reader = zlib.decompressobj(-15)
    head = reader.decompress(b"".join(outputs[:-1]))
    assert not reader.eof  # four chunks, no BFINAL among them
    assert head == data[: 4 * CHUNK]
    assert head + reader.decompress(outputs[-1]) == data
    assert reader.eof


def test_the_combined_crc_equals_zlibs_over_the_whole_for_any_cut() -> None:
    draw = random.Random(3)
    for size in (1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + draw.randint(1, CHUNK)):
        data = draw.randbytes(size)  # incompressible: stored blocks inside the stream
        engine = ChunkedDeflate(1, chunk_bytes=CHUNK, workers=2)
        assert inflate(b"".join(engine.stream(pieces(data, draw.randint(1, 3 * CHUNK))))) == data
        assert (engine.crc, engine.size) == (zlib.crc32(data), size)


def test_an_empty_member_is_an_empty_final_block() -> None:
    engine = ChunkedDeflate()
    out = b"".join(engine.stream([]))
    assert inflate(out) == b""
    assert (engine.crc, engine.size, engine.compressed_size) == (0, 0, len(out))
    assert b"".join(ChunkedDeflate().stream([b"", b""])) == out


def test_the_output_depends_on_the_bytes_only_not_on_threads_or_reads() -> None:
    data = text(9 * CHUNK + 17)
    runs = [
        b"".join(ChunkedDeflate(2, CHUNK, workers, in_flight).stream(pieces(data, cut)))
        for workers, in_flight, cut in ((1, 1, len(data)), (2, 4, 999), (4, 2, CHUNK), (3, 9, 3 * CHUNK + 5))
    ]
    assert all(run == runs[0] for run in runs)


def test_chunks_are_primed_with_the_previous_window() -> None:
    """A chunk repeating the 16 KiB before it compresses to almost nothing: its matches reach
    back across the cut (unprimed, its first 16 KiB would not compress at all)."""
    first = random.Random(5).randbytes(CHUNK)  # incompressible on its own
    tail = first[-16 * 1024 :]
    out = list(ChunkedDeflate(2, chunk_bytes=CHUNK, workers=2).stream([first + tail * 4]))
    assert len(out[0]) > CHUNK
    assert len(out[1]) < 2048
    assert inflate(b"".join(out)) == first + tail * 4


def test_read_ahead_is_bounded_by_the_chunks_in_flight() -> None:
    data = text(40 * CHUNK)
    pulled = 0

    def source() -> Iterator[bytes]:
        nonlocal pulled
        for piece in pieces(data, CHUNK):
            pulled += len(piece)
            yield piece

    engine = ChunkedDeflate(2, chunk_bytes=CHUNK, workers=2, in_flight=3)
    ahead = 0
    out = bytearray()
    for piece in engine.stream(source()):
        out += piece
        ahead = max(ahead, pulled - engine.size)
    # in flight, plus the chunk held back to learn whether it is the last, plus the one being cut
    assert ahead <= (3 + 2) * CHUNK
    assert inflate(bytes(out)) == data


def test_an_unknown_level_or_a_chunk_smaller_than_the_window_is_refused() -> None:
    with pytest.raises(ValueError, match="level"):
        ChunkedDeflate(9)
    with pytest.raises(ValueError, match="chunk"):
        ChunkedDeflate(chunk_bytes=deflate.WINDOW_BYTES - 1)


def test_a_stream_stopped_between_chunks_goes_on_from_the_carried_state_to_the_same_bytes() -> None:
    data = text(10 * CHUNK + 123)
    whole = ChunkedDeflate(chunk_bytes=CHUNK, workers=2)
    expected = b"".join(whole.stream(pieces(data, 10_000)))
    out, carried, runs = b"", None, 0
    while True:  # every run is told to stop as soon as it may: after one chunk
        part = ChunkedDeflate(chunk_bytes=CHUNK, workers=2, carried=carried)
        offset = carried.size if carried else 0
        out += b"".join(part.stream(pieces(data[offset:], 7_000), stop=lambda: True))
        runs += 1
        if not part.stopped:
            break
        carried = part.carried()
        assert carried.size % CHUNK == 0  # a stop is on a chunk boundary
        assert carried.primer == data[carried.size - deflate.WINDOW_BYTES : carried.size]
        assert carried.compressed_size == len(out)
    assert runs == 10  # one chunk a run, the last run the last two
    assert out == expected
    assert (part.crc, part.size, part.compressed_size) == (whole.crc, whole.size, whole.compressed_size)
    assert inflate(out) == data


def test_a_stream_never_stops_before_its_first_chunk_nor_before_its_last() -> None:
    data = text(2 * CHUNK)
    two = ChunkedDeflate(chunk_bytes=CHUNK, workers=2)
    assert inflate(b"".join(two.stream(pieces(data, CHUNK), stop=lambda: True))) == data
    assert not two.stopped  # the first chunk, then the last: nothing to stop between
