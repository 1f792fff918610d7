"""Archive options: a retried build's list of skipped keys."""

from __future__ import annotations

from chalicelib.core.models import Download, State
from chalicelib.downloadtypes import archiveoptions
from chalicelib.s3.manifest import Entry


def test_a_retried_build_lists_the_skipped_keys_once() -> None:
    entry = Entry(key="t/b", size=1, etag='"e"', name="b")
    download = Download(
        id="d",
        type="zip",
        params={},
        filename="x.zip",
        tenant="t",
        user_id="u",
        state=State.RUNNING,
        created_at="2026-01-01T00:00:00.000Z",
        retention_seconds=60,
        # What Prepare recorded, and what the first attempt of Build added.
        skipped=["t/a", "t/b"],
    )
    again = archiveoptions.Survey(present=[], missing=[entry], sha256={})
    assert archiveoptions.skipped_keys(download, again) == ["t/a", "t/b"]
    back = archiveoptions.Survey(present=[entry], missing=[], sha256={})  # it came back meanwhile
    assert archiveoptions.skipped_keys(download, back) == ["t/a"]
