# Sourced by the other examples: where `make run`'s API is, and alice's key, read from the
# .satchel-local.json it writes in the repository root (run the examples from there).
# The port is whatever `make run PORT=...` chose, so nothing here names one.
local_setting() {
  python3 -c 'import json, sys; value = json.load(open(".satchel-local.json"))
for part in sys.argv[1:]: value = value[part]
print(value)' "$@"
}
API=$(local_setting api_url)
KEY=$(local_setting users alice api_key)
if [ "$(local_setting auth_mode 2>/dev/null)" = oidc ]; then
  # `make run AUTH=oidc` takes tokens, not keys: alice's, from the demo issuer (docs/sign-in.md).
  KEY=$(curl -s -X POST "$(local_setting oidc token_url)" -H 'Content-Type: application/json' \
    -d '{"user": "alice"}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["id_token"])')
fi

# Wait until download $1 is DONE; give up (exit status 1) if it ends FAILED, CANCELLED or
# EXPIRED instead, so no loop waits forever for a download that will never be done.
wait_done() {
  local state
  while :; do
    state=$(curl -s "$API/downloads/$1" -H "Authorization: Bearer $KEY" \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["state"])')
    case $state in
      DONE) return 0 ;;
      FAILED | CANCELLED | EXPIRED) echo "download $1 ended $state" >&2; return 1 ;;
    esac
    sleep 1
  done
}
