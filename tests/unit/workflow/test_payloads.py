"""Every path statemachine/download.asl.json reads or writes names a field declared in
chalicelib/workflow/payloads.py, for the payload of the state that reads or writes it.

Typing is per state (STATES below): each state's input and output TypedDict. A Task's Lambda
result is `$.Payload` of the invoke integration; what it returns is the output type. A state's
output must carry every key its Next state's input requires; a Catch's Next gets the
state's input with `error` added.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_type_hints

import pytest

import app
from chalicelib.workflow.payloads import (
    AssembleRun,
    Assembling,
    BuildRun,
    Built,
    Digested,
    Digesting,
    DigestRun,
    Failed,
    FailInput,
    Finished,
    Prepared,
    SegmentBuilt,
    SegmentInput,
    Start,
)
from statemachine import definition as statemachine

ASL = json.loads(Path(statemachine.ASL_PATH).read_text())

Payload = type[Any]  # a TypedDict class

# state -> (its input, its output). Pass and Choice states hand their input on.
STATES: dict[str, tuple[Payload, Payload]] = {
    "Prepare": (Start, Prepared),
    "ChooseBuild": (Prepared, Prepared),
    "BuildSegments": (Prepared, Prepared),  # ResultPath null: the Map's input goes on
    "BuildSegment": (SegmentInput, SegmentBuilt),
    "SegmentHandsOn": (SegmentBuilt, SegmentBuilt),
    "SegmentDone": (SegmentBuilt, SegmentBuilt),
    "SegmentFailed": (FailInput, Failed),
    "SegmentAbandoned": (Failed, Failed),
    "Assemble": (Assembling, AssembleRun),
    "AssembleHandsOn": (AssembleRun, AssembleRun),
    "Build": (Prepared, BuildRun),
    "BuildHandsOn": (BuildRun, BuildRun),
    "CheckDigest": (Built, Built),
    "Digest": (Digesting, DigestRun),
    "DigestHandsOn": (DigestRun, DigestRun),
    "Finalize": (Digested, Finished),
    "MarkFailed": (FailInput, Failed),
    "Failed": (Failed, Failed),
}
# The Lambda each Task state invokes: its handler in app.py takes the input and returns the output.
LAMBDA_RESULT = "$.Payload"


def states(machine: dict[str, Any] = ASL) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in machine["States"].items():
        yield name, state
        if state["Type"] == "Map":
            yield from states(state["ItemProcessor"])


def fields(payload: Payload) -> set[str]:
    return set(payload.__required_keys__) | set(payload.__optional_keys__)


def declared(payload: Payload, path: str) -> bool:
    """Whether `$.a.b` names field a of `payload`, and b of a's TypedDict when it is one."""
    assert path.startswith("$."), path
    current: Any = payload
    for part in path[2:].split("."):
        hints = get_type_hints(current)
        if part not in hints:
            return False
        current = _typed_dict_in(hints[part])
    return True


def _typed_dict_in(hint: Any) -> Any:
    for candidate in (hint, *typing.get_args(hint)):
        if typing.is_typeddict(candidate):
            return candidate
    return dict  # a leaf: any further part is undeclared


def required(payload: Payload) -> set[str]:
    # Not `__required_keys__`: under `from __future__ import annotations` Python 3.11 counts a
    # NotRequired field as required there; the resolved hints say which are not.
    hints = get_type_hints(payload, include_extras=True)
    return {name for name, hint in hints.items() if typing.get_origin(hint) is not typing.NotRequired}


def test_every_state_is_typed() -> None:
    assert {name for name, _ in states()} == set(STATES)


