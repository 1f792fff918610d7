"""End to end: the `satchel` command, as installed in the virtualenv, against the local
stack started as `make run` starts it, over real HTTP on loopback.

One stack serves the whole module (it takes a few seconds to start). Each test runs the
command in its own directory holding a copy of the stack's state file, as a developer
runs it next to `make run`'s `.satchel-local.json`, and calls as alice with `--as alice`.
A fetch is cut off deterministically: `--limit-rate` keeps it slow, and the test signals
it as soon as its `.part` file has grown.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from satchel_local.seed import tenant_sources
from tests.e2e.test_local_stack import EXAMPLES, LocalStack, call, running_stack
from tests.support import cli

SATCHEL = Path(sys.executable).parent / "satchel"  # the console script `make` installs
# Generous: the stack seeds its demo data before it is ready, and a busy 2-core machine
# (the whole suite runs at once) can take a while for that.
SOURCES = tenant_sources("acme")
ALL_KEYS = sorted(SOURCES)
HEX_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(tmp_path_factory.mktemp("stack"), demo_rows=1000) as started:
        yield started
        started.stop(signal.SIGINT)


@pytest.fixture
def workdir(stack: LocalStack, tmp_path: Path) -> Iterator[Path]:
    """A directory as the repository root is while `make run` runs: with .satchel-local.json."""
    (tmp_path / ".satchel-local.json").write_bytes(stack.state_file.read_bytes())
    yield tmp_path
    # One stack serves every test: if it stopped, say so here, with its log, not as a
    # "connection refused" in whichever test comes next.
    assert stack.process.poll() is None, f"the stack exited ({stack.process.returncode}):\n{stack.output()}"


def satchel(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli.run([str(SATCHEL), *args], workdir)


def ok(workdir: Path, *args: str) -> str:
    """Run the command, expect success, return its stdout."""
    result = satchel(workdir, *args)
    assert result.returncode == 0, f"satchel {' '.join(args)}: {result.returncode}\n{result.stderr}"
    return result.stdout


def zip_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def expected_members(keys: list[str]) -> dict[str, bytes]:
    return {key.removeprefix("acme/"): SOURCES[key] for key in keys}


def run_on_a_terminal(workdir: Path, *args: str) -> tuple[int, str, str]:
    """Run the command with stderr on a pseudo-terminal, as in a shell: (status, stdout, screen)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [str(SATCHEL), *args], cwd=workdir, env=cli.environment(), stdout=subprocess.PIPE, stderr=follower
    )
    os.close(follower)
    screen = bytearray()

    def drain() -> None:  # a full pty would block the command: read it as it writes
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the command has exited and closed its end
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        stdout, _ = process.communicate(timeout=cli.RUN_TIMEOUT)
    finally:
        reader.join(timeout=5)
        os.close(leader)
    return process.returncode, stdout.decode(), screen.decode(errors="replace")


def test_zip_wait_fetch_shows_progress_and_writes_a_valid_zip(workdir: Path) -> None:
    keys = ["acme/reports/2024/q1.csv", "acme/reports/2024/q2.csv"]
    args = ["--as", "alice", "zip", *keys, "--prefix", "acme/photos/", "--wait", "-o", "out.zip"]
    files = len(keys) + len([key for key in SOURCES if key.startswith("acme/photos/")])

    status, stdout, screen = run_on_a_terminal(workdir, *args)

    assert status == 0, screen
    assert HEX_ID.fullmatch(stdout.strip()), stdout  # only the id on stdout: ID=$(satchel zip ...)
    assert f"{files}/{files} files" in screen  # the build's bar, at its end
    assert "━" in screen
    assert "KiB" in screen
    assert "saved out.zip" in screen
    assert "sha256 verified" in screen
    assert zip_members(workdir / "out.zip") == expected_members(ALL_KEYS)


