"""Reading a DynamoDB query through to its end: its pages, or just how many items it matches.

Shared by the stores (the audit trail) and the download types that query tables (export).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_dynamodb.service_resource import Table


def query_pages(table: Table, arguments: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    """Every page of a query (up to 1 MB each), following LastEvaluatedKey."""
    arguments = dict(arguments)
    while True:
        page = table.query(**arguments)
        yield page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def query_count(table: Table, arguments: dict[str, Any]) -> int:
    """How many items a query matches (after its filter), without reading them out."""
    arguments = {**arguments, "Select": "COUNT"}
    total = 0
    while True:
        page = table.query(**arguments)
        total += int(page.get("Count", 0))
        if "LastEvaluatedKey" not in page:
            return total
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]
