"""A parallel build goes through its type's segment plan, end to end."""

from __future__ import annotations

import io
import zipfile
from dataclasses import replace

import pytest
import requests

from chalicelib import downloadtypes
from chalicelib.downloadtypes import archive, ziptype
from tests.support.stack import Satchel
from tests.unit.workflow.test_segment_plan import Spy


def test_a_parallel_build_goes_through_the_types_plan_whatever_its_name(
    satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(archive.ZipSegments())
    # The zip type under another name, with a plan that records its calls.
    monkeypatch.setitem(downloadtypes._REGISTRY, "spied", replace(ziptype.TYPE, name="spied", segments=spy))
    bodies = {f"acme/seg/{index:02d}.txt": f"file {index}\n".encode() * 50 for index in range(9)}
    for key, body in bodies.items():
        satchel.put_source(key, body)
    monkeypatch.setenv("SATCHEL_PARALLEL_MIN_FILES", "4")
    monkeypatch.setenv("SATCHEL_SEGMENT_FILES", "3")

    created = satchel.call(
        "POST", "/downloads", "alice", {"type": "spied", "params": {"prefixes": ["acme/seg/"]}}
    )
    assert created.status == 202, created.body
    done = satchel.wait(created.json["id"], timeout=120)
    assert done["state"] == "DONE", done

    assert len(spy.built) == 3  # one call per segment of 3 files
    assert len(spy.closed) == 1
    assert spy.closed[0][0] == 0  # the first segment lands at the artifact's start
    archive_bytes = requests.get(satchel.call("GET", done["url"]).headers["Location"], timeout=60).content
    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as opened:
        assert opened.testzip() is None
        assert {name: opened.read(name) for name in opened.namelist()} == {
            key.removeprefix("acme/"): body for key, body in bodies.items()
        }
