"""The packaged stack, for tests: packaged once per test process, read back, and evaluated.

`packaged()` runs `scripts.package` (what `make package` runs) into a temporary directory,
once per process, and one process at a time (`_one_at_a_time`). `Resolver` evaluates the
intrinsic functions of a template with the names the local stack gives its resources, so a
policy's resources can be compared with the ARNs the code really calls. `allows()` is a
small IAM evaluator: enough of IAM's rules for Satchel's policies (Allow/Deny, wildcards in
actions and resources, String conditions), and stricter than IAM where it is unsure (an
unknown condition never allows).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import fnmatch
import functools
import json
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts import package as packaging

ACCOUNT = "123456789012"  # moto's account
REGION = "us-east-1"
FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
NO_VALUE = object()  # AWS::NoValue: removed from the list or object that holds it
# Read by glibc's allocator as a process starts, not by settings.py: the functions that
# stream an archive's bytes through a part buffer get it (.chalice/config.json,
# docs/performance.md), no other function does.
ALLOCATOR_VARIABLES = {
    "MALLOC_MMAP_THRESHOLD_": "1048576",
    "MALLOC_TRIM_THRESHOLD_": "2097152",
    "MALLOC_ARENA_MAX": "2",
}
STREAMING_FUNCTIONS = frozenset({"app.build", "app.build_segment", "app.assemble", "app.digest"})


@dataclass(frozen=True)
class Packaged:
    files: packaging.Package
    sam: dict[str, Any]
    cloudformation: dict[str, Any]


@functools.cache
def packaged() -> Packaged:
    directory = Path(tempfile.mkdtemp(prefix="satchel-package-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    with _one_at_a_time(packaging.ROOT / ".chalice" / "deployments" / ".package.lock"):
        files = packaging.package("prod", directory)
    return Packaged(
        files=files,
        sam=json.loads(files.sam_template.read_text()),
        cloudformation=json.loads(files.cloudformation_template.read_text()),
    )


@contextlib.contextmanager
def _one_at_a_time(lock: Path) -> Iterator[None]:
    """Packagings of this working tree one after another, across processes (xdist workers,
    two test runs): `chalice package` writes the dependencies' zip into .chalice/deployments/
    under its final name, and reuses a zip it finds there, so a packaging running beside
    another could ship the other's half-written zip. The second one reuses the whole zip."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def functions(template: Mapping[str, Any]) -> dict[str, str]:
    """Each function's Handler string -> its logical ID."""
    found: dict[str, str] = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] in FUNCTION_TYPES:
            handler = resource["Properties"]["Handler"]
            assert handler not in found, f"two functions run {handler}"
            found[handler] = logical_id
    return found


def role_of(template: Mapping[str, Any], function_id: str) -> str:
    role = template["Resources"][function_id]["Properties"]["Role"]
    assert isinstance(role, dict), f"{function_id}'s role is not one of the stack's"
    assert "Fn::GetAtt" in role, f"{function_id}'s role is not one of the stack's"
    logical_id: str = role["Fn::GetAtt"][0]
    return logical_id


def statements(template: Mapping[str, Any], role_id: str) -> list[dict[str, Any]]:
    role = template["Resources"][role_id]
    assert role["Type"] == "AWS::IAM::Role"
    found: list[dict[str, Any]] = []
    for policy in role["Properties"].get("Policies", []):
        found.extend(policy["PolicyDocument"]["Statement"])
    assert not role["Properties"].get("ManagedPolicyArns"), f"{role_id} has managed policies"
    return found


