"""Who a trigger may act for, from hand-made SQS records and events: the pure binding rules
of chalicelib/triggers/senders.py, each refusal with its stable Code."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.core.errors import ConfigurationError, MalformedRequest, SatchelError, SenderNotAllowed
from chalicelib.core.models import Principal
from chalicelib.core.settings import ENV_QUEUE_SENDERS, parse_queue_senders
from chalicelib.triggers import senders

BINDINGS = {"AROAETLROLE": ("acme",), "AIDAOPSUSER": ("globex/dave", "acme/alice")}


def record(sender: str | None) -> dict[str, Any]:
    """An SQS record as Lambda hands it over, its attributes as SQS sets them."""
    attributes = {"ApproximateReceiveCount": "1"} | ({"SenderId": sender} if sender is not None else {})
    return {"messageId": "m-1", "body": "{}", "attributes": attributes}


def code(error: pytest.ExceptionInfo[SatchelError]) -> str:
    return error.value.code


def test_the_sender_is_the_role_or_user_not_the_session() -> None:
    assert senders.sender_id(record("AROAETLROLE:nightly-2024-06-01")) == "AROAETLROLE"
    assert senders.sender_id(record("AIDAOPSUSER")) == "AIDAOPSUSER"


@pytest.mark.parametrize("sender", [None, ""])
def test_a_record_without_a_sender_is_refused(sender: str | None) -> None:
    with pytest.raises(SenderNotAllowed) as refused:
        senders.sender_id(record(sender))
    assert code(refused) == "SenderNotAllowed"


@pytest.mark.parametrize(
    ("sender", "tenant", "user_id"),
    [("AROAETLROLE", "acme", "alice"), ("AROAETLROLE", "acme", "carol"), ("AIDAOPSUSER", "globex", "dave")],
)
def test_a_sender_acts_for_the_tenants_and_users_it_is_bound_to(
    sender: str, tenant: str, user_id: str
) -> None:
    senders.check_queue_sender(BINDINGS, sender, tenant, user_id)


@pytest.mark.parametrize(
    ("sender", "tenant", "user_id", "why"),
    [
        ("AROASTRANGER", "acme", "alice", "not in SATCHEL_QUEUE_SENDERS"),
        ("AROAETLROLE", "globex", "dave", "may not act for globex/dave"),  # outside its tenant
        ("AIDAOPSUSER", "globex", "erin", "may not act for globex/erin"),  # another user of its tenant
        ("AIDAOPSUSER", "acme", "bob", "may not act for acme/bob"),
    ],
)
def test_a_sender_outside_its_binding_is_refused(sender: str, tenant: str, user_id: str, why: str) -> None:
    with pytest.raises(SenderNotAllowed, match=why):
        senders.check_queue_sender(BINDINGS, sender, tenant, user_id)


def test_no_binding_refuses_every_sender() -> None:
    with pytest.raises(SenderNotAllowed):
        senders.check_queue_sender({}, "AIDAIT2UOQQY3AUEKVGXU", "acme", "alice")


def test_a_request_source_names_its_tenant() -> None:
    assert senders.tenant_of_source("satchel.requests.acme") == "acme"
    assert senders.tenant_of_source(senders.request_source("acme.eu")) == "acme.eu"


@pytest.mark.parametrize(
    "source", ["satchel.requests", "satchel.requests.", "satchel", "aws.s3", "satchel.requests.Acme", None, 7]
)
def test_a_source_naming_no_tenant_is_refused(source: Any) -> None:
    with pytest.raises(SenderNotAllowed):
        senders.tenant_of_source(source)


def test_a_body_may_name_only_the_principal_its_sender_is_bound_to() -> None:
    senders.check_named({}, "acme", "alice", "here")
    senders.check_named({"tenant": "acme", "user_id": "alice"}, "acme", "alice", "here")
    senders.check_named({"user_id": "bob"}, "acme", None, "here")  # a bus event: any user of its tenant
    for named, user_id in (
        ({"tenant": "globex"}, "alice"),
        ({"user_id": "bob"}, "alice"),
        ({"tenant": "x"}, None),
    ):
        with pytest.raises(SenderNotAllowed):
            senders.check_named(named, "acme", user_id, "here")


def test_a_manifest_acts_for_the_user_of_its_folder() -> None:
    assert senders.manifest_owner("requests/", "requests/acme/alice/nightly.json") == ("acme", "alice")
    assert senders.manifest_owner("in/box/", "in/box/acme/alice/2024/06/n.json") == ("acme", "alice")


@pytest.mark.parametrize(
    "key",
    [
        "requests/acme/nightly.json",  # directly under the tenant: no user
        "requests/acme/alice/",  # a folder, no name
        "requests/acme/",
        "requests/acme//x.json",
        "requests/ACME/alice/x.json",
        "requests/acme/al#ice/x.json",
        "elsewhere/acme/alice/x.json",
    ],
)
def test_a_manifest_outside_a_user_folder_is_refused(key: str) -> None:
    with pytest.raises(SenderNotAllowed):
        senders.manifest_owner("requests/", key)


ALICE = Principal("acme", "alice", frozenset({"reader"}))
CAROL = Principal("acme", "carol", frozenset({Principal.ADMIN_ROLE, "reader"}))


def test_a_trigger_acts_with_the_users_roles_minus_admin() -> None:
    assert senders.acting(ALICE, "acme", "alice", ()) == ALICE
    acting = senders.acting(CAROL, "acme", "carol", ())
    assert acting == Principal("acme", "carol", frozenset({"reader"}))
    assert acting is not None
    assert not acting.is_admin
    assert senders.acting(None, "acme", "mallory", ()) is None


def test_a_service_principal_acts_with_the_roles_configured() -> None:
    service = (Principal("acme", "carol", frozenset({Principal.ADMIN_ROLE})), Principal("acme", "etl"))
    acting = senders.acting(CAROL, "acme", "carol", service)
    assert acting is not None
    assert acting.is_admin
    assert senders.acting(None, "acme", "etl", service) == Principal("acme", "etl")
    # Configured in one tenant only: in another, the same user id is an ordinary user.
    assert senders.acting(None, "globex", "etl", service) is None


@pytest.mark.parametrize(
    ("tenant", "user_id"), [(None, "alice"), ("acme", 7), ("acme", ""), ("ac#me", "alice")]
)
def test_ids_are_checked_before_any_lookup(tenant: Any, user_id: Any) -> None:
    with pytest.raises(MalformedRequest):
        senders.checked_ids(tenant, user_id)


def test_queue_senders_parse_once() -> None:
    parsed = parse_queue_senders('{"AROAETLROLE": ["acme", "globex/dave"]}')
    assert parsed == {"AROAETLROLE": ("acme", "globex/dave")}
    assert parse_queue_senders("{}") == {}


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        '["acme"]',
        '{"AROAETLROLE": "acme"}',
        '{"AROAETLROLE:session": ["acme"]}',  # the binding is to the role, not a session
        '{"aroa-lower": ["acme"]}',
        '{"AROAETLROLE": ["acme/alice/x"]}',
        '{"AROAETLROLE": ["Acme"]}',
        '{"AROAETLROLE": [7]}',
    ],
)
def test_a_misconfigured_queue_binding_fails_at_start_up(raw: str) -> None:
    with pytest.raises(ConfigurationError, match=ENV_QUEUE_SENDERS):
        parse_queue_senders(raw)
