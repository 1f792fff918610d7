"""The clients parse S3's timestamps with chalicelib/core/clients.py `parse_timestamp`."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

import pytest

from chalicelib.core import clients

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_s3.client import S3Client


def test_last_modified_and_listings_go_through_it(s3: S3Client, monkeypatch: pytest.MonkeyPatch) -> None:
    s3.put_object(Bucket="bucket", Key="k", Body=b"x")
    seen: list[object] = []
    parse = clients.parse_timestamp

    def recording(value: object) -> datetime.datetime:
        seen.append(value)
        return parse(value)

    monkeypatch.setattr(clients, "parse_timestamp", recording)
    clients.reset()  # a client of a new session, which takes the parser then
    try:
        fresh = clients.s3()
        got = fresh.get_object(Bucket="bucket", Key="k")["LastModified"]
        listed = fresh.list_objects_v2(Bucket="bucket")["Contents"][0]["LastModified"]
    finally:
        clients.reset()  # no later test gets this recording client
    assert got == listed.replace(microsecond=0)
    assert got.tzinfo is not None
    assert [type(value) for value in seen] == [str, str]
    assert str(seen[0]).endswith(" GMT")  # the header's HTTP date
    assert "T" in str(seen[1])  # the listing's ISO 8601
