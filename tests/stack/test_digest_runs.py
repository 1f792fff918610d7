"""Digest needs no single Lambda run to read the whole artifact: with a budget so small that
every run hands on after one chunk, it loops through DigestHandsOn and still gives the
SHA-256 of the very bytes shipped; a copied member's wrong CRC-32 met in a later run still
fails the download with nothing left behind; a retried run goes on from the same state; and
a download cancelled while Digest hands on ends CANCELLED with nothing left behind.

The budget is the real mechanism, as in test_continuation.py: the local dispatcher's Lambda
context counts down from the function's timeout (satchel_local/lambdas.py), and
SATCHEL_HANDOFF_RESERVE_MS above that timeout makes every run short of time. Build then hands
on after each member too, so its `sha256` is None and Digest always runs.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

import pytest
import requests

from chalicelib.core import clients
from chalicelib.runtime import Runtime
from chalicelib.s3 import sources
from chalicelib.workflow import digest as digests
from chalicelib.workflow.payloads import Digesting, DigestRun
from chalicelib.workflow.runs import Budget
from satchel_local import lambdas
from tests.support import executions
from tests.support.faults import Fault, Injector
from tests.support.stack import Satchel

KIB = 1024
MIB = 1024 * KIB
# Above the functions' 900 s timeout: every run is short of time once it has read a chunk.
ALWAYS_SHORT = str(10_000 * 1000)
CHUNK = 64 * KIB


def _invocations_of(satchel: Satchel, download_id: str, state: str) -> int:
    """The Lambda runs of `state`, a Retry's included (it schedules the task again without
    entering the state again)."""
    current, invoked = None, 0
    for event in executions.history(satchel, download_id):
        if event["type"] == "TaskStateEntered":
            current = event["stateEnteredEventDetails"]["name"]
        invoked += event["type"] == "TaskScheduled" and current == state
    return invoked


def _build(satchel: Satchel, params: dict[str, Any]) -> tuple[str, bytes, str]:
    created = satchel.create(params)
    assert created.status == 202, created.body
    done = satchel.wait(created.json["id"], timeout=180)
    assert done["state"] == "DONE", done
    body = requests.get(satchel.call("GET", done["url"]).headers["Location"], timeout=60).content
    return created.json["id"], body, str(done["artifact"]["sha256"])


def _seed(satchel: Satchel, prefix: str, sizes: list[int]) -> None:
    for index, size in enumerate(sizes):
        satchel.put_source(f"{prefix}{index}.bin", os.urandom(size))


def _no_temporaries(satchel: Satchel) -> None:
    assert [key for key in satchel.artifact_objects() if not key.startswith("artifacts/")] == []
    assert satchel.open_uploads() == []


def test_digest_hands_on_after_each_chunk_and_gives_the_sha256_of_the_bytes_shipped(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(satchel, "acme/digestruns/", [150 * KIB, 200 * KIB, 90 * KIB])
    params = {"prefixes": ["acme/digestruns/"], "compression": "store"}
    monkeypatch.setenv("SATCHEL_READ_CHUNK_BYTES", str(CHUNK))
    _, at_once, _ = _build(satchel, params)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    download_id, in_runs, sha256 = _build(satchel, params)
    assert in_runs == at_once
    assert sha256 == hashlib.sha256(in_runs).hexdigest()
    chunks = -(-len(in_runs) // CHUNK)
    assert chunks >= 7
    assert executions.runs_of(satchel, download_id, "Digest") == chunks  # one chunk a run
    # Build stops between two 64 KiB read chunks of a member too: a run writes a chunk, and
    # the one that ends a member begins the next (its header and first chunk). The members
    # are 3, 4 and 2 chunks (150, 200, 90 KiB): a stop after every chunk but each member's
    # last, 2 + 3 + 1 of them, so 6 + 1 runs.
    assert executions.runs_of(satchel, download_id, "Build") == 7
    _no_temporaries(satchel)  # Finalize removed the runs' saved states


def _wrong_crc_from_s3(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """S3's checksum of the source of `size` bytes is off by one (as a composite CRC taken
    for the object's would be): only Digest, reading the copy back, can tell."""
    original = sources.full_object_crc32

    def lying(head: dict[str, Any], parts_count: int | None = None) -> int | None:
        value = original(head, parts_count)
        if value is not None and head.get("ContentLength") == size:
            return value ^ 1
        return value

    monkeypatch.setattr(sources, "full_object_crc32", lying)


