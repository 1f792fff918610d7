"""The artifact bucket's layout (chalicelib/s3/layout.py): every key of a download lies under
its two prefixes and keys never collide (tests/deploy/test_layouts.py holds the template's
lifecycle rules and the policies to it)."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

from chalicelib.s3 import layout

ROOT = Path(__file__).resolve().parents[3]


IDS = ["0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcde", "ffff0000"]


PER_DOWNLOAD: list[Callable[[str], str]] = [
    layout.artifact_key,
    layout.manifest_key,
    layout.checks_key,
    lambda download_id: layout.assemble_run_key(download_id, 1, "state.json"),
    lambda download_id: layout.run_key(download_id, None, 1, "state.json"),
]


PER_SEGMENT: list[Callable[[str, int], str]] = [
    layout.segment_manifest_key,
    layout.segment_object_key,
    layout.segment_directory_key,
    layout.segment_checks_key,
]


def _every_key(download_id: str, segments: int = 3) -> list[str]:
    keys = [key(download_id) for key in PER_DOWNLOAD]
    return keys + [key(download_id, index) for index in range(segments) for key in PER_SEGMENT]


def test_every_key_of_a_download_names_its_owner() -> None:
    for download_id in IDS:
        for key in _every_key(download_id):
            assert layout.owner_of(key) == download_id, key


def test_temporary_keys_lie_under_the_downloads_temporary_prefix_and_the_artifact_does_not() -> None:
    for download_id in IDS:
        prefix = layout.temporary_prefix(download_id)
        assert prefix.startswith(layout.TEMPORARY_PREFIX)
        assert prefix.endswith("/")
        artifact, *temporary = _every_key(download_id)
        assert all(key.startswith(prefix) for key in temporary)
        assert artifact.startswith(layout.ARTIFACTS_PREFIX)
        assert not artifact.startswith(layout.TEMPORARY_PREFIX)


def test_one_downloads_temporary_prefix_never_holds_anothers_keys() -> None:
    # IDS[1] is IDS[0] less its last digit: a listing by one prefix must not find the other's.
    for owner in IDS:
        for other in IDS:
            if other != owner:
                prefix = layout.temporary_prefix(owner)
                assert not any(key.startswith(prefix) for key in _every_key(other)), (owner, other)


def test_keys_never_collide() -> None:
    keys = [key for download_id in IDS for key in _every_key(download_id, segments=12)]
    assert len(set(keys)) == len(keys)


def test_the_two_prefixes_are_distinct_and_neither_starts_the_other() -> None:
    assert layout.ARTIFACTS_PREFIX != layout.TEMPORARY_PREFIX
    assert not layout.ARTIFACTS_PREFIX.startswith(layout.TEMPORARY_PREFIX)
    assert not layout.TEMPORARY_PREFIX.startswith(layout.ARTIFACTS_PREFIX)


def test_segment_keys_list_in_segment_order() -> None:
    keys = [layout.segment_object_key(IDS[0], index) for index in range(120)]
    assert sorted(keys) == keys


@pytest.mark.parametrize(
    "key", ["", "artifacts/", "tmp/", "tmp//x", "sources/acme/a.txt", "artifact/x", "tmpx/y"]
)
def test_keys_outside_the_layout_have_no_owner(key: str) -> None:
    assert layout.owner_of(key) is None


@pytest.mark.parametrize(
    "path",
    [
        path
        for path in sorted((ROOT / "chalicelib").rglob("*.py"))
        if path != ROOT / "chalicelib/s3/layout.py"
    ],
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_no_other_module_builds_a_key_of_the_bucket(path: Path) -> None:
    prefixes = (layout.ARTIFACTS_PREFIX, layout.TEMPORARY_PREFIX)
    spelled = [
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(prefixes)
    ]
    assert spelled == []
