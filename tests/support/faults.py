"""Fault injection: make a named AWS operation fail, as AWS fails, on the clients Satchel uses.

A `Fault` names an operation (`s3.UploadPart`, `dynamodb.UpdateItem`,
`stepfunctions.StartExecution`), a kind, the call that fails first (`at`, counted from 1
among the calls that match), how many calls in a row fail (`calls`), and how many attempts
of each failing call fail (`attempts`; None: all of them, which outlasts botocore's own
retries). `step` limits it to the calls a workflow step makes (the Lambda handler running,
`app.build`) or, with `CALLER`, to the calls made outside any step (API routes, triggers and
the cleanup sweep, which the tests call directly).

Injection goes through botocore's event system, on the very client objects
`chalicelib.core.clients` hands to the code: `before-call` decides whether a call fails, and the
client's `before-send` (where moto answers requests) answers each attempt of it. So the code
paths, botocore's retries included, are the real ones. The kinds:

- `throttle`: the service's own throttling error (S3 `SlowDown` 503, DynamoDB
  `ProvisionedThroughputExceededException`, Step Functions, EventBridge, SQS and KMS
  `ThrottlingException`); the request never reaches the service.
- `internal`: a 500 (`InternalError`, `InternalServerError`, `InternalException`,
  `KMSInternalException`); not executed.
- `connection`: botocore's `EndpointConnectionError`; the request never left.
- `timeout`: botocore's `ReadTimeoutError` *after* the service executed the request: the
  ambiguous case, where the caller cannot know whether it happened.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from moto.core.botocore_stubber import MockRawResponse
from moto.core.models import botocore_stubber

from chalicelib.core import clients
from satchel_local import lambdas

KINDS = ("throttle", "internal", "connection", "timeout")
CALLER = "caller"  # calls made outside any workflow step (API, triggers, cleanup)
# A persistent fault fails every attempt of its call. chalicelib/core/clients.py configures
# `max_attempts: 5`, which botocore counts as retries: 6 attempts in all.
ALL_ATTEMPTS = None
ATTEMPTS = 6

# (HTTP status, error code) per service and kind; the body is the service's own error shape.
_ANSWERS: dict[str, dict[str, tuple[int, str]]] = {
    "s3": {"throttle": (503, "SlowDown"), "internal": (500, "InternalError")},
    "dynamodb": {
        "throttle": (400, "ProvisionedThroughputExceededException"),
        "internal": (500, "InternalServerError"),
    },
    "stepfunctions": {"throttle": (400, "ThrottlingException"), "internal": (500, "InternalServerError")},
    "events": {"throttle": (400, "ThrottlingException"), "internal": (500, "InternalException")},
    "sqs": {"throttle": (400, "ThrottlingException"), "internal": (500, "InternalError")},
    # KMS speaks JSON 1.1 (`__type`); botocore's standard retries take ThrottlingException as
    # a throttle and any 500 as transient, as they do for AWS's own answers.
    "kms": {"throttle": (400, "ThrottlingException"), "internal": (500, "KMSInternalException")},
}


@dataclass(frozen=True)
class Fault:
    operation: str  # "<boto3 service name>.<Operation>", e.g. "s3.UploadPart"
    kind: str
    at: int = 1
    calls: int = 1
    attempts: int | None = ALL_ATTEMPTS
    step: str | None = None  # a handler ("app.build"), CALLER, or None for any

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind}")
        if self.operation.split(".", 1)[0] not in _ANSWERS:
            raise ValueError(f"no client is faulted for {self.operation}")


@dataclass
class _Armed:
    fault: Fault
    seen: int = 0
    fired: int = 0  # attempts answered with the fault


@dataclass
class _Pending:
    armed: _Armed
    attempts_left: int | None


def current_step() -> str:
    return lambdas.current_handler.get() or CALLER


def _error_body(service: str, code: str, status: int) -> tuple[dict[str, str], bytes]:
    message = "injected fault"
    if service == "s3":
        xml = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        return {"Content-Type": "application/xml"}, xml.encode()
    version = "1.0" if service in ("dynamodb", "stepfunctions", "sqs") else "1.1"
    body = {"__type": f"com.amazonaws.{service}#{code}", "message": message}
    return {"Content-Type": f"application/x-amz-json-{version}", "x-amzn-ErrorType": code}, json.dumps(
        body
    ).encode()


@dataclass
class Injector:
    """Arms faults on the process's cached clients, and records which steps call what."""

    table: str
    # Other DynamoDB tables whose calls are hooked too (an export's dataset: its own client).
    tables: tuple[str, ...] = ()
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    _armed: list[_Armed] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _local: threading.local = field(default_factory=threading.local)

    def install(self) -> None:
        """Hook the clients `chalicelib.core.clients` hands out (built now if not yet)."""
        hooked: list[Any] = [
            clients.s3(),
            clients.stepfunctions(),
            clients.events(),
            clients.sqs(),
            clients.kms(),
        ]
        hooked += [clients.table(name).meta.client for name in (self.table, *self.tables)]
        for client in hooked:
            service = client.meta.service_model.service_name
            events = client.meta.events
            events.register("before-call", self._before_call(service))
            # moto answers in `before-send`; the injector stands in front of it on this client.
            events.unregister("before-send", botocore_stubber)
            events.register("before-send", self._before_send(service))

    @contextmanager
    def armed(self, *faults: Fault) -> Iterator[list[_Armed]]:
        arming = [_Armed(fault) for fault in faults]
        with self._lock:
            self._armed.extend(arming)
        try:
            yield arming
        finally:
            with self._lock:
                for item in arming:
                    self._armed.remove(item)

    def fired(self, arming: list[_Armed]) -> int:
        with self._lock:
            return sum(item.fired for item in arming)

    def _before_call(self, service: str) -> Any:
        def before_call(model: Any, **_: Any) -> None:
            operation, step = f"{service}.{model.name}", current_step()
            pending = None
            with self._lock:
                self.calls[(step, operation)] += 1
                for item in self._armed:
                    fault = item.fault
                    if fault.operation != operation or fault.step not in (None, step):
                        continue
                    item.seen += 1
                    if fault.at <= item.seen < fault.at + fault.calls and pending is None:
                        pending = _Pending(item, fault.attempts)
            self._local.pending = pending

        return before_call

    def _before_send(self, service: str) -> Any:
        def before_send(event_name: str, request: Any, **kwargs: Any) -> AWSResponse | None:
            pending: _Pending | None = getattr(self._local, "pending", None)
            if pending is None or pending.attempts_left == 0:
                return botocore_stubber(event_name=event_name, request=request, **kwargs)
            if pending.attempts_left is not None:
                pending.attempts_left -= 1
            with self._lock:
                pending.armed.fired += 1
            kind = pending.armed.fault.kind
            if kind == "connection":
                raise EndpointConnectionError(endpoint_url=request.url)
            if kind == "timeout":
                botocore_stubber(event_name=event_name, request=request, **kwargs)  # it happened
                raise ReadTimeoutError(endpoint_url=request.url)
            status, code = _ANSWERS[service][kind]
            headers, body = _error_body(service, code, status)
            return AWSResponse(request.url, status, headers, MockRawResponse(body))

        return before_send
