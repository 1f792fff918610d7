"""The reader matrix: every archive Satchel builds opens in every common reader, with the
sources' bytes and names.

Readers: Info-ZIP `unzip` (-t, then -p), 7-Zip (`7z t`, then `x -so`), libarchive
(`bsdtar -xOf`, a streaming reader), Python `zipfile` (testzip, then read), Java `ZipFile`
and the streaming Java `ZipInputStream` (tests/support/readers/ZipCheck.java, run with `java`).
Each reader lists the names (UTF-8) and extracts every member to a pipe; the test compares
the names, and the length and CRC-32 of all the bytes in order, with the sources'. (The
readers check each member's CRC themselves; the whole stream's CRC-32 and length show the
bytes are the sources', in order. SHA-256 would cost 8 s per pass of the 4 GiB member on
this machine, CRC-32 with ISA-L a tenth of a second.) A missing reader fails the test:
`.ci/run` installs them.

Archives, built once for the module and shared by the readers:
- through the whole workflow (moto, the real ASL and handlers): store and deflate, one
  Build and parallel segments; members small, 1-16 MiB and over 16 MiB, uploaded in one
  PUT or in parts (boto3 upload_file, CRC32: moto's unmarked composite checksum), already
  compressed (.jpg, .zip of random bytes), unicode, emoji, nested, empty and duplicate names;
- at the writer level (chalicelib.archive.zipwriter), the chunked deflate engine at every
  level (members of many chunks, of one byte, empty); ZIP64 by entry count (70,000 entries) and by
  size (a 4 GiB + 1 MiB member of zeros, stored, its data a hole in a sparse temporary file:
  no disk, and no 4 GiB held anywhere).

One exception, for time: on the 4 GiB archive `unzip` only tests (`-t` checks every
member's bytes against the CRC-32 in its headers, which
`test_every_archive_announces_the_sources_crcs` ties to the sources); its `-p` pass there
would add 30 s (unzip's CRC runs at about 140 MB/s here).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import requests
from boto3.s3.transfer import TransferConfig
from chalice.test import Client
from isal import isal_zlib
from moto import mock_aws

from app import app
from chalicelib.archive import deflate, zipwriter
from chalicelib.archive.zipwriter import ZipLayout
from chalicelib.core import clients
from chalicelib.s3 import sources
from chalicelib.storage.keys import KeyStore
from satchel_local import lambdas
from satchel_local.stack import MOTO_CONFIG, REGION, provision
from tests.support.stack import USERS, Satchel, api_key_of

MIB = 1024 * 1024
GIB = 1024 * MIB
JAVA_CHECK = Path(__file__).parents[1] / "support" / "readers" / "ZipCheck.java"
UTF8 = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}


def _text(size: int, seed: int) -> bytes:
    line = f"{seed:04d},alpha,beta,{seed * 7},gamma,δ\n".encode()
    return (line * (size // len(line) + 1))[:size]


# Key under acme/r/ -> (bytes, uploaded in parts?). The archive lists them in key order.
SOURCES: dict[str, tuple[bytes, bool]] = {
    "small.txt": (_text(10_000, 1), False),
    "unicode/été ☃ résumé.txt": (_text(3_000, 2), False),
    "emoji/🎉 party 🦄.txt": (_text(2_000, 3), False),
    "deep/a/b/c/d/nested.csv": (_text(5_000, 4), False),
    "empty.txt": (b"", False),
    "dup/A.txt": (b"upper\n", False),
    "dup/a.txt": (b"lower\n", False),
    "photo.jpg": (os.urandom(200_000), False),
    "bundle.zip": (os.urandom(2 * MIB + 17), False),
    "medium.bin": (os.urandom(3 * MIB + 5), False),
    "medium-parts.bin": (os.urandom(12 * MIB + 3), True),
    "medium-parts.jpg": (os.urandom(11 * MIB + 1), True),
    "large.bin": (os.urandom(17 * MIB + 9), False),
    "large-parts.dat": (os.urandom(18 * MIB + 1), True),
    "large-text.csv": (_text(17 * MIB + 11, 5), False),
}
# The names the archive gives them: the second "dup/a.txt" (case-insensitively) gets " (2)".
NAMES = {key: f"r/{key}" for key in SOURCES} | {"dup/a.txt": "r/dup/a (2).txt"}


@dataclass(frozen=True)
class Expected:
    names: list[str]
    crcs: list[int]  # each member's
    total: int
    crc: int  # of every member's bytes, in archive order


@dataclass(frozen=True)
class Seen:
    names: list[str]
    total: int | None  # None: the reader only tested (see TESTED_ONLY)
    crc: int | None


TESTED_ONLY = {("zip64-size", "unzip")}


@dataclass(frozen=True)
class Archive:
    path: Path
    expected: Expected


def _expected(members: Iterable[tuple[str, list[bytes]]]) -> Expected:
    names, crcs, total, crc = [], [], 0, 0
    for name, chunks in members:
        names.append(name)
        crcs.append(zlib.crc32(b"".join(chunks)))
        for chunk in chunks:
            crc = isal_zlib.crc32(chunk, crc)
            total += len(chunk)
    return Expected(names, crcs, total, crc)


# --- Building the archives --------------------------------------------------------------------


@contextlib.contextmanager
def _stack() -> Iterator[Satchel]:
    """conftest's `stack` and `satchel`, for a whole module: the archives are built once."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            patch.setenv(name, "testing")
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            patch.delenv(name, raising=False)
        lambdas.install()
        with mock_aws(config=cast(Any, MOTO_CONFIG)):
            clients.reset()
            created = provision("test")
            for name, value in created.environment().items():
                patch.setenv(name, value)
            patch.setenv("SATCHEL_STAGE", "test")
            keys = KeyStore(clients.table(created.table))
            for name, principal in USERS.items():
                keys.add(api_key_of(name), principal)
            try:
                with Client(app, stage_name="test") as client:
                    yield Satchel(client, created)
            finally:
                lambdas.wait_idle(timeout=60)
                clients.reset()


