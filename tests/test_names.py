from __future__ import annotations

import pytest

from chalicelib.artifacts import content_disposition
from chalicelib.names import UniqueNames, safe_filename, safe_path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("reports/q1.csv", "reports/q1.csv"),
        ("/etc/passwd", "etc/passwd"),
        ("a/../../b", "a/_/_/b"),
        ("a/./b//c/", "a/b/c"),
        ("..", "_"),
        ("C:/Windows/win.ini", "C_/Windows/win.ini"),
        ("dir\\..\\evil.txt", "dir_.._evil.txt"),
        ("bad\x00name\x1f\x7f.txt", "badname.txt"),
        ("line\nbreak.txt", "linebreak.txt"),
        ("été ☃/文件.txt", "été ☃/文件.txt"),
        ("e\u0301te.txt", "\u00e9te.txt"),  # NFC
        ("", "file"),
        ("/./", "file"),
    ],
)
def test_safe_path(raw: str, expected: str) -> None:
    cleaned = safe_path(raw)
    assert cleaned == expected
    assert not cleaned.startswith("/")
    assert ".." not in cleaned.split("/")


def test_segments_are_capped_at_255_bytes_without_splitting_characters() -> None:
    cleaned = safe_path("☃" * 200)
    assert len(cleaned.encode()) <= 255
    assert set(cleaned) == {"☃"}


def test_unique_names_number_repeats_before_the_extension() -> None:
    names = UniqueNames()
    assert [names.claim(n) for n in ["a.txt", "a.txt", "A.TXT", "b", "b", "dir/a.txt"]] == [
        "a.txt",
        "a (2).txt",
        "A (3).TXT",
        "b",
        "b (2)",
        "dir/a.txt",
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "fallback.zip"),
        ("report", "report.zip"),
        ("report.ZIP", "report.ZIP"),
        ("../../etc/passwd", "passwd.zip"),
        ("a/b/c.zip", "c.zip"),
        ("évé\r\n.zip", "évé.zip"),
    ],
)
def test_safe_filename(raw: str | None, expected: str) -> None:
    assert safe_filename(raw, "fallback.zip", ".zip") == expected


@pytest.mark.parametrize(
    ("filename", "ascii_part", "utf8_part"),
    [
        ("report.zip", 'filename="report.zip"', "filename*=UTF-8''report.zip"),
        ("Résumé ☃.zip", 'filename="Resume .zip"', "filename*=UTF-8''R%C3%A9sum%C3%A9%20%E2%98%83.zip"),
        ('q"uote\\.zip', 'filename="q_uote_.zip"', "filename*=UTF-8''q%22uote%5C.zip"),
        (
            "x\r\nSet-Cookie: a=b.zip",
            'filename="xSet-Cookie: a=b.zip"',
            "filename*=UTF-8''xSet-Cookie%3A%20a%3Db.zip",
        ),
    ],
)
def test_content_disposition_is_rfc6266_and_single_line(
    filename: str, ascii_part: str, utf8_part: str
) -> None:
    header = content_disposition(filename)
    assert header == f"attachment; {ascii_part}; {utf8_part}"
    assert "\r" not in header
    assert "\n" not in header
    assert header.isascii()
