#!/usr/bin/env bash
# The whole round trip in one line: ask for the zip, show its build's progress, fetch it,
# check its sha256. Run from the repository root while `make run` runs.
set -euo pipefail
.venv/bin/satchel --as alice zip acme/reports/2024/q1.csv acme/reports/2024/q2.csv --prefix acme/photos/ --wait -o out.zip
