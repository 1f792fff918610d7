"""A gate in front of the Prepare step of a local stack started as a subprocess, so that a test
can hold a download in PENDING for as long as it needs (a link's not-ready page) and then let
the real build run.

The stack is started with `GATE_VARIABLE` naming a file; `hold(stack)` points the emulator's
Prepare function at `gated_prepare` (the dispatcher in satchel_local/lambdas.py imports a
function's `Handler` string afresh for every invocation, so this takes effect at once), which
waits until that file exists and then runs the real `app.prepare`. `release` creates the file;
`restore` points Prepare back at `app.prepare`. The wait is for an event (the file), with a
deadline; nothing is timed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

GATE_VARIABLE = "SATCHEL_TEST_BUILD_GATE"
GATED_HANDLER = "tests.support.buildgate.gated_prepare"
REAL_HANDLER = "app.prepare"
GATE_DEADLINE_SECONDS = 120.0
_POLL_SECONDS = 0.05


def gated_prepare(event: Any, context: Any) -> Any:
    """Runs in the stack's process: wait for the gate file, then prepare as always."""
    gate = Path(os.environ[GATE_VARIABLE])
    deadline = time.monotonic() + GATE_DEADLINE_SECONDS
    while not gate.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the test never opened the build gate {gate}")
        time.sleep(_POLL_SECONDS)
    import app  # the stack's own application, as the undisturbed dispatch would import it

    return app.prepare(event, context)


def prepare_function(stage: str = "local") -> str:
    return f"satchel-{stage}-prepare"


def hold(lambda_client: Any, gate: Path, stage: str = "local") -> None:
    """From now on, every new download waits before Prepare until `release(gate)`."""
    gate.unlink(missing_ok=True)
    lambda_client.update_function_configuration(FunctionName=prepare_function(stage), Handler=GATED_HANDLER)


def release(gate: Path) -> None:
    gate.touch()


def restore(lambda_client: Any, stage: str = "local") -> None:
    lambda_client.update_function_configuration(FunctionName=prepare_function(stage), Handler=REAL_HANDLER)
