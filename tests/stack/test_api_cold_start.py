"""The API function, really called, loads none of the workflow's build machinery.

In a fresh interpreter: the stack in moto with its state machine idle (no step runs, so
nothing but the API's own calls imports anything), then the API's common calls as a user
makes them. Reading and listing downloads loads no download type at all; creating a zip
loads that type's declaration (ziptype.py), never what builds it: the workflow (runs,
segments, steps, the assembler, the multipart writer, the digest and the deflate engines)
nor the type's own build (archive.py, archiveoptions.py, the writers, the source reader). What `import app`
loads is tests/unit/test_cold_start.py's; why, docs/performance.md, "Cold start".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WORKFLOW = (
    "chalicelib.workflow.steps",
    "chalicelib.workflow.runs",
    "chalicelib.workflow.segments",
    "chalicelib.workflow.streamruns",
    "chalicelib.workflow.rowruns",
    "chalicelib.workflow.digest",
    "chalicelib.workflow.progress",
    "chalicelib.archive.assembly",
    "chalicelib.s3.multipart",
    "rehashes",
    "zlib_ng",
    "isal",
)
ZIP_BUILD = (
    "chalicelib.downloadtypes.archive",
    "chalicelib.downloadtypes.archiveoptions",
    "chalicelib.archive.zipwriter",
    "chalicelib.archive.tarwriter",
    "chalicelib.archive.deflate",
    "chalicelib.archive.integrity",
    "chalicelib.s3.sources",
)
TYPES = (
    "chalicelib.downloadtypes.ziptype",
    "chalicelib.downloadtypes.export",
    "chalicelib.downloadtypes.audit",
    "chalicelib.downloadtypes.listing",
)

_PROBE = """
import json, os, sys
from chalice.test import Client
from moto import mock_aws

import app
from chalicelib.core import clients
from chalicelib.storage.keys import KeyStore
from satchel_local.seed import PRINCIPALS
from satchel_local.stack import MOTO_CONFIG, provision

KEY = "test-key-alice-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
idle = {**MOTO_CONFIG, "stepfunctions": {"execute_state_machine": False}}
watched = json.loads(sys.argv[1])

def held():
    return [name for name in watched if name in sys.modules]

seen = {}
with mock_aws(config=idle):
    clients.reset()
    created = provision("test")
    os.environ.update(created.environment(), SATCHEL_STAGE="test")
    KeyStore(clients.table(created.table)).add(KEY, PRINCIPALS["alice"])
    clients.s3().put_object(Bucket=created.source_bucket, Key="acme/a.txt", Body=b"a")
    seen["set up"] = held()
    with Client(app.app, stage_name="test") as client:
        def call(method, path, body=None, expect=200):
            payload = json.dumps(body) if body is not None else None
            answer = getattr(client.http, method)(path, headers=HEADERS, body=payload)
            assert answer.status_code == expect, (method, path, answer.status_code, answer.body)
            return json.loads(answer.body) if answer.body else None

        call("get", "/downloads")
        seen["listed"] = held()
        made = call("post", "/downloads", {"type": "zip", "params": {"keys": ["acme/a.txt"]}}, 202)
        call("get", f"/downloads/{made['id']}")
        link = call("post", f"/downloads/{made['id']}/links", {"max_uses": 1}, 201)
        answer = client.http.get(f"/links/{link['token']}", headers={"Accept": "application/json"})
        assert answer.status_code == 425, answer.body  # not ready: the state machine is idle
        call("delete", f"/downloads/{made['id']}", expect=202)
        seen["used"] = held()
print(json.dumps(seen))
"""


def test_the_api_calls_load_no_build_machinery_and_reading_loads_no_type() -> None:
    environment = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        environment.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps([*WORKFLOW, *ZIP_BUILD, *TYPES])],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["set up"] == []  # the harness itself loads none of them
    assert seen["listed"] == []  # listing downloads: no type, no writer
    assert seen["used"] == ["chalicelib.downloadtypes.ziptype"]  # the zip type's declaration alone
