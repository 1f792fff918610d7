"""The artifact bucket's layout: every key Satchel writes there.

    artifacts/<id>                                   the finished file (s3/artifacts.py)
    tmp/<id>/manifest.jsonl                          the entries Build reads (s3/manifest.py)
    tmp/<id>/checks.jsonl                            CRC-32s Digest checks (archive/integrity.py)
    tmp/<id>/segments/<index>/manifest.jsonl         one segment's entries (workflow/segments.py)
    tmp/<id>/segments/<index>/members.zip            its members, as a zip's local entries
    tmp/<id>/segments/<index>/directory.jsonl        their central directory records
    tmp/<id>/segments/<index>/checks.jsonl           their CRC-32s still to check
    tmp/<id>/segments.json                           the segments' numbers: the Map's ItemReader
    tmp/<id>/runs/<run>/...                          a Build handed on between Lambda runs
    tmp/<id>/survey/<part>.jsonl                     a survey done across Build runs (archiveoptions.py)
    tmp/<id>/survey/present.jsonl                    found there, what a zip's runs build (steps.py)
    tmp/<id>/segments/<index>/runs/<run>/...         a segment's, likewise (workflow/runs.py)
    tmp/<id>/digest/<run>/state.json                 where a Digest run handed on (workflow/digest.py)
    tmp/<id>/assemble/<run>/...                      where an Assemble run handed on (workflow/segments.py)

Everything of a download lies under `artifacts/<id>` or `tmp/<id>/` (`owner_of`), so removing
a download (s3/artifacts.py) and the sweep's leftovers (triggers/cleanup.py) find it all, and
the bucket's lifecycle rules (deploy/template.yaml) and the functions' policies
(.chalice/policies/) name these two prefixes.
"""

from __future__ import annotations

ARTIFACTS_PREFIX = "artifacts/"
TEMPORARY_PREFIX = "tmp/"
# Segments are numbered with this many digits, so the keys of one download list in order.
_SEGMENT_DIGITS = 5
_RUN_DIGITS = 5


def artifact_key(download_id: str) -> str:
    return f"{ARTIFACTS_PREFIX}{download_id}"


def temporary_prefix(download_id: str) -> str:
    return f"{TEMPORARY_PREFIX}{download_id}/"


def owner_of(key: str) -> str | None:
    """The download an object or upload of the artifacts bucket belongs to, if any."""
    for prefix in (ARTIFACTS_PREFIX, TEMPORARY_PREFIX):
        if key.startswith(prefix):
            return key[len(prefix) :].split("/", 1)[0] or None
    return None


def manifest_key(download_id: str) -> str:
    return f"{temporary_prefix(download_id)}manifest.jsonl"


def checks_key(download_id: str) -> str:
    return f"{temporary_prefix(download_id)}checks.jsonl"


def survey_key(download_id: str, part: int) -> str:
    """One run's share of a survey of the sources (`manifest`, `on_missing: skip`), in order."""
    return f"{temporary_prefix(download_id)}survey/{part:0{_RUN_DIGITS}d}.jsonl"


def surveyed_manifest_key(download_id: str) -> str:
    """The entries a survey found still there: what a surveyed zip's runs build."""
    return f"{temporary_prefix(download_id)}survey/present.jsonl"


def segment_prefix(download_id: str, index: int) -> str:
    return f"{temporary_prefix(download_id)}segments/{index:0{_SEGMENT_DIGITS}d}/"


def segment_manifest_key(download_id: str, index: int) -> str:
    return f"{segment_prefix(download_id, index)}manifest.jsonl"


def segment_object_key(download_id: str, index: int) -> str:
    return f"{segment_prefix(download_id, index)}members.zip"


def segment_directory_key(download_id: str, index: int) -> str:
    return f"{segment_prefix(download_id, index)}directory.jsonl"


def segment_checks_key(download_id: str, index: int) -> str:
    return f"{segment_prefix(download_id, index)}checks.jsonl"


def segment_list_key(download_id: str) -> str:
    return f"{temporary_prefix(download_id)}segments.json"


def runs_prefix(download_id: str, segment: int | None = None) -> str:
    """Where a build that hands on between Lambda runs keeps what the next run needs."""
    base = temporary_prefix(download_id) if segment is None else segment_prefix(download_id, segment)
    return f"{base}runs/"


def run_key(download_id: str, segment: int | None, run: int, name: str) -> str:
    return f"{runs_prefix(download_id, segment)}{run:0{_RUN_DIGITS}d}/{name}"


def digest_state_key(download_id: str, run: int) -> str:
    """Where Digest's run `run` finds what the run before it saved (workflow/digest.py)."""
    return f"{temporary_prefix(download_id)}digest/{run:0{_RUN_DIGITS}d}/state.json"


def assemble_run_key(download_id: str, run: int, name: str) -> str:
    """What Assemble's run `run` finds of what the run before it saved (workflow/segments.py)."""
    return f"{temporary_prefix(download_id)}assemble/{run:0{_RUN_DIGITS}d}/{name}"
