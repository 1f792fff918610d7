"""Real archive readers run as programs: each must be installed (a missing one fails the test)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

# Opens a zip with Java's ZipFile and its streaming ZipInputStream (run with `java`).
JAVA_CHECK = Path(__file__).parent / "readers" / "ZipCheck.java"


def run(*command: str | Path, cwd: Path | None = None) -> str:
    """Run a reader; its failure (or absence) fails the test with what it said."""
    program = shutil.which(str(command[0]))
    assert program is not None, f"{command[0]} is not installed (apt-get install it; see .ci/run)"
    result = subprocess.run(
        [program, *map(str, command[1:])],
        cwd=cwd,
        capture_output=True,
        text=True,
        errors="replace",
        env={**os.environ, "LC_ALL": "C.UTF-8"},
        check=False,
    )
    assert result.returncode == 0, f"{command}: {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def files_under(root: Path) -> dict[str, bytes]:
    """Every regular file under `root`, by its '/'-separated relative path."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def every_zip_reader_accepts(body: bytes, tmp_path: Path, expected: dict[str, bytes]) -> None:
    """Python's zipfile, unzip, 7-Zip, bsdtar, Java's ZipFile and streaming ZipInputStream
    each open the zip and find `expected` (name: bytes) in it."""
    with zipfile.ZipFile(io.BytesIO(body)) as opened:
        assert opened.testzip() is None
        assert {info.filename: opened.read(info) for info in opened.infolist()} == expected
    path = tmp_path / "checked.zip"
    path.write_bytes(body)
    run("unzip", "-t", path)
    run("7z", "t", path)
    assert sorted(run("bsdtar", "-tf", path).splitlines()) == sorted(expected)
    checked = run("java", JAVA_CHECK, path)
    for reader in ("ZipFile", "ZipInputStream"):
        names = [line.split("\t")[2] for line in checked.splitlines() if line.startswith(f"{reader}\tname\t")]
        assert sorted(names) == sorted(expected), checked
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    run("bsdtar", "-xf", path, cwd=extracted)
    assert files_under(extracted) == expected
