"""How long a download's artifact may still be handed out (api/access.py): never past expiry."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from chalicelib.api import access
from chalicelib.core import clock
from chalicelib.core.models import State
from tests.support import records

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
DONE = records.download(
    state=State.DONE,
    created_at=clock.iso(NOW - timedelta(hours=1)),
    expires_at=clock.iso(NOW + timedelta(seconds=90, milliseconds=900)),
)


def test_whole_seconds_left_rounded_down_so_no_url_outlives_the_artifact() -> None:
    assert access.seconds_left(DONE, NOW) == 90


def test_an_expired_or_unfinished_download_has_no_time_left() -> None:
    assert access.seconds_left(DONE, NOW + timedelta(seconds=91)) <= 0
    assert access.seconds_left(replace(DONE, expires_at=None, state=State.RUNNING), NOW) == 0
