"""Every module of chalicelib imports on its own, in a fresh interpreter: no import cycle
hides behind the order in which app.py happens to import them."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import chalicelib

ROOT = Path(__file__).resolve().parents[2]


def modules() -> list[str]:
    found = ["chalicelib"]
    for info in pkgutil.walk_packages(chalicelib.__path__, prefix="chalicelib."):
        found.append(info.name)
    return sorted(found)


def _import_alone(name: str) -> tuple[str, int, str]:
    done = subprocess.run(
        [sys.executable, "-c", f"import {name}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return name, done.returncode, done.stderr.strip()


def test_the_walk_finds_the_subpackages() -> None:
    names = modules()
    assert "chalicelib.downloadtypes.base" in names
    assert "chalicelib.workflow.steps" in names
    assert len(names) > 30


def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    # One interpreter per module, a few at once: each costs ~0.3 s of start-up and imports.
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(_import_alone, modules()))
    failed = {name: stderr for name, code, stderr in results if code != 0}
    assert not failed, "modules that do not import on their own:\n" + "\n\n".join(
        f"{name}:\n{stderr}" for name, stderr in failed.items()
    )
