#!/usr/bin/env bash
# The `satchel` command, as one of `make run`'s seeded users (--as reads .satchel-local.json).
set -euo pipefail
source .venv/bin/activate                     # puts `satchel` on PATH

# Zip, wait (a bar of the build's files and bytes), fetch (a byte bar), verify the sha256.
# stdout gets the download's id; progress and messages go to stderr.
satchel --as alice zip acme/reports/2024/q1.csv acme/reports/2024/q2.csv --prefix acme/photos/ --wait -o reports.zip

# Or one step at a time.
ID=$(satchel --as alice zip acme/reports/2024/q1.csv --store)   # --store: no compression
satchel --as alice wait "$ID"                 # returns when DONE; exit 4 if FAILED/CANCELLED
satchel --as alice fetch "$ID" -o q1.zip      # resumable, verified; waits first if need be
satchel --as alice status "$ID"
satchel --as alice list --state DONE          # every page, newest first
satchel --as alice link "$ID" --max-uses 1    # prints a URL that works without a key
satchel --as alice types
satchel --as alice cancel "$ID"               # running: cancel it; finished: delete its file