def _seed(satchel: Satchel, scratch: Path) -> None:
    s3, bucket = satchel.s3, satchel.stack.source_bucket
    in_parts = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    for key, (body, parts) in SOURCES.items():
        if not parts:
            s3.put_object(Bucket=bucket, Key=f"acme/r/{key}", Body=body, ChecksumAlgorithm="CRC32")
            continue
        path = scratch / "upload.bin"
        path.write_bytes(body)
        s3.upload_file(
            str(path), bucket, f"acme/r/{key}", ExtraArgs={"ChecksumAlgorithm": "CRC32"}, Config=in_parts
        )
        head = s3.head_object(Bucket=bucket, Key=f"acme/r/{key}", ChecksumMode="ENABLED")
        assert head["ETag"].endswith(f'-{-(-len(body) // (5 * MIB))}"')  # really uploaded in parts
        assert int.from_bytes(base64.b64decode(head["ChecksumCRC32"]), "big") != zlib.crc32(body)


WORKFLOW_BUILDS = {
    "store": {"compression": "store"},
    "deflate": {"compression": "deflate"},
    "store-segments": {"compression": "store"},
    "deflate-segments": {"compression": "deflate"},
}


@pytest.fixture(scope="module")
def workflow_archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Archive]:
    scratch = tmp_path_factory.mktemp("workflow")
    expected = _expected((NAMES[key], [SOURCES[key][0]]) for key in sorted(SOURCES))
    built: dict[str, Archive] = {}
    with _stack() as satchel, pytest.MonkeyPatch.context() as patch:
        _seed(satchel, scratch)
        patch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))
        for name, params in WORKFLOW_BUILDS.items():
            segmented = name.endswith("segments")
            patch.setenv("SATCHEL_PARALLEL_MIN_FILES", "4" if segmented else "100000")
            patch.setenv("SATCHEL_SEGMENT_FILES", "4")
            created = satchel.create({"prefixes": ["acme/r/"], **params})
            assert created.status == 202, created.body
            done = satchel.wait(created.json["id"], timeout=180)
            assert done["state"] == "DONE", done
            location = satchel.call("GET", done["url"]).headers["Location"]
            path = scratch / f"{name}.zip"
            path.write_bytes(requests.get(location, timeout=60).content)
            assert hashlib.sha256(path.read_bytes()).hexdigest() == done["artifact"]["sha256"]
            built[name] = Archive(path, expected)
    return built


WHEN = datetime(2024, 5, 17, 13, 45, 10, tzinfo=UTC)


def _write(path: Path, layout: ZipLayout, pieces: Iterable[zipwriter.Piece]) -> None:
    """The archive to a file; a CopyRange (the synthetic source) as a hole: zeros, no disk."""
    with path.open("wb") as file:
        for piece in pieces:
            if isinstance(piece, zipwriter.CopyRange):
                file.seek(piece.length, os.SEEK_CUR)
            else:
                file.write(piece)
        for record in zipwriter.closing(layout.members, layout.offset):
            file.write(record)


