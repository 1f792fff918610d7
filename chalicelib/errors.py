"""Domain errors.

One class per failure, and its name is its identity everywhere: the HTTP body's `Code`,
the ASL error name a Catch matches, and the `error.code` a user sees on a FAILED download.
`status` is the HTTP status the API answers with; it means nothing inside the workflow.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SatchelError(Exception):
    status: ClassVar[int] = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    @property
    def code(self) -> str:
        return type(self).__name__

    def body(self) -> dict[str, Any]:
        return {"Code": self.code, "Message": self.message, **self.details}


class ConfigurationError(SatchelError):
    status = 500


# 400: the request cannot be understood.
class MalformedRequest(SatchelError):
    status = 400


class EmptyKeys(SatchelError):
    status = 400


class DuplicateKeys(SatchelError):
    status = 400


class InvalidCursor(SatchelError):
    status = 400


class InvalidQuery(SatchelError):
    status = 400


# 403: the caller may not do this.
class Forbidden(SatchelError):
    status = 403


class SourceNotAllowed(SatchelError):
    status = 403


# 404 / 409 / 410: the download is not there, not ready, or gone.
class DownloadNotFound(SatchelError):
    status = 404


class DownloadNotReady(SatchelError):
    status = 409


class DownloadExpired(SatchelError):
    status = 410


# 422: understood, but the parameters are not acceptable.
class UnknownType(SatchelError):
    status = 422


class InvalidParams(SatchelError):
    status = 422


# 503: a dependency refused; the caller may retry.
class StartFailed(SatchelError):
    status = 503


# Workflow failures: these end a download FAILED with `error.code` = the class name.
class SourceMissing(SatchelError):
    status = 422


class MaxContentSizeExceeded(SatchelError):
    status = 413


class TooManyFiles(SatchelError):
    status = 413


class NothingToDownload(SatchelError):
    status = 422


class Cancelled(SatchelError):
    """Raised inside a step when the download was cancelled while it ran."""

    status = 409


class TransientError(SatchelError):
    """A dependency failed in a way worth retrying; the state machine's Retry matches it."""

    status = 503


class SourceChanged(SatchelError):
    status = 409
