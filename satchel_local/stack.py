"""Create Satchel's AWS resources in the emulator: buckets, table, functions, state machine,
the KMS key of the tenants' webhook secrets, and the event plumbing: the requests queue,
EventBridge rules and their queues.

The table is created from chalicelib/storage/layout.py, as scripts/package.py declares it in
the deployed template; the state machine is
built from the one ASL file, with the function placeholders filled by their ARNs.
moto's EventBridge delivers to SQS but never invokes a Lambda function, so each rule that
targets a function when deployed targets a queue here, which satchel_local.eventsources
polls into that function.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

import boto3

from chalicelib.core import clients
from chalicelib.core import settings as env_names
from chalicelib.core.settings import EventSources, Settings
from chalicelib.notify import events as notify
from chalicelib.storage import layout
from chalicelib.triggers import inbound as triggers
from satchel_local import demodata, fastqueries, serialise
from statemachine import definition as statemachine

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_events.client import EventBridgeClient
    from mypy_boto3_kms.client import KMSClient
    from mypy_boto3_lambda.client import LambdaClient
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_stepfunctions.client import SFNClient

REGION = "us-east-1"

# moto interprets ASL for real only when asked; without Docker its Lambda is the "simple"
# backend, whose Invoke satchel_local.lambdas dispatches to the real handlers.
MOTO_CONFIG: dict[str, Any] = {
    "stepfunctions": {"execute_state_machine": True},
    "lambda": {"use_docker": False},
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


# The functions app.py declares with an event source: Chalice name -> handler in app.py.
EVENT_FUNCTIONS: dict[str, str] = {
    "requests": "handle_requests",
    "events": "handle_event",
    "manifests": "handle_manifest",
    "deliver": "deliver",
    "cleanup": "sweep",
}

# A failed message is tried again once its visibility timeout has passed, and dead-lettered
# after MAX_RECEIVE_COUNT tries. Deployed, the timeout is six times the function's; locally
# it is short, so a bad message reaches its dead-letter queue within seconds. Three tries
# is also what Lambda gives an event it invokes asynchronously (the first and two retries).
VISIBILITY_TIMEOUT_SECONDS = 3
MAX_RECEIVE_COUNT = 3
# The deliveries queue: the deliver function retries by its own backoff (ChangeMessageVisibility)
# and dead-letters itself at the end of its window, so the redrive is only a crash backstop,
# with a generous count. Its visibility timeout outlasts a batch of attempts (10 s each).
DELIVERIES_VISIBILITY_TIMEOUT_SECONDS = 120
DELIVERIES_MAX_RECEIVE_COUNT = 1000

# The IAM user id moto's SQS names as every message's SenderId: the local stack and the tests
# bind it to the demo tenants, as a deployment binds its senders' role ids (SATCHEL_QUEUE_SENDERS).
MOTO_SENDER_ID = "AIDAIT2UOQQY3AUEKVGXU"
DEMO_TENANTS = ("acme", "globex")


@dataclass(frozen=True)
class Stack:
    stage: str
    table: str
    artifact_bucket: str
    source_bucket: str
    state_machine_arn: str
    # Where downloads are requested by SQS, and where what failed MAX_RECEIVE_COUNT times goes.
    requests_queue_url: str = ""
    requests_dead_letter_queue_url: str = ""
    # The bus "Satchel Download Requested" events are put on (SATCHEL_REQUEST_BUS).
    request_bus: str = ""
    # What the request bus's rule delivers for the `events` function (polled into it).
    events_queue_url: str = ""
    events_dead_letter_queue_url: str = ""
    # What the default bus's rule delivers for the `manifests` function: S3's "Object
    # Created" events of request manifests (polled into it).
    manifests_queue_url: str = ""
    manifests_dead_letter_queue_url: str = ""
    # Every Satchel event (chalicelib/notify/events.py) on the bus, for whoever wants to watch them.
    state_changes_queue_url: str = ""
    # Webhook deliveries, polled into the `deliver` function, and what it gave up on.
    deliveries_queue_url: str = ""
    deliveries_dead_letter_queue_url: str = ""
    # The key that encrypts the tenants' webhook secrets (an alias, as a deployment may name it).
    kms_key_id: str = ""
    # The seeded tenants' webhook secrets, by tenant (satchel_local.seed.seed_webhook_secrets).
    webhook_secrets: dict[str, str] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        """The variables the handlers read (chalicelib.core.settings)."""
        return {
            env_names.ENV_DATASETS: demodata.datasets_config(self.stage),
            env_names.ENV_STAGE: self.stage,
            env_names.ENV_TABLE: self.table,
            env_names.ENV_ARTIFACT_BUCKET: self.artifact_bucket,
            env_names.ENV_SOURCE_BUCKET: self.source_bucket,
            env_names.ENV_STATE_MACHINE_ARN: self.state_machine_arn,
            env_names.ENV_KMS_KEY_ID: self.kms_key_id,
            env_names.ENV_REQUEST_BUS: self.request_bus or request_bus_name(self.stage),
            env_names.ENV_QUEUE_SENDERS: json.dumps({MOTO_SENDER_ID: list(DEMO_TENANTS)}),
            env_names.ENV_DELIVERIES_QUEUE_URL: self.deliveries_queue_url,
            env_names.ENV_DELIVERIES_DEAD_LETTER_QUEUE_URL: self.deliveries_dead_letter_queue_url,
        }


def request_bus_name(stage: str) -> str:
    return f"satchel-{stage}-requests"


def _placeholder_code() -> bytes:
    """moto wants a code package; the handlers really run from this checkout."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "# dispatched in-process by satchel_local.lambdas\n")
    return buffer.getvalue()


