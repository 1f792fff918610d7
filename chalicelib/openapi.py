"""The OpenAPI 3 document of Satchel's API (being written)."""

from __future__ import annotations

from typing import Any


def document(server_url: str = "/") -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "Satchel", "version": "1"}, "paths": {}}
