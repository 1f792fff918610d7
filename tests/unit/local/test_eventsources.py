"""The local stack's event sources as Lambda's own: a partial batch response read as Lambda reads
it, and a scheduled event as Chalice expects it."""

from __future__ import annotations

from typing import Any

import pytest
from chalice.app import CloudWatchEvent
from moto.core.models import DEFAULT_ACCOUNT_ID as ACCOUNT

from satchel_local import eventsources
from satchel_local.stack import REGION


@pytest.mark.parametrize(
    ("payload", "error", "failed"),
    [
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, None, {"b"}),
        ({"batchItemFailures": []}, None, set()),
        ({"batchItemFailures": None}, None, set()),
        ({}, None, set()),
        (None, None, set()),
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, "Unhandled", {"a", "b"}),
        ({"batchItemFailures": [{"itemIdentifier": "elsewhere"}]}, None, {"a", "b"}),  # not of this batch
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, None, {"a", "b"}),
        ({"batchItemFailures": [{"id": "b"}]}, None, {"a", "b"}),  # a bad key name
        ("ok", None, {"a", "b"}),  # not a response object
    ],
)
def test_a_partial_batch_response_is_read_as_lambda_reads_it(
    payload: Any, error: str | None, failed: set[str]
) -> None:
    assert eventsources.failed_message_ids(["a", "b"], payload, error) == failed


def test_a_scheduled_event_is_what_chalice_expects() -> None:
    rule = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/satchel-local-cleanup"
    event = CloudWatchEvent(eventsources.scheduled_event(rule), context=None)
    assert (event.source, event.detail_type, event.resources, event.account) == (
        "aws.events",
        "Scheduled Event",
        [rule],
        ACCOUNT,
    )
