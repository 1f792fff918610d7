"""The packaged stack (`make package`): both templates lint clean, the state machine is the
ASL file the tests run, every function gets its configuration from the stack's resources,
the resources are configured as the design asks, and the manual cannot drift from the
code (its state machine diagram, docs/architecture.md; its configuration table,
docs/configuration.md)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import marshal
import os
import py_compile
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import boto3
import pytest
from chalice.app import Rate
from moto import mock_aws
from moto.events.models import EventPattern

from bench.zips import FIRST_CALLS
from chalicelib.core import settings
from chalicelib.core.models import Principal
from chalicelib.s3 import layout as artifacts
from chalicelib.storage.keys import KeyStore
from chalicelib.storage.layout import OWNER_INDEX, TABLE_KEYS
from satchel_local.stack import Stack
from scripts import add_api_key, asl_to_mermaid
from scripts import package as packaging
from statemachine import definition as statemachine
from tests.support.stack_template import (
    ALLOCATOR_VARIABLES,
    STREAMING_FUNCTIONS,
    Packaged,
    Resolver,
    allows,
    functions,
    packaged,
    role_of,
    statements,
)

ROOT = Path(__file__).resolve().parents[2]
NAMES = {
    "Table": "satchel-test",
    "ArtifactsBucket": "satchel-test-artifacts",
    "SourceBucket": "satchel-test-sources",
}
WORKFLOW_HANDLERS = {f"app.{name}" for name in statemachine.FUNCTIONS.values()}


@pytest.fixture(scope="module")
def package() -> Packaged:
    return packaged()


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in template["Resources"].items() if spec["Type"] == kind}


# --- The package itself -------------------------------------------------------------------


def test_every_function_of_the_app_has_its_own_policy_file() -> None:
    assert packaging.functions_without_policy("prod") == [], "see .chalice/policies/ and docs/deploy.md"


def test_package_holds_both_templates_and_only_the_service_code(package: Packaged) -> None:
    assert package.sam["Transform"] == "AWS::Serverless-2016-10-31"
    assert "Transform" not in package.cloudformation
    kinds = {spec["Type"] for spec in package.cloudformation["Resources"].values()}
    assert not [kind for kind in kinds if kind.startswith("AWS::Serverless::")]
    assert functions(package.sam).keys() == functions(package.cloudformation).keys()

    with zipfile.ZipFile(package.files.deployment_zip) as archive:
        names = set(archive.namelist())
    assert "app.py" in names
    sources = {path.relative_to(ROOT).as_posix() for path in (ROOT / "chalicelib").rglob("*.py")}
    assert sources <= names, f"subpackages of chalicelib/ not packaged: {sorted(sources - names)}"
    assert not [
        name for name in names if name.startswith(("satchel_local/", "tests/", "scripts/", "deploy/"))
    ]
    assert "isal/__init__.py" in names  # requirements.txt is packaged, compiled wheels too
    assert "zlib_ng/__init__.py" in names
    # Digest's resumable SHA-256: the compiled (manylinux) wheel for the functions' x86_64.
    assert "rehashes/rehashes.abi3.so" in names
    architectures = [
        spec["Properties"].get("Architectures")
        for name, spec in package.sam["Resources"].items()
        if name in functions(package.sam).values()
    ]
    assert architectures
    assert all(each == ["x86_64"] for each in architectures), architectures


def test_cfn_lint_passes_on_both_templates_and_catches_a_broken_reference(
    package: Packaged, tmp_path: Path
) -> None:
    # The control: the expanded template with a GetAtt to a function that does not exist.
    broken = json.loads(json.dumps(package.cloudformation))
    substitutions = broken["Resources"]["DownloadStateMachine"]["Properties"]["DefinitionSubstitutions"]
    substitutions["PrepareFunctionArn"] = {"Fn::GetAtt": ["NoSuchFunction", "Arn"]}
    control = tmp_path / "broken.json"
    control.write_text(json.dumps(broken))

    templates = [package.files.sam_template, package.files.cloudformation_template, control]
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    run = subprocess.run(
        [str(cfn_lint), "--format", "json", *map(str, templates)], capture_output=True, text=True, check=False
    )
    assert run.stdout.strip(), run.stderr
    matches = json.loads(run.stdout)
    found: dict[str, list[str]] = {str(path): [] for path in templates}
    for match in matches:
        found[match["Filename"]].append(f"{match['Level']} {match['Rule']['Id']} {match['Message']}")
    serious = [
        f"{Path(name).name}: {line}"
        for name, lines in found.items()
        if name != str(control)
        for line in lines
        if not line.startswith("Informational")
    ]
    assert not serious, "\n".join(serious)
    assert any(line.startswith("Error E1010") for line in found[str(control)]), found[str(control)]


# --- The package's bytecode --------------------------------------------------------------

# How the functions start, from bench/zips.py: `import app`, then each first call's imports.
_COLD_START = """
import importlib.machinery, inspect, json, sys
sys.path.insert(0, sys.argv[1])
loader = importlib.machinery.SourceFileLoader
compiled, read = [], []
to_code, get_data = loader.source_to_code, loader.get_data
def source_to_code(self, data, path, *, _optimize=-1):
    compiled.append(path)
    return to_code(self, data, path, _optimize=_optimize)
def recorded_get_data(self, path):
    read.append(path)
    return get_data(self, path)
loader.source_to_code, loader.get_data = source_to_code, recorded_get_data
import app
for imports in json.loads(sys.argv[2]):
    exec(imports, {})
