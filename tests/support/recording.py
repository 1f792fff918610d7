"""An S3 client that remembers the parts of the multipart uploads made through it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_s3.client import S3Client


class Recording:
    """A moto client that remembers each part: ("write", size) or ("copy", first, last)."""

    def __init__(self, client: S3Client) -> None:
        self._client = client
        self.parts: list[tuple[str, int, int]] = []

    def upload_part(self, **kwargs: Any) -> Any:
        self.parts.append(("write", len(kwargs["Body"]), 0))
        return self._client.upload_part(**kwargs)

    def upload_part_copy(self, **kwargs: Any) -> Any:
        first, last = kwargs["CopySourceRange"].removeprefix("bytes=").split("-")
        self.parts.append(("copy", int(first), int(last)))
        return self._client.upload_part_copy(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    @property
    def typed(self) -> S3Client:
        """This wrapper where the code expects the boto3 client (it forwards every other call)."""
        return cast("S3Client", self)
