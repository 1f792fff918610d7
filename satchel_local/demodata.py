"""The demo dataset for `export`: card transactions, in their own DynamoDB table.

Rows are written straight into the emulator's backend (in this process both in tests and
in the local stack): 100,000 rows take seconds instead of minutes of BatchWriteItem calls.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import boto3
from boto3.dynamodb.types import TypeSerializer
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_dynamodb.client import DynamoDBClient

INDEX = "Transaction"
COLUMNS = ["id", "date", "merchant", "amount", "currency", "status", "card_last4", "refunded"]
MERCHANTS = ["Corner Café", 'The "Best" Shop', "Books, etc.", "Grocer", "Bäckerei Müller", "Line\nBreak Ltd"]
STATUSES = ["settled", "pending", "refunded"]


def table_name(stage: str) -> str:
    return f"satchel-{stage}-transactions"


def datasets_config(stage: str) -> str:
    """SATCHEL_DATASETS for this stage."""
    spec = {
        INDEX: {
            "table": table_name(stage),
            "tenant_key": "tenant",
            "columns": COLUMNS,
            "description": "Card transactions (demo data)",
        }
    }
    return json.dumps(spec)


def create_table(session: boto3.session.Session, stage: str) -> None:
    dynamodb: DynamoDBClient = session.client("dynamodb")
    dynamodb.create_table(
        TableName=table_name(stage),
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[
            {"AttributeName": "tenant", "KeyType": "HASH"},
            {"AttributeName": "id", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "tenant", "AttributeType": "S"},
            {"AttributeName": "id", "AttributeType": "S"},
        ],
    )


def row(tenant: str, number: int, padding: int = 0) -> dict[str, Any]:
    """Transaction `number` of `tenant`: the same every time, so tests can predict it."""
    item = {
        "tenant": tenant,
        "id": f"txn-{number:09d}",
        "date": f"2024-{number % 12 + 1:02d}-{number % 28 + 1:02d}T{number % 24:02d}:{number % 60:02d}:00Z",
        "merchant": MERCHANTS[number % len(MERCHANTS)],
        "amount": Decimal(f"{number % 5000}.{number % 100:02d}"),
        "currency": "EUR",
        "status": STATUSES[number % len(STATUSES)],
        "card_last4": f"{number % 10000:04d}",
        "refunded": number % len(STATUSES) == 2,
    }
    if padding:
        item["merchant"] = f"{item['merchant']} {'x' * padding}"
    return item


def seed(stage: str, tenant: str, count: int, region: str, padding: int = 0) -> None:
    """Write `count` rows for `tenant` into the emulator's table."""
    backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][region]
    serialize = TypeSerializer().serialize
    name = table_name(stage)
    for number in range(count):
        backend.put_item(name, {key: serialize(value) for key, value in row(tenant, number, padding).items()})
