"""What a download type is: the declaration every type module fills in.

A type is declared once, with everything the API and the workflow need to know about it:
its name and description, the JSON Schema of its params, the formats it produces, the role
a caller needs, how its file is named, and its builder (`plan` in Prepare, `render` in
Build). The type modules import this one; only the registry (`__init__.py`) imports them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.core.errors import Forbidden, SatchelError
from chalicelib.core.models import Download, Principal, Progress
from chalicelib.core.schemas import Schema
from chalicelib.core.settings import Settings
from chalicelib.s3.manifest import Entry

if TYPE_CHECKING:  # the writers are the builders' business: the API declares types without them
    from chalicelib.archive import integrity
    from chalicelib.archive.zipwriter import CopyRange, Piece
    from chalicelib.runtime import Runtime


@dataclass(frozen=True)
class ArtifactFormat:
    extension: str  # with its dot: ".zip", ".csv.gz"
    content_type: str


@dataclass(frozen=True)
class Plan:
    """What Prepare decided: the sources to read (if the type reads objects) and the totals."""

    totals: Progress
    entries: list[Entry] = field(default_factory=list)
    # Sources named but missing, left out as `on_missing: skip` asks.
    skipped: list[str] = field(default_factory=list)


class ProgressTracker(Protocol):
    """What a builder reports its progress to. Declared here, where the types use it, so that
    they need not import the workflow that drives them (chalicelib/workflow/progress.py
    implements it)."""

    current: Progress

    def advance(self, *, files: int = 0, bytes_: int = 0, rows: int = 0) -> None: ...


# The clock a dry run's budget runs on (a test may replace it).
_monotonic = time.monotonic


class Limits:
    """Where a planner reports a limit its plan breaks (files, bytes, rows).

    Prepare's default: the first one is raised at once, and the download fails with its Code
    before anything is built. A dry run collects every limit broken instead, and the planner
    goes on counting, so the caller learns the real totals; within a time budget, after which
    the planner stops early and the totals are lower bounds (`complete` is False)."""

    def __init__(self, *, collect: bool = False, budget_seconds: float | None = None) -> None:
        self.collect = collect
        self.broken: list[SatchelError] = []
        self.complete = True
        self._deadline = None if budget_seconds is None else _monotonic() + budget_seconds

    def exceeded(self, error: SatchelError) -> None:
        """`error` names a limit the plan breaks: raised, or (a dry run) noted once per Code."""
        if not self.collect:
            raise error
        if all(known.code != error.code for known in self.broken):
            self.broken.append(error)

    @property
    def any_broken(self) -> bool:
        return bool(self.broken)

    def out_of_time(self) -> bool:
        """For a planner between pages of a long listing: whether to stop there (a dry run)."""
        if self._deadline is None or _monotonic() < self._deadline:
            return False
        self.complete = False
        return True


class Planner(Protocol):
    """Prepare: what the artifact is made of, checked against sources and limits."""

    def __call__(self, runtime: Runtime, download: Download, limits: Limits | None = None) -> Plan: ...


# params -> normalised params to store (or a domain error), given the caller and settings.
Check = Callable[[dict[str, Any], Principal, Settings], dict[str, Any]]
# Build: the artifact's bytes, advancing the tracker as its inputs are consumed. A piece may
# also be a range of a source object, which S3 copies into the artifact without the worker.
Renderer = Callable[["Runtime", Download, Iterator[Entry], "ProgressTracker"], "Iterator[Piece]"]


class SegmentBuild(Protocol):
    """One segment as it is written (from offset 0): its pieces, then what the join needs."""

    @property
    def pieces(self) -> Iterator[Piece]: ...

    def records(self) -> list[Any]:
        """After the pieces are written: the JSON records Assemble hands back to `closing`."""
        ...

    def take_records(self, batch: int) -> list[Any]:
        """While the pieces are written: the records laid out so far, in whole batches of
        `batch` (none while fewer are held), all but the last one (whose member's bytes may
        still be on their way), forgotten here: the caller keeps them elsewhere (in S3), so
        memory does not grow with the file count. `records` then holds only the rest."""
        ...

    def checks(self) -> list[integrity.Check]:
        """After the pieces are written: the ranges S3 copied, for the Digest step to verify."""
        ...

    def carried(self) -> tuple[int, Any] | None:
        """After the pieces are written: the member `stop` ended them inside, if any (where
        it began, and as JSON for `build(carried=)` in the next run), else None."""
        ...


class SegmentPlan(Protocol):
    """How a type's large artifact is built in segments, in parallel, and joined
    (chalicelib/workflow/segments.py splits the entries, stores the parts and calls these)."""

    def accepts(self, params: dict[str, Any]) -> bool:
        """Whether these params may be built in segments (some ask for what only one Build writes)."""
        ...

    def build(
        self,
        runtime: Runtime,
        download: Download,
        entries: Iterator[Entry],
        tracker: ProgressTracker,
        *,
        start: int = 0,
        carried: Any = None,
        stop: Callable[[], bool] | None = None,
    ) -> SegmentBuild:
        """The pieces from offset `start`: first the rest of a member an earlier run stopped
        inside (`carried`, its beginning at offset 0), then the entries'. `stop` is asked
        inside a large member: when true the pieces end there (`SegmentBuild.carried`)."""
        ...

    def closing(
        self, download: Download, placed: Iterator[tuple[int, list[Any]]], offset: int
    ) -> Iterable[Piece]:
        """What follows the joined segments at `offset`, from each segment's records and the
        offset it landed at (for a zip: the central directory)."""
        ...


# A page of rows and where the next page starts (JSON; None: it was the last page).
RowPage = tuple[list[dict[str, Any]], Any]


class RowSource(Protocol):
    """Where a table type's rows come from, a page at a time, from a cursor (None: the start)
    that a page hands on: a Build that outlasts a Lambda run goes on from the cursor it saved
    (chalicelib/workflow/rowruns.py)."""

    def __call__(self, runtime: Runtime, download: Download, cursor: Any) -> Iterator[RowPage]: ...


@dataclass(frozen=True)
class Carried:
    """What one Lambda run of a single-stream artifact hands the next: `state` (JSON-able:
    where the stream stopped) and `data` (bytes it had taken but not written, if any)."""

    state: dict[str, Any]
    data: bytes = b""


class StreamRun(Protocol):
    """One Lambda run's share of a single-stream artifact: its pieces, then what goes on."""

    @property
    def pieces(self) -> Iterator[Piece]: ...

    def carry(self, copy_rest: CopyRange | None) -> Carried | None:
        """After the pieces (all of them, or up to a copy handed on with `copy_rest` still to
        copy): what the next run needs, or None when the artifact is whole."""
        ...


