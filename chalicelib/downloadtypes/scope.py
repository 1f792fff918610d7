"""Where a principal may read sources from: the zip and listing types share it."""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib.core.errors import SourceNotAllowed
from chalicelib.core.models import Principal
from chalicelib.core.names import safe_path


@dataclass(frozen=True)
class Scope:
    """Where a principal may read sources from: `s3://<bucket>/<tenant>/...`."""

    bucket: str
    prefix: str

    @classmethod
    def of(cls, principal: Principal, source_bucket: str) -> Scope:
        return cls(source_bucket, f"{principal.tenant}/")

    def resolve(self, raw: str) -> str:
        """The object key for `raw`, or SourceNotAllowed naming it."""
        key = raw
        if raw.startswith("s3://"):
            bucket, _, key = raw[len("s3://") :].partition("/")
            if bucket != self.bucket:
                raise SourceNotAllowed(f"source is outside your allowed scope: {raw}", key=raw)
        if not key.startswith(self.prefix) or ".." in key.split("/"):
            raise SourceNotAllowed(f"source is outside your allowed scope: {raw}", key=raw)
        return key

    def entry_name(self, key: str) -> str:
        return safe_path(key[len(self.prefix) :])
