"""The registry of download types: each is declared once, here, with everything the API
and the workflow need to know about it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from chalicelib import zipdownload
from chalicelib.errors import Forbidden, UnknownType
from chalicelib.manifest import Entry
from chalicelib.models import Download, Principal
from chalicelib.schemas import Schema
from chalicelib.settings import Settings

if TYPE_CHECKING:
    from chalicelib.progress import ProgressTracker
    from chalicelib.runtime import Runtime


@dataclass(frozen=True)
class DownloadType:
    name: str
    description: str
    params_schema: dict[str, Any]
    content_type: str
    extension: str
    # Extra checks after the schema; returns the normalised params to store.
    check: Callable[[dict[str, Any], Principal, Settings], dict[str, Any]]
    # Prepare: what goes into the artifact (validated against sources and limits).
    plan: Callable[[Runtime, Download], list[Entry]]
    # Build: the artifact's bytes, advancing the tracker as sources are consumed.
    render: Callable[[Runtime, Download, Iterator[Entry], ProgressTracker], Iterator[bytes]]
    # Role a caller needs to request this type; None means any authenticated caller.
    required_role: str | None = None

    @cached_property
    def _params(self) -> Schema:
        return Schema(self.params_schema, root="params")

    def default_filename(self, download_id: str) -> str:
        return f"{self.name}-{download_id[:12]}{self.extension}"

    def validate(self, params: Any, principal: Principal, settings: Settings) -> dict[str, Any]:
        if self.required_role and self.required_role not in principal.roles:
            raise Forbidden(f"type {self.name!r} requires the {self.required_role!r} role")
        self._params.check(params)
        return self.check(params, principal, settings)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "params": self.params_schema,
            "formats": [self.extension.lstrip(".")],
        }


_REGISTRY: dict[str, DownloadType] = {}


def register(download_type: DownloadType) -> DownloadType:
    if download_type.name in _REGISTRY:
        raise ValueError(f"download type {download_type.name!r} is registered twice")
    _REGISTRY[download_type.name] = download_type
    return download_type


def get(name: Any) -> DownloadType:
    if not isinstance(name, str) or name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownType(f"unknown download type {name!r}; known types: {known}")
    return _REGISTRY[name]


def all_types() -> list[DownloadType]:
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


register(
    DownloadType(
        name=zipdownload.NAME,
        description="A zip archive of objects from your source scope, by key and by prefix.",
        params_schema=zipdownload.PARAMS_SCHEMA,
        content_type=zipdownload.CONTENT_TYPE,
        extension=zipdownload.EXTENSION,
        check=zipdownload.check_params,
        plan=zipdownload.plan,
        render=zipdownload.render,
    )
)
