"""Ids that break the rules are refused by the running API and its triggers."""

from __future__ import annotations

import pytest

from chalicelib.core import clients
from chalicelib.core.errors import MalformedRequest, UnknownPrincipal
from chalicelib.runtime import Runtime
from chalicelib.storage.keys import KeyStore, hash_secret
from chalicelib.triggers import inbound as triggers
from tests.support.stack import Satchel


def test_a_key_record_with_an_invalid_id_is_no_principal(satchel: Satchel) -> None:
    table = clients.table(satchel.stack.table)
    about = {"tenant": "acme#x", "user_id": "y", "roles": []}
    table.put_item(Item={"pk": f"APIKEY#{hash_secret('forged-key')}", "sk": "APIKEY", **about})
    with pytest.raises(UnknownPrincipal):
        KeyStore(table).principal_for("forged-key")


@pytest.mark.parametrize(("tenant", "user_id"), [("acme#x", "y"), ("acme", "x#y"), ("acme", "Alice")])
def test_triggers_refuse_invalid_ids_before_any_lookup(satchel: Satchel, tenant: str, user_id: str) -> None:
    with pytest.raises(MalformedRequest, match="must match"):
        triggers.principal_named(Runtime.from_env(), tenant, user_id)