def _queue_with_dead_letters(
    sqs: SQSClient,
    name: str,
    visibility_timeout: int = VISIBILITY_TIMEOUT_SECONDS,
    max_receive_count: int = MAX_RECEIVE_COUNT,
) -> tuple[str, str]:
    """A queue and its dead-letter queue, wired by a redrive policy: (url, dead-letter url)."""
    dead_letters = sqs.create_queue(QueueName=f"{name}-dead-letters")["QueueUrl"]
    dead_letters_arn = sqs.get_queue_attributes(QueueUrl=dead_letters, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    redrive = {"deadLetterTargetArn": dead_letters_arn, "maxReceiveCount": str(max_receive_count)}
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    return url, dead_letters


def _route(
    sqs: SQSClient,
    events: EventBridgeClient,
    name: str,
    pattern: dict[str, Any],
    queue_url: str,
    bus: str = "default",
) -> None:
    """An EventBridge rule on `bus` delivering what matches `pattern` to a queue."""
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=name, EventPattern=json.dumps(pattern), State="ENABLED", EventBusName=bus)
    events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "queue", "Arn": arn}])


def _notification_bus(events: EventBridgeClient) -> str:
    """The bus Satchel's own events go to (SATCHEL_EVENT_BUS), made if it is not the default."""
    bus = os.environ.get(env_names.ENV_EVENT_BUS) or Settings.event_bus
    if bus != "default" and not events.list_event_buses(NamePrefix=bus).get("EventBuses"):
        events.create_event_bus(Name=bus)
    return bus


class Plumbing(TypedDict):
    """What _event_plumbing makes: each a field of Stack, by the same name."""

    requests_queue_url: str
    requests_dead_letter_queue_url: str
    events_queue_url: str
    events_dead_letter_queue_url: str
    request_bus: str
    manifests_queue_url: str
    manifests_dead_letter_queue_url: str
    state_changes_queue_url: str
    deliveries_queue_url: str
    deliveries_dead_letter_queue_url: str


