"""An export's query: always keyed on the caller's tenant, on the dataset's index if it has
one, with the params' filters as DynamoDB conditions (numbers as Decimal) and only the chosen
columns projected, page after page."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from boto3.dynamodb.conditions import Attr, ConditionBase, Key

from chalicelib.core.settings import Dataset
from chalicelib.downloadtypes.datasets import Query

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table as DynamoTable

DATASET = Dataset("Transaction", "acme-transactions", "tenant", ["id", "amount", "date"], index="by-tenant")


class Table:
    """Answers each query with the next page; keeps the arguments it was called with."""

    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.pages = pages
        self.calls: list[dict[str, Any]] = []

    def query(self, **arguments: Any) -> dict[str, Any]:
        self.calls.append(arguments)
        return self.pages[len(self.calls) - 1]

    @property
    def typed(self) -> DynamoTable:
        """This fake where the code expects the boto3 resource (it answers the one call used)."""
        return cast("DynamoTable", self)


def test_rows_come_page_by_page_with_only_the_chosen_columns_of_the_callers_tenant() -> None:
    table = Table([{"Items": [{"id": "1"}], "LastEvaluatedKey": {"id": "1"}}, {"Items": [{"id": "2"}]}])
    query = Query(DATASET, "acme", ["id", "amount"])
    # Each page with the key the next one starts from (a Build in runs saves it).
    assert list(query.pages(table.typed)) == [([{"id": "1"}], {"id": "1"}), ([{"id": "2"}], None)]
    first, second = table.calls
    assert first["KeyConditionExpression"] == Key("tenant").eq("acme")
    assert first["IndexName"] == "by-tenant"
    assert first["ProjectionExpression"] == "#col0, #col1"
    assert first["ExpressionAttributeNames"] == {"#col0": "id", "#col1": "amount"}
    assert "FilterExpression" not in first
    assert "ExclusiveStartKey" not in first
    assert second["ExclusiveStartKey"] == {"id": "1"}


def test_pages_go_on_from_a_saved_key() -> None:
    table = Table([{"Items": [{"id": "3"}]}])
    pages = list(Query(DATASET, "acme", ["id"]).pages(table.typed, {"tenant": "acme", "id": "2"}))
    assert pages == [([{"id": "3"}], None)]
    assert table.calls[0]["ExclusiveStartKey"] == {"tenant": "acme", "id": "2"}


def _values(condition: ConditionBase) -> list[Any]:
    """The compared values of a condition, left to right through its ANDs."""
    found: list[Any] = []
    for operand in condition.get_expression()["values"]:
        if isinstance(operand, ConditionBase):
            found.extend(_values(operand))
        elif not isinstance(operand, Attr):
            found.append(operand)
    return found


def test_filters_are_anded_and_numbers_become_decimals() -> None:
    filters: list[dict[str, Any]] = [
        {"column": "amount", "op": "gte", "value": 10.5},
        {"column": "date", "op": "begins_with", "value": "2024-"},
        {"column": "flagged", "op": "eq", "value": True},  # a boolean stays a boolean
    ]
    table = Table([{"Count": 3}])
    assert Query(DATASET, "globex", ["id"], filters).count(table.typed) == 3
    (call,) = table.calls
    expected = (
        Attr("amount").gte(Decimal("10.5")) & Attr("date").begins_with("2024-") & Attr("flagged").eq(True)
    )
    assert call["FilterExpression"] == expected
    # 10.5 == Decimal("10.5") in Python: the type is what boto3 refuses, so check it apart.
    values = _values(call["FilterExpression"])
    assert [type(value) for value in values] == [Decimal, str, bool]
    assert call["KeyConditionExpression"] == Key("tenant").eq("globex")
    assert call["Select"] == "COUNT"
    assert "ProjectionExpression" not in call


def test_the_count_adds_up_every_page_and_a_dataset_without_an_index_queries_the_table() -> None:
    plain = Dataset("Order", "acme-orders", "tenant_id", ["id"])
    table = Table([{"Count": 2, "LastEvaluatedKey": {"k": 1}}, {"Count": 5}])
    assert Query(plain, "acme", ["id"]).count(table.typed) == 7
    assert all("IndexName" not in call for call in table.calls)
    assert table.calls[0]["KeyConditionExpression"] == Key("tenant_id").eq("acme")
