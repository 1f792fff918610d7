"""Reading a DynamoDB query through to its end: its pages, or just how many items it matches.

Shared by the stores (the audit trail) and the download types that query tables (export).
A query read across Lambda runs goes on from the key its last page ended at
(`query_pages_from`), carried between runs as JSON (`key_to_json`, `key_from_json`).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_dynamodb.service_resource import Table

# A page and the key to go on from after it (None: it was the last page).
KeyedPage = tuple[list[dict[str, Any]], dict[str, Any] | None]


def query_pages(table: Table, arguments: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    """Every page of a query (up to 1 MB each), following LastEvaluatedKey."""
    for page, _ in query_pages_from(table, arguments, None):
        yield page


def query_pages_from(
    table: Table, arguments: dict[str, Any], start: dict[str, Any] | None
) -> Iterator[KeyedPage]:
    """The pages of a query from `start` (a LastEvaluatedKey; None: the first page), each with
    the key the next one starts from."""
    arguments = dict(arguments)
    if start is not None:
        arguments["ExclusiveStartKey"] = start
    while True:
        page = table.query(**arguments)
        following = page.get("LastEvaluatedKey")
        yield page.get("Items", []), following
        if following is None:
            return
        arguments["ExclusiveStartKey"] = following


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


def key_to_json(key: dict[str, Any]) -> dict[str, Any]:
    """A LastEvaluatedKey as JSON holds it: DynamoDB's typed form (numbers stay exact strings),
    a binary key attribute in base64."""
    typed = {name: TypeSerializer().serialize(value) for name, value in key.items()}
    return {
        name: {"B": base64.b64encode(bytes(value["B"])).decode("ascii")} if "B" in value else value
        for name, value in typed.items()
    }


def key_from_json(raw: dict[str, Any]) -> dict[str, Any]:
    typed = {
        name: {"B": base64.b64decode(value["B"])} if "B" in value else value for name, value in raw.items()
    }
    return {name: TypeDeserializer().deserialize(value) for name, value in typed.items()}
