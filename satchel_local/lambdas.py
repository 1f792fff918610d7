"""Dispatch moto's Lambda invocations to the real handlers, in this process.

moto (without Docker) answers every Invoke with a canned payload. Patched here, an Invoke
resolves the function in moto, imports its `Handler` string (`app.build`: the same string
packaging emits) and calls it. An exception answers as the AWS Python runtime does, so
the state machine's Catch and Retry see the exception's class name as the error.

Lambda runs one invocation at a time in a process; this process runs many at once, on
moto's threads (a Map's iterations, the event sources). What the handlers do on their first
call must then be safe on two threads at once: see `_list_middleware`.
"""

from __future__ import annotations

import contextvars
import importlib
import json
import threading
import time
import traceback
import uuid
from typing import Any
from unittest import mock

from chalice.app import EventSourceHandler
from moto.awslambda.models import LambdaFunction
from moto.awslambda_simple.models import LambdaSimpleBackend

_installed = threading.Lock()
_listing = threading.Lock()
_patches: list[Any] = []
_active = 0
_active_changed = threading.Condition()
# The `Handler` string of the function running in this context (tests attribute AWS calls to it).
current_handler: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_handler", default=None)


class Context:
    """The parts of the Lambda context object handlers may use. The remaining time counts
    down from the function's timeout, as Lambda's does (steps that hand on ask it)."""

    def __init__(self, function_name: str, timeout_seconds: int) -> None:
        self.function_name = function_name
        self.aws_request_id = str(uuid.uuid4())
        self.memory_limit_in_mb = 1024
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _list_middleware(entry: object) -> None:
    """Chalice keeps an event handler's middleware as a generator until the handler's first
    call (`Chalice._get_middleware_handlers`: middleware registered later still counts),
    and that call builds the chain from it (`EventSourceHandler.__call__`). Two first calls
    at once, as a Map's first segments make, iterated that one generator together: one
    raised "generator already executing" (the invocation failed), or built its chain from
    what the other had left of it, possibly nothing: a chain without Satchel's middleware,
    kept for every later call if it was the one stored last. Listed once, under a lock,
    before any call builds from it."""
    if isinstance(entry, EventSourceHandler) and not isinstance(entry.middleware_handlers, list):
        with _listing:
            if not isinstance(entry.middleware_handlers, list):
                entry.middleware_handlers = list(entry.middleware_handlers)


def run_handler(handler: str, function_name: str, body: Any, timeout: int) -> tuple[bytes, bool]:
    """Call `module.attribute` with the decoded event; return (payload, failed)."""
    module_name, _, attribute = handler.rpartition(".")
    entry = getattr(importlib.import_module(module_name), attribute)
    _list_middleware(entry)
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8")
    event = json.loads(body) if body else {}
    global _active
    with _active_changed:
        _active += 1
    dispatched = current_handler.set(handler)
    try:
        result = entry(event, Context(function_name, timeout))
    except Exception as error:  # noqa: BLE001 - reported to the caller, as Lambda does
        failure = {
            "errorType": type(error).__name__,
            "errorMessage": str(error),
            "stackTrace": traceback.format_tb(error.__traceback__),
        }
        return json.dumps(failure).encode("utf-8"), True
    finally:
        current_handler.reset(dispatched)
        with _active_changed:
            _active -= 1
            _active_changed.notify_all()
    return json.dumps(result).encode("utf-8"), False


def wait_idle(timeout: float) -> bool:
    """Wait until no handler is running (an execution stopped mid-step may still have one)."""
    with _active_changed:
        return _active_changed.wait_for(lambda: _active == 0, timeout)


def _backend_invoke(
    self: LambdaSimpleBackend,
    function_name: str,
    qualifier: str | None,
    body: Any,
    headers: Any,
    response_headers: Any,
) -> bytes:
    function = self.get_function(function_name, qualifier)
    payload, failed = run_handler(str(function.handler), function.function_name, body, function.timeout)
    if failed:
        response_headers["x-amz-function-error"] = "Unhandled"
    return payload


def _function_invoke(self: LambdaFunction, body: Any, request_headers: Any, response_headers: Any) -> bytes:
    payload, failed = run_handler(str(self.handler), self.function_name, body, self.timeout)
    if failed:
        response_headers["x-amz-function-error"] = "Unhandled"
    return payload


def install() -> None:
    """Patch moto for the rest of this process (idempotent)."""
    with _installed:
        if _patches:
            return
        for patch in (
            mock.patch.object(LambdaSimpleBackend, "invoke", _backend_invoke),
            mock.patch.object(LambdaFunction, "invoke", _function_invoke),
        ):
            patch.start()
            _patches.append(patch)
