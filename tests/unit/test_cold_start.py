"""A cold start is cheap, and each Lambda function pays only for its own code.

Importing app.py opens no connection, builds no AWS client and loads only the wiring: the
core vocabulary and the few constants the routes and rules are declared with. Every function
imports app.py whole, so everything else is imported by the handler that needs it, when it
first runs: the API never loads the workflow's steps, their build machinery or the archive
writers, nor do the steps that only record and clean up (Finalize, Fail) load the machinery;
the workflow never loads the API. What a handler loads is read from its own imports and
those of the app.py helpers it calls (the AST), executed in a fresh interpreter after
`import app`. Types are loaded by the registry when first asked for
(chalicelib/downloadtypes/__init__.py), so no handler's imports load one.

(`make bench` measures the import time itself: docs/performance.md, "Cold start".)
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app.py"

_PROBE = """
import socket, sys

def refuse(*args, **kwargs):
    raise AssertionError("importing app opened a connection")

socket.socket.connect = refuse
socket.create_connection = refuse
import app
from chalicelib.core import clients

built = clients._client.cache_info().currsize + clients._table.cache_info().currsize
heavy = ("isal", "zlib_ng", "jsonschema", "moto", "joserfc")
deferred = sorted(name for name in heavy if name in sys.modules)
print(built, ",".join(deferred))
"""

# What `import app` may load of chalicelib besides core (everyone's vocabulary): the modules
# whose names declare the routes, rules and payload types, and what they import.
WIRING = frozenset(
    {
        "chalicelib",
        "chalicelib.api",
        "chalicelib.api.http",  # error_response, security_headers: every route is wrapped in them
        "chalicelib.api.tenants",  # SECRET_PATH, a route's path
        "chalicelib.triggers",
        "chalicelib.triggers.senders",  # the request rules' detail types and source prefix
        "chalicelib.workflow",
        "chalicelib.workflow.payloads",  # the steps' TypedDicts (tests/unit/workflow/test_payloads.py)
    }
)

# Libraries only some functions need.
LIBRARIES = ("isal", "zlib_ng", "rehashes", "orjson", "jsonschema", "joserfc", "aws_lambda_powertools")

# What builds artifacts: only the steps that build load it.
BUILD_MACHINERY = frozenset(
    {
        "chalicelib.archive.assembly",
        "chalicelib.archive.deflate",
        "chalicelib.archive.integrity",
        "chalicelib.archive.tarwriter",
        "chalicelib.archive.zipwriter",
        "chalicelib.downloadtypes.archive",
        "chalicelib.downloadtypes.archiveoptions",
        "chalicelib.downloadtypes.audit",
        "chalicelib.downloadtypes.export",
        "chalicelib.downloadtypes.listing",
        "chalicelib.downloadtypes.rowformats",
        "chalicelib.s3.multipart",
        "chalicelib.s3.sources",
        "chalicelib.workflow.digest",
        "chalicelib.workflow.progress",
        "chalicelib.workflow.rowruns",
        "chalicelib.workflow.runs",
        "chalicelib.workflow.segments",
        "chalicelib.workflow.streamruns",
        "rehashes",
        "zlib_ng",
        "isal",
    }
)


def _loaded_by(statements: str) -> set[str]:
    """The modules a fresh interpreter holds after `statements`."""
    code = f"import sys, json\n{statements}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


@dataclass(frozen=True)
class EntryPoint:
    name: str  # the handler's name in app.py
    kind: str  # "api" (routes, the authorizer), "trigger" (queues, rules, schedule) or "step"
    imports: tuple[str, ...]  # its import statements and those of the helpers it calls, as source


_KINDS = {
    "route": "api",
    "authorizer": "api",
    "on_sqs_message": "trigger",
    "on_cw_event": "trigger",
    "schedule": "trigger",
    "lambda_function": "step",
}


def entry_points() -> list[EntryPoint]:
    """Every function app.py registers, with what it imports when it first runs."""
    tree = ast.parse(APP.read_text(encoding="utf-8"))
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}

    def imports_of(name: str, seen: set[str]) -> list[str]:
        # Its own imports, and those of the app.py functions it calls (or passes on, as a lambda).
        seen.add(name)
        found: list[str] = []
        for node in ast.walk(functions[name]):
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.append(ast.unparse(node))
            elif isinstance(node, ast.Name) and node.id in functions and node.id not in seen:
                found += imports_of(node.id, seen)
        return found

    found = []
    for name, node in functions.items():
        for decorator in node.decorator_list:
            call = decorator.func if isinstance(decorator, ast.Call) else decorator
            if isinstance(call, ast.Attribute) and ast.unparse(call.value) == "app":
                imports = tuple(dict.fromkeys(imports_of(name, set())))
                found.append(EntryPoint(name, _KINDS[call.attr], imports))
    return found


# The steps that build (or plan, or hash) an artifact; Finalize and Fail only record and clean up.
BUILDING_STEPS = frozenset({"prepare", "build", "build_segment", "assemble", "digest"})


def breaches(entry: EntryPoint, loaded: set[str]) -> list[str]:
    """What the entry point loaded that it must not (beyond `import app`)."""
    wrong = set()
    if entry.kind == "step":  # the workflow never pays for the API or the triggers
        wrong |= {name for name in loaded if name.startswith(("chalicelib.api.", "chalicelib.triggers."))}
    else:  # nor the API for the workflow
        wrong |= loaded & {"chalicelib.workflow.steps"}
    if entry.name not in BUILDING_STEPS:
        wrong |= loaded & BUILD_MACHINERY
    return sorted(wrong)


def test_importing_the_app_connects_nowhere_and_defers_clients_and_the_deflate_engine() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"]  # no client built; deflate and jsonschema not loaded


def test_importing_the_app_loads_only_the_wiring() -> None:
    loaded = _loaded_by("import app")
    ours = {name for name in loaded if name.split(".")[0] == "chalicelib"}
    beyond = sorted(name for name in ours - WIRING if not name.startswith("chalicelib.core"))
    assert not beyond, f"import app loads {beyond}: import them in the handlers that use them"
    assert "chalicelib.runtime" not in loaded
    assert sorted(name for name in LIBRARIES if name in loaded) == []


def test_the_walk_finds_every_kind_of_entry_point_and_its_imports() -> None:
    entries = {entry.name: entry for entry in entry_points()}
    assert {entry.kind for entry in entries.values()} == {"api", "trigger", "step"}
    assert len(entries) > 30
    # Its own import, and the helpers' (caller, current_runtime) it reaches.
    assert "from chalicelib.workflow import steps" in entries["build"].imports
    assert "from chalicelib.api import auth" in entries["get_download"].imports
    assert "from chalicelib.runtime import Runtime" in entries["get_download"].imports
    # Through _create_download, passed on in a lambda.
    assert "from chalicelib.api import downloads, dryrun" in entries["create_download"].imports


def test_a_breach_is_named_for_the_kind_of_entry_point() -> None:
    api = EntryPoint("get_download", "api", ())
    building = EntryPoint("build", "step", ())
    failing = EntryPoint("fail", "step", ())
    loaded = {"chalicelib.workflow.runs", "chalicelib.api.links", "chalicelib.workflow.steps", "zlib_ng"}
    assert breaches(api, loaded) == ["chalicelib.workflow.runs", "chalicelib.workflow.steps", "zlib_ng"]
    assert breaches(building, loaded) == ["chalicelib.api.links"]
    assert breaches(failing, loaded) == ["chalicelib.api.links", "chalicelib.workflow.runs", "zlib_ng"]
    steps = {entry.name for entry in entry_points() if entry.kind == "step"}
    assert steps > BUILDING_STEPS


def test_each_entry_point_loads_only_its_own_code() -> None:
    entries = entry_points()
    with ThreadPoolExecutor(max_workers=4) as pool:
        base = pool.submit(_loaded_by, "import app")
        loads = list(pool.map(lambda entry: _loaded_by("import app\n" + "\n".join(entry.imports)), entries))
    wrong = {
        entry.name: found
        for entry, loaded in zip(entries, loads, strict=True)
        if (found := breaches(entry, loaded - base.result()))
    }
    assert not wrong, f"entry points that load what another function needs: {wrong}"


# The zip type's build machinery. Its declaration (chalicelib/downloadtypes/ziptype.py: name,
# params schema, checks, plan) is what the API loads to create a zip; the builders it hands a
# Build load these when first called.
ZIP_BUILD = (
    "chalicelib.downloadtypes.archive",
    "chalicelib.downloadtypes.archiveoptions",
    "chalicelib.archive.zipwriter",
    "chalicelib.archive.deflate",
    "chalicelib.archive.integrity",
    "chalicelib.archive.tarwriter",
    "chalicelib.s3.sources",
)

# The API's create, as far as it goes without a store: the request checked (the type's schema
# and checks), the download made from it (its file's format and name), and what a create asks
# of the type besides (which way it would be built, its description), for each way one is built.
_CREATE_A_ZIP = """
from chalicelib.api import downloads, requests
from chalicelib.core.models import Principal
from chalicelib.core.settings import Settings

