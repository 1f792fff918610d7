"""What Satchel tells whoever operates it: JSON log lines, CloudWatch metrics and X-Ray
traces, through Powertools for AWS Lambda.

- Logs: every `chalicelib` logger writes through one Powertools Logger (service "satchel"),
  a JSON object a line. While a handler runs, its lines carry the Lambda request id and the
  download it handles (`download_id`, `tenant`) once that is known.
- Metrics: CloudWatch embedded metric format lines (namespace "Satchel", dimension `stage`),
  written as a download is created and as it finishes.
- Traces: with SATCHEL_TRACING=true, each invocation is an X-Ray subsegment annotated with
  its download, and the AWS calls made within it are traced.

Powertools is imported when a handler first runs, not with the app, so importing app.py
stays light (docs/performance.md, "Cold start"); the X-Ray SDK is never imported unless tracing is on.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from chalice.app import LambdaFunctionEvent, Request

from chalicelib.core import clock
from chalicelib.core.models import State
from chalicelib.core.settings import Telemetry

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger, Tracer

    from chalicelib.core.models import Download

SERVICE = "satchel"
NAMESPACE = "Satchel"

log = logging.getLogger(__name__)
_lock = threading.Lock()
_logger: Logger | None = None
_tracer: Tracer | None = None
_tracer_decided = False  # once per process: a function's environment does not change
_cold_start = True
# Whether this thread (or task) is inside a handler: only then may keys outlive a `with`.
_handling: ContextVar[bool] = ContextVar("satchel_handling", default=False)


class _Stdout(logging.StreamHandler[Any]):
    """Writes to sys.stdout as it is at each line (as logging's last-resort handler does with
    stderr): the logger outlives whatever stdout a test captured when it was made."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def logger() -> Logger:
    """The Powertools Logger that every chalicelib logger writes through (made on first use)."""
    global _logger
    with _lock:
        if _logger is None:
            _logger = _make_logger()
        return _logger


def _make_logger() -> Logger:
    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.logging.filters import SuppressFilter
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    made = Logger(service=SERVICE, logger_handler=_Stdout())
    copy_config_to_registered_loggers(source_logger=made, include={"chalicelib"})
    # Powertools keeps its logger's records off the root handlers with a filter matching
    # "satchel" anywhere in a logger's name, which would also hide satchel_local's lines
    # (make run). Not propagating keeps them off as well.
    logging.getLogger(SERVICE).propagate = False
    for handler in logging.getLogger().handlers:
        for found in [each for each in handler.filters if isinstance(each, SuppressFilter)]:
            handler.removeFilter(found)
    return made


def tracer() -> Tracer | None:
    """The Powertools Tracer when tracing is on and can reach X-Ray; else None."""
    global _tracer, _tracer_decided
    with _lock:
        if not _tracer_decided:
            _tracer = _make_tracer() if Telemetry.from_env().tracing else None
            _tracer_decided = True
        return _tracer


def _make_tracer() -> Tracer | None:
    from aws_lambda_powertools import Tracer

    # Powertools still stays off outside Lambda (tests, the local stack) and when
    # POWERTOOLS_TRACE_DISABLED says so; on, it traces boto3's calls.
    made = Tracer(service=SERVICE)
    return None if made.disabled else made


@contextmanager
def _appended(**keys: object) -> Iterator[None]:
    powertools = logger()
    before = dict(powertools.thread_safe_get_current_keys())
    powertools.thread_safe_append_keys(**{name: value for name, value in keys.items() if value is not None})
    try:
        yield
    finally:
        powertools.thread_safe_clear_keys()
        powertools.thread_safe_append_keys(**before)


@contextmanager
def handling(context: Any = None, **keys: str | None) -> Iterator[bool]:
    """One invocation: its log lines carry the Lambda request id and `keys`, removed after.
    Gives whether it is the process's first (a cold start)."""
    global _cold_start
    cold, _cold_start = _cold_start, False
    lambda_keys: dict[str, object] = {}
    if context is not None:
        lambda_keys = {
            "function_name": getattr(context, "function_name", None),
            "function_request_id": getattr(context, "aws_request_id", None),
            "cold_start": cold,
        }
    token = _handling.set(True)
    try:
        with _appended(**lambda_keys, **keys):
            yield cold
    finally:
        _handling.reset(token)


