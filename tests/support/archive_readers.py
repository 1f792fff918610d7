"""Real archive readers run as programs: each must be installed (a missing one fails the test)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


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