def test_json_results_for_scripts(stack: LocalStack, workdir: Path) -> None:
    made = json.loads(
        ok(workdir, "--as", "alice", "--json", "zip", *ALL_KEYS, "--wait", "--filename", "all.zip")
    )
    assert made["state"] == "DONE"
    assert made["filename"] == "all.zip"
    download_id = made["id"]

    status = json.loads(ok(workdir, "--as", "alice", "--json", "status", download_id))
    assert status["artifact"]["sha256"] == made["artifact"]["sha256"]
    listed = json.loads(ok(workdir, "--as", "alice", "--json", "list", "--state", "DONE"))
    assert download_id in [item["id"] for item in listed]
    assert download_id not in [
        item["id"] for item in json.loads(ok(workdir, "--as", "bob", "--json", "list"))
    ]
    kinds = json.loads(ok(workdir, "--as", "alice", "--json", "types"))
    assert "zip" in [kind["name"] for kind in kinds]

    fetched = json.loads(ok(workdir, "--as", "alice", "--json", "fetch", download_id))
    assert fetched == {
        "download_id": download_id,
        "path": "all.zip",  # the download's filename, in the working directory
        "size": made["artifact"]["size"],
        "sha256": made["artifact"]["sha256"],
        "verified": True,
        "resumed_from": 0,
        "transferred": made["artifact"]["size"],
    }
    assert zip_members(workdir / "all.zip") == expected_members(ALL_KEYS)

    link = json.loads(ok(workdir, "--as", "alice", "--json", "link", download_id, "--max-uses", "1"))
    assert call("GET", link["url"]).status == 200  # reading the link spends nothing
    assert call("POST", link["url"]).status == 303  # no key needed: the token is the credential
    assert call("POST", link["url"]).status == 410  # single-use

    assert json.loads(ok(workdir, "--as", "alice", "--json", "cancel", download_id)) == {
        "id": download_id,
        "action": "deleted",
    }
    gone = satchel(workdir, "--as", "alice", "fetch", download_id, "-o", "again.zip")
    assert gone.returncode == 4, gone.stderr
    assert f"download {download_id} ended EXPIRED" in gone.stderr


def _slow_fetch(workdir: Path, download_id: str) -> subprocess.Popen[str]:
    # 32 KiB/s: the ~195 KiB zip takes 6 s, so a signal sent as soon as bytes arrive always
    # lands mid-transfer, however busy the machine (the limit only ever makes it slower).
    return subprocess.Popen(
        [str(SATCHEL), "--as", "alice", "fetch", download_id, "-o", "out.zip", "--limit-rate", "32K"],
        cwd=workdir,
        env=cli.environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=cli.as_at_a_terminal,  # it is sent Ctrl-C
    )


def test_an_interrupted_or_killed_fetch_resumes_with_a_range_and_verifies(workdir: Path) -> None:
    made = json.loads(ok(workdir, "--as", "alice", "--json", "zip", *ALL_KEYS, "--store", "--wait"))
    download_id, size, sha256 = made["id"], made["artifact"]["size"], made["artifact"]["sha256"]
    part = workdir / "out.zip.part"

    # Ctrl-C: the bytes stay, and the command says how to go on.
    fetch = _slow_fetch(workdir, download_id)
    cli.grow(part, 0)
    fetch.send_signal(signal.SIGINT)
    _, stderr = fetch.communicate(timeout=cli.RUN_TIMEOUT)
    assert fetch.returncode == 130, stderr
    first_cut = part.stat().st_size
    assert f"{first_cut} bytes are kept in out.zip.part: run the same command again to resume" in stderr

    # Killed outright (no chance to clean up): it resumed from the first cut, then died.
    fetch = _slow_fetch(workdir, download_id)
    second_cut = cli.grow(part, first_cut)
    fetch.kill()
    _, stderr = fetch.communicate(timeout=cli.RUN_TIMEOUT)
    assert f"resuming at byte {first_cut} of {size}" in stderr
    second_cut = part.stat().st_size
    assert first_cut < second_cut < size
    assert not (workdir / "out.zip").exists()  # only a verified file gets the real name

    resumed = satchel(workdir, "--as", "alice", "--json", "fetch", download_id, "-o", "out.zip")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at byte {second_cut} of {size}" in resumed.stderr
    result = json.loads(resumed.stdout)
    assert (result["resumed_from"], result["transferred"]) == (second_cut, size - second_cut)
    assert (result["sha256"], cli.sha256_of(workdir / "out.zip")) == (sha256, sha256)
    assert not part.exists()
    assert zip_members(workdir / "out.zip") == expected_members(ALL_KEYS)


def test_a_partial_file_that_does_not_match_is_not_accepted(workdir: Path) -> None:
    download_id = ok(workdir, "--as", "alice", "zip", "acme/reports/2024/q1.csv", "--wait", "-q").strip()
    part = workdir / "q1.zip.part"
    part.write_bytes(b"not the start of this zip" * 40)

    refused = satchel(workdir, "--as", "alice", "fetch", download_id, "-o", "q1.zip")

    assert refused.returncode == 6, refused.stderr
    assert "resuming at byte 1000" in refused.stderr
    assert "does not match the download's sha256" in refused.stderr
    assert "run the same command again to fetch the file from the start" in refused.stderr
    assert not part.exists()
    assert not (workdir / "q1.zip").exists()

    ok(workdir, "--as", "alice", "fetch", download_id, "-o", "q1.zip")
    assert zip_members(workdir / "q1.zip") == expected_members(["acme/reports/2024/q1.csv"])


