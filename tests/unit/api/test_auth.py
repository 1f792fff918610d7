"""The authorizer's lookup: a key record that breaks the id rules is refused, not a 500."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from chalicelib.api import auth
from chalicelib.storage.keys import KeyStore, hash_secret

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_dynamodb.service_resource import Table


class _Table:
    def __init__(self, item: dict[str, Any]) -> None:
        self.item = item

    def get_item(self, Key: dict[str, str], **_: Any) -> dict[str, Any]:
        return {"Item": {**Key, **self.item}} if Key["pk"] == f"APIKEY#{hash_secret('k' * 20)}" else {}

    @property
    def typed(self) -> Table:
        """This fake where the code expects the boto3 resource (it answers the one call used)."""
        return cast("Table", self)


def test_a_valid_key_record_gives_its_principal() -> None:
    keys = KeyStore(_Table({"tenant": "acme", "user_id": "alice", "roles": ["user"]}).typed)
    principal = auth.authenticate(keys, "Bearer " + "k" * 20)
    assert principal is not None
    assert (principal.tenant, principal.user_id) == ("acme", "alice")


def test_a_key_record_with_an_id_outside_the_pattern_is_refused() -> None:
    keys = KeyStore(_Table({"tenant": "acme#x", "user_id": "y", "roles": []}).typed)
    assert auth.authenticate(keys, "Bearer " + "k" * 20) is None


def test_no_bearer_key_is_refused() -> None:
    keys = KeyStore(_Table({"tenant": "acme", "user_id": "alice", "roles": []}).typed)
    assert auth.authenticate(keys, None) is None
    assert auth.authenticate(keys, "Basic abc") is None


def test_a_refusal_denies_every_route_of_the_stage_and_names_its_code() -> None:
    arn = "arn:aws:execute-api:eu-west-1:123456789012:abc123/api/GET/downloads/x"
    denied = auth.deny(arn, auth.Verdict(None, "KeyExpired"))
    assert denied["policyDocument"]["Statement"] == [
        {
            "Action": "execute-api:Invoke",
            "Effect": "Deny",
            "Resource": ["arn:aws:execute-api:eu-west-1:123456789012:abc123/api/*"],
        }
    ]
    assert denied["context"] == {"code": "KeyExpired"}
    assert denied["principalId"] == "anonymous"


def test_the_manual_states_the_authorizers_cache_time() -> None:
    # A disabled key keeps working for up to this long: the manual must say so, correctly.
    from app import bearer

    ttl = bearer.config.ttl_seconds
    page = (Path(__file__).resolve().parents[3] / "docs" / "sign-in.md").read_text(encoding="utf-8")
    assert f"API Gateway caches the authorizer's answer for a credential for **{ttl}\nseconds**" in page
