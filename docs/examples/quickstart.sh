#!/usr/bin/env bash
# The round trip with curl, as alice: create a zip, watch it, fetch it.
set -euo pipefail
source "$(dirname "$0")/local-env.sh"   # API, KEY and wait_done

# Ask for a zip of two objects and a whole prefix: 202 and the download, PENDING.
# (Drop the last line to see the whole answer.)
ID=$(curl -s -X POST "$API/downloads" \
  -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
  -d '{"type": "zip", "params": {"keys": ["acme/reports/2024/q1.csv", "acme/reports/2024/q2.csv"], "prefixes": ["acme/photos/"]}, "filename": "reports.zip"}' \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
echo "$ID"

# Watch it: state PENDING -> RUNNING -> DONE, with files and bytes progress.
curl -s -w '\n' "$API/downloads/$ID" -H "Authorization: Bearer $KEY"
wait_done "$ID"

# Fetch it: a 302 to a presigned S3 URL that lives five minutes.
curl -s -L -o reports.zip "$API/downloads/$ID/file" -H "Authorization: Bearer $KEY"
python3 -m zipfile -l reports.zip

# Or get the presigned URL as JSON (valid up to an hour, never past the download's expiry).
curl -s -w '\n' "$API/downloads/$ID/url" -H "Authorization: Bearer $KEY"

# Your downloads, newest first.
curl -s -w '\n' "$API/downloads?limit=10" -H "Authorization: Bearer $KEY"
