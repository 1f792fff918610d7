"""The registry of download types.

Each type is a module of this package that imports only `base` (and the shared pieces beside
it: `scope`, `rows`, `archiveoptions`); this registry alone imports the types, so each
imports on its own, with no cycle. Adding a type is one module and one line in `_BUILTIN`.
"""

from __future__ import annotations

from typing import Any

from chalicelib.core.errors import UnknownType
from chalicelib.downloadtypes import archive, audit, export, listing
from chalicelib.downloadtypes.base import ArtifactFormat, DownloadType, Plan

__all__ = ["ArtifactFormat", "DownloadType", "Plan", "all_types", "get", "register"]

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


_BUILTIN = (archive.TYPE, export.TYPE, audit.TYPE, listing.TYPE)
for _builtin in _BUILTIN:
    register(_builtin)
