"""A cold start is cheap: importing app.py opens no connection, builds no AWS client and
loads neither the deflate engine, jsonschema, nor the JOSE library (only an OIDC stage's
authorizer needs it).

(`make bench` measures the import time itself: docs/performance.md.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import socket, sys

def refuse(*args, **kwargs):
    raise AssertionError("importing app opened a connection")

socket.socket.connect = refuse
socket.create_connection = refuse
import app
from chalicelib.core import clients

built = clients._client.cache_info().currsize + clients._table.cache_info().currsize
heavy = ("isal", "zlib_ng", "jsonschema", "moto", "joserfc")
deferred = sorted(name for name in heavy if name in sys.modules)
print(built, ",".join(deferred))
"""


def test_importing_the_app_connects_nowhere_and_defers_clients_and_the_deflate_engine() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"]  # no client built; deflate and jsonschema not loaded
