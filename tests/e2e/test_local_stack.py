"""End to end: `python -m satchel_local` started as a developer starts it, then driven over
real HTTP exactly as the manual's examples (docs/examples/) do, then stopped with Ctrl-C.

The stack runs on ports the OS picks (`--port 0 --moto-port 0`, no race for a "free"
port) and writes its state file into the test's temporary directory, never over the
developer's .satchel-local.json. The file appears only once the stack is ready.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import http.server
import io
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlparse

import boto3
import pytest
from botocore.exceptions import ClientError
from standardwebhooks import Webhook

from chalicelib.core import clock
from chalicelib.core.settings import INTEGER_VARIABLES
from chalicelib.storage.secrets import PlaintextCache, WebhookSecrets
from satchel_local import demodata, seed
from satchel_local.seed import tenant_sources
from satchel_local.stack import MAX_RECEIVE_COUNT, VISIBILITY_TIMEOUT_SECONDS, webhook_secrets_alias
from tests.support.stack import Reply

PROJECT_DIR = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120.0  # seeding 100,000 rows on a busy 2-core machine
DONE_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
TERMINAL = {"DONE", "FAILED", "CANCELLED", "EXPIRED"}


class _KeepRedirects(urllib.request.HTTPRedirectHandler):
    """Hand 3xx answers back as they are: the test checks the 302 itself."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_KeepRedirects)


def call(
    method: str, url: str, api_key: str | None = None, body: Any = None, extra: dict[str, str] | None = None
) -> Reply:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    headers.update(extra or {})
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with _opener.open(request, timeout=30) as response:
            return Reply(response.status, dict(response.headers.items()), response.read())
    except HTTPError as error:  # urllib raises for every status >= 300; the test wants them all
        with error:
            return Reply(error.code, dict(error.headers.items()), error.read())


def call_raw(method: str, url: str, data: bytes, headers: dict[str, str]) -> Reply:
    """A request with a body as it is (a form's), not JSON."""
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with _opener.open(request, timeout=30) as response:
            return Reply(response.status, dict(response.headers.items()), response.read())
    except HTTPError as error:
        with error:
            return Reply(error.code, dict(error.headers.items()), error.read())


@dataclass
class LocalStack:
    process: subprocess.Popen[bytes]
    state_file: Path
    logs: Path
    state: dict[str, Any]

    @property
    def api(self) -> str:
        return str(self.state["api_url"])

    def key(self, user: str) -> str:
        return str(self.state["users"][user]["api_key"])

    def ports(self) -> list[int]:
        urls = (self.state["api_url"], self.state["s3_endpoint"])
        return [port for port in (urlparse(url).port for url in urls) if port is not None]

    def output(self) -> str:
        return self.logs.read_text(errors="replace")

    def stop(self, signum: signal.Signals) -> int:
        """Send `signum`; the exit status, or fail if it does not exit in STOP_TIMEOUT."""
        started = time.monotonic()
        self.process.send_signal(signum)
        try:
            status = self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_TIMEOUT} s after {signum.name}:\n{self.output()}")
        assert time.monotonic() - started < STOP_TIMEOUT
        return status


def _wait_ready(process: subprocess.Popen[bytes], state_file: Path, logs: Path) -> dict[str, Any]:
    deadline = time.monotonic() + START_TIMEOUT
    while not state_file.exists():
        if process.poll() is not None:
            pytest.fail(f"exited with {process.returncode} before it was ready:\n{logs.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"not ready after {START_TIMEOUT} s:\n{logs.read_text()}")
        time.sleep(0.05)
    state: dict[str, Any] = json.loads(state_file.read_text(encoding="utf-8"))
    return state


@contextlib.contextmanager
def running_stack(
    directory: Path,
    demo_rows: int,
    *,
    arguments: Sequence[str] = (),
    environment: Mapping[str, str] | None = None,
) -> Iterator[LocalStack]:
    """`python -m satchel_local` on free ports, its state file and log in `directory`;
    `arguments` are more command-line options, `environment` more variables."""
    state_file, logs = directory / "satchel-local.json", directory / "satchel-local.log"
    command = [sys.executable, "-m", "satchel_local", "--port", "0", "--moto-port", "0", *arguments]
    with logs.open("wb") as log:
        process = subprocess.Popen(
            [*command, "--demo-rows", str(demo_rows), "--state-file", str(state_file)],
            cwd=PROJECT_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(environment or {}), "PYTHONUNBUFFERED": "1"},
        )
    try:
        yield LocalStack(process, state_file, logs, _wait_ready(process, state_file, logs))
    finally:
        if process.poll() is None:  # the test failed before stopping it
            process.kill()
            process.wait()


