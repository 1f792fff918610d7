"""Recording events: on the bus, and (when the download asked for callbacks) as a webhook
delivery queued for the `deliver` function (chalicelib/notify/delivery.py).

Nothing here waits on a receiver: an API call or a workflow step only writes a record and
sends a queue message. A download's event is the NOTIFY effect of its terminal transition
(chalicelib/workflow/effects.py): recorded with the transition, struck off once done here,
and done again by the cleanup sweep if a crash or an AWS error left it owed, so each step
is idempotent by event id (a conditional put of the delivery record; a message only for a
record not yet queued). A link's claim records its event best-effort: a failure is
logged, never failing the claim.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from chalicelib.core import clock, observability
from chalicelib.core.models import Download, State
from chalicelib.notify import events
from chalicelib.notify.events import Event
from chalicelib.storage.deliveries import Delivery

if TYPE_CHECKING:
    from chalicelib.runtime import Runtime

log = logging.getLogger(__name__)


def download_finished(runtime: Runtime, download: Download) -> None:
    """Called once a download reached DONE, FAILED, CANCELLED or EXPIRED (the NOTIFY effect).
    Raises when the event could not be recorded: the effect stays owed and is done again."""
    # Scoped: cleanup finishes many downloads in one invocation.
    with observability.download_keys(download):
        if download.state is not State.EXPIRED:  # counted when it finished
            observability.record_finished(runtime.settings.stage, download)
        record(runtime, events.of_download(download, runtime.settings.api_prefix), download.callback_url)


def expiring_unused(runtime: Runtime, download: Download) -> None:
    """A DONE download no one has fetched expires soon (the EXPIRING_UNUSED effect): raises
    when the event could not be recorded, so the effect stays owed and is done again."""
    with observability.download_keys(download):
        record(runtime, events.expiring_unused(download, runtime.settings.api_prefix), download.callback_url)


def link_claimed(runtime: Runtime, download: Download, link_id: str, use: int, claimed_at: str) -> None:
    """A link was claimed: `link.claimed`, best-effort (a claim never fails or waits for it)."""
    try:
        record(runtime, events.link_claimed(download, link_id, use, claimed_at), download.callback_url)
    except Exception:
        log.exception("could not record the claim of link %s", link_id)


def record(runtime: Runtime, event: Event, callback_url: str | None) -> None:
    """The webhook's delivery first (idempotent by event id), then the bus: a failure of
    either raises, and a repeat adds no second delivery."""
    if callback_url:
        _queue_delivery(runtime, event, callback_url)
    publish(runtime, event)


def publish(runtime: Runtime, event: Event) -> None:
    entry = runtime.events.put_events(
        Entries=[
            {
                "Source": events.SOURCE,
                "DetailType": event.type,
                "Detail": event.body(),
                "EventBusName": runtime.settings.event_bus,
            }
        ]
    )
    if entry.get("FailedEntryCount"):
        failed = entry["Entries"][0]
        raise RuntimeError(f"EventBridge refused event {event.id}: {failed.get('ErrorCode')}")


def _queue_delivery(runtime: Runtime, event: Event, url: str) -> None:
    settings = runtime.settings
    now = clock.now()
    delivery = runtime.deliveries.record(
        Delivery(
            download_id=event.download_id,
            event_id=event.id,
            type=event.type,
            tenant=event.tenant,
            url=url,
            body=event.body(),
            created_at=clock.iso(now),
        ),
        int(now.timestamp()),
    )
    if delivery.queued:
        return  # a repeat: its message was sent
    if not settings.deliveries_queue_url:
        log.warning("no deliveries queue is configured: the webhook of event %s waits", event.id)
        return
    runtime.sqs.send_message(QueueUrl=settings.deliveries_queue_url, MessageBody=message(delivery))
    runtime.deliveries.mark_queued(delivery)


def message(delivery: Delivery) -> str:
    """A deliveries queue message: it names the record, which holds everything else."""
    return json.dumps({"download_id": delivery.download_id, "event_id": delivery.event_id})
