"""Make the emulator's DynamoDB Query fast enough for exports of 100,000 rows.

moto serialises a Query response through a generic, shape-walking serializer at about a
millisecond per item; an export then spends minutes in the emulator alone. Query results
are plain DynamoDB JSON, so this patch writes them with json.dumps, as moto itself did
before that serializer. Nothing but speed changes: same items, same keys, same paging.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

from moto.core.responses import ActionResult
from moto.dynamodb.responses import DynamoHandler

_lock = threading.Lock()
_original: Any = None


def _default(value: Any) -> Any:
    if isinstance(value, bytes):  # binary attributes, as the AWS JSON protocol sends them
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _query(self: DynamoHandler) -> Any:
    result = _original(self)
    if isinstance(result, ActionResult):
        return json.dumps(result.result, default=_default)
    return result


def install() -> None:
    """Patch moto for the rest of this process (idempotent)."""
    global _original
    with _lock:
        if _original is None:
            _original = DynamoHandler.query
            DynamoHandler.query = _query  # type: ignore[method-assign]
