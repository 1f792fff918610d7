#!/usr/bin/env bash
# `satchel` in a script: the API's address and key from the environment, results as JSON.
set -euo pipefail
source .venv/bin/activate
local_setting() {
  python3 -c 'import json, sys; value = json.load(open(".satchel-local.json"))
for part in sys.argv[1:]: value = value[part]
print(value)' "$@"
}

export SATCHEL_API_URL=$(local_setting api_url)
export SATCHEL_API_KEY=$(local_setting users alice api_key)
satchel --json zip acme/reports/2024/q2.csv --wait -o q2.zip \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["file"]["sha256"])'
satchel zip acme/missing.csv --wait || echo "exit $?"      # exit 4: ended FAILED: SourceMissing
