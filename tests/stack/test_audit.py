"""Every create, fetch, link use, cancel, delete and revocation leaves an audit record."""

from __future__ import annotations

from chalicelib.core import clients
from chalicelib.storage.audit import AuditLog
from tests.support.stack import Satchel


def test_the_audit_trail_names_who_did_what(satchel: Satchel) -> None:
    satchel.put_source("acme/audited.txt", b"watched")
    created = satchel.create({"keys": ["acme/audited.txt"]}, link={"max_uses": 2})
    download_id, token = created.json["id"], created.json["link"]["token"]
    satchel.wait(download_id)
    assert satchel.call("GET", f"/downloads/{download_id}/file").status == 302
    assert satchel.call("GET", f"/downloads/{download_id}/url", "carol").status == 200
    assert satchel.call("GET", f"/links/{token}", None).status == 200  # a read: not audited
    assert satchel.call("POST", f"/links/{token}", None).status == 303
    assert satchel.call("DELETE", f"/links/{token}").status == 204
    assert satchel.call("GET", f"/downloads/{download_id}/file", "bob").status == 403  # refused: not audited
    assert satchel.call("DELETE", f"/downloads/{download_id}").status == 204

    events = AuditLog(clients.table(satchel.stack.table)).events("acme")
    trail = [
        (event.action, event.actor.split(":")[0] if event.actor.startswith("link:") else event.actor)
        for event in events
    ]
    assert trail == [
        ("download.created", "user:alice"),
        ("link.created", "user:alice"),
        ("download.file", "user:alice"),
        ("download.url", "user:carol"),
        ("link.used", "link"),
        ("link.revoked", "user:alice"),
        ("download.deleted", "user:alice"),
    ]
    assert {event.download_id for event in events} == {download_id}
    assert all(event.tenant == "acme" and event.at.endswith("Z") for event in events)
    link_events = [event for event in events if event.action.startswith("link.")]
    assert len({event.details.get("link") or event.actor for event in link_events}) == 1  # one link, one name
    assert token not in repr(events)
    assert AuditLog(clients.table(satchel.stack.table)).events("globex") == []


def test_cancelling_is_audited(satchel: Satchel) -> None:
    created = satchel.create({"keys": ["acme/never-there.txt"]})
    satchel.call("DELETE", f"/downloads/{created.json['id']}")
    actions = [event.action for event in AuditLog(clients.table(satchel.stack.table)).events("acme")]
    assert actions[0] == "download.created"
    assert actions[1] in {"download.cancelled", "download.deleted"}  # it may have failed first
    satchel.wait(created.json["id"])
