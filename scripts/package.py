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
3. <out>/deployment.zip is rewritten to ship its bytecode: every `__pycache__/` and `.pyc`
   entry is dropped (Chalice copies chalicelib/ as it finds it, stale caches included, and
   zips every file with a 1980 mtime, so a timestamp-checked .pyc never matches), and each
   `.py` gets `__pycache__/<stem>.cpython-311.pyc`, an unchecked hash-based .pyc (PEP 552)
   whose code is named by its path in the zip, not the build machine's. Lambda's /var/task
   is read-only, so a module whose valid .pyc is not in the zip is compiled from source on
   every cold start (Build's imports: ~410 ms, ~130 ms with bytecode, docs/deploy.md);
   an unchecked .pyc is loaded without reading or hashing its source, whatever the
   source's mtime after unzipping. Bytecode is tied to one Python minor version: packaging
   refuses to run on another Python than the functions' runtime (python3.11 in the SAM
   template), whose Lambda would ignore it;
4. the SAM template is expanded to plain CloudFormation, <out>/cloudformation.json, with
   aws-sam-translator: cfn-lint checks more on it (a GetAtt to a missing resource, say),
   and it shows what CloudFormation's SAM transform will make. Its functions' code is
   parameters (CodeBucket, CodeKey), so it can be deployed as it is too.

No AWS account is needed: Chalice gets dummy credentials and a region when none are set.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import marshal
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
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
# The PEP 552 flags word of a .pyc: bit 0 hash-based, bit 1 check_source. Unchecked: the
# interpreter trusts the .pyc; it never reads or hashes the source, and ignores its mtime.
UNCHECKED_HASH_FLAGS = 0b01


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


def require_bytecode_runtime(sam: dict[str, Any]) -> str:
    """The functions' runtime, which must be this Python's: its bytecode is all the
    package can ship, and Lambda ignores bytecode of another minor version (its magic
    number differs) and compiles every module from source on each cold start again."""
    major, minor = sys.version_info[:2]
    running = f"python{major}.{minor}"
    default = sam.get("Globals", {}).get("Function", {}).get("Runtime")
    runtimes = {
        logical_id: resource["Properties"].get("Runtime", default)
        for logical_id, resource in sam["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    others = sorted(f"{function} ({runtime})" for function, runtime in runtimes.items() if runtime != running)
    if others:
        raise PackagingError(
            f"the package ships bytecode of this Python ({running}), which Lambda ignores on "
            f"another runtime: {', '.join(others)}. Package with the functions' Python"
        )
    if sys.implementation.cache_tag != f"cpython-{major}{minor}":
        raise PackagingError(
            f"Lambda's {running} is CPython and reads cpython-{major}{minor} bytecode; this "
            f"interpreter writes {sys.implementation.cache_tag}. Package with CPython {major}.{minor}"
        )
    return running


def bytecode(source: bytes, name: str) -> bytes | None:
    """`source` compiled as an unchecked hash-based .pyc whose code names `name` as its file,
    or None when it does not compile for this Python (as compileall, which skips it).

    Written here, not by py_compile: py_compile reads and writes files, and the sources are
    zip entries (a thousand temporary files for nothing). The header is PEP 552's (magic
    number, flags, the source's hash), and compile() is called as SourceFileLoader's
    source_to_code calls it, so the bytes are what py_compile would write.
    """
    try:
        # dont_inherit: not this module's `from __future__ import annotations`; optimize=0:
        # the .pyc's name says no -O, whatever this interpreter was started with.
        code = compile(source, name, "exec", dont_inherit=True, optimize=0)
    except (SyntaxError, ValueError):  # ValueError: a null byte, an unknown encoding
        return None
    header = importlib.util.MAGIC_NUMBER + UNCHECKED_HASH_FLAGS.to_bytes(4, "little")
    return header + importlib.util.source_hash(source) + marshal.dumps(code)


def cached_path(source: str) -> str:
    """Where the interpreter looks for a zip path's bytecode (not importlib's
    cache_from_source, which follows this machine's PYTHONPYCACHEPREFIX)."""
    path = PurePosixPath(source)
    return str(path.parent / "__pycache__" / f"{path.stem}.{sys.implementation.cache_tag}.pyc")


def _is_bytecode(name: str) -> bool:
    return "__pycache__" in PurePosixPath(name).parts or name.endswith((".pyc", ".pyo"))


def _entry_like(entry: zipfile.ZipInfo, name: str) -> zipfile.ZipInfo:
    """A new entry named `name` with `entry`'s time, compression and permissions."""
    info = zipfile.ZipInfo(name, date_time=entry.date_time)
    info.compress_type = entry.compress_type
    info.create_system = entry.create_system
    info.external_attr = entry.external_attr  # the Unix mode: what Lambda extracts with
    return info


def ship_bytecode(deployment_zip: Path) -> list[str]:
    """Rewrite the zip with no bytecode but an unchecked .pyc of each source (step 3 of the
    module's docstring). Returns the sources that do not compile for this Python."""
    rewritten = deployment_zip.with_name(deployment_zip.name + ".tmp")
    skipped: list[str] = []
    try:
        with zipfile.ZipFile(deployment_zip) as original, zipfile.ZipFile(rewritten, "w") as target:
            for entry in original.infolist():
                if _is_bytecode(entry.filename):
                    continue
                data = original.read(entry)
                target.writestr(_entry_like(entry, entry.filename), data)
                if not entry.filename.endswith(".py"):
                    continue
                compiled = bytecode(data, entry.filename)
                if compiled is None:
                    skipped.append(entry.filename)
                else:
                    target.writestr(_entry_like(entry, cached_path(entry.filename)), compiled)
        os.replace(rewritten, deployment_zip)
    finally:
        rewritten.unlink(missing_ok=True)
    return skipped


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
    require_bytecode_runtime(sam)
    ship_bytecode(built.deployment_zip)
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
