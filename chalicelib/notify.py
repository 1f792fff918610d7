"""Telling the world a download has finished (being written)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chalicelib.models import Download

if TYPE_CHECKING:
    from chalicelib.runtime import Runtime


def download_finished(runtime: Runtime, download: Download) -> None:
    """Called once per download, when it reaches DONE, FAILED or CANCELLED."""