modules = {name: sys.modules[name] for name in ("app", "chalicelib.workflow.segments")}
files = {
    name: {
        "file": module.__file__,
        "code": [f.__code__.co_filename for f in vars(module).values()
                 if inspect.isfunction(f) and f.__module__ == name],
    }
    for name, module in modules.items()
}
print(json.dumps({"compiled": compiled, "read": read, "files": files}))
"""


_LOADED_FROM_BYTECODE = {"app": "app.py", "chalicelib.workflow.segments": "chalicelib/workflow/segments.py"}


def _cache_tag(package: Packaged) -> str:
    """The bytecode the functions' runtime reads: python3.11 reads cpython-311."""
    runtimes = {
        spec["Properties"]["Runtime"]
        for spec in _resources(package.sam, "AWS::Serverless::Function").values()
    }
    assert len(runtimes) == 1, runtimes
    major, minor = runtimes.pop().removeprefix("python").split(".")
    return f"cpython-{major}{minor}"


def _cached(source: str, tag: str) -> str:
    directory, _, name = source.rpartition("/")
    return f"{directory}/__pycache__/{name[:-3]}.{tag}.pyc".lstrip("/")


def test_every_source_ships_its_unchecked_hash_bytecode_and_no_other(package: Packaged) -> None:
    tag = _cache_tag(package)
    with zipfile.ZipFile(package.files.deployment_zip) as archive:
        entries = {entry.filename: entry for entry in archive.infolist()}
        sources = sorted(name for name in entries if name.endswith(".py"))
        bytecode = {name for name in entries if "__pycache__/" in name or name.endswith((".pyc", ".pyo"))}
        assert bytecode == {_cached(source, tag) for source in sources}
        assert {
            "__pycache__/app.cpython-311.pyc",
            "chalicelib/workflow/__pycache__/segments.cpython-311.pyc",
        } <= bytecode
        for source in sources:
            pyc, data = entries[_cached(source, tag)], archive.read(_cached(source, tag))
            assert data[:4] == importlib.util.MAGIC_NUMBER, source
            # PEP 552: flags 0b01, hash-based with check_source unset; then the source's hash.
            assert int.from_bytes(data[4:8], "little") == 0b01, source
            assert data[8:16] == importlib.util.source_hash(archive.read(source)), source
            assert marshal.loads(data[16:]).co_filename == source  # not the build machine's path
            assert (pyc.compress_type, pyc.external_attr) == (
                entries[source].compress_type,
                entries[source].external_attr,
            )


