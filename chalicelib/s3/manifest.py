"""The manifest: what Prepare decided goes into a download, kept in S3 between steps.

Step payloads carry only its key and totals (Step Functions allows 256 KB); the entries
themselves are JSON lines, read back one at a time by Build.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_s3.client import S3Client


@dataclass(frozen=True)
class Entry:
    key: str
    size: int
    etag: str
    name: str


def write(s3: S3Client, bucket: str, key: str, entries: Iterable[Entry]) -> None:
    body = "".join(json.dumps(asdict(entry), ensure_ascii=False) + "\n" for entry in entries)
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode("utf-8"), ContentType="application/x-ndjson")


def read(s3: S3Client, bucket: str, key: str) -> Iterator[Entry]:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    for line in body.iter_lines():
        if line:
            yield Entry(**json.loads(line))
