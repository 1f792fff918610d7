"""Names every OS can create: Windows' reserved names and characters, the Unicode Path extra
field beside the UTF-8 flag, and case-insensitive duplicates, checked by real readers."""

from __future__ import annotations

import struct
import zipfile
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chalicelib.archive import zipwriter
from chalicelib.archive.zipwriter import ZipLayout
from chalicelib.core.names import UniqueNames, is_reserved, safe_path
from tests.support.archive_readers import files_under, run

WHEN = datetime(2024, 5, 17, 13, 45, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Reserved device names, any case, with or without extensions, in any segment.
        ("CON", "CON_"),
        ("con.txt", "con_.txt"),
        ("Prn.tar.gz", "Prn_.tar.gz"),
        ("aux/report.csv", "aux_/report.csv"),
        ("docs/NUL.md", "docs/NUL_.md"),
        ("COM1.log", "COM1_.log"),
        ("com9", "com9_"),
        ("LPT1.txt", "LPT1_.txt"),
        ("lpt9/x", "lpt9_/x"),
        ("COM¹.txt", "COM¹_.txt"),
        ("con .txt", "con _.txt"),  # Windows ignores the space before the dot too
        # Look-alikes are left alone.
        ("CONSOLE.txt", "CONSOLE.txt"),
        ("COM10.txt", "COM10.txt"),
        ("xCON.txt", "xCON.txt"),
        ("my.con", "my.con"),
    ],
)
def test_reserved_windows_names_get_an_underscore_after_their_stem(raw: str, expected: str) -> None:
    assert safe_path(raw) == expected
    assert not any(is_reserved(segment) for segment in expected.split("/"))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a:b", "a_b"),
        ("time 12:30.txt", "time 12_30.txt"),
        ('say "hi".txt', "say _hi_.txt"),
        ("a<b>c|d?e*f", "a_b_c_d_e_f"),
        ("back\\slash", "back_slash"),
        ("tab\there", "tabhere"),
        ("invoice\u202etxt.exe", "invoicetxt.exe"),  # a bidi override would show "exe.txt"
        (
            "family \U0001f468\u200d\U0001f469\u200d\U0001f467.txt",
            "family \U0001f468\u200d\U0001f469\u200d\U0001f467.txt",
        ),
        (
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
        ),  # ZWNJ in Persian
        ("bell\x07.txt", "bell.txt"),
        ("C:/x", "C_/x"),
    ],
)
def test_characters_windows_forbids_are_replaced_or_removed(raw: str, expected: str) -> None:
    assert safe_path(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("name. ", "name"),
        ("name...", "name"),
        ("dir. /file .txt", "dir/file .txt"),
        ("report .", "report"),
        ("...", "_"),
        (". .", "_"),
        ("a/ . /b", "a/b"),  # a lone dot is the directory itself: dropped
        ("a/../b", "a/_/b"),
    ],
)
def test_trailing_dots_and_spaces_are_dropped(raw: str, expected: str) -> None:
    assert safe_path(raw) == expected


def test_duplicates_after_mapping_are_numbered_ignoring_case() -> None:
    names = UniqueNames()
    raw = ["a:b.txt", "a_b.txt", "A_B.TXT", "con.txt", "CON_.txt", "x. ", "x", "dir/f", "DIR/F"]
    assert [names.claim(safe_path(name)) for name in raw] == [
        "a_b.txt",
        "a_b (2).txt",
        "A_B (3).TXT",
        "con_.txt",
        "CON_ (2).txt",
        "x",
        "x (2)",
        "dir/f",
        "DIR/F (2)",
    ]


def test_reserved_names_are_taken_before_any_source_claims_them() -> None:
    names = UniqueNames(reserved=("SHA256SUMS", "MISSING.txt"))
    assert names.claim("sha256sums") == "sha256sums (2)"
    assert names.claim("missing.TXT") == "missing (2).TXT"


def _unicode_path_fields(extra: bytes) -> list[tuple[int, int, bytes]]:
    """(version, crc, name) of every 0x7075 field in an extra block."""
    found = []
    while extra:
        kind, length = struct.unpack("<HH", extra[:4])
        body, extra = extra[4 : 4 + length], extra[4 + length :]
        if kind == 0x7075:
            found.append((body[0], struct.unpack("<I", body[1:5])[0], body[5:]))
    return found


RAW_KEYS = [
    "CON.txt",
    "reports/a:b.csv",
    "name. ",
    "aux/nested.txt",
    "été/文件 ☃.txt",
    "emoji 🎉.txt",
    "Été/Case.txt",
    "été/case.TXT",
    "family \U0001f468\u200d\U0001f469\u200d\U0001f467.txt",
]
MAPPED = [
    "CON_.txt",
    "reports/a_b.csv",
    "name",
    "aux_/nested.txt",
    "été/文件 ☃.txt",
    "emoji 🎉.txt",
    "Été/Case.txt",
    "été/case (2).TXT",
    "family \U0001f468\u200d\U0001f469\u200d\U0001f467.txt",
]


def _archive(path: Path) -> dict[str, bytes]:
    names = UniqueNames()
    layout = ZipLayout(WHEN)
    expected: dict[str, bytes] = {}
    with path.open("wb") as file:
        for index, raw in enumerate(RAW_KEYS):
            name = names.claim(safe_path(raw))
            body = f"{index}: {raw}\n".encode()
            expected[name] = body
            for piece in layout.known(name, zlib.crc32(body), len(body), [body]):
                assert isinstance(piece, bytes)
                file.write(piece)
        for piece in zipwriter.closing(layout.members, layout.offset):
            file.write(piece)
    assert list(expected) == MAPPED
    return expected


def test_non_ascii_names_carry_the_utf8_flag_and_a_unicode_path_field(tmp_path: Path) -> None:
    path = tmp_path / "names.zip"
    _archive(path)
    data = path.read_bytes()
    with zipfile.ZipFile(path) as opened:
        for info in opened.infolist():
            encoded = info.filename.encode()
            assert info.flag_bits & 0x800
            central = _unicode_path_fields(info.extra)
            # The local header's extra field says the same.
            start = info.header_offset
            name_length, extra_length = struct.unpack("<HH", data[start + 26 : start + 30])
            local_extra = data[start + 30 + name_length : start + 30 + name_length + extra_length]
            if encoded.isascii():
                assert central == []
                assert _unicode_path_fields(local_extra) == []
            else:
                assert central == [(1, zlib.crc32(encoded), encoded)]
                assert _unicode_path_fields(local_extra) == central


def test_mapped_names_extract_as_mapped_in_unzip_7z_bsdtar_and_python(tmp_path: Path) -> None:
    path = tmp_path / "names.zip"
    expected = _archive(path)
    run("unzip", "-t", path)
    run("7z", "t", path)
    with zipfile.ZipFile(path) as opened:
        assert opened.testzip() is None
        assert {name: opened.read(name) for name in opened.namelist()} == expected
    commands: dict[str, tuple[str | Path, ...]] = {
        "unzip": ("unzip", "-q", path, "-d", tmp_path / "unzip"),
        "7z": ("7z", "x", "-y", f"-o{tmp_path / '7z'}", path),
        "bsdtar": ("bsdtar", "-xf", path, "-C", tmp_path / "bsdtar"),
    }
    for reader, command in commands.items():
        (tmp_path / reader).mkdir(exist_ok=True)
        run(*command)
        assert files_under(tmp_path / reader) == expected, reader