def test_the_shipped_bytecode_is_what_py_compile_writes(package: Packaged, tmp_path: Path) -> None:
    with zipfile.ZipFile(package.files.deployment_zip) as archive:
        for source in ("app.py", "chalicelib/workflow/segments.py"):
            path = tmp_path / source
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(archive.read(source))
            expected_pyc = tmp_path / "expected.pyc"
            py_compile.compile(
                str(path),
                cfile=str(expected_pyc),
                dfile=source,
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
            written = expected_pyc.read_bytes()
            shipped = archive.read(_cached(source, "cpython-311"))
            assert shipped[:16] == written[:16], source
            # marshal's bytes may differ by reference flags (they follow refcounts): compare code.
            expected, got = marshal.loads(written[16:]), marshal.loads(shipped[16:])
            assert got == expected, source
            assert got.co_filename == expected.co_filename == source


def test_a_cold_start_compiles_nothing_from_source(package: Packaged, tmp_path: Path) -> None:
    """What Lambda does: unzip to a read-only directory, with mtimes of its own, and import."""
    task = tmp_path / "task"
    with zipfile.ZipFile(package.files.deployment_zip) as archive:
        archive.extractall(task)
    sources = list(task.rglob("*.py"))
    assert len(sources) > 500
    for path in sources:  # a timestamp-checked .pyc would no longer match its source
        os.utime(path, (1_700_000_000, 1_700_000_000))
    # -I leaves PYTHONDONTWRITEBYTECODE out (it ignores the environment): -B writes no .pyc,
    # so a run that compiles cannot leave bytecode behind for another.
    run = subprocess.run(
        [sys.executable, "-I", "-B", "-c", _COLD_START, str(task), json.dumps(list(FIRST_CALLS.values()))],
        cwd=task,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    inside = str(task) + os.sep
    assert [path for path in found["compiled"] if path.startswith(inside)] == []
    read = {path.removeprefix(inside) for path in found["read"] if path.startswith(inside)}
    assert not [path for path in read if path.endswith(".py")], "a source was read"
    for name, source in _LOADED_FROM_BYTECODE.items():
        assert _cached(source, "cpython-311") in read, name
        assert found["files"][name]["file"] == str(task / source)
        # The interpreter names the code by where its source is now (tracebacks say
        # /var/task/...), not by the zip path the .pyc was compiled with.
        assert str(task / source) in found["files"][name]["code"], name
        assert source not in found["files"][name]["code"], name


def test_a_source_this_python_cannot_compile_ships_without_bytecode(tmp_path: Path) -> None:
    deployment = tmp_path / "deployment.zip"
    old = (1980, 1, 1, 0, 0, 0)
    with zipfile.ZipFile(deployment, "w") as archive:
        for name, data, mode, compression in (
            ("tool/__init__.py", b"VALUE = 1\n", 0o644, zipfile.ZIP_DEFLATED),
            ("tool/run.py", b"#!/usr/bin/env python\nprint('run')\n", 0o755, zipfile.ZIP_STORED),
            ("tool/tests/py2.py", b'print "a wheel\'s python 2 test"\n', 0o644, zipfile.ZIP_DEFLATED),
            ("tool/__pycache__/__init__.cpython-311.pyc", b"stale", 0o644, zipfile.ZIP_DEFLATED),
            ("tool/__pycache__/gone.cpython-39.pyc", b"stale", 0o644, zipfile.ZIP_DEFLATED),
            ("tool/legacy.pyc", b"stale", 0o644, zipfile.ZIP_DEFLATED),
            ("tool/data.json", b"{}", 0o600, zipfile.ZIP_STORED),
        ):
            entry = zipfile.ZipInfo(name, date_time=old)
            entry.external_attr, entry.compress_type = (0o100000 | mode) << 16, compression
            archive.writestr(entry, data)
        before = {entry.filename: (entry.external_attr, entry.compress_type) for entry in archive.infolist()}

    assert packaging.ship_bytecode(deployment) == ["tool/tests/py2.py"]

    with zipfile.ZipFile(deployment) as archive:
        after = {entry.filename: (entry.external_attr, entry.compress_type) for entry in archive.infolist()}
        assert list(after) == [
            "tool/__init__.py",
            "tool/__pycache__/__init__.cpython-311.pyc",
            "tool/run.py",
            "tool/__pycache__/run.cpython-311.pyc",
            "tool/tests/py2.py",
            "tool/data.json",
        ]
        for name in ("tool/__init__.py", "tool/run.py", "tool/tests/py2.py", "tool/data.json"):
            assert after[name] == before[name], name
        assert after["tool/__pycache__/run.cpython-311.pyc"] == before["tool/run.py"]  # executable, stored
        assert archive.read("tool/__pycache__/__init__.cpython-311.pyc")[16:] != b"stale"
        code = marshal.loads(archive.read("tool/__pycache__/__init__.cpython-311.pyc")[16:])
        namespace: dict[str, object] = {}
        exec(code, namespace)
        assert namespace["VALUE"] == 1
        assert archive.testzip() is None
    assert [path.name for path in tmp_path.iterdir()] == ["deployment.zip"]  # no temporary zip left


def test_packaging_refuses_a_python_other_than_the_functions_runtime(package: Packaged) -> None:
    running = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert packaging.require_bytecode_runtime(package.sam) == running == "python3.11"
    other = f"python{sys.version_info[0]}.{sys.version_info[1] + 1}"
    sam = json.loads(json.dumps(package.sam))
    sam["Resources"]["Build"]["Properties"]["Runtime"] = other
    with pytest.raises(packaging.PackagingError, match=rf"ignores on another runtime: Build \({other}\)"):
        packaging.require_bytecode_runtime(sam)
    # A runtime given once for all functions, by SAM's Globals, is the functions' too.
    for spec in _resources(sam, "AWS::Serverless::Function").values():
        del spec["Properties"]["Runtime"]
    sam["Globals"] = {"Function": {"Runtime": other}}
    with pytest.raises(packaging.PackagingError, match=r"APIHandler"):
        packaging.require_bytecode_runtime(sam)
    sam["Globals"]["Function"]["Runtime"] = running
    assert packaging.require_bytecode_runtime(sam) == running


# --- The workflow -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sam", "cloudformation"])
def test_the_state_machine_is_the_asl_file_with_every_function_in_the_stack(
    package: Packaged, kind: str
) -> None:
    template = getattr(package, kind)
    machine = template["Resources"]["DownloadStateMachine"]["Properties"]
    assert machine["Definition"] == statemachine.load()
    substitutions = machine["DefinitionSubstitutions"]
    assert set(substitutions) == statemachine.placeholders()
    by_handler = functions(template)
    invoked = []
    for placeholder, function in statemachine.FUNCTIONS.items():
        logical_id = by_handler[f"app.{function}"]
        assert substitutions[placeholder] == {"Fn::GetAtt": [logical_id, "Arn"]}
        invoked.append(logical_id)

    # Its role may invoke these functions (and their versions) and nothing else.
    resolver = Resolver(template, NAMES)
    policy = resolver.resolve(statements(template, machine["RoleArn"]["Fn::GetAtt"][0]))
    lambda_statements = [s for s in policy if any(a.startswith("lambda:") for a in _actions(s))]
    assert [_actions(s) for s in lambda_statements] == [["lambda:InvokeFunction"]]
    arns = [resolver.arn(logical_id) for logical_id in invoked]
    assert sorted(lambda_statements[0]["Resource"]) == sorted(arns + [f"{arn}:*" for arn in arns])


def test_functions_get_their_configuration_from_the_stack(package: Packaged) -> None:
    template = package.cloudformation
    stage = next(spec for spec in _resources(template, "AWS::ApiGateway::Stage").values())
    events = {
        "EventBusName": "satchel-events",
        "RequestPrefix": "inbox/requests/",
        "ServicePrincipals": '[{"tenant": "acme", "user_id": "etl", "roles": []}]',
        "QueueSenders": '{"AROAEXAMPLEROLEID": ["acme"]}',
    }
    for parameters, source_bucket in (({}, NAMES["SourceBucket"]), ({"SourceBucketName": "given"}, "given")):
        datasets = '{"Transaction": {"table": "transactions"}}'
        resolver = Resolver(template, NAMES, {**parameters, **events, "Datasets": datasets})
        machine_arn = resolver.ref("DownloadStateMachine")
        expected = Stack(
            stage="prod",
            table=NAMES["Table"],
            artifact_bucket=NAMES["ArtifactsBucket"],
            source_bucket=source_bucket,
            state_machine_arn=machine_arn,
            # The queues' Refs (their URLs, as CloudFormation resolves them).
            deliveries_queue_url=resolver.ref("DeliveriesQueue"),
            deliveries_dead_letter_queue_url=resolver.ref("DeliveriesDeadLetterQueue"),
        ).environment()
        expected[settings.ENV_API_PREFIX] = "/" + resolver.resolve(stage["Properties"]["StageName"])
        expected[settings.ENV_PUBLIC_URL] = ""
        expected[settings.ENV_DATASETS] = datasets
        expected[settings.ENV_EVENT_BUS] = events["EventBusName"]
        expected[settings.ENV_REQUEST_PREFIX] = events["RequestPrefix"]
        expected[settings.ENV_SERVICE_PRINCIPALS] = events["ServicePrincipals"]
        expected[settings.ENV_QUEUE_SENDERS] = events["QueueSenders"]
        expected[settings.ENV_REQUEST_BUS] = resolver.ref("RequestBus")
        expected[settings.ENV_TRACING] = "false"  # the Tracing parameter's default
        expected[settings.ENV_KMS_KEY_ID] = resolver.get_att("WebhookSecretsKey", "Arn")
        for handler, logical_id in functions(template).items():
            variables = template["Resources"][logical_id]["Properties"]["Environment"]["Variables"]
            allocator = ALLOCATOR_VARIABLES if handler in STREAMING_FUNCTIONS else {}
            assert resolver.resolve(variables) == {**expected, **allocator}, handler
    # The state machine is named after the stack, as the ARN the functions get is built.
    assert (
        Resolver(template, NAMES).ref("DownloadStateMachine").endswith(":stateMachine:satchel-test-download")
    )


def test_the_table_has_the_local_layout_ttl_and_point_in_time_recovery(package: Packaged) -> None:
    table = package.sam["Resources"]["Table"]
    properties = table["Properties"]
    assert properties["KeySchema"] == TABLE_KEYS["KeySchema"]
    assert sorted(properties["AttributeDefinitions"], key=str) == sorted(
        TABLE_KEYS["AttributeDefinitions"], key=str
    )
    assert properties["GlobalSecondaryIndexes"] == TABLE_KEYS["GlobalSecondaryIndexes"]
    assert properties["GlobalSecondaryIndexes"][0]["IndexName"] == OWNER_INDEX
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"


@pytest.mark.parametrize("bucket", ["ArtifactsBucket", "SourceBucket"])
def test_buckets_are_private_encrypted_and_tls_only(package: Packaged, bucket: str) -> None:
    resources = package.sam["Resources"]
    properties = resources[bucket]["Properties"]
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert properties["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    encryption = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    policies = [spec for spec in _resources(package.sam, "AWS::S3::BucketPolicy").values()]
    (policy,) = [spec for spec in policies if spec["Properties"]["Bucket"] == {"Ref": bucket}]
    (deny,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Principal"] == "*"
    assert deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert len(deny["Resource"]) == 2  # the bucket and its objects


def test_artifacts_lifecycle_backs_up_satchels_own_cleanup(package: Packaged) -> None:
    template = package.sam
    rules = {
        rule["Id"]: rule
        for rule in template["Resources"]["ArtifactsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    }
    assert {rule["Status"] for rule in rules.values()} == {"Enabled"}
    assert rules["TemporaryObjects"]["Prefix"] == artifacts.TEMPORARY_PREFIX
    assert rules["ExpiredArtifacts"]["Prefix"] == artifacts.ARTIFACTS_PREFIX
    days = Resolver(template, NAMES).resolve(rules["ExpiredArtifacts"]["ExpirationInDays"])
    longest = settings.Settings.retention_max_seconds
    assert int(days) * 86400 > longest, "the lifecycle must not delete an artifact before it expires"
    assert rules["IncompleteMultipartUploads"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert "Prefix" not in rules["IncompleteMultipartUploads"]


def test_source_bucket_is_made_unless_one_is_named(package: Packaged) -> None:
    template = package.sam
    assert template["Resources"]["SourceBucket"]["Condition"] == "CreateSourceBucket"
    assert template["Resources"]["SourceBucket"]["DeletionPolicy"] == "Retain"
    assert Resolver(template, NAMES).condition("CreateSourceBucket")
    assert not Resolver(template, NAMES, {"SourceBucketName": "mine"}).condition("CreateSourceBucket")


# --- Triggers and the schedule -------------------------------------------------------------


def _function(template: dict[str, Any], handler: str) -> dict[str, Any]:
    function: dict[str, Any] = template["Resources"][functions(template)[handler]]["Properties"]
    return function


def _policy(template: dict[str, Any], handler: str, resolver: Resolver) -> list[dict[str, Any]]:
    policy: list[dict[str, Any]] = resolver.resolve(
        statements(template, role_of(template, functions(template)[handler]))
    )
    return policy


def test_the_requests_queue_is_the_apps_and_dead_letters_what_keeps_failing(package: Packaged) -> None:
    template = package.sam
    resources = template["Resources"]
    queue = resources["RequestsQueue"]["Properties"]
    dead_letters = resources["RequestsDeadLetterQueue"]["Properties"]
    assert queue["QueueName"] == settings.EventSources.from_env().requests_queue  # what app.py reads
    requests = _function(template, "app.handle_requests")
    # Lambda's advice for an SQS source: at least six times the function's timeout.
    assert queue["VisibilityTimeout"] >= 6 * requests["Timeout"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["RequestsDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5,
    }
    # A dead letter keeps its first enqueue time: it must outlive the source queue's retention.
    assert dead_letters["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]
    assert queue["SqsManagedSseEnabled"] is dead_letters["SqsManagedSseEnabled"] is True

    (source,) = requests["Events"].values()
    assert source["Type"] == "SQS"
    assert source["Properties"]["Queue"] == {"Fn::GetAtt": ["RequestsQueue", "Arn"]}
    assert source["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    (mapping,) = [
        spec
        for spec in _resources(package.cloudformation, "AWS::Lambda::EventSourceMapping").values()
        if spec["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["RequestsQueue", "Arn"]}
    ]
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]

    # Lambda polls the queue with the function's own role.
    resolver = Resolver(template, NAMES)
    policy = _policy(template, "app.handle_requests", resolver)
    arn = resolver.arn("RequestsQueue")
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
        assert allows(policy, action, arn, {}), action
    assert not allows(policy, "sqs:ReceiveMessage", resolver.arn("RequestsDeadLetterQueue"), {})


def _s3_event(bucket: str, key: str, detail_type: str = "Object Created") -> dict[str, Any]:
    return {
        "source": "aws.s3",
        "detail-type": detail_type,
        "detail": {"bucket": {"name": bucket}, "object": {"key": key, "size": 10}},
    }


def _rule_of(template: dict[str, Any], handler: str) -> tuple[str, dict[str, Any]]:
    function_id = functions(template)[handler]
    ((rule_id, rule),) = [
        (rule_id, spec["Properties"])
        for rule_id, spec in _resources(template, "AWS::Events::Rule").items()
        if spec["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]}
    ]
    return rule_id, rule


def test_the_events_rule_takes_requests_on_the_request_bus_only(package: Packaged) -> None:
    """Requests are read from the stack's own bus, whose policy says who may put them there,
    never from the default bus, where any principal of the account with PutEvents could."""
    template = package.cloudformation
    resolver = Resolver(template, NAMES)
    _, rule = _rule_of(template, "app.handle_event")
    assert rule["EventBusName"] == {"Ref": "RequestBus"}
    bus = template["Resources"]["RequestBus"]
    assert bus["Type"] == "AWS::Events::EventBus"
    assert resolver.resolve(bus["Properties"]["Name"]) == "satchel-test-requests"
    pattern = EventPattern(None, resolver.resolve(rule["EventPattern"]))

    def matches(event: dict[str, Any]) -> bool:
        return pattern.matches_event(cast(Any, event))  # a TypedDict there, for no checking here

    requested = {"source": "satchel.requests.acme", "detail-type": "Satchel Download Requested", "detail": {}}
    assert matches(requested)
    assert not matches({**requested, "source": "satchel.requests"})  # names no tenant
    assert not matches({**requested, "source": "acme"})
    assert not matches({**requested, "detail-type": "Object Created"})
    assert not matches(_s3_event(NAMES["SourceBucket"], "requests/acme/alice/a.json"))

    # It reads nothing of the source bucket, and dead-letters what it still fails on.
    function = template["Resources"][functions(template)["app.handle_event"]]["Properties"]
    assert function["DeadLetterConfig"] == {"TargetArn": {"Fn::GetAtt": ["EventsDeadLetterQueue", "Arn"]}}
    policy = _policy(template, "app.handle_event", resolver)
    assert allows(policy, "sqs:SendMessage", resolver.arn("EventsDeadLetterQueue"), {})
    manifest = f"arn:aws:s3:::{NAMES['SourceBucket']}/requests/acme/alice/a.json"
    assert not allows(policy, "s3:GetObject", manifest, {})


@pytest.mark.parametrize("parameters", [{}, {"SourceBucketName": "given", "RequestPrefix": "in/box/"}])
def test_the_manifests_rule_takes_manifests_of_the_source_bucket_only(
    package: Packaged, parameters: dict[str, str]
) -> None:
    template = package.cloudformation
    resolver = Resolver(template, NAMES, parameters)
    _, rule = _rule_of(template, "app.handle_manifest")
    assert "EventBusName" not in rule  # the default bus: the only one S3 sends to
    pattern = EventPattern(None, resolver.resolve(rule["EventPattern"]))

    def matches(event: dict[str, Any]) -> bool:
        return pattern.matches_event(cast(Any, event))

    bucket = parameters.get("SourceBucketName", NAMES["SourceBucket"])
    prefix = parameters.get("RequestPrefix", settings.Settings.request_prefix)
    assert matches(_s3_event(bucket, f"{prefix}acme/alice/nightly.json"))
    assert not matches(_s3_event(bucket, "acme/reports/a.csv"))  # a source, not a request
    assert not matches(_s3_event("another-bucket", f"{prefix}acme/alice/nightly.json"))
    assert not matches(_s3_event(bucket, f"{prefix}acme/alice/nightly.json", "Object Deleted"))
    requested = {"source": "satchel.requests.acme", "detail-type": "Satchel Download Requested", "detail": {}}
    assert not matches(requested)  # a request on the default bus starts nothing

    # The source bucket sends its events to EventBridge (one named by SourceBucketName must
    # be set up so by its owner: docs/deploy.md).
    notifications = template["Resources"]["SourceBucket"]["Properties"]["NotificationConfiguration"]
    assert notifications == {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}

    # Events the function still fails on after Lambda's retries are dead-lettered; it may
    # read request manifests and nothing else of the source bucket.
    function = template["Resources"][functions(template)["app.handle_manifest"]]["Properties"]
    assert function["DeadLetterConfig"] == {"TargetArn": {"Fn::GetAtt": ["EventsDeadLetterQueue", "Arn"]}}
    policy = _policy(template, "app.handle_manifest", resolver)
    assert allows(policy, "sqs:SendMessage", resolver.arn("EventsDeadLetterQueue"), {})
    assert allows(policy, "s3:GetObject", f"arn:aws:s3:::{bucket}/{prefix}acme/alice/nightly.json", {})
    assert not allows(policy, "s3:GetObject", f"arn:aws:s3:::{bucket}/acme/reports/a.csv", {})


def test_the_request_bus_policy_lets_named_senders_put_requests_only(package: Packaged) -> None:
    template = package.cloudformation
    policy = template["Resources"]["RequestBusPolicy"]
    assert policy["Condition"] == "HasRequestBusSenders"
    assert not Resolver(template, NAMES).condition("HasRequestBusSenders")  # none named: no policy
    senders = "arn:aws:iam::111122223333:role/etl,444455556666"
    resolver = Resolver(template, NAMES, {"RequestBusSenders": senders})
    assert resolver.condition("HasRequestBusSenders")
    statement = resolver.resolve(policy["Properties"]["Statement"])
    assert resolver.resolve(policy["Properties"]["EventBusName"]) == "satchel-test-requests"
    assert statement["Principal"] == {"AWS": senders.split(",")}
    bus = resolver.arn("RequestBus")
    assert statement["Resource"] == bus
    statement_list = [statement]
    assert allows(statement_list, "events:PutEvents", bus, {"events:source": ["satchel.requests.acme"]})
    assert not allows(statement_list, "events:PutEvents", bus, {"events:source": ["satchel"]})


QUEUE_SENDERS = "arn:aws:iam::123456789012:role/etl,arn:aws:iam::123456789012:user/ops"


@pytest.mark.parametrize("senders", ["", QUEUE_SENDERS])
def test_only_the_named_principals_may_send_to_the_requests_queue(package: Packaged, senders: str) -> None:
    template = package.cloudformation
    resolver = Resolver(template, NAMES, {"RequestsQueueSenders": senders})
    document = resolver.resolve(template["Resources"]["RequestsQueuePolicy"]["Properties"]["PolicyDocument"])
    queue = resolver.arn("RequestsQueue")
    named = [sender for sender in senders.split(",") if sender]
    (deny,) = [s for s in document["Statement"] if s["Sid"] == "OnlyNamedSenders"]
    assert (deny["Effect"], deny["Action"], deny["Resource"]) == ("Deny", "sqs:SendMessage", queue)
    allowed = deny["Condition"]["ArnNotLike"]["aws:PrincipalArn"]
    for sender in named:
        assert sender in allowed
    anyone = "arn:aws:iam::123456789012:role/anyone-else"
    assert anyone not in allowed  # denied, whatever its own IAM policy says
    if not named:
        assert allowed == ["arn:aws:iam::000000000000:user/no-sender"]  # everyone is denied
    grants = [s for s in document["Statement"] if s.get("Sid") == "NamedSenders"]
    assert [g["Principal"] for g in grants] == ([{"AWS": named}] if named else [])


def test_the_deliver_function_reads_the_deliveries_queue_with_a_role_of_its_own(package: Packaged) -> None:
    template = package.sam
    resources = template["Resources"]
    queue = resources["DeliveriesQueue"]["Properties"]
    dead_letters = resources["DeliveriesDeadLetterQueue"]["Properties"]
    assert queue["QueueName"] == settings.EventSources.from_env().deliveries_queue  # what app.py reads
    deliver = _function(template, "app.deliver")
    assert queue["VisibilityTimeout"] >= 6 * deliver["Timeout"]
    # The function retries and dead-letters by itself; the redrive is a backstop for crashes,
    # far beyond the attempts an event gets.
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["DeliveriesDeadLetterQueue", "Arn"]
    }
    assert queue["RedrivePolicy"]["maxReceiveCount"] > settings.Settings.delivery_max_attempts
    assert dead_letters["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]
    # Messages outlive the retry window (the window counts from when the event was recorded).
    assert (
        queue["MessageRetentionPeriod"]
        > settings.Settings.delivery_window_seconds + settings.Settings.delivery_max_delay_seconds
    )
    (source,) = deliver["Events"].values()
    assert source["Properties"]["Queue"] == {"Fn::GetAtt": ["DeliveriesQueue", "Arn"]}
    (mapping,) = [
        spec
        for spec in _resources(package.cloudformation, "AWS::Lambda::EventSourceMapping").values()
        if spec["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["DeliveriesQueue", "Arn"]}
    ]
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]

    cloudformation = package.cloudformation
    resolver = Resolver(cloudformation, NAMES)
    policy = _policy(cloudformation, "app.deliver", resolver)
    arn, dead_arn, table = (
        resolver.arn("DeliveriesQueue"),
        resolver.arn("DeliveriesDeadLetterQueue"),
        resolver.arn("Table"),
    )
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"):
        assert allows(policy, action, arn, {}), action
    assert allows(policy, "sqs:SendMessage", dead_arn, {})
    assert not allows(policy, "sqs:SendMessage", arn, {})
    delivery = {"dynamodb:LeadingKeys": ["DELIVERY#d-1"]}
    assert allows(policy, "dynamodb:GetItem", table, delivery)
    assert allows(policy, "dynamodb:UpdateItem", table, delivery)
    assert not allows(policy, "dynamodb:GetItem", table, {"dynamodb:LeadingKeys": ["DOWNLOAD#d-1"]})
    assert not allows(policy, "dynamodb:GetItem", table, {"dynamodb:LeadingKeys": ["APIKEY#x"]})
    assert not allows(policy, "dynamodb:PutItem", table, delivery)
    # Its own role: no other function's.
    roles = {role_of(cloudformation, function_id) for function_id in functions(cloudformation).values()}
    assert len(roles) == len(functions(cloudformation))


@pytest.mark.parametrize("in_vpc", [False, True])
def test_the_deliver_function_may_run_in_a_vpc(package: Packaged, in_vpc: bool) -> None:
    template = package.cloudformation
    parameters = (
        {"DeliverSubnetIds": "subnet-1,subnet-2", "DeliverSecurityGroupIds": "sg-1"} if in_vpc else {}
    )
    resolver = Resolver(template, NAMES, parameters)
    function = resolver.resolve(template["Resources"][functions(template)["app.deliver"]]["Properties"])
    if in_vpc:
        assert function["VpcConfig"] == {"SubnetIds": ["subnet-1", "subnet-2"], "SecurityGroupIds": ["sg-1"]}
    else:
        assert "VpcConfig" not in function
    others = [handler for handler in functions(template) if handler != "app.deliver"]
    assert all("VpcConfig" not in template["Resources"][functions(template)[h]]["Properties"] for h in others)


def test_cleanup_runs_on_the_schedule_the_app_was_packaged_with(package: Packaged) -> None:
    cleanup = _function(package.sam, "app.sweep")
    (event,) = cleanup["Events"].values()
    minutes = settings.EventSources.from_env().cleanup_rate_minutes
    assert event == {
        "Type": "Schedule",
        "Properties": {"Schedule": Rate(minutes, unit=Rate.MINUTES).to_string()},
    }
    # A sweep ends before the next begins (two at once are safe, but only waste).
    assert cleanup["Timeout"] <= minutes * 60


def test_only_the_deliver_function_may_decrypt_the_tenants_webhook_secrets(package: Packaged) -> None:
    """Secrets live in the table, encrypted with the stack's key for their tenant: no function
    gets one in its environment, only the API may encrypt (a rotation), and only `deliver`,
    which signs, may decrypt, each for the tenant the ciphertext names."""
    template = package.cloudformation
    for logical_id in functions(template).values():
        variables = template["Resources"][logical_id]["Properties"]["Environment"]["Variables"]
        assert not [name for name in variables if "SECRET" in name and name != settings.ENV_KMS_KEY_ID], (
            logical_id
        )
    resolver = Resolver(template, NAMES)
    key = resolver.get_att("WebhookSecretsKey", "Arn")
    tenant = {
        "kms:EncryptionContextKeys": ["satchel:tenant"],
        "kms:EncryptionContext:satchel:tenant": ["acme"],
    }
    may = {
        action: {
            handler
            for handler in functions(template)
            if allows(_policy(template, handler, resolver), action, key, tenant)
        }
        for action in ("kms:Decrypt", "kms:Encrypt")
    }
    assert may == {"kms:Decrypt": {"app.deliver"}, "kms:Encrypt": {"app.app"}}
    assert not allows(_policy(template, "app.deliver", resolver), "kms:Decrypt", key, {})  # no tenant: no


# --- Least privilege, statically (tests/deploy/test_iam.py checks the calls) ----------------------


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def test_every_function_has_its_own_role_with_narrow_resources(package: Packaged) -> None:
    template = package.sam
    by_handler = functions(template)
    assert set(by_handler) >= WORKFLOW_HANDLERS | {"app.app", "app.bearer"}
    roles = {handler: role_of(template, logical_id) for handler, logical_id in by_handler.items()}
    assert len(set(roles.values())) == len(roles), f"functions share a role: {roles}"

    roles_in_stack = _resources(template, "AWS::IAM::Role")
    for role_id, role in roles_in_stack.items():
        trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        services = {statement["Principal"]["Service"] for statement in trust}
        expected = {
            "StateMachineRole": "states.amazonaws.com",
            "ApiGatewayLogsRole": "apigateway.amazonaws.com",  # the region's API Gateway logging
        }.get(role_id, "lambda.amazonaws.com")
        assert services == {expected}, role_id
        resolver = Resolver(
            template, NAMES, {"DatasetTableArns": "arn:aws:dynamodb:us-east-1:123456789012:table/t"}
        )
        for statement in resolver.resolve(statements(template, role_id)):
            actions = _actions(statement)
            assert statement["Effect"] == "Allow", role_id
            assert not [action for action in actions if "*" in action], f"{role_id}: wildcard action"
            resources = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            if "*" in resources:
                assert all(action.startswith(("logs:", "xray:")) for action in actions), (
                    f"{role_id}: {actions} on every resource"
                )
        # Without datasets, no statement is left with an empty resource (IAM would refuse it).
        for statement in Resolver(template, NAMES).resolve(statements(template, role_id)):
            assert statement["Resource"] not in ("", [""], []), f"{role_id}: {statement}"


def test_each_function_may_write_only_its_own_log_group(package: Packaged) -> None:
    template = package.sam
    resolver = Resolver(template, NAMES)
    for handler, logical_id in functions(template).items():
        name = resolver.ref(logical_id)
        log_group = next(
            (
                spec
                for spec in _resources(template, "AWS::Logs::LogGroup").values()
                if resolver.resolve(spec["Properties"]["LogGroupName"]) == f"/aws/lambda/{name}"
            ),
            None,
        )
        assert log_group, f"{logical_id} ({handler}): name it and give it a log group in deploy/template.yaml"
        assert "RetentionInDays" in log_group["Properties"], handler
        policy = resolver.resolve(statements(template, role_of(template, logical_id)))
        logs = [statement for statement in policy if any(a.startswith("logs:") for a in _actions(statement))]
        assert [statement["Resource"] for statement in logs] == [
            f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/{name}:*"
        ], handler


def test_chalice_prod_stage_names_a_policy_file_per_function() -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    prod = config["stages"]["prod"]
    assert prod["autogen_policy"] is False
    assert "manage_iam_role" not in prod
    for name, function in prod["lambda_functions"].items():
        assert (ROOT / ".chalice" / function["iam_policy_file"]).is_file(), name


# --- Alarms -------------------------------------------------------------------------------


def test_alarms_watch_failed_executions_and_api_errors(package: Packaged) -> None:
    template = package.cloudformation
    resolver = Resolver(template, NAMES)
    alarms = {
        spec["Properties"]["MetricName"]: spec["Properties"]
        for spec in _resources(template, "AWS::CloudWatch::Alarm").values()
    }
    machine = resolver.ref("DownloadStateMachine")
    for metric in ("ExecutionsFailed", "ExecutionsTimedOut"):
        assert alarms[metric]["Namespace"] == "AWS/States"
        assert resolver.resolve(alarms[metric]["Dimensions"]) == [
            {"Name": "StateMachineArn", "Value": machine}
        ]
    api = template["Resources"]["RestAPI"]["Properties"]
    stage = next(iter(_resources(template, "AWS::ApiGateway::Stage").values()))["Properties"]
    dimensions = {d["Name"]: d["Value"] for d in resolver.resolve(alarms["5XXError"]["Dimensions"])}
    assert dimensions == {
        "ApiName": resolver.resolve(api["Name"]),
        "Stage": resolver.resolve(stage["StageName"]),
    }
    for properties in alarms.values():
        assert properties["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_every_dead_letter_queue_has_an_alarm(package: Packaged) -> None:
    template = package.cloudformation
    resolver = Resolver(template, NAMES)
    watched = {
        resolver.resolve(dimension["Value"])
        for spec in _resources(template, "AWS::CloudWatch::Alarm").values()
        if spec["Properties"]["Namespace"] == "AWS/SQS"
        and spec["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
        and spec["Properties"]["Threshold"] == 1
        and spec["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]
        for dimension in spec["Properties"]["Dimensions"]
        if dimension["Name"] == "QueueName"
    }
    queues = _resources(template, "AWS::SQS::Queue")
    redriven = [
        spec["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for spec in queues.values()
        if "RedrivePolicy" in spec["Properties"]
    ]
    function_queues = [
        spec["Properties"]["DeadLetterConfig"]["TargetArn"]["Fn::GetAtt"][0]
        for spec in _resources(template, "AWS::Lambda::Function").values()
        if "DeadLetterConfig" in spec["Properties"]
    ]
    dead_letter_queues = set(redriven + function_queues)
    assert dead_letter_queues == {
        "RequestsDeadLetterQueue",
        "EventsDeadLetterQueue",
        "DeliveriesDeadLetterQueue",
    }
    assert watched == {resolver.queue_name(queue) for queue in dead_letter_queues}


# --- Giving users keys on a deployed stack -----------------------------------------------------


def test_add_api_key_stores_a_key_the_authorizer_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    with mock_aws():
        boto3.client("dynamodb", region_name="us-east-1").create_table(
            TableName="satchel-prod-table", BillingMode="PAY_PER_REQUEST", **TABLE_KEYS
        )
        assert (
            add_api_key.main(
                ["--table", "satchel-prod-table", "--tenant", "acme", "--user", "erin", "--admin"]
            )
            == 0
        )
        key = capsys.readouterr().out.strip()
        table = boto3.resource("dynamodb", region_name="us-east-1").Table("satchel-prod-table")
        principal = KeyStore(table).principal_for(key)
    assert len(key) >= 43
    assert principal == Principal("acme", "erin", frozenset({Principal.ADMIN_ROLE}))


# --- The manual (docs/) ----------------------------------------------------------------------


def test_the_manuals_state_machine_diagram_is_generated_from_the_asl_file() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    block = asl_to_mermaid.current_page_block(page)
    assert block is not None, "docs/architecture.md has lost its diagram markers"
    assert block == asl_to_mermaid.page_block(), "stale diagram: make diagram"
    for name in statemachine.load()["States"]:
        assert name in block


def test_the_diagram_script_draws_choices_maps_and_waits() -> None:
    definition = {
        "StartAt": "Check",
        "States": {
            "Check": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.kind", "StringEquals": "zip", "Next": "Each"}],
                "Default": "Pause",
            },
            "Pause": {"Type": "Wait", "Seconds": 5, "Next": "Done"},
            "Each": {
                "Type": "Map",
                "ItemProcessor": {"StartAt": "One", "States": {"One": {"Type": "Pass", "End": True}}},
                "Next": "Done",
            },
            "Done": {"Type": "Succeed"},
        },
    }
    text = asl_to_mermaid.diagram(definition)
    assert "state Check <<choice>>" in text
    assert 'Check --> Each : $.kind == "zip"' in text
    assert "Check --> Pause : otherwise" in text
    assert "state Each {" in text
    assert "        [*] --> One" in text
    assert "Pause : wait Seconds 5" in text
    assert "Done --> [*]" in text


_SIZE = re.compile(r"^([\d,]+)\s*(KiB|MiB|GiB|TiB)?$")
_UNITS = {None: 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}


def _documented_default(text: str) -> object:
    text = text.strip()
    if text == "(required)":
        return dataclasses.MISSING
    if text == "empty":
        return ""
    if text in ("`true`", "`false`"):
        return text == "`true`"
    if text.startswith("`") and text.endswith("`"):
        return text.strip("`")
    match = _SIZE.match(text)
    assert match, f"cannot read the default {text!r}"
    return int(match.group(1).replace(",", "")) * _UNITS[match.group(2)]


PARSED: dict[str, Callable[[str], object]] = {
    settings.ENV_DATASETS: settings.parse_datasets,
    settings.ENV_SERVICE_PRINCIPALS: settings.parse_service_principals,
    settings.ENV_QUEUE_SENDERS: settings.parse_queue_senders,
}


def test_the_manuals_configuration_table_names_every_setting_with_its_default() -> None:
    section = (ROOT / "docs" / "configuration.md").read_text()
    rows = re.findall(r"^\| `(SATCHEL_\w+)` \| ([^|]+) \|", section, flags=re.MULTILINE)
    table = dict(rows)
    assert len(table) == len(rows), "a variable is listed twice"

    source = (ROOT / "chalicelib" / "core" / "settings.py").read_text()
    variables = set(re.findall(r'"(SATCHEL_[A-Z0-9_]+)"', source))
    assert set(settings.INTEGER_VARIABLES.values()) <= variables
    missing = sorted(variables - set(table))
    assert not missing, f"docs/configuration.md's table lacks {missing}"
    unknown = sorted(set(table) - variables)
    assert not unknown, f"docs/configuration.md's table lists variables settings.py does not read: {unknown}"

    fields = {field.name: field for field in dataclasses.fields(settings.Settings)}
    names = {variable: field for field, variable in settings.INTEGER_VARIABLES.items()}
    for variable in variables - set(names):
        names[variable] = variable.removeprefix("SATCHEL_").lower()
    for variable, field_name in names.items():
        if field_name not in fields:
            continue  # read elsewhere than the Settings object: listed, default not compared
        field = fields[field_name]
        default = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
        given = _documented_default(table[variable])
        if variable in PARSED:  # Settings hold the parsed value: the manual gives its JSON
            given = PARSED[variable](str(given))
        assert given == default, variable
