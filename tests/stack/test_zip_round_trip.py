from __future__ import annotations

import hashlib
import io
import os
import zipfile
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from tests.support.stack import Satchel

SOURCES = {
    "acme/reports/q1.csv": b"quarter,revenue\n1,100\n" * 500,
    "acme/reports/2024/été ☃ résumé.txt": "unicode content ✓\n".encode() * 100,
    "acme/photos/deep/nested/cat.bin": os.urandom(300_000),
}


def fetch(url: str) -> bytes:
    response = requests.get(url, timeout=30)
    assert response.status_code == 200
    content: bytes = response.content
    return content


@pytest.mark.parametrize("compression", ["store", "deflate"])
def test_zip_round_trip_matches_sources(satchel: Satchel, compression: str) -> None:
    for key, body in SOURCES.items():
        satchel.put_source(key, body)

    created = satchel.create({"keys": list(SOURCES), "compression": compression}, filename="Report ☃.zip")
    assert created.status == 202, created.body
    download = created.json
    assert created.headers["Location"] == f"/downloads/{download['id']}"
    assert download["state"] == "PENDING"
    assert download["url"] is None
    assert len(download["id"]) == 32

    done = satchel.wait(download["id"])
    assert done["state"] == "DONE", done
    assert done["progress"] == {
        "files_done": 3,
        "files_total": 3,
        "bytes_done": sum(map(len, SOURCES.values())),
        "bytes_total": sum(map(len, SOURCES.values())),
        "rows_done": 0,
        "rows_total": 0,
    }
    assert done["url"] == f"/downloads/{download['id']}/file"
    assert done["finished_at"] >= done["started_at"] >= done["created_at"]
    assert done["expires_at"] > done["finished_at"]

    redirect = satchel.call("GET", done["url"])
    assert redirect.status == 302
    location = redirect.headers["Location"]
    query = parse_qs(urlparse(location).query)
    assert int(query["X-Amz-Expires"][0]) <= 300
    assert "filename*=UTF-8''Report%20%E2%98%83.zip" in query["response-content-disposition"][0]

    archive_bytes = fetch(location)
    assert len(archive_bytes) == done["artifact"]["size"]
    assert hashlib.sha256(archive_bytes).hexdigest() == done["artifact"]["sha256"]
    assert done["artifact"]["content_type"] == "application/zip"

    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as archive:
        assert archive.testzip() is None
        names = {info.filename: info for info in archive.infolist()}
        assert set(names) == {key.removeprefix("acme/") for key in SOURCES}
        for key, body in SOURCES.items():
            assert archive.read(key.removeprefix("acme/")) == body
        expected = zipfile.ZIP_DEFLATED if compression == "deflate" else zipfile.ZIP_STORED
        assert {info.compress_type for info in names.values()} == {expected}
        assert names["reports/2024/été ☃ résumé.txt"].flag_bits & 0x800  # UTF-8 name flag

    url = satchel.call("GET", f"/downloads/{download['id']}/url")
    assert url.status == 200
    assert fetch(url.json["url"]) == archive_bytes
    assert url.json["expires_at"] <= done["expires_at"]
    assert satchel.open_uploads() == []
    assert satchel.artifact_objects() == [f"artifacts/{download['id']}"]


def test_entry_names_are_sanitised_and_deduplicated(satchel: Satchel) -> None:
    sources = {
        "acme/d/a.txt": b"first",
        "acme/d//a.txt": b"second",
        "acme/d/A.txt": b"third",
        "acme/d/./b\x01.txt": b"fourth",
        "acme/d/..hidden": b"fifth",
    }
    for key, body in sources.items():
        satchel.put_source(key, body)
    created = satchel.create({"prefixes": ["acme/d/"]})
    done = satchel.wait(created.json["id"])
    assert done["state"] == "DONE", done
    archive_bytes = fetch(satchel.call("GET", done["url"]).headers["Location"])
    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    # Listed in key order: "d//a.txt" sorts before "d/A.txt" and "d/a.txt".
    assert contents == {
        "d/a.txt": b"second",
        "d/A (2).txt": b"third",
        "d/a (3).txt": b"first",
        "d/b.txt": b"fourth",
        "d/..hidden": b"fifth",
    }


def test_a_key_given_twice_by_key_and_prefix_is_zipped_once(satchel: Satchel) -> None:
    satchel.put_source("acme/once/x.txt", b"x")
    satchel.put_source("acme/once/y.txt", b"y")
    created = satchel.create({"keys": ["acme/once/x.txt"], "prefixes": ["acme/once/"]})
    done = satchel.wait(created.json["id"])
    assert done["progress"]["files_total"] == 2
    archive_bytes = fetch(satchel.call("GET", done["url"]).headers["Location"])
    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as archive:
        assert sorted(archive.namelist()) == ["once/x.txt", "once/y.txt"]