def test_every_path_the_asl_reads_or_writes_is_a_declared_field() -> None:
    undeclared: list[str] = []

    def check(state: str, payload: Payload, path: str | None, what: str) -> None:
        if path is None or path == "$" or path.startswith("$$."):
            return
        if not declared(payload, path):
            undeclared.append(f"{state}: {what} {path} is not a field of {payload.__name__}")

    for name, state in states():
        given, returned = STATES[name]
        for choice in state.get("Choices", []):
            check(name, given, choice["Variable"], "Choice Variable")
        check(name, given, state.get("ItemsPath"), "ItemsPath")
        check(name, given, state.get("MaxConcurrencyPath"), "MaxConcurrencyPath")
        for key, value in (state.get("ItemReader") or {}).get("Parameters", {}).items():
            assert key.endswith(".$"), f"{name}: a constant in the ItemReader ({key}) is not typed here"
            check(name, given, value, "ItemReader Parameters value")
        check(name, given, state.get("InputPath"), "InputPath")
        for key, value in (state.get("ItemSelector") or {}).items():
            assert key.endswith(".$"), f"{name}: a constant in the ItemSelector ({key}) is not typed here"
            check(name, given, value, "ItemSelector value")
            item = STATES[state["ItemProcessor"]["StartAt"]][0]
            check(name, item, f"$.{key[: -len('.$')]}", "ItemSelector key")
        for key, value in (state.get("Parameters") or {}).items():
            if key != "Payload.$":  # FunctionName is the invoke integration's own
                assert not key.endswith(".$"), f"{name}: Parameters {key} is not checked here"
            else:
                check(name, given, value, "Payload")
        for key in state.get("ResultSelector") or {}:
            check(name, returned, f"$.{key[: -len('.$')]}", "ResultSelector key")
        if state["Type"] == "Task":
            assert state.get("OutputPath") == LAMBDA_RESULT, f"{name}: only the Lambda's own result goes on"
            assert "ResultPath" not in state, name
            assert "ResultSelector" not in state, name
        else:
            check(name, given, state.get("OutputPath"), "OutputPath")
        for catch in state.get("Catch", []):
            caught = STATES[catch["Next"]][0]
            check(name, caught, catch["ResultPath"], "Catch ResultPath")
    assert not undeclared, "\n".join(undeclared)


def _next_states(state: dict[str, Any]) -> list[str]:
    found = [state["Next"]] if "Next" in state else []
    found += [choice["Next"] for choice in state.get("Choices", [])]
    return found + ([state["Default"]] if "Default" in state else [])


def test_each_state_hands_on_what_the_next_one_requires() -> None:
    short: list[str] = []
    for name, state in states():
        returned = STATES[name][1]
        for following in _next_states(state):
            missing = required(STATES[following][0]) - fields(returned)
            if missing:
                short.append(f"{name} -> {following}: {returned.__name__} lacks {sorted(missing)}")
        for catch in state.get("Catch", []):
            # The Catch adds `error` to the failed state's input.
            given = fields(STATES[name][0]) | {catch["ResultPath"][2:]}
            missing = required(STATES[catch["Next"]][0]) - given
            if missing:
                short.append(f"{name} caught -> {catch['Next']}: lacks {sorted(missing)}")
    assert not short, "\n".join(short)


@pytest.mark.parametrize(("placeholder", "function"), sorted(statemachine.FUNCTIONS.items()))
def test_each_step_handler_is_typed_with_its_states_payloads(placeholder: str, function: str) -> None:
    tasks = [
        name
        for name, state in states()
        if state.get("Parameters", {}).get("FunctionName") == f"${{{placeholder}}}"
    ]
    assert tasks, f"{placeholder} is invoked by no state"
    handler = getattr(app, function)
    # Chalice wraps the function twice (middleware, then the pure Lambda wrapper).
    hints = get_type_hints(handler.func._original_func)
    for task in tasks:
        assert (hints["event"], hints["return"]) == STATES[task], task


def test_the_checker_finds_an_undeclared_path() -> None:
    assert declared(Prepared, "$.totals.files_total")
    assert not declared(Prepared, "$.totals.files")
    assert not declared(Prepared, "$.artifact_key")
    assert not declared(Built, "$.sha256.x")
    assert declared(Prepared, "$.segments.key")
    assert not declared(Prepared, "$.segments.items")


def test_the_map_reads_its_items_from_s3_and_keeps_no_results() -> None:
    """Distributed: the segments' numbers come from S3, each child hands back {} (10,000 of
    them stay far below 256 KB) and the Map drops them."""
    segments = ASL["States"]["BuildSegments"]
    processor = segments["ItemProcessor"]
    assert processor["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert segments["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
    assert segments["ItemReader"]["ReaderConfig"] == {"InputType": "JSON"}
    assert segments["ResultPath"] is None
    assert "ItemsPath" not in segments
    assert "MaxConcurrency" not in segments
    ends = [state for state in processor["States"].values() if state["Type"] == "Succeed"]
    assert ends
    assert all(state["OutputPath"] is None for state in ends)
