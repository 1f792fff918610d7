"""Who may see or act on a download, and for how long its artifact may be handed out.

Another tenant's download does not exist (404 `DownloadNotFound`), nor does an id that is
not one; another user's is forbidden (403) unless the caller is the tenant's admin.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime

from chalicelib.core import clock
from chalicelib.core.errors import DownloadNotFound, Forbidden
from chalicelib.core.models import Download, Principal
from chalicelib.runtime import Runtime

log = logging.getLogger(__name__)
_ID = re.compile(r"^[0-9a-f]{32}$")


def require(runtime: Runtime, principal: Principal, download_id: str) -> Download:
    """The download, if the principal may see and act on it."""
    download = runtime.downloads.get(download_id) if _ID.match(download_id) else None
    if download is None or download.tenant != principal.tenant:
        raise DownloadNotFound(f"no download {download_id}")
    if download.user_id != principal.user_id and not principal.is_admin:
        raise Forbidden("this download belongs to another user")
    return download


def seconds_left(download: Download, now: datetime) -> int:
    """Whole seconds until the artifact expires. Presigned URLs live at most this long, so
    none outlives the artifact, which cleanup may delete the moment expires_at has passed."""
    if not download.expires_at:
        return 0
    return int((clock.parse(download.expires_at) - now).total_seconds())


def handed_out(runtime: Runtime, download: Download, now: datetime) -> None:
    """Note that the download's file or URL was handed out (so `download.expiring_unused`
    is not sent): once, best-effort; a failure is logged, never failing the request."""
    if download.first_fetched_at:
        return  # noted already: no write
    try:
        runtime.downloads.record_fetched(download.id, now)
    except Exception:
        log.exception("could not note that download %s was fetched", download.id)
