"""A webhook receiver: says whether each delivery verifies (Standard Webhooks), and drops
repeats by `webhook-id` (a delivery may come more than once).

    .venv/bin/python docs/examples/callback_receiver.py [PORT] [TENANT]   # 9000, acme

It reads the tenant's signing secret, `webhook_secrets[TENANT]`, from `make run`'s
.satchel-local.json (a tenant admin gets it from POST /tenant/webhook-secret).
"""

import http.server
import json
import sys
from pathlib import Path

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
tenant = sys.argv[2] if len(sys.argv) > 2 else "acme"
webhook = Webhook(json.loads(Path(".satchel-local.json").read_text())["webhook_secrets"][tenant])
seen: set[str] = set()


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        try:
            webhook.verify(body, dict(self.headers.items()))
        except WebhookVerificationError:
            print("FORGED", body.decode(), flush=True)
            self.send_response(401)
        else:
            event_id = self.headers["webhook-id"]
            print("repeat" if event_id in seen else "valid", event_id, body.decode(), flush=True)
            seen.add(event_id)
            self.send_response(204)
        self.end_headers()


http.server.HTTPServer(("127.0.0.1", port), Receiver).serve_forever()