class StreamPlan(Protocol):
    """How a type's single-stream artifact (a tar, a tar.gz: no offsets to lay out) is built
    across Lambda runs, each writing on where the last one stopped
    (chalicelib/workflow/streamruns.py carries the upload and calls these)."""

    def accepts(self, params: dict[str, Any]) -> bool:
        """Whether these params are built this way (some ask for what only one Build writes)."""
        ...

    def run(
        self,
        runtime: Runtime,
        download: Download,
        entries: Callable[[int], Iterator[Entry]],
        carried: Carried | None,
        tracker: ProgressTracker,
        stop: Callable[[], bool],
    ) -> StreamRun:
        """This run's share, from where `carried` says (None: from the start). `entries(n)` are
        the manifest's from the n-th on; `stop` says when the run must hand on."""
        ...


@dataclass(frozen=True)
class Surveyed:
    """What one Lambda run's share of a survey found: how many entries are surveyed so far,
    and once the survey is done (None before), the sources still there, in order."""

    at: int
    present: list[Entry] | None


class SurveyPlan(Protocol):
    """How a type's artifact whose sources are looked at before it is written (a zip with
    `manifest` or `on_missing: skip`) is built across Lambda runs: a share of the survey a run,
    then the sources found through a segment plan (chalicelib/workflow/steps.py, runs.py)."""

    def accepts(self, params: dict[str, Any]) -> bool: ...

    def survey(
        self,
        runtime: Runtime,
        download: Download,
        entries: Callable[[int], Iterator[Entry]],
        at: int,
        part: int,
        tracker: ProgressTracker,
        stop: Callable[[], bool],
    ) -> Surveyed:
        """Part `part` of the survey, from the `at`-th entry, until `stop` says so (at least
        one entry). `entries(n)` are the manifest's from the n-th on."""
        ...

    def segments(self, runtime: Runtime, download: Download, parts: int) -> SegmentPlan:
        """The plan that builds the sources found, given the survey's number of parts."""
        ...


@dataclass(frozen=True)
class DownloadType:
    name: str
    description: str
    params_schema: dict[str, Any]
    formats: list[str]
    check: Check
    plan: Planner
    render: Renderer
    # The artifact's extension and content type, from the (normalised) params.
    artifact_format: Callable[[dict[str, Any]], ArtifactFormat]
    # The file name when the caller gives none: f(download id, params), without extension.
    default_name: Callable[[str, dict[str, Any]], str]
    # Role a caller needs to request this type; None means any authenticated caller.
    required_role: str | None = None
    # How a large plan is built in segments, in parallel, and joined; None: one Build run.
    segments: SegmentPlan | None = None
    # How a single-stream artifact is built across Lambda runs; None: in one Build run.
    stream: StreamPlan | None = None
    # How an artifact whose sources are surveyed first is built across Lambda runs.
    survey: SurveyPlan | None = None
    # A table type's rows by pages from a cursor: its Build hands on between Lambda runs.
    rows: RowSource | None = None
    # The settings that bound this type's artifact (a dry run shows them beside the totals).
    limits: tuple[str, ...] = ("max_rows", "max_table_bytes")

    @cached_property
    def _params(self) -> Schema:
        return Schema(self.params_schema, root="params")

    def validate(self, params: Any, principal: Principal, settings: Settings) -> dict[str, Any]:
        if self.required_role and self.required_role not in principal.roles:
            raise Forbidden(
                f"type {self.name!r} requires the {self.required_role!r} role", role=self.required_role
            )
        self._params.check(params)
        return self.check(params, principal, settings)

    def can_segment(self, params: dict[str, Any]) -> bool:
        return self.segments is not None and self.segments.accepts(params)

    def can_stream(self, params: dict[str, Any]) -> bool:
        return self.stream is not None and self.stream.accepts(params)

    def can_survey(self, params: dict[str, Any]) -> bool:
        return self.survey is not None and self.survey.accepts(params)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "params": self.params_schema,
            "formats": self.formats,
            "required_role": self.required_role,
        }
