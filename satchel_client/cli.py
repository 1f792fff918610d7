"""The `satchel` command (being written)."""

from __future__ import annotations


def main() -> int:
    raise SystemExit("satchel: not implemented yet")
