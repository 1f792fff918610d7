"""Safe names: tenant and user ids, archive entry paths and download filenames.

Entry names come from S3 keys, which may hold anything; what lands in an archive must be a
relative path that cannot escape the directory it is unpacked into, and that every common
system can create. Each '/'-separated segment is mapped, in this order:

1. control and format characters (Unicode category C: C0/C1 controls, bidi overrides that
   could disguise an extension, ...) are removed, except the zero-width joiner and non-joiner
   that emoji sequences and some scripts are spelt with; a backslash becomes `_` first, so
   it never acts as a separator;
2. characters Windows forbids in a name, `< > : " | ? *`, become `_` (`a:b` -> `a_b`);
3. surrounding whitespace goes; `.` and empty segments are dropped, `..` becomes `_`;
4. trailing dots and spaces go (Windows drops them silently: `name. ` -> `name`); a segment
   made only of dots and spaces becomes `_`;
5. a segment longer than 255 bytes of UTF-8 is cut (at a character boundary);
6. a reserved Windows device name (`CON`, `PRN`, `AUX`, `NUL`, `COM0`-`COM9`, `LPT0`-`LPT9`,
   their superscript-digit forms, `CONIN$`, `CONOUT$`), compared case-insensitively on the
   part before the first dot, gets `_` after that part: `CON.txt` -> `CON_.txt`, `nul` ->
   `nul_`, `lpt1.tar.gz` -> `lpt1_.tar.gz`, in any segment (`aux/x` -> `aux_/x`).

`UniqueNames` then numbers names that are equal ignoring case (`a.txt`, `A.TXT` ->
`A (2).TXT`), after this mapping, so Windows and macOS (case-insensitive) keep every file.
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


_FORBIDDEN = re.compile(r'[<>:"|?*]')
_MAX_SEGMENT_BYTES = 255
_JOINERS = frozenset({"\u200c", "\u200d"})  # ZWNJ, ZWJ: part of how a name is spelt
_DIGITS = "0123456789¹²³"
RESERVED_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{device}{digit}" for device in ("COM", "LPT") for digit in _DIGITS}
)


def is_reserved(segment: str) -> bool:
    """Whether Windows treats `segment` as a device: its part before the first dot, any case."""
    stem = segment.split(".", 1)[0].rstrip(" ")
    return stem.upper() in RESERVED_NAMES


def _unreserved(segment: str) -> str:
    if not is_reserved(segment):
        return segment
    stem, dot, rest = segment.partition(".")
    return f"{stem}_{dot}{rest}"


def _clean_segment(segment: str) -> str:
    text = "".join(ch for ch in segment if ch in _JOINERS or not unicodedata.category(ch).startswith("C"))
    text = _FORBIDDEN.sub("_", text).strip()
    if text in ("", "."):
        return ""
    if text == "..":
        return "_"
    encoded = text.encode("utf-8")
    if len(encoded) > _MAX_SEGMENT_BYTES:
        text = encoded[:_MAX_SEGMENT_BYTES].decode("utf-8", errors="ignore")
    text = text.rstrip(". ") or "_"
    return _unreserved(text)


def safe_path(raw: str, fallback: str = "file") -> str:
    """A relative, '/'-separated path every common system can create (see the module's rules)."""
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
    """Hands out each name once; a repeated name gets ' (2)', ' (3)'... before its extension.

    Names are compared ignoring case, as Windows and macOS do. `reserved` names are taken from
    the start (the files an archive adds itself, such as SHA256SUMS).
    """

    def __init__(self, reserved: tuple[str, ...] = ()) -> None:
        self._taken: set[str] = {name.casefold() for name in reserved}

    def claim(self, name: str) -> str:
        candidate, counter = name, 1
        stem, extension = posixpath.splitext(name)
        while candidate.casefold() in self._taken:
            counter += 1
            candidate = f"{stem} ({counter}){extension}"
        self._taken.add(candidate.casefold())
        return candidate
