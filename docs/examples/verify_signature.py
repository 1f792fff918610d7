"""How a receiver checks a webhook: Standard Webhooks 1.0, with its reference library
(`pip install standardwebhooks`). `verify` raises unless one of the `v1,` signatures in
`webhook-signature` is the HMAC-SHA256 of `<webhook-id>.<webhook-timestamp>.<raw body>` under
the secret, and the timestamp is within five minutes; it answers the parsed payload."""

from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


def verify(secret: str, headers: dict[str, str], body: bytes) -> dict[str, Any] | None:
    """The payload if the delivery is genuine and fresh, else None. `secret` is `whsec_...`."""
    try:
        payload: dict[str, Any] = Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return None
    return payload
