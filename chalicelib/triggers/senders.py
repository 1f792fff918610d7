"""Who a trigger may act for: each way in is bound to its sender, and never acts as an admin.

- An SQS message acts only for a tenant or user its sender is bound to: the record's
  `SenderId` (the IAM role's or user's unique id; SQS sets it, the sender cannot) is looked
  up in SATCHEL_QUEUE_SENDERS.
- A request event on the request bus acts only within the tenant its `source` names,
  `satchel.requests.<tenant>`: IAM's `events:source` condition key confines a sender's
  PutEvents to its own tenant's source, so the source is what the sender was allowed to say.
- A request manifest acts only for the user whose folder holds it,
  `<request prefix><tenant>/<user>/<name>.json`: S3 policies on that prefix bind writers.

Whoever it acts for, a trigger holds that user's roles minus the tenant admin role, unless
the (tenant, user) is a configured service principal, which holds the roles configured.

Pure functions over settings and the event's fields: chalicelib/triggers/inbound.py reads
the events and looks the principals up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.core.errors import MalformedRequest, SenderNotAllowed
from chalicelib.core.models import Principal
from chalicelib.core.names import PRINCIPAL_ID_PATTERN, is_principal_id

REQUEST_SOURCE_PREFIX = "satchel.requests."
# The `detail-type` of a request event, and of S3's event for a request manifest dropped in.
REQUESTED = "Satchel Download Requested"
OBJECT_CREATED = "Object Created"

# What the audit trail records beside the principal of a download made through the API.
API_SOURCE: Mapping[str, str] = {"kind": "api"}


def request_source(tenant: str) -> str:
    """The `source` of a request event acting within `tenant`."""
    return f"{REQUEST_SOURCE_PREFIX}{tenant}"


def checked_ids(tenant: Any, user_id: Any) -> tuple[str, str]:
    if not isinstance(tenant, str) or not isinstance(user_id, str) or not tenant or not user_id:
        raise MalformedRequest("a request names its tenant and user_id as strings")
    if not (is_principal_id(tenant) and is_principal_id(user_id)):
        # Checked before any lookup: ids are joined with '#' into the keys looked up.
        raise MalformedRequest(f"tenant and user_id must match {PRINCIPAL_ID_PATTERN}")
    return tenant, user_id


def sender_id(record: Mapping[str, Any]) -> str:
    """The sending principal's unique id from an SQS record: `AROA...:<session>` names a role's
    session and `AIDA...` a user; the binding is to the role or user, not to one session."""
    attributes = record.get("attributes") or {}
    sender = attributes.get("SenderId") if isinstance(attributes, Mapping) else None
    if not isinstance(sender, str) or not sender:
        raise SenderNotAllowed("the message names no sender (SenderId)")
    return sender.split(":", 1)[0]


def check_queue_sender(
    senders: Mapping[str, tuple[str, ...]], sender: str, tenant: str, user_id: str
) -> None:
    """Refuses unless `sender` is bound to `tenant` as a whole or to `tenant/user_id`."""
    grants = senders.get(sender)
    if grants is None:
        raise SenderNotAllowed(f"sender {sender} may not send requests (it is not in SATCHEL_QUEUE_SENDERS)")
    if tenant not in grants and f"{tenant}/{user_id}" not in grants:
        raise SenderNotAllowed(f"sender {sender} may not act for {tenant}/{user_id}")


def tenant_of_source(source: Any) -> str:
    """The tenant a request event's `source` binds it to."""
    if not isinstance(source, str) or not source.startswith(REQUEST_SOURCE_PREFIX):
        raise SenderNotAllowed(
            f"a request event's source is {REQUEST_SOURCE_PREFIX}<tenant>, got {str(source)[:80]!r}"
        )
    tenant = source[len(REQUEST_SOURCE_PREFIX) :]
    if not is_principal_id(tenant):
        raise SenderNotAllowed(f"the tenant of source {str(source)[:80]!r} must match {PRINCIPAL_ID_PATTERN}")
    return tenant


def check_named(named: Mapping[str, Any], tenant: str, user_id: str | None, where: str) -> None:
    """A `tenant` or `user_id` the body names, if any, must be the one its sender is bound to."""
    if named.get("tenant", tenant) != tenant:
        raise SenderNotAllowed(f"{where} acts within tenant {tenant} only")
    if user_id is not None and named.get("user_id", user_id) != user_id:
        raise SenderNotAllowed(f"{where} acts for {tenant}/{user_id} only")


def manifest_owner(request_prefix: str, key: str) -> tuple[str, str]:
    """(tenant, user) of a manifest at `<prefix><tenant>/<user>/<name>`."""
    parts = key[len(request_prefix) :].split("/", 2) if key.startswith(request_prefix) else []
    if len(parts) < 3 or not parts[2]:
        raise SenderNotAllowed(
            f"a request manifest lives at {request_prefix}<tenant>/<user>/<name>.json; "
            f"{key[:200]!r} names no user"
        )
    tenant, user_id = parts[0], parts[1]
    if not (is_principal_id(tenant) and is_principal_id(user_id)):
        raise SenderNotAllowed(
            f"the tenant and user folders of {key[:200]!r} must match {PRINCIPAL_ID_PATTERN}"
        )
    return tenant, user_id


def acting(
    principal: Principal | None, tenant: str, user_id: str, service: tuple[Principal, ...]
) -> Principal | None:
    """What a trigger may act as for (tenant, user_id): a configured service principal as
    configured; otherwise the user's own principal (None: no such user) without admin."""
    for known in service:
        if (known.tenant, known.user_id) == (tenant, user_id):
            return known
    if principal is None:
        return None
    return Principal(principal.tenant, principal.user_id, principal.roles - {Principal.ADMIN_ROLE})