settings = Settings.from_env({
    "SATCHEL_TABLE": "t",
    "SATCHEL_ARTIFACT_BUCKET": "a",
    "SATCHEL_SOURCE_BUCKET": "s",
    "SATCHEL_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:m",
})
alice = Principal("acme", "alice")
ways = {
    "segments": {"keys": ["acme/a.txt"], "compression": "store"},
    "stream": {"prefixes": ["acme/logs/"], "format": "tar.gz", "compression_level": 0},
    "survey": {"keys": ["acme/a.txt"], "manifest": True, "on_missing": "skip"},
}
for way, params in ways.items():
    request = requests.create_request(settings, alice, {"type": "zip", "params": params})
    download = downloads.new_download(alice, request, "d0123456789abcdef")
    kind = request.kind
    assert download.filename == "zip-d0123456789a" + kind.artifact_format(download.params).extension
    built = {"segments": kind.can_segment, "stream": kind.can_stream, "survey": kind.can_survey}
    assert [name for name, can in built.items() if can(download.params)] == [way], way
    kind.describe()
"""

# Build's first call to the zip type's builders: a plain zip's segment plan, as runs.py calls
# it (the pieces are a generator: nothing is read until they are written, so no runtime).
_BUILD_A_ZIP = """
from chalicelib import downloadtypes
from chalicelib.core.models import Download, State

download = Download(
    id="d", type="zip", params={"keys": ["acme/a.txt"]}, filename="d.zip", tenant="acme",
    user_id="alice", state=State.RUNNING, created_at="2026-01-01T00:00:00.000Z", retention_seconds=60,
)
kind = downloadtypes.get("zip")
assert kind.segments is not None and kind.segments.accepts(download.params)
built = kind.segments.build(None, download, iter(()), None)
assert built.records() == [] and built.carried() is None
"""


def test_creating_a_zip_loads_none_of_its_build_machinery_and_building_one_loads_it() -> None:
    created = _loaded_by("import app\n" + _CREATE_A_ZIP)
    assert "chalicelib.downloadtypes.ziptype" in created
    assert sorted(name for name in ZIP_BUILD if name in created) == []
    assert not created & BUILD_MACHINERY
    built = _loaded_by("import app\n" + _BUILD_A_ZIP)
    assert sorted(name for name in ZIP_BUILD if name not in built) == []
