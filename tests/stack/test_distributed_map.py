"""The parallel path is a Distributed Map over a manifest in S3: no cap of 100 segments, no
segment numbers in a payload, and a failing segment's own error on the download."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest
import requests

from chalicelib import downloadtypes
from chalicelib.core.errors import SourceMissing
from chalicelib.core.models import Download
from chalicelib.downloadtypes import archive, ziptype
from chalicelib.downloadtypes.base import ProgressTracker, SegmentBuild
from chalicelib.runtime import Runtime
from chalicelib.s3.manifest import Entry
from satchel_local.stack import REGION
from tests.support.stack import Satchel


def _history(satchel: Satchel, download_id: str) -> list[dict[str, Any]]:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = satchel.stack.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{download_id}"
    events: list[dict[str, Any]] = []
    token: dict[str, str] = {}
    while True:
        page = sfn.get_execution_history(executionArn=arn, maxResults=1000, **token)
        events += page["events"]
        if "nextToken" not in page:
            return events
        token = {"nextToken": page["nextToken"]}


def _archive(satchel: Satchel, done: dict[str, Any]) -> bytes:
    location = satchel.call("GET", done["url"]).headers["Location"]
    return requests.get(location, timeout=60).content


def test_160_segments_are_built_by_a_distributed_map_reading_its_items_from_s3(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = {f"acme/many/{n:03d}.txt": f"segment {n}\n".encode() * (n + 1) for n in range(160)}
    for key, body in bodies.items():
        satchel.put_source(key, body)
    # One file per segment: 160 segments, past the old inline Map's cap of 100.
    monkeypatch.setenv("SATCHEL_PARALLEL_MIN_FILES", "1")
    monkeypatch.setenv("SATCHEL_SEGMENT_FILES", "1")
    monkeypatch.setenv("SATCHEL_MAP_CONCURRENCY", "16")
    created = satchel.create({"prefixes": ["acme/many/"]})
    assert created.status == 202, created.body
    done = satchel.wait(created.json["id"], timeout=300)
    assert done["state"] == "DONE", done
    with zipfile.ZipFile(io.BytesIO(_archive(satchel, done))) as opened:
        assert opened.testzip() is None
        assert {info.filename: opened.read(info) for info in opened.infolist()} == {
            key.removeprefix("acme/"): body for key, body in bodies.items()
        }

    history = _history(satchel, created.json["id"])
    [prepared] = [
        json.loads(event["stateExitedEventDetails"]["output"])
        for event in history
        if event["type"] == "TaskStateExited" and event["stateExitedEventDetails"]["name"] == "Prepare"
    ]
    # The payload names where the items are, never the items.
    assert prepared["segments"]["count"] == 160
    assert prepared["segments"]["concurrency"] == 16
    assert prepared["segments"]["key"].endswith("/segments.json")
    assert len(json.dumps(prepared)) < 1000
    assert [event["type"] for event in history].count("MapRunStarted") == 1
    # Finalize removed the segments' list with everything else temporary.
    assert satchel.artifact_objects() == [f"artifacts/{created.json['id']}"]


class _FailingSecond:
    """The zip type's plan, whose second segment finds a source gone."""

    def __init__(self) -> None:
        self.plan = archive.ZipSegments()

    def accepts(self, params: dict[str, Any]) -> bool:
        return self.plan.accepts(params)

    def build(
        self,
        runtime: Runtime,
        download: Download,
        entries: Iterator[Entry],
        tracker: ProgressTracker,
        **options: Any,
    ) -> SegmentBuild:
        listed = list(entries)
        if any(entry.key.endswith("/1.txt") for entry in listed):
            raise SourceMissing("source object not found: acme/fails/1.txt", key="acme/fails/1.txt")
        return self.plan.build(runtime, download, iter(listed), tracker, **options)

    def closing(self, download: Download, placed: Iterator[tuple[int, list[Any]]], offset: int) -> Any:
        return self.plan.closing(download, placed, offset)


def test_a_failing_segment_fails_the_download_with_its_own_error_and_leaves_nothing(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    kind = replace(ziptype.TYPE, name="failing", segments=_FailingSecond())
    monkeypatch.setitem(downloadtypes._REGISTRY, "failing", kind)
    for index in range(4):
        satchel.put_source(f"acme/fails/{index}.txt", b"x" * 100)
    monkeypatch.setenv("SATCHEL_PARALLEL_MIN_FILES", "1")
    monkeypatch.setenv("SATCHEL_SEGMENT_FILES", "1")
    request = {"type": "failing", "params": {"prefixes": ["acme/fails/"]}}
    created = satchel.call("POST", "/downloads", "alice", request)
    assert created.status == 202, created.body
    final = satchel.wait(created.json["id"], timeout=120)
    assert (final["state"], final["error"]["code"]) == ("FAILED", "SourceMissing"), final
    assert "acme/fails/1.txt" in final["error"]["message"]
    assert satchel.open_uploads() == []
    assert satchel.artifact_objects() == []
