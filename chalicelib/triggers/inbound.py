"""Downloads started by events: SQS messages, request events on the request bus, and request
manifests dropped into S3. Each goes through the API's own create path and checks.

Each way in acts only for whom its sender may act for (chalicelib/triggers/senders.py): a
queue's sender is bound by SATCHEL_QUEUE_SENDERS, a request event by its source
`satchel.requests.<tenant>`, a manifest by its folder `<prefix><tenant>/<user>/`. It acts as
a user holding a key in that tenant (never with the tenant admin role) or as a configured
service principal, and the audit trail records the source beside the principal. A bad
message never blocks the queue: it is logged with its reason and reported as a batch item
failure, so only it is retried (and, after the queue's maxReceiveCount, dead-lettered).
Each start is idempotent: a message delivered twice creates one download.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.api import downloads
from chalicelib.core.errors import MalformedRequest, SatchelError, StartFailed, UnknownPrincipal
from chalicelib.core.models import Principal, check_numbers
from chalicelib.runtime import Runtime
from chalicelib.triggers import senders

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

log = logging.getLogger(__name__)

REQUESTED = senders.REQUESTED
OBJECT_CREATED = senders.OBJECT_CREATED
REQUEST_SOURCE_PREFIX = senders.REQUEST_SOURCE_PREFIX
_MAX_MANIFEST_BYTES = 256 * 1024


def principal_named(runtime: Runtime, tenant: Any, user_id: Any) -> Principal:
    """Whom a trigger acts as for (tenant, user_id): a service principal as configured, else
    the user holding a key there, without the tenant admin role."""
    tenant, user_id = senders.checked_ids(tenant, user_id)
    principal = senders.acting(
        runtime.keys.principal_named(tenant, user_id), tenant, user_id, runtime.settings.service_principals
    )
    if principal is None:
        raise UnknownPrincipal(f"{tenant}/{user_id} holds no key and is no service principal")
    return principal


def _start(
    runtime: Runtime, principal: Principal, request: Any, idempotency_key: str, source: Mapping[str, str]
) -> str:
    check_numbers(request, "request")  # as the API's json_body does: DynamoDB could not store them
    created = downloads.create(runtime, principal, request, idempotency_key, source=source)
    log.info(
        "started download %s for %s/%s from %s%s",
        created.download.id,
        principal.tenant,
        principal.user_id,
        source["kind"],
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
        tenant, user_id = senders.checked_ids(message.get("tenant"), message.get("user_id"))
        sender = senders.sender_id(record.raw_event)
        senders.check_queue_sender(runtime.settings.queue_senders, sender, tenant, user_id)
        principal = principal_named(runtime, tenant, user_id)
        key = message.get("idempotency_key") or f"sqs:{record.message_id}"
        source = {
            "kind": "queue",
            "queue": str(record.raw_event.get("eventSourceARN", "")).rsplit(":", 1)[-1],
            "sender": record.attributes.sender_id,
            "message_id": record.message_id,
        }
        return _start(runtime, principal, message["request"], str(key), source)
    except SatchelError as refused:
        log.warning("rejected message %s: %s %s", record.message_id, refused.code, refused.message)
        raise
    except Exception:
        log.exception("could not process message %s; it will be retried", record.message_id)
        raise


def handle_event(runtime: Runtime, event: dict[str, Any]) -> str | None:
    """A request event from the request bus, acting within the tenant its source names.
    Returns the download started, or None when the event was rejected (and logged).
    Transient errors raise (a start Step Functions or DynamoDB refused, StartFailed,
    among them), so Lambda retries the event, then dead-letters it."""
    try:
        if event.get("detail-type") != REQUESTED:
            raise MalformedRequest(f"not a request: detail-type {str(event.get('detail-type'))[:80]!r}")
        source = event.get("source")
        tenant = senders.tenant_of_source(source)
        detail = event.get("detail") or {}
        if not isinstance(detail, dict):
            raise MalformedRequest("the event's detail must be {user_id, request}")
        senders.check_named(detail, tenant, None, f"an event from {source}")
        principal = principal_named(runtime, tenant, detail.get("user_id"))
        key = detail.get("idempotency_key") or f"event:{event.get('id')}"
        origin = {
            "kind": "bus",
            "bus": runtime.settings.request_bus,
            "event_id": str(event.get("id")),
            "source": str(source),
        }
        return _start(runtime, principal, detail.get("request"), str(key), origin)
    except StartFailed:
        raise  # nothing started, or it ended FAILED and its key was released: worth a retry
    except SatchelError as refused:
        log.warning("rejected event %s: %s %s", event.get("id"), refused.code, refused.message)
        return None


def handle_manifest(runtime: Runtime, event: dict[str, Any]) -> str | None:
    """S3's "Object Created" event of a request manifest, acting for the user whose folder
    holds it. Returns the download started, or None when it was rejected or ignored (and
    logged). Transient errors raise, so Lambda retries the event."""
    try:
        return _from_manifest(runtime, event)
    except StartFailed:
        raise  # as for a request event: Lambda tries the event again, then dead-letters it
    except SatchelError as refused:
        log.warning("rejected manifest event %s: %s %s", event.get("id"), refused.code, refused.message)
        return None


def _from_manifest(runtime: Runtime, event: dict[str, Any]) -> str | None:
    """s3://<source bucket>/<request prefix><tenant>/<user>/<name>.json holding {request}."""
    settings = runtime.settings
    detail = event.get("detail") or {}
    bucket, key = detail.get("bucket", {}).get("name"), detail.get("object", {}).get("key", "")
    if (
        event.get("detail-type") != OBJECT_CREATED
        or bucket != settings.source_bucket
        or not key.startswith(settings.request_prefix)
    ):
        log.info("ignored object s3://%s/%s: not a request manifest", bucket, key)
        return None
    tenant, user_id = senders.manifest_owner(settings.request_prefix, key)
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
    folder = f"a manifest under {settings.request_prefix}{tenant}/{user_id}/"
    senders.check_named(manifest, tenant, user_id, folder)
    principal = principal_named(runtime, tenant, user_id)
    source = {"kind": "manifest", "bucket": bucket, "key": key, "etag": head["ETag"]}
    return _start(runtime, principal, manifest["request"], f"s3:{key}:{head['ETag']}", source)
