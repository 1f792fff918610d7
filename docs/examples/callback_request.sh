#!/usr/bin/env bash
# A download that calls the receiver back once it is done.
#   bash docs/examples/callback_request.sh [PORT]     # the receiver's port, default 9000
set -euo pipefail
source "$(dirname "$0")/local-env.sh"
PORT=${1:-9000}

curl -s -w '\n' -X POST "$API/downloads" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
  -d '{"type": "zip", "params": {"keys": ["acme/reports/2024/q1.csv"]}, "callback_url": "http://127.0.0.1:'"$PORT"'/satchel"}'
