"""The local stack's emulation in process, on moto: the pollers that hand SQS batches and EventBridge
events to the handlers, and the fast DynamoDB queries that must answer as moto's own."""

from __future__ import annotations

import json
import threading
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID as ACCOUNT
from moto.dynamodb.models.table import Table

import app as app_module
from satchel_local import eventsources, fastqueries
from satchel_local.stack import MOTO_SENDER_ID, REGION, Stack
from statemachine.definition import function_name
from tests.support.stack import Satchel


def test_the_requests_poller_invokes_once_per_batch_and_deletes_only_what_succeeded(
    stack: Stack, satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    satchel.put_source("acme/a.txt", b"a")
    events: list[dict[str, Any]] = []
    original = app_module.handle_requests

    def spy(event: dict[str, Any], context: Any) -> Any:
        events.append(event)
        return original(event, context)

    monkeypatch.setattr(
        app_module, "handle_requests", spy
    )  # dispatch resolves "app.handle_requests" per call
    sqs = boto3.client("sqs", region_name=REGION)
    good = {
        "tenant": "acme",
        "user_id": "alice",
        "request": {"type": "zip", "params": {"keys": ["acme/a.txt"]}},
    }
    sqs.send_message_batch(
        QueueUrl=stack.requests_queue_url,
        Entries=[
            {
                "Id": "good",
                "MessageBody": json.dumps(good),
                "MessageAttributes": {"origin": {"DataType": "String", "StringValue": "test"}},
            },
            {"Id": "bad", "MessageBody": "{not json"},
        ],
    )
    poller = eventsources.SqsEventSource(
        "requests-queue", threading.Event(), stack.requests_queue_url, function_name(stack.stage, "requests")
    )
    poller.step()

    assert len(events) == 1  # both messages, one invocation
    records = events[0]["Records"]
    assert [record["body"] for record in records] == [json.dumps(good), "{not json"]
    for record in records:
        assert record["eventSource"] == "aws:sqs"
        assert record["eventSourceARN"] == poller.queue_arn
        assert record["awsRegion"] == REGION
        assert all(record[name] for name in ("messageId", "receiptHandle", "md5OfBody"))
        assert record["attributes"]["ApproximateReceiveCount"] == "1"
        assert record["attributes"]["SenderId"] == MOTO_SENDER_ID  # what the requests function binds
    assert records[0]["messageAttributes"]["origin"] == {
        "stringValue": "test",
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "String",
    }
    # The good message started a download and was deleted; the bad one waits, invisible,
    # for its visibility timeout, and the redrive policy after that.
    started = satchel.call("GET", "/downloads").json["items"]
    assert [item["params"]["keys"] for item in started] == [["acme/a.txt"]]
    counts = sqs.get_queue_attributes(
        QueueUrl=stack.requests_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert counts == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "1"}


def test_the_event_targets_hand_over_one_event_at_a_time_with_its_account(
    stack: Stack, satchel: Satchel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Request events reach `events` from the request bus only; S3's events of manifests reach
    `manifests` from the default bus."""
    satchel.put_source("acme/a.txt", b"a")
    events: list[dict[str, Any]] = []
    originals = {name: getattr(app_module, name) for name in ("handle_event", "handle_manifest")}

    def spy(name: str) -> Any:
        def handler(event: dict[str, Any], context: Any) -> Any:
            events.append({**event, "handler": name})
            return originals[name](event, context)

        return handler

    for name in originals:
        monkeypatch.setattr(app_module, name, spy(name))
    request = {"type": "zip", "params": {"keys": ["acme/a.txt"]}, "filename": "evented.zip"}
    entry = {
        "Source": "satchel.requests.acme",
        "DetailType": "Satchel Download Requested",
        "Detail": json.dumps({"user_id": "alice", "request": request}),
    }
    bus = boto3.client("events", region_name=REGION)
    bus.put_events(Entries=[{**entry, "EventBusName": stack.request_bus}])
    # The same request on the default bus: no rule there takes it.
    bus.put_events(Entries=[{**entry, "Detail": json.dumps({"user_id": "bob", "request": request})}])
    manifest = {"request": {**request, "filename": "manifest.zip"}}
    satchel.put_source("requests/acme/bob/m.json", json.dumps(manifest).encode())
    satchel.put_source("acme/not-a-manifest.json", b"{}")  # no rule matches it: never delivered
    for name, queue_url, function in (
        ("events-queue", stack.events_queue_url, "events"),
        ("manifests-queue", stack.manifests_queue_url, "manifests"),
    ):
        target = eventsources.EventBridgeTarget(
            name, threading.Event(), queue_url, function_name(stack.stage, function)
        )
        target.step()

    assert sorted((event["handler"], event["source"], event["detail-type"]) for event in events) == [
        ("handle_event", "satchel.requests.acme", "Satchel Download Requested"),
        ("handle_manifest", "aws.s3", "Object Created"),
    ]
    assert all(event["account"] == ACCOUNT for event in events)
    assert [item["filename"] for item in satchel.call("GET", "/downloads", "alice").json["items"]] == [
        "evented.zip"
    ]
    assert [item["filename"] for item in satchel.call("GET", "/downloads", "bob").json["items"]] == [
        "manifest.zip"
    ]
    for queue_url in (stack.events_queue_url, stack.manifests_queue_url):
        left = boto3.client("sqs", region_name=REGION).get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        assert left == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}


def _all_pages(client: Any, arguments: dict[str, Any]) -> list[dict[str, Any]]:
    pages, arguments = [], dict(arguments)
    while True:
        page = client.query(**arguments)
        page.pop("ResponseMetadata")
        pages.append(page)
        if "LastEvaluatedKey" not in page:
            return pages
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def test_fast_queries_answer_exactly_as_moto_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """satchel_local.fastqueries against moto's own Query: same items, order and pages."""
    with mock_aws():
        fastqueries.install()
        client = boto3.client("dynamodb", region_name=REGION)
        for name, range_type in (("by_text", "S"), ("by_number", "N")):
            client.create_table(
                TableName=name,
                BillingMode="PAY_PER_REQUEST",
                KeySchema=[
                    {"AttributeName": "p", "KeyType": "HASH"},
                    {"AttributeName": "r", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": "p", "AttributeType": "S"},
                    {"AttributeName": "r", "AttributeType": range_type},
                ],
            )
            for number in range(120):
                # Some items are big, so pages also end at 1 MB, not only at Limit.
                range_value = f"k{number * 7 % 120:03d}" if range_type == "S" else str(number * 7 % 120 - 60)
                client.put_item(
                    TableName=name,
                    Item={
                        "p": {"S": "one" if number % 3 else "two"},
                        "r": {range_type: range_value},
                        "n": {"N": str(number)},
                        "m": {"M": {"a": {"S": "x" * (number % 5)}, "b": {"L": [{"N": "1"}, {"S": "é"}]}}},
                        "pad": {"S": "y" * (60_000 if number % 4 == 0 else 10)},
                    },
                )
        low = {"S": "k030"}, {"N": "-20"}
        cases: list[dict[str, Any]] = []
        for table, value in zip(("by_text", "by_number"), low, strict=True):
            one: dict[str, Any] = {"TableName": table, "ExpressionAttributeValues": {":p": {"S": "one"}}}
            cases += [
                {**one, "KeyConditionExpression": "p = :p"},
                {**one, "KeyConditionExpression": "p = :p", "ScanIndexForward": False, "Limit": 7},
                {**one, "KeyConditionExpression": "p = :p", "Select": "COUNT"},
                {
                    **one,
                    "KeyConditionExpression": "p = :p AND r > :low",
                    "ExpressionAttributeValues": {**one["ExpressionAttributeValues"], ":low": value},
                    "Limit": 9,
                },
                {
                    **one,
                    "KeyConditionExpression": "p = :p",
                    "ProjectionExpression": "r, n, m.a, #pad",
                    "ExpressionAttributeNames": {"#pad": "pad"},
                    "FilterExpression": "n > :few",
                    "ExpressionAttributeValues": {**one["ExpressionAttributeValues"], ":few": {"N": "30"}},
                    "ScanIndexForward": False,
                },
                {
                    **one,
                    "KeyConditionExpression": "p = :p",
                    "ExpressionAttributeValues": {":p": {"S": "none"}},
                },
            ]
        fast = [_all_pages(client, case) for case in cases]
        assert sum(len(pages) for pages in fast) > 2 * len(cases)  # paging is exercised
        monkeypatch.setattr(Table, "query", fastqueries._original_query)
        assert fast == [_all_pages(client, case) for case in cases]
