"""The `download.expiring_unused` event: the download's data, at the time its warning was due."""

from __future__ import annotations

from dataclasses import replace

import pytest

from chalicelib.core.models import Download, State
from chalicelib.notify import events
from tests.unit.notify.test_delivery import finished_download


def test_expiring_unused_carries_the_downloads_data_at_the_warnings_time() -> None:
    download = replace(finished_download(), expiring_unused_at="2026-11-29T10:01:00.000Z")

    event = events.expiring_unused(download, "/v1")

    assert (event.id, event.type) == (f"{download.id}.expiring_unused", events.EXPIRING_UNUSED)
    assert event.timestamp == "2026-11-29T10:01:00.000Z"
    assert event.data == events.of_download(download, "/v1").data  # as download.completed's
    assert event.data["state"] == "DONE"
    assert event.data["url"] == f"/v1/downloads/{download.id}/file"
    assert event.body() == events.expiring_unused(download, "/v1").body()  # a repeat is byte-equal


@pytest.mark.parametrize(
    "download",
    [
        finished_download(),
        replace(finished_download(State.FAILED), expiring_unused_at="2026-11-29T10:01:00.000Z"),
    ],
)
def test_expiring_unused_is_only_for_a_done_download_being_warned_of(download: Download) -> None:
    with pytest.raises(ValueError, match="not a DONE download being warned of"):
        events.expiring_unused(download, "")


def test_the_expiring_unused_type_is_sent_and_listed() -> None:
    assert events.EXPIRING_UNUSED in events.TYPES
