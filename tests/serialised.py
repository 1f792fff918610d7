"""moto's non-thread-safe calls, serialised as the real services order them.

moto does not evaluate a DynamoDB condition and its write atomically across threads
(FIELD-NOTES.md), so races that must have exactly one winner are run against a table whose
writes are serialised; and its S3 multipart uploads are serialised for every stack.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from typing import Any
from unittest import mock


class SerialisedWrites:
    """A DynamoDB Table whose writes happen one at a time (each condition checked with its write)."""

    _WRITES = frozenset({"put_item", "update_item", "delete_item"})

    def __init__(self, table: Any) -> None:
        self._table = table
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._table, name)
        if name not in self._WRITES:
            return attribute

        def serialised(**kwargs: Any) -> Any:
            with self._lock:
                return attribute(**kwargs)

        return serialised


# moto's S3 backend mutates each bucket's dict of multipart uploads without a lock: a build
# and a cleanup sweep aborting the same upload at once can raise KeyError inside moto
# (FIELD-NOTES.md) where real S3 answers NoSuchUpload. The stack fixture serialises those
# backend methods, process-wide, as S3 orders the requests on one upload.
_S3_MULTIPART_LOCK = threading.RLock()
_S3_MULTIPART_METHODS = (
    "create_multipart_upload",
    "upload_part",
    "upload_part_copy",
    "complete_multipart_upload",
    "abort_multipart_upload",
    "list_parts",
    "list_multipart_uploads",
)
_s3_patches: list[Any] = []


def _serialised_s3(method: Any, name: str) -> Any:
    from moto.s3.exceptions import NoSuchUpload

    @functools.wraps(method)
    def serialised(self: Any, bucket_name: str, *args: Any, **kwargs: Any) -> Any:
        with _S3_MULTIPART_LOCK:
            try:
                result = method(self, bucket_name, *args, **kwargs)
            except KeyError as missing:
                # moto indexes the uploads dict directly: an upload aborted a moment ago
                # is a KeyError there, NoSuchUpload in S3.
                raise NoSuchUpload(upload_id=str(missing)) from None
            # A copy: moto's responder iterates the listing after this returns.
            return dict(result) if name == "list_multipart_uploads" else result

    return serialised


def install_s3_multipart_lock() -> None:
    """Serialise moto's S3 multipart-upload calls for the rest of this process (idempotent)."""
    from moto.s3.models import S3Backend

    with _S3_MULTIPART_LOCK:
        if _s3_patches:
            return
        for name in _S3_MULTIPART_METHODS:
            patch = mock.patch.object(S3Backend, name, _serialised_s3(getattr(S3Backend, name), name))
            patch.start()
            _s3_patches.append(patch)


@contextlib.contextmanager
def dynamodb_items_serialised() -> Iterator[None]:
    """While the block runs, moto's DynamoDB reads and writes happen one at a time: a read never
    sees an update half applied, as it cannot on DynamoDB (moto applies an update's actions
    one by one, unlocked)."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    with contextlib.ExitStack() as patches:
        for name in (
            "get_item",
            "put_item",
            "update_item",
            "delete_item",
            "transact_write_items",
            "query",
            "scan",
        ):
            method = getattr(DynamoDBBackend, name)

            def serialised(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
                with lock:
                    return _method(*args, **kwargs)

            patches.enter_context(
                mock.patch.object(DynamoDBBackend, name, functools.wraps(method)(serialised))
            )
        yield
