#!/usr/bin/env bash
# Links: hand a download to someone who has no API key.
set -euo pipefail
source "$(dirname "$0")/local-env.sh"

# A zip and a single-use link to it, in one request.
CREATED=$(curl -s -X POST "$API/downloads" \
  -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
  -d '{"type": "zip", "params": {"prefixes": ["acme/reports/"]}, "link": {"expires_in": 3600, "max_uses": 1}}')
ID=$(echo "$CREATED" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
LINK=$(echo "$CREATED" | python3 -c 'import json, sys; print(json.load(sys.stdin)["link"]["url"])')
echo "$LINK"        # <the API>/links/<token>

# Anyone, without a key. Reading the link (GET, as chat previews and mail scanners do) never
# spends it: JSON here, the link page in a browser.
curl -s -H 'Accept: application/json' "$LINK" | python3 -c \
  'import json, sys; link = json.load(sys.stdin); print(link.get("filename"), link.get("uses_left", link.get("Code")))'

# The claim (POST) spends the use: 425 until the zip is built, then a 303 to a URL minted for
# this claim, which -L follows with a GET (`-d ''` makes the POST; `-X POST` would also POST to
# the file's URL). Any other answer (410: the download failed or was cancelled) ends the wait.
until [ "$(curl -s -L -d '' -o shared.zip -w '%{http_code}' "$LINK")" != 425 ]; do sleep 1; done
python3 -m zipfile -l shared.zip  # fails unless shared.zip is the zip
curl -s -i -d '' "$LINK" | head -1     # HTTP/1.1 410 Gone: used up

# Another link to the same download, used twice at most; then revoke it.
TOKEN=$(curl -s -X POST "$API/downloads/$ID/links" -H "Authorization: Bearer $KEY" \
  -H 'Content-Type: application/json' -d '{"expires_in": 600, "max_uses": 2}' \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
curl -s -i -X DELETE "$API/links/$TOKEN" -H "Authorization: Bearer $KEY" | head -1    # 204
