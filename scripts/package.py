"""Package Satchel for CloudFormation, offline: `python -m scripts.package [--stage prod] [--out build]`.

1. deploy/template.yaml, with statemachine/download.asl.json put into the state machine's
   Definition, the table's keys and indexes taken from chalicelib/storage/layout.py's
   TABLE_KEYS (the layout the code, the local stack and the tests use), and the requests queues
   named as the app's SQS source (SATCHEL_REQUESTS_QUEUE), is written to
   <out>/merge-template.json;
2. `chalice package --merge-template` writes <out>/sam.json (a SAM template) and
   <out>/deployment.zip: what `make deploy` uploads and deploys. The SQS event source
   Chalice emits names its queue by a built ARN and reports no batch item failures: it is
   pointed at the stack's queue (so CloudFormation makes the queue first) and given
   ReportBatchItemFailures;
3. the SAM template is expanded to plain CloudFormation, <out>/cloudformation.json, with
   aws-sam-translator: cfn-lint checks more on it (a GetAtt to a missing resource, say),
   and it shows what CloudFormation's SAM transform will make. Its functions' code is
   parameters (CodeBucket, CodeKey), so it can be deployed as it is too.

No AWS account is needed: Chalice gets dummy credentials and a region when none are set.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalice.package import YAMLTemplateSerializer

from chalicelib.core.settings import EventSources
from chalicelib.storage.layout import TABLE_KEYS
from statemachine import definition as statemachine

ROOT = Path(__file__).resolve().parent.parent
MERGE_TEMPLATE = ROOT / "deploy" / "template.yaml"
STATE_MACHINE = "DownloadStateMachine"
TABLE = "Table"
REQUESTS_QUEUE = "RequestsQueue"
REQUESTS_DEAD_LETTER_QUEUE = "RequestsDeadLetterQueue"
DELIVERIES_QUEUE = "DeliveriesQueue"
DELIVERIES_DEAD_LETTER_QUEUE = "DeliveriesDeadLetterQueue"
# SAM resolves a function's CodeUri to these; the expanded template turns them into parameters.
_CODE_PLACEHOLDER = {"Bucket": "satchel-code-bucket-placeholder", "Key": "deployment.zip"}


class PackagingError(Exception):
    pass


@dataclass(frozen=True)
class Package:
    directory: Path

    @property
    def merge_template(self) -> Path:
        return self.directory / "merge-template.json"

    @property
    def sam_template(self) -> Path:
        return self.directory / "sam.json"

    @property
    def deployment_zip(self) -> Path:
        return self.directory / "deployment.zip"

    @property
    def cloudformation_template(self) -> Path:
        return self.directory / "cloudformation.json"


def merge_template() -> dict[str, Any]:
    """deploy/template.yaml with the ASL file as the state machine's definition and the
    table layout of chalicelib/storage/layout.py (the local stack's too)."""
    template = YAMLTemplateSerializer().load_template(MERGE_TEMPLATE.read_text(), str(MERGE_TEMPLATE))
    machine = template["Resources"][STATE_MACHINE]["Properties"]
    table = template["Resources"][TABLE]["Properties"]
    if "Definition" in machine or set(TABLE_KEYS) & set(table):
        raise PackagingError(
            f"{MERGE_TEMPLATE}: the state machine's Definition comes from {statemachine.ASL_PATH}, "
            f"the table's {', '.join(TABLE_KEYS)} from chalicelib/storage/layout.py, not from here"
        )
    machine["Definition"] = statemachine.load()
    table.update(json.loads(json.dumps(TABLE_KEYS)))
    sources = EventSources.from_env()
    for logical_id, name in (
        (REQUESTS_QUEUE, sources.requests_queue),
        (REQUESTS_DEAD_LETTER_QUEUE, f"{sources.requests_queue}-dead-letters"),
        (DELIVERIES_QUEUE, sources.deliveries_queue),
        (DELIVERIES_DEAD_LETTER_QUEUE, f"{sources.deliveries_queue}-dead-letters"),
    ):
        properties = template["Resources"][logical_id]["Properties"]
        if "QueueName" in properties:
            raise PackagingError(
                f"{MERGE_TEMPLATE}: {logical_id}'s QueueName comes from SATCHEL_REQUESTS_QUEUE or "
                "SATCHEL_DELIVERIES_QUEUE, the names Chalice gives the app's SQS sources, not from here"
            )
        properties["QueueName"] = name
    return template


def _queues() -> dict[str, str]:
    """The stack's queues that functions read, by the name Chalice knows them by."""
    sources = EventSources.from_env()
    return {sources.requests_queue: REQUESTS_QUEUE, sources.deliveries_queue: DELIVERIES_QUEUE}


def _queue_arn(name: str) -> dict[str, str]:
    """How Chalice names a queue given by name in an SQS event source."""
    return {"Fn::Sub": f"arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:{name}"}


def wire_sqs_sources(sam: dict[str, Any]) -> None:
    """Point each SQS event source at the stack's queue (requests, deliveries), reporting
    batch item failures.

    Chalice refers to the queue by an ARN built from its name, which gives CloudFormation
    no dependency on the queue: the event source mapping could be made before it.
    """
    queues = {json.dumps(_queue_arn(name)): logical for name, logical in _queues().items()}
    for logical_id, resource in sam["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for event_id, event in resource["Properties"].get("Events", {}).items():
            if event["Type"] != "SQS":
                continue
            properties = event["Properties"]
            queue = queues.get(json.dumps(properties["Queue"]))
            if queue is None:
                raise PackagingError(
                    f"{logical_id}.{event_id} reads {properties['Queue']}: the stack makes only "
                    f"the queues {', '.join(sorted(_queues()))}"
                )
            properties["Queue"] = {"Fn::GetAtt": [queue, "Arn"]}
            properties["FunctionResponseTypes"] = ["ReportBatchItemFailures"]


def chalice_functions() -> set[str]:
    """The names Chalice's config gives the app's functions (`lambda_functions` keys)."""
    from app import app  # the Chalice app: its routes, authorizers, event sources, functions

    names = {"api_handler"} if app.routes else set()
    names |= {function.name for function in app.pure_lambda_functions}
    names |= {source.name for source in app.event_sources}
    names |= {authorizer.name for authorizer in app.builtin_auth_handlers}
    return names


def functions_without_policy(stage: str) -> list[str]:
    """Functions the stage names no `iam_policy_file` for: each must have its own policy."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    functions = config["stages"][stage].get("lambda_functions", {})
    return sorted(name for name in chalice_functions() if "iam_policy_file" not in functions.get(name, {}))


def _chalice_environment() -> dict[str, str]:
    env = dict(os.environ)
    if not (env.get("AWS_PROFILE") or env.get("AWS_ACCESS_KEY_ID")):
        # `chalice package` makes no AWS call, but botocore wants credentials and a region.
        env["AWS_ACCESS_KEY_ID"] = "packaging-offline"
        env["AWS_SECRET_ACCESS_KEY"] = "packaging-offline"
    env.setdefault("AWS_DEFAULT_REGION", env.get("AWS_REGION", "us-east-1"))
    return env


def run_chalice(stage: str, package: Package) -> None:
    chalice = Path(sys.executable).with_name("chalice")
    package.sam_template.unlink(missing_ok=True)
    package.deployment_zip.unlink(missing_ok=True)
    command = [
        str(chalice),
        "package",
        "--stage",
        stage,
        "--merge-template",
        str(package.merge_template),
        str(package.directory),
    ]
    subprocess.run(command, cwd=ROOT, env=_chalice_environment(), check=True)


class _NoManagedPolicies:
    """SAM looks managed policy names up in IAM; Satchel's functions name none."""

    def load(self) -> dict[str, str]:
        return {}


def expand(sam: dict[str, Any]) -> dict[str, Any]:
    """The SAM template as plain CloudFormation, translated offline."""
    from samtranslator.public.exceptions import InvalidDocumentException  # type: ignore[import-untyped]
    from samtranslator.translator.transform import transform  # type: ignore[import-untyped]

    template = json.loads(json.dumps(sam))
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = dict(_CODE_PLACEHOLDER)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # SAM asks boto3 for a partition
    try:
        expanded: dict[str, Any] = transform(template, {}, _NoManagedPolicies())
    except InvalidDocumentException as error:
        causes = "; ".join(str(cause) for cause in error.causes)
        raise SystemExit(f"SAM could not expand the template: {causes}") from None
    code = {"S3Bucket": {"Ref": "CodeBucket"}, "S3Key": {"Ref": "CodeKey"}}
    for resource in expanded["Resources"].values():
        if resource["Type"] == "AWS::Lambda::Function":
            resource["Properties"]["Code"] = dict(code)
    expanded.setdefault("Parameters", {}).update(
        {
            "CodeBucket": {"Type": "String", "Description": "The bucket deployment.zip was uploaded to."},
            "CodeKey": {"Type": "String", "Default": "deployment.zip", "Description": "Its key."},
        }
    )
    return expanded


def package(stage: str, out: Path) -> Package:
    missing = functions_without_policy(stage)
    if missing:
        raise PackagingError(
            f"no IAM policy for {', '.join(missing)}: give each function its own "
            f'"iam_policy_file" in .chalice/config.json\'s {stage} stage (.chalice/policies/<name>.json)'
        )
    out.mkdir(parents=True, exist_ok=True)
    built = Package(out.resolve())
    built.merge_template.write_text(json.dumps(merge_template(), indent=2) + "\n")
    run_chalice(stage, built)
    sam = json.loads(built.sam_template.read_text())
    wire_sqs_sources(sam)
    built.sam_template.write_text(json.dumps(sam, indent=2) + "\n")
    built.cloudformation_template.write_text(json.dumps(expand(sam), indent=2, sort_keys=True) + "\n")
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stage", default="prod", help="the Chalice stage in .chalice/config.json")
    parser.add_argument("--out", type=Path, default=ROOT / "build", help="output directory")
    args = parser.parse_args(argv)
    try:
        built = package(args.stage, args.out)
    except PackagingError as error:
        print(f"make package: {error}", file=sys.stderr)
        return 1
    for path in (built.sam_template, built.deployment_zip, built.cloudformation_template):
        print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
