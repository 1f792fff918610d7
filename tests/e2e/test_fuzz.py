"""Fuzz every operation of the OpenAPI document against the whole local stack, over HTTP.

The stack is the one `make run` starts (moto's server, the real state machine and
handlers, the Chalice app), started in-process once for this module on ports the OS
picks. Schemathesis generates requests from the document (valid and invalid ones, in its
examples, coverage and fuzzing phases); every answer must be no 5xx and must be what the document
says (status, content type, headers, body); invalid requests must be refused, and a
secured operation must refuse a request without a key.

A stateful run follows the document's links (list, read, delete, link, follow, revoke) from
alice's real downloads. Every answer, the local server's own included, carries the headers
that keep tokens and URLs out of caches and Referers.

Random ids only ever find nothing, so most valid cases get real ones instead: alice's
DONE and FAILED downloads, bob's (403 for alice), dave's (another tenant: 404), new ones
still running, and live links. The run is bounded and derandomized: the same cases on
every run.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError

import hypothesis
import pytest
import schemathesis
from schemathesis import Case as GenericCase
from schemathesis.checks import CheckFunction
from schemathesis.config import HealthCheck
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from chalicelib.api import openapi
from chalicelib.core import clients
from satchel_local.seed import DEMO_KEYS
from satchel_local.server import LocalStack, Options

Case = GenericCase[APIOperation[Any, Any, Any, Any]]
EXAMPLES_PER_OPERATION = 50  # fuzzing phase; the coverage phase adds its own boundary cases
STATEFUL_SCENARIOS = 40
DONE_TIMEOUT = 30.0
DOCUMENT = openapi.document()

schema = schemathesis.openapi.from_dict(openapi.document())  # a copy of its own to load
schema.config.generation.update(
    max_examples=EXAMPLES_PER_OPERATION,
    deterministic=True,  # derandomized: the same cases on every run
    database="none",
    with_security_parameters=False,  # the test sends alice's key itself
)
schema.config.update(suppress_health_check=[HealthCheck.all])  # slow by nature: HTTP and a workflow
# 413 is a refusal too: the document bounds the number of keys by the stage's limit
# (maxItems), which the server enforces as 413 TooManyKeys, like a body over 256 KiB.
_REJECTION = schema.config.checks.negative_data_rejection
schema.config.checks.negative_data_rejection = type(_REJECTION)(
    expected_statuses=[*_REJECTION.expected_statuses, "413"]
)
# Reproductions in full: the keys are throwaway ones of an emulator, and "keys" is a field name.
schema.config.output.sanitization.update(enabled=False)
# The coverage phase also sends every method a path lacks (TRACE and QUERY included): the
# local stack answers them 405 with `Allow` (satchel_local/server.py's RequestHandler).

CHECKS: list[CheckFunction] = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
    unsupported_method,
]

FRESH = 8  # choices are 0 (keep the generated value), 1..7 (a real one), FRESH (a new one)


@dataclass(frozen=True)
class Target:
    """The running stack, and real things in it to aim at."""

    api_url: str
    moto_url: str
    api_keys: dict[str, str]
    downloads: tuple[str, ...]  # alice's DONE and FAILED ones, bob's (403), dave's (404)
    deletable: tuple[str, ...]  # the same, but another DONE one: DELETE expires it
    links: tuple[str, ...]  # alice's, bob's
    revocable: tuple[str, ...]  # the same, but another of alice's: DELETE revokes it
    cursor: str  # a real next_cursor of alice's

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_keys['alice']}"}

    def new_download(self) -> str:
        """A new download of alice's, most likely still running (her DONE one past her quota)."""
        return str(self._create(link=False)["id"])

    def new_link(self) -> str:
        """A link to a new download of alice's, most likely not DONE yet."""
        return str(self._create(link=True)["link"]["token"])

    def _create(self, link: bool) -> dict[str, Any]:
        body = {"type": "zip", "params": {"keys": [DEMO_KEYS[0]]}, **({"link": {}} if link else {})}
        status, created = call(self.api_url, "POST", "/downloads", self.api_keys["alice"], body)
        if status == 429:
            return {"id": self.downloads[0], "link": {"token": self.links[0]}}
        assert status == 202, created
        return dict(created)


