"""Streaming an artifact into an S3 multipart upload with bounded memory.

At most one part (plus the chunk being written) is held at a time. The SHA-256 of the
whole object is computed on the way through, so Finalize never reads the artifact back.
"""

from __future__ import annotations

import hashlib
from typing import Any


class MultipartWriter:
    def __init__(self, s3: Any, bucket: str, key: str, part_size: int, content_type: str) -> None:
        self._s3 = s3
        self.bucket = bucket
        self.key = key
        self._part_size = part_size
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._sha256 = hashlib.sha256()
        self.size = 0
        created = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type)
        self.upload_id: str = created["UploadId"]

    @property
    def buffered(self) -> int:
        """Bytes held in memory, waiting to fill a part."""
        return len(self._buffer)

    def write(self, data: bytes) -> None:
        self._sha256.update(data)
        self.size += len(data)
        self._buffer += data
        while len(self._buffer) >= self._part_size:
            self._upload(bytes(self._buffer[: self._part_size]))
            del self._buffer[: self._part_size]

    def _upload(self, body: bytes) -> None:
        number = len(self._parts) + 1
        result = self._s3.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
        )
        self._parts.append({"PartNumber": number, "ETag": result["ETag"]})

    def complete(self) -> str:
        """Upload what is buffered, complete the upload, and return the hex SHA-256."""
        if self._buffer or not self._parts:
            self._upload(bytes(self._buffer))
            self._buffer.clear()
        self._s3.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        return self._sha256.hexdigest()

    def abort(self) -> None:
        self._buffer.clear()
        self._s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
