"""Plain-text views of what the API answers, for people (scripts use --json)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from satchel_client.models import Download, DownloadType, FetchResult, Link, SharedFile

_UNITS = ("KiB", "MiB", "GiB", "TiB")


def size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            break
    return f"{value:.1f} {unit}"


def progress(download: Download) -> str:
    done = download.progress
    return f"{done.files_done}/{done.files_total} files, {size(done.bytes_done)} of {size(done.bytes_total)}"


def download(item: Download) -> str:
    rows = [
        ("id", item.id),
        ("state", item.state),
        ("type", item.type),
        ("filename", item.filename or "-"),
        ("progress", progress(item)),
    ]
    if item.artifact is not None:
        rows.append(("file", f"{size(item.artifact.size)}, sha256 {item.artifact.sha256}"))
    if item.error is not None:
        rows.append(("error", f"{item.error.code}: {item.error.message}"))
    if item.skipped:
        rows.append(("skipped", f"{len(item.skipped)} missing (see MISSING.txt): {', '.join(item.skipped)}"))
    rows += [(name, value) for name, value in _times(item) if value]
    return "\n".join(f"{name:<9} {value}" for name, value in rows)


def _times(item: Download) -> list[tuple[str, str | None]]:
    return [("created", item.created_at), ("finished", item.finished_at), ("expires", item.expires_at)]


def table(items: Iterable[Download]) -> str:
    rows = [("ID", "STATE", "CREATED", "SIZE", "FILENAME")]
    rows += [
        (
            item.id,
            item.state,
            item.created_at or "-",
            size(item.artifact.size) if item.artifact else "-",
            item.filename or "-",
        )
        for item in items
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    )


def types(items: Iterable[DownloadType]) -> str:
    blocks = []
    for kind in items:
        params = ", ".join(kind.params.get("properties", {})) or "-"
        formats = ", ".join(kind.formats) or "-"
        blocks.append(f"{kind.name}  {kind.description}\n  params: {params}\n  formats: {formats}")
    return "\n".join(blocks)


def link(item: Link) -> str:
    uses = "once" if item.max_uses == 1 else f"{item.max_uses} times"
    return f"usable {uses}, until {item.expires_at or 'the download expires'}"


def fetched(result: FetchResult) -> str:
    if not result.transferred:
        return f"{result.path} is already there ({size(result.size)}, sha256 verified)"
    resumed = f", resumed at byte {result.resumed_from}" if result.resumed_from else ""
    return f"saved {result.path} ({size(result.size)}, sha256 verified{resumed})"


def shared_file(item: SharedFile) -> str:
    uses = f", {item.uses_left} of {item.max_uses} uses left" if item.max_uses else ""
    expires = f", link expires {item.expires_at}" if item.expires_at else ""
    return f"{item.filename or 'a file'}: {size(item.size)}, sha256 {item.sha256}{uses}{expires}"


def not_ready(body: Mapping[str, Any], retry_after: int | None) -> str:
    """A 425's body, for people: how far the build is."""
    done = body.get("progress") or {}
    parts = []
    if done.get("files_total"):
        parts.append(f"{done.get('files_done', 0)}/{done['files_total']} files")
    if done.get("bytes_total"):
        parts.append(f"{size(int(done.get('bytes_done', 0)))} of {size(int(done['bytes_total']))}")
    progress = f" ({', '.join(parts)})" if parts else ""
    after = f"; asking again in {retry_after} s" if retry_after else ""
    return f"not ready yet: its file is being built{progress}{after}"


def keys(items: Iterable[Mapping[str, Any]]) -> str:
    """API keys as a table; a key itself is never listed, only its first characters."""
    rows = [("ID", "PREFIX", "USER", "ROLES", "CREATED", "EXPIRES", "LAST USED", "STATE")]
    for item in items:
        rows.append(
            (
                str(item["id"]),
                f"{item['prefix']}…",
                f"{item['tenant']}/{item['user_id']}",
                ",".join(item.get("roles") or []) or "-",
                str(item["created_at"])[:19],
                str(item.get("expires_at") or "never")[:19],
                str(item.get("last_used_at") or "never")[:19],
                "disabled" if item.get("disabled") else "active",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )
