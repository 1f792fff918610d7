"""`manifest: true` (SHA256SUMS that `sha256sum -c` accepts) and `on_missing` (skip or fail),
through the whole workflow, with a source deleted between Prepare and Build."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import boto3
import pytest
import requests

from chalicelib.api import openapi
from chalicelib.core.errors import SourceChanged, SourceMissing
from chalicelib.downloadtypes import archiveoptions, archiveparams
from chalicelib.runtime import Runtime
from chalicelib.s3.manifest import Entry
from chalicelib.workflow import steps as workflow
from chalicelib.workflow.payloads import Prepared, Start
from tests.support import executions
from tests.support.archive_readers import files_under, run
from tests.support.stack import Satchel

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_s3.client import S3Client

MIB = 1024 * 1024
SOURCES = {
    "acme/m/report.csv": b"id,total\n1,10\n2,20\n",
    "acme/m/CON.txt": b"a reserved name on Windows\n",
    "acme/m/été/文件 ☃.txt": "unicode ☃\n".encode(),
    "acme/m/deep/a:b.txt": b"colon\n",
    "acme/m/big.bin": bytes(range(256)) * (11 * MIB // 256),  # large enough to be copied by S3
    "acme/m/empty.txt": b"",
    "acme/m/SHA256SUMS": b"a source that takes the manifest's name\n",
}
MAPPED = {
    "m/report.csv": "acme/m/report.csv",
    "m/CON_.txt": "acme/m/CON.txt",
    "m/été/文件 ☃.txt": "acme/m/été/文件 ☃.txt",
    "m/deep/a_b.txt": "acme/m/deep/a:b.txt",
    "m/big.bin": "acme/m/big.bin",
    "m/empty.txt": "acme/m/empty.txt",
    "m/SHA256SUMS": "acme/m/SHA256SUMS",
}


@pytest.fixture
def put(satchel: Satchel) -> dict[str, bytes]:
    for key, body in SOURCES.items():
        satchel.put_source(key, body)
    return SOURCES


def delete_after_prepare(monkeypatch: pytest.MonkeyPatch, satchel: Satchel, *keys: str) -> None:
    """The sources vanish between Prepare (which saw them) and Build."""
    prepare = workflow.prepare

    def prepare_then_delete(runtime: Runtime, event: Start) -> Prepared:
        output = prepare(runtime, event)
        for key in keys:
            satchel.s3.delete_object(Bucket=satchel.stack.source_bucket, Key=key)
        return output

    monkeypatch.setattr(workflow, "prepare", prepare_then_delete)


def fetch(satchel: Satchel, params: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    created = satchel.create(params)
    assert created.status == 202, created.body
    done = satchel.wait(created.json["id"], timeout=120)
    assert done["state"] == "DONE", done
    archive = requests.get(satchel.call("GET", done["url"]).headers["Location"], timeout=60).content
    assert hashlib.sha256(archive).hexdigest() == done["artifact"]["sha256"]
    assert satchel.open_uploads() == []
    return done, archive


def executed_states(satchel: Satchel, download_id: str) -> set[str]:
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    arn = satchel.stack.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{download_id}"
    events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    return {e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e}


def unzip(archive: bytes, into: Path) -> dict[str, bytes]:
    path = into.with_suffix(".zip")
    path.write_bytes(archive)
    into.mkdir()
    run("unzip", "-q", path, "-d", into)
    return files_under(into)


def test_manifest_is_accepted_by_sha256sum_after_extraction(
    satchel: Satchel, put: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SATCHEL_SERVER_COPY_MIN_BYTES", str(10 * MIB))
    for compression in ("store", "deflate"):
        done, archive = fetch(
            satchel, {"prefixes": ["acme/m/"], "manifest": True, "compression": compression}
        )
        assert done["params"]["manifest"] is True
        assert done["skipped"] == []
        root = tmp_path / compression
        extracted = unzip(archive, root)
        sums = extracted.pop("SHA256SUMS").decode()
        assert extracted == {name: SOURCES[key] for name, key in MAPPED.items()}
        # Names as they are in the archive: mapped, and the source named SHA256SUMS renamed.
        listed = sorted(line.split("  ", 1)[1] for line in sums.splitlines())
        assert listed == sorted(MAPPED)
        assert "m/SHA256SUMS" in listed  # in its folder it keeps its name; only the root is taken
        checked = run("sha256sum", "-c", "SHA256SUMS", cwd=root)
        assert checked.count(": OK") == len(MAPPED)


def test_archives_with_options_are_built_by_one_build_not_segments(
    satchel: Satchel, put: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SATCHEL_PARALLEL_MIN_FILES", "2")
    monkeypatch.setenv("SATCHEL_SEGMENT_FILES", "2")
    for params in ({"manifest": True}, {"on_missing": "skip"}, {"format": "tar"}, {}):
        done, _ = fetch(satchel, {"prefixes": ["acme/m/"], **params})
        states = executed_states(satchel, done["id"])
        assert ("BuildSegments" in states) == (params == {}), (params, states)
        assert ("Build" in states) == (params != {}), (params, states)


def test_a_source_named_like_the_manifest_at_the_root_is_renamed(satchel: Satchel) -> None:
    satchel.put_source("acme/SHA256SUMS", b"mine\n")
    satchel.put_source("acme/b.txt", b"b\n")
    _, archive = fetch(satchel, {"keys": ["acme/SHA256SUMS", "acme/b.txt"], "manifest": True})
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        assert opened.namelist() == ["SHA256SUMS (2)", "b.txt", "SHA256SUMS"]
        assert opened.read("SHA256SUMS (2)") == b"mine\n"
        sums = opened.read("SHA256SUMS").decode()
    mine, b = hashlib.sha256(b"mine\n").hexdigest(), hashlib.sha256(b"b\n").hexdigest()
    assert sums == f"{mine}  SHA256SUMS (2)\n{b}  b.txt\n"


def test_skip_leaves_out_sources_missing_at_prepare_and_at_build(
    satchel: Satchel,
    put: dict[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SATCHEL_SERVER_COPY_MIN_BYTES", str(10 * MIB))
    delete_after_prepare(monkeypatch, satchel, "acme/m/big.bin", "acme/m/deep/a:b.txt")
    keys = ["acme/m/report.csv", "acme/m/never-there.txt", "acme/m/big.bin", "acme/m/deep/a:b.txt"]
    done, archive = fetch(
        satchel, {"keys": keys, "on_missing": "skip", "manifest": True, "compression": "store"}
    )
    expected_skipped = ["acme/m/never-there.txt", "acme/m/big.bin", "acme/m/deep/a:b.txt"]
    assert done["skipped"] == expected_skipped
    # Totals count what the archive holds, and the progress reached them.
    assert done["progress"]["files_total"] == done["progress"]["files_done"] == 1
    assert done["progress"]["bytes_total"] == done["progress"]["bytes_done"] == len(SOURCES[keys[0]])
    root = tmp_path / "skip"
    extracted = unzip(archive, root)
    assert extracted["MISSING.txt"].decode().splitlines() == expected_skipped
    assert set(extracted) == {"m/report.csv", "SHA256SUMS", "MISSING.txt"}
    run("sha256sum", "-c", "SHA256SUMS", cwd=root)

    listed = satchel.call("GET", "/downloads?limit=5").json["items"]
    assert next(item for item in listed if item["id"] == done["id"])["skipped"] == expected_skipped


@pytest.mark.parametrize("manifest", [False, True])
def test_fail_is_the_default_and_ends_failed_source_missing(
    satchel: Satchel, put: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, manifest: bool
) -> None:
    delete_after_prepare(monkeypatch, satchel, "acme/m/report.csv")
    created = satchel.create({"prefixes": ["acme/m/"], "manifest": manifest})
    assert created.json["params"]["on_missing"] == "fail"
    failed = satchel.wait(created.json["id"], timeout=60)
    assert failed["state"] == "FAILED"
    assert failed["error"]["code"] == "SourceMissing"
    assert "acme/m/report.csv" in failed["error"]["message"]
    assert failed["skipped"] == []
    assert satchel.open_uploads() == []
    assert satchel.artifact_objects() == []


def test_fail_refuses_a_key_missing_at_prepare_and_skip_of_only_missing_keys_has_nothing(
    satchel: Satchel,
) -> None:
    failed = satchel.wait(satchel.create({"keys": ["acme/nope.txt"]}).json["id"])
    assert (failed["state"], failed["error"]["code"]) == ("FAILED", "SourceMissing")
    nothing = satchel.wait(satchel.create({"keys": ["acme/nope.txt"], "on_missing": "skip"}).json["id"])
    assert (nothing["state"], nothing["error"]["code"]) == ("FAILED", "NothingToDownload")


def test_options_are_in_the_types_schema_with_their_defaults(satchel: Satchel) -> None:
    types = satchel.call("GET", "/types").json
    zip_type = next(kind for kind in types["items"] if kind["name"] == "zip")
    properties = zip_type["params"]["properties"]
    assert properties["format"] == {
        **properties["format"],
        "enum": ["zip", "tar", "tar.gz"],
        "default": "zip",
    }
    assert properties["manifest"]["default"] is False
    assert properties["on_missing"]["enum"] == ["fail", "skip"]
    assert properties["on_missing"]["default"] == "fail"
    assert zip_type["formats"] == ["zip", "tar", "tar.gz"]
    document = openapi.document()["components"]["schemas"]
    # The same schema, but the key lists bounded by the stage's limit (SATCHEL_MAX_KEYS).
    documented = document["ZipParams"]["properties"]
    lists = ("keys", "prefixes")
    assert {k: v for k, v in documented.items() if k not in lists} == {
        k: v for k, v in properties.items() if k not in lists
    }
    for name in lists:
        assert documented[name]["items"] == properties[name]["items"]
        assert documented[name]["maxItems"] == 1000
    assert document["ZipDownload"]["properties"]["skipped"]["items"] == {"type": "string"}
    refused = satchel.create({"keys": ["acme/a"], "on_missing": "ignore"})
    assert refused.status == 422
    refused = satchel.create({"keys": ["acme/a"], "format": "rar"})
    assert refused.status == 422


def test_a_source_gone_after_the_survey_is_left_out_where_the_build_meets_it(
    satchel: Satchel, put: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No attempt is retried and nothing surveyed again (tests/stack/test_vanished_sources.py
    has the runs, the readers and the bytes)."""
    surveys: list[list[str]] = []
    survey = archiveoptions.survey

    def survey_then_delete(
        runtime: Any, entries: list[Entry], options: archiveparams.Options
    ) -> archiveoptions.Survey:
        found = survey(runtime, entries, options)
        surveys.append([entry.key for entry in found.missing])
        if len(surveys) == 1:  # the survey saw it; it goes before it is read
            satchel.s3.delete_object(Bucket=satchel.stack.source_bucket, Key="acme/m/report.csv")
        return found

    monkeypatch.setattr(archiveoptions, "survey", survey_then_delete)
    done, archive = fetch(satchel, {"prefixes": ["acme/m/"], "on_missing": "skip"})
    assert surveys == [[]]
    assert done["skipped"] == ["acme/m/report.csv"]
    assert executions.failures_of(satchel, done["id"]) == []
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        assert opened.testzip() is None
        assert "m/report.csv" not in opened.namelist()
        assert opened.read("MISSING.txt") == b"acme/m/report.csv\n"


@pytest.mark.parametrize("manifest", [False, True])
def test_the_survey_sorts_present_missing_and_changed_sources(s3: S3Client, manifest: bool) -> None:
    settings = SimpleNamespace(source_bucket="bucket", fetch_concurrency=3, read_chunk_bytes=4)
    runtime: Any = SimpleNamespace(s3=s3, settings=settings)
    entries = []
    for index in range(7):
        body = f"body {index}".encode()
        etag = s3.put_object(Bucket="bucket", Key=f"k{index}", Body=body)["ETag"]
        entries.append(Entry(key=f"k{index}", size=len(body), etag=etag, name=f"n{index}"))
    s3.delete_object(Bucket="bucket", Key="k2")
    s3.delete_object(Bucket="bucket", Key="k5")
    skip = archiveparams.Options(manifest=manifest, on_missing="skip")

    found = archiveoptions.survey(runtime, entries, skip)
    assert [entry.key for entry in found.present] == ["k0", "k1", "k3", "k4", "k6"]
    assert [entry.key for entry in found.missing] == ["k2", "k5"]
    expected = {f"n{i}": hashlib.sha256(f"body {i}".encode()).hexdigest() for i in (0, 1, 3, 4, 6)}
    assert found.sha256 == (expected if manifest else {})

    with pytest.raises(SourceMissing, match="k2"):
        archiveoptions.survey(runtime, entries, archiveparams.Options(manifest=manifest))
    s3.put_object(Bucket="bucket", Key="k4", Body=b"changed since Prepare")
    with pytest.raises(SourceChanged):
        archiveoptions.survey(runtime, entries, skip)
