"""Telling the world a download has finished: an EventBridge event, and the creator's
callback when the request named one. Neither may fail the download: a notification that
cannot be sent is logged and audited, never raised."""

from __future__ import annotations

import json
import logging
from functools import cache
from typing import TYPE_CHECKING, Any

from chalicelib.core import clients, observability
from chalicelib.core.models import Download
from chalicelib.notify import callbacks
from chalicelib.storage.audit import Action

if TYPE_CHECKING:
    from chalicelib.runtime import Runtime

log = logging.getLogger(__name__)

SOURCE = "satchel"
DETAIL_TYPE = "Satchel Download State Changed"
LINK_CLAIMED = "Satchel Link Claimed"


def payload(download: Download) -> dict[str, Any]:
    return {
        "id": download.id,
        "type": download.type,
        "tenant": download.tenant,
        "user_id": download.user_id,
        "state": download.state.value,
        "error": None
        if download.error is None
        else {"code": download.error.code, "message": download.error.message},
        "finished_at": download.finished_at,
        "expires_at": download.expires_at,
    }


def download_finished(runtime: Runtime, download: Download) -> None:
    """Called once per download, when it reaches DONE, FAILED or CANCELLED."""
    # Scoped: cleanup finishes many downloads in one invocation.
    with observability.download_keys(download):
        observability.record_finished(runtime.settings.stage, download)
        body = payload(download)
        try:
            runtime.events.put_events(
                Entries=[
                    {
                        "Source": SOURCE,
                        "DetailType": DETAIL_TYPE,
                        "Detail": json.dumps(body),
                        "EventBusName": runtime.settings.event_bus,
                    }
                ]
            )
        except Exception:
            log.exception("could not publish the state change of download %s", download.id)
        if download.callback_url:
            _call_back(runtime, download, body)


def link_claimed(runtime: Runtime, detail: dict[str, Any]) -> None:
    """A link was claimed (`link.claimed`): on EventBridge, best-effort. A claim never waits
    for nor fails because of a receiver; the webhook of the event is issue 16's."""
    try:
        runtime.events.put_events(
            Entries=[
                {
                    "Source": SOURCE,
                    "DetailType": LINK_CLAIMED,
                    "Detail": json.dumps(detail),
                    "EventBusName": runtime.settings.event_bus,
                }
            ]
        )
    except Exception:
        log.exception("could not publish the claim of link %s", detail.get("link_id"))


def _call_back(runtime: Runtime, download: Download, body: dict[str, Any]) -> None:
    settings = runtime.settings
    outcome = callbacks.deliver(
        download.callback_url or "",
        body,
        webhook_secret(settings.webhook_secret, settings.webhook_secret_parameter),
        allow_loopback=settings.callback_allow_loopback,
        ports=settings.callback_port_numbers,
        attempts=settings.callback_attempts,
        timeout_seconds=settings.callback_timeout_seconds,
        backoff_ms=settings.callback_backoff_ms,
    )
    action = Action.CALLBACK_DELIVERED if outcome.delivered else Action.CALLBACK_FAILED
    runtime.audit.record(
        download.tenant,
        action,
        "system:notify",
        download.id,
        attempts=outcome.attempts,
        status=outcome.status,
        error=outcome.error,
    )


@cache
def webhook_secret(value: str, parameter: str) -> str:
    """The signing key: given directly, or read (once per process) from SSM Parameter Store."""
    if value:
        return value
    if not parameter:
        raise LookupError("no webhook secret is configured")
    result = clients.ssm().get_parameter(Name=parameter, WithDecryption=True)
    secret: str = result["Parameter"]["Value"]
    return secret
