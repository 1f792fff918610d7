"""A DynamoDB table whose writes are serialised, as DynamoDB's are per item.

moto does not evaluate a condition and its write atomically across threads (FIELD-NOTES.md),
so races that must have exactly one winner are run against this wrapper. (Every stack also
serialises moto's racy calls process-wide: satchel_local/serialise.py.)
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_dynamodb.service_resource import Table


class SerialisedWrites:
    """A DynamoDB Table whose writes happen one at a time (each condition checked with its write)."""

    _WRITES = frozenset({"put_item", "update_item", "delete_item"})

    def __init__(self, table: Table) -> None:
        self._table = table
        self._lock = threading.Lock()

    @property
    def typed(self) -> Table:
        """This wrapper where the code expects the boto3 resource (it forwards every call)."""
        return cast("Table", self)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._table, name)
        if name not in self._WRITES:
            return attribute

        def serialised(**kwargs: Any) -> Any:
            with self._lock:
                return attribute(**kwargs)

        return serialised
