#!/usr/bin/env bash
# Wait for one download: exit 0 once it is DONE, 1 as soon as it ends any other way.
#   bash docs/examples/wait.sh <download id>
set -euo pipefail
source "$(dirname "$0")/local-env.sh"
wait_done "$1"
