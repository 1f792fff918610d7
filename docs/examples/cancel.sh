#!/usr/bin/env bash
# Cancel or delete. A running download is cancelled (202, state CANCELLED); a finished one
# loses its file (204; its record stays, EXPIRED, for the audit trail).
set -euo pipefail
source "$(dirname "$0")/local-env.sh"

create() {
  curl -s -X POST "$API/downloads" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    -d '{"type": "zip", "params": {"keys": ["acme/reports/2024/q1.csv"]}}' \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}

# Cancelled at once: 202 (or 204, had it finished already).
RUNNING=$(create)
curl -s -i -X DELETE "$API/downloads/$RUNNING" -H "Authorization: Bearer $KEY" | head -1

# Deleted once done: 204, and its file is gone.
FINISHED=$(create)
wait_done "$FINISHED"
curl -s -i -X DELETE "$API/downloads/$FINISHED" -H "Authorization: Bearer $KEY" | head -1   # 204
curl -s -i "$API/downloads/$FINISHED/file" -H "Authorization: Bearer $KEY" | head -1      # 410 Gone
