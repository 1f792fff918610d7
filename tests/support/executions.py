"""A download's Step Functions execution, read from the emulator: its history, how many times
a state ran (a step that hands on runs again), which tasks failed."""

from __future__ import annotations

from typing import Any

import boto3

from satchel_local.stack import REGION
from tests.support.stack import Satchel


def history(satchel: Satchel, download_id: str) -> list[dict[str, Any]]:
    """Every event of the download's execution, all pages of them."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = satchel.stack.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{download_id}"
    events: list[dict[str, Any]] = []
    arguments: dict[str, Any] = {"executionArn": arn, "maxResults": 1000}
    while True:
        page = sfn.get_execution_history(**arguments)
        events += page["events"]
        if not page.get("nextToken"):
            return events
        arguments["nextToken"] = page["nextToken"]


def runs_of(satchel: Satchel, download_id: str, state: str = "Build") -> int:
    """How many times the execution entered `state`."""
    return sum(
        1
        for event in history(satchel, download_id)
        if event["type"] == "TaskStateEntered" and event["stateEnteredEventDetails"]["name"] == state
    )


def failures_of(satchel: Satchel, download_id: str) -> list[str]:
    """The error of each task that failed (and was retried or caught), in order."""
    events = history(satchel, download_id)
    return [event["taskFailedEventDetails"]["error"] for event in events if event["type"] == "TaskFailed"]
