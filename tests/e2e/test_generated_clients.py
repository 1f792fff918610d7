"""The OpenAPI document as integrators' tools take it, from the running local stack.

The document is fetched from `GET /openapi.json` of the stack `make run` starts (a subprocess
on free ports, as tests/e2e/test_local_stack.py starts it), then:
- Spectral's recommended ruleset (`spectral:oas`) finds no error and no warning;
- so does Redocly CLI's `recommended` ruleset (tools/node/redocly.yaml), but for the problems
  tools/node/.redocly.lint-ignore.yaml ignores, each where it is and said why; it runs with
  its telemetry off and every proxy variable pointing at a loopback listener that must see
  no connection (so nothing leaves the machine, and the test would say so);
- openapi-typescript generates its types and `tsc --strict` compiles code that uses them
  (tests/support/typescript/consumer.ts), and refuses code that breaks them;
- openapi-python-client generates a client with no warning, and that client, imported from a
  temporary directory and strict about statuses (`raise_on_unexpected_status`), drives a
  whole round trip: create with a link, poll to DONE, the URL and the file, links, the list,
  cancel, and every refusal parsed as its typed problem model.

The npm tools are tools/node's (package.json, package-lock.json; `npm ci` there, which
.ci/run and `make test` do). A missing tool fails the test, never skips it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from chalicelib.core import errors
from satchel_local.seed import tenant_sources
from tests.e2e.test_local_stack import PROJECT_DIR, LocalStack, aws, running_stack
from tests.support import buildgate

NODE_TOOLS = PROJECT_DIR / "tools" / "node"
SPECTRAL_RULESET = NODE_TOOLS / "spectral.yaml"
REDOCLY_CONFIG = NODE_TOOLS / "redocly.yaml"
REDOCLY_IGNORED = NODE_TOOLS / ".redocly.lint-ignore.yaml"
# Redocly's documented opt-outs: no usage data, no update check or notices (both would be
# requests to the internet).
REDOCLY_QUIET = {
    "REDOCLY_TELEMETRY": "off",
    "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true",
    "REDOCLY_SUPPRESS_NOTIFICATIONS": "true",
}
CONSUMER = PROJECT_DIR / "tests" / "support" / "typescript" / "consumer.ts"
PACKAGE = "satchel_api"  # the generated client's package name
META = ("--meta", "none")  # the package alone, no pyproject around it
MAX_ACTIVE = 3  # alice's quota in this stack: the 429 is a few creates away
DONE_TIMEOUT = 30.0
ACME_KEYS = sorted(tenant_sources("acme"))


def node_tool(name: str) -> str:
    tool = NODE_TOOLS / "node_modules" / ".bin" / name
    if not tool.exists():
        pytest.fail(f"{tool} is missing: run `npm ci` in {NODE_TOOLS} (make test and .ci/run do)")
    return str(tool)


def run(command: list[str], cwd: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **environment},
        check=False,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    directory = tmp_path_factory.mktemp("generated-clients")
    environment = {
        buildgate.GATE_VARIABLE: str(directory / "build-gate"),
        "SATCHEL_MAX_ACTIVE_PER_USER": str(MAX_ACTIVE),
    }
    with running_stack(directory, demo_rows=100, environment=environment) as started:
        yield started
        assert started.stop(signal.SIGINT) == 0, started.output()


@pytest.fixture(scope="module")
def document(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The document as the stack serves it, in a file of its own."""
    with urllib.request.urlopen(f"{stack.api}/openapi.json", timeout=30) as response:
        served = json.loads(response.read())
    path = tmp_path_factory.mktemp("document") / "openapi.json"
    path.write_text(json.dumps(served, indent=1), encoding="utf-8")
    return path


def test_spectral_recommended_ruleset_finds_nothing(document: Path) -> None:
    spectral = node_tool("spectral")
    linted = run(
        [spectral, "lint", str(document), "--ruleset", str(SPECTRAL_RULESET), "--format", "json", "--quiet"],
        document.parent,
    )
    findings = json.loads(linted.stdout or "[]")
    assert findings == [], json.dumps(findings, indent=1)
    assert linted.returncode == 0, linted.stderr


