"""The Digest step: the SHA-256 of an artifact the builder did not see whole, and the
CRC-32 of every member whose bytes no worker read.

When S3 copied parts of the artifact (server-side assembly, parallel segments), no worker
saw every byte, and S3 keeps no SHA-256 of a multipart object (its full-object checksums
are CRCs). So the artifact is read back once, a chunk at a time, and hashed: the `sha256`
a client verifies is the real one of the bytes it downloads. On the same pass each copied
member's range is checked against the CRC-32 its headers announce (chalicelib/archive/integrity.py):
a mismatch ends the download FAILED `ChecksumMismatch`, never DONE: the step raises, and
the Catch's MarkFailed removes the artifact with everything else of the download.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from chalicelib.archive import integrity
from chalicelib.core.errors import retried_when_transient
from chalicelib.runtime import Runtime
from chalicelib.s3 import layout
from chalicelib.workflow.payloads import Built, Digested

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_s3.client import S3Client


def object_sha256(
    s3: S3Client, bucket: str, key: str, chunk_bytes: int, checks: Iterable[integrity.Check] = ()
) -> str:
    """The object's SHA-256; `checks` verified on the way (ChecksumMismatch)."""
    digest = hashlib.sha256()
    verifier = integrity.Verifier(checks)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        for chunk in body.iter_chunks(chunk_bytes):
            digest.update(chunk)
            verifier.update(chunk)
    finally:
        body.close()
    verifier.finish()
    return digest.hexdigest()


@retried_when_transient
def digest(runtime: Runtime, event: Built) -> Digested:
    settings, s3 = runtime.settings, runtime.s3
    bucket, download_id = settings.artifact_bucket, event["download_id"]
    checks = list(integrity.read(s3, bucket, layout.checks_key(download_id)))
    sha256 = object_sha256(s3, bucket, event["artifact_key"], settings.part_size, checks)
    return {**event, "sha256": sha256}
