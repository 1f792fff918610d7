"""Downloads started by events: SQS messages, EventBridge events, and request manifests
dropped into S3. Each goes through the API's own create path and checks.

A message or event acts as the principal it names, which must be a user holding a key in
that tenant, or a configured service principal. A bad message never blocks the queue: it
is logged with its reason and reported as a batch item failure, so only it is retried
(and, after the queue's maxReceiveCount, dead-lettered). Each start is idempotent: a
message delivered twice creates one download.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.api import downloads
from chalicelib.core.errors import MalformedRequest, SatchelError, UnknownPrincipal
from chalicelib.core.models import Principal, check_numbers
from chalicelib.core.names import PRINCIPAL_ID_PATTERN, is_principal_id
from chalicelib.runtime import Runtime

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

log = logging.getLogger(__name__)

REQUESTED = "Satchel Download Requested"
OBJECT_CREATED = "Object Created"
_MAX_MANIFEST_BYTES = 256 * 1024


def principal_named(runtime: Runtime, tenant: Any, user_id: Any) -> Principal:
    if not isinstance(tenant, str) or not isinstance(user_id, str) or not tenant or not user_id:
        raise MalformedRequest("a request names its tenant and user_id as strings")
    if not (is_principal_id(tenant) and is_principal_id(user_id)):
        # Checked before any lookup: ids are joined with '#' into the keys looked up.
        raise MalformedRequest(f"tenant and user_id must match {PRINCIPAL_ID_PATTERN}")
    principal = runtime.keys.principal_named(tenant, user_id)
    if principal is not None:
        return principal
    for known in runtime.settings.service_principals:
        if (known.tenant, known.user_id) == (tenant, user_id):
            return known
    raise UnknownPrincipal(f"{tenant}/{user_id} holds no key and is no service principal")


def _start(runtime: Runtime, principal: Principal, request: Any, idempotency_key: str) -> str:
    check_numbers(request, "request")  # as the API's json_body does: DynamoDB could not store them
    created = downloads.create(runtime, principal, request, idempotency_key)
    log.info(
        "started download %s for %s/%s%s",
        created.download.id,
        principal.tenant,
        principal.user_id,
        " (replayed)" if created.replayed else "",
    )
    return created.download.id


def _message(body: str) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except ValueError:
        raise MalformedRequest("the message is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("request"), dict):
        raise MalformedRequest("the message must be {tenant, user_id, request}")
    return message


def handle_messages(runtime: Runtime, records: Iterable[dict[str, Any]]) -> PartialItemFailureResponse:
    """An SQS batch: start a download per message; report the messages that failed.

    Powertools' batch processor runs each message and collects the failures as SQS's
    `batchItemFailures` (the event source mapping has ReportBatchItemFailures). A batch whose
    every message failed is still answered, not raised: the answer names each message, so
    only they are retried, as for a partial failure."""
    # Deferred, as chalicelib/core/observability.py defers Powertools: importing app.py stays cheap.
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType

    processor = BatchProcessor(EventType.SQS, raise_on_entire_batch_failure=False)  # per call: it keeps state
    with processor(list(records), functools.partial(_handle_message, runtime)):
        processor.process()
    return processor.response()


def _handle_message(runtime: Runtime, record: SQSRecord) -> str:
    """One message; raising reports it as a batch item failure."""
    try:
        message = _message(record.body)
        principal = principal_named(runtime, message.get("tenant"), message.get("user_id"))
        key = message.get("idempotency_key") or f"sqs:{record.message_id}"
        return _start(runtime, principal, message["request"], str(key))
    except SatchelError as refused:
        log.warning("rejected message %s: %s %s", record.message_id, refused.code, refused.message)
        raise
    except Exception:
        log.exception("could not process message %s; it will be retried", record.message_id)
        raise


def handle_event(runtime: Runtime, event: dict[str, Any]) -> str | None:
    """An EventBridge event: a request, or a request manifest created in S3. Returns the
    download started, or None when the event was rejected (and logged). Transient errors
    raise, so Lambda retries the event."""
    try:
        if event.get("detail-type") == OBJECT_CREATED:
            return _from_manifest(runtime, event)
        detail = event.get("detail") or {}
        principal = principal_named(runtime, detail.get("tenant"), detail.get("user_id"))
        key = detail.get("idempotency_key") or f"event:{event.get('id')}"
        return _start(runtime, principal, detail.get("request"), str(key))
    except SatchelError as refused:
        log.warning("rejected event %s: %s %s", event.get("id"), refused.code, refused.message)
        return None


def _from_manifest(runtime: Runtime, event: dict[str, Any]) -> str | None:
    """s3://<source bucket>/<request prefix><tenant>/<name>.json holding {user_id, request}."""
    settings = runtime.settings
    detail = event.get("detail") or {}
    bucket, key = detail.get("bucket", {}).get("name"), detail.get("object", {}).get("key", "")
    if bucket != settings.source_bucket or not key.startswith(settings.request_prefix):
        log.info("ignored object s3://%s/%s: not a request manifest", bucket, key)
        return None
    tenant = key[len(settings.request_prefix) :].split("/", 1)[0]
    try:
        head = runtime.s3.head_object(Bucket=bucket, Key=key)
        if head["ContentLength"] > _MAX_MANIFEST_BYTES:
            raise MalformedRequest(f"the manifest exceeds {_MAX_MANIFEST_BYTES} bytes")
        body = runtime.s3.get_object(Bucket=bucket, Key=key, IfMatch=head["ETag"])["Body"].read()
    except ClientError as error:
        if error.response["Error"]["Code"] in ("404", "NoSuchKey", "PreconditionFailed", "412"):
            log.warning("request manifest s3://%s/%s is gone or changed; ignored", bucket, key)
            return None
        raise
    manifest = _message(body.decode("utf-8", errors="replace"))
    if manifest.get("tenant", tenant) != tenant:
        raise MalformedRequest(f"a manifest under {settings.request_prefix}{tenant}/ acts for {tenant} only")
    principal = principal_named(runtime, tenant, manifest.get("user_id"))
    return _start(runtime, principal, manifest["request"], f"s3:{key}:{head['ETag']}")