@contextmanager
def download_keys(download: Download) -> Iterator[None]:
    """The download's id and tenant on the log lines written within."""
    with _appended(download_id=download.id, tenant=download.tenant):
        yield


def bind(download: Download) -> None:
    """The download's id and tenant on the rest of this invocation's log lines. Outside a
    handler (a step called directly) there is no invocation to end them: nothing is added."""
    if _handling.get():
        logger().thread_safe_append_keys(download_id=download.id, tenant=download.tenant)


def middleware(event: Any, get_response: Callable[[Any], Any]) -> Any:
    """Chalice middleware for every handler (registered in app.py): the invocation's keys,
    and its trace when tracing is on."""
    keys, context, name = _describe(event)
    with handling(context, **keys) as cold:
        traced = tracer()
        if traced is None:
            return get_response(event)
        with traced.provider.in_subsegment(f"## {name}") as subsegment:
            subsegment.put_annotation("ColdStart", cold)
            subsegment.put_annotation("Service", SERVICE)
            for key, value in keys.items():
                if value:
                    subsegment.put_annotation(key, value)
            return get_response(event)


def _describe(event: Any) -> tuple[dict[str, str | None], Any, str]:
    """(log keys, Lambda context, trace name) of a Chalice handler's event."""
    if isinstance(event, Request):
        authorizer = (event.context or {}).get("authorizer") or {}
        keys = {
            "download_id": (event.uri_params or {}).get("download_id"),
            "tenant": authorizer.get("tenant"),
        }
        return keys, event.lambda_context, f"{event.method} {(event.context or {}).get('resourcePath', '')}"
    context = getattr(event, "context", None)
    name = str(getattr(context, "function_name", "handler"))
    if isinstance(event, LambdaFunctionEvent) and isinstance(event.event, dict):
        download_id = event.event.get("download_id")
        return {"download_id": download_id if isinstance(download_id, str) else None}, context, name
    return {}, context, name


# --- Metrics ---------------------------------------------------------------------------


def record_created(stage: str, download: Download) -> None:
    _publish(stage, download, {"type": download.type}, ("DownloadsCreated", "Count", 1))


def record_finished(stage: str, download: Download) -> None:
    """A download reached DONE, FAILED or CANCELLED (once per download: chalicelib/notify/dispatch.py)."""
    _publish(stage, download, {"state": download.state.value}, ("DownloadsFinished", "Count", 1))
    if download.state is State.FAILED and download.error is not None:
        _publish(stage, download, {"code": download.error.code}, ("Failures", "Count", 1))
    if download.state is State.DONE and download.artifact is not None:
        points: list[tuple[str, str, float]] = [("ArtifactBytes", "Bytes", download.artifact.size)]
        if download.started_at and download.finished_at:
            took = clock.parse(download.finished_at) - clock.parse(download.started_at)
            points.append(("BuildDurationSeconds", "Seconds", took.total_seconds()))
        _publish(stage, download, {"type": download.type}, *points)


def _publish(
    stage: str, download: Download, dimensions: dict[str, str], *points: tuple[str, str, float]
) -> None:
    """One EMF line of `points`, which share its dimensions, written at once. The download's
    id and tenant ride along as properties, not dimensions: searchable in Logs Insights
    without a metric per download.

    Not the shared `Metrics` object flushed at the end of an invocation: metrics here need
    different dimensions, and handlers that run side by side in one process (the local
    stack, tests) would mix their metrics in it. A metric that cannot be written is logged;
    it never fails the request or the step that counted it.
    """
    try:
        from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
            AmazonCloudWatchEMFProvider,
        )

        emf = AmazonCloudWatchEMFProvider(
            namespace=NAMESPACE, default_dimensions={"stage": stage, **dimensions}
        )
        for name, unit, value in points:
            emf.add_metric(name=name, unit=unit, value=value)
        emf.add_metadata(key="download_id", value=download.id)
        emf.add_metadata(key="tenant", value=download.tenant)
        emf.flush_metrics(raise_on_empty_metrics=True)
    except Exception:
        log.exception("could not write the metrics %s", [name for name, _, _ in points])
