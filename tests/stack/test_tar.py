"""`format: tar | tar.gz`: POSIX pax archives that GNU tar, bsdtar and Python read, with UTF-8
and long names, sizes past the ustar limit of 8 GiB, and the same safe names as zips."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from chalicelib.s3 import multipart
from tests.support.archive_readers import files_under, run
from tests.support.stack import Satchel

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_s3.type_defs import CopySourceTypeDef

MIB = 1024 * 1024
LONG = (
    "acme/t/" + "/".join(["a-rather-long-folder-name-for-a-tar-header"] * 3) + "/and a long file name ☃.txt"
)
SOURCES = {
    "acme/t/plain.txt": b"plain\n",
    "acme/t/été/文件 ☃ 🎉.txt": "unicode ☃\n".encode(),
    LONG: b"long name\n",
    "acme/t/aux.log": b"reserved\n",
    "acme/t/q?.txt": b"question\n",
    "acme/t/empty": b"",
    "acme/t/odd.bin": bytes(range(256)) * 3 + b"x",  # not a multiple of 512
    "acme/t/big.bin": bytes(range(251)) * (11 * MIB // 251),  # copied by S3 in a tar
}
EXTRACTED = {
    "t/plain.txt": SOURCES["acme/t/plain.txt"],
    "t/été/文件 ☃ 🎉.txt": SOURCES["acme/t/été/文件 ☃ 🎉.txt"],
    LONG.removeprefix("acme/"): SOURCES[LONG],
    "t/aux_.log": SOURCES["acme/t/aux.log"],
    "t/q_.txt": SOURCES["acme/t/q?.txt"],
    "t/empty": b"",
    "t/odd.bin": SOURCES["acme/t/odd.bin"],
    "t/big.bin": SOURCES["acme/t/big.bin"],
}


@pytest.fixture
def put(satchel: Satchel) -> dict[str, bytes]:
    for key, body in SOURCES.items():
        satchel.put_source(key, body)
    return SOURCES


def fetch(satchel: Satchel, params: dict[str, Any], filename: str = "photos") -> tuple[dict[str, Any], bytes]:
    created = satchel.create({"prefixes": ["acme/t/"], **params}, filename=filename)
    assert created.status == 202, created.body
    done = satchel.wait(created.json["id"], timeout=120)
    assert done["state"] == "DONE", done
    location = satchel.call("GET", done["url"]).headers["Location"]
    archive = requests.get(location, timeout=60).content
    assert len(archive) == done["artifact"]["size"]
    assert hashlib.sha256(archive).hexdigest() == done["artifact"]["sha256"]
    assert (
        done["progress"]["bytes_done"] == done["progress"]["bytes_total"] == sum(map(len, SOURCES.values()))
    )
    assert satchel.open_uploads() == []
    return done, archive


def extract_everywhere(path: Path, tmp_path: Path) -> dict[str, dict[str, bytes]]:
    found = {}
    for reader, command in {"gnu": ("tar", "-xf"), "bsdtar": ("bsdtar", "-xf")}.items():
        into = tmp_path / f"{path.name}-{reader}"
        into.mkdir()
        run(*command, path, "-C", into)
        found[reader] = files_under(into)
    return found


@pytest.mark.parametrize(
    ("fmt", "extension", "content_type"),
    [("tar", ".tar", "application/x-tar"), ("tar.gz", ".tar.gz", "application/gzip")],
)
def test_gnu_tar_and_bsdtar_extract_the_sources_bytes(
    satchel: Satchel,
    put: dict[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
    extension: str,
    content_type: str,
) -> None:
    monkeypatch.setenv("SATCHEL_SERVER_COPY_MIN_BYTES", str(10 * MIB))
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))
    done, archive = fetch(satchel, {"format": fmt, "compression_level": 1})
    assert done["filename"] == f"photos{extension}"
    assert done["artifact"]["content_type"] == content_type
    path = tmp_path / f"a{extension}"
    path.write_bytes(archive)
    listing = run("tar", "-tvf", path)
    for name in EXTRACTED:
        assert name in listing
    for reader, files in extract_everywhere(path, tmp_path).items():
        assert files == EXTRACTED, reader
    run("7z", "t", path)  # a tar.gz: 7-Zip checks the gzip stream's CRC and length
    # Each member is stamped with its source's LastModified (whole seconds): the puts may
    # straddle a second, so members need not share one time.
    stamped = {
        name: int(
            satchel.s3.head_object(Bucket=satchel.stack.source_bucket, Key=key)["LastModified"].timestamp()
        )
        for name, key in zip(EXTRACTED, SOURCES, strict=True)
    }
    with tarfile.open(path) as opened:
        assert {member.name: int(member.mtime) for member in opened.getmembers()} == stamped
    if fmt == "tar.gz":
        assert archive[:2] == b"\x1f\x8b"
        assert len(archive) < len(gzip.decompress(archive))
    else:
        assert len(archive) % 512 == 0


def test_a_tar_copies_large_members_server_side_and_is_digested(
    satchel: Satchel, put: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    copies: list[str] = []
    copy_part = multipart.MultipartWriter.copy_part

    def counted(self: multipart.MultipartWriter, copy_source: CopySourceTypeDef, *args: Any) -> None:
        copies.append(copy_source["Key"])
        copy_part(self, copy_source, *args)

    monkeypatch.setattr(multipart.MultipartWriter, "copy_part", counted)
    monkeypatch.setenv("SATCHEL_SERVER_COPY_MIN_BYTES", str(10 * MIB))
    _, archive = fetch(satchel, {"format": "tar"})
    assert copies == ["acme/t/big.bin"]
    with tarfile.open(fileobj=io.BytesIO(archive)) as opened:
        member = opened.extractfile("t/big.bin")
        assert member is not None
        assert member.read() == SOURCES["acme/t/big.bin"]


def test_tar_with_manifest_and_skip(satchel: Satchel, put: dict[str, bytes], tmp_path: Path) -> None:
    created = satchel.create(
        {
            "keys": ["acme/t/plain.txt", "acme/t/gone.txt", LONG],
            "format": "tar.gz",
            "manifest": True,
            "on_missing": "skip",
        }
    )
    done = satchel.wait(created.json["id"], timeout=60)
    assert done["state"] == "DONE", done
    assert done["skipped"] == ["acme/t/gone.txt"]
    archive = requests.get(satchel.call("GET", done["url"]).headers["Location"], timeout=60).content
    path = tmp_path / "m.tar.gz"
    path.write_bytes(archive)
    root = tmp_path / "m"
    root.mkdir()
    run("tar", "-xzf", path, "-C", root)
    files = files_under(root)
    assert files["MISSING.txt"] == b"acme/t/gone.txt\n"
    assert files["t/plain.txt"] == SOURCES["acme/t/plain.txt"]
    checked = run("sha256sum", "-c", "SHA256SUMS", cwd=root)
    assert checked.count(": OK") == 2