def _closed_port() -> tuple[socket.socket, int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))  # bound, never listening: connecting is refused
    return holder, holder.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["zip"], 2, "name at least one KEY or --prefix"),
        (["zip", "acme/a.csv", "--limit-rate", "fast"], 2, "not a rate"),
        (["--as", "zed", "list"], 2, "no such user"),
        (["zip", "globex/plans/roadmap.md"], 3, "403 SourceNotAllowed"),
        (["status", "0123456789abcdef0123456789abcdef"], 3, "404 DownloadNotFound"),
        (["zip", "acme/reports/2024/q1.csv", "acme/reports/2024/q1.csv"], 3, "400 DuplicateKeys"),
        (["zip", "acme/missing.csv", "--wait"], 4, "ended FAILED: SourceMissing"),
    ],
)
def test_exit_codes(workdir: Path, args: list[str], code: int, says: str) -> None:
    as_alice = [] if "--as" in args else ["--as", "alice"]
    result = satchel(workdir, *as_alice, *args)
    assert result.returncode == code, result.stderr
    assert says in result.stderr


def test_exit_codes_of_connections(stack: LocalStack, workdir: Path) -> None:
    nowhere = satchel(workdir.parent, "list")  # no flags, no environment, no state file up there
    assert nowhere.returncode == 2
    assert "$SATCHEL_API_URL" in nowhere.stderr

    wrong_key = satchel(workdir, "--api-url", stack.api, "--api-key", "not-a-key", "list")
    assert wrong_key.returncode == 3
    assert "check the API key" in wrong_key.stderr

    holder, port = _closed_port()
    with holder:
        unreachable = satchel(workdir, "--api-url", f"http://127.0.0.1:{port}", "--api-key", "k", "list")
    assert unreachable.returncode == 5
    assert "Connection refused" in unreachable.stderr
    assert "is the API running" in unreachable.stderr


def test_a_cancelled_download_ends_with_its_own_exit_code(workdir: Path) -> None:
    download_id = ok(workdir, "--as", "alice", "zip", *ALL_KEYS, "--store").strip()
    ok(workdir, "--as", "alice", "cancel", download_id)
    # Cancelled while it ran, or (had it finished first) its file deleted: no file either way.
    ended = satchel(workdir, "--as", "alice", "--json", "wait", download_id)
    assert ended.returncode == 4, ended.stderr
    error: dict[str, Any] = json.loads(ended.stdout)["error"]
    assert error["state"] in {"CANCELLED", "EXPIRED"}
    assert f"download {download_id} ended {error['state']}" in ended.stderr


def run_examples(workdir: Path, *names: str) -> subprocess.CompletedProcess[str]:
    """docs/examples/ files, one after the other, from `workdir` as from the repository root."""
    script = "set -euo pipefail\n" + "\n".join(f"bash {EXAMPLES / name}" for name in names)
    return subprocess.run(
        ["bash", "-c", script],
        cwd=workdir,
        env=cli.environment(),
        capture_output=True,
        text=True,
        timeout=cli.RUN_TIMEOUT * 2,
        check=False,
    )


def test_the_manuals_satchel_examples_work_as_written(stack: LocalStack, workdir: Path) -> None:
    # As in the repository: the virtualenv at .venv, the state file beside it.
    (workdir / ".venv").symlink_to(Path(sys.executable).parent.parent, target_is_directory=True)
    result = run_examples(workdir, "satchel-oneliner.sh", "satchel-session.sh", "satchel-scripts.sh")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("out.zip", "reports.zip", "q1.zip", "q2.zip"):
        assert zipfile.is_zipfile(workdir / name), name
    assert cli.sha256_of(workdir / "q2.zip") in result.stdout
    assert "exit 4" in result.stdout, result.stderr + stack.output()[-4000:]
    assert "ended FAILED: SourceMissing" in result.stderr
    assert f"{stack.api}/links/" in result.stdout  # the link's URL


def test_the_manuals_python_client_example_works_as_written(stack: LocalStack, workdir: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "client.py")],
        cwd=workdir,
        env=cli.environment(),
        capture_output=True,
        text=True,
        timeout=cli.RUN_TIMEOUT * 2,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert zipfile.is_zipfile(workdir / "reports.zip")
    listed = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert all(HEX_ID.fullmatch(download_id) for download_id in listed)
    assert "zip-" in "".join(listed.values())  # the new zip is among alice's DONE downloads
