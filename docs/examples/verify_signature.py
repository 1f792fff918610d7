"""How a receiver checks a callback: `Satchel-Signature` is `v1=` and the hex HMAC-SHA256
of `<Satchel-Timestamp>.<raw body>` under the webhook secret."""

import hashlib
import hmac
import time


def verify(secret: bytes, headers: dict[str, str], body: bytes) -> bool:
    timestamp = headers["Satchel-Timestamp"]
    expected = "v1=" + hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(timestamp)) < 300  # refuse replays of old deliveries
    return fresh and hmac.compare_digest(expected, headers["Satchel-Signature"])
