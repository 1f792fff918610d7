"""Domain errors.

One class per failure, and its name is its identity everywhere: the HTTP body's `Code`,
the ASL error name a Catch matches, and the `error.code` a user sees on a FAILED download.
`status` is the HTTP status the API answers with; it means nothing inside the workflow.

An answer's body is an RFC 9457 problem: `Code` and `Message` as ever, beside `type` (the
code's URI, PROBLEM_TYPES + Code, each listed in docs/errors.md), `title` (the code in words),
`status` and `detail` (the message). API Gateway's own answers (deploy/template.yaml) and the
local server's have the same shape.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, ClassVar, ParamSpec, TypeVar

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as EndpointUnreachable

# A problem's `type` is this plus its Code: an identifier first (RFC 9457 3.1.1), and the
# address of the code's entry in the manual (docs/errors.md).
PROBLEM_TYPES = "https://satchel.dev/problems/"
_WORD = re.compile(r"[A-Z][a-z0-9]*|[a-z0-9]+")


def problem_type(code: str) -> str:
    return PROBLEM_TYPES + code


def problem_title(code: str) -> str:
    """The code in words, the same for every occurrence: "DownloadNotFound" -> "Download not found"."""
    words = _WORD.findall(code)
    return " ".join([words[0], *(word.lower() for word in words[1:])]) if words else code


def problem(code: str, status: int, message: str, **details: Any) -> dict[str, Any]:
    """An RFC 9457 problem body that keeps Satchel's `Code` and `Message`; details beside them."""
    return {
        "type": problem_type(code),
        "title": problem_title(code),
        "status": status,
        "detail": message,
        "Code": code,
        "Message": message,
        **details,
    }


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
        return problem(self.code, self.status, self.message, **self.details)

    def headers(self) -> dict[str, str]:
        return {}