@contextlib.contextmanager
def outbound_witness() -> Iterator[tuple[dict[str, str], list[bytes]]]:
    """Proxy variables pointing at a loopback listener, and what reached it: a tool that sends
    anything out through its proxy-aware client connects here (and is refused), not outside."""
    seen: list[bytes] = []
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                with contextlib.suppress(OSError):
                    seen.append(connection.recv(4096) or b"(nothing sent)")
                    connection.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    proxy = f"http://127.0.0.1:{listener.getsockname()[1]}"
    environment = {name: proxy for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    try:
        yield {**environment, "NO_PROXY": "", "no_proxy": ""}, seen
    finally:
        stop.set()
        server.join()
        listener.close()


def test_redocly_recommended_ruleset_finds_nothing(document: Path, tmp_path: Path) -> None:
    redocly = node_tool("redocly")
    # The ignore file names the document relative to itself: all three side by side.
    shutil.copy(document, tmp_path / "openapi.json")
    shutil.copy(REDOCLY_CONFIG, tmp_path / REDOCLY_CONFIG.name)
    shutil.copy(REDOCLY_IGNORED, tmp_path / REDOCLY_IGNORED.name)
    command = [redocly, "lint", "openapi.json", "--config", REDOCLY_CONFIG.name, "--format", "json"]
    with outbound_witness() as (proxies, seen):
        linted = run(command, tmp_path, **REDOCLY_QUIET, **proxies)
    assert seen == [], f"Redocly tried to reach the network: {seen}"
    assert linted.stdout, linted.stderr
    report = json.loads(linted.stdout)
    findings = [problem for problem in report["problems"] if not problem.get("ignored")]
    assert findings == [], json.dumps(findings, indent=1)
    # The ignore file's one entry still applies: exactly one problem ignored.
    assert report["totals"] == {"errors": 0, "warnings": 0, "ignored": 1}, report["totals"]
    assert linted.returncode == 0, linted.stderr


def test_typescript_types_compile_and_catch_a_misuse(document: Path, tmp_path: Path) -> None:
    generated = run(
        # Properties with a default are optional in a request: the server fills them in.
        [
            node_tool("openapi-typescript"),
            str(document),
            "-o",
            "satchel.d.ts",
            "--default-non-nullable",
            "false",
        ],
        tmp_path,
    )
    assert generated.returncode == 0, generated.stderr
    shutil.copy(CONSUMER, tmp_path / "consumer.ts")
    tsc = [node_tool("tsc"), "--strict", "--noEmit", "--target", "es2022", "--module", "nodenext"]
    compiled = run([*tsc, "--moduleResolution", "nodenext", "consumer.ts"], tmp_path)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    # The types are real ones: a format the zip type does not have does not compile.
    misuse = CONSUMER.read_text(encoding="utf-8").replace('format: "tar.gz"', 'format: "rar"')
    (tmp_path / "consumer.ts").write_text(misuse, encoding="utf-8")
    refused = run([*tsc, "--moduleResolution", "nodenext", "consumer.ts"], tmp_path)
    assert refused.returncode != 0
    assert '"rar"' in refused.stdout, refused.stdout


@pytest.fixture(scope="module")
def client_package(document: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """openapi-python-client's client, generated with no warning and imported."""
    root = tmp_path_factory.mktemp("python-client")
    generator = Path(sys.executable).with_name("openapi-python-client")
    assert generator.exists(), f"{generator} is missing: requirements-dev.txt pins openapi-python-client"
    generated = run(
        [str(generator), "generate", "--path", str(document), "--output-path", str(root / PACKAGE), *META],
        root,
        PATH=f"{generator.parent}{os.pathsep}{os.environ.get('PATH', '')}",  # it formats with ruff
    )
    output = generated.stdout + generated.stderr
    assert generated.returncode == 0, output
    assert "Generating" in output
    for warning in ("WARNING", "Unable to", "Cannot parse", "duplicate", "Skipping", "not in PATH"):
        assert warning not in output, output
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [name for name in sys.modules if name == PACKAGE or name.startswith(PACKAGE + ".")]:
            del sys.modules[name]


class Api:
    """The generated client's modules, as an integrator imports them."""

    def __init__(self, package: ModuleType, stack: LocalStack) -> None:
        self.models = importlib.import_module(f"{PACKAGE}.models")
        self.downloads = {
            name: importlib.import_module(f"{PACKAGE}.api.downloads.{name}")
            for name in (
                "create_download",
                "get_download",
                "get_download_url",
                "list_downloads",
                "delete_download",
            )
        }
        self.links = {
            name: importlib.import_module(f"{PACKAGE}.api.links.{name}")
            for name in (
                "create_download_link",
                "list_download_links",
                "read_link",
                "claim_link",
                "revoke_link",
            )
        }
        self.stack = stack
        self.package = package

    def client(self, user: str | None = "alice") -> Any:
        if user is None:
            return self.package.Client(base_url=self.stack.api, raise_on_unexpected_status=True)
        return self.package.AuthenticatedClient(
            base_url=self.stack.api, token=self.stack.key(user), raise_on_unexpected_status=True
        )

    def zip_request(self, keys: list[str], **fields: Any) -> Any:
        return self.models.ZipDownloadRequest(type_="zip", params=self.models.ZipParams(keys=keys), **fields)

    def create(self, user: str, keys: list[str], **fields: Any) -> Any:
        return self.downloads["create_download"].sync_detailed(
            client=self.client(user), body=self.zip_request(keys, **fields)
        )

    def wait(self, user: str, download_id: str) -> Any:
        deadline = time.monotonic() + DONE_TIMEOUT
        while True:
            download = self.downloads["get_download"].sync(client=self.client(user), download_id=download_id)
            assert isinstance(download, self.models.ZipDownload), download
            if download.state.value not in ("PENDING", "RUNNING"):
                return download
            assert time.monotonic() < deadline, f"still {download.state.value} after {DONE_TIMEOUT} s"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def api(client_package: ModuleType, stack: LocalStack) -> Api:
    return Api(client_package, stack)


def test_round_trip_with_the_generated_client(api: Api) -> None:
    models = api.models
    created = api.create("alice", ACME_KEYS[:2], link=models.LinkRequest(max_uses=2))
    assert created.status_code == 202, created.content
    assert isinstance(created.parsed, models.CreatedZipDownload)
    assert isinstance(created.parsed.link, models.Link)
    assert created.parsed.link.max_uses == 2
    assert created.headers["RateLimit-Policy"].startswith(f'"user";q={MAX_ACTIVE};')
    download_id = created.parsed.id

    done = api.wait("alice", download_id)
    assert done.state == models.DownloadState.DONE
    assert isinstance(done.params, models.ZipDownloadParams)
    assert done.created_at.tzinfo is not None  # format: date-time, parsed as a datetime
    assert isinstance(done.artifact, models.Artifact)

    url = api.downloads["get_download_url"].sync_detailed(client=api.client(), download_id=download_id)
    assert isinstance(url.parsed, models.FileUrl)
    assert url.headers["Sunset"].endswith(" GMT")
    with urllib.request.urlopen(url.parsed.url, timeout=30) as response:
        assert response.read()[:2] == b"PK"

    link = api.links["create_download_link"].sync(
        client=api.client(), download_id=download_id, body=models.LinkRequest(max_uses=1)
    )
    assert isinstance(link, models.Link)
    listed = api.links["list_download_links"].sync(client=api.client(), download_id=download_id)
    assert isinstance(listed, models.LinkList)
    assert [item.max_uses for item in listed.items] == [2, 1]
    facts = api.links["read_link"].sync(client=api.client(None), token=link.token)
    assert isinstance(facts, models.LinkFacts)
    assert (facts.download_id, facts.uses_left) == (download_id, 1)
    json_client = api.client(None).with_headers({"Accept": "application/json"})
    claim = api.links["claim_link"].sync(client=json_client, token=link.token)
    assert isinstance(claim, models.LinkClaim)
    revoked = api.links["revoke_link"].sync_detailed(client=api.client(), token=link.token)
    assert revoked.status_code == 204
    gone = api.links["read_link"].sync_detailed(client=json_client, token=link.token)
    assert gone.status_code == 410
    assert isinstance(gone.parsed, models.LinkGoneError)
    assert (gone.parsed.code, gone.parsed.reason.value) == ("LinkGone", "revoked")
    assert gone.headers["Content-Type"] == "application/problem+json"

    page = api.downloads["list_downloads"].sync(client=api.client(), limit=100)
    assert isinstance(page, models.DownloadPage)
    assert download_id in [item.id for item in page.items]

    deleted = api.downloads["delete_download"].sync_detailed(client=api.client(), download_id=download_id)
    assert deleted.status_code == 204
    assert api.wait("alice", download_id).state == models.DownloadState.EXPIRED


def test_a_running_download_is_cancelled_and_refusals_are_typed_problems(api: Api) -> None:
    models, alice = api.models, api.client()
    lambdas = aws(api.stack, "lambda")
    gate = api.stack.state_file.parent / "build-gate"  # the stack's GATE_VARIABLE
    failed = api.create("alice", ["acme/no/such/object.csv"])  # before the gate: it runs, and fails
    assert failed.status_code == 202
    assert api.wait("alice", failed.parsed.id).state == models.DownloadState.FAILED
    buildgate.hold(lambdas, gate)
    try:
        held = [api.create("alice", ACME_KEYS[:1]) for _ in range(MAX_ACTIVE)]
        assert [reply.status_code for reply in held] == [202] * MAX_ACTIVE
        assert held[-1].headers["RateLimit"].startswith('"user";r=0,')
        refusals = typed_refusals(api, held[0].parsed, failed.parsed.id)
        cancelled = api.downloads["delete_download"].sync_detailed(
            client=alice, download_id=held[0].parsed.id
        )
        assert cancelled.status_code == 202
        assert isinstance(cancelled.parsed, models.ZipDownload)
        assert cancelled.parsed.state == models.DownloadState.CANCELLED
    finally:
        buildgate.release(gate)
        buildgate.restore(lambdas)
    for reply in held[1:]:
        api.wait("alice", reply.parsed.id)

    problems = {status: problem for status, (problem, _) in refusals.items()}
    expected = {
        400: ("Error", "InvalidCursor"),
        401: ("Error", "Unauthorized"),
        403: ("Error", "Forbidden"),
        404: ("Error", "DownloadNotFound"),
        409: ("NotDoneError", "DownloadNotReady"),
        422: ("Error", "InvalidParams"),
        425: ("LinkNotReadyError", "LinkNotReady"),
        429: ("QuotaError", "QuotaExceeded"),
    }
    assert {status: (type(p).__name__, p.code) for status, p in problems.items()} == expected
    for status, (problem, headers) in refusals.items():
        assert problem.status == status
        assert problem.type_ == f"https://satchel.dev/problems/{problem.code}"
        assert problem.detail == problem.message
        assert headers["Content-Type"] == "application/problem+json", status
        if status in (425, 429):
            assert int(headers["Retry-After"]) >= 1, status
    assert problems[409].state == models.DownloadState.FAILED
    assert problems[425].state == models.DownloadState.PENDING
    assert (problems[429].scope.value, problems[429].limit) == ("user", MAX_ACTIVE)
    # API Gateway's throttle answers createDownload's 429 too (its Gateway Response, which
    # tests/deploy/test_packaged_contract.py holds to be this problem): the same model reads it.
    throttled = models.QuotaError.from_dict(errors.problem("Throttled", 429, "Too Many Requests"))
    assert (throttled.code, throttled.status, throttled.message) == ("Throttled", 429, "Too Many Requests")
    assert [type(detail).__name__ for detail in (throttled.scope, throttled.limit)] == ["Unset", "Unset"]
    assert refusals[429][1]["RateLimit"].startswith('"user";r=0,')


def typed_refusals(api: Api, pending: Any, failed_id: str) -> dict[int, tuple[Any, Any]]:
    """Each refusal the round trip can meet, as the generated client parses it, with its headers."""
    models, alice = api.models, api.client()
    bobs = api.create("bob", ["acme/reports/2024/q1.csv"])
    link = api.links["create_download_link"].sync(client=alice, download_id=pending.id)
    answers = {
        400: api.downloads["list_downloads"].sync_detailed(client=alice, cursor="not-a-cursor"),
        401: api.downloads["list_downloads"].sync_detailed(client=api.client(None)),
        403: api.downloads["get_download"].sync_detailed(client=alice, download_id=bobs.parsed.id),
        404: api.downloads["get_download"].sync_detailed(client=alice, download_id="0" * 32),
        409: api.downloads["get_download_url"].sync_detailed(client=alice, download_id=failed_id),
        422: api.downloads["create_download"].sync_detailed(
            client=alice, body=api.zip_request(ACME_KEYS[:1], expires_in=1)
        ),
        425: api.links["read_link"].sync_detailed(client=api.client(None), token=link.token),
        429: api.create("alice", ACME_KEYS[:1]),
    }
    assert isinstance(link, models.Link)
    return {status: (reply.parsed, reply.headers) for status, reply in answers.items()}
