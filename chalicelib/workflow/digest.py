"""The Digest step: the SHA-256 of an artifact the builder did not see whole, and the
CRC-32 of every member whose bytes no worker read.

When S3 copied parts of the artifact (server-side assembly, parallel segments, a build of
several runs), no worker saw every byte, and S3 keeps no SHA-256 of a multipart object (its
full-object checksums are CRCs). So the artifact is read back once, a chunk at a time, and
hashed: the `sha256` a client verifies is the real one of the bytes it downloads. On the same
pass each copied member's range is checked against the CRC-32 its headers announce
(chalicelib/archive/integrity.py): a mismatch ends the download FAILED `ChecksumMismatch`,
never DONE: the step raises, and the Catch's MarkFailed removes the artifact with everything
else of the download.

A large artifact takes more than one Lambda run to read (1 TiB at a few hundred MB/s is an
hour or two; a run has 15 minutes), so Digest hands on as Build does
(chalicelib/workflow/runs.py): between chunks it asks its `Budget` whether less than
`handoff_reserve_ms` is left of the run; if so it saves where it is and returns `done: false`
with the next run's number (`digest_run`), and DigestHandsOn in the state machine sends it
back here. Each run reads on from where the last one stopped with one ranged GET, and reads
at least one chunk, so every run gets on. What run n saves for run n+1 is one object,
`tmp/<id>/digest/<n+1>/state.json` (s3/layout.py): the SHA-256's internal state and the
Verifier's (the offset reached, the partial CRC-32 of the member it is in). Run n reads only
run n's object and writes only run n+1's, so a retried run (Step Functions' Retry) reads the
same state and writes the same key again: nothing is hashed twice or skipped. Finalize and
MarkFailed remove these objects with the rest of `tmp/<id>/`.

A download cancelled while Digest hands on stops it as it stops Build and Assemble: a run
that would hand on reads the record before it saves anything, and each run after the first
reads it before it reads a byte (cancelling stops the execution, best effort: a run already
running, or the next one if the stop failed, must notice by itself). If the download is no
longer RUNNING, the run removes everything of it (the artifact, `tmp/<id>/`, any upload)
and raises `Cancelled`; the Catch's MarkFailed keeps the CANCELLED state.

The SHA-256 is `rehashes.PySha256` (RustCrypto's sha2; pinned in requirements.txt), not
hashlib's: a hashlib object cannot be serialised (no pickling, no export of its internal
state; `copy()` stays in the process), and a SHA-256, unlike a CRC-32, cannot be combined
from the digests of the pieces. rehashes serialises its state (104 bytes: the eight words,
the block count, the partial block) and hashes as fast as hashlib (64 MiB in 0.035 s, both,
on the development machine). Its state format is its own: an upgrade of the pin must keep it,
or an execution handing on across the deployment fails (MarkFailed) instead of resuming.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import rehashes

from chalicelib.archive import integrity
from chalicelib.core.errors import Cancelled, retried_when_transient
from chalicelib.core.models import State
from chalicelib.runtime import Runtime
from chalicelib.s3 import artifacts, layout
from chalicelib.workflow.payloads import Digesting, DigestRun
from chalicelib.workflow.runs import Budget

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_s3.client import S3Client


class Sha256:
    """A SHA-256 whose state can be saved in one process and resumed in another."""

    def __init__(self, saved: bytes | None = None) -> None:
        self._hash = rehashes.PySha256() if saved is None else rehashes.PySha256.deserialize(saved)

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def saved(self) -> bytes:
        return bytes(self._hash.serialize())

    def hexdigest(self) -> str:
        return str(self._hash.finalize())


@dataclass(frozen=True)
class Reading:
    """Where a read of the artifact stopped: its SHA-256's state, and its Verifier's (whose
    position is the offset the next run reads from)."""

    sha256: bytes
    verifier: integrity.VerifierState

    def to_json(self) -> bytes:
        state = {"sha256": base64.b64encode(self.sha256).decode("ascii"), "verifier": self.verifier.to_json()}
        return json.dumps(state).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> Reading:
        state: dict[str, Any] = json.loads(raw)
        verifier = integrity.VerifierState.from_json(state["verifier"])
        return cls(base64.b64decode(state["sha256"], validate=True), verifier)


def read_on(
    s3: S3Client,
    bucket: str,
    key: str,
    chunk_bytes: int,
    checks: Iterable[integrity.Check] = (),
    reading: Reading | None = None,
    budget: Budget | None = None,
) -> str | Reading:
    """Reads the object on from where `reading` stopped (from its start when None), verifying
    `checks` on the way (ChecksumMismatch). Its SHA-256 once read to the end; where it stopped
    if the budget ran low first, which it asks after each chunk but the last."""
    sha256 = Sha256(reading.sha256 if reading else None)
    verifier = integrity.Verifier(checks, reading.verifier if reading else None)
    offset = verifier.position
    # From 0 a plain GET: a Range starting at 0 would be refused on an empty object.
    if offset:
        response = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-")
    else:
        response = s3.get_object(Bucket=bucket, Key=key)
    end = offset + response["ContentLength"]
    body = response["Body"]
    try:
        for chunk in body.iter_chunks(chunk_bytes):
            sha256.update(chunk)
            verifier.update(chunk)
            if verifier.position < end and budget is not None and budget.low():
                return Reading(sha256.saved(), verifier.state)
    finally:
        body.close()
    verifier.finish()
    return sha256.hexdigest()


@retried_when_transient
def digest(runtime: Runtime, event: Digesting, budget: Budget | None = None) -> DigestRun:
    settings, s3 = runtime.settings, runtime.s3
    bucket, download_id = settings.artifact_bucket, event["download_id"]
    run = event.get("digest_run", 0)
    if run:
        _still_running(runtime, download_id)
    checks = list(integrity.read(s3, bucket, layout.checks_key(download_id)))
    reading = None
    if run:
        saved = s3.get_object(Bucket=bucket, Key=layout.digest_state_key(download_id, run))["Body"].read()
        reading = Reading.from_json(saved)
    read = read_on(s3, bucket, event["artifact_key"], settings.read_chunk_bytes, checks, reading, budget)
    if isinstance(read, str):
        return {**event, "sha256": read, "done": True, "digest_run": run}
    _still_running(runtime, download_id)
    following = run + 1
    s3.put_object(
        Bucket=bucket,
        Key=layout.digest_state_key(download_id, following),
        Body=read.to_json(),
        ContentType="application/json",
    )
    return {**event, "sha256": None, "done": False, "digest_run": following}


def _still_running(runtime: Runtime, download_id: str) -> None:
    """Cancelled (or ended otherwise) while Digest hands on: nothing of the download is left."""
    if runtime.downloads.require(download_id).state is State.RUNNING:
        return
    artifacts.remove_everything(runtime.s3, runtime.settings.artifact_bucket, download_id)
    raise Cancelled("the download was cancelled while its artifact was read back")
