"""What the command shows: results on stdout, messages and progress bars on stderr.

Progress bars are drawn only on an interactive terminal (and not with --quiet): in a
pipe, a CI log or a notebook's captured output they would be noise. Results go to stdout
as plain text, or as JSON with --json, so scripts can read them whatever stderr shows.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from satchel_client.models import Download


class Ui:
    def __init__(
        self, *, json_output: bool, quiet: bool, console: Console | None = None, out: TextIO | None = None
    ):
        self.json_output = json_output
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        self._out = out or sys.stdout

    @property
    def bars(self) -> bool:
        return self.console.is_interactive and not self.quiet

    def result(self, human: str, data: Any) -> None:
        """The command's answer, on stdout."""
        if self.json_output:
            self._out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        elif human:
            self._out.write(human + "\n")
        self._out.flush()

    def notice(self, message: str) -> None:
        """A progress message on stderr (not with --quiet)."""
        if not self.quiet:
            self._print(message)

    def error(self, message: str) -> None:
        self._print(f"satchel: {message}")

    def _print(self, message: str) -> None:
        # soft_wrap: a long message stays one line in a log instead of being cut at 80 columns.
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def _progress(self, *columns: Any) -> Progress:
        return Progress(*columns, console=self.console, disable=not self.bars)

    @contextmanager
    def waiting(self, download_id: str) -> Iterator[Callable[[Download], None]]:
        """A bar of the build's files and bytes, fed with each download the poll sees."""
        progress = self._progress(
            SpinnerColumn(),
            TextColumn("{task.fields[state]:<9}"),
            BarColumn(),
            TextColumn("{task.fields[files]}"),
            DownloadColumn(binary_units=True),
            TimeElapsedColumn(),
        )
        with progress:
            task = progress.add_task(download_id, total=None, state="", files="")
            yield lambda download: _show_build(progress, task, download)

    @contextmanager
    def fetching(self, label: str) -> Iterator[FetchBar]:
        progress = self._progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with progress:
            yield FetchBar(self, progress, progress.add_task(label, total=None))


def _show_build(progress: Progress, task: TaskID, download: Download) -> None:
    done = download.progress
    files = f"{done.files_done}/{done.files_total} files" if done.files_total else ""
    # Totals are 0 until the build has planned its work: an indeterminate bar until then.
    total = done.bytes_total or None
    progress.update(task, total=total, completed=done.bytes_done, state=download.state, files=files)


class FetchBar:
    """A `FetchObserver` that draws a byte bar and tells when a fetch resumes or retries."""

    def __init__(self, ui: Ui, progress: Progress, task: TaskID) -> None:
        self._ui, self._progress, self._task = ui, progress, task

    def describe(self, label: str) -> None:
        """Name the bar once the file's name is known (a link tells it only when read)."""
        self._progress.update(self._task, description=label)

    def begin(self, offset: int, total: int) -> None:
        if offset:
            self._ui.notice(f"resuming at byte {offset} of {total} (kept from an interrupted fetch)")
        self._progress.reset(self._task, total=total, completed=offset)

    def advance(self, done: int) -> None:
        self._progress.update(self._task, completed=done)

    def retry(self, offset: int, reason: str) -> None:
        self._ui.notice(f"the transfer broke at byte {offset} ({reason}); resuming there")
