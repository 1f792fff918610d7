"""Which API the command calls, and with whose key.

In order: `--as NAME` (a user of the local stack, from the `.satchel-local.json` that
`make run` writes), else `--api-url`/`--api-key`, else `SATCHEL_API_URL`/`SATCHEL_API_KEY`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_FILE_NAME = ".satchel-local.json"
ENV_API_URL = "SATCHEL_API_URL"
ENV_API_KEY = "SATCHEL_API_KEY"


class UsageError(Exception):
    """The command cannot run as given; the message says what to change."""


@dataclass(frozen=True)
class Connection:
    api_url: str
    api_key: str


def resolve(
    *,
    api_url: str | None,
    api_key: str | None,
    as_user: str | None,
    environ: Mapping[str, str],
    cwd: Path,
) -> Connection:
    if as_user is not None:
        if api_key:
            raise UsageError("--as and --api-key both say whose key to use: give only one of them")
        return local_user(as_user, cwd, api_url)
    url = api_url or environ.get(ENV_API_URL)
    key = api_key or environ.get(ENV_API_KEY)
    if url and key:
        return Connection(url, key)
    raise UsageError(_what_is_missing(url, key, find_state_file(cwd)))


def find_state_file(start: Path) -> Path | None:
    """The local stack's state file in `start` or above (it is written at the repository root)."""
    for directory in (start, *start.parents):
        candidate = directory / STATE_FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def local_user(name: str, cwd: Path, api_url: str | None = None) -> Connection:
    path = find_state_file(cwd)
    if path is None:
        raise UsageError(
            f"--as {name} needs the local stack: start it with `make run` in the repository, "
            f"and run satchel inside the repository (no {STATE_FILE_NAME} in {cwd} or above)"
        )
    state = _read_state(path)
    users = state.get("users") or {}
    if name not in users:
        known = ", ".join(sorted(users)) or "none"
        raise UsageError(f"--as {name}: no such user in {path}; its users: {known}")
    return Connection(str(api_url or state.get("api_url")), str(users[name]["api_key"]))


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {path}: {error}; restart the local stack (`make run`)") from None
    if not isinstance(state, dict):
        raise UsageError(f"{path} is not the local stack's state file; restart it (`make run`)")
    return state


def _what_is_missing(url: str | None, key: str | None, state_file: Path | None) -> str:
    needed = (
        ("API URL (--api-url or $SATCHEL_API_URL)", url),
        ("API key (--api-key or $SATCHEL_API_KEY)", key),
    )
    missing = [what for what, value in needed if not value]
    local = (
        f"or, as a user of the local stack, --as NAME (users in {state_file})"
        if state_file
        else "or, with the local stack running (`make run`), --as NAME"
    )
    return f"no {' and no '.join(missing)}: give {'them' if len(missing) > 1 else 'it'}, {local}"
