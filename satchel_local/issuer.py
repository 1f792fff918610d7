"""A DEMO OIDC issuer for `python -m satchel_local --auth oidc` (`make run AUTH=oidc`).

THIS IS NOT AN IDENTITY PROVIDER. It signs a token for any seeded demo user (alice, bob,
carol, dave) to anyone on this machine who asks, with no password, no client and no consent:
it exists only so that a stage's `SATCHEL_AUTH_MODE=oidc` can be tried locally against the
real authorizer (chalicelib/api/oidc.py). Never expose it, never point a real stage at it.

What it serves on loopback, as an issuer does (its key is RSA 2048, made at start and never
written anywhere: tokens die with the process):

- `GET /.well-known/openid-configuration`: the discovery document (issuer, jwks_uri, ...);
- `GET /.well-known/jwks.json`: its one public key, RS256, with its `kid`;
- `POST /token` `{"user": "alice"}`: `{"id_token", "token_type", "expires_in"}`, an RS256 JWT
  with `iss`, `aud`, `sub` (the user), `tenant`, `roles` (`admin` for carol), `iat`, `nbf` and
  `exp`. `"expires_in"` (seconds, default 3600) may be negative, which yields a token that has
  already expired, to see the API refuse it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

from satchel_local import seed

log = logging.getLogger("satchel_local.issuer")

AUDIENCE = "satchel-local"
ALGORITHM = "RS256"
TOKEN_SECONDS = 3600
# A demo's bounds: a day ahead at most, and far enough back to be past any clock skew leeway.
MIN_TOKEN_SECONDS = -86_400
MAX_TOKEN_SECONDS = 86_400
_MAX_BODY_BYTES = 4096
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/.well-known/jwks.json"
TOKEN_PATH = "/token"


class TokenRequestError(ValueError):
    """A token request the demo issuer refuses: `code` is its stable `Code`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class DemoIssuer:
    """The key, and the tokens it signs; `url` is set once the server is bound."""

    url: str = ""
    audience: str = AUDIENCE
    key: RSAKey = field(
        default_factory=lambda: RSAKey.generate_key(
            2048, parameters={"use": "sig", "alg": ALGORITHM}, private=True, auto_kid=True
        )
    )

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "jwks_uri": f"{self.url}{JWKS_PATH}",
            "token_endpoint": f"{self.url}{TOKEN_PATH}",
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "subject_types_supported": ["public"],
            "response_types_supported": ["id_token"],
            "claims_supported": ["iss", "aud", "sub", "tenant", "roles", "iat", "nbf", "exp"],
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}

    def environment(self) -> dict[str, str]:
        """The API's OIDC settings (docs/sign-in.md) that trust this issuer and its claims."""
        return {
            "SATCHEL_AUTH_MODE": "oidc",
            "SATCHEL_OIDC_ISSUER": self.url,
            "SATCHEL_OIDC_AUDIENCE": self.audience,
            "SATCHEL_OIDC_JWKS_URL": f"{self.url}{JWKS_PATH}",
            "SATCHEL_OIDC_ALGORITHMS": ALGORITHM,
            "SATCHEL_OIDC_TENANT_CLAIM": "tenant",
            "SATCHEL_OIDC_TENANT": "",  # the tenant is each token's claim, not one fixed tenant
            "SATCHEL_OIDC_USER_CLAIM": "sub",
            "SATCHEL_OIDC_ROLES_CLAIM": "roles",
            "SATCHEL_OIDC_ADMIN_VALUE": "admin",
        }

    def claims(self, user: str, now: int, expires_in: int) -> dict[str, Any]:
        principal = seed.PRINCIPALS[user]
        return {
            "iss": self.url,
            "aud": self.audience,
            "sub": principal.user_id,
            "tenant": principal.tenant,
            "roles": sorted(principal.roles),
            # An expired demo token was also issued in the past: nbf and iat are never ahead of exp.
            "iat": min(now, now + expires_in),
            "nbf": min(now, now + expires_in),
            "exp": now + expires_in,
        }

    def token(self, user: str, expires_in: int = TOKEN_SECONDS, now: int | None = None) -> str:
        """A signed ID token for a seeded user."""
        moment = int(time.time()) if now is None else now
        header = {"alg": ALGORITHM, "typ": "JWT", "kid": self.key.kid}
        return jwt.encode(header, self.claims(user, moment, expires_in), self.key)

    def answer_token_request(self, body: bytes) -> dict[str, Any]:
        """`POST /token`'s answer; TokenRequestError for anything but a seeded user."""
        try:
            request = json.loads(body or b"null")
        except ValueError:
            raise TokenRequestError("InvalidRequest", 'the body must be JSON: {"user": "alice"}') from None
        if not isinstance(request, dict) or not isinstance(request.get("user"), str):
            raise TokenRequestError("InvalidRequest", 'the body must be {"user": "<name>"}')
        user = request["user"]
        if user not in seed.PRINCIPALS:
            known = ", ".join(seed.PRINCIPALS)
            raise TokenRequestError("UnknownUser", f"this demo issuer signs tokens for {known} only")
        expires_in = request.get("expires_in", TOKEN_SECONDS)
        if (
            isinstance(expires_in, bool)
            or not isinstance(expires_in, int)
            or not MIN_TOKEN_SECONDS <= expires_in <= MAX_TOKEN_SECONDS
        ):
            raise TokenRequestError(
                "InvalidRequest",
                f"expires_in must be whole seconds from {MIN_TOKEN_SECONDS} to {MAX_TOKEN_SECONDS}",
            )
        return {"id_token": self.token(user, expires_in), "token_type": "Bearer", "expires_in": expires_in}


class _Handler(BaseHTTPRequestHandler):
    server: IssuerServer

    def do_GET(self) -> None:
        issuer = self.server.issuer
        if self.path == DISCOVERY_PATH:
            self._send(200, issuer.discovery())
        elif self.path == JWKS_PATH:
            self._send(200, issuer.jwks())
        else:
            self._send(404, {"Code": "NotFound", "Message": f"no such path; try {DISCOVERY_PATH}"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.path != TOKEN_PATH:
            self._send(404, {"Code": "NotFound", "Message": f"tokens are at POST {TOKEN_PATH}"})
            return
        if not 0 <= length <= _MAX_BODY_BYTES:
            self._send(413, {"Code": "RequestTooLarge", "Message": "a token request is a few bytes"})
            return
        try:
            answer = self.server.issuer.answer_token_request(self.rfile.read(length))
        except TokenRequestError as error:
            self._send(400, {"Code": error.code, "Message": str(error)})
            return
        self._send(200, answer)

    def _send(self, status: int, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


class IssuerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, issuer: DemoIssuer) -> None:
        super().__init__((host, port), _Handler)
        self.issuer = issuer
        issuer.url = f"http://{host}:{self.server_address[1]}"


@dataclass
class RunningIssuer:
    """The demo issuer served from a thread until stop()."""

    server: IssuerServer
    thread: threading.Thread

    @property
    def issuer(self) -> DemoIssuer:
        return self.server.issuer

    @classmethod
    def start(cls, host: str, port: int) -> RunningIssuer:
        """Bind (OSError on a busy port) and serve."""
        server = IssuerServer(host, port, DemoIssuer())
        thread = threading.Thread(target=server.serve_forever, name="oidc-issuer", daemon=True)
        thread.start()
        return cls(server, thread)

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()
