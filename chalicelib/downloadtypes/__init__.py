"""The registry of download types.

Each type is a module of this package that imports only `base` (and the shared pieces beside
it: `scope`, `rows`, `archiveparams`); this registry alone imports the types, so each
imports on its own, with no cycle. Adding a type is one module and one loader in `_BUILTIN`.

A type's module is imported when the type is first asked for, not with the registry: `export`
brings the row formats and orjson, and a function that never meets a type (most API calls:
reading a download, its links) should not pay for loading it (docs/performance.md, "Cold
start"). The `zip` type's module (`ziptype`) is its declaration alone: its writers and source
reader (`archive`, `archiveoptions`) are loaded by the first Build that calls its builders.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.core.errors import UnknownType
from chalicelib.downloadtypes.base import ArtifactFormat, DownloadType, Plan

__all__ = ["ArtifactFormat", "DownloadType", "Plan", "all_types", "get", "register"]

_REGISTRY: dict[str, DownloadType] = {}


def _zip() -> DownloadType:
    from chalicelib.downloadtypes import ziptype

    return ziptype.TYPE


def _export() -> DownloadType:
    from chalicelib.downloadtypes import export

    return export.TYPE


def _audit() -> DownloadType:
    from chalicelib.downloadtypes import audit

    return audit.TYPE


def _listing() -> DownloadType:
    from chalicelib.downloadtypes import listing

    return listing.TYPE


# The built-in types by name, each loaded on first use (tests/unit/downloadtypes/ holds that
# each loader's type bears the name it is filed under).
_BUILTIN: dict[str, Callable[[], DownloadType]] = {
    "zip": _zip,
    "export": _export,
    "audit": _audit,
    "listing": _listing,
}


def register(download_type: DownloadType) -> DownloadType:
    if download_type.name in _REGISTRY or download_type.name in _BUILTIN:
        raise ValueError(f"download type {download_type.name!r} is registered twice")
    _REGISTRY[download_type.name] = download_type
    return download_type


def get(name: Any) -> DownloadType:
    if isinstance(name, str):
        if name in _REGISTRY:
            return _REGISTRY[name]
        if name in _BUILTIN:
            # setdefault: two threads loading the same type at once keep one of them.
            return _REGISTRY.setdefault(name, _BUILTIN[name]())
    known = ", ".join(sorted(_REGISTRY.keys() | _BUILTIN.keys()))
    raise UnknownType(f"unknown download type {name!r}; known types: {known}")


def all_types() -> list[DownloadType]:
    return [get(name) for name in sorted(_REGISTRY.keys() | _BUILTIN.keys())]
