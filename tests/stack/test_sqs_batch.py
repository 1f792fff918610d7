"""The requests queue's partial batch responses (Powertools' batch processor): each failed
message, refused or broken, is named in `batchItemFailures`, the others start their
downloads, and a batch that failed whole is answered rather than raised."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from chalicelib.core import clients, observability
from chalicelib.core.models import Principal
from chalicelib.runtime import Runtime
from chalicelib.storage.keys import KeyStore
from chalicelib.triggers import inbound as triggers
from satchel_local.stack import MOTO_SENDER_ID
from tests.support.stack import Satchel


class UnreachableFor(KeyStore):
    """The key table, except that looking up one user fails as a lost connection would."""

    def __init__(self, runtime: Runtime, user_id: str) -> None:
        super().__init__(clients.table(runtime.settings.table))
        self.user_id = user_id

    def principal_named(self, tenant: str, user_id: str) -> Principal | None:
        if user_id == self.user_id:
            raise ConnectionError("the key table could not be reached")
        return super().principal_named(tenant, user_id)


def request(tenant: str, user_id: str, params: dict[str, Any]) -> str:
    return json.dumps({"tenant": tenant, "user_id": user_id, "request": {"type": "zip", "params": params}})


def listed(satchel: Satchel, user: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = satchel.call("GET", "/downloads", user).json["items"]
    return items


def records(*bodies: str) -> list[dict[str, Any]]:
    return [
        {"messageId": f"m-{number}", "body": body, "attributes": {"SenderId": MOTO_SENDER_ID}}
        for number, body in enumerate(bodies)
    ]


def test_a_message_that_breaks_is_reported_and_logged_while_the_others_start(
    satchel: Satchel, capsys: pytest.CaptureFixture[str]
) -> None:
    satchel.put_source("acme/batch/a.txt", b"a")
    runtime = Runtime.from_env()
    runtime = dataclasses.replace(runtime, keys=UnreachableFor(runtime, "bob"))
    batch = records(
        request("acme", "bob", {"keys": ["acme/batch/a.txt"]}),  # the key lookup breaks
        request("acme", "alice", {"keys": ["acme/batch/a.txt"]}),  # good, after a broken one
        "{",  # refused: not JSON
    )
    observability.logger()  # as in Lambda: chalicelib's lines are Powertools' JSON on stdout
    capsys.readouterr()

    answer = triggers.handle_messages(runtime, batch)

    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-0"}, {"itemIdentifier": "m-2"}]}
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    about = {line["message"].split(":")[0]: line for line in lines if line.get("name") == triggers.__name__}
    broken = about["could not process message m-0; it will be retried"]
    assert (broken["level"], "ConnectionError: the key table" in broken["exception"]) == ("ERROR", True)
    assert about["rejected message m-2"]["level"] == "WARNING"
    [started] = listed(satchel, "alice")
    assert satchel.wait(started["id"])["state"] == "DONE"
    assert listed(satchel, "bob") == []


def test_a_batch_whose_every_message_fails_names_each_and_raises_nothing(satchel: Satchel) -> None:
    batch = records("not json", json.dumps({"tenant": "acme"}), request("acme", "mallory", {"keys": ["x"]}))

    answer = triggers.handle_messages(Runtime.from_env(), batch)

    assert answer == {"batchItemFailures": [{"itemIdentifier": f"m-{number}"} for number in range(3)]}
    assert listed(satchel, "alice") == []


def test_an_empty_batch_reports_nothing(satchel: Satchel) -> None:
    assert triggers.handle_messages(Runtime.from_env(), []) == {"batchItemFailures": []}


def test_each_batch_is_answered_on_its_own(satchel: Satchel) -> None:
    """The processor keeps state between records: one batch's failures never leak into the next."""
    satchel.put_source("acme/batch/b.txt", b"b")
    runtime = Runtime.from_env()

    first = triggers.handle_messages(runtime, records("not json"))
    second = triggers.handle_messages(
        runtime, records(request("acme", "alice", {"keys": ["acme/batch/b.txt"]}))
    )

    assert first == {"batchItemFailures": [{"itemIdentifier": "m-0"}]}
    assert second == {"batchItemFailures": []}
