#!/usr/bin/env bash
# Exports of the seeded `Transaction` dataset: all of acme's rows as CSV, and the refunded
# ones' id, amount and status as gzipped NDJSON. Each answer is the download, PENDING.
set -euo pipefail
source "$(dirname "$0")/local-env.sh"

curl -s -w '\n' -X POST "$API/downloads" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
  -d '{"type": "export", "params": {"index": "Transaction", "format": "csv"}}'
curl -s -w '\n' -X POST "$API/downloads" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
  -d '{"type": "export", "params": {"index": "Transaction", "format": "ndjson", "compression": "gzip",
       "columns": ["id", "amount", "status"], "filters": [{"column": "status", "op": "eq", "value": "refunded"}]}}'
