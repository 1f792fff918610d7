"""Make the emulator's DynamoDB Query fast enough for exports of 100,000 rows.

Two costs of moto's Query grow with the data, and an export of the demo dataset spends
minutes in them alone:

- its response goes through a generic, shape-walking serializer at about a millisecond
  per item. Query results are plain DynamoDB JSON, so they are written with json.dumps,
  as moto itself did before that serializer;
- every page of a query on a table sorts *all* the table's items with Python-level
  comparisons, sorts the partition again, then walks the pages already returned one item
  at a time to find ExclusiveStartKey: each page costs as much as the whole table, so a
  query's cost grows with pages x table size (42 s to count 100,000 rows, 140 s for an
  export). A query on a table's own key (no index) reads its partition directly, sorts it
  once on plain values, and finds the start key by bisection. moto also deep-copies every
  item of a page, even for Select=COUNT, which only counts them: a count does not copy;
- a ProjectionExpression converts each item to plain Python once per *path* (the export's
  8 columns convert every row 8 times), and builds the projected item through a dict
  that re-measures the whole item at each attribute it adds. Here an item is converted
  once, and its projection, a part of an item already stored, is not measured again.

Nothing but speed changes: same items, same order, same pages and LastEvaluatedKey, same
ScannedCount. Anything else (indexes, legacy QueryFilter, tables without a range key)
takes moto's own path.
"""

from __future__ import annotations

import base64
import bisect
import contextvars
import copy
import json
import threading
from typing import Any

from botocore.utils import merge_dicts
from moto.core.responses import ActionResult
from moto.dynamodb.models.dynamo_type import DynamoType, Item, serializer
from moto.dynamodb.models.table import RESULT_SIZE_LIMIT, Table
from moto.dynamodb.models.utilities import find_nested_key
from moto.dynamodb.responses import DynamoHandler

_lock = threading.Lock()
_original_response: Any = None
_original_query: Any = None
# Set while a Select=COUNT query runs: its items are counted, never handed out.
_counting: contextvars.ContextVar[bool] = contextvars.ContextVar("counting", default=False)


def _default(value: Any) -> Any:
    if isinstance(value, bytes):  # binary attributes, as the AWS JSON protocol sends them
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _query_response(self: DynamoHandler) -> Any:
    counting = _counting.set(self.body.get("Select") == "COUNT")
    try:
        result = _original_response(self)
    finally:
        _counting.reset(counting)
    if isinstance(result, ActionResult):
        return json.dumps(result.result, default=_default)
    return result


def _sort_key(item: Item) -> Any:
    # moto orders by DynamoType comparison, which compares cast values: the same order.
    key = item.range_key
    assert key is not None
    return key.value if key.type == "S" else key.cast_value  # cast_value of an S is its value


def _project(item: Item, expressions: list[list[str]]) -> Item:
    """Item.project, with the item converted once rather than once per expression."""
    whole = item.to_regular_json()  # a fresh copy: what is merged below never reaches the table
    projected: dict[str, Any] = {}
    for expression in expressions:
        merge_dicts(projected, find_nested_key(expression, whole))
    result = Item(hash_key=item.hash_key, range_key=item.range_key, attrs={})
    # dict.update bypasses the size check on each insertion: a part of a stored item fits.
    dict.update(
        result.attrs,
        {name: DynamoType(value) for name, value in serializer.serialize(projected)["M"].items()},
    )
    return result


def _query(
    self: Table,
    hash_key: DynamoType | None,
    range_comparison: str | None,
    range_objs: list[DynamoType],
    limit: int,
    exclusive_start_key: dict[str, Any] | None,
    scan_index_forward: bool,
    projection_expressions: list[list[str]] | None,
    index_name: str | None = None,
    consistent_read: bool = False,
    filter_expression: Any = None,
    hash_key_conditions: list[tuple[str, DynamoType]] | None = None,
    range_key_conditions: list[tuple[str, str, list[DynamoType]]] | None = None,
    **filter_kwargs: Any,
) -> tuple[list[Item], int, dict[str, Any] | None]:
    range_attr = self.range_key_attr
    simple = (
        index_name is None
        and not filter_kwargs
        and hash_key is not None
        and len(hash_key_conditions or []) <= 1
        and len(range_key_conditions or []) <= 1
        and all(name == range_attr for name, _, _ in range_key_conditions or [])
    )
    if range_attr is None or not simple:
        return _original_query(  # type: ignore[no-any-return]
            self,
            hash_key,
            range_comparison,
            range_objs,
            limit,
            exclusive_start_key,
            scan_index_forward,
            projection_expressions,
            index_name,
            consistent_read,
            filter_expression,
            hash_key_conditions=hash_key_conditions,
            range_key_conditions=range_key_conditions,
            **filter_kwargs,
        )
    partition = self.items.get(hash_key)
    candidates: list[Item] = list(partition.values()) if partition else []
    keys = [_sort_key(item) for item in candidates]
    order = sorted(range(len(candidates)), key=keys.__getitem__, reverse=not scan_index_forward)
    candidates = [candidates[i] for i in order]
    start = 0
    if exclusive_start_key is not None:
        # moto skips every item at or before the start key in the query's direction.
        after = DynamoType(exclusive_start_key[range_attr]).cast_value
        ordered = [keys[i] for i in order]
        if scan_index_forward:
            start = bisect.bisect_right(ordered, after)
        else:
            start = bisect.bisect_right([_Reversed(key) for key in ordered], _Reversed(after))

    results: list[Item] = []
    result_size = 0
    scanned_count = 0
    last_evaluated_key = None
    for result in candidates[start:]:
        # As moto does: a page ends at `limit` items or when the next one would pass 1 MB.
        size = result.size()
        if len(results) == limit or result_size + size > RESULT_SIZE_LIMIT:
            last_evaluated_key = self._get_last_evaluated_key(results[-1], None)
            break
        assert result.range_key is not None
        if range_comparison is None or result.range_key.compare(range_comparison, range_objs):
            results.append(result)
            result_size += size
            scanned_count += 1

    if filter_expression is not None:
        results = [item for item in results if filter_expression.expr(item)]
    if _counting.get():
        return results, scanned_count, last_evaluated_key
    if projection_expressions:
        # Projected items are built afresh: the copy moto makes first is only needed without.
        results = [_project(item, projection_expressions) for item in results]
    else:
        results = copy.deepcopy(results)
    return results, scanned_count, last_evaluated_key


class _Reversed:
    """Orders the other way round, so bisect works on a list sorted descending."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __lt__(self, other: _Reversed) -> bool:
        return bool(other.key < self.key)


def install() -> None:
    """Patch moto for the rest of this process (idempotent)."""
    global _original_response, _original_query
    with _lock:
        if _original_response is None:
            _original_response = DynamoHandler.query
            DynamoHandler.query = _query_response  # type: ignore[method-assign]
            _original_query = Table.query
            Table.query = _query  # type: ignore[method-assign]
