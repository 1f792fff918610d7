"""The payloads the state machine hands between its steps (statemachine/download.asl.json).

Each step's Lambda takes its state's input and returns the next state's input; these are
their shapes, in the order a download goes through them. tests/unit/workflow/test_payloads.py holds every
path the ASL reads or writes to a field declared here. Small by design: keys and counts,
never contents (a state's payload is capped at 256 KB).
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

from chalicelib.core.models import ErrorInfo, Progress


class Counts(TypedDict):
    """models.Progress as JSON (`asdict`): the totals Prepare planned, or what is done."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    rows_done: int
    rows_total: int


class StepError(TypedDict, total=False):
    """What a Catch puts at `$.error`: the error's name, and the Lambda's error JSON as Cause."""

    Error: str
    Cause: str


class Start(TypedDict):
    """The execution's input (executions.start): Prepare's."""

    download_id: str


class SegmentList(TypedDict):
    """Where the Distributed Map reads the segments' numbers (its ItemReader: a JSON array in
    S3, never in a payload), how many there are, and how many are built at once."""

    bucket: str
    key: str
    count: int
    concurrency: int


class Prepared(TypedDict):
    """Prepare's output: the input of ChooseBuild, Build, BuildSegments and Assemble.

    `parallel` is always there (the Choice tests a value, not a path that may be absent);
    then `segments` when true, else `manifest_key`. `run` is there when a Build handed on
    (chalicelib/workflow/runs.py): the run that goes on from where the last one stopped.
    `part_size` is the part size of the upload Build or Assemble writes (the plan's:
    chalicelib/workflow/segments.py), absent: SATCHEL_PART_SIZE.
    """

    download_id: str
    totals: Counts
    parallel: bool
    manifest_key: NotRequired[str]
    segments: NotRequired[SegmentList]
    run: NotRequired[int]
    part_size: NotRequired[int]
    # A zip with manifest or on_missing: skip, once surveyed: the survey's parts (the runs
    # from then on build the sources found, `manifest_key`, with `run` from 0 again).
    surveyed: NotRequired[int]


class SegmentInput(TypedDict):
    """One Map item (the ItemSelector), or a segment's run handing on: BuildSegment's input."""

    download_id: str
    totals: Counts
    index: int
    run: NotRequired[int]


class SegmentBuilt(SegmentInput):
    """BuildSegment's output: `done`, or the `run` to go on with (SegmentHandsOn loops back).

    SegmentDone hands back {} in its place, and the Map drops that (ResultPath null)."""

    done: bool
    size: int
    files: int


class _Artifact(TypedDict):
    download_id: str
    artifact_key: str
    size: int
    progress: Counts


class Built(_Artifact):
    """Build's and Assemble's output: CheckDigest's and Digest's input.

    `sha256` is None when S3 copied bytes the builder never saw: CheckDigest sends it to Digest.
    """

    sha256: str | None


class Digesting(Built):
    """Digest's input: Built (CheckDigest found no `sha256`) for its first run; for each
    later run, the output of the run before, `digest_run` its number (chalicelib/workflow/digest.py)."""

    digest_run: NotRequired[int]


class DigestRun(_Artifact):
    """Digest's output: DigestHandsOn sends it back to Digest until `done`, then to Finalize.

    Until done, `sha256` is None and `digest_run` the next run's number; what that run goes
    on from is in S3, never here."""

    sha256: str | None
    done: bool
    digest_run: int


class Digested(_Artifact):
    """Digest's last output, and Built once CheckDigest let it through: Finalize's input."""

    sha256: str


class BuildRun(Built):
    """Build's output: BuildHandsOn sends it back to Build until `done`, then to CheckDigest.

    Until done, `size` and `progress` are what is written so far, `sha256` None, and `run`
    the next run's number; Prepare's fields go on with it.
    """

    totals: Counts
    parallel: bool
    manifest_key: NotRequired[str]
    done: bool
    run: NotRequired[int]
    part_size: NotRequired[int]
    surveyed: NotRequired[int]


class Assembling(Prepared):
    """Assemble's input: Prepared for its first run; for each later run, the output of the run
    before (AssembleRun), `assemble_run` its number (chalicelib/workflow/segments.py)."""

    assemble_run: NotRequired[int]


class AssembleRun(Built):
    """Assemble's output: AssembleHandsOn sends it back to Assemble until `done`, then to
    CheckDigest. Until done, `size` is what is written so far, `sha256` None and `assemble_run`
    the next run's number; what that run goes on from is in S3, never here. The fields of
    Prepared that Assemble reads go on with it."""

    totals: Counts
    parallel: bool
    segments: NotRequired[SegmentList]
    part_size: NotRequired[int]
    done: bool
    assemble_run: NotRequired[int]


class Finished(TypedDict):
    """Finalize's output, the execution's."""

    download_id: str
    state: str


class FailInput(TypedDict):
    """MarkFailed's input: the failed state's input with the Catch's `error` added."""

    download_id: str
    error: NotRequired[StepError]


class ShownError(TypedDict):
    """models.ErrorInfo as JSON."""

    code: str
    message: str


class Failed(TypedDict):
    """MarkFailed's output."""

    download_id: str
    state: str | None
    error: ShownError


def counts(progress: Progress) -> Counts:
    """`asdict(progress)`, typed."""
    return Counts(
        files_done=progress.files_done,
        files_total=progress.files_total,
        bytes_done=progress.bytes_done,
        bytes_total=progress.bytes_total,
        rows_done=progress.rows_done,
        rows_total=progress.rows_total,
    )


def shown_error(error: ErrorInfo) -> ShownError:
    """`asdict(error)`, typed."""
    return ShownError(code=error.code, message=error.message)
