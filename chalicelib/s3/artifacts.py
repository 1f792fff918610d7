"""Objects Satchel owns in the artifact bucket: how they are handed out, and how every trace
of a download is removed (where they live: s3/layout.py)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, urlsplit

from botocore.exceptions import ClientError

from chalicelib.core import clock
from chalicelib.core.models import Download
from chalicelib.s3 import layout

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef


def content_disposition(filename: str) -> str:
    """RFC 6266 `attachment` with an ASCII fallback and a UTF-8 `filename*`; never CR/LF."""
    visible = "".join(ch for ch in filename if not unicodedata.category(ch).startswith("C"))
    ascii_name = unicodedata.normalize("NFKD", visible).encode("ascii", "ignore").decode()
    ascii_name = re.sub(r'["\\]', "_", ascii_name).strip() or "download"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(visible, safe='')}"


def presign(
    s3: S3Client, bucket: str, key: str, *, filename: str, content_type: str, ttl_seconds: int
) -> str:
    url: str = s3.generate_presigned_url(
        "get_object",
        Params={
            "Bucket": bucket,
            "Key": key,
            "ResponseContentDisposition": content_disposition(filename),
            "ResponseContentType": content_type,
        },
        ExpiresIn=ttl_seconds,
    )
    return url


@dataclass(frozen=True)
class SignedUrl:
    """A presigned GET and the moment S3 stops honouring it."""

    url: str
    until: datetime


def presign_download(s3: S3Client, bucket: str, download: Download, ttl_seconds: int) -> SignedUrl | None:
    """A presigned GET of a DONE download's artifact, saved under the download's filename,
    valid `ttl_seconds` at most and never past the artifact's expiry (cleanup may delete the
    artifact the moment it passes). None: less than a whole second of the artifact is left.

    S3 reckons a URL's life from the signing second in its own `X-Amz-Date`, which botocore
    stamps when it signs, not from when the caller read the clock. A signature that crossed a
    second boundary on its way would outlive the artifact by up to a second, so the cap is
    applied to the date in the URL: one whose date leaves less than its life is signed again
    with the shorter one. The life shrinks with each pass, so this ends."""
    if download.artifact is None:
        raise ValueError(f"download {download.id} has no artifact")
    expires = clock.parse(download.expires_at) if download.expires_at else clock.now()
    # A first guess at the signing second: the one the clock reads now.
    ttl = min(ttl_seconds, _whole_seconds(expires - clock.now().replace(microsecond=0)))
    while ttl >= 1:
        url = presign(
            s3,
            bucket,
            download.artifact.key,
            filename=download.filename,
            content_type=download.artifact.content_type,
            ttl_seconds=ttl,
        )
        signed = signed_at(url)
        allowed = min(ttl, _whole_seconds(expires - signed))
        if allowed == ttl:
            return SignedUrl(url, signed + timedelta(seconds=ttl))
        ttl = allowed
    return None


def signed_at(url: str) -> datetime:
    """The signing second a SigV4 presigned URL carries (`X-Amz-Date`)."""
    (stamp,) = parse_qs(urlsplit(url).query)["X-Amz-Date"]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def _whole_seconds(span: timedelta) -> int:
    return int(span.total_seconds())


def abort_uploads(s3: S3Client, bucket: str, download_id: str) -> int:
    """Abort every multipart upload still open for this download (its artifact, its temporaries)."""
    artifact = layout.artifact_key(download_id)
    return _abort_under(s3, bucket, artifact, lambda key: key == artifact) + _abort_under(
        s3, bucket, layout.temporary_prefix(download_id), lambda key: True
    )


def abort_uploads_of(s3: S3Client, bucket: str, key: str) -> int:
    """Abort every multipart upload still open for exactly this key; count them."""
    return _abort_under(s3, bucket, key, lambda found: found == key)


def _abort_under(s3: S3Client, bucket: str, prefix: str, wanted: Callable[[str], bool]) -> int:
    aborted = 0
    paginator = s3.get_paginator("list_multipart_uploads")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for upload in page.get("Uploads", []):
            if not wanted(upload["Key"]):
                continue
            try:
                s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            except ClientError as error:
                if error.response["Error"]["Code"] != "NoSuchUpload":
                    raise
            aborted += 1
    return aborted


def remove_temporary(s3: S3Client, bucket: str, download_id: str) -> None:
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=layout.temporary_prefix(download_id)):
        keys: list[ObjectIdentifierTypeDef] = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def remove_artifact(s3: S3Client, bucket: str, download_id: str) -> None:
    s3.delete_object(Bucket=bucket, Key=layout.artifact_key(download_id))


def remove_everything(s3: S3Client, bucket: str, download_id: str) -> None:
    """Leave nothing of this download in the bucket: uploads, temporary objects, artifact."""
    abort_uploads(s3, bucket, download_id)
    remove_temporary(s3, bucket, download_id)
    remove_artifact(s3, bucket, download_id)
