"""The state machine's steps: Prepare -> Build -> Finalize, and Fail for any error.

(Large zips take Prepare -> BuildSegments -> Assemble instead: chalicelib/workflow/segments.py; and
an artifact the builder did not see whole is hashed by Digest: chalicelib/workflow/digest.py.)

Each step takes the state's input (a small dict: keys and counts, never contents) and
returns the next state's input. Each is idempotent, because Retry may run it again.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from chalicelib import downloadtypes
from chalicelib.core import clock, observability
from chalicelib.core.disclosure import INTERNAL_ERROR, shown_error
from chalicelib.core.errors import Cancelled, retried_when_transient
from chalicelib.core.models import ACTIVE_STATES, Artifact, Download, ErrorInfo, Progress, State
from chalicelib.downloadtypes.base import SurveyPlan
from chalicelib.runtime import Runtime
from chalicelib.s3 import artifacts, layout, manifest
from chalicelib.storage.downloads import StateConflict
from chalicelib.workflow.effects import NOTIFY, REMOVE, follow_up, follow_up_or_leave
from chalicelib.workflow.payloads import (
    BuildRun,
    Built,
    Digested,
    Failed,
    FailInput,
    Finished,
    Prepared,
    Start,
    StepError,
    counts,
)
from chalicelib.workflow.payloads import shown_error as as_json

# Prepare, Build, Finalize and Fail are four Lambda functions: the build machinery (the runs,
# segments, the assembler and multipart writer) is imported by the steps that build, so that
# Finalize and Fail do not load it on a cold start (docs/performance.md, "Cold start").
if TYPE_CHECKING:
    from chalicelib.workflow import runs, streamruns

log = logging.getLogger(__name__)
_MAX_ERROR_MESSAGE = 1000
_MAX_TRACE_CHARACTERS = 8000  # a log line's worth: the innermost frames are the last ones


def _load(runtime: Runtime, download_id: str) -> Download:
    download = runtime.downloads.require(download_id)
    observability.bind(download)
    return download


@retried_when_transient
def prepare(runtime: Runtime, event: Start) -> Prepared:
    download_id = event["download_id"]
    try:
        download = runtime.downloads.transition(
            download_id, [State.PENDING], State.RUNNING, started_at=clock.iso(clock.now())
        )
    except StateConflict as conflict:
        if conflict.current is None or conflict.current.state is not State.RUNNING:
            raise Cancelled(
                f"download is no longer pending: {conflict.current and conflict.current.state}"
            ) from None
        download = conflict.current  # a retried Prepare: already RUNNING, plan again
    from chalicelib.workflow import segments

    observability.bind(download)
    plan = downloadtypes.get(download.type).plan(runtime, download)
    # Large enough: segments for the Map to build in parallel; else one manifest for Build.
    # `parallel` is always there: the ASL's Choice tests a value, not a path that may be absent.
    segment_list = segments.split(runtime, download, plan.entries)
    output: Prepared = {
        "download_id": download_id,
        "totals": counts(plan.totals),
        "parallel": segment_list is not None,
        # The part size of the upload Build or Assemble writes: the plan's, fixed for its life.
        "part_size": segments.part_size(download, plan.entries, runtime.settings),
    }
    if segment_list is None:
        output["manifest_key"] = key = layout.manifest_key(download_id)
        manifest.write(runtime.s3, runtime.settings.artifact_bucket, key, plan.entries)
    else:
        output["segments"] = segment_list
    if not runtime.downloads.record_progress(download_id, plan.totals):
        _discard_when_cancelled(runtime, download_id)
        raise Cancelled("the download was cancelled while it was being prepared")
    return output


@retried_when_transient
def build(runtime: Runtime, event: Prepared, budget: runs.Budget | None = None) -> BuildRun:
    """The artifact into one multipart upload. A type built through a segment plan (the plain
    zip), as a single stream (a tar or tar.gz) or surveyed first (a zip with `manifest` or
    `on_missing: skip`) hands on before its Lambda run ends (`done` false: BuildHandsOn runs
    Build again, chalicelib/workflow/runs.py and streamruns.py), and so does a table type
    (chalicelib/workflow/rowruns.py); any other is built in this one run."""
    from chalicelib.workflow import rowruns, runs, streamruns

    download_id = event["download_id"]
    download = _load(runtime, download_id)
    kind = downloadtypes.get(download.type)
    if kind.can_segment(download.params) and kind.segments is not None:
        zipped = functools.partial(runs.Run, runtime, download, kind.segments)
        return _build_in_runs(runtime, event, download, zipped, budget)
    if kind.can_stream(download.params) and kind.stream is not None:
        streamed = functools.partial(streamruns.StreamRun, runtime, download, kind.stream)
        return _build_in_runs(runtime, event, download, streamed, budget)
    if kind.can_survey(download.params) and kind.survey is not None:
        return _build_surveyed(runtime, event, download, kind.survey, budget)
    if kind.rows is not None:  # a table type hands on between pages (workflow/rowruns.py)
        return _run_output(event, *rowruns.build(runtime, event, download, kind, budget))
    return _run_output(event, _build_at_once(runtime, event, download), None)


def _build_surveyed(
    runtime: Runtime, event: Prepared, download: Download, plan: SurveyPlan, budget: runs.Budget | None
) -> BuildRun:
    """A zip with `manifest` or `on_missing: skip`: runs 0, 1... survey its sources, a part a
    run (where the next goes on is saved in S3, as runs.py saves its state); the run that ends
    the survey writes the sources found as a manifest and goes on, with `surveyed` (the
    survey's parts) and `run` 0, as the first run of their zip through the segment plan
    (runs.py), which hands on as a plain zip does. A retried run surveys, or builds, again
    from the same saved state."""
    from chalicelib.workflow import runs
    from chalicelib.workflow.progress import ProgressTracker

    if "surveyed" in event:
        present = plan.segments(runtime, download, event["surveyed"])
        zipped = functools.partial(runs.Run, runtime, download, present)
        return _build_in_runs(runtime, event, download, zipped, budget)
    settings, download_id = runtime.settings, event["download_id"]
    s3, bucket = runtime.s3, settings.artifact_bucket
    run = int(event.get("run", 0))
    budget = budget or runs.Budget.of(None, settings)
    at = 0
    if run > 0:
        saved = s3.get_object(Bucket=bucket, Key=layout.run_key(download_id, None, run, "survey.json"))
        at = int(json.loads(saved["Body"].read())["at"])
    tracker = ProgressTracker(
        runtime.downloads, download_id, Progress(**event["totals"]), settings.progress_every_bytes
    )

    def entries(start: int) -> Iterator[manifest.Entry]:
        return itertools.islice(manifest.read(s3, bucket, event["manifest_key"]), start, None)

    try:
        found = plan.survey(runtime, download, entries, at, run, tracker, budget.low)
        tracker.flush()  # the totals without what is skipped; a cancelled download stops here
    except Cancelled:
        _discard_when_cancelled(runtime, download_id)
        raise
    if found.present is None:
        following = layout.run_key(download_id, None, run + 1, "survey.json")
        s3.put_object(Bucket=bucket, Key=following, Body=json.dumps({"at": found.at}).encode("utf-8"))
        built: Built = {
            "download_id": download_id,
            "artifact_key": layout.artifact_key(download_id),
            "size": 0,
            "sha256": None,
            "progress": counts(tracker.current),
        }
        return _run_output(event, built, run + 1)
    key = layout.surveyed_manifest_key(download_id)
    manifest.write(s3, bucket, key, found.present)
    surveyed: Prepared = {
        **event,
        "totals": counts(tracker.current),
        "manifest_key": key,
        "run": 0,
        "surveyed": run + 1,
    }
    return _build_surveyed(runtime, surveyed, runtime.downloads.require(download_id), plan, budget)


def _run_output(event: Prepared, built: Built, run: int | None) -> BuildRun:
    """Build's output: Prepare's fields go on (BuildHandsOn may send it back to Build), with
    what is built so far and, until done, the next run's number."""
    output: BuildRun = {
        "download_id": event["download_id"],
        "totals": event["totals"],
        "parallel": event["parallel"],
        "artifact_key": built["artifact_key"],
        "size": built["size"],
        "sha256": built["sha256"],
        "progress": built["progress"],
        "done": run is None,
    }
    if "manifest_key" in event:
        output["manifest_key"] = event["manifest_key"]
    if "part_size" in event:
        output["part_size"] = event["part_size"]
    if "surveyed" in event:
        output["surveyed"] = event["surveyed"]
    if run is not None:
        output["run"] = run
    return output


def _build_in_runs(
    runtime: Runtime,
    event: Prepared,
    download: Download,
    runner: Callable[[runs.Target, int, runs.Budget, runs.Trackers], runs.Run | streamruns.StreamRun],
    budget: runs.Budget | None,
) -> BuildRun:
    """One run of a build that hands on: `runner` is the zip's segment-plan run (runs.py) or
    a single stream's (streamruns.py), given the target, this run's number, budget and trackers."""
    from chalicelib.workflow import runs
    from chalicelib.workflow.progress import ProgressTracker

    settings, download_id = runtime.settings, event["download_id"]
    run = int(event.get("run", 0))
    target = runs.Target(
        download_id=download_id,
        segment=None,
        key=layout.artifact_key(download_id),
        manifest_key=event["manifest_key"],
        content_type=downloadtypes.get(download.type).artifact_format(download.params).content_type,
        part_size=event.get("part_size"),
    )
    totals = Progress(**event["totals"])

    def tracker(done: Progress | None) -> ProgressTracker:
        return ProgressTracker(
            runtime.downloads, download_id, totals, settings.progress_every_bytes, done=done
        )

    budget = budget or runs.Budget.of(None, settings)
    outcome = runner(target, run, budget, tracker).go()
    built: Built = {
        "download_id": download_id,
        "artifact_key": target.key,
        "size": outcome.size,
        "sha256": outcome.sha256,
        "progress": counts(outcome.progress),
    }
    return _run_output(event, built, None if outcome.done else outcome.run)


def _build_at_once(runtime: Runtime, event: Prepared, download: Download) -> Built:
    from chalicelib.archive.assembly import Assembler
    from chalicelib.s3.multipart import MultipartWriter
    from chalicelib.workflow.progress import ProgressTracker

    download_id = event["download_id"]
    settings = runtime.settings
    kind = downloadtypes.get(download.type)
    # A retried Build starts over: whatever a previous attempt left open goes first.
    artifacts.abort_uploads(runtime.s3, settings.artifact_bucket, download_id)
    tracker = ProgressTracker(
        runtime.downloads, download_id, Progress(**event["totals"]), settings.progress_every_bytes
    )
    entries = manifest.read(runtime.s3, settings.artifact_bucket, event["manifest_key"])
    writer = MultipartWriter(
        runtime.s3,
        settings.artifact_bucket,
        layout.artifact_key(download_id),
        event.get("part_size", settings.part_size),
        kind.artifact_format(download.params).content_type,
    )
    try:
        # Ranges of sources in the render are copied by S3; then sha256 is None (the Digest step).
        Assembler(runtime.s3, writer, settings.read_chunk_bytes).write_all(
            kind.render(runtime, download, entries, tracker)
        )
        tracker.flush()
        sha256 = writer.complete()
    except Cancelled:
        writer.abort()
        _discard_when_cancelled(runtime, download_id)
        raise
    except BaseException:
        writer.abort()
        raise
    return {
        "download_id": download_id,
        "artifact_key": writer.key,
        "size": writer.size,
        "sha256": sha256,
        "progress": counts(tracker.current),
    }


@retried_when_transient
def finalize(runtime: Runtime, event: Digested) -> Finished:
    download_id = event["download_id"]
    settings = runtime.settings
    download = _load(runtime, download_id)
    finished = clock.now()
    artifact = Artifact(
        key=event["artifact_key"],
        size=event["size"],
        sha256=event["sha256"],
        content_type=downloadtypes.get(download.type).artifact_format(download.params).content_type,
    )
    try:
        download = runtime.downloads.transition(
            download_id,
            [State.RUNNING],
            State.DONE,
            artifact=asdict(artifact),
            progress=event["progress"],
            finished_at=clock.iso(finished),
            expires_at=clock.iso(clock.later(download.retention_seconds, finished)),
            # Owed with DONE: if this step dies before the event is recorded, cleanup records it.
            effects=(NOTIFY,),
        )
    except StateConflict as conflict:
        if conflict.current is None or conflict.current.state is not State.DONE:
            # Cancelled between Build and Finalize: the artifact must not outlive that.
            artifacts.remove_artifact(runtime.s3, settings.artifact_bucket, download_id)
        download = conflict.current or download
    else:
        # Only a record and a queue message: never a receiver. An error is left to cleanup,
        # never failing a download that is DONE.
        follow_up_or_leave(runtime, download, (NOTIFY,))
    artifacts.remove_temporary(runtime.s3, settings.artifact_bucket, download_id)
    return {"download_id": download_id, "state": download.state.value}


@retried_when_transient
def fail(runtime: Runtime, event: FailInput) -> Failed:
    """Record the error, then remove every trace of the attempt: uploads, temporaries, artifact.

    Only a domain error's message is recorded; any other is logged and shown as generic.
    """
    download_id = event["download_id"]
    raw = event.get("error") or StepError()
    lambda_error = _lambda_error(raw)
    error = shown_error(_error_info(raw, lambda_error), download_id)
    if error.code == INTERNAL_ERROR and (trace := _stack_trace(lambda_error)):
        # Beside the message shown_error logged: where the failing step raised it, which a
        # log holds nowhere else (Step Functions keeps it in the execution's history only).
        log.error("download %s: where the failing step raised it:\n%s", download_id, trace)
    state: State | None
    # Owed once FAILED is recorded: if this step dies after that, the cleanup sweep does them.
    effects = (REMOVE, NOTIFY)
    try:
        download = runtime.downloads.transition(
            download_id,
            ACTIVE_STATES,
            State.FAILED,
            effects=effects,
            error=asdict(error),
            finished_at=clock.iso(clock.now()),
        )
    except StateConflict as conflict:
        # Already terminal (cancelled, most often): keep that state, still clean up.
        state = conflict.current.state if conflict.current else None
        if conflict.current:
            observability.bind(conflict.current)
        if state is not State.DONE:
            artifacts.remove_everything(runtime.s3, runtime.settings.artifact_bucket, download_id)
    else:
        observability.bind(download)
        state = download.state
        follow_up(runtime, download, effects)
    log.warning("download %s ended %s: %s", download_id, state, error)
    return {"download_id": download_id, "state": state.value if state else None, "error": as_json(error)}


def _lambda_error(raw: StepError) -> dict[str, Any]:
    """The Cause as the Lambda's error JSON ({errorType, errorMessage, stackTrace}), or {}."""
    try:
        parsed = json.loads(raw.get("Cause") or "")
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _error_info(raw: StepError, lambda_error: dict[str, Any]) -> ErrorInfo:
    """Step Functions hands over {Error, Cause}; Cause is the Lambda's error JSON when it has
    one (`lambda_error`, parsed)."""
    code = str(raw.get("Error") or "UnknownError")
    message = lambda_error.get("errorMessage") or raw.get("Cause") or ""
    return ErrorInfo(code=code, message=str(message)[:_MAX_ERROR_MESSAGE] or code)


def _stack_trace(lambda_error: dict[str, Any]) -> str:
    """The Lambda's stack trace (the runtime's `stackTrace`), its innermost frames kept, or ""."""
    frames = lambda_error.get("stackTrace")
    if not isinstance(frames, list):
        return ""
    return "".join(str(frame) for frame in frames)[-_MAX_TRACE_CHARACTERS:]


def _discard_when_cancelled(runtime: Runtime, download_id: str) -> None:
    """A cancelled execution may be stopped before Fail runs: the step cleans up itself."""
    artifacts.remove_everything(runtime.s3, runtime.settings.artifact_bucket, download_id)
