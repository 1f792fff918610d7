"""The pure parts of the webhook secrets (chalicelib/storage/secrets.py): the secret's
format, the plaintext cache, what may be printed; and the settings that shape rotations.
The store itself runs against moto in tests/stack/test_webhook_secrets_store.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from chalicelib.core.errors import ConfigurationError
from chalicelib.core.settings import Settings
from chalicelib.storage.secrets import IssuedSecret, PlaintextCache, encryption_context, new_secret

REQUIRED = {
    "SATCHEL_TABLE": "t",
    "SATCHEL_ARTIFACT_BUCKET": "a",
    "SATCHEL_SOURCE_BUCKET": "s",
    "SATCHEL_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:m",
}


def test_a_new_secret_is_whsec_and_32_random_bytes() -> None:
    made = {new_secret() for _ in range(100)}
    assert len(made) == 100
    for secret in made:
        assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret), secret
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


def test_the_standard_webhooks_verifier_takes_the_secret_as_its_own() -> None:
    """The reference verifier reads the key out of the secret as a signer must: a signature
    made with the 32 decoded bytes verifies; one made with the text of the secret does not."""
    secret = new_secret()
    timestamp = str(int(datetime.now(UTC).timestamp()))
    body = '{"type":"download.completed"}'

    def headers(signing_key: bytes) -> dict[str, str]:
        mac = hmac.new(signing_key, f"msg_1.{timestamp}.{body}".encode(), hashlib.sha256).digest()
        signature = base64.b64encode(mac).decode()
        return {"webhook-id": "msg_1", "webhook-timestamp": timestamp, "webhook-signature": f"v1,{signature}"}

    verifier = Webhook(secret)
    assert verifier.verify(body, headers(base64.b64decode(secret.removeprefix("whsec_")))) == {
        "type": "download.completed"
    }
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body, headers(secret.encode()))


def test_the_encryption_context_names_the_tenant() -> None:
    assert encryption_context("acme") == {"satchel:tenant": "acme"}


def test_an_issued_secret_prints_without_its_secret() -> None:
    issued = IssuedSecret("whsec_c2VjcmV0", "2026-01-01T00:00:00.000Z", None)
    assert "whsec_c2VjcmV0" not in repr(issued)
    assert "whsec_c2VjcmV0" not in str(issued)
    assert issued.to_api()["secret"] == "whsec_c2VjcmV0"  # shown once, by the API, on purpose


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    cache = PlaintextCache(size=2)
    cache.put("acme", b"1", "one")
    cache.put("acme", b"2", "two")
    assert cache.get("acme", b"1") == "one"  # now the most recently used
    cache.put("acme", b"3", "three")
    assert cache.get("acme", b"2") is None
    assert cache.get("acme", b"1") == "one"
    assert cache.get("globex", b"1") is None  # a ciphertext is cached for its tenant only


def test_the_grace_period_defaults_to_a_day_and_the_key_to_none() -> None:
    settings = Settings.from_env(REQUIRED)
    assert settings.webhook_secret_grace_seconds == 86400
    assert settings.kms_key_id == ""


def test_the_grace_period_and_the_key_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {**REQUIRED, "SATCHEL_WEBHOOK_SECRET_GRACE_SECONDS": "600", "SATCHEL_KMS_KEY_ID": "alias/k"}
    )
    assert (settings.webhook_secret_grace_seconds, settings.kms_key_id) == (600, "alias/k")
    with pytest.raises(ConfigurationError, match="positive"):
        Settings.from_env({**REQUIRED, "SATCHEL_WEBHOOK_SECRET_GRACE_SECONDS": "0"})
