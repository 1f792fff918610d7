"""End to end: `python -m satchel_local` started as a developer starts it, then driven over
real HTTP exactly as the README's curl session does, then stopped with Ctrl-C.

The stack runs on ports the OS picks (`--port 0 --moto-port 0`, no race for a "free"
port) and writes its state file into the test's temporary directory, never over the
developer's .satchel-local.json. The file appears only once the stack is ready.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlparse

import pytest

from satchel_local import demodata, seed
from satchel_local.seed import tenant_sources
from tests.conftest import Reply

PROJECT_DIR = Path(__file__).resolve().parent.parent
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
def running_stack(directory: Path, demo_rows: int) -> Iterator[LocalStack]:
    """`python -m satchel_local` on free ports, its state file and log in `directory`."""
    state_file, logs = directory / "satchel-local.json", directory / "satchel-local.log"
    command = [sys.executable, "-m", "satchel_local", "--port", "0", "--moto-port", "0"]
    with logs.open("wb") as log:
        process = subprocess.Popen(
            [*command, "--demo-rows", str(demo_rows), "--state-file", str(state_file)],
            cwd=PROJECT_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
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


def test_readme_curl_session_then_ctrl_c(local_stack: LocalStack) -> None:
    stack, alice = local_stack, local_stack.key("alice")
    assert stack.state["users"]["carol"]["roles"] == ["admin"]
    assert {user["tenant"] for user in stack.state["users"].values()} == {"acme", "globex"}

    assert call("GET", f"{stack.api}/health").status == 200
    assert call("GET", f"{stack.api}/downloads").status == 401
    assert call("GET", f"{stack.api}/downloads", api_key="not-a-key").status == 403

    sources = tenant_sources("acme")
    request = {"type": "zip", "params": {"keys": list(sources)}}
    created = call("POST", f"{stack.api}/downloads", alice, request)
    assert created.status == 202, created.body
    download = _wait_done(stack, created.json["id"], alice)
    assert download["state"] == "DONE", download

    redirect = call("GET", f"{stack.api}{download['url']}", alice)
    assert redirect.status == 302, redirect.body
    location = redirect.headers["Location"]
    assert location.startswith(f"{stack.state['s3_endpoint']}/"), location

    fetched = call("GET", location)  # a presigned URL: no Authorization header, as curl -L sends it
    assert fetched.status == 200, fetched.body[:500]
    assert hashlib.sha256(fetched.body).hexdigest() == download["artifact"]["sha256"]
    assert _zip_members(fetched.body) == {key.removeprefix("acme/"): body for key, body in sources.items()}

    assert stack.stop(signal.SIGINT) == 0, stack.output()
    assert not any(_port_open(port) for port in stack.ports())
    assert not stack.state_file.exists()
    assert "Stopped." in stack.output()


def test_readme_links_and_idempotency_session(local_stack: LocalStack) -> None:
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
    first = call("GET", link["url"])  # no credentials: the token is the credential
    assert first.status == 302
    assert (
        hashlib.sha256(call("GET", first.headers["Location"]).body).hexdigest()
        == download["artifact"]["sha256"]
    )
    assert call("GET", link["url"]).status == 410

    another = call("POST", f"{stack.api}/downloads/{download['id']}/links", alice, {"max_uses": 2})
    assert another.status == 201
    assert call("DELETE", another.json["url"], alice).status == 204
    assert call("GET", another.json["url"]).status == 410
    assert local_stack.stop(signal.SIGINT) == 0


def readme_session(api_url: str) -> str:
    """The README's shell blocks from its quick start to the API reference, as one script."""
    readme = (PROJECT_DIR / "README.md").read_text(encoding="utf-8")
    session = readme[readme.index("In a second terminal") : readme.index("## The API")]
    blocks = re.findall(r"```sh\n(.*?)```", session, flags=re.DOTALL)
    assert len(blocks) >= 4, "the README's curl session has moved"
    script = "\n".join(blocks).replace("API=http://127.0.0.1:8000", f"API={api_url}")
    return "set -euo pipefail\n" + script


def test_the_readme_curl_session_works_as_written(local_stack: LocalStack, tmp_path: Path) -> None:
    workdir = tmp_path / "readme"
    workdir.mkdir()
    (workdir / ".satchel-local.json").write_bytes(local_stack.state_file.read_bytes())
    result = subprocess.run(
        ["bash", "-c", readme_session(local_stack.api)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HTTP/1.1 410 Gone" in result.stdout  # the used-up link, and the deleted download
    assert "Idempotent-Replayed: true" in result.stdout
    assert zipfile.is_zipfile(workdir / "reports.zip")
    assert zipfile.is_zipfile(workdir / "shared.zip")
    assert local_stack.stop(signal.SIGINT) == 0


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