@pytest.fixture(scope="module")
def many_entries(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """ZIP64 by entry count: 70,000 members, every tenth deflated."""
    path = tmp_path_factory.mktemp("zip64") / "many.zip"
    layout = ZipLayout(WHEN)
    bodies = [(f"n/{index // 1000:02d}/{index:05d}.txt", f"{index}\n".encode()) for index in range(70_000)]

    def pieces() -> Iterator[zipwriter.Piece]:
        for index, (name, body) in enumerate(bodies):
            if index % 10:
                yield from layout.known(name, zlib.crc32(body), len(body), [body])
            else:
                yield from layout.streamed(name, len(body), [body], deflate.compressor(1))

    _write(path, layout, pieces())
    return Archive(path, _expected((name, [body]) for name, body in bodies))


HUGE = 4 * GIB + MIB
CHUNK = 8 * MIB


@pytest.fixture(scope="module")
def huge_member(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """ZIP64 by size: a stored member of 4 GiB + 1 MiB of zeros (a synthetic source, as S3
    would copy it: a hole in a sparse file), and members after it, at offsets past 4 GiB."""
    path = tmp_path_factory.mktemp("zip64-size") / "huge.zip"
    layout = ZipLayout(WHEN)
    block = zlib.crc32(bytes(CHUNK))
    crc = sources.combine_crc32(
        [(block, CHUNK)] * (HUGE // CHUNK) + [(zlib.crc32(bytes(HUGE % CHUNK)), HUGE % CHUNK)]
    )
    after, tail = _text(100_000, 9), os.urandom(1000)
    pieces = [
        layout.known("huge.bin", crc, HUGE, [zipwriter.CopyRange("synthetic", "zeros", "e", 0, HUGE)]),
        layout.streamed("after.csv", len(after), [after], deflate.compressor(1)),
        layout.known("tail.jpg", zlib.crc32(tail), len(tail), [tail]),
    ]
    _write(path, layout, (piece for group in pieces for piece in group))
    # The expected CRC of all the bytes, combined: no pass over 4 GiB for it.
    rest = _expected([("after.csv", [after]), ("tail.jpg", [tail])])
    everything = sources.combine_crc32([(crc, HUGE), (rest.crc, rest.total)])
    expected = Expected(["huge.bin", *rest.names], [crc, *rest.crcs], HUGE + rest.total, everything)
    assert path.stat().st_size > HUGE
    return Archive(path, expected)


@pytest.fixture(scope="module")
def chunked_members(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """The chunked deflate engine (1 MiB chunks, on every core, one deflate stream per member)
    at every level: members of many chunks, of exactly three, text and random bytes mixed, of
    one byte, empty; and one stored member."""
    path = tmp_path_factory.mktemp("chunked") / "chunked.zip"
    layout = ZipLayout(WHEN)
    rows = _text(9 * MIB + 7, 11)
    members = [(f"level-{level}/rows.csv", rows, level) for level in deflate.LEVELS]
    members += [
        ("exact.csv", _text(3 * deflate.CHUNK_BYTES, 12), deflate.DEFAULT_LEVEL),
        ("mixed.bin", rows[:MIB] + os.urandom(2 * MIB + 3) + rows[:MIB], deflate.DEFAULT_LEVEL),
        ("one.txt", b"x", deflate.DEFAULT_LEVEL),
        ("empty.txt", b"", deflate.DEFAULT_LEVEL),
    ]
    stored = b"stored as it is\n"

    def pieces() -> Iterator[zipwriter.Piece]:
        for name, body, level in members:
            cut = [body[start : start + 300_000] for start in range(0, len(body), 300_000)]
            yield from layout.streamed(name, len(body), cut, deflate.compressor(level))
        yield from layout.known("stored.txt", zlib.crc32(stored), len(stored), [stored])

    _write(path, layout, pieces())
    with zipfile.ZipFile(path) as opened:
        assert all(info.compress_size < info.file_size for info in opened.infolist()[:4])
    expected = _expected([*((name, [body]) for name, body, _ in members), ("stored.txt", [stored])])
    return Archive(path, expected)


def _workflow(name: str) -> Callable[[pytest.FixtureRequest], Archive]:
    def built(request: pytest.FixtureRequest) -> Archive:
        archives: dict[str, Archive] = request.getfixturevalue("workflow_archives")
        return archives[name]

    return built


def _fixture(name: str) -> Callable[[pytest.FixtureRequest], Archive]:
    def built(request: pytest.FixtureRequest) -> Archive:
        archive: Archive = request.getfixturevalue(name)
        return archive

    return built


ARCHIVES: dict[str, Callable[[pytest.FixtureRequest], Archive]] = {
    **{name: _workflow(name) for name in WORKFLOW_BUILDS},
    "zip64-entries": _fixture("many_entries"),
    "zip64-size": _fixture("huge_member"),
    "chunked": _fixture("chunked_members"),
}


# --- The readers ------------------------------------------------------------------------------


def _tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"reader {name!r} is not installed (.ci/run installs it); the matrix needs it"
    return found


def _run(command: list[str]) -> str:
    finished = subprocess.run(command, capture_output=True, env=UTF8, check=False)
    assert finished.returncode == 0, (command, finished.stdout[-2000:], finished.stderr[-2000:])
    return finished.stdout.decode("utf-8")


def _piped(command: list[str]) -> tuple[int, int]:
    """Run `command`, taking the CRC-32 of its stdout as it comes: (bytes, CRC-32)."""
    crc, total = 0, 0
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, env=UTF8) as process,
    ):
        assert process.stdout is not None
        while chunk := process.stdout.read(CHUNK):
            crc = isal_zlib.crc32(chunk, crc)
            total += len(chunk)
        process.wait()
        errors.seek(0)
        assert process.returncode == 0, (command, errors.read()[-2000:])
    return total, crc


def read_unzip(path: Path) -> Seen:
    unzip = _tool("unzip")
    tested = _run([unzip, "-t", str(path)])
    assert "No errors detected" in tested, tested[-2000:]
    names = _run([unzip, "-Z1", str(path)]).splitlines()
    if path.stat().st_size > 4 * GIB:
        return Seen(names, None, None)  # tested only: see the module's docstring
    total, crc = _piped([unzip, "-p", str(path)])
    return Seen(names, total, crc)


def read_7z(path: Path) -> Seen:
    seven = _tool("7z")
    tested = _run([seven, "t", str(path)])
    assert "Everything is Ok" in tested, tested[-2000:]
    listing = _run([seven, "l", "-slt", "-ba", str(path)])
    names = [line.removeprefix("Path = ") for line in listing.splitlines() if line.startswith("Path = ")]
    total, crc = _piped([seven, "x", "-so", str(path)])
    return Seen(names, total, crc)


def read_bsdtar(path: Path) -> Seen:
    bsdtar = _tool("bsdtar")
    names = _run([bsdtar, "-tf", str(path)]).splitlines()
    total, crc = _piped([bsdtar, "-xOf", str(path)])  # extracted "to nowhere" but a hash
    return Seen(names, total, crc)


def read_python(path: Path) -> Seen:
    crc, total = 0, 0
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        infos = archive.infolist()
        for info in infos:
            with archive.open(info) as member:  # checks the CRC at the end
                while chunk := member.read(CHUNK):
                    crc = isal_zlib.crc32(chunk, crc)
                    total += len(chunk)
    return Seen([info.filename for info in infos], total, crc)


@functools.cache
def _java(path: Path) -> dict[str, Seen]:
    java = _tool("java")
    output = _run([java, str(JAVA_CHECK), str(path)])
    names: dict[str, list[str]] = {"ZipFile": [], "ZipInputStream": []}
    seen: dict[str, Seen] = {}
    for line in output.splitlines():
        reader, kind, *rest = line.split("\t")
        if kind == "name":
            names[reader].append(rest[0])
        else:
            seen[reader] = Seen(names[reader], int(rest[0]), int(rest[1]))
    assert set(seen) == {"ZipFile", "ZipInputStream"}, output[-2000:]
    return seen


READERS: dict[str, Callable[[Path], Seen]] = {
    "unzip": read_unzip,
    "7z": read_7z,
    "bsdtar": read_bsdtar,
    "python-zipfile": read_python,
    "java-ZipFile": lambda path: _java(path)["ZipFile"],
    "java-ZipInputStream": lambda path: _java(path)["ZipInputStream"],
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("archive", list(ARCHIVES))
def test_every_reader_opens_every_archive_with_the_sources_bytes(
    request: pytest.FixtureRequest, archive: str, reader: str
) -> None:
    built = ARCHIVES[archive](request)
    seen = READERS[reader](built.path)
    assert seen.names == built.expected.names
    if (archive, reader) in TESTED_ONLY:
        assert seen.total is None
        return
    assert (seen.total, seen.crc) == (built.expected.total, built.expected.crc)


@pytest.mark.parametrize("archive", list(ARCHIVES))
def test_every_archive_announces_the_sources_crcs(request: pytest.FixtureRequest, archive: str) -> None:
    """The CRC-32 each member's headers announce is its source's: a reader's CRC test is a
    test of the sources' bytes."""
    built = ARCHIVES[archive](request)
    with zipfile.ZipFile(built.path) as opened:
        assert [info.CRC for info in opened.infolist()] == built.expected.crcs


def test_no_stored_member_of_any_archive_has_a_data_descriptor(request: pytest.FixtureRequest) -> None:
    """What the streaming Java reader refuses, checked on every archive of the matrix."""
    for name in ARCHIVES:
        with zipfile.ZipFile(ARCHIVES[name](request).path) as archive:
            infos = archive.infolist()
        stored = [info for info in infos if info.compress_type == zipfile.ZIP_STORED]
        assert stored, name
        assert [info.filename for info in stored if info.flag_bits & 0x08] == [], name
        if name in WORKFLOW_BUILDS and name.startswith("deflate"):
            # Compressed already: stored, though the zip deflates (the .jpg and .zip sources).
            assert {"r/photo.jpg", "r/bundle.zip", "r/medium-parts.jpg"} <= {info.filename for info in stored}
