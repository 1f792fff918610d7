"""The Lambda functions are declared once, by app.py's decorators; every other list of them
agrees with it. A failure names the one file to edit.

The lists: .chalice/config.json (the prod stage's per-function settings), .chalice/policies/
(one policy file each), deploy/template.yaml (a resource and a log group each),
statemachine/definition.py (the ASL's placeholders: the workflow's functions),
satchel_local/stack.py (the event-driven functions of the local stack), and the tables of
tests/deploy/test_iam.py and tests/deploy/test_packaged_contract.py keyed by handler. scripts/package.py
reads app.py itself (`chalice_functions`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import app as application
from satchel_local import stack
from scripts import package as packaging
from statemachine import definition as statemachine
from tests.deploy import test_iam, test_packaged_contract

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "template.yaml"
CONFIG = ROOT / ".chalice" / "config.json"
POLICIES = ROOT / ".chalice" / "policies"


@dataclass(frozen=True)
class Function:
    name: str  # Chalice's name: the key of `lambda_functions` in .chalice/config.json
    handler: str  # "app.<attribute>"
    kind: str  # api, authorizer, workflow, event


def declared() -> dict[str, Function]:
    """app.py's functions, from the Chalice app its decorators built."""
    app = application.app
    found = [Function("api_handler", "app.app", "api")] if app.routes else []
    found += [Function(f.name, f.handler_string, "authorizer") for f in app.builtin_auth_handlers]
    found += [Function(f.name, f.handler_string, "workflow") for f in app.pure_lambda_functions]
    found += [Function(f.name, f.handler_string, "event") for f in app.event_sources]
    return {function.name: function for function in found}


def resource_name(function: str) -> str:
    """The logical id Chalice gives the function in its SAM template."""
    if function == "api_handler":
        return "APIHandler"
    return "".join(part.capitalize() for part in function.split("_"))


def template_resources() -> dict[str, dict[str, str]]:
    """deploy/template.yaml's resources that name a function or a log group: id -> {field: suffix}."""
    found: dict[str, dict[str, str]] = {}
    current = ""
    for line in TEMPLATE.read_text().splitlines():
        top = re.fullmatch(r"  (\w+):", line)
        if top:
            current = top.group(1)
        named = re.search(
            r'(FunctionName|LogGroupName): !Sub "(?:/aws/lambda/)?\$\{AWS::StackName\}-(\w+)"', line
        )
        if named and current:
            found.setdefault(current, {})[named.group(1)] = named.group(2)
    return found


def agree(found: set[str], expected: set[str], where: str) -> None:
    assert found == expected, (
        f"edit {where}: it lacks {sorted(expected - found)} and has {sorted(found - expected)} "
        "beyond the functions app.py declares"
    )


def test_the_app_declares_the_functions_of_every_kind() -> None:
    kinds = {function.kind for function in declared().values()}
    assert kinds == {"api", "authorizer", "workflow", "event"}
    assert packaging.chalice_functions() == set(declared())


def test_the_prod_stage_configures_each_function() -> None:
    functions = json.loads(CONFIG.read_text())["stages"]["prod"]["lambda_functions"]
    agree(set(functions), set(declared()), ".chalice/config.json (stages.prod.lambda_functions)")


def test_each_function_has_its_own_policy_file_and_there_is_no_other() -> None:
    functions = json.loads(CONFIG.read_text())["stages"]["prod"]["lambda_functions"]
    named = [spec.get("iam_policy_file") for spec in functions.values()]
    assert len(named) == len(set(named)), "edit .chalice/config.json: two functions share a policy file"
    files = {f"policies/{path.name}" for path in POLICIES.glob("*.json")}
    assert set(named) <= files, f"add to .chalice/policies/: {sorted(set(named) - files)}"
    assert files <= set(named), (
        f"remove from .chalice/policies/ (no function uses them): {sorted(files - set(named))}"
    )


def test_the_template_names_each_function_and_its_log_group() -> None:
    resources = template_resources()
    functions = {name for name, fields in resources.items() if "FunctionName" in fields}
    agree(functions, {resource_name(name) for name in declared()}, "deploy/template.yaml (Resources)")
    for name in functions:
        group = resources.get(f"{name}LogGroup", {}).get("LogGroupName")
        assert group == resources[name]["FunctionName"], (
            f"edit deploy/template.yaml: {name}LogGroup must be /aws/lambda/<stack>-"
            f"{resources[name]['FunctionName']}"
        )
    groups = {name for name, fields in resources.items() if "LogGroupName" in fields}
    agree(groups, {f"{name}LogGroup" for name in functions}, "deploy/template.yaml (the log groups)")


def test_the_workflow_functions_are_the_asls_placeholders() -> None:
    workflow = {name for name, function in declared().items() if function.kind == "workflow"}
    agree(set(statemachine.FUNCTIONS.values()), workflow, "statemachine/definition.py (FUNCTIONS)")
    agree(
        statemachine.placeholders(),
        set(statemachine.FUNCTIONS),
        "statemachine/download.asl.json (its ${...}FunctionArn placeholders)",
    )


def test_the_local_stack_creates_each_event_function() -> None:
    events = {
        name: function.handler.removeprefix("app.")
        for name, function in declared().items()
        if function.kind == "event"
    }
    assert events == stack.EVENT_FUNCTIONS, (
        f"edit satchel_local/stack.py (EVENT_FUNCTIONS): {stack.EVENT_FUNCTIONS} != {events}"
    )


def test_the_tests_tables_name_only_declared_handlers() -> None:
    handlers = {function.handler for function in declared().values()}
    unknown = set(test_iam.NOT_EXERCISED) - handlers
    assert not unknown, f"edit tests/deploy/test_iam.py (NOT_EXERCISED): {sorted(unknown)} are no handlers"
    fixed = {
        test_iam.API_HANDLER,
        test_iam.AUTHORIZER,
        test_iam.REQUESTS,
        test_iam.EVENTS,
        test_iam.MANIFESTS,
        test_iam.DELIVER,
        test_iam.CLEANUP,
    }
    assert fixed <= handlers, (
        f"edit tests/deploy/test_iam.py (its handler constants): {sorted(fixed - handlers)}"
    )
    reserved = set(test_packaged_contract.RESERVED) - handlers
    assert not reserved, (
        f"edit tests/deploy/test_packaged_contract.py (RESERVED): {sorted(reserved)} are no handlers"
    )
    parameters = TEMPLATE.read_text()
    for handler, parameter in test_packaged_contract.RESERVED.items():
        assert f"\n  {parameter}:\n" in parameters, f"edit deploy/template.yaml: no parameter {parameter}"
        assert handler in handlers


def test_the_checks_find_a_function_missing_from_a_list() -> None:
    with pytest.raises(AssertionError, match=r"edit somewhere.json: it lacks \['build'\]"):
        agree({"prepare"}, {"prepare", "build"}, "somewhere.json")
    assert resource_name("build_segment") == "BuildSegment"
    assert template_resources()["BuildSegment"] == {"FunctionName": "build_segment"}