@dataclass
class Resolver:
    """Evaluates Ref, Fn::GetAtt, Fn::Sub, Fn::If, Fn::Join and Fn::Equals/Not in a template.

    `names` gives the physical names of resources (their Ref); other resources are named by
    their name property (FunctionName, StateMachineName, LogGroupName) or their logical ID.
    """

    template: Mapping[str, Any]
    names: dict[str, str]
    parameters: dict[str, str] = field(default_factory=dict)
    stack_name: str = "satchel-test"

    def __post_init__(self) -> None:
        declared = self.template.get("Parameters", {})
        self.values: dict[str, Any] = {
            "AWS::AccountId": ACCOUNT,
            "AWS::Region": REGION,
            "AWS::Partition": "aws",
            "AWS::StackName": self.stack_name,
            "AWS::URLSuffix": "amazonaws.com",
        }
        for name, spec in declared.items():
            value = str(self.parameters.get(name, spec.get("Default", "")))
            self.values[name] = value.split(",") if spec["Type"] == "CommaDelimitedList" else value

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template["Conditions"][name]))

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.values:
            return self.values[name]
        resource = self.template["Resources"][name]
        kind = resource["Type"]
        if kind == "AWS::StepFunctions::StateMachine":
            return self.arn(name)
        if name in self.names:
            return self.names[name]
        properties = resource.get("Properties", {})
        if kind == "AWS::Events::EventBus":
            return str(self.resolve(properties["Name"]))
        for key in ("FunctionName", "StateMachineName", "LogGroupName", "TopicName"):
            if key in properties:
                return str(self.resolve(properties[key]))
        return name

    def arn(self, name: str) -> str:
        kind = self.template["Resources"][name]["Type"]
        properties = self.template["Resources"][name].get("Properties", {})
        if kind == "AWS::S3::Bucket":
            return f"arn:aws:s3:::{self.ref(name)}"
        if kind == "AWS::DynamoDB::Table":
            return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{self.ref(name)}"
        if kind in FUNCTION_TYPES:
            return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.ref(name)}"
        if kind == "AWS::StepFunctions::StateMachine":
            machine = self.resolve(properties["StateMachineName"])
            return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{machine}"
        if kind == "AWS::IAM::Role":
            return f"arn:aws:iam::{ACCOUNT}:role/{name}"
        if kind == "AWS::Logs::LogGroup":
            return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{self.ref(name)}:*"
        if kind == "AWS::SQS::Queue":
            return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{self.queue_name(name)}"
        if kind == "AWS::KMS::Key":
            return kms_key_arn(name)  # a key's id is random: its logical ID stands for it
        if kind == "AWS::Events::EventBus":
            return f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{self.ref(name)}"
        raise AssertionError(f"no ARN known for {name} ({kind})")

    def queue_name(self, name: str) -> str:
        """A queue's name (its Ref is its URL)."""
        properties = self.template["Resources"][name].get("Properties", {})
        return str(self.resolve(properties["QueueName"])) if "QueueName" in properties else name

    def get_att(self, name: str, attribute: str) -> str:
        if attribute == "QueueName":
            return self.queue_name(name)
        if attribute != "Arn":
            raise AssertionError(f"GetAtt {name}.{attribute} is not evaluated here")
        return self.arn(name)

    def _sub(self, text: str, local: Mapping[str, Any]) -> str:
        def replace(match: Any) -> str:
            name = match.group(1)
            if name in local:
                return str(self.resolve(local[name]))
            if "." in name:
                resource, attribute = name.split(".", 1)
                return self.get_att(resource, attribute)
            return str(self.ref(name))

        return re.sub(r"\$\{([\w:.]+)\}", replace, text)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in map(self.resolve, value) if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            resolved = {key: self.resolve(item) for key, item in value.items()}
            return {key: item for key, item in resolved.items() if item is not NO_VALUE}
        ((key, argument),) = value.items()
        if key == "Ref":
            return self.ref(argument)
        if key == "Fn::GetAtt":
            resource, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
            return self.get_att(resource, attribute)
        if key == "Fn::Sub":
            text, local = (argument, {}) if isinstance(argument, str) else argument
            return self._sub(text, local)
        if key == "Fn::If":
            condition, then, otherwise = argument
            return self.resolve(then if self.condition(condition) else otherwise)
        if key == "Fn::Join":
            separator, items = argument
            return separator.join(str(item) for item in self.resolve(items))
        if key == "Fn::Split":
            separator, text = argument
            return str(self.resolve(text)).split(separator)
        if key == "Fn::Equals":
            left, right = self.resolve(argument)
            return left == right
        if key == "Fn::Not":
            return not self.resolve(argument[0])
        if key == "Condition":
            return self.condition(argument)
        if key.startswith("Fn::"):
            raise AssertionError(f"{key} is not evaluated here")
        return {key: self.resolve(argument)}


def kms_key_arn(logical_id: str) -> str:
    return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{logical_id}"


# --- IAM evaluation ------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _like(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def _equals(pattern: str, value: str) -> bool:
    return pattern == value


def _condition_holds(condition: Mapping[str, Any], context: Mapping[str, list[str]]) -> bool:
    """Stricter than IAM: a condition on a value not in the context, or an operator not
    known here, never holds (IAM's ForAllValues holds on a missing key)."""
    for operator, keys in condition.items():
        qualifier, _, test = operator.rpartition(":")
        if qualifier not in ("", "ForAllValues") or test not in ("StringLike", "StringEquals"):
            return False
        match = _like if test == "StringLike" else _equals
        for key, allowed in keys.items():
            patterns = [str(item) for item in _as_list(allowed)]
            values = context.get(key)
            if not values:
                return False
            matched = [any(match(pattern, value) for pattern in patterns) for value in values]
            if not (all(matched) if qualifier else any(matched)):
                return False
    return True


def _statement_matches(
    statement: Mapping[str, Any], action: str, resource: str, context: Mapping[str, list[str]]
) -> bool:
    if "NotAction" in statement or "NotResource" in statement:
        raise AssertionError("NotAction/NotResource are not evaluated here")
    if not any(_like(pattern.lower(), action.lower()) for pattern in _as_list(statement["Action"])):
        return False
    if not any(_like(pattern, resource) for pattern in _as_list(statement["Resource"])):
        return False
    return _condition_holds(statement.get("Condition", {}), context)


def allows(
    policy: Iterable[Mapping[str, Any]], action: str, resource: str, context: Mapping[str, list[str]]
) -> bool:
    """Whether resolved policy statements allow `action` on `resource` (no Deny matches)."""
    allowed = False
    for statement in policy:
        if statement["Effect"] == "Deny":
            assert "Condition" not in statement, "conditional Deny is not evaluated here"
            if _statement_matches(statement, action, resource, context):
                return False
        if statement["Effect"] == "Allow" and _statement_matches(statement, action, resource, context):
            allowed = True
    return allowed
