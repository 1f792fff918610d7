"""Plain-text views of what the API answers, for people (scripts use --json)."""

from __future__ import annotations

from collections.abc import Iterable

from satchel_client.models import Download, DownloadType, FetchResult, Link

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
