"""Presigned URLs of an artifact never outlive it, reckoned as S3 reckons them: from the
signing second in the URL, not from when the caller read the clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import boto3
import botocore.auth
import pytest
from botocore.config import Config

from chalicelib.core import clock
from chalicelib.core.models import Artifact, Download, State
from chalicelib.s3 import artifacts
from tests.support import records

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

EXPIRES = datetime(2026, 11, 29, 12, 0, 10, 500000, tzinfo=UTC)


def done(expires_at: datetime) -> Download:
    return records.download(
        id="d1",
        filename="report.zip",
        state=State.DONE,
        created_at=clock.iso(expires_at - timedelta(hours=1)),
        artifact=Artifact(key="artifacts/d1", size=1, sha256="0" * 64, content_type="application/zip"),
        expires_at=clock.iso(expires_at),
    )


def valid_until(url: str) -> datetime:
    """What S3 checks, read from the URL by hand: X-Amz-Date plus X-Amz-Expires."""
    query = parse_qs(urlsplit(url).query)
    signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return signed + timedelta(seconds=int(query["X-Amz-Expires"][0]))


@pytest.fixture
def s3() -> S3Client:
    """Signing is local: no request is sent. SigV4, as Satchel's own client signs."""
    client: S3Client = boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        config=Config(signature_version="s3v4"),
    )
    return client


def clocks(monkeypatch: pytest.MonkeyPatch, read_at: datetime, signed_at: list[datetime]) -> list[datetime]:
    """The caller reads `read_at`; botocore signs at each of `signed_at` in turn (the last
    repeats). Returns the signing times actually used."""
    used: list[datetime] = []
    stamps: Iterator[datetime] = iter(signed_at)

    def signing_now(*args: object, **kwargs: object) -> datetime:
        moment = next(stamps, signed_at[-1])
        used.append(moment)
        return moment.replace(tzinfo=None)  # botocore's clock is naive UTC

    monkeypatch.setattr(clock, "now", lambda: read_at)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", signing_now)
    return used


def test_a_signature_that_crosses_a_second_is_signed_again_with_the_shorter_life(
    s3: S3Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read in second 05 (a 5 s life, to 10), but signed in second 07: 07 + 5 would outlive
    # the artifact at 10.5, so the URL is signed again for 3 s.
    used = clocks(
        monkeypatch,
        read_at=EXPIRES - timedelta(seconds=4.6),
        signed_at=[EXPIRES - timedelta(seconds=3.5), EXPIRES - timedelta(seconds=3.4)],
    )
    signed = artifacts.presign_download(s3, "bucket", done(EXPIRES), 300)
    assert signed is not None
    assert len(used) == 2
    assert valid_until(signed.url) == signed.until == EXPIRES.replace(microsecond=0)
    assert signed.until <= EXPIRES


def test_a_signature_in_the_same_second_is_signed_once(s3: S3Client, monkeypatch: pytest.MonkeyPatch) -> None:
    used = clocks(
        monkeypatch, read_at=EXPIRES - timedelta(seconds=4.6), signed_at=[EXPIRES - timedelta(seconds=4.55)]
    )
    signed = artifacts.presign_download(s3, "bucket", done(EXPIRES), 300)
    assert signed is not None
    assert len(used) == 1
    assert valid_until(signed.url) == signed.until == EXPIRES.replace(microsecond=0)


def test_the_asked_life_applies_when_expiry_is_far(s3: S3Client, monkeypatch: pytest.MonkeyPatch) -> None:
    at = EXPIRES - timedelta(hours=2)
    clocks(monkeypatch, read_at=at, signed_at=[at])
    signed = artifacts.presign_download(s3, "bucket", done(EXPIRES), 300)
    assert signed is not None
    assert valid_until(signed.url) == signed.until == at.replace(microsecond=0) + timedelta(seconds=300)


def test_no_url_when_the_last_second_runs_out_while_signing(
    s3: S3Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    clocks(
        monkeypatch, read_at=EXPIRES - timedelta(seconds=1.1), signed_at=[EXPIRES - timedelta(seconds=0.5)]
    )
    assert artifacts.presign_download(s3, "bucket", done(EXPIRES), 300) is None
