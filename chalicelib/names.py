"""Safe names: tenant and user ids, zip entry paths and download filenames.

Entry names come from S3 keys, which may hold anything; what lands in an archive must be a
relative path that cannot escape the directory it is unpacked into on any common system.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata

_DRIVE = re.compile(r"^[A-Za-z]:")

# Tenant and user ids (DESIGN.md). They are joined with '#' into table keys and a tenant is
# its source prefix, so neither '#' nor '/' may be part of one: ("acme", "x#y") and
# ("acme#x", "y") would otherwise share keys.
PRINCIPAL_ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
_PRINCIPAL_ID = re.compile(PRINCIPAL_ID_PATTERN)


def is_principal_id(value: object) -> bool:
    """Whether `value` may be a tenant or user id (fullmatch: `$` alone would let "a\\n" in)."""
    return isinstance(value, str) and _PRINCIPAL_ID.fullmatch(value) is not None


_MAX_SEGMENT_BYTES = 255


def _clean_segment(segment: str) -> str:
    text = "".join(ch for ch in segment if not unicodedata.category(ch).startswith("C"))
    text = text.strip()
    if text in ("", "."):
        return ""
    if text == "..":
        return "_"
    encoded = text.encode("utf-8")
    if len(encoded) > _MAX_SEGMENT_BYTES:
        text = encoded[:_MAX_SEGMENT_BYTES].decode("utf-8", errors="ignore")
    return text


def safe_path(raw: str, fallback: str = "file") -> str:
    """A relative, '/'-separated path with no empty, '.', '..', drive or control parts."""
    text = unicodedata.normalize("NFC", raw).replace("\\", "_")
    text = _DRIVE.sub(lambda m: m.group(0)[0] + "_", text.lstrip("/"))
    segments = [cleaned for part in text.split("/") if (cleaned := _clean_segment(part))]
    return "/".join(segments) or fallback


def safe_filename(raw: str | None, fallback: str, extension: str) -> str:
    """A single path segment ending in `extension` (e.g. '.zip')."""
    name = safe_path(raw, fallback).rsplit("/", 1)[-1] if raw else fallback
    if not name.lower().endswith(extension):
        name += extension
    return name


class UniqueNames:
    """Hands out each name once; a repeated name gets ' (2)', ' (3)'... before its extension."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def claim(self, name: str) -> str:
        candidate, counter = name, 1
        stem, extension = posixpath.splitext(name)
        while candidate.casefold() in self._taken:
            counter += 1
            candidate = f"{stem} ({counter}){extension}"
        self._taken.add(candidate.casefold())
        return candidate
