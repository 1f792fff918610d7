"""A dry run: what a create request would build, answered without starting anything.

`POST /downloads` with `"dry_run": true` checks the request exactly as a create does (the
same 400, 403 and 422 answers), then runs the type's planner as Prepare would, but with a
`Limits` that collects every limit the plan breaks instead of raising the first. Nothing is
stored, started, audited or counted against a quota, and no Idempotency-Key is claimed.

Listing a large prefix takes one S3 request per 1,000 keys, and an API call has about 29
seconds: the planner stops at the dry-run budget (`SATCHEL_DRY_RUN_SECONDS`), and the answer
says the totals are lower bounds (`complete: false`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chalicelib.api import downloads, requests
from chalicelib.core.errors import SatchelError
from chalicelib.core.models import Principal, Progress
from chalicelib.core.settings import Settings
from chalicelib.downloadtypes.base import DownloadType, Limits
from chalicelib.runtime import Runtime

# The download id a plan is made for: never stored, never a real download's (ids are hex).
PLANNED_ID = "dry-run"


@dataclass(frozen=True)
class Planned:
    """The answer to a dry run."""

    type: str
    filename: str
    totals: Progress
    # How the build would go: 1 segment is one Build run, more are built in parallel; 0: it
    # would not start; None: not known (the listing stopped at the budget).
    segments: int | None
    complete: bool
    limits: dict[str, int]
    # What would stop the download, each as the error it would fail (or be refused) with.
    problems: list[SatchelError] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def to_api(self) -> dict[str, Any]:
        totals = {name: value for name, value in vars(self.totals).items() if not name.endswith("_done")}
        return {
            "dry_run": True,
            "type": self.type,
            "filename": self.filename,
            "totals": totals,
            "segments": self.segments,
            "parallel": None if self.segments is None else self.segments > 1,
            "complete": self.complete,
            "would_start": not self.problems,
            "limits": self.limits,
            "problems": [problem.body() for problem in self.problems],
            "skipped": self.skipped,
        }


def asked(body: Any) -> bool:
    """Whether a create request's body asks for a dry run (its checks come with the plan)."""
    return isinstance(body, dict) and body.get("dry_run") is True


def plan(runtime: Runtime, principal: Principal, body: Any) -> Planned:
    """The plan for a create request (its checks raise as a create's would)."""
    from chalicelib.workflow import segments  # the workflow's splitting: only a dry run loads it here

    settings = runtime.settings
    request = requests.create_request(settings, principal, body)
    kind = request.kind
    download = downloads.new_download(principal, request, PLANNED_ID)
    limits = Limits(collect=True, budget_seconds=settings.dry_run_seconds)
    try:
        found = kind.plan(runtime, download, limits)
    except SatchelError as refused:  # a source missing, nothing to download: the run would fail so
        return Planned(
            kind.name, download.filename, Progress(), 0, limits.complete, _limits(settings, kind), [refused]
        )
    problems = list(limits.broken)
    count: int | None = None  # not known while the listing is incomplete
    if problems:
        count = 0
    elif limits.complete:
        try:  # as Prepare splits it, checked against S3's parts per upload
            groups = segments.plan(download, found.entries, settings)
        except SatchelError as too_many:  # TooManyParts
            problems.append(too_many)
            count = 0
        else:
            count = len(groups) if groups else 1
    return Planned(
        type=kind.name,
        filename=download.filename,
        totals=found.totals,
        segments=count,
        complete=limits.complete,
        limits=_limits(settings, kind),
        problems=problems,
        skipped=found.skipped,
    )


def _limits(settings: Settings, kind: DownloadType) -> dict[str, int]:
    """The limits of this type, as configured: what `problems` are measured against."""
    return {name: int(getattr(settings, name)) for name in kind.limits}
