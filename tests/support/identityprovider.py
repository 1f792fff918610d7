"""An OIDC identity provider on loopback, for tests: its JWKS served by a tiny http.server on
127.0.0.1, and RSA keys that sign tokens for it.

`IdentityProvider.token(...)` signs claims (defaults: a valid token for ISSUER and AUDIENCE);
`rotate()` adds a key the served JWKS holds from then on; `requests` counts JWKS fetches.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

ISSUER = "https://idp.example.test/pool"
AUDIENCE = "satchel-client-id"


@dataclass
class IdentityProvider:
    url: str = ""
    keys: list[RSAKey] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self) -> None:
        if not self.keys:
            self.rotate()

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.as_dict(private=False) for key in self.keys]}

    def rotate(self) -> RSAKey:
        key = RSAKey.generate_key(
            2048, parameters={"kid": f"key-{len(self.keys) + 1}", "use": "sig"}, private=True
        )
        self.keys.append(key)
        return key

    def token(
        self,
        key: RSAKey | None = None,
        *,
        header: dict[str, Any] | None = None,
        lifetime: int = 300,
        claims: dict[str, Any] | None = None,
        **more: Any,
    ) -> str:
        """A token signed RS256 with `key` (default: the newest); `claims` and keyword
        arguments override the defaults (None removes a claim)."""
        signer = key or self.keys[-1]
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "erin",
            "tenant": "acme",
            "iat": now,
            "exp": now + lifetime,
        }
        body.update({**(claims or {}), **more})
        body = {name: value for name, value in body.items() if value is not None}
        return jwt.encode({"alg": "RS256", "kid": signer.kid, **(header or {})}, body, signer)


def _part(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """A token MACed with HS256 by hand (JOSE libraries refuse a public key as an HMAC secret)."""
    signing_input = f"{_part(header)}.{_part(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def unsigned(claims: dict[str, Any], kid: str = "key-1") -> str:
    """A token with `alg: none` and no signature (RFC 7519 section 6)."""
    return f"{_part({'alg': 'none', 'kid': kid, 'typ': 'JWT'})}.{_part(claims)}."


def tampered(token: str, **claims: Any) -> str:
    """The token with its payload changed and its signature kept."""
    header, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded.update(claims)
    changed = base64.urlsafe_b64encode(json.dumps(decoded).encode()).rstrip(b"=").decode()
    return f"{header}.{changed}.{signature}"


@contextlib.contextmanager
def serving() -> Iterator[IdentityProvider]:
    """The provider's JWKS at http://127.0.0.1:<port>/.well-known/jwks.json while the block runs."""
    provider = IdentityProvider()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/.well-known/jwks.json":
                self.send_error(404)
                return
            provider.requests += 1
            body = json.dumps(provider.jwks).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    provider.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
