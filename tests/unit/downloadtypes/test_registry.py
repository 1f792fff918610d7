"""The registry files each built-in type under its name and loads its module when the type is
first asked for: a function that meets one type loads no other (docs/performance.md, "Cold start")."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from chalicelib import downloadtypes
from chalicelib.core.errors import UnknownType

ROOT = Path(__file__).resolve().parents[3]
TYPE_MODULES = ("ziptype", "export", "audit", "listing")


def _loaded_type_modules(statements: str) -> list[str]:
    """The type modules a fresh interpreter holds after `statements`."""
    code = (
        "import json, sys\nfrom chalicelib import downloadtypes\n"
        f"{statements}\n"
        f"print(json.dumps([m for m in {TYPE_MODULES!r} if 'chalicelib.downloadtypes.' + m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


@pytest.mark.parametrize("name", sorted(downloadtypes._BUILTIN))
def test_each_loader_gives_the_type_filed_under_its_name(name: str) -> None:
    assert downloadtypes._BUILTIN[name]().name == name
    assert downloadtypes.get(name) is downloadtypes._BUILTIN[name]()


def test_all_types_are_every_built_in_in_name_order() -> None:
    assert [kind.name for kind in downloadtypes.all_types()] == ["audit", "export", "listing", "zip"]


def test_the_registry_loads_no_type_until_one_is_asked_for() -> None:
    assert _loaded_type_modules("") == []
    assert _loaded_type_modules("downloadtypes.get('export')") == ["export"]
    assert _loaded_type_modules("downloadtypes.get('zip')") == ["ziptype"]
    assert _loaded_type_modules("downloadtypes.all_types()") == list(TYPE_MODULES)


def test_an_unknown_type_names_the_known_ones_without_loading_them() -> None:
    with pytest.raises(UnknownType, match="known types: audit, export, listing, zip"):
        downloadtypes.get("nope")
    with pytest.raises(UnknownType):
        downloadtypes.get(["zip"])  # not a name at all
    probe = "try:\n    downloadtypes.get('nope')\nexcept Exception:\n    pass"
    assert _loaded_type_modules(probe) == []


def test_a_built_in_name_cannot_be_registered_again() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        downloadtypes.register(replace(downloadtypes.get("listing")))