def call(
    api_url: str, method: str, path: str, key: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """One request; `body` is sent as JSON, or as it is when it is a str."""
    data = body if isinstance(body, str) else json.dumps(body) if body is not None else None
    request = urllib.request.Request(
        api_url + path,
        data=data.encode() if data is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", **(headers or {})},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b"null")


def finished_download(api_url: str, key: str, keys: list[str]) -> str:
    status, created = call(api_url, "POST", "/downloads", key, {"type": "zip", "params": {"keys": keys}})
    assert status == 202, created
    deadline = time.monotonic() + DONE_TIMEOUT
    while True:
        status, download = call(api_url, "GET", f"/downloads/{created['id']}", key)
        assert status == 200, download
        if download["state"] not in ("PENDING", "RUNNING"):
            return str(download["id"])
        assert time.monotonic() < deadline, f"still {download['state']} after {DONE_TIMEOUT} s"
        time.sleep(0.1)


def link_to(api_url: str, key: str, download_id: str) -> str:
    status, link = call(api_url, "POST", f"/downloads/{download_id}/links", key, {"max_uses": 1000})
    assert status == 201, link
    return str(link["token"])


def make_target(api_url: str, moto_url: str, keys: dict[str, str]) -> Target:
    """Make the real downloads and links the cases aim at."""
    alice, bob, dave = keys["alice"], keys["bob"], keys["dave"]
    done = finished_download(api_url, alice, list(DEMO_KEYS))
    to_delete = finished_download(api_url, alice, list(DEMO_KEYS))
    failed = finished_download(api_url, alice, ["acme/no/such/object.csv"])
    bobs = finished_download(api_url, bob, ["acme/reports/2024/q1.csv"])
    daves = finished_download(api_url, dave, ["globex/plans/roadmap.md"])
    status, page = call(api_url, "GET", "/downloads?limit=1", alice)
    assert status == 200, page
    bobs_link = link_to(api_url, bob, bobs)
    return Target(
        api_url=api_url,
        moto_url=moto_url,
        api_keys=keys,
        downloads=(done, failed, bobs, daves),
        deletable=(to_delete, failed, bobs, daves),
        links=(link_to(api_url, alice, done), bobs_link),
        revocable=(link_to(api_url, alice, done), bobs_link),
        cursor=page["next_cursor"],
    )


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    saved_environment = dict(os.environ)  # start() points this process at the emulator
    state_file: Path = tmp_path_factory.mktemp("fuzz") / "satchel-local.json"
    local = LocalStack(Options(port=0, moto_port=0, state_file=state_file))
    try:
        local.start()
        keys = {name: user.api_key for name, user in local.users.items()}
        yield make_target(local.api_url, local.s3_endpoint, keys)
    finally:
        local.stop()
        os.environ.clear()
        os.environ.update(saved_environment)
        clients.reset()


@pytest.fixture(autouse=True)
def emulator_environment(aws_environment: None, target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    """conftest's aws_environment unsets AWS_ENDPOINT_URL; the stack's handlers need it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", target.moto_url)


def choose(generated: Any) -> int:
    """A choice in 0..FRESH made by a generated value: the same case chooses alike on every run."""
    return zlib.crc32(json.dumps(generated, sort_keys=True, default=repr).encode()) % (FRESH + 1)


def real(pool: tuple[str, ...], choice: int, fresh: Callable[[], str]) -> str | None:
    """None (keep the generated value), a new one, or one from the pool."""
    if choice == 0:
        return None
    return fresh() if choice == FRESH else pool[(choice - 1) % len(pool)]


def aim(case: Case, target: Target) -> None:
    """Put real ids, tokens, cursors and sources into most valid cases; invalid ones stay as they are."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    deleting = case.method.upper() == "DELETE"
    path = case.path_parameters or {}
    if "download_id" in path:
        pool = target.deletable if deleting else target.downloads
        path["download_id"] = (
            real(pool, choose(path["download_id"]), target.new_download) or path["download_id"]
        )
    if "token" in path:
        pool = target.revocable if deleting else target.links
        path["token"] = real(pool, choose(path["token"]), target.new_link) or path["token"]
    if case.query and "cursor" in case.query and choose(case.query["cursor"]) % 2:
        case.query["cursor"] = target.cursor
    zipped = isinstance(case.body, dict) and case.body.get("type") == "zip"
    params = case.body.get("params") if isinstance(case.body, dict) else None
    if zipped and isinstance(params, dict) and choose(params) % 4:  # a real source: it may really start
        params["keys"] = [DEMO_KEYS[choose(params) % len(DEMO_KEYS)]]


def secured(case: Case) -> bool:
    return bool(case.operation.definition.raw.get("security"))


@schema.parametrize()
def test_no_server_errors_and_answers_match_the_document(case: Case, target: Target) -> None:
    aim(case, target)
    headers = target.auth() if secured(case) else None
    case.call_and_validate(base_url=target.api_url, headers=headers, checks=CHECKS, allow_redirects=False)


# Requests that answered 500 when they were found (by the fuzz, or by hand along the same
# lines): kept as fixed probes, since generation need not come back to them.
_SOURCE = {"type": "zip", "params": {"keys": [DEMO_KEYS[0]]}}
_DEEP = "[" * 100_000 + "]" * 100_000  # 200 kB: under the body limit, past json's recursion limit
HOSTILE: dict[str, tuple[str, str, Any, dict[str, str]]] = {
    "integral float expires_in": ("POST", "/downloads", {**_SOURCE, "expires_in": 3600.0}, {}),
    "integral float link.max_uses": ("POST", "/downloads", {**_SOURCE, "link": {"max_uses": 2.0}}, {}),
    "integral float max_uses of a link": ("POST", "/downloads/{done}/links", {"max_uses": 2.0}, {}),
    "lone surrogate in a key": (
        "POST",
        "/downloads",
        '{"type": "zip", "params": {"keys": ["acme/\\ud800"]}}',
        {},
    ),
    "lone surrogate with an Idempotency-Key": (
        "POST",
        "/downloads",
        json.dumps({**_SOURCE, "filename": "a\ud800.zip"}),
        {"Idempotency-Key": "surrogate"},
    ),
    "deeply nested body": ("POST", "/downloads", _DEEP, {}),
    "deeply nested link body": ("POST", "/downloads/{done}/links", _DEEP, {}),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_request_is_refused_not_a_server_error(name: str, target: Target) -> None:
    method, path, body, headers = HOSTILE[name]
    path = path.format(done=target.downloads[0])
    status, answer = call(target.api_url, method, path, target.api_keys["alice"], body, headers)
    assert status < 500, answer
    documented = DOCUMENT["paths"][path.replace(target.downloads[0], "{download_id}")][method.lower()]
    assert str(status) in documented["responses"], answer


SECURITY_HEADERS = {
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}


def raw_call(
    target: Target, method: str, path: str, key: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request as it is, answer and headers as they come (no redirects followed)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    request = urllib.request.Request(
        target.api_url + path,
        headers={"Authorization": f"Bearer {key}"} if key else {},
        method=method,
    )
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except HTTPError as error:
        with error:
            return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("TRACE", "/health", "GET"),
        ("TRACE", "/downloads", "GET, POST"),
        ("QUERY", "/downloads/{done}", "DELETE, GET"),
        ("PUT", "/health", "GET"),
        ("PATCH", "/links/{link}", "DELETE, GET, HEAD, POST"),
        ("HEAD", "/downloads/{done}/links", "GET, POST"),
    ],
)
def test_a_method_no_route_has_is_405_with_allow(
    target: Target, method: str, path: str, allowed: str
) -> None:
    path = path.format(done=target.downloads[0], link=target.links[0])
    status, headers, body = raw_call(target, method, path, target.api_keys["alice"])
    assert status == 405, body
    assert headers["allow"] == allowed
    assert headers["content-type"] == "application/problem+json"
    if method == "HEAD":
        assert body == b""
    else:
        answer = json.loads(body)
        assert answer["Code"] == "MethodNotAllowed"
        assert method in answer["Message"]


def test_the_local_servers_every_answer_carries_the_security_headers(target: Target) -> None:
    alice, done, link = target.api_keys["alice"], target.downloads[0], target.links[0]
    answers = {
        "200": raw_call(target, "GET", "/health"),
        "302": raw_call(target, "GET", f"/downloads/{done}/file", alice),
        "200 link": raw_call(target, "GET", f"/links/{link}"),
        "303 claim": raw_call(target, "POST", f"/links/{link}"),
        "200 links": raw_call(target, "GET", f"/downloads/{done}/links", alice),
        "401": raw_call(target, "GET", "/downloads"),
        "403": raw_call(target, "GET", "/downloads", "not-a-key"),
        "404 unknown path": raw_call(target, "GET", "/nowhere"),
        "404": raw_call(target, "GET", "/downloads/" + "0" * 32, alice),
        "405": raw_call(target, "TRACE", "/health"),
    }
    for what, (status, headers, body) in answers.items():
        assert status == int(what.split()[0]), (what, status, body)
        for name, value in SECURITY_HEADERS.items():
            assert headers.get(name) == value, (what, name, headers)


# Last: its scenarios may delete alice's downloads, which the cases above aim at.
StatefulWorkflow = schema.as_state_machine()


def test_stateful_scenarios_along_the_documents_links(target: Target) -> None:
    operations: list[str] = []

    class Workflow(StatefulWorkflow):  # type: ignore[misc,valid-type]
        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            operations.append(case.operation.label)
            headers = target.auth() if secured(case) else {}
            return {"base_url": target.api_url, "headers": headers, "allow_redirects": False}

        def validate_response(self, response: Any, case: Case, **kwargs: Any) -> None:
            case.validate_response(
                response, checks=CHECKS, transport_kwargs=kwargs or None, recorder=self.recorder
            )

    Workflow.run(
        settings=hypothesis.settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=6,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
    )
    # The scenarios really went along the links, past the list they start from.
    assert len(operations) > STATEFUL_SCENARIOS, operations
    assert len(set(operations)) >= 4, sorted(set(operations))
