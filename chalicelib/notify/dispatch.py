"""Telling the world a download has finished: an EventBridge event, and the creator's
callback when the request named one. Neither may fail the download: a notification that
cannot be sent is logged and audited, never raised.

A link's claim is told the same two ways, but never from the API: the claim puts its event
on the bus, and the `link_webhook` function, invoked by EventBridge with that event, makes
the callback (`link_claimed_callback`). A slow receiver holds up that function, not the claim.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chalicelib.core import clients, observability
from chalicelib.core.models import Download
from chalicelib.notify import callbacks
from chalicelib.storage.audit import Action

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SSMProvider
    from mypy_boto3_ssm.client import SSMClient

    from chalicelib.runtime import Runtime

log = logging.getLogger(__name__)

SOURCE = "satchel"
DETAIL_TYPE = "Satchel Download State Changed"
LINK_CLAIMED = "Satchel Link Claimed"
# The `type` of a link.claimed callback's body, and the fields it has besides (the event's detail).
LINK_CLAIMED_TYPE = "link.claimed"
LINK_CLAIMED_FIELDS = ("link_id", "download_id", "tenant", "claimed_at", "use")
# How long a process signs with the key it read from SSM: a rotated key is in use within five
# minutes, and a busy function reads the parameter once per five minutes, not per callback.
WEBHOOK_SECRET_MAX_AGE_SECONDS = 300


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
        _publish(runtime, DETAIL_TYPE, body, f"the state change of download {download.id}")
        if download.callback_url:
            _call_back(runtime, download, body)


def link_claimed(runtime: Runtime, detail: dict[str, Any]) -> None:
    """A link was claimed (`link.claimed`): on EventBridge, best-effort. A claim never waits
    for nor fails because of a receiver: the callback is the link_webhook function's, which
    EventBridge invokes with this event (`link_claimed_callback`)."""
    _publish(runtime, LINK_CLAIMED, detail, f"the claim of link {detail.get('link_id')}")


def link_claimed_payload(detail: Mapping[str, Any]) -> dict[str, Any]:
    """A link.claimed callback's body: the event's detail, with `"type": "link.claimed"`
    (a state change's body has a `state` instead, and `type` is its download's type)."""
    missing = [name for name in LINK_CLAIMED_FIELDS if name not in detail]
    if missing:
        raise ValueError(f"not a link.claimed event: it has no {', '.join(missing)}")
    return {**{name: detail[name] for name in LINK_CLAIMED_FIELDS}, "type": LINK_CLAIMED_TYPE}


def link_claimed_callback(runtime: Runtime, detail: Mapping[str, Any]) -> callbacks.Delivery | None:
    """Call back the claimed link's download, if it asked for callbacks: what the link_webhook
    function does with each `Satchel Link Claimed` event. None when nothing was sent.

    A callback that cannot be delivered (after the usual retries) is logged, not raised: a
    raise would only make Lambda run the whole delivery again. An AWS error reading the
    download or the key is raised, and Lambda tries the event again."""
    try:
        body = link_claimed_payload(detail)
    except ValueError:
        log.exception("a Satchel Link Claimed event without its fields; nothing to call back")
        return None
    download = runtime.downloads.get(str(body["download_id"]))
    if download is None or download.tenant != body["tenant"]:
        log.info("link %s: download %s is gone; nothing to call back", body["link_id"], body["download_id"])
        return None
    if not download.callback_url:
        return None
    with observability.download_keys(download):
        outcome = _deliver(runtime, download.callback_url, body, f"{body['link_id']}.claimed.{body['use']}")
        if outcome.delivered:
            log.info("link.claimed called back", extra={"attempts": outcome.attempts})
        else:
            log.warning(
                "link.claimed callback not delivered",
                extra={"attempts": outcome.attempts, "status": outcome.status, "error": outcome.error},
            )
    return outcome


def _publish(runtime: Runtime, detail_type: str, detail: dict[str, Any], what: str) -> None:
    """One event on the bus; a failure is logged, never raised (the event reports, it decides nothing)."""
    try:
        runtime.events.put_events(
            Entries=[
                {
                    "Source": SOURCE,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail),
                    "EventBusName": runtime.settings.event_bus,
                }
            ]
        )
    except Exception:
        log.exception("could not publish %s", what)


def _deliver(
    runtime: Runtime, url: str, body: dict[str, Any], event_id: str | None = None
) -> callbacks.Delivery:
    """One callback, signed, checked and retried as the settings say (every kind alike)."""
    settings = runtime.settings
    return callbacks.deliver(
        url,
        body,
        webhook_secret(settings.webhook_secret, settings.webhook_secret_parameter),
        allow_loopback=settings.callback_allow_loopback,
        ports=settings.callback_port_numbers,
        attempts=settings.callback_attempts,
        timeout_seconds=settings.callback_timeout_seconds,
        backoff_ms=settings.callback_backoff_ms,
        event_id=event_id,
    )


def _call_back(runtime: Runtime, download: Download, body: dict[str, Any]) -> None:
    outcome = _deliver(runtime, download.callback_url or "", body)
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


def webhook_secret(value: str, parameter: str, max_age: int = WEBHOOK_SECRET_MAX_AGE_SECONDS) -> str:
    """The signing key: given directly, or read from SSM Parameter Store (decrypted) and kept
    for `max_age` seconds by Powertools' parameters cache; 0 reads it on every use."""
    if value:
        return value
    if not parameter:
        raise LookupError("no webhook secret is configured")
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

    try:
        secret = _parameters(clients.ssm()).get(parameter, max_age=max_age, decrypt=True)
    except GetParameterError as wrapped:
        # Powertools wraps the SDK's error; raise botocore's own, which the workflow steps'
        # boundary classifies (a throttled read is a TransientError, retried by the state machine).
        if isinstance(wrapped.__context__, Exception):
            raise wrapped.__context__ from None
        raise
    if not isinstance(secret, str):  # no transform asked for: SSM's value is a string
        raise TypeError(f"the webhook secret {parameter} is not a string")
    return secret


_provider: tuple[SSMClient, SSMProvider] | None = None


def _parameters(client: SSMClient) -> SSMProvider:
    """One provider (and cache) per client: clients.reset() re-points the clients, and the
    provider must use the one the fault injector and the local stack hook."""
    global _provider
    built = _provider
    if built is None or built[0] is not client:
        # Deferred, as chalicelib/core/observability.py defers Powertools: importing app.py stays cheap.
        from aws_lambda_powertools.utilities.parameters import SSMProvider

        built = _provider = (client, SSMProvider(boto3_client=client))
    return built[1]
