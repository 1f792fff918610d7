"""Running the `satchel` command as its users do, for the end-to-end tests of the command line
(tests/e2e/test_cli_e2e.py) and of `satchel get` (tests/e2e/test_link_get_e2e.py)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

RUN_TIMEOUT = 60.0
GROW_TIMEOUT = 20.0
# Nothing from the developer's shell may choose the API, the key or the terminal's looks.
_UNWANTED = ("SATCHEL_API_URL", "SATCHEL_API_KEY", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "FORCE_COLOR")


def environment(**extra: str) -> dict[str, str]:
    environ = {name: value for name, value in os.environ.items() if name not in _UNWANTED}
    return {**environ, "COLUMNS": "120", "TERM": "xterm", **extra}


def as_at_a_terminal() -> None:
    """For a command a test interrupts as Ctrl-C would (SIGINT): Ctrl-C's default meaning in
    the child. A test run started in the background of a non-interactive shell (CI's, say)
    inherits SIGINT ignored, and so would every command it starts: one that Python then
    never turns into KeyboardInterrupt. (A `preexec_fn`: it runs in the child before exec.)"""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(command: list[str], workdir: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=workdir,
        env=environment(**extra),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def grow(part: Path, beyond: int) -> int:
    """Wait until `part` holds more than `beyond` bytes (a transfer under way); its size."""
    deadline = time.monotonic() + GROW_TIMEOUT
    while not (part.exists() and part.stat().st_size > beyond):
        assert time.monotonic() < deadline, f"{part} did not grow beyond {beyond} bytes"
        time.sleep(0.01)
    return part.stat().st_size


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
