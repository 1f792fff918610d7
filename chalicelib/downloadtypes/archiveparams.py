"""The `zip` type's archive options as the API declares them: `format`, `manifest`, `on_missing`.

Their schema, their defaults filled into the params, the artifact's format, and which way a
Build takes them (`Options`); what they do to the archive is built by
chalicelib/downloadtypes/archiveoptions.py, which only a Build loads (docs/performance.md,
"Cold start").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalicelib.core.errors import Cancelled
from chalicelib.core.models import Download, Principal
from chalicelib.core.settings import Settings
from chalicelib.downloadtypes.base import ArtifactFormat, Check

if TYPE_CHECKING:
    from chalicelib.runtime import Runtime

FORMATS: dict[str, ArtifactFormat] = {
    "zip": ArtifactFormat(".zip", "application/zip"),
    "tar": ArtifactFormat(".tar", "application/x-tar"),
    "tar.gz": ArtifactFormat(".tar.gz", "application/gzip"),
}
SUMS_NAME = "SHA256SUMS"
MISSING_NAME = "MISSING.txt"

PARAMS_PROPERTIES: dict[str, Any] = {
    "format": {
        "enum": list(FORMATS),
        "default": "zip",
        "description": "zip, or POSIX pax tar (tar.gz: one gzip stream). The file's extension follows.",
    },
    "manifest": {
        "type": "boolean",
        "default": False,
        "description": f"Add {SUMS_NAME} at the root, in `sha256sum -c` format "
        "(each source is read once more to hash it).",
    },
    "on_missing": {
        "enum": ["fail", "skip"],
        "default": "fail",
        "description": "fail: a missing source fails the download (SourceMissing). skip: it is left "
        f"out and listed in the download's `skipped` and in {MISSING_NAME} in the archive.",
    },
}


@dataclass(frozen=True)
class Options:
    format: str = "zip"
    manifest: bool = False
    on_missing: str = "fail"

    @classmethod
    def of(cls, params: dict[str, Any]) -> Options:
        return cls(
            format=str(params.get("format", "zip")),
            manifest=bool(params.get("manifest", False)),
            on_missing=str(params.get("on_missing", "fail")),
        )

    @property
    def skips(self) -> bool:
        return self.on_missing == "skip"

    @property
    def reserved_names(self) -> tuple[str, ...]:
        """Root names the archive's own files take: a source with such a name gets ' (2)'."""
        return (SUMS_NAME,) * self.manifest + (MISSING_NAME,) * self.skips

    @property
    def streamed(self) -> bool:
        """A tar or tar.gz: one stream across Lambda runs (archiveoptions.TarRuns)."""
        return self.format != "zip"

    @property
    def surveyed(self) -> bool:
        """A zip whose sources are looked at first, across Lambda runs (archiveoptions.ZipSurvey)."""
        return self.format == "zip" and (self.manifest or self.skips)

    def to_params(self) -> dict[str, Any]:
        return {"format": self.format, "manifest": self.manifest, "on_missing": self.on_missing}


def checked(check: Check) -> Check:
    """`check` with the options' defaults filled into the normalised params."""

    def check_with_options(
        params: dict[str, Any], principal: Principal, settings: Settings
    ) -> dict[str, Any]:
        return {**check(params, principal, settings), **Options.of(params).to_params()}

    return check_with_options


def artifact_format(params: dict[str, Any]) -> ArtifactFormat:
    return FORMATS[Options.of(params).format]


def segmentable(params: dict[str, Any]) -> bool:
    """Only a plain zip is joined from parallel segments."""
    return Options.of(params) == Options()


def prepare_skip(skipped: list[str], runtime: Runtime, download: Download) -> None:
    """Prepare: keep the keys that did not exist in the download (a retried Prepare rewrites them)."""
    if skipped != download.skipped and not runtime.downloads.record_skipped(download.id, skipped):
        raise Cancelled("the download was cancelled while it was being prepared")