def _event_plumbing(session: boto3.session.Session, s3: S3Client, stage: str, source_bucket: str) -> Plumbing:
    """Queues, rules and notifications that start downloads from events, as deployed."""
    sqs: SQSClient = session.client("sqs")
    events_client: EventBridgeClient = session.client("events")
    # The queue app.py's `requests` function names (fixed when the app is packaged).
    requests, requests_dead = _queue_with_dead_letters(sqs, EventSources.from_env().requests_queue)
    events, events_dead = _queue_with_dead_letters(sqs, f"satchel-{stage}-events")
    manifests, manifests_dead = _queue_with_dead_letters(sqs, f"satchel-{stage}-manifests")
    request_bus = events_client.create_event_bus(Name=request_bus_name(stage))["EventBusArn"].split("/")[-1]
    state_changes = sqs.create_queue(QueueName=f"satchel-{stage}-state-changes")["QueueUrl"]
    # The queue app.py's `deliver` function names (fixed when the app is packaged).
    deliveries, deliveries_dead = _queue_with_dead_letters(
        sqs,
        EventSources.from_env().deliveries_queue,
        DELIVERIES_VISIBILITY_TIMEOUT_SECONDS,
        DELIVERIES_MAX_RECEIVE_COUNT,
    )
    bus = _notification_bus(events_client)
    s3.put_bucket_notification_configuration(
        Bucket=source_bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    request_prefix = os.environ.get(env_names.ENV_REQUEST_PREFIX) or Settings.request_prefix
    _route(
        sqs,
        events_client,
        f"satchel-{stage}-requested",
        # As deploy/template.yaml makes it: app.py's pattern, on the request bus.
        {"source": [{"prefix": triggers.REQUEST_SOURCE_PREFIX}], "detail-type": [triggers.REQUESTED]},
        events,
        request_bus,
    )
    _route(
        sqs,
        events_client,
        f"satchel-{stage}-manifests",
        {
            "source": ["aws.s3"],
            "detail-type": [triggers.OBJECT_CREATED],
            "detail": {"bucket": {"name": [source_bucket]}, "object": {"key": [{"prefix": request_prefix}]}},
        },
        manifests,
    )
    _route(
        sqs,
        events_client,
        f"satchel-{stage}-state-changes",
        {"source": [notify.SOURCE], "detail-type": list(notify.TYPES)},
        state_changes,
        bus,
    )
    return {
        "requests_queue_url": requests,
        "requests_dead_letter_queue_url": requests_dead,
        "events_queue_url": events,
        "events_dead_letter_queue_url": events_dead,
        "request_bus": request_bus,
        "manifests_queue_url": manifests,
        "manifests_dead_letter_queue_url": manifests_dead,
        "state_changes_queue_url": state_changes,
        "deliveries_queue_url": deliveries,
        "deliveries_dead_letter_queue_url": deliveries_dead,
    }


def create_table(session: boto3.session.Session, name: str) -> None:
    """Satchel's table, with the keys and indexes of the deployed one."""
    dynamodb: DynamoDBClient = session.client("dynamodb")
    dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **layout.TABLE_KEYS)


def webhook_secrets_alias(stage: str) -> str:
    return f"alias/satchel-{stage}-webhook-secrets"


def create_webhook_secrets_key(session: boto3.session.Session, stage: str) -> str:
    """The emulator's KMS key for webhook secrets, rotated yearly as the deployed one is;
    answered by its alias."""
    kms: KMSClient = session.client("kms")
    key = kms.create_key(Description=f"Satchel {stage}: webhook signing secrets")["KeyMetadata"]["KeyId"]
    kms.enable_key_rotation(KeyId=key)
    alias = webhook_secrets_alias(stage)
    kms.create_alias(AliasName=alias, TargetKeyId=key)
    return alias


def provision(stage: str, region: str = REGION) -> Stack:
    fastqueries.install()  # exports read 100,000s of rows through the emulator's Query
    serialise.install()  # workers, sweeps and API calls share one moto from several threads
    session = clients.session(region)
    names = {
        "table": f"satchel-{stage}",
        "artifact_bucket": f"satchel-{stage}-artifacts",
        "source_bucket": f"satchel-{stage}-sources",
    }
    s3: S3Client = session.client("s3")
    for bucket in (names["artifact_bucket"], names["source_bucket"]):
        s3.create_bucket(Bucket=bucket)
    create_table(session, names["table"])
    demodata.create_table(session, stage)
    role = session.client("iam").create_role(
        RoleName=f"satchel-{stage}-role", AssumeRolePolicyDocument=json.dumps(_TRUST)
    )["Role"]["Arn"]
    lambdas: LambdaClient = session.client("lambda")
    code = _placeholder_code()
    handlers = {name: name for name in statemachine.FUNCTIONS.values()} | EVENT_FUNCTIONS
    arns: dict[str, str] = {}
    for name, handler in handlers.items():
        created = lambdas.create_function(
            FunctionName=statemachine.function_name(stage, name),
            Runtime="python3.11",
            Role=role,
            Handler=f"app.{handler}",
            Code={"ZipFile": code},
            Timeout=900,
        )
        arns[name] = created["FunctionArn"]
    placeholders = {placeholder: arns[name] for placeholder, name in statemachine.FUNCTIONS.items()}
    sfn: SFNClient = session.client("stepfunctions")
    machine = sfn.create_state_machine(
        name=f"satchel-{stage}-download", definition=statemachine.render(placeholders), roleArn=role
    )
    plumbing = _event_plumbing(session, s3, stage, names["source_bucket"])
    return Stack(
        stage=stage,
        table=names["table"],
        artifact_bucket=names["artifact_bucket"],
        source_bucket=names["source_bucket"],
        state_machine_arn=machine["stateMachineArn"],
        kms_key_id=create_webhook_secrets_key(session, stage),
        **plumbing,  # every queue and bus, each by its field's name (a TypedDict: checked)
    )
