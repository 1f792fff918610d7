"""`python -m satchel_local`: the whole stack on loopback until Ctrl-C (what `make run` starts)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from satchel_local.server import Options, run


def parse(argv: Sequence[str] | None = None) -> Options:
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="python -m satchel_local",
        description="Run Satchel locally: API, real state machine and handlers, emulated AWS, demo data.",
    )
    parser.add_argument("--host", default=defaults.host, help="API address (default: %(default)s)")
    parser.add_argument(
        "--port",
        type=int,
        default=defaults.port,
        help="API port, 0 for any free one; `make run PORT=...` sets it (default: %(default)s)",
    )
    parser.add_argument(
        "--moto-port",
        type=int,
        default=defaults.moto_port,
        help="AWS emulator port on 127.0.0.1, 0 for any free one; `make run MOTO_PORT=...` sets it "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        default=defaults.state_file,
        help="where to write URLs, users and API keys; removed on exit (default: %(default)s)",
    )
    parser.add_argument(
        "--demo-rows",
        type=int,
        default=defaults.demo_rows,
        help="transactions seeded for tenant acme's export demo (default: %(default)s)",
    )
    parser.add_argument(
        "--cleanup-interval",
        type=float,
        default=defaults.cleanup_interval,
        metavar="SECONDS",
        help="seconds between cleanup runs, 0 for none (deployed: minutes; default: %(default)g)",
    )
    parser.add_argument(
        "--auth",
        choices=("keys", "oidc"),
        default=defaults.auth,
        help="how callers sign in: API keys, or tokens of a demo OIDC issuer started on loopback "
        "(not an identity provider: it signs for the seeded users); `make run AUTH=oidc` sets it "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--issuer-port",
        type=int,
        default=defaults.issuer_port,
        help="the demo OIDC issuer's port with --auth oidc, 0 for any free one; `make run ISSUER_PORT=...` "
        "sets it (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.cleanup_interval < 0:
        parser.error("--cleanup-interval must not be negative")
    return Options(
        host=args.host,
        port=args.port,
        moto_port=args.moto_port,
        state_file=args.state_file,
        demo_rows=args.demo_rows,
        cleanup_interval=args.cleanup_interval,
        auth=args.auth,
        issuer_port=args.issuer_port,
    )


if __name__ == "__main__":
    status = run(parse())
    sys.stdout.flush()
    sys.stderr.flush()
    # run() has stopped everything it started. Skip the interpreter's teardown, which would
    # spend seconds freeing the emulator's 100,000 demo rows one object at a time.
    os._exit(status)
