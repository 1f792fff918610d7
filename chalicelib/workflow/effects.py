"""The work owed once a transition is committed, and doing it.

Each piece is recorded with the transition (store.transition's `effects`) and struck off one
by one as it is done. Whatever a failed or crashed step or sweep leaves owed, the next
cleanup sweep does: the record stays due within a short lease until nothing is owed. Each
is safe to repeat (stop, remove) or repeated at most once per failure (an audit entry, an
event). The Fail step and the cleanup sweep both record and follow up owed work, so it
lives here, below both.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from chalicelib.core.models import Download, ErrorInfo
from chalicelib.notify import dispatch as notify
from chalicelib.runtime import Runtime
from chalicelib.s3 import artifacts
from chalicelib.storage.audit import Action
from chalicelib.workflow import executions

log = logging.getLogger(__name__)

ACTOR = "system:cleanup"  # who the owed audit entries name, whichever step or sweep writes them
STOP = "stop"  # the workflow, when the download timed out
REMOVE = "remove"  # uploads, temporary objects, artifact
NOTIFY = "notify"  # the event: on the bus, and queued for the webhook (chalicelib/notify/dispatch.py)
PURGE = "purge"  # the record itself: always last
# `download.expiring_unused`: a DONE download no one has fetched expires soon (cleanup's warning).
EXPIRING_UNUSED = "expiring_unused"
_AUDIT = "audit:"
_ORDER = {STOP: 0, REMOVE: 1, _AUDIT: 2, NOTIFY: 3, EXPIRING_UNUSED: 3, PURGE: 4}


def audit(action: Action) -> str:
    return f"{_AUDIT}{action.value}"


def follow_up(runtime: Runtime, download: Download, effects: Collection[str]) -> None:
    """Do the work owed after `download`'s last transition, striking off each piece once done."""
    ordered = sorted(effects, key=lambda effect: _ORDER[_AUDIT if effect.startswith(_AUDIT) else effect])
    for index, effect in enumerate(ordered):
        _do(runtime, download, effect)
        if effect != PURGE:  # a purged record is gone: nothing left to strike off
            runtime.downloads.effect_done(download, effect, last=index == len(ordered) - 1)


def follow_up_or_leave(runtime: Runtime, download: Download, effects: Collection[str]) -> None:
    """follow_up, for a caller whose transition is committed and must not fail now (the API
    answering, Finalize after DONE): what an error leaves owed, the cleanup sweep does."""
    try:
        follow_up(runtime, download, effects)
    except Exception:
        log.exception("work owed after download %s's transition is left to cleanup", download.id)


def _do(runtime: Runtime, download: Download, effect: str) -> None:
    if effect == STOP:
        error = download.error or ErrorInfo("Timeout", "the download did not finish before its deadline")
        executions.stop(runtime, download.id, error.code, error.message)
    elif effect == REMOVE:
        artifacts.remove_everything(runtime.s3, runtime.settings.artifact_bucket, download.id)
    elif effect.startswith(_AUDIT):
        action = Action(effect.removeprefix(_AUDIT))
        extra = {"state": download.state.value} if action is Action.PURGED else {}
        runtime.audit.record(download.tenant, action, ACTOR, download.id, **extra)
    elif effect == NOTIFY:
        notify.download_finished(runtime, download)
    elif effect == EXPIRING_UNUSED:
        # Claimed while no one had fetched it, but a fetch may have come since (the API notes
        # the first one), in the moment before this sweep goes on or in the lease before the
        # next one does it: a warning that it expires unused would then be untrue. So the
        # record is read again, and the warning dropped if the download was fetched (or is
        # gone). A fetch after this read and before the event is recorded still gets it.
        current = runtime.downloads.get(download.id)
        if current is None or current.first_fetched_at:
            log.info(
                "download %s was fetched since its expiring-unused warning was due: not sent", download.id
            )
        else:
            notify.expiring_unused(runtime, download)
    elif effect == PURGE:
        runtime.downloads.delete(download.id, [download.state])
    else:
        raise ValueError(f"unknown follow-up work {effect!r} for download {download.id}")
