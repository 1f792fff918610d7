"""Datasets that `export` reads: tenant-scoped DynamoDB queries declared in configuration.

SATCHEL_DATASETS holds a JSON object, one entry per index (the name that prefixes the
export's file name), parsed once into `Settings.datasets` (chalicelib/core/settings.py: Dataset):

    {"Transaction": {"table": "acme-transactions", "tenant_key": "tenant",
                     "index": null, "columns": ["id", "date", "amount", ...],
                     "description": "Card transactions"}}

A query always has the key condition `tenant_key = <caller's tenant>`: a caller reads only
their own tenant's rows, whatever the params say.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.conditions import Attr, ConditionBase, Key

from chalicelib.core.settings import Dataset
from chalicelib.storage.queries import KeyedPage, query_count, query_pages_from

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_dynamodb.service_resource import Table

FILTER_OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "begins_with", "contains")


@dataclass(frozen=True)
class Query:
    dataset: Dataset
    tenant: str
    columns: list[str]
    filters: list[dict[str, Any]] = field(default_factory=list)

    def _filter(self) -> ConditionBase | None:
        condition: ConditionBase | None = None
        for spec in self.filters:
            value = spec["value"]
            if isinstance(value, float | int) and not isinstance(value, bool):
                value = Decimal(str(value))  # DynamoDB numbers: boto3 refuses floats
            clause = getattr(Attr(spec["column"]), spec["op"])(value)
            condition = clause if condition is None else condition & clause
        return condition

    def _arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "KeyConditionExpression": Key(self.dataset.tenant_key).eq(self.tenant),
        }
        if self.dataset.index:
            arguments["IndexName"] = self.dataset.index
        condition = self._filter()
        if condition is not None:
            arguments["FilterExpression"] = condition
        return arguments

    def pages(self, table: Table, start: dict[str, Any] | None = None) -> Iterator[KeyedPage]:
        """The matching rows, a DynamoDB page (up to 1 MB) at a time, only the chosen columns,
        from `start` (a page's LastEvaluatedKey), each page with the key the next starts from."""
        names = {f"#col{index}": column for index, column in enumerate(self.columns)}
        projection = {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}
        return query_pages_from(table, {**self._arguments(), **projection}, start)

    def count(self, table: Table) -> int:
        return query_count(table, self._arguments())
