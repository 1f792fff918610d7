"""Create Satchel's AWS resources in the emulator: buckets, table, functions, state machine.

The table layout here is the one the deployed template declares; the state machine is
built from the one ASL file, with the function placeholders filled by their ARNs.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

import boto3

from chalicelib import settings as env_names
from chalicelib.store import DUE_INDEX, OWNER_INDEX
from satchel_local import demodata, fastqueries, statemachine

REGION = "us-east-1"

# moto interprets ASL for real only when asked; without Docker its Lambda is the "simple"
# backend, whose Invoke satchel_local.lambdas dispatches to the real handlers.
MOTO_CONFIG: dict[str, Any] = {
    "stepfunctions": {"execute_state_machine": True},
    "lambda": {"use_docker": False},
}

TABLE_KEYS: dict[str, Any] = {
    "KeySchema": [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
    "AttributeDefinitions": [
        {"AttributeName": name, "AttributeType": "S"}
        for name in ("pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk")
    ],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": OWNER_INDEX,
            "KeySchema": [
                {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        },
        {
            "IndexName": DUE_INDEX,
            "KeySchema": [
                {"AttributeName": "gsi2pk", "KeyType": "HASH"},
                {"AttributeName": "gsi2sk", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        },
    ],
}

_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": ["lambda.amazonaws.com", "states.amazonaws.com"]},
            "Action": "sts:AssumeRole",
        }
    ],
}


@dataclass(frozen=True)
class Stack:
    stage: str
    table: str
    artifact_bucket: str
    source_bucket: str
    state_machine_arn: str

    def environment(self) -> dict[str, str]:
        """The variables the handlers read (chalicelib.settings)."""
        return {
            env_names.ENV_DATASETS: demodata.datasets_config(self.stage),
            env_names.ENV_STAGE: self.stage,
            env_names.ENV_TABLE: self.table,
            env_names.ENV_ARTIFACT_BUCKET: self.artifact_bucket,
            env_names.ENV_SOURCE_BUCKET: self.source_bucket,
            env_names.ENV_STATE_MACHINE_ARN: self.state_machine_arn,
        }


def _placeholder_code() -> bytes:
    """moto wants a code package; the handlers really run from this checkout."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "# dispatched in-process by satchel_local.lambdas\n")
    return buffer.getvalue()


def provision(stage: str, region: str = REGION) -> Stack:
    fastqueries.install()  # exports read 100,000s of rows through the emulator's Query
    session = boto3.session.Session(region_name=region)
    names = {
        "table": f"satchel-{stage}",
        "artifact_bucket": f"satchel-{stage}-artifacts",
        "source_bucket": f"satchel-{stage}-sources",
    }
    s3 = session.client("s3")
    for bucket in (names["artifact_bucket"], names["source_bucket"]):
        s3.create_bucket(Bucket=bucket)
    session.client("dynamodb").create_table(
        TableName=names["table"], BillingMode="PAY_PER_REQUEST", **TABLE_KEYS
    )
    demodata.create_table(session, stage)
    role = session.client("iam").create_role(
        RoleName=f"satchel-{stage}-role", AssumeRolePolicyDocument=json.dumps(_TRUST)
    )["Role"]["Arn"]
    lambdas = session.client("lambda")
    code = _placeholder_code()
    arns: dict[str, str] = {}
    for placeholder, name in statemachine.FUNCTIONS.items():
        created = lambdas.create_function(
            FunctionName=statemachine.function_name(stage, name),
            Runtime="python3.11",
            Role=role,
            Handler=f"app.{name}",
            Code={"ZipFile": code},
            Timeout=900,
        )
        arns[placeholder] = created["FunctionArn"]
    machine = session.client("stepfunctions").create_state_machine(
        name=f"satchel-{stage}-download", definition=statemachine.render(arns), roleArn=role
    )
    return Stack(stage=stage, state_machine_arn=machine["stateMachineArn"], **names)
