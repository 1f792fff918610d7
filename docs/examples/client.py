"""The Python client behind `satchel`, as alice of `make run`'s local stack.

.venv/bin/python docs/examples/client.py     # from the repository root
"""

import json
from pathlib import Path

from satchel_client import DownloadFailed, SatchelClient

local = json.loads(Path(".satchel-local.json").read_text())
api_url, api_key = local["api_url"], local["users"]["alice"]["api_key"]

with SatchelClient(api_url, api_key) as satchel:
    download = satchel.create_zip(["acme/reports/2024/q1.csv"], prefixes=["acme/photos/"])
    try:
        satchel.wait(download.id, timeout=600)  # polls with backoff until DONE
    except DownloadFailed as failed:  # .state, .code: e.g. FAILED, SourceMissing
        raise SystemExit(f"no zip: {failed}") from None
    satchel.fetch(download.id, "reports.zip")  # resumable, sha256-verified
    for item in satchel.list(state="DONE"):  # every page
        print(item.id, item.filename)
