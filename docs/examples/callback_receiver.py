"""A callback receiver: says whether each callback's signature holds.

    .venv/bin/python docs/examples/callback_receiver.py [PORT]     # default 9000

It reads the signing key, `webhook_secret`, from `make run`'s .satchel-local.json.
"""

import hashlib
import hmac
import http.server
import json
import sys
from pathlib import Path

secret = json.loads(Path(".satchel-local.json").read_text())["webhook_secret"].encode()
port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        signed = self.headers["Satchel-Timestamp"].encode() + b"." + body
        expected = "v1=" + hmac.new(secret, signed, hashlib.sha256).hexdigest()
        valid = hmac.compare_digest(expected, self.headers["Satchel-Signature"])
        print("valid" if valid else "FORGED", body.decode(), flush=True)
        self.send_response(204 if valid else 401)
        self.end_headers()


http.server.HTTPServer(("127.0.0.1", port), Receiver).serve_forever()
