"""Assemble hands on between Lambda runs too: with a budget so small that every run is short
of time, it joins the segments over several runs of the real state machine (AssembleHandsOn),
stopping between segments, between two copied parts of one, and before the central
directory, and still writes the very bytes of an Assemble in one run.

The budget is the real mechanism (as in tests/stack/test_continuation.py): the local
dispatcher's Lambda context counts down from the function's timeout (satchel_local/lambdas.py)
and SATCHEL_HANDOFF_RESERVE_MS, set above that timeout, makes every run find itself short of
time once it has copied something.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from chalicelib.archive import assembly
from chalicelib.core import clients
from chalicelib.runtime import Runtime
from chalicelib.workflow import segments
from chalicelib.workflow.payloads import AssembleRun, Assembling
from chalicelib.workflow.runs import Budget
from satchel_local import lambdas
from tests.support import archive_readers, executions
from tests.support.faults import Fault, Injector
from tests.support.stack import Satchel

MIB = 1024 * 1024
# Above the functions' 900 s timeout: every run is short of time once it has copied something.
ALWAYS_SHORT = str(10_000 * 1000)
PREFIX = "acme/joined/"


@pytest.fixture
def sources(satchel: Satchel, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Three stored members, a segment each: a 20 MiB one (its segment copied in three parts
    of at most 8 MiB), a small one (read through, its bytes held short of a part), a 12 MiB
    one (topped up to 5 MiB through the worker, the rest copied)."""
    monkeypatch.setattr(assembly, "S3_MAX_PART_SIZE", 8 * MIB)
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))
    bodies = {
        f"{PREFIX}a.bin": os.urandom(20 * MIB),
        f"{PREFIX}b.txt": b"the middle segment\n" * 200,
        f"{PREFIX}c.bin": os.urandom(12 * MIB),
    }
    for key, body in bodies.items():
        satchel.put_source(key, body)
    return {key.removeprefix("acme/"): body for key, body in bodies.items()}


def _in_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SATCHEL_PARALLEL_MIN_FILES", "1")
    monkeypatch.setenv("SATCHEL_SEGMENT_FILES", "1")


def _build(satchel: Satchel, prefix: str = PREFIX, timeout: float = 240) -> tuple[str, bytes]:
    created = satchel.create({"prefixes": [prefix], "compression": "store"})
    assert created.status == 202, created.body
    done = satchel.wait(created.json["id"], timeout=timeout)
    assert done["state"] == "DONE", done
    body = requests.get(satchel.call("GET", done["url"]).headers["Location"], timeout=60).content
    assert hashlib.sha256(body).hexdigest() == done["artifact"]["sha256"]  # Digest hashed the runs' bytes
    assert len(body) == done["artifact"]["size"]
    return created.json["id"], body


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool | None]]:
    """Assemble's runs as they happen: (its run number, done; None: it failed)."""
    seen: list[tuple[int, bool | None]] = []
    original = segments.assemble

    def counted(runtime: Runtime, event: Assembling, budget: Budget | None = None) -> AssembleRun:
        try:
            joined = original(runtime, event, budget)
        except Exception:
            seen.append((event.get("assemble_run", 0), None))
            raise
        seen.append((event.get("assemble_run", 0), joined["done"]))
        return joined

    monkeypatch.setattr(segments, "assemble", counted)
    return seen


