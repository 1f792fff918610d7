"""What can go wrong, one class for each thing a caller would handle differently."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import requests

from satchel_client.models import CANCELLED, EXPIRED, Download

# S3 (the presigned URLs) answers errors as XML: <Error><Code>AccessDenied</Code>...
_XML_CODE = re.compile(r"<Code>([^<]*)</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")


class SatchelError(Exception):
    """Every error this client raises."""


class ApiError(SatchelError):
    """The API (or the file store) answered with an error status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        body: dict[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}" if message else f"{status} {code}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body or {}
        self.retry_after = retry_after
        # RFC 9457: the code's URI and its name in words (docs/errors.md), when the answer has them.
        self.type: str | None = self.body.get("type") if isinstance(self.body.get("type"), str) else None
        self.title: str | None = self.body.get("title") if isinstance(self.body.get("title"), str) else None

    @classmethod
    def from_response(cls, response: requests.Response) -> ApiError:
        code, message, body = _parse_error_body(response)
        return cls(response.status_code, code, message, body, retry_after(response))

    @property
    def is_refusal(self) -> bool:
        """4xx: the request itself was refused; repeating it unchanged will not help."""
        return 400 <= self.status < 500


class DownloadFailed(SatchelError):
    """The download finished without a file: FAILED, CANCELLED or EXPIRED."""

    def __init__(self, download: Download) -> None:
        self.download = download
        self.state = download.state
        self.code = download.error.code if download.error else None
        super().__init__(_describe_ending(download))


class WaitTimeout(SatchelError):
    """`wait()` gave up; the download goes on."""

    def __init__(self, download: Download, timeout: float) -> None:
        self.download = download
        self.timeout = timeout
        super().__init__(f"download {download.id} is still {download.state} after {timeout:g} s")


class NetworkError(SatchelError):
    """No answer: the connection failed or timed out (after the client's retries)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach {url}: {reason}")

    @classmethod
    def from_exception(cls, url: str, error: Exception) -> NetworkError:
        return cls(url, _reason(error))


class VerificationError(SatchelError):
    """The fetched bytes are not the download's file; they have been removed."""

    def __init__(self, path: Path, expected: str, actual: str, size: int, expected_size: int) -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{path} does not match the download's sha256 "
            f"(expected {expected} for {expected_size} bytes, got {actual} for {size} bytes)"
        )


def _describe_ending(download: Download) -> str:
    if download.state == CANCELLED:
        return f"download {download.id} ended CANCELLED"
    if download.state == EXPIRED:
        return f"download {download.id} ended EXPIRED: its file has been deleted"
    if download.error is not None:
        error = download.error
        return f"download {download.id} ended {download.state}: {error.code}: {error.message}"
    return f"download {download.id} ended {download.state}"


def _parse_error_body(response: requests.Response) -> tuple[str, str, dict[str, Any]]:
    try:
        data = response.json()
    except (ValueError, json.JSONDecodeError):
        data = None
    if isinstance(data, dict):
        code = data.get("Code") or data.get("code") or response.reason or "Error"
        message = data.get("Message") or data.get("message") or ""
        return str(code), str(message), data
    text = response.text or ""
    xml_code, xml_message = _XML_CODE.search(text), _XML_MESSAGE.search(text)
    if xml_code:
        return xml_code.group(1), xml_message.group(1) if xml_message else "", {}
    return response.reason or "Error", text.strip()[:200], {}


def retry_after(response: requests.Response) -> int | None:
    """The answer's Retry-After in seconds (the delay form; an HTTP-date gives None)."""
    value = response.headers.get("Retry-After", "").strip()
    return int(value) if value.isdigit() else None


def _reason(error: BaseException) -> str:
    """The innermost cause ("Connection refused", "Read timed out"), not urllib3's whole chain."""
    text = str(error)
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if errno:
        return errno.group(1).strip()
    if isinstance(error, requests.Timeout) or "timed out" in text:
        return "timed out"
    return text or type(error).__name__
