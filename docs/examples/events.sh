#!/usr/bin/env bash
# Downloads started by an SQS message, a request-bus event and a manifest in S3, then watched
# through the API.
set -euo pipefail
source "$(dirname "$0")/local-env.sh"

.venv/bin/python "$(dirname "$0")/send_requests.py"

# All three are alice's downloads like any other, DONE within a few seconds. The loop ends
# when all are DONE (exit 0), or as soon as any ends FAILED or CANCELLED (exit 1).
while :; do
  verdict=$(curl -s "$API/downloads?limit=10" -H "Authorization: Bearer $KEY" | python3 -c '
import json, sys
states = {d["filename"]: d["state"] for d in json.load(sys.stdin)["items"]}
wanted = [states.get(name) for name in ("queued.zip", "evented.zip", "dropped.zip")]
print("ended" if {"FAILED", "CANCELLED"} & set(wanted) else "done" if wanted == ["DONE"] * 3 else "wait")')
  case $verdict in
    done) break ;;
    ended) echo "a download started by an event did not finish" >&2; exit 1 ;;
  esac
  sleep 1
done
