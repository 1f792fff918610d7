"""The one ASL file: a closed graph, every task guarded, every placeholder a real function."""

from __future__ import annotations

import json
from typing import Any

from app import app
from statemachine import definition as statemachine

RETRYABLE = {"Lambda.ServiceException", "Lambda.TooManyRequestsException", "TransientError"}


def _targets(state: dict[str, Any]) -> set[str]:
    names = {state.get("Next"), state.get("Default")}
    names |= {choice.get("Next") for choice in state.get("Choices", [])}
    names |= {catch["Next"] for catch in state.get("Catch", [])}
    return {name for name in names if name}


def test_every_transition_names_a_state_and_every_state_is_reachable() -> None:
    definition = statemachine.load()
    states = definition["States"]
    reachable, frontier = set(), [definition["StartAt"]]
    while frontier:
        name = frontier.pop()
        assert name in states, f"transition to missing state {name!r}"
        if name not in reachable:
            reachable.add(name)
            frontier.extend(_targets(states[name]))
    assert reachable == set(states)


def test_every_task_retries_transient_errors_and_catches_into_mark_failed() -> None:
    states = statemachine.load()["States"]
    for name, state in states.items():
        if state["Type"] != "Task":
            continue
        retried = {error for retry in state.get("Retry", []) for error in retry["ErrorEquals"]}
        assert retried >= RETRYABLE or "States.ALL" in retried, name
        if name != "MarkFailed":
            assert state["Catch"] == [
                {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "MarkFailed"}
            ]
    assert states["MarkFailed"]["Next"] == "Failed"
    assert states["Failed"]["Type"] == "Fail"


def test_placeholders_are_exactly_the_workflow_functions_of_the_app() -> None:
    assert statemachine.placeholders() == set(statemachine.FUNCTIONS)
    lambda_functions = {function.name for function in app.pure_lambda_functions}
    assert set(statemachine.FUNCTIONS.values()) <= lambda_functions
    rendered = json.loads(statemachine.render({key: f"arn:{key}" for key in statemachine.FUNCTIONS}))
    assert rendered["States"]["Build"]["Parameters"]["FunctionName"] == "arn:BuildFunctionArn"
