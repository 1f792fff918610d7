"""The manual (docs/, built by `make docs`) cannot drift from the code: its code layout
names every module, its examples are files that the tests run, and the README points
only at what exists. (The state machine diagram and the configuration table are checked
in tests/deploy/test_packaging.py.)"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
README = ROOT / "README.md"
_INCLUDE = re.compile(r'^--8<-- "([^"]+)"$', flags=re.MULTILINE)


def _examples() -> list[Path]:
    return sorted(path for path in EXAMPLES.iterdir() if path.suffix in {".sh", ".py"})


def _pages() -> dict[str, str]:
    return {page.name: page.read_text(encoding="utf-8") for page in sorted(DOCS.glob("*.md"))}


def test_the_code_layout_lists_every_chalicelib_module_and_nothing_else() -> None:
    page = (DOCS / "code-layout.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`(chalicelib/[\w/]+\.py)`", page))
    on_disk = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "chalicelib").rglob("*.py")
        if path.name != "__init__.py"
    }
    missing = sorted(on_disk - listed)
    assert not missing, f"docs/code-layout.md does not list {missing}: add a row for each"
    gone = sorted(listed - on_disk)
    assert not gone, f"docs/code-layout.md lists modules that do not exist: {gone}"
    for path in re.findall(r"^\| `([\w./-]+/)`", page, flags=re.MULTILINE):
        assert (ROOT / path).is_dir(), f"docs/code-layout.md lists {path}, which does not exist"


def test_every_included_example_exists() -> None:
    for name, text in _pages().items():
        for path in _INCLUDE.findall(text):
            assert path.startswith("docs/examples/"), f"{name} includes {path}, not an example file"
            assert (ROOT / path).is_file(), f"{name} includes {path}, which does not exist"


def test_every_example_is_in_the_manual_and_run_by_a_test() -> None:
    included = {path for text in _pages().values() for path in _INCLUDE.findall(text)}
    tests = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "tests").rglob("*.py"))
    scripts = {path.name: path.read_text(encoding="utf-8") for path in _examples()}
    for name in scripts:
        assert f"docs/examples/{name}" in included, f"docs/examples/{name} is in no page of the manual"
        # Run by a test by name, or sourced or run by an example that is.
        users = [other for other, body in scripts.items() if other != name and name in body]
        assert f'"{name}"' in tests or any(f'"{user}"' in tests for user in users), (
            f"no test runs docs/examples/{name}"
        )


def test_no_example_names_the_local_port() -> None:
    """Examples read the API's address from .satchel-local.json: `make run PORT=` moves it."""
    for path in _examples():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r":(8000|5000)\b", text), f"{path.name} names a port"


def test_no_test_reads_a_code_block_out_of_the_readme() -> None:
    # This file reads the README too, for its length and links only.
    readers = sorted(
        path.name
        for path in (ROOT / "tests").rglob("*.py")
        if path.name != Path(__file__).name and "README.md" in path.read_text(encoding="utf-8")
    )
    assert readers == [], f"examples belong in docs/examples/, not in the README: {readers}"


def test_the_readme_is_short_and_its_links_exist() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150, "the README fits on a few screens: move detail into docs/"
    assert "make run" in text
    assert "make test" in text
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README.md links to {target}, which does not exist"
    for command in re.findall(r"`(?:bash|\.venv/bin/python) (docs/examples/[\w.-]+)`", text):
        assert (ROOT / command).is_file(), f"README.md runs {command}, which does not exist"


def _load(path: Path) -> ModuleType:
    """The example as a module, compiled from its source: no __pycache__ left in docs/."""
    module = ModuleType(path.stem)
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), module.__dict__)
    return module


def _signed(secret: bytes, body: bytes, timestamp: int) -> dict[str, str]:
    signature = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Satchel-Timestamp": str(timestamp), "Satchel-Signature": f"v1={signature}"}


def test_the_manuals_signature_check_accepts_fresh_signed_callbacks_only() -> None:
    verify = _load(EXAMPLES / "verify_signature.py").verify
    secret, body, now = b"the webhook secret", b'{"id": "3f0c", "state": "DONE"}', int(time.time())
    assert verify(secret, _signed(secret, body, now), body) is True
    assert verify(secret, _signed(secret, body, now), body + b" ") is False  # tampered body
    assert verify(b"another secret", _signed(secret, body, now), body) is False
    assert verify(secret, _signed(secret, body, now - 600), body) is False  # an old delivery replayed
