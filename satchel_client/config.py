"""Which API the command calls, and how it signs in.

In order: `--as NAME` (a user of the local stack, from the `.satchel-local.json` that
`make run` writes: the user's API key, or, when the stack signs in with OIDC (`make run
AUTH=oidc`), a token its demo issuer signs for the user then), else `--api-url` and one
credential flag (`--api-key`, `--token` for an OIDC stage, `--sigv4` for an IAM stage), else
`SATCHEL_API_URL` and one of `SATCHEL_API_KEY`, `SATCHEL_TOKEN`, `SATCHEL_SIGV4=true`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

STATE_FILE_NAME = ".satchel-local.json"
ENV_API_URL = "SATCHEL_API_URL"
ENV_API_KEY = "SATCHEL_API_KEY"
ENV_TOKEN = "SATCHEL_TOKEN"
ENV_SIGV4 = "SATCHEL_SIGV4"


class UsageError(Exception):
    """The command cannot run as given; the message says what to change."""


@dataclass(frozen=True)
class Connection:
    api_url: str
    api_key: str | None
    token: str | None = None  # an OIDC token (a bearer credential like a key)
    sigv4: bool = False  # sign with AWS credentials (an IAM stage)


def resolve(
    *,
    api_url: str | None,
    api_key: str | None,
    as_user: str | None,
    environ: Mapping[str, str],
    cwd: Path,
    token: str | None = None,
    sigv4: bool = False,
) -> Connection:
    given = [
        flag for flag, value in (("--api-key", api_key), ("--token", token), ("--sigv4", sigv4)) if value
    ]
    if as_user is not None:
        if given:
            raise UsageError(f"--as and {given[0]} both say how to sign in: give only one of them")
        return local_user(as_user, cwd, api_url)
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} each say how to sign in: give only one of them")
    url = api_url or environ.get(ENV_API_URL)
    if not given:  # none on the command line: the environment's
        api_key, token = environ.get(ENV_API_KEY), environ.get(ENV_TOKEN)
        sigv4 = environ.get(ENV_SIGV4, "").lower() in ("1", "true", "yes")
        named = [
            name for name, value in ((ENV_API_KEY, api_key), (ENV_TOKEN, token), (ENV_SIGV4, sigv4)) if value
        ]
        if len(named) > 1:
            raise UsageError(f"${' and $'.join(named)} each say how to sign in: set only one of them")
    if url and (api_key or token or sigv4):
        return Connection(url, api_key or None, token or None, sigv4)
    raise UsageError(
        _what_is_missing(url, api_key or token or ("sigv4" if sigv4 else None), find_state_file(cwd))
    )


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
    url = str(api_url or state.get("api_url"))
    oidc = state.get("oidc")
    if state.get("auth_mode") == "oidc" and isinstance(oidc, dict):
        return Connection(url, None, token=_demo_token(name, str(oidc.get("token_url")), path))
    return Connection(url, str(users[name]["api_key"]))


def _demo_token(name: str, token_url: str, state_file: Path) -> str:
    """A token for `name` from the local stack's demo issuer (satchel_local/issuer.py), whose
    `POST /token` signs one for any seeded user: the API of an OIDC stack takes no key."""
    try:
        reply = requests.post(token_url, json={"user": name}, timeout=10)
        document = reply.json() if reply.ok else None
        token = document.get("id_token") if isinstance(document, dict) else None
    except (requests.RequestException, ValueError):
        token, reply = None, None
    if not isinstance(token, str) or not token:
        said = f" ({reply.status_code}: {reply.text.strip()[:200]})" if reply is not None else ""
        raise UsageError(
            f"--as {name}: the local stack's demo issuer at {token_url} gave no token{said}; "
            f"is the stack of {state_file} still running? restart it (`make run AUTH=oidc`)"
        )
    return token


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
        ("API key (--api-key or $SATCHEL_API_KEY; or --token, --sigv4)", key),
    )
    missing = [what for what, value in needed if not value]
    local = (
        f"or, as a user of the local stack, --as NAME (users in {state_file})"
        if state_file
        else "or, with the local stack running (`make run`), --as NAME"
    )
    return f"no {' and no '.join(missing)}: give {'them' if len(missing) > 1 else 'it'}, {local}"
