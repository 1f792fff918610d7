#!/usr/bin/env bash
# Idempotency: the same create, sent twice with one Idempotency-Key, makes one download.
set -euo pipefail
source "$(dirname "$0")/local-env.sh"

for attempt in 1 2; do
  curl -s -i -X POST "$API/downloads" -H "Authorization: Bearer $KEY" \
    -H 'Idempotency-Key: q1-report-2024' -H 'Content-Type: application/json' \
    -d '{"type": "zip", "params": {"keys": ["acme/reports/2024/q1.csv"]}}' | grep -iE '^(location|idempotent)'
done
# location: /downloads/<id>            (both times the same id)
# idempotent-replayed: true            (the second time)
