"""The folders show the architecture and the arrows point one way.

Every import of every module under chalicelib/ is read from its source (ast) and held to
the table below: one line per package, naming the packages it may import besides itself.
A package may name only packages declared above it, so the graph has no cycle by
construction, and a violation names the module, its line and what it imported.

Imports under `if TYPE_CHECKING:` count like any other: a type named across packages is a
dependency all the same (mypy and a reader follow it), and an import kept for the checker
alone is where a cycle hides until someone needs it at run time. Imports inside functions
count too: deferring an import does not change which way the arrow points (a cold start
defers many: docs/performance.md, "Cold start").
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "chalicelib"

# Package -> what it may import besides itself. Order matters: each names only those above it.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "core": frozenset(),  # errors, models, settings, clients, observability: everyone's vocabulary
    "storage": frozenset({"core"}),  # DynamoDB stores
    "s3": frozenset({"core"}),  # objects, uploads, manifests in S3
    "archive": frozenset({"core", "s3"}),  # zip/tar writers, their pieces assembled into S3 objects
    "runtime": frozenset({"core", "storage"}),  # the composition root: settings, clients, stores
    "downloadtypes": frozenset({"core", "storage", "s3", "archive", "runtime"}),
    "notify": frozenset({"core", "storage", "runtime"}),
    "workflow": frozenset({"core", "storage", "s3", "archive", "runtime", "downloadtypes", "notify"}),
    "api": frozenset({"core", "storage", "s3", "runtime", "downloadtypes", "notify", "workflow"}),
    "triggers": frozenset({"core", "storage", "s3", "runtime", "downloadtypes", "notify", "workflow", "api"}),
}


@dataclass(frozen=True)
class Import:
    module: str  # importing module, dotted
    line: int
    target: str  # imported chalicelib module (or name from it), dotted
    deferred: bool = False  # inside a function: made when it first runs, not with the module


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(dotted: str) -> str:
    """The layer a chalicelib module belongs to: its first component below chalicelib
    (`runtime` is a module of its own); "" for the chalicelib package itself."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports_in(source: str, module: str, is_package: bool) -> list[Import]:
    """Every chalicelib import in the source, wherever it sits (top level, TYPE_CHECKING, functions)."""
    tree = ast.parse(source)
    in_functions = {
        id(inner)
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
        for inner in ast.walk(function)
    }
    found: list[Import] = []
    for node in ast.walk(tree):
        deferred = id(node) in in_functions
        if isinstance(node, ast.Import):
            found += [Import(module, node.lineno, alias.name, deferred) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from chalicelib import api` imports the package api: name the target by it.
            targets = [f"{base}.{alias.name}" if base == "chalicelib" else base for alias in node.names]
            found += [Import(module, node.lineno, target, deferred) for target in targets]
    # Once each (`from x import a, b` is one import of x), in line order: ast.walk goes breadth first.
    ours = dict.fromkeys(
        found_import for found_import in found if found_import.target.split(".")[0] == "chalicelib"
    )
    return sorted(ours, key=lambda i: i.line)


def violations(found: list[Import]) -> list[str]:
    wrong = []
    for imported in found:
        source, target = package_of(imported.module), package_of(imported.target)
        if not source or target == source:
            continue
        allowed = MAY_IMPORT.get(source)
        if allowed is None or target not in allowed:
            may = ", ".join(sorted(allowed)) if allowed else "nothing of chalicelib"
            wrong.append(
                f"{imported.module} (line {imported.line}) imports {imported.target}: "
                f"{source} may import {may}"
            )
    return wrong


def every_import() -> list[Import]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        found += imports_in(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")
    return found


def test_every_package_is_declared_in_the_table() -> None:
    on_disk = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()}
    on_disk |= {path.stem for path in PACKAGE.glob("*.py") if path.name != "__init__.py"}
    assert on_disk == set(MAY_IMPORT), (
        f"tests/test_layering.py's MAY_IMPORT must list exactly chalicelib's packages: "
        f"undeclared {sorted(on_disk - set(MAY_IMPORT))}, gone {sorted(set(MAY_IMPORT) - on_disk)}"
    )


def test_the_table_points_one_way() -> None:
    declared: set[str] = set()
    for package, allowed in MAY_IMPORT.items():
        later = sorted(allowed - declared)
        assert not later, f"{package} may import {later}, declared after it (or itself): arrows must point up"
        declared.add(package)


def test_every_chalicelib_import_follows_the_table() -> None:
    found = every_import()
    assert len({imported.module for imported in found}) > 30  # the walk saw the modules
    wrong = violations(found)
    assert not wrong, "imports against the declared layering:\n" + "\n".join(wrong)


def test_imports_deferred_into_functions_are_held_to_the_table_too() -> None:
    # Two a cold start defers: the registry loads each type when first asked for, and only a
    # dry run loads the workflow's splitting into the API. Both are walked and checked.
    deferred = {(i.module, i.target) for i in every_import() if i.deferred}
    assert ("chalicelib.downloadtypes", "chalicelib.downloadtypes") in deferred, "the registry's loaders"
    assert ("chalicelib.api.dryrun", "chalicelib.workflow") in deferred, "dryrun.plan's segments"


def test_the_workflow_imports_neither_the_api_nor_the_triggers() -> None:
    # The arrow in so many words: owed effects and Step Functions control sit in workflow.
    targets = {package_of(i.target) for i in every_import() if package_of(i.module) == "workflow"}
    assert targets.isdisjoint({"api", "triggers"}), targets


def test_a_violation_names_the_module_the_line_and_the_import() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from chalicelib.core import clock\n"
        "from chalicelib import api\n"
        "if TYPE_CHECKING:\n"
        "    from chalicelib.triggers.cleanup import Report\n"
        "def late() -> None:\n"
        "    import chalicelib.api.downloads\n"
        "from . import effects\n"
        "from ..notify import dispatch\n"
        "from chalicelib.triggers.cleanup import run, Report\n"
    )
    found = imports_in(source, "chalicelib.workflow.steps", is_package=False)
    assert [i.deferred for i in found] == [False, False, False, True, False, False, False]
    assert [i.target for i in found] == [
        "chalicelib.core",
        "chalicelib.api",
        "chalicelib.triggers.cleanup",
        "chalicelib.api.downloads",
        "chalicelib.workflow",
        "chalicelib.notify",
        "chalicelib.triggers.cleanup",
    ]
    assert violations(found) == [
        "chalicelib.workflow.steps (line 3) imports chalicelib.api: workflow may import "
        "archive, core, downloadtypes, notify, runtime, s3, storage",
        "chalicelib.workflow.steps (line 5) imports chalicelib.triggers.cleanup: workflow may import "
        "archive, core, downloadtypes, notify, runtime, s3, storage",
        "chalicelib.workflow.steps (line 7) imports chalicelib.api.downloads: workflow may import "
        "archive, core, downloadtypes, notify, runtime, s3, storage",
        "chalicelib.workflow.steps (line 10) imports chalicelib.triggers.cleanup: workflow may import "
        "archive, core, downloadtypes, notify, runtime, s3, storage",
    ]
