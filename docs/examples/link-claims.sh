#!/usr/bin/env bash
# Claiming a link from a shell: curl, wget and `satchel get`. Reading a link (GET, HEAD)
# never spends a use; each claim (a POST) spends one.
set -euo pipefail
source "$(dirname "$0")/local-env.sh"

# A zip with a link that may be claimed three times.
CREATED=$(curl -s -X POST "$API/downloads" \
  -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
  -d '{"type": "zip", "params": {"prefixes": ["acme/reports/"]}, "filename": "reports.zip",
       "link": {"max_uses": 3}}')
ID=$(echo "$CREATED" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
LINK=$(echo "$CREATED" | python3 -c 'import json, sys; print(json.load(sys.stdin)["link"]["url"])')
wait_done "$ID"

curl -s -I "$LINK" | head -1                             # HTTP/1.1 200 OK: a read, nothing spent
curl -s -H 'Accept: application/json' "$LINK" | python3 -m json.tool   # name, size, sha256, uses left

curl -s -L -d '' -o by-curl.zip "$LINK"                 # use 1: a POST; its 303 followed with a GET
wget -q --method=POST --content-disposition "$LINK"     # use 2: saved as reports.zip
mv reports.zip by-wget.zip
.venv/bin/satchel get "$LINK" -o by-satchel.zip          # use 3: resumable, sha256 verified
curl -s -i -d '' "$LINK" | head -1                       # HTTP/1.1 410 Gone: used up

curl -s "$API/downloads/$ID/links" -H "Authorization: Bearer $KEY" | python3 -m json.tool