@pytest.fixture
def local_stack(tmp_path: Path) -> Iterator[LocalStack]:
    with running_stack(tmp_path, demo_rows=1000) as stack:
        yield stack


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_done(
    stack: LocalStack, download_id: str, api_key: str, timeout: float = DONE_TIMEOUT
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        reply = call("GET", f"{stack.api}/downloads/{download_id}", api_key)
        assert reply.status == 200, reply.body
        download: dict[str, Any] = reply.json
        if download["state"] in TERMINAL:
            return download
        assert time.monotonic() < deadline, f"still {download['state']} after {timeout} s"
        time.sleep(0.1)


def _zip_members(archive_bytes: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def test_a_curl_style_session_then_ctrl_c(local_stack: LocalStack) -> None:
    stack, alice = local_stack, local_stack.key("alice")
    assert stack.state["users"]["carol"]["roles"] == ["admin"]
    assert {user["tenant"] for user in stack.state["users"].values()} == {"acme", "globex"}

    assert call("GET", f"{stack.api}/health").status == 200
    # API Gateway's own refusals, in the API's shape, as deploy/template.yaml's Gateway Responses give them.
    for reply, status, code in (
        (call("GET", f"{stack.api}/downloads"), 401, "Unauthorized"),
        (call("GET", f"{stack.api}/downloads", api_key="not-a-key"), 403, "Forbidden"),
        (call("GET", f"{stack.api}/no-such-route", alice), 404, "RouteNotFound"),
    ):
        assert (reply.status, reply.json["Code"]) == (status, code), reply.body
        assert reply.json["Message"]
        assert reply.headers["Cache-Control"] == "no-store"

    fetched_zip_of_acme(stack, alice)

    assert stack.stop(signal.SIGINT) == 0, stack.output()
    assert not any(_port_open(port) for port in stack.ports())
    assert not stack.state_file.exists()
    assert "Stopped." in stack.output()


def fetched_zip_of_acme(stack: LocalStack, credential: str) -> dict[str, Any]:
    """A zip of acme's seeded sources, created with `credential` (an API key or a token) and
    fetched as a caller does (its link's redirect, then the presigned URL), checked against
    its SHA-256 and its sources. Returns the download, DONE."""
    sources = tenant_sources("acme")
    request = {"type": "zip", "params": {"keys": list(sources)}}
    created = call("POST", f"{stack.api}/downloads", credential, request)
    assert created.status == 202, created.body
    download = _wait_done(stack, created.json["id"], credential)
    assert download["state"] == "DONE", download

    redirect = call("GET", f"{stack.api}{download['url']}", credential)
    assert redirect.status == 302, redirect.body
    location = redirect.headers["Location"]
    assert location.startswith(f"{stack.state['s3_endpoint']}/"), location

    fetched = call("GET", location)  # a presigned URL: no Authorization header, as curl -L sends it
    assert fetched.status == 200, fetched.body[:500]
    assert hashlib.sha256(fetched.body).hexdigest() == download["artifact"]["sha256"]
    assert _zip_members(fetched.body) == {key.removeprefix("acme/"): body for key, body in sources.items()}
    return download


def test_make_runs_distributed_map_segments_that_hand_on_between_runs(tmp_path: Path) -> None:
    """Through `make run`'s stack (moto's server, its interpreter calling the handlers): one
    segment per source, each Lambda run short of time after one member, still the zip."""
    environment = {
        "SATCHEL_PARALLEL_MIN_FILES": "1",
        "SATCHEL_SEGMENT_FILES": "1",
        "SATCHEL_HANDOFF_RESERVE_MS": str(10_000 * 1000),  # above the functions' 900 s
    }
    with running_stack(tmp_path, demo_rows=10, environment=environment) as stack:
        alice = stack.key("alice")
        sources = tenant_sources("acme")
        created = call(
            "POST", f"{stack.api}/downloads", alice, {"type": "zip", "params": {"keys": list(sources)}}
        )
        assert created.status == 202, created.body
        download = _wait_done(stack, created.json["id"], alice)
        assert download["state"] == "DONE", download
        fetched = call("GET", call("GET", f"{stack.api}{download['url']}", alice).headers["Location"])
        assert hashlib.sha256(fetched.body).hexdigest() == download["artifact"]["sha256"]
        assert _zip_members(fetched.body) == {
            key.removeprefix("acme/"): body for key, body in sources.items()
        }
        assert stack.stop(signal.SIGINT) == 0, stack.output()


def test_links_and_idempotency_over_http(local_stack: LocalStack) -> None:
    stack, alice = local_stack, local_stack.key("alice")
    request = {"type": "zip", "params": {"keys": ["acme/reports/2024/q1.csv"]}, "link": {"max_uses": 1}}
    headers = {"Idempotency-Key": "q1-report"}
    created = call("POST", f"{stack.api}/downloads", alice, request, headers)
    assert created.status == 202, created.body
    link = created.json["link"]
    assert link["url"] == f"{stack.api}/links/{link['token']}"  # absolute: ready to hand out

    replay = call("POST", f"{stack.api}/downloads", alice, request, headers)
    assert replay.json["id"] == created.json["id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert "link" not in replay.json  # a token is shown once

    download = _wait_done(stack, created.json["id"], alice)
    # Reading, as chat previews and browsers do, spends nothing: no credentials, the token is one.
    browser = "text/html,application/xhtml+xml,*/*;q=0.8"
    facts = call("GET", link["url"], extra={"Accept": "application/json", "User-Agent": "Slackbot 1.0"})
    assert (facts.status, facts.json["uses_left"]) == (200, 1)
    assert facts.json["claim"] == {"method": "POST", "url": link["url"]}
    page = call("GET", link["url"], extra={"Accept": browser})
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert f'<form method="post" action="/links/{link["token"]}">' in page.body.decode()
    head = call("HEAD", link["url"], extra={"Accept": browser})
    assert (head.status, head.body, head.headers["Content-Type"]) == (200, b"", page.headers["Content-Type"])

    # The form's POST (urlencoded body, as a browser sends it) claims: 303 and a claim cookie.
    form = {"Content-Type": "application/x-www-form-urlencoded", "Accept": browser}
    first = call_raw("POST", link["url"], b"", form)
    assert first.status == 303, first.body
    assert (
        hashlib.sha256(call("GET", first.headers["Location"]).body).hexdigest()
        == download["artifact"]["sha256"]
    )
    cookie = first.headers["Set-Cookie"].split(";")[0]
    assert cookie.startswith("satchel_claim=")
    again = call_raw("POST", link["url"], b"", {**form, "Cookie": cookie})
    assert again.status == 303, again.body  # within the claim window: no use spent
    assert call_raw("POST", link["url"], b"", form).status == 410  # anyone else: used up
    assert call("GET", link["url"]).status == 410

    another = call("POST", f"{stack.api}/downloads/{download['id']}/links", alice, {"max_uses": 2})
    assert another.status == 201
    assert call("DELETE", another.json["url"], alice).status == 204
    assert call("GET", another.json["url"]).status == 410
    assert local_stack.stop(signal.SIGINT) == 0


EXAMPLES = PROJECT_DIR / "docs" / "examples"


def example_workdir(stack: LocalStack, directory: Path) -> Path:
    """A directory as the repository root is while `make run` runs: its state file, and the
    virtualenv at .venv (boto3 and `satchel` for the examples that use them)."""
    directory.mkdir(exist_ok=True)
    (directory / ".satchel-local.json").write_bytes(stack.state_file.read_bytes())
    venv = directory / ".venv"
    if not venv.exists():
        venv.symlink_to(Path(sys.executable).parent.parent, target_is_directory=True)
    return directory


def run_example(
    workdir: Path, name: str, *arguments: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """One of docs/examples/, run from `workdir` as the manual says to run it."""
    path = EXAMPLES / name
    command = ["bash", str(path)] if path.suffix == ".sh" else [sys.executable, str(path)]
    return subprocess.run(
        [*command, *arguments], cwd=workdir, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_manuals_curl_examples_work_as_written(local_stack: LocalStack, tmp_path: Path) -> None:
    workdir = example_workdir(local_stack, tmp_path / "examples")
    outputs = {}
    for name in ("quickstart.sh", "links.sh", "idempotency.sh", "cancel.sh", "exports.sh", "events.sh"):
        result = run_example(workdir, name)
        assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"
        outputs[name] = result.stdout
    assert zipfile.is_zipfile(workdir / "reports.zip")
    assert zipfile.is_zipfile(workdir / "shared.zip")
    assert outputs["links.sh"].splitlines()[0].startswith(f"{local_stack.api}/links/")
    assert "HTTP/1.1 410 Gone" in outputs["links.sh"]  # the used-up link
    assert "HTTP/1.1 204" in outputs["links.sh"]  # the revoked one
    assert "Idempotent-Replayed: true" in outputs["idempotency.sh"]
    locations = re.findall(r"^Location: (\S+)", outputs["idempotency.sh"], flags=re.MULTILINE | re.IGNORECASE)
    assert len(locations) == 2
    assert locations[0] == locations[1]
    assert outputs["cancel.sh"].splitlines()[-2:] == ["HTTP/1.1 204 No Content", "HTTP/1.1 410 Gone"]
    exports = [json.loads(line) for line in outputs["exports.sh"].splitlines() if line.startswith("{")]
    assert [(e["type"], e["state"]) for e in exports] == [("export", "PENDING")] * 2
    # One download by an SQS message, one by a request-bus event, one by a manifest dropped
    # into alice's folder of the source bucket.
    listed = call("GET", f"{local_stack.api}/downloads?limit=50", local_stack.key("alice")).json["items"]
    by_event = sorted(
        (item["filename"], item["state"]) for item in listed if item["filename"].endswith("ed.zip")
    )
    assert by_event == [("dropped.zip", "DONE"), ("evented.zip", "DONE"), ("queued.zip", "DONE")]
    assert local_stack.stop(signal.SIGINT) == 0


def test_the_manuals_wait_ends_when_a_download_fails(local_stack: LocalStack, tmp_path: Path) -> None:
    workdir = example_workdir(local_stack, tmp_path / "examples")
    missing = {"type": "zip", "params": {"keys": ["acme/no-such-object.csv"]}}
    failing = call("POST", f"{local_stack.api}/downloads", local_stack.key("alice"), missing)
    assert failing.status == 202, failing.body
    result = run_example(workdir, "wait.sh", failing.json["id"], timeout=DONE_TIMEOUT * 3)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"download {failing.json['id']} ended FAILED" in result.stderr
    assert local_stack.stop(signal.SIGINT) == 0


def refused_on_a_taken_port(tmp_path: Path, option: str, variable: str, *others: str) -> None:
    """`python -m satchel_local` with `option` set to a port something else holds: it exits 1,
    names the port and how to choose another (the make variable and the option), and leaves
    no state file."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        state_file = str(tmp_path / "state.json")
        started = subprocess.run(
            [sys.executable, "-m", "satchel_local", *others, option, str(port), "--state-file", state_file],
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )
    assert started.returncode == 1, started.stdout + started.stderr
    assert f"127.0.0.1:{port} is not available" in started.stderr
    assert f"make run {variable}={port + 1}" in started.stderr
    assert f"{option} {port + 1}" in started.stderr
    assert not (tmp_path / "state.json").exists()


def test_a_taken_port_says_how_to_choose_another(tmp_path: Path) -> None:
    refused_on_a_taken_port(tmp_path, "--port", "PORT", "--moto-port", "0")


def test_sigterm_stops_everything(local_stack: LocalStack) -> None:
    assert call("GET", f"{local_stack.api}/health").status == 200

    assert local_stack.stop(signal.SIGTERM) == 0, local_stack.output()
    assert not any(_port_open(port) for port in local_stack.ports())
    assert not local_stack.state_file.exists()


def test_exports_of_the_seeded_dataset(tmp_path: Path) -> None:
    """The whole demo dataset (100,000 rows for acme), as CSV and as gzipped NDJSON."""
    with running_stack(tmp_path, demo_rows=seed.DEMO_ROWS) as stack:
        alice = stack.key("alice")
        ids = {}
        for fmt, compression in (("csv", "none"), ("ndjson", "gzip")):
            params = {"index": "Transaction", "format": fmt, "compression": compression}
            created = call("POST", f"{stack.api}/downloads", alice, {"type": "export", "params": params})
            assert created.status == 202, created.body
            ids[fmt] = created.json["id"]
        files = {}
        for fmt, download_id in ids.items():
            done = _wait_done(stack, download_id, alice, timeout=300)
            assert done["state"] == "DONE", done
            assert done["progress"]["rows_done"] == done["progress"]["rows_total"] == seed.DEMO_ROWS
            redirect = call("GET", f"{stack.api}{done['url']}", alice)
            files[fmt] = call("GET", redirect.headers["Location"]).body
            assert hashlib.sha256(files[fmt]).hexdigest() == done["artifact"]["sha256"]
        table = list(csv.DictReader(io.StringIO(files["csv"].decode("utf-8"), newline="")))
        records = [json.loads(line) for line in gzip.decompress(files["ndjson"]).splitlines()]
        assert len(table) == len(records) == seed.DEMO_ROWS
        assert [row["id"] for row in table] == [record["id"] for record in records]
        assert (
            table[12345]["merchant"] == records[12345]["merchant"] == demodata.row("acme", 12345)["merchant"]
        )
        assert table[12345]["amount"] == str(demodata.row("acme", 12345)["amount"])
        assert stack.stop(signal.SIGINT) == 0


# --- Downloads started by events, cleanup and callbacks, as the local stack delivers them ---

EVENT_TIMEOUT = 30.0  # a message or event to a started download, on a busy machine
# Dead-lettered after MAX_RECEIVE_COUNT tries, VISIBILITY_TIMEOUT_SECONDS apart.
DEAD_LETTER_TIMEOUT = EVENT_TIMEOUT + MAX_RECEIVE_COUNT * VISIBILITY_TIMEOUT_SECONDS
RETENTION_SECONDS = 2  # what the test stack allows as the shortest expires_in


@pytest.fixture(scope="module")
def event_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """One stack for the event tests: cleanup every second, retention as short as a second."""
    with running_stack(
        tmp_path_factory.mktemp("events"),
        demo_rows=100,
        arguments=["--cleanup-interval", "1"],
        environment={INTEGER_VARIABLES["retention_min_seconds"]: "1"},
    ) as started:
        yield started
        # The pollers and the schedule stop with everything else, cleanly.
        assert started.stop(signal.SIGINT) == 0, started.output()
        assert "Stopped." in started.output()
        assert "Traceback" not in started.output(), started.output()


def aws(stack: LocalStack, service: str) -> Any:
    """A client of the stack's emulator, made from what .satchel-local.json says."""
    return boto3.session.Session().client(
        service,
        endpoint_url=stack.state["aws_endpoint"],
        region_name=stack.state["region"],
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def _zip_request(filename: str, keys: Sequence[str] = ("acme/reports/2024/q1.csv",)) -> dict[str, Any]:
    return {"type": "zip", "params": {"keys": list(keys)}, "filename": filename}


def _wait_for_download_named(stack: LocalStack, user: str, filename: str) -> dict[str, Any]:
    """The user's download called `filename` once it has finished (events do not tell the id)."""
    deadline = time.monotonic() + EVENT_TIMEOUT
    while True:
        listed = call("GET", f"{stack.api}/downloads?limit=50", stack.key(user))
        assert listed.status == 200, listed.body
        found = [item for item in listed.json["items"] if item["filename"] == filename]
        if found:
            assert len(found) == 1, found  # delivered once, started once
            return _wait_done(stack, found[0]["id"], stack.key(user), timeout=EVENT_TIMEOUT)
        assert time.monotonic() < deadline, (
            f"no download {filename!r} after {EVENT_TIMEOUT} s:\n{stack.output()}"
        )
        time.sleep(0.2)


def _fetch(stack: LocalStack, download: dict[str, Any], user: str) -> bytes:
    redirect = call("GET", f"{stack.api}{download['url']}", stack.key(user))
    assert redirect.status == 302, redirect.body
    return call("GET", redirect.headers["Location"]).body


def _receive_all(sqs: Any, queue_url: str, until: Any, timeout: float) -> list[dict[str, Any]]:
    """Messages of a queue (each then deleted) until `until(messages)` holds or time is up."""
    deadline = time.monotonic() + timeout
    messages: list[dict[str, Any]] = []
    while not until(messages) and time.monotonic() < deadline:
        answer = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["All"]
        )
        for message in answer.get("Messages", []):
            messages.append(message)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return messages


def test_the_state_file_names_the_queues_and_the_secret(event_stack: LocalStack) -> None:
    state = event_stack.state
    sqs = aws(event_stack, "sqs")
    for name in (
        "requests_queue_url",
        "requests_dead_letter_queue_url",
        "events_queue_url",
        "manifests_queue_url",
        "state_changes_queue_url",
        "deliveries_queue_url",
        "deliveries_dead_letter_queue_url",
    ):
        assert sqs.get_queue_attributes(QueueUrl=state[name], AttributeNames=["QueueArn"])["Attributes"]
    assert (
        aws(event_stack, "events").describe_event_bus(Name=state["request_bus"])["Name"]
        == state["request_bus"]
    )
    redrive = json.loads(
        sqs.get_queue_attributes(QueueUrl=state["requests_queue_url"], AttributeNames=["RedrivePolicy"])[
            "Attributes"
        ]["RedrivePolicy"]
    )
    assert int(redrive["maxReceiveCount"]) == MAX_RECEIVE_COUNT
    assert redrive["deadLetterTargetArn"].endswith(
        ":" + state["requests_dead_letter_queue_url"].rsplit("/", 1)[1]
    )
    assert "webhook_secret" not in state  # one secret per tenant: webhook_secrets
    assert state["cleanup_interval_seconds"] == 1


def test_the_state_file_holds_each_demo_tenants_webhook_secret(event_stack: LocalStack) -> None:
    """`webhook_secrets`: one Standard Webhooks secret per demo tenant, the very one the
    stack stores (encrypted in the emulator's KMS) and signs that tenant's callbacks with."""
    secrets = event_stack.state["webhook_secrets"]
    assert set(secrets) == {user["tenant"] for user in event_stack.state["users"].values()}
    assert set(secrets) == {"acme", "globex"}
    for secret in secrets.values():
        assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret), secret
    assert secrets["acme"] != secrets["globex"]

    table = (
        boto3.session.Session()
        .resource(
            "dynamodb",
            endpoint_url=event_stack.state["aws_endpoint"],
            region_name=event_stack.state["region"],
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        .Table("satchel-local")
    )  # the stage python -m satchel_local runs by default
    store = WebhookSecrets(table, aws(event_stack, "kms"), webhook_secrets_alias("local"), PlaintextCache())
    for tenant, secret in secrets.items():
        assert store.signing(tenant, clock.now()) == [secret]
    # A tenant admin reads its dates over HTTP, never the secret.
    read = call("GET", f"{event_stack.api}/tenant/webhook-secret", event_stack.key("carol"))
    assert read.status == 200, read.body
    assert secrets["acme"].encode() not in read.body


def test_an_sqs_message_starts_a_download(event_stack: LocalStack) -> None:
    stack, sources = event_stack, tenant_sources("acme")
    filename = f"queued-{uuid.uuid4().hex[:8]}.zip"
    message = {"tenant": "acme", "user_id": "alice", "request": _zip_request(filename, sorted(sources))}
    aws(stack, "sqs").send_message(
        QueueUrl=stack.state["requests_queue_url"], MessageBody=json.dumps(message)
    )

    download = _wait_for_download_named(stack, "alice", filename)
    assert download["state"] == "DONE", download
    assert _zip_members(_fetch(stack, download, "alice")) == {
        key.removeprefix("acme/"): body for key, body in sources.items()
    }
    # Only its owner sees it, as if she had asked the API herself.
    assert call("GET", f"{stack.api}/downloads/{download['id']}", stack.key("bob")).status == 403


def test_a_bad_message_is_dead_lettered_and_its_batch_mate_still_succeeds(event_stack: LocalStack) -> None:
    stack, sqs = event_stack, aws(event_stack, "sqs")
    filename = f"batch-mate-{uuid.uuid4().hex[:8]}.zip"
    good = {"tenant": "acme", "user_id": "bob", "request": _zip_request(filename)}
    malformed = f"not a request {uuid.uuid4()}"
    sent = sqs.send_message_batch(
        QueueUrl=stack.state["requests_queue_url"],
        Entries=[
            {"Id": "good", "MessageBody": json.dumps(good)},
            {"Id": "malformed", "MessageBody": malformed},
        ],
    )
    assert not sent.get("Failed"), sent

    assert _wait_for_download_named(stack, "bob", filename)["state"] == "DONE"
    dead = _receive_all(
        sqs,
        stack.state["requests_dead_letter_queue_url"],
        lambda got: any(m["Body"] == malformed for m in got),
        DEAD_LETTER_TIMEOUT,
    )
    assert [m["Body"] for m in dead] == [malformed], stack.output()
    # It was tried as often as the redrive policy allows, each time alone once the good one was gone.
    assert int(dead[0]["Attributes"]["ApproximateReceiveCount"]) >= MAX_RECEIVE_COUNT
    remaining = sqs.get_queue_attributes(
        QueueUrl=stack.state["requests_queue_url"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert remaining == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}


def test_a_request_manifest_in_a_users_folder_starts_a_download(event_stack: LocalStack) -> None:
    stack = event_stack
    filename = f"manifest-{uuid.uuid4().hex[:8]}.zip"
    manifest = {"request": _zip_request(filename)}
    aws(stack, "s3").put_object(
        Bucket=stack.state["source_bucket"],
        Key=f"requests/acme/alice/{uuid.uuid4().hex}.json",
        Body=json.dumps(manifest).encode(),
    )
    download = _wait_for_download_named(stack, "alice", filename)
    assert download["state"] == "DONE", download
    assert download["tenant"] == "acme"


def test_a_download_requested_event_on_the_request_bus_starts_a_download(event_stack: LocalStack) -> None:
    stack = event_stack
    filename = f"event-{uuid.uuid4().hex[:8]}.zip"
    detail = {"user_id": "dave", "request": _zip_request(filename, ["globex/plans/roadmap.md"])}
    entry = {
        "Source": "satchel.requests.globex",
        "DetailType": "Satchel Download Requested",
        "Detail": json.dumps(detail),
    }
    # First on the default bus, where no rule takes requests, then on the request bus.
    ignored_request = _zip_request(f"ignored-{filename}", ["globex/plans/roadmap.md"])
    ignored = {**entry, "Detail": json.dumps({**detail, "request": ignored_request})}
    put = aws(stack, "events").put_events(
        Entries=[ignored, {**entry, "EventBusName": stack.state["request_bus"]}]
    )
    assert put["FailedEntryCount"] == 0, put
    download = _wait_for_download_named(stack, "dave", filename)
    assert download["state"] == "DONE", download
    listed = call("GET", f"{stack.api}/downloads?limit=100", stack.key("dave")).json["items"]
    assert [item["filename"] for item in listed if item["filename"].endswith(filename)] == [filename]


def test_the_cleanup_loop_expires_a_download_and_deletes_its_artifact(event_stack: LocalStack) -> None:
    stack, alice, s3 = event_stack, event_stack.key("alice"), aws(event_stack, "s3")
    created = call(
        "POST",
        f"{stack.api}/downloads",
        alice,
        {**_zip_request("short-lived.zip"), "expires_in": RETENTION_SECONDS},
    )
    assert created.status == 202, created.body
    download_id = created.json["id"]
    done = _wait_done(stack, download_id, alice)
    assert done["state"] == "DONE", done
    artifact = {"Bucket": stack.state["artifact_bucket"], "Key": f"artifacts/{download_id}"}
    assert s3.head_object(**artifact)["ContentLength"] == done["artifact"]["size"]

    # Nobody asks for it: the cleanup loop (every second here) expires it after its retention.
    deadline = time.monotonic() + RETENTION_SECONDS + EVENT_TIMEOUT
    expired = done
    while expired["state"] == "DONE" and time.monotonic() < deadline:
        time.sleep(0.2)
        expired = call("GET", f"{stack.api}/downloads/{download_id}", alice).json
    assert expired["state"] == "EXPIRED", f"{expired}\n{stack.output()}"
    assert call("GET", f"{stack.api}/downloads/{download_id}/file", alice).status == 410
    assert call("GET", f"{stack.api}/downloads/{download_id}/url", alice).status == 410
    with pytest.raises(ClientError) as missing:
        s3.head_object(**artifact)
    assert missing.value.response["Error"]["Code"] == "404"
    leftovers = s3.list_objects_v2(Bucket=stack.state["artifact_bucket"]).get("Contents", [])
    assert not [item["Key"] for item in leftovers if download_id in item["Key"]]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@contextlib.contextmanager
def callback_receiver() -> Iterator[tuple[str, queue.Queue[Received]]]:
    """An HTTP receiver on loopback: (its URL, the POSTs it got)."""
    received: queue.Queue[Received] = queue.Queue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.put(Received({name.lower(): value for name, value in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/satchel?source=test", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_webhook_arrives_verified_and_the_event_is_published(event_stack: LocalStack) -> None:
    """Finalize queues the event; the local stack polls the deliveries queue into `deliver`."""
    stack, alice = event_stack, event_stack.key("alice")
    request = {**_zip_request("called-back.zip"), "client_reference": "e2e-7"}
    with callback_receiver() as (url, received):
        created = call("POST", f"{stack.api}/downloads", alice, {**request, "callback_url": url})
        assert created.status == 202, created.body
        done = _wait_done(stack, created.json["id"], alice)
        assert done["state"] == "DONE", done
        try:
            callback = received.get(timeout=EVENT_TIMEOUT)
        except queue.Empty:
            pytest.fail(f"no webhook after {EVENT_TIMEOUT} s:\n{stack.output()}")

    # Verified as a receiver would: Standard Webhooks' library, the secret .satchel-local.json names.
    payload = Webhook(stack.state["webhook_secrets"]["acme"]).verify(callback.body, callback.headers)
    assert callback.headers["content-type"] == "application/json"
    assert callback.headers["webhook-id"] == f"{done['id']}.completed"
    assert payload["type"] == "download.completed"
    data = payload["data"]
    assert (data["id"], data["state"], data["tenant"], data["user_id"], data["client_reference"]) == (
        done["id"],
        "DONE",
        "acme",
        "alice",
        "e2e-7",
    )
    deliveries = call("GET", f"{stack.api}/downloads/{done['id']}/deliveries", alice)
    assert [(item["type"], item["state"]) for item in deliveries.json["items"]] == [
        ("download.completed", "delivered")
    ]

    # The same payload went to EventBridge, whose rule hands it to the state changes queue.
    def mine(message: dict[str, Any]) -> bool:
        return bool(json.loads(message["Body"])["detail"]["data"].get("id") == done["id"])

    def published(messages: list[dict[str, Any]]) -> bool:
        return any(mine(message) for message in messages)

    events = _receive_all(aws(stack, "sqs"), stack.state["state_changes_queue_url"], published, EVENT_TIMEOUT)
    found = [json.loads(m["Body"]) for m in events if mine(m)]
    assert [(e["source"], e["detail-type"], e["detail"]) for e in found] == [
        ("satchel", "download.completed", payload)
    ]


def test_a_claimed_link_is_delivered_as_link_claimed(event_stack: LocalStack) -> None:
    """The claim records its event and queues it; `deliver` sends it, verified."""
    stack, alice = event_stack, event_stack.key("alice")
    with callback_receiver() as (url, received):
        request = {**_zip_request("claimed.zip"), "callback_url": url, "link": {}}
        created = call("POST", f"{stack.api}/downloads", alice, request)
        assert created.status == 202, created.body
        assert _wait_done(stack, created.json["id"], alice)["state"] == "DONE"
        claimed = call(
            "POST", f"{stack.api}/links/{created.json['link']['token']}", extra={"Accept": "application/json"}
        )
        assert claimed.status == 200, claimed.body
        payloads: list[dict[str, Any]] = []
        deadline = time.monotonic() + EVENT_TIMEOUT
        while not any(payload["type"] == "link.claimed" for payload in payloads):
            try:
                callback = received.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no link.claimed webhook after {EVENT_TIMEOUT} s:\n{stack.output()}")
            secret = stack.state["webhook_secrets"]["acme"]
            payloads.append(Webhook(secret).verify(callback.body, callback.headers))
    [link_claimed] = [payload["data"] for payload in payloads if payload["type"] == "link.claimed"]
    assert link_claimed["download_id"] == created.json["id"]
    assert (link_claimed["tenant"], link_claimed["use"]) == ("acme", claimed.json["use"])


# --- The emulator glue itself, in process: fast, and exact about what Lambda would do ---


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_manuals_callback_receiver_works_as_written(event_stack: LocalStack, tmp_path: Path) -> None:
    workdir = example_workdir(event_stack, tmp_path / "examples")
    port = _free_port()
    with subprocess.Popen(
        [sys.executable, str(EXAMPLES / "callback_receiver.py"), str(port)],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as listening:
        try:
            deadline = time.monotonic() + EVENT_TIMEOUT
            while not _port_open(port):
                assert listening.poll() is None, listening.communicate()[0]
                assert time.monotonic() < deadline, "the manual's receiver does not listen"
                time.sleep(0.1)
            created = run_example(workdir, "callback_request.sh", str(port), timeout=60)
            assert created.returncode == 0, created.stdout + created.stderr
            download_id = json.loads(created.stdout)["id"]
            lines: queue.Queue[str] = queue.Queue()
            output = listening.stdout
            assert output is not None
            threading.Thread(target=lambda: lines.put(output.readline()), daemon=True).start()
            try:
                line = lines.get(timeout=EVENT_TIMEOUT)
            except queue.Empty:
                pytest.fail(f"no webhook reached the manual's receiver:\n{event_stack.output()}")
        finally:
            listening.kill()
    assert line.startswith("valid "), line
    event_id, body = line.removeprefix("valid ").split(" ", 1)
    assert event_id == f"{download_id}.completed"
    assert json.loads(body)["data"]["id"] == download_id
