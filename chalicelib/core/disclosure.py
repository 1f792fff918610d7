"""What a caller may be told about a failure.

A domain error (a class of chalicelib/core/errors.py) is written for callers: its code and message
are shown as they are. Anything else (a botocore ClientError, a Lambda runtime error, a bug)
may carry ARNs, the account id or a service's HTML error page: callers get INTERNAL_ERROR and
a generic message with a reference, and the detail goes to the log beside that reference.
"""

from __future__ import annotations

import logging
import secrets

from chalicelib.core import errors
from chalicelib.core.models import ErrorInfo

log = logging.getLogger(__name__)
INTERNAL_ERROR = "InternalError"


def is_domain(code: str) -> bool:
    """Whether `code` names a domain error, whose message is meant for callers."""
    found = getattr(errors, code, None) if code.isidentifier() else None
    return isinstance(found, type) and issubclass(found, errors.SatchelError)


def shown_error(error: ErrorInfo, download_id: str) -> ErrorInfo:
    """The error a FAILED download shows: itself if a domain error's, else a generic one."""
    if is_domain(error.code):
        return error
    log.error("download %s failed: %s: %s", download_id, error.code, error.message)
    return ErrorInfo(
        INTERNAL_ERROR, f"the download failed because of an internal error; reference {download_id}"
    )


def new_reference() -> str:
    """A reference for a failure that has no download to name: quoted to the caller, logged."""
    return secrets.token_hex(8)