def test_a_wrong_crc_met_in_a_later_digest_run_fails_and_leaves_nothing(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 3 MiB streamed, then 11 MiB copied by S3: its check ends past 14 MiB, in the eighth
    # 2 MiB chunk, so the mismatch is met in Digest's eighth run.
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))
    monkeypatch.setenv("SATCHEL_SERVER_COPY_MIN_BYTES", str(10 * MIB))
    monkeypatch.setenv("SATCHEL_READ_CHUNK_BYTES", str(2 * MIB))
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    _seed(satchel, "acme/latecrc/", [3 * MIB, 11 * MIB])
    _wrong_crc_from_s3(monkeypatch, 11 * MIB)
    created = satchel.create({"prefixes": ["acme/latecrc/"], "compression": "store"})
    assert created.status == 202, created.body
    failed = satchel.wait(created.json["id"], timeout=180)
    assert failed["state"] == "FAILED", failed
    assert failed["error"]["code"] == "ChecksumMismatch"
    assert failed["artifact"] is None
    assert executions.runs_of(satchel, created.json["id"], "Digest") == 8
    assert executions.failures_of(satchel, created.json["id"]) == ["ChecksumMismatch"]
    assert satchel.artifact_objects() == []  # no artifact, no saved state, no temporaries
    assert satchel.open_uploads() == []


def test_a_retried_digest_run_goes_on_from_the_same_state(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(satchel, "acme/digestretry/", [120 * KIB, 140 * KIB])
    params = {"prefixes": ["acme/digestretry/"], "compression": "store"}
    monkeypatch.setenv("SATCHEL_READ_CHUNK_BYTES", str(CHUNK))
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    _, once, sha256_once = _build(satchel, params)
    runs_once = -(-len(once) // CHUNK)
    clients.reset()
    injector = Injector(satchel.stack.table)
    injector.install()
    # Digest's second save is its second run's (run 1 saving for run 2): it fails on every
    # attempt, the run fails, and Retry runs run 1 again from the state run 0 saved.
    with injector.armed(Fault("s3.PutObject", "internal", at=2, step="app.digest")) as arming:
        download_id, retried, sha256 = _build(satchel, params)
    assert injector.fired(arming) > 0
    assert executions.failures_of(satchel, download_id) == ["TransientError"]
    assert executions.runs_of(satchel, download_id, "Digest") == runs_once
    assert _invocations_of(satchel, download_id, "Digest") == runs_once + 1  # run 1 twice
    assert retried == once
    assert sha256 == sha256_once == hashlib.sha256(retried).hexdigest()
    _no_temporaries(satchel)


@pytest.mark.parametrize("when", ["as_a_run_begins", "while_a_run_reads"])
def test_a_download_cancelled_while_digest_hands_on_ends_cancelled_and_leaves_nothing(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    _seed(satchel, "acme/digestcancel/", [150 * KIB, 200 * KIB, 90 * KIB])
    monkeypatch.setenv("SATCHEL_READ_CHUNK_BYTES", str(CHUNK))
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    reached, cancelled = threading.Event(), threading.Event()

    def cancel_here() -> None:
        reached.set()  # the test cancels the download now (a real DELETE: the execution is stopped)
        assert cancelled.wait(60), "the test never cancelled"

    original = digests.digest

    def cancelled_in_third_run(runtime: Runtime, event: Digesting, budget: Budget | None = None) -> DigestRun:
        if event.get("digest_run", 0) != 2:
            return original(runtime, event, budget)
        if when == "as_a_run_begins":
            # The execution's stop came too late for this run (or failed, best effort).
            cancel_here()
            return original(runtime, event, budget)

        def remaining_ms() -> int:
            # Asked after the run's first chunk: cancelled while it reads, then short of time.
            if not reached.is_set():
                cancel_here()
            return 0

        return original(runtime, event, Budget(remaining_ms, 1))

    monkeypatch.setattr(digests, "digest", cancelled_in_third_run)
    reads: list[int] = []
    read_on = digests.read_on

    def counted(*args: Any, **kwargs: Any) -> str | digests.Reading:
        reads.append(1)
        return read_on(*args, **kwargs)

    monkeypatch.setattr(digests, "read_on", counted)
    created = satchel.create({"prefixes": ["acme/digestcancel/"], "compression": "store"})
    assert created.status == 202, created.body
    download_id = created.json["id"]
    assert reached.wait(120), "Digest never reached its third run"
    try:
        reply = satchel.call("DELETE", f"/downloads/{download_id}")
    finally:
        cancelled.set()
    assert reply.status == 202, reply.body
    assert reply.json["state"] == "CANCELLED"
    assert satchel.wait_execution(download_id, 60) in {"ABORTED", "FAILED"}
    assert lambdas.wait_idle(timeout=30)
    final = satchel.call("GET", f"/downloads/{download_id}").json
    assert final["state"] == "CANCELLED"
    assert final["artifact"] is None
    assert executions.runs_of(satchel, download_id, "Digest") == 3  # none after the cancelled one
    # A run that begins cancelled reads no byte of the artifact; one cancelled as it reads
    # saves nothing for a next run.
    assert len(reads) == (2 if when == "as_a_run_begins" else 3)
    # The run that saw the cancellation removed the artifact, tmp/<id>/ (the runs' saved
    # states, the manifest, the checks) and saved nothing for a next run.
    assert satchel.artifact_objects() == []
    assert satchel.open_uploads() == []
