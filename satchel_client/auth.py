"""How the client signs in, as the stage asks (docs/sign-in.md): a bearer credential (an API
key, or an OIDC token from the stage's identity provider), or SigV4 with AWS credentials.

Each is a `requests` auth, given per request and never set on the session: presigned file
URLs must never see a key, a token or a signature.
"""

from __future__ import annotations

from typing import Any

import requests
from requests.auth import AuthBase

SIGV4_SERVICE = "execute-api"
# Headers signed with SigV4: what API Gateway reads and nothing a proxy may rewrite.
_SIGNED_HEADERS = ("host", "content-type", "idempotency-key")


class BearerAuth(AuthBase):
    """`Authorization: Bearer <credential>`: an API key or an OIDC token alike."""

    def __init__(self, credential: str) -> None:
        self._credential = credential

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._credential}"
        return request


class SigV4Auth(AuthBase):
    """AWS Signature Version 4 for API Gateway (`execute-api`), with credentials from the AWS
    credential chain (environment, profile, SSO, container or instance role) unless given.

    Needs botocore (`pip install botocore`, or boto3), imported only when SigV4 is used.
    Temporary credentials are refreshed by botocore as they near their expiry.
    """

    def __init__(
        self,
        region: str | None = None,
        *,
        credentials: Any = None,
        profile: str | None = None,
        service: str = SIGV4_SERVICE,
    ) -> None:
        try:
            import botocore.session
        except ImportError:  # pragma: no cover - botocore is in every environment the tests run in
            raise ValueError("SigV4 needs botocore: pip install botocore") from None
        session = botocore.session.Session(profile=profile)
        self.region = region or session.get_config_variable("region")
        if not self.region:
            raise ValueError("SigV4 needs the API's AWS region: --region, $AWS_REGION or your AWS config")
        self._credentials = credentials or session.get_credentials()
        if self._credentials is None:
            raise ValueError("SigV4 found no AWS credentials (environment, profile, SSO or role)")
        self.service = service

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        from botocore.auth import SigV4Auth as Signer
        from botocore.awsrequest import AWSRequest

        headers = {name: value for name, value in request.headers.items() if name.lower() in _SIGNED_HEADERS}
        body = request.body or b""
        signed = AWSRequest(method=request.method, url=request.url, data=body, headers=headers)
        frozen = getattr(self._credentials, "get_frozen_credentials", lambda: self._credentials)()
        Signer(frozen, self.service, self.region).add_auth(signed)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if name in signed.headers:
                request.headers[name] = signed.headers[name]
        return request
