"""The manual (docs/, built by `make docs`) cannot drift from the code: its code layout
names every module, its examples are files that the tests run, and the README points
only at what exists. (The state machine diagram and the configuration table are checked
in tests/deploy/test_packaging.py.)"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
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


SECRET = "whsec_" + "dGhlLW1hbnVhbHMtd2ViaG9vay1zZWNyZXQtMDEyMzQ1"


def _signed(secret: str, event_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    """Signed as Standard Webhooks says, with this test's own code (not the example's library)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{event_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
    }


def test_the_manuals_signature_check_accepts_fresh_signed_webhooks_only() -> None:
    verify = _load(EXAMPLES / "verify_signature.py").verify
    body, now = b'{"type":"download.completed","timestamp":"t","data":{}}', int(time.time())
    headers = _signed(SECRET, "d1.completed", body, now)
    assert verify(SECRET, headers, body) == json.loads(body)
    assert verify(SECRET, headers, body + b" ") is None  # tampered body
    assert verify(SECRET, {**headers, "webhook-id": "d2.completed"}, body) is None  # the id is signed
    other = "whsec_" + base64.b64encode(b"another secret, another tenant").decode()
    assert verify(other, headers, body) is None
    assert verify(SECRET, _signed(SECRET, "d1.completed", body, now - 600), body) is None  # replayed
    # During a rotation two signatures come in one header: either secret verifies.
    rotated = _signed(other, "d1.completed", body, now)["webhook-signature"]
    both = {**headers, "webhook-signature": f"{rotated} {headers['webhook-signature']}"}
    assert verify(SECRET, both, body) == verify(other, both, body) == json.loads(body)
