"""End to end: `satchel get LINK` against the local stack (a subprocess, loopback), as the
person a link was sent to runs it: no API key, no state file, only the link.

Uses are counted by the stack and read back as the owner sees them (GET
/downloads/{id}/links), so "a resume spends no second use" is the server's word, not the
client's. An interrupted get is interrupted for real: `--limit-rate` keeps the transfer slow
and the test sends Ctrl-C as soon as the `.part` file has grown. The file's build is held
back for the not-ready case by a gate in front of Prepare (tests/support/buildgate.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from satchel_local.seed import tenant_sources
from tests.e2e.test_local_stack import (
    PROJECT_DIR,
    LocalStack,
    _wait_done,
    aws,
    call,
    example_workdir,
    run_example,
    running_stack,
)
from tests.support import buildgate, cli

ALL_KEYS = sorted(tenant_sources("acme"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    directory = tmp_path_factory.mktemp("get-stack")
    environment = {buildgate.GATE_VARIABLE: str(directory / "build-gate")}
    with running_stack(directory, demo_rows=100, environment=environment) as started:
        yield started
        assert started.stop(signal.SIGINT) == 0, started.output()


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "satchel_client", *args]


def satchel(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # This checkout's client (not whichever one the virtualenv's `satchel` script points at),
    # and nothing that says which API or key to use: a link needs none.
    return cli.run(_command(*args), workdir, PYTHONPATH=str(PROJECT_DIR))


def shared(stack: LocalStack, max_uses: int = 1, *, wait: bool = True) -> tuple[dict[str, Any], str]:
    """All of acme's sources, stored (about 195 KiB), with a link."""
    request = {
        "type": "zip",
        "params": {"keys": ALL_KEYS, "compression": "store"},
        "filename": "all.zip",
        "link": {"max_uses": max_uses},
    }
    created = call("POST", f"{stack.api}/downloads", stack.key("alice"), request)
    assert created.status == 202, created.body
    download = _wait_done(stack, created.json["id"], stack.key("alice")) if wait else created.json
    return download, str(created.json["link"]["url"])


def uses(stack: LocalStack, download_id: str) -> list[int]:
    listed = call("GET", f"{stack.api}/downloads/{download_id}/links", stack.key("alice"))
    assert listed.status == 200, listed.body
    return [int(item["uses"]) for item in listed.json["items"]]


def link_status(link: str) -> int:
    return call("GET", link, extra={"Accept": "application/json"}).status


