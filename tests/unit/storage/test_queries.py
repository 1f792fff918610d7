"""A query read through to its end (storage/queries.py): every page, following
LastEvaluatedKey, or only the count."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from boto3.dynamodb.types import Binary

from chalicelib.storage.queries import key_from_json, key_to_json, query_count, query_pages

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table


class Pages:
    """Answers each query with the next page; keeps the arguments of each call."""

    def __init__(self, *pages: dict[str, Any]) -> None:
        self.pages = list(pages)
        self.calls: list[dict[str, Any]] = []

    def query(self, **arguments: Any) -> dict[str, Any]:
        self.calls.append(arguments)
        return self.pages[len(self.calls) - 1]

    @property
    def typed(self) -> Table:
        """This fake where the code expects the boto3 resource (it answers the one call used)."""
        return cast("Table", self)


QUERY = {"KeyConditionExpression": "pk = :pk", "ExpressionAttributeValues": {":pk": "AUDIT#acme"}}


def test_pages_follow_the_last_evaluated_key_to_the_end_without_changing_the_query() -> None:
    table = Pages({"Items": [{"n": 1}], "LastEvaluatedKey": {"pk": "a"}}, {"Items": [{"n": 2}]})
    assert list(query_pages(table.typed, QUERY)) == [[{"n": 1}], [{"n": 2}]]
    assert "ExclusiveStartKey" not in table.calls[0]
    assert table.calls[1]["ExclusiveStartKey"] == {"pk": "a"}
    assert "ExclusiveStartKey" not in QUERY


def test_a_page_without_items_is_an_empty_page() -> None:
    assert list(query_pages(Pages({}).typed, QUERY)) == [[]]


def test_the_count_adds_up_every_page_and_reads_no_items() -> None:
    table = Pages(
        {"Count": 3, "LastEvaluatedKey": {"pk": "a"}},
        {"Count": 4, "LastEvaluatedKey": {"pk": "b"}},
        {"Count": 0},
    )
    assert query_count(table.typed, QUERY) == 7
    assert [call["Select"] for call in table.calls] == ["COUNT"] * 3
    assert table.calls[2]["ExclusiveStartKey"] == {"pk": "b"}


def test_a_saved_key_goes_through_json_unchanged() -> None:
    key = {"tenant": "acme", "n": Decimal("12345678901234567890.5"), "b": Binary(b"\x00\xff")}
    raw = json.loads(json.dumps(key_to_json(key)))
    assert raw["n"] == {"N": "12345678901234567890.5"}  # exact, never a float
    assert key_from_json(raw) == key
