"""A Python client and the `satchel` command for the Satchel download API.

from satchel_client import SatchelClient

with SatchelClient("http://127.0.0.1:8000", api_key) as satchel:
    download = satchel.create_zip(["acme/reports/2024/q1.csv"], prefixes=["acme/photos/"])
    satchel.wait(download.id)
    satchel.fetch(download.id, "reports.zip")   # resumable, sha256-verified
"""

from satchel_client.auth import BearerAuth, SigV4Auth
from satchel_client.client import Backoff, SatchelClient
from satchel_client.errors import (
    ApiError,
    DownloadFailed,
    NetworkError,
    SatchelError,
    VerificationError,
    WaitTimeout,
)
from satchel_client.models import (
    Artifact,
    Download,
    DownloadType,
    Failure,
    FetchResult,
    FileUrl,
    Link,
    Page,
    Progress,
)
from satchel_client.transfer import FetchObserver

__all__ = [
    "ApiError",
    "Artifact",
    "Backoff",
    "BearerAuth",
    "Download",
    "DownloadFailed",
    "DownloadType",
    "Failure",
    "FetchObserver",
    "FetchResult",
    "FileUrl",
    "Link",
    "NetworkError",
    "Page",
    "Progress",
    "SatchelClient",
    "SatchelError",
    "SigV4Auth",
    "VerificationError",
    "WaitTimeout",
]