def interrupted_get(workdir: Path, link: str) -> Path:
    """A get cut off by Ctrl-C mid-transfer; the `.part` it leaves."""
    # 32 KiB/s: the ~195 KiB zip takes 6 s, so Ctrl-C sent as soon as bytes arrive always
    # lands mid-transfer, however busy the machine (the limit only ever makes it slower).
    getting = subprocess.Popen(
        _command("get", link, "-o", "out.zip", "--limit-rate", "32K"),
        cwd=workdir,
        env=cli.environment(PYTHONPATH=str(PROJECT_DIR)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=cli.as_at_a_terminal,  # it is sent Ctrl-C
    )
    part = workdir / "out.zip.part"
    cli.grow(part, 0)
    getting.send_signal(signal.SIGINT)
    _, stderr = getting.communicate(timeout=cli.RUN_TIMEOUT)
    assert getting.returncode == 130, stderr
    assert "run the same command again to resume" in stderr
    assert (workdir / "out.zip.part.claim").is_file()  # the claim id, kept for the resume
    assert not (workdir / "out.zip").exists()
    return part


def test_a_get_claims_a_single_use_link_once(stack: LocalStack, tmp_path: Path) -> None:
    download, link = shared(stack)
    assert link_status(link) == 200

    got = satchel(tmp_path, "--json", "get", link)

    assert got.returncode == 0, got.stderr
    result = json.loads(got.stdout)
    assert (result["path"], result["use"], result["verified"]) == ("all.zip", 1, True)
    assert cli.sha256_of(tmp_path / "all.zip") == result["sha256"] == download["artifact"]["sha256"]
    assert "1 of 1 uses left" in got.stderr  # what the link showed before the claim
    assert uses(stack, download["id"]) == [1]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["all.zip"]  # no .part, no claim left

    again = satchel(tmp_path, "get", link, "-o", "again.zip")

    assert again.returncode == 3, again.stderr
    assert "410 LinkGone" in again.stderr
    assert "ask its owner for a new link" in again.stderr
    assert not (tmp_path / "again.zip").exists()
    assert uses(stack, download["id"]) == [1]


def test_an_interrupted_get_resumes_within_the_claim_window_without_a_second_use(
    stack: LocalStack, tmp_path: Path
) -> None:
    download, link = shared(stack)
    part = interrupted_get(tmp_path, link)
    assert uses(stack, download["id"]) == [1]
    assert link_status(link) == 410  # used up, for anyone without the claim id
    with part.open("r+b") as truncated:  # as if the connection had broken earlier
        truncated.truncate(part.stat().st_size // 2)
    kept = part.stat().st_size

    resumed = satchel(tmp_path, "--json", "get", link, "-o", "out.zip")

    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert (result["reclaimed"], result["resumed_from"]) == (True, kept)
    assert result["transferred"] == download["artifact"]["size"] - kept
    assert cli.sha256_of(tmp_path / "out.zip") == download["artifact"]["sha256"]
    assert "no further use spent" in resumed.stderr
    assert uses(stack, download["id"]) == [1]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.zip"]


def test_a_corrupt_partial_file_is_refused_and_a_retry_spends_no_use(
    stack: LocalStack, tmp_path: Path
) -> None:
    download, link = shared(stack)
    part = interrupted_get(tmp_path, link)
    with part.open("r+b") as corrupted:
        first = corrupted.read(1)
        corrupted.seek(0)
        corrupted.write(bytes([first[0] ^ 0xFF]))

    refused = satchel(tmp_path, "get", link, "-o", "out.zip")

    assert refused.returncode == 6, refused.stderr
    assert "does not match" in refused.stderr
    assert not (tmp_path / "out.zip").exists()
    assert not part.exists()  # the bytes are gone; the claim stays for the retry

    retried = satchel(tmp_path, "get", link, "-o", "out.zip")

    assert retried.returncode == 0, retried.stderr
    assert cli.sha256_of(tmp_path / "out.zip") == download["artifact"]["sha256"]
    assert uses(stack, download["id"]) == [1]


def test_not_ready_says_when_then_wait_gets_it_once_built(stack: LocalStack, tmp_path: Path) -> None:
    lambdas, gate = aws(stack, "lambda"), stack.state_file.parent / "build-gate"
    buildgate.hold(lambdas, gate)
    try:
        download, link = shared(stack, wait=False)

        early = satchel(tmp_path, "get", link)

        assert early.returncode == 3, early.stderr
        assert "not ready yet" in early.stderr
        assert "retry after" in early.stderr
        assert "--wait" in early.stderr
        waiting = subprocess.Popen(
            _command("get", link, "--wait", "--timeout", "60"),
            cwd=tmp_path,
            env=cli.environment(PYTHONPATH=str(PROJECT_DIR)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        buildgate.release(gate)
        _, stderr = waiting.communicate(timeout=cli.RUN_TIMEOUT + 60)
    finally:
        buildgate.release(gate)
        buildgate.restore(lambdas)

    assert waiting.returncode == 0, stderr
    done = _wait_done(stack, download["id"], stack.key("alice"))
    assert cli.sha256_of(tmp_path / "all.zip") == done["artifact"]["sha256"]
    assert uses(stack, download["id"]) == [1]


def test_an_unknown_link_is_not_found(stack: LocalStack, tmp_path: Path) -> None:
    got = satchel(tmp_path, "get", f"{stack.api}/links/{'A' * 43}")
    assert got.returncode == 3, got.stderr
    assert "404 LinkNotFound" in got.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_manuals_claim_lines_work_as_written(
    stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/examples/link-claims.sh: curl, wget and `satchel get`, each claiming one use."""
    workdir = example_workdir(stack, tmp_path / "examples")
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_DIR))  # this checkout's `satchel`

    result = run_example(workdir, "link-claims.sh")

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "HTTP/1.1 200 OK" in lines  # HEAD: reading spends nothing
    assert "HTTP/1.1 410 Gone" in lines  # the fourth claim of a three-use link
    files = [workdir / name for name in ("by-curl.zip", "by-wget.zip", "by-satchel.zip")]
    assert len({cli.sha256_of(path) for path in files}) == 1
    assert '"uses": 3' in result.stdout