class _RetryLater(SatchelError):
    """A refusal that passes with time: answers carry Retry-After."""

    def __init__(self, message: str, retry_after: int, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


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


class InvalidIdempotencyKey(SatchelError):
    status = 400


# 403: the caller may not do this.
class Forbidden(SatchelError):
    status = 403


class SourceNotAllowed(SatchelError):
    status = 403


class UnmappedPrincipal(SatchelError):
    """A caller AWS (IAM) or the identity provider vouched for, but whom no mapping names."""

    status = 403


# 404 / 409 / 410 / 425: the download or link is not there, not ready, or gone.
class DownloadNotFound(SatchelError):
    status = 404


class LinkNotFound(SatchelError):
    status = 404


class KeyNotFound(SatchelError):
    """No API key with this id in the caller's tenant (another tenant's keys do not exist)."""

    status = 404


class DownloadNotReady(SatchelError):
    status = 409


class DownloadUnavailable(SatchelError):
    """The download ended without an artifact (FAILED, CANCELLED) or lost it (EXPIRED)."""

    status = 409


class IdempotencyKeyReused(SatchelError):
    """The key was used with another body (the IETF Idempotency-Key draft: 422)."""

    status = 422


class IdempotencyKeyInUse(_RetryLater):
    """The first request with this key is still being processed (the draft: 409)."""

    status = 409

    def __init__(self, message: str, retry_after: int = 1, **details: Any) -> None:
        super().__init__(message, retry_after, **details)


class WebhookSecretMissing(SatchelError):
    """A callback was asked for, but the tenant has no signing secret to sign it with."""

    status = 409


class WebhookSecretConflict(SatchelError):
    """Two rotations of one tenant's secret raced: the other one won."""

    status = 409


class WebhookSecretNotFound(SatchelError):
    status = 404


class DownloadExpired(SatchelError):
    status = 410


class LinkGone(SatchelError):
    status = 410


class LinkNotReady(_RetryLater):
    status = 425


# 413 / 429: too much at once.
class RequestTooLarge(SatchelError):
    status = 413


class TooManyKeys(SatchelError):
    status = 413


class QuotaExceeded(_RetryLater):
    status = 429


# 422: understood, but the parameters are not acceptable.
class UnknownType(SatchelError):
    status = 422


class InvalidParams(SatchelError):
    status = 422


class InvalidCallbackUrl(SatchelError):
    status = 422


class UnknownPrincipal(SatchelError):
    """An event names a tenant and user that hold no key and are no service principal."""

    status = 403


class SenderNotAllowed(SatchelError):
    """A trigger names a principal its sender may not act for: an SQS sender not bound to that
    tenant or user (SATCHEL_QUEUE_SENDERS), a request event whose source is another tenant's,
    a manifest whose path is another user's or names no user."""

    status = 403


# 503: a dependency refused; the caller may retry.
class StartFailed(_RetryLater):
    status = 503

    def __init__(self, message: str, retry_after: int = 5, **details: Any) -> None:
        super().__init__(message, retry_after, **details)


# Workflow failures: these end a download FAILED with `error.code` = the class name.
class SourceMissing(SatchelError):
    status = 422


class MaxContentSizeExceeded(SatchelError):
    status = 413


class TooManyFiles(SatchelError):
    status = 413


class TooManyParts(SatchelError):
    """The plan would need more than S3's 10,000 parts in one multipart upload."""

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


class WebhookSecretUnreadable(SatchelError):
    """A stored secret that KMS will not decrypt for its tenant: tampered with, moved from
    another tenant's record, or encrypted under another key. Never signed with."""

    status = 500


class ChecksumMismatch(SatchelError):
    """A member's bytes in the built archive do not have the CRC-32 its headers announce.

    Never shipped: the download ends FAILED and the artifact is removed."""

    status = 500


# Error codes AWS answers when a request may succeed if sent again later: throttling (each
# service names it its own way) and DynamoDB transactions that lost a race. 5xx answers too.
_THROTTLED = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "SlowDown",
        "RequestTimeout",
        "TransactionInProgressException",
        "TransactionConflictException",
    }
)
_TRANSIENT_CANCELLATIONS = frozenset(
    {"ThrottlingError", "ProvisionedThroughputExceeded", "TransactionConflict"}
)


def is_transient(error: BaseException) -> bool:
    """True for an AWS failure worth retrying: throttled, 5xx, the service not reached, or
    the step's own upload gone."""
    if isinstance(error, EndpointUnreachable | HTTPClientError):
        return True
    if not isinstance(error, ClientError):
        return False
    code = error.response.get("Error", {}).get("Code", "")
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code == "TransactionCanceledException":
        reasons = {reason.get("Code") for reason in error.response.get("CancellationReasons", [])}
        return bool(reasons & _TRANSIENT_CANCELLATIONS)
    # A multipart upload that vanished mid-step (a CompleteMultipartUpload whose answer was
    # lost and was sent again, or an abort racing the step): the step starts over, as its
    # Retry makes it, with a new upload.
    return code in _THROTTLED or code == "NoSuchUpload" or status >= 500


def transient_error(error: BaseException) -> TransientError:
    """The TransientError for an AWS failure; its message names no endpoint, ARN or account."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        return TransientError(f"an AWS service was busy or failing ({error.operation_name}: {code})")
    return TransientError("an AWS service could not be reached in time")


_P = ParamSpec("_P")
_R = TypeVar("_R")


def retried_when_transient(step: Callable[_P, _R]) -> Callable[_P, _R]:
    """A workflow step's boundary: AWS throttling, 5xx and lost connections that outlast
    botocore's own retries leave the step as TransientError, the error every Task's Retry in
    the state machine matches. Anything else (domain errors included) passes unchanged."""

    @functools.wraps(step)
    def boundary(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return step(*args, **kwargs)
        except (ClientError, EndpointUnreachable, HTTPClientError) as error:
            if not is_transient(error):
                raise
            raise transient_error(error) from error

    return boundary
