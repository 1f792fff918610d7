"""The Digest step: the SHA-256 of an artifact the builder did not see whole.

When S3 copied parts of the artifact (server-side assembly, parallel segments), no worker
saw every byte, and S3 keeps no SHA-256 of a multipart object (its full-object checksums
are CRCs). So the artifact is read back once, a chunk at a time, and hashed: the `sha256`
a client verifies is the real one of the bytes it downloads.
"""

from __future__ import annotations

import hashlib
from typing import Any

from chalicelib.errors import retried_when_transient
from chalicelib.runtime import Runtime


def object_sha256(s3: Any, bucket: str, key: str, chunk_bytes: int) -> str:
    digest = hashlib.sha256()
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        for chunk in body.iter_chunks(chunk_bytes):
            digest.update(chunk)
    finally:
        body.close()
    return digest.hexdigest()


@retried_when_transient
def digest(runtime: Runtime, event: dict[str, Any]) -> dict[str, Any]:
    settings = runtime.settings
    sha256 = object_sha256(runtime.s3, settings.artifact_bucket, event["artifact_key"], settings.part_size)
    return {**event, "sha256": sha256}
