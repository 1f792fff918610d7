"""What a download type is: the declaration every type module fills in.

A type is declared once, with everything the API and the workflow need to know about it:
its name and description, the JSON Schema of its params, the formats it produces, the role
a caller needs, how its file is named, and its builder (`plan` in Prepare, `render` in
Build). The type modules import this one; only the registry (`__init__.py`) imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from chalicelib.errors import Forbidden
from chalicelib.manifest import Entry
from chalicelib.models import Download, Principal, Progress
from chalicelib.schemas import Schema
from chalicelib.settings import Settings
from chalicelib.zipwriter import Piece

if TYPE_CHECKING:
    from chalicelib.progress import ProgressTracker
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


# params -> normalised params to store (or a domain error), given the caller and settings.
Check = Callable[[dict[str, Any], Principal, Settings], dict[str, Any]]
# Prepare: what the artifact is made of, checked against sources and limits.
Planner = Callable[["Runtime", Download], Plan]
# Build: the artifact's bytes, advancing the tracker as its inputs are consumed. A piece may
# also be a range of a source object, which S3 copies into the artifact without the worker.
Renderer = Callable[["Runtime", Download, Iterator[Entry], "ProgressTracker"], Iterator[Piece]]


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
    # Whether a large plan may be built in segments, in parallel, and joined (chalicelib/segments.py).
    segmentable: bool = False
    # When it may (segmentable only): some params ask for what only one Build run can write.
    segmentable_with: Callable[[dict[str, Any]], bool] | None = None

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
        return self.segmentable and (self.segmentable_with is None or self.segmentable_with(params))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "params": self.params_schema,
            "formats": self.formats,
            "required_role": self.required_role,
        }
