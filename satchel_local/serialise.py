"""moto's calls that are not thread-safe, serialised as the real services order them.

The local stack and the tests run workers, sweeps and API calls on threads against one
moto. moto is not thread-safe where AWS is (FIELD-NOTES.md):
- its S3 backend mutates a bucket's dict of multipart uploads without a lock: a build and a
  cleanup sweep aborting one upload at once can raise KeyError inside moto, where S3 answers
  NoSuchUpload;
- its DynamoDB applies an update's actions one by one, unlocked, and serialises a GetItem's
  answer from the live item: a read racing a write can see it half applied, or fail with
  "dictionary changed size during iteration", where DynamoDB answers a consistent item.
`install()` serialises those calls for the rest of the process (idempotent): every DynamoDB
request whole (parsing, the backend call and its answer), and S3's multipart-upload calls.
"""

from __future__ import annotations

import functools
import threading
from typing import Any
from unittest import mock

_LOCK = threading.Lock()  # guards _patches
# One lock per service: an S3 call holding its lock never waits on a DynamoDB request (nor
# the reverse), whatever moto does within a call (S3 notifications, for one).
_S3 = threading.RLock()
_DYNAMODB = threading.RLock()
_S3_MULTIPART_METHODS = (
    "create_multipart_upload",
    "upload_part",
    "upload_part_copy",
    "complete_multipart_upload",
    "abort_multipart_upload",
    "list_parts",
    "list_multipart_uploads",
)
_patches: list[Any] = []


def _serialised_s3(method: Any, name: str) -> Any:
    from moto.s3.exceptions import NoSuchUpload

    @functools.wraps(method)
    def serialised(self: Any, bucket_name: str, *args: Any, **kwargs: Any) -> Any:
        with _S3:
            try:
                result = method(self, bucket_name, *args, **kwargs)
            except KeyError as missing:
                # moto indexes the uploads dict directly: an upload aborted a moment ago
                # is a KeyError there, NoSuchUpload in S3.
                raise NoSuchUpload(upload_id=str(missing)) from None
            # A copy: moto's responder iterates the listing after this returns.
            return dict(result) if name == "list_multipart_uploads" else result

    return serialised


def _serialised_dynamodb(method: Any) -> Any:
    @functools.wraps(method)
    def serialised(self: Any) -> Any:
        with _DYNAMODB:
            return method(self)

    return serialised


def install() -> None:
    """Serialise moto's racy S3 and DynamoDB calls for the rest of this process (idempotent)."""
    from moto.dynamodb.responses import DynamoHandler
    from moto.s3.models import S3Backend

    with _LOCK:
        if _patches:
            return
        for name in _S3_MULTIPART_METHODS:
            _patches.append(
                mock.patch.object(S3Backend, name, _serialised_s3(getattr(S3Backend, name), name))
            )
        _patches.append(
            mock.patch.object(DynamoHandler, "call_action", _serialised_dynamodb(DynamoHandler.call_action))
        )
        for patch in _patches:
            patch.start()