def test_assemble_hands_on_between_segments_and_parts_and_writes_the_same_bytes(
    satchel: Satchel, sources: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, single = _build(satchel)  # one Build, no segments
    _in_segments(monkeypatch)
    at_once_id, at_once = _build(satchel)
    assert executions.runs_of(satchel, at_once_id, "Assemble") == 1
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    seen = _counting(monkeypatch)
    download_id, in_runs = _build(satchel)
    # a.bin's segment in three copied parts, a run each; b.txt's read through; c.bin's; then
    # the central directory in a run of its own.
    assert seen == [(run, run == 5) for run in range(6)]
    assert executions.runs_of(satchel, download_id, "Assemble") == 6
    # The payload carries the next run's number, never what it goes on from (that is in S3).
    outputs = [
        json.loads(event["stateExitedEventDetails"]["output"])
        for event in executions.history(satchel, download_id)
        if event["type"] == "TaskStateExited" and event["stateExitedEventDetails"]["name"] == "Assemble"
    ]
    assert [(output["done"], output.get("assemble_run")) for output in outputs[:5]] == [
        (False, run) for run in range(1, 6)
    ]
    assert outputs[5]["done"] is True
    assert max(len(json.dumps(output)) for output in outputs) < 1000
    assert in_runs == at_once == single
    archive_readers.every_zip_reader_accepts(in_runs, tmp_path, sources)
    # Finalize removed every run's saved state with the rest of tmp/<id>/.
    assert satchel.open_uploads() == []
    assert f"artifacts/{download_id}" in satchel.artifact_objects()
    assert not [key for key in satchel.artifact_objects() if key.startswith("tmp/")]


def test_segments_of_one_part_each_are_copied_at_once_in_fixed_part_numbers(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    prefix = "acme/together/"
    monkeypatch.setenv("SATCHEL_PART_SIZE", str(5 * MIB))
    bodies = {f"{prefix}{index}.bin": os.urandom(6 * MIB) for index in range(4)}
    for key, body in bodies.items():
        satchel.put_source(key, body)
    _, single = _build(satchel, prefix)  # one Build, no segments
    _in_segments(monkeypatch)
    monkeypatch.setenv("SATCHEL_FETCH_CONCURRENCY", "2")
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    copies: list[tuple[str, int]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        copies.append((threading.current_thread().name, int(params["PartNumber"])))

    events = clients.s3().meta.events  # the client the workers use (chalicelib/core/clients.py)
    events.register("provide-client-params.s3.UploadPartCopy", record)
    try:
        download_id, in_runs = _build(satchel, prefix)
    finally:
        events.unregister("provide-client-params.s3.UploadPartCopy", record)
    # Two segments a run (each a 6 MiB part), then the central directory.
    assert executions.runs_of(satchel, download_id, "Assemble") == 3
    assert sorted(number for _, number in copies) == [1, 2, 3, 4]
    assert all(thread.startswith("copy") for thread, _ in copies), copies  # from the pool
    assert in_runs == single
    archive_readers.every_zip_reader_accepts(
        in_runs, tmp_path, {key.removeprefix("acme/"): body for key, body in bodies.items()}
    )


@pytest.mark.parametrize(
    ("operation", "kind", "at", "run"),
    [
        # Run 1's copied part (a.bin's second): written, its answer lost.
        ("s3.UploadPartCopy", "timeout", 2, 1),
        # Run 3's read of b.txt's segment through the worker (each run from 1 on first reads
        # its saved state and held bytes).
        ("s3.GetObject", "internal", 7, 3),
        # Run 3's saved state for run 4 (each run saves held bytes, then its state).
        ("s3.PutObject", "throttle", 8, 3),
        # The last run's completion: it happened, its answer lost; the retry finds it done.
        ("s3.CompleteMultipartUpload", "timeout", 1, 5),
    ],
)
def test_a_retried_assemble_run_goes_on_from_the_same_state_and_duplicates_nothing(
    satchel: Satchel,
    sources: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    operation: str,
    kind: str,
    at: int,
    run: int,
) -> None:
    _in_segments(monkeypatch)
    _, at_once = _build(satchel)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    seen = _counting(monkeypatch)
    clients.reset()
    injector = Injector(satchel.stack.table)
    injector.install()
    # Every attempt botocore makes fails: the run fails, and Retry runs it again from the
    # same saved state (the same keys, the same part numbers).
    with injector.armed(Fault(operation, kind, at=at, step="app.assemble")) as arming:
        download_id, in_runs = _build(satchel)
    assert injector.fired(arming) > 0
    assert executions.failures_of(satchel, download_id) == ["TransientError"]
    assert [number for number, done in seen if done is None] == [run]
    assert [number for number, done in seen if done is not None] == list(range(6))
    # Six runs still (Retry runs a task again without entering its state again).
    assert executions.runs_of(satchel, download_id, "Assemble") == 6
    assert in_runs == at_once
    archive_readers.every_zip_reader_accepts(in_runs, tmp_path, sources)
    assert satchel.open_uploads() == []


def test_a_download_cancelled_between_assemble_runs_is_discarded(
    satchel: Satchel, sources: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    _in_segments(monkeypatch)
    monkeypatch.setenv("SATCHEL_HANDOFF_RESERVE_MS", ALWAYS_SHORT)
    reached, cancelled = threading.Event(), threading.Event()
    original = segments.assemble

    def held_at_second_run(runtime: Runtime, event: Assembling, budget: Budget | None = None) -> AssembleRun:
        if event.get("assemble_run") == 1:
            reached.set()
            assert cancelled.wait(30), "the test never cancelled"
        return original(runtime, event, budget)

    monkeypatch.setattr(segments, "assemble", held_at_second_run)
    created = satchel.create({"prefixes": [PREFIX], "compression": "store"})
    download_id = created.json["id"]
    assert reached.wait(120), "Assemble never handed on"
    assert satchel.open_uploads() != []  # the first run's upload, carried on
    reply = satchel.call("DELETE", f"/downloads/{download_id}")
    cancelled.set()
    assert (reply.status, reply.json["state"]) == (202, "CANCELLED")
    assert satchel.wait_execution(download_id, 60) in {"ABORTED", "FAILED"}
    assert lambdas.wait_idle(timeout=30)
    final: dict[str, Any] = satchel.call("GET", f"/downloads/{download_id}").json
    assert (final["state"], final["artifact"]) == ("CANCELLED", None)
    assert satchel.open_uploads() == []
    assert satchel.artifact_objects() == []
